//! Put four colours on a queue, then take them off while it is not empty.
//!
//! Run: `cargo run --release --example queue_colors`

use shmproc::Queue;

/// Queue items are fixed-size plain data: a short name fits in 16 bytes.
type Name = [u8; 16];

fn name(s: &str) -> Name {
    let mut n = [0u8; 16];
    n[..s.len()].copy_from_slice(s.as_bytes());
    n
}

fn text(n: &Name) -> &str {
    let end = n.iter().position(|&b| b == 0).unwrap_or(n.len());
    std::str::from_utf8(&n[..end]).unwrap_or("?")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let colors = ["red", "green", "blue", "black"];
    let queue = Queue::new(colors.len() as u64)?;
    for c in colors {
        println!("item no: {c}");
        queue.put(name(c))?;
    }
    while !queue.empty() {
        println!("Item no: {}", text(&queue.get()?));
    }
    Ok(())
}
