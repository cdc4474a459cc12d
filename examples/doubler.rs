//! Five processes double numbers and say who they are: first by pid, then
//! by `current_process().name`, plus one process named "Test".
//!
//! Run: `cargo run --release --example doubler`

use shmproc::{Process, current_process};

shmproc::entry! {
    fn doubler_pid(number: i64) {
        println!("{number} doubled to {} by process id: {}", number * 2, std::process::id());
    }
}

shmproc::entry! {
    fn doubler_name(number: i64) {
        println!("{number} doubled to {} by: {}", number * 2, current_process().name);
    }
}

fn run_all(mut procs: Vec<Process>) -> Result<(), shmproc::ProcessError> {
    for p in &mut procs {
        p.start()?;
    }
    for p in &procs {
        p.join()?;
    }
    Ok(())
}

fn main() -> Result<(), shmproc::ProcessError> {
    let numbers = [5, 10, 15, 20, 25];
    run_all(numbers.iter().map(|&n| Process::new(doubler_pid, n)).collect())?;

    let mut procs: Vec<Process> = numbers.iter().map(|&n| Process::new(doubler_name, n)).collect();
    procs.push(Process::new(doubler_name, 2).with_name("Test"));
    run_all(procs)
}
