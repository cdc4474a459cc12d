//! Several processes print lines under one shared Lock: the lines never
//! interleave, even though each line is written word by word.
//!
//! Run: `cargo run --release --example lock_printer`

use std::io::Write;
use std::process::Command;

use shmproc::{Lock, LockError};

const PRINTERS: usize = 4;
const LINES: usize = 3;

fn print_lines(me: usize, lock: &Lock) -> Result<(), Box<dyn std::error::Error>> {
    let stdout = std::io::stdout();
    for line in 0..LINES {
        // Hold the lock for the whole line. Without it, the words of
        // different processes would mix on the terminal.
        let _held = lock.lock().map_err(LockError::without_guard)?;
        let mut out = stdout.lock();
        for word in [
            "process",
            &me.to_string(),
            "(pid",
            &format!("{})", std::process::id()),
            "line",
            &line.to_string(),
        ] {
            write!(out, "{word} ")?;
            out.flush()?; // each word is its own write(2) call
            std::thread::yield_now();
        }
        writeln!(out)?;
        out.flush()?;
    } // `_held` is dropped here each iteration: the lock is released.
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let lock = Lock::open(&args[2])?;
        return print_lines(args[3].parse()?, &lock);
    }
    let lock = Lock::new()?;
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (1..PRINTERS)
        .map(|i| {
            Command::new(&exe)
                .args(["child", lock.name(), &i.to_string()])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    print_lines(0, &lock)?;
    for mut child in children {
        assert!(child.wait()?.success());
    }
    Ok(())
}
