//! `Handoff`: how a value is encoded into bytes and decoded back, for a
//! child process's argument ([`Process`](crate::Process)) and for the items
//! of a [`Queue`](crate::Queue) that are not plain data.
//!
//! The decoder treats its input as untrusted: every length is checked.
//! Plain-data types (the primitives, arrays of them, and types declared
//! with [`shm_type!`](crate::shm_type) or [`handoff_pod!`](crate::handoff_pod))
//! also carry a hidden marker that lets a queue move them as they are, in
//! fixed slots, without encoding. This module sits below `queue/` and
//! `process/`; the impls for shmproc's handles live in `process/`.

use bytemuck::Pod;

use crate::ShmType;
use crate::shm::Fingerprint;

mod collections;

/// Why an argument could not be decoded in the child.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// The encoded bytes ended early.
    #[error("argument bytes ended early while decoding {0}")]
    Truncated(&'static str),
    /// A value was out of range for its type.
    #[error("invalid encoded value for {0}")]
    Invalid(&'static str),
    /// A shared object named in the argument could not be opened.
    #[error("cannot open the {kind} {name:?} handed to this process: {reason}")]
    Open {
        /// Which handle type.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The open error.
        reason: String,
    },
}

/// A value a parent can hand to a child process: plain data, strings,
/// shmproc handles, and tuples / `Vec`s / `Option`s / arrays of these.
///
/// Handles are sent by name: the child re-opens the same object, so a
/// [`Lock`](crate::Lock) handed over is the very same lock.
///
/// Decoding treats its input as hostile: a `Vec` length is checked against
/// the bytes left (each element of a non-zero-sized type must take at
/// least one byte of encoding) and memory is reserved by bytes, not by
/// element count, so a forged length is an error, never a huge
/// allocation. A `Vec` of a zero-sized type (`Vec<()>`) decodes at most
/// 4096 elements, so the work stays proportional to the input.
///
/// ```
/// use shmproc::process::Handoff;
/// let arg = (7u32, String::from("seven"), vec![1.5f64, 2.5], Some(-1i8));
/// let mut bytes = Vec::new();
/// arg.encode(&mut bytes);
/// let back = <(u32, String, Vec<f64>, Option<i8>)>::decode(&mut &bytes[..]).unwrap();
/// assert_eq!(back, arg);
/// ```
///
/// Your own types: list a struct's fields with
/// [`handoff_struct!`](crate::handoff_struct), or implement the two methods
/// (a struct encodes its fields in order, decodes them in the same order), or, for a plain-data
/// `#[repr(C)]` struct, declare it with [`shm_type!`](crate::shm_type),
/// which also makes it travel in a queue's slots without encoding:
///
/// ```
/// use shmproc::{Handoff, HandoffError};
/// #[derive(Debug, PartialEq)]
/// struct Job { id: u32, name: String, tags: Vec<String> }
/// impl Handoff for Job {
///     fn encode(&self, out: &mut Vec<u8>) {
///         self.id.encode(out);
///         self.name.encode(out);
///         self.tags.encode(out);
///     }
///     fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
///         Ok(Job { id: u32::decode(input)?, name: String::decode(input)?, tags: Vec::decode(input)? })
///     }
/// }
/// let q = shmproc::Queue::new(4).unwrap();
/// q.put(Job { id: 1, name: "resize".into(), tags: vec!["img".into()] }).unwrap();
/// assert_eq!(q.get().unwrap().name, "resize");
/// ```
pub trait Handoff: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError>;
    /// Reads one value from the front of `input` into `self`, advancing
    /// `input`: the value [`decode`](Self::decode) would give, reusing
    /// what `self` already owns where the type can (`String` and `Vec`
    /// keep their buffers, and a `Vec`'s elements, a tuple's fields and an
    /// `Option`'s content are decoded into in turn), so a caller that
    /// decodes into one value again and again allocates nothing once it
    /// has grown. What a queue's [`get_into`](crate::Queue::get_into)
    /// uses. The default is `*self = Self::decode(input)?`.
    ///
    /// On an error `self` holds a valid value, but which one is not
    /// specified (`String`: empty; `Vec`: the elements decoded so far).
    ///
    /// ```
    /// use shmproc::Handoff;
    /// let mut bytes = Vec::new();
    /// "pear".to_string().encode(&mut bytes);
    /// let mut s = String::with_capacity(64);
    /// let buf = s.as_ptr();
    /// s.decode_into(&mut &bytes[..]).unwrap();
    /// assert_eq!(s, "pear");
    /// assert_eq!(s.as_ptr(), buf); // the same buffer: no allocation
    /// ```
    #[inline]
    fn decode_into(&mut self, input: &mut &[u8]) -> Result<(), HandoffError> {
        *self = Self::decode(input)?;
        Ok(())
    }
    /// Not part of the API: [`__decode_frame`](Self::__decode_frame) into
    /// `self`, reusing what it owns (as [`decode_into`](Self::decode_into)
    /// of the frame's bytes would, with no bytes left over). `None`: copy
    /// the frame out and use `decode_into`.
    #[doc(hidden)]
    #[inline(always)]
    fn __decode_frame_into(&mut self, frame: &SharedFrame<'_>) -> Option<Result<(), HandoffError>> {
        let _ = frame;
        None
    }
    /// Not part of the API: `Some` only for plain-data types (set by
    /// `shm_type!` / `handoff_pod!` and shmproc's own impls), which queues
    /// then move in fixed slots instead of encoding them. Chosen at compile
    /// time.
    #[doc(hidden)]
    const __POD: Option<PodWire<Self>> = None;
    /// Not part of the API: `Some((word, bytes))` when the encoding of
    /// `self` is exactly `word.to_le_bytes()` followed by `bytes`, so a
    /// queue can write it straight into its slot instead of encoding it
    /// into a buffer first (`String`). `None`: use [`encode`](Self::encode).
    #[doc(hidden)]
    #[inline(always)]
    fn __frame_parts(&self) -> Option<(u64, &[u8])> {
        None
    }
    /// Not part of the API: decodes a queue frame (the encoding of exactly
    /// one value, still in shared memory) straight into the value, with
    /// one copy out of shared memory. `Some(r)` only where `r` is what
    /// [`decode`](Self::decode) of the frame's bytes would give, with no
    /// bytes left over (`String`); `None`: copy the frame out and use
    /// `decode`.
    #[doc(hidden)]
    #[inline(always)]
    fn __decode_frame(frame: &SharedFrame<'_>) -> Option<Result<Self, HandoffError>> {
        let _ = frame;
        None
    }
}

/// Not part of the API: the bytes of one queue frame in shared memory,
/// read only through the crate's copy primitive (see
/// [`Handoff::__decode_frame`]).
#[doc(hidden)]
pub struct SharedFrame<'a> {
    ptr: *const u8,
    len: usize,
    _frame: std::marker::PhantomData<&'a [u8]>,
}

impl SharedFrame<'_> {
    /// # Safety
    /// `ptr .. ptr + len` lies inside one mapping (or private memory) that
    /// stays live for the frame's lifetime, and `ptr` is 8-aligned.
    #[inline(always)]
    pub(crate) unsafe fn new(ptr: *const u8, len: usize) -> Self {
        SharedFrame { ptr, len, _frame: std::marker::PhantomData }
    }

    /// The frame's length in bytes.
    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }

    /// The little-endian `u64` at the front; `None` if the frame is shorter.
    #[inline(always)]
    fn first_word(&self) -> Option<u64> {
        // SAFETY: 8 bytes at `ptr` are inside the frame (checked) and `ptr` is 8-aligned (`new`'s contract).
        (self.len >= 8).then(|| u64::from_le(unsafe { crate::shm::copy::read(self.ptr.cast::<u64>()) }))
    }

    /// The frame's bytes from `at` to its end as a new `String` (one
    /// copy), if they are UTF-8. The ASCII test rides along with the copy
    /// (no second pass over the bytes); only a non-ASCII string gets the
    /// full UTF-8 validation, of the private copy.
    #[inline(always)]
    fn tail_string(&self, at: usize) -> Result<String, HandoffError> {
        let n = self.len.saturating_sub(at);
        let mut v = exact_bytes(n);
        // SAFETY: `at + n <= len` bytes (`n` is what is left past `at`, 0 if nothing) are inside the frame (`new`);
        // `v` has room for exactly `n` bytes (`exact_bytes`), which the copy initialises and `set_len` then covers.
        let ascii = unsafe {
            let ascii =
                crate::shm::copy::copy_from_shared_uninit_ascii(self.ptr.add(at.min(self.len)), &mut v.spare_capacity_mut()[..n]);
            v.set_len(n);
            ascii
        };
        if ascii {
            // SAFETY: every byte of `v` is below 0x80 (the copy's verdict on the very values it wrote into `v`):
            // ASCII is valid UTF-8.
            Ok(unsafe { String::from_utf8_unchecked(v) })
        } else {
            String::from_utf8(v).map_err(|_| HandoffError::Invalid("String"))
        }
    }

    /// [`tail_string`](Self::tail_string) into `s`, reusing its buffer;
    /// on an error `s` is empty.
    #[inline(always)]
    fn tail_string_into(&self, at: usize, s: &mut String) -> Result<(), HandoffError> {
        // SAFETY: `v` is UTF-8 again before this block ends, whatever happens: ASCII bytes, checked UTF-8, or
        // emptied (nothing in between can unwind: the copy and the checks do not panic).
        unsafe {
            let v = s.as_mut_vec();
            if !self.tail_into(at, v) && std::str::from_utf8(v).is_err() {
                v.clear();
                return Err(HandoffError::Invalid("String"));
            }
        }
        Ok(())
    }

    /// Replaces `v`'s contents with the frame's bytes from `at` to its end
    /// (one copy, into `v`'s buffer if it is large enough); whether they
    /// are all ASCII (the test rides along with the copy).
    #[inline(always)]
    fn tail_into(&self, at: usize, v: &mut Vec<u8>) -> bool {
        let n = self.len.saturating_sub(at);
        v.clear();
        v.reserve(n);
        // SAFETY: `at + n <= len` bytes (`n` is what is left past `at`, 0 if nothing) are inside the frame (`new`);
        // the copy initialises the `n` reserved bytes that `set_len` then covers.
        unsafe {
            let ascii = crate::shm::copy::copy_from_shared_uninit_ascii(
                self.ptr.add(at.min(self.len)),
                &mut v.spare_capacity_mut()[..n],
            );
            v.set_len(n);
            ascii
        }
    }
}

/// An empty `Vec` with room for exactly `n` bytes: one call to the
/// global allocator (`Vec::with_capacity` takes about 30 instructions more
/// on its generic path, measured with callgrind on `Queue<String>::get`).
#[inline(always)]
fn exact_bytes(n: usize) -> Vec<u8> {
    let Ok(layout) = std::alloc::Layout::array::<u8>(n) else {
        return Vec::with_capacity(n); // (its own capacity-overflow panic)
    };
    if n == 0 {
        return Vec::new();
    }
    // SAFETY: the layout's size is not zero (`n > 0`).
    let p = unsafe { std::alloc::alloc(layout) };
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `p` was allocated by the global allocator with `layout`: `n` bytes (`capacity`), alignment 1 (`u8`'s);
    // length 0 <= capacity.
    unsafe { Vec::from_raw_parts(p, 0, n) }
}

/// `bytes` as a `String` if they are UTF-8 (an ASCII scan first: the
/// common case, and much cheaper than the full validation).
#[inline]
fn utf8(bytes: Vec<u8>) -> Result<String, HandoffError> {
    if ascii(&bytes) {
        // SAFETY: ASCII is valid UTF-8.
        Ok(unsafe { String::from_utf8_unchecked(bytes) })
    } else {
        String::from_utf8(bytes).map_err(|_| HandoffError::Invalid("String"))
    }
}

/// Whether every byte is ASCII: the bytes OR'ed together 32 at a time
/// (four words, no branch), then by words, then one by one, and one test
/// at the end. (`[u8]::is_ascii` took about twice the instructions on
/// 64-byte strings, measured with callgrind.)
#[inline]
fn ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// # Safety
    /// `p .. p + 8` is inside one initialised slice.
    #[inline(always)]
    unsafe fn word(p: *const u8) -> u64 {
        // SAFETY: the caller's; an unaligned read of initialised bytes.
        unsafe { p.cast::<u64>().read_unaligned() }
    }
    let (n, p) = (b.len(), b.as_ptr());
    let (mut acc, mut i) = (0u64, 0usize);
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`: the four words are inside `b`.
        acc |= unsafe { word(p.add(i)) | word(p.add(i + 8)) | word(p.add(i + 16)) | word(p.add(i + 24)) };
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`: the word is inside `b`.
        acc |= unsafe { word(p.add(i)) };
        i += 8;
    }
    for &x in &b[i..] {
        acc |= u64::from(x);
    }
    acc & HIGH == 0
}

/// Not part of the API: how a plain-data [`Handoff`] type is copied into
/// and out of a queue slot (the crate's copy primitives for that type) and
/// the element identity its segments record. Only built by
/// [`PodWire::of`] (which requires `T: ShmType`, so `T` is `Pod`) or for
/// arrays of such types.
#[doc(hidden)]
pub struct PodWire<T> {
    pub(crate) fingerprint: fn() -> Fingerprint,
    /// # Safety
    /// As `crate::shm::copy::write::<T>`.
    pub(crate) write: unsafe fn(*mut T, T),
    /// # Safety
    /// As `crate::shm::copy::read::<T>`.
    pub(crate) read: unsafe fn(*const T) -> T,
}

impl<T> Clone for PodWire<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PodWire<T> {}

impl<T: ShmType> PodWire<T> {
    /// The wire of a plain-data type: its own typed copies.
    pub const fn of() -> Self {
        PodWire { fingerprint: Fingerprint::of::<T>, write: crate::shm::copy::write::<T>, read: crate::shm::copy::read::<T> }
    }
}

impl<T: Handoff, const N: usize> PodWire<[T; N]> {
    /// `[T; N]` of a plain-data `T` is plain data (no padding between
    /// elements): moved as bytes; `None` otherwise.
    const fn array() -> Option<Self> {
        if T::__POD.is_some() {
            Some(PodWire { fingerprint: array_fingerprint::<T, N>, write: array_write::<T, N>, read: array_read::<T, N> })
        } else {
            None
        }
    }
}

/// The identity `ShmType` gives `[T; N]` (same size, alignment and name).
fn array_fingerprint<T: Handoff, const N: usize>() -> Fingerprint {
    let elem = (T::__POD.expect("built only for plain-data elements").fingerprint)();
    let name = format!("[{}; {N}]", elem.name);
    Fingerprint::named(crate::shm::elem_u32(std::mem::size_of::<[T; N]>()), elem.align, name.into())
}

/// # Safety
/// As `crate::shm::copy::write`; `T` is plain data (`PodWire::array`).
unsafe fn array_write<T: Handoff, const N: usize>(dst: *mut [T; N], v: [T; N]) {
    // SAFETY: `T` has a `PodWire`, so it is `Pod` (`PodWire::of` requires it): `[T; N]` has no padding and its
    // bytes are initialised; the view lives only during the copy. `dst` is the caller's.
    unsafe {
        let src = std::slice::from_raw_parts((&raw const v).cast::<u8>(), std::mem::size_of::<[T; N]>());
        crate::shm::copy::copy_to_shared(src, dst.cast::<u8>());
    }
}

/// # Safety
/// As `crate::shm::copy::read`; `T` is plain data (`PodWire::array`).
unsafe fn array_read<T: Handoff, const N: usize>(src: *const [T; N]) -> [T; N] {
    let mut out = std::mem::MaybeUninit::<[T; N]>::uninit();
    // SAFETY: the copy initialises every byte of `out`; any bit pattern is a valid `[T; N]` of a `Pod` `T`.
    unsafe {
        let dst = std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(), std::mem::size_of::<[T; N]>());
        crate::shm::copy::copy_from_shared_uninit(src.cast::<u8>(), dst);
        out.assume_init()
    }
}

#[inline]
pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], HandoffError> {
    if input.len() < n {
        return Err(HandoffError::Truncated(what));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

/// The most elements a `Vec` of a zero-sized type may have beyond the bytes
/// left in its input (such elements take no bytes, so the input cannot
/// bound them; this constant does, so decoding work stays proportional to
/// the input: at most this many element decodes per 8-byte length).
pub(crate) const MAX_ZERO_SIZED_LEN: usize = 4096;

/// Reads a length and checks it against the bytes left: every element of
/// a non-zero-sized type takes at least one byte of input. Elements of a
/// zero-sized type (`()`, `[u8; 0]`) may encode to nothing: at most
/// `zero_sized_max` of them are accepted whatever the bytes left.
fn take_len(input: &mut &[u8], zero_sized_max: usize, what: &'static str) -> Result<usize, HandoffError> {
    let n = u64::decode(input)?;
    usize::try_from(n).ok().filter(|&n| n <= input.len().max(zero_sized_max)).ok_or(HandoffError::Invalid(what))
}

macro_rules! handoff_int {
    ($($t:ty),*) => {$(
        impl Handoff for $t {
            const __POD: Option<PodWire<Self>> = Some(PodWire::of());
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
                let b = take(input, std::mem::size_of::<$t>(), stringify!($t))?;
                Ok(<$t>::from_le_bytes(b.try_into().expect("length checked")))
            }
        }
    )*};
}
handoff_int!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

impl Handoff for usize {
    const __POD: Option<PodWire<Self>> = Some(PodWire::of());
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        usize::try_from(u64::decode(input)?).map_err(|_| HandoffError::Invalid("usize"))
    }
}

impl Handoff for isize {
    const __POD: Option<PodWire<Self>> = Some(PodWire::of());
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as i64).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        isize::try_from(i64::decode(input)?).map_err(|_| HandoffError::Invalid("isize"))
    }
}

impl Handoff for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self))
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        match u8::decode(input)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(HandoffError::Invalid("bool")),
        }
    }
}

impl Handoff for char {
    fn encode(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        char::from_u32(u32::decode(input)?).ok_or(HandoffError::Invalid("char"))
    }
}

impl Handoff for () {
    const __POD: Option<PodWire<Self>> = Some(PodWire::of());
    fn encode(&self, _: &mut Vec<u8>) {}
    fn decode(_: &mut &[u8]) -> Result<Self, HandoffError> {
        Ok(())
    }
}

impl Handoff for String {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    #[inline]
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let n = take_len(input, 0, "String")?;
        let b = take(input, n, "String")?;
        utf8(b.to_vec())
    }
    /// The length word, then the bytes (as `encode`).
    #[inline(always)]
    fn __frame_parts(&self) -> Option<(u64, &[u8])> {
        Some((self.len() as u64, self.as_bytes()))
    }
    /// A frame whose length word says exactly the bytes that follow it:
    /// those bytes, copied once into the `String`'s own buffer, then
    /// checked. Any other frame (short, or a length word that disagrees):
    /// `None`, so `decode` reports it as it always has.
    #[inline(always)]
    fn __decode_frame(frame: &SharedFrame<'_>) -> Option<Result<Self, HandoffError>> {
        string_frame(frame)?;
        Some(frame.tail_string(8))
    }
    /// As `decode`, into this `String`'s buffer (empty on an error).
    #[inline]
    fn decode_into(&mut self, input: &mut &[u8]) -> Result<(), HandoffError> {
        self.clear();
        let n = take_len(input, 0, "String")?;
        let b = take(input, n, "String")?;
        if ascii(b) {
            // SAFETY: ASCII is valid UTF-8.
            self.push_str(unsafe { std::str::from_utf8_unchecked(b) });
        } else {
            self.push_str(std::str::from_utf8(b).map_err(|_| HandoffError::Invalid("String"))?);
        }
        Ok(())
    }
    /// As `__decode_frame`, into this `String`'s buffer.
    #[inline(always)]
    fn __decode_frame_into(&mut self, frame: &SharedFrame<'_>) -> Option<Result<(), HandoffError>> {
        string_frame(frame)?;
        Some(frame.tail_string_into(8, self))
    }
}

/// `Some` if `frame` is a `String`'s: a length word that says exactly the
/// bytes that follow it.
#[inline(always)]
fn string_frame(frame: &SharedFrame<'_>) -> Option<()> {
    let n = frame.first_word()?;
    (usize::try_from(n).ok()? == frame.len() - 8).then_some(())
}

impl<T: Handoff> Handoff for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        for x in self {
            x.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let size = std::mem::size_of::<T>();
        let n = take_len(input, if size == 0 { MAX_ZERO_SIZED_LEN } else { 0 }, "Vec")?;
        // Capacity by bytes, not elements: `n` elements of `size` bytes
        // each need at least `n` bytes of input, but a hostile `n` must
        // not reserve `n * size` bytes before the input runs out (at most
        // about the input's own size is reserved; the Vec grows past that
        // only as elements really decode).
        let mut v = Vec::with_capacity(n.min(input.len() / size.max(1)));
        for _ in 0..n {
            v.push(T::decode(input)?);
        }
        Ok(v)
    }
    /// As `decode`, into this `Vec`: its first elements are decoded into
    /// (reusing theirs), the rest pushed, any beyond the new length
    /// dropped first.
    fn decode_into(&mut self, input: &mut &[u8]) -> Result<(), HandoffError> {
        let size = std::mem::size_of::<T>();
        let n = take_len(input, if size == 0 { MAX_ZERO_SIZED_LEN } else { 0 }, "Vec")?;
        self.truncate(n);
        for x in self.iter_mut() {
            x.decode_into(input)?;
        }
        for _ in self.len()..n {
            self.push(T::decode(input)?);
        }
        Ok(())
    }
}

impl<T: Handoff> Handoff for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(x) => {
                out.push(1);
                x.encode(out);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        match u8::decode(input)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(input)?)),
            _ => Err(HandoffError::Invalid("Option")),
        }
    }
    /// As `decode`; a `Some` decodes into the value it holds.
    fn decode_into(&mut self, input: &mut &[u8]) -> Result<(), HandoffError> {
        match (u8::decode(input)?, self.as_mut()) {
            (0, _) => *self = None,
            (1, Some(x)) => x.decode_into(input)?,
            (1, None) => *self = Some(T::decode(input)?),
            _ => return Err(HandoffError::Invalid("Option")),
        }
        Ok(())
    }
}

impl<T: Handoff, const N: usize> Handoff for [T; N] {
    const __POD: Option<PodWire<Self>> = PodWire::array();
    fn encode(&self, out: &mut Vec<u8>) {
        for x in self {
            x.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        // By bytes, as for `Vec` (a large `N` of large elements must not
        // reserve more than the input could fill).
        let mut v = Vec::with_capacity(N.min(input.len() / std::mem::size_of::<T>().max(1)));
        for _ in 0..N {
            v.push(T::decode(input)?);
        }
        v.try_into().map_err(|_| HandoffError::Invalid("array"))
    }
}

macro_rules! handoff_tuple {
    ($($n:ident),+) => {
        impl<$($n: Handoff),+> Handoff for ($($n,)+) {
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($n,)+) = self;
                $($n.encode(out);)+
            }
            fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
                Ok(($($n::decode(input)?,)+))
            }
            #[allow(non_snake_case)]
            fn decode_into(&mut self, input: &mut &[u8]) -> Result<(), HandoffError> {
                let ($($n,)+) = self;
                $($n.decode_into(input)?;)+
                Ok(())
            }
        }
    };
}
handoff_tuple!(A);
handoff_tuple!(A, B);
handoff_tuple!(A, B, C);
handoff_tuple!(A, B, C, D);
handoff_tuple!(A, B, C, D, E);
handoff_tuple!(A, B, C, D, E, F);
handoff_tuple!(A, B, C, D, E, F, G);
handoff_tuple!(A, B, C, D, E, F, G, H);

/// Wraps any `bytemuck::Pod` type (your own `#[repr(C)]` structs) so it
/// can be handed to a child as raw bytes.
///
/// ```
/// use shmproc::process::{Handoff, PodArg};
/// #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Point { x: f32, y: f32 }
/// let mut b = Vec::new();
/// PodArg(Point { x: 1.0, y: 2.0 }).encode(&mut b);
/// assert_eq!(PodArg::<Point>::decode(&mut &b[..]).unwrap().0, Point { x: 1.0, y: 2.0 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodArg<T>(pub T);

impl<T: Pod> Handoff for PodArg<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(bytemuck::bytes_of(&self.0));
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let b = take(input, std::mem::size_of::<T>(), "PodArg")?;
        Ok(PodArg(bytemuck::pod_read_unaligned(b)))
    }
}


/// Not part of the API: `decode` of a [`handoff_pod!`](crate::handoff_pod) type.
#[doc(hidden)]
pub fn __decode_pod<T: Pod>(input: &mut &[u8]) -> Result<T, HandoffError> {
    let b = take(input, std::mem::size_of::<T>(), std::any::type_name::<T>())?;
    Ok(bytemuck::pod_read_unaligned(b))
}

/// Implements [`Handoff`] for plain-data types that implement
/// [`ShmType`](crate::ShmType) by hand: their bytes are the encoding, and a
/// [`Queue`](crate::Queue) of them moves them in fixed slots (the same as
/// [`MpmcQueue`](crate::queue::MpmcQueue)). [`shm_type!`](crate::shm_type)
/// does this for you; use this macro only beside a hand-written
/// `impl ShmType`.
///
/// ```
/// use shmproc::{Pod, ShmType, Zeroable};
/// #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
/// #[bytemuck(crate = "shmproc::bytemuck")]
/// #[repr(C)]
/// struct Fill { id: u64, qty: u32, px: u32 }
/// impl ShmType for Fill {
///     fn type_name() -> std::borrow::Cow<'static, str> { "fills.Fill/v1".into() }
/// }
/// shmproc::handoff_pod!(Fill);
///
/// let q = shmproc::Queue::new(2).unwrap();
/// q.put(Fill { id: 1, qty: 2, px: 3 }).unwrap();
/// // Same segment as an MpmcQueue of the same type: the slot path.
/// let raw = shmproc::queue::MpmcQueue::<Fill>::open(q.name()).unwrap();
/// assert_eq!(raw.pop().unwrap().qty, 2);
/// ```
#[macro_export]
macro_rules! handoff_pod {
    ($($t:ty),+ $(,)?) => {$(
        impl $crate::Handoff for $t {
            const __POD: ::std::option::Option<$crate::__PodWire<Self>> =
                ::std::option::Option::Some($crate::__PodWire::of());
            fn encode(&self, out: &mut ::std::vec::Vec<u8>) {
                out.extend_from_slice($crate::bytemuck::bytes_of(self));
            }
            fn decode(input: &mut &[u8]) -> ::std::result::Result<Self, $crate::HandoffError> {
                $crate::__decode_pod(input)
            }
        }
    )+};
}

/// Implements [`Handoff`] for a struct with named fields by encoding each
/// listed field in order (what pickle does for a Python class): the
/// two-method impl of [`Handoff`]'s docs, written for you. List every
/// field; each field's type must be `Handoff` (plain data, `String`,
/// `Vec`s, `Option`s, tuples, shmproc handles, other such structs).
///
/// ```
/// #[derive(Debug, PartialEq)]
/// struct Job { id: u32, name: String, tags: Vec<String> }
/// shmproc::handoff_struct!(Job { id, name, tags });
///
/// let q = shmproc::Queue::new(4).unwrap();
/// q.put(Job { id: 1, name: "resize".into(), tags: vec!["img".into()] }).unwrap();
/// assert_eq!(q.get().unwrap(), Job { id: 1, name: "resize".into(), tags: vec!["img".into()] });
/// ```
///
/// A struct holding shmproc handles travels to a child like a tuple of
/// them (the body of a [`Run`](crate::process::Run) process, say):
///
/// ```
/// struct Worker { jobs: shmproc::Queue<u64>, done: shmproc::Event }
/// shmproc::handoff_struct!(Worker { jobs, done });
/// ```
#[macro_export]
macro_rules! handoff_struct {
    ($t:ident { $($field:ident),* $(,)? }) => {
        impl $crate::Handoff for $t {
            fn encode(&self, out: &mut ::std::vec::Vec<u8>) {
                $( $crate::Handoff::encode(&self.$field, out); )*
            }
            fn decode(input: &mut &[u8]) -> ::std::result::Result<Self, $crate::HandoffError> {
                ::std::result::Result::Ok($t { $( $field: $crate::Handoff::decode(input)?, )* })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a queue's get returns for a frame through the generic path:
    /// `decode`, then nothing may be left over.
    fn generic<T: Handoff>(bytes: &[u8]) -> Result<T, HandoffError> {
        let mut input = bytes;
        let v = T::decode(&mut input)?;
        if input.is_empty() { Ok(v) } else { Err(HandoffError::Invalid("left over")) }
    }

    /// The frame hook: `None`, or exactly what the generic path gives.
    fn hook<T: Handoff>(bytes: &[u8]) -> Option<Result<T, HandoffError>> {
        // An 8-aligned copy, as a queue slot's payload is.
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` has at least `bytes.len()` bytes; plain bytes into plain words.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len()) };
        // SAFETY: `words` is live, 8-aligned and holds `bytes.len()` bytes.
        let frame = unsafe { SharedFrame::new(words.as_ptr().cast::<u8>(), bytes.len()) };
        T::__decode_frame(&frame)
    }

    #[test]
    fn the_ascii_scan_finds_a_high_byte_anywhere() {
        for n in 0..80 {
            let v = vec![b'a'; n];
            assert!(ascii(&v));
            for at in 0..n {
                let mut w = v.clone();
                w[at] = 0x80;
                assert!(!ascii(&w), "{n} {at}");
            }
        }
    }

    #[test]
    fn a_string_frame_decoded_in_place_is_what_decode_gives() {
        for s in ["", "x", "héllo wörld", &"y".repeat(64), &"é".repeat(100)] {
            let (w, b) = s.to_string().__frame_parts().map(|(w, b)| (w, b.to_vec())).unwrap();
            let mut enc = Vec::new();
            s.to_string().encode(&mut enc);
            assert_eq!([&w.to_le_bytes()[..], &b].concat(), enc, "parts are the encoding");
            assert_eq!(hook::<String>(&enc), Some(Ok(s.to_string())));
            // One allocation of exactly the length (none for "").
            assert_eq!(hook::<String>(&enc).unwrap().unwrap().capacity(), s.len());
        }
        // Invalid UTF-8 (in and past the ASCII prefix): the same error.
        for bad in [&[0xFFu8][..], b"abc\xC3", b"\xE2\x82"] {
            let mut enc = (bad.len() as u64).to_le_bytes().to_vec();
            enc.extend_from_slice(bad);
            assert_eq!(hook::<String>(&enc), Some(generic::<String>(&enc)));
            assert!(generic::<String>(&enc).is_err());
        }
        // Frames whose length word disagrees with their size, or that are
        // too short for one: left to `decode` (which reports them).
        let mut long = 3u64.to_le_bytes().to_vec();
        long.extend_from_slice(b"abcd");
        let mut short = 5u64.to_le_bytes().to_vec();
        short.extend_from_slice(b"abcd");
        for f in [&long[..], &short[..], &[1, 2, 3][..], &[][..], &u64::MAX.to_le_bytes()[..]] {
            assert_eq!(hook::<String>(f), None, "{f:?}");
            assert!(generic::<String>(f).is_err());
        }
        // Types without the hook.
        assert_eq!(hook::<Vec<u8>>(&long), None);
    }
}
