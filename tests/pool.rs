//! Pool tests with real worker processes (spawned: the test binary
//! re-executes itself and runs the worker before `main`). Every blocking
//! wait is bounded; each test ends with no worker left and nothing new in
//! /dev/shm (the workers are reaped by `terminate`/`join`, and the segments
//! are removed with the pool).

use std::time::{Duration, Instant};

use shmproc::pool::{PoolError, TaskError, default_chunksize};
use shmproc::{Pool, Value};

/// Shared test helpers (tests/common/mod.rs).
mod common;

/// The hostile review's tests (tests/pool/review.rs).
#[path = "pool/review.rs"]
mod review;

/// The plain-data map path (tests/pool/bulkmap.rs).
#[path = "pool/bulkmap.rs"]
mod bulkmap;
/// Callers helping the manager (tests/pool/helping.rs).
#[path = "pool/helping.rs"]
mod helping;

/// Hostile review of the helping paths (tests/pool/rev_rtt.rs).
#[path = "pool/rev_rtt.rs"]
mod rev_rtt;

/// Hostile review of the plain-data arena path (tests/pool/rev_arena.rs).
#[path = "pool/rev_arena.rs"]
mod rev_arena;

/// Hostile review (rev3) of the streamed plain-data map (tests/pool/rev3_map.rs).
#[path = "pool/rev3_map.rs"]
mod rev3_map;

/// `kill -9` mid-task in every form (tests/pool/forms_crash.rs).
#[path = "pool/forms_crash.rs"]
mod forms_crash;

/// Any single blocking wait in these tests.
const DEADLINE: Duration = Duration::from_secs(60);

shmproc::task! { fn square(x: u64) -> u64 { x.wrapping_mul(x) } }
shmproc::task! { fn doubler(n: i64) -> i64 { n * 2 } }
shmproc::task! { fn add((a, b): (u64, u64)) -> u64 { a + b } }
shmproc::task! { fn pid_of(_x: u64) -> u32 { std::process::id() } }
shmproc::task! {
    fn picky(x: u64) -> Result<u64, String> {
        match x {
            13 => Err("thirteen is unlucky".to_string()),
            17 => panic!("seventeen panics"),
            _ => Ok(x + 1),
        }
    }
}
shmproc::task! {
    /// Sleeps `ms` milliseconds; returns its own pid.
    fn nap(ms: u64) -> u32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }
}
shmproc::task! {
    /// Item `victim` parks its worker forever after writing its pid to
    /// `slot`, so the test can kill exactly that worker mid-task.
    fn park_on((x, victim, slot): (u64, u64, Value<u32>)) -> u64 {
        if x == victim {
            slot.set(std::process::id()).unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        x * 3
    }
}
shmproc::task! {
    /// Plain data in and out (the bulk path): item `PARK_AT` parks its
    /// worker forever after writing its pid to `park_file()` (named after
    /// the worker's parent, the test process).
    fn park_at(x: u64) -> u64 {
        if x == PARK_AT {
            std::fs::write(park_file(std::os::unix::process::parent_id()), std::process::id().to_string()).unwrap();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        x.wrapping_mul(x)
    }
}
const PARK_AT: u64 = 77_777;
fn park_file(test_pid: u32) -> String {
    format!("/tmp/shmproc-test-pool-park-{test_pid}")
}
/// The park file is one per test process, and the tests of this binary
/// run in parallel threads: every test that parks a worker with `park_at`
/// holds this for its whole run. (Two such tests at once each read the
/// other's worker pid from the one file and killed it, or removed the
/// other's file: both failed, `WorkerLost` of the wrong pid.)
fn park_guard() -> std::sync::MutexGuard<'static, ()> {
    static PARK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked holding it left nothing to repair.
    PARK.lock().unwrap_or_else(|e| e.into_inner())
}
shmproc::task! {
    fn count_init(counter: Value<u64>) -> () {
        counter.get_lock().unwrap().update(|c| *c += 1);
    }
}
shmproc::task! { fn echo_len(v: Vec<u8>) -> usize { v.len() } }

/// Not registered in the worker? It is: every task! in this binary is. An
/// id that is registered nowhere is refused in the parent.
struct Phantom;
impl shmproc::pool::Task for Phantom {
    const ID: &'static str = "tests::pool::phantom";
    type Arg = u64;
    type Out = u64;
    fn call(x: u64) -> Result<u64, String> {
        Ok(x)
    }
}

/// Fails the whole test binary (with a message) if a test runs longer than
/// twice [`DEADLINE`]: a blocking pool call with no timeout of its own
/// (`map`, `apply`...) cannot hang the suite. Disarmed when dropped.
struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

fn watchdog(test: &'static str) -> Watchdog {
    watchdog_after(test, 2 * DEADLINE)
}

/// A hang detector: fails the test binary if `test` has not finished
/// within `limit`. (Its message goes straight to the process's stderr:
/// the test harness captures `eprintln!` in the test's threads, this one
/// included, and the exit discarded the capture, so a watchdog's exit used
/// to leave no word of which test it was.)
fn watchdog_after(test: &'static str, limit: Duration) -> Watchdog {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("test {test} did not finish within {limit:?}: failing the test binary\n").as_bytes(),
            );
            std::process::exit(1);
        }
    });
    Watchdog(Some(tx))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Closes and joins `pool` within the deadline (the test fails otherwise),
/// and checks that every worker it ever started (and the pids given) is
/// gone, and none of its segments is left in /dev/shm.
fn finish(pool: Pool, pids: &[u32]) {
    let (workers, names) = pool.__created();
    assert!(!workers.is_empty() && names.len() > 2);
    pool.close();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = pool.join();
        let _ = tx.send(r);
        drop(pool);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("pool.join() did not return within {DEADLINE:?}"),
    }
    h.join().unwrap();
    all_gone(pids.iter().copied().chain(workers), names);
}

/// No worker left running, no segment left in /dev/shm.
fn all_gone(pids: impl IntoIterator<Item = u32>, names: Vec<String>) {
    for p in pids {
        assert!(!alive(p), "worker {p} still running");
    }
    for n in names {
        let path = format!("/dev/shm/{}{n}", shmproc::NAME_PREFIX);
        assert!(!std::path::Path::new(&path).exists(), "{path} left behind");
    }
}

fn serial(n: u64) -> Vec<u64> {
    (0..n).map(|x| x.wrapping_mul(x)).collect()
}

/// `all` (a map of `park_at` over `0..n`) is exact but for item
/// `PARK_AT`, which failed with `WorkerLost` by SIGKILL of `victim`.
fn only_the_parked_item_was_lost(all: &[Result<u64, TaskError>], n: u64, victim: u32) {
    assert_eq!(all.len() as u64, n);
    for (i, o) in all.iter().enumerate() {
        let i = i as u64;
        if i == PARK_AT {
            assert!(
                matches!(o, Err(TaskError::WorkerLost { pid, signal: Some(9), index }) if *pid == victim && *index == PARK_AT),
                "{o:?}"
            );
        } else {
            assert_eq!(o, &Ok(i.wrapping_mul(i)), "item {i}");
        }
    }
}

#[test]
fn seeds_map_doubler_and_square() {
    let _watchdog = watchdog("seeds_map_doubler_and_square");
    let pool = Pool::new(3).unwrap();
    assert_eq!(pool.map(doubler, [5, 10, 20]).unwrap(), [10, 20, 40]);
    finish(pool, &[]);
    let pool = Pool::new(5).unwrap();
    assert_eq!(pool.map(square, [1, 2, 3]).unwrap(), [1, 4, 9]);
    finish(pool, &[]);
}

/// Two tasks named `work` in one module, each inside its own function:
/// each runs its own body in the workers (their ids once were both
/// `pool::work`, and the second silently ran the first: a String's length
/// prefix doubled as a u64).
fn lengths(pool: &Pool) -> Vec<usize> {
    shmproc::task! { fn work(s: String) -> usize { s.len() } }
    pool.map(work, ["a".to_string(), "bb".to_string(), "ccc".to_string()]).unwrap()
}

fn doubles(pool: &Pool) -> Vec<u64> {
    shmproc::task! { fn work(x: u64) -> u64 { x * 2 } }
    pool.map(work, [10, 20, 30]).unwrap()
}

#[test]
fn tasks_of_the_same_name_in_different_functions_each_run_their_own_body() {
    let _watchdog = watchdog("tasks_of_the_same_name_in_different_functions_each_run_their_own_body");
    let pool = Pool::new(2).unwrap();
    assert_eq!(doubles(&pool), [20, 40, 60]);
    assert_eq!(lengths(&pool), [1, 2, 3]);
    finish(pool, &[]);
}

shmproc::task! {
    /// Python's Counter of a line's words, as a dict.
    fn word_count(line: String) -> std::collections::HashMap<String, u64> {
        let mut m = std::collections::HashMap::new();
        for w in line.split_whitespace() {
            *m.entry(w.to_string()).or_insert(0) += 1;
        }
        m
    }
}

#[test]
fn a_task_returns_a_dict() {
    let _watchdog = watchdog("a_task_returns_a_dict");
    let pool = Pool::new(2).unwrap();
    let got = pool.map(word_count, ["a b a".to_string(), String::new(), "c".to_string()]).unwrap();
    let want: Vec<std::collections::HashMap<String, u64>> =
        vec![[("a".to_string(), 2), ("b".to_string(), 1)].into(), Default::default(), [("c".to_string(), 1)].into()];
    assert_eq!(got, want);
    finish(pool, &[]);
}

#[test]
fn every_form_matches_the_serial_result_for_10000_items() {
    let _watchdog = watchdog("every_form_matches_the_serial_result_for_10000_items");
    const N: u64 = 10_000;
    let want = serial(N);
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(square, 0..N).unwrap(), want);
    for cs in [1, 7, default_chunksize(N as usize, 2)] {
        assert_eq!(pool.map_chunked(square, 0..N, cs).unwrap(), want, "chunksize {cs}");
    }
    assert_eq!(pool.map_async(square, 0..N).unwrap().get().unwrap(), want);
    let got: Vec<u64> = pool.imap(square, 0..N).unwrap().map(Result::unwrap).collect();
    assert_eq!(got, want);
    let got: Vec<u64> = pool.imap(square, 0..N).unwrap().chunksize(7).map(Result::unwrap).collect();
    assert_eq!(got, want);
    let mut got: Vec<u64> = pool.imap_unordered(square, 0..N).unwrap().chunksize(3).map(Result::unwrap).collect();
    got.sort_unstable();
    let mut sorted = want.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted);
    let pairs: Vec<(u64, u64)> = (0..N).map(|x| (x, x * 2)).collect();
    let sums: Vec<u64> = (0..N).map(|x| x * 3).collect();
    assert_eq!(pool.starmap(add, pairs.clone()).unwrap(), sums);
    assert_eq!(pool.starmap_async(add, pairs).unwrap().get().unwrap(), sums);
    let asyncs: Vec<_> = (0..200).map(|x| pool.apply_async(square, x).unwrap()).collect();
    for (x, r) in asyncs.into_iter().enumerate() {
        assert_eq!(r.get().unwrap(), (x * x) as u64);
    }
    assert_eq!(pool.apply(square, 12).unwrap(), 144);
    finish(pool, &[]);
}

#[test]
fn errors_and_panics_fail_only_their_item() {
    let _watchdog = watchdog("errors_and_panics_fail_only_their_item");
    let pool = Pool::new(2).unwrap();
    let r = pool.map_results(picky, 0..40, 4).unwrap();
    for (i, o) in r.iter().enumerate() {
        match i {
            13 => match o {
                Err(TaskError::Failed { index: 13, message, pid }) => {
                    assert_eq!(message, "thirteen is unlucky");
                    assert_ne!(*pid, std::process::id());
                }
                other => panic!("item 13: {other:?}"),
            },
            17 => match o {
                Err(TaskError::Panicked { index: 17, message, .. }) => assert!(message.contains("seventeen")),
                other => panic!("item 17: {other:?}"),
            },
            _ => assert_eq!(o, &Ok(i as u64 + 1)),
        }
    }
    // map gives the first error by index, as Python raises it.
    match pool.map(picky, 0..40) {
        Err(PoolError::Task(TaskError::Failed { index: 13, .. })) => {}
        other => panic!("{other:?}"),
    }
    let r = pool.apply_async(picky, 17).unwrap();
    assert!(r.wait_timeout(DEADLINE));
    assert_eq!(r.successful(), Some(false));
    assert!(matches!(r.get(), Err(PoolError::Task(TaskError::Panicked { index: 0, .. }))));
    // The pool goes on.
    assert_eq!(pool.apply(picky, 1).unwrap(), 2);
    finish(pool, &[]);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let _watchdog = watchdog("bad_arguments_are_clear_errors");
    assert!(matches!(Pool::new(0), Err(PoolError::InvalidArgument(_))));
    let pool = Pool::new(1).unwrap();
    assert!(matches!(pool.map_chunked(square, 0..3, 0), Err(PoolError::InvalidArgument(_))));
    // get_timeout with a timeout too large to represent waits as get does.
    assert!(matches!(pool.apply_async(square, 3).unwrap().get_timeout(Duration::MAX), Ok(9)));
    finish(pool, &[]);
}

#[test]
fn unknown_task_is_refused_in_the_parent() {
    let _watchdog = watchdog("unknown_task_is_refused_in_the_parent");
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(Phantom, 1), Err(PoolError::NotRegistered("tests::pool::phantom")));
    assert!(matches!(pool.imap(Phantom, 0..3), Err(PoolError::NotRegistered(_))));
    assert!(matches!(Pool::builder().initializer(Phantom, 1).build(), Err(PoolError::NotRegistered(_))));
    finish(pool, &[]);
}

#[test]
fn kill_9_mid_map_fails_exactly_that_item_and_the_pool_goes_on() {
    let _watchdog = watchdog("kill_9_mid_map_fails_exactly_that_item_and_the_pool_goes_on");
    let pool = Pool::new(2).unwrap();
    let slot = Value::new(0u32).unwrap();
    const N: u64 = 200;
    const VICTIM: u64 = 77;
    let items: Vec<(u64, u64, Value<u32>)> = (0..N).map(|x| (x, VICTIM, slot.clone())).collect();
    let t = Instant::now();
    let r = pool.map_async(park_on, items).unwrap();
    wait_until("the victim item to start", || slot.get().unwrap() != 0);
    let victim = slot.get().unwrap();
    assert!(alive(victim));
    let killed_at = Instant::now();
    kill9(victim);
    let r = match r.get_timeout(DEADLINE) {
        Ok(_) => panic!("the killed item cannot succeed"),
        Err(shmproc::pool::GetTimeoutError::Failed(e)) => e,
        Err(shmproc::pool::GetTimeoutError::TimedOut(_)) => panic!("map did not finish within {DEADLINE:?}"),
        Err(e) => panic!("{e}"),
    };
    eprintln!("kill -9: map finished {:?} after the kill ({:?} in all)", killed_at.elapsed(), t.elapsed());
    match r {
        PoolError::Task(TaskError::WorkerLost { pid, signal, index }) => {
            assert_eq!(pid, victim);
            assert_eq!(signal, Some(9));
            assert_eq!(index, VICTIM);
        }
        other => panic!("{other:?}"),
    }
    // Every other item is right: run it again with per-item results.
    slot.set(0).unwrap();
    let items: Vec<(u64, u64, Value<u32>)> = (0..N).map(|x| (x, VICTIM, slot.clone())).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let pool = std::sync::Arc::new(pool);
    let p2 = std::sync::Arc::clone(&pool);
    let h = std::thread::spawn(move || tx.send(p2.map_results(park_on, items, 0)).unwrap());
    wait_until("the victim item to start again", || slot.get().unwrap() != 0);
    let victim2 = slot.get().unwrap();
    assert_ne!(victim2, victim, "a replacement worker runs it");
    kill9(victim2);
    let all = rx.recv_timeout(DEADLINE).expect("map_results did not finish").unwrap();
    h.join().unwrap();
    for (i, o) in all.iter().enumerate() {
        if i as u64 == VICTIM {
            assert!(
                matches!(o, Err(TaskError::WorkerLost { pid, signal: Some(9), index }) if *pid == victim2 && *index == VICTIM),
                "{o:?}"
            );
        } else {
            assert_eq!(o, &Ok(i as u64 * 3), "item {i}");
        }
    }
    // And the pool runs another map.
    assert_eq!(pool.map(square, 0..1000).unwrap(), serial(1000));
    let pool = std::sync::Arc::try_unwrap(pool).unwrap();
    finish(pool, &[victim, victim2]);
}

/// The same on the bulk path (plain-data arguments and results, written
/// in runs): the lost item is exactly the one the worker was running.
#[test]
fn kill_9_mid_bulk_map_fails_exactly_that_item() {
    let _watchdog = watchdog("kill_9_mid_bulk_map_fails_exactly_that_item");
    let _park = park_guard();
    let file = park_file(std::process::id());
    let _ = std::fs::remove_file(&file);
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    const N: u64 = 200_000;
    let (tx, rx) = std::sync::mpsc::channel();
    let p2 = std::sync::Arc::clone(&pool);
    let h = std::thread::spawn(move || tx.send(p2.map_results(park_at, 0..N, 0)).unwrap());
    wait_until("the victim item to start", || std::fs::read_to_string(&file).is_ok_and(|s| !s.is_empty()));
    let victim: u32 = std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
    std::fs::remove_file(&file).unwrap();
    kill9(victim);
    let all = rx.recv_timeout(DEADLINE).expect("map_results did not finish").unwrap();
    h.join().unwrap();
    only_the_parked_item_was_lost(&all, N, victim);
    assert_eq!(pool.map(square, 0..100_000).unwrap(), serial(100_000));
    let pool = std::sync::Arc::try_unwrap(pool).unwrap();
    finish(pool, &[victim]);
}

#[test]
fn a_task_timeout_kills_a_task_that_sleeps_forever() {
    let _watchdog = watchdog("a_task_timeout_kills_a_task_that_sleeps_forever");
    let pool = Pool::new(2).unwrap();
    let r = pool.apply_async(nap, 3_600_000).unwrap().timeout(Duration::from_millis(300));
    let e = match r.get_timeout(DEADLINE) {
        Err(shmproc::pool::GetTimeoutError::Failed(e)) => e,
        other => panic!("{:?}", other.map(|_| ())),
    };
    let pid = match e {
        PoolError::Task(TaskError::TimedOut { pid, index: 0, timeout }) => {
            assert_eq!(timeout, Duration::from_millis(300));
            pid
        }
        other => panic!("{other:?}"),
    };
    wait_until("the timed-out worker to be gone", || !alive(pid));
    assert_eq!(pool.apply(square, 5).unwrap(), 25);
    // A builder default applies to every item.
    let pool2 = Pool::builder().processes(1).task_timeout(Duration::from_millis(200)).build().unwrap();
    let r = pool2.map_results(nap, [0, 3_600_000, 0], 1).unwrap();
    assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
    assert!(matches!(r[1], Err(TaskError::TimedOut { index: 1, .. })), "{r:?}");
    finish(pool2, &[]);
    finish(pool, &[pid]);
}

#[test]
fn cancel_stops_the_running_item() {
    let _watchdog = watchdog("cancel_stops_the_running_item");
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(nap, 3_600_000).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    r.cancel();
    match r.get_timeout(DEADLINE) {
        Err(shmproc::pool::GetTimeoutError::Failed(PoolError::Task(TaskError::Cancelled { index: 0 }))) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    finish(pool, &[]);
}

#[test]
fn initializer_runs_once_per_worker() {
    let _watchdog = watchdog("initializer_runs_once_per_worker");
    let counter = Value::new(0u64).unwrap();
    let pool = Pool::builder().processes(3).initializer(count_init, counter.clone()).build().unwrap();
    let pids: std::collections::HashSet<u32> = pool.map_chunked(pid_of, 0..300, 1).unwrap().into_iter().collect();
    assert!(pids.len() <= 3);
    finish(pool, &[]);
    assert_eq!(counter.get().unwrap(), 3);
}

shmproc::task! {
    fn bad_init(_: ()) -> Result<(), String> {
        Err("no setup today".to_string())
    }
}

/// Python's pool respawns workers whose initializer fails forever, and a
/// map on it never returns; ours gives up after a few attempts in a row and
/// fails the items with the initializer's error.
#[test]
fn a_failing_initializer_fails_the_jobs_instead_of_hanging() {
    let _watchdog = watchdog("a_failing_initializer_fails_the_jobs_instead_of_hanging");
    let pool = Pool::builder().processes(2).initializer(bad_init, ()).build().unwrap();
    let r = pool.map_async(square, 0..10).unwrap();
    let e = match r.get_timeout(DEADLINE) {
        Err(shmproc::pool::GetTimeoutError::Failed(e)) => e,
        Err(shmproc::pool::GetTimeoutError::TimedOut(_)) => panic!("map did not fail within {DEADLINE:?}"),
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert!(e.to_string().contains("no setup today"), "{e}");
    let (workers, names) = pool.__created();
    pool.terminate();
    drop(pool);
    all_gone(workers, names);
}

#[test]
fn maxtasksperchild_replaces_workers_and_results_stay_exact() {
    let _watchdog = watchdog("maxtasksperchild_replaces_workers_and_results_stay_exact");
    let pool = Pool::builder().processes(2).maxtasksperchild(5).build().unwrap();
    let pids = pool.map_chunked(pid_of, 0..100, 1).unwrap();
    let distinct: std::collections::HashSet<u32> = pids.iter().copied().collect();
    // 100 tasks, at most 5 per worker: at least 20 workers ran them.
    assert!(distinct.len() >= 20, "{} distinct pids", distinct.len());
    assert_eq!(pool.map_chunked(square, 0..1000, 3).unwrap(), serial(1000));
    let all: Vec<u32> = distinct.into_iter().collect();
    finish(pool, &all);
}

#[test]
fn terminate_during_a_map_returns_promptly_and_fails_the_rest() {
    let _watchdog = watchdog("terminate_during_a_map_returns_promptly_and_fails_the_rest");
    let pool = Pool::new(2).unwrap();
    let r = pool.map_async(nap, vec![3_600_000u64; 8]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        pool.terminate();
        tx.send(()).unwrap();
        pool
    });
    rx.recv_timeout(DEADLINE).expect("terminate did not return");
    let pool = h.join().unwrap();
    let (workers, names) = pool.__created();
    for &p in &workers {
        assert!(!alive(p), "worker {p} still running after terminate");
    }
    match r.get_timeout(DEADLINE) {
        Err(shmproc::pool::GetTimeoutError::Failed(PoolError::Task(TaskError::Terminated { .. }))) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(pool.apply(square, 1), Err(PoolError::Closed));
    pool.join().unwrap();
    drop(pool);
    all_gone(workers, names);
}

#[test]
fn dropping_the_pool_terminates_it() {
    let _watchdog = watchdog("dropping_the_pool_terminates_it");
    let pool = Pool::new(2).unwrap();
    let pids: Vec<u32> = pool.map_chunked(pid_of, 0..20, 1).unwrap();
    let r = pool.apply_async(nap, 3_600_000).unwrap();
    let (workers, names) = pool.__created();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(pool);
        tx.send(()).unwrap();
    });
    rx.recv_timeout(DEADLINE).expect("drop did not return");
    assert!(matches!(r.get(), Err(PoolError::Task(TaskError::Terminated { index: 0 }))));
    all_gone(pids.into_iter().chain(workers), names);
}

#[test]
fn imap_with_an_endless_input_keeps_a_bounded_number_in_flight() {
    let _watchdog = watchdog("imap_with_an_endless_input_keeps_a_bounded_number_in_flight");
    let pool = Pool::new(2).unwrap();
    let pulled = std::cell::Cell::new(0u64);
    let input = (0u64..).inspect(|_| pulled.set(pulled.get() + 1));
    let mut it = pool.imap(square, input).unwrap().max_in_flight(10);
    for x in 0..1000u64 {
        assert_eq!(it.next().unwrap().unwrap(), x * x);
        assert!(pulled.get() <= x + 1 + 10, "pulled {} after {} results", pulled.get(), x + 1);
    }
    drop(it);
    assert_eq!(pool.apply(square, 4).unwrap(), 16);
    finish(pool, &[]);
}

#[test]
fn too_large_items_fail_alone() {
    let _watchdog = watchdog("too_large_items_fail_alone");
    let pool = Pool::new(1).unwrap();
    let big = vec![0u8; shmproc::pool::MAX_ITEM_BYTES + 1];
    let r = pool.map_results(echo_len, vec![vec![1u8; 10], big, vec![]], 1).unwrap();
    assert_eq!(r[0], Ok(10));
    assert!(matches!(r[1], Err(TaskError::TooLarge { index: 1, what: "argument", .. })), "{r:?}");
    assert_eq!(r[2], Ok(0));
    finish(pool, &[]);
}

#[test]
fn callbacks_run_when_ready() {
    let _watchdog = watchdog("callbacks_run_when_ready");
    let pool = Pool::new(2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    pool.map_async(square, 0..100).unwrap().then(move |r| tx.send(r).unwrap());
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap().unwrap(), serial(100));
    finish(pool, &[]);
}

#[test]
fn close_then_join_waits_for_submitted_work() {
    let _watchdog = watchdog("close_then_join_waits_for_submitted_work");
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.join(), Err(PoolError::StillOpen));
    let r = pool.map_async(nap, vec![50u64; 4]).unwrap();
    pool.close();
    assert_eq!(pool.apply(square, 1), Err(PoolError::Closed));
    finish(pool, &[]);
    assert!(r.ready());
    assert_eq!(r.get().unwrap().len(), 4);
}

#[test]
fn fork_start_method_works_too() {
    let _watchdog = watchdog("fork_start_method_works_too");
    let pool = Pool::builder().processes(2).start_method(shmproc::process::StartMethod::Fork).build().unwrap();
    assert_eq!(pool.map(square, 0..1000).unwrap(), serial(1000));
    let r = pool.apply_async(nap, 3_600_000).unwrap().timeout(Duration::from_millis(100));
    assert!(matches!(r.get(), Err(PoolError::Task(TaskError::TimedOut { .. }))));
    assert_eq!(pool.apply(square, 6).unwrap(), 36); // a forked replacement
    finish(pool, &[]);
}

#[test]
fn imap_after_close_is_refused_and_an_unused_imap_is_harmless() {
    let _watchdog = watchdog("imap_after_close_is_refused_and_an_unused_imap_is_harmless");
    let pool = Pool::new(1).unwrap();
    let unused = pool.imap(square, 0..10).unwrap();
    drop(unused);
    let it = pool.imap(square, 0..3).unwrap();
    pool.close();
    // Submitted before close: it still runs.
    assert_eq!(it.map(Result::unwrap).collect::<Vec<_>>(), [0, 1, 4]);
    assert!(matches!(pool.imap(square, 0..3), Err(PoolError::Closed)));
    finish(pool, &[]);
}

#[test]
fn killing_an_idle_worker_loses_nothing_and_it_is_replaced() {
    let _watchdog = watchdog("killing_an_idle_worker_loses_nothing_and_it_is_replaced");
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(square, Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
    let before: std::collections::HashSet<u32> = pool.map_chunked(pid_of, 0..50, 1).unwrap().into_iter().collect();
    let victim = *before.iter().next().unwrap();
    kill9(victim);
    wait_until("the idle victim to be replaced", || {
        let (workers, _) = pool.__created();
        workers.len() >= 3 && !alive(victim)
    });
    // Nothing was running on it: every item of the next maps is right.
    assert_eq!(pool.map_chunked(square, 0..2000, 1).unwrap(), serial(2000));
    let after: std::collections::HashSet<u32> = pool.map_chunked(pid_of, 0..50, 1).unwrap().into_iter().collect();
    assert!(!after.contains(&victim));
    finish(pool, &[victim]);
}

/// `terminate` from two threads at once: each returns only once every
/// worker is gone (the second caller waits for the first one's join).
#[test]
fn terminate_from_two_threads_returns_when_the_workers_are_gone() {
    let _watchdog = watchdog("terminate_from_two_threads_returns_when_the_workers_are_gone");
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let _r = pool.map_async(nap, vec![3_600_000u64; 4]).unwrap();
    let (workers, _) = pool.__created();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (pool, tx, workers) = (std::sync::Arc::clone(&pool), tx.clone(), workers.clone());
        threads.push(std::thread::spawn(move || {
            pool.terminate();
            tx.send(workers.iter().all(|&p| !alive(p))).unwrap();
        }));
    }
    for _ in 0..2 {
        assert!(rx.recv_timeout(DEADLINE).expect("terminate did not return"), "a worker outlived terminate()");
    }
    for t in threads {
        t.join().unwrap();
    }
    let pool = std::sync::Arc::try_unwrap(pool).unwrap();
    let (workers, names) = pool.__created();
    drop(pool);
    all_gone(workers, names);
}

/// Random sizes, chunk sizes and forms on one pool (seeded, so a failure
/// replays), each against the serial result.
#[test]
fn random_shapes_match_the_serial_result() {
    let _watchdog = watchdog("random_shapes_match_the_serial_result");
    let pool = Pool::new(2).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    for round in 0..24 {
        let n = next(3000);
        let cs = 1 + next(60) as usize;
        let want = serial(n);
        let what = format!("round {round}: n {n}, chunksize {cs}");
        match next(4) {
            0 => assert_eq!(pool.map_chunked(square, 0..n, cs).unwrap(), want, "{what}"),
            1 => {
                let got: Vec<u64> = pool.imap(square, 0..n).unwrap().chunksize(cs).map(Result::unwrap).collect();
                assert_eq!(got, want, "{what}");
            }
            2 => {
                let inflight = 1 + next(40) as usize;
                let mut got: Vec<u64> = pool
                    .imap_unordered(square, 0..n)
                    .unwrap()
                    .chunksize(cs)
                    .max_in_flight(inflight)
                    .map(Result::unwrap)
                    .collect();
                got.sort_unstable();
                let mut w = want.clone();
                w.sort_unstable();
                assert_eq!(got, w, "{what}, in flight {inflight}");
            }
            _ => {
                let got = pool.map_results(square, 0..n, cs).unwrap();
                assert_eq!(got, want.into_iter().map(Ok).collect::<Vec<_>>(), "{what}");
            }
        }
    }
    finish(pool, &[]);
}

/// A job larger than one submission batch (65 536 items) goes out in
/// several batches, with chunk boundaries kept.
#[test]
fn a_large_map_goes_out_in_batches() {
    let _watchdog = watchdog("a_large_map_goes_out_in_batches");
    let pool = Pool::builder().processes(2).maxtasksperchild(50).build().unwrap();
    const N: u64 = 200_000;
    assert_eq!(pool.map_chunked(square, 0..N, 7).unwrap(), serial(N));
    assert_eq!(pool.map(square, 0..N).unwrap(), serial(N));
    finish(pool, &[]);
}

shmproc::entry! {
    /// Owns a pool, reports its workers' pids, then waits to be killed.
    fn pool_owner(pids: shmproc::Array<u32>) {
        let pool = Pool::new(2).unwrap();
        let (workers, _) = pool.__created();
        for (i, p) in workers.iter().enumerate().take(2) {
            pids.set(i, *p).unwrap();
        }
        let _busy = pool.apply_async(nap, 3_600_000).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// The process that owns a pool is killed with SIGKILL: its workers (daemon
/// processes watching their parent) leave by themselves; its segments are
/// then a creator-died leftover that `gc()` removes.
#[test]
fn workers_leave_when_the_pool_owner_is_killed() {
    let _watchdog = watchdog("workers_leave_when_the_pool_owner_is_killed");
    let pids = shmproc::Array::from_slice(&[0u32, 0]).unwrap();
    let mut owner = shmproc::Process::new(pool_owner, pids.clone());
    owner.start().unwrap();
    wait_until("the owner's workers to start", || pids.get(1).unwrap() != 0);
    let workers = [pids.get(0).unwrap(), pids.get(1).unwrap()];
    owner.kill().unwrap();
    assert!(owner.join_timeout(DEADLINE).is_err(), "the owner was killed");
    for p in workers {
        wait_until("an orphaned worker to leave", || !alive(p));
    }
    // The owner's segments are a killed creator's leftovers (as for any
    // object): remove exactly those (its unique names carry its pid).
    let owner_pid = owner.pid().unwrap();
    let mine = format!("{}anon.{owner_pid}.", shmproc::NAME_PREFIX);
    let mut left = Vec::new();
    for e in std::fs::read_dir("/dev/shm").unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(&mine) {
            left.push(name.clone());
            shmproc::unlink(&format!("anon.{owner_pid}.{rest}")).unwrap();
        }
    }
    // The control segment and two rings per worker.
    assert!(left.len() >= 5, "{left:?}");
}

shmproc::task! {
    fn record_pid(slot: Value<u32>) -> () {
        slot.set(std::process::id()).unwrap();
    }
}

/// SIGKILL by kill(2) itself (no `kill` program: a slim image has no procps).
fn kill9(pid: u32) {
    // SAFETY: kill(2) with a pid and a signal number touches no memory.
    let r = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(r, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}

/// Five workers killed (OOM killer, an operator) before they ran a task —
/// each one a replacement of the last — make the pool give up for good:
/// every later job fails, though nothing is wrong with the workers.
#[test]
fn kills_of_fresh_workers_never_shut_the_pool_down() {
    let slot = Value::new(0u32).unwrap();
    let pool = Pool::builder().processes(1).initializer(record_pid, slot.clone()).build().unwrap();
    let mut last = 0;
    for k in 0..5 {
        let t = Instant::now();
        while slot.get().unwrap() == last || slot.get().unwrap() == 0 {
            assert!(t.elapsed() < Duration::from_secs(20), "no replacement after kill {k}");
            std::thread::sleep(Duration::from_millis(5));
        }
        last = slot.get().unwrap();
        kill9(last);
        while alive(last) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let r = pool.apply_async(square, 3).unwrap().get_timeout(Duration::from_secs(20));
    eprintln!("after 5 kills of idle workers: {:?}", r.as_ref().map_err(|e| e.to_string()));
    assert_eq!(r.ok(), Some(9));
}

/// Cancelling a job whose item was handed to a worker that has not begun
/// it yet (a fresh replacement) counts as a "start failure"; five in a row
/// and the pool refuses every job from then on.
#[test]
fn cancels_that_hit_fresh_workers_never_shut_the_pool_down() {
    let pool = Pool::new(1).unwrap();
    for k in 0..8 {
        let r = pool.apply_async(nap, 3_600_000).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        r.cancel();
        let o = r.get_timeout(Duration::from_secs(20));
        eprintln!("cancel {k}: {:?}", o.as_ref().map_err(|e| e.to_string()));
    }
    let r = pool.apply_async(square, 3).unwrap().get_timeout(Duration::from_secs(20));
    eprintln!("after the cancels: {:?}", r.as_ref().map_err(|e| e.to_string()));
    assert_eq!(r.ok(), Some(9));
}

/// One panicking callback (user code on the manager thread) terminates the
/// whole pool: every other job fails and the pool refuses new work.
#[test]
fn a_panicking_callback_leaves_the_pool_working() {
    let pool = Pool::new(2).unwrap();
    let other = pool.apply_async(nap, 300).unwrap();
    pool.apply_async(square, 2).unwrap().then(|_| panic!("callback bug"));
    let o = other.get_timeout(Duration::from_secs(20));
    eprintln!("an unrelated job after the callback panicked: {:?}", o.as_ref().map_err(|e| e.to_string()));
    let again = pool.apply_async(square, 3).map(|r| r.get_timeout(Duration::from_secs(20)).ok());
    eprintln!("a new job: {:?}", again.as_ref().map_err(|e| e.to_string()));
    assert!(o.is_ok());
    assert_eq!(again.ok().flatten(), Some(9));
}

shmproc::task! {
    fn loud_err(n: u64) -> Result<u64, String> { Err("é".repeat(n as usize)) }
}

/// A task's error with a message longer than an item's limit stays a
/// failure with (the start of) its message; it was once `Refused` with a
/// size complaint instead (found by a hostile review).
#[test]
fn a_long_error_message_stays_a_failure() {
    let _watchdog = watchdog("a_long_error_message_stays_a_failure");
    let pool = Pool::new(1).unwrap();
    match pool.apply(loud_err, 150_000) {
        Err(PoolError::Task(TaskError::Failed { message, .. })) => {
            assert!(message.starts_with("éé") && message.ends_with("[message cut]"), "{}", &message[..40]);
            assert!(message.len() <= shmproc::pool::MAX_ITEM_BYTES);
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    finish(pool, &[]);
}
