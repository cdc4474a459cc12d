//! `Semaphore` and `BoundedSemaphore`, like Python's.
//!
//! A counter on a futex word plus a sleeper count. Acquire: CAS the counter
//! down if positive; otherwise announce ourselves in `waiters` and sleep
//! while the counter is 0. Release: add to the counter, then wake only if
//! `waiters` is non-zero. Both sides use SeqCst on the two words (the
//! classic store-buffer / Dekker pattern): either the releaser sees the
//! waiter's announcement, or the waiter's futex check sees the new count —
//! never neither, so no wake-up is lost and an uncontended release makes no
//! syscall. A waiter that dies leaves `waiters` too high: later releases
//! then make one useless wake syscall each, but nothing ever blocks on it.

use super::platform::{AtomicU32, Ordering, SPIN_LIMIT, spin_hint, wait32, wake32};
use super::raw_lock::Wait;

/// Control block of both semaphore kinds.
#[repr(C)]
pub(crate) struct RawSemaphore {
    value: AtomicU32,
    waiters: AtomicU32,
    /// Upper bound for release (u32::MAX: unbounded).
    max: AtomicU32,
    _pad: AtomicU32,
}

/// A release that would exceed the bound (or overflow the counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverRelease;

impl RawSemaphore {
    pub(crate) fn new(value: u32, max: u32) -> Self {
        RawSemaphore {
            value: AtomicU32::new(value),
            waiters: AtomicU32::new(0),
            max: AtomicU32::new(max),
            _pad: AtomicU32::new(0),
        }
    }

    fn try_take(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            // Acquire: pairs with the SeqCst (release) RMW in `release`,
            // ordering the releaser's prior writes before our critical work.
            match self
                .value
                .compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Takes one unit; false if `wait` ran out (or was `No`).
    pub(crate) fn acquire(&self, wait: Wait) -> bool {
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
            if wait.deadline().is_some_and(|d| d.passed()) {
                return false;
            }
            // SeqCst: the announcement must be ordered before the futex's
            // check of `value` (pairs with the SeqCst load of `waiters` in
            // `release`).
            self.waiters.fetch_add(1, Ordering::SeqCst);
            wait32(&self.value, 0, wait.deadline());
            self.waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Adds `n` units, waking up to `n` sleepers.
    pub(crate) fn release(&self, n: u32) -> Result<(), OverRelease> {
        let max = self.max.load(Ordering::Relaxed);
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            let new = v.checked_add(n).filter(|&x| x <= max).ok_or(OverRelease)?;
            // SeqCst: publishes our writes to the acquirer (pairs with its
            // Acquire CAS) and orders this store before the `waiters` load.
            match self
                .value
                .compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        // SeqCst: pairs with the waiter's SeqCst fetch_add (Dekker).
        if self.waiters.load(Ordering::SeqCst) > 0 {
            wake32(&self.value, n);
        }
        Ok(())
    }

    pub(crate) fn value(&self) -> u32 {
        self.value.load(Ordering::Relaxed)
    }

    pub(crate) fn max(&self) -> u32 {
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

    macro_rules! semaphore_methods {
        () => {
            /// Takes one unit, blocking while the value is 0.
            pub fn acquire(&self) {
                self.m.ctl().acquire(Wait::Forever);
            }

            /// Takes one unit if one is available now.
            pub fn try_acquire(&self) -> bool {
                self.m.ctl().acquire(Wait::No)
            }

            /// Takes one unit, waiting at most `timeout`; false if none came.
            pub fn acquire_timeout(&self, timeout: Duration) -> bool {
                self.m.ctl().acquire(Wait::timeout(timeout))
            }

            /// Returns one unit, waking a waiter if any.
            pub fn release(&self) -> Result<(), ReleaseError> {
                self.release_n(1)
            }

            /// Returns `n` units at once.
            pub fn release_n(&self, n: u32) -> Result<(), ReleaseError> {
                let raw = self.m.ctl();
                raw.release(n)
                    .map_err(|_| ReleaseError { bound: raw.max() })
            }

            /// The current value (a snapshot), like Python's `get_value()`.
            pub fn get_value(&self) -> u32 {
                self.m.ctl().value()
            }
        };
    }

    /// A cross-process counting semaphore, like `multiprocessing.Semaphore`.
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
        constructors!(value: u32);
        semaphore_methods!();
    }

    /// A semaphore whose value may never exceed its initial value, like
    /// `multiprocessing.BoundedSemaphore`: a release past it is an error.
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
            let (cap, max) = (m.segment().capacity(), m.ctl().max());
            if cap == u64::from(max) {
                Ok(())
            } else {
                Err(format!("bound {max} differs from header {cap}"))
            }
        }
        fn from_mapped(m: Mapped<RawSemaphore>) -> Self {
            BoundedSemaphore { m }
        }
    }

    impl BoundedSemaphore {
        constructors!(value: u32);
        semaphore_methods!();

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
