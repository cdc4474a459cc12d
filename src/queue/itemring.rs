//! One MPMC ring of `T: Handoff` items, whichever slots `T` needs: the
//! pod slot ring for plain data (`T::__POD`, a compile-time constant, so
//! the other arm is dead code), the frame ring otherwise. The
//! Python-shaped queues and the unbounded chain are built on it.

use super::error::{GetTimeoutError, PutTimeoutError, TryGetError, TryPutError};
use super::frames::{self, FrameIn, FrameInto, FrameTake};
use super::item::{FrameCell, PodVia, RingItem};
use super::mpmc::{MpmcQueue, ShmSlots, frame_init};
use super::vyukov::{ByValue, SlotRead, Slots};
use crate::handoff::Handoff;
use crate::shm::object;
use crate::wait::Deadline;
use crate::{OpenError, Options};

/// The frame size of a queue of encoded items unless told otherwise: a
/// slot of 1088 bytes (17 cache lines: an odd number, see `frames.rs`).
pub const DEFAULT_MAX_FRAME: u64 = 1024;

/// How long a call may wait.
#[derive(Clone, Copy)]
pub(super) enum Mode {
    /// Not at all (`try_`/`_nowait`).
    Try,
    /// Until the deadline (`Deadline::NEVER`: no deadline).
    Until(Deadline),
}

/// Why a put did not happen (every case; each public call converts it to
/// its own enum).
pub(super) enum PutFail<T> {
    Full(T),
    Closed(T),
    TimedOut(T),
    /// The item, its encoded length, the limit.
    TooLarge(T, usize, usize),
}

/// Why a get returned nothing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(super) enum GetFail {
    Empty,
    Closed,
    TimedOut,
    Corrupted,
    /// A whole frame that is not a `T` (the decoder's error).
    Decode(crate::process::HandoffError),
}

/// One ring of items.
pub(super) enum ItemRing<T> {
    Slots(MpmcQueue<PodVia<T>>),
    Frames(MpmcQueue<FrameCell<T>>),
}

impl<T> Clone for ItemRing<T> {
    fn clone(&self) -> Self {
        match self {
            ItemRing::Slots(q) => ItemRing::Slots(q.clone()),
            ItemRing::Frames(q) => ItemRing::Frames(q.clone()),
        }
    }
}

impl<T> std::fmt::Debug for ItemRing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ItemRing::Slots(q) => q.fmt(f),
            ItemRing::Frames(q) => q.fmt(f),
        }
    }
}

/// Runs `$body` with `$q` bound to the ring, whichever kind it is.
macro_rules! each {
    ($r:expr, $q:ident => $body:expr) => {
        match $r {
            ItemRing::Slots($q) => $body,
            ItemRing::Frames($q) => $body,
        }
    };
}
pub(super) use each;

impl<T: Handoff> ItemRing<T> {
    /// Creates a ring of `cap` items (frames of up to `max_frame` bytes)
    /// as `name`, or under a unique name.
    pub(super) fn create(name: Option<&str>, cap: u64, max_frame: u64, opts: &Options) -> Result<Self, OpenError> {
        if T::__POD.is_some() {
            Ok(ItemRing::Slots(match name {
                Some(n) => object::create(n, cap, opts)?,
                None => object::create_unique(cap, opts)?,
            }))
        } else {
            let init = Self::frame_init(cap, max_frame)?;
            Ok(ItemRing::Frames(match name {
                Some(n) => object::create(n, init, opts)?,
                None => object::create_unique(init, opts)?,
            }))
        }
    }

    /// Bytes of a ring segment beyond its slots (header, control block,
    /// alignment): the same for every ring of `T`.
    pub(super) fn overhead() -> u64 {
        let offset = if T::__POD.is_some() {
            crate::shm::object::Layout::data_offset::<MpmcQueue<PodVia<T>>>()
        } else {
            crate::shm::object::Layout::data_offset::<MpmcQueue<FrameCell<T>>>()
        };
        // (An alignment past u64 cannot be: the fingerprint's is a u32.)
        offset.unwrap_or(u64::MAX / 4)
    }

    fn frame_init(cap: u64, max_frame: u64) -> Result<u64, OpenError> {
        // At least one byte of room: a slot of the frame header alone (the
        // stride of `max_frame` 0) is no slot, and slots are rounded up
        // to whole lines anyway (0 gives the slots of 1).
        let stride = frames::frame_stride(max_frame.max(1))
            .ok_or_else(|| OpenError::InvalidArgument(format!("frame size {max_frame} is not supported")))?;
        if cap > u64::from(u32::MAX) {
            return Err(OpenError::InvalidArgument(format!("capacity {cap} is not supported")));
        }
        Ok(frame_init(cap, stride))
    }

    /// Opens the ring `name`.
    pub(super) fn open(name: &str, opts: &Options) -> Result<Self, OpenError> {
        if T::__POD.is_some() {
            object::open(name, opts).map(ItemRing::Slots)
        } else {
            object::open(name, opts).map(ItemRing::Frames)
        }
    }

    /// Puts `item`.
    #[inline(always)]
    pub(super) fn put(&self, item: T, mode: Mode) -> Result<(), PutFail<T>> {
        self.put_ref(&item, mode).map_err(|e| e.with(item))
    }

    /// Puts the item `item` refers to: plain data as a copy of it in its
    /// slot, anything else as its encoding (`String`: written straight
    /// into the slot). The caller keeps the item; a failure says why.
    #[inline(always)]
    pub(super) fn put_ref(&self, item: &T, mode: Mode) -> Result<(), PutFail<()>> {
        match self {
            ItemRing::Slots(q) => {
                // SAFETY: this ring exists only for a `T` with a `PodWire` (chosen by `T::__POD`), built only for a `ShmType`
                // (`Pod`: `Copy`, no `Drop`) or an array of such: a bitwise copy is a valid, independent `T`.
                Self::push(q, PodVia(unsafe { std::ptr::read(item) }), mode)
            }
            // Written straight into the slot when the type says how
            // (`String`: its length word and bytes); else encoded into the
            // thread's buffer first.
            ItemRing::Frames(q) => match item.__frame_parts() {
                Some((w, bytes)) => Self::put_frame(q, FrameIn { word: Some(w), bytes }, mode),
                None => frames::with_encoded(item, |bytes| Self::put_frame(q, FrameIn { word: None, bytes }, mode), Result::is_ok),
            },
        }
    }

    /// The length of `item`'s frame in a frame ring (0 for plain data,
    /// whose slots have one size): what a new ring's frames must hold.
    /// Cold: an unbounded queue asks it when its newest ring is full.
    #[cold]
    pub(super) fn frame_len(item: &T) -> u64 {
        if T::__POD.is_some() {
            return 0;
        }
        match item.__frame_parts() {
            Some((_, bytes)) => 8 + bytes.len() as u64,
            // Measured only: the encoding goes nowhere (`sent` false).
            None => frames::with_encoded(item, |bytes| bytes.len() as u64, |_| false),
        }
    }

    /// The longest frame in the ring's slots now (0 for plain data): see
    /// `MpmcQueue::largest_frame`.
    #[cold]
    pub(super) fn largest_frame(&self) -> u64 {
        match self {
            ItemRing::Slots(_) => 0,
            ItemRing::Frames(q) => q.largest_frame(),
        }
    }

    /// Puts one frame (its item is given back by the caller on failure).
    #[inline(always)]
    fn put_frame(q: &MpmcQueue<FrameCell<T>>, frame: FrameIn<'_>, mode: Mode) -> Result<(), PutFail<()>> {
        let len = frame.len();
        if len > q.max_frame() {
            // A closed queue says so first, whatever the item.
            return Err(if q.is_closed() { PutFail::Closed(()) } else { PutFail::TooLarge((), len, q.max_frame()) });
        }
        Self::push(q, frame, mode)
    }

    /// One push of `v` into `q` (the caller keeps or gives back the item).
    #[inline(always)]
    fn push<I: RingItem, V>(q: &MpmcQueue<I>, v: V, mode: Mode) -> Result<(), PutFail<()>>
    where
        ShmSlots<I>: Slots<V>,
    {
        match mode {
            Mode::Try => q.try_push_v(v).map_err(|e| match e {
                TryPutError::Full(_) => PutFail::Full(()),
                _ => PutFail::Closed(()),
            }),
            Mode::Until(d) => q.push_until(v, d).map_err(|e| match e {
                PutTimeoutError::TimedOut(_) => PutFail::TimedOut(()),
                _ => PutFail::Closed(()),
            }),
        }
    }

    /// Gets an item.
    #[inline(always)]
    pub(super) fn get(&self, mode: Mode) -> Result<T, GetFail> {
        match self {
            ItemRing::Slots(q) => Self::pop(q, mode, &mut ByValue::new()).map(|v: PodVia<T>| v.0),
            ItemRing::Frames(q) => {
                let mut r = FrameTake::new();
                Self::pop(q, mode, &mut r)?;
                frames::decode(r.into_frame()).map_err(|e| e.map_or(GetFail::Corrupted, GetFail::Decode))
            }
        }
    }

    /// Gets an item into `out` (plain data: assigned; anything else:
    /// decoded into it, reusing what it owns: `Handoff::decode_into`). On
    /// `Empty`, `Closed` or `TimedOut`, `out` is untouched.
    #[inline(always)]
    pub(super) fn get_into(&self, out: &mut T, mode: Mode) -> Result<(), GetFail> {
        match self {
            ItemRing::Slots(q) => {
                *out = Self::pop(q, mode, &mut ByValue::<PodVia<T>>::new())?.0;
                Ok(())
            }
            ItemRing::Frames(q) => {
                let mut r = FrameInto::new(&mut *out);
                Self::pop(q, mode, &mut r)?;
                frames::decode_into(r.into_frame(), out).map_err(|e| e.map_or(GetFail::Corrupted, GetFail::Decode))
            }
        }
    }

    /// One pop from `q`, read by `r`.
    #[inline(always)]
    fn pop<I: RingItem, R: SlotRead<ShmSlots<I>>>(q: &MpmcQueue<I>, mode: Mode, r: &mut R) -> Result<R::Out, GetFail>
    where
        ShmSlots<I>: Slots<R::Via>,
    {
        match mode {
            Mode::Try => q.try_pop_v(r).map_err(GetFail::from_try),
            Mode::Until(d) => q.pop_until(d, r).map_err(GetFail::from_timeout),
        }
    }

    /// Items in the ring (exact at one instant).
    pub(super) fn len(&self) -> usize {
        each!(self, q => q.len())
    }

    /// The ring's JoinableQueue counters (an unbounded queue's ring).
    pub(super) fn tally(&self) -> super::links::Tally<'_> {
        each!(self, q => q.tally())
    }

    /// The ring's capacity.
    pub(super) fn capacity(&self) -> usize {
        each!(self, q => q.capacity())
    }

    /// The largest encoded item (frames), or the item size (pod).
    pub(super) fn max_frame(&self) -> usize {
        match self {
            ItemRing::Slots(_) => std::mem::size_of::<T>(),
            ItemRing::Frames(q) => q.max_frame(),
        }
    }

    /// Closes the ring for every process.
    pub(super) fn close(&self) {
        each!(self, q => q.close())
    }

    /// Whether the ring is closed (an unbounded queue's: sealed).
    pub(super) fn is_closed(&self) -> bool {
        each!(self, q => q.is_closed())
    }

    pub(super) fn name(&self) -> &str {
        each!(self, q => q.name())
    }

    pub(super) fn persist(&self) {
        each!(self, q => q.persist())
    }
}

impl PutFail<()> {
    /// The failure of a put by reference, as the failure of putting `item`
    /// (handed back).
    #[inline(always)]
    pub(super) fn with<T>(self, item: T) -> PutFail<T> {
        match self {
            PutFail::Full(()) => PutFail::Full(item),
            PutFail::Closed(()) => PutFail::Closed(item),
            PutFail::TimedOut(()) => PutFail::TimedOut(item),
            PutFail::TooLarge((), len, max) => PutFail::TooLarge(item, len, max),
        }
    }
}

impl GetFail {
    fn from_try(e: TryGetError) -> Self {
        match e {
            TryGetError::Empty => GetFail::Empty,
            TryGetError::Closed => GetFail::Closed,
            TryGetError::Corrupted => GetFail::Corrupted,
            TryGetError::Decode(d) => GetFail::Decode(d),
        }
    }
    fn from_timeout(e: GetTimeoutError) -> Self {
        match e {
            GetTimeoutError::TimedOut => GetFail::TimedOut,
            GetTimeoutError::Closed => GetFail::Closed,
            GetTimeoutError::Corrupted => GetFail::Corrupted,
            GetTimeoutError::Decode(d) => GetFail::Decode(d),
        }
    }
}
