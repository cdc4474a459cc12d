//! `starmap`: a task of several arguments takes them as one tuple, and
//! `starmap` maps it over tuples (Python's `pool.starmap(f, [(a, b), ...])`).
//!
//! Run: `cargo run --release --example pool_starmap`

use shmproc::Pool;

shmproc::task! {
    fn power((base, exp): (u64, u32)) -> u64 {
        base.pow(exp)
    }
}

fn main() -> Result<(), shmproc::PoolError> {
    let pool = Pool::new(2)?;
    let args = [(2, 10), (3, 4), (10, 3)];
    let powers = pool.starmap(power, args)?;
    for ((b, e), p) in args.iter().zip(&powers) {
        println!("{b}^{e} = {p}");
    }
    assert_eq!(powers, [1024, 81, 1000]);
    let later = pool.starmap_async(power, [(5, 2)])?;
    assert_eq!(later.get()?, [25]);
    pool.close();
    pool.join()
}
