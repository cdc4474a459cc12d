//! Bounded multi-producer multi-consumer ring of `T: ShmType` in shared memory.
//!
//! Algorithm: Vyukov's bounded MPMC queue with crossbeam's refinements
//! (see [`vyukov`](super::vyukov)): a push or pop is one CAS on `tail` or
//! `head` plus one store to the slot's sequence word, with no lock and no
//! fence on x86. Each thread announces its claims in a participant
//! record ([`records`](super::records)) first: that is what makes a
//! process's death repairable (the repair itself is in
//! [`repair`](super::repair), `JoinableQueue` accounting in
//! [`joinable`](super::joinable)).
//!
//! Waiting: a full or empty queue is answered by yielding the core (the
//! process that can help may need it), then by sleeping on a futex word
//! with a waiter count. The sleeper registers, issues a process-wide
//! asymmetric barrier (`membarrier`), and re-checks; the other side only
//! loads the waiter count after its publishing store (no fence), so an
//! uncontended push or pop makes no syscall.
//!
//! Guarantees when a process dies (SIGKILL) at any instruction:
//! - inside `push`: its item is either entirely in the queue or not at
//!   all. A slot it had claimed and not filled is found by the consumer
//!   that reaches it, which sees no live participant covering it, marks it
//!   skipped and moves on (within about a millisecond of waiting);
//! - inside `pop`: its item is either still in the queue or removed (and
//!   lost with the process); a slot it had not released is freed by the
//!   next producer that needs it;
//! - survivors never block on its account, and items pushed by others are
//!   neither lost nor duplicated;
//! - `qsize` counts a dead producer's claimed slot until a consumer has
//!   skipped it; `task_done` counts of a dead consumer are lost, so a `join`
//!   on a `JoinableQueue` then waits for them (use `join_timeout`): at most
//!   one per consumer killed inside a pop (its item, or a dead producer's
//!   slot it had repaired and not yet uncounted).
//!
//! All processes must share one PID namespace and see `/proc` (as for the
//! crate's locks): that is how a dead claimant is told from a slow one. A
//! stopped (SIGSTOP) claimant is alive: others wait for it.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::WaitStrategy;
use super::item::{RingItem, SLOTS_BITS, Slot, geometry};
use super::records::Table;
use super::error::{GetError, GetTimeoutError, PutError, PutTimeoutError, TryGetError, TryPutError};
use super::joinable::JoinWords;
use super::repair::{Flight, Op};
use super::spsc::Line;
use super::vyukov::{ByValue, CLOSED, Refused, Ring, SlotRead, Slots};
use crate::OpenError;
use crate::shm::object::constructors;
use crate::shm::{Fingerprint, Kind, Mapped, Object};
use crate::wait::Deadline;
use crate::wait::futex::{wait32, wake32};
use crate::wait::handshake;
use crate::wait::spin::{MPMC_SPIN, POLL, spin_step};

mod waitable;

/// The shared control block.
#[repr(C)]
pub(crate) struct MpmcCtl {
    /// Next position to claim for a push; bit 63: closed.
    pub(super) tail: Line<AtomicU64>,
    /// Next position to claim for a pop.
    pub(super) head: Line<AtomicU64>,
    /// Read on every operation, written only when somebody sleeps.
    meta: Line<Meta>,
    /// Written by `task_done`, joiners and repairs.
    pub(super) join: Line<JoinWords>,
    pub(super) records: Table,
}

#[repr(C)]
struct Meta {
    consumers_waiting: AtomicU32,
    producers_waiting: AtomicU32,
    /// Bumped when an item arrives and a consumer sleeps; they sleep on it.
    items_seq: AtomicU32,
    /// Bumped when a slot frees up and a producer sleeps.
    space_seq: AtomicU32,
    /// Some participant cannot use membarrier: wakers must fence.
    fences: AtomicU32,
    /// The queue's size limit (Python's `maxsize`), 1..=ring slots.
    limit: AtomicU32,
}

/// A bounded MPMC queue of `T: ShmType` in shared memory: any number of
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
/// assert_eq!(q.try_pop(), Err(shmproc::TryGetError::Empty));
/// ```
// repr(C): `MpmcQueue<PodVia<T>>` and `MpmcQueue<T>` have one layout (no
// field's type depends on `T` but the zero-sized marker), see `as_plain`.
#[repr(C)]
pub struct MpmcQueue<T> {
    m: Mapped<MpmcCtl>,
    /// The control block and the first slot, resolved once (both inside
    /// the mapping that `m` keeps alive).
    ctl: *const MpmcCtl,
    base: *mut u8,
    /// Bytes per slot (`Slot<T>`, or a frame ring's slot size).
    stride: usize,
    pub(super) slots: u64,
    limit: u64,
    wait: WaitStrategy,
    _t: PhantomData<T>,
}

// SAFETY: the raw pointers point into the shared mapping kept alive by `m` (itself Send + Sync); every access
// through them is to atomics or under the ring protocol, from any thread or process; items are `T: Send`.
unsafe impl<T: Send> Send for MpmcQueue<T> {}
// SAFETY: as above; `&MpmcQueue` only offers operations that are safe to run concurrently.
unsafe impl<T: Send> Sync for MpmcQueue<T> {}

impl<T> Clone for MpmcQueue<T> {
    fn clone(&self) -> Self {
        MpmcQueue {
            m: self.m.clone(),
            ctl: self.ctl,
            base: self.base,
            stride: self.stride,
            slots: self.slots,
            limit: self.limit,
            wait: self.wait,
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for MpmcQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpmcQueue").field("segment", &self.m).field("capacity", &self.limit).finish()
    }
}

/// Largest supported capacity.
pub(crate) const MAX_CAPACITY: u64 = 1 << 30;

/// A blocked put whose ring is full waits, while it spins (at most
/// `MPMC_SPIN.limit` steps), until this many slots are free (at most a
/// quarter of the ring) before it tries again, reading only the indices
/// meanwhile. Trying at every step puts one item into each slot as soon as
/// its consumer frees it, so the producer works right beside the consumer:
/// each attempt reads the slot the consumer is releasing and `head`, and
/// prefetches for writing the slots the consumer reads next, taking those
/// lines from it on every item. Measured, `Queue<String>` 1 -> 1 process
/// with a producer faster than its consumer (`put_ref`/`get`): see the
/// README's figures. Sleeping, closing, deadlines and `put_nowait` are as
/// before; a put that finds room never waits here.
const FULL_BATCH: u64 = 64;

/// Rounds in a row after which a waiting put/get whose attempts keep
/// failing though the indices say it could go on (`sleep`'s `stuck`) naps.
const STUCK_AFTER: u32 = 64;
/// That nap, at most (a change to the queue wakes it sooner).
const STUCK_NAP: std::time::Duration = std::time::Duration::from_millis(10);

/// The ring has the next power of two of slots, at least 2 (Vyukov's
/// sequence words need two); `limit` is the capacity.
fn ring_slots(cap: u64) -> Result<u64, String> {
    if cap == 0 || cap > MAX_CAPACITY {
        Err(format!("capacity {cap} is not supported: use 1..={MAX_CAPACITY}"))
    } else {
        Ok(cap.next_power_of_two().max(2))
    }
}

/// A frame ring's creation parameter: the capacity (low 32 bits) and the
/// slot size in 64-byte units (above); a pod ring's is the capacity.
pub(super) fn frame_init(cap: u64, stride: u64) -> u64 {
    (cap & SLOTS_BITS) | ((stride / super::item::FRAME_ALIGN) << 32)
}

impl<T: RingItem> Object for MpmcQueue<T> {
    const KIND: Kind = T::KIND;
    type Init = u64;
    type Ctl = MpmcCtl;
    fn fingerprint() -> Fingerprint {
        T::fingerprint()
    }
    fn capacity(init: &u64) -> Result<u64, OpenError> {
        let cap = if T::FRAMES { init & SLOTS_BITS } else { *init };
        let slots = ring_slots(cap).map_err(OpenError::InvalidArgument)?;
        Ok(slots | (init & !SLOTS_BITS & if T::FRAMES { u64::MAX } else { 0 }))
    }
    fn data_size(capacity: u64) -> Option<u64> {
        let (slots, stride) = geometry::<T>(capacity)?;
        slots.checked_mul(stride)
    }
    fn new_ctl(init: &u64, _: u64) -> MpmcCtl {
        let cap = if T::FRAMES { init & SLOTS_BITS } else { *init };
        let z = || AtomicU32::new(0);
        MpmcCtl {
            tail: Line(AtomicU64::new(0)),
            head: Line(AtomicU64::new(0)),
            meta: Line(Meta {
                consumers_waiting: z(),
                producers_waiting: z(),
                items_seq: z(),
                space_seq: z(),
                fences: z(),
                limit: AtomicU32::new(cap as u32),
            }),
            join: Line(JoinWords::new()),
            records: Table::new(),
        }
    }
    unsafe fn init_data(data: *mut u8, _: u64, capacity: u64) {
        let (slots, stride) = geometry::<T>(capacity).expect("checked by data_size");
        for i in 0..slots {
            // Slot i starts free for the producer of position i.
            // SAFETY: `data` holds `slots` zeroed slots of `stride` bytes, each starting with its 8-aligned
            // sequence word (caller's contract); the segment is not yet published, so nobody else reads them.
            unsafe { data.add((i * stride) as usize).cast::<AtomicU64>().write(AtomicU64::new(i)) };
        }
    }
    fn validate(m: &Mapped<MpmcCtl>) -> Result<(), String> {
        let (slots, stride) = geometry::<T>(m.capacity()).ok_or("impossible slot size")?;
        if T::FRAMES && !stride.is_multiple_of(super::item::FRAME_ALIGN) {
            return Err(format!("frame slot of {stride} bytes"));
        }
        let limit = u64::from(m.ctl().meta.0.limit.load(Ordering::Relaxed));
        if !slots.is_power_of_two() || !(2..=MAX_CAPACITY).contains(&slots) {
            return Err(format!("ring of {slots} slots"));
        }
        if limit == 0 || limit > slots {
            return Err(format!("capacity {limit} does not fit a ring of {slots} slots"));
        }
        Ok(())
    }
    fn from_mapped(m: Mapped<MpmcCtl>) -> Self {
        handshake::use_fences_unless_membarrier(&m.ctl().meta.0.fences);
        // Validated: a power of two >= 2 slots of a possible size.
        let (slots, stride) = geometry::<T>(m.capacity()).expect("validated at create/open");
        // Validated at open; re-read once here and never trusted again.
        let limit = u64::from(m.ctl().meta.0.limit.load(Ordering::Relaxed)).clamp(1, slots);
        let (ctl, base) = (m.ctl() as *const MpmcCtl, m.data());
        MpmcQueue { m, ctl, base, stride: stride as usize, slots, limit, wait: WaitStrategy::Blocking, _t: PhantomData }
    }
}

/// The ring's slots in the mapping.
pub(super) struct ShmSlots<T> {
    base: *mut u8,
    mask: u64,
    /// Bytes per slot (for a pod ring, a constant: `size_of::<Slot<T>>()`).
    stride: usize,
    _t: PhantomData<T>,
}

impl<T: RingItem> ShmSlots<T> {
    /// The start of the slot of `pos` (masked: inside the validated data
    /// area of `mask + 1` slots of `stride` bytes), 8-aligned.
    #[inline(always)]
    pub(super) fn slot(&self, pos: u64) -> *mut u8 {
        let stride = if T::FRAMES { self.stride } else { std::mem::size_of::<Slot<T>>() };
        // SAFETY: (pos & mask) < slots, and slots * stride bytes from `base` are mapped (validated layout).
        unsafe { self.base.add((pos & self.mask) as usize * stride) }
    }

    /// The slot's bytes (frame rings).
    #[inline(always)]
    pub(super) fn stride(&self) -> usize {
        self.stride
    }

    /// How many slots (`mask + 1`).
    pub(super) fn count(&self) -> u64 {
        self.mask + 1
    }
}

impl<T: RingItem> Slots<T> for ShmSlots<T> {
    #[inline(always)]
    fn seq(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: every slot starts with its 8-aligned sequence word, inside the mapping (`slot`); the word is an
        // atomic, so a shared reference is sound while other processes write it.
        unsafe { &*self.slot(pos).cast::<AtomicU64>() }
    }
    #[inline(always)]
    unsafe fn write(&self, pos: u64, v: T) {
        // SAFETY: a pod ring's slot is a `Slot<T>` (in bounds, aligned, as in `seq`); the caller owns the slot
        // (vyukov's contract). No reference is formed.
        unsafe { T::write(std::ptr::addr_of_mut!((*self.slot(pos).cast::<Slot<T>>()).val), v) }
    }
    #[inline(always)]
    unsafe fn read(&self, pos: u64) -> T {
        // SAFETY: as in `write`; any bit pattern is a valid pod item.
        unsafe { T::read(std::ptr::addr_of!((*self.slot(pos).cast::<Slot<T>>()).val)) }
    }
}

impl<T: RingItem> MpmcQueue<T> {
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

    #[inline(always)]
    pub(super) fn ctl(&self) -> &MpmcCtl {
        // SAFETY: points at the control block inside the mapping that `self.m` keeps alive; made of atomics.
        unsafe { &*self.ctl }
    }

    #[inline(always)]
    fn ring(&self) -> Ring<'_> {
        let c = self.ctl();
        Ring { tail: &c.tail.0, head: &c.head.0, slots: self.slots, limit: self.limit }
    }

    #[inline(always)]
    pub(super) fn slots(&self) -> ShmSlots<T> {
        ShmSlots { base: self.base, mask: self.slots - 1, stride: self.stride, _t: PhantomData }
    }

    /// Runs one attempt of a protocol operation with our record.
    #[inline(always)]
    fn attempt<R>(
        &self,
        flight: &mut Flight<'_, T>,
        f: impl FnOnce(&Ring<'_>, &ShmSlots<T>, &mut Op<'_, '_, T>) -> R,
    ) -> R {
        let mine = self.ctl().records.mine();
        let mut op = Op { rec: mine.record(), flight };
        f(&self.ring(), &self.slots(), &mut op)
    }

    /// The most items the queue holds (any size 1..=2^30).
    ///
    /// ```
    /// assert_eq!(shmproc::queue::MpmcQueue::<u8>::new(10).unwrap().capacity(), 10);
    /// ```
    pub fn capacity(&self) -> usize {
        self.limit as usize
    }

    /// Number of items: exact at one instant (a consistent snapshot of both
    /// indices). An item whose push is under way counts (a pop waits for
    /// it). A slot claimed by a producer killed before it published is
    /// not counted once it reaches the front: the front is settled first
    /// (see `settle_front`), as a pop would find it. Such a slot behind
    /// items still counts until the consumers reach it.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(3).unwrap();
    /// q.push(1).unwrap();
    /// assert_eq!(q.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        if self.ring().len() == 0 {
            return 0;
        }
        self.settle_front();
        self.ring().len() as usize
    }

    /// Settles the front of the ring (`Ring::settle_front`: repaired slots
    /// discarded, a dead producer's unfinished claim there repaired) with
    /// our record, as a `try_pop` would wait on it; whether an item (or a
    /// live producer's claim) is at the front.
    fn settle_front(&self) -> bool {
        self.attempt(&mut Flight::new(self, false, Deadline::NEVER), |ring, slots, op| ring.settle_front(slots, op))
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

    /// Closes the queue: pushes fail with `Closed` (none lands after
    /// `close` returns), pops drain what is left and then fail with
    /// `Closed`; every blocked caller is woken.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(4).unwrap();
    /// q.push(1).unwrap();
    /// q.close();
    /// assert!(q.push(2).is_err());
    /// assert_eq!(q.pop(), Ok(1));
    /// assert_eq!(q.pop(), Err(shmproc::GetError::Closed));
    /// ```
    pub fn close(&self) {
        let c = self.ctl();
        // SeqCst: producers' claim CASes fail from now on; ordered before
        // the bumps and wakes below (sleepers re-check after waking).
        c.tail.0.fetch_or(CLOSED, Ordering::SeqCst);
        let m = &c.meta.0;
        // Release: pairs with the sleepers' Acquire ticket loads.
        m.items_seq.fetch_add(1, Ordering::Release);
        m.space_seq.fetch_add(1, Ordering::Release);
        wake32(&m.items_seq, u32::MAX);
        wake32(&m.space_seq, u32::MAX);
    }

    /// Whether [`close`](Self::close) was called.
    ///
    /// ```
    /// assert!(!shmproc::queue::MpmcQueue::<u8>::new(4).unwrap().is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.ctl().tail.0.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// After publishing or releasing: wakes up to `n` sleepers counted in
    /// `waiting` (sleeping on `seq`).
    #[inline(always)]
    fn wake_if_waiting(&self, waiting: &AtomicU32, seq: &AtomicU32, n: u32) {
        handshake::fence_before_waiter_check(&self.ctl().meta.0.fences);
        if waiting.load(Ordering::Relaxed) != 0 {
            self.wake(seq, n);
        }
    }

    #[cold]
    pub(super) fn wake(&self, seq: &AtomicU32, n: u32) {
        // Release: pairs with the sleeper's Acquire ticket load.
        seq.fetch_add(1, Ordering::Release);
        wake32(seq, n);
    }

    #[inline(always)]
    pub(super) fn pushed(&self, n: u32) {
        let m = &self.ctl().meta.0;
        self.wake_if_waiting(&m.consumers_waiting, &m.items_seq, n);
    }

    #[inline(always)]
    pub(super) fn popped(&self, n: u32) {
        let m = &self.ctl().meta.0;
        self.wake_if_waiting(&m.producers_waiting, &m.space_seq, n);
    }

    /// Sleeps on `seq` (counted in `waiting`) unless `ready()` says the
    /// condition changed after we registered; at most until `deadline` or
    /// one `POLL`.
    /// Sleeps on `seq` unless `ready()`; true if it was ready (no sleep,
    /// but a nap if `stuck`).
    fn sleep(&self, waiting: &AtomicU32, seq: &AtomicU32, deadline: Deadline, ready: impl Fn() -> bool, stuck: bool) -> bool {
        // Acquire: pairs with the Release bump in `wake` / `close`.
        let ticket = seq.load(Ordering::Acquire);
        // SeqCst, then the heavy barrier: pairs with the waker's plain
        // (compiler-fenced) load of `waiting` after its store.
        waiting.fetch_add(1, Ordering::SeqCst);
        handshake::after_announcing();
        let was_ready = ready();
        if !was_ready {
            wait32(seq, ticket, deadline.capped(POLL));
        } else if stuck {
            // Ready by the indices, yet the attempts keep failing: a slot
            // whose sequence word a hostile peer wrote (the ring refuses it
            // as full/empty), or a peer stalled mid-operation. Nap (woken
            // by the next change, as any sleeper) instead of burning a core.
            wait32(seq, ticket, deadline.capped(STUCK_NAP));
        }
        waiting.fetch_sub(1, Ordering::Relaxed);
        was_ready
    }

    /// One push attempt.
    #[inline(always)]
    pub(super) fn push_once<V>(&self, flight: &mut Flight<'_, T>, v: V) -> Result<(), (Refused, V)>
    where
        ShmSlots<T>: Slots<V>,
    {
        // (`attempt`'s steps written out: its closure was not always
        // inlined, an outlined call per put.)
        let mine = self.ctl().records.mine();
        self.ring().push(&self.slots(), &mut Op { rec: mine.record(), flight }, v)?;
        self.pushed(1);
        Ok(())
    }

    /// One pop attempt.
    #[inline(always)]
    pub(super) fn pop_once<R: SlotRead<ShmSlots<T>>>(&self, flight: &mut Flight<'_, T>, r: &mut R) -> Result<R::Out, Refused>
    where
        ShmSlots<T>: Slots<R::Via>,
    {
        // (`attempt`'s steps written out, as in `push_once`.)
        let mine = self.ctl().records.mine();
        let (v, _) = self.ring().pop_with(&self.slots(), &mut Op { rec: mine.record(), flight }, r)?;
        self.popped(1);
        Ok(v)
    }

    /// Pushes if there is room: [`TryPutError::Full`] otherwise.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// q.try_push(1).unwrap();
    /// assert_eq!(q.try_push(2), Err(shmproc::TryPutError::Full(2)));
    /// ```
    #[inline(always)]
    pub fn try_push(&self, v: T) -> Result<(), TryPutError<T>> {
        self.try_push_v(v)
    }

    /// [`try_push`](Self::try_push) of anything the slots can take.
    #[inline(always)]
    pub(super) fn try_push_v<V>(&self, v: V) -> Result<(), TryPutError<V>>
    where
        ShmSlots<T>: Slots<V>,
    {
        self.push_once(&mut Flight::new(self, false, Deadline::NEVER), v).map_err(|(r, v)| match r {
            Refused::Now => TryPutError::Full(v),
            Refused::Closed => TryPutError::Closed(v),
        })
    }

    /// Pushes, waiting for room; fails only if the queue is closed.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// q.push(1).unwrap();
    /// ```
    #[inline(always)]
    pub fn push(&self, v: T) -> Result<(), PutError<T>> {
        self.push_until(v, Deadline::NEVER).map_err(PutTimeoutError::untimed)
    }

    /// Pushes, waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// q.push(1).unwrap();
    /// assert_eq!(q.push_timeout(2, Duration::from_millis(5)), Err(shmproc::PutTimeoutError::TimedOut(2)));
    /// ```
    pub fn push_timeout(&self, v: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        self.push_until(v, Deadline::after(timeout))
    }

    #[inline(always)]
    pub(super) fn push_until<V>(&self, v: V, deadline: Deadline) -> Result<(), PutTimeoutError<V>>
    where
        ShmSlots<T>: Slots<V>,
    {
        let mut flight = Flight::new(self, true, deadline);
        match self.push_once(&mut flight, v) {
            Ok(()) => Ok(()),
            Err((Refused::Closed, v)) => Err(PutTimeoutError::Closed(v)),
            Err((Refused::Now, v)) => self.push_wait(flight, v, deadline),
        }
    }

    #[cold]
    #[inline(never)]
    fn push_wait<V>(&self, mut flight: Flight<'_, T>, mut v: V, deadline: Deadline) -> Result<(), PutTimeoutError<V>>
    where
        ShmSlots<T>: Slots<V>,
    {
        let (mut spins, mut misses, mut held) = (0u32, 0u32, 0u32);
        let batch = (self.limit / 4).min(FULL_BATCH);
        loop {
            if deadline.passed() {
                return Err(PutTimeoutError::TimedOut(v));
            }
            if !spin_step(self.wait, &mut spins, &MPMC_SPIN) {
                let m = &self.ctl().meta.0;
                let ready = || self.is_closed() || !self.is_full();
                // Rounds in a row that found room yet failed to put.
                misses = if self.sleep(&m.producers_waiting, &m.space_seq, deadline, ready, misses > STUCK_AFTER) {
                    misses.saturating_add(1)
                } else {
                    0
                };
            } else if held < MPMC_SPIN.limit && batch > 1 && !self.is_closed() && self.len() as u64 > self.limit - batch {
                // Full, or nearly: wait for a batch of free slots (see
                // `FULL_BATCH`), polling only the indices.
                held += 1;
                continue;
            }
            match self.push_once(&mut flight, v) {
                Ok(()) => return Ok(()),
                Err((Refused::Closed, back)) => return Err(PutTimeoutError::Closed(back)),
                Err((Refused::Now, back)) => v = back,
            }
        }
    }

    /// Pops if an item is there; `Empty`, or `Closed` once closed and
    /// drained. An item whose push is still under way is waited for
    /// briefly; if its producer is stalled, `Empty`.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// assert_eq!(q.try_pop(), Err(shmproc::TryGetError::Empty));
    /// ```
    #[inline(always)]
    pub fn try_pop(&self) -> Result<T, TryGetError> {
        self.try_pop_v(&mut ByValue::new())
    }

    /// [`try_pop`](Self::try_pop) of anything the slots can give.
    #[inline(always)]
    pub(super) fn try_pop_v<R: SlotRead<ShmSlots<T>>>(&self, r: &mut R) -> Result<R::Out, TryGetError>
    where
        ShmSlots<T>: Slots<R::Via>,
    {
        self.pop_once(&mut Flight::new(self, false, Deadline::NEVER), r).map_err(|r| match r {
            Refused::Now => TryGetError::Empty,
            Refused::Closed => TryGetError::Closed,
        })
    }

    /// Pops, waiting for an item; `Closed` once closed and drained.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// q.push(3).unwrap();
    /// assert_eq!(q.pop(), Ok(3));
    /// ```
    #[inline(always)]
    pub fn pop(&self) -> Result<T, GetError> {
        self.pop_until(Deadline::NEVER, &mut ByValue::new()).map_err(GetTimeoutError::untimed)
    }

    /// Pops, waiting at most `timeout`.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u8>::new(1).unwrap();
    /// let r = q.pop_timeout(std::time::Duration::from_millis(5));
    /// assert_eq!(r, Err(shmproc::GetTimeoutError::TimedOut));
    /// ```
    pub fn pop_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.pop_until(Deadline::after(timeout), &mut ByValue::new())
    }

    #[inline(always)]
    pub(super) fn pop_until<R: SlotRead<ShmSlots<T>>>(&self, deadline: Deadline, r: &mut R) -> Result<R::Out, GetTimeoutError>
    where
        ShmSlots<T>: Slots<R::Via>,
    {
        let mut flight = Flight::new(self, true, deadline);
        match self.pop_once(&mut flight, r) {
            Ok(v) => Ok(v),
            Err(Refused::Closed) => Err(GetTimeoutError::Closed),
            Err(Refused::Now) => self.pop_wait(flight, deadline, r),
        }
    }

    #[cold]
    #[inline(never)]
    fn pop_wait<R: SlotRead<ShmSlots<T>>>(&self, mut flight: Flight<'_, T>, deadline: Deadline, r: &mut R) -> Result<R::Out, GetTimeoutError>
    where
        ShmSlots<T>: Slots<R::Via>,
    {
        let (mut spins, mut misses) = (0u32, 0u32);
        loop {
            if deadline.passed() {
                return Err(GetTimeoutError::TimedOut);
            }
            if !spin_step(self.wait, &mut spins, &MPMC_SPIN) {
                let m = &self.ctl().meta.0;
                let ring = self.ring();
                let ready = || {
                    let (empty, closed) = ring.empty_and_closed();
                    !empty || closed
                };
                // Rounds in a row that found an item yet failed to get one.
                misses = if self.sleep(&m.consumers_waiting, &m.items_seq, deadline, ready, misses > STUCK_AFTER) {
                    misses.saturating_add(1)
                } else {
                    0
                };
            }
            match self.pop_once(&mut flight, r) {
                Ok(v) => return Ok(v),
                Err(Refused::Closed) => return Err(GetTimeoutError::Closed),
                Err(Refused::Now) => {}
            }
        }
    }

}

impl<T: crate::ShmType> MpmcQueue<super::item::PodVia<T>> {
    /// The same queue as an `MpmcQueue<T>`: a plain-data `Handoff` item's
    /// wire is `T`'s own typed copy (`PodWire::of`), and the segment's
    /// element identity is `T`'s.
    pub(super) fn as_plain(&self) -> &MpmcQueue<T> {
        // Both are repr(C) with identical field types except the zero-sized `PhantomData` (align 1, at the end).
        // SAFETY: so the layouts are identical; `PodVia<T>` is a transparent `T`, so every pointer and count means
        // the same for both views. The reference keeps `self`'s lifetime.
        unsafe { &*(self as *const Self).cast::<MpmcQueue<T>>() }
    }
}

impl<T: RingItem + Copy> MpmcQueue<T> {
    /// Pushes as many of `items` as can go in now, in order; returns how
    /// many (0 if full or closed). Never waits for another participant:
    /// it stops at the first item that does not fit now, or whose slot is
    /// still held by a stalled consumer (then it returns after a brief
    /// wait, as [`try_push`](Self::try_push) does). Each item is pushed
    /// with the single-item protocol, so a batch is exactly as safe as
    /// that many `try_push` calls, including when participants die.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u16>::new(4).unwrap();
    /// assert_eq!(q.push_slice(&[1, 2, 3, 4, 5]), 4);
    /// assert_eq!(q.len(), 4);
    /// ```
    pub fn push_slice(&self, items: &[T]) -> usize {
        let mut flight = Flight::new(self, false, Deadline::NEVER);
        match self.attempt(&mut flight, |ring, slots, op| ring.push_batch(slots, op, items)) {
            Ok(n) => {
                self.pushed(n.min(u32::MAX as usize) as u32);
                n
            }
            Err(_) => 0,
        }
    }

    /// Pops up to `out.len()` items available now, in order; returns how
    /// many were stored at the front of `out`. Never waits for another
    /// participant: it stops when the queue is empty or the next item's
    /// producer is stalled (after a brief wait, as
    /// [`try_pop`](Self::try_pop) does). Each item is popped with the
    /// single-item protocol.
    ///
    /// ```
    /// let q = shmproc::queue::MpmcQueue::<u16>::new(4).unwrap();
    /// q.push_slice(&[1, 2, 3]);
    /// let mut out = [0; 2];
    /// assert_eq!(q.pop_into(&mut out), 2);
    /// assert_eq!(out, [1, 2]);
    /// ```
    pub fn pop_into(&self, out: &mut [T]) -> usize {
        let mut flight = Flight::new(self, false, Deadline::NEVER);
        match self.attempt(&mut flight, |ring, slots, op| ring.pop_batch(slots, op, out)) {
            Ok(n) => {
                self.popped(n.min(u32::MAX as usize) as u32);
                n
            }
            Err(_) => 0,
        }
    }
}
