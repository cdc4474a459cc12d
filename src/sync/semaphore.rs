//! `Semaphore` and `BoundedSemaphore`, like Python's.
//!
//! One 64-bit word: the low half is the count (and the futex word), the
//! high half the number of sleepers. Acquire CASes the count down if
//! positive; otherwise it CASes the sleeper count up (only while the count
//! is still 0) and sleeps while the low half is 0. Release CASes the count
//! up and, because the same CAS read the sleeper count, wakes only if
//! somebody sleeps: an uncontended release is one CAS and no syscall, and
//! no wake-up can be lost between "check" and "sleep" (the futex compares
//! the count atomically with going to sleep).
//!
//! A sleeper that dies leaves the sleeper count too high: later releases
//! make one useless wake syscall each, but nothing ever blocks on it. A
//! sleeper killed after a release's wake reached it (and before it ran)
//! takes that wake with it but not the unit: the other sleepers re-check
//! the count at least every `POLL` (100 ms), so one of them gets the unit.
//!
//! A process that dies after taking a unit takes the unit with it, as in
//! Python. Units have no owner (release by a process other than the
//! acquirer is the signalling use of a semaphore), so no holder is
//! recorded and no survivor can tell a dead process's unit from one that
//! was handed on; recording holders would cost a table write per acquire
//! and still be wrong for that use.

use super::raw_lock::Wait;
use crate::wait::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::wait::futex::{wait64_low, wake64_low};
use crate::wait::spin::{POLL, SPIN_LIMIT, spin_hint};

const COUNT_MASK: u64 = 0xFFFF_FFFF;
const ONE_SLEEPER: u64 = 1 << 32;

/// Control block of both semaphore kinds.
#[repr(C)]
pub struct RawSemaphore {
    /// sleepers << 32 | count
    word: AtomicU64,
    /// Upper bound for release (u32::MAX: unbounded).
    max: AtomicU32,
    _pad: AtomicU32,
}

/// A release that would exceed the bound (or overflow the counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverRelease;

impl RawSemaphore {
    pub fn new(value: u32, max: u32) -> Self {
        RawSemaphore { word: AtomicU64::new(u64::from(value)), max: AtomicU32::new(max), _pad: AtomicU32::new(0) }
    }

    fn try_take(&self) -> bool {
        let mut w = self.word.load(Ordering::Relaxed);
        while w & COUNT_MASK > 0 {
            // Acquire: pairs with the Release CAS in `release`, ordering the
            // releaser's prior writes before what we do with the unit.
            match self.word.compare_exchange_weak(w, w - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
        false
    }

    /// Takes one unit; false if `wait` ran out (or was `No`).
    pub fn acquire(&self, wait: Wait) -> bool {
        if self.try_take() {
            return true;
        }
        if matches!(wait, Wait::No) {
            return false;
        }
        for _ in 0..SPIN_LIMIT {
            spin_hint();
            if self.try_take() {
                return true;
            }
        }
        loop {
            if self.try_take() {
                return true;
            }
            if wait.deadline().passed() {
                return false;
            }
            if let Some(token) = self.register() {
                // Capped at POLL: `release(n)` wakes n sleepers, and one of
                // them may be killed after the wake dequeued it and before
                // it ran (it never takes the unit nor passes the wake on).
                // The unit then stays while we sleep on beside it: we
                // re-check at least every POLL instead of sleeping forever
                // (test `cover6_crash::semaphore_release_whose_wake_...`).
                wait64_low(&self.word, 0, wait.deadline().capped(POLL));
                self.unregister(token);
            }
        }
    }

    /// Registers a sleeper, but only while the count is 0 (then the value
    /// to sleep on is 0): the token for [`unregister`](Self::unregister),
    /// or `None` if a unit is there (or the registration raced). Shared by
    /// `acquire` and the multi-object `wait` (`crate::wait::many`).
    pub(crate) fn register(&self) -> Option<u64> {
        let w = self.word.load(Ordering::Relaxed);
        if w & COUNT_MASK != 0 {
            return None;
        }
        // A saturated sleeper count stays saturated (registers nothing).
        let registered = w.checked_add(ONE_SLEEPER).unwrap_or(w);
        // Relaxed: the futex compares the count atomically with sleeping,
        // and `release`'s CAS reads the sleeper count in the word's order.
        self.word.compare_exchange(w, registered, Ordering::Relaxed, Ordering::Relaxed).ok()?;
        Some(registered - w)
    }

    /// Undoes [`register`](Self::register); returns the word after it.
    pub(crate) fn unregister(&self, token: u64) -> u64 {
        let d = ONE_SLEEPER.min(token);
        self.word.fetch_sub(d, Ordering::Relaxed).wrapping_sub(d)
    }

    /// Adds `n` units, waking up to `n` sleepers.
    pub fn release(&self, n: u32) -> Result<(), OverRelease> {
        let max = u64::from(self.max.load(Ordering::Relaxed));
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            let count = (w & COUNT_MASK) + u64::from(n);
            if count > max {
                return Err(OverRelease);
            }
            // Release: pairs with the Acquire CAS in `try_take`.
            match self.word.compare_exchange_weak(w, (w & !COUNT_MASK) | count, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if w >> 32 > 0 {
            wake64_low(&self.word, n);
        }
        Ok(())
    }

    pub fn value(&self) -> u32 {
        (self.word.load(Ordering::Relaxed) & COUNT_MASK) as u32
    }

    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }
}

#[cfg(not(loom))]
pub use shm_sem::*;

#[cfg(not(loom))]
mod shm_sem {
    use super::*;
    use crate::shm::object::constructors;
    use crate::shm::{Kind, Mapped, Object};
    use std::time::Duration;

    /// A release above a [`BoundedSemaphore`]'s initial value (Python's
    /// `ValueError: Semaphore released too many times`), or past `u32::MAX`
    /// for a [`Semaphore`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[error("semaphore released too many times (bound {bound})")]
    pub struct ReleaseError {
        /// The largest value the semaphore may hold.
        pub bound: u32,
    }

    /// The multi-object `wait` on a semaphore: ready while a unit is
    /// there; registered as a sleeper exactly as `acquire` is.
    fn ready(raw: &RawSemaphore) -> bool {
        raw.value() > 0
    }
    fn announce(raw: &RawSemaphore, words: &mut crate::wait::many::Words) -> Option<u64> {
        let token = raw.register()?;
        words.push_low(&raw.word, 0);
        Some(token)
    }
    /// `release(n)` wakes n sleepers: if a unit is there and other sleepers
    /// are counted, we may have taken the wake-up of an acquirer: pass it on.
    fn withdraw(raw: &RawSemaphore, token: u64) {
        let w = raw.unregister(token);
        if w & COUNT_MASK != 0 && w >> 32 != 0 {
            wake64_low(&raw.word, 1);
        }
    }

    macro_rules! waitable {
        ($t:ident) => {
            impl crate::wait::many::WaitObject for $t {
                fn ready(&mut self, _thorough: bool) -> bool {
                    ready(self.m.ctl())
                }
                fn announce(&mut self, words: &mut crate::wait::many::Words) -> Option<u64> {
                    announce(self.m.ctl(), words)
                }
                fn withdraw(&mut self, token: u64) {
                    withdraw(self.m.ctl(), token)
                }
            }

            /// Ready while a unit can be taken (nothing is taken).
            impl crate::wait::many::Waitable for $t {}
        };
    }
    waitable!(Semaphore);
    waitable!(BoundedSemaphore);

    macro_rules! semaphore_methods {
        ($t:literal) => {
            /// Takes one unit, blocking while the value is 0.
            ///
            /// ```
            #[doc = concat!("let sem = shmproc::", $t, "::new(1).unwrap();")]
            /// sem.acquire();
            /// assert_eq!(sem.get_value(), 0);
            /// ```
            pub fn acquire(&self) {
                self.m.ctl().acquire(Wait::Forever);
            }

            /// Takes one unit if one is available now.
            ///
            /// ```
            #[doc = concat!("let sem = shmproc::", $t, "::new(1).unwrap();")]
            /// assert!(sem.try_acquire());
            /// assert!(!sem.try_acquire());
            /// ```
            pub fn try_acquire(&self) -> bool {
                self.m.ctl().acquire(Wait::No)
            }

            /// Takes one unit, waiting at most `timeout`; false if none came.
            ///
            /// ```
            #[doc = concat!("let sem = shmproc::", $t, "::new(0).unwrap();")]
            /// assert!(!sem.acquire_timeout(std::time::Duration::from_millis(2)));
            /// ```
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                self.m.ctl().acquire(Wait::timeout(timeout))
            }

            /// Returns one unit, waking a waiter if any.
            ///
            /// ```
            #[doc = concat!("let sem = shmproc::", $t, "::new(1).unwrap();")]
            /// sem.acquire();
            /// sem.release().unwrap();
            /// assert_eq!(sem.get_value(), 1);
            /// ```
            pub fn release(&self) -> Result<(), ReleaseError> {
                self.release_n(1)
            }

            /// Returns `n` units at once, waking up to `n` waiters.
            ///
            /// ```
            #[doc = concat!("let sem = shmproc::", $t, "::new(3).unwrap();")]
            /// for _ in 0..3 { sem.acquire(); }
            /// sem.release_n(3).unwrap();
            /// assert_eq!(sem.get_value(), 3);
            /// ```
            pub fn release_n(&self, n: u32) -> Result<(), ReleaseError> {
                let raw = self.m.ctl();
                raw.release(n).map_err(|_| ReleaseError { bound: raw.max() })
            }

            /// The current value (a snapshot), like Python's `get_value()`.
            ///
            /// ```
            #[doc = concat!("assert_eq!(shmproc::", $t, "::new(2).unwrap().get_value(), 2);")]
            /// ```
            pub fn get_value(&self) -> u32 {
                self.m.ctl().value()
            }
        };
    }

    /// A cross-process counting semaphore, like `multiprocessing.Semaphore`.
    ///
    /// # Crashes
    ///
    /// A unit taken by a process that then dies (even by `kill -9`) is
    /// lost for good, as in Python: the value stays one lower. Units have
    /// no owner (any process may release a unit that another took), so no
    /// holder is recorded and nobody can tell which units a dead process
    /// held. If units must survive crashes, let whoever sees the death (a
    /// parent's [`Process::join`](crate::Process::join) reports the signal)
    /// release for the dead, or use a [`Lock`](crate::Lock), whose dead
    /// owner is detected.
    ///
    /// ```
    /// use shmproc::Semaphore;
    /// let sem = Semaphore::new(2).unwrap();
    /// sem.acquire();
    /// assert!(sem.try_acquire());
    /// assert!(!sem.try_acquire()); // value is 0
    /// sem.release().unwrap();
    /// assert_eq!(sem.get_value(), 1);
    /// ```
    #[derive(Clone, Debug)]
    pub struct Semaphore {
        m: Mapped<RawSemaphore>,
    }

    impl Object for Semaphore {
        const KIND: Kind = Kind::Semaphore;
        type Init = u32;
        type Ctl = RawSemaphore;
        fn new_ctl(init: &u32, _: u64) -> RawSemaphore {
            RawSemaphore::new(*init, u32::MAX)
        }
        fn from_mapped(m: Mapped<RawSemaphore>) -> Self {
            Semaphore { m }
        }
    }

    impl Semaphore {
        constructors!(doc("Semaphore", "1", ", 1"), value: u32);
        semaphore_methods!("Semaphore");
    }

    /// A semaphore whose value may never exceed its initial value, like
    /// `multiprocessing.BoundedSemaphore`: a release past it is an error.
    /// A unit taken by a process that dies is lost, as for a
    /// [`Semaphore`] (see its "Crashes" section).
    ///
    /// ```
    /// use shmproc::BoundedSemaphore;
    /// let sem = BoundedSemaphore::new(1).unwrap();
    /// assert!(sem.release().is_err()); // already at its bound
    /// sem.acquire();
    /// assert!(sem.release().is_ok());
    /// ```
    #[derive(Clone, Debug)]
    pub struct BoundedSemaphore {
        m: Mapped<RawSemaphore>,
    }

    impl Object for BoundedSemaphore {
        const KIND: Kind = Kind::BoundedSemaphore;
        type Init = u32;
        type Ctl = RawSemaphore;
        fn capacity(init: &u32) -> Result<u64, crate::OpenError> {
            Ok(u64::from(*init))
        }
        fn new_ctl(init: &u32, _: u64) -> RawSemaphore {
            RawSemaphore::new(*init, *init)
        }
        fn validate(m: &Mapped<RawSemaphore>) -> Result<(), String> {
            let (cap, max) = (m.capacity(), m.ctl().max());
            if cap == u64::from(max) { Ok(()) } else { Err(format!("bound {max} differs from header {cap}")) }
        }
        fn from_mapped(m: Mapped<RawSemaphore>) -> Self {
            BoundedSemaphore { m }
        }
    }

    impl BoundedSemaphore {
        constructors!(doc("BoundedSemaphore", "1", ", 1"), value: u32);
        semaphore_methods!("BoundedSemaphore");

        /// The bound (the initial value).
        ///
        /// ```
        /// assert_eq!(shmproc::BoundedSemaphore::new(3).unwrap().bound(), 3);
        /// ```
        pub fn bound(&self) -> u32 {
            self.m.ctl().max()
        }
    }
}
