//! JoinableQueue accounting on the MPMC ring: `task_done` counts, the
//! unfinished count and `join`, as in Python's
//! `multiprocessing.JoinableQueue` (there a semaphore and a condition;
//! here three counters in the ring's control block and a futex word).
//!
//! unfinished = pushes claimed (the tail index) - dead producers' skipped
//! slots - `task_done` calls. (An unbounded queue sums the first two over
//! its rings, with a base folded across retirement: `links::Tally`.) `task_done` and joiners form a Dekker pair
//! (SeqCst count / SeqCst registration, each followed by a re-check), so a
//! joiner either sees the last `task_done` or is woken by it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use super::item::RingItem;

use super::error::TaskDoneError;
use super::mpmc::MpmcQueue;
use super::vyukov::CLOSED;
use crate::wait::Deadline;
use crate::wait::futex::wait32;
use crate::wait::spin::POLL;

/// The joinable counters, on their own line of the MPMC control block.
#[repr(C)]
pub(super) struct JoinWords {
    /// `task_done` calls so far.
    pub(super) done: AtomicU64,
    /// Slots of dead producers, skipped (never to be `task_done`); bit
    /// 63: an unbounded queue's ring folded into its successor
    /// (`links::FOLDED`, see `links::count_skip`).
    pub(super) skipped: AtomicU64,
    /// Bumped when the unfinished count reaches 0; joiners sleep on it.
    pub(super) done_seq: AtomicU32,
    pub(super) joiners_waiting: AtomicU32,
    /// An unbounded queue's ring: the items landed in the rings before it,
    /// plus 1 (0: not folded yet), see `links::Tally`. Unused by bounded
    /// queues.
    pub(super) base: AtomicU64,
}

impl JoinWords {
    pub(super) fn new() -> Self {
        JoinWords {
            done: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            done_seq: AtomicU32::new(0),
            joiners_waiting: AtomicU32::new(0),
            base: AtomicU64::new(0),
        }
    }
}

impl<T: RingItem> MpmcQueue<T> {
    /// Items put and not yet marked done: pushes claimed, less dead
    /// producers' skipped slots, less `task_done` calls.
    pub(crate) fn unfinished(&self) -> u64 {
        let c = self.ctl();
        // Acquire (all): pair with the Release/AcqRel writers of each word.
        let done = c.join.0.done.load(Ordering::Acquire);
        let skipped = c.join.0.skipped.load(Ordering::Acquire) & !super::links::FOLDED;
        let pushed = c.tail.0.load(Ordering::Acquire) & !CLOSED;
        pushed.saturating_sub(skipped).saturating_sub(done)
    }

    /// The ring's counters for an unbounded queue's count (`links::Tally`).
    pub(super) fn tally(&self) -> super::links::Tally<'_> {
        let c = self.ctl();
        super::links::Tally { claims: &c.tail.0, skipped: &c.join.0.skipped, base: &c.join.0.base }
    }

    /// Marks one previously popped item as processed (JoinableQueue).
    pub(crate) fn task_done(&self) -> Result<(), TaskDoneError> {
        let j = &self.ctl().join.0;
        loop {
            let done = j.done.load(Ordering::Relaxed);
            if self.unfinished() == 0 {
                return Err(TaskDoneError);
            }
            // SeqCst: pairs with the joiners' SeqCst registration + fence
            // (a Dekker pair: either they see our count or we see them).
            if j.done.compare_exchange(done, done.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                break;
            }
        }
        fence(Ordering::SeqCst);
        if self.unfinished() == 0 && j.joiners_waiting.load(Ordering::Relaxed) != 0 {
            self.wake(&j.done_seq, u32::MAX);
        }
        Ok(())
    }

    /// Waits until every item put has been marked done; false on timeout.
    pub(crate) fn join_until(&self, deadline: Deadline) -> bool {
        let j = &self.ctl().join.0;
        loop {
            if self.unfinished() == 0 {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            // Acquire: pairs with the Release bump in `wake`.
            let ticket = j.done_seq.load(Ordering::Acquire);
            // SeqCst: pairs with task_done's SeqCst CAS and fence.
            j.joiners_waiting.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.unfinished() != 0 {
                wait32(&j.done_seq, ticket, deadline.capped(POLL));
            }
            j.joiners_waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
