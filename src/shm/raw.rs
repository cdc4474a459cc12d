//! `RawSegment`: a named block of shared bytes, for data that brings its
//! own synchronisation (atomics, a [`crate::Lock`] beside it, ...).

use crate::OpenError;
use crate::shm::copy;
use crate::shm::object::constructors;
use crate::shm::{Fingerprint, Kind, Mapped, Object};

/// A named shared-memory block of `len` bytes, zero-filled at creation,
/// with the same naming, permission, ownership and validation rules as
/// every other object (its size is fixed by the creator and checked on
/// open).
///
/// ```
/// use shmproc::{Options, RawSegment};
/// let seg = RawSegment::create_with(&format!("doc-raw-{}", std::process::id()), 4096,
///                                   &Options::new().mode(0o600)).unwrap();
/// assert_eq!(seg.len(), 4096);
/// assert_eq!(seg.write(10, b"hello"), 5);
/// let peer = RawSegment::open(seg.name()).unwrap();
/// let mut buf = [0u8; 5];
/// assert_eq!(peer.read(10, &mut buf), 5);
/// assert_eq!(&buf, b"hello");
/// assert_eq!(peer.write(4094, b"xyz"), 2); // clipped at the end
/// ```
#[derive(Clone, Debug)]
pub struct RawSegment {
    m: Mapped<()>,
    len: usize,
}

impl Object for RawSegment {
    const KIND: Kind = Kind::RawSegment;
    type Init = u64;
    type Ctl = ();
    fn fingerprint() -> Fingerprint {
        Fingerprint::of::<u8>()
    }
    fn capacity(len: &u64) -> Result<u64, OpenError> {
        Ok(*len)
    }
    fn new_ctl(_: &u64, _: u64) {}
    fn from_mapped(m: Mapped<()>) -> Self {
        let len = m.capacity() as usize; // the validated copy (Layout::of keeps it addressable)
        RawSegment { m, len }
    }
}

impl RawSegment {
    constructors!(doc("RawSegment", "64", ", 64"), len: u64);

    /// Makes this process's drop of the segment remove its name whatever
    /// the header's persist flag says (a segment private to a pool: see
    /// `Segment::make_private`).
    pub(crate) fn make_private(&self) {
        self.m.segment().make_private();
    }

    /// The header's creator-written fields as they are now (for
    /// [`restore_header`](Self::restore_header)).
    pub(crate) fn header_image(&self) -> crate::shm::HeaderImage {
        self.m.segment().header().image()
    }

    /// Writes `image` back over the header (a peer may have scribbled
    /// it): for the creator, before it hands the segment's name to a new
    /// process that will open and validate it.
    pub(crate) fn restore_header(&self, image: &crate::shm::HeaderImage) {
        self.m.segment().header().restore(image)
    }

    /// Size in bytes.
    ///
    /// ```
    /// assert_eq!(shmproc::RawSegment::new(100).unwrap().len(), 100);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment has no bytes.
    ///
    /// ```
    /// assert!(shmproc::RawSegment::new(0).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start of the bytes (64-byte aligned), valid for [`len`](Self::len)
    /// bytes while this handle lives. Other processes may write them at any
    /// time: access them through atomics or under a lock, and treat what you
    /// read as untrusted.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// let seg = shmproc::RawSegment::new(64).unwrap();
    /// // SAFETY: 64 bytes, 64-aligned, and only accessed atomically.
    /// let word = unsafe { &*(seg.as_ptr() as *const AtomicU64) };
    /// word.fetch_add(5, Ordering::Relaxed);
    /// assert_eq!(word.load(Ordering::Relaxed), 5);
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.m.data()
    }

    /// Copies bytes from `offset` into `out`; returns how many (fewer at
    /// the end of the segment, 0 past it).
    ///
    /// ```
    /// let seg = shmproc::RawSegment::new(8).unwrap();
    /// let mut out = [1u8; 4];
    /// assert_eq!(seg.read(6, &mut out), 2);
    /// assert_eq!(out, [0, 0, 1, 1]);
    /// ```
    pub fn read(&self, offset: usize, out: &mut [u8]) -> usize {
        // Bounds first, with no pointer formed: `offset` may be anything.
        let Some(n) = self.len.checked_sub(offset).map(|room| room.min(out.len())) else {
            return 0;
        };
        // By the crate's memory model, bytes a peer may be writing are copied with the sanctioned primitive: a
        // racing write gives garbage bytes, never UB.
        // SAFETY: offset <= len and offset + n <= len, inside the data area of the mapping, which lives as long
        // as `self.m`; the copy is the sanctioned one (above).
        unsafe { copy::copy_from_shared(self.m.data().add(offset), &mut out[..n]) };
        n
    }

    /// Copies `src` to `offset`; returns how many bytes fitted.
    ///
    /// ```
    /// let seg = shmproc::RawSegment::new(8).unwrap();
    /// assert_eq!(seg.write(0, &[9; 3]), 3);
    /// assert_eq!(seg.write(9, &[9; 3]), 0);
    /// assert_eq!(seg.write(usize::MAX, &[9; 3]), 0); // never UB, whatever the offset
    /// ```
    pub fn write(&self, offset: usize, src: &[u8]) -> usize {
        // Bounds first, with no pointer formed: `offset` may be anything.
        let Some(n) = self.len.checked_sub(offset).map(|room| room.min(src.len())) else {
            return 0;
        };
        // SAFETY: offset + n <= len, inside the writable data area (as in `read`); raw bytes have no protocol of
        // their own, and racing peers only see garbage bytes (memory model: sanctioned copy primitive).
        unsafe { copy::copy_to_shared(&src[..n], self.m.data().add(offset)) };
        n
    }
}
