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
//! (One exception, for writes only: [`write_items_to_shared`], which says
//! why plain stores are sound there.)
//!
//! Ordering is not this module's job: the protocol around a copy (the
//! ring's Acquire/Release index words, the lock) makes a correct peer's
//! writes visible before we copy.
//!
//! Cost: a `u64` (or any aligned `T` of one word) is one load or store; a
//! `T` of several words is that many; a `T` aligned below 8 moves as `u64`
//! words when its size is a multiple of 8 and it sits 8-aligned (one
//! run-time test; every slot of such a ring does), else in units of its
//! alignment, unrolled; byte slices move 8 bytes a step, and runs of 256
//! bytes or more (a pool's arena, a result frame) 16 bytes a step on x86-64
//! (volatile SSE2 vector loads/stores of aligned 16-byte units).

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
    unsafe { copy_in::<false>(src, dst.as_mut_ptr(), dst.len()) };
}

/// [`copy_from_shared`] into uninitialised memory (such as a `Vec`'s spare
/// capacity); every byte of `dst` is initialised afterwards.
///
/// # Safety
/// As for [`copy_from_shared`].
#[inline]
pub(crate) unsafe fn copy_from_shared_uninit(src: *const u8, dst: &mut [std::mem::MaybeUninit<u8>]) {
    // SAFETY: `dst` is valid for dst.len() byte writes; the source range is the caller's.
    unsafe { copy_in::<false>(src, dst.as_mut_ptr().cast::<u8>(), dst.len()) };
}

/// [`copy_from_shared_uninit`] that also tells whether every byte copied
/// is ASCII (below 0x80), judged from the values written to `dst` (so it
/// describes the private copy, whatever a peer writes meanwhile). Folding
/// the test into the copy saves the second pass over the bytes that a
/// separate scan costs (`String` frames: most are ASCII).
///
/// # Safety
/// As for [`copy_from_shared`].
#[inline]
pub(crate) unsafe fn copy_from_shared_uninit_ascii(src: *const u8, dst: &mut [std::mem::MaybeUninit<u8>]) -> bool {
    // SAFETY: `dst` is valid for dst.len() byte writes; the source range is the caller's.
    let or = unsafe { copy_in::<true>(src, dst.as_mut_ptr().cast::<u8>(), dst.len()) };
    or & 0x8080_8080_8080_8080 == 0
}

/// Copies `n` bytes; with `OR`, returns every word (and byte) copied OR'ed
/// together (0 without: the accumulation is compiled out).
///
/// # Safety
/// `src` readable (shared) and `dst` writable (private) for `n` bytes.
#[inline]
unsafe fn copy_in<const OR: bool>(src: *const u8, dst: *mut u8, n: usize) -> u64 {
    let mut acc = 0u64;
    let lead = src.align_offset(WORD).min(n);
    let mut i = 0;
    while i < lead {
        // SAFETY: i < n, inside both ranges (caller).
        let b = unsafe { read_volatile(src.add(i)) };
        // SAFETY: as above; `dst` is private memory.
        unsafe { dst.add(i).write(b) };
        if OR {
            acc |= u64::from(b);
        }
        i += 1;
    }
    if !OR {
        // SAFETY: src + i is 8-aligned (after `lead`), i <= n; the ranges are the caller's.
        i = unsafe { wide_in(src, dst, i, n) };
    }
    // Four words a step while they last (a quarter of the loop overhead
    // per word), then one.
    while i + 4 * WORD <= n {
        // (Word by word, not as one `[u64; 4]`: that is assembled in vector registers and stored whole.)
        // SAFETY: src + i is 8-aligned (after `lead`); the four words are inside both ranges; `dst` is
        // private memory, written unaligned.
        unsafe {
            let (s, d) = (src.add(i).cast::<u64>(), dst.add(i).cast::<u64>());
            for k in 0..4 {
                let w = read_volatile(s.add(k));
                d.add(k).write_unaligned(w);
                if OR {
                    acc |= w;
                }
            }
        }
        i += 4 * WORD;
    }
    while i + WORD <= n {
        // SAFETY: src + i is 8-aligned (after `lead`); the word is inside both ranges; `dst` is private memory,
        // written unaligned.
        let w = unsafe { read_volatile(src.add(i).cast::<u64>()) };
        // SAFETY: as above.
        unsafe { dst.add(i).cast::<u64>().write_unaligned(w) };
        if OR {
            acc |= w;
        }
        i += WORD;
    }
    while i < n {
        // SAFETY: i < n, inside both ranges (caller).
        let b = unsafe { read_volatile(src.add(i)) };
        // SAFETY: as above; `dst` is private memory.
        unsafe { dst.add(i).write(b) };
        if OR {
            acc |= u64::from(b);
        }
        i += 1;
    }
    acc
}

/// Bytes a step of the wide copies (four 16-byte vectors).
#[cfg(target_arch = "x86_64")]
const WIDE: usize = 64;
/// Runs shorter than this take the word loops only.
#[cfg(target_arch = "x86_64")]
const WIDE_FROM: usize = 256;

/// The bulk of a long copy out of shared memory from `i` on, as 16-byte
/// volatile loads (SSE2, which every x86-64 has: one instruction each,
/// half the instructions of the word loop); returns where it stopped (the
/// word loops do the rest). Elsewhere: returns `i`.
///
/// # Safety
/// `src + i` is 8-aligned, `i <= n`; `src` readable and `dst` writable for `n` bytes.
#[inline]
unsafe fn wide_in(src: *const u8, dst: *mut u8, mut i: usize, n: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if n - i >= WIDE_FROM {
        use std::arch::x86_64::{__m128i, _mm_storeu_si128};
        if !(src as usize + i).is_multiple_of(16) {
            // SAFETY: 8-aligned and `i + 8 <= n` (WIDE_FROM): inside both ranges; `dst` is private memory.
            unsafe { dst.add(i).cast::<u64>().write_unaligned(read_volatile(src.add(i).cast::<u64>())) };
            i += WORD;
        }
        while i + WIDE <= n {
            // SAFETY: src + i is 16-aligned (above); the 64 bytes are inside both ranges; a volatile
            // load of a `__m128i` is one aligned 16-byte load; `dst` is private memory, written unaligned.
            unsafe {
                let (s, d) = (src.add(i).cast::<__m128i>(), dst.add(i).cast::<__m128i>());
                for k in 0..4 {
                    _mm_storeu_si128(d.add(k), read_volatile(s.add(k)));
                }
            }
            i += WIDE;
        }
    }
    let _ = (src, dst, n);
    i
}

/// [`wide_in`]'s twin into shared memory: 16-byte volatile stores.
///
/// # Safety
/// `dst + i` is 8-aligned, `i <= src.len()`; `dst` writable for `src.len()` bytes.
#[inline]
unsafe fn wide_out(src: &[u8], dst: *mut u8, mut i: usize) -> usize {
    let n = src.len();
    #[cfg(target_arch = "x86_64")]
    if n - i >= WIDE_FROM {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128};
        if !(dst as usize + i).is_multiple_of(16) {
            let mut w = [0u8; WORD];
            w.copy_from_slice(&src[i..i + WORD]);
            // SAFETY: dst + i is 8-aligned and the word is inside the caller's range (WIDE_FROM).
            unsafe { write_volatile(dst.add(i).cast::<u64>(), u64::from_ne_bytes(w)) };
            i += WORD;
        }
        while i + WIDE <= n {
            // SAFETY: dst + i is 16-aligned (above); the 64 bytes are inside `src` (read unaligned)
            // and the caller's range; a volatile store of a `__m128i` is one aligned 16-byte store.
            unsafe {
                let (s, d) = (src.as_ptr().add(i).cast::<__m128i>(), dst.add(i).cast::<__m128i>());
                for k in 0..4 {
                    write_volatile(d.add(k), _mm_loadu_si128(s.add(k)));
                }
            }
            i += WIDE;
        }
    }
    let _ = dst;
    i
}

/// Writes the memory images of up to `max` items of `items` (plain data)
/// back to back into shared memory at `dst`, straight from the iterator:
/// no private buffer, no second pass; how many were written (fewer if
/// the iterator ends).
///
/// The one writer of the crate's shared data that uses plain stores, not
/// volatile ones: this function never reads what it writes, and any later
/// read of these bytes by this process (a frame taken back, or re-read
/// after its worker died: `PodBlock::append`) is a volatile copy as
/// everywhere, so nothing a peer does to them can change what this
/// process computes beyond garbage values; and the caller's protocol keeps
/// every legitimate peer away from them until it publishes them (with a
/// Release store after this call, as for [`copy_to_shared`]). Plain
/// stores let the compiler keep the iterator in registers and vectorise
/// the loop (a `map` of `0..n` as `u64`: two items per 16-byte store);
/// volatile ones made it store and reload the iterator's state per item,
/// and a private buffer plus [`copy_to_shared`] cost a second pass (the
/// submitting thread of a `map` is its bottleneck: same-minute A/B of
/// `Pool(2).map(square, 0..1_000_000)` under `chrt -f 5`, ahead in 21 of
/// 31 pairs, 0 to 10 % depending on the period).
///
/// # Safety
/// `dst .. dst + max * size_of::<A>()` lies inside one live, writable
/// mapping (any alignment), which no peer reads before the caller
/// publishes it; `A` is plain data (every byte of its image initialised).
#[inline]
pub(crate) unsafe fn write_items_to_shared<A>(dst: *mut u8, items: &mut impl Iterator<Item = A>, max: usize) -> usize {
    let dst = dst.cast::<A>();
    let mut n = 0usize;
    items.take(max).for_each(|item| {
        // SAFETY: `n < max` (`take`): inside the caller's range; written unaligned (`dst` may not be
        // aligned for `A`); `A` is plain data (the caller's contract).
        unsafe { dst.add(n).write_unaligned(item) };
        n += 1;
    });
    n
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
    // SAFETY: dst + i is 8-aligned (after `lead`), i <= n; the ranges are the caller's.
    i = unsafe { wide_out(src, dst, i) };
    // Four words a step while they last, then one (as in `copy_in`).
    while i + 4 * WORD <= n {
        // SAFETY: `i + 32 <= n`: the 32 bytes are inside `src` (read unaligned) and the caller's range; dst + i is
        // 8-aligned (after `lead`).
        unsafe {
            let (s, d) = (src.as_ptr().add(i).cast::<u64>(), dst.add(i).cast::<u64>());
            write_volatile(d, s.read_unaligned());
            write_volatile(d.add(1), s.add(1).read_unaligned());
            write_volatile(d.add(2), s.add(2).read_unaligned());
            write_volatile(d.add(3), s.add(3).read_unaligned());
        }
        i += 4 * WORD;
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

/// Whether `T` is a primitive-like scalar: size 1, 2, 4 or 8, equal to
/// its alignment, so one volatile access of `T` is one machine load/store.
const fn scalar<T>() -> bool {
    matches!(size_of::<T>(), 1 | 2 | 4 | 8) && size_of::<T>() == align_of::<T>()
}

/// Whether a `T` at `p` moves as whole aligned `u64`s: its size is a
/// multiple of 8 and `p` is 8-aligned (known at compile time when
/// `align_of::<T>() >= 8`; otherwise one cheap runtime test, true for every
/// slot of a ring whose slot size is a multiple of 8).
#[inline(always)]
fn by_words<T>(p: *const T) -> bool {
    size_of::<T>().is_multiple_of(WORD) && (align_of::<T>() >= WORD || (p as usize).is_multiple_of(WORD))
}

/// Reads the `dst.len() / size_of::<U>()` units `U` at `src` into `dst`.
///
/// # Safety
/// `src` is aligned for `U` and `dst.len()` bytes from it are inside one
/// live mapping; `dst.len()` is a multiple of `size_of::<U>()`.
#[inline(always)]
unsafe fn read_units<U: Pod>(src: *const u8, dst: &mut [u8]) {
    let n = size_of::<U>();
    for (i, d) in dst.chunks_exact_mut(n).enumerate() {
        // SAFETY: unit i is aligned for U and inside the caller's range.
        let u = unsafe { read_volatile(src.cast::<U>().add(i)) };
        d.copy_from_slice(bytemuck::bytes_of(&u));
    }
}

/// Writes `src` to shared memory at `dst` as units `U`.
///
/// # Safety
/// `dst` is aligned for `U`, `src.len()` bytes from it are inside one live,
/// writable mapping that the caller may write; `src.len()` is a multiple
/// of `size_of::<U>()`.
#[inline(always)]
unsafe fn write_units<U: Pod>(src: &[u8], dst: *mut u8) {
    let n = size_of::<U>();
    for (i, s) in src.chunks_exact(n).enumerate() {
        // SAFETY: unit i is aligned for U and inside the caller's range.
        unsafe { write_volatile(dst.cast::<U>().add(i), bytemuck::pod_read_unaligned(s)) };
    }
}

/// Reads one `T` from shared memory. Any bit pattern is a valid `T: Pod`,
/// so a racing writer yields a garbage value, not UB.
///
/// Every access is a volatile one of a width fixed by `T` (and, for a `T`
/// aligned below 8 whose size is a multiple of 8, by whether `src` is
/// 8-aligned): `u64` words, else units of `T`'s alignment, never a byte
/// loop with run-time bounds for an aligned `T`.
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
    let dst = bytemuck::bytes_of_mut(&mut out);
    let src8 = src.cast::<u8>();
    // SAFETY: (every arm) `src` is aligned for the unit (8-aligned when `by_words`; else T's alignment is the unit),
    // size_of::<T>() bytes from it are in bounds (caller); T's size is a multiple of its alignment, so of the unit.
    unsafe {
        if by_words(src) {
            read_units::<u64>(src8, dst)
        } else {
            match align_of::<T>() {
                4 => read_units::<u32>(src8, dst),
                2 => read_units::<u16>(src8, dst),
                1 => read_units::<u8>(src8, dst),
                _ => read_units::<u64>(src8, dst),
            }
        }
    }
    out
}

/// Writes one `T` to shared memory (accesses as in [`read`]).
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
    let dst8 = dst.cast::<u8>();
    // SAFETY: (every arm) as in `read`; the caller may write there.
    unsafe {
        if by_words(dst.cast_const()) {
            write_units::<u64>(src, dst8)
        } else {
            match align_of::<T>() {
                4 => write_units::<u32>(src, dst8),
                2 => write_units::<u16>(src, dst8),
                1 => write_units::<u8>(src, dst8),
                _ => write_units::<u64>(src, dst8),
            }
        }
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
        // Lengths past several 32-byte steps, and nothing written outside
        // the range.
        // (Up to 420 bytes: the 16-byte path from 256 on, at every
        // alignment against 16.)
        let mut shared = [0u64; 56]; // 448 aligned bytes
        let base = shared.as_mut_ptr().cast::<u8>();
        for off in 0..24 {
            for len in (0..100).chain(240..420) {
                // SAFETY: 448 bytes of `shared`.
                unsafe { std::ptr::write_bytes(base, 0xEE, 448) };
                let src: Vec<u8> = (0..len).map(|i| (i * 7 + off + 1) as u8).collect();
                // SAFETY: off + len <= 443 < 448 bytes of `shared`.
                unsafe { copy_to_shared(&src, base.add(off)) };
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { copy_from_shared(base.add(off), &mut back) };
                assert_eq!(back, src, "off {off} len {len}");
                // SAFETY: as above; plain reads of our own array.
                let all = unsafe { std::slice::from_raw_parts(base, 448) };
                assert!(all[..off].iter().chain(&all[off + len..]).all(|&b| b == 0xEE), "off {off} len {len}");
            }
        }
    }

    #[test]
    fn the_ascii_copy_copies_exactly_and_finds_a_high_byte_anywhere() {
        let mut shared = [0u64; 16]; // 128 aligned bytes
        let base = shared.as_mut_ptr().cast::<u8>();
        for off in 0..16 {
            for len in 0..100 {
                let src: Vec<u8> = (0..len).map(|i| ((i * 7 + off + 1) % 128) as u8).collect();
                // SAFETY: off + len <= 443 < 448 bytes of `shared`.
                unsafe { copy_to_shared(&src, base.add(off)) };
                // Every position in the lead bytes, the 32-byte steps, the
                // words and the tail: one high byte there, or none.
                for high in (0..len).map(Some).chain([None]) {
                    if let Some(at) = high {
                        // SAFETY: at < len: inside the range above.
                        unsafe { base.add(off + at).write(0x80 | src[at]) };
                    }
                    let mut back: Vec<u8> = Vec::with_capacity(len);
                    // SAFETY: as above; the copy initialises the `len` reserved bytes.
                    let ascii = unsafe {
                        let a = copy_from_shared_uninit_ascii(base.add(off), &mut back.spare_capacity_mut()[..len]);
                        back.set_len(len);
                        a
                    };
                    let mut want = src.clone();
                    if let Some(at) = high {
                        want[at] |= 0x80;
                        // SAFETY: as above; restore the byte.
                        unsafe { base.add(off + at).write(src[at]) };
                    }
                    assert_eq!(back, want, "off {off} len {len} high {high:?}");
                    assert_eq!(ascii, high.is_none(), "off {off} len {len} high {high:?}");
                }
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
            // Aligned below 8, at addresses that are and are not 8-aligned.
            for off in [0usize, 4] {
                let q = p.cast::<u8>().add(off);
                write(q.cast::<[u32; 4]>(), [1, 2, 3, 4]);
                assert_eq!(read(q.cast::<[u32; 4]>()), [1, 2, 3, 4], "off {off}");
                write(q.cast::<[u32; 3]>(), [7, 8, 9]);
                assert_eq!(read(q.cast::<[u32; 3]>()), [7, 8, 9], "off {off}");
            }
            for off in [0usize, 1, 2, 6] {
                let q = p.cast::<u8>().add(off);
                let bytes: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
                write(q.cast::<[u8; 16]>(), bytes);
                assert_eq!(read(q.cast::<[u8; 16]>()), bytes, "off {off}");
                if off % 2 == 0 {
                    write(q.cast::<[u16; 3]>(), [10, 11, 12]);
                    assert_eq!(read(q.cast::<[u16; 3]>()), [10, 11, 12], "off {off}");
                }
            }
            write_slice(&[5u32, 6, 7], p.cast::<u32>());
            let mut out = [0u32; 3];
            read_slice(p.cast::<u32>(), &mut out);
            assert_eq!(out, [5, 6, 7]);
        }
    }

    #[test]
    fn items_written_straight_from_an_iterator_land_in_place_and_stop_at_max_or_its_end() {
        // At every alignment, `u64` (vectorised) and 3-byte items; `max`
        // caps what is taken from the iterator, an iterator that ends
        // first says so; nothing is written outside the range.
        let mut shared = [0u64; 64]; // 512 aligned bytes
        let base = shared.as_mut_ptr().cast::<u8>();
        for off in 0..16 {
            for (n, max) in [(0usize, 5usize), (5, 5), (40, 7), (7, 40), (50, 50)] {
                // SAFETY: 512 bytes of `shared`.
                unsafe { std::ptr::write_bytes(base, 0xEE, 512) };
                let mut items = (0..n as u64).map(|i| i * 0x0101_0101_0101 + 1);
                // SAFETY: off + max * 8 <= 15 + 400 < 512 bytes of `shared`; `u64` is plain data.
                let got = unsafe { write_items_to_shared(base.add(off), &mut items, max) };
                assert_eq!(got, n.min(max), "off {off} n {n} max {max}");
                assert_eq!(items.next(), (got < n).then(|| got as u64 * 0x0101_0101_0101 + 1), "the rest is left");
                let mut back = vec![0u8; got * 8];
                // SAFETY: as above.
                unsafe { copy_from_shared(base.add(off), &mut back) };
                let want: Vec<u8> = (0..got as u64).flat_map(|i| (i * 0x0101_0101_0101 + 1).to_le_bytes()).collect();
                assert_eq!(back, want, "off {off} n {n} max {max}");
                // SAFETY: as above; plain reads of our own array.
                let all = unsafe { std::slice::from_raw_parts(base, 512) };
                assert!(all[..off].iter().chain(&all[off + got * 8..]).all(|&b| b == 0xEE), "off {off} n {n}");
            }
            let mut threes = (0..100u8).map(|i| [i, i ^ 0x55, i.wrapping_mul(3)]);
            // SAFETY: off + 100 * 3 < 512 bytes of `shared`; `[u8; 3]` is plain data.
            let got = unsafe { write_items_to_shared(base.add(off), &mut threes, 100) };
            assert_eq!(got, 100);
            let mut back = vec![0u8; 300];
            // SAFETY: as above.
            unsafe { copy_from_shared(base.add(off), &mut back) };
            assert!(back.chunks_exact(3).enumerate().all(|(i, c)| c == [i as u8, i as u8 ^ 0x55, (i as u8).wrapping_mul(3)]));
        }
    }
}
