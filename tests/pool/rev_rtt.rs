//! Hostile review of "callers help the manager" (commits 3bca4ab,
//! 5fb0043): the manager's state in `Shared::core`, callers that submit
//! and poll the workers' rings themselves, callbacks collected under the
//! lock. A module of tests/pool.rs (its helpers and tasks); every blocking
//! wait is bounded (on expiry the pool is terminated and the test fails
//! with a message).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmproc::pool::GetTimeoutError;
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
        // A pool whose manager died says so: it returned, which is all
        // that is asked here.
        Ok(Err(e)) => {
            eprintln!("join returned an error: {e}");
            Ok(())
        }
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
    // Its item's error names the decode's panic (as a task's panic would).
    assert!(
        owner_got.as_deref().is_some_and(|s| s.contains("decoding the result panicked")),
        "the owner's get: {owner_got:?}"
    );
}

/// CPU time (user + system) of a thread or process from its `stat` file,
/// in seconds; `None` if it is gone.
fn cpu_of(stat: &str) -> Option<f64> {
    let s = std::fs::read_to_string(stat).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
}

/// The ids of this process's threads named `shmproc-pool` (pool managers).
fn manager_threads() -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid = e.file_name().to_string_lossy().into_owned();
        if std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).is_ok_and(|c| c.trim() == "shmproc-pool") {
            out.insert(tid);
        }
    }
    out
}

/// A pool and its manager thread's id (the one `shmproc-pool` thread that
/// appeared with it; if another test started a pool at the same moment,
/// the pool is made again, up to 5 times; `None` after that).
fn pool_with_manager(n: usize) -> (Arc<Pool>, Option<String>) {
    for attempt in 0..5 {
        let before = manager_threads();
        let pool = Arc::new(Pool::new(n).unwrap());
        // The thread names itself once it runs.
        let t = Instant::now();
        let mut new: Vec<String> = Vec::new();
        while new.is_empty() && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
            new = manager_threads().difference(&before).cloned().collect();
        }
        if new.len() == 1 || attempt == 4 {
            return (pool, if new.len() == 1 { new.into_iter().next() } else { None });
        }
        let (workers, names) = pool.__created();
        drop(pool);
        all_gone(workers, names);
    }
    unreachable!()
}

/// CPU seconds used by the pool's workers and its manager thread.
fn pool_cpu(pool: &Pool, manager: &Option<String>) -> (f64, f64) {
    let workers: f64 = pool.__created().0.iter().filter_map(|p| cpu_of(&format!("/proc/{p}/stat"))).sum();
    let m = manager.as_ref().and_then(|t| cpu_of(&format!("/proc/self/task/{t}/stat"))).unwrap_or(0.0);
    (workers, m)
}

/// After a burst of helped round trips from more threads than cores, an
/// idle pool burns no CPU: the workers' and the manager's spin phases end.
#[test]
fn an_idle_pool_after_a_burst_from_many_threads_burns_no_cpu() {
    let _watchdog = watchdog("an_idle_pool_after_a_burst_from_many_threads_burns_no_cpu");
    let (pool, manager) = pool_with_manager(2);
    let threads: Vec<_> = (0..6u64)
        .map(|k| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    assert_eq!(
                        pool.apply_async(square, k * 1000 + i).unwrap().get_timeout(super::DEADLINE).ok(),
                        Some((k * 1000 + i).pow(2))
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (w0, m0) = pool_cpu(&pool, &manager);
    std::thread::sleep(Duration::from_secs(1));
    let (w1, m1) = pool_cpu(&pool, &manager);
    eprintln!(
        "idle second: workers {:.3} s CPU, manager {:.3} s CPU (manager thread found: {})",
        w1 - w0,
        m1 - m0,
        manager.is_some()
    );
    join_within(pool, Duration::from_secs(20)).unwrap();
    assert!(w1 - w0 < 0.1, "the idle pool's workers used {:.3} s of CPU in 1 s", w1 - w0);
    assert!(m1 - m0 < 0.1, "the idle pool's manager thread used {:.3} s of CPU in 1 s", m1 - m0);
}

/// More callers than cores, each waiting in `get` for a task that sleeps
/// 20 ms: the callers and the manager must sleep while they wait, not
/// spin (CPU measured from /proc, per thread). Each `get` now helps (up to
/// 2000 steps of `try_lock` + inbox + every ring + dispatch, yielding every
/// 2nd) before it sleeps: 6 such callers on 2 cores burn about 30% of a
/// core waiting (0.19-0.24 s CPU in 0.64-0.70 s, about 3.5 ms per get),
/// where the code before 3bca4ab (a spin on one atomic) used 0.02-0.05 s in
/// the same test (3 runs each, this machine). Limit: 0.1 s for the 60 gets.
#[test]
fn many_callers_waiting_on_slow_tasks_sleep() {
    let _watchdog = watchdog("many_callers_waiting_on_slow_tasks_sleep");
    let (pool, manager) = pool_with_manager(2);
    let start = Instant::now();
    let (_, m0) = pool_cpu(&pool, &manager);
    let threads: Vec<_> = (0..6u64)
        .map(|_| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for _ in 0..10 {
                    assert!(pool.apply_async(super::nap, 20).unwrap().get_timeout(super::DEADLINE).is_ok());
                }
                cpu_of("/proc/thread-self/stat").unwrap()
            })
        })
        .collect();
    let callers: f64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let wall = start.elapsed().as_secs_f64();
    let (_, m1) = pool_cpu(&pool, &manager);
    eprintln!("{wall:.2} s: callers {callers:.3} s CPU, manager {:.3} s CPU", m1 - m0);
    join_within(pool, Duration::from_secs(20)).unwrap();
    // 60 tasks of 20 ms on 2 workers: the callers wait about 0.6 s each.
    // 60 gets: at most 1.7 ms of CPU each on average (the waiting is
    // about 60 ms per get; the CPU a bounded spin costs does not grow
    // with the machine's load, the wall time does).
    assert!(callers < 0.1, "6 waiting callers used {callers:.3} s of CPU in {wall:.2} s for 60 gets of 20 ms items");
    assert!(m1 - m0 < 0.15 * wall, "the manager used {:.3} s of CPU in {wall:.2} s", m1 - m0);
}

/// Three threads apply in a loop (helpers all the time; the manager thread
/// sleeps on `req` apart from its liveness checks) while, on the other
/// worker, an item times out, an item is cancelled, and a worker is killed
/// with SIGKILL: each must reach its waiter within a few seconds.
#[test]
fn timeout_cancel_and_kill_while_others_help() {
    use shmproc::pool::{PoolError, TaskError};
    use std::sync::atomic::{AtomicBool, Ordering};
    let _watchdog = watchdog("timeout_cancel_and_kill_while_others_help");
    let pool = Arc::new(Pool::new(2).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let hammers: Vec<_> = (0..3u64)
        .map(|k| {
            let (pool, stop) = (Arc::clone(&pool), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let x = k << 32 | i;
                    assert_eq!(pool.apply(square, x), Ok(x.wrapping_mul(x)));
                    i += 1;
                }
            })
        })
        .collect();
    let within = Duration::from_secs(5);
    let mut report = Vec::new();
    // A per-task timeout.
    let t = Instant::now();
    let r = pool.apply_async(super::nap, 3_600_000).unwrap().timeout(Duration::from_millis(100));
    let got = r.get_timeout(within);
    report.push(format!("timeout after {:?}: {:?}", t.elapsed(), got.as_ref().map(|_| ()).map_err(|e| e.to_string())));
    let ok_timeout = matches!(got, Err(GetTimeoutError::Failed(PoolError::Task(TaskError::TimedOut { .. }))));
    // A cancel of a running item.
    let r = pool.apply_async(super::nap, 3_600_000).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    r.cancel();
    let got = r.get_timeout(within);
    report.push(format!("cancel after {:?}: {:?}", t.elapsed(), got.as_ref().map(|_| ()).map_err(|e| e.to_string())));
    let ok_cancel = matches!(got, Err(GetTimeoutError::Failed(PoolError::Task(TaskError::Cancelled { .. }))));
    // A worker killed with SIGKILL mid-item, its caller waiting in get.
    let slot = shmproc::Value::new(0u32).unwrap();
    let r = pool.apply_async(super::park_on, (0, 0, slot.clone())).unwrap();
    super::wait_until("the parked item to start", || slot.get().unwrap() != 0);
    let victim = slot.get().unwrap();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let got = r.get_timeout(within);
        (t.elapsed(), got.map_err(|e| e.to_string()))
    });
    std::thread::sleep(Duration::from_millis(20));
    super::kill9(victim);
    let (waited, got) = waiter.join().unwrap();
    report.push(format!("kill: waited {waited:?}: {got:?}"));
    let ok_kill = matches!(&got, Err(e) if e.contains("killed by signal 9"));
    stop.store(true, Ordering::Relaxed);
    for h in hammers {
        h.join().unwrap();
    }
    let r = join_within(pool, Duration::from_secs(20));
    eprintln!("{report:#?}");
    assert!(ok_timeout && ok_cancel && ok_kill, "{report:#?}");
    r.unwrap();
}

/// `imap`, `imap_unordered` and `map` running while three threads apply
/// in a loop (helping), then `terminate` while they still do: every result
/// exact, the appliers' calls then fail (none hangs), nothing left.
#[test]
fn imap_and_map_beside_helpers_then_terminate_under_them() {
    use shmproc::pool::PoolError;
    use std::sync::atomic::{AtomicU64, Ordering};
    let _watchdog = watchdog("imap_and_map_beside_helpers_then_terminate_under_them");
    let pool = Arc::new(Pool::new(2).unwrap());
    let (workers_before, names_before) = pool.__created();
    let done = Arc::new(AtomicU64::new(0));
    let hammers: Vec<_> = (0..3u64)
        .map(|k| {
            let (pool, done) = (Arc::clone(&pool), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut i = 0u64;
                loop {
                    let x = k << 32 | i;
                    match pool.apply(square, x) {
                        Ok(v) => assert_eq!(v, x.wrapping_mul(x)),
                        Err(PoolError::Closed | PoolError::Task(_)) => return i,
                        Err(e) => panic!("apply {x}: {e}"),
                    }
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let got: Vec<u64> = pool.imap(square, 0..3000u64).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(got, super::serial(3000));
    let mut got: Vec<u64> = pool.imap_unordered(square, 0..3000u64).unwrap().map(|r| r.unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, super::serial(3000));
    assert_eq!(pool.map_chunked(square, 0..3000u64, 1).unwrap(), super::serial(3000));
    assert!(done.load(Ordering::Relaxed) > 0);
    let t = Instant::now();
    pool.terminate();
    let took = t.elapsed();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let n: Vec<u64> = hammers.into_iter().map(|h| h.join().unwrap()).collect();
        let _ = tx.send(n);
    });
    let n = rx.recv_timeout(Duration::from_secs(10)).expect("appliers still blocked 10 s after terminate");
    eprintln!("terminate took {took:?}; appliers did {n:?}");
    let (workers, names) = pool.__created();
    drop(pool);
    assert!(workers.len() >= workers_before.len() && names.len() >= names_before.len());
    all_gone(workers, names);
}

/// The pool dropped while other threads wait in `get` (helping, then
/// asleep on their jobs) for long items and for short ones in a loop:
/// every waiter returns promptly with an error, the drop returns, and no
/// worker or segment is left.
#[test]
fn dropping_the_pool_while_threads_wait_in_get() {
    let _watchdog = watchdog("dropping_the_pool_while_threads_wait_in_get");
    let pool = Pool::new(2).unwrap();
    let long = pool.apply_async(super::nap, 60_000).unwrap();
    let long_waiter =
        std::thread::spawn(move || long.get_timeout(Duration::from_secs(30)).map(|_| ()).map_err(|e| e.to_string()));
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let loops: Vec<_> = (0..3u64)
        .map(|_| {
            // 1 ms items: the waiters help for most of them.
            let rs: Vec<_> = (0..200u64).map(|_| pool.apply_async(super::nap, 1).unwrap()).collect();
            let progress = Arc::clone(&progress);
            std::thread::spawn(move || {
                let mut errs = 0;
                for r in rs {
                    match r.get_timeout(Duration::from_secs(30)) {
                        Ok(_) => {
                            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(GetTimeoutError::TimedOut(_)) => return Err("a get timed out (30 s)".to_string()),
                        Err(_) => errs += 1,
                    }
                }
                Ok(errs)
            })
        })
        .collect();
    super::wait_until("the waiters' first results", || progress.load(std::sync::atomic::Ordering::Relaxed) >= 60);
    let (workers, names) = pool.__created();
    let t = Instant::now();
    let dropped = within(Duration::from_secs(20), move || drop(pool));
    assert!(dropped.is_some(), "dropping the pool did not return within 20 s");
    let took = t.elapsed();
    let long = long_waiter.join().unwrap();
    let loops: Vec<_> = loops.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!("drop took {took:?}; long waiter: {long:?}; loop waiters (errors): {loops:?}");
    assert!(long.is_err_and(|e| e.contains("terminated")));
    assert!(loops.iter().all(Result::is_ok), "{loops:?}");
    all_gone(workers, names);
}

/// Callbacks of jobs finished by a helping caller are handed to the
/// manager thread; `close(); join()` right after must not end the manager
/// before it ran them (each round: callbacks counted after `join`).
#[test]
fn every_callback_has_run_when_join_returns() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let _watchdog = watchdog("every_callback_has_run_when_join_returns");
    let rounds: u64 = std::env::var("SHMPROC_REV_RTT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut missed = Vec::new();
    for round in 0..rounds {
        let pool = Arc::new(Pool::new(1).unwrap());
        let ran = Arc::new(AtomicU64::new(0));
        let helper = {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let mut i = 0u64;
                while pool.apply(square, i).is_ok() {
                    i += 1;
                }
            })
        };
        let n = 20u64;
        for i in 0..n {
            let ran = Arc::clone(&ran);
            pool.apply_async(square, i).unwrap().then(move |r| {
                assert_eq!(r, Ok(i * i));
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        let (workers, names) = pool.__created();
        pool.close();
        let joined = {
            let pool = Arc::clone(&pool);
            within(Duration::from_secs(20), move || pool.join())
        };
        // Read before anything else can run a late callback.
        let got = ran.load(Ordering::SeqCst);
        if joined.is_none() {
            pool.terminate();
        }
        helper.join().unwrap();
        drop(pool);
        all_gone(workers, names);
        assert!(matches!(joined, Some(Ok(Ok(())))), "round {round}: join did not return within 20 s, or failed");
        if got != n {
            missed.push((round, got));
        }
    }
    assert!(
        missed.is_empty(),
        "rounds where join returned before every callback ran (round, callbacks run of 20): {missed:?}"
    );
}

/// Callbacks of jobs a helping caller finishes (they run on the manager
/// thread after the lock): one panics, one calls into the pool (submits
/// and waits for a short item, which now works by helping), one chains
/// another callback. The pool goes on; every callback runs once.
#[test]
fn callbacks_finished_by_helpers_that_panic_or_call_the_pool() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let _watchdog = watchdog("callbacks_finished_by_helpers_that_panic_or_call_the_pool");
    let pool = Arc::new(Pool::new(2).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let helper = {
        let (pool, stop) = (Arc::clone(&pool), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(pool.apply(square, i), Ok(i * i));
                i += 1;
            }
        })
    };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let count = Arc::new(AtomicU64::new(0));
    for i in 0..20u64 {
        pool.apply_async(square, i).unwrap().then(move |_| panic!("callback {i} panics"));
    }
    for i in 0..20u64 {
        let (weak, tx, count) = (Arc::downgrade(&pool), tx.clone(), Arc::clone(&count));
        pool.apply_async(square, i).unwrap().then(move |r| {
            count.fetch_add(1, Ordering::SeqCst);
            let pool = weak.upgrade().unwrap();
            let inner = pool.apply_async(square, i + 100).unwrap();
            let tx2 = tx.clone();
            inner.then(move |r2| {
                let _ = tx2.send(format!("chained {i}: {r2:?}"));
            });
            let _ = tx.send(format!("outer {i}: {r:?}"));
        });
    }
    let mut got = Vec::new();
    while got.len() < 40 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(s) => got.push(s),
            Err(_) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    helper.join().unwrap();
    assert_eq!(pool.apply(square, 7), Ok(49));
    join_within(pool, Duration::from_secs(20)).unwrap();
    assert_eq!(got.len(), 40, "callbacks seen within 10 s: {got:?}");
    assert_eq!(count.load(Ordering::SeqCst), 20);
    assert!(rx.try_recv().is_err(), "a callback ran twice");
}

/// A callback (on the manager thread) that waits for another item of the
/// same pool (`pool.apply`): it now works when the item is done within the
/// callback's help budget (microseconds), and waits forever when it is
/// not (here a 1 s item), the manager thread asleep in the callback's
/// `get` with nobody to file the result: no reaping, no timeouts, no
/// terminate. Not new (before 3bca4ab such a callback always waited
/// forever; the docs say only "keep callbacks short"), but now it depends
/// on the item's duration. The test unblocks it by helping from this
/// thread (an `apply` here files the result), else it could not end.
#[test]
fn a_callback_that_waits_for_a_slow_item_of_its_pool_hangs_the_manager() {
    let _watchdog = watchdog("a_callback_that_waits_for_a_slow_item_of_its_pool_hangs_the_manager");
    let pool = Arc::new(Pool::new(1).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    for ms in [0u64, 1000] {
        let (weak, tx) = (Arc::downgrade(&pool), tx.clone());
        pool.apply_async(square, 3).unwrap().then(move |_| {
            let pool = weak.upgrade().unwrap();
            let _ = tx.send((ms, pool.apply(super::nap, ms).is_ok()));
        });
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(v) => got.push(v),
            Err(_) => break,
        }
    }
    let stuck = got.len() < 2;
    if stuck {
        // This thread helps: it files the 1 s item's result, which
        // releases the manager thread.
        let _ = pool.apply_async(square, 4).unwrap().get_timeout(Duration::from_secs(10));
        let _ = rx.recv_timeout(Duration::from_secs(10));
    }
    join_within(pool, Duration::from_secs(20)).unwrap();
    assert!(!stuck, "callbacks that applied an item of 0 and 1000 ms: only {got:?} answered within 5 s");
}

/// Fork start method and `maxtasksperchild(3)`: the manager forks
/// replacements (holding the manager's state) all the time while three
/// threads apply in a loop (submitting and filing results themselves):
/// every result exact, every call returns, nothing left.
#[test]
fn forked_replacements_while_callers_help() {
    let _watchdog = watchdog("forked_replacements_while_callers_help");
    let pool = Arc::new(
        Pool::builder()
            .processes(2)
            .start_method(shmproc::process::StartMethod::Fork)
            .maxtasksperchild(3)
            .build()
            .unwrap(),
    );
    let threads: Vec<_> = (0..3u64)
        .map(|k| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for i in 0..60u64 {
                    let x = k * 1000 + i;
                    match pool.apply_async(square, x).unwrap().get_timeout(Duration::from_secs(10)) {
                        Ok(v) => assert_eq!(v, x * x),
                        Err(e) => return Err(format!("apply {x}: {e}")),
                    }
                }
                Ok(())
            })
        })
        .collect();
    let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let started = pool.__created().0.len();
    join_within(pool, Duration::from_secs(20)).unwrap();
    eprintln!("{started} workers started");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
}

/// This process's pid once a test arms [`Grumpy`] (0 in workers).
static GRUMPY_ARMED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A result type whose `Drop` panics for the value 13, in the test process
/// only (a user's type with a buggy destructor).
#[derive(Debug, PartialEq)]
pub(super) struct Grumpy(u64);

impl Handoff for Grumpy {
    fn encode(&self, out: &mut Vec<u8>) {
        self.0.encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        Ok(Grumpy(u64::decode(input)?))
    }
}

impl Drop for Grumpy {
    fn drop(&mut self) {
        if self.0 == 13
            && GRUMPY_ARMED.load(std::sync::atomic::Ordering::Relaxed) == std::process::id()
            && !std::thread::panicking()
        {
            panic!("Grumpy(13) panics when dropped (a user's Drop bug)");
        }
    }
}

shmproc::task! {
    /// Returns `Grumpy(x)` after `ms` milliseconds.
    fn grumpy((x, ms): (u64, u64)) -> Grumpy {
        std::thread::sleep(Duration::from_millis(ms));
        Grumpy(x)
    }
}

/// A job whose handle was dropped is finished by a helping caller; its
/// last reference goes with the manager's job entry, under the manager's
/// lock, in that caller, and its result's (user) `Drop` panics there. The
/// caller's `help` never decrements `Shared::helpers` (no guard), so the
/// manager thread believes forever that callers help: with no job open
/// its sleep (`last_check + LIVENESS`) has already passed while its tick
/// only checks every `IDLE_LIVENESS`, and it loops without sleeping for
/// 400 ms of every 500: an idle pool burning a core.
#[test]
fn a_panic_under_the_lock_in_a_helper_leaves_the_idle_manager_spinning() {
    use std::sync::atomic::Ordering;
    let _watchdog = watchdog("a_panic_under_the_lock_in_a_helper_leaves_the_idle_manager_spinning");
    GRUMPY_ARMED.store(std::process::id(), Ordering::Relaxed);
    let (pool, manager) = pool_with_manager(2);
    // Nobody waits on it: its job (and result) end with the manager's
    // entry. Its result comes back while this thread is busy applying (the
    // manager thread then sleeps apart from its liveness checks).
    drop(pool.apply_async(grumpy, (13, 200)).unwrap());
    // This thread helps (applies in a loop) until a panic comes out.
    let t = Instant::now();
    let mut caught = None;
    let mut n = 0u64;
    while t.elapsed() < Duration::from_secs(2) && caught.is_none() {
        match std::panic::catch_unwind(AssertUnwindSafe(|| pool.apply(square, n))) {
            Ok(_) => n += 1,
            Err(p) => caught = Some(describe::<()>(&Err(p))),
        }
    }
    let works = pool.apply(square, 5);
    std::thread::sleep(Duration::from_millis(300));
    let (_, m0) = pool_cpu(&pool, &manager);
    std::thread::sleep(Duration::from_secs(1));
    let (_, m1) = pool_cpu(&pool, &manager);
    eprintln!(
        "after {n} applies: {}; then apply(5) = {works:?}; the idle manager used {:.3} s CPU in 1 s (thread found: {})",
        caught.as_deref().unwrap_or("no panic here"),
        m1 - m0,
        manager.is_some()
    );
    let joined = join_within(pool, Duration::from_secs(20));
    GRUMPY_ARMED.store(0, Ordering::Relaxed);
    joined.unwrap();
    assert!(
        manager.is_some(),
        "could not tell this pool's manager thread apart (other tests started pools at the same time)"
    );
    assert!(m1 - m0 < 0.1, "the idle pool's manager thread used {:.3} s of CPU in 1 s", m1 - m0);
}

/// The manager thread of an idle pool while callers are counted as helping
/// (as one stuck in its help would be: `__add_helpers`): it must sleep
/// until its next liveness check, not loop. Before the fix its sleep
/// deadline (`last_check + LIVENESS` while helped) had passed while its
/// turn checked only every `IDLE_LIVENESS` (no job open): it looped
/// without sleeping for 400 ms of every 500.
#[test]
fn an_idle_manager_sleeps_while_callers_are_counted_as_helping() {
    let _watchdog = watchdog("an_idle_manager_sleeps_while_callers_are_counted_as_helping");
    let (pool, manager) = pool_with_manager(1);
    assert_eq!(pool.apply(square, 3), Ok(9));
    pool.__add_helpers(1);
    std::thread::sleep(Duration::from_millis(300));
    let (_, m0) = pool_cpu(&pool, &manager);
    std::thread::sleep(Duration::from_secs(1));
    let (_, m1) = pool_cpu(&pool, &manager);
    // The pool still works, and the manager watches it again.
    let works = pool.apply(square, 5);
    pool.__add_helpers(-1);
    eprintln!(
        "the idle manager used {:.3} s CPU in 1 s with a helper counted (thread found: {})",
        m1 - m0,
        manager.is_some()
    );
    join_within(pool, Duration::from_secs(20)).unwrap();
    assert_eq!(works, Ok(25));
    assert!(manager.is_some(), "could not tell this pool's manager thread apart");
    assert!(m1 - m0 < 0.1, "the idle pool's manager thread used {:.3} s of CPU in 1 s", m1 - m0);
}
