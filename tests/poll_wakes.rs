//! `ByteConsumer::poll` (and `Connection::poll`, which is it) is woken by
//! a close or the producer's detach that lands after poll's own checks and
//! before it announces itself as a sleeper (from a hostile review: poll's
//! re-check after announcing was a constant `false`, so such a close
//! cleared a flag that was still 0, woke nobody, and poll slept until its
//! 100 ms liveness poll; 7-25 rounds late per test run before the fix).
//!
//! Detection: every poll is given a 10 s timeout (the watchdog: a poll that
//! never wakes fails the round). A poll slept through the close/detach
//! when one of its futex waits timed out (at its 100 ms liveness poll)
//! with a deadline after the waker had returned (`common::slept_through`;
//! see tests/close_wakes.rs): no timing threshold, so a woken poll that
//! the loaded machine ran late is not mistaken for one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmproc::queue::ByteQueue;
use shmproc::{Process, Queue, Semaphore};

/// Rounds per test; a healthy round takes well under a millisecond.
const ROUNDS: u32 = 1500;
/// Rounds per cross-process test (its window is narrower: a round's
/// semaphore hand-offs spread the waker's landing wider).
const XROUNDS: u32 = 4000;
/// The poll's own deadline: the watchdog of a round.
const WATCHDOG: Duration = Duration::from_secs(10);
/// Rounds whose poll returned later than this after the waker are listed
/// (a diagnostic only).
const LATE: Duration = Duration::from_millis(95);

/// What the other thread does to the ring while the receiver polls.
#[derive(Clone, Copy, Debug)]
enum Waker {
    /// `ByteQueue::close`.
    Close,
    /// Drops the producer handle (its detach).
    Detach,
}

/// One round: a fresh consumer polls with no data; the other thread waits
/// until it is about to poll, spins `delay`, then closes / detaches.
/// Returns how long after the waker the poll returned, and whether a futex
/// wait of the poll slept through the waker (`common::slept_through`).
fn one_round(i: u32, waker: Waker) -> (Duration, bool) {
    let q = ByteQueue::new(4096, 64).unwrap();
    let tx = q.producer().unwrap();
    let mut rx = q.consumer().unwrap();
    let armed = AtomicBool::new(false);
    let delay = Duration::from_nanos(u64::from(i % 100) * 1000);
    std::thread::scope(|s| {
        let closer = s.spawn(|| {
            while !armed.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
            let t0 = Instant::now();
            while t0.elapsed() < delay {
                std::hint::spin_loop();
            }
            match waker {
                Waker::Close => q.close(),
                Waker::Detach => drop(tx),
            }
            now_ns()
        });
        let before = common::timeouts();
        armed.store(true, Ordering::SeqCst);
        let t = Instant::now();
        let got = rx.poll(WATCHDOG);
        let back = now_ns();
        let at = closer.join().unwrap();
        assert!(!got, "round {i}: nothing was sent, yet poll reported a frame");
        assert!(
            t.elapsed() < WATCHDOG,
            "round {i} ({waker:?}): poll never woke (slept its whole {WATCHDOG:?} deadline)"
        );
        (Duration::from_nanos(back.saturating_sub(at)), common::slept_through(before, at))
    })
}

fn run(waker: Waker) {
    let (mut late, mut missed) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let (lag, lost) = one_round(i, waker);
        if lost {
            missed.push((i, lag));
        }
        if lag > LATE {
            late.push((i, lag, lost));
        }
    }
    eprintln!("rounds woken late (round, lag, slept through the {waker:?}): {late:?}");
    assert!(
        missed.is_empty(),
        "{} of {ROUNDS} rounds: ByteConsumer::poll slept through a {waker:?} to its 100 ms liveness poll \
         (first: {:?}); poll's sleep_on re-check ignores closed / gone",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
}

/// `ByteConsumer::poll` (Python's `Connection.poll`) without data is woken
/// by `ByteQueue::close` from another thread, promptly, every round.
#[test]
fn poll_is_woken_by_a_close_that_lands_before_it_sleeps() {
    run(Waker::Close);
}

/// `ByteConsumer::poll` is woken by the producer's detach (its handle
/// dropped), promptly, every round.
#[test]
fn poll_is_woken_by_a_detach_that_lands_before_it_sleeps() {
    run(Waker::Detach);
}

/// CLOCK_MONOTONIC in nanoseconds (the same clock in every process).
fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

shmproc::entry! {
    /// For each round: once told the round's byte queue exists, opens it;
    /// with `detach`, takes its producer role; says so on `ready`. Told to
    /// go (the parent is about to poll), spins `i % 60` µs, then closes
    /// the queue or drops the producer, and reports when it was done.
    fn poke_each_round(args: (String, bool, u32, Semaphore, Semaphore, Queue<u64>)) -> Result<(), String> {
        let (base, detach, rounds, ready, go, times) = args;
        for i in 0..rounds {
            if !go.acquire_timeout(common::DEADLINE) {
                return Err(format!("round {i}: the ring was never created"));
            }
            let q = ByteQueue::open(&format!("{base}-{i}")).map_err(common::e)?;
            let tx = if detach { Some(q.producer().map_err(common::e)?) } else { None };
            ready.release().map_err(common::e)?;
            if !go.acquire_timeout(common::DEADLINE) {
                return Err(format!("round {i}: never told to go"));
            }
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_micros(u64::from(i % 60)) {
                std::hint::spin_loop();
            }
            match tx {
                Some(tx) => drop(tx),
                None => q.close(),
            }
            times.put(now_ns()).map_err(common::e)?;
        }
        Ok(())
    }
}

/// The same race across processes: the parent polls its fresh consumer
/// (10 s deadline: the watchdog), a child closes the ring or drops its
/// producer.
fn poked_from_another_process(test: &str, detach: bool) {
    let base = common::name(test);
    let (ready, go) = (Semaphore::new(0).unwrap(), Semaphore::new(0).unwrap());
    let times = Queue::<u64>::new(0).unwrap();
    let mut p =
        Process::new(poke_each_round, (base.clone(), detach, XROUNDS, ready.clone(), go.clone(), times.clone()));
    let mut wakes = common::Wakes::default();
    let mut stuck = None;
    p.start().unwrap();
    for i in 0..XROUNDS {
        let q = ByteQueue::create(&format!("{base}-{i}"), 4096, 64).unwrap();
        let tx = if detach { None } else { Some(q.producer().unwrap()) };
        let mut rx = q.consumer().unwrap();
        go.release().unwrap();
        assert!(ready.acquire_timeout(common::DEADLINE), "round {i}: the child never opened the ring");
        let before = common::timeouts();
        go.release().unwrap();
        let t = Instant::now();
        let got = rx.poll(WATCHDOG);
        let (back, slept) = (now_ns(), t.elapsed());
        assert!(!got, "round {i}: nothing was sent, yet poll reported a frame");
        if slept >= WATCHDOG {
            stuck = Some(i);
            break;
        }
        let at = times.get_timeout(common::DEADLINE).expect("the child's time");
        wakes.record(i, before, back, at, LATE);
        drop((tx, rx));
    }
    if stuck.is_some() {
        p.kill().ok();
    }
    common::join(&p).unwrap();
    assert_eq!(stuck, None, "poll never woke (slept its whole {WATCHDOG:?} deadline)");
    assert_eq!(p.exitcode(), Some(0));
    let (late, missed) = (wakes.late, wakes.missed);
    eprintln!("rounds woken late (round, lag, slept through the waker): {late:?}");
    assert!(
        missed.is_empty(),
        "{} of {XROUNDS} rounds: ByteConsumer::poll in this process slept to its 100 ms poll through \
         another process's {} (first: {:?})",
        missed.len(),
        if detach { "producer detach" } else { "close" },
        &missed[..missed.len().min(5)]
    );
}

/// A `poll` in this process is woken promptly by a close in another.
#[test]
fn poll_is_woken_by_a_close_in_another_process() {
    poked_from_another_process("revsleep-close", false);
}

/// A `poll` in this process is woken promptly by the producer's detach
/// in another process.
#[test]
fn poll_is_woken_by_a_producer_detach_in_another_process() {
    poked_from_another_process("revsleep-detach", true);
}

/// The same race through the pipe API (Python's `Connection.poll`): after
/// one message from the peer (both roles taken), the peer end is closed (its sending role's
/// detach) or shut down (a close of both rings) by another thread while
/// `poll` goes to sleep.
#[test]
fn connection_poll_is_woken_by_the_peers_close_or_shutdown() {
    let (mut late, mut missed) = (Vec::new(), Vec::new());
    for i in 0..XROUNDS {
        let (mut a, mut b) = shmproc::pipe(true).unwrap();
        // Both roles taken (as in a conversation): the poller's first
        // liveness check then has an owner to look up in /proc.
        b.send_bytes(b"").unwrap();
        assert_eq!(a.recv_bytes().unwrap(), b"");
        let armed = AtomicBool::new(false);
        let delay = Duration::from_nanos(u64::from(i % 300) * 1000);
        let (got, slept, lag, lost) = std::thread::scope(|s| {
            let peer = s.spawn(|| {
                while !armed.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
                let t0 = Instant::now();
                while t0.elapsed() < delay {
                    std::hint::spin_loop();
                }
                if i % 2 == 0 {
                    b.close();
                } else {
                    b.shutdown();
                }
                now_ns()
            });
            let before = common::timeouts();
            armed.store(true, Ordering::SeqCst);
            let t = Instant::now();
            let got = a.poll(WATCHDOG).unwrap();
            let (back, slept) = (now_ns(), t.elapsed());
            let at = peer.join().unwrap();
            (got, slept, Duration::from_nanos(back.saturating_sub(at)), common::slept_through(before, at))
        });
        // Python's `poll` is true at the peer's EOF (recv fails at once).
        assert!(got, "round {i}: the peer closed, yet poll said a recv would wait");
        assert!(slept < WATCHDOG, "round {i}: Connection::poll never woke (slept its whole {WATCHDOG:?} deadline)");
        let how = if i % 2 == 0 { "close" } else { "shutdown" };
        if lost {
            missed.push((i, how, lag));
        }
        if lag > LATE {
            late.push((i, how, lag, lost));
        }
    }
    eprintln!("rounds woken late (round, waker, lag, slept through it): {late:?}");
    assert!(
        missed.is_empty(),
        "{} of {XROUNDS} rounds: Connection::poll slept to its 100 ms poll through the peer's close/shutdown \
         (first: {:?})",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
}
