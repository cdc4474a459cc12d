//! Bounded multi-producer multi-consumer ring of `T: Pod` in shared memory.
//!
//! Design: a ring guarded by the crate's robust lock ([`RawLock`]), rather
//! than Vyukov's lock-free per-slot sequence numbers. The reason is crash
//! semantics: with per-slot sequences, a process killed between claiming a
//! slot and publishing it stalls every consumer at that slot, and telling a
//! dead claimant from a slow one needs per-operation ownership records that
//! cannot be updated atomically with the claim. Under the robust lock an
//! operation is all-or-nothing: the slot is written, then `tail` (or
//! `head`) moves, then the lock is released. A process killed mid-way
//! leaves the indices as they were (its item is simply not there), and the
//! next locker gets `OwnerDied`, finds the ring consistent by construction,
//! and carries on. The lock's uncontended path is one CAS and one swap, the
//! same atomics a lock-free enqueue uses; `len()` is exact.
//!
//! Waiting: a blocked caller registers in a waiter count and reads a
//! sequence word while holding the lock, then sleeps on that word without
//! it; the other side bumps the word (holding the lock) and wakes sleepers
//! only if the count is non-zero. Lock ordering makes a lost wake-up
//! impossible, with no fences on the fast path.
//!
//! Guarantees when a process dies (SIGKILL) at any instruction:
//! - inside `push`: its item is either entirely in the queue or not at all;
//! - inside `pop`: its item is either still in the queue or removed (and
//!   lost with the process);
//! - survivors never block on its account: the next locker takes the lock
//!   over within about 100 ms (robust lock), and sleepers are not waiting
//!   for it.
//! - `task_done` counts of a dead consumer are lost: a `join` on a
//!   `JoinableQueue` then waits for them (use `join_timeout`).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytemuck::Pod;

use super::WaitStrategy;
use super::spsc::{PopError, PushError};
use crate::OpenError;
use crate::shm::object::constructors;
use crate::shm::{Fingerprint, Kind, Mapped, Object};
use crate::sync::platform::{wait32, wake32};
use crate::sync::raw_lock::{Acquired, RawLock, Wait};
use crate::sys::futex::Deadline;

/// The shared control block.
#[repr(C)]
pub(crate) struct MpmcCtl {
    lock: RawLock,
    /// Next index to read (under the lock).
    head: AtomicU64,
    /// Next index to write (under the lock).
    tail: AtomicU64,
    /// Items put and not yet `task_done` (JoinableQueue; under the lock).
    unfinished: AtomicU64,
    /// Bumped when an item arrives; consumers sleep on it.
    items_seq: AtomicU32,
    /// Bumped when a slot frees up; producers sleep on it.
    space_seq: AtomicU32,
    /// Bumped when `unfinished` reaches 0; joiners sleep on it.
    done_seq: AtomicU32,
    consumers_waiting: AtomicU32,
    producers_waiting: AtomicU32,
    joiners_waiting: AtomicU32,
    closed: AtomicU32,
    /// The queue's size limit (Python's `maxsize`), 1..=ring slots.
    limit: AtomicU32,
}

const SPIN: u32 = 200;
const POLL: Duration = Duration::from_millis(100);

/// `task_done` was called more often than items were put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called more times than there were items")]
pub struct TaskDoneError;

/// A bounded MPMC queue of `T: Pod` in shared memory: any number of
/// processes and threads push and pop through clones of one handle.
///
/// ```
/// use shmproc::queue::MpmcQueue;
/// let q = MpmcQueue::<u32>::new(8).unwrap();
/// q.push(1).unwrap();
/// let other = MpmcQueue::<u32>::open(q.name()).unwrap();
/// other.push(2).unwrap();
/// assert_eq!(q.len(), 2);
/// assert_eq!(q.pop(), Ok(1));
/// assert_eq!(other.pop(), Ok(2));
/// assert_eq!(q.try_pop(), Err(shmproc::queue::PopError::Empty));
/// ```
pub struct MpmcQueue<T> {
    m: Mapped<MpmcCtl>,
    mask: u64,
    limit: u64,
    wait: WaitStrategy,
    _t: PhantomData<T>,
}

impl<T> Clone for MpmcQueue<T> {
    fn clone(&self) -> Self {
        MpmcQueue { m: self.m.clone(), mask: self.mask, limit: self.limit, wait: self.wait, _t: PhantomData }
    }
}

impl<T> std::fmt::Debug for MpmcQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpmcQueue").field("segment", &self.m).field("capacity", &(self.mask + 1)).finish()
    }
}

/// Largest supported capacity.
pub(crate) const MAX_CAPACITY: u64 = 1 << 30;

/// The ring has the next power of two of slots; `limit` is the capacity.
fn ring_slots(cap: u64) -> Result<u64, String> {
    if cap == 0 || cap > MAX_CAPACITY {
        Err(format!("capacity {cap} is not supported: use 1..={MAX_CAPACITY}"))
    } else {
        Ok(cap.next_power_of_two())
    }
}

impl<T: Pod> Object for MpmcQueue<T> {
    const KIND: Kind = Kind::MpmcQueue;
    type Init = u64;
    type Ctl = MpmcCtl;
    fn fingerprint() -> Fingerprint {
        Fingerprint::of::<T>()
    }
    fn capacity(cap: &u64) -> Result<u64, OpenError> {
        ring_slots(*cap).map_err(OpenError::InvalidArgument)
    }
    fn new_ctl(cap: &u64, _: u64) -> MpmcCtl {
        let z = || AtomicU32::new(0);
        MpmcCtl {
            lock: RawLock::new(),
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            unfinished: AtomicU64::new(0),
            items_seq: z(),
            space_seq: z(),
            done_seq: z(),
            consumers_waiting: z(),
            producers_waiting: z(),
            joiners_waiting: z(),
            closed: z(),
            limit: AtomicU32::new(*cap as u32),
        }
    }
    fn validate(m: &Mapped<MpmcCtl>) -> Result<(), String> {
        let slots = m.segment().capacity();
        let limit = u64::from(m.ctl().limit.load(Ordering::Relaxed));
        if !slots.is_power_of_two() || slots > MAX_CAPACITY {
            return Err(format!("ring of {slots} slots"));
        }
        if limit == 0 || limit > slots {
            return Err(format!("capacity {limit} does not fit a ring of {slots} slots"));
        }
        Ok(())
    }
    fn from_mapped(m: Mapped<MpmcCtl>) -> Self {
        let mask = m.segment().capacity() - 1; // validated power of two
        // Validated at open; re-read once here and never trusted again.
        let limit = u64::from(m.ctl().limit.load(Ordering::Relaxed)).clamp(1, mask + 1);
        MpmcQueue { m, mask, limit, wait: WaitStrategy::Blocking, _t: PhantomData }
    }
}

/// Under the lock: if anyone sleeps on `seq` (per its `waiting` count),
/// moves `seq` on and returns true; the caller wakes them after unlocking.
/// Plain load + store, not an RMW: every writer of `seq` holds the lock.
#[inline]
fn signal(seq: &AtomicU32, waiting: &AtomicU32) -> bool {
    let wake = waiting.load(Ordering::Relaxed) != 0;
    if wake {
        seq.store(seq.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
    wake
}

/// Under the lock: adds `n` to a counter only lock holders write.
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// The lock held; released on drop. A takeover from a dead holder is
/// repaired at once: every operation leaves the ring consistent at every
/// instant (slots are written before the index that publishes them moves).
struct Held<'a>(&'a MpmcCtl);

impl<'a> Held<'a> {
    fn lock(c: &'a MpmcCtl) -> Held<'a> {
        match c.lock.lock(Wait::Forever) {
            Ok(Acquired::Clean) => {}
            Ok(Acquired::OwnerDied) => c.lock.make_consistent(),
            // Only reachable if a foreign process stored NOT_RECOVERABLE:
            // we never leave the lock inconsistent ourselves. Proceed
            // without the lock rather than hang; the data may be garbage.
            Err(_) => {}
        }
        Held(c)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.lock.unlock();
    }
}

impl<T: Pod> MpmcQueue<T> {
    constructors!(doc("queue::MpmcQueue::<u64>", "8", ", 8"), capacity: u64);

    /// Chooses how blocked calls through this handle wait.
    ///
    /// ```
    /// use shmproc::queue::{MpmcQueue, WaitStrategy};
    /// let q = MpmcQueue::<u8>::new(4).unwrap().with_wait(WaitStrategy::BusyPoll);
    /// # drop(q);
    /// ```
    pub fn with_wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    fn ctl(&self) -> &MpmcCtl {
        self.m.ctl()
    }

    fn slot(&self, index: u64) -> *mut T {
        // SAFETY: masked index < capacity, inside the validated data area.
        unsafe { (self.m.data() as *mut T).add((index & self.mask) as usize) }
    }

    /// The most items the queue holds (any size 1..=2^30).
    ///
    /// ```
    /// assert_eq!(shmproc::queue::MpmcQueue::<u8>::new(10).unwrap().capacity(), 10);
    /// ```
    pub fn capacity(&self) -> usize {
        self.limit as usize
    }

    /// Exact number of items (taken under the lock).
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(3).unwrap();
    /// q.push(1).unwrap();
    /// assert_eq!(q.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        let c = self.ctl();
        let _g = Held::lock(c);
        self.fill(c) as usize
    }

    /// Items in the ring, clamped (the indices are shared, untrusted memory).
    fn fill(&self, c: &MpmcCtl) -> u64 {
        let (h, t) = (c.head.load(Ordering::Relaxed), c.tail.load(Ordering::Relaxed));
        t.wrapping_sub(h).min(self.mask + 1)
    }

    /// Whether the queue is empty (exact at the moment of the call).
    ///
    /// ```
    /// assert!(shmproc::queue::MpmcQueue::<u8>::new(4).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue is full (exact at the moment of the call).
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// q.push(1).unwrap();
    /// assert!(q.is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity()
    }

    /// Closes the queue: pushes fail with `Closed`, pops drain what is left
    /// and then fail with `Closed`; every blocked caller is woken.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(4).unwrap();
    /// q.push(1).unwrap();
    /// q.close();
    /// assert!(q.push(2).is_err());
    /// assert_eq!(q.pop(), Ok(1));
    /// assert_eq!(q.pop(), Err(shmproc::queue::PopError::Closed));
    /// ```
    pub fn close(&self) {
        let c = self.ctl();
        {
            let _g = Held::lock(c);
            c.closed.store(1, Ordering::Relaxed);
            c.items_seq.store(c.items_seq.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
            c.space_seq.store(c.space_seq.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
        wake32(&c.items_seq, u32::MAX);
        wake32(&c.space_seq, u32::MAX);
    }

    /// Whether [`close`](Self::close) was called.
    ///
    /// ```
    /// assert!(!shmproc::queue::MpmcQueue::<u8>::new(4).unwrap().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.ctl().closed.load(Ordering::Relaxed) != 0
    }

    /// One attempt under the lock. `Err(Full)` carries the value back.
    #[inline]
    fn push_locked(&self, v: T) -> Result<(), PushError<T>> {
        let c = self.ctl();
        let wake = {
            let _g = Held::lock(c);
            if c.closed.load(Ordering::Relaxed) != 0 {
                return Err(PushError::Closed(v));
            }
            if self.fill(c) >= self.limit {
                return Err(PushError::Full(v));
            }
            let t = c.tail.load(Ordering::Relaxed);
            // SAFETY: the slot at tail is free (fill < capacity) and we hold
            // the lock.
            unsafe { self.slot(t).write(v) };
            c.tail.store(t.wrapping_add(1), Ordering::Relaxed);
            bump(&c.unfinished, 1);
            signal(&c.items_seq, &c.consumers_waiting)
        };
        if wake {
            wake32(&c.items_seq, 1);
        }
        Ok(())
    }

    /// One attempt under the lock.
    #[inline]
    fn pop_locked(&self) -> Result<T, PopError> {
        let c = self.ctl();
        let (v, wake) = {
            let _g = Held::lock(c);
            if self.fill(c) == 0 {
                return Err(if c.closed.load(Ordering::Relaxed) != 0 { PopError::Closed } else { PopError::Empty });
            }
            let h = c.head.load(Ordering::Relaxed);
            // SAFETY: the slot at head holds a published item; lock held.
            let v = unsafe { self.slot(h).read() };
            c.head.store(h.wrapping_add(1), Ordering::Relaxed);
            (v, signal(&c.space_seq, &c.producers_waiting))
        };
        if wake {
            wake32(&c.space_seq, 1);
        }
        Ok(v)
    }

    /// Pushes if there is room: [`PushError::Full`] otherwise.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// q.try_push(1).unwrap();
    /// assert_eq!(q.try_push(2), Err(shmproc::queue::PushError::Full(2)));
    /// ```
    pub fn try_push(&self, v: T) -> Result<(), PushError<T>> {
        self.push_locked(v)
    }

    /// Pushes, waiting for room; fails only if the queue is closed.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// q.push(1).unwrap();
    /// ```
    #[inline]
    pub fn push(&self, v: T) -> Result<(), PushError<T>> {
        match self.push_locked(v) {
            Err(PushError::Full(v)) => self.push_wait(v, None),
            done => done,
        }
    }

    /// Pushes, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// q.push(1).unwrap();
    /// assert_eq!(q.push_timeout(2, Duration::from_millis(5)), Err(shmproc::queue::PushError::TimedOut(2)));
    /// ```
    pub fn push_timeout(&self, v: T, timeout: Duration) -> Result<(), PushError<T>> {
        match self.push_locked(v) {
            Err(PushError::Full(v)) => self.push_wait(v, Deadline::after(timeout)),
            done => done,
        }
    }

    #[cold]
    #[inline(never)]
    fn push_wait(&self, mut v: T, deadline: Option<Deadline>) -> Result<(), PushError<T>> {
        let c = self.ctl();
        let mut spins = 0u32;
        loop {
            match self.push_locked(v) {
                Err(PushError::Full(back)) => v = back,
                done => return done,
            }
            if deadline.is_some_and(|d| d.passed()) {
                return Err(PushError::TimedOut(v));
            }
            if super::spin_step(self.wait, &mut spins, 0, SPIN) {
                continue;
            }
            // Register under the lock, re-checking for room, then sleep.
            let ticket = {
                let _g = Held::lock(c);
                if self.fill(c) < self.limit || c.closed.load(Ordering::Relaxed) != 0 {
                    continue;
                }
                c.producers_waiting.fetch_add(1, Ordering::Relaxed);
                c.space_seq.load(Ordering::Relaxed)
            };
            wait32(&c.space_seq, ticket, Some(Deadline::min_after(deadline, POLL)));
            c.producers_waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Pops if an item is there; `Empty`, or `Closed` once closed and
    /// drained.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// assert_eq!(q.try_pop(), Err(shmproc::queue::PopError::Empty));
    /// ```
    pub fn try_pop(&self) -> Result<T, PopError> {
        self.pop_locked()
    }

    /// Pops, waiting for an item; `Closed` once closed and drained.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// q.push(3).unwrap();
    /// assert_eq!(q.pop(), Ok(3));
    /// ```
    #[inline]
    pub fn pop(&self) -> Result<T, PopError> {
        match self.pop_locked() {
            Err(PopError::Empty) => self.pop_wait(None),
            done => done,
        }
    }

    /// Pops, waiting at most `timeout`.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// let r = q.pop_timeout(std::time::Duration::from_millis(5));
    /// assert_eq!(r, Err(shmproc::queue::PopError::TimedOut));
    /// ```
    pub fn pop_timeout(&self, timeout: Duration) -> Result<T, PopError> {
        match self.pop_locked() {
            Err(PopError::Empty) => self.pop_wait(Deadline::after(timeout)),
            done => done,
        }
    }

    #[cold]
    #[inline(never)]
    fn pop_wait(&self, deadline: Option<Deadline>) -> Result<T, PopError> {
        let c = self.ctl();
        let mut spins = 0u32;
        loop {
            match self.pop_locked() {
                Err(PopError::Empty) => {}
                done => return done,
            }
            if deadline.is_some_and(|d| d.passed()) {
                return Err(PopError::TimedOut);
            }
            if super::spin_step(self.wait, &mut spins, 0, SPIN) {
                continue;
            }
            let ticket = {
                let _g = Held::lock(c);
                if self.fill(c) > 0 || c.closed.load(Ordering::Relaxed) != 0 {
                    continue;
                }
                c.consumers_waiting.fetch_add(1, Ordering::Relaxed);
                c.items_seq.load(Ordering::Relaxed)
            };
            wait32(&c.items_seq, ticket, Some(Deadline::min_after(deadline, POLL)));
            c.consumers_waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Pushes as many of `items` as fit now, under one lock acquisition;
    /// returns how many (0 if closed).
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u16>::new(4).unwrap();
    /// assert_eq!(q.push_slice(&[1, 2, 3, 4, 5]), 4);
    /// ```
    pub fn push_slice(&self, items: &[T]) -> usize {
        let c = self.ctl();
        let (n, wake) = {
            let _g = Held::lock(c);
            if c.closed.load(Ordering::Relaxed) != 0 {
                return 0;
            }
            let n = (self.limit.saturating_sub(self.fill(c)) as usize).min(items.len());
            let t = c.tail.load(Ordering::Relaxed);
            for (i, v) in items[..n].iter().enumerate() {
                // SAFETY: n free slots from tail; lock held.
                unsafe { self.slot(t.wrapping_add(i as u64)).write(*v) };
            }
            c.tail.store(t.wrapping_add(n as u64), Ordering::Relaxed);
            bump(&c.unfinished, n as u64);
            (n, n > 0 && signal(&c.items_seq, &c.consumers_waiting))
        };
        if wake {
            wake32(&c.items_seq, n as u32);
        }
        n
    }

    /// Pops up to `out.len()` items available now, under one lock
    /// acquisition; returns how many.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u16>::new(4).unwrap();
    /// q.push_slice(&[1, 2, 3]);
    /// let mut out = [0; 2];
    /// assert_eq!(q.pop_into(&mut out), 2);
    /// assert_eq!(out, [1, 2]);
    /// ```
    pub fn pop_into(&self, out: &mut [T]) -> usize {
        let c = self.ctl();
        let (n, wake) = {
            let _g = Held::lock(c);
            let n = (self.fill(c) as usize).min(out.len());
            let h = c.head.load(Ordering::Relaxed);
            for (i, o) in out[..n].iter_mut().enumerate() {
                // SAFETY: n published slots from head; lock held.
                *o = unsafe { self.slot(h.wrapping_add(i as u64)).read() };
            }
            c.head.store(h.wrapping_add(n as u64), Ordering::Relaxed);
            (n, n > 0 && signal(&c.space_seq, &c.producers_waiting))
        };
        if wake {
            wake32(&c.space_seq, n as u32);
        }
        n
    }

    /// Marks one previously popped item as processed (JoinableQueue).
    pub(crate) fn task_done(&self) -> Result<(), TaskDoneError> {
        let c = self.ctl();
        let wake = {
            let _g = Held::lock(c);
            let u = c.unfinished.load(Ordering::Relaxed);
            if u == 0 {
                return Err(TaskDoneError);
            }
            c.unfinished.store(u - 1, Ordering::Relaxed);
            u == 1 && signal(&c.done_seq, &c.joiners_waiting)
        };
        if wake {
            wake32(&c.done_seq, u32::MAX);
        }
        Ok(())
    }

    /// Waits until every item put has been marked done; false on timeout.
    pub(crate) fn join_until(&self, deadline: Option<Deadline>) -> bool {
        let c = self.ctl();
        loop {
            let ticket = {
                let _g = Held::lock(c);
                if c.unfinished.load(Ordering::Relaxed) == 0 {
                    return true;
                }
                c.joiners_waiting.fetch_add(1, Ordering::Relaxed);
                c.done_seq.load(Ordering::Relaxed)
            };
            if deadline.is_some_and(|d| d.passed()) {
                c.joiners_waiting.fetch_sub(1, Ordering::Relaxed);
                return false;
            }
            wait32(&c.done_seq, ticket, Some(Deadline::min_after(deadline, POLL)));
            c.joiners_waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Items put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u64 {
        let c = self.ctl();
        let _g = Held::lock(c);
        c.unfinished.load(Ordering::Relaxed)
    }
}
