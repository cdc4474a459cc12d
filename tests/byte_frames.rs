//! Large frames across real processes (issue 11 item 4): zero-copy loans
//! on the byte ring (including loans held by a process killed with
//! SIGKILL), 64-byte payload alignment, and `recv_into` without a deadline.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmproc::queue::{ALIGN_FROM, ByteQueue};
use shmproc::{Event, Process, RecvError, RecvTimeoutError, TryRecvError};

const DEADLINE: Duration = Duration::from_secs(60);
const BIG: u64 = 64 * 1024;

/// Frame `seq`: a size from 0 to 64 KiB (the edges included) and contents
/// both sides can compute.
fn frame(seq: u32) -> Vec<u8> {
    let len = match seq % 7 {
        0 => 0,
        1 => BIG as usize,
        2 => ALIGN_FROM - 1,
        3 => ALIGN_FROM,
        _ => {
            let mut x = seq.wrapping_mul(2_654_435_761) ^ 0x9E37_79B9;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u64 % (BIG + 1)) as usize
        }
    };
    (0..len).map(|i| (seq as usize * 31 + i * 7) as u8).collect()
}

/// Runs `body` while a watchdog kills `p` if `body` has not returned within
/// DEADLINE: a blocking call without a deadline in `body` then returns
/// (`Disconnected`: the peer died) and the test fails, instead of hanging.
fn with_watchdog<R>(p: &Process, body: impl FnOnce() -> R) -> R {
    /// Tells the watchdog that `body` returned, or panicked (so a failing
    /// test fails at once, not after the deadline).
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release); // pairs with the watchdog's Acquire load
        }
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let end = Instant::now() + DEADLINE;
            while !done.load(Ordering::Acquire) {
                if Instant::now() > end {
                    eprintln!("watchdog: the test did not finish within {DEADLINE:?}; killing the child");
                    let _ = p.kill();
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let _done = Done(&done);
        body()
    })
}

fn wait_event(ev: &Event, p: &Process, what: &str) {
    if !ev.wait_timeout(DEADLINE) {
        let _ = p.kill();
        panic!("{what} not within {DEADLINE:?}");
    }
}

fn kill_and_reap(p: &Process) {
    p.kill().unwrap();
    let _ = p.join_timeout(DEADLINE); // Err(Signaled): killed, as meant
    assert!(!p.is_alive(), "killed child not reaped within {DEADLINE:?}");
}

// ---- loans across processes, every frame checked ----

shmproc::entry! {
    /// Sends frames 0..n through write loans, each filled in place, checking
    /// that every payload of ALIGN_FROM bytes or more is 64-aligned.
    fn send_by_loan(args: (ByteQueue, u32)) -> Result<(), String> {
        let (q, n) = args;
        let mut tx = q.producer().map_err(common::e)?;
        for seq in 0..n {
            let f = frame(seq);
            let mut loan = tx.send_loan(f.len()).map_err(common::e)?;
            common::ensure(loan.len() == f.len(), "loan length")?;
            if f.len() >= ALIGN_FROM {
                common::ensure((loan.as_mut_ptr() as usize).is_multiple_of(64), format!("write loan {seq} not 64-aligned"))?;
            }
            // Half in place through the slice, half through write_at.
            let half = f.len() / 2;
            // SAFETY: single producer; the consumer does not read an uncommitted frame.
            unsafe { loan.as_mut_slice()[..half].copy_from_slice(&f[..half]) };
            loan.write_at(half, &f[half..]);
            loan.commit().map_err(common::e)?;
        }
        Ok(())
    }
}

/// Frames of 0 to 64 KiB written in place in one process and read in place
/// in another: every frame arrives once, in order, intact, and every
/// payload of 64 bytes or more is 64-aligned on both sides (before, payloads
/// started 8 bytes after a header at any 8-aligned offset: a 64 KiB frame
/// after an 8-byte one started at 24 mod 64).
#[test]
fn frames_written_and_read_in_place_arrive_intact_and_64_aligned() {
    const N: u32 = 400;
    let q = ByteQueue::new(1 << 20, BIG).unwrap();
    let mut rx = q.consumer().unwrap();
    let mut p = Process::new(send_by_loan, (q.clone(), N)).with_daemon(true);
    p.start().unwrap();
    with_watchdog(&p, || {
        for seq in 0..N {
            let want = frame(seq);
            let loan = rx.recv_loan().unwrap_or_else(|e| panic!("frame {seq}: {e}"));
            assert_eq!(loan.len(), want.len(), "frame {seq} length");
            if want.len() >= ALIGN_FROM {
                assert_eq!(loan.as_ptr() as usize % 64, 0, "frame {seq} ({} bytes) not 64-aligned", want.len());
            }
            // SAFETY: the producer follows the protocol (a published frame is not written).
            assert!(unsafe { loan.as_slice() } == &want[..], "frame {seq} contents");
            loan.release();
        }
    });
    common::join(&p).unwrap();
    assert_eq!(rx.try_recv_loan().unwrap_err(), TryRecvError::Disconnected);
}

// ---- recv_into without a deadline ----

shmproc::entry! {
    /// Sends frames 0..n by copy.
    fn send_by_copy(args: (ByteQueue, u32)) -> Result<(), String> {
        let (q, n) = args;
        let mut tx = q.producer().map_err(common::e)?;
        for seq in 0..n {
            tx.send(&frame(seq)).map_err(common::e)?;
        }
        Ok(())
    }
}

/// `recv_into` (no deadline) receives every frame another process sends,
/// in order and intact, reusing one buffer, and then reports the sender
/// gone (it does not sleep forever on a producer that exited).
#[test]
fn recv_into_without_a_deadline_receives_every_frame_then_disconnected() {
    const N: u32 = 400;
    let q = ByteQueue::new(1 << 18, BIG).unwrap();
    let mut rx = q.consumer().unwrap();
    let mut p = Process::new(send_by_copy, (q.clone(), N)).with_daemon(true);
    p.start().unwrap();
    let mut buf = Vec::new();
    with_watchdog(&p, || {
        for seq in 0..N {
            rx.recv_into(&mut buf).unwrap_or_else(|e| panic!("frame {seq}: {e}"));
            assert!(buf == frame(seq), "frame {seq}");
        }
        assert_eq!(rx.recv_into(&mut buf), Err(RecvError::Disconnected));
    });
    common::join(&p).unwrap();
}

// ---- loans held by a process killed with SIGKILL ----

shmproc::entry! {
    /// Consumes frame 0 through a released read loan, then takes a read
    /// loan on frame 1, checks it, says so and waits to be killed.
    fn hold_read_loan(args: (ByteQueue, Event)) -> Result<(), String> {
        let (q, holding) = args;
        let mut rx = q.consumer().map_err(common::e)?;
        let first = rx.recv_loan_timeout(DEADLINE).map_err(common::e)?;
        common::ensure(first.to_vec() == frame(0), "frame 0")?;
        first.release();
        let second = rx.recv_loan_timeout(DEADLINE).map_err(common::e)?;
        common::ensure(second.to_vec() == frame(1), "frame 1")?;
        holding.set();
        std::thread::sleep(DEADLINE);
        let _ = second.len(); // still held here
        Err("not killed".into())
    }
}

/// A consumer killed with SIGKILL while it holds a read loan loses
/// nothing: the frame it was reading stays in the ring, and the next
/// consumer receives it, then the rest, in order; the frame it released
/// before is not received again.
#[test]
fn a_read_loan_held_by_a_consumer_killed_with_sigkill_leaves_its_frame_for_the_next() {
    let q = ByteQueue::new(1 << 18, BIG).unwrap();
    let mut tx = q.producer().unwrap();
    for seq in 0..4 {
        tx.send(&frame(seq)).unwrap();
    }
    let holding = Event::new().unwrap();
    let mut p = Process::new(hold_read_loan, (q.clone(), holding.clone())).with_daemon(true);
    p.start().unwrap();
    wait_event(&holding, &p, "the child's read loan");
    kill_and_reap(&p);
    let mut rx = q.consumer().expect("the dead consumer's role is reclaimed");
    for seq in 1..4 {
        let loan = rx.recv_loan_timeout(DEADLINE).unwrap_or_else(|e| panic!("frame {seq}: {e}"));
        assert!(loan.to_vec() == frame(seq), "frame {seq}");
        loan.release();
    }
    assert_eq!(rx.try_recv_loan().unwrap_err(), TryRecvError::Empty);
    // The ring keeps working: room freed by the releases is reused.
    for seq in 4..40 {
        tx.send(&frame(seq)).unwrap();
        assert!(rx.recv_timeout(DEADLINE).unwrap() == frame(seq), "frame {seq}");
    }
}

shmproc::entry! {
    /// Sends frame 0, then takes a write loan, fills half of it with
    /// garbage, says so and waits to be killed (never committing).
    fn hold_write_loan(args: (ByteQueue, Event)) -> Result<(), String> {
        let (q, holding) = args;
        let mut tx = q.producer().map_err(common::e)?;
        tx.send(&frame(0)).map_err(common::e)?;
        let mut loan = tx.send_loan(BIG as usize).map_err(common::e)?;
        loan.write_at(0, &[0xEE; 1000]);
        holding.set();
        std::thread::sleep(DEADLINE);
        let _ = loan.len(); // still held here
        Err("not killed".into())
    }
}

/// A producer killed with SIGKILL while it holds a write loan publishes
/// nothing of it: the consumer receives the frame sent before, then learns
/// the producer is gone; a new producer's frames follow, intact.
#[test]
fn a_write_loan_held_by_a_producer_killed_with_sigkill_publishes_nothing() {
    let q = ByteQueue::new(1 << 18, BIG).unwrap();
    let mut rx = q.consumer().unwrap();
    let holding = Event::new().unwrap();
    let mut p = Process::new(hold_write_loan, (q.clone(), holding.clone())).with_daemon(true);
    p.start().unwrap();
    wait_event(&holding, &p, "the child's write loan");
    kill_and_reap(&p);
    assert!(rx.recv_timeout(DEADLINE).unwrap() == frame(0), "frame 0");
    assert_eq!(rx.recv_timeout(DEADLINE), Err(RecvTimeoutError::Disconnected));
    let mut tx = q.producer().expect("the dead producer's role is reclaimed");
    for seq in 1..20 {
        tx.send(&frame(seq)).unwrap();
        let loan = rx.recv_loan_timeout(DEADLINE).unwrap();
        assert!(loan.to_vec() == frame(seq), "frame {seq}");
        loan.release();
    }
}

// ---- alignment, within one process (every offset in the ring) ----

/// Every payload of ALIGN_FROM bytes or more is 64-aligned, whatever the
/// frames before it (headers land on every 8-aligned offset of a small
/// ring, wraps included), and smaller payloads are 8-aligned.
#[test]
fn payloads_of_64_bytes_or_more_are_64_aligned_at_every_ring_offset() {
    let q = ByteQueue::new(1024, 200).unwrap();
    let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    for i in 0..2000usize {
        let len = [0, 1, 8, 9, 56, 63, 64, 65, 120, 200][i % 10] + (i / 10) % 3;
        let len = len.min(200);
        let f: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
        tx.send(&f).unwrap();
        let loan = rx.try_recv_loan().unwrap();
        let align = if len >= ALIGN_FROM { 64 } else { 8 };
        assert_eq!(loan.as_ptr() as usize % align, 0, "frame {i} of {len} bytes");
        assert!(loan.to_vec() == f, "frame {i}");
        loan.release();
    }
}
