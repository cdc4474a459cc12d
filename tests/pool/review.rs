//! Tests from a hostile review of the pool (branch rev-pool), a module of
//! tests/pool.rs (its helpers and tasks): each failed on the pool of its
//! day or probes a corner (kills under load, terminate under load). The
//! reviewer's tests fixed earlier are in tests/pool.rs itself. Every
//! blocking wait is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmproc::pool::{GetTimeoutError, TaskError};
use shmproc::{Pool, Value};

use super::{DEADLINE, alive, all_gone, finish, kill9, nap, pid_of, square, watchdog};

shmproc::task! {
    /// About `us` microseconds of spinning, then x*x; counts its runs.
    fn busy_sq((x, us, runs): (u64, u64, shmproc::Array<u32>)) -> u64 {
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(us) {
            std::hint::spin_loop();
        }
        let i = x as usize;
        let _ = runs.set(i, runs.get(i).unwrap() + 1);
        x.wrapping_mul(x)
    }
}

/// Python: `it = pool.imap(f, range(100)); pool.close(); pool.join()`
/// returns once the submitted tasks are done (its imap took its whole
/// input at once). Ours takes its input lazily: `join` waits for what the
/// imap submitted and cuts off the rest, so the iterator yields the
/// submitted items' results, then one `NotSubmitted` for the first item it
/// had not submitted, and ends. `join` hung here (it waited for the
/// caller to pull the rest of the input, which it could not do while in
/// `join`).
#[test]
fn close_then_join_with_an_unconsumed_imap_returns() {
    let _watchdog = watchdog("close_then_join_with_an_unconsumed_imap_returns");
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let mut it = pool.imap(square, 0..100u64).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    pool.close();
    let (tx, rx) = std::sync::mpsc::channel();
    let p = std::sync::Arc::clone(&pool);
    let joiner = std::thread::spawn(move || {
        let _ = tx.send(p.join());
    });
    let r = rx.recv_timeout(DEADLINE);
    // Unblock and clean up either way.
    let rest: Vec<_> = it.by_ref().collect();
    drop(it);
    assert!(r.is_ok(), "join() did not return within {DEADLINE:?} while an imap was unconsumed");
    assert_eq!(r.unwrap(), Ok(()));
    joiner.join().unwrap();
    let (last, done) = rest.split_last().expect("at least the NotSubmitted error");
    for (k, r) in done.iter().enumerate() {
        let x = k as u64 + 1;
        assert_eq!(r, &Ok(x * x), "item {x}");
    }
    let first_cut = done.len() as u64 + 1;
    assert!(first_cut < 100, "the imap had submitted its whole input");
    assert_eq!(last, &Err(TaskError::NotSubmitted { index: first_cut }));
    finish(std::sync::Arc::into_inner(pool).expect("the joiner thread ended"), &[]);
}

/// An imap not iterated at all has submitted nothing (it takes its input
/// when iterated): `join` returns at once, and the iterator then says the
/// pool stopped before its first item ran.
#[test]
fn join_before_an_imap_is_iterated_returns_and_the_imap_says_why_it_is_empty() {
    let _watchdog = watchdog("join_before_an_imap_is_iterated_returns_and_the_imap_says_why_it_is_empty");
    let pool = Pool::new(2).unwrap();
    let it = pool.imap(square, 0..10u64).unwrap();
    pool.close();
    pool.join().unwrap();
    assert_eq!(it.collect::<Vec<_>>(), [Err(TaskError::NotSubmitted { index: 0 })]);
    finish(pool, &[]);
}

/// Random kill -9 of workers during a map: every item is its right value
/// or WorkerLost (at most one per kill), map returns, and count re-runs.
#[test]
fn random_kills_during_a_map() {
    let _watchdog = watchdog("random_kills_during_a_map");
    const N: usize = 2000;
    let runs = shmproc::Array::from_slice(&vec![0u32; N]).unwrap();
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let items: Vec<_> = (0..N as u64).map(|x| (x, 300u64, runs.clone())).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p2, s2) = (std::sync::Arc::clone(&pool), std::sync::Arc::clone(&stop));
    let killer = std::thread::spawn(move || {
        let mut kills = 0u32;
        let mut seed = 0x9e3779b97f4a7c15u64;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) && kills < 8 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(40 + seed % 60));
            let live: Vec<u32> = p2.__created().0.into_iter().filter(|&p| alive(p)).collect();
            if let Some(&p) = live.get((seed % 7) as usize % live.len().max(1)) {
                kill9(p);
                kills += 1;
            }
        }
        kills
    });
    let t = Instant::now();
    let out = pool.map_results(busy_sq, items, 7).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.join().unwrap();
    let mut lost = 0;
    let mut other = Vec::new();
    for (i, o) in out.iter().enumerate() {
        match o {
            Ok(v) => assert_eq!(*v, (i as u64) * (i as u64), "item {i}"),
            Err(TaskError::WorkerLost { index, .. }) => {
                assert_eq!(*index, i as u64);
                lost += 1
            }
            Err(e) => other.push((i, e.to_string())),
        }
    }
    let reruns = (0..N).filter(|&i| runs.get(i).unwrap() > 1).count();
    eprintln!(
        "{kills} kills, {lost} WorkerLost, {} other errors, {reruns} items run more than once, {:?}",
        other.len(),
        t.elapsed()
    );
    assert!(other.is_empty(), "{:?}", &other[..other.len().min(3)]);
    assert!(lost <= kills as usize);
}

/// terminate() from one thread while three others run map / imap /
/// apply_async in loops: everything returns promptly, nothing is left.
#[test]
fn terminate_while_three_threads_submit() {
    let _watchdog = watchdog("terminate_while_three_threads_submit");
    for round in 0..5 {
        let pool = std::sync::Arc::new(Pool::new(2).unwrap());
        let mut hs = Vec::new();
        for t in 0..3 {
            let p = std::sync::Arc::clone(&pool);
            hs.push(std::thread::spawn(move || {
                for _ in 0..1000 {
                    let ok = match t {
                        0 => p.map(square, 0..5000u64).is_ok(),
                        1 => p
                            .imap(square, 0..2000u64)
                            .map(|it| it.take_while(|r| r.is_ok()).count() == 2000)
                            .unwrap_or(false),
                        _ => p.apply_async(nap, 5).map(|r| r.get().is_ok()).unwrap_or(false),
                    };
                    if !ok {
                        break;
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(100 + 37 * round));
        let t = Instant::now();
        pool.terminate();
        let took = t.elapsed();
        for h in hs {
            h.join().unwrap();
        }
        let (pids, names) = pool.__created();
        drop(pool);
        assert!(took < Duration::from_secs(3), "terminate took {took:?}");
        for p in pids {
            assert!(!alive(p), "worker {p} left");
        }
        for n in names {
            let path = format!("/dev/shm/{}{n}", shmproc::NAME_PREFIX);
            assert!(!std::path::Path::new(&path).exists(), "{path} left behind");
        }
    }
}

shmproc::task! {
    /// Like a task whose library handles SIGTERM (a graceful-shutdown
    /// hook): ignores it, records its pid, works for an hour.
    fn stubborn(slot: Value<u32>) -> () {
        // SAFETY: setting a signal disposition to SIG_IGN.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
        slot.set(std::process::id()).unwrap();
        std::thread::sleep(Duration::from_secs(3600));
    }
}

shmproc::entry! {
    fn stubborn_owner(slot: Value<u32>) {
        let pool = Pool::new(1).unwrap();
        let _busy = pool.apply_async(stubborn, slot).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// The pool owner is killed with SIGKILL while its worker runs a task that
/// ignores SIGTERM: the worker was told to leave with SIGTERM only, so it
/// ran on, orphaned. Now it kills itself when its parent process ends.
#[test]
fn a_busy_worker_outlives_its_killed_owner() {
    let _watchdog = watchdog("a_busy_worker_outlives_its_killed_owner");
    let slot = Value::new(0u32).unwrap();
    let mut owner = shmproc::Process::new(stubborn_owner, slot.clone());
    owner.start().unwrap();
    let t = Instant::now();
    while slot.get().unwrap() == 0 {
        assert!(t.elapsed() < DEADLINE, "the owner's worker did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let worker = slot.get().unwrap();
    owner.kill().unwrap();
    let _ = owner.join_timeout(DEADLINE);
    let t = Instant::now();
    while alive(worker) && t.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(10));
    }
    let still = alive(worker);
    if still {
        kill9(worker);
    }
    // Clean the owner's segments (as the existing owner test does).
    let owner_pid = owner.pid().unwrap();
    let mine = format!("{}anon.{owner_pid}.", shmproc::NAME_PREFIX);
    for e in std::fs::read_dir("/dev/shm").unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(&mine) {
            let _ = shmproc::unlink(&format!("anon.{owner_pid}.{rest}"));
        }
    }
    assert!(!still, "orphaned worker {worker} still running {DEADLINE:?} after its owner was killed");
}

shmproc::task! {
    fn busy_pair(x: u64) -> (u64, u64) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(200) {
            std::hint::spin_loop();
        }
        (x, x.wrapping_mul(x))
    }
}

fn killer(
    pool: std::sync::Arc<Pool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max: u32,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut kills = 0u32;
        let mut seed = 0x2545f4914f6cdd1du64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && kills < max {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(30 + seed % 50));
            let live: Vec<u32> = pool.__created().0.into_iter().filter(|&p| alive(p)).collect();
            if !live.is_empty() {
                kill9(live[(seed % live.len() as u64) as usize]);
                kills += 1;
            }
        }
        kills
    })
}

/// imap_unordered under random kill -9 (with maxtasksperchild, so kills
/// also land on fresh replacements): each index at most once, each value
/// right, no other error than WorkerLost.
#[test]
fn imap_unordered_under_random_kills_with_maxtasksperchild() {
    let _watchdog = watchdog("imap_unordered_under_random_kills_with_maxtasksperchild");
    const N: u64 = 2500;
    let pool = std::sync::Arc::new(Pool::builder().processes(2).maxtasksperchild(40).build().unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let k = killer(std::sync::Arc::clone(&pool), std::sync::Arc::clone(&stop), 15);
    let t = Instant::now();
    let mut seen = vec![0u32; N as usize];
    let (mut lost, mut other) = (0, Vec::new());
    for r in pool.imap_unordered(busy_pair, 0..N).unwrap().chunksize(3) {
        match r {
            Ok((x, y)) => {
                assert_eq!(y, x * x);
                seen[x as usize] += 1;
            }
            Err(TaskError::WorkerLost { .. }) => lost += 1,
            Err(e) => other.push(e.to_string()),
        }
        assert!(t.elapsed() < Duration::from_secs(60), "imap_unordered too slow / hung");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = k.join().unwrap();
    let dup = seen.iter().filter(|&&c| c > 1).count();
    let missing = seen.iter().filter(|&&c| c == 0).count();
    eprintln!(
        "{kills} kills: {lost} WorkerLost, {} other errors {:?}, {dup} duplicated, {missing} missing, {:?}",
        other.len(),
        other.first(),
        t.elapsed()
    );
    assert!(other.is_empty() && dup == 0 && missing == lost && lost <= kills as usize);
}

/// A job with a 300 ms item timeout beside a job without one whose item
/// runs 1 s: only the first job's sleeper dies; chunked neighbours run.
#[test]
fn timeouts_kill_only_the_right_worker() {
    let _watchdog = watchdog("timeouts_kill_only_the_right_worker");
    let pool = Pool::new(2).unwrap();
    let slow = pool.apply_async(nap, 1000).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let r = pool.map_async(nap, [10u64, 10, 3_600_000, 10, 10]).unwrap();
    let r = r.timeout(Duration::from_millis(300));
    let got = r.get_timeout(Duration::from_secs(20));
    eprintln!("timed job after {:?}: {:?}", t.elapsed(), got.as_ref().map_err(|e| e.to_string()));
    let s = slow.get_timeout(Duration::from_secs(20));
    eprintln!("untimed job: {:?}", s.as_ref().map_err(|e| e.to_string()));
    assert!(s.is_ok());
    assert!(matches!(
        got,
        Err(shmproc::pool::GetTimeoutError::Failed(shmproc::pool::PoolError::Task(TaskError::TimedOut {
            index: 2,
            ..
        })))
    ));
}

shmproc::task! {
    fn bump(c: Value<u64>) -> () {
        c.get_lock().unwrap().update(|v| *v += 1);
    }
}
shmproc::task! {
    /// Writes its pid to `pid`, then holds its worker until `release` is
    /// set (the test decides when it ends: no timing).
    pub(super) fn hold((pid, release): (Value<u32>, Value<u32>)) -> u32 {
        pid.set(std::process::id()).unwrap();
        while release.get().unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::process::id()
    }
}
/// Starts `hold` in `pool` and waits until a worker runs it: (its result,
/// the worker's pid, the release flag).
pub(super) fn hold_a_worker(pool: &Pool) -> (shmproc::AsyncResult<u32>, u32, Value<u32>) {
    let (pid, release) = (Value::new(0u32).unwrap(), Value::new(0u32).unwrap());
    let r = pool.apply_async(hold, (pid.clone(), release.clone())).unwrap();
    let t = Instant::now();
    while pid.get().unwrap() == 0 {
        assert!(t.elapsed() < DEADLINE, "hold did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    (r, pid.get().unwrap(), release)
}

/// Items of a cancelled job that were handed ahead (prefetched) to a
/// worker busy with another job's item ran after the cancel (their results
/// thrown away): cancel did not "really stop the work". Now the manager
/// takes such frames back before the worker takes them up.
#[test]
fn cancelled_items_prefetched_by_a_busy_worker_still_run() {
    let _watchdog = watchdog("cancelled_items_prefetched_by_a_busy_worker_still_run");
    let pool = Pool::new(1).unwrap();
    let (a, _, release) = hold_a_worker(&pool);
    let c = Value::new(0u64).unwrap();
    // Chunks of 10 (Python's default for 40 items, 1 worker): one is
    // handed ahead to the busy worker.
    let b = pool.map_async(bump, vec![c.clone(); 40]).unwrap();
    // Give the manager time to hand it ahead (were it slower, the test
    // would pass without testing anything, never fail wrongly).
    std::thread::sleep(Duration::from_millis(100));
    b.cancel();
    let rb = b.get_timeout(DEADLINE);
    assert!(
        matches!(
            rb,
            Err(shmproc::pool::GetTimeoutError::Failed(shmproc::pool::PoolError::Task(TaskError::Cancelled { .. })))
        ),
        "{rb:?}"
    );
    release.set(1).unwrap();
    a.get_timeout(DEADLINE).unwrap();
    // One worker runs its frames in order: once this is back, any frame
    // handed ahead before it ran (or was skipped).
    assert_eq!(pool.apply_async(square, 3).unwrap().get_timeout(DEADLINE).unwrap(), 9);
    assert_eq!(c.get().unwrap(), 0, "items of the cancelled job ran after cancel()");
}

/// A worker busy with a long item was still handed a second frame ahead
/// (prefetch): that chunk of another job waited behind the long item
/// while the other worker sat idle (Python's workers take tasks from one
/// shared queue when free, so the quick job finishes at once). Now an idle
/// worker takes such a frame back: the quick map completes while the long
/// item still runs, all on the other worker.
#[test]
fn a_quick_map_waits_behind_another_jobs_long_item() {
    let _watchdog = watchdog("a_quick_map_waits_behind_another_jobs_long_item");
    let pool = Pool::new(2).unwrap();
    let (long, busy, release) = hold_a_worker(&pool);
    let quick = pool.map_async(pid_of, 0..40u64).unwrap().get_timeout(DEADLINE);
    release.set(1).unwrap();
    assert_eq!(long.get_timeout(DEADLINE).unwrap(), busy);
    let pids = quick.expect("the quick map did not complete while the other job's item ran");
    assert_eq!(pids.len(), 40);
    assert!(pids.iter().all(|&p| p != busy), "an item ran on the busy worker");
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = s.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

shmproc::entry! {
    /// Measures, in a process of its own (the test binary's other threads
    /// do not count), the CPU ticks a pool burns idle (this process and
    /// the workers) and blocked on two long tasks (this process), 1 s each;
    /// writes them to `out` [idle owner, idle workers, blocked owner].
    fn cpu_probe(out: shmproc::Array<u64>) {
        let pool = Pool::new(2).unwrap();
        let idle_pids = pool.__created().0;
        std::thread::sleep(Duration::from_millis(300));
        let me = std::process::id();
        let workers = || idle_pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
        let (o0, w0) = (cpu_ticks(me), workers());
        std::thread::sleep(Duration::from_secs(1));
        let (o1, w1) = (cpu_ticks(me), workers());
        let _a = pool.apply_async(nap, 3_600_000).unwrap();
        let _b = pool.apply_async(nap, 3_600_000).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let o2 = cpu_ticks(me);
        std::thread::sleep(Duration::from_secs(1));
        let o3 = cpu_ticks(me);
        for (i, v) in [o1 - o0, w1 - w0, o3 - o2].into_iter().enumerate() {
            out.set(i, v).unwrap();
        }
    }
}

/// A pool blocked on long tasks (and an idle one) burns ~no CPU in the
/// owner (manager thread) or the workers: at most 5 ticks (50 ms) in 1 s,
/// where a spinning thread would take about 100.
#[test]
fn a_blocked_pool_burns_no_cpu() {
    let _watchdog = watchdog("a_blocked_pool_burns_no_cpu");
    let out = shmproc::Array::from_slice(&[u64::MAX; 3]).unwrap();
    let mut probe = shmproc::Process::new(cpu_probe, out.clone());
    probe.start().unwrap();
    if !probe.join_timeout(DEADLINE).unwrap() {
        let _ = probe.kill();
        let _ = probe.join_timeout(DEADLINE);
        panic!("the probe did not end within {DEADLINE:?}");
    }
    let [idle_owner, idle_workers, blocked_owner] = [0, 1, 2].map(|i| out.get(i).unwrap());
    eprintln!(
        "idle 1 s: owner {idle_owner} ticks, workers {idle_workers}; blocked 1 s: owner {blocked_owner} (100 ticks = 1 CPU-s)"
    );
    assert!(idle_owner <= 5 && idle_workers <= 5 && blocked_owner <= 5);
}

shmproc::task! {
    /// A 60 KiB result tagged with its index (time spent in result sends).
    fn fat(x: u64) -> Vec<u64> { vec![x; 7680] }
}

/// Ordered imap of fat results under random kill -9: each yielded result
/// carries its own index; only WorkerLost errors; within the deadline.
#[test]
fn ordered_imap_of_fat_results_under_random_kills() {
    let _watchdog = watchdog("ordered_imap_of_fat_results_under_random_kills");
    const N: u64 = 300;
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let k = killer(std::sync::Arc::clone(&pool), std::sync::Arc::clone(&stop), 8);
    let t = Instant::now();
    let (mut lost, mut other, mut n) = (0, Vec::new(), 0u64);
    for (i, r) in pool.imap(fat, 0..N).unwrap().chunksize(5).enumerate() {
        n += 1;
        match r {
            Ok(v) => assert!(v.len() == 7680 && v.iter().all(|&y| y == i as u64), "result {i} is {}", v[0]),
            Err(TaskError::WorkerLost { index, .. }) => {
                assert_eq!(index, i as u64);
                lost += 1
            }
            Err(e) => other.push(e.to_string()),
        }
        assert!(t.elapsed() < Duration::from_secs(60), "hung");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let kills = k.join().unwrap();
    eprintln!("{kills} kills, {n} results, {lost} WorkerLost, other {:?}, {:?}", other.first(), t.elapsed());
    assert_eq!(n, N);
    assert!(other.is_empty() && lost <= kills as usize);
}

// The second hostile review (branch rev-pool2): the take-back protocol
// (claim/revoke in the control segment) and join cutting an imap's input.
// Each test here failed on b1c4271.

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
    all_gone(workers, names);
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
/// Now the manager kills such a worker (`check_claims`): the item runs
/// on its replacement.
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
/// Now the cut job's later input is refused at `send`.
#[test]
fn an_imap_cut_by_join_keeps_pulling_input_and_yields_endless_not_submitted() {
    let _watchdog = watchdog("an_imap_cut_by_join_keeps_pulling_input_and_yields_endless_not_submitted");
    let pool = Arc::new(Pool::new(2).unwrap());
    // Another job keeps `join` waiting (the test releases it).
    let (long, _, release) = hold_a_worker(&pool);
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

/// A frame taken back by `cancel` from a busy worker stays in its ring
/// (marked) until the worker gets to it. `steal` marks such a worker slow
/// (no frame handed ahead to it until it answers: 2269b60); `cancel` does
/// not, so the next job's frame is handed ahead to the same busy worker
/// right after the cancel, behind the taken-back one — and that frame can
/// never be taken back (`revoke` needs the worker past the marked frame).
/// So after a cancel, a quick map waits behind another job's long item
/// while the other worker sits idle: the defect 2269b60 fixed for steals.
/// Now `cancel` marks the worker slow too (until it passes the frame).
#[test]
fn after_a_cancel_a_quick_map_waits_behind_another_jobs_long_item() {
    let _watchdog = watchdog("after_a_cancel_a_quick_map_waits_behind_another_jobs_long_item");
    let pool = Pool::new(2).unwrap();
    let (long_a, _, release_a) = hold_a_worker(&pool);
    let (long_b, _, release_b) = hold_a_worker(&pool);
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
/// Now only the worker's `claimed` word passing the frame clears the mark.
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
/// Now Y's frames are not handed ahead (the worker is slow): the cancel
/// fails them at once.
#[test]
fn a_second_cancel_behind_a_taken_back_frame_does_not_stop_its_items() {
    let _watchdog = watchdog("a_second_cancel_behind_a_taken_back_frame_does_not_stop_its_items");
    let pool = Pool::new(1).unwrap();
    let (a, _, release) = hold_a_worker(&pool);
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
