//! Single-producer single-consumer ring of `T: Pod` in shared memory.
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
//! Sleeping: see `crate::wait::handshake` for the asymmetric handshake.
//! A sleeper also wakes every 100 ms to check that its peer process is
//! alive, so a peer killed with SIGKILL is noticed within about 100 ms.
//!
//! Untrusted memory: indices read from shared memory are only ever used
//! masked (`index & mask`), and the fill level is clamped to the capacity,
//! so a corrupted or hostile peer can make us read garbage, never touch
//! memory outside the ring.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use super::WaitStrategy;
use crate::OpenError;
use crate::shm::object::constructors;
use crate::shm::{Fingerprint, Kind, Mapped, Object};
use crate::sys::thread;
use crate::wait::Deadline;
use crate::wait::futex::{wait64_low, wake64_low};
use crate::wait::handshake;
use crate::wait::spin::{POLL, RING_SPIN, spin_step};

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

/// Why a push did not happen. The value is handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError<T> {
    /// `try_push` only: the ring is full.
    #[error("the queue is full")]
    Full(T),
    /// `push_timeout` only: still full when the timeout expired.
    #[error("timed out waiting for space in the queue")]
    TimedOut(T),
    /// The queue was closed.
    #[error("the queue is closed")]
    Closed(T),
    /// The consumer process detached or died.
    #[error("the consumer is gone")]
    Disconnected(T),
    /// Byte frames only: longer than the queue's frame limit.
    #[error("the frame is larger than the queue's max_frame")]
    TooLarge(T),
}

impl<T> PushError<T> {
    /// The value that was not pushed.
    ///
    /// ```
    /// use shmproc::queue::PushError;
    /// assert_eq!(PushError::Full(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            PushError::Full(v)
            | PushError::TimedOut(v)
            | PushError::Closed(v)
            | PushError::Disconnected(v)
            | PushError::TooLarge(v) => v,
        }
    }
}

/// Why a pop returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PopError {
    /// `try_pop` only: nothing to read.
    #[error("the queue is empty")]
    Empty,
    /// `pop_timeout` only: still empty when the timeout expired.
    #[error("timed out waiting for an item")]
    TimedOut,
    /// The queue was closed and is drained.
    #[error("the queue is closed")]
    Closed,
    /// The producer process detached or died and the queue is drained.
    #[error("the producer is gone")]
    Disconnected,
    /// Byte frames only: a frame header in shared memory is invalid (a
    /// buggy or hostile peer); nothing outside the ring was read.
    #[error("corrupted frame header in the queue")]
    Corrupted,
}

/// A role (producer or consumer) is already held by a live handle: in
/// another process, or in this one (roles are exclusive per handle: one
/// live producer and one live consumer per ring, across all processes and
/// threads). It can be taken once that handle is dropped or its process
/// has died.
///
/// ```
/// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
/// let tx = q.producer().unwrap();
/// let e = q.producer().unwrap_err();
/// assert_eq!((e.role, e.pid), ("producer", std::process::id()));
/// drop(tx);
/// assert!(q.producer().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {role} role of this queue is held by {}", holder(*pid))]
pub struct RoleError {
    /// "producer" or "consumer".
    pub role: &'static str,
    /// The holder's pid (ours if another handle of this process holds it).
    pub pid: u32,
}

fn holder(pid: u32) -> String {
    if pid == std::process::id() {
        format!("another live handle in this process ({pid})")
    } else {
        format!("live process {pid}")
    }
}

/// A bounded SPSC ring of `T: Pod` in shared memory, shared by name.
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
/// assert_eq!(rx.try_pop(), Err(shmproc::queue::PopError::Disconnected));
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

impl<T: Pod> Object for SpscQueue<T> {
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

impl<T: Pod> SpscQueue<T> {
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
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.push(1).unwrap();
    /// q.close();
    /// assert!(tx.push(2).is_err());
    /// let mut rx = q.consumer().unwrap();
    /// assert_eq!(rx.pop(), Ok(1));
    /// assert_eq!(rx.pop(), Err(shmproc::queue::PopError::Closed));
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

/// Publishes an index (`ring::publish`, Release) and wakes the peer if it
/// announced that it sleeps (see `fence_before_waiter_check`).
#[inline(always)]
pub(super) fn publish_and_wake(c: &SpscCtl, word: &AtomicU64, value: u64, peer_waiting: &AtomicU32) {
    super::ring::publish(word, value);
    handshake::fence_before_waiter_check(&c.meta.0.fences);
    if peer_waiting.load(Ordering::Relaxed) != 0 {
        wake64_low(word, 1);
    }
}

/// Asks for the cache line at `p` (a hint: no fault, no effect on
/// correctness; a no-op where there is no prefetch instruction).
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults and changes no architectural state.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Which end of an SPSC-style ring (items or byte frames).
#[derive(Debug, Clone, Copy)]
pub(super) enum Role {
    Producer,
    Consumer,
}

impl SpscCtl {
    /// The role's owner slot, its `gone` flag, its own index and the
    /// peer's index.
    fn role_words(&self, role: Role) -> (&AtomicU64, &AtomicU32, &AtomicU64, &AtomicU64) {
        let m = &self.meta.0;
        match role {
            Role::Producer => (&m.producer, &m.producer_gone, &self.tail.0, &self.head.0),
            Role::Consumer => (&m.consumer, &m.consumer_gone, &self.head.0, &self.tail.0),
        }
    }

    /// Takes `role` for this process (see [`claim`]); returns the role's
    /// own index and a first cached copy of the peer's.
    pub(super) fn attach(&self, role: Role) -> Result<(u64, u64), RoleError> {
        let (owner, gone, own, peer) = self.role_words(role);
        let name = match role {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        };
        claim(owner, gone, name)?;
        // Acquire: pairs with the peer's Release store of its index
        // (`ring::publish`), so what it published is visible.
        Ok((own.load(Ordering::Relaxed), peer.load(Ordering::Acquire)))
    }

    /// Gives `role` up (a handle's Drop): the peer sees it gone, the next
    /// claimant may take it, and a peer asleep on our index wakes to learn.
    pub(super) fn detach(&self, role: Role) {
        let (owner, gone, own, _) = self.role_words(role);
        // SeqCst: pairs with the peer's Acquire load of `gone` (PeerWatch)
        // and its re-check in sleep_on; ordered before the wake below.
        gone.store(1, Ordering::SeqCst);
        // Release: pairs with the next claimant's Acquire load/CAS in claim().
        owner.store(0, Ordering::Release);
        wake64_low(own, u32::MAX);
    }

    /// Hands `role` over to the process `owner` (its packed identity) before
    /// that process has touched the ring: from now on the role counts as
    /// attached to it, so if it dies before its first use the peer sees
    /// Disconnected. Only a free role (or one of a dead process) is handed
    /// over; returns whether it was.
    pub(super) fn designate(&self, role: Role, owner: u64) -> bool {
        let (slot, gone, _, _) = self.role_words(role);
        // Acquire: pairs with the Release store of the previous holder's detach.
        let cur = slot.load(Ordering::Acquire);
        if cur != 0 && !thread::owner_is_dead(cur) {
            return false;
        }
        // Relaxed is enough: the receiver's claim() reads only this word;
        // the flag store below is SeqCst (pairs as in claim()).
        if slot.compare_exchange(cur, owner | DESIGNATED, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return false;
        }
        // SeqCst: as in claim(): the peer's Acquire load of `gone` sees the new holder present.
        gone.store(0, Ordering::SeqCst);
        true
    }

    /// Gives back `role` if it was handed over to this process and never
    /// claimed (the receiving handle is dropped unused): the peer sees it
    /// gone at once. A claimed role is left alone.
    pub(super) fn release_designation(&self, role: Role) {
        let (slot, gone, own, _) = self.role_words(role);
        let me = thread::process_packed() | DESIGNATED;
        // Release: pairs with the next claimant's Acquire load/CAS in claim().
        if slot.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed).is_ok() {
            // SeqCst: as in detach().
            gone.store(1, Ordering::SeqCst);
            wake64_low(own, u32::MAX);
        }
    }

    /// Closes the ring and wakes both ends.
    pub(super) fn close(&self) {
        // SeqCst: ordered before the wake syscalls below; pairs with the sleepers' re-check after their heavy barrier.
        self.meta.0.closed.store(1, Ordering::SeqCst);
        wake64_low(&self.tail.0, u32::MAX);
        wake64_low(&self.head.0, u32::MAX);
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

/// Flag in a role slot: the role was handed over to the process named by
/// the rest of the word ([`SpscCtl::designate`]) and not claimed yet. Bit
/// 31 of the pid half is free (pids are < 2^22, see `thread::TID_MASK`),
/// so liveness checks read the word unchanged.
const DESIGNATED: u64 = 1 << 31;

/// Takes a role for a new handle of this process: free, handed over to
/// this process and not claimed yet, or held by a dead process
/// (reclaimed). Held by a live handle, ours included, it is refused: two
/// producers (or consumers) would write one slot and one index, and either
/// one's Drop would tell the peer the role is gone while the other still
/// uses it. `gone` is reset so the peer sees us as present.
pub(super) fn claim(slot: &AtomicU64, gone: &AtomicU32, role: &'static str) -> Result<(), RoleError> {
    let me = thread::process_packed();
    // Acquire: pairs with the Release store of the previous holder's detach.
    let mut cur = slot.load(Ordering::Acquire);
    loop {
        if cur != 0 && cur != me | DESIGNATED && (cur == me || !thread::owner_is_dead(cur)) {
            return Err(RoleError { role, pid: cur as u32 & thread::TID_MASK });
        }
        // Acquire: pairs with the Release store of the previous holder's
        // detach, so we see the index it left.
        match slot.compare_exchange(cur, me, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                // SeqCst: the peer's Acquire load of `gone` (PeerWatch) sees us present before our first index store.
                gone.store(0, Ordering::SeqCst);
                return Ok(());
            }
            Err(now) => cur = now,
        }
    }
}

/// Tracks whether a handle's peer has left or died. The `gone` flag is
/// read on every call; the liveness check reads `/proc`, so it runs at most
/// once per `POLL`, and even the clock is read only every 1024th call:
/// busy polling an empty queue stays cheap.
#[derive(Debug, Default)]
pub(super) struct PeerWatch {
    last_check: Option<Instant>,
    calls: u32,
}

impl PeerWatch {
    /// After a sleep: let the next call read the clock (and, if a poll
    /// period passed, check liveness) whatever the call count.
    pub(super) fn after_sleep(&mut self) {
        self.calls = 1023;
    }

    pub(super) fn gone(&mut self, owner_slot: &AtomicU64, gone: &AtomicU32) -> bool {
        // Acquire: pairs with the SeqCst store in the peer's Drop (or our Release store below).
        if gone.load(Ordering::Acquire) != 0 {
            return true;
        }
        self.calls = self.calls.wrapping_add(1);
        if self.last_check.is_some() && !self.calls.is_multiple_of(1024) {
            return false;
        }
        let now = Instant::now();
        if self.last_check.is_some_and(|t| now.duration_since(t) < POLL) {
            return false;
        }
        self.last_check = Some(now);
        let owner = owner_slot.load(Ordering::Relaxed);
        if owner != 0 && thread::owner_is_dead(owner) {
            // Release: pairs with the Acquire load above, in any handle of this queue.
            gone.store(1, Ordering::Release);
            return true;
        }
        false
    }
}

/// Sleeps on `word` (low half) while it still equals `seen`, with the
/// flag/barrier handshake; returns when woken, on timeout, or on `POLL`.
pub(super) fn sleep_on(word: &AtomicU64, seen: u64, flag: &AtomicU32, deadline: Deadline, recheck: impl Fn() -> bool) {
    // SeqCst store, then the heavy barrier: pairs with the peer's plain
    // (compiler-fenced) flag load after its index store.
    flag.store(1, Ordering::SeqCst);
    handshake::after_announcing();
    // Acquire: pairs with the peer's Release store of this index.
    if word.load(Ordering::Acquire) == seen && !recheck() {
        wait64_low(word, seen as u32, deadline.capped(POLL));
    }
    flag.store(0, Ordering::Relaxed);
}

/// What a producer or consumer end needs on its hot path, with the
/// pointers resolved once (no pointer chasing through the segment handle
/// on every operation).
struct Ends<T> {
    queue: SpscQueue<T>,
    ctl: *const SpscCtl,
    slots: *mut T,
    mask: u64,
}

impl<T> Ends<T> {
    #[inline(always)]
    fn ctl(&self) -> &SpscCtl {
        // SAFETY: `queue` keeps the mapping alive as long as `self`; the
        // control block is atomics only.
        unsafe { &*self.ctl }
    }
}

impl<T: Pod> Ends<T> {
    fn new(queue: SpscQueue<T>) -> Self {
        let ctl = queue.m.ctl() as *const SpscCtl;
        let slots = queue.m.data() as *mut T;
        let mask = queue.mask;
        Ends { queue, ctl, slots, mask }
    }

    #[inline(always)]
    fn slot(&self, index: u64) -> *mut T {
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
    q: Ends<T>,
    tail: u64,
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

impl<T: Pod> Producer<T> {
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
    fn free(&mut self, want: u64) -> u64 {
        super::ring::free(self.tail, &mut self.head_cache, &self.q.ctl().head.0, self.q.mask + 1, want)
    }

    /// Publishes `self.tail` and wakes a sleeping consumer.
    #[inline(always)]
    fn publish(&mut self) {
        let c = self.q.ctl();
        publish_and_wake(c, &c.tail.0, self.tail, &c.meta.0.consumer_waiting);
    }

    fn refusal<V>(&mut self, v: V) -> Option<PushError<V>> {
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) != 0 {
            Some(PushError::Closed(v))
        } else if self.watch.gone(&m.consumer, &m.consumer_gone) {
            Some(PushError::Disconnected(v))
        } else {
            None
        }
    }

    /// Pushes if there is room: [`PushError::Full`] otherwise.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.try_push(1).unwrap();
    /// tx.try_push(2).unwrap();
    /// assert_eq!(tx.try_push(3), Err(shmproc::queue::PushError::Full(3)));
    /// ```
    #[inline(always)]
    pub fn try_push(&mut self, v: T) -> Result<(), PushError<T>> {
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) | m.consumer_gone.load(Ordering::Relaxed) != 0 {
            return Err(self.refusal(v).unwrap_or(PushError::Closed(v)));
        }
        if self.free(1) == 0 {
            return Err(self.refusal(v).unwrap_or(PushError::Full(v)));
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
            Err(PushError::Full(v)) => self.push_until(v, Deadline::NEVER),
            done => done,
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
    /// assert_eq!(tx.push_timeout(3, Duration::from_millis(5)), Err(shmproc::queue::PushError::TimedOut(3)));
    /// ```
    pub fn push_timeout(&mut self, v: T, timeout: Duration) -> Result<(), PushError<T>> {
        self.push_until(v, Deadline::after(timeout))
    }

    #[cold]
    #[inline(never)]
    fn push_until(&mut self, mut v: T, deadline: Deadline) -> Result<(), PushError<T>> {
        let mut spins = 0u32;
        loop {
            match self.try_push(v) {
                Err(PushError::Full(back)) => v = back,
                other => return other,
            }
            if deadline.passed() {
                return Err(PushError::TimedOut(v));
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

    /// Borrows the next free slot to fill in place; the item is published
    /// by [`WriteLoan::commit`] (dropping the loan without commit publishes
    /// nothing). `Err` as for [`try_push`](Self::try_push): `Closed` once
    /// the queue is closed.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<[u64; 8]>::new(4).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// let mut loan = tx.loan().unwrap();
    /// loan.write([7; 8]);
    /// loan.commit().unwrap();
    /// assert_eq!(q.consumer().unwrap().pop().unwrap(), [7; 8]);
    /// ```
    pub fn loan(&mut self) -> Result<WriteLoan<'_, T>, PushError<()>> {
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) | m.consumer_gone.load(Ordering::Relaxed) != 0 {
            return Err(self.refusal(()).unwrap_or(PushError::Closed(())));
        }
        if self.free(1) == 0 {
            return Err(self.refusal(()).unwrap_or(PushError::Full(())));
        }
        let slot = self.q.slot(self.tail);
        Ok(WriteLoan { p: self, slot })
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

/// A slot of the ring lent to the producer; see [`Producer::loan`].
pub struct WriteLoan<'a, T: Pod> {
    p: &'a mut Producer<T>,
    slot: *mut T,
}

impl<T: Pod> WriteLoan<'_, T> {
    /// Writes the whole item into the slot.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u16>::new(2).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// let mut l = tx.loan().unwrap();
    /// l.write(3);
    /// l.commit().unwrap();
    /// ```
    pub fn write(&mut self, v: T) {
        // SAFETY: the slot is free and owned by the producer until commit.
        unsafe { crate::shm::copy::write(self.slot, v) }
    }

    /// The slot itself, to fill field by field.
    ///
    /// # Safety
    /// The reference must not outlive the loan, and no other process may
    /// write this slot meanwhile (true for every process that follows the
    /// SPSC protocol: the consumer does not touch unpublished slots).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<[u8; 4]>::new(2).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// let mut l = tx.loan().unwrap();
    /// // SAFETY: single producer; the consumer never touches unpublished slots.
    /// unsafe { l.as_mut()[2] = 9 };
    /// l.commit().unwrap();
    /// ```
    pub unsafe fn as_mut(&mut self) -> &mut T {
        // SAFETY: caller's contract; the slot is in bounds and aligned.
        unsafe { &mut *self.slot }
    }

    /// Publishes the slot as the next item, unless the queue was closed
    /// since the loan was taken: then nothing is published and the result
    /// is `Closed` (as a push after `close` would be). The consumer being
    /// gone does not refuse a commit (as a push that won the race with its
    /// exit: the item is simply never read).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u16>::new(2).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.loan().unwrap().commit().unwrap();
    /// assert_eq!(q.len(), 1);
    /// let loan = tx.loan().unwrap();
    /// q.close();
    /// assert_eq!(loan.commit(), Err(shmproc::queue::PushError::Closed(())));
    /// assert_eq!(q.len(), 1);
    /// ```
    pub fn commit(self) -> Result<(), PushError<()>> {
        if self.p.q.ctl().meta.0.closed.load(Ordering::Relaxed) != 0 {
            return Err(PushError::Closed(()));
        }
        self.p.tail = self.p.tail.wrapping_add(1);
        self.p.publish();
        Ok(())
    }
}

/// The consumer end: owned by one thread at a time (`Send`, not `Sync`).
pub struct Consumer<T> {
    q: Ends<T>,
    head: u64,
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

impl<T: Pod> Consumer<T> {
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
    fn available(&mut self, want: u64) -> u64 {
        super::ring::available(self.head, &mut self.tail_cache, &self.q.ctl().tail.0, self.q.mask + 1, want)
    }

    #[inline(always)]
    fn release(&mut self) {
        let c = self.q.ctl();
        publish_and_wake(c, &c.head.0, self.head, &c.meta.0.producer_waiting);
    }

    fn empty_reason(&mut self) -> PopError {
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) != 0 {
            PopError::Closed
        } else if self.watch.gone(&m.producer, &m.producer_gone) {
            PopError::Disconnected
        } else {
            PopError::Empty
        }
    }

    /// Pops if an item is there; `Empty`, or `Closed` / `Disconnected` once
    /// drained.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let _tx = q.producer().unwrap();
    /// assert_eq!(rx.try_pop(), Err(shmproc::queue::PopError::Empty));
    /// ```
    #[inline(always)]
    pub fn try_pop(&mut self) -> Result<T, PopError> {
        if self.available(1) == 0 {
            // Re-check after learning the reason: the producer may have
            // pushed its last items just before leaving.
            let reason = self.empty_reason();
            if reason == PopError::Empty || self.available(1) == 0 {
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
            Err(PopError::Empty) => self.pop_until(Deadline::NEVER),
            done => done,
        }
    }

    /// Pops, waiting at most `timeout`.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let _tx = q.producer().unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// assert_eq!(rx.pop_timeout(std::time::Duration::from_millis(5)), Err(shmproc::queue::PopError::TimedOut));
    /// ```
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopError> {
        self.pop_until(Deadline::after(timeout))
    }

    #[cold]
    #[inline(never)]
    fn pop_until(&mut self, deadline: Deadline) -> Result<T, PopError> {
        let mut spins = 0u32;
        loop {
            match self.try_pop() {
                Err(PopError::Empty) => {}
                other => return other,
            }
            if deadline.passed() {
                return Err(PopError::TimedOut);
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

    /// Borrows the oldest item in place; its slot is given back by
    /// [`ReadLoan::release`] (dropping the loan without release leaves the
    /// item in the queue). `Err` as for [`try_pop`](Self::try_pop).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<[u32; 16]>::new(2).unwrap();
    /// q.producer().unwrap().push([3; 16]).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let loan = rx.peek().unwrap();
    /// assert_eq!(loan.read()[15], 3);
    /// loan.release();
    /// assert!(q.is_empty());
    /// ```
    pub fn peek(&mut self) -> Result<ReadLoan<'_, T>, PopError> {
        if self.available(1) == 0 {
            let reason = self.empty_reason();
            if reason == PopError::Empty || self.available(1) == 0 {
                return Err(reason);
            }
        }
        let slot = self.q.slot(self.head);
        Ok(ReadLoan { c: self, slot })
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

/// The oldest item, lent in place; see [`Consumer::peek`].
pub struct ReadLoan<'a, T: Pod> {
    c: &'a mut Consumer<T>,
    slot: *const T,
}

impl<T: Pod> ReadLoan<'_, T> {
    /// A copy of the item.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// q.producer().unwrap().push(6).unwrap();
    /// assert_eq!(q.consumer().unwrap().peek().unwrap().read(), 6);
    /// ```
    pub fn read(&self) -> T {
        // SAFETY: the slot is published and not reused until release.
        unsafe { crate::shm::copy::read(self.slot) }
    }

    /// The item in place, without copying.
    ///
    /// # Safety
    /// The reference must not outlive the loan, and no other process may
    /// write this slot meanwhile (true for a producer that follows the SPSC
    /// protocol: it does not reuse a slot before the consumer releases it).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<[u8; 64]>::new(2).unwrap();
    /// q.producer().unwrap().push([1; 64]).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let loan = rx.peek().unwrap();
    /// // SAFETY: single producer following the protocol.
    /// assert_eq!(unsafe { loan.as_ref() }.iter().map(|&b| b as u32).sum::<u32>(), 64);
    /// ```
    pub unsafe fn as_ref(&self) -> &T {
        // SAFETY: caller's contract; in bounds and aligned.
        unsafe { &*self.slot }
    }

    /// Gives the slot back to the producer (the item is consumed).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// q.producer().unwrap().push(6).unwrap();
    /// q.consumer().unwrap().peek().unwrap().release();
    /// assert!(q.is_empty());
    /// ```
    pub fn release(self) {
        self.c.head = self.c.head.wrapping_add(1);
        self.c.release();
    }
}
