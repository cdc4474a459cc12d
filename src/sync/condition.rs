//! `Condition`: a condition variable with its own robust lock, like
//! `multiprocessing.Condition()`.
//!
//! A sequence counter on a futex word, and two counts kept under the lock:
//! `waiters` (waits begun and not yet ended) and `pending` (notifications
//! granted and not yet taken). A waiter, holding the lock, counts itself
//! in `waiters` and reads the counter (its ticket), unlocks, then sleeps
//! while the counter is unchanged. `notify(n)` (called with the lock held)
//! grants `min(n, waiters - pending)` notifications, bumps the counter and
//! wakes that many sleepers. A waiter back from its sleep re-takes the
//! lock and takes a granted notification if the counter moved since its
//! ticket (it was waiting when that notify came); if another waiter took
//! the last one first, it sleeps again (until its deadline). So, as in
//! Python, `notify(n)` ends at most `n` waits, and a wait that took none
//! returns only at its timeout. Because the waiter read the counter under
//! the lock and the notifier changes it under the same lock, a notify
//! issued after the waiter released the lock is never lost.
//!
//! Notifiers never wait for waiters. A waiter killed after a notify's wake
//! reached it (before it ran) takes that wake with it, but not the granted
//! notification: sleepers re-check the counter at least every `POLL`
//! (100 ms), so a live waiter still returns for that notify. A waiter
//! killed inside `wait` stays counted in `waiters`: a notify may grant it
//! a notification nobody takes, which a waiter present at a later notify
//! may take in addition to that notify's own (a wait ended without a
//! notify of its own; each dead waiter can hold at most one such
//! notification at a time, so it can happen again after it was taken);
//! and every notify makes a wake system call.

use super::raw_lock::{RawLock, Wait};
use crate::wait::atomic::{AtomicU32, Ordering};
use crate::wait::futex::{wait32, wake32};
use crate::wait::spin::POLL;

#[repr(C)]
pub struct RawCondition {
    pub lock: RawLock,
    /// Bumped by every notify that granted something (the futex word).
    seq: AtomicU32,
    /// Waits begun and not yet ended (written under the lock).
    waiters: AtomicU32,
    /// Notifications granted and not yet taken (written under the lock).
    pending: AtomicU32,
    _pad: AtomicU32,
}

impl RawCondition {
    pub fn new() -> Self {
        RawCondition {
            lock: RawLock::new(),
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            _pad: AtomicU32::new(0),
        }
    }

    /// First half of `wait`, called with the lock held: counts the waiter
    /// and returns the ticket to sleep on. The caller then releases the
    /// lock and calls `sleep`.
    pub fn prepare(&self) -> u32 {
        // Relaxed (as every access to the counts): written only under the
        // lock, whose release/acquire orders them; a peer's garbage only
        // makes the counts wrong. Wrapping: a scribbled count never panics.
        self.waiters.fetch_add(1, Ordering::Relaxed);
        self.rearm()
    }

    /// The ticket to sleep on again (lock held) after a wake-up that found
    /// no notification left.
    pub fn rearm(&self) -> u32 {
        // Relaxed: the lock held orders it after every notify before.
        self.seq.load(Ordering::Relaxed)
    }

    /// Second half of `wait`, without the lock: sleeps until a notify came
    /// after `ticket` was read (true) or the deadline passed (false). The
    /// caller then re-takes the lock and calls `take_notify`.
    pub fn sleep(&self, ticket: u32, wait: Wait) -> bool {
        loop {
            if self.seq.load(Ordering::Relaxed) != ticket {
                return true;
            }
            if wait.deadline().passed() {
                return false;
            }
            // Capped at POLL: `notify(n)` wakes n sleepers, and one of
            // them may be killed after the wake dequeued it and before it
            // ran; the counter has moved, so re-checking it at least every
            // POLL lets a live waiter see that notify instead of sleeping
            // through it (test `cover6_crash::condition_notify_whose_...`).
            wait32(&self.seq, ticket, wait.deadline().capped(POLL));
        }
    }

    /// With the lock held again after `sleep`: if a notify came since
    /// `ticket` and one of its notifications is left, takes it and ends
    /// the wait (true). False: nothing for us (the wait goes on, or ends
    /// with [`leave`](Self::leave)).
    pub fn take_notify(&self, ticket: u32) -> bool {
        if self.seq.load(Ordering::Relaxed) == ticket {
            return false;
        }
        let p = self.pending.load(Ordering::Relaxed);
        if p == 0 {
            return false;
        }
        self.pending.store(p - 1, Ordering::Relaxed);
        self.leave();
        true
    }

    /// Ends a wait without a notification (lock held): a timeout.
    pub fn leave(&self) {
        let w = self.waiters.load(Ordering::Relaxed);
        self.waiters.store(w.saturating_sub(1), Ordering::Relaxed);
    }

    /// Grants up to `n` notifications to the waits not yet granted one and
    /// wakes that many sleepers (the caller holds the lock).
    pub fn notify(&self, n: u32) {
        let (w, p) = (self.waiters.load(Ordering::Relaxed), self.pending.load(Ordering::Relaxed));
        // Bounded by the waits not yet granted: p + grant <= w, no overflow.
        let grant = n.min(w.saturating_sub(p));
        if grant == 0 {
            return;
        }
        // The counter first: a notifier killed between the two leaves the
        // sleepers a moved counter, so they wake, meet the dead owner at the
        // lock and return `OwnerDied` (the other order left them asleep).
        // Relaxed: the sleepers re-check under the lock (`take_notify`).
        self.seq.fetch_add(1, Ordering::Relaxed);
        self.pending.store(p + grant, Ordering::Relaxed);
        wake32(&self.seq, grant);
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
    /// Python's `Condition(lock)`, several conditions sharing one lock
    /// (a buffer's `not_full` and `not_empty`), has no equivalent: use one
    /// `Condition` whose waiters each wait for their own predicate
    /// ([`wait_for`](Self::wait_for)) and notify with
    /// [`notify_all`](Self::notify_all).
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

        /// Acquires the condition's lock (see [`crate::Lock::lock`]). The
        /// lock is recursive, as the `RLock` of Python's `Condition()`: the
        /// thread that holds it gets a guard for one more level at once
        /// (`with cond:` inside `with cond:`); the lock is free once the
        /// last of its guards dropped, in any order; [`wait`](Self::wait)
        /// through any of them releases it while it sleeps and takes it
        /// back before returning.
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let g = c.lock().unwrap();
        /// assert!(g.is_consistent());
        /// let nested = c.lock().unwrap(); // same thread: no deadlock
        /// drop(nested);
        /// assert!(c.is_locked()); // still held by `g`
        /// drop(g);
        /// assert!(!c.is_locked());
        /// ```
        pub fn lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
            self.acquire(Wait::Forever)
        }

        /// Acquires the lock if it is free now (or held by this thread:
        /// a guard for one more level, see [`lock`](Self::lock)).
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// let held = c.try_lock().unwrap();
        /// std::thread::scope(|s| { s.spawn(|| assert!(c.try_lock().is_err())); });
        /// drop(held);
        /// ```
        pub fn try_lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
            self.acquire(Wait::No)
        }

        /// Acquires the lock, waiting at most `timeout` (a guard for one
        /// more level at once if this thread holds it, see [`lock`](Self::lock)).
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// assert!(c.lock_timeout(std::time::Duration::from_millis(1)).is_ok());
        /// ```
        pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
            self.acquire(Wait::timeout(timeout))
        }

        /// Whether anybody holds the condition's lock (a snapshot).
        ///
        /// ```
        /// let c = shmproc::Condition::new().unwrap();
        /// assert!(!c.is_locked());
        /// ```
        pub fn is_locked(&self) -> bool {
            self.m.ctl().lock.is_locked()
        }

        fn acquire(&self, wait: Wait) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
            let raw = &self.m.ctl().lock;
            let file = self.m.segment().file_id();
            if raw.is_owned_by_me() {
                return Ok(LockGuard::nested(raw, file));
            }
            guard_result(raw.lock(wait), |c| LockGuard::new(raw, c).in_file(file))
        }

        /// The guard must be of this condition's lock: taken through this
        /// handle, or through another handle of the same condition (another
        /// mapping of the same segment, so another address).
        fn check_guard(&self, guard: &LockGuard<'_>) {
            let same =
                std::ptr::eq(guard.raw(), &self.m.ctl().lock) || guard.file() == Some(self.m.segment().file_id());
            assert!(same, "Condition used with a guard of another lock");
        }

        /// Releases the lock, sleeps until notified, and re-acquires it.
        /// As in Python, `notify(n)` ends at most `n` waits (but see the
        /// module notes on waiters killed inside `wait`: a predicate loop,
        /// [`wait_for`](Self::wait_for), is the robust form). If
        /// re-acquiring finds the lock's owner died, the guard is handed
        /// back inconsistent with [`LockError::OwnerDied`].
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
        /// timed out without a notify for it (the lock is re-acquired
        /// either way), as Python's `wait(timeout)` returns `False`.
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
            let mut ticket = raw.prepare();
            loop {
                // Release the lock for the sleep (every level of it), keeping
                // the guard object; only if this thread holds it (a peer may
                // have overwritten the word: a swap would free its hold).
                let held = raw.lock.is_owned_by_me();
                match (held, guard.is_consistent()) {
                    (false, _) => {}
                    (true, true) => raw.lock.unlock(),
                    (true, false) => raw.lock.unlock_inconsistent(),
                }
                raw.sleep(ticket, wait);
                match raw.lock.lock(Wait::Forever) {
                    Ok(Acquired::Clean) => {}
                    Ok(Acquired::OwnerDied) => {
                        // The counts may be half-updated; end our wait
                        // in them all the same, then report the death.
                        if !raw.take_notify(ticket) {
                            raw.leave();
                        }
                        guard.set_consistent(false);
                        return Err(LockError::OwnerDied(()));
                    }
                    Err(_) => {
                        // Not recoverable: we do not hold the lock. Dropping an
                        // inconsistent guard re-stores NOT_RECOVERABLE: harmless.
                        guard.set_consistent(false);
                        return Err(LockError::NotRecoverable);
                    }
                }
                if raw.take_notify(ticket) {
                    return Ok(true);
                }
                if wait.deadline().passed() {
                    raw.leave();
                    return Ok(false);
                }
                // Another waiter took the last notification: wait on.
                ticket = raw.rearm();
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

        /// Wakes up to `n` waiters (those waiting now and not yet woken by
        /// an earlier notify). Takes the guard to prove the lock is held,
        /// as Python requires.
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
