//! The one sanctioned way data crosses the process boundary.
//!
//! Shared memory may be written by another process at any moment (a
//! buggy or hostile peer, or one that ignores the lock). Per the crate's
//! memory model (see the crate docs), data (slots, frames, values, array
//! elements, raw bytes) is therefore never read or written through a
//! reference or a plain load/store that the compiler may assume race-free:
//! every copy goes through the functions here, which use volatile accesses
//! of whole aligned machine words (bytes only at unaligned edges). A racing
//! write can make what we read garbage, never undefined behaviour, and the
//! compiler cannot invent, merge or re-read accesses to shared bytes.
//!
//! Ordering is not this module's job: the protocol around a copy (the
//! ring's Acquire/Release index words, the lock) makes a correct peer's
//! writes visible before we copy.
//!
//! Cost: a `u64` (or any aligned `T` of one word) is one load or store; a
//! `T` of several words is that many; byte slices move 8 bytes a step.

use std::mem::{align_of, size_of};
use std::ptr::{read_volatile, write_volatile};

use bytemuck::Pod;

const WORD: usize = size_of::<u64>();

/// Copies `dst.len()` bytes from shared memory at `src` into `dst`.
///
/// # Safety
/// `src .. src + dst.len()` lies inside one live mapping (any alignment).
#[inline]
pub(crate) unsafe fn copy_from_shared(src: *const u8, dst: &mut [u8]) {
    // SAFETY: `dst` is valid for dst.len() byte writes; the source range is the caller's.
    unsafe { copy_in(src, dst.as_mut_ptr(), dst.len()) }
}

/// [`copy_from_shared`] into uninitialised memory (such as a `Vec`'s spare
/// capacity); every byte of `dst` is initialised afterwards.
///
/// # Safety
/// As for [`copy_from_shared`].
#[inline]
pub(crate) unsafe fn copy_from_shared_uninit(src: *const u8, dst: &mut [std::mem::MaybeUninit<u8>]) {
    // SAFETY: `dst` is valid for dst.len() byte writes; the source range is the caller's.
    unsafe { copy_in(src, dst.as_mut_ptr().cast::<u8>(), dst.len()) }
}

/// # Safety
/// `src` readable (shared) and `dst` writable (private) for `n` bytes.
#[inline]
unsafe fn copy_in(src: *const u8, dst: *mut u8, n: usize) {
    let lead = src.align_offset(WORD).min(n);
    let mut i = 0;
    while i < lead {
        // SAFETY: i < n, inside both ranges (caller).
        unsafe { dst.add(i).write(read_volatile(src.add(i))) };
        i += 1;
    }
    while i + WORD <= n {
        // SAFETY: src + i is 8-aligned (after `lead`); the word is inside both ranges; `dst` is private memory,
        // written unaligned.
        unsafe { dst.add(i).cast::<u64>().write_unaligned(read_volatile(src.add(i).cast::<u64>())) };
        i += WORD;
    }
    while i < n {
        // SAFETY: i < n, inside both ranges (caller).
        unsafe { dst.add(i).write(read_volatile(src.add(i))) };
        i += 1;
    }
}

/// Copies `src` into shared memory at `dst`.
///
/// # Safety
/// `dst .. dst + src.len()` lies inside one live, writable mapping (any
/// alignment), and the caller's protocol lets it write there.
#[inline]
pub(crate) unsafe fn copy_to_shared(src: &[u8], dst: *mut u8) {
    let n = src.len();
    let lead = dst.align_offset(WORD).min(n);
    let mut i = 0;
    while i < lead {
        // SAFETY: i < n, inside the caller's range.
        unsafe { write_volatile(dst.add(i), src[i]) };
        i += 1;
    }
    while i + WORD <= n {
        let mut w = [0u8; WORD];
        w.copy_from_slice(&src[i..i + WORD]);
        // SAFETY: dst + i is 8-aligned (after `lead`) and the word is inside the caller's range.
        unsafe { write_volatile(dst.add(i).cast::<u64>(), u64::from_ne_bytes(w)) };
        i += WORD;
    }
    while i < n {
        // SAFETY: i < n, inside the caller's range.
        unsafe { write_volatile(dst.add(i), src[i]) };
        i += 1;
    }
}

/// Whether `T` moves as whole aligned words (`size` a multiple of 8,
/// `align` at least 8).
const fn by_words<T>() -> bool {
    size_of::<T>().is_multiple_of(WORD) && align_of::<T>() >= WORD
}

/// Whether `T` is a primitive-like scalar: size 1, 2, 4 or 8, equal to
/// its alignment, so one volatile access of `T` is one machine load/store.
const fn scalar<T>() -> bool {
    matches!(size_of::<T>(), 1 | 2 | 4 | 8) && size_of::<T>() == align_of::<T>()
}

/// Reads one `T` from shared memory. Any bit pattern is a valid `T: Pod`,
/// so a racing writer yields a garbage value, not UB.
///
/// # Safety
/// `src` is aligned for `T` and inside one live mapping.
#[inline(always)]
pub(crate) unsafe fn read<T: Pod>(src: *const T) -> T {
    if scalar::<T>() {
        // SAFETY: aligned, in bounds (caller); a one-instruction volatile load.
        return unsafe { read_volatile(src) };
    }
    let mut out = T::zeroed();
    if by_words::<T>() {
        let words = size_of::<T>() / WORD;
        let dst = bytemuck::bytes_of_mut(&mut out);
        for i in 0..words {
            // SAFETY: `src` is 8-aligned (align_of::<T>() >= 8) and word i is inside the T.
            let w = unsafe { read_volatile(src.cast::<u64>().add(i)) };
            dst[i * WORD..(i + 1) * WORD].copy_from_slice(&w.to_ne_bytes());
        }
    } else {
        // SAFETY: size_of::<T>() bytes at src are in bounds (caller).
        unsafe { copy_from_shared(src.cast::<u8>(), bytemuck::bytes_of_mut(&mut out)) };
    }
    out
}

/// Writes one `T` to shared memory.
///
/// # Safety
/// `dst` is aligned for `T`, inside one live, writable mapping, and the
/// caller's protocol lets it write there.
#[inline(always)]
pub(crate) unsafe fn write<T: Pod>(dst: *mut T, v: T) {
    if scalar::<T>() {
        // SAFETY: aligned, in bounds (caller); a one-instruction volatile store.
        return unsafe { write_volatile(dst, v) };
    }
    let src = bytemuck::bytes_of(&v);
    if by_words::<T>() {
        for i in 0..size_of::<T>() / WORD {
            let mut w = [0u8; WORD];
            w.copy_from_slice(&src[i * WORD..(i + 1) * WORD]);
            // SAFETY: `dst` is 8-aligned (align_of::<T>() >= 8) and word i is inside the T.
            unsafe { write_volatile(dst.cast::<u64>().add(i), u64::from_ne_bytes(w)) };
        }
    } else {
        // SAFETY: size_of::<T>() bytes at dst are in bounds and ours to write (caller).
        unsafe { copy_to_shared(src, dst.cast::<u8>()) };
    }
}

/// Copies `dst.len()` elements from shared memory at `src`.
///
/// # Safety
/// `src` is aligned for `T` and `dst.len()` elements from it lie inside one
/// live mapping.
#[inline]
pub(crate) unsafe fn read_slice<T: Pod>(src: *const T, dst: &mut [T]) {
    // SAFETY: the same bytes as the caller's element range.
    unsafe { copy_from_shared(src.cast::<u8>(), bytemuck::cast_slice_mut(dst)) }
}

/// Copies `src` into shared memory at `dst`.
///
/// # Safety
/// `dst` is aligned for `T`, `src.len()` elements from it lie inside one
/// live, writable mapping, and the caller's protocol lets it write there.
#[inline]
pub(crate) unsafe fn write_slice<T: Pod>(src: &[T], dst: *mut T) {
    // SAFETY: the same bytes as the caller's element range.
    unsafe { copy_to_shared(bytemuck::cast_slice(src), dst.cast::<u8>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_copies_round_trip_at_every_alignment_and_length() {
        let mut shared = [0u64; 8]; // 64 aligned bytes
        let base = shared.as_mut_ptr().cast::<u8>();
        for off in 0..16 {
            for len in 0..40 {
                let src: Vec<u8> = (0..len).map(|i| (i * 7 + off + 1) as u8).collect();
                // SAFETY: off + len <= 56 < 64 bytes of `shared`.
                unsafe { copy_to_shared(&src, base.add(off)) };
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { copy_from_shared(base.add(off), &mut back) };
                assert_eq!(back, src, "off {off} len {len}");
            }
        }
    }

    #[test]
    fn typed_copies_round_trip() {
        #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        #[repr(C)]
        struct Three {
            a: u16,
            b: u8,
            c: u8,
            d: [u8; 3],
            e: u8,
        }
        let mut cell = [0u64; 4];
        let p = cell.as_mut_ptr();
        // SAFETY: `cell` is 32 bytes, 8-aligned: room for each T below.
        unsafe {
            write(p, 0x0102_0304_0506_0708u64);
            assert_eq!(read(p), 0x0102_0304_0506_0708u64);
            write(p.cast::<[u64; 4]>(), [1, 2, 3, 4]);
            assert_eq!(read(p.cast::<[u64; 4]>()), [1, 2, 3, 4]);
            write(p.cast::<u8>(), 9u8);
            assert_eq!(read(p.cast::<u8>()), 9);
            write(p.cast::<[u8; 5]>(), [1, 2, 3, 4, 5]);
            assert_eq!(read(p.cast::<[u8; 5]>()), [1, 2, 3, 4, 5]);
            let t = Three { a: 1, b: 2, c: 3, d: [4, 5, 6], e: 7 };
            write(p.cast::<Three>(), t);
            assert_eq!(read(p.cast::<Three>()), t);
            write_slice(&[5u32, 6, 7], p.cast::<u32>());
            let mut out = [0u32; 3];
            read_slice(p.cast::<u32>(), &mut out);
            assert_eq!(out, [5, 6, 7]);
        }
    }
}
