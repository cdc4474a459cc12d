//! `Event`, like `multiprocessing.Event`.
//!
//! One futex word: bit SET is the flag, bit WAITERS says somebody may be
//! asleep, and the bits above count the `set` calls (a generation,
//! wrapping). `set` bumps the generation, sets SET and clears WAITERS in
//! one CAS, and wakes everyone only if WAITERS was set, so setting an
//! event nobody waits on is one atomic operation and no syscall. A waiter
//! notes the generation when it starts and returns when the flag is set
//! or the generation moved: a `set` during the wait releases it even if a
//! `clear` undid the flag before it looked (the pulse `set(); clear()`), as
//! Python's `set()` wakes every waiter (whose `wait(timeout)` then returns
//! the flag as it is: false).
//! A waiter that dies leaves WAITERS behind: the next `set` makes one
//! useless wake syscall, then the bit is gone; nothing ever waits on it.
//! A setter that dies between its CAS and its wake leaves sleepers
//! unwoken beside a moved word: they re-check at least every `POLL`.
//!
//! | state (low bits) | meaning                              |
//! |------------------|--------------------------------------|
//! | 0                | clear, nobody asleep                 |
//! | WAITERS          | clear, sleepers may exist            |
//! | SET              | set (sleepers were woken by `set`)   |
//! | SET \| WAITERS   | impossible: waiters never sleep on a set event |

use super::raw_lock::Wait;
use crate::wait::atomic::{AtomicU32, Ordering};
use crate::wait::futex::{wait32, wake32};
use crate::wait::spin::{POLL, SPIN_LIMIT, spin_hint};

const SET: u32 = 1;
const WAITERS: u32 = 2;
/// The generation's unit (the bits above SET and WAITERS).
const GENERATION: u32 = 4;

#[repr(C)]
pub struct RawEvent {
    state: AtomicU32,
}

impl RawEvent {
    pub fn new() -> Self {
        RawEvent { state: AtomicU32::new(0) }
    }

    pub fn set(&self) {
        // Release: pairs with the Acquire loads in `wait`/`is_set`, so what
        // the setter wrote before `set` is visible to whoever sees the flag
        // (or the generation it moved).
        let old = self
            .state
            .fetch_update(Ordering::Release, Ordering::Relaxed, |s| {
                Some((s & !(SET | WAITERS)).wrapping_add(GENERATION) | SET)
            })
            .unwrap_or_else(|s| s);
        if old & WAITERS != 0 {
            wake32(&self.state, u32::MAX);
        }
    }

    pub fn clear(&self) {
        self.state.fetch_and(!SET, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        // Acquire: pairs with the Release CAS in `set`.
        self.state.load(Ordering::Acquire) & SET != 0
    }

    /// Whether a waiter announced it may sleep (loom models only: they
    /// pulse the event once a waiter is surely inside its wait).
    #[cfg(loom)]
    pub fn has_announced_waiter(&self) -> bool {
        self.state.load(Ordering::Relaxed) & WAITERS != 0
    }

    /// Waits until set, or until a `set` during the wait (undone by a
    /// `clear` since); returns the flag then: false also if `wait` ran out
    /// first.
    pub fn wait(&self, wait: Wait) -> bool {
        let mut spins = if matches!(wait, Wait::No) { 0 } else { SPIN_LIMIT };
        // Acquire: pairs with the Release CAS in `set`.
        let start = self.state.load(Ordering::Acquire);
        if start & SET != 0 {
            return true;
        }
        loop {
            // Acquire: pairs with the Release CAS in `set`.
            let s = self.state.load(Ordering::Acquire);
            if s & SET != 0 {
                return true;
            }
            if (s ^ start) & !(SET | WAITERS) != 0 {
                // Set and cleared again since we started: released.
                return false;
            }
            if spins > 0 {
                spins -= 1;
                spin_hint();
                continue;
            }
            if matches!(wait, Wait::No) || wait.deadline().passed() {
                return false;
            }
            if let Some(expected) = self.announce() {
                // Capped at POLL: a setter killed between its CAS and its
                // wake leaves the word moved and the sleepers unwoken; we
                // re-check at least every POLL instead of sleeping beside a
                // set flag forever (test `cover7_crash::event_setter_killed_
                // between_set_and_wake_still_releases_a_live_waiter`).
                wait32(&self.state, expected, wait.deadline().capped(POLL));
            }
        }
    }

    /// Registers a sleeper (sets WAITERS unless the event is set): the
    /// value to sleep on, or `None` if the event is set. Shared by `wait`
    /// and the multi-object `wait` (`crate::wait::many`); nothing to undo:
    /// `set` clears WAITERS.
    pub(crate) fn announce(&self) -> Option<u32> {
        loop {
            // Acquire: pairs with the Release CAS in `set`.
            let s = self.state.load(Ordering::Acquire);
            if s & SET != 0 {
                return None;
            }
            // Relaxed: the futex compares the word atomically with sleeping,
            // and `set`'s CAS reads WAITERS in the word's modification order.
            if s & WAITERS != 0
                || self.state.compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                return Some(s | WAITERS);
            }
        }
    }
}

#[cfg(not(loom))]
pub use shm_event::*;

#[cfg(not(loom))]
mod shm_event {
    use super::*;
    use crate::shm::object::constructors;
    use crate::shm::{Kind, Mapped, Object};
    use std::time::Duration;

    /// A cross-process flag that processes can wait for, like
    /// `multiprocessing.Event`.
    ///
    /// ```
    /// use shmproc::Event;
    /// use std::time::Duration;
    /// let ev = Event::new().unwrap();
    /// assert!(!ev.wait_timeout(Duration::from_millis(1)));
    /// let remote = Event::open(ev.name()).unwrap();
    /// remote.set();
    /// assert!(ev.is_set());
    /// ev.wait(); // returns at once
    /// ev.clear();
    /// assert!(!remote.is_set());
    /// ```
    #[derive(Clone, Debug)]
    pub struct Event {
        m: Mapped<RawEvent>,
    }

    impl Object for Event {
        const KIND: Kind = Kind::Event;
        type Init = ();
        type Ctl = RawEvent;
        fn new_ctl(_: &(), _: u64) -> RawEvent {
            RawEvent::new()
        }
        fn from_mapped(m: Mapped<RawEvent>) -> Self {
            Event { m }
        }
    }

    impl crate::wait::many::WaitObject for Event {
        fn ready(&mut self, _thorough: bool) -> bool {
            self.m.ctl().is_set()
        }
        fn announce(&mut self, words: &mut crate::wait::many::Words) -> Option<u64> {
            let raw = self.m.ctl();
            raw.announce().map(|expected| words.push(&raw.state, expected)).map(|()| 0)
        }
        fn withdraw(&mut self, _token: u64) {}
    }

    /// Ready when set.
    impl crate::wait::many::Waitable for Event {}

    impl Event {
        constructors!(doc("Event", "", ""));

        /// Sets the flag and wakes every waiter.
        ///
        /// ```
        /// let ev = shmproc::Event::new().unwrap();
        /// ev.set();
        /// assert!(ev.is_set());
        /// ```
        pub fn set(&self) {
            self.m.ctl().set();
        }

        /// Clears the flag.
        ///
        /// ```
        /// let ev = shmproc::Event::new().unwrap();
        /// ev.set();
        /// ev.clear();
        /// assert!(!ev.is_set());
        /// ```
        pub fn clear(&self) {
            self.m.ctl().clear();
        }

        /// Whether the flag is set.
        ///
        /// ```
        /// assert!(!shmproc::Event::new().unwrap().is_set());
        /// ```
        pub fn is_set(&self) -> bool {
            self.m.ctl().is_set()
        }

        /// Blocks until the flag is set, or until a [`set`](Self::set)
        /// during the wait, even one a [`clear`](Self::clear) undid at
        /// once (Python's `set()` wakes every waiter).
        ///
        /// ```
        /// let ev = shmproc::Event::new().unwrap();
        /// std::thread::scope(|s| {
        ///     s.spawn(|| ev.set());
        ///     ev.wait();
        /// });
        /// assert!(ev.is_set());
        /// ```
        pub fn wait(&self) {
            self.m.ctl().wait(Wait::Forever);
        }

        /// Waits at most `timeout`; returns the flag, like Python's
        /// `wait(timeout)`: true if set, false at the timeout or when a
        /// `set` during the wait was undone by a `clear` before it looked
        /// (the wait returns then, as Python's does).
        ///
        /// ```
        /// let ev = shmproc::Event::new().unwrap();
        /// assert!(!ev.wait_timeout(std::time::Duration::from_millis(2)));
        /// ```
        pub fn wait_timeout(&self, timeout: Duration) -> bool {
            self.m.ctl().wait(Wait::timeout(timeout))
        }
    }
}
