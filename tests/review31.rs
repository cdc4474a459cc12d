//! review31: process-local state inherited through `fork()`. Real
//! processes; every wait has a deadline; nothing is left in /dev/shm and
//! no process running.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shmproc::process::StartMethod;
use shmproc::{ListProxy, Process};

const DEADLINE: Duration = Duration::from_secs(60);

shmproc::entry! {
    /// Appends one short string to the list it was given and reads it.
    fn append_one(l: ListProxy<String>) {
        l.append("child".to_owned()).map_err(|e| e.to_string()).unwrap();
        assert!(!l.is_empty());
    }
}

/// A forked child that touches only its argument (a list) and shmproc is
/// safe however many threads the parent has, even while another parent
/// thread is growing the same list through a clone of the handle at the
/// instant of the fork (so it may be mapping the list's growth): the
/// child's append never waits for a lock that thread held at the fork.
#[test]
fn a_forked_child_uses_a_list_another_parent_thread_was_growing() {
    let forks = 150;
    let big = "x".repeat(48 * 1024);
    let outcome = (|| -> Result<u32, String> {
        for i in 0..forks {
            // A fresh list each round: its first growths (and so its
            // remaps) come one after another while the thread appends.
            let l = ListProxy::<String>::new().map_err(|e| e.to_string())?;
            let stop = AtomicBool::new(false);
            let r = std::thread::scope(|s| {
                let (l2, stop, big) = (l.clone(), &stop, &big);
                s.spawn(move || {
                    // At most ~96 MB per round.
                    for _ in 0..2000 {
                        if stop.load(Ordering::Relaxed) || l2.append(big.clone()).is_err() {
                            break;
                        }
                    }
                });
                std::thread::sleep(Duration::from_micros(200 + 37 * u64::from(i % 50)));
                let mut p = Process::new(append_one, l.clone()).with_start_method(StartMethod::Fork);
                let started = p.start().map_err(|e| format!("start {i}: {e}"));
                // A child stuck on a lock it inherited held never ends: give it 20 s.
                let r = started.and_then(|()| {
                    let joined = p.join_timeout(Duration::from_secs(20)).map_err(|e| format!("child {i}: {e}"))?;
                    if !joined {
                        let _ = p.kill();
                        let _ = p.join_timeout(DEADLINE);
                        return Ok(Some(i));
                    }
                    if p.exitcode() != Some(0) {
                        return Err(format!("child {i} ended with {:?}", p.exitcode()));
                    }
                    Ok(None)
                });
                stop.store(true, Ordering::Relaxed);
                r
            })?;
            if let Some(stuck) = r {
                return Ok(stuck);
            }
        }
        Ok(forks)
    })();
    assert_eq!(outcome, Ok(forks), "forked children that finished their append before one never did");
}

shmproc::entry! {
    /// Takes `n` ends from `q`, then `n` from `c`, dropping each unused
    /// at once, and acknowledges each on `acks`.
    fn r31_end_dropper(
        (q, mut c, acks, n): (shmproc::Queue<(shmproc::Connection, u64)>, shmproc::Connection, shmproc::Queue<u64>, u64),
    ) -> Result<(), String> {
        for _ in 0..n {
            let (end, k) = q.get_timeout(DEADLINE).map_err(|e| e.to_string())?;
            drop(end);
            acks.put(k).map_err(|e| e.to_string())?;
        }
        for _ in 0..n {
            let (end, k) = c.recv_value_timeout::<(shmproc::Connection, u64)>(DEADLINE).map_err(|e| e.to_string())?;
            drop(end);
            acks.put(k).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A pipe end sent through a queue or a pipe to a process that drops it
/// unused at once ends its peer's wait, however soon after the send the
/// receiver drops it (many rounds: a race between the send's publish and
/// the sender letting the end's role go).
#[test]
fn a_pipe_end_dropped_unused_at_once_by_its_receiver_ends_the_peers_wait() {
    use shmproc::{Queue, pipe};
    let n: u64 = std::env::var("R31_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20000);
    let q: Queue<(shmproc::Connection, u64)> = Queue::new(4).unwrap();
    let acks: Queue<u64> = Queue::new(16).unwrap();
    let (mut a, b) = pipe(true).unwrap();
    let mut dropper = Process::new(r31_end_dropper, (q.clone(), b, acks.clone(), n));
    dropper.start().unwrap();
    let mut stuck = None;
    for k in 0..2 * n {
        let (mut rx, tx) = pipe(false).unwrap();
        if k < n {
            q.put((tx, k)).unwrap();
        } else {
            a.send_value(&(tx, k)).unwrap();
        }
        assert_eq!(acks.get_timeout(DEADLINE), Ok(k));
        // The end was dropped unused: the wait ends (the sender gone).
        match rx.recv_bytes_timeout(Duration::from_secs(10)) {
            Ok(m) => panic!("round {k}: a message arrived: {m:?}"),
            Err(e) if e.to_string().contains("timed out") || e.to_string().contains("timeout") => {
                stuck = Some((k, e.to_string()));
                break;
            }
            Err(_) => {}
        }
    }
    if stuck.is_some() {
        let _ = dropper.kill();
    }
    let joined = dropper.join_timeout(DEADLINE);
    assert_eq!(stuck, None, "a wait on the end's peer did not end after the receiver dropped the end unused");
    assert!(matches!(joined, Ok(true)), "the dropper: {joined:?}");
    assert_eq!(dropper.exitcode(), Some(0));
}
