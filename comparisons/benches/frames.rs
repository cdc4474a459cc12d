//! Frame-size sweep, 8 B to 64 KiB (issue 11 item 4), all in one run, in
//! interleaved rounds (medians), producer and consumer in different
//! processes pinned to different cores, every frame checksummed by the
//! consumer (a sum of its 64-bit words; each frame carries its sequence
//! number, so a lost, repeated or torn frame changes the total):
//!
//! - `ByteQueue`, copy: `send(&frame)` / `recv_into(&mut buf)` (no deadline)
//!   and the checksum over `buf`;
//! - `ByteQueue`, loan: the frame copied into a write loan and committed /
//!   the checksum read in place through a read loan;
//! - a Unix socket pair: `write_all` / `read_exact` into a buffer;
//! - iceoryx2 publish-subscribe of `[u8]` slices: the frame copied into a
//!   loaned sample / the checksum read in place in the received sample
//!   (blocking publisher, no overflow: nothing is lost);
//! - the floor: one core copying each frame (`memcpy`) into a private ring
//!   laid out as the `ByteQueue`'s (same capacity, same offset in its
//!   page, 8-byte headers, payloads of 64 bytes or more 64-aligned), with
//!   no consumer.
//!
//! Sources are 64-aligned. Rates are frames/s from the consumer's first
//! frame to its last (set-up excluded), shown as GB/s of payload.
//!
//! `SHMPROC_BENCH_QUICK=1` (or `--test`): a smoke run with few frames.
//! `SHMPROC_BENCH_ROUNDS` sets the rounds (default 5);
//! `SHMPROC_BENCH_SIZES=4096,65536` runs only those frame sizes.

#[path = "../../benches/support/mod.rs"]
mod support;

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;
use shmproc::queue::{ByteQueue, WaitStrategy};
use support::{SharedPage, interleave, quick, run_pair};

/// Ring bytes of every ring here (ours, the floor's).
const RING: u64 = 1 << 20;
/// The largest frame.
const MAX: usize = 64 * 1024;
const SIZES: [usize; 6] = [8, 64, 512, 4096, 16 * 1024, 64 * 1024];

/// A 64-aligned private buffer.
struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let layout = Layout::from_size_align(len.max(64), 64).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Aligned { ptr, len }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: our allocation of `len` bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, Layout::from_size_align(self.len.max(64), 64).unwrap()) };
    }
}

/// The frame source: `size` bytes of a fixed pattern; `stamp` writes the
/// sequence number into its first 8 bytes.
fn source(size: usize) -> Aligned {
    let mut a = Aligned::new(size);
    for (i, b) in a.bytes().iter_mut().enumerate() {
        *b = (i * 131 + 7) as u8;
    }
    a
}

fn stamp(frame: &mut [u8], seq: u64) {
    frame[..8].copy_from_slice(&seq.to_le_bytes());
}

/// The sum of the 64-bit words of `b` (a short tail as one word).
#[inline]
fn checksum(b: &[u8]) -> u64 {
    let mut chunks = b.chunks_exact(8);
    let mut s = chunks.by_ref().fold(0u64, |s, c| s.wrapping_add(u64::from_le_bytes(c.try_into().unwrap())));
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        s = s.wrapping_add(u64::from_le_bytes(w));
    }
    s
}

/// The total checksum of frames 0..n of `size` bytes.
fn expected(size: usize, n: u64) -> u64 {
    let mut src = source(size);
    stamp(src.bytes(), 0);
    let base = checksum(src.bytes());
    base.wrapping_mul(n).wrapping_add(n * (n - 1) / 2)
}

/// Frames per second from the consumer's first frame to its last.
fn rate(n: u64, first: Option<Instant>, last: Instant) -> f64 {
    (n - 1) as f64 / last.duration_since(first.expect("no frame")).as_secs_f64()
}

fn bytequeue_copy(size: usize, n: u64) -> f64 {
    let q = ByteQueue::new(RING, MAX as u64).unwrap();
    let mut rx = q.consumer().unwrap().with_wait(WaitStrategy::BusyPoll);
    let (mut first, mut last, mut sum) = (None, Instant::now(), 0u64);
    run_pair(
        || {
            let mut buf = Vec::with_capacity(size);
            for _ in 0..n {
                rx.recv_into(&mut buf).unwrap();
                first.get_or_insert_with(Instant::now);
                sum = sum.wrapping_add(checksum(&buf));
            }
            last = Instant::now();
        },
        || {
            let mut tx = q.producer().unwrap().with_wait(WaitStrategy::BusyPoll);
            let mut src = source(size);
            for seq in 0..n {
                stamp(src.bytes(), seq);
                tx.send(src.bytes()).unwrap();
            }
            std::mem::forget(tx); // the forked child leaves with _exit
        },
    );
    assert_eq!(sum, expected(size, n), "ByteQueue copy: frames lost, repeated or torn");
    rate(n, first, last)
}

fn bytequeue_loan(size: usize, n: u64) -> f64 {
    let q = ByteQueue::new(RING, MAX as u64).unwrap();
    let mut rx = q.consumer().unwrap().with_wait(WaitStrategy::BusyPoll);
    let (mut first, mut last, mut sum) = (None, Instant::now(), 0u64);
    run_pair(
        || {
            for _ in 0..n {
                let loan = rx.recv_loan().unwrap();
                first.get_or_insert_with(Instant::now);
                // SAFETY: the producer follows the protocol (a published frame is not written).
                sum = sum.wrapping_add(checksum(unsafe { loan.as_slice() }));
                loan.release();
            }
            last = Instant::now();
        },
        || {
            let mut tx = q.producer().unwrap().with_wait(WaitStrategy::BusyPoll);
            let mut src = source(size);
            for seq in 0..n {
                let mut loan = tx.send_loan(size).unwrap();
                // SAFETY: single producer; the consumer does not read an uncommitted frame.
                let dst = unsafe { loan.as_mut_slice() };
                dst.copy_from_slice(src.bytes());
                stamp(dst, seq);
                loan.commit().unwrap();
            }
            let _ = &mut src;
            std::mem::forget(tx);
        },
    );
    assert_eq!(sum, expected(size, n), "ByteQueue loan: frames lost, repeated or torn");
    rate(n, first, last)
}

fn unix_socket(size: usize, n: u64) -> f64 {
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (mut first, mut last, mut sum) = (None, Instant::now(), 0u64);
    run_pair(
        || {
            let mut buf = Aligned::new(size);
            for _ in 0..n {
                a.read_exact(buf.bytes()).unwrap();
                first.get_or_insert_with(Instant::now);
                sum = sum.wrapping_add(checksum(buf.bytes()));
            }
            last = Instant::now();
        },
        || {
            let mut src = source(size);
            for seq in 0..n {
                stamp(src.bytes(), seq);
                b.write_all(src.bytes()).unwrap();
            }
        },
    );
    assert_eq!(sum, expected(size, n), "Unix socket: frames lost, repeated or torn");
    rate(n, first, last)
}

/// One core copies each frame into a private ring laid out as the
/// ByteQueue's: same capacity, same offset in its page as our data area
/// (512), an 8-byte header per frame, payloads of 64 bytes or more at the
/// next 64-byte boundary, a frame that does not fit before the end starts
/// over at offset 0. No consumer, no checksum: the floor of a copy in.
fn memcpy_floor(size: usize, n: u64) -> f64 {
    let page = SharedPage::new(RING as usize + 4096);
    // SAFETY: 512 + RING <= the mapping's length.
    let ring = unsafe { page.ptr().add(512) };
    let mut src = source(size);
    let len = size as u64;
    let mut pos = 0u64;
    // Touch the ring once, as a long-running queue's is.
    // SAFETY: RING bytes at `ring`, ours.
    unsafe { std::ptr::write_bytes(ring, 0, RING as usize) };
    let t = Instant::now();
    for seq in 0..n {
        let off = |p: u64| if len < 64 { 8 } else { ((p + 8 + 63) & !63) - p };
        let mut need = off(pos) + len.div_ceil(8) * 8;
        if RING - pos < need {
            pos = 0;
            need = off(0) + len.div_ceil(8) * 8;
        }
        stamp(src.bytes(), seq);
        // SAFETY: pos + need <= RING: header and payload inside the ring.
        unsafe {
            (ring.add(pos as usize) as *mut u32).write_volatile(size as u32);
            std::ptr::copy_nonoverlapping(src.ptr, ring.add((pos + off(pos)) as usize), size);
        }
        pos = (pos + need) % RING;
    }
    let d = t.elapsed();
    std::hint::black_box(ring);
    n as f64 / d.as_secs_f64()
}

// ---- iceoryx2: publish-subscribe of [u8] slices, read in place ----

const STALL: Duration = Duration::from_secs(30);

fn ice_node() -> Node<ipc::Service> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new().signal_handling_mode(SignalHandlingMode::Disabled).create::<ipc::Service>().unwrap()
}

fn ice_name() -> ServiceName {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let k = CALLS.fetch_add(1, Ordering::Relaxed);
    format!("shmproc-bench/{}/frames/{k}", std::process::id()).as_str().try_into().unwrap()
}

fn iceoryx2_frames(size: usize, n: u64) -> f64 {
    // About as many bytes in flight as our ring holds.
    let buffer = (RING as usize / size).clamp(4, 256);
    let name = ice_name();
    let page = SharedPage::new(4096);
    let ready = page.flag(0);
    let (mut first, mut last, mut sum) = (None, Instant::now(), 0u64);
    run_pair(
        || {
            let node = ice_node();
            let service = node
                .service_builder(&name)
                .publish_subscribe::<[u8]>()
                .enable_safe_overflow(false)
                .subscriber_max_buffer_size(buffer)
                .history_size(0)
                .max_publishers(1)
                .max_subscribers(1)
                .create()
                .unwrap();
            let sub = service.subscriber_builder().buffer_size(buffer).create().unwrap();
            ready.store(1, Ordering::Release); // pairs with the child's Acquire load
            let mut got = 0u64;
            let mut idle_since: Option<Instant> = None;
            let mut spins = 0u64;
            while got < n {
                match sub.receive().unwrap() {
                    Some(s) => {
                        first.get_or_insert_with(Instant::now);
                        sum = sum.wrapping_add(checksum(s.payload()));
                        got += 1;
                        idle_since = None;
                    }
                    None => {
                        spins += 1;
                        if spins.is_multiple_of(4096) {
                            let t = *idle_since.get_or_insert_with(Instant::now);
                            assert!(t.elapsed() < STALL, "iceoryx2: no sample for {STALL:?}");
                        }
                        std::hint::spin_loop();
                    }
                }
            }
            last = Instant::now();
            ready.store(2, Ordering::Release); // pairs with the child's Acquire load: all received
        },
        || {
            let since = Instant::now();
            while ready.load(Ordering::Acquire) == 0 {
                assert!(since.elapsed() < STALL, "iceoryx2: the subscriber never got ready");
                std::thread::yield_now();
            }
            let node = ice_node();
            let service = node.service_builder(&name).publish_subscribe::<[u8]>().open().unwrap();
            let publisher = service
                .publisher_builder()
                .initial_max_slice_len(size)
                .unable_to_deliver_strategy(UnableToDeliverStrategy::Block)
                .create()
                .unwrap();
            let mut src = source(size);
            for seq in 0..n {
                stamp(src.bytes(), seq);
                // The subscriber may not be connected yet (0 recipients):
                // send the frame again until it is delivered.
                let since = Instant::now();
                loop {
                    let sample = publisher.loan_slice_uninit(size).unwrap().write_from_slice(src.bytes());
                    if sample.send().unwrap() > 0 {
                        break;
                    }
                    assert!(since.elapsed() < STALL, "iceoryx2: no subscriber connected");
                    std::thread::yield_now();
                }
            }
            // Samples not yet received go with the publisher: keep it until
            // the subscriber has them all.
            let since = Instant::now();
            while ready.load(Ordering::Acquire) < 2 {
                assert!(since.elapsed() < STALL, "iceoryx2: the subscriber never received everything");
                std::thread::yield_now();
            }
        },
    );
    assert_eq!(sum, expected(size, n), "iceoryx2: frames lost, repeated or torn");
    rate(n, first, last)
}

fn main() {
    let q = quick();
    if q {
        println!("(quick smoke run with few frames: the figures below are not measurements)");
    }
    let rounds =
        if q { 1 } else { std::env::var("SHMPROC_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5) };
    println!(
        "== frame-size sweep between two processes, GB/s of payload (M frames/s), median of {rounds} interleaved rounds"
    );
    println!(
        "  {:>6}  {:>17} {:>17} {:>17} {:>17} {:>17}   {:>10} {:>10} {:>10}",
        "frame",
        "ByteQueue copy",
        "ByteQueue loan",
        "Unix socket",
        "iceoryx2 [u8]",
        "memcpy floor",
        "loan/floor",
        "loan/ice",
        "copy/sock"
    );
    let sizes: Vec<usize> = std::env::var("SHMPROC_BENCH_SIZES")
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).filter(|&x| (8..=MAX).contains(&x)).collect())
        .unwrap_or_else(|_| SIZES.to_vec());
    for &size in &sizes {
        // About 256 MiB per case (fewer frames for the socket at small sizes).
        let n = if q { 200 } else { ((256 << 20) / size as u64).clamp(4_000, 4_000_000) };
        let ns = if q { 200 } else { (n / if size < 4096 { 10 } else { 1 }).max(4_000) };
        let res = interleave(
            rounds,
            &mut [
                ("copy", &mut || bytequeue_copy(size, n)),
                ("loan", &mut || bytequeue_loan(size, n)),
                ("socket", &mut || unix_socket(size, ns)),
                ("iceoryx2", &mut || iceoryx2_frames(size, n)),
                ("floor", &mut || memcpy_floor(size, n)),
            ],
        );
        let v: Vec<f64> = res.iter().map(|(_, r)| *r).collect();
        let cell = |fps: f64| format!("{:>7.2} ({:>7.2})", fps * size as f64 / 1e9, fps / 1e6);
        let label = if size >= 1024 { format!("{} KiB", size / 1024) } else { format!("{size} B") };
        println!(
            "  {label:>6}  {} {} {} {} {}   {:>9.2}x {:>9.2}x {:>9.1}x",
            cell(v[0]),
            cell(v[1]),
            cell(v[2]),
            cell(v[3]),
            cell(v[4]),
            v[1] / v[4],
            v[1] / v[3],
            v[0] / v[2]
        );
    }
    println!("  targets at 64 KiB: loan/floor >= 0.5, loan/iceoryx2 >= 1.0");
}
