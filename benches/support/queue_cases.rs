//! Our own queue measurements, shared by the root criterion bench
//! (`benches/queue.rs`) and the side-by-side comparison bench
//! (`comparisons/benches/queue.rs`). Producer and consumer run in different
//! processes pinned to different cores; each returns M msgs/s or ns.

#![allow(dead_code)]

use std::sync::atomic::Ordering;
use std::time::Instant;

use shmproc::queue::{ByteQueue, MpmcQueue, SpscQueue, WaitStrategy};

use super::{SharedPage, mps, percentiles, run_group, run_pair};

// Each measurement uses fresh queues: a queue whose previous producer
// process has exited reports Disconnected (by design) until a new producer
// claims it, which a forked child may not have done yet.
pub fn spsc_single(cap: u64, n: u64) -> f64 {
    let q = &SpscQueue::<u64>::new(cap).unwrap();
    let mut rx = q.consumer().unwrap().with_wait(WaitStrategy::BusyPoll);
    let d = run_pair(
        || {
            let mut sum = 0u64;
            for _ in 0..n {
                sum = sum.wrapping_add(rx.pop().unwrap());
            }
            assert_eq!(sum, n * (n - 1) / 2);
        },
        || {
            let mut tx = q.producer().unwrap().with_wait(WaitStrategy::BusyPoll);
            for i in 0..n {
                tx.push(i).unwrap();
            }
            std::mem::forget(tx); // the forked child leaves with _exit
        },
    );
    mps(n, d)
}

pub fn spsc_batched(cap: u64, n: u64) -> f64 {
    let q = &SpscQueue::<u64>::new(cap).unwrap();
    let mut rx = q.consumer().unwrap();
    let d = run_pair(
        || {
            let mut buf = [0u64; 256];
            let (mut got, mut sum) = (0u64, 0u64);
            while got < n {
                let k = rx.pop_into(&mut buf);
                for &v in &buf[..k] {
                    sum = sum.wrapping_add(v);
                }
                got += k as u64;
            }
            assert_eq!(sum, n * (n - 1) / 2);
        },
        || {
            let mut tx = q.producer().unwrap();
            let mut buf = [0u64; 256];
            let mut i = 0u64;
            while i < n {
                let k = 256.min(n - i) as usize;
                for (j, b) in buf[..k].iter_mut().enumerate() {
                    *b = i + j as u64;
                }
                let mut done = 0;
                while done < k {
                    done += tx.push_slice(&buf[done..k]);
                }
                i += k as u64;
            }
            std::mem::forget(tx);
        },
    );
    mps(n, d)
}

pub fn spsc_pingpong(n: usize, wait: WaitStrategy) -> (f64, f64) {
    let (there, back) = (&SpscQueue::<u64>::new(64).unwrap(), &SpscQueue::<u64>::new(64).unwrap());
    let mut tx = there.producer().unwrap().with_wait(wait);
    let mut rx = back.consumer().unwrap().with_wait(wait);
    let mut samples = Vec::with_capacity(n);
    run_pair(
        || {
            for i in 0..n as u64 {
                let t = Instant::now();
                tx.push(i).unwrap();
                assert_eq!(rx.pop().unwrap(), i);
                samples.push(t.elapsed().as_nanos() as f64);
            }
        },
        || {
            let mut crx = there.consumer().unwrap().with_wait(wait);
            let mut ctx = back.producer().unwrap().with_wait(wait);
            for _ in 0..n {
                let v = crx.pop().unwrap();
                ctx.push(v).unwrap();
            }
            std::mem::forget((crx, ctx));
        },
    );
    percentiles(samples)
}

/// 2 producer and 2 consumer processes, `n` items per producer; M items/s.
pub fn mpmc_2p2c(n: u64) -> f64 {
    let q = MpmcQueue::<u64>::new(4096).unwrap();
    let sums = SharedPage::new(4096);
    let roles: Vec<Box<dyn FnMut()>> = vec![
        Box::new(|| (0..n).for_each(|i| q.push(i).unwrap())),
        Box::new(|| (0..n).for_each(|i| q.push(i).unwrap())),
        Box::new(|| consume_into(&q, n, &sums, 0)),
        Box::new(|| consume_into(&q, n, &sums, 1)),
    ];
    let d = run_group(roles);
    // Both consumers together saw every item once.
    let total: u64 = (0..2).map(|i| sums.flag(64 * (i + 1)).load(Ordering::Relaxed) as u64).sum();
    assert_eq!(total, 2 * n, "items lost or duplicated");
    mps(2 * n, d)
}

/// Pops `n` items (a share of the stream), counting them into `sums`.
pub fn consume_into(q: &MpmcQueue<u64>, n: u64, sums: &SharedPage, slot: usize) {
    let mut count = 0u32;
    for _ in 0..n {
        q.pop().unwrap();
        count += 1;
    }
    sums.flag(64 * (slot + 1)).store(count, Ordering::Relaxed);
}

/// `n` frames of `size` bytes through a ByteQueue; M frames/s.
pub fn bytes_frames(size: usize, n: u64) -> f64 {
    let q = ByteQueue::new(1 << 20, 4096).unwrap();
    let mut rx = q.consumer().unwrap();
    let d = run_pair(
        || {
            let mut buf = Vec::with_capacity(size);
            let mut total = 0usize;
            for _ in 0..n {
                // No deadline: no clock read per frame (a producer that
                // dies ends this with Disconnected, not a hang).
                rx.recv_into(&mut buf).unwrap();
                total += buf.len();
            }
            assert_eq!(total, size * n as usize);
        },
        || {
            let mut tx = q.producer().unwrap();
            let frame = vec![7u8; size];
            for _ in 0..n {
                tx.send(&frame).unwrap();
            }
            std::mem::forget(tx);
        },
    );
    mps(n, d)
}

/// [`bytes_frames`] of 64-byte frames with what the owned `Queue<String>`
/// forms add around the queue itself: the producer sends a fresh clone of
/// its `String` each time (`item.clone()`, sent, dropped), the consumer
/// makes a new `String` of each frame's bytes (`recv`, a `Vec` per frame,
/// turned into a `String` and dropped). The floor of
/// [`queue_strings`] on an SPSC byte ring: the allocator's share of it.
pub fn bytes_frames_owned_strings(n: u64) -> f64 {
    let q = ByteQueue::new(1 << 20, 4096).unwrap();
    let mut rx = q.consumer().unwrap();
    let d = run_pair(
        || {
            let mut total = 0usize;
            for _ in 0..n {
                let s = String::from_utf8(rx.recv().unwrap()).unwrap();
                total += s.len();
            }
            assert_eq!(total, 64 * n as usize);
        },
        || {
            let mut tx = q.producer().unwrap();
            let item = "x".repeat(64);
            for _ in 0..n {
                let s = item.clone();
                tx.send(s.as_bytes()).unwrap();
            }
            std::mem::forget(tx);
        },
    );
    mps(n, d)
}

/// `MpmcQueue<[u8; 64]>`, one producer process and one consumer process:
/// the multi-producer ring under `Queue<String>` (the same claims and
/// crash records) moving 64 plain bytes in fixed slots, with no encoding,
/// length or allocation; M msgs/s. What the MPMC ring itself costs beside
/// [`bytes_frames`]' single-producer byte ring.
pub fn mpmc_bytes64(n: u64) -> f64 {
    let q = &MpmcQueue::<[u8; 64]>::new(4096).unwrap();
    let d = run_pair(
        || {
            let mut total = 0u64;
            for _ in 0..n {
                total += u64::from(q.pop().unwrap()[63]);
            }
            assert_eq!(total, 7 * n);
        },
        || {
            for _ in 0..n {
                q.push([7u8; 64]).unwrap();
            }
        },
    );
    mps(n, d)
}

/// `Queue<String>` of 64-byte strings, one producer process and one
/// consumer process; M msgs/s. The producer makes a new `String` per put
/// (as a program sending its own strings would: `put(item.clone())`); the
/// consumer gets an owned `String` per item and checks its length. Per
/// message that is two allocations and two frees (the clone's and the
/// get's), which the borrowed forms ([`queue_strings_borrowed`]) do not
/// make: callgrind, one process, 64-byte strings, instructions per message
/// (put + get): about 860 owned vs 495 borrowed, the difference being the
/// allocator's ~285 (malloc ~51 and free ~90, each twice), the clone's
/// copy ~45, and ~35 of call and drop glue.
pub fn queue_strings(n: u64) -> f64 {
    strings_case::<true, true>(n)
}

/// [`queue_strings`] with the borrowed forms, compared like with like
/// with [`bytes_frames`]: the producer puts one `String` by reference
/// (`put_ref`: encoded straight into the slot, no clone), the consumer
/// gets into one reused `String` (`get_into`: no allocation per item).
pub fn queue_strings_borrowed(n: u64) -> f64 {
    strings_case::<false, false>(n)
}

/// [`queue_strings`] in the shape of the Python bench
/// (`benches/python_queue.py`: `q.put(ITEM)` puts the same object every
/// time, `q.get()` makes a new string): `put_ref` of one `String`, owned
/// `get`. One allocation and one free per message (the consumer's).
pub fn queue_strings_ref_get(n: u64) -> f64 {
    strings_case::<false, true>(n)
}

/// The `Queue<String>` cases: owned or borrowed put, owned or borrowed
/// get (chosen at compile time: no branch per item).
fn strings_case<const PUT_OWNED: bool, const GET_OWNED: bool>(n: u64) -> f64 {
    let q = shmproc::Queue::<String>::new(4096).unwrap();
    let item = "x".repeat(64);
    let d = run_pair(
        || {
            let mut total = 0usize;
            let mut s = String::with_capacity(64);
            for _ in 0..n {
                // No deadline, as Python's `q.get()` and the ByteQueue
                // case's `recv_into`: no clock read per item. (A producer
                // that panics closes the queue on its way out, so this
                // fails instead of waiting forever.)
                if GET_OWNED {
                    total += q.get().unwrap().len();
                } else {
                    q.get_into(&mut s).unwrap();
                    total += s.len();
                }
            }
            assert_eq!(total, 64 * n as usize);
        },
        || {
            let _close_on_panic = CloseOnPanic(&q);
            for _ in 0..n {
                if PUT_OWNED {
                    q.put(item.clone()).unwrap();
                } else {
                    q.put_ref(&item).unwrap();
                }
            }
        },
    );
    mps(n, d)
}

/// Closes its queue for every process if dropped while panicking: a
/// failed producer then ends its consumer's `get` with `Closed`.
struct CloseOnPanic<'a, T: shmproc::Handoff>(&'a shmproc::Queue<T>);

impl<T: shmproc::Handoff> Drop for CloseOnPanic<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.close_all();
        }
    }
}
