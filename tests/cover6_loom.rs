//! Loom models of what `tests/loom.rs` left out: the reentrant lock
//! (`RawRLock`), the MPMC ring's `close` racing pushes and pops, the
//! SPSC loans (a read loan held while the producer refills the ring; a
//! write loan filled in place before its commit) and the SPSC batch forms
//! (`push_slice` / `pop_into`: partial batches, wrapping). Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --test cover6_loom
//! ```
//!
//! Not modelled, because their code is not built under loom (it lives in
//! `real_platform!` modules that read and write shared memory through the
//! crate's copy primitive, with `std` atomics): the JoinableQueue counters
//! (`queue/joinable.rs`), `ByteQueue` (`queue/bytes.rs`, its own frame
//! index code) and `Pipe` (built on `ByteQueue`). Their cross-process
//! tests and models are in `tests/cover5_crash.rs`, `tests/cover6_crash.rs`
//! and `tests/cover6_model.rs`.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::thread;
use shmproc::loom_models::vyukov::{CLOSED, Env, Refused, Ring, Slots};
use shmproc::loom_models::{RawRLock, Wait, ring};

// ---- RLock ----

/// A non-atomic read-modify-write: loses updates unless excluded.
fn racy_increment(counter: &AtomicU32) {
    let v = counter.load(Ordering::Relaxed);
    counter.store(v + 1, Ordering::Relaxed);
}

/// Two threads each take the RLock two levels deep, increment under each
/// level, and release both: mutual exclusion between the owners (no lost
/// increment), re-entry never blocks, the levels count exactly, and the
/// lock ends free.
#[test]
fn rlock_is_reentrant_and_mutually_exclusive() {
    loom::model(|| {
        let r = Arc::new(RawRLock::new());
        let counter = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (r, counter) = (r.clone(), counter.clone());
                thread::spawn(move || {
                    assert!(r.acquire(Wait::Forever).is_ok());
                    assert_eq!(r.level(), 1);
                    racy_increment(&counter);
                    assert!(r.acquire(Wait::No).is_ok(), "re-entry blocked");
                    assert_eq!(r.level(), 2);
                    racy_increment(&counter);
                    assert!(r.release());
                    assert_eq!(r.level(), 1);
                    assert!(r.release());
                    assert_eq!(r.level(), 0);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 4);
        assert!(r.acquire(Wait::No).is_ok(), "not free at the end");
        assert!(r.release());
    });
}

/// While one thread holds the RLock (two levels), another's release is
/// refused and changes nothing, its try-acquire fails, and its level is
/// 0; once the owner has released both levels, the other takes it.
#[test]
fn rlock_release_by_a_non_owner_is_refused() {
    loom::model(|| {
        let r = Arc::new(RawRLock::new());
        assert!(r.acquire(Wait::Forever).is_ok());
        assert!(r.acquire(Wait::Forever).is_ok());
        let r2 = r.clone();
        let other = thread::spawn(move || {
            assert!(!r2.release(), "a non-owner released a level");
            assert_eq!(r2.level(), 0);
            let got = r2.acquire(Wait::No).is_ok();
            if got {
                assert!(r2.release());
            }
            got
        });
        let got = other.join().unwrap();
        assert!(!got, "taken while held");
        assert_eq!(r.level(), 2);
        assert!(r.release());
        assert!(r.release());
        let r3 = r.clone();
        assert!(thread::spawn(move || r3.acquire(Wait::No).is_ok() && r3.release()).join().unwrap());
    });
}

// ---- MPMC close ----

/// Heap slots of a 2-slot MPMC ring: sequence words and loom `UnsafeCell`
/// values (loom reports any unsynchronised access).
struct Mpmc {
    tail: AtomicU64,
    head: AtomicU64,
    seq: [AtomicU64; 2],
    val: [UnsafeCell<u64>; 2],
}

// SAFETY: the values are only touched under the protocol being checked.
unsafe impl Sync for Mpmc {}

impl Slots<u64> for Mpmc {
    fn seq(&self, pos: u64) -> &AtomicU64 {
        &self.seq[(pos & 1) as usize]
    }
    unsafe fn write(&self, pos: u64, v: u64) {
        // SAFETY: the caller owns the slot (protocol under test).
        self.val[(pos & 1) as usize].with_mut(|p| unsafe { *p = v });
    }
    unsafe fn read(&self, pos: u64) -> u64 {
        // SAFETY: as in `write`.
        self.val[(pos & 1) as usize].with(|p| unsafe { *p })
    }
}

impl Mpmc {
    fn new() -> Arc<Self> {
        Arc::new(Mpmc {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            seq: [AtomicU64::new(0), AtomicU64::new(1)],
            val: [UnsafeCell::new(0), UnsafeCell::new(0)],
        })
    }
    fn ring(&self) -> Ring<'_> {
        Ring { tail: &self.tail, head: &self.head, slots: 2, limit: 2 }
    }
    /// What `MpmcQueue::close` does to the ring (then it bumps and wakes
    /// the sleepers' words, which the model has none of).
    fn close(&self) {
        self.tail.fetch_or(CLOSED, Ordering::SeqCst);
    }
}

/// No records, no deaths: an unfinished claim is waited for by yielding.
struct Yield;

impl Env for Yield {
    fn announce(&mut self, _: u64, _: u64, _: bool) {}
    fn withdraw(&mut self) {}
    fn in_flight(&mut self, _: u64, _: bool) -> bool {
        thread::yield_now();
        true
    }
}

/// A producer pushes 1 then 2 while another thread closes the ring and
/// the consumer pops until `Closed`: every push that returned Ok is popped
/// (in order) before the consumer is told `Closed`, every refused push was
/// refused as `Closed` (the ring has room) and nothing is delivered that
/// was refused; after the close, pushes are refused and the ring is empty.
#[test]
fn mpmc_close_racing_pushes_and_pops_loses_no_accepted_item() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let q = Mpmc::new();
        let producer = {
            let q = q.clone();
            thread::spawn(move || {
                let mut accepted = Vec::new();
                for v in [1u64, 2] {
                    match q.ring().push(&*q, &mut Yield, v) {
                        Ok(_) => accepted.push(v),
                        Err((r, back)) => {
                            assert_eq!((r, back), (Refused::Closed, v), "refused other than Closed");
                        }
                    }
                }
                accepted
            })
        };
        let closer = {
            let q = q.clone();
            thread::spawn(move || q.close())
        };
        let mut got = Vec::new();
        loop {
            match q.ring().pop(&*q, &mut Yield) {
                Ok((v, _)) => got.push(v),
                Err(Refused::Closed) => break,
                Err(Refused::Now) => thread::yield_now(),
            }
        }
        let accepted = producer.join().unwrap();
        closer.join().unwrap();
        assert_eq!(got, accepted, "Closed reported before every accepted item was popped");
        assert_eq!(q.ring().len(), 0);
        assert_eq!(q.ring().push(&*q, &mut Yield, 9).map_err(|(r, _)| r), Err(Refused::Closed));
        assert_eq!(q.ring().pop(&*q, &mut Yield).map(|(v, _)| v), Err(Refused::Closed));
    });
}

// ---- SPSC loans ----

/// A 1-slot SPSC ring (the index protocol of `ring.rs`, which `push`,
/// `pop` and the loans share).
struct Spsc {
    head: AtomicU64,
    tail: AtomicU64,
    slot: UnsafeCell<u32>,
}

// SAFETY: the slot is only touched under the ring protocol being checked.
unsafe impl Sync for Spsc {}

/// The producer fills the slot in place in two steps (a write loan: the
/// item is written, then more of it, then committed by the one index
/// store) and the consumer holds a read loan (reads the slot, reads it
/// again later, then releases it by the one index store) while the
/// producer already waits to write the next item into that same slot:
/// every interleaving gives the consumer each item whole and in order,
/// and no write to a loaned slot races a read of it.
#[test]
fn spsc_loans_are_not_overwritten_until_released_nor_seen_before_commit() {
    const ITEMS: u32 = 3;
    loom::model(|| {
        let r = Arc::new(Spsc { head: AtomicU64::new(0), tail: AtomicU64::new(0), slot: UnsafeCell::new(0) });
        let p = r.clone();
        let producer = thread::spawn(move || {
            let (mut tail, mut head_cache) = (0u64, 0u64);
            for v in 1..=ITEMS {
                // loan(): wait for the free slot.
                while ring::free(tail, &mut head_cache, &p.head, 1, 1) == 0 {
                    thread::yield_now();
                }
                // Filled in place, in two writes (field by field).
                // SAFETY: the slot is free and ours until commit (protocol under test).
                p.slot.with_mut(|s| unsafe { *s = v << 16 });
                thread::yield_now();
                // SAFETY: as above.
                p.slot.with_mut(|s| unsafe { *s |= v });
                // commit(): the one index store.
                tail += 1;
                ring::publish(&p.tail, tail);
            }
        });
        let (mut head, mut tail_cache) = (0u64, 0u64);
        for v in 1..=ITEMS {
            // peek(): wait for a published item.
            while ring::available(head, &mut tail_cache, &r.tail, 1, 1) == 0 {
                thread::yield_now();
            }
            // SAFETY: the slot is published and ours until release (protocol under test).
            let first = r.slot.with(|s| unsafe { *s });
            assert_eq!(first, (v << 16) | v, "a loaned item seen before its commit, or torn");
            thread::yield_now();
            // SAFETY: as above.
            let again = r.slot.with(|s| unsafe { *s });
            assert_eq!(again, first, "the slot changed under a read loan");
            // release(): the one index store.
            head += 1;
            ring::publish(&r.head, head);
        }
        producer.join().unwrap();
    });
}

// ---- SPSC batch forms (review21) ----

/// `Producer::push_slice` and `Consumer::pop_into` over the index protocol
/// (`ring::free` / `ring::available` asked for a whole batch, taking what
/// part of it there is, one index store per batch) on a ring of 2 slots
/// with batches of 3 (never whole: every batch is cut, and they wrap): each
/// item arrives once, in order, and no batch write races a batch read of
/// the same slot (the slots are loom `UnsafeCell`s).
#[test]
fn spsc_batch_forms_deliver_each_item_once_in_order_across_partial_batches() {
    const CAP: u64 = 2;
    const ITEMS: u32 = 4;
    const BATCH: u64 = 3;
    struct Ring2 {
        head: AtomicU64,
        tail: AtomicU64,
        slots: [UnsafeCell<u32>; CAP as usize],
    }
    // SAFETY: the slots are only touched under the ring protocol being
    // checked; loom reports any unsynchronised access.
    unsafe impl Sync for Ring2 {}
    loom::model(|| {
        let r = Arc::new(Ring2 {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
        });
        let p = r.clone();
        let producer = thread::spawn(move || {
            let (mut tail, mut head_cache, mut next) = (0u64, 0u64, 0u32);
            while next < ITEMS {
                // push_slice(&items[next..next + BATCH]): as many as fit now.
                let want = BATCH.min(u64::from(ITEMS - next));
                let n = ring::free(tail, &mut head_cache, &p.head, CAP, want).min(want);
                if n == 0 {
                    thread::yield_now();
                    continue;
                }
                for i in 0..n {
                    let v = next + i as u32;
                    // SAFETY: the n slots from tail are free (protocol under test).
                    p.slots[((tail + i) % CAP) as usize].with_mut(|s| unsafe { *s = v });
                }
                tail += n;
                next += n as u32;
                ring::publish(&p.tail, tail);
            }
        });
        let (mut head, mut tail_cache, mut expected) = (0u64, 0u64, 0u32);
        while expected < ITEMS {
            // pop_into(&mut [_; BATCH]): as many as are there now.
            let n = ring::available(head, &mut tail_cache, &r.tail, CAP, BATCH).min(BATCH);
            if n == 0 {
                thread::yield_now();
                continue;
            }
            for i in 0..n {
                // SAFETY: the n slots from head are published (protocol under test).
                let v = r.slots[((head + i) % CAP) as usize].with(|s| unsafe { *s });
                assert_eq!(v, expected, "lost, duplicated or reordered by a batch");
                expected += 1;
            }
            head += n;
            ring::publish(&r.head, head);
        }
        producer.join().unwrap();
    });
}
