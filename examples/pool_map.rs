//! The classic first Pool program: three workers double three numbers.
//!
//! ```python
//! def doubler(number):
//!     return number * 2
//! if __name__ == '__main__':
//!     with Pool(3) as pool:
//!         print(pool.map(doubler, [5, 10, 20]))
//! ```
//!
//! Run: `cargo run --release --example pool_map`

use shmproc::Pool;

shmproc::task! {
    fn doubler(number: i64) -> i64 {
        number * 2
    }
}

fn main() -> Result<(), shmproc::PoolError> {
    let pool = Pool::new(3)?;
    let doubled = pool.map(doubler, [5, 10, 20])?;
    println!("{doubled:?}");
    assert_eq!(doubled, [10, 20, 40]);
    pool.close();
    pool.join()
}
