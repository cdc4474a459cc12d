//! Several processes add to one shared counter under its lock; the parent
//! prints the exact total — `multiprocessing.Value` in Rust.
//!
//! Run: `cargo run --release --example shared_counter`
//!
//! How the child processes are made: the program re-runs itself with the
//! argument `child` plus the counter's name (shmproc's own `Process` will
//! do this for you; this template shows the mechanics with std only).

use std::process::Command;

use shmproc::{LockError, Value};

const WORKERS: u64 = 4;
const ADDS_PER_WORKER: u64 = 100_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        // A child: open the counter by the name the parent passed us.
        let counter = Value::<u64>::open(&args[2])?;
        for _ in 0..ADDS_PER_WORKER {
            // get_lock() holds the lock across the read-modify-write, like
            // `with counter.get_lock(): counter.value += 1` in Python.
            counter
                .get_lock()
                .map_err(LockError::without_guard)?
                .update(|v| *v += 1);
        }
        return Ok(());
    }

    // The parent creates the counter. It owns the name: the segment is
    // removed from /dev/shm when `counter` is dropped at the end of main.
    let counter = Value::new(0u64)?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..WORKERS {
        children.push(Command::new(&exe).args(["child", counter.name()]).spawn()?);
    }
    for mut child in children {
        let status = child.wait()?;
        assert!(status.success(), "a worker failed: {status}");
    }
    let total = counter.get().map_err(LockError::without_guard)?;
    println!("{WORKERS} processes x {ADDS_PER_WORKER} additions = {total}");
    assert_eq!(total, WORKERS * ADDS_PER_WORKER, "lost updates");
    Ok(())
}
