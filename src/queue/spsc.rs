//! Single-producer single-consumer ring of `T: ShmType` in shared memory.
//!
//! Algorithm: Lamport's bounded ring with free-running 64-bit indices and
//! each side caching the other's index (as in rtrb / the Linux kfifo): the
//! producer owns `tail`, the consumer owns `head`, each on its own cache
//! line; `tail - head` is the fill level. The producer reloads `head` only
//! when its cached copy says the ring is full, the consumer reloads `tail`
//! only when its copy says empty, so in steady state each side touches the
//! other's line once per lap, not once per item.
//!
//! Orderings: the producer writes the slot, then stores `tail` with
//! Release; the consumer loads `tail` with Acquire (pairs with it), reads
//! the slot, then stores `head` with Release; the producer loads `head`
//! with Acquire (pairs with that) before reusing the slot.
//!
//! Sleeping: see [`wake`](super::wake) for the flag/barrier handshake,
//! and [`roles`](super::roles) for how the ends are claimed.
//! A sleeper also wakes every 100 ms to check that its peer process is
//! alive, so a peer killed with SIGKILL is noticed within about 100 ms.
//!
//! Untrusted memory: indices read from shared memory are only ever used
//! masked (`index & mask`), and the fill level is clamped to the capacity,
//! so a corrupted or hostile peer can make us read garbage, never touch
//! memory outside the ring.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::ShmType;

use super::WaitStrategy;
use super::error::{PopError, PopTimeoutError, PushError, PushTimeoutError, RoleError, TryPopError, TryPushError};
use super::roles::{PeerWatch, Role};
use super::wake::{prefetch, publish_and_wake, sleep_on};
use crate::OpenError;
use crate::shm::object::constructors;
use crate::shm::{Fingerprint, Kind, Mapped, Object};
use crate::wait::Deadline;
use crate::wait::handshake;
use crate::wait::spin::{RING_SPIN, spin_step};

mod waitable;
pub(super) use waitable::consumer_waitable;

/// A 128-byte aligned cell, so hot words share neither a cache line nor
/// the line pair that x86's adjacent-line prefetcher fetches together.
#[repr(C, align(128))]
pub(super) struct Line<T>(pub(super) T);

/// The shared control block.
#[repr(C)]
pub(crate) struct SpscCtl {
    /// Next index to write; written by the producer only.
    pub(super) tail: Line<AtomicU64>,
    /// Next index to read; written by the consumer only.
    pub(super) head: Line<AtomicU64>,
    /// Read-mostly words.
    pub(super) meta: Line<Meta>,
}

#[repr(C)]
pub(super) struct Meta {
    /// The consumer is (about to be) asleep waiting for data.
    pub(super) consumer_waiting: AtomicU32,
    /// The producer is (about to be) asleep waiting for space.
    pub(super) producer_waiting: AtomicU32,
    /// `close()` was called: pushes fail, pops drain then fail.
    pub(super) closed: AtomicU32,
    /// Some participant cannot use membarrier: producers must fence.
    pub(super) fences: AtomicU32,
    /// Process holding the producer role (packed start time | pid), or 0.
    pub(super) producer: AtomicU64,
    /// Process holding the consumer role, or 0.
    pub(super) consumer: AtomicU64,
    /// The producer detached or died (consumers get Disconnected once empty).
    pub(super) producer_gone: AtomicU32,
    /// The consumer detached or died (producers get Disconnected).
    pub(super) consumer_gone: AtomicU32,
    /// Free for the ring kind: the byte ring keeps its frame limit here.
    pub(super) aux: AtomicU64,
}

/// A bounded SPSC ring of `T: ShmType` in shared memory, shared by name.
/// One process at a time takes the [`producer`](Self::producer) role and one
/// the [`consumer`](Self::consumer) role; roles of dead processes are
/// reclaimed.
///
/// ```
/// use shmproc::queue::SpscQueue;
/// let q = SpscQueue::<u64>::new(1024).unwrap();
/// let mut tx = q.producer().unwrap();
/// let mut rx = SpscQueue::<u64>::open(q.name()).unwrap().consumer().unwrap();
/// tx.push(7).unwrap();
/// assert_eq!(tx.push_slice(&[8, 9]), 2);
/// assert_eq!(rx.pop().unwrap(), 7);
/// let mut buf = [0u64; 4];
/// assert_eq!(rx.pop_into(&mut buf), 2);
/// assert_eq!(&buf[..2], &[8, 9]);
/// drop(tx); // producer gone: the consumer drains, then learns it
/// assert_eq!(rx.try_pop(), Err(shmproc::TryPopError::Disconnected));
/// ```
pub struct SpscQueue<T> {
    m: Mapped<SpscCtl>,
    mask: u64,
    _t: PhantomData<T>,
}

impl<T> Clone for SpscQueue<T> {
    fn clone(&self) -> Self {
        SpscQueue { m: self.m.clone(), mask: self.mask, _t: PhantomData }
    }
}

impl<T> std::fmt::Debug for SpscQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpscQueue").field("segment", &self.m).field("capacity", &(self.mask + 1)).finish()
    }
}

fn check_capacity(cap: u64) -> Result<(), String> {
    if cap < 2 || !cap.is_power_of_two() {
        Err(format!("capacity {cap} is not supported: use a power of two >= 2"))
    } else {
        Ok(())
    }
}

impl<T: ShmType> Object for SpscQueue<T> {
    const KIND: Kind = Kind::SpscQueue;
    type Init = u64;
    type Ctl = SpscCtl;
    fn fingerprint() -> Fingerprint {
        Fingerprint::of::<T>()
    }
    fn capacity(cap: &u64) -> Result<u64, OpenError> {
        check_capacity(*cap).map_err(OpenError::InvalidArgument)?;
        Ok(*cap)
    }
    fn new_ctl(_: &u64, _: u64) -> SpscCtl {
        new_ctl()
    }
    fn validate(m: &Mapped<SpscCtl>) -> Result<(), String> {
        check_capacity(m.capacity())
    }
    fn from_mapped(m: Mapped<SpscCtl>) -> Self {
        m.ctl().use_fences_unless_membarrier();
        let mask = m.capacity() - 1; // validated power of two
        SpscQueue { m, mask, _t: PhantomData }
    }
}

impl<T: ShmType> SpscQueue<T> {
    constructors!(doc("queue::SpscQueue::<u64>", "8", ", 8"), capacity: u64);

    /// Number of slots.
    ///
    /// ```
    /// assert_eq!(shmproc::queue::SpscQueue::<u8>::new(16).unwrap().capacity(), 16);
    /// ```
    pub fn capacity(&self) -> usize {
        (self.mask + 1) as usize
    }

    /// Items in the ring now (a snapshot; exact when both sides are idle).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// q.producer().unwrap().push(1).unwrap();
    /// assert_eq!(q.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        let c = self.m.ctl();
        // Acquire: pairs with the consumer's Release store of head.
        let head = c.head.0.load(Ordering::Acquire);
        // Acquire: pairs with the producer's Release store of tail.
        let tail = c.tail.0.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.mask + 1) as usize
    }

    /// Whether the ring is empty (a snapshot).
    ///
    /// ```
    /// assert!(shmproc::queue::SpscQueue::<u8>::new(4).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the queue: pushes fail with `Closed`, pops drain what is left
    /// and then fail with `Closed`; blocked callers are woken.
    ///
    /// A push that *starts* after `close()` returned is refused. One that
    /// is in flight at that moment (it checked the flag before) completes:
    /// it returns `Ok` and its item lands in the ring, possibly after a
    /// consumer already saw `Closed`. (Refusing it too would cost an atomic
    /// read-modify-write on every push.) For a clean shutdown that loses
    /// nothing, let the producer close, or stop it first: as with Python's
    /// `Queue.close()`, close is the producer's "no more data".
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.push(1).unwrap();
    /// q.close();
    /// assert!(tx.push(2).is_err());
    /// let mut rx = q.consumer().unwrap();
    /// assert_eq!(rx.pop(), Ok(1));
    /// assert_eq!(rx.pop(), Err(shmproc::PopError::Closed));
    /// ```
    pub fn close(&self) {
        self.m.ctl().close();
    }

    /// Whether [`close`](Self::close) was called.
    ///
    /// ```
    /// assert!(!shmproc::queue::SpscQueue::<u8>::new(4).unwrap().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.m.ctl().meta.0.closed.load(Ordering::Relaxed) != 0
    }

    /// Takes the producer role: one live [`Producer`] per ring at a time,
    /// across all processes and threads ([`RoleError`] while another one
    /// lives, in any process, this one included); the role of a dropped
    /// handle or a dead process can be taken again.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// let tx = q.producer().unwrap();
    /// # drop(tx);
    /// ```
    pub fn producer(&self) -> Result<Producer<T>, RoleError> {
        let (tail, head) = self.m.ctl().attach(Role::Producer)?;
        Ok(Producer {
            q: Ends::new(self.clone()),
            tail,
            head_cache: head,
            wait: WaitStrategy::Blocking,
            watch: PeerWatch::default(),
            _not_sync: PhantomData,
        })
    }

    /// Takes the consumer role: one live [`Consumer`] per ring at a time
    /// (as [`producer`](Self::producer)).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// let rx = q.consumer().unwrap();
    /// # drop(rx);
    /// ```
    pub fn consumer(&self) -> Result<Consumer<T>, RoleError> {
        let (head, tail) = self.m.ctl().attach(Role::Consumer)?;
        Ok(Consumer {
            q: Ends::new(self.clone()),
            head,
            tail_cache: tail,
            wait: WaitStrategy::Blocking,
            watch: PeerWatch::default(),
            _not_sync: PhantomData,
        })
    }
}

impl SpscCtl {

    /// Closes the ring and wakes both ends.
    pub(super) fn close(&self) {
        // SeqCst: ordered before the wake syscalls below; pairs with the sleepers' re-check after their heavy barrier.
        self.meta.0.closed.store(1, Ordering::SeqCst);
        // The sleepers sleep on their flags: cleared, so a sleeper between
        // its re-check and its futex wait does not sleep on.
        super::wake::wake_sleeper(&self.meta.0.consumer_waiting);
        super::wake::wake_sleeper(&self.meta.0.producer_waiting);
    }

    /// At map time: without asymmetric barriers (membarrier refused),
    /// every participant publishes with a real fence.
    pub(super) fn use_fences_unless_membarrier(&self) {
        handshake::use_fences_unless_membarrier(&self.meta.0.fences);
    }
}

/// A fresh control block (both ends absent, indices at 0).
pub(super) fn new_ctl() -> SpscCtl {
    let z32 = || AtomicU32::new(0);
    SpscCtl {
        tail: Line(AtomicU64::new(0)),
        head: Line(AtomicU64::new(0)),
        meta: Line(Meta {
            consumer_waiting: z32(),
            producer_waiting: z32(),
            closed: z32(),
            fences: z32(),
            producer: AtomicU64::new(0),
            consumer: AtomicU64::new(0),
            producer_gone: z32(),
            consumer_gone: z32(),
            aux: AtomicU64::new(0),
        }),
    }
}

/// What a producer or consumer end needs on its hot path, with the
/// pointers resolved once (no pointer chasing through the segment handle
/// on every operation).
pub(super) struct Ends<T> {
    queue: SpscQueue<T>,
    ctl: *const SpscCtl,
    slots: *mut T,
    mask: u64,
}

impl<T> Ends<T> {
    #[inline(always)]
    pub(super) fn ctl(&self) -> &SpscCtl {
        // SAFETY: `queue` keeps the mapping alive as long as `self`; the
        // control block is atomics only.
        unsafe { &*self.ctl }
    }
}

impl<T: ShmType> Ends<T> {
    fn new(queue: SpscQueue<T>) -> Self {
        let ctl = queue.m.ctl() as *const SpscCtl;
        let slots = queue.m.data() as *mut T;
        let mask = queue.mask;
        Ends { queue, ctl, slots, mask }
    }

    #[inline(always)]
    pub(super) fn slot(&self, index: u64) -> *mut T {
        // SAFETY: masked index < capacity, inside the validated data area.
        unsafe { self.slots.add((index & self.mask) as usize) }
    }

    fn len(&self) -> usize {
        self.queue.len()
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// The producer end: owned by one thread at a time (`Send`, not `Sync`).
pub struct Producer<T> {
    pub(super) q: Ends<T>,
    pub(super) tail: u64,
    head_cache: u64,
    wait: WaitStrategy,
    watch: PeerWatch,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: the handle owns the producer role; moving it to another thread
// moves the role. It is not Sync (Cell marker): one thread uses it at once.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T> std::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("tail", &self.tail).finish()
    }
}

impl<T: ShmType> Producer<T> {
    /// Chooses how blocked pushes wait (default [`WaitStrategy::Blocking`]).
    ///
    /// ```
    /// use shmproc::queue::{SpscQueue, WaitStrategy};
    /// let q = SpscQueue::<u8>::new(4).unwrap();
    /// let tx = q.producer().unwrap().with_wait(WaitStrategy::BusyPoll);
    /// # drop(tx);
    /// ```
    pub fn with_wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Free slots, refreshing the cached head only if needed.
    #[inline(always)]
    pub(super) fn free(&mut self, want: u64) -> u64 {
        super::ring::free(self.tail, &mut self.head_cache, &self.q.ctl().head.0, self.q.mask + 1, want)
    }

    /// Publishes `self.tail` and wakes a sleeping consumer.
    #[inline(always)]
    pub(super) fn publish(&mut self) {
        let c = self.q.ctl();
        publish_and_wake(c, &c.tail.0, self.tail, &c.meta.0.consumer_waiting);
    }

    pub(super) fn refusal<V>(&mut self, v: V) -> Option<TryPushError<V>> {
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) != 0 {
            Some(TryPushError::Closed(v))
        } else if self.watch.gone(&m.consumer, &m.consumer_gone) {
            Some(TryPushError::Disconnected(v))
        } else {
            None
        }
    }

    /// Pushes if there is room: [`TryPushError::Full`] otherwise.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.try_push(1).unwrap();
    /// tx.try_push(2).unwrap();
    /// assert_eq!(tx.try_push(3), Err(shmproc::TryPushError::Full(3)));
    /// ```
    #[inline(always)]
    pub fn try_push(&mut self, v: T) -> Result<(), TryPushError<T>> {
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) | m.consumer_gone.load(Ordering::Relaxed) != 0 {
            return Err(self.refusal(v).unwrap_or(TryPushError::Closed(v)));
        }
        if self.free(1) == 0 {
            return Err(self.refusal(v).unwrap_or(TryPushError::Full(v)));
        }
        // SAFETY: the slot at tail is free (free >= 1) and owned by the
        // producer until published.
        unsafe { crate::shm::copy::write(self.q.slot(self.tail), v) };
        self.tail = self.tail.wrapping_add(1);
        self.publish();
        Ok(())
    }

    /// Pushes, waiting for room. Fails only if the queue is closed or the
    /// consumer is gone.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// q.producer().unwrap().push(5).unwrap();
    /// ```
    #[inline(always)]
    pub fn push(&mut self, v: T) -> Result<(), PushError<T>> {
        match self.try_push(v) {
            Ok(()) => Ok(()),
            Err(e) => self.push_refused(e),
        }
    }

    /// `push` after `try_push` refused: waits if the ring was full.
    #[cold]
    #[inline(never)]
    fn push_refused(&mut self, e: TryPushError<T>) -> Result<(), PushError<T>> {
        match e.retry() {
            Ok(v) => self.push_until(v, Deadline::NEVER).map_err(PushTimeoutError::untimed),
            Err(e) => Err(e.untimed()),
        }
    }

    /// Pushes, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let _rx = q.consumer().unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.push(1).unwrap();
    /// tx.push(2).unwrap();
    /// assert_eq!(tx.push_timeout(3, Duration::from_millis(5)), Err(shmproc::PushTimeoutError::TimedOut(3)));
    /// ```
    pub fn push_timeout(&mut self, v: T, timeout: Duration) -> Result<(), PushTimeoutError<T>> {
        self.push_until(v, Deadline::after(timeout))
    }

    #[cold]
    #[inline(never)]
    fn push_until(&mut self, mut v: T, deadline: Deadline) -> Result<(), PushTimeoutError<T>> {
        let mut spins = 0u32;
        loop {
            match self.try_push(v) {
                Ok(()) => return Ok(()),
                Err(e) => v = e.retry()?,
            }
            if deadline.passed() {
                return Err(PushTimeoutError::TimedOut(v));
            }
            if spin_step(self.wait, &mut spins, &RING_SPIN) {
                continue;
            }
            let c = self.q.ctl();
            let seen = self.head_cache;
            sleep_on(&c.head.0, seen, &c.meta.0.producer_waiting, deadline, || {
                c.meta.0.closed.load(Ordering::Relaxed) != 0 || c.meta.0.consumer_gone.load(Ordering::Relaxed) != 0
            });
            self.watch.after_sleep();
        }
    }

    /// Pushes as many items of `items` as fit now, publishing them with one
    /// index update; returns how many. Nothing is pushed after `close`.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u32>::new(4).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// assert_eq!(tx.push_slice(&[1, 2, 3, 4, 5]), 4);
    /// ```
    pub fn push_slice(&mut self, items: &[T]) -> usize {
        if self.q.ctl().meta.0.closed.load(Ordering::Relaxed) != 0 {
            return 0;
        }
        let n = (self.free(items.len() as u64) as usize).min(items.len());
        for (i, v) in items[..n].iter().enumerate() {
            // SAFETY: the n slots from tail are free and owned by us.
            unsafe { crate::shm::copy::write(self.q.slot(self.tail.wrapping_add(i as u64)), *v) };
        }
        if n > 0 {
            self.tail = self.tail.wrapping_add(n as u64);
            self.publish();
        }
        n
    }

    /// Items waiting in the ring (a snapshot).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.push(1).unwrap();
    /// assert_eq!(tx.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether the ring is empty (a snapshot).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// assert!(q.producer().unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        self.q.ctl().detach(Role::Producer);
    }
}

/// The consumer end: owned by one thread at a time (`Send`, not `Sync`).
pub struct Consumer<T> {
    pub(super) q: Ends<T>,
    pub(super) head: u64,
    tail_cache: u64,
    wait: WaitStrategy,
    watch: PeerWatch,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: as for Producer.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T> std::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("head", &self.head).finish()
    }
}

impl<T: ShmType> Consumer<T> {
    /// Chooses how blocked pops wait (default [`WaitStrategy::Blocking`]).
    ///
    /// ```
    /// use shmproc::queue::{SpscQueue, WaitStrategy};
    /// let q = SpscQueue::<u8>::new(4).unwrap();
    /// let rx = q.consumer().unwrap().with_wait(WaitStrategy::BusyPoll);
    /// # drop(rx);
    /// ```
    pub fn with_wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Items available, refreshing the cached tail only if needed (clamped:
    /// a corrupted tail can only make us read garbage slots).
    #[inline(always)]
    pub(super) fn available(&mut self, want: u64) -> u64 {
        super::ring::available(self.head, &mut self.tail_cache, &self.q.ctl().tail.0, self.q.mask + 1, want)
    }

    #[inline(always)]
    pub(super) fn release(&mut self) {
        let c = self.q.ctl();
        publish_and_wake(c, &c.head.0, self.head, &c.meta.0.producer_waiting);
    }

    pub(super) fn empty_reason(&mut self) -> TryPopError {
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) != 0 {
            TryPopError::Closed
        } else if self.watch.gone(&m.producer, &m.producer_gone) {
            TryPopError::Disconnected
        } else {
            TryPopError::Empty
        }
    }

    /// Pops if an item is there; `Empty`, or `Closed` / `Disconnected` once
    /// drained.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let _tx = q.producer().unwrap();
    /// assert_eq!(rx.try_pop(), Err(shmproc::TryPopError::Empty));
    /// ```
    #[inline(always)]
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        if self.available(1) == 0 {
            // Re-check after learning the reason: the producer may have
            // pushed its last items just before leaving.
            let reason = self.empty_reason();
            if reason == TryPopError::Empty || self.available(1) == 0 {
                return Err(reason);
            }
        }
        // SAFETY: the slot at head is published (available >= 1) and not
        // reused by the producer until we release it.
        let v = unsafe { crate::shm::copy::read(self.q.slot(self.head)) };
        self.head = self.head.wrapping_add(1);
        self.release();
        Ok(v)
    }

    /// Pops, waiting for an item; `Closed` / `Disconnected` once drained.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// q.producer().unwrap().push(4).unwrap();
    /// assert_eq!(q.consumer().unwrap().pop(), Ok(4));
    /// ```
    #[inline(always)]
    pub fn pop(&mut self) -> Result<T, PopError> {
        match self.try_pop() {
            Ok(v) => Ok(v),
            Err(e) => self.pop_refused(e),
        }
    }

    /// `pop` after `try_pop` found nothing: waits if the ring was empty.
    #[cold]
    #[inline(never)]
    fn pop_refused(&mut self, e: TryPopError) -> Result<T, PopError> {
        match e.retry() {
            Ok(()) => self.pop_until(Deadline::NEVER).map_err(PopTimeoutError::untimed),
            Err(e) => Err(e.untimed()),
        }
    }

    /// Pops, waiting at most `timeout`.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let _tx = q.producer().unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// assert_eq!(rx.pop_timeout(std::time::Duration::from_millis(5)), Err(shmproc::PopTimeoutError::TimedOut));
    /// ```
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopTimeoutError> {
        self.pop_until(Deadline::after(timeout))
    }

    #[cold]
    #[inline(never)]
    fn pop_until(&mut self, deadline: Deadline) -> Result<T, PopTimeoutError> {
        let mut spins = 0u32;
        loop {
            match self.try_pop() {
                Ok(v) => return Ok(v),
                Err(e) => e.retry()?,
            }
            if deadline.passed() {
                return Err(PopTimeoutError::TimedOut);
            }
            // While spinning for the next item, keep its slot's line on
            // its way here: when the index says it is published, the read
            // finds the line already requested instead of missing after
            // the index miss (a round trip then moves one line per
            // direction, like a bare flag: ping-pong p50 1.18x -> 1.00x of
            // the hand-written floor).
            prefetch(self.q.slot(self.head));
            if spin_step(self.wait, &mut spins, &RING_SPIN) {
                continue;
            }
            let c = self.q.ctl();
            let seen = self.tail_cache;
            sleep_on(&c.tail.0, seen, &c.meta.0.consumer_waiting, deadline, || {
                c.meta.0.closed.load(Ordering::Relaxed) != 0 || c.meta.0.producer_gone.load(Ordering::Relaxed) != 0
            });
            self.watch.after_sleep();
        }
    }

    /// Pops up to `out.len()` items available now, releasing their slots
    /// with one index update; returns how many.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// q.producer().unwrap().push_slice(&[1, 2, 3]);
    /// let mut out = [0u8; 8];
    /// assert_eq!(q.consumer().unwrap().pop_into(&mut out), 3);
    /// ```
    pub fn pop_into(&mut self, out: &mut [T]) -> usize {
        let n = (self.available(out.len() as u64) as usize).min(out.len());
        for (i, o) in out[..n].iter_mut().enumerate() {
            // SAFETY: the n slots from head are published and ours to read.
            *o = unsafe { crate::shm::copy::read(self.q.slot(self.head.wrapping_add(i as u64))) };
        }
        if n > 0 {
            self.head = self.head.wrapping_add(n as u64);
            self.release();
        }
        n
    }

    /// Items waiting in the ring (a snapshot).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// assert_eq!(q.consumer().unwrap().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether the ring is empty (a snapshot).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// assert!(q.consumer().unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.q.ctl().detach(Role::Consumer);
    }
}
