//! Ten tasks, four worker processes: each worker takes tasks with
//! `get_nowait` until the queue is empty and reports
//! "Task no i is done by Process-N" on a second queue; the parent prints
//! the reports.
//!
//! Run: `cargo run --release --example task_queue`

use std::time::Duration;

use shmproc::{Process, Queue, TryGetError, current_process};

const TASKS: u32 = 10;
const WORKERS: usize = 4;

/// Reports are fixed-size text (queue items are plain data).
type Report = [u8; 64];

fn report(s: &str) -> Report {
    let mut r = [0u8; 64];
    let n = s.len().min(64);
    r[..n].copy_from_slice(&s.as_bytes()[..n]);
    r
}

fn text(r: &Report) -> &str {
    let end = r.iter().position(|&b| b == 0).unwrap_or(r.len());
    std::str::from_utf8(&r[..end]).unwrap_or("?")
}

shmproc::entry! {
    fn do_job(args: (Queue<u32>, Queue<Report>)) -> Result<(), String> {
        let (tasks_to_accomplish, tasks_that_are_done) = args;
        loop {
            match tasks_to_accomplish.get_nowait() {
                Ok(task) => {
                    println!("Task no {task}");
                    let done = format!("Task no {task} is done by {}", current_process().name);
                    tasks_that_are_done.put(report(&done)).map_err(|e| e.to_string())?;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryGetError::Empty) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tasks_to_accomplish = Queue::new(u64::from(TASKS))?;
    // Deliberately smaller than the number of reports: see below.
    let tasks_that_are_done = Queue::new(4)?;
    for i in 0..TASKS {
        tasks_to_accomplish.put(i)?;
    }
    let mut processes: Vec<Process> = (0..WORKERS)
        .map(|_| Process::new(do_job, (tasks_to_accomplish.clone(), tasks_that_are_done.clone())))
        .collect();
    for p in &mut processes {
        p.start()?;
    }
    // Drain the reports BEFORE joining the workers. The report queue holds
    // only 4 items: a worker whose put finds it full waits for us to take
    // one. If we joined first, we would wait for a worker that waits for
    // us — a deadlock. (Python's mp.Queue has the same rule, for the same
    // reason: its feeder thread blocks on a full pipe.) We know exactly how
    // many reports come, so we take that many, then join.
    for _ in 0..TASKS {
        println!("{}", text(&tasks_that_are_done.get()?));
    }
    for p in &processes {
        p.join()?;
    }
    Ok(())
}
