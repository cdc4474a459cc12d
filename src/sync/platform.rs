//! What the synchronisation algorithms need from the platform, switchable
//! to loom (`RUSTFLAGS="--cfg loom"`) so the same algorithms are model-checked
//! in a heap-backed mode.
//!
//! Under loom the futex is emulated with one global loom `Mutex` + `Condvar`:
//! `wait` checks the word under the mutex and sleeps on the condvar, `wake`
//! takes the mutex and notifies all. That keeps the futex contract (the
//! check-and-sleep is atomic with respect to wake), so loom finds lost
//! wake-ups as deadlocks. Timeouts are not modelled (loom tests block
//! without deadlines) and owners never die under loom.

pub(crate) use crate::sys::futex::WaitOutcome;
pub(crate) use crate::wait::Deadline;
pub(crate) use std::sync::atomic::Ordering;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, fence};

/// Spin iterations before a blocking call goes to sleep.
#[cfg(not(loom))]
pub(crate) const SPIN_LIMIT: u32 = 200;
#[cfg(loom)]
pub(crate) const SPIN_LIMIT: u32 = 1;

/// Spin steps of a locker before it sleeps. Each step waits twice as long
/// as the previous one (capped at 64 pause instructions), then re-reads the
/// lock word: a waiter that polls the word less often steals its cache
/// line from the holder less often, which is what two-process throughput
/// depends on.
#[cfg(not(loom))]
pub(crate) const LOCK_SPIN_STEPS: u32 = 10;
#[cfg(loom)]
pub(crate) const LOCK_SPIN_STEPS: u32 = 1;

/// One backoff step of a lock spin: `2^step` pause instructions, at most 64.
#[inline]
pub(crate) fn backoff(step: u32) {
    #[cfg(not(loom))]
    for _ in 0..1u32 << step.min(6) {
        std::hint::spin_loop();
    }
    #[cfg(loom)]
    {
        let _ = step;
        loom::thread::yield_now();
    }
}

/// How often a sleeping locker re-checks whether the lock owner is alive.
#[cfg(not(loom))]
pub(crate) const OWNER_POLL: Option<std::time::Duration> = Some(std::time::Duration::from_millis(100));
#[cfg(loom)]
pub(crate) const OWNER_POLL: Option<std::time::Duration> = None;

/// One step of a spin-wait.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

// ---- real platform -------------------------------------------------------

#[cfg(not(loom))]
mod imp {
    use super::*;
    use crate::sys::{futex, thread};

    /// Sleeps while the word equals `expected`.
    pub(crate) fn wait32(word: &AtomicU32, expected: u32, deadline: Deadline) -> WaitOutcome {
        futex::wait(word, expected, deadline.instant())
    }

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

    pub(crate) fn wait64_low(word: &AtomicU64, expected_low: u32, deadline: Deadline) -> WaitOutcome {
        futex::wait(low_half(word), expected_low, deadline.instant())
    }

    pub(crate) fn wake64_low(word: &AtomicU64, n: u32) {
        futex::wake(low_half(word), n);
    }

    #[inline]
    pub(crate) fn me() -> u64 {
        thread::me()
    }

    pub(crate) fn owner_is_dead(packed: u64) -> bool {
        thread::owner_is_dead(packed)
    }
}

// ---- loom model ----------------------------------------------------------

#[cfg(loom)]
mod imp {
    use super::*;
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

    pub(crate) fn me() -> u64 {
        use std::sync::atomic::AtomicU64 as StdU64;
        static NEXT: StdU64 = StdU64::new(1);
        loom::thread_local! {
            static ME: u64 = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0x3FFF_FFFF;
        }
        ME.with(|m| *m)
    }

    pub(crate) fn owner_is_dead(_packed: u64) -> bool {
        false
    }
}

pub(crate) use imp::*;
