//! Hostile review of "callers help the manager" (commits 3bca4ab,
//! 5fb0043): the manager's state in `Shared::core`, callers that submit
//! and poll the workers' rings themselves, callbacks collected under the
//! lock. A module of tests/pool.rs (its helpers and tasks); every blocking
//! wait is bounded (on expiry the pool is terminated and the test fails
//! with a message).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmproc::pool::{GetTimeoutError, PoolError};
use shmproc::{Handoff, HandoffError, Pool};

use super::{all_gone, square, watchdog};

/// A result type whose decoding panics for the value 13 (a user's
/// `Handoff` impl with a bug: `decode` is user code the pool calls while
/// it files results, once on its manager thread, now also in whichever
/// caller happens to be helping).
#[derive(Debug, PartialEq)]
pub(super) struct Touchy(u64);

impl Handoff for Touchy {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let v = u64::decode(input)?;
        assert!(v != 13, "Touchy(13) cannot be decoded (a user's decode bug)");
        Ok(Touchy(v))
    }
}

shmproc::task! {
    /// Returns `Touchy(x)` after `ms` milliseconds.
    fn touchy((x, ms): (u64, u64)) -> Touchy {
        std::thread::sleep(Duration::from_millis(ms));
        Touchy(x)
    }
}

/// Joins `pool` (closed) within `within`; on expiry terminates it (which
/// makes the join return) and says so. Then checks that no worker and no
/// segment of it is left.
fn join_within(pool: Arc<Pool>, within: Duration) -> Result<(), String> {
    let (workers, names) = pool.__created();
    pool.close();
    let (tx, rx) = std::sync::mpsc::channel();
    let joiner = {
        let pool = Arc::clone(&pool);
        std::thread::spawn(move || {
            let _ = tx.send(pool.join());
        })
    };
    let outcome = match rx.recv_timeout(within) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("join failed: {e}")),
        Err(_) => {
            pool.terminate();
            Err(format!("pool.join() did not return within {within:?} (terminated it to clean up)"))
        }
    };
    joiner.join().unwrap();
    drop(pool);
    all_gone(workers, names);
    outcome
}

/// Runs `f` in a thread; its outcome within `within`, or `None` (the
/// thread is left to the cleanup that must follow).
fn within<T: Send + 'static>(
    within: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<std::thread::Result<T>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    rx.recv_timeout(within).ok()
}

fn describe<T: std::fmt::Debug>(r: &std::thread::Result<T>) -> String {
    match r {
        Ok(v) => format!("returned {v:?}"),
        Err(p) => format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        ),
    }
}

/// A result whose (user) decode panics while the caller waiting for it in
/// `get` is the one filing it (it helps: it polls the rings under the
/// manager's lock): the panic leaves the pool's state half-updated (the
/// worker's frame answered, the job's item never counted), the lock
/// poisoned and the helper count raised for good. `close(); join()` then
/// waits forever for a job that can never finish. Before the change the
/// decode ran on the manager thread, whose death aborted every job, so
/// `join` returned.
#[test]
fn a_decode_panic_while_helping_leaves_join_hanging() {
    let _watchdog = watchdog("a_decode_panic_while_helping_leaves_join_hanging");
    let pool = Arc::new(Pool::new(1).unwrap());
    let got = {
        let pool = Arc::clone(&pool);
        within(Duration::from_secs(20), move || {
            // Round trips first: the manager thread then sleeps while this
            // thread helps (as in any `apply` loop), so this thread files
            // the result.
            for i in 0..300u64 {
                assert_eq!(pool.apply(square, i), Ok(i * i));
            }
            pool.apply_async(touchy, (13, 0)).unwrap().get_timeout(Duration::from_secs(10)).map_err(|e| e.to_string())
        })
    };
    let got = got.map(|r| describe(&r)).unwrap_or_else(|| "no answer within 20 s".into());
    eprintln!("get of the result whose decode panics: {got}");
    if let Err(e) = join_within(pool, Duration::from_secs(10)) {
        panic!("{e} (the get before it {got})");
    }
}

/// Another thread's result whose (user) decode panics is filed by a caller
/// that helps with unrelated work (`apply` in a loop): the panic comes out
/// of that caller's `apply`, not the owner's, and the owner's job never
/// finishes (its item was taken from the worker's record but never
/// counted): `get_timeout` expires. Before the change the manager thread
/// decoded it and died, failing every job (the owner's `get` returned an
/// error at once).
#[test]
fn a_decode_panic_in_another_callers_help_strands_the_owners_job() {
    let _watchdog = watchdog("a_decode_panic_in_another_callers_help_strands_the_owners_job");
    let pool = Arc::new(Pool::new(2).unwrap());
    // Its result comes back while this thread is busy applying.
    let owner = pool.apply_async(touchy, (13, 200)).unwrap();
    let t = Instant::now();
    let mut caught = None;
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(2) && caught.is_none() {
        match std::panic::catch_unwind(AssertUnwindSafe(|| pool.apply(square, n))) {
            Ok(_) => n += 1,
            Err(p) => caught = Some(describe::<()>(&Err(p))),
        }
    }
    eprintln!("after {n} applies, this thread's apply {}", caught.as_deref().unwrap_or("never panicked"));
    let owner_got = match owner.get_timeout(Duration::from_secs(5)) {
        Err(GetTimeoutError::TimedOut(_)) => None,
        other => Some(format!("{:?}", other.map_err(|e| e.to_string()))),
    };
    let _ = join_within(pool, Duration::from_secs(10));
    assert!(
        owner_got.is_some(),
        "the owner's get_timeout(5 s) expired: its job will never finish (this thread's apply {})",
        caught.as_deref().unwrap_or("never panicked")
    );
    let _ = PoolError::Closed;
    let _ = (AtomicBool::new(false), AtomicU64::new(0), Ordering::Relaxed);
}
