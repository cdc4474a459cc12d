//! What a container can hold: every [`ShmType`] inline, and `String` /
//! `Vec<u8>` of any length in the container's heap.

use std::borrow::Cow;

use super::heap;
use super::store::{Fail, R, Txn, View};
use crate::ShmType;

/// How an element type is stored (an implementation detail of
/// [`Element`]; not for use outside shmproc).
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Shape {
    /// The name checked on open.
    pub name: Cow<'static, str>,
    /// `Some(size)` for inline (Pod) elements, `None` for heap blobs.
    pub inline: Option<u32>,
    /// Alignment of an inline element (1 for blobs).
    pub align: u32,
}

/// An element of a [`ListProxy`](crate::ListProxy) or a key or value of a
/// [`DictProxy`](crate::DictProxy): every [`ShmType`] (stored inline, its
/// size, alignment and name checked on open like everywhere), `String`
/// and `Vec<u8>` of any length (stored in the container's own heap), and
/// handles to other containers (`ListProxy<T>`, `DictProxy<K, V>`), stored
/// by name, so a nested container read back writes through:
///
/// ```
/// use shmproc::{ListProxy, Manager};
/// let mgr = Manager::new().unwrap();
/// let d = mgr.dict::<String, ListProxy<u64>>("groups").unwrap();
/// d.insert("evens".into(), mgr.list_anon::<u64>().unwrap()).unwrap();
/// d.get(&"evens".into()).unwrap().unwrap().append(2).unwrap(); // writes through
/// assert_eq!(d.get(&"evens".into()).unwrap().unwrap().to_vec().unwrap(), [2]);
/// ```
///
/// Equality and hashing inside a container are by the bytes of the
/// element (so `0.0` and `-0.0` differ, and a NaN equals itself).
///
/// ```
/// use shmproc::Element;
/// assert_eq!(u64::element_name(), "u64");
/// assert_eq!(String::element_name(), "String");
/// ```
pub trait Element: Clone + Sized {
    /// The name recorded in (and checked against) the container segment.
    fn element_name() -> Cow<'static, str> {
        Self::__shape().name
    }
    #[doc(hidden)]
    fn __shape() -> Shape;
    /// `__shape().inline` without building the name (hot paths).
    #[doc(hidden)]
    fn __inline() -> Option<u32> {
        Self::__shape().inline
    }
    #[doc(hidden)]
    fn __bytes(&self) -> Cow<'_, [u8]>;
    #[doc(hidden)]
    fn __from_bytes(b: &[u8]) -> Option<Self>;
    /// As `__from_bytes`, taking the bytes (a blob read from the heap)
    /// so types that own a buffer keep it rather than copying it again.
    #[doc(hidden)]
    fn __from_vec(b: Vec<u8>) -> Option<Self> {
        Self::__from_bytes(&b)
    }
    /// Why `b` could not be made an element, when the reason is not bad
    /// bytes (a container handle whose container cannot be opened): the
    /// error to report; `None` for bad bytes (corruption or a torn read).
    #[doc(hidden)]
    fn __why_not(_b: &[u8]) -> Option<crate::OpenError> {
        None
    }
}

/// Why the nested container named `b` cannot be opened with `open` (the
/// open error: gone, or of another type); `None` if it can, or if `b` is
/// no name at all.
fn nested_open_error<H>(
    b: &[u8],
    open: impl FnOnce(&str) -> Result<H, crate::OpenError>,
) -> Option<crate::OpenError> {
    let name = std::str::from_utf8(b).ok()?;
    open(name).err()
}

impl<T: ShmType> Element for T {
    fn __shape() -> Shape {
        Shape {
            name: <T as ShmType>::type_name(),
            inline: Some(crate::shm::elem_u32(std::mem::size_of::<T>())),
            align: crate::shm::elem_u32(std::mem::align_of::<T>()),
        }
    }
    fn __inline() -> Option<u32> {
        Some(crate::shm::elem_u32(std::mem::size_of::<T>()))
    }
    fn __bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(bytemuck::bytes_of(self))
    }
    fn __from_bytes(b: &[u8]) -> Option<Self> {
        (b.len() == std::mem::size_of::<T>()).then(|| bytemuck::pod_read_unaligned(b))
    }
}

impl Element for String {
    fn __inline() -> Option<u32> {
        None
    }
    fn __shape() -> Shape {
        Shape { name: "String".into(), inline: None, align: 1 }
    }
    fn __bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
    fn __from_bytes(b: &[u8]) -> Option<Self> {
        String::from_utf8(b.to_vec()).ok()
    }
    fn __from_vec(b: Vec<u8>) -> Option<Self> {
        String::from_utf8(b).ok()
    }
}

impl Element for Vec<u8> {
    fn __inline() -> Option<u32> {
        None
    }
    fn __shape() -> Shape {
        Shape { name: "Vec<u8>".into(), inline: None, align: 1 }
    }
    fn __bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self)
    }
    fn __from_bytes(b: &[u8]) -> Option<Self> {
        Some(b.to_vec())
    }
    fn __from_vec(b: Vec<u8>) -> Option<Self> {
        Some(b)
    }
}

/// A list stored as a value of another container, by name: what `get`
/// returns is a handle to the same list, so `d.get(&k)?.unwrap().append(x)`
/// writes through (Python's most-reported Manager pitfall, where the
/// nested `append` changes a copy). The stored list must still exist
/// when read (create it through a [`Manager`](crate::Manager), which
/// keeps it as long as the Manager's creator lives); reading the name of
/// a list that is gone is an error ([`ContainerError::NestedGone`](crate::ContainerError::NestedGone)
/// naming it, not `Corrupted`; `del` removes its entry).
impl<T: Element> Element for crate::ListProxy<T> {
    fn __inline() -> Option<u32> {
        None
    }
    fn __shape() -> Shape {
        Shape { name: format!("ListProxy<{}>", T::element_name()).into(), inline: None, align: 1 }
    }
    fn __bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.name().as_bytes())
    }
    fn __from_bytes(b: &[u8]) -> Option<Self> {
        crate::ListProxy::open(std::str::from_utf8(b).ok()?).ok()
    }
    fn __why_not(b: &[u8]) -> Option<crate::OpenError> {
        nested_open_error(b, crate::ListProxy::<T>::open)
    }
}

/// A dict stored as a value of another container, by name (as for
/// [`ListProxy`](crate::ListProxy) values: writes through).
impl<K: Element, V: Element> Element for crate::DictProxy<K, V> {
    fn __inline() -> Option<u32> {
        None
    }
    fn __shape() -> Shape {
        Shape {
            name: format!("DictProxy<{}, {}>", K::element_name(), V::element_name()).into(),
            inline: None,
            align: 1,
        }
    }
    fn __bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.name().as_bytes())
    }
    fn __from_bytes(b: &[u8]) -> Option<Self> {
        crate::DictProxy::open(std::str::from_utf8(b).ok()?).ok()
    }
    fn __why_not(b: &[u8]) -> Option<crate::OpenError> {
        nested_open_error(b, crate::DictProxy::<K, V>::open)
    }
}

/// Bytes an element takes in a slot (inline size, or an 8-byte offset).
pub(crate) fn slot_size<T: Element>() -> u64 {
    slot_bytes(T::__inline())
}

/// Bytes of a slot of an element stored `inline` (its size) or as a blob
/// (an 8-byte offset).
#[inline(always)]
pub(crate) fn slot_bytes(inline: Option<u32>) -> u64 {
    inline.map_or(8, u64::from)
}

/// The bytes of a slot: an inline element's own bytes, or a blob's offset.
pub(crate) enum Slot<'e> {
    Inline(Cow<'e, [u8]>),
    Blob([u8; 8]),
}

impl std::ops::Deref for Slot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Slot::Inline(b) => b,
            Slot::Blob(o) => o,
        }
    }
}

/// The slot bytes for `e` (allocating its blob if it has one): the
/// element's own bytes when inline (no copy), else the blob's offset.
#[inline]
pub(crate) fn encode<'e, T: Element>(tx: &mut Txn<'_>, e: &'e T) -> R<Slot<'e>> {
    let b = e.__bytes();
    match T::__inline() {
        Some(_) => Ok(Slot::Inline(b)),
        None => Ok(Slot::Blob(tx.put_blob(&b)?.to_ne_bytes())),
    }
}

/// Inline elements up to this many bytes are read through a stack buffer.
const STACK: usize = 64;

/// Reads the element in the slot at `off` (one copy out of shared memory:
/// inline elements through a stack buffer, blobs into the vector the
/// element keeps).
#[inline(always)]
pub(crate) fn decode<T: Element>(v: &View, off: u64, inline: Option<u32>) -> R<T> {
    let e = match inline {
        // The common 8-byte element (u64, i64, f64) in its 8-aligned slot: one word.
        Some(8) if off.is_multiple_of(8) => T::__from_bytes(&v.u64(off)?.to_ne_bytes()),
        Some(n) if n as usize <= STACK => {
            let mut buf = [0u64; STACK / 8];
            let b = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[..n as usize];
            v.bytes(off, b)?;
            T::__from_bytes(b)
        }
        Some(n) => T::__from_vec(v.vec(off, u64::from(n))?),
        None => T::__from_vec(heap::read_blob(v, v.u64(off)?)?),
    };
    e.ok_or_else(|| undecodable::<T>(v, off, inline))
}

/// Why the element in the slot at `off` could not be decoded: a nested
/// container that cannot be opened is reported as such (an error a
/// reader returns only if its read was not torn: the seq check around
/// it), anything else is bad bytes (`Torn`: a retry, then corruption).
#[cold]
fn undecodable<T: Element>(v: &View, off: u64, inline: Option<u32>) -> Fail {
    if inline.is_none()
        && let Ok(b) = v.u64(off).and_then(|p| heap::read_blob(v, p))
        && let Some(why) = T::__why_not(&b)
    {
        let name = String::from_utf8_lossy(&b).into_owned();
        // A system error (no file descriptor or memory left for the
        // mapping) says nothing of the stored container: it is not `NestedGone`,
        // whose entry the caller may delete.
        if let crate::OpenError::Io { .. } = why {
            return Fail::Err(super::ContainerError::Io(format!("cannot open stored container {name:?}: {why}")));
        }
        return Fail::Err(super::ContainerError::NestedGone { name, reason: why.to_string() });
    }
    Fail::Torn("element bytes")
}

/// `decode` for a read of many elements (a slice, a sort, a dict's
/// keys/values/items): the bytes of the blobs it copies count against
/// `budget` (`heap::read_blob_counted`), so the read never copies more
/// than the segment holds, whatever a peer wrote into the slots.
#[inline]
pub(crate) fn decode_counted<T: Element>(v: &View, off: u64, inline: Option<u32>, budget: &mut u64) -> R<T> {
    match inline {
        Some(_) => decode(v, off, inline),
        None => {
            T::__from_vec(heap::read_blob_counted(v, v.u64(off)?, budget)?).ok_or_else(|| undecodable::<T>(v, off, inline))
        }
    }
}

/// Whether the slot at `off` holds an element whose bytes are `want`.
#[inline(always)]
pub(crate) fn slot_eq(v: &View, off: u64, inline: Option<u32>, want: &[u8]) -> R<bool> {
    match inline {
        Some(n) if n as usize != want.len() => Ok(false),
        // The common 8-byte key in its 8-aligned slot: one word compared.
        Some(8) if off.is_multiple_of(8) => Ok(v.u64(off)?.to_ne_bytes() == want),
        Some(_) => v.bytes_eq(off, want),
        None => heap::blob_eq(v, v.u64(off)?, want),
    }
}

/// `slot_eq` for an optimistic reader's first try: a blob compared
/// without checking its block header (`heap::blob_eq_lean`).
#[inline(always)]
pub(crate) fn slot_eq_lean(v: &View, off: u64, inline: Option<u32>, want: &[u8]) -> R<bool> {
    match inline {
        None => heap::blob_eq_lean(v, v.u64(off)?, want),
        _ => slot_eq(v, off, inline, want),
    }
}

/// Frees what the slot at `off` owns (its blob, if any).
pub(crate) fn release(tx: &mut Txn<'_>, off: u64, inline: Option<u32>) -> R<()> {
    if inline.is_none() {
        let p = tx.view().u64(off)?;
        tx.free(p)?;
    }
    Ok(())
}
