//! A daemon process may not start children, as in Python ("daemonic
//! processes are not allowed to have children"): a daemon is ended with its
//! parent, and a child of its own would run on alone. Both start methods,
//! and a pool worker (a daemon) whose task tries it.

mod common;

use shmproc::process::StartMethod;
use shmproc::{Pool, Process, ProcessError};

shmproc::entry! { fn nothing() {} }

shmproc::entry! {
    /// Tries to start a child; the error it got, as text (empty: started).
    fn try_to_start_a_child(fork: bool) -> Result<(), String> {
        let method = if fork { StartMethod::Fork } else { StartMethod::Spawn };
        let mut p = Process::new(nothing, ()).with_start_method(method);
        match p.start() {
            Err(ProcessError::DaemonicParent(_)) => {
                // The refused start lost nothing: not started, still startable in a non-daemon.
                assert_eq!(p.pid(), None);
                Ok(())
            }
            Ok(()) => {
                let _ = p.join();
                Err("a daemon started a child".into())
            }
            Err(e) => Err(format!("unexpected error: {e}")),
        }
    }
}

shmproc::task! {
    fn start_from_a_worker(_x: u64) -> String {
        match Process::new(nothing, ()).start() {
            Err(e @ ProcessError::DaemonicParent(_)) => e.to_string(),
            other => format!("{other:?}"),
        }
    }
}

#[test]
fn a_daemon_child_cannot_start_children_with_either_start_method() {
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let fork = method == StartMethod::Fork;
        let mut d = Process::new(try_to_start_a_child, fork).with_daemon(true).with_start_method(method);
        d.start().unwrap();
        common::join(&d).unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(d.exitcode(), Some(0), "{method}");
    }
}

#[test]
fn a_non_daemon_child_still_starts_children() {
    shmproc::entry! {
        fn start_one() -> Result<(), String> {
            let mut p = Process::new(nothing, ());
            p.start().map_err(|e| e.to_string())?;
            p.join().map_err(|e| e.to_string())
        }
    }
    let mut p = Process::new(start_one, ());
    p.start().unwrap();
    common::join(&p).unwrap();
    assert_eq!(p.exitcode(), Some(0));
}

#[test]
fn a_pool_task_cannot_start_a_process() {
    let pool = Pool::new(1).unwrap();
    let msg = pool.apply(start_from_a_worker, 0).unwrap();
    assert!(msg.contains("daemonic processes are not allowed to have children"), "{msg}");
    pool.close();
    pool.join().unwrap();
}
