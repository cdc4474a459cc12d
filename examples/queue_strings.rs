//! The colour and fruit queues with real strings: a `Queue<String>` as in
//! Python (`Queue()` is unbounded, `Queue(4)` holds four), and a queue of
//! `(u32, String)` pairs filled by a child process; then the borrowed
//! forms (`put_ref`, `get_into`) that hot loops use.
//!
//! Run: `cargo run --release --example queue_strings`

use shmproc::{Process, Queue};

shmproc::entry! {
    /// Puts each fruit with its number, then a `None` to say it is done.
    fn pick_fruit(basket: Queue<Option<(u32, String)>>) -> Result<(), String> {
        for (no, fruit) in ["apple", "banana", "cherry", "dragon fruit", "elderberry"].into_iter().enumerate() {
            basket.put(Some((no as u32 + 1, fruit.to_owned()))).map_err(|e| e.to_string())?;
        }
        basket.put(None).map_err(|e| e.to_string())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Colours: a queue of four strings, filled and emptied here.
    let colors = ["red", "green", "blue", "black"];
    let queue = Queue::<String>::new(colors.len() as u64)?;
    for c in colors {
        println!("item no: {c}");
        queue.put(c.to_owned())?;
    }
    assert!(queue.full());
    let mut got = Vec::new();
    while !queue.empty() {
        let c = queue.get()?;
        println!("Item no: {c}");
        got.push(c);
    }
    assert_eq!(got, colors);

    // Fruit: an unbounded queue (maxsize 0, as Python's `Queue()`), filled
    // by another process.
    let basket = Queue::new(0)?;
    let mut picker = Process::new(pick_fruit, basket.clone());
    picker.start()?;
    let mut fruit = Vec::new();
    while let Some((no, name)) = basket.get()? {
        println!("fruit {no}: {name}");
        fruit.push(name);
    }
    picker.join()?;
    assert_eq!(picker.exitcode(), Some(0));
    assert_eq!(fruit.len(), 5);
    assert_eq!(fruit[3], "dragon fruit");

    // The borrowed forms, for hot loops: `put_ref` encodes from a
    // reference (no clone), `get_into` decodes into a reused `String`
    // (no allocation once it is large enough).
    let line = String::from("sorted: apple banana cherry");
    for _ in 0..3 {
        queue.put_ref(&line)?;
    }
    let mut buf = String::with_capacity(64);
    for _ in 0..3 {
        queue.get_into(&mut buf)?;
        assert_eq!(buf, line);
    }
    Ok(())
}
