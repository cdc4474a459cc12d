//! Two processes print the square and the cube of 5, then the parent says
//! both are finished — Python's classic first `multiprocessing` program.
//!
//! Run: `cargo run --release --example square_cube`

use shmproc::Process;

shmproc::entry! {
    /// Prints the square of `n`.
    fn print_square(n: u64) {
        println!("Square: {}", n * n);
    }
}

shmproc::entry! {
    /// Prints the cube of `n`.
    fn print_cube(n: u64) {
        println!("Cube: {}", n * n * n);
    }
}

fn main() -> Result<(), shmproc::ProcessError> {
    let mut p1 = Process::new(print_square, 5);
    let mut p2 = Process::new(print_cube, 5);
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    println!("Both processes are finished");
    Ok(())
}
