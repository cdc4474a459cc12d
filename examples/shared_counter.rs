//! Several processes add to one shared counter under its lock; the parent
//! prints the exact total — `multiprocessing.Value` in Rust.
//!
//! Run: `cargo run --release --example shared_counter`

use shmproc::{LockError, Process, Value};

const WORKERS: u64 = 4;
const ADDS_PER_WORKER: u64 = 100_000;

shmproc::entry! {
    fn add_many(counter: Value<u64>) -> Result<(), LockError<()>> {
        for _ in 0..ADDS_PER_WORKER {
            // get_lock() holds the lock across the read-modify-write, like
            // `with counter.get_lock(): counter.value += 1` in Python.
            counter.get_lock().map_err(LockError::without_guard)?.update(|v| *v += 1);
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The parent creates the counter. It owns the name: the segment is
    // removed from /dev/shm when `counter` is dropped at the end of main.
    let counter = Value::new(0u64)?;
    let mut procs: Vec<Process> = (0..WORKERS).map(|_| Process::new(add_many, counter.clone())).collect();
    for p in &mut procs {
        p.start()?;
    }
    for p in &procs {
        p.join()?;
    }
    let total = counter.get().map_err(LockError::without_guard)?;
    println!("{WORKERS} processes x {ADDS_PER_WORKER} additions = {total}");
    assert_eq!(total, WORKERS * ADDS_PER_WORKER, "lost updates");
    Ok(())
}
