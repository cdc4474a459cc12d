//! Several processes print lines under one shared Lock: the lines never
//! interleave, even though each line is written word by word.
//!
//! Run: `cargo run --release --example lock_printer`

use std::io::Write;

use shmproc::{Lock, LockError, Process};

const PRINTERS: usize = 4;
const LINES: usize = 3;

shmproc::entry! {
    /// Prints LINES lines, each under the lock.
    fn print_lines(lock: Lock) -> Result<(), LockError<()>> {
        let me = shmproc::current_process().name;
        let stdout = std::io::stdout();
        for line in 0..LINES {
            // Hold the lock for the whole line. Without it, the words of
            // different processes would mix on the terminal.
            let _held = lock.lock().map_err(LockError::without_guard)?;
            let mut out = stdout.lock();
            let pid = format!("(pid {})", std::process::id());
            for word in [me.as_str(), pid.as_str(), "line", &line.to_string()] {
                let _ = write!(out, "{word} ");
                let _ = out.flush(); // each word is its own write(2)
                std::thread::yield_now();
            }
            let _ = writeln!(out);
            let _ = out.flush();
        } // `_held` drops here each iteration: the lock is released.
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lock = Lock::new()?;
    // Each child gets a handle to the same lock (re-opened by name).
    let mut procs: Vec<Process> = (0..PRINTERS).map(|_| Process::new(print_lines, lock.clone())).collect();
    for p in &mut procs {
        p.start()?;
    }
    for p in &procs {
        p.join()?;
    }
    Ok(())
}
