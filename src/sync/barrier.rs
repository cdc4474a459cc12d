//! `Barrier`, like `multiprocessing.Barrier` (Python's `threading.Barrier`
//! semantics: arrival index, `abort`, `reset`, broken state, a timed-out
//! wait breaks the barrier).
//!
//! State (count, broken) is changed under an internal robust lock; waiters
//! sleep on `generation`, a futex word holding `generation << 1 | broken_bit`. The
//! last arrival (or abort / reset / a timeout) bumps the generation, with the
//! low bit saying how the old generation ended (0: all arrived, 1: broken),
//! and wakes everyone. A waiter only compares `generation` with the value it saw
//! on arrival, so it needs no lock to learn its fate; it re-checks at least
//! every `POLL`, so a waker killed between its store and its wake loses
//! nobody.

use super::raw_lock::{RawLock, Wait};
use crate::wait::atomic::{AtomicU32, Ordering};
use crate::wait::futex::{wait32, wake32};
use crate::wait::spin::{POLL, SPIN_LIMIT, spin_hint};

#[repr(C)]
pub struct RawBarrier {
    lock: RawLock,
    generation: AtomicU32,
    count: AtomicU32,
    parties: AtomicU32,
    broken: AtomicU32,
}

/// Why a barrier wait failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarrierFail {
    Broken,
    TimedOut,
}

impl RawBarrier {
    pub fn new(parties: u32) -> Self {
        RawBarrier {
            lock: RawLock::new(),
            generation: AtomicU32::new(0),
            count: AtomicU32::new(0),
            parties: AtomicU32::new(parties),
            broken: AtomicU32::new(0),
        }
    }

    /// Runs `f` under the internal lock. If a process died holding it, the
    /// barrier state may be half-updated: the barrier is broken instead.
    fn locked<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.lock.lock(Wait::Forever) {
            Ok(super::raw_lock::Acquired::OwnerDied) => {
                self.lock.make_consistent();
                self.break_locked();
            }
            Ok(_) => {}
            // Unreachable in practice: we always make the lock consistent.
            Err(_) => return f(),
        }
        let r = f();
        self.lock.unlock();
        r
    }

    /// Ends the current generation as broken (lock held).
    fn break_locked(&self) {
        self.broken.store(1, Ordering::Relaxed);
        self.end_generation(true);
    }

    /// Bumps the generation and wakes every waiter (lock held).
    fn end_generation(&self, broken: bool) {
        self.count.store(0, Ordering::Relaxed);
        let g = self.generation.load(Ordering::Relaxed);
        // Release: pairs with the Acquire load in `wait`, publishing the
        // arrivals' writes before the barrier to everyone leaving it.
        self.generation.store((g & !1).wrapping_add(2) | u32::from(broken), Ordering::Release);
        wake32(&self.generation, u32::MAX);
    }

    /// Arrives and waits for the others; returns the arrival index.
    pub fn wait(&self, wait: Wait) -> Result<u32, BarrierFail> {
        let arrival = self.locked(|| {
            if self.broken.load(Ordering::Relaxed) != 0 {
                return Err(BarrierFail::Broken);
            }
            let parties = self.parties.load(Ordering::Relaxed).max(1);
            // Clamped: the count is shared (a peer may have scribbled it), and
            // an overflow panic here would leave the internal lock held.
            let idx = self.count.load(Ordering::Relaxed).min(parties - 1);
            if idx + 1 >= parties {
                self.end_generation(false);
                return Ok((idx, None));
            }
            self.count.store(idx + 1, Ordering::Relaxed);
            Ok((idx, Some(self.generation.load(Ordering::Relaxed))))
        })?;
        let (idx, ticket) = match arrival {
            (idx, None) => return Ok(idx),
            (idx, Some(t)) => (idx, t),
        };
        let mut spins = SPIN_LIMIT;
        loop {
            // Acquire: pairs with the Release store in `end_generation`.
            let g = self.generation.load(Ordering::Acquire);
            if g != ticket {
                return if g & 1 == 0 { Ok(idx) } else { Err(BarrierFail::Broken) };
            }
            if spins > 0 {
                spins -= 1;
                spin_hint();
                continue;
            }
            if wait.deadline().passed() {
                // Python: a timed-out wait breaks the barrier for everyone,
                // unless our generation completed meanwhile.
                let completed = self.locked(|| {
                    let g = self.generation.load(Ordering::Relaxed);
                    if g == ticket {
                        self.break_locked();
                        None
                    } else {
                        Some(g & 1 == 0)
                    }
                });
                return match completed {
                    Some(true) => Ok(idx),
                    Some(false) => Err(BarrierFail::Broken),
                    None => Err(BarrierFail::TimedOut),
                };
            }
            // Capped at POLL: the last arrival (or an abort, reset or
            // timeout) killed between its generation store and its wake
            // leaves the generation ended and us unwoken; we re-check at
            // least every POLL instead of sleeping on forever (test
            // `cover7_crash::barrier_last_arrival_killed_between_release_
            // and_wake_still_releases_live_parties`).
            wait32(&self.generation, ticket, wait.deadline().capped(POLL));
        }
    }

    /// Breaks the barrier: current and future waiters fail until `reset`.
    pub fn abort(&self) {
        self.locked(|| self.break_locked());
    }

    /// Back to the initial state; current waiters fail with Broken.
    pub fn reset(&self) {
        self.locked(|| {
            if self.count.load(Ordering::Relaxed) > 0 {
                self.end_generation(true);
            }
            self.broken.store(0, Ordering::Relaxed);
        });
    }

    pub fn parties(&self) -> u32 {
        self.parties.load(Ordering::Relaxed)
    }

    pub fn n_waiting(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed) != 0
    }
}

#[cfg(not(loom))]
pub use shm_barrier::*;

#[cfg(not(loom))]
mod shm_barrier {
    use super::*;
    use crate::OpenError;
    use crate::shm::object::constructors;
    use crate::shm::{Kind, Mapped, Object};
    use std::time::Duration;

    /// Why [`Barrier::wait`] failed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    pub enum BarrierError {
        /// The barrier is (or became) broken: aborted, reset while waiting,
        /// or another party's wait timed out (Python's `BrokenBarrierError`).
        #[error("the barrier is broken")]
        Broken,
        /// This call's timeout expired; the barrier is now broken for all.
        #[error("timed out waiting at the barrier (the barrier is now broken)")]
        TimedOut,
    }

    /// A cross-process barrier for `parties` participants, like
    /// `multiprocessing.Barrier`.
    ///
    /// Python's `Barrier(parties, action, timeout)` takes two more
    /// arguments, which have no parameter here. The `timeout` is per call:
    /// [`wait_timeout`](Self::wait_timeout). For an `action` (run by one
    /// party after all arrived and before any leaves), let the party with
    /// index 0 run it between two waits, so that no party goes on before
    /// it finished: `if b.wait()? == 0 { action() } b.wait()?;` (if the
    /// action fails, [`abort`](Self::abort) instead of the second wait, as
    /// Python breaks the barrier when its action raises).
    ///
    /// ```
    /// use shmproc::Barrier;
    /// let b = Barrier::new(2).unwrap();
    /// let idx = std::thread::scope(|s| {
    ///     let t = s.spawn(|| b.wait().unwrap());
    ///     let mine = b.wait().unwrap();
    ///     mine + t.join().unwrap()
    /// });
    /// assert_eq!(idx, 0 + 1); // arrival indices 0 and 1, in some order
    /// b.abort();
    /// assert_eq!(b.wait(), Err(shmproc::BarrierError::Broken));
    /// b.reset();
    /// assert!(!b.is_broken());
    /// ```
    #[derive(Clone, Debug)]
    pub struct Barrier {
        m: Mapped<RawBarrier>,
    }

    impl Object for Barrier {
        const KIND: Kind = Kind::Barrier;
        type Init = u32;
        type Ctl = RawBarrier;
        fn capacity(parties: &u32) -> Result<u64, OpenError> {
            if *parties == 0 {
                return Err(OpenError::InvalidArgument("a Barrier needs at least 1 party".into()));
            }
            Ok(u64::from(*parties))
        }
        fn new_ctl(parties: &u32, _: u64) -> RawBarrier {
            RawBarrier::new(*parties)
        }
        fn validate(m: &Mapped<RawBarrier>) -> Result<(), String> {
            let (cap, p) = (m.capacity(), m.ctl().parties());
            if p > 0 && cap == u64::from(p) { Ok(()) } else { Err(format!("parties {p} vs header {cap}")) }
        }
        fn from_mapped(m: Mapped<RawBarrier>) -> Self {
            Barrier { m }
        }
    }

    fn map(r: Result<u32, BarrierFail>) -> Result<u32, BarrierError> {
        r.map_err(|e| match e {
            BarrierFail::Broken => BarrierError::Broken,
            BarrierFail::TimedOut => BarrierError::TimedOut,
        })
    }

    impl Barrier {
        constructors!(doc("Barrier", "2", ", 2"), parties: u32);

        /// Waits until all parties have called `wait`; returns this
        /// caller's arrival index, `0..parties`.
        ///
        /// ```
        /// let b = shmproc::Barrier::new(1).unwrap();
        /// assert_eq!(b.wait(), Ok(0)); // one party: passes at once
        /// ```
        pub fn wait(&self) -> Result<u32, BarrierError> {
            map(self.m.ctl().wait(Wait::Forever))
        }

        /// [`wait`](Self::wait), at most `timeout`; on timeout the barrier
        /// breaks (as in Python) and this call returns
        /// [`BarrierError::TimedOut`].
        ///
        /// ```
        /// let b = shmproc::Barrier::new(2).unwrap();
        /// let r = b.wait_timeout(std::time::Duration::from_millis(5));
        /// assert_eq!(r, Err(shmproc::BarrierError::TimedOut));
        /// assert!(b.is_broken());
        /// ```
        pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BarrierError> {
            map(self.m.ctl().wait(Wait::timeout(timeout)))
        }

        /// Puts the barrier in the broken state; waiters get
        /// [`BarrierError::Broken`].
        ///
        /// ```
        /// let b = shmproc::Barrier::new(3).unwrap();
        /// b.abort();
        /// assert!(b.is_broken());
        /// ```
        pub fn abort(&self) {
            self.m.ctl().abort();
        }

        /// Returns the barrier to its empty, unbroken state; current waiters
        /// get [`BarrierError::Broken`].
        ///
        /// ```
        /// let b = shmproc::Barrier::new(3).unwrap();
        /// b.abort();
        /// b.reset();
        /// assert!(!b.is_broken());
        /// ```
        pub fn reset(&self) {
            self.m.ctl().reset();
        }

        /// Number of parties.
        ///
        /// ```
        /// assert_eq!(shmproc::Barrier::new(4).unwrap().parties(), 4);
        /// ```
        pub fn parties(&self) -> u32 {
            self.m.ctl().parties()
        }

        /// How many parties are waiting now.
        ///
        /// ```
        /// assert_eq!(shmproc::Barrier::new(4).unwrap().n_waiting(), 0);
        /// ```
        pub fn n_waiting(&self) -> u32 {
            self.m.ctl().n_waiting()
        }

        /// Whether the barrier is broken.
        ///
        /// ```
        /// assert!(!shmproc::Barrier::new(4).unwrap().is_broken());
        /// ```
        pub fn is_broken(&self) -> bool {
            self.m.ctl().is_broken()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A peer that scribbles the arrival count (here u32::MAX) gets
        /// us a garbage arrival, never an overflow panic, and the index
        /// stays in `0..parties` as documented.
        #[test]
        fn corrupted_arrival_count_does_not_overflow() {
            let sut = Barrier::new(3).unwrap();
            sut.m.ctl().count.store(u32::MAX, Ordering::Relaxed);
            let r = sut.wait_timeout(Duration::from_millis(1));
            assert!(matches!(r, Ok(i) if i < 3), "{r:?}");
        }
    }
}
