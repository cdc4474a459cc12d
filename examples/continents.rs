//! One process runs with the default argument, three with names passed in.
//!
//! Run: `cargo run --release --example continents`

use shmproc::Process;

shmproc::entry! {
    /// Prints a continent; `None` means the default, like a Python default
    /// argument.
    fn print_func(continent: Option<String>) {
        let continent = continent.unwrap_or_else(|| "Asia".to_string());
        println!("The name of continent is : {continent}");
    }
}

fn main() -> Result<(), shmproc::ProcessError> {
    let names = ["America", "Europe", "Africa"];
    let mut procs = vec![Process::new(print_func, None)]; // the default
    for name in names {
        procs.push(Process::new(print_func, Some(name.to_string())));
    }
    for p in &mut procs {
        p.start()?;
    }
    for p in &procs {
        p.join()?;
    }
    Ok(())
}
