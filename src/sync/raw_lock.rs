//! The robust lock word every lock-like object is built on.
//!
//! Algorithm: Drepper's "Futexes Are Tricky" mutex (a CAS fast path, a
//! waiters bit, FUTEX_WAKE on unlock only when the bit was set), extended
//! with the owner's identity in the word so a dead owner can be detected,
//! in the spirit of the kernel's robust-futex protocol (TID in the word,
//! an OWNER_DIED bit) but without a kernel robust list: survivors detect
//! the death themselves, off the fast path.
//!
//! The word is 64 bits: the low half is the futex word (tid | flags), the
//! high half the owner thread's start time (low 32 bits of clock ticks), so
//! a recycled tid is not mistaken for the dead owner.
//!
//! | low 32 bits              | high 32 bits | state                                      |
//! |--------------------------|--------------|--------------------------------------------|
//! | 0                        | 0            | unlocked                                   |
//! | tid                      | start        | locked, nobody sleeping                    |
//! | tid \| WAITERS           | start        | locked, sleepers may exist: unlock wakes 1 |
//! | tid \| OWNER_DIED [\|W]  | start        | taken over from a dead owner, inconsistent |
//! | NOT_RECOVERABLE          | 0            | unusable forever; every locker gets an error |
//!
//! Fast paths: lock = one CAS (0 -> me), unlock = one swap (-> 0), no
//! syscall, no liveness check. A locker that cannot get the lock spins
//! briefly, then sets WAITERS and sleeps on the futex with a 100 ms timeout;
//! each time that timeout (or the caller's deadline) expires it checks
//! whether the owner is still alive (`/proc/<tid>/stat`: gone, zombie, or a
//! different start time means dead), so a dead owner is noticed within
//! about 100 ms of the first sleeper arriving.

use crate::wait::Deadline;
use crate::wait::atomic::{AtomicU64, Ordering};
use crate::wait::futex::{wait64_low, wake64_low};
use crate::wait::owner::{OWNER_POLL, me, owner_is_dead};
use crate::wait::spin::{LOCK_SPIN_STEPS, backoff};

/// Somebody may be asleep waiting for the lock.
pub const WAITERS: u64 = 1 << 31;
/// The holder took the lock over from a dead owner and has not yet called
/// `make_consistent`.
pub const OWNER_DIED: u64 = 1 << 30;
/// The owner identity bits (start time and tid), without flags.
pub const OWNER_MASK: u64 = !(WAITERS | OWNER_DIED);
/// Terminal state after an inconsistent guard was dropped.
pub const NOT_RECOVERABLE: u64 = 0x3FFF_FFFF;

/// How an acquisition went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Normal acquisition.
    Clean,
    /// The previous owner died holding the lock; we now hold it, inconsistent.
    OwnerDied,
}

/// Why an acquisition failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    WouldBlock,
    TimedOut,
    NotRecoverable,
}

/// How long a locker may wait.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// `try_`: never sleep.
    No,
    /// Block until acquired.
    Forever,
    /// Block until the deadline.
    Until(Deadline),
}

impl Wait {
    /// At most `d`; a timeout too large to represent is `Forever`.
    pub fn timeout(d: std::time::Duration) -> Wait {
        Wait::until(Deadline::after(d))
    }

    /// Until `d` (`Forever` if it is never).
    pub(crate) fn until(d: Deadline) -> Wait {
        if d.is_never() { Wait::Forever } else { Wait::Until(d) }
    }

    /// When a sleep of this wait ends ([`Deadline::NEVER`] unless `Until`).
    pub(crate) fn deadline(self) -> Deadline {
        match self {
            Wait::Until(d) => d,
            _ => Deadline::NEVER,
        }
    }
}

/// A robust, process-shared lock word. `#[repr(C)]`, 8 bytes, lives in shm
/// (or on the heap under loom).
#[repr(C)]
pub struct RawLock {
    word: AtomicU64,
}

impl RawLock {
    pub fn new() -> Self {
        RawLock { word: AtomicU64::new(0) }
    }

    /// Acquires the lock.
    #[inline]
    pub fn lock(&self, wait: Wait) -> Result<Acquired, Failed> {
        let me = me();
        // Acquire: pairs with the Release swap in `unlock`, so the previous
        // holder's writes to the protected data are visible to us.
        match self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Ok(Acquired::Clean),
            Err(_) => self.lock_slow(me, wait),
        }
    }

    /// The uncontended fast path of [`Self::lock`] alone: one CAS (0 ->
    /// me); true if it took the lock (clean). Never waits or checks owners.
    #[inline]
    pub fn try_lock_fast(&self) -> bool {
        // Acquire: pairs with the Release swap in `unlock`, as in `lock`.
        self.word.compare_exchange(0, me(), Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    #[cold]
    fn lock_slow(&self, me: u64, wait: Wait) -> Result<Acquired, Failed> {
        let mut spins = if matches!(wait, Wait::No) { 0 } else { LOCK_SPIN_STEPS };
        // Once we have slept, other sleepers may exist: take the lock with
        // WAITERS set so our unlock wakes the next one.
        let mut contended = false;
        // Check liveness right away for try_lock (it never sleeps), else
        // only after a sleep timed out: keeps /proc reads off busy paths.
        let mut check_owner = matches!(wait, Wait::No);
        let mut final_check_done = false;
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                let new = if contended { me | WAITERS } else { me };
                // Acquire: pairs with the Release swap in `unlock`.
                if self.word.compare_exchange(0, new, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return Ok(Acquired::Clean);
                }
                continue;
            }
            if w == NOT_RECOVERABLE {
                return Err(Failed::NotRecoverable);
            }
            if spins > 0 && w & WAITERS == 0 {
                spins -= 1;
                backoff(LOCK_SPIN_STEPS - spins);
                continue;
            }
            if check_owner {
                check_owner = false;
                if (w & OWNER_MASK) != me && owner_is_dead(w & OWNER_MASK) {
                    // Take over, keeping WAITERS so our unlock wakes sleepers.
                    // Acquire: pairs with the dead owner's last Release (if
                    // any) so we see what it managed to publish.
                    let new = me | OWNER_DIED | (w & WAITERS);
                    if self.word.compare_exchange(w, new, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                        return Ok(Acquired::OwnerDied);
                    }
                    continue;
                }
            }
            let deadline = match wait {
                Wait::No => return Err(Failed::WouldBlock),
                Wait::Forever => Deadline::NEVER,
                Wait::Until(d) => {
                    if d.passed() {
                        // One last liveness check before giving up.
                        if final_check_done {
                            return Err(Failed::TimedOut);
                        }
                        final_check_done = true;
                        check_owner = true;
                        continue;
                    }
                    d
                }
            };
            if w & WAITERS == 0
                && self.word.compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            contended = true;
            let until = match OWNER_POLL {
                Some(poll) => deadline.capped(poll),
                None => deadline,
            };
            let before = self.word.load(Ordering::Relaxed);
            wait64_low(&self.word, (w | WAITERS) as u32, until);
            // Still the same owner after a full poll period: check it.
            if until.passed() && self.word.load(Ordering::Relaxed) == before {
                check_owner = true;
            }
        }
    }

    /// Releases a consistent lock held by the caller.
    #[inline]
    pub fn unlock(&self) {
        // Release: pairs with the Acquire CAS in `lock`/`lock_slow`.
        let old = self.word.swap(0, Ordering::Release);
        if old & WAITERS != 0 {
            self.wake_one();
        }
    }

    #[cold]
    fn wake_one(&self) {
        wake64_low(&self.word, 1);
    }

    /// Releases a lock taken over from a dead owner without repair: the lock
    /// becomes unusable and every sleeper is woken to learn it.
    #[cold]
    pub fn unlock_inconsistent(&self) {
        // Release: pairs with the Acquire loads of lockers.
        self.word.store(NOT_RECOVERABLE, Ordering::Release);
        wake64_low(&self.word, u32::MAX);
    }

    /// Clears OWNER_DIED: the holder declares the protected state repaired.
    pub fn make_consistent(&self) {
        self.word.fetch_and(!OWNER_DIED, Ordering::Relaxed);
    }

    /// Whether the calling thread holds the lock.
    pub fn is_owned_by_me(&self) -> bool {
        let w = self.word.load(Ordering::Relaxed);
        w != NOT_RECOVERABLE && w & OWNER_MASK == me()
    }

    /// Whether anybody holds the lock (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }
}

impl RawLock {
    /// Whether the lock is held in the state left by a dead owner (only
    /// meaningful to the holder, who alone may clear that bit).
    pub fn is_inconsistent(&self) -> bool {
        let w = self.word.load(Ordering::Relaxed);
        w != NOT_RECOVERABLE && w & OWNER_DIED != 0
    }
}
