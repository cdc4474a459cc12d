//! Process start+join latency: ours (Spawn, Fork) beside running `true`
//! with std::process::Command, and Python's multiprocessing.Process
//! (fork, forkserver, spawn) when python3 is present — interleaved rounds,
//! medians, ratios. Then criterion benches of our two methods and `true`.

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use shmproc::Process;
use shmproc::process::StartMethod;
use support::{median, quick};

shmproc::entry! { fn noop() {} }

fn start_join(method: StartMethod) -> Duration {
    let t = Instant::now();
    let mut p = Process::new(noop, ()).with_start_method(method);
    p.start().expect("start");
    p.join().expect("join");
    t.elapsed()
}

fn run_true() -> Duration {
    let t = Instant::now();
    let st = Command::new("true").status().expect("run true");
    assert!(st.success());
    t.elapsed()
}

fn median_of(n: usize, mut f: impl FnMut() -> Duration) -> f64 {
    let mut v: Vec<f64> = (0..n).map(|_| f().as_secs_f64() * 1e3).collect();
    median(&mut v)
}

/// One run of the Python script: medians in ms per method, if python3 works.
fn python_round(counts: [usize; 3]) -> Option<Vec<(String, f64)>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_process.py");
    let out = Command::new("python3").arg(script).args(counts.iter().map(|c| c.to_string())).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.lines()
            .filter_map(|l| {
                let (m, s) = l.split_once(' ')?;
                Some((format!("python mp.Process {m}"), s.trim().parse::<f64>().ok()? * 1e3))
            })
            .collect(),
    )
}

fn side_by_side(rounds: usize, per_round: usize, py_counts: [usize; 3]) {
    let mut ours_spawn = Vec::new();
    let mut ours_fork = Vec::new();
    let mut truth = Vec::new();
    let mut py: Vec<(String, Vec<f64>)> = Vec::new();
    for _ in 0..rounds {
        ours_spawn.push(median_of(per_round, || start_join(StartMethod::Spawn)));
        ours_fork.push(median_of(per_round, || start_join(StartMethod::Fork)));
        truth.push(median_of(per_round, run_true));
        if let Some(r) = python_round(py_counts) {
            for (name, v) in r {
                match py.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, vs)) => vs.push(v),
                    None => py.push((name, vec![v])),
                }
            }
        }
    }
    let (s, f, t) = (median(&mut ours_spawn), median(&mut ours_fork), median(&mut truth));
    println!("\n== process start+join, ms (median of {rounds} interleaved rounds, {per_round} starts each)");
    println!("  {:<36} {s:>8.3}", "shmproc Spawn");
    println!("  {:<36} {f:>8.3}", "shmproc Fork");
    println!("  {:<36} {t:>8.3}", "std Command running `true`");
    let mut py_med = Vec::new();
    for (name, mut v) in py {
        let m = median(&mut v);
        println!("  {name:<36} {m:>8.3}");
        py_med.push((name, m));
    }
    println!("  {:<36} {:>7.2}x", "Spawn / `true` (target <= 2.0)", s / t);
    for (name, m) in &py_med {
        if name.ends_with("fork") {
            println!("  {:<36} {:>7.2}x", "Fork / python fork (target <= 0.25)", f / m);
        }
        if name.ends_with("spawn") {
            println!("  {:<36} {:>7.3}x", "Spawn / python spawn", s / m);
        }
    }
    if py_med.is_empty() {
        println!("  (python3 not available: Python rows skipped)");
    }
}

fn main() {
    if quick() {
        println!("(quick smoke run with tiny sizes: the figures below are not measurements)");
        side_by_side(1, 3, [2, 0, 0]);
        return;
    }
    let rounds = std::env::var("SHMPROC_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    side_by_side(rounds, 30, [20, 20, 4]);
    if std::env::var_os("SHMPROC_BENCH_SIDE_BY_SIDE_ONLY").is_some() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("process_start_join");
    g.sample_size(30);
    g.bench_function("shmproc_spawn", |b| b.iter(|| start_join(StartMethod::Spawn)));
    g.bench_function("shmproc_fork", |b| b.iter(|| start_join(StartMethod::Fork)));
    g.bench_function("command_true", |b| b.iter(run_true));
    g.finish();
    c.final_summary();
}
