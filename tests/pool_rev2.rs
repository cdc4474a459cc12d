//! Second hostile review of the pool (branch rev-pool2): the take-back
//! protocol (claim/revoke in the control segment), join cutting an imap's
//! input, and the workers' parent watch. Each test here FAILED on the code
//! it was written against (8fee6d1); every blocking wait is bounded, and
//! each test ends with no worker and no segment left.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmproc::pool::{GetTimeoutError, TaskError};
use shmproc::{Pool, Value};

/// Any single blocking wait in these tests.
const DEADLINE: Duration = Duration::from_secs(20);

shmproc::task! { fn square(x: u64) -> u64 { x.wrapping_mul(x) } }

shmproc::task! {
    /// Writes its pid to `pid`, then holds its worker until `release` is
    /// set (the test decides when it ends: no timing).
    fn hold((pid, release): (Value<u32>, Value<u32>)) -> u32 {
        pid.set(std::process::id()).unwrap();
        while release.get().unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::process::id()
    }
}

shmproc::task! {
    /// A hostile task: finds its own worker's record in the pool's control
    /// segment (a shared-memory file the worker maps: the record holds
    /// `started: u64`, `pid: u32`, pad, `claimed: u64`) and marks the
    /// worker's NEXT task frame as taken back (`claimed = (n + 1) | 1 << 63`),
    /// as the manager's `revoke` would. True if it found the record.
    fn mark_next_frame_taken_back(_x: u64) -> bool {
        use std::os::unix::fs::FileExt;
        let me = std::process::id();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut paths: Vec<&str> = maps.lines().filter_map(|l| l.find("/dev/shm/").map(|i| &l[i..])).collect();
        paths.sort();
        paths.dedup();
        for path in paths {
            let Ok(bytes) = std::fs::read(path) else { continue };
            let u64_at = |p: usize| u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap());
            let mut p = 8;
            while p + 16 <= bytes.len() {
                let pid = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
                let (started, claimed) = (u64_at(p - 8), u64_at(p + 8));
                if pid == me && started == 1 && claimed == 1 {
                    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                    f.write_all_at(&((claimed + 1) | 1 << 63).to_le_bytes(), (p + 8) as u64).unwrap();
                    return true;
                }
                p += 8;
            }
        }
        false
    }
}

/// Fails the whole test binary (with a message) if a test runs longer than
/// three [`DEADLINE`]s: a blocking pool call with no timeout of its own
/// (`join`, `terminate`) cannot hang the suite. Disarmed when dropped.
struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

fn watchdog(test: &'static str) -> Watchdog {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(3 * DEADLINE) {
            eprintln!("test {test} did not finish within {:?}: failing the test binary", 3 * DEADLINE);
            std::process::exit(1);
        }
    });
    Watchdog(Some(tx))
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Runs `f` on a thread; fails the test if it does not return within
/// [`DEADLINE`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not return within {DEADLINE:?}"),
    }
}

/// Terminates `pool` (bounded) and checks that every worker it started is
/// gone and none of its segments is left in /dev/shm.
fn terminate_and_check(pool: Pool) {
    let (workers, names) = pool.__created();
    bounded("terminate", move || {
        pool.terminate();
        drop(pool);
    });
    for p in workers {
        assert!(!alive(p), "worker {p} still running");
    }
    for n in names {
        let path = format!("/dev/shm/{}{n}", shmproc::NAME_PREFIX);
        assert!(!std::path::Path::new(&path).exists(), "{path} left behind");
    }
}

/// Starts `hold` in `pool` and waits until a worker runs it: (its result,
/// the release flag).
fn hold_a_worker(pool: &Pool) -> (shmproc::AsyncResult<u32>, Value<u32>) {
    let (pid, release) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
    let r = pool.apply_async(hold, (pid.clone(), release.clone())).unwrap();
    let t = Instant::now();
    while pid.get().unwrap() == 0 {
        assert!(t.elapsed() < DEADLINE, "hold did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    (r, release)
}

/// The control record is shared memory a task can write (its worker maps
/// it). A task that marks its worker's next frame as "taken back" makes
/// the worker skip that frame while the manager still waits for it: the
/// next job never gets an outcome, not even with a per-task timeout (the
/// item never starts, so no timeout fires; the worker is alive and idle,
/// so no death is seen). A hostile task can hang any task by never
/// returning, but then the timeout kills it; here the pool's promise
/// "per-task timeouts that really stop the work" is void and the job hangs
/// until the pool is terminated. (The manager could see it: the worker's
/// `claimed` word passed a frame still in its fifo, unanswered.)
#[test]
fn a_task_that_marks_its_next_frame_taken_back_hangs_a_job_despite_its_timeout() {
    let _watchdog = watchdog("a_task_that_marks_its_next_frame_taken_back_hangs_a_job_despite_its_timeout");
    let pool = Pool::new(1).unwrap();
    let found = pool.apply_async(mark_next_frame_taken_back, 0).unwrap().get_timeout(DEADLINE);
    let found = found.unwrap_or_else(|e| panic!("the hostile task did not complete: {e}"));
    assert!(found, "the hostile task did not find its control record (test setup)");
    let r = pool.apply_async(square, 7).unwrap().timeout(Duration::from_secs(1));
    let outcome = r.get_timeout(Duration::from_secs(5));
    let hung = matches!(outcome, Err(GetTimeoutError::TimedOut(_)));
    terminate_and_check(pool);
    assert!(
        !hung,
        "apply_async(square, 7) with a 1 s timeout got no outcome in 5 s: its frame was skipped by a worker whose \
         control record a task had rewritten, and the manager still waits for it"
    );
}

/// `join` after `close` cuts off an imap's input; the docs promise the
/// iterator then yields the submitted items' results, ONE
/// `NotSubmitted` (the first item not submitted) and ends. While `join`
/// still waits for another job, an imap being consumed instead yields
/// one `NotSubmitted` per item and keeps pulling its input: each `next()`
/// pulls more input, sends it to the manager (accepted: the pool is
/// Joining, not stopped) and gets it back as `NotSubmitted`. With an
/// endless input it never ends (a consumer that skips errors spins at
/// full CPU for as long as `join` waits), and items pulled from the
/// caller's input after `join` cut it off are thrown away.
#[test]
fn an_imap_cut_by_join_keeps_pulling_input_and_yields_endless_not_submitted() {
    let _watchdog = watchdog("an_imap_cut_by_join_keeps_pulling_input_and_yields_endless_not_submitted");
    let pool = Arc::new(Pool::new(2).unwrap());
    // Another job keeps `join` waiting (the test releases it).
    let (long, release) = hold_a_worker(&pool);
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&pulled);
    let mut it = pool
        .imap(
            square,
            (0u64..).inspect(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .unwrap();
    assert_eq!(it.next(), Some(Ok(0)));
    pool.close();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = Arc::clone(&pool);
    let joiner = std::thread::spawn(move || {
        let _ = tx.send(p.join());
    });
    // Results of what was submitted, until the cut shows.
    let t = Instant::now();
    let mut k = 1u64;
    let first = loop {
        assert!(t.elapsed() < DEADLINE, "the imap was never cut by join");
        match it.next() {
            Some(Ok(v)) => {
                assert_eq!(v, k * k, "item {k}");
                k += 1;
            }
            Some(Err(e)) => break e,
            None => panic!("the imap of an endless input ended without an error"),
        }
    };
    assert_eq!(first, TaskError::NotSubmitted { index: k }, "the first error after the cut");
    let pulled_at_cut = pulled.load(Ordering::Relaxed);
    let mut more = Vec::new();
    while more.len() < 50 {
        match it.next() {
            Some(r) => more.push(r),
            None => break,
        }
    }
    let pulled_after = pulled.load(Ordering::Relaxed) - pulled_at_cut;
    // Clean up whatever happened.
    release.set(1).unwrap();
    let _ = long.get_timeout(DEADLINE);
    let joined = rx.recv_timeout(DEADLINE);
    drop(it);
    assert!(joined.is_ok(), "join did not return within {DEADLINE:?} once the other job ended");
    joiner.join().unwrap();
    terminate_and_check(Arc::into_inner(pool).expect("the joiner thread ended"));
    assert!(
        more.is_empty(),
        "after NotSubmitted {{ index: {k} }} the cut imap yielded {} more items (first {:?}, last {:?}) and pulled {} \
         more items from its input while join waited",
        more.len(),
        more.first(),
        more.last(),
        pulled_after
    );
}

shmproc::task! { fn pid_of(_x: u64) -> u32 { std::process::id() } }
shmproc::task! { fn bump(c: Value<u64>) -> () { c.get_lock().unwrap().update(|v| *v += 1); } }

/// A frame taken back by `cancel` from a busy worker stays in its ring
/// (marked) until the worker gets to it. `steal` marks such a worker slow
/// (no frame handed ahead to it until it answers: 2269b60); `cancel` does
/// not, so the next job's frame is handed ahead to the same busy worker
/// right after the cancel, behind the taken-back one — and that frame can
/// never be taken back (`revoke` needs the worker past the marked frame).
/// So after a cancel, a quick map waits behind another job's long item
/// while the other worker sits idle: the defect 2269b60 fixed for steals.
#[test]
fn after_a_cancel_a_quick_map_waits_behind_another_jobs_long_item() {
    let _watchdog = watchdog("after_a_cancel_a_quick_map_waits_behind_another_jobs_long_item");
    let pool = Pool::new(2).unwrap();
    let (long_a, release_a) = hold_a_worker(&pool);
    let (long_b, release_b) = hold_a_worker(&pool);
    // Both workers busy: a frame of this job (chunks of 5) is handed ahead
    // to each of them, then taken back by the cancel.
    let c = Value::new(0u64).unwrap();
    let x = pool.map_async(bump, vec![c.clone(); 40]).unwrap();
    // Give the manager time to hand the frames ahead (were it slower, the
    // test would pass without testing anything, never fail wrongly).
    std::thread::sleep(Duration::from_millis(200));
    x.cancel();
    let rx = x.get_timeout(DEADLINE);
    assert!(matches!(rx, Err(GetTimeoutError::Failed(_))), "the cancelled map: {rx:?}");
    // The quick map: a frame of it is handed ahead to each busy worker.
    let quick = pool.map_async(pid_of, 0..40u64).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    release_b.set(1).unwrap();
    let b = long_b.get_timeout(DEADLINE).unwrap_or_else(|e| panic!("hold on B: {e}"));
    let got = quick.get_timeout(Duration::from_secs(5));
    let stuck = matches!(got, Err(GetTimeoutError::TimedOut(_)));
    release_a.set(1).unwrap();
    let a = long_a.get_timeout(DEADLINE).unwrap_or_else(|e| panic!("hold on A: {e}"));
    assert_ne!(a, b);
    terminate_and_check(pool);
    assert_eq!(c.get().unwrap(), 0, "items of the cancelled map ran");
    assert!(
        !stuck,
        "the quick map did not complete in 5 s while worker B was idle: a frame of it waits behind worker A's long \
         item, handed ahead after a cancel took a frame back from A"
    );
    let pids = got.unwrap_or_else(|e| panic!("quick map: {e}"));
    assert!(pids.iter().all(|&p| p == b), "an item ran on the busy worker");
}

shmproc::task! {
    /// Kind 0: counts itself, small result; 1: counts itself, 100 KB
    /// result; 2: waits for `flag`, counts itself, 100 KB; 3: sets `count`
    /// to 1 (it started), waits for `flag`, small result. Waits are
    /// bounded (60 s).
    fn step((kind, flag, count): (u8, Value<u32>, Value<u32>)) -> Vec<u8> {
        let t = Instant::now();
        let wait = || {
            while flag.get().unwrap() == 0 && t.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        match kind {
            3 => {
                count.set(1).unwrap();
                wait();
                return Vec::new();
            }
            2 => wait(),
            _ => {}
        }
        count.get_lock().unwrap().update(|c| *c += 1);
        if kind == 0 { Vec::new() } else { vec![7u8; 100_000] }
    }
}

/// The same stuck frame without a cancel: `steal` marks a worker slow
/// when it takes a frame back from it, but any answer clears the mark,
/// also a partial one (the first results of a frame whose results
/// overflow a result frame) while the worker has not yet reached the
/// taken-back frame. The next job's frame is then handed ahead to it,
/// behind the taken-back one, where `revoke` cannot reach it: a quick map
/// waits behind the long item while the other worker is idle.
#[test]
fn after_a_partial_answer_a_quick_map_waits_behind_a_long_item() {
    let _watchdog = watchdog("after_a_partial_answer_a_quick_map_waits_behind_a_long_item");
    let pool = Arc::new(Pool::new(2).unwrap());
    let (r1, r2, c, started) =
        (Value::new(0u32).unwrap(), Value::new(0u32).unwrap(), Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
    // Chunks of 4: worker 0 gets the first (waits for r1; two 100 KB
    // results; waits for r2) and the third handed ahead; worker 1 the
    // second and fourth. When worker 1 is idle, the third is taken back
    // from worker 0 for it.
    let mut items = vec![
        (2u8, r1.clone(), c.clone()),
        (1, r1.clone(), c.clone()),
        (1, r1.clone(), c.clone()),
        (3, r2.clone(), started.clone()),
    ];
    items.extend((0..12).map(|_| (0u8, r1.clone(), c.clone())));
    let (tx, rx) = std::sync::mpsc::channel();
    let p = Arc::clone(&pool);
    let mapper = std::thread::spawn(move || {
        let _ = tx.send(p.map_results(step, items, 4));
    });
    let t = Instant::now();
    while c.get().unwrap() < 12 {
        assert!(t.elapsed() < DEADLINE, "the quick chunks did not run (count {})", c.get().unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
    // Worker 0 runs on: the results of items 0 and 1 go out as soon as
    // item 2's result overflows the result frame; then it waits in item 3.
    r1.set(1).unwrap();
    while started.get().unwrap() == 0 {
        assert!(t.elapsed() < DEADLINE, "item 3 did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    let quick = pool.map_async(pid_of, 0..40u64).unwrap();
    let got = quick.get_timeout(Duration::from_secs(5));
    let stuck = matches!(got, Err(GetTimeoutError::TimedOut(_)));
    r2.set(1).unwrap();
    let rj = rx.recv_timeout(DEADLINE);
    mapper.join().unwrap();
    terminate_and_check(Arc::into_inner(pool).expect("the mapper thread ended"));
    let rj = rj.expect("the first map did not return").expect("the first map");
    assert!(
        rj.len() == 16 && rj.iter().all(Result::is_ok) && rj[1].as_ref().unwrap().len() == 100_000,
        "the first map"
    );
    assert!(
        !stuck,
        "the quick map did not complete in 5 s while worker 1 was idle: a frame of it waits behind worker 0's long \
         item, handed ahead after a partial answer cleared the slow mark"
    );
}

/// The frame stuck behind a taken-back one can be neither taken back nor
/// stopped: cancelling its job leaves it to run. One worker, busy: map X
/// (a frame handed ahead) is cancelled (its frame taken back, still in the
/// worker's ring); map Y's frame is handed ahead behind it; cancelling Y
/// cannot take it back (`revoke` needs the worker past X's frame) and
/// does not stop the worker (it runs another job's item): once the worker
/// is free, Y's items run after `cancel()` returned; until then the
/// cancelled map's `get` blocks (its result is not ready while another
/// job's item runs). The review's
/// `cancelled_items_prefetched_by_a_busy_worker_still_run`, one cancel
/// later.
#[test]
fn a_second_cancel_behind_a_taken_back_frame_does_not_stop_its_items() {
    let _watchdog = watchdog("a_second_cancel_behind_a_taken_back_frame_does_not_stop_its_items");
    let pool = Pool::new(1).unwrap();
    let (a, release) = hold_a_worker(&pool);
    let (cx, cy) = (Value::new(0u64).unwrap(), Value::new(0u64).unwrap());
    // Chunks of 10 (Python's default for 40 items, 1 worker).
    let x = pool.map_async(bump, vec![cx.clone(); 40]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    x.cancel();
    let rx = x.get_timeout(DEADLINE);
    assert!(matches!(rx, Err(GetTimeoutError::Failed(_))), "map x: {rx:?}");
    let y = pool.map_async(bump, vec![cy.clone(); 40]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    y.cancel();
    // Cancelling fails its items at once, or stops the worker running
    // them: the result is ready well within 5 s either way.
    let ry = y.get_timeout(Duration::from_secs(5));
    let y_hung = matches!(ry, Err(GetTimeoutError::TimedOut(_)));
    release.set(1).unwrap();
    a.get_timeout(DEADLINE).unwrap_or_else(|e| panic!("hold: {e}"));
    // One worker runs its frames in order: once this is back, every frame
    // handed to it before ran (or was skipped).
    let nine = pool.apply_async(square, 3).unwrap().get_timeout(DEADLINE);
    let (ran_x, ran_y) = (cx.get().unwrap(), cy.get().unwrap());
    terminate_and_check(pool);
    assert_eq!(nine.unwrap_or_else(|e| panic!("apply: {e}")), 9);
    assert_eq!(ran_x, 0, "items of the first cancelled map ran");
    assert!(
        !y_hung && ran_y == 0,
        "the second cancelled map: {} within 5 s of cancel() (the worker was busy with another job's item), and \
         {ran_y} of its items ran after cancel() (its frame sat behind the first map's taken-back frame)",
        if y_hung { "no outcome" } else { "an outcome" }
    );
}
