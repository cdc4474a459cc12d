//! Variable-length frames in one byte ring (single producer, single
//! consumer): strings and user-serialized messages travel without padding
//! to a fixed slot size.
//!
//! Same ring discipline, roles, waiting and crash handling as
//! [`SpscQueue`](super::SpscQueue), with byte indices. A frame is an 8-byte
//! header (its length as u32, 4 bytes unused) at an 8-aligned ring offset,
//! then the payload, rounded up to 8 bytes:
//!
//! - a payload of fewer than [`ALIGN_FROM`] (64) bytes follows its header
//!   directly (small frames stay packed: four 8-byte frames per cache line);
//! - a payload of 64 bytes or more starts at the next 64-byte boundary
//!   after its header (the ring's data area is 64-aligned, so its address
//!   is a multiple of 64). Large copies then run at full speed: a copy whose
//!   source and destination sit 1 to 31 bytes apart modulo 4 KiB runs many
//!   times slower on some CPUs (4K aliasing), and payloads that shift by 8
//!   bytes per frame hit that often.
//!
//! Where the payload starts is a function of the header's offset and the
//! length alone, so the consumer finds it without a second header field.
//! A frame never wraps: when it does not fit before the end of the ring,
//! the producer writes a WRAP marker there and starts at offset 0.
//! The consumer validates every header it reads (length within the
//! configured maximum and within the published bytes) and reports
//! `Corrupted` otherwise ([`TryRecvError::Corrupted`] and its twins),
//! never reading outside the ring.
//!
//! Zero-copy loans ([`ByteProducer::send_loan`], [`ByteConsumer::recv_loan`]
//! and their twins) live in `byte_loan.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::WaitStrategy;
use super::error::{
    RecvError, RecvTimeoutError, RoleError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use super::roles::{PeerWatch, Role};
use super::spsc::{SpscCtl, new_ctl};
use super::wake::{publish_and_wake, sleep_on};
use crate::OpenError;
use crate::shm::object;
use crate::shm::{Fingerprint, Kind, Mapped, Object};
use crate::wait::Deadline;
use crate::wait::spin::{RING_SPIN, spin_step};

mod waitable;

const HEADER: u64 = 8;
const WRAP: u32 = u32::MAX;
/// A cache line: large payloads start on one.
const LINE: u64 = 64;

/// Payloads of at least this many bytes start on a 64-byte boundary
/// (see the module docs); smaller ones follow their header directly.
///
/// ```
/// use shmproc::queue::{ALIGN_FROM, ByteQueue};
/// let q = ByteQueue::new(4096, 1024).unwrap();
/// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
/// tx.send(b"x").unwrap(); // a small frame shifts the next one by 16 bytes
/// tx.send(&[7; ALIGN_FROM]).unwrap();
/// rx.recv().unwrap();
/// let loan = rx.recv_loan().unwrap();
/// assert_eq!(loan.as_ptr() as usize % 64, 0);
/// ```
pub const ALIGN_FROM: usize = 64;

/// Where a frame's payload starts, from its header at ring offset `pos`
/// (8-aligned): right after the header for a small payload, else at the
/// next 64-byte boundary after it.
#[inline(always)]
pub(super) fn payload_offset(pos: u64, len: u64) -> u64 {
    if len < ALIGN_FROM as u64 { HEADER } else { ((pos + HEADER + LINE - 1) & !(LINE - 1)) - pos }
}

/// Ring bytes a frame of `len` payload bytes takes with its header at
/// ring offset `pos` (header, padding, payload rounded up to 8).
#[inline(always)]
fn frame_size_at(pos: u64, len: u64) -> u64 {
    payload_offset(pos, len) + len.div_ceil(8) * 8
}

/// The most ring bytes a frame of `len` payload bytes takes anywhere.
fn frame_size_max(len: u64) -> u64 {
    if len < ALIGN_FROM as u64 { HEADER + len.div_ceil(8) * 8 } else { LINE + len.div_ceil(8) * 8 }
}

/// An end's own index as read from shared memory at attach, made a frame
/// boundary. Frames start 8-aligned, so a correct peer leaves a multiple
/// of 8; anything else is garbage, and following it would put a frame
/// header at a misaligned address or across the end of the ring. Rounded
/// down: a bad index gives garbage data or `Corrupted`, never UB.
fn frame_start(index: u64) -> u64 {
    index & !(HEADER - 1)
}

/// A byte-frame ring in shared memory: `capacity` bytes, frames of at most
/// `max_frame` bytes.
///
/// ```
/// use shmproc::queue::ByteQueue;
/// let q = ByteQueue::new(4096, 1000).unwrap();
/// let mut tx = q.producer().unwrap();
/// let mut rx = q.consumer().unwrap();
/// tx.send(b"hello").unwrap();
/// tx.send(b"").unwrap();
/// assert_eq!(rx.recv().unwrap(), b"hello");
/// assert_eq!(rx.recv().unwrap(), b"");
/// assert!(tx.send(&[0; 1001]).is_err()); // larger than max_frame
/// ```
#[derive(Clone, Debug)]
pub struct ByteQueue {
    m: Mapped<SpscCtl>,
    mask: u64,
    max_frame: u64,
}

/// Creation parameters of a [`ByteQueue`]: ring bytes and frame limit
/// (the two arguments of [`ByteQueue::new`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByteQueueSize {
    capacity: u64,
    max_frame: u64,
}

fn check(capacity: u64, max_frame: u64) -> Result<(), String> {
    if capacity < 64 || !capacity.is_power_of_two() {
        return Err(format!("byte capacity {capacity} is not supported: use a power of two >= 64"));
    }
    if max_frame > u64::from(u32::MAX - 1) || 2 * frame_size_max(max_frame) > capacity {
        return Err(format!(
            "max_frame {max_frame} is too large for {capacity} bytes (at most capacity/2 - 64, or capacity/2 - 8 \
             below 64 bytes)"
        ));
    }
    Ok(())
}

impl Object for ByteQueue {
    const KIND: Kind = Kind::ByteQueue;
    type Init = ByteQueueSize;
    type Ctl = SpscCtl;
    fn fingerprint() -> Fingerprint {
        Fingerprint::of::<u8>()
    }
    fn capacity(init: &ByteQueueSize) -> Result<u64, OpenError> {
        check(init.capacity, init.max_frame).map_err(OpenError::InvalidArgument)?;
        Ok(init.capacity)
    }
    fn new_ctl(init: &ByteQueueSize, _: u64) -> SpscCtl {
        let c = new_ctl();
        c.meta.0.aux.store(init.max_frame, Ordering::Relaxed);
        c
    }
    fn validate(m: &Mapped<SpscCtl>) -> Result<(), String> {
        check(m.capacity(), m.ctl().meta.0.aux.load(Ordering::Relaxed))
    }
    fn from_mapped(m: Mapped<SpscCtl>) -> Self {
        m.ctl().use_fences_unless_membarrier();
        // The data area is aligned to at least 64 (`Layout::of`): payload
        // offsets that are multiples of 64 are 64-aligned addresses.
        debug_assert!((m.data() as usize).is_multiple_of(LINE as usize));
        let mask = m.capacity() - 1;
        // Re-read once (a peer may have changed it since `validate`): re-checked, and only this copy is used.
        let max_frame = m.ctl().meta.0.aux.load(Ordering::Relaxed);
        let max_frame = if check(m.capacity(), max_frame).is_ok() { max_frame } else { 0 };
        ByteQueue { m, mask, max_frame }
    }
}

impl ByteQueue {
    /// A new ring of `capacity` bytes (a power of two >= 64) for frames of
    /// at most `max_frame` bytes (at most `capacity / 2 - 64`, or
    /// `capacity / 2 - 8` for a limit below 64 bytes: two of the largest
    /// frames, with header and alignment padding, fit in the ring), under
    /// a fresh unique name, with owner-only permissions. The name is
    /// removed when the last handle in this process drops.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 512).unwrap();
    /// assert!(q.name().starts_with("anon."));
    /// assert_eq!(q.max_frame(), 512);
    /// assert!(shmproc::queue::ByteQueue::new(4096, 4096).is_err()); // frame limit too large
    /// assert!(shmproc::queue::ByteQueue::new(1000, 8).is_err()); // not a power of two
    /// ```
    pub fn new(capacity: u64, max_frame: u64) -> Result<Self, OpenError> {
        object::create_unique::<Self>(ByteQueueSize { capacity, max_frame }, &crate::Options::new())
    }

    /// Creates the ring as `name` ([`new`](Self::new)'s parameters); fails
    /// with [`OpenError::AlreadyExists`] if the name is taken. This process
    /// owns the name: it is removed when the last handle here drops, unless
    /// [`persist`](Self::persist) was called.
    ///
    /// ```
    /// let name = format!("doc-bq-create-{}", std::process::id());
    /// let q = shmproc::queue::ByteQueue::create(&name, 4096, 512).unwrap();
    /// assert_eq!(q.name(), name);
    /// let again = shmproc::queue::ByteQueue::create(&name, 4096, 512);
    /// assert!(matches!(again, Err(shmproc::OpenError::AlreadyExists(_))));
    /// ```
    pub fn create(name: &str, capacity: u64, max_frame: u64) -> Result<Self, OpenError> {
        Self::create_with(name, capacity, max_frame, &crate::Options::new())
    }

    /// [`create`](Self::create) with explicit [`Options`](crate::Options).
    ///
    /// ```
    /// let name = format!("doc-bq-create-with-{}", std::process::id());
    /// let opts = shmproc::Options::new().mode(0o640);
    /// let q = shmproc::queue::ByteQueue::create_with(&name, 4096, 512, &opts).unwrap();
    /// assert_eq!(q.name(), name);
    /// ```
    pub fn create_with(name: &str, capacity: u64, max_frame: u64, opts: &crate::Options) -> Result<Self, OpenError> {
        object::create::<Self>(name, ByteQueueSize { capacity, max_frame }, opts)
    }

    /// Opens the ring created (by any process) as `name`, waiting up to 2 s
    /// for its creator to finish initialising and validating it; capacity
    /// and frame limit are the creator's. Openers never remove the name.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 512).unwrap();
    /// let opened = shmproc::queue::ByteQueue::open(q.name()).unwrap();
    /// assert_eq!(opened.max_frame(), 512);
    /// let missing = shmproc::queue::ByteQueue::open("doc-bq-never-created");
    /// assert!(matches!(missing, Err(shmproc::OpenError::NotFound(_))));
    /// ```
    pub fn open(name: &str) -> Result<Self, OpenError> {
        Self::open_with(name, &crate::Options::new())
    }

    /// [`open`](Self::open) with explicit [`Options`](crate::Options).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 512).unwrap();
    /// let opts = shmproc::Options::new().init_timeout(std::time::Duration::from_millis(100));
    /// assert!(shmproc::queue::ByteQueue::open_with(q.name(), &opts).is_ok());
    /// ```
    pub fn open_with(name: &str, opts: &crate::Options) -> Result<Self, OpenError> {
        object::open::<Self>(name, opts)
    }

    /// Opens `name` if it exists, otherwise creates it with `capacity` and
    /// `max_frame` (and then owns it, as with [`create`](Self::create)).
    ///
    /// ```
    /// let name = format!("doc-bq-ooc-{}", std::process::id());
    /// let first = shmproc::queue::ByteQueue::open_or_create(&name, 4096, 512).unwrap(); // creates
    /// let second = shmproc::queue::ByteQueue::open_or_create(&name, 4096, 512).unwrap(); // opens
    /// assert_eq!(first.name(), second.name());
    /// ```
    pub fn open_or_create(name: &str, capacity: u64, max_frame: u64) -> Result<Self, OpenError> {
        object::open_or_create::<Self>(name, ByteQueueSize { capacity, max_frame }, &crate::Options::new())
    }

    /// The name other processes pass to [`open`](Self::open).
    ///
    /// ```
    /// assert!(!shmproc::queue::ByteQueue::new(4096, 512).unwrap().name().is_empty());
    /// ```
    pub fn name(&self) -> &str {
        self.m.segment().name()
    }

    /// Keeps the name in `/dev/shm` after the creator's last handle drops
    /// (and makes [`gc`](crate::gc) leave it alone); remove it later with
    /// [`unlink`](crate::unlink). Any process may call it (one that opened
    /// the queue too).
    ///
    /// ```
    /// let name = format!("doc-bq-persist-{}", std::process::id());
    /// let q = shmproc::queue::ByteQueue::create(&name, 4096, 512).unwrap();
    /// q.persist();
    /// drop(q);
    /// assert!(shmproc::queue::ByteQueue::open(&name).is_ok());
    /// shmproc::unlink(&name).unwrap();
    /// ```
    pub fn persist(&self) {
        self.m.segment().persist()
    }

    /// The largest frame accepted.
    ///
    /// ```
    /// assert_eq!(shmproc::queue::ByteQueue::new(4096, 100).unwrap().max_frame(), 100);
    /// ```
    pub fn max_frame(&self) -> usize {
        self.max_frame as usize
    }

    /// Closes the ring: sends fail, receives drain then fail; waiters wake.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// q.close();
    /// assert!(q.producer().unwrap().send(b"x").is_err());
    /// ```
    pub fn close(&self) {
        self.m.ctl().close();
    }

    /// Takes the sending role: one live [`ByteProducer`] per ring at a
    /// time, across all processes and threads ([`RoleError`] while another
    /// one lives, this process's included); the role of a dropped handle or
    /// a dead process can be taken again.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// assert!(q.producer().is_ok());
    /// ```
    pub fn producer(&self) -> Result<ByteProducer, RoleError> {
        let (tail, head_cache) = self.m.ctl().attach(Role::Producer)?;
        Ok(ByteProducer {
            tail: frame_start(tail),
            q: self.clone(),
            head_cache,
            wait: WaitStrategy::Blocking,
            watch: PeerWatch::default(),
        })
    }

    /// Takes the receiving role: one live [`ByteConsumer`] per ring at a
    /// time (as [`producer`](Self::producer)).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// assert!(q.consumer().is_ok());
    /// ```
    pub fn consumer(&self) -> Result<ByteConsumer, RoleError> {
        let (head, tail_cache) = self.m.ctl().attach(Role::Consumer)?;
        Ok(ByteConsumer {
            q: self.clone(),
            head: frame_start(head),
            tail_cache,
            wait: WaitStrategy::Blocking,
            watch: PeerWatch::default(),
        })
    }

    /// Hands the sending (`producer`) or receiving role over to the process
    /// with packed identity `owner` (see `SpscCtl::designate`).
    pub(crate) fn designate(&self, producer: bool, owner: u64) -> bool {
        self.ctl().designate(if producer { Role::Producer } else { Role::Consumer }, owner)
    }

    /// Frees a role designated to this process and not claimed, without
    /// marking it gone (see `SpscCtl::undesignate`); whether it was.
    pub(crate) fn undesignate(&self, producer: bool) -> bool {
        self.ctl().undesignate(if producer { Role::Producer } else { Role::Consumer })
    }

    /// Hands a free role over to this process (see
    /// `SpscCtl::designate_if_free`).
    pub(crate) fn designate_if_free(&self, producer: bool) {
        self.ctl().designate_if_free(if producer { Role::Producer } else { Role::Consumer })
    }

    /// Gives back a role handed over to this process and never claimed.
    pub(crate) fn release_designation(&self, producer: bool) {
        self.ctl().release_designation(if producer { Role::Producer } else { Role::Consumer })
    }

    /// Makes this process's drop of the queue remove its name whatever
    /// the header's persist flag says (a ring private to a pool: see
    /// `Segment::make_private`).
    pub(crate) fn make_private(&self) {
        self.m.segment().make_private();
    }

    fn ctl(&self) -> &SpscCtl {
        self.m.ctl()
    }

    #[inline(always)]
    fn at(&self, index: u64) -> *mut u8 {
        // SAFETY: masked index < capacity, inside the data area.
        unsafe { self.m.data().add((index & self.mask) as usize) }
    }
}

/// Whether a `T` is best moved in and out of a payload as a typed value
/// (`copy::read` / `copy::write`): the payload is aligned for `T`
/// (payloads are 8-aligned, and 64-aligned from [`ALIGN_FROM`] bytes on)
/// and `T` moves as whole words or as one scalar (else, say `[u8; 100]`,
/// the byte copy's 8-byte steps are faster than `T`'s 1-byte units).
pub(crate) const fn typed_payload<T>() -> bool {
    let (size, align) = (std::mem::size_of::<T>(), std::mem::align_of::<T>());
    let aligned = align <= HEADER as usize || (size >= ALIGN_FROM && align <= LINE as usize);
    aligned && (size.is_multiple_of(8) || size == align)
}

/// Writes `v` as a frame's payload at `p`.
///
/// # Safety
/// `p` is the payload of a reserved frame of `size_of::<T>()` bytes.
#[inline(always)]
unsafe fn write_pod<T: bytemuck::Pod>(p: *mut u8, v: &T) {
    if typed_payload::<T>() {
        // SAFETY: the payload is aligned for T (see `typed_payload`) and holds size_of::<T>() bytes.
        unsafe { crate::shm::copy::write(p.cast::<T>(), *v) }
    } else {
        // SAFETY: size_of::<T>() bytes at p (caller).
        unsafe { crate::shm::copy::copy_to_shared(bytemuck::bytes_of(v), p) }
    }
}

/// Room for one frame, reserved by [`ByteProducer::reserve`]: its header
/// is written, the payload is not; publishing it moves the tail to `end`.
pub(super) struct Slot {
    /// The payload's first byte (64-aligned from `ALIGN_FROM` bytes on).
    pub(super) payload: *mut u8,
    /// The payload's length.
    pub(super) len: usize,
    /// The tail after this frame.
    pub(super) end: u64,
}

/// A published frame found by [`ByteConsumer::locate`]; consuming it moves
/// the head to `end`.
pub(super) struct Frame {
    /// The payload's first byte, inside the ring.
    pub(super) payload: *const u8,
    /// The payload's length (validated: at most `max_frame`, inside the ring
    /// and inside the published bytes).
    pub(super) len: usize,
    /// The head after this frame.
    pub(super) end: u64,
}

/// The sending end of a [`ByteQueue`].
#[derive(Debug)]
pub struct ByteProducer {
    q: ByteQueue,
    tail: u64,
    head_cache: u64,
    wait: WaitStrategy,
    watch: PeerWatch,
}

impl ByteProducer {
    /// Chooses how blocked sends wait.
    ///
    /// ```
    /// use shmproc::queue::{ByteQueue, WaitStrategy};
    /// let q = ByteQueue::new(4096, 100).unwrap();
    /// let tx = q.producer().unwrap().with_wait(WaitStrategy::BusyPoll);
    /// # drop(tx);
    /// ```
    pub fn with_wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Sends one frame if it fits now: [`TrySendError::Full`] otherwise,
    /// `TooLarge` for a frame above [`ByteQueue::max_frame`], and `Closed` /
    /// `Disconnected` as for the SPSC ring.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(64, 16).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.try_send(b"0123456789").unwrap();
    /// tx.try_send(b"0123456789").unwrap();
    /// assert_eq!(tx.try_send(b"0123456789"), Err(shmproc::TrySendError::Full));
    /// ```
    #[inline]
    pub fn try_send(&mut self, frame: &[u8]) -> Result<(), TrySendError> {
        let slot = self.reserve(frame.len())?;
        // SAFETY: `reserve` gave `frame.len()` free bytes at the payload,
        // inside the ring; the consumer does not read them before publication.
        unsafe { crate::shm::copy::copy_to_shared(frame, slot.payload) };
        self.publish(slot.end);
        Ok(())
    }

    /// Reserves room for a frame of `len` payload bytes and writes its
    /// header (and a WRAP marker if it starts over at offset 0); publishes
    /// nothing. The same checks as `try_send`, in the same order.
    #[inline(always)]
    pub(super) fn reserve(&mut self, len: usize) -> Result<Slot, TrySendError> {
        let n = len as u64;
        if n > self.q.max_frame {
            // `max_frame` is validated below u32::MAX at map time.
            return Err(TrySendError::TooLarge { len, max: self.q.max_frame as u32 });
        }
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) != 0 {
            return Err(TrySendError::Closed);
        }
        if self.watch.gone(&m.consumer, &m.consumer_gone) {
            return Err(TrySendError::Disconnected);
        }
        let cap = self.q.mask + 1;
        let pos = self.tail & self.q.mask;
        let mut need = frame_size_at(pos, n);
        let mut skip = 0;
        if cap - pos < need {
            skip = cap - pos;
            need = frame_size_at(0, n);
        }
        let mut free = cap - self.tail.wrapping_sub(self.head_cache).min(cap);
        if free < skip + need {
            // Acquire: pairs with the consumer's Release store of head.
            self.head_cache = self.q.ctl().head.0.load(Ordering::Acquire);
            free = cap - self.tail.wrapping_sub(self.head_cache).min(cap);
            if free < skip + need {
                return Err(TrySendError::Full);
            }
        }
        if skip > 0 {
            // SAFETY: `skip` (>= 8, a multiple of 8) free bytes from pos.
            unsafe { crate::shm::copy::write(self.q.at(self.tail) as *mut u32, WRAP) };
            self.tail = self.tail.wrapping_add(skip);
        }
        let base = self.q.at(self.tail);
        let off = payload_offset(self.tail & self.q.mask, n);
        // SAFETY: `need` free contiguous bytes at base (its offset + need <= cap), 8-aligned; the consumer does not
        // read them before publication; the payload (off + len <= need) is inside them.
        let payload = unsafe {
            crate::shm::copy::write(base as *mut u32, n as u32);
            base.add(off as usize)
        };
        Ok(Slot { payload, len, end: self.tail.wrapping_add(need) })
    }

    /// Sends a plain-data value as one frame of its bytes (the frame
    /// `send(bytemuck::bytes_of(v))` sends), waiting for room until
    /// `deadline`; stored as whole words when the payload is aligned for
    /// `T` (always, for `T` aligned to 8 or less).
    #[inline(always)]
    pub(crate) fn send_pod_until<T: bytemuck::Pod>(&mut self, v: &T, deadline: Deadline) -> Result<(), SendTimeoutError> {
        let slot = self.reserve_until(std::mem::size_of::<T>(), deadline)?;
        // SAFETY: `size_of::<T>()` reserved bytes at the payload.
        unsafe { write_pod(slot.payload, v) };
        self.publish(slot.end);
        Ok(())
    }

    /// [`send_pod_until`](Self::send_pod_until) if there is room now.
    #[inline(always)]
    pub(crate) fn try_send_pod<T: bytemuck::Pod>(&mut self, v: &T) -> Result<(), TrySendError> {
        let slot = self.reserve(std::mem::size_of::<T>())?;
        // SAFETY: `size_of::<T>()` reserved bytes at the payload.
        unsafe { write_pod(slot.payload, v) };
        self.publish(slot.end);
        Ok(())
    }

    /// Publishes everything up to `end` (a reserved frame's end).
    #[inline(always)]
    pub(super) fn publish(&mut self, end: u64) {
        self.tail = end;
        let c = self.q.ctl();
        publish_and_wake(c, &c.tail.0, self.tail, &c.meta.0.consumer_waiting);
    }

    /// Whether the ring was closed (a reserved frame is then not published).
    pub(super) fn closed(&self) -> bool {
        self.q.ctl().meta.0.closed.load(Ordering::Relaxed) != 0
    }

    /// Sends one frame, waiting for room.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// q.producer().unwrap().send(b"abc").unwrap();
    /// ```
    #[inline]
    pub fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        self.send_until(frame, Deadline::NEVER).map_err(SendTimeoutError::untimed)
    }

    /// Sends one frame, waiting at most `timeout` for room.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(64, 16).unwrap();
    /// let _rx = q.consumer().unwrap();
    /// let mut tx = q.producer().unwrap();
    /// while tx.try_send(b"xx").is_ok() {}
    /// let r = tx.send_timeout(b"xx", std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::SendTimeoutError::TimedOut));
    /// ```
    pub fn send_timeout(&mut self, frame: &[u8], timeout: Duration) -> Result<(), SendTimeoutError> {
        self.send_until(frame, Deadline::after(timeout))
    }

    #[inline(always)]
    fn send_until(&mut self, frame: &[u8], deadline: Deadline) -> Result<(), SendTimeoutError> {
        let slot = self.reserve_until(frame.len(), deadline)?;
        // SAFETY: as in `try_send`.
        unsafe { crate::shm::copy::copy_to_shared(frame, slot.payload) };
        self.publish(slot.end);
        Ok(())
    }

    /// [`reserve`](Self::reserve), waiting for room until `deadline` (with
    /// [`Deadline::NEVER`], the clock is not read until it sleeps). The
    /// first try is inline; waiting is out of line.
    #[inline(always)]
    pub(super) fn reserve_until(&mut self, len: usize, deadline: Deadline) -> Result<Slot, SendTimeoutError> {
        match self.reserve(len) {
            Ok(slot) => Ok(slot),
            Err(e) => self.reserve_slow(len, e, deadline),
        }
    }

    /// The rest of [`reserve_until`](Self::reserve_until) after a first
    /// refusal `first`.
    #[cold]
    #[inline(never)]
    fn reserve_slow(&mut self, len: usize, first: TrySendError, deadline: Deadline) -> Result<Slot, SendTimeoutError> {
        first.retry()?;
        let mut spins = 0u32;
        loop {
            if deadline.passed() {
                return Err(SendTimeoutError::TimedOut);
            }
            if !spin_step(self.wait, &mut spins, &RING_SPIN) {
                let c = self.q.ctl();
                sleep_on(&c.head.0, self.head_cache, &c.meta.0.producer_waiting, deadline, || {
                    c.meta.0.closed.load(Ordering::Relaxed) != 0 || c.meta.0.consumer_gone.load(Ordering::Relaxed) != 0
                });
                self.watch.after_sleep();
            }
            match self.reserve(len) {
                Ok(slot) => return Ok(slot),
                Err(e) => e.retry()?,
            }
        }
    }
}

impl Drop for ByteProducer {
    fn drop(&mut self) {
        self.q.ctl().detach(Role::Producer);
    }
}

/// The receiving end of a [`ByteQueue`].
#[derive(Debug)]
pub struct ByteConsumer {
    q: ByteQueue,
    head: u64,
    tail_cache: u64,
    wait: WaitStrategy,
    watch: PeerWatch,
}

impl ByteConsumer {
    /// Chooses how blocked receives wait.
    ///
    /// ```
    /// use shmproc::queue::{ByteQueue, WaitStrategy};
    /// let q = ByteQueue::new(4096, 100).unwrap();
    /// let rx = q.consumer().unwrap().with_wait(WaitStrategy::BusyPoll);
    /// # drop(rx);
    /// ```
    pub fn with_wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Published bytes not yet consumed (refreshing the cached tail).
    fn available(&mut self) -> u64 {
        let cap = self.q.mask + 1;
        // Acquire: pairs with the producer's Release store of tail.
        self.tail_cache = self.q.ctl().tail.0.load(Ordering::Acquire);
        self.tail_cache.wrapping_sub(self.head).min(cap)
    }

    /// Receives one frame into `out` (cleared first) if one is there.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// q.producer().unwrap().send(b"hi").unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let mut buf = Vec::new();
    /// rx.try_recv_into(&mut buf).unwrap();
    /// assert_eq!(buf, b"hi");
    /// ```
    #[inline]
    pub fn try_recv_into(&mut self, out: &mut Vec<u8>) -> Result<(), TryRecvError> {
        let f = self.locate()?;
        self.take_into(f, out);
        Ok(())
    }

    /// Copies the frame `f` into `out` (cleared first) and consumes it.
    #[inline(always)]
    fn take_into(&mut self, f: Frame, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(f.len);
        // SAFETY: `locate` validated `f.len` published bytes at `f.payload`,
        // inside the ring; `out` has room for them.
        unsafe {
            crate::shm::copy::copy_from_shared_uninit(f.payload, &mut out.spare_capacity_mut()[..f.len]);
            out.set_len(f.len);
        }
        self.release_to(f.end);
    }

    /// The oldest published frame, validated; consumes nothing (only a
    /// WRAP marker in front of it is stepped over).
    #[inline(always)]
    pub(super) fn locate(&mut self) -> Result<Frame, TryRecvError> {
        let cap = self.q.mask + 1;
        let mut wrapped = false;
        loop {
            let mut avail = self.tail_cache.wrapping_sub(self.head).min(cap);
            if avail < HEADER {
                avail = self.available();
                if avail < HEADER {
                    let m = &self.q.ctl().meta.0;
                    let reason = if m.closed.load(Ordering::Relaxed) != 0 {
                        TryRecvError::Closed
                    } else if self.watch.gone(&m.producer, &m.producer_gone) {
                        TryRecvError::Disconnected
                    } else {
                        return Err(TryRecvError::Empty);
                    };
                    // The producer may have published a last frame just
                    // before leaving: look once more.
                    if self.available() < HEADER {
                        return Err(reason);
                    }
                    continue;
                }
            }
            let pos = self.head & self.q.mask;
            // SAFETY: at least HEADER published bytes at pos (8-aligned).
            let len = unsafe { crate::shm::copy::read(self.q.at(self.head) as *const u32) };
            if len == WRAP {
                // A producer wraps at most once per frame, never at offset
                // 0 (a whole lap): anything else is a corrupted ring, and
                // following it could loop forever.
                let skip = cap - pos;
                if pos == 0 || skip > avail || wrapped {
                    return Err(TryRecvError::Corrupted);
                }
                wrapped = true;
                self.head = self.head.wrapping_add(skip);
                continue;
            }
            let n = u64::from(len);
            if n > self.q.max_frame {
                return Err(TryRecvError::Corrupted);
            }
            let need = frame_size_at(pos, n);
            if need > avail || pos + need > cap {
                return Err(TryRecvError::Corrupted);
            }
            // SAFETY: the payload (payload_offset + len <= need) is inside
            // the ring (pos + need <= cap).
            let payload = unsafe { self.q.at(self.head).add(payload_offset(pos, n) as usize) };
            return Ok(Frame { payload, len: len as usize, end: self.head.wrapping_add(need) });
        }
    }

    /// Consumes everything up to `end` (a located frame's end).
    #[inline(always)]
    pub(super) fn release_to(&mut self, end: u64) {
        self.head = end;
        let c = self.q.ctl();
        publish_and_wake(c, &c.head.0, self.head, &c.meta.0.producer_waiting);
    }

    /// Receives one frame if one is there.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let mut tx = q.producer().unwrap();
    /// assert_eq!(rx.try_recv(), Err(shmproc::TryRecvError::Empty));
    /// tx.send(b"hi").unwrap();
    /// assert_eq!(rx.try_recv().unwrap(), b"hi");
    /// ```
    pub fn try_recv(&mut self) -> Result<Vec<u8>, TryRecvError> {
        let mut v = Vec::new();
        self.try_recv_into(&mut v).map(|()| v)
    }

    /// Receives one frame, waiting for it.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// q.producer().unwrap().send(b"x").unwrap();
    /// assert_eq!(q.consumer().unwrap().recv().unwrap(), b"x");
    /// ```
    pub fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        let mut v = Vec::new();
        self.recv_into(&mut v).map(|()| v)
    }

    /// Receives one frame into `out` (cleared first), waiting for it; `out`
    /// keeps its allocation from call to call. No deadline: the clock is
    /// not read (a frame that is there costs no system call and no clock
    /// read; only going to sleep reads it, for the 100 ms liveness poll).
    /// [`recv_loan`](Self::recv_loan) reads the frame in place instead.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.send(b"one").unwrap();
    /// tx.send(b"two").unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let mut buf = Vec::new();
    /// rx.recv_into(&mut buf).unwrap();
    /// assert_eq!(buf, b"one");
    /// rx.recv_into(&mut buf).unwrap();
    /// assert_eq!(buf, b"two");
    /// ```
    #[inline]
    pub fn recv_into(&mut self, out: &mut Vec<u8>) -> Result<(), RecvError> {
        self.recv_until(out, Deadline::NEVER).map_err(RecvTimeoutError::untimed)
    }

    /// Receives one frame, waiting at most `timeout`.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let r = rx.recv_timeout(std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::RecvTimeoutError::TimedOut));
    /// tx.send(b"x").unwrap();
    /// assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), b"x");
    /// ```
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut v = Vec::new();
        self.recv_timeout_into(&mut v, timeout).map(|()| v)
    }

    /// Receives one frame into `out`, waiting at most `timeout`.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let _tx = q.producer().unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let r = rx.recv_timeout_into(&mut Vec::new(), std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::RecvTimeoutError::TimedOut));
    /// ```
    pub fn recv_timeout_into(&mut self, out: &mut Vec<u8>, timeout: Duration) -> Result<(), RecvTimeoutError> {
        self.recv_until(out, Deadline::after(timeout))
    }

    #[inline(always)]
    fn recv_until(&mut self, out: &mut Vec<u8>, deadline: Deadline) -> Result<(), RecvTimeoutError> {
        let f = self.locate_until(deadline)?;
        self.take_into(f, out);
        Ok(())
    }

    /// [`locate`](Self::locate), waiting for a frame until `deadline`
    /// (with [`Deadline::NEVER`], the clock is not read until it sleeps).
    /// The first try is inline; waiting is out of line.
    #[inline(always)]
    pub(super) fn locate_until(&mut self, deadline: Deadline) -> Result<Frame, RecvTimeoutError> {
        match self.locate() {
            Ok(f) => Ok(f),
            Err(e) => self.locate_slow(e, deadline),
        }
    }

    /// The rest of [`locate_until`](Self::locate_until) after a first
    /// refusal `first`.
    #[cold]
    #[inline(never)]
    fn locate_slow(&mut self, first: TryRecvError, deadline: Deadline) -> Result<Frame, RecvTimeoutError> {
        first.retry()?;
        let mut spins = 0u32;
        loop {
            if deadline.passed() {
                return Err(RecvTimeoutError::TimedOut);
            }
            if !spin_step(self.wait, &mut spins, &RING_SPIN) {
                let c = self.q.ctl();
                sleep_on(&c.tail.0, self.tail_cache, &c.meta.0.consumer_waiting, deadline, || {
                    c.meta.0.closed.load(Ordering::Relaxed) != 0 || c.meta.0.producer_gone.load(Ordering::Relaxed) != 0
                });
                self.watch.after_sleep();
            }
            match self.locate() {
                Ok(f) => return Ok(f),
                Err(e) => e.retry()?,
            }
        }
    }

    /// Whether a frame is available, waiting at most `timeout` for one
    /// (Python's `Connection.poll`). Does not consume it.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// assert!(!rx.poll(std::time::Duration::ZERO));
    /// ```
    pub fn poll(&mut self, timeout: Duration) -> bool {
        let deadline = Deadline::after(timeout);
        loop {
            if self.available() >= HEADER {
                return true;
            }
            let c = self.q.ctl();
            // The producer's liveness too, as `recv` checks it: without a
            // deadline, a killed producer must not leave us asleep forever.
            if deadline.passed()
                || c.meta.0.closed.load(Ordering::Relaxed) != 0
                || self.watch.gone(&c.meta.0.producer, &c.meta.0.producer_gone)
            {
                return self.available() >= HEADER;
            }
            // The re-check after announcing covers a close or detach that
            // lands between the checks above and the announcement (its
            // waker cleared a flag that was still 0), as `locate_slow`'s.
            sleep_on(&c.tail.0, self.tail_cache, &c.meta.0.consumer_waiting, deadline, || {
                c.meta.0.closed.load(Ordering::Relaxed) != 0 || c.meta.0.producer_gone.load(Ordering::Relaxed) != 0
            });
            self.watch.after_sleep();
        }
    }
}

impl Drop for ByteConsumer {
    fn drop(&mut self) {
        self.q.ctl().detach(Role::Consumer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring index left misaligned in shared memory (by a hostile or
    /// buggy peer) must not make the next end read or write a frame header
    /// at a misaligned address, or across the end of the ring: garbage
    /// data or `Corrupted`, never UB. Before, the index was used as read at
    /// attach: a u32 header was read at byte 61 of a 64-byte ring
    /// (misaligned, and its last byte past the ring).
    #[test]
    fn a_misaligned_index_left_in_shared_memory_is_not_followed() {
        let q = ByteQueue::new(64, 16).unwrap();
        let c = q.ctl();
        for at in [61u64, 3, 1 << 40 | 7] {
            c.head.0.store(at, Ordering::SeqCst);
            c.tail.0.store(at + 16, Ordering::SeqCst);
            let mut rx = q.consumer().unwrap();
            let mut out = Vec::new();
            let _ = rx.try_recv_into(&mut out);
            drop(rx);
            c.tail.0.store(at, Ordering::SeqCst);
            let mut tx = q.producer().unwrap();
            let _ = tx.try_send(b"abcdefg");
            let _ = tx.try_send(&[9; 16]);
            drop(tx);
        }
    }
}
