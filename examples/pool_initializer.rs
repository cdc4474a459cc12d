//! A per-worker setup: the initializer runs once in each worker before its
//! first task (Python's `Pool(initializer=..., initargs=...)`); a shared
//! counter shows it ran exactly once per worker.
//!
//! Run: `cargo run --release --example pool_initializer`

use shmproc::{Pool, Value, current_process};

shmproc::task! {
    fn setup((greeting, started): (String, Value<u32>)) -> () {
        started.get_lock().unwrap().update(|n| *n += 1);
        println!("{greeting} from {} (pid {})", current_process().name, std::process::id());
    }
}

shmproc::task! {
    fn cube(x: u64) -> u64 {
        x * x * x
    }
}

fn main() -> Result<(), shmproc::PoolError> {
    let started = Value::new(0u32).map_err(|e| shmproc::PoolError::Setup(e.to_string()))?;
    let pool =
        Pool::builder().processes(3).initializer(setup, ("worker ready".to_string(), started.clone())).build()?;
    let cubes = pool.map(cube, 1..=6)?;
    println!("{cubes:?}");
    assert_eq!(cubes, [1, 8, 27, 64, 125, 216]);
    pool.close();
    pool.join()?;
    assert_eq!(started.get().unwrap(), 3);
    Ok(())
}
