//! Loom model of what the other loom files left out: the MPMC put's batch
//! wait (`MpmcQueue::push_wait`: a put blocked on a full ring waits, a
//! bounded number of steps, until a batch of slots is free, reading only
//! the indices) with a consumer that "died" between its claim and its
//! release. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --test cover8_loom
//! ```
//!
//! `MpmcQueue` itself lives in shared memory and is not built under loom:
//! the wait loop below restates `push_wait`'s (hold while `len > limit -
//! batch`, at most `HOLD` steps, then try), over the real index protocol
//! (`vyukov::Ring`'s `len`, `push`, `pop` and `repair_pop`) with
//! heap-backed slots. The process-level test of the same situation is in
//! `tests/cover8_crash.rs`.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use shmproc::loom_models::vyukov::{Env, Refused, Ring, Slots, repair_pop};

/// Slots of the model's ring (so the batch is 2 slots: `limit / 4`).
const N: u64 = 8;
/// The wait's bound on holding out for a batch (`MPMC_SPIN.limit` in the
/// queue; small here, the model only needs it finite).
const HOLD: u32 = 2;

struct HeapSlots {
    seq: [AtomicU64; N as usize],
    val: [UnsafeCell<u64>; N as usize],
}

impl Slots<u64> for HeapSlots {
    fn seq(&self, pos: u64) -> &AtomicU64 {
        &self.seq[(pos % N) as usize]
    }
    unsafe fn write(&self, pos: u64, v: u64) {
        // SAFETY: the caller owns the slot (protocol under test).
        self.val[(pos % N) as usize].with_mut(|p| unsafe { *p = v });
    }
    unsafe fn read(&self, pos: u64) -> u64 {
        // SAFETY: as in `write`.
        self.val[(pos % N) as usize].with(|p| unsafe { *p })
    }
}

// SAFETY: the values are only touched under the protocol being checked;
// loom reports any unsynchronised access.
unsafe impl Sync for HeapSlots {}

struct Mpmc {
    tail: AtomicU64,
    head: AtomicU64,
    slots: HeapSlots,
}

impl Mpmc {
    fn new() -> Arc<Self> {
        Arc::new(Mpmc {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            slots: HeapSlots {
                seq: std::array::from_fn(|i| AtomicU64::new(i as u64)),
                val: std::array::from_fn(|_| UnsafeCell::new(0)),
            },
        })
    }
    fn ring(&self) -> Ring<'_> {
        Ring { tail: &self.tail, head: &self.head, slots: N, limit: N }
    }
}

/// The environment: an unfinished claim is waited for by yielding; with
/// `dead_pop`, the pop claim of that position, whose thread has ended
/// (joined), is repaired as the record scan would decide in the queue.
struct LoomEnv<'a> {
    q: &'a Mpmc,
    dead_pop: Option<u64>,
    /// Give up instead of waiting (the setup's pushes).
    no_wait: bool,
}

impl Env for LoomEnv<'_> {
    fn announce(&mut self, _: u64, _: u64, _: bool) {}
    fn withdraw(&mut self) {}
    fn in_flight(&mut self, pos: u64, by_pop: bool) -> bool {
        if self.no_wait {
            return false;
        }
        if by_pop && self.dead_pop == Some(pos) {
            repair_pop(&self.q.slots, pos, N);
        }
        thread::yield_now();
        true
    }
}

/// A full ring of 1..=8; a consumer claims position 0 (item 1) and
/// "dies" there (its thread ends, joined, before the release); a producer
/// puts 9 with the batch wait while a live consumer pops. Every
/// interleaving: the put finishes (the hold is bounded, the dead slot is
/// repaired when the put needs it), the live consumer gets 2..=9 in
/// order, no slot is raced, and the ring ends empty with every slot free
/// for its next lap.
#[test]
fn mpmc_put_batch_wait_finishes_past_a_consumer_dead_between_claim_and_release() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let q = Mpmc::new();
        for v in 1..=N {
            let mut env = LoomEnv { q: &q, dead_pop: None, no_wait: true };
            q.ring().push(&q.slots, &mut env, v).unwrap();
        }
        {
            let q = q.clone();
            thread::spawn(move || {
                q.head.compare_exchange(0, 1, Ordering::Release, Ordering::Relaxed).unwrap();
            })
            .join()
            .unwrap();
        }
        let producer = {
            let q = q.clone();
            thread::spawn(move || {
                let ring = q.ring();
                let batch = (N / 4).min(64);
                let mut env = LoomEnv { q: &q, dead_pop: Some(0), no_wait: false };
                let mut held = 0;
                loop {
                    if held < HOLD && batch > 1 && ring.len() > N - batch {
                        held += 1;
                        thread::yield_now();
                        continue;
                    }
                    match ring.push(&q.slots, &mut env, 9) {
                        Ok(pos) => break pos,
                        Err((Refused::Now, _)) => thread::yield_now(),
                        Err((Refused::Closed, _)) => panic!("closed"),
                    }
                }
            })
        };
        let mut env = LoomEnv { q: &q, dead_pop: None, no_wait: false };
        let mut got = Vec::new();
        while got.len() < N as usize {
            match q.ring().pop(&q.slots, &mut env) {
                Ok((v, _)) => got.push(v),
                Err(_) => thread::yield_now(),
            }
        }
        assert_eq!(producer.join().unwrap(), N, "9 went to position 8 (the dead consumer's slot)");
        assert_eq!(got, (2..=N + 1).collect::<Vec<_>>());
        assert_eq!(q.ring().len(), 0);
        for pos in N + 1..2 * N + 1 {
            assert_eq!(q.slots.seq(pos).load(Ordering::Relaxed), pos, "slot of {pos} not free for its lap");
        }
    });
}
