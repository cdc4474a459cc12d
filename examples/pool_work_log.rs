//! Python's `work_log` pool example: each task sleeps its own duration and
//! says when it starts and finishes; two workers share four tasks, so the
//! finish lines come in the order the work allows, not the input order.
//! (Tenths of a second here, where Python's seed sleeps whole seconds.)
//!
//! ```python
//! work = (["A", 5], ["B", 2], ["C", 1], ["D", 3])
//! def work_log(work_data):
//!     print(" Process %s waiting %s seconds" % (work_data[0], work_data[1]))
//!     time.sleep(int(work_data[1]))
//!     print(" Process %s Finished." % work_data[0])
//! with Pool(2) as p:
//!     p.map(work_log, work)
//! ```
//!
//! Run: `cargo run --release --example pool_work_log`

use std::time::Duration;

use shmproc::Pool;

shmproc::task! {
    fn work_log((name, tenths): (String, u64)) -> String {
        println!(" Process {name} waiting {:.1} seconds", tenths as f64 / 10.0);
        std::thread::sleep(Duration::from_millis(100 * tenths));
        println!(" Process {name} Finished.");
        name
    }
}

fn main() -> Result<(), shmproc::PoolError> {
    let work = [("A", 5), ("B", 2), ("C", 1), ("D", 3)].map(|(n, t)| (n.to_string(), t));
    let pool = Pool::new(2)?;
    // chunksize 1: each worker takes the next task as soon as it is free.
    let done = pool.map_chunked(work_log, work, 1)?;
    assert_eq!(done, ["A", "B", "C", "D"]); // map's results keep the input order
    pool.close();
    pool.join()
}
