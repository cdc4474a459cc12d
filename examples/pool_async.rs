//! The asynchronous forms: `apply_async`, `map_async`, `imap` (results in
//! input order) and `imap_unordered` (results as they complete).
//!
//! Run: `cargo run --release --example pool_async`

use std::time::Duration;

use shmproc::Pool;

shmproc::task! {
    fn square(x: u64) -> u64 {
        x * x
    }
}

shmproc::task! {
    /// Sleeps `tenths` of a second, returns it.
    fn slow(tenths: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(100 * tenths));
        tenths
    }
}

fn main() -> Result<(), shmproc::PoolError> {
    let pool = Pool::new(2)?;

    let one = pool.apply_async(square, 12)?;
    let many = pool.map_async(square, 0..10)?;
    println!("apply_async: {}", one.get()?);
    println!("map_async:   {:?}", many.get()?);

    let in_order: Vec<u64> = pool.imap(slow, [3, 1, 2]).unwrap().map(Result::unwrap).collect();
    println!("imap (input order):           {in_order:?}");
    assert_eq!(in_order, [3, 1, 2]);

    let as_done: Vec<u64> = pool.imap_unordered(slow, [5, 1, 2])?.map(Result::unwrap).collect();
    println!("imap_unordered (as finished): {as_done:?}");
    let mut sorted = as_done.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 2, 5]);

    // Callbacks run when the result is ready.
    let (tx, rx) = std::sync::mpsc::channel();
    pool.apply_async(square, 7)?.then(move |r| tx.send(r).unwrap());
    println!("callback got: {:?}", rx.recv().unwrap());

    pool.close();
    pool.join()
}
