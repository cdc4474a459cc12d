//! Pool throughput and latency, side by side with Python's `Pool(2)` (when
//! python3 is present) and rayon on threads in one process (the limit),
//! then criterion benches of ours.
//!
//! (a) `map` of 1 000 000 trivial u64 tasks (x -> x*x), default chunksize;
//! (b) `apply_async(...).get()` round trip;
//! (c) 2 000 CPU-bound tasks of about 50 µs each: parallel speed-up over
//!     the same work done serially in this process.
//!
//! `SHMPROC_BENCH_QUICK=1` (or `--test`): tiny sizes, no criterion — a
//! smoke run for CI, not a measurement.
//!
//! `SHMPROC_BENCH_MAP_ONLY=N`: only (a), N interleaved rounds of ours and
//! rayon's, one line per round (ours, rayon, ratio), then exit: for A/B
//! runs of two builds alternated within a minute, e.g.
//! `SHMPROC_BENCH_MAP_ONLY=20 target/release/deps/pool-*`.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use rayon::prelude::*;
use shmproc::Pool;
use support::{median, quick};

shmproc::task! { fn square(x: u64) -> u64 { x.wrapping_mul(x) } }
shmproc::task! { fn burn(iters: u64) -> u64 { spin(iters) } }

/// About `iters` dependent multiply-xorshift steps: CPU work that does not
/// touch memory.
fn spin(iters: u64) -> u64 {
    let mut x = iters | 1;
    for i in 0..iters {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        x ^= x >> 29;
    }
    black_box(x)
}

/// Iterations of `spin` that take about `target` here.
fn calibrate(target: Duration) -> u64 {
    let mut iters = 1_000u64;
    loop {
        let t = Instant::now();
        for _ in 0..20 {
            spin(iters);
        }
        let per = t.elapsed() / 20;
        if per >= target / 4 {
            return (iters as f64 * target.as_secs_f64() / per.as_secs_f64()).max(1.0) as u64;
        }
        iters *= 4;
    }
}

struct Sizes {
    map: u64,
    apply: usize,
    cpu: usize,
    rounds: usize,
}

fn python(sizes: &Sizes) -> Option<(f64, f64)> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_pool.py");
    let out =
        Command::new("python3").arg(script).arg(sizes.map.to_string()).arg(sizes.apply.to_string()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<f64>().ok());
    Some((get("map_tasks_per_s")?, get("apply_rtt_us")?))
}

fn ours_map(pool: &Pool, n: u64) -> f64 {
    let t = Instant::now();
    let out = pool.map(square, 0..n).expect("map");
    let d = t.elapsed();
    assert_eq!(out[(n - 1) as usize], (n - 1).wrapping_mul(n - 1));
    n as f64 / d.as_secs_f64()
}

/// This process's minor page faults so far (`getrusage`).
fn minflt() -> i64 {
    // SAFETY: `rusage` is plain integers, for which all-zero bytes are valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable `rusage` for the call to fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_minflt
}

fn rayon_map(tp: &rayon::ThreadPool, n: u64) -> f64 {
    let t = Instant::now();
    let out: Vec<u64> = tp.install(|| (0..n).into_par_iter().map(|x| x.wrapping_mul(x)).collect());
    let d = t.elapsed();
    assert_eq!(out[(n - 1) as usize], (n - 1).wrapping_mul(n - 1));
    n as f64 / d.as_secs_f64()
}

/// The two copies a process pool's parent cannot avoid, alone on one
/// thread with no pool around them: each input written into a buffer
/// (what encoding the tasks into shared memory is), then each result
/// copied from a buffer into a new `Vec` (what collecting the workers'
/// results is). Tasks per second if a map cost only these; the buffers
/// are made once and reused, as the pool's arena is.
struct CopyFloor {
    inputs: Vec<u64>,
    results: Vec<u64>,
}

impl CopyFloor {
    fn new(n: u64) -> CopyFloor {
        CopyFloor { inputs: vec![0; n as usize], results: (0..n).map(|x| x.wrapping_mul(x)).collect() }
    }

    fn run(&mut self) -> f64 {
        let n = self.inputs.len();
        let t = Instant::now();
        for (slot, x) in self.inputs.iter_mut().zip(0..n as u64) {
            *slot = x;
        }
        black_box(&mut self.inputs);
        let out = self.results.clone();
        let d = t.elapsed();
        assert_eq!(out[n - 1], ((n - 1) as u64).wrapping_mul((n - 1) as u64));
        n as f64 / d.as_secs_f64()
    }
}

fn ours_apply_us(pool: &Pool, n: usize) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(pool.apply_async(square, 7).unwrap().get().unwrap(), 49);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    median(&mut v)
}

fn serial_cpu(iters: u64, n: usize) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        spin(iters);
    }
    t.elapsed()
}

fn ours_cpu(pool: &Pool, iters: u64, n: usize) -> Duration {
    let t = Instant::now();
    let out = pool.map(burn, vec![iters; n]).expect("map");
    assert_eq!(out.len(), n);
    t.elapsed()
}

fn rayon_cpu(tp: &rayon::ThreadPool, iters: u64, n: usize) -> Duration {
    let t = Instant::now();
    let s: u64 = tp.install(|| (0..n).into_par_iter().map(|_| spin(iters)).sum());
    black_box(s);
    t.elapsed()
}

fn side_by_side(sizes: &Sizes) -> (Pool, u64) {
    let pool = Pool::new(2).expect("pool");
    let tp = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("rayon");
    let iters = calibrate(Duration::from_micros(50));
    // Two warm-up maps each, not counted: the first map of a process also
    // starts the workers, and the first two page-fault the 8 MB result
    // `Vec` in (glibc serves the first from a fresh mmap and then raises
    // its mmap threshold, so the second comes from fresh heap pages: about
    // 2 000 faults, several ms here); rayon's first collect faults too.
    // A program that maps repeatedly pays this once; the rounds below show
    // their faults.
    let mut floor = CopyFloor::new(sizes.map);
    for _ in 0..2 {
        ours_map(&pool, sizes.map);
        rayon_map(&tp, sizes.map);
        floor.run();
    }
    let (mut om, mut rm, mut oa, mut ser, mut oc, mut rc) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut fm = vec![];
    let mut py: Vec<(f64, f64)> = Vec::new();
    for round in 0..sizes.rounds {
        // Which of the three goes first alternates: the first after the
        // rounds' other work (Python's pool, the CPU-bound maps) meets a
        // colder cache.
        let mut faults = 0;
        let mut ours = || {
            let f = minflt();
            om.push(ours_map(&pool, sizes.map));
            faults = minflt() - f;
        };
        let mut theirs = || rm.push(rayon_map(&tp, sizes.map));
        let mut copies = || fm.push(floor.run());
        match round % 3 {
            0 => (ours(), theirs(), copies()),
            1 => (theirs(), copies(), ours()),
            _ => (copies(), ours(), theirs()),
        };
        println!(
            "  round: (a) ours {:7.1} M/s ({} page faults), rayon {:7.1} M/s, copy floor {:7.1} M/s",
            om.last().unwrap() / 1e6,
            faults,
            rm.last().unwrap() / 1e6,
            fm.last().unwrap() / 1e6
        );
        oa.push(ours_apply_us(&pool, sizes.apply));
        ser.push(serial_cpu(iters, sizes.cpu).as_secs_f64());
        oc.push(ours_cpu(&pool, iters, sizes.cpu).as_secs_f64());
        rc.push(rayon_cpu(&tp, iters, sizes.cpu).as_secs_f64());
        if let Some(p) = python(sizes) {
            py.push(p);
        }
    }
    let (om, rm, oa, fm) = (median(&mut om), median(&mut rm), median(&mut oa), median(&mut fm));
    let (ser, oc, rc) = (median(&mut ser), median(&mut oc), median(&mut rc));
    let r = sizes.rounds;
    println!("\n== pool, 2 workers (median of {r} interleaved rounds)");
    println!("  (a) map of {} trivial tasks, default chunksize, M tasks/s", sizes.map);
    println!("      {:<34} {:>10.2}", "shmproc Pool(2)", om / 1e6);
    println!("      {:<34} {:>10.2}", "rayon, 2 threads", rm / 1e6);
    println!("      {:<34} {:>10.2}", "the parent's copies alone (floor)", fm / 1e6);
    println!("  (b) apply_async(...).get() round trip, µs (median of {})", sizes.apply);
    println!("      {:<34} {:>10.2}", "shmproc Pool(2)", oa);
    println!("  (c) {} CPU-bound tasks of ~50 µs ({iters} iterations), speed-up over serial", sizes.cpu);
    println!("      {:<34} {:>10.3} ms", "serial, this process", ser * 1e3);
    println!("      {:<34} {:>10.2}x", "shmproc Pool(2)", ser / oc);
    println!("      {:<34} {:>10.2}x", "rayon, 2 threads", ser / rc);
    println!("  ratios");
    println!("      {:<34} {:>10.2}x", "(a) shmproc / rayon (target >= 0.3)", om / rm);
    println!("      {:<34} {:>10.2}x", "(a) copy floor / rayon", fm / rm);
    println!("      {:<34} {:>10.2}x", "(a) shmproc / copy floor", om / fm);
    println!("      {:<34} {:>10.2}x", "(c) shmproc / rayon speed-up (>= 0.95)", rc / oc);
    if py.is_empty() {
        println!("  (python3 not available: Python rows skipped)");
    } else {
        let mut pm: Vec<f64> = py.iter().map(|p| p.0).collect();
        let mut pa: Vec<f64> = py.iter().map(|p| p.1).collect();
        let (pm, pa) = (median(&mut pm), median(&mut pa));
        println!("  python multiprocessing.Pool(2)");
        println!("      {:<34} {:>10.2}", "(a) M tasks/s", pm / 1e6);
        println!("      {:<34} {:>10.2}", "(b) µs", pa);
        println!("      {:<34} {:>10.1}x", "(a) shmproc / python (target >= 20)", om / pm);
        println!("      {:<34} {:>10.4}x", "(b) shmproc / python (target <= 0.02)", oa / pa);
    }
    (pool, iters)
}

/// `SHMPROC_BENCH_MAP_ONLY=N`: N rounds of (a) only (see the file's docs).
fn map_only(rounds: usize) {
    let pool = Pool::new(2).expect("pool");
    let tp = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("rayon");
    // Two warm-up rounds each (workers started, arena made, the result
    // `Vec`'s pages faulted in: see `side_by_side`).
    for _ in 0..2 {
        ours_map(&pool, 1_000_000);
        rayon_map(&tp, 1_000_000);
    }
    for _ in 0..rounds {
        let (o, r) = (ours_map(&pool, 1_000_000), rayon_map(&tp, 1_000_000));
        println!("map_1m ours {:8.1} M/s  rayon {:8.1} M/s  ratio {:.3}", o / 1e6, r / 1e6, o / r);
    }
    pool.close();
    pool.join().expect("join");
}

fn main() {
    if let Some(n) = std::env::var("SHMPROC_BENCH_MAP_ONLY").ok().and_then(|s| s.parse().ok()) {
        map_only(n);
        return;
    }
    if quick() {
        println!("(quick smoke run with tiny sizes: the figures below are not measurements)");
        let (pool, _) = side_by_side(&Sizes { map: 10_000, apply: 20, cpu: 50, rounds: 1 });
        pool.close();
        pool.join().expect("join");
        return;
    }
    let rounds = std::env::var("SHMPROC_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let (pool, iters) = side_by_side(&Sizes { map: 1_000_000, apply: 2_000, cpu: 2_000, rounds });
    if std::env::var_os("SHMPROC_BENCH_SIDE_BY_SIDE_ONLY").is_some() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("pool");
    g.sample_size(10);
    g.bench_function("map_1m_square", |b| b.iter(|| pool.map(square, 0..1_000_000u64).unwrap()));
    g.bench_function("apply_async_get", |b| b.iter(|| pool.apply_async(square, 7).unwrap().get().unwrap()));
    g.bench_function("cpu_2000x50us", |b| b.iter(|| pool.map(burn, vec![iters; 2_000]).unwrap()));
    g.finish();
    c.final_summary();
    pool.close();
    pool.join().expect("join");
}
