//! Variable-length frames on the MPMC ring: the items of a
//! [`Queue`](super::Queue) that are not plain data, encoded with
//! [`Handoff`].
//!
//! Shape: the MPMC ring of `mpmc.rs` (Vyukov's protocol, the participant
//! records and the crash repair of `repair.rs`, unchanged) whose slots are
//! fixed-size frame slots chosen at creation (`max_frame`):
//!
//! ```text
//! slot = [seq: u64][len: u64][small payload (<= SMALL_FRAME bytes) from byte 16 ...]
//!      = [seq: u64][len: u64][pad to 64][payload: max_frame bytes, 64-aligned]
//! ```
//!
//! Where the payload starts depends on its length (read once, then
//! checked): a frame of up to [`SMALL_FRAME`] bytes starts right after the
//! two header words, so a small item shares the cache line of its sequence
//! word (a 64-byte string, 72 bytes encoded, touches 2 lines instead of 3:
//! each line is one cross-core transfer from producer to consumer); a
//! longer one starts 64-byte aligned, where large copies run at full speed.
//!
//! Cache behaviour: slots are an odd number of lines long (past two), so
//! the two hot lines of consecutive slots spread over every cache set
//! ([`frame_stride`]); and whoever is about to claim position `p`
//! prefetches those two lines of slot `p + AHEAD` ([`AHEAD`]), so the
//! misses of consecutive items overlap instead of queueing behind each
//! claim's CAS. Neither changes the protocol.
//!
//! A producer claims a position, writes `len` and the payload, and
//! publishes with the slot's Release sequence store; a consumer claims it
//! with the Acquire sequence load and copies the payload out. So the crash
//! guarantees are the Pod queue's, word for word: a dead producer's frame
//! is skipped (absent), a dead consumer's frame is gone with it, nothing
//! else is lost, and `qsize` is exact (positions count frames).
//!
//! No loans: a frame is copied into its slot and out of it inside the
//! claim, never lent to the caller's code (why: `Queue`'s docs, "No frame
//! loans").
//!
//! Untrusted input: `len` is read once, and a length beyond the slot is a
//! corrupted frame (removed, reported as `Corrupted`), as is a payload
//! that does not decode as exactly one `T`. Every payload copy goes
//! through `shm::copy`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::item::{FRAME_HEAD, FrameCell, FrameHead};
use super::mpmc::{MpmcQueue, ShmSlots};
use super::vyukov::{SlotRead, Slots};
use crate::handoff::{Handoff, SharedFrame};

/// A frame to write (checked to fit before the claim): `word`'s 8
/// little-endian bytes if there is one, then `bytes`.
#[derive(Clone, Copy)]
pub(super) struct FrameIn<'a> {
    pub(super) word: Option<u64>,
    pub(super) bytes: &'a [u8],
}

impl FrameIn<'_> {
    /// The frame's length in bytes.
    #[inline(always)]
    pub(super) fn len(&self) -> usize {
        self.bytes.len() + if self.word.is_some() { 8 } else { 0 }
    }
}

/// A frame read.
pub(super) enum FrameOut<T> {
    /// Its bytes, to decode once the slot is released.
    Bytes(Vec<u8>),
    /// Already decoded from the slot (`Handoff::__decode_frame`).
    Value(Result<T, crate::process::HandoffError>),
    /// Its length was impossible.
    Corrupted,
}

impl<T> ShmSlots<FrameCell<T>> {
    /// The slot's header (sequence word, length).
    #[inline(always)]
    fn head(&self, pos: u64) -> &FrameHead {
        // SAFETY: a frame slot starts with its 8-aligned `FrameHead` inside the mapping (`slot`); made of
        // atomics, so a shared reference is sound while other processes write it.
        unsafe { &*self.slot(pos).cast::<FrameHead>() }
    }

    /// Asks the CPU for the two lines every item touches (the header line
    /// and the next one, where a small frame ends) of the slot
    /// [`AHEAD`] positions after `pos`: the claimant of `pos` will need
    /// them in a few items, and the demand miss would stall it then (a
    /// claim's CAS orders everything around it, so misses of consecutive
    /// items never overlap by themselves). `write`: for the producer
    /// (`prefetchw` where the CPU has it, see [`prefetchw`]). A hint: no
    /// effect on what any load or store sees.
    #[inline(always)]
    fn prefetch_ahead(&self, pos: u64, write: bool) {
        let p = self.slot(pos.wrapping_add(AHEAD));
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_ET0, _MM_HINT_T0, _mm_prefetch};
            // `p + 64` is inside the slot (a frame slot is at least `FRAME_HEAD + 64` bytes: `geometry`);
            // `prefetchw::line` only after `available()` said the CPU has it.
            // SAFETY: prefetches are hints: they access nothing architecturally and never fault; `add` in bounds.
            unsafe {
                if write && prefetchw::available() {
                    prefetchw::line(p);
                    prefetchw::line(p.add(64));
                } else if write {
                    _mm_prefetch::<_MM_HINT_ET0>(p.cast());
                    _mm_prefetch::<_MM_HINT_ET0>(p.add(64).cast());
                } else {
                    _mm_prefetch::<_MM_HINT_T0>(p.cast());
                    _mm_prefetch::<_MM_HINT_T0>(p.add(64).cast());
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (p, write);
    }

    /// Payload bytes a slot holds.
    #[inline(always)]
    fn room(&self) -> usize {
        self.stride() - FRAME_HEAD as usize
    }
}

impl<T: Handoff> Slots<FrameIn<'_>> for ShmSlots<FrameCell<T>> {
    #[inline(always)]
    fn seq(&self, pos: u64) -> &AtomicU64 {
        &self.head(pos).seq
    }
    #[inline(always)]
    fn touch(&self, pos: u64) {
        self.prefetch_ahead(pos, true);
    }
    #[inline(always)]
    unsafe fn write(&self, pos: u64, v: FrameIn<'_>) {
        let n = v.len();
        debug_assert!(n <= self.room(), "the caller checks the frame fits");
        // (Checked anyway: a frame that does not fit is written empty.)
        let (n, word, bytes) = if n <= self.room() { (n, v.word, v.bytes) } else { (0, None, &[][..]) };
        // Relaxed: published by the Release store of the slot's sequence
        // word in `publish` (vyukov.rs), which the consumer loads with Acquire.
        self.head(pos).len.store(n as u64, Ordering::Relaxed);
        // `n <= room`, `payload_at(n) <= FRAME_HEAD`; payloads start at 16 or 64 in 64-byte slots (8-aligned);
        // the word (if any) and `bytes` are exactly those `n` bytes; the caller owns the slot (vyukov's contract).
        // SAFETY: `payload_at(n) + n <= FRAME_HEAD + room = stride` bytes of the slot, inside the mapping.
        unsafe {
            let mut p = self.slot(pos).add(payload_at(n));
            if let Some(w) = word {
                crate::shm::copy::write(p.cast::<u64>(), w.to_le());
                p = p.add(8);
            }
            crate::shm::copy::copy_to_shared(bytes, p);
        }
    }
    unsafe fn read(&self, _: u64) -> FrameIn<'static> {
        unreachable!("frames are read into FrameOut")
    }
}

impl<T: Handoff> Slots<FrameOut<T>> for ShmSlots<FrameCell<T>> {
    #[inline(always)]
    fn seq(&self, pos: u64) -> &AtomicU64 {
        &self.head(pos).seq
    }
    #[inline(always)]
    fn touch(&self, pos: u64) {
        self.prefetch_ahead(pos, false);
    }
    unsafe fn write(&self, _: u64, _: FrameOut<T>) {
        unreachable!("frames are written from FrameIn")
    }
    #[inline(always)]
    unsafe fn read(&self, pos: u64) -> FrameOut<T> {
        // SAFETY: the caller owns the slot (this method's contract).
        unsafe { self.read_frame(pos, T::__decode_frame) }
    }
}

impl<T> ShmSlots<FrameCell<T>> {
    /// Reads the frame of the slot of `pos`: through `direct` (a decoder
    /// straight from the slot, one copy: `Some` if it handled the frame),
    /// else copied into the thread's read buffer, to decode once the slot
    /// is released.
    ///
    /// # Safety
    /// As `Slots::read`: the caller owns the slot.
    #[inline(always)]
    unsafe fn read_frame<V>(
        &self,
        pos: u64,
        direct: impl FnOnce(&SharedFrame<'_>) -> Option<Result<V, crate::process::HandoffError>>,
    ) -> FrameOut<V> {
        // Relaxed: the consumer's Acquire load of the sequence word (pop)
        // made the producer's store visible. Read once, then checked.
        let len = self.head(pos).len.load(Ordering::Relaxed);
        let Some(n) = usize::try_from(len).ok().filter(|&n| n <= self.room()) else {
            return FrameOut::Corrupted;
        };
        // SAFETY: `payload_at(n) + n <= stride` bytes of the slot are in the mapping (`n <= room`, as in `write`),
        // the payload is 8-aligned (as in `write`), and the caller owns the slot until it returns.
        let frame = unsafe { SharedFrame::new(self.slot(pos).add(payload_at(n)), n) };
        // Types that decode straight from the slot (one copy, no read
        // buffer): our own code, no allocation beyond the item's.
        if let Some(v) = direct(&frame) {
            return FrameOut::Value(v);
        }
        // The thread's read buffer (no allocation per frame once it has
        // grown; a fresh one while thread-locals are being destroyed);
        // `decode` gives it back.
        let mut out = READ.try_with(Cell::take).unwrap_or_default();
        out.clear();
        out.reserve(n);
        // SAFETY: `payload_at(n) + n <= stride` bytes of the slot are in the mapping (`n <= room`, as in `write`);
        // the caller owns the slot; the copy initialises the `n` reserved bytes that `set_len` then covers.
        unsafe {
            crate::shm::copy::copy_from_shared_uninit(self.slot(pos).add(payload_at(n)), &mut out.spare_capacity_mut()[..n]);
            out.set_len(n);
        }
        FrameOut::Bytes(out)
    }
}

/// Reads a frame into a value the caller lends (`get_into`): straight
/// from the slot where the type can ([`Handoff::__decode_frame_into`]:
/// `String` reuses its buffer), else through the read buffer and
/// [`Handoff::decode_into`] once the slot is released ([`decode_into`]).
/// What the read found stays here (`frame`), not returned through every
/// layer of the pop (a moved enum per layer, measured: about 20
/// instructions a get).
pub(super) struct FrameInto<'a, T> {
    out: &'a mut T,
    frame: FrameOut<()>,
}

impl<'a, T> FrameInto<'a, T> {
    /// A reader into `out` (nothing read yet).
    #[inline(always)]
    pub(super) fn new(out: &'a mut T) -> Self {
        FrameInto { out, frame: FrameOut::Corrupted }
    }

    /// What the read found (after a pop that returned `Ok`).
    #[inline(always)]
    pub(super) fn into_frame(self) -> FrameOut<()> {
        self.frame
    }
}

impl<T: Handoff> SlotRead<ShmSlots<FrameCell<T>>> for FrameInto<'_, T> {
    type Via = FrameOut<T>;
    type Out = ();
    #[inline(always)]
    unsafe fn read(&mut self, s: &ShmSlots<FrameCell<T>>, pos: u64) {
        let out = &mut *self.out;
        // SAFETY: the caller owns the slot (this method's contract).
        self.frame = unsafe { s.read_frame(pos, |f| out.__decode_frame_into(f)) };
    }
}

/// Reads a frame into an owned value (`get`): straight from the slot where
/// the type can ([`Handoff::__decode_frame`]: `String`, one allocation of
/// the exact length), else through the read buffer. As [`FrameInto`],
/// what the read found stays here instead of being moved out through
/// every layer of the pop (callgrind, one process put+get of 64-byte
/// strings: 330 -> 321 instructions a get, which is `get_into`'s 263, the
/// `String`'s allocation ~51 and ~7 more). Allocating the `String` before
/// the claim instead (from the length the slot shows, a hint) was tried:
/// +49 instructions a get and slower in two processes, so the one
/// allocation happens in the claim, once the length is known.
pub(super) struct FrameTake<T> {
    frame: FrameOut<T>,
}

impl<T> FrameTake<T> {
    /// A reader (nothing read yet).
    #[inline(always)]
    pub(super) fn new() -> Self {
        FrameTake { frame: FrameOut::Corrupted }
    }

    /// What the read found (after a pop that returned `Ok`).
    #[inline(always)]
    pub(super) fn into_frame(self) -> FrameOut<T> {
        self.frame
    }
}

impl<T: Handoff> SlotRead<ShmSlots<FrameCell<T>>> for FrameTake<T> {
    type Via = FrameOut<T>;
    type Out = ();
    #[inline(always)]
    unsafe fn read(&mut self, s: &ShmSlots<FrameCell<T>>, pos: u64) {
        // SAFETY: the caller owns the slot (this method's contract).
        self.frame = unsafe { s.read_frame(pos, T::__decode_frame) };
    }
}

/// `prefetchw`: fetch a line for writing (exclusive), so the producer's
/// stores into a slot the consumer last wrote need no ownership request
/// of their own, which the next claim's locked CAS would wait for.
/// `_mm_prefetch::<_MM_HINT_ET0>` emits it only in builds that target the
/// `prfchw` feature (the default x86_64 target does not: it becomes a
/// plain read prefetch), so it is emitted here after a CPUID check, once
/// per process.
#[cfg(target_arch = "x86_64")]
mod prefetchw {
    use std::sync::atomic::{AtomicU8, Ordering};

    /// 0: not checked yet, 1: absent, 2: present.
    static STATE: AtomicU8 = AtomicU8::new(0);

    /// Whether the CPU has `prefetchw` (CPUID 0x8000_0001, ECX bit 8).
    #[inline(always)]
    pub(super) fn available() -> bool {
        // Relaxed: a cached fact about this CPU; any thread may compute it.
        match STATE.load(Ordering::Relaxed) {
            0 => check(),
            s => s == 2,
        }
    }

    #[cold]
    fn check() -> bool {
        use std::arch::x86_64::__cpuid;
        // Leaf 0x8000_0000 says which extended leaves exist before
        // 0x8000_0001 is read.
        let has = __cpuid(0x8000_0000).eax >= 0x8000_0001 && __cpuid(0x8000_0001).ecx & (1 << 8) != 0;
        // Relaxed: see `available`.
        STATE.store(if has { 2 } else { 1 }, Ordering::Relaxed);
        has
    }

    /// # Safety
    /// `available()` returned true. (`p` need not be valid: a prefetch
    /// accesses nothing architecturally and never faults.)
    #[inline(always)]
    pub(super) unsafe fn line(p: *const u8) {
        // SAFETY: the CPU has the instruction (caller); it only hints the
        // cache, touches no register but its address operand, and no flag.
        unsafe { std::arch::asm!("prefetchw byte ptr [{0}]", in(reg) p, options(nostack, preserves_flags, readonly)) };
    }
}

/// How many positions ahead a producer or consumer prefetches slots.
/// Measured (`Queue<String>`, 64-byte strings, 1 -> 1 process, builds
/// alternating on a loaded 2-core machine): CPU per item per side 245-275
/// ns without, 180-200 ns with 4.
const AHEAD: u64 = 4;

/// Frames of up to this many bytes start at byte 16 of their slot, in the
/// cache line of the sequence word (a frame this long ends within the
/// slot's first 256 bytes); longer ones start at [`FRAME_HEAD`], 64-byte
/// aligned.
pub(crate) const SMALL_FRAME: usize = 240;
/// Where a small frame's payload starts: right after the header words.
const SMALL_AT: usize = std::mem::size_of::<FrameHead>();
const _: () = assert!(SMALL_AT <= FRAME_HEAD as usize && SMALL_AT.is_multiple_of(8));

/// Offset in its slot of the payload of a frame of `n` bytes (`n` checked
/// against the slot's room first: every frame fits at either offset).
#[inline(always)]
fn payload_at(n: usize) -> usize {
    if n <= SMALL_FRAME { SMALL_AT } else { FRAME_HEAD as usize }
}

/// Read buffers larger than this are not kept for the next get.
const KEEP_READ: usize = 1 << 20;

thread_local! {
    /// The encoding buffer, reused by every put of this thread (taken out
    /// while in use, so an `encode` that itself puts gets a fresh one).
    static ENCODED: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// The read buffer, reused by every get of this thread (taken out
    /// while in use, as `ENCODED`): a frame is copied out of its slot into
    /// it, and decoded from it once the slot is released.
    static READ: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with `item` encoded; `sent` says whether `f`'s result means
/// the encoding went into the queue. The roles that handles inside `item`
/// carry (a pipe end's) go with the encoding only then: a put that fails
/// leaves the item's handles as they were (its caller gets the item back).
#[inline]
pub(super) fn with_encoded<T: Handoff, R>(item: &T, f: impl FnOnce(&[u8]) -> R, sent: impl FnOnce(&R) -> bool) -> R {
    // (A fresh one while thread-locals are being destroyed.)
    let mut buf = ENCODED.try_with(Cell::take).unwrap_or_default();
    buf.clear();
    let mut transfers = crate::process::handoff::encode_deferred(|| item.encode(&mut buf));
    // The roles go just before the put: let go after it, a receiver that
    // decoded the item at once found them still ours and did not take them
    // over, so an end it dropped unused never told its peer (see
    // `release_transfers`). A put that fails takes them back.
    if !transfers.is_empty() {
        crate::process::handoff::release_transfers(&mut transfers);
    }
    let r = f(&buf);
    if !transfers.is_empty() {
        crate::process::handoff::settle_released(transfers, sent(&r));
    }
    let _ = ENCODED.try_with(|c| c.set(buf));
    r
}

/// Decodes exactly one `T` from a frame read: `Err(None)` if the frame
/// is corrupted, `Err(Some(why))` if it is whole but not a `T`.
#[inline]
pub(super) fn decode<T: Handoff>(frame: FrameOut<T>) -> Result<T, Option<crate::process::HandoffError>> {
    decode_with(frame, T::decode)
}

/// [`decode`] into a value the caller lends ([`Handoff::decode_into`]).
#[inline]
pub(super) fn decode_into<T: Handoff>(frame: FrameOut<()>, out: &mut T) -> Result<(), Option<crate::process::HandoffError>> {
    decode_with(frame, |input| out.decode_into(input))
}

/// A frame read, decoded by `f` from its bytes unless already decoded,
/// which must read them all.
#[inline(always)]
fn decode_with<V>(
    frame: FrameOut<V>,
    f: impl FnOnce(&mut &[u8]) -> Result<V, crate::process::HandoffError>,
) -> Result<V, Option<crate::process::HandoffError>> {
    let bytes = match frame {
        FrameOut::Bytes(b) => b,
        FrameOut::Value(v) => return v.map_err(Some),
        FrameOut::Corrupted => return Err(None),
    };
    let mut input = &bytes[..];
    let v = match f(&mut input) {
        Ok(v) if input.is_empty() => Ok(v),
        Ok(_) => Err(Some(crate::process::HandoffError::Invalid("an item followed by more bytes than its type reads"))),
        Err(e) => Err(Some(e)),
    };
    if bytes.capacity() <= KEEP_READ {
        let _ = READ.try_with(|c| c.set(bytes));
    }
    v
}

impl<T> MpmcQueue<FrameCell<T>> {
    /// The largest frame (encoded item) a slot holds.
    pub(super) fn max_frame(&self) -> usize {
        self.slots().stride() - FRAME_HEAD as usize
    }

    /// The longest frame found in the slots now (each slot's last frame,
    /// got or not; 0 for a slot never written), at most a slot's room: the
    /// sizes of the items the ring carried lately, an estimate (an
    /// unbounded queue sizes the successor of a full ring by it, see
    /// `Chain::put_ref`). Cold: one load per slot.
    #[cold]
    pub(super) fn largest_frame(&self) -> u64 {
        let s = self.slots();
        let room = s.room() as u64;
        // Relaxed: a hint; no data is read through it. Untrusted: a length
        // past the room is left out.
        (0..s.count()).map(|p| s.head(p).len.load(Ordering::Relaxed)).filter(|&n| n <= room).max().unwrap_or(0)
    }
}

/// The slot size for frames of up to `max_frame` bytes: header plus
/// payload, rounded up to 64-byte lines, and to an odd number of lines
/// when more than 2; `None` if absurd.
///
/// Why odd: a cache picks a line's set by the low bits of the line's
/// number. Slots 16 lines apart (1 KiB) put the lines every item touches
/// (a slot's header line and the line after it, where a small frame
/// ends) in 2 sets out of every 16, so the ring's hot lines evict each
/// other from L1 and L2 long before those are full; a consumer then reads
/// a frame written moments ago from L3. Slots an odd number of lines
/// apart use every set. (Two-line slots use every set already.) Measured
/// on `Queue<String>`, 64-byte strings, 1 -> 1 process, 4096 slots: 1 KiB
/// slots vs 1088-byte ones, 1.12-1.21x the rate (old and new builds
/// alternating, 7 runs each).
pub(super) fn frame_stride(max_frame: u64) -> Option<u64> {
    let a = super::item::FRAME_ALIGN;
    let lines = max_frame.checked_add(FRAME_HEAD)?.checked_add(a - 1)? / a;
    let lines = if lines > 2 { lines | 1 } else { lines };
    (lines <= u64::from(u32::MAX) / 2).then_some(lines * a)
}

#[cfg(test)]
mod tests {
    use super::frame_stride;

    #[test]
    fn frame_slots_are_an_odd_number_of_lines_past_two() {
        assert_eq!(frame_stride(1), Some(128));
        assert_eq!(frame_stride(64), Some(128));
        assert_eq!(frame_stride(65), Some(192));
        assert_eq!(frame_stride(129), Some(320)); // 4 lines -> 5
        assert_eq!(frame_stride(super::super::itemring::DEFAULT_MAX_FRAME), Some(1088));
        assert_eq!(frame_stride(64 * 1024), Some(64 * 1024 + 64)); // 1025 lines: odd already
        assert_eq!(frame_stride(u64::MAX), None);
    }
}
