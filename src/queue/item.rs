//! What the MPMC ring's slots carry, chosen at compile time.
//!
//! - plain data (`T: ShmType`, or a [`Handoff`] type whose hidden
//!   `__POD` marker is set, wrapped in [`PodVia`]): the item itself, in a
//!   `Slot<T>` (sequence word + value), moved with the typed copy
//!   primitives; this is [`MpmcQueue<T>`](super::MpmcQueue)'s layout;
//! - anything else ([`FrameCell<T>`]): a variable-length frame in a slot of
//!   a fixed size chosen at creation (`max_frame`), the payload 64-byte
//!   aligned. Frames are written and read by `frames.rs`.
//!
//! Both kinds run the same protocol (Vyukov's, with the crash repair of
//! `repair.rs`): only the slot geometry and the copies differ.

use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;

use crate::handoff::Handoff;
use crate::shm::{Fingerprint, Kind};
use crate::ShmType;

/// A pod slot: the sequence word and the item, together on one line.
#[repr(C)]
pub(crate) struct Slot<T> {
    pub(crate) seq: AtomicU64,
    pub(crate) val: T,
}

/// Not part of the API: an item type of the MPMC ring. Implemented for
/// every [`ShmType`], for [`PodVia`] and [`FrameCell`]; the bound of
/// [`MpmcQueue`](super::MpmcQueue)'s methods.
#[doc(hidden)]
pub trait RingItem: Sized {
    /// Variable-length frames (else: the item in a `Slot<Self>`).
    const FRAMES: bool = false;
    /// The segment kind.
    const KIND: Kind = Kind::MpmcQueue;
    /// The element identity the segment records.
    fn fingerprint() -> Fingerprint;
    /// Writes a pod item into its slot's value field.
    ///
    /// # Safety
    /// As [`crate::shm::copy::write`]; only called for pod items.
    unsafe fn write(dst: *mut Self, v: Self);
    /// Reads a pod item from its slot's value field.
    ///
    /// # Safety
    /// As [`crate::shm::copy::read`]; only called for pod items.
    unsafe fn read(src: *const Self) -> Self;
}

impl<T: ShmType> RingItem for T {
    fn fingerprint() -> Fingerprint {
        Fingerprint::of::<T>()
    }
    #[inline(always)]
    unsafe fn write(dst: *mut Self, v: Self) {
        // SAFETY: the caller's contract is `copy::write`'s.
        unsafe { crate::shm::copy::write(dst, v) }
    }
    #[inline(always)]
    unsafe fn read(src: *const Self) -> Self {
        // SAFETY: the caller's contract is `copy::read`'s.
        unsafe { crate::shm::copy::read(src) }
    }
}

/// Not part of the API: a plain-data [`Handoff`] item on the pod slot ring
/// (same layout as `T`, so the segment is the one `MpmcQueue<T>` opens).
#[doc(hidden)]
#[repr(transparent)]
pub struct PodVia<T>(pub T);

impl<T: Handoff> PodVia<T> {
    /// `T`'s wire; a compile-time constant, so the `None` arm is dead code
    /// for the plain-data types this is built for (the queues choose the
    /// frame ring for every other type).
    #[inline(always)]
    fn wire() -> crate::handoff::PodWire<T> {
        match T::__POD {
            Some(w) => w,
            None => unreachable!("PodVia is only built for plain-data Handoff types"),
        }
    }
}

impl<T: Handoff> RingItem for PodVia<T> {
    fn fingerprint() -> Fingerprint {
        (Self::wire().fingerprint)()
    }
    #[inline(always)]
    unsafe fn write(dst: *mut Self, v: Self) {
        // SAFETY: `PodVia<T>` is a transparent `T`; the wire is `T`'s typed copy, whose contract the caller keeps.
        unsafe { (Self::wire().write)(dst.cast::<T>(), v.0) }
    }
    #[inline(always)]
    unsafe fn read(src: *const Self) -> Self {
        // SAFETY: as in `write`.
        PodVia(unsafe { (Self::wire().read)(src.cast::<T>()) })
    }
}

/// Not part of the API: the slots of a frame ring carrying `T`s encoded
/// with [`Handoff`] (the type is recorded in the segment by name).
#[doc(hidden)]
pub struct FrameCell<T>(PhantomData<fn() -> T>);

/// A frame slot's header: the sequence word and the payload length; the
/// payload follows it (a small frame) or starts at [`FRAME_HEAD`] (64-byte
/// aligned), see `frames.rs`.
#[repr(C)]
pub(crate) struct FrameHead {
    pub(crate) seq: AtomicU64,
    pub(crate) len: AtomicU64,
}

/// Bytes before a large frame's payload (64-byte aligned; small frames
/// start right after the header, see `frames.rs`).
pub(crate) const FRAME_HEAD: u64 = 64;
/// Frame slot sizes are multiples of this.
pub(crate) const FRAME_ALIGN: u64 = 64;
const _: () = assert!(std::mem::size_of::<FrameHead>() as u64 <= FRAME_HEAD);

/// What a frame queue's recorded type name starts with (the item type's
/// name follows).
pub(crate) const FRAMES_PREFIX: &str = "frames:";

impl<T> RingItem for FrameCell<T> {
    const FRAMES: bool = true;
    const KIND: Kind = Kind::FrameQueue;
    fn fingerprint() -> Fingerprint {
        let name = format!("{FRAMES_PREFIX}{}", std::any::type_name::<T>());
        Fingerprint::named(FRAME_ALIGN as u32, FRAME_ALIGN as u32, name.into())
    }
    unsafe fn write(_: *mut Self, _: Self) {
        unreachable!("frame slots are written by frames.rs")
    }
    unsafe fn read(_: *const Self) -> Self {
        unreachable!("frame slots are read by frames.rs")
    }
}

/// The header's capacity word of a ring: slots in the low 32 bits, and
/// for frame rings the slot size in 64-byte units above them.
pub(crate) const SLOTS_BITS: u64 = 0xFFFF_FFFF;

/// Slots and slot size (bytes) of a ring whose header says `capacity`;
/// `None` if the slot size is impossible.
pub(crate) fn geometry<T: RingItem>(capacity: u64) -> Option<(u64, u64)> {
    if T::FRAMES {
        let stride = (capacity >> 32).checked_mul(FRAME_ALIGN)?;
        (stride > FRAME_HEAD).then_some((capacity & SLOTS_BITS, stride))
    } else {
        Some((capacity, std::mem::size_of::<Slot<T>>() as u64))
    }
}
