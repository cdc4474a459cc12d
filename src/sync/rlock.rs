//! `RLock`: a reentrant robust lock, like `multiprocessing.RLock`.

use super::raw_lock::{Acquired, Failed, RawLock, Wait};
use crate::wait::atomic::{AtomicU32, Ordering};

/// Control block: the robust lock word plus the recursion count (written
/// only by the owning thread, while it holds the lock).
#[repr(C)]
pub struct RawRLock {
    lock: RawLock,
    count: AtomicU32,
    _pad: AtomicU32,
}

impl RawRLock {
    pub fn new() -> Self {
        RawRLock { lock: RawLock::new(), count: AtomicU32::new(0), _pad: AtomicU32::new(0) }
    }

    /// Acquires one level. Re-entry by the owner never blocks.
    pub fn acquire(&self, wait: Wait) -> Result<Acquired, Failed> {
        if self.lock.is_owned_by_me() {
            // Only the owner touches `count` while it holds the lock.
            let c = self.count.load(Ordering::Relaxed);
            if c == u32::MAX {
                return Err(Failed::WouldBlock);
            }
            self.count.store(c + 1, Ordering::Relaxed);
            return Ok(Acquired::Clean);
        }
        let r = self.lock.lock(wait)?;
        self.count.store(1, Ordering::Relaxed);
        Ok(r)
    }

    /// Releases one level; false if the caller is not the owner.
    pub fn release(&self) -> bool {
        if !self.lock.is_owned_by_me() {
            return false;
        }
        let c = self.count.load(Ordering::Relaxed);
        if c > 1 {
            self.count.store(c - 1, Ordering::Relaxed);
        } else {
            self.count.store(0, Ordering::Relaxed);
            if self.lock.is_inconsistent() {
                self.lock.unlock_inconsistent();
            } else {
                self.lock.unlock();
            }
        }
        true
    }

    /// The caller's recursion level (0 if it does not own the lock).
    pub fn level(&self) -> u32 {
        if self.lock.is_owned_by_me() { self.count.load(Ordering::Relaxed) } else { 0 }
    }

    pub(crate) fn make_consistent(&self) {
        self.lock.make_consistent();
    }

    pub(crate) fn is_inconsistent(&self) -> bool {
        self.lock.is_inconsistent()
    }
}

#[cfg(not(loom))]
pub use shm_rlock::*;

#[cfg(not(loom))]
mod shm_rlock {
    use super::*;
    use crate::shm::object::constructors;
    use crate::shm::{Kind, Mapped, Object};
    use crate::sync::lock::guard_result;
    use crate::{LockError, NotOwnerError};
    use std::marker::PhantomData;
    use std::time::Duration;

    /// A reentrant, cross-process, crash-robust lock, like
    /// `multiprocessing.RLock`: the owning thread may acquire it again
    /// without blocking; it is free once every level is released. A release
    /// by any other thread or process is an error.
    ///
    /// ```
    /// use shmproc::RLock;
    /// let r = RLock::new().unwrap();
    /// let a = r.lock().unwrap();
    /// let b = r.lock().unwrap(); // same thread: no deadlock
    /// assert_eq!(r.level(), 2);
    /// drop(b);
    /// drop(a);
    /// assert_eq!(r.level(), 0);
    /// // Releasing what we do not hold is refused:
    /// assert!(r.release().is_err());
    /// ```
    #[derive(Clone, Debug)]
    pub struct RLock {
        m: Mapped<RawRLock>,
    }

    impl Object for RLock {
        const KIND: Kind = Kind::RLock;
        type Init = ();
        type Ctl = RawRLock;
        fn new_ctl(_: &(), _: u64) -> RawRLock {
            RawRLock::new()
        }
        fn from_mapped(m: Mapped<RawRLock>) -> Self {
            RLock { m }
        }
    }

    /// One level of an [`RLock`] held by the calling thread; drop releases
    /// that level.
    pub struct RLockGuard<'a> {
        raw: &'a RawRLock,
        _not_send: PhantomData<*const ()>,
    }

    impl RLockGuard<'_> {
        /// Declares the protected state repaired after
        /// [`LockError::OwnerDied`].
        ///
        /// ```
        /// let r = shmproc::RLock::new().unwrap();
        /// let mut g = r.lock().unwrap();
        /// g.make_consistent();
        /// assert!(g.is_consistent());
        /// ```
        pub fn make_consistent(&mut self) {
            self.raw.make_consistent();
        }

        /// False while the lock is held in the state left by a dead owner.
        ///
        /// ```
        /// let r = shmproc::RLock::new().unwrap();
        /// assert!(r.lock().unwrap().is_consistent());
        /// ```
        pub fn is_consistent(&self) -> bool {
            !self.raw.is_inconsistent()
        }
    }

    impl Drop for RLockGuard<'_> {
        fn drop(&mut self) {
            self.raw.release();
        }
    }

    impl std::fmt::Debug for RLockGuard<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RLockGuard").finish_non_exhaustive()
        }
    }

    impl RLock {
        constructors!(doc("RLock", "", ""));

        /// Acquires one level, blocking while another thread holds it.
        ///
        /// ```
        /// let r = shmproc::RLock::new().unwrap();
        /// let _g = r.lock().unwrap();
        /// assert!(r.is_owned());
        /// ```
        pub fn lock(&self) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
            self.acquire(Wait::Forever)
        }

        /// Acquires one level if that needs no waiting.
        ///
        /// ```
        /// let r = shmproc::RLock::new().unwrap();
        /// let _a = r.try_lock().unwrap();
        /// let _b = r.try_lock().unwrap();
        /// ```
        pub fn try_lock(&self) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
            self.acquire(Wait::No)
        }

        /// Acquires one level, waiting at most `timeout`.
        ///
        /// ```
        /// let r = shmproc::RLock::new().unwrap();
        /// assert!(r.lock_timeout(std::time::Duration::from_millis(1)).is_ok());
        /// ```
        pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
            self.acquire(Wait::timeout(timeout))
        }

        fn acquire(&self, wait: Wait) -> Result<RLockGuard<'_>, LockError<RLockGuard<'_>>> {
            let raw = self.m.ctl();
            guard_result(raw.acquire(wait), |_| RLockGuard { raw, _not_send: PhantomData })
        }

        /// Releases one level held by the calling thread, for code that
        /// pairs acquire and release by hand (after `std::mem::forget` of a
        /// guard). Fails with [`NotOwnerError`] if the caller does not own it.
        ///
        /// ```
        /// let r = shmproc::RLock::new().unwrap();
        /// std::mem::forget(r.lock().unwrap());
        /// assert!(r.release().is_ok());
        /// assert!(r.release().is_err());
        /// ```
        pub fn release(&self) -> Result<(), NotOwnerError> {
            if self.m.ctl().release() { Ok(()) } else { Err(NotOwnerError) }
        }

        /// The calling thread's recursion level (0 if it does not own it).
        ///
        /// ```
        /// let r = shmproc::RLock::new().unwrap();
        /// assert_eq!(r.level(), 0);
        /// ```
        pub fn level(&self) -> u32 {
            self.m.ctl().level()
        }

        /// Whether the calling thread owns the lock.
        ///
        /// ```
        /// let r = shmproc::RLock::new().unwrap();
        /// assert!(!r.is_owned());
        /// ```
        pub fn is_owned(&self) -> bool {
            self.level() > 0
        }
    }
}
