//! Python's classic Manager program, in Rust:
//!
//! ```python
//! with Manager() as m:
//!     squares = m.list()
//!     p = Process(target=fill, args=(squares,)); p.start(); p.join()
//!     print(squares, squares[2:5])
//! ```
//!
//! A child process fills a Manager list with the squares of 0..10; the
//! parent prints the list and `squares[2:5]` (`[4, 9, 16]`). The data is
//! in shared memory: no server process, no pickling.
//!
//! Run: `cargo run --example manager_list`

use shmproc::{Manager, Process};

shmproc::entry! {
    fn fill(mgr: Manager) -> Result<(), Box<dyn std::error::Error>> {
        // One Manager handle is all the child needs: it finds the list by name.
        let squares = mgr.list::<u64>("squares")?;
        for i in 0..10 {
            squares.append(i * i)?;
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mgr = Manager::new()?;
    let squares = mgr.list::<u64>("squares")?;
    let mut p = Process::new(fill, mgr.clone());
    p.start()?;
    p.join()?;
    println!("{:?}", squares.to_vec()?);
    println!("squares[2:5] = {:?}", squares.slice(2..5)?);
    assert_eq!(squares.to_vec()?, (0..10).map(|i| i * i).collect::<Vec<u64>>());
    assert_eq!(squares.slice(2..5)?, [4, 9, 16]);
    Ok(())
}
