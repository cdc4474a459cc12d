//! review28: many threads inside processes, and extreme arguments. Real
//! processes; every wait has a deadline; nothing is left in /dev/shm and
//! no process running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shmproc::process::StartMethod;
use shmproc::{Process, Queue};

const DEADLINE: Duration = Duration::from_secs(60);

shmproc::entry! {
    /// Puts one item into the unbounded queue it was given and takes one.
    fn put_one(q: Queue<u64>) {
        q.put_timeout(7, Duration::from_secs(20)).map_err(|e| e.to_string()).unwrap();
    }
}

/// A forked child that touches only its argument (an unbounded queue) and
/// shmproc is safe however many threads the parent has (the promise of
/// `StartMethod::Fork`'s docs), even while another parent thread is
/// putting into and getting from the same queue through a clone of the
/// handle at the instant of the fork: the child's put never waits for a
/// lock that thread held when the child was made.
#[test]
fn a_forked_child_uses_an_unbounded_queue_another_parent_thread_was_using() {
    let q = Queue::<u64>::new(0).unwrap();
    let stop = AtomicBool::new(false);
    let forks = 150;
    let done = std::thread::scope(|s| {
        for _ in 0..2 {
            let (q, stop) = (q.clone(), &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = q.put_nowait(1);
                    let _ = q.get_nowait();
                }
            });
        }
        let outcome = (|| -> Result<u32, String> {
            for i in 0..forks {
                let mut p = Process::new(put_one, q.clone()).with_start_method(StartMethod::Fork);
                p.start().map_err(|e| format!("start {i}: {e}"))?;
                // A child stuck on a lock it inherited held never ends: give it 20 s.
                if !p.join_timeout(Duration::from_secs(20)).map_err(|e| format!("child {i}: {e}"))? {
                    let _ = p.kill();
                    let _ = p.join_timeout(DEADLINE);
                    return Ok(i);
                }
                if p.exitcode() != Some(0) {
                    return Err(format!("child {i} ended with {:?}", p.exitcode()));
                }
            }
            Ok(forks)
        })();
        stop.store(true, Ordering::Relaxed);
        outcome
    });
    assert_eq!(done, Ok(forks), "forked children that finished their put before one never did");
}
