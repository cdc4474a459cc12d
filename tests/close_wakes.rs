//! `close()` wakes a consumer that is going to sleep (SPSC queue, byte
//! queue, pipe), in its own blocking call and in `wait`. A close used to
//! store its flag and wake the futex of the ring's index without changing
//! that word: a consumer that re-checked just before the close and entered
//! its futex wait just after it slept on until its 100 ms liveness poll.
//! Now sleepers sleep on their own flag, which every waker (a publish,
//! `close`, the peer's detach) clears first. Every blocking call in these
//! tests is bounded (a watchdog closes the round's queue and fails).
//!
//! Detection without timing: a receiver slept through the close when one
//! of its futex waits *timed out* with a deadline after the close had
//! returned (`common::slept_through`, from the `test-hooks` counter of
//! timed-out waits). The kernel reports a timeout only if no wake dequeued
//! the waiter before it ran again, so a woken receiver that the loaded
//! machine ran late is not mistaken for one that slept through. (The old
//! check, "returned more than 95 ms after the close", failed now and then
//! on the loaded CI machine; under extra load, hundreds of such rounds,
//! 95 ms to 2 s late, had no futex wait that slept through the close,
//! while a build whose wakers skip clearing the flag failed 4 of the 10
//! tests of this file and tests/poll_wakes.rs in one run, with 1-7 such
//! rounds each, 100-124 ms late.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmproc::queue::{ByteQueue, SpscQueue};
use shmproc::{Process, Queue, Semaphore, wait};

/// Rounds per test: enough for the close to land, in some of them, between
/// the consumer's re-check and its futex wait.
const ROUNDS: u32 = 3000;
/// Rounds whose receiver returned later than this after the close are
/// listed (a diagnostic: scheduling lag, or a sleep through the close,
/// which is what fails).
const LATE: Duration = Duration::from_millis(95);

/// CLOCK_MONOTONIC in nanoseconds (the same clock in every process).
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn round_name(base: &str, i: u32) -> String {
    format!("{base}-{i}")
}

shmproc::entry! {
    /// For each round: told to go, opens the round's queue (an SPSC queue
    /// or a byte queue), spins `i % 300` µs, closes it and reports when.
    fn close_each_round(args: (String, bool, u32, Semaphore, Queue<u64>)) -> Result<(), String> {
        let (base, bytes, rounds, go, times) = args;
        for i in 0..rounds {
            if !go.acquire_timeout(common::DEADLINE) {
                return Err(format!("round {i}: never told to go"));
            }
            let name = round_name(&base, i);
            let close: Box<dyn Fn()> = if bytes {
                let q = ByteQueue::open(&name).map_err(common::e)?;
                Box::new(move || q.close())
            } else {
                let q = SpscQueue::<u32>::open(&name).map_err(common::e)?;
                Box::new(move || q.close())
            };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_micros(u64::from(i % 300)) {
                std::hint::spin_loop();
            }
            close();
            times.put(now_ns()).map_err(common::e)?;
        }
        Ok(())
    }
}

/// How the consumer blocks in each round.
#[derive(Clone, Copy)]
enum Block {
    /// Its own blocking receive, with no timeout.
    Recv,
    /// `shmproc::wait` on it, with no timeout.
    Wait,
    /// The producer, blocked on a full ring in its own send (a byte
    /// ring's `send_loan`, an SPSC ring's `push`), with no timeout.
    Send,
}

/// A receiver blocked without a timeout is woken by a close in another
/// process, every round; returns the rounds in which it woke late.
fn closes_from_another_process(test: &str, bytes: bool, how: Block) {
    let base = common::name(test);
    let go = Semaphore::new(0).unwrap();
    let times = Queue::<u64>::new(0).unwrap();
    let mut p = Process::new(close_each_round, (base.clone(), bytes, ROUNDS, go.clone(), times.clone()));
    p.start().unwrap();
    // Watchdog: a round blocked past DEADLINE is closed here, and fails.
    let round = Arc::new(AtomicU32::new(0));
    let stuck = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let dog = {
        let (round, stuck, done, base) = (round.clone(), stuck.clone(), done.clone(), base.clone());
        std::thread::spawn(move || {
            let (mut seen, mut since) = (u32::MAX, Instant::now());
            while !done.load(Ordering::Relaxed) {
                let r = round.load(Ordering::Relaxed);
                if r != seen {
                    (seen, since) = (r, Instant::now());
                } else if since.elapsed() > common::DEADLINE {
                    stuck.store(true, Ordering::Relaxed);
                    let name = round_name(&base, r);
                    if bytes {
                        ByteQueue::open(&name).map(|q| q.close()).ok();
                    } else {
                        SpscQueue::<u32>::open(&name).map(|q| q.close()).ok();
                    }
                    since = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut wakes = common::Wakes::default();
    for i in 0..ROUNDS {
        round.store(i, Ordering::Relaxed);
        let name = round_name(&base, i);
        let before;
        let back = if bytes {
            let q = ByteQueue::create(&name, 4096, 64).unwrap();
            let (_tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
            before = common::timeouts();
            go.release().unwrap();
            match how {
                Block::Recv => assert_eq!(rx.recv(), Err(shmproc::RecvError::Closed), "round {i}"),
                Block::Wait => assert_eq!(wait(&mut [&mut rx], None).unwrap().iter().collect::<Vec<_>>(), [0]),
                Block::Send => {
                    let mut tx = _tx;
                    while tx.try_send(&[1; 8]).is_ok() {}
                    assert_eq!(tx.send_loan(8).err(), Some(shmproc::SendError::Closed), "round {i}");
                }
            }
            now_ns()
        } else {
            let q = SpscQueue::<u32>::create(&name, 4).unwrap();
            let (_tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
            before = common::timeouts();
            go.release().unwrap();
            match how {
                Block::Recv => assert_eq!(rx.pop(), Err(shmproc::PopError::Closed), "round {i}"),
                Block::Wait => assert_eq!(wait(&mut [&mut rx], None).unwrap().iter().collect::<Vec<_>>(), [0]),
                Block::Send => {
                    let mut tx = _tx;
                    tx.push_slice(&[1, 2, 3, 4]);
                    assert_eq!(tx.push(5), Err(shmproc::PushError::Closed(5)), "round {i}");
                }
            }
            now_ns()
        };
        assert!(
            !stuck.load(Ordering::Relaxed),
            "round {i}: the receiver was still blocked {:?} after the round began",
            common::DEADLINE
        );
        let closed_at = times.get_timeout(common::DEADLINE).expect("the closer's time");
        wakes.record(i, before, back, closed_at, LATE);
    }
    done.store(true, Ordering::Relaxed);
    dog.join().unwrap();
    common::join(&p).unwrap();
    assert_eq!(p.exitcode(), Some(0));
    let (late, missed) = (wakes.late, wakes.missed);
    eprintln!("rounds woken late (round, lag after the close, slept through it): {late:?}");
    assert!(
        missed.is_empty(),
        "{} of {ROUNDS} receivers slept through the close to their poll: {missed:?}",
        missed.len()
    );
}

#[test]
fn a_pop_blocked_without_timeout_is_woken_by_a_close_in_another_process() {
    closes_from_another_process("close-pop", false, Block::Recv);
}

#[test]
fn a_byte_recv_blocked_without_timeout_is_woken_by_a_close_in_another_process() {
    closes_from_another_process("close-recv", true, Block::Recv);
}

#[test]
fn a_wait_on_a_consumer_is_woken_by_a_close_in_another_process() {
    closes_from_another_process("close-wait", false, Block::Wait);
}

#[test]
fn a_wait_on_a_byte_consumer_is_woken_by_a_close_in_another_process() {
    closes_from_another_process("close-wait-bytes", true, Block::Wait);
}

#[test]
fn a_push_blocked_on_a_full_ring_without_timeout_is_woken_by_a_close_in_another_process() {
    closes_from_another_process("close-push", false, Block::Send);
}

#[test]
fn a_send_loan_blocked_on_a_full_byte_ring_without_timeout_is_woken_by_a_close_in_another_process() {
    closes_from_another_process("close-send-loan", true, Block::Send);
}

/// The same race through a pipe: the sender's `close()` (its role's
/// detach) wakes a `wait` on the other end.
#[test]
fn a_pipe_senders_close_wakes_a_wait_on_the_other_end() {
    let mut wakes = common::Wakes::default();
    for i in 0..ROUNDS {
        let (mut a, mut b) = shmproc::pipe(true).unwrap();
        b.send_bytes(b"").unwrap();
        let _ = a.recv_bytes().unwrap();
        let delay = Duration::from_micros(u64::from(i % 300));
        let before = common::timeouts();
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < delay {
                std::hint::spin_loop();
            }
            b.close();
            now_ns()
        });
        let r = wait(&mut [&mut a], Some(common::DEADLINE)).unwrap();
        let back = now_ns();
        let at = t.join().unwrap();
        assert!(!r.is_empty(), "round {i}: the wait never saw the sender's close");
        wakes.record(i, before, back, at, LATE);
    }
    let (late, missed) = (wakes.late, wakes.missed);
    eprintln!("waits that saw the sender's close late (round, lag, slept through it): {late:?}");
    assert!(missed.is_empty(), "{} of {ROUNDS} waits slept through the sender's close: {missed:?}", missed.len());
}
