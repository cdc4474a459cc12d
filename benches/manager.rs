//! ListProxy / DictProxy operations: ours from one process and from two
//! processes at once, beside std `Mutex<Vec<u64>>` / `Mutex<HashMap>` in
//! one process and Python's `Manager().list()` / `.dict()` (when python3
//! is present; from one process and, measured as our "2p" column, from two
//! processes at once), in one table with ratios; then criterion benches of
//! the single-process operations.
//!
//! Targets: every operation >= 1000x Python's Manager; single-process
//! append / get within 2x of the std Mutex equivalent.
//!
//! Knobs (for A/B runs of one operation): `SHMPROC_BENCH_ROUNDS` (5),
//! `SHMPROC_BENCH_N` (200 000 operations a round), `SHMPROC_BENCH_OPS`
//! (comma-separated operation names, e.g. `dict_get_u64`: only those
//! rows), `SHMPROC_BENCH_ONE_PROCESS=1` (skip the two-process column and
//! Python).

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::hint::black_box;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Criterion;
use shmproc::{DictProxy, ListProxy};
use support::{median, quick, run_group};

const OPS: [&str; 6] =
    ["list_append", "list_get", "dict_insert_u64", "dict_get_u64", "dict_insert_string", "dict_get_string"];

fn keys(n: u64) -> Vec<String> {
    (0..n).map(|i| format!("key-{i}")).collect()
}

/// Nanoseconds per operation of `op` in shmproc, with `procs` processes
/// each doing `n` operations on one container at once (2 processes: the
/// time until both finished over the operations of one; so a figure equal
/// to the 1-process one means the two ran fully in parallel).
fn ours(op: &str, n: u64, procs: usize) -> f64 {
    let ks = keys(n);
    let list = ListProxy::<u64>::new().unwrap();
    let du = DictProxy::<u64, u64>::new().unwrap();
    let ds = DictProxy::<String, u64>::new().unwrap();
    if op.contains("get") {
        list.extend(0..n).unwrap();
        for i in 0..n {
            du.insert(i, i).unwrap();
            ds.insert(ks[i as usize].clone(), i).unwrap();
        }
    }
    let run = || match op {
        "list_append" => (0..n).for_each(|i| list.append(i).unwrap()),
        "list_get" => (0..n).for_each(|i| {
            black_box(list.get(i as isize).unwrap());
        }),
        "dict_insert_u64" => (0..n).for_each(|i| {
            black_box(du.insert(i, i).unwrap());
        }),
        "dict_get_u64" => (0..n).for_each(|i| {
            black_box(du.get(&i).unwrap());
        }),
        "dict_insert_string" => ks.iter().for_each(|k| {
            black_box(ds.insert(k.clone(), 1).unwrap());
        }),
        "dict_get_string" => ks.iter().for_each(|k| {
            black_box(ds.get(k).unwrap());
        }),
        _ => unreachable!(),
    };
    let d = if procs == 1 {
        let t = Instant::now();
        run();
        t.elapsed()
    } else {
        let mut roles: Vec<Box<dyn FnMut() + '_>> = Vec::new();
        let run = std::cell::RefCell::new(run);
        for _ in 0..procs {
            roles.push(Box::new(|| (run.borrow_mut())()));
        }
        run_group(roles)
    };
    d.as_secs_f64() * 1e9 / n as f64
}

/// The same operations on std's Mutex<Vec> / Mutex<HashMap> (one process).
fn std_mutex(op: &str, n: u64) -> f64 {
    let ks = keys(n);
    let list = Mutex::new(Vec::<u64>::new());
    let du = Mutex::new(HashMap::<u64, u64>::new());
    let ds = Mutex::new(HashMap::<String, u64>::new());
    if op.contains("get") {
        list.lock().unwrap().extend(0..n);
        for i in 0..n {
            du.lock().unwrap().insert(i, i);
            ds.lock().unwrap().insert(ks[i as usize].clone(), i);
        }
    }
    let t = Instant::now();
    match op {
        "list_append" => (0..n).for_each(|i| list.lock().unwrap().push(i)),
        "list_get" => (0..n).for_each(|i| {
            black_box(list.lock().unwrap()[i as usize]);
        }),
        "dict_insert_u64" => (0..n).for_each(|i| {
            black_box(du.lock().unwrap().insert(i, i));
        }),
        "dict_get_u64" => (0..n).for_each(|i| {
            black_box(du.lock().unwrap().get(&i).copied());
        }),
        "dict_insert_string" => ks.iter().for_each(|k| {
            black_box(ds.lock().unwrap().insert(k.clone(), 1));
        }),
        "dict_get_string" => ks.iter().for_each(|k| {
            black_box(ds.lock().unwrap().get(k).copied());
        }),
        _ => unreachable!(),
    }
    t.elapsed().as_secs_f64() * 1e9 / n as f64
}

/// Python's Manager: ns per operation, if python3 runs.
fn python(n: u64) -> Option<HashMap<String, f64>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_manager.py");
    let out = Command::new("python3").arg(script).arg(n.to_string()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, s) = l.split_once(' ')?;
                Some((name.to_owned(), s.trim().parse::<f64>().ok()? * 1e9))
            })
            .collect(),
    )
}

fn side_by_side(rounds: usize, n: u64, py_n: u64) {
    let only = std::env::var("SHMPROC_BENCH_OPS").ok();
    let one_process = std::env::var_os("SHMPROC_BENCH_ONE_PROCESS").is_some();
    let mut rows = Vec::new();
    for op in OPS {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|x| x == op)) {
            continue;
        }
        let (mut one, mut two, mut std) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            one.push(ours(op, n, 1));
            two.push(if one_process { 0.0 } else { ours(op, n, 2) });
            std.push(std_mutex(op, n));
        }
        rows.push((op, median(&mut one), median(&mut two), median(&mut std)));
    }
    let py = if one_process { None } else { python(py_n) };
    println!("\n== ListProxy / DictProxy, ns per operation (median of {rounds} rounds of {n} ops)");
    println!(
        "  {:<20} {:>10} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "operation", "shmproc", "shmproc 2p", "std Mutex", "py Manager", "py 2p", "x python", "x py 2p", "/ std"
    );
    for (op, one, two, std) in rows {
        let cell = |name: &str, ours: f64| match py.as_ref().and_then(|m| m.get(name).copied()) {
            Some(p) => (format!("{p:.0}"), format!("{:.0}x", p / ours)),
            None => ("-".into(), "-".into()),
        };
        let ((pcol, ratio), (p2col, ratio2)) = (cell(op, one), cell(&format!("{op}_2p"), two));
        println!(
            "  {op:<20} {one:>10.1} {two:>12.1} {std:>12.1} {pcol:>12} {p2col:>12} {ratio:>10} {ratio2:>10} {:>9.2}x",
            one / std
        );
    }
    if py.is_none() {
        println!("  (python3 not available: the Python column is empty)");
    }
    println!("  targets: x python >= 1000; / std <= 2 for list_append, list_get, dict_*_u64 (one process)");
    println!("  shmproc 2p, py 2p: two processes each doing all the ops on one container at once; time until both");
    println!("  finished / ops of one (x py 2p compares these two columns)");
}

fn main() {
    if quick() {
        println!("(quick smoke run with tiny sizes: the figures below are not measurements)");
        side_by_side(1, 2_000, 50);
        return;
    }
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    side_by_side(env("SHMPROC_BENCH_ROUNDS", 5) as usize, env("SHMPROC_BENCH_N", 200_000), 2_000);
    if std::env::var_os("SHMPROC_BENCH_SIDE_BY_SIDE_ONLY").is_some() {
        return;
    }
    let mut c = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(3));
    let mut g = c.benchmark_group("manager");
    let list = ListProxy::<u64>::new().unwrap();
    g.bench_function("list_append_u64", |b| b.iter(|| list.append(black_box(7)).unwrap()));
    g.bench_function("list_get_u64", |b| b.iter(|| black_box(list.get(black_box(3)).unwrap())));
    let du = DictProxy::<u64, u64>::new().unwrap();
    let mut i = 0u64;
    g.bench_function("dict_insert_u64", |b| {
        b.iter(|| {
            i = (i + 1) % 100_000;
            du.insert(i, i).unwrap()
        })
    });
    g.bench_function("dict_get_u64", |b| b.iter(|| black_box(du.get(&black_box(42)).unwrap())));
    let ds = DictProxy::<String, u64>::new().unwrap();
    let ks = keys(10_000);
    let mut j = 0;
    g.bench_function("dict_insert_string", |b| {
        b.iter(|| {
            j = (j + 1) % ks.len();
            ds.insert(ks[j].clone(), 1).unwrap()
        })
    });
    g.bench_function("dict_get_string", |b| b.iter(|| black_box(ds.get(&ks[42]).unwrap())));
    g.finish();
    c.final_summary();
}
