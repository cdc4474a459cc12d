//! Crash repair of the MPMC ring: how a call waits on another
//! participant's unfinished claim, and how a survivor finishes the slot of
//! a participant that died mid-operation.
//!
//! Source: the claim/publish protocol is Vyukov's bounded MPMC queue (see
//! [`vyukov`](super::vyukov)); the repair follows LMDB's reader table
//! idea: every thread announces its claims in a participant record
//! ([`records`](super::records)) before making them, so a claim that no
//! live record covers belongs to a dead process and may be finished by
//! anybody: a dead producer's slot is marked skipped, a dead consumer's
//! slot is released to the next lap.
//!
//! State machine of one call waiting on an unfinished slot (`Flight`):
//! back off (6 steps), then yield; after `REPAIR_AFTER` look for a live
//! owner and repair if there is none; a `try_` call gives up after
//! `TRY_STEPS`, a blocking one at its deadline. Claims more than a ring
//! below the index are phantoms of a corrupted index and never repaired.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::item::RingItem;

use super::mpmc::MpmcQueue;
use super::vyukov::{self, Env};
use crate::wait::Deadline;
use crate::wait::spin::backoff;


/// Wait on an unfinished claim this long before looking for its owner.
const REPAIR_AFTER: Duration = Duration::from_millis(1);
/// A `try_` call waits on an unfinished claim for this many steps (pure
/// backoff, then yields) before it gives up.
const TRY_STEPS: u32 = 16;

thread_local! {
    /// Where this thread counts a skip that `links::count_skip` refused
    /// (the ring's count was folded: an unbounded queue's ring, retired
    /// while we repaired a slot in it): the chain's late-skip word, set by
    /// the chain's `get` for the duration of its ring pop ([`LateSink`]);
    /// null otherwise (a bounded ring never folds).
    static LATE_SINK: Cell<*const AtomicU64> = const { Cell::new(std::ptr::null()) };
}

/// While it lives, skips refused by a folded ring are counted in its word
/// (see `LATE_SINK`).
pub(super) struct LateSink<'a> {
    prev: *const AtomicU64,
    _word: std::marker::PhantomData<&'a AtomicU64>,
}

impl<'a> LateSink<'a> {
    /// Counts this thread's refused skips in `word` until dropped.
    #[inline(always)]
    pub(super) fn new(word: &'a AtomicU64) -> Self {
        LateSink { prev: LATE_SINK.replace(word), _word: std::marker::PhantomData }
    }
}

impl Drop for LateSink<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        LATE_SINK.set(self.prev);
    }
}

/// Counts a skip refused by a folded ring in this thread's sink.
#[cold]
fn count_late_skip() {
    let sink = LATE_SINK.get();
    if !sink.is_null() {
        // SAFETY: a non-null sink was set by a live `LateSink`, whose borrow of the word outlives it and which
        // restores the previous (equally live, or null) value when dropped, on this thread.
        let word = unsafe { &*sink };
        // Release: pairs with the Acquire load in `Chain::unfinished`.
        word.fetch_add(1, Ordering::Release);
    }
}

/// How one call waits on another participant's unfinished claim.
pub(super) struct Flight<'q, T> {
    q: &'q MpmcQueue<T>,
    /// Blocking calls wait for the claim (until `deadline`); `try_` calls
    /// give up after `TRY_STEPS`.
    patient: bool,
    deadline: Deadline,
    /// The unfinished slot waited on and for how long; set only on the
    /// slow path (the fast path builds a `Flight` for every operation).
    stuck: Option<Stuck>,
}

struct Stuck {
    pos: u64,
    by_pop: bool,
    steps: u32,
    since: Option<Instant>,
}

impl<'q, T: RingItem> Flight<'q, T> {
    #[inline(always)]
    pub(super) fn new(q: &'q MpmcQueue<T>, patient: bool, deadline: Deadline) -> Self {
        Flight { q, patient, deadline, stuck: None }
    }

    #[cold]
    #[inline(never)]
    fn wait(&mut self, pos: u64, by_pop: bool) -> bool {
        let s = match &mut self.stuck {
            Some(s) if s.pos == pos && s.by_pop == by_pop => s,
            // Another slot: its own count and clock.
            other => other.insert(Stuck { pos, by_pop, steps: 0, since: None }),
        };
        s.steps += 1;
        if s.steps <= 6 {
            backoff(s.steps);
            return true;
        }
        let now = Instant::now();
        let since = *s.since.get_or_insert(now);
        let giving_up = !self.patient && s.steps > TRY_STEPS || self.deadline.passed();
        if (giving_up || now.duration_since(since) >= REPAIR_AFTER) && self.q.repair(pos, by_pop) {
            self.stuck = None;
            return true;
        }
        if giving_up {
            return false;
        }
        // The claimant may be preempted on this core: give it the core.
        // One stopped for long (SIGSTOP) should not cost us a core either.
        if now.duration_since(since) > Duration::from_millis(20) {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            std::thread::yield_now();
        }
        true
    }
}

/// The protocol's environment for one attempt: our record and the wait.
pub(super) struct Op<'a, 'q, T> {
    pub(super) rec: &'a super::records::Record,
    pub(super) flight: &'a mut Flight<'q, T>,
}

impl<T: RingItem> Env for Op<'_, '_, T> {
    #[inline(always)]
    fn announce(&mut self, start: u64, n: u64, pop: bool) {
        self.rec.announce(start, n, pop);
    }
    #[inline(always)]
    fn withdraw(&mut self) {
        self.rec.withdraw();
    }
    #[inline(always)]
    fn in_flight(&mut self, pos: u64, by_pop: bool) -> bool {
        self.flight.wait(pos, by_pop)
    }
}

impl<T: RingItem> MpmcQueue<T> {
    /// One attempt at a dead participant's slot: `pos` was claimed (by a
    /// pop if `by_pop`) and not finished. Repairs it if no live participant
    /// has announced a claim covering it; true if repaired.
    #[cold]
    fn repair(&self, pos: u64, by_pop: bool) -> bool {
        let c = self.ctl();
        // Acquire: pairs with the Release claim CAS of `pos` (and every
        // later claim, a release sequence): its announcement is visible.
        let index =
            if by_pop { c.head.0.load(Ordering::Acquire) } else { c.tail.0.load(Ordering::Acquire) } & vyukov::POS;
        // Claimed: below the index, and at most a ring below it (a producer
        // claims only up to a ring ahead of `head`, a consumer only behind
        // `tail`). Anything else is a phantom claim of a corrupted index:
        // never repaired, or one call would walk (and "repair") up to 2^62
        // positions one by one; the caller then gives up or waits as for an
        // empty or full queue.
        let claimed = index.wrapping_sub(pos).wrapping_sub(1) < self.slots;
        // Not claimed (corrupted indices), or a live participant covers it.
        if !claimed || c.records.live_claim(pos, by_pop) {
            return false;
        }
        let slots = self.slots();
        if by_pop {
            let ok = vyukov::repair_pop(&slots, pos, self.slots);
            if ok {
                self.popped(u32::MAX);
            }
            ok
        } else {
            let ok = vyukov::repair_push(&slots, pos);
            if ok {
                // Counted once: in the ring, or (an unbounded queue's ring
                // retired meanwhile) in the chain's late-skip word.
                if !super::links::count_skip(&c.join.0.skipped) {
                    count_late_skip();
                }
                self.pushed(u32::MAX);
            }
            ok
        }
    }

    /// Testing aid for crash tests, not part of the API: claims the next
    /// position as a push (or, with `pop`, a pop) would, and stops there,
    /// as if the calling thread died at that instant. The slot stays
    /// unfinished until this thread has exited and a survivor repairs it.
    /// False if there was nothing to claim. Only with the `test-hooks`
    /// feature, which the crate's own tests enable (a dev-dependency on
    /// itself); users' builds never see it.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn __claim_and_stop(&self, pop: bool) -> bool {
        use super::vyukov::{CLOSED, Slots};
        let c = self.ctl();
        let super::records::Mine::Own(rec) = c.records.mine() else { return false };
        let index = if pop { &c.head.0 } else { &c.tail.0 };
        let at = index.load(Ordering::Relaxed);
        // Acquire: as the slot loads in vyukov.rs's push and pop.
        if at & CLOSED != 0 || self.slots().seq(at).load(Ordering::Acquire) != at.wrapping_add(u64::from(pop)) {
            return false;
        }
        rec.announce(at, 1, pop);
        // Release: as the claim CASes in vyukov.rs (publishes the announcement).
        index.compare_exchange(at, at.wrapping_add(1), Ordering::Release, Ordering::Relaxed).is_ok()
    }
}
