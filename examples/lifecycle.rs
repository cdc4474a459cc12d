//! A process's life: join with a timeout, terminate, kill, and the exit
//! codes each gives (Python's `exitcode`).
//!
//! Run: `cargo run --release --example lifecycle`

use std::time::Duration;

use shmproc::{Event, Process, ProcessError};

shmproc::entry! {
    /// Says it started, then sleeps for `secs`.
    fn sleeper(args: (Event, u64)) {
        let (started, secs) = args;
        started.set();
        std::thread::sleep(Duration::from_secs(secs));
    }
}

shmproc::entry! {
    fn failing() -> Result<(), String> {
        Err("no such file".into())
    }
}

shmproc::entry! {
    fn panicking() {
        panic!("something unexpected");
    }
}

fn start_sleeper(secs: u64) -> Result<Process, ProcessError> {
    let started = Event::new().expect("event");
    let mut p = Process::new(sleeper, (started.clone(), secs));
    p.start()?;
    started.wait(); // so the signals below hit a running child
    Ok(p)
}

fn main() -> Result<(), ProcessError> {
    // join with a timeout: the child is still running afterwards.
    let p = start_sleeper(1)?;
    let finished = p.join_timeout(Duration::from_millis(100))?;
    println!("after join_timeout(100 ms): finished={finished}, alive={}, exitcode={:?}", p.is_alive(), p.exitcode());
    p.join()?;
    println!("after join():              alive={}, exitcode={:?}", p.is_alive(), p.exitcode());

    // terminate sends SIGTERM: exitcode -15.
    let p = start_sleeper(60)?;
    p.terminate()?;
    let err = p.join().unwrap_err();
    println!("terminate(): exitcode={:?} ({err})", p.exitcode());

    // kill sends SIGKILL: exitcode -9.
    let p = start_sleeper(60)?;
    p.kill()?;
    let err = p.join().unwrap_err();
    println!("kill():      exitcode={:?} ({err})", p.exitcode());

    // An entry that returns an error exits with 1, a panic with 101; the
    // message reaches the parent through join().
    for mut p in [Process::new(failing, ()), Process::new(panicking, ())] {
        p.start()?;
        let err = p.join().unwrap_err();
        println!("{}: exitcode={:?} ({err})", p.name(), p.exitcode());
    }
    Ok(())
}
