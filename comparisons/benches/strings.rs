//! `Queue<String>` (64-byte strings, encoded frames on the MPMC frame
//! ring), 1 producer process -> 1 consumer process, with the owned forms
//! (`put(item.clone())`, `get()`: a malloc and a free on each side per
//! item) and with the borrowed ones (`put_ref(&item)`, `get_into(&mut s)`:
//! none, as the ByteQueue case's `send(&frame)` / `recv_into(&mut buf)`),
//! and in the Python bench's shape (`put_ref(&item)`, `get()`: the same
//! string put each time, a new one per get, as `q.put(ITEM)` / `q.get()`),
//! beside our
//! `ByteQueue` with 64-byte frames (the same bytes, no encoding, SPSC) and
//! Python's `multiprocessing.Queue` with the same strings (via
//! `benches/python_queue.py N str64`, if python3 runs here), in the same
//! run. Targets (issue 11): at least 50x Python and at least 0.5x the
//! ByteQueue.
//!
//! Two floors in the same run say what the targets can be met by: the
//! ByteQueue with the owned forms' allocations and nothing else (a clone
//! sent and dropped by the producer, a new `String` per frame for the
//! consumer), and `MpmcQueue<[u8; 64]>`, the multi-producer ring under
//! `Queue<String>` moving 64 plain bytes with no encoding or length.

#[path = "../../benches/support/mod.rs"]
mod support;

use support::queue_cases::{
    bytes_frames, bytes_frames_owned_strings, mpmc_bytes64, queue_strings, queue_strings_borrowed,
    queue_strings_ref_get,
};
use support::{interleave, quick};

/// Python's mp.Queue with 64-byte strings; M msgs/s.
fn python_strings(n: u64) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_queue.py");
    support::python_rate(script, &[&n.to_string(), "str64"])
}

fn main() {
    let q = quick();
    if q {
        println!("(quick smoke run with tiny sizes: the figures below are not measurements)");
    }
    let rounds =
        if q { 1 } else { std::env::var("SHMPROC_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(7) };
    let n = if q { 10_000 } else { 2_000_000 };
    let res = interleave(
        rounds,
        &mut [
            ("shmproc Queue<String>, 64-byte strings", &mut || queue_strings(n)),
            ("shmproc Queue<String>, put_ref/get_into", &mut || queue_strings_borrowed(n)),
            ("shmproc Queue<String>, put_ref/get (Python's)", &mut || queue_strings_ref_get(n)),
            ("shmproc ByteQueue, 64 B frames", &mut || bytes_frames(64, n)),
            ("floor: ByteQueue + the owned forms' allocs", &mut || bytes_frames_owned_strings(n)),
            ("floor: MpmcQueue<[u8; 64]> (Pod, MPMC ring)", &mut || mpmc_bytes64(n)),
        ],
    );
    println!("\n== 64-byte strings, 1 producer -> 1 consumer process, M msgs/s (median of {rounds} rounds)");
    for (name, v) in &res {
        println!("  {name:<44} {v:>9.2}");
    }
    println!("  {:<44} {:>8.2}x", "Queue<String> / ByteQueue (target >= 0.5)", res[0].1 / res[3].1);
    println!("  {:<44} {:>8.2}x", "borrowed Queue<String> / ByteQueue", res[1].1 / res[3].1);
    println!("  {:<44} {:>8.2}x", "put_ref/get Queue<String> / ByteQueue", res[2].1 / res[3].1);
    println!("  {:<44} {:>8.2}x", "floor: ByteQueue + allocs / ByteQueue", res[4].1 / res[3].1);
    println!("  {:<44} {:>8.2}x", "floor: MpmcQueue<[u8; 64]> / ByteQueue", res[5].1 / res[3].1);
    let mut py: Vec<f64> = (0..rounds.min(3)).filter_map(|_| python_strings(if q { 1_000 } else { 100_000 })).collect();
    if py.is_empty() {
        println!("  (python3 not available: mp.Queue row skipped)");
    } else {
        let m = support::median(&mut py);
        println!("  {:<44} {m:>9.3}", "Python mp.Queue, same strings (separate runs)");
        println!("  {:<44} {:>8.0}x", "Queue<String> / Python (target >= 50)", res[0].1 / m);
        println!("  {:<44} {:>8.0}x", "put_ref/get Queue<String> / Python", res[2].1 / m);
    }
}
