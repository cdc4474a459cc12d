//! Queue benchmarks, ours beside the anchors, in interleaved rounds
//! (medians, ratios), producer and consumer in different processes pinned
//! to different cores:
//!
//! - SPSC u64 throughput, single push/pop and batched (256);
//!   anchors: rtrb between two pinned threads (the in-process ceiling), a
//!   Unix socket pair between two processes (8-byte messages), ipc-channel,
//!   iceoryx2 publish-subscribe (blocking publisher, no overflow), Python's
//!   mp.Queue (if python3 runs);
//! - SPSC ping-pong round trip (busy-poll and blocking), p50 and p99;
//!   anchors: a minimal hand-written shared-memory ping-pong (the floor),
//!   iceoryx2 publish-subscribe busy-polling;
//! - variable-length frames (64 B, 4 KiB) beside a Unix socket;
//! - MPMC 2 producers x 2 consumers beside crossbeam's ArrayQueue.
//!
//! iceoryx2's build needs libclang (Debian: libclang-dev; `.ci/run`
//! installs it).

#[path = "support/iceoryx2_anchor.rs"]
mod iceoryx2_anchor;
#[path = "../../benches/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::Instant;

use shmproc::queue::WaitStrategy;
use support::queue_cases::{bytes_frames, mpmc_2p2c, spsc_batched, spsc_pingpong, spsc_single};
use support::{SharedPage, interleave, mps, percentiles, pin, quick, run_pair, unpin};

fn rtrb_threads(n: u64, cap: usize) -> f64 {
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(cap);
    pin(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(move || {
            pin(1);
            for i in 0..n {
                while tx.push(i).is_err() {
                    std::hint::spin_loop();
                }
            }
        });
        let mut sum = 0u64;
        for _ in 0..n {
            loop {
                if let Ok(v) = rx.pop() {
                    sum = sum.wrapping_add(v);
                    break;
                }
                std::hint::spin_loop();
            }
        }
        assert_eq!(sum, n * (n - 1) / 2);
    });
    let d = t.elapsed();
    unpin();
    mps(n, d)
}

fn unix_socket(n: u64) -> f64 {
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let d = run_pair(
        || {
            let mut buf = [0u8; 8];
            let mut sum = 0u64;
            for _ in 0..n {
                a.read_exact(&mut buf).unwrap();
                sum = sum.wrapping_add(u64::from_le_bytes(buf));
            }
            assert_eq!(sum, n * (n - 1) / 2);
        },
        || {
            for i in 0..n {
                b.write_all(&i.to_le_bytes()).unwrap();
            }
        },
    );
    mps(n, d)
}

/// ipc-channel (serde + Unix sockets) between two processes: the channel
/// is made before fork, so both processes hold its ends.
fn ipc_channel(n: u64) -> f64 {
    let (tx, rx) = ipc_channel::ipc::channel::<u64>().unwrap();
    let d = run_pair(
        || {
            let mut sum = 0u64;
            for _ in 0..n {
                sum = sum.wrapping_add(rx.recv().unwrap());
            }
            assert_eq!(sum, n * (n - 1) / 2);
        },
        || {
            for i in 0..n {
                tx.send(i).unwrap();
            }
        },
    );
    mps(n, d)
}

/// Python's multiprocessing.Queue (via benches/python_queue.py), if
/// python3 runs here; M msgs/s.
fn python_queue(n: u64) -> Option<f64> {
    support::python_rate(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_queue.py"), &[&n.to_string()])
}

/// The floor: one shared word each way, spin on it.
fn handwritten_pingpong(n: usize) -> (f64, f64) {
    let page = SharedPage::new(4096);
    let (ping, pong) = (page.flag(0), page.flag(128));
    ping.store(0, Ordering::Relaxed);
    pong.store(0, Ordering::Relaxed);
    let mut samples = Vec::with_capacity(n);
    run_pair(
        || {
            for i in 1..=n as u32 {
                let t = Instant::now();
                ping.store(i, Ordering::Release);
                while pong.load(Ordering::Acquire) != i {
                    std::hint::spin_loop();
                }
                samples.push(t.elapsed().as_nanos() as f64);
            }
        },
        || {
            for i in 1..=n as u32 {
                while ping.load(Ordering::Acquire) != i {
                    std::hint::spin_loop();
                }
                pong.store(i, Ordering::Release);
            }
        },
    );
    percentiles(samples)
}

fn crossbeam_2p2c(n: u64) -> f64 {
    let q = crossbeam_queue::ArrayQueue::<u64>::new(4096);
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..4 {
            let q = &q;
            s.spawn(move || {
                pin(i % 2);
                if i < 2 {
                    for v in 0..n {
                        let mut v = v;
                        while let Err(back) = q.push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                } else {
                    for _ in 0..n {
                        while q.pop().is_none() {
                            std::thread::yield_now();
                        }
                    }
                }
            });
        }
    });
    mps(2 * n, t.elapsed())
}

/// The same over a Unix socket pair (length-known messages).
fn socket_frames(size: usize, n: u64) -> f64 {
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let d = run_pair(
        || {
            let mut buf = vec![0u8; size];
            for _ in 0..n {
                a.read_exact(&mut buf).unwrap();
            }
        },
        || {
            let frame = vec![7u8; size];
            for _ in 0..n {
                b.write_all(&frame).unwrap();
            }
        },
    );
    mps(n, d)
}

/// Which sections to run: all, or those named in SHMPROC_BENCH_ONLY
/// (comma-separated: spsc, pingpong, bytes, mpmc).
fn wanted(section: &str) -> bool {
    std::env::var("SHMPROC_BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s.trim() == section))
}

fn main() {
    let q = quick();
    if q {
        println!("(quick smoke run with tiny sizes: the figures below are not measurements)");
    }
    let rounds =
        if q { 1 } else { std::env::var("SHMPROC_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(7) };
    if wanted("spsc") {
        spsc_section(q, rounds);
    }
    if wanted("pingpong") {
        pingpong_section(q, rounds);
    }
    if wanted("bytes") {
        bytes_section(q, rounds);
    }
    if wanted("mpmc") {
        mpmc_section(q, rounds);
    }
}

fn spsc_section(q: bool, rounds: usize) {
    let n = if q { 10_000 } else { 20_000_000 };
    let cap = 4096;
    let res = interleave(
        rounds,
        &mut [
            ("shmproc SPSC u64 (single push/pop)", &mut || spsc_single(cap as u64, n)),
            ("shmproc SPSC u64 (batches of 256)", &mut || spsc_batched(cap as u64, n)),
            ("rtrb, two pinned threads", &mut || rtrb_threads(n, cap)),
            ("Unix socket pair, 8-byte messages", &mut || unix_socket(n / 20)),
            ("ipc-channel, u64 messages", &mut || ipc_channel(n / 40)),
            ("iceoryx2 publish-subscribe, u64", &mut || iceoryx2_anchor::throughput(n / 40, 256)),
        ],
    );
    println!("\n== SPSC throughput, M msgs/s (median of {rounds} interleaved rounds)");
    for (name, v) in &res {
        println!("  {name:<44} {v:>9.1}");
    }
    println!("  {:<44} {:>8.2}x", "single / rtrb (target >= 1.0)", res[0].1 / res[2].1);
    println!("  {:<44} {:>8.2}x", "batched / rtrb", res[1].1 / res[2].1);
    println!("  {:<44} {:>8.1}x", "single / Unix socket", res[0].1 / res[3].1);
    println!("  {:<44} {:>8.1}x", "single / ipc-channel", res[0].1 / res[4].1);
    println!("  {:<44} {:>8.1}x", "single / iceoryx2 (target ~100)", res[0].1 / res[5].1);
    let mut py: Vec<f64> = (0..rounds).filter_map(|_| python_queue(if q { 1_000 } else { 200_000 })).collect();
    if py.is_empty() {
        println!("  (python3 not available: mp.Queue row skipped)");
    } else {
        let m = support::median(&mut py);
        println!("  {:<44} {m:>9.2}", "Python mp.Queue, ints (separate runs)");
        println!("  {:<44} {:>8.0}x", "single / Python mp.Queue", res[0].1 / m);
    }
}

fn pingpong_section(q: bool, rounds: usize) {
    let pings = if q { 1_000 } else { 100_000 };
    let mut p50 = vec![Vec::new(); 4];
    let mut p99 = vec![Vec::new(); 4];
    for _ in 0..rounds {
        let r = [
            spsc_pingpong(pings, WaitStrategy::BusyPoll),
            spsc_pingpong(pings / 10, WaitStrategy::Blocking),
            handwritten_pingpong(pings),
            iceoryx2_anchor::pingpong(pings / 10),
        ];
        for (i, (x, y)) in r.into_iter().enumerate() {
            p50[i].push(x);
            p99[i].push(y);
        }
    }
    let names = [
        "shmproc SPSC busy-poll",
        "shmproc SPSC blocking",
        "hand-written shm ping-pong (floor)",
        "iceoryx2 publish-subscribe, busy-poll",
    ];
    println!("\n== SPSC ping-pong round trip, ns (median over rounds of each round's p50 / p99)");
    let med: Vec<(f64, f64)> =
        (0..4).map(|i| (support::median(&mut p50[i].clone()), support::median(&mut p99[i].clone()))).collect();
    for (i, name) in names.iter().enumerate() {
        println!("  {name:<44} p50 {:>8.0}   p99 {:>8.0}", med[i].0, med[i].1);
    }
    println!("  {:<44} {:>8.2}x", "busy-poll p50 / floor p50 (target <= 1.1)", med[0].0 / med[2].0);
    println!("  {:<44} {:>8.2}x", "busy-poll p50 / iceoryx2 p50", med[0].0 / med[3].0);
}

fn bytes_section(q: bool, rounds: usize) {
    let (f64n, f4kn) = if q { (10_000, 1_000) } else { (5_000_000, 500_000) };
    let res = interleave(
        rounds,
        &mut [
            ("shmproc ByteQueue, 64 B frames", &mut || bytes_frames(64, f64n)),
            ("Unix socket, 64 B messages", &mut || socket_frames(64, f64n / 10)),
            ("shmproc ByteQueue, 4 KiB frames", &mut || bytes_frames(4096, f4kn)),
            ("Unix socket, 4 KiB messages", &mut || socket_frames(4096, f4kn / 5)),
        ],
    );
    println!("\n== variable-length frames between two processes, M frames/s (median of {rounds} rounds)");
    for (name, v) in &res {
        println!("  {name:<44} {v:>9.2}   ({:.2} GB/s)", v * if name.contains("64 B") { 64.0 } else { 4096.0 } / 1e3);
    }
    println!("  {:<44} {:>8.1}x", "64 B: ours / Unix socket", res[0].1 / res[1].1);
    println!("  {:<44} {:>8.1}x", "4 KiB: ours / Unix socket", res[2].1 / res[3].1);
}

fn mpmc_section(q: bool, rounds: usize) {
    let m = if q { 10_000 } else { 2_000_000 };
    let res = interleave(
        rounds,
        &mut [
            ("shmproc MPMC, 2+2 processes (blocking)", &mut || mpmc_2p2c(m)),
            ("crossbeam ArrayQueue, 2+2 threads (yield)", &mut || crossbeam_2p2c(m)),
        ],
    );
    println!("\n== MPMC 2 producers x 2 consumers on 2 cores, M items/s (median of {rounds} rounds)");
    for (name, v) in &res {
        println!("  {name:<44} {v:>9.1}");
    }
    println!("  {:<44} {:>8.2}x", "ours / crossbeam (target >= 0.8)", res[0].1 / res[1].1);
}
