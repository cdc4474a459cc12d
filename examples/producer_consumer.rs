//! One process puts 5, 10, 13 and a -1 sentinel on a queue; another prints
//! each item doubled until it sees the sentinel.
//!
//! Run: `cargo run --release --example producer_consumer`

use shmproc::{Process, Queue};

const SENTINEL: i64 = -1;

shmproc::entry! {
    fn producer(queue: Queue<i64>) -> Result<(), String> {
        for item in [5, 10, 13, SENTINEL] {
            println!("producer put {item}");
            queue.put(item).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

shmproc::entry! {
    fn consumer(queue: Queue<i64>) -> Result<(), String> {
        loop {
            let item = queue.get().map_err(|e| e.to_string())?;
            if item == SENTINEL {
                return Ok(());
            }
            println!("consumer got {}", item * 2);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Items are plain data (i64): they are copied into shared memory, no
    // serialization. The queue holds at most 8 at a time.
    let queue = Queue::new(8)?;
    let mut p = Process::new(producer, queue.clone());
    let mut c = Process::new(consumer, queue.clone());
    c.start()?;
    p.start()?;
    p.join()?;
    c.join()?;
    Ok(())
}
