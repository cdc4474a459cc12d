//! The shmproc demo: worker processes share a Lock and a Value.
//!
//! Each worker adds to a shared total under the Value's lock and reports
//! when it is done under a shared Lock (so reports never interleave); the
//! parent prints the exact total and how long the cross-process lock
//! operations took.
//!
//! Run: `cargo run --release --example demo`

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use shmproc::{Lock, LockError, Value};

const WORKERS: u64 = 4;
const ADDS: u64 = 250_000;

fn worker(
    me: u64,
    print_lock: &Lock,
    total: &Value<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    for _ in 0..ADDS {
        total
            .get_lock()
            .map_err(LockError::without_guard)?
            .update(|v| *v += 1);
    }
    let per_op = t.elapsed().as_nanos() as f64 / ADDS as f64;
    let _held = print_lock.lock().map_err(LockError::without_guard)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "worker {me} (pid {}): {ADDS} locked additions, {per_op:.1} ns each",
        std::process::id()
    )?;
    out.flush()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        // Child: open the parent's objects by name and work on them.
        let print_lock = Lock::open(&args[2])?;
        let total = Value::<u64>::open(&args[3])?;
        return worker(args[4].parse()?, &print_lock, &total);
    }

    let print_lock = Lock::new()?;
    let total = Value::new(0u64)?;
    println!(
        "shmproc demo: {WORKERS} processes share a Lock ({}) and a Value ({})",
        print_lock.name(),
        total.name()
    );
    let t = Instant::now();
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..WORKERS)
        .map(|i| {
            Command::new(&exe)
                .args(["worker", print_lock.name(), total.name(), &i.to_string()])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for mut child in children {
        assert!(child.wait()?.success(), "a worker failed");
    }
    let total = total.get().map_err(LockError::without_guard)?;
    println!(
        "total = {total} (expected {}), {:.1} ms wall time including process start",
        WORKERS * ADDS,
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(total, WORKERS * ADDS);
    Ok(())
}
