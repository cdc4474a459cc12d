//! `Condition`: a condition variable with its own robust lock, like
//! `multiprocessing.Condition()`.
//!
//! A sequence counter on a futex word: a waiter, holding the lock, reads the
//! counter and bumps `waiters`, unlocks, then sleeps while the counter is
//! unchanged; `notify` (called with the lock held) bumps the counter and
//! wakes up to `n` sleepers only if `waiters` is non-zero. Because the
//! waiter read the counter under the lock and the notifier changes it under
//! the same lock, a notify issued after the waiter released the lock is
//! never lost. Notifiers never wait for waiters: a dead waiter only leaves
//! `waiters` too high (a useless wake syscall per notify). A waiter killed
//! after a notify's wake reached it (before it ran) takes that wake with
//! it: sleepers re-check the counter at least every `POLL` (100 ms), so a
//! live waiter still returns for that notify. As with every
//! condition variable, `wait` may return without a notify; `wait_for` loops
//! on the predicate.

use super::raw_lock::{RawLock, Wait};
use crate::wait::atomic::{AtomicU32, Ordering};
use crate::wait::futex::{wait32, wake32};
use crate::wait::spin::POLL;

#[repr(C)]
pub struct RawCondition {
    pub lock: RawLock,
    seq: AtomicU32,
    waiters: AtomicU32,
}

impl RawCondition {
    pub fn new() -> Self {
        RawCondition { lock: RawLock::new(), seq: AtomicU32::new(0), waiters: AtomicU32::new(0) }
    }

    /// First half of `wait`, called with the lock held: returns the ticket
    /// to sleep on. The caller then releases the lock and calls `sleep`.
    pub fn prepare(&self) -> u32 {
        // Relaxed is enough for both: the lock release that follows orders
        // them before any notifier's lock acquisition.
        self.waiters.fetch_add(1, Ordering::Relaxed);
        self.seq.load(Ordering::Relaxed)
    }

    /// Second half of `wait`, without the lock: sleeps while no notify came.
    /// Returns false if the deadline passed first.
    pub fn sleep(&self, ticket: u32, wait: Wait) -> bool {
        let notified = loop {
            if self.seq.load(Ordering::Relaxed) != ticket {
                break true;
            }
            if wait.deadline().passed() {
                break false;
            }
            // Capped at POLL: `notify(n)` wakes n sleepers, and one of
            // them may be killed after the wake dequeued it and before it
            // ran; the counter has moved, so re-checking it at least every
            // POLL lets a live waiter see that notify instead of sleeping
            // through it (test `cover6_crash::condition_notify_whose_...`).
            wait32(&self.seq, ticket, wait.deadline().capped(POLL));
        };
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        notified
    }

    /// Wakes up to `n` waiters (the caller holds the lock).
    pub fn notify(&self, n: u32) {
        self.seq.fetch_add(1, Ordering::Relaxed);
        if self.waiters.load(Ordering::Relaxed) > 0 {
            wake32(&self.seq, n);
        }
    }
}

#[cfg(not(loom))]
pub use shm_cond::*;

#[cfg(not(loom))]
mod shm_cond {
    use super::*;
    use crate::LockError;
    use crate::shm::object::constructors;
    use crate::shm::{Kind, Mapped, Object};
    use crate::sync::lock::{LockGuard, guard_result};
    use crate::sync::raw_lock::Acquired;
    use crate::wait::Deadline;
    use std::time::Duration;

    /// A cross-process condition variable bundled with its own robust lock,
    /// like `multiprocessing.Condition()`.
    ///
    /// ```
    /// use shmproc::{Condition, Value};
    /// let cond = Condition::new().unwrap();
    /// let ready = Value::new(0u32).unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let g = cond.lock().unwrap();
    ///         ready.set(1).unwrap();
    ///         cond.notify_all(&g);
    ///     });
    ///     let mut g = cond.lock().unwrap();
    ///     cond.wait_for(&mut g, || ready.get().unwrap() == 1).unwrap();
    /// });
    /// ```
    #[derive(Clone, Debug)]
    pub struct Condition {
        m: Mapped<RawCondition>,
    }

    impl Object for Condition {
        const KIND: Kind = Kind::Condition;
        type Init = ();
        type Ctl = RawCondition;
        fn new_ctl(_: &(), _: u64) -> RawCondition {
            RawCondition::new()
        }
        fn from_mapped(m: Mapped<RawCondition>) -> Self {
            Condition { m }
        }
    }

    impl Condition {
        constructors!(doc("Condition", "", ""));

        /// Acquires the condition's lock (see [`crate::Lock::lock`]).
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let g = c.lock().unwrap();
        /// assert!(g.is_consistent());
        /// ```
        pub fn lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
            let raw = &self.m.ctl().lock;
            guard_result(raw.lock(Wait::Forever), |c| LockGuard::new(raw, c))
        }

        /// Acquires the lock if it is free now.
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let held = c.try_lock().unwrap();
        /// std::thread::scope(|s| { s.spawn(|| assert!(c.try_lock().is_err())); });
        /// drop(held);
        /// ```
        pub fn try_lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
            let raw = &self.m.ctl().lock;
            guard_result(raw.lock(Wait::No), |c| LockGuard::new(raw, c))
        }

        /// Acquires the lock, waiting at most `timeout`.
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// assert!(c.lock_timeout(std::time::Duration::from_millis(1)).is_ok());
        /// ```
        pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
            let raw = &self.m.ctl().lock;
            guard_result(raw.lock(Wait::timeout(timeout)), |c| LockGuard::new(raw, c))
        }

        fn check_guard(&self, guard: &LockGuard<'_>) {
            assert!(std::ptr::eq(guard.raw(), &self.m.ctl().lock), "Condition used with a guard of another lock");
        }

        /// Releases the lock, sleeps until notified, and re-acquires it.
        /// May return spuriously; use [`wait_for`](Self::wait_for) to wait
        /// for a predicate. If re-acquiring finds the lock's owner died, the
        /// guard is handed back inconsistent with [`LockError::OwnerDied`].
        ///
        /// # Panics
        /// If `guard` belongs to another lock.
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let mut g = c.lock().unwrap();
        /// let notified = c.wait_timeout(&mut g, std::time::Duration::from_millis(1)).unwrap();
        /// assert!(!notified);
        /// ```
        pub fn wait(&self, guard: &mut LockGuard<'_>) -> Result<(), LockError<()>> {
            self.wait_until(guard, Wait::Forever).map(|_| ())
        }

        /// Like [`wait`](Self::wait), at most `timeout`; `Ok(false)` if it
        /// timed out (the lock is re-acquired either way).
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let mut g = c.lock().unwrap();
        /// assert_eq!(c.wait_timeout(&mut g, std::time::Duration::ZERO).unwrap(), false);
        /// ```
        pub fn wait_timeout(&self, guard: &mut LockGuard<'_>, timeout: Duration) -> Result<bool, LockError<()>> {
            self.wait_until(guard, Wait::timeout(timeout))
        }

        fn wait_until(&self, guard: &mut LockGuard<'_>, wait: Wait) -> Result<bool, LockError<()>> {
            self.check_guard(guard);
            let raw = self.m.ctl();
            let ticket = raw.prepare();
            // Release the lock for the sleep, keeping the guard object.
            let consistent = guard.is_consistent();
            if consistent {
                raw.lock.unlock();
            } else {
                raw.lock.unlock_inconsistent();
            }
            let notified = raw.sleep(ticket, wait);
            match raw.lock.lock(Wait::Forever) {
                Ok(Acquired::Clean) => Ok(notified),
                Ok(Acquired::OwnerDied) => {
                    guard.set_consistent(false);
                    Err(LockError::OwnerDied(()))
                }
                Err(_) => {
                    // Not recoverable: we do not hold the lock. Dropping an
                    // inconsistent guard re-stores NOT_RECOVERABLE: harmless.
                    guard.set_consistent(false);
                    Err(LockError::NotRecoverable)
                }
            }
        }

        /// Waits until `pred()` is true, re-checking after every wake-up
        /// (the lock is held while `pred` runs).
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let mut g = c.lock().unwrap();
        /// c.wait_for(&mut g, || true).unwrap(); // already true: no wait
        /// ```
        pub fn wait_for(&self, guard: &mut LockGuard<'_>, mut pred: impl FnMut() -> bool) -> Result<(), LockError<()>> {
            while !pred() {
                self.wait(guard)?;
            }
            Ok(())
        }

        /// [`wait_for`](Self::wait_for) with an overall timeout; returns the
        /// predicate's last value.
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let mut g = c.lock().unwrap();
        /// let ok = c.wait_for_timeout(&mut g, std::time::Duration::from_millis(2), || false).unwrap();
        /// assert!(!ok);
        /// ```
        pub fn wait_for_timeout(
            &self,
            guard: &mut LockGuard<'_>,
            timeout: Duration,
            mut pred: impl FnMut() -> bool,
        ) -> Result<bool, LockError<()>> {
            let deadline = Deadline::after(timeout);
            loop {
                if pred() {
                    return Ok(true);
                }
                if deadline.passed() {
                    return Ok(false);
                }
                self.wait_until(guard, Wait::until(deadline))?;
            }
        }

        /// Wakes up to `n` waiters. Takes the guard to prove the lock is
        /// held, as Python requires.
        ///
        /// # Panics
        /// If `guard` belongs to another lock.
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let g = c.lock().unwrap();
        /// c.notify(&g, 1); // nobody waits: no syscall
        /// ```
        pub fn notify(&self, guard: &LockGuard<'_>, n: u32) {
            self.check_guard(guard);
            self.m.ctl().notify(n);
        }

        /// Wakes every waiter.
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let g = c.lock().unwrap();
        /// c.notify_all(&g);
        /// ```
        pub fn notify_all(&self, guard: &LockGuard<'_>) {
            self.notify(guard, u32::MAX);
        }
    }
}
