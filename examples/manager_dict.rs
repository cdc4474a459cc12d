//! Several processes count words into one shared `DictProxy<String, u64>`
//! with `update_with` (an atomic read-modify-write: the increment Python
//! users cannot do on a `Manager().dict()` without an extra lock); the
//! parent prints exact totals.
//!
//! Run: `cargo run --example manager_dict`

use shmproc::{Manager, Process};

const TEXT: &str = "the quick brown fox jumps over the lazy dog the end";
const WORKERS: u64 = 4;
const ROUNDS: u64 = 500;

shmproc::entry! {
    fn count(mgr: Manager) -> Result<(), Box<dyn std::error::Error>> {
        let counts = mgr.dict::<String, u64>("counts")?;
        for _ in 0..ROUNDS {
            for word in TEXT.split(' ') {
                counts.update_with(&word.to_string(), 0, |n| *n += 1)?;
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mgr = Manager::new()?;
    let counts = mgr.dict::<String, u64>("counts")?;
    let mut procs: Vec<Process> = (0..WORKERS).map(|_| Process::new(count, mgr.clone())).collect();
    for p in &mut procs {
        p.start()?;
    }
    for p in &procs {
        p.join()?;
    }
    let mut items = counts.items()?;
    items.sort();
    for (word, n) in &items {
        println!("{word:>6}: {n}");
    }
    for word in TEXT.split(' ') {
        let want = TEXT.split(' ').filter(|w| *w == word).count() as u64 * ROUNDS * WORKERS;
        assert_eq!(counts.get(&word.to_string())?, Some(want), "lost updates for {word:?}");
    }
    let words = TEXT.split(' ').count() as u64;
    assert_eq!(items.iter().map(|(_, n)| n).sum::<u64>(), words * ROUNDS * WORKERS, "total count");
    let mut distinct: Vec<&str> = TEXT.split(' ').collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(items.len(), distinct.len(), "one entry per distinct word");
    println!("{WORKERS} processes x {ROUNDS} rounds: exact totals ({} words counted)", words * ROUNDS * WORKERS);
    Ok(())
}
