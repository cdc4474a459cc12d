//! The shmproc demo: worker processes share a Lock and a Value.
//!
//! Each worker adds to a shared total under the Value's lock and reports
//! under a shared Lock (so reports never interleave); the parent prints the
//! exact total, and how long starting processes and the locked additions
//! took.
//!
//! Run: `cargo run --release --example demo`

use std::io::Write;
use std::time::Instant;

use shmproc::{Lock, LockError, Process, Value};

const WORKERS: u64 = 4;
const ADDS: u64 = 250_000;

shmproc::entry! {
    fn worker(args: (Lock, Value<u64>)) -> Result<(), Box<dyn std::error::Error>> {
        let (print_lock, total) = args;
        let t = Instant::now();
        for _ in 0..ADDS {
            total.get_lock().map_err(LockError::without_guard)?.update(|v| *v += 1);
        }
        let per_op = t.elapsed().as_nanos() as f64 / ADDS as f64;
        let _held = print_lock.lock().map_err(LockError::without_guard)?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{} (pid {}): {ADDS} locked additions, {per_op:.1} ns each",
            shmproc::current_process().name,
            std::process::id()
        )?;
        out.flush()?;
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let print_lock = Lock::new()?;
    let total = Value::new(0u64)?;
    println!("shmproc demo: {WORKERS} processes share a Lock and a Value");
    let t = Instant::now();
    let mut procs: Vec<Process> =
        (0..WORKERS).map(|_| Process::new(worker, (print_lock.clone(), total.clone()))).collect();
    for p in &mut procs {
        p.start()?;
    }
    let started = t.elapsed();
    for p in &procs {
        p.join()?;
    }
    let total = total.get().map_err(LockError::without_guard)?;
    println!(
        "total = {total} (expected {}); {WORKERS} processes started in {:.2} ms, all done in {:.1} ms",
        WORKERS * ADDS,
        started.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(total, WORKERS * ADDS);
    Ok(())
}
