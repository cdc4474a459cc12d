//! Lock benchmarks, ours beside the anchors.
//!
//! First an interleaved side-by-side comparison (each round runs every
//! implementation once, medians over rounds, ratios printed), because this
//! machine's core-to-core latency changes over seconds; then criterion
//! benches of the same operations.
//!
//! - uncontended lock+unlock: shmproc::Lock, std::sync::Mutex (in-process),
//!   a process-shared robust pthread mutex, raw_sync::Mutex in a
//!   shared_memory segment;
//! - two processes pinned to different cores, each doing lock / increment /
//!   unlock: time per critical section (the total is checked);
//! - Event set -> wake latency across processes (ping-pong, one way).

#[path = "../../benches/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use raw_sync::locks::{LockImpl, LockInit};
use shmproc::{Event, Lock, Mutex};
use support::{SharedPage, interleave, quick, run_pair};

/// A robust, process-shared pthread mutex plus a counter, in a shared page.
struct PthreadRobust {
    page: SharedPage,
}

impl PthreadRobust {
    fn new() -> Self {
        let page = SharedPage::new(4096);
        // SAFETY: the page is zeroed, large and aligned enough for a
        // pthread_mutex_t; attributes are initialised before use.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            assert_eq!(libc::pthread_mutex_init(page.ptr() as *mut libc::pthread_mutex_t, &attr), 0);
        }
        PthreadRobust { page }
    }

    #[inline]
    fn critical(&self, counter_add: u64) {
        let m = self.page.ptr() as *mut libc::pthread_mutex_t;
        // SAFETY: initialised in `new`; the counter lives in the same page
        // at offset 128 and is only touched under the mutex.
        unsafe {
            libc::pthread_mutex_lock(m);
            let c = self.page.ptr().add(128) as *mut u64;
            c.write_volatile(c.read_volatile() + counter_add);
            libc::pthread_mutex_unlock(m);
        }
    }

    fn counter(&self) -> u64 {
        // SAFETY: in range; no concurrent writer when read.
        unsafe { (self.page.ptr().add(128) as *const u64).read_volatile() }
    }
}

/// raw_sync's Mutex in a shared_memory segment (what users would otherwise
/// pick), plus a counter behind it.
struct RawSync {
    _shmem: shared_memory::Shmem,
    lock: Box<dyn LockImpl>,
}

impl RawSync {
    fn new() -> Self {
        let shmem = shared_memory::ShmemConf::new().size(4096).create().expect("shared_memory segment");
        let base = shmem.as_ptr();
        // SAFETY: the segment is 4096 bytes; the lock takes its start and
        // the data pointer points 256 bytes in.
        let (lock, _) = unsafe { raw_sync::locks::Mutex::new(base, base.add(256)) }.expect("raw_sync mutex");
        RawSync { _shmem: shmem, lock }
    }

    #[inline]
    fn critical(&self, add: u64) {
        let g = self.lock.lock().expect("raw_sync lock");
        let c = *g as *mut u64;
        // SAFETY: the guarded data pointer is 8-aligned inside the segment.
        unsafe { c.write_volatile(c.read_volatile() + add) };
        drop(g);
    }

    fn counter(&self) -> u64 {
        let g = self.lock.lock().expect("raw_sync lock");
        // SAFETY: as in `critical`.
        unsafe { (*g as *const u64).read_volatile() }
    }
}

/// ns per iteration of `f` over `iters` iterations.
fn ns_per(iters: u64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

fn ratio_line(label: &str, ours: f64, theirs: f64) {
    println!("  {label:<44} {:>6.2}x", ours / theirs);
}

fn side_by_side(rounds: usize, iters: u64, pair_iters: u64, pings: u64) {
    let ours = Lock::new().unwrap();
    let std_mutex = std::sync::Mutex::new(());
    let pthread = PthreadRobust::new();
    let rawsync = RawSync::new();
    let bench_name = "shmproc lock+unlock";

    println!("\n== uncontended lock+unlock, ns (median of {rounds} interleaved rounds x {iters} ops)");
    let res = interleave(
        rounds,
        &mut [
            (bench_name, &mut || ns_per(iters, || drop(black_box(ours.lock().unwrap())))),
            ("std::sync::Mutex (in-process)", &mut || ns_per(iters, || drop(black_box(std_mutex.lock().unwrap())))),
            ("robust pshared pthread mutex", &mut || ns_per(iters, || pthread.critical(0))),
            ("raw_sync::Mutex in shared_memory", &mut || ns_per(iters, || rawsync.critical(0))),
        ],
    );
    for (n, v) in &res {
        println!("  {n:<44} {v:>8.2}");
    }
    ratio_line("ours / std (target <= 1.10)", res[0].1, res[1].1);
    ratio_line("ours / robust pthread", res[0].1, res[2].1);
    ratio_line("ours / raw_sync", res[0].1, res[3].1);

    println!("\n== two processes on two cores, lock/increment/unlock, ns per critical section");
    let m = Mutex::new(0u64).unwrap();
    let per_cs = |d: Duration| d.as_nanos() as f64 / (2 * pair_iters) as f64;
    let mut ours_pair = || {
        let before = m.lock().unwrap().value();
        let op = || m.lock().unwrap().update(|c| *c += 1);
        let d = run_pair(|| (0..pair_iters).for_each(|_| op()), || (0..pair_iters).for_each(|_| op()));
        assert_eq!(m.lock().unwrap().value() - before, 2 * pair_iters, "lost increments");
        per_cs(d)
    };
    let mut pthread_pair = || {
        let before = pthread.counter();
        let d = run_pair(
            || (0..pair_iters).for_each(|_| pthread.critical(1)),
            || (0..pair_iters).for_each(|_| pthread.critical(1)),
        );
        assert_eq!(pthread.counter() - before, 2 * pair_iters);
        per_cs(d)
    };
    let mut rawsync_pair = || {
        let before = rawsync.counter();
        let d = run_pair(
            || (0..pair_iters).for_each(|_| rawsync.critical(1)),
            || (0..pair_iters).for_each(|_| rawsync.critical(1)),
        );
        assert_eq!(rawsync.counter() - before, 2 * pair_iters);
        per_cs(d)
    };
    let res = interleave(
        rounds,
        &mut [
            ("shmproc Mutex<u64>", &mut ours_pair),
            ("robust pshared pthread mutex", &mut pthread_pair),
            ("raw_sync::Mutex in shared_memory", &mut rawsync_pair),
        ],
    );
    for (n, v) in &res {
        println!("  {n:<44} {v:>8.2}");
    }
    ratio_line("ours / robust pthread (target <= 1.00)", res[0].1, res[1].1);
    ratio_line("ours / raw_sync", res[0].1, res[2].1);

    println!("\n== Event set -> wake across processes (ping-pong), ns one way");
    let (ping, pong) = (Event::new().unwrap(), Event::new().unwrap());
    let mut event_pp = || {
        let d = run_pair(
            || {
                for _ in 0..pings {
                    ping.set();
                    pong.wait();
                    pong.clear();
                }
            },
            || {
                for _ in 0..pings {
                    ping.wait();
                    ping.clear();
                    pong.set();
                }
            },
        );
        d.as_nanos() as f64 / (2 * pings) as f64
    };
    let res = interleave(rounds, &mut [("shmproc Event (spin, then futex)", &mut event_pp)]);
    for (n, v) in &res {
        println!("  {n:<44} {v:>8.2}");
    }
}

fn criterion_benches(c: &mut Criterion) {
    let ours = Lock::new().unwrap();
    let std_mutex = std::sync::Mutex::new(());
    let pthread = PthreadRobust::new();
    let rawsync = RawSync::new();
    let mut g = c.benchmark_group("uncontended_lock_unlock");
    g.bench_function("shmproc", |b| b.iter(|| drop(black_box(ours.lock().unwrap()))));
    g.bench_function("std_mutex", |b| b.iter(|| drop(black_box(std_mutex.lock().unwrap()))));
    g.bench_function("pthread_robust", |b| b.iter(|| pthread.critical(0)));
    g.bench_function("raw_sync", |b| b.iter(|| rawsync.critical(0)));
    g.finish();

    let m = Mutex::new(0u64).unwrap();
    let mut g = c.benchmark_group("two_process_critical_section");
    g.sample_size(10);
    // Each iteration is one critical section in each process; the time is
    // reported per critical section.
    g.bench_function("shmproc", |b| {
        b.iter_custom(|n| {
            let op = || m.lock().unwrap().update(|c| *c += 1);
            run_pair(|| (0..n).for_each(|_| op()), || (0..n).for_each(|_| op())) / 2
        })
    });
    g.bench_function("pthread_robust", |b| {
        b.iter_custom(|n| {
            run_pair(|| (0..n).for_each(|_| pthread.critical(1)), || (0..n).for_each(|_| pthread.critical(1))) / 2
        })
    });
    g.bench_function("raw_sync", |b| {
        b.iter_custom(|n| {
            run_pair(|| (0..n).for_each(|_| rawsync.critical(1)), || (0..n).for_each(|_| rawsync.critical(1))) / 2
        })
    });
    g.finish();
}

fn main() {
    if quick() {
        println!("(quick smoke run with tiny sizes: the figures below are not measurements)");
        side_by_side(1, 1000, 1000, 100);
        return;
    }
    let rounds = std::env::var("SHMPROC_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(11);
    side_by_side(rounds, 2_000_000, 500_000, 20_000);
    if std::env::var_os("SHMPROC_BENCH_SIDE_BY_SIDE_ONLY").is_some() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();
}
