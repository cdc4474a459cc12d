//! Loom model of what the other loom files left out: the wake protocol of
//! the SPSC-style rings (`queue/wake.rs`: `sleep_on`, `publish_and_wake`,
//! `wake_sleeper`, used by `SpscQueue`, `ByteQueue` and so `Pipe`) with a
//! `close` (`SpscCtl::close`) racing both a consumer asleep on an empty
//! ring and a producer asleep on a full one. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --test cover9_loom
//! ```
//!
//! `wake.rs` lives in shared memory code that is not built under loom: the
//! model restates its steps over loom atomics, in the mode without
//! asymmetric barriers (`handshake::use_fences_unless_membarrier`: both
//! sides issue a SeqCst fence, which loom can check; `membarrier`, the
//! default mode, is not something loom can model). The futex is emulated
//! as the crate's loom build does (`src/wait/futex.rs`): one condition
//! variable, a wait that sleeps only while the word still holds the
//! expected value, a wake that wakes all; sleeps have no timeout, so a
//! lost wakeup is a deadlock loom reports (the real sleeps are capped by a
//! 100 ms poll, which would hide it).
//!
//! Loom treats `SeqCst` loads and stores as `AcqRel` (its README,
//! "Unsupported features"; `fence(SeqCst)` is supported). The code's
//! `SeqCst` flag and `closed` stores take part in the single total order
//! that its Dekker pairs rely on, so the model follows each of them with a
//! `fence(SeqCst)` ([`sc_store`]): without it loom reports a false lost
//! wakeup (a close whose `closed` store the sleeper's fenced re-check does
//! not see, which the C++ memory model rules out).

#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use shmproc::loom_models::ring;

/// A `SeqCst` store as loom can check it (see the module docs).
fn sc_store(a: &AtomicU32, v: u32) {
    a.store(v, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// The ring: indices, the two sleepers' flags, the closed flag, one slot,
/// and the emulated futex.
struct Ctl {
    head: AtomicU64,
    tail: AtomicU64,
    consumer_waiting: AtomicU32,
    producer_waiting: AtomicU32,
    closed: AtomicU32,
    slot: UnsafeCell<u32>,
    futex: (Mutex<()>, Condvar),
}

// SAFETY: the slot is only touched under the ring protocol being checked;
// loom reports any unsynchronised access.
unsafe impl Sync for Ctl {}

impl Ctl {
    fn new() -> Arc<Self> {
        Arc::new(Ctl {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            consumer_waiting: AtomicU32::new(0),
            producer_waiting: AtomicU32::new(0),
            closed: AtomicU32::new(0),
            slot: UnsafeCell::new(0),
            futex: (Mutex::new(()), Condvar::new()),
        })
    }

    /// `futex::wait32` (no deadline).
    fn wait32(&self, word: &AtomicU32, expected: u32) {
        let guard = self.futex.0.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(self.futex.1.wait(guard).unwrap());
        }
    }

    /// `futex::wake32`.
    fn wake32(&self) {
        let _guard = self.futex.0.lock().unwrap();
        self.futex.1.notify_all();
    }

    /// `wake::wake_sleeper`.
    fn wake_sleeper(&self, flag: &AtomicU32) {
        sc_store(flag, 0);
        self.wake32();
    }

    /// `wake::publish_and_wake` (fenced mode).
    fn publish_and_wake(&self, word: &AtomicU64, value: u64, peer_waiting: &AtomicU32) {
        ring::publish(word, value);
        fence(Ordering::SeqCst); // handshake::fence_before_waiter_check
        if peer_waiting.load(Ordering::Relaxed) != 0 {
            self.wake_sleeper(peer_waiting);
        }
    }

    /// `wake::sleep_on` (fenced mode, no deadline).
    fn sleep_on(&self, word: &AtomicU64, seen: u64, flag: &AtomicU32, recheck: impl Fn() -> bool) {
        sc_store(flag, 1);
        fence(Ordering::SeqCst); // handshake::after_announcing
        if word.load(Ordering::Acquire) == seen && !recheck() {
            self.wait32(flag, 1);
        }
        flag.store(0, Ordering::Relaxed);
    }

    /// `SpscCtl::close`.
    fn close(&self) {
        sc_store(&self.closed, 1);
        self.wake_sleeper(&self.consumer_waiting);
        self.wake_sleeper(&self.producer_waiting);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed) != 0
    }
}

/// `Producer::push` on a 1-slot ring: sleeps while it is full; `false`
/// once closed.
fn push(c: &Ctl, tail: &mut u64, head_cache: &mut u64, v: u32) -> bool {
    loop {
        if c.is_closed() {
            return false;
        }
        if ring::free(*tail, head_cache, &c.head, 1, 1) > 0 {
            // SAFETY: the slot is free (protocol under test).
            c.slot.with_mut(|s| unsafe { *s = v });
            *tail += 1;
            c.publish_and_wake(&c.tail, *tail, &c.consumer_waiting);
            return true;
        }
        c.sleep_on(&c.head, *head_cache, &c.producer_waiting, || c.is_closed());
    }
}

/// `Consumer::pop`: sleeps while the ring is empty; `None` once closed and
/// drained.
fn pop(c: &Ctl, head: &mut u64, tail_cache: &mut u64) -> Option<u32> {
    loop {
        if ring::available(*head, tail_cache, &c.tail, 1, 1) > 0 {
            // SAFETY: the slot is published (protocol under test).
            let v = c.slot.with(|s| unsafe { *s });
            *head += 1;
            c.publish_and_wake(&c.head, *head, &c.producer_waiting);
            return Some(v);
        }
        if c.is_closed() {
            // The producer may have published just before the close.
            if ring::available(*head, tail_cache, &c.tail, 1, 1) > 0 {
                continue;
            }
            return None;
        }
        c.sleep_on(&c.tail, *tail_cache, &c.consumer_waiting, || c.is_closed());
    }
}

/// A consumer and a producer that each go to sleep (on an empty ring, on
/// a full one) are woken by every publication: every interleaving
/// delivers both items in order and ends (a lost wakeup would leave a
/// sleeper with nobody to wake it: loom reports the deadlock).
#[test]
fn spsc_sleepers_are_woken_by_every_publication() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let c = Ctl::new();
        let p = c.clone();
        let producer = thread::spawn(move || {
            let (mut tail, mut head_cache) = (0, 0);
            for v in 1..=2 {
                assert!(push(&p, &mut tail, &mut head_cache, v));
            }
        });
        let (mut head, mut tail_cache) = (0, 0);
        for v in 1..=2 {
            assert_eq!(pop(&c, &mut head, &mut tail_cache), Some(v));
        }
        producer.join().unwrap();
    });
}

/// `close` from a third thread races a producer asleep on a full ring
/// (or about to sleep) and a consumer that drains then sleeps on the
/// empty ring: both wake and end in every interleaving; the consumer got
/// a prefix of the items in order, and every push that returned true was
/// got unless it landed after the consumer saw the ring closed and
/// drained (the documented race of an in-flight push with `close`).
#[test]
fn close_wakes_a_sleeping_producer_and_a_sleeping_consumer() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let c = Ctl::new();
        let (p, k) = (c.clone(), c.clone());
        let producer = thread::spawn(move || {
            let (mut tail, mut head_cache, mut sent) = (0, 0, 0u32);
            for v in 1..=2 {
                if !push(&p, &mut tail, &mut head_cache, v) {
                    break;
                }
                sent = v;
            }
            sent
        });
        let closer = thread::spawn(move || k.close());
        let (mut head, mut tail_cache, mut got) = (0, 0, 0u32);
        while let Some(v) = pop(&c, &mut head, &mut tail_cache) {
            assert_eq!(v, got + 1, "out of order");
            got = v;
        }
        let sent = producer.join().unwrap();
        closer.join().unwrap();
        assert!(got <= sent, "got {got} of {sent} sent");
        // An in-flight push may land after the consumer saw Closed: it is
        // still in the ring.
        let left = c.tail.load(Ordering::SeqCst) - head;
        assert_eq!(u64::from(got) + left, u64::from(sent), "an accepted item is gone");
    });
}
