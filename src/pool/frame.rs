//! What travels between the pool and its workers (the control segment
//! they share is in `ctl.rs`).
//!
//! ## Frames (in per-worker [`ByteQueue`](crate::queue::ByteQueue)s)
//!
//! A task frame (pool to worker), little-endian:
//! `job u64 | first u64 | count u32 | flags u32 | id_len u32 | id | items`;
//! flag bit 0 marks the last frame of a chunk (one "task" for
//! `maxtasksperchild`). The items are either `count × (len u32 | argument)`
//! or, with flag bit 1 ([`PACKED`]), `count` arguments of one width
//! `w = bytes / count` back to back (every `u64`, every `(u32, f64)`: the
//! common case, encoded and walked without a length per item). Items are
//! delimited so the pool can cut a frame when a worker dies and hand the
//! unfinished items to another. With flag bit 2 ([`ARENA`], always with
//! [`PACKED`]) the items are not in the frame: `offset u64 | bytes u64 |
//! name_len u32 | name` names their slice of the pool's arena segment
//! (see [`PodBlock`]), which the worker maps and bounds-checks.
//!
//! A result frame (worker to pool): `job u64 | first u64 | count u32 |
//! flags u32 | items`: `count × (status u8 | len u32 | payload)`, or with
//! [`PACKED`] `count` successful values of one width back to back. A
//! worker answers the items of its task frames in order, one or more
//! result frames per task frame.
//!
//! Both writers start a frame packed and turn it into the general form
//! (once, in place) at the first item that does not fit it (another
//! width, a failure); a packed frame keeps room for that conversion.
//!
//! Everything read from a frame is untrusted: every length is checked.


use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::queue::ByteProducer;
use crate::{RawSegment, TrySendError};

/// Ring bytes of each task and result queue.
pub(crate) const RING_BYTES: u64 = 1 << 20;
/// The largest frame in a ring.
pub(crate) const MAX_FRAME: usize = 256 * 1024;
/// The largest encoded argument or result of one item (bytes of its
/// [`Handoff`](crate::process::Handoff) encoding); a larger one fails that
/// item with [`TaskError::TooLarge`](super::TaskError::TooLarge).
///
/// ```
/// assert_eq!(shmproc::pool::MAX_ITEM_BYTES, 192 * 1024);
/// ```
pub const MAX_ITEM_BYTES: usize = 192 * 1024;
/// The longest task id accepted (ids are module paths).
pub(crate) const MAX_ID: usize = 4096;


/// The widest plain-data item the bulk path takes (wider ones are encoded
/// one by one, as every other type).
const MAX_POD_WIDTH: usize = 256;

/// `Some(width)` when `T` is plain data ([`Handoff::__POD`](crate::process::Handoff))
/// whose decoding reads its memory image of `width` bytes: then a slice of
/// `T` is a packed run of items as it stands, and a packed run of
/// `width`-byte images is a slice of `T` (the bulk path: one copy per
/// frame, nothing per item). Bulk writers write images (never `encode`),
/// so both ends agree. Checked on a sample, not assumed, without
/// allocating (it runs for each submission).
pub(crate) fn pod_width<T: crate::process::Handoff>() -> Option<usize> {
    let width = std::mem::size_of::<T>();
    if T::__POD.is_none() || width == 0 || width > MAX_POD_WIDTH || cfg!(target_endian = "big") {
        return None;
    }
    let mut sample = [0u8; MAX_POD_WIDTH];
    for (i, b) in sample[..width].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    let v = T::decode(&mut &sample[..width]).ok()?;
    // `PodWire::of` requires `Pod`; arrays of such types have no padding.
    // SAFETY: `T` is plain data: its `width` bytes are initialised; the view lives while `v` does.
    let image = unsafe { std::slice::from_raw_parts((&raw const v).cast::<u8>(), width) };
    (image == &sample[..width]).then_some(width)
}

/// Flag: the last frame of a chunk.
pub(crate) const END_OF_CHUNK: u32 = 1;
/// Flag: the items have one width and no prefixes.
pub(crate) const PACKED: u32 = 2;

const TASK_HEADER: usize = 28;
const RESULT_HEADER: usize = 24;
/// Bytes before each item in the general forms.
const TASK_PREFIX: usize = 4;
const RESULT_PREFIX: usize = 5;

#[inline]
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn set_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Reads `n` bytes from the front of `input` (None if it is shorter).
#[inline]
fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

#[inline]
fn get_u32(input: &mut &[u8]) -> Option<u32> {
    take(input, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

#[inline]
fn get_u64(input: &mut &[u8]) -> Option<u64> {
    take(input, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

#[inline]
fn get_u8(input: &mut &[u8]) -> Option<u8> {
    take(input, 1).map(|b| b[0])
}

/// Rewrites the packed items `bytes[at..end]` (`count` of `width` bytes)
/// in the general form: each gets `prefix(len)` before it. The bytes from
/// `end` on (an item being written) move along unchanged.
fn unpack(bytes: &mut Vec<u8>, at: usize, end: usize, count: u32, width: usize, prefix: fn(&mut Vec<u8>, u32)) {
    let tail = bytes.split_off(end);
    let packed = bytes.split_off(at);
    bytes.reserve(packed.len() + count as usize * RESULT_PREFIX + tail.len());
    if width == 0 {
        for _ in 0..count {
            prefix(bytes, 0);
        }
    } else {
        for item in packed.chunks_exact(width) {
            prefix(bytes, width as u32);
            bytes.extend_from_slice(item);
        }
    }
    bytes.extend_from_slice(&tail);
}

fn task_prefix(out: &mut Vec<u8>, len: u32) {
    put_u32(out, len);
}

fn ok_prefix(out: &mut Vec<u8>, len: u32) {
    out.push(0);
    put_u32(out, len);
}

/// The arguments of a plain-data job: their memory images back to back,
/// written once by the submitting thread and shared by the job's frames.
/// They live in a shared-memory segment (the "arena") that the workers
/// map: a frame carries only a reference to its slice ([`ARENA`]), so
/// nothing is copied between the submitting thread's write and the
/// worker's read. The segment goes back to the pool's spare slot when the
/// job's last frame is dropped (no frame of the job is held by the pool or
/// a worker any more), so the next `map` writes into pages that the pool
/// and its workers have mapped already (no page fault per 4 KiB). Small
/// jobs (under [`ARENA_FROM`] bytes by the iterator's `size_hint`) and jobs
/// for which no segment can be made use a private buffer instead, and each
/// frame carries its slice.
#[derive(Debug)]
pub(crate) struct PodBlock {
    store: Store,
    len: usize,
    /// Where an arena goes back (`None` for a private block).
    home: Option<Spare>,
    /// The arena's slots when it is recycled a frame at a time (see [`Slots`]).
    slots: Option<Slots>,
}

#[derive(Debug)]
enum Store {
    Shm(RawSegment),
    Heap(Vec<u8>),
}

/// Where a pool keeps the arena of its last plain-data `map` for the next.
pub(crate) type Spare = Arc<Mutex<Option<RawSegment>>>;

/// The largest arena kept for reuse (bytes): a pool keeps at most this
/// much after a `map` of plain data.
pub(crate) const SPARE_MAX: usize = 32 << 20;
/// Jobs whose arguments are said (`size_hint`) to take fewer bytes than
/// this go in line in their frames, not through an arena.
pub(crate) const ARENA_FROM: usize = 64 * 1024;
/// The largest arena made for what an iterator's `size_hint` says: a
/// hint is the iterator's word, not a fact (`0..u64::MAX` says 2^64 - 1),
/// and an arena's pages are reserved when it is made.
pub(crate) const HINT_MAX: usize = 256 << 20;
/// The smallest arena made.
const ARENA_MIN: usize = 1 << 20;
/// Items go into the arena a block of this many bytes at a time.
const FILL_BLOCK: usize = 16 * 1024;

/// Flag of a task frame: its items are a reference to an arena slice,
/// `offset u64 | bytes u64 | name_len u32 | name` (see [`PodBlock`]).
pub(crate) const ARENA: u32 = 4;
const ARENA_REF: usize = 20;

/// A new arena of `len` bytes, private to the pool: a task that sets its
/// persist flag does not make the pool leave it behind.
fn new_arena(len: usize) -> Result<RawSegment, crate::OpenError> {
    let seg = RawSegment::new(len as u64)?;
    seg.make_private();
    Ok(seg)
}

fn arena_size(bytes: usize) -> usize {
    bytes.max(ARENA_MIN).checked_next_power_of_two().unwrap_or(bytes)
}

impl PodBlock {
    /// The images of `items` (plain data of `width` bytes: the caller
    /// checked `pod_width::<A>() == Some(width)`), written into the spare
    /// arena of `home` if it is large enough, else into a new one.
    pub(crate) fn fill<A>(home: &Spare, items: impl IntoIterator<Item = A>, width: usize) -> PodBlock {
        let size = std::mem::size_of::<A>();
        debug_assert_eq!(size, width);
        let mut items = items.into_iter();
        let want = items.size_hint().0.saturating_mul(size).min(HINT_MAX);
        if want < ARENA_FROM {
            // Small (an `apply`, a short `map`): a private block, sent in
            // line, rather than an arena per job in flight.
            return PodBlock { store: Store::Heap(fill_heap(Vec::new(), items)), len: 0, home: None, slots: None }.measured();
        }
        let spare = home.lock().unwrap_or_else(|p| p.into_inner()).take();
        let seg = match spare {
            Some(seg) if seg.len() >= want => Some(seg),
            _ => new_arena(arena_size(want)).ok(),
        };
        let Some(mut seg) = seg else {
            return PodBlock { store: Store::Heap(fill_heap(Vec::new(), items)), len: 0, home: None, slots: None }.measured();
        };
        let mut block = [0u8; FILL_BLOCK];
        let per = (FILL_BLOCK / size).max(1);
        let mut len = 0usize;
        loop {
            let mut got = 0;
            while got < per {
                let Some(item) = items.next() else { break };
                // SAFETY: `got < per`, `per * size <= FILL_BLOCK`: inside `block`; `A` is plain data (initialised
                // bytes when written as an `A`).
                unsafe { block.as_mut_ptr().add(got * size).cast::<A>().write_unaligned(item) };
                got += 1;
            }
            let bytes = &block[..got * size];
            if len + bytes.len() > seg.len() {
                let need = (len + bytes.len()).saturating_add(items.size_hint().0.saturating_mul(size).min(HINT_MAX));
                match new_arena(arena_size(need.max(2 * seg.len()))) {
                    Ok(bigger) => {
                        copy_segment(&seg, &bigger, len);
                        seg = bigger;
                    }
                    Err(_) => {
                        // No room for an arena: a private block after all.
                        let mut v = vec![0u8; len];
                        seg.read(0, &mut v);
                        v.extend_from_slice(bytes);
                        let v = fill_heap(v, items);
                        return PodBlock { store: Store::Heap(v), len: 0, home: None, slots: None }.measured();
                    }
                }
            }
            seg.write(len, bytes);
            len += bytes.len();
            if got < per {
                break;
            }
        }
        PodBlock { store: Store::Shm(seg), len, home: Some(Arc::clone(home)), slots: None }
    }

    /// An arena of at least `bytes` bytes (the spare of `home` if it is
    /// large enough, else a new one) to be filled while its first frames
    /// are already out (see [`write_items`](Self::write_items)); `None`
    /// if no segment can be made. Its length is its capacity.
    pub(crate) fn arena(home: &Spare, bytes: usize) -> Option<PodBlock> {
        let spare = home.lock().unwrap_or_else(|p| p.into_inner()).take();
        let seg = match spare {
            Some(seg) if seg.len() >= bytes => seg,
            other => {
                // Too small: back where it was (a smaller map may use it).
                if let Some(seg) = other {
                    let mut slot = home.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() {
                        *slot = Some(seg);
                    }
                }
                new_arena(arena_size(bytes)).ok()?
            }
        };
        Some(PodBlock { len: seg.len(), store: Store::Shm(seg), home: Some(Arc::clone(home)), slots: None })
    }

    /// The arena cut into `n` slots of `slot_bytes` (at most what it
    /// holds, and at most [`MAX_SLOTS`]), recycled a frame at a time.
    pub(crate) fn into_slots(mut self, slot_bytes: usize, n: usize) -> PodBlock {
        let n = n.min(self.len / slot_bytes.max(1)).min(MAX_SLOTS);
        if matches!(self.store, Store::Shm(_)) && n > 0 {
            self.slots = Some(Slots::new(n));
        }
        self
    }

    /// Its slots (see [`into_slots`](Self::into_slots)).
    pub(crate) fn slots(&self) -> Option<&Slots> {
        self.slots.as_ref()
    }

    /// A private block of the images in `bytes` (items the arena had no
    /// room for).
    pub(crate) fn heap(bytes: Vec<u8>) -> PodBlock {
        PodBlock { len: bytes.len(), store: Store::Heap(bytes), home: None, slots: None }
    }

    /// Writes the images of up to `max` items of `items` (plain data of
    /// `size_of::<A>()` bytes: the caller checked `pod_width::<A>()`) at
    /// byte `at` of an arena, one pass, straight into shared memory; how
    /// many were written (fewer if the iterator ends or the arena is full;
    /// 0 for a private block). Only bytes no frame refers to yet may be
    /// written: the workers read the others meanwhile.
    pub(crate) fn write_items<A>(&self, at: usize, items: &mut impl Iterator<Item = A>, max: usize) -> usize {
        let Store::Shm(seg) = &self.store else { return 0 };
        let size = std::mem::size_of::<A>();
        if size == 0 {
            return 0;
        }
        let max = max.min(seg.len().saturating_sub(at) / size);
        // Straight from the iterator into the arena, one pass (see
        // `write_items_to_shared`: plain stores, which the compiler keeps
        // in step with the iterator; the private block and bulk copy that
        // were here cost a second pass on the `map`'s busiest thread).
        // No frame refers to these bytes yet (the caller's contract), so no worker reads them.
        // SAFETY: `at + max * size <= seg.len()` (`max`, above): inside the arena `self` keeps, which
        // stays mapped while `self` lives; `A` is plain data (the caller's check).
        unsafe { crate::shm::copy::write_items_to_shared(seg.as_ptr().add(at), items, max) }
    }

    fn measured(mut self) -> PodBlock {
        if let Store::Heap(v) = &self.store {
            self.len = v.len();
        }
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The arena's segment name (`None` for a private block).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn arena_name(&self) -> Option<&str> {
        match &self.store {
            Store::Shm(seg) => Some(seg.name()),
            Store::Heap(_) => None,
        }
    }

    /// Appends bytes `start..end` of the block to `out`.
    fn append(&self, start: usize, end: usize, out: &mut Vec<u8>) {
        match &self.store {
            Store::Heap(v) => out.extend_from_slice(&v[start..end]),
            Store::Shm(seg) => {
                let at = out.len();
                out.resize(at + (end - start), 0);
                seg.read(start, &mut out[at..]);
            }
        }
    }
}

/// The most slots a recycled arena has (one bit each in [`Slots`]).
pub(crate) const MAX_SLOTS: usize = 64;

/// The frame-sized slots of an arena that a streamed `map` recycles
/// (`Pool::submit_streamed`): its arguments pass through a few frames'
/// worth of shared memory that stays in the caches, not one arena as
/// large as the job (a `map` of a million `u64` wrote 8 MB of fresh lines
/// and its workers read them back from memory: the submitting thread's
/// largest cost). The submitting thread takes a free slot and writes
/// frames into it (one frame of a full chunk, or several small chunks'
/// frames) until it is full; each frame holds its slot (see
/// [`TaskFrame::from_pod_slot`]) until it is dropped or fully answered
/// ([`TaskFrame::release_args`]): the worker that ran it has read its
/// arguments by then (it sends their results after), and a frame taken
/// back from a worker, or read back after its worker died, keeps its slot
/// meanwhile. A slot is free again, to be written, once neither a frame
/// nor the writer holds it.
#[derive(Debug)]
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

#[derive(Debug)]
struct SlotState {
    /// One bit per free slot.
    free: u64,
    /// Per slot: the frames whose arguments are in it, and the writer
    /// while it fills it (a slot of small chunks holds several frames).
    holds: [u32; MAX_SLOTS],
    /// The writer waits for a slot.
    waiting: bool,
}

impl Slots {
    /// `n` free slots (1 to [`MAX_SLOTS`]).
    fn new(n: usize) -> Slots {
        let n = n.clamp(1, MAX_SLOTS);
        let free = if n == MAX_SLOTS { !0 } else { (1u64 << n) - 1 };
        Slots { state: Mutex::new(SlotState { free, holds: [0; MAX_SLOTS], waiting: false }), freed: Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lowest free slot, taken (held by the writer until it
    /// [`release`](Self::release)s it), if one is free now.
    pub(crate) fn try_take(&self) -> Option<usize> {
        self.lock().take_lowest()
    }

    /// A free slot, taken as [`try_take`](Self::try_take) takes it,
    /// waiting at most `timeout` for one.
    pub(crate) fn take_timeout(&self, timeout: Duration) -> Option<usize> {
        let deadline = std::time::Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(index) = s.take_lowest() {
                return Some(index);
            }
            let left = deadline.checked_duration_since(std::time::Instant::now()).filter(|l| !l.is_zero())?;
            s.waiting = true;
            s = self.freed.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// One more hold on slot `index` (a frame of its arguments).
    fn hold(&self, index: usize) {
        let mut s = self.lock();
        s.holds[index] += 1;
    }

    /// A hold on slot `index` goes (the writer's, or a frame's): the slot
    /// is free once none is left.
    pub(crate) fn release(&self, index: usize) {
        let mut s = self.lock();
        s.holds[index] = s.holds[index].saturating_sub(1);
        if s.holds[index] > 0 {
            return;
        }
        s.free |= 1 << index;
        let wake = std::mem::take(&mut s.waiting);
        drop(s);
        if wake {
            self.freed.notify_all();
        }
    }
}

impl SlotState {
    fn take_lowest(&mut self) -> Option<usize> {
        (self.free != 0).then(|| {
            let i = self.free.trailing_zeros() as usize;
            self.free &= !(1 << i);
            self.holds[i] = 1;
            i
        })
    }
}

/// Copies the first `len` bytes of `from` into `to` (through a private
/// buffer: both are shared memory).
fn copy_segment(from: &RawSegment, to: &RawSegment, len: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    while at < len {
        let n = buf.len().min(len - at);
        from.read(at, &mut buf[..n]);
        to.write(at, &buf[..n]);
        at += n;
    }
}

/// The images of the rest of `items` appended to `bytes` (plain data: the
/// caller's check), with no capacity test per item.
pub(crate) fn fill_heap<A>(mut bytes: Vec<u8>, mut items: impl Iterator<Item = A>) -> Vec<u8> {
    let size = std::mem::size_of::<A>();
    loop {
        // Room for the items the iterator says are left (at least one), at
        // most `HINT_MAX` or the length so far at a time: a hint is the
        // iterator's word, and a lying one must not abort the process with
        // a failed allocation (it grows by doubling past that).
        let step = HINT_MAX.max(bytes.len()).max(size);
        bytes.reserve(items.size_hint().0.max(1).saturating_mul(size).min(step));
        let spare = bytes.spare_capacity_mut();
        let (mut at, end) = (0, spare.len() - spare.len() % size);
        let dst = spare.as_mut_ptr().cast::<u8>();
        let mut more = false;
        while at < end {
            let Some(item) = items.next() else { break };
            // SAFETY: `at + size <= end <= spare.len()`: inside the spare capacity; `A` is plain data
            // (initialised bytes when written as an `A`).
            unsafe { dst.add(at).cast::<A>().write_unaligned(item) };
            at += size;
            more = at == end;
        }
        // SAFETY: the `at` bytes after the length were written above.
        unsafe { bytes.set_len(bytes.len() + at) };
        if !more {
            return bytes;
        }
    }
}

impl Drop for PodBlock {
    fn drop(&mut self) {
        if let (Store::Shm(seg), Some(home)) = (&self.store, &self.home)
            && seg.len() <= SPARE_MAX
        {
            let mut spare = home.lock().unwrap_or_else(|p| p.into_inner());
            if spare.as_ref().is_none_or(|s| s.len() < seg.len()) {
                *spare = Some(seg.clone());
            }
        }
    }
}

/// An arena reference read from a task frame's items: (offset, bytes,
/// segment name); `None` if malformed.
pub(crate) fn arena_ref(items: &[u8]) -> Option<(usize, usize, &str)> {
    let mut r = items;
    let offset = usize::try_from(get_u64(&mut r)?).ok()?;
    let bytes = usize::try_from(get_u64(&mut r)?).ok()?;
    let name_len = get_u32(&mut r)? as usize;
    let name = std::str::from_utf8(take(&mut r, name_len)?).ok()?;
    r.is_empty().then_some((offset, bytes, name))
}

/// A task frame under construction (in the submitting thread).
#[derive(Debug)]
pub(crate) struct TaskFrame {
    pub(crate) job: u64,
    pub(crate) first: u64,
    pub(crate) count: u32,
    /// The header and the items (empty for a plain-data frame: `pod`
    /// holds both).
    pub(crate) bytes: Vec<u8>,
    /// A plain-data frame: its header, and its items `block[start..end]`
    /// (see [`PodBlock`]).
    pod: Option<PodRef>,
    /// Items still of one width (`width`), without prefixes.
    packed: bool,
    width: usize,
    /// While packed: how many items of `width` fit in the frame (with the
    /// prefixes they would need in the general form).
    room: u32,
    /// Where the items start.
    items_at: usize,
}

/// A plain-data frame's header and items, kept without a heap buffer of
/// its own (no allocation per frame: issue 13's "no allocation per task").
#[derive(Debug)]
struct PodRef {
    block: Arc<PodBlock>,
    start: usize,
    end: usize,
    /// The task id (the fixed header is made from the frame's fields when
    /// it is sent: kept small, a frame moves with a few stores, not a
    /// `memcpy` call).
    id: &'static [u8],
    /// The header's flags (set by `finish`).
    flags: u32,
    /// The slot of `block`'s [`Slots`] its arguments are in (`NO_SLOT`:
    /// none): freed when this hold on them goes.
    slot: u32,
}

const NO_SLOT: u32 = u32::MAX;

impl Drop for PodRef {
    fn drop(&mut self) {
        if self.slot != NO_SLOT
            && let Some(slots) = &self.block.slots
        {
            slots.release(self.slot as usize);
        }
    }
}

/// A plain-data frame's fixed header (job, first, count, flags, id length).
fn pod_head(job: u64, first: u64, count: u32, flags: u32, id: &[u8]) -> [u8; TASK_HEADER] {
    let mut head = [0u8; TASK_HEADER];
    head[..8].copy_from_slice(&job.to_le_bytes());
    head[8..16].copy_from_slice(&first.to_le_bytes());
    head[16..20].copy_from_slice(&count.to_le_bytes());
    head[20..24].copy_from_slice(&flags.to_le_bytes());
    head[24..28].copy_from_slice(&(id.len() as u32).to_le_bytes());
    head
}

// A frame moves a few times per task (into the pending queue, a worker's
// list): small enough to move with inline stores, not a `memcpy` call
// (LLVM inlines copies of up to 128 bytes).
const _: () = assert!(std::mem::size_of::<TaskFrame>() <= 128);

impl TaskFrame {
    pub(crate) fn new(job: u64, first: u64, id: &[u8]) -> TaskFrame {
        Self::new_in(Vec::new(), job, first, id)
    }

    /// [`new`](Self::new) in `bytes`' buffer (a recycled frame's: no
    /// allocation when it is large enough).
    pub(crate) fn new_in(mut bytes: Vec<u8>, job: u64, first: u64, id: &[u8]) -> TaskFrame {
        bytes.clear();
        bytes.reserve(TASK_HEADER + id.len() + 64);
        put_u64(&mut bytes, job);
        put_u64(&mut bytes, first);
        put_u32(&mut bytes, 0);
        put_u32(&mut bytes, 0);
        put_u32(&mut bytes, id.len() as u32);
        bytes.extend_from_slice(id);
        let items_at = bytes.len();
        TaskFrame { job, first, count: 0, bytes, pod: None, packed: true, width: 0, room: 0, items_at }
    }

    /// The frame's size if it had to take the general form.
    #[inline]
    fn general_len(&self) -> usize {
        self.bytes.len() + if self.packed { TASK_PREFIX * self.count as usize } else { 0 }
    }

    /// Appends one item whose encoding `encode` writes. `Err(len)` (and the
    /// frame unchanged) if the item alone is larger than
    /// [`MAX_ITEM_BYTES`]; `Ok(false)` (frame unchanged) if it does not fit
    /// in this frame any more: finish it and put the item in a new one.
    #[inline]
    pub(crate) fn push(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<bool, usize> {
        if self.packed && self.count > 0 {
            // The common case: one more item of the frame's width.
            if self.count >= self.room {
                return Ok(false);
            }
            let mark = self.bytes.len();
            encode(&mut self.bytes);
            if self.bytes.len() - mark == self.width {
                self.count += 1;
                return Ok(true);
            }
            return self.push_other(mark);
        }
        let mark = self.bytes.len();
        if !self.packed {
            put_u32(&mut self.bytes, 0);
        }
        encode(&mut self.bytes);
        self.push_other(mark)
    }

    /// The checks of `push` for an item written at `mark` that is the
    /// first, or in a general frame, or of another width than the others.
    #[inline(never)]
    fn push_other(&mut self, mark: usize) -> Result<bool, usize> {
        let at = if self.packed { mark } else { mark + TASK_PREFIX };
        let len = self.bytes.len() - at;
        if len > MAX_ITEM_BYTES {
            self.bytes.truncate(mark);
            return Err(len);
        }
        // Room for this item's prefix too, whichever form the frame ends in.
        if self.general_len() + if self.packed { TASK_PREFIX } else { 0 } > MAX_FRAME && self.count > 0 {
            self.bytes.truncate(mark);
            return Ok(false);
        }
        if self.packed {
            if self.count == 0 {
                self.width = len;
                // Items of this width that fit with their prefixes.
                self.room = ((MAX_FRAME - self.items_at) / (len + TASK_PREFIX)).min(u32::MAX as usize) as u32;
            } else {
                self.unpack(mark, len);
            }
        } else {
            set_u32(&mut self.bytes, mark, len as u32);
        }
        self.count += 1;
        Ok(true)
    }

    /// The item at `mark` (`len` bytes) has another width than the ones
    /// before: the frame takes the general form.
    #[cold]
    #[inline(never)]
    fn unpack(&mut self, mark: usize, len: usize) {
        unpack(&mut self.bytes, self.items_at, mark, self.count, self.width, task_prefix);
        self.packed = false;
        let mark = self.bytes.len() - len;
        self.bytes.splice(mark..mark, (len as u32).to_le_bytes());
    }

    /// How many plain-data arguments of `width` bytes one packed frame for
    /// task `id` takes (the same room `push` gives them, so a frame cut
    /// from it after a worker's death fits again).
    /// No more than a packed result frame takes of values of the same
    /// width, so each frame's results go back in one result frame.
    pub(crate) fn pod_room(id: &[u8], width: usize) -> usize {
        let items_at = TASK_HEADER + id.len();
        let results = (MAX_FRAME - RESULT_HEADER) / (width + RESULT_PREFIX);
        ((MAX_FRAME - items_at) / (width + TASK_PREFIX)).min(results).max(1)
    }

    /// A packed frame of the arguments `block[start..end]` (`width` bytes
    /// each, at most [`pod_room`](Self::pod_room) of them; the bulk path of
    /// plain data: nothing copied here, the ring takes the slice).
    pub(crate) fn from_pod(job: u64, first: u64, id: &'static [u8], block: &Arc<PodBlock>, start: usize, end: usize, width: usize) -> TaskFrame {
        debug_assert!(width > 0 && width <= MAX_ITEM_BYTES && start <= end && end <= block.len());
        debug_assert!((end - start).is_multiple_of(width));
        let count = (end - start) / width;
        debug_assert!(count <= Self::pod_room(id, width));
        TaskFrame {
            job,
            first,
            count: count as u32,
            bytes: Vec::new(),
            pod: Some(PodRef { block: Arc::clone(block), start, end, id, flags: 0, slot: NO_SLOT }),
            packed: true,
            width,
            room: Self::pod_room(id, width) as u32,
            items_at: TASK_HEADER + id.len(),
        }
    }

    /// [`from_pod`](Self::from_pod) of arguments in slot `slot` of the
    /// block's [`Slots`] (taken by the caller): the frame holds the slot
    /// until it is dropped or fully answered.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_pod_slot(
        job: u64,
        first: u64,
        id: &'static [u8],
        block: &Arc<PodBlock>,
        (start, end): (usize, usize),
        width: usize,
        slot: usize,
    ) -> TaskFrame {
        let mut f = Self::from_pod(job, first, id, block, start, end, width);
        if let Some(p) = f.pod.as_mut()
            && let Some(slots) = &block.slots
            && slot < MAX_SLOTS
        {
            slots.hold(slot);
            p.slot = slot as u32;
        }
        f
    }

    /// Drops the frame's hold on its plain-data block (its arena goes back
    /// to the pool once no frame holds it): only for a frame that is fully
    /// answered, which is never sent or cut again. True.
    pub(crate) fn release_args(&mut self) -> bool {
        self.pod = None;
        true
    }

    /// The frame as one run of bytes, its items in line (a copy for a
    /// plain-data frame).
    pub(crate) fn contiguous(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.pod {
            None => std::borrow::Cow::Borrowed(&self.bytes),
            Some(p) => {
                let mut all = Vec::with_capacity(TASK_HEADER + p.id.len() + (p.end - p.start));
                all.extend_from_slice(&pod_head(self.job, self.first, self.count, p.flags, p.id));
                all.extend_from_slice(p.id);
                p.block.append(p.start, p.end, &mut all);
                std::borrow::Cow::Owned(all)
            }
        }
    }

    /// Sends the frame into `tx` without waiting (a plain-data frame: its
    /// header and its arena reference, or its slice of a private block).
    pub(crate) fn try_send(&self, tx: &mut ByteProducer) -> Result<(), TrySendError> {
        let Some(PodRef { block, start, end, id, flags, .. }) = &self.pod else { return tx.try_send(&self.bytes) };
        let h = TASK_HEADER + id.len();
        let head = pod_head(self.job, self.first, self.count, *flags, id);
        match &block.store {
            Store::Heap(v) => {
                let items = &v[*start..*end];
                let mut loan = tx.try_send_loan(h + items.len())?;
                loan.write_at(0, &head);
                loan.write_at(TASK_HEADER, id);
                loan.write_at(h, items);
                loan.commit().map_err(|_| TrySendError::Closed)
            }
            Store::Shm(seg) => {
                let name = seg.name().as_bytes();
                let mut loan = tx.try_send_loan(h + ARENA_REF + name.len())?;
                loan.write_at(0, &head);
                loan.write_at(TASK_HEADER, id);
                let flags = flags | ARENA;
                loan.write_at(20, &flags.to_le_bytes());
                let mut r = [0u8; ARENA_REF];
                r[..8].copy_from_slice(&(*start as u64).to_le_bytes());
                r[8..16].copy_from_slice(&((end - start) as u64).to_le_bytes());
                r[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
                loan.write_at(h, &r);
                loan.write_at(h + ARENA_REF, name);
                loan.commit().map_err(|_| TrySendError::Closed)
            }
        }
    }

    /// Appends an already encoded item (one that fitted in a frame before).
    pub(crate) fn push_raw(&mut self, item: &[u8]) -> bool {
        if self.count > 0 && self.general_len() + TASK_PREFIX + item.len() > MAX_FRAME {
            return false;
        }
        self.push(|out| out.extend_from_slice(item)) == Ok(true)
    }

    /// Seals the header (count, flags).
    pub(crate) fn finish(mut self, end_of_chunk: bool) -> TaskFrame {
        let flags = if end_of_chunk { END_OF_CHUNK } else { 0 } | if self.packed { PACKED } else { 0 };
        match &mut self.pod {
            Some(p) => p.flags = flags,
            None => {
                set_u32(&mut self.bytes, 16, self.count);
                set_u32(&mut self.bytes, 20, flags);
            }
        }
        self
    }
}

/// A parsed task frame header; `items` holds the arguments (walk them
/// with [`Items`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskHeader<'a> {
    pub(crate) job: u64,
    pub(crate) first: u64,
    pub(crate) count: u32,
    pub(crate) flags: u32,
    pub(crate) id: &'a [u8],
    pub(crate) items: &'a [u8],
}

impl<'a> TaskHeader<'a> {
    /// The arguments, one by one.
    pub(crate) fn items(&self) -> Items<'a> {
        Items::new(self.items, self.count, self.flags & PACKED != 0, TASK_PREFIX)
    }
}

/// The fields both frame kinds start with: job, first, count, flags.
fn parse_common(frame: &mut &[u8]) -> Option<(u64, u64, u32, u32)> {
    Some((get_u64(frame)?, get_u64(frame)?, get_u32(frame)?, get_u32(frame)?))
}

/// The bytes of a task frame's header before its id.
pub(crate) const TASK_HEADER_LEN: usize = TASK_HEADER;
/// The bytes before each argument in a task frame of the general form.
pub(crate) const TASK_PREFIX_LEN: usize = TASK_PREFIX;

/// The length of a task frame's header and id, from its first
/// [`TASK_HEADER_LEN`] bytes (`None` for an id longer than [`MAX_ID`]).
pub(crate) fn task_head_len(header: &[u8; TASK_HEADER]) -> Option<usize> {
    let id_len = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes")) as usize;
    (id_len <= MAX_ID).then_some(TASK_HEADER + id_len)
}

/// A packed result frame's header (`job`, `first`, `count` values).
pub(crate) fn packed_result_header(job: u64, first: u64, count: u32) -> [u8; RESULT_HEADER] {
    let mut h = [0u8; RESULT_HEADER];
    h[..8].copy_from_slice(&job.to_le_bytes());
    h[8..16].copy_from_slice(&first.to_le_bytes());
    h[16..20].copy_from_slice(&count.to_le_bytes());
    h[20..24].copy_from_slice(&PACKED.to_le_bytes());
    h
}

pub(crate) fn parse_task(mut frame: &[u8]) -> Option<TaskHeader<'_>> {
    let (job, first, count, flags) = parse_common(&mut frame)?;
    let id_len = get_u32(&mut frame)? as usize;
    if id_len > MAX_ID {
        return None;
    }
    let id = take(&mut frame, id_len)?;
    Some(TaskHeader { job, first, count, flags, id, items: frame })
}

/// Walks the items of a frame in either form: `(status, bytes)` (status 0
/// in packed frames and in task frames); `None` at the end or at the first
/// malformed item (a packed frame whose size is not `count` times a width
/// is malformed as a whole).
#[derive(Debug, Clone)]
pub(crate) struct Items<'a> {
    rest: &'a [u8],
    /// `Some(width)` for a packed frame; `left` items remain.
    width: Option<usize>,
    left: u32,
    prefix: usize,
}

impl<'a> Items<'a> {
    #[inline]
    pub(crate) fn new(items: &'a [u8], count: u32, packed: bool, prefix: usize) -> Items<'a> {
        if !packed {
            return Items { rest: items, width: None, left: count, prefix };
        }
        let width = if count == 0 { 0 } else { items.len() / count as usize };
        if width.checked_mul(count as usize) != Some(items.len()) {
            return Items { rest: &[], width: Some(0), left: 0, prefix };
        }
        Items { rest: items, width: Some(width), left: count, prefix }
    }

    /// A packed frame's remaining items, back to back, and their width
    /// (`None` for the general form and for width 0).
    #[inline]
    pub(crate) fn packed(&self) -> Option<(&'a [u8], usize)> {
        self.width.filter(|&w| w > 0 && w.checked_mul(self.left as usize) == Some(self.rest.len())).map(|w| (self.rest, w))
    }

    /// The next item and its status byte.
    #[inline]
    pub(crate) fn next_with_status(&mut self) -> Option<(u8, &'a [u8])> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match self.width {
            Some(w) => take(&mut self.rest, w).map(|b| (0, b)),
            None => {
                let status = if self.prefix == RESULT_PREFIX { get_u8(&mut self.rest)? } else { 0 };
                let len = get_u32(&mut self.rest)? as usize;
                Some((status, take(&mut self.rest, len)?))
            }
        }
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a [u8];
    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        self.next_with_status().map(|(_, b)| b)
    }
}

/// A result frame under construction (in a worker): results are written
/// straight into it.
#[derive(Debug, Default)]
pub(crate) struct ResultFrame {
    pub(crate) bytes: Vec<u8>,
    count: u32,
    packed: bool,
    width: usize,
    /// While packed: how many items of `width` fit (see `over`).
    room: u32,
}

impl ResultFrame {
    pub(crate) fn start(&mut self, job: u64, first: u64) {
        self.bytes.clear();
        put_u64(&mut self.bytes, job);
        put_u64(&mut self.bytes, first);
        put_u32(&mut self.bytes, 0);
        put_u32(&mut self.bytes, 0);
        self.count = 0;
        self.packed = true;
        self.width = 0;
        self.room = 0;
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Where the next item starts; write its payload into `bytes`, then
    /// pass the mark to `seal_item`.
    #[inline]
    pub(crate) fn begin_item(&mut self) -> usize {
        let mark = self.bytes.len();
        if !self.packed {
            self.bytes.push(0);
            put_u32(&mut self.bytes, 0);
        }
        mark
    }

    /// How many more successful results of `width` bytes the frame takes
    /// as they are, back to back (0 unless it is packed with items of that
    /// width): the worker's bulk path writes them into the spare room and
    /// counts them with [`add_packed`](Self::add_packed).
    #[inline]
    pub(crate) fn pod_room(&self, width: usize) -> usize {
        if self.packed && self.count > 0 && self.width == width { self.room.saturating_sub(self.count) as usize } else { 0 }
    }

    /// Counts `n` results of the frame's width appended to `bytes`
    /// (at most [`pod_room`](Self::pod_room)).
    #[inline]
    pub(crate) fn add_packed(&mut self, n: u32) {
        debug_assert!(self.packed && self.count + n <= self.room);
        self.count += n;
    }

    /// Drops what was written of the item begun at `mark` (its payload
    /// starts again empty).
    pub(crate) fn reset_item(&mut self, mark: usize) {
        self.bytes.truncate(if self.packed { mark } else { mark + RESULT_PREFIX });
    }

    /// Finishes the item begun at `mark` with `status`; a value larger
    /// than [`MAX_ITEM_BYTES`] is replaced by its length with the status
    /// `TooLarge`, a longer message is cut.
    #[inline]
    pub(crate) fn seal_item(&mut self, mark: usize, status: u8) {
        if self.packed {
            let len = self.bytes.len() - mark;
            if status == 0 && len == self.width && self.count > 0 {
                self.count += 1;
                return;
            }
            if status == 0 && len <= MAX_ITEM_BYTES && self.count == 0 {
                self.width = len;
                // Items of this width that fit with the prefixes the
                // general form would need: `over` is `count > room`.
                self.room = ((MAX_FRAME - RESULT_HEADER) / (len + RESULT_PREFIX)).min(u32::MAX as usize) as u32;
                self.count += 1;
                return;
            }
            return self.unpack_and_seal(len, status);
        }
        self.seal_general(mark, status)
    }

    /// The item just written (`len` bytes, no prefix) is not like the
    /// others: the frame takes the general form, then the item is sealed.
    #[cold]
    #[inline(never)]
    fn unpack_and_seal(&mut self, len: usize, status: u8) {
        let mark = self.bytes.len() - len;
        unpack(&mut self.bytes, RESULT_HEADER, mark, self.count, self.width, ok_prefix);
        self.packed = false;
        let mark = self.bytes.len() - len;
        self.bytes.splice(mark..mark, [0u8; RESULT_PREFIX]);
        self.seal_general(mark, status)
    }

    #[inline(never)]
    fn seal_general(&mut self, mark: usize, status: u8) {
        let len = self.bytes.len() - mark - RESULT_PREFIX;
        if len > MAX_ITEM_BYTES && status != super::task::Status::Ok as u8 {
            // A task's long error or panic message keeps its kind: cut to
            // the limit (at a character boundary), marked as cut.
            const CUT: &[u8] = " [message cut]".as_bytes();
            let start = mark + RESULT_PREFIX;
            let mut keep = MAX_ITEM_BYTES - CUT.len();
            while keep > 0 && (self.bytes[start + keep] & 0xC0) == 0x80 {
                keep -= 1;
            }
            self.bytes.truncate(start + keep);
            self.bytes.extend_from_slice(CUT);
            self.bytes[mark] = status;
        } else if len > MAX_ITEM_BYTES {
            // A value too large to send: its length instead, for the
            // parent's `TaskError::TooLarge` (see `result::failure`).
            self.bytes.truncate(mark + RESULT_PREFIX);
            self.bytes[mark] = super::task::Status::TooLarge as u8;
            self.bytes.extend_from_slice(&(len as u64).to_le_bytes());
        } else {
            self.bytes[mark] = status;
        }
        let len = (self.bytes.len() - mark - RESULT_PREFIX) as u32;
        set_u32(&mut self.bytes, mark + 1, len);
        self.count += 1;
    }

    /// Whether the frame is over the ring's frame limit (in the form it
    /// may still have to take).
    #[inline]
    pub(crate) fn over(&self) -> bool {
        // Packed: the same as the general test below with every item of
        // `width` bytes and `RESULT_PREFIX` more for each.
        if self.packed { self.count > self.room } else { self.bytes.len() > MAX_FRAME }
    }

    /// Seals the header; the bytes are ready to send.
    pub(crate) fn seal(&mut self) -> &[u8] {
        let count = self.count;
        set_u32(&mut self.bytes, 16, count);
        set_u32(&mut self.bytes, 20, if self.packed { PACKED } else { 0 });
        &self.bytes
    }

    /// Moves the last item (begun at `mark`) out of this frame: its status
    /// (returned) and payload (into `spill`), so the frame can be sent
    /// without it.
    pub(crate) fn split_last(&mut self, mark: usize, spill: &mut Vec<u8>) -> u8 {
        spill.clear();
        let (status, at) = if self.packed { (0, mark) } else { (self.bytes[mark], mark + RESULT_PREFIX) };
        spill.extend_from_slice(&self.bytes[at..]);
        self.bytes.truncate(mark);
        self.count -= 1;
        status
    }

    /// Appends an item moved out with `split_last`.
    pub(crate) fn push_raw(&mut self, status: u8, payload: &[u8]) {
        let mark = self.begin_item();
        self.bytes.extend_from_slice(payload);
        self.seal_item(mark, status);
    }
}

/// A parsed result frame header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResultHeader<'a> {
    pub(crate) job: u64,
    pub(crate) first: u64,
    pub(crate) count: u32,
    pub(crate) flags: u32,
    pub(crate) items: &'a [u8],
}

impl<'a> ResultHeader<'a> {
    /// The results, one by one, with their status bytes.
    pub(crate) fn items(&self) -> Items<'a> {
        Items::new(self.items, self.count, self.flags & PACKED != 0, RESULT_PREFIX)
    }
}

/// The bytes of a result frame's header.
pub(crate) const RESULT_HEADER_LEN: usize = RESULT_HEADER;

/// A packed result frame of `len` bytes whose header is `header`: (job,
/// first, count, width), its values at [`RESULT_HEADER_LEN`] on; `None`
/// for any other frame (the general form, no items, a size that is not
/// `count` values of one width).
pub(crate) fn packed_result(header: &[u8; RESULT_HEADER], len: usize) -> Option<(u64, u64, u32, usize)> {
    let (job, first, count, flags) = parse_common(&mut &header[..])?;
    let values = len.checked_sub(RESULT_HEADER)?;
    if flags & PACKED == 0 || count == 0 || !values.is_multiple_of(count as usize) || values == 0 {
        return None;
    }
    Some((job, first, count, values / count as usize))
}

pub(crate) fn parse_result(mut frame: &[u8]) -> Option<ResultHeader<'_>> {
    let (job, first, count, flags) = parse_common(&mut frame)?;
    Some(ResultHeader { job, first, count, flags, items: frame })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_frames_round_trip_and_reject_truncation() {
        let mut f = TaskFrame::new(7, 100, b"my::task");
        assert_eq!(f.push(|o| o.extend_from_slice(b"abc")), Ok(true));
        assert_eq!(f.push(|o| o.extend_from_slice(b"")), Ok(true));
        assert_eq!(f.push(|o| o.resize(o.len() + MAX_ITEM_BYTES + 1, 0)), Err(MAX_ITEM_BYTES + 1));
        let f = f.finish(true);
        let h = parse_task(&f.bytes).unwrap();
        assert_eq!((h.job, h.first, h.count, h.flags, h.id), (7, 100, 2, END_OF_CHUNK, &b"my::task"[..]));
        let mut items = h.items();
        assert_eq!(items.next(), Some(&b"abc"[..]));
        assert_eq!(items.next(), Some(&b""[..]));
        assert_eq!(items.next(), None);
        for cut in 0..f.bytes.len() {
            if let Some(h) = parse_task(&f.bytes[..cut]) {
                h.items().for_each(drop);
            }
        }
    }

    /// Items of one width travel packed; the first item of another width
    /// turns the frame into the general form, items unchanged.
    #[test]
    fn task_frames_stay_packed_while_items_have_one_width() {
        let mut f = TaskFrame::new(1, 0, b"t");
        for v in [1u64, 2, 3] {
            assert_eq!(f.push(|o| o.extend_from_slice(&v.to_le_bytes())), Ok(true));
        }
        let packed = f.finish(false);
        let h = parse_task(&packed.bytes).unwrap();
        assert_eq!(h.flags, PACKED);
        assert_eq!(h.items.len(), 24, "no prefixes");
        assert_eq!(h.items().map(|b| b[0]).collect::<Vec<_>>(), [1, 2, 3]);

        let mut f = TaskFrame::new(1, 0, b"t");
        let all: [&[u8]; 4] = [b"ab", b"cd", b"xyz", b""];
        for item in all {
            assert!(f.push_raw(item));
        }
        let general = f.finish(true);
        let h = parse_task(&general.bytes).unwrap();
        assert_eq!((h.flags, h.count), (END_OF_CHUNK, 4));
        assert_eq!(h.items().collect::<Vec<_>>(), all);
        // A packed frame whose size is not count x width is malformed.
        let mut bad = packed.bytes.clone();
        bad.pop();
        assert_eq!(parse_task(&bad).unwrap().items().next(), None);
    }

    /// Full frames: a packed frame keeps room for its prefixes, so turning
    /// it into the general form never passes the frame limit.
    #[test]
    fn a_full_packed_frame_fits_in_the_general_form() {
        let mut f = TaskFrame::new(1, 0, b"t");
        while f.push(|o| o.extend_from_slice(&[7; 8])) == Ok(true) {}
        assert!(f.general_len() + TASK_PREFIX + 8 > MAX_FRAME);
        assert!(f.general_len() <= MAX_FRAME);
        let n = f.count;
        f.unpack(f.bytes.len(), 0);
        assert!(f.bytes.len() <= MAX_FRAME + TASK_PREFIX);
        let f = f.finish(false);
        let h = parse_task(&f.bytes).unwrap();
        assert_eq!(h.count, n);
        assert!(h.items().all(|b| b == [7; 8]));
    }

    /// `over` on a packed result frame says what it would say of the same
    /// frame in the general form.
    #[test]
    fn a_packed_result_frame_is_over_when_its_general_form_would_be() {
        let mut r = ResultFrame::default();
        r.start(1, 0);
        let mut n = 0usize;
        while !r.over() {
            let m = r.begin_item();
            r.bytes.extend_from_slice(&[1; 8]);
            r.seal_item(m, 0);
            n += 1;
        }
        assert!(RESULT_HEADER + n * (8 + RESULT_PREFIX) > MAX_FRAME);
        assert!(RESULT_HEADER + (n - 1) * (8 + RESULT_PREFIX) <= MAX_FRAME);
        // A failure turns it general: the general test agrees.
        let m = r.begin_item();
        r.seal_item(m, 1);
        assert!(!r.packed && r.over());
    }

    #[test]
    fn result_frames_turn_general_at_the_first_failure() {
        let mut r = ResultFrame::default();
        r.start(3, 9);
        for v in [10u64, 11] {
            let m = r.begin_item();
            r.bytes.extend_from_slice(&v.to_le_bytes());
            r.seal_item(m, 0);
        }
        let bytes = r.seal().to_vec();
        let h = parse_result(&bytes).unwrap();
        assert_eq!((h.flags, h.count, h.items.len()), (PACKED, 2, 16));
        let m = r.begin_item();
        r.bytes.extend_from_slice(b"boom");
        r.seal_item(m, 2);
        let m = r.begin_item();
        r.bytes.extend_from_slice(&12u64.to_le_bytes());
        r.seal_item(m, 0);
        // The last one moves to the next frame with its status.
        let mut spill = Vec::new();
        assert_eq!(r.split_last(m, &mut spill), 0);
        let bytes = r.seal().to_vec();
        let h = parse_result(&bytes).unwrap();
        assert_eq!((h.flags, h.count), (0, 3));
        let got: Vec<_> = std::iter::from_fn({
            let mut items = h.items();
            move || items.next_with_status()
        })
        .collect();
        assert_eq!(got, [(0, &10u64.to_le_bytes()[..]), (0, &11u64.to_le_bytes()[..]), (2, &b"boom"[..])]);
        r.start(3, 12);
        r.push_raw(0, &spill);
        let bytes = r.seal().to_vec();
        let h = parse_result(&bytes).unwrap();
        assert_eq!((h.flags, h.first, h.count), (PACKED, 12, 1));
        assert_eq!(h.items().next(), Some(&12u64.to_le_bytes()[..]));
    }

    /// Frames come from another process: garbage of any length and content
    /// (lengths claiming more than is there included) parses to `None` or
    /// to slices inside the input, never a panic.
    #[test]
    fn garbage_frames_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..600usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly small values, so lengths are often plausible.
                    if x.is_multiple_of(3) { (x >> 8) as u8 } else { (x % 8) as u8 }
                })
                .collect();
            if let Some(h) = parse_task(&bytes) {
                h.items().take(1000).for_each(drop);
            }
            if let Some(h) = parse_result(&bytes) {
                let mut items = h.items();
                for _ in 0..1000 {
                    if items.next_with_status().is_none() {
                        break;
                    }
                }
            }
        }
    }

    /// The manager's in-place path takes only a packed frame whose size
    /// is its count of values of one width.
    #[test]
    fn packed_result_headers_are_checked() {
        let mut r = ResultFrame::default();
        r.start(5, 40);
        for v in [1u64, 2, 3] {
            let m = r.begin_item();
            r.bytes.extend_from_slice(&v.to_le_bytes());
            r.seal_item(m, 0);
        }
        let bytes = r.seal().to_vec();
        let header: [u8; RESULT_HEADER] = bytes[..RESULT_HEADER].try_into().unwrap();
        assert_eq!(packed_result(&header, bytes.len()), Some((5, 40, 3, 8)));
        assert_eq!(packed_result(&header, bytes.len() - 1), None, "not whole values");
        assert_eq!(packed_result(&header, RESULT_HEADER), None, "no values");
        assert_eq!(packed_result(&header, 3), None, "shorter than a header");
        let mut general = header;
        general[20] = 0;
        assert_eq!(packed_result(&general, bytes.len()), None, "the general form");
        let mut none = header;
        none[16..20].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(packed_result(&none, bytes.len()), None, "no items");
    }

    /// A plain-data frame is its header and a slice of the block; cut
    /// after a worker's death, its items fit in a frame again.
    #[test]
    fn pod_frames_are_slices_of_their_block() {
        let home: Spare = Arc::default();
        let block = Arc::new(PodBlock::fill(&home, 0..100_000u64, 8));
        assert_eq!(block.len(), 800_000);
        let room = TaskFrame::pod_room(b"t", 8);
        assert!(room * (8 + RESULT_PREFIX) + RESULT_HEADER <= MAX_FRAME, "one result frame per task frame");
        let f = TaskFrame::from_pod(9, 10, b"t", &block, 80, 80 + room * 8, 8).finish(true);
        let bytes = f.contiguous();
        let h = parse_task(&bytes).unwrap();
        assert_eq!((h.job, h.first, h.count, h.flags), (9, 10, room as u32, END_OF_CHUNK | PACKED));
        assert!(h.items().enumerate().all(|(k, b)| b == (10 + k as u64).to_le_bytes()));
        let mut again = TaskFrame::new(9, 10, b"t");
        assert!(h.items().all(|b| again.push_raw(b)));
        drop((f, block));
        assert!(home.lock().unwrap().as_ref().is_some_and(|s| s.len() >= 800_000), "the arena is kept for the next map");
    }

    #[test]
    fn result_frames_round_trip_and_replace_oversized_results() {
        let mut r = ResultFrame::default();
        r.start(3, 9);
        let m = r.begin_item();
        r.bytes.extend_from_slice(b"xy");
        r.seal_item(m, 0);
        let m = r.begin_item();
        r.bytes.resize(r.bytes.len() + MAX_ITEM_BYTES + 1, 1);
        r.seal_item(m, 0);
        let bytes = r.seal().to_vec();
        let h = parse_result(&bytes).unwrap();
        assert_eq!((h.job, h.first, h.count, h.flags), (3, 9, 2, 0));
        let mut items = h.items();
        assert_eq!(items.next_with_status(), Some((0, &b"xy"[..])));
        let (status, len) = items.next_with_status().unwrap();
        assert_eq!(status, super::super::task::Status::TooLarge as u8);
        assert_eq!(len, ((MAX_ITEM_BYTES + 1) as u64).to_le_bytes());
        let cut = parse_result(&bytes[..bytes.len() - 1]).unwrap();
        let mut items = cut.items();
        assert!(items.next_with_status().is_some());
        assert!(items.next_with_status().is_none(), "the truncated item is not returned");
    }
}
