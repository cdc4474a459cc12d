//! Futex sleep and wake on words in shared memory, as the algorithms see
//! them: 32-bit words, and the low half of 64-bit words (a lock word keeps
//! its owner's start time in the high half).
//!
//! Under loom the futex is emulated with one global loom `Mutex` +
//! `Condvar`: `wait` checks the word under the mutex and sleeps on the
//! condvar, `wake` takes the mutex and notifies all. That keeps the futex
//! contract (the check-and-sleep is atomic with respect to wake), so loom
//! finds lost wake-ups as deadlocks. Timeouts are not modelled (loom tests
//! block without deadlines).

use super::Deadline;
use super::atomic::{AtomicU32, AtomicU64};
pub(crate) use crate::sys::futex::WaitOutcome;

#[cfg(not(loom))]
mod imp {
    use super::*;
    use crate::sys::futex;

    /// Sleeps while the word equals `expected`, until woken or `deadline`.
    pub(crate) fn wait32(word: &AtomicU32, expected: u32, deadline: Deadline) -> WaitOutcome {
        futex::wait(word, expected, deadline.instant())
    }

    /// Wakes up to `n` sleepers on `word`.
    pub(crate) fn wake32(word: &AtomicU32, n: u32) {
        futex::wake(word, n);
    }

    /// The futex half of a 64-bit word: its low 32 bits (little-endian,
    /// so the first four bytes).
    fn low_half(word: &AtomicU64) -> &AtomicU32 {
        // SAFETY: on little-endian targets the low half of an 8-aligned AtomicU64 is a 4-aligned 4-byte location
        // in it; only the kernel (futex) reads it as such, all Rust accesses go through the AtomicU64.
        unsafe { &*(word.as_ptr() as *const AtomicU32) }
    }

    /// Sleeps while the low half of `word` equals `expected_low`.
    pub(crate) fn wait64_low(word: &AtomicU64, expected_low: u32, deadline: Deadline) -> WaitOutcome {
        futex::wait(low_half(word), expected_low, deadline.instant())
    }

    /// Wakes up to `n` sleepers on the low half of `word`.
    pub(crate) fn wake64_low(word: &AtomicU64, n: u32) {
        futex::wake(low_half(word), n);
    }
}

#[cfg(loom)]
mod imp {
    use super::*;
    use crate::wait::atomic::Ordering;
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref FUTEX: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    fn wait_while(still: impl Fn() -> bool) -> WaitOutcome {
        let guard = FUTEX.0.lock().unwrap();
        if still() {
            drop(FUTEX.1.wait(guard).unwrap());
        }
        WaitOutcome::Woken
    }

    fn wake_all() {
        let _guard = FUTEX.0.lock().unwrap();
        FUTEX.1.notify_all();
    }

    pub(crate) fn wait32(word: &AtomicU32, expected: u32, _deadline: Deadline) -> WaitOutcome {
        wait_while(|| word.load(Ordering::SeqCst) == expected)
    }

    pub(crate) fn wake32(_word: &AtomicU32, _n: u32) {
        wake_all();
    }

    pub(crate) fn wait64_low(word: &AtomicU64, expected_low: u32, _deadline: Deadline) -> WaitOutcome {
        wait_while(|| word.load(Ordering::SeqCst) as u32 == expected_low)
    }

    pub(crate) fn wake64_low(_word: &AtomicU64, _n: u32) {
        wake_all();
    }
}

pub(crate) use imp::*;
