//! The common header at the start of every segment.
//!
//! ```text
//! offset  field          written by the creator, in this order
//!   0     magic          2. after pid/start/version, so gc can trust them
//!   8     init_state     4. READY, with Release, last of all
//!  12     version        1.
//!  16     kind           3.
//!  20     elem_size      3.
//!  24     elem_align     3.
//!  28     flags          (PERSIST bit, set any time by persist())
//!  32     elem_hash      3.
//!  40     capacity       3.
//!  48     total_len      3.
//!  56     creator_pid    1.
//!  64     creator_start  1.
//!  72     type_name      3. first 56 bytes of the element type's name
//! 128     object control block ...
//! ```
//! Openers wait (bounded) for `init_state == READY` with Acquire, which pairs
//! with the creator's Release store and makes every field above visible.
//! All fields are atomics: the bytes are shared with processes we do not
//! trust, and a concurrent write must never be a data race in our process.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::Kind;

/// "SHMPROC\x01" read as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"SHMPROC\x01");
/// Bumped whenever any shared layout changes incompatibly (3: byte-ring
/// payloads of 64 bytes or more start on a 64-byte boundary; 4: SPSC-style
/// ring sleepers sleep on their `*_waiting` flag, not the peer's index, and
/// a frame ring's small frames start at byte 16 of their slot; 5: an
/// unbounded queue's rings carry a keyed tag in their names; 6: an
/// unbounded JoinableQueue counts from its rings' claims, with a base word
/// in each ring and a late-skip word in the chain; 7: a Condition counts
/// the notifications granted and not yet taken, `pending`).
pub(crate) const LAYOUT_VERSION: u32 = 7;
/// Value of `init_state` once the object is fully built ("REDY").
pub(crate) const READY: u32 = u32::from_le_bytes(*b"REDY");
/// `flags` bit: the segment outlives its creator; `gc` leaves it alone.
pub(crate) const FLAG_PERSIST: u32 = 1;
/// Bytes of the element type name kept for error messages.
pub(crate) const TYPE_NAME_LEN: usize = 56;
/// Size of the header; object data starts here (two cache lines).
pub(crate) const HEADER_SIZE: usize = 128;

#[repr(C)]
pub(crate) struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) init_state: AtomicU32,
    pub(crate) version: AtomicU32,
    pub(crate) kind: AtomicU32,
    pub(crate) elem_size: AtomicU32,
    pub(crate) elem_align: AtomicU32,
    pub(crate) flags: AtomicU32,
    pub(crate) elem_hash: AtomicU64,
    pub(crate) capacity: AtomicU64,
    pub(crate) total_len: AtomicU64,
    pub(crate) creator_pid: AtomicU32,
    _pad: AtomicU32,
    pub(crate) creator_start: AtomicU64,
    pub(crate) type_name: [AtomicU8; TYPE_NAME_LEN],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);

/// Byte offsets of the fields `gc` reads with `pread` (native endian).
pub(crate) const OFF_MAGIC: usize = std::mem::offset_of!(Header, magic);
pub(crate) const OFF_VERSION: usize = std::mem::offset_of!(Header, version);
pub(crate) const OFF_KIND: usize = std::mem::offset_of!(Header, kind);
pub(crate) const OFF_FLAGS: usize = std::mem::offset_of!(Header, flags);
pub(crate) const OFF_CREATOR_PID: usize = std::mem::offset_of!(Header, creator_pid);
pub(crate) const OFF_CREATOR_START: usize = std::mem::offset_of!(Header, creator_start);
const _: () = assert!(std::mem::align_of::<Header>() == 8);

/// The element layout recorded in a header: size, align and a hash of the
/// type's name (so `u64` and `i64`, or two structs of equal size, differ).
#[derive(Debug, Clone, PartialEq, Eq)]
/// Not part of the API: an element type's identity as a segment records it.
#[doc(hidden)]
pub struct Fingerprint {
    pub(crate) size: u32,
    pub(crate) align: u32,
    pub(crate) hash: u64,
    pub(crate) name: std::borrow::Cow<'static, str>,
}

impl Fingerprint {
    /// An identity from its parts (the name is hashed as in [`of`](Self::of)).
    pub(crate) fn named(size: u32, align: u32, name: std::borrow::Cow<'static, str>) -> Self {
        Fingerprint { size, align, hash: fnv1a(name.as_bytes()), name }
    }

    /// The identity of `T` ([`ShmType`](super::ShmType): its stable name).
    pub(crate) fn of<T: super::ShmType>() -> Self {
        let name = T::type_name();
        Fingerprint {
            size: elem_u32(std::mem::size_of::<T>()),
            align: elem_u32(std::mem::align_of::<T>()),
            hash: fnv1a(name.as_bytes()),
            name,
        }
    }
}

/// An element type's size or alignment as the `u32` a header (or a
/// container's shape) records it.
///
/// # Panics
/// For a type of 4 GiB or more: its size cut to 32 bits would size the
/// segment for a smaller element than every copy of one moves (a read
/// past the mapping). Such a type is a program error, like a `Vec`
/// capacity overflow.
#[inline]
pub(crate) fn elem_u32(n: usize) -> u32 {
    match u32::try_from(n) {
        Ok(n) => n,
        Err(_) => too_large(n),
    }
}

#[cold]
fn too_large(n: usize) -> ! {
    panic!("shmproc: an element type of {n} bytes is too large for shared memory (at most {} bytes)", u32::MAX)
}

/// FNV-1a, 64-bit: stable across builds and platforms.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The creator-written fields of a header, as read once (all but `flags`):
/// what [`Header::restore`] writes back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderImage {
    magic: u64,
    init_state: u32,
    version: u32,
    kind: u32,
    elem_size: u32,
    elem_align: u32,
    elem_hash: u64,
    capacity: u64,
    total_len: u64,
    creator_pid: u32,
    creator_start: u64,
    type_name: [u8; TYPE_NAME_LEN],
}

impl Header {
    /// The creator-written fields as they are now (Relaxed: read by the
    /// creator right after it published them, or of no use).
    pub(crate) fn image(&self) -> HeaderImage {
        let mut type_name = [0u8; TYPE_NAME_LEN];
        for (dst, src) in type_name.iter_mut().zip(&self.type_name) {
            *dst = src.load(Ordering::Relaxed);
        }
        HeaderImage {
            magic: self.magic.load(Ordering::Relaxed),
            init_state: self.init_state.load(Ordering::Relaxed),
            version: self.version.load(Ordering::Relaxed),
            kind: self.kind.load(Ordering::Relaxed),
            elem_size: self.elem_size.load(Ordering::Relaxed),
            elem_align: self.elem_align.load(Ordering::Relaxed),
            elem_hash: self.elem_hash.load(Ordering::Relaxed),
            capacity: self.capacity.load(Ordering::Relaxed),
            total_len: self.total_len.load(Ordering::Relaxed),
            creator_pid: self.creator_pid.load(Ordering::Relaxed),
            creator_start: self.creator_start.load(Ordering::Relaxed),
            type_name,
        }
    }

    /// Writes `image` (taken by [`image`](Self::image) when the header was
    /// whole) back over whatever a peer wrote there since; `init_state`
    /// last. Only where the fields changed: a header left alone is only
    /// read.
    pub(crate) fn restore(&self, image: &HeaderImage) {
        let now = self.image();
        if now.magic == image.magic
            && now.init_state == image.init_state
            && now.version == image.version
            && now.kind == image.kind
            && now.elem_size == image.elem_size
            && now.elem_align == image.elem_align
            && now.elem_hash == image.elem_hash
            && now.capacity == image.capacity
            && now.total_len == image.total_len
            && now.creator_pid == image.creator_pid
            && now.creator_start == image.creator_start
            && now.type_name == image.type_name
        {
            return;
        }
        self.creator_pid.store(image.creator_pid, Ordering::Relaxed);
        self.creator_start.store(image.creator_start, Ordering::Relaxed);
        self.version.store(image.version, Ordering::Relaxed);
        // Release: pairs with gc's Acquire load of `magic` (as in
        // `write_fields`).
        self.magic.store(image.magic, Ordering::Release);
        self.kind.store(image.kind, Ordering::Relaxed);
        self.elem_size.store(image.elem_size, Ordering::Relaxed);
        self.elem_align.store(image.elem_align, Ordering::Relaxed);
        self.elem_hash.store(image.elem_hash, Ordering::Relaxed);
        self.capacity.store(image.capacity, Ordering::Relaxed);
        self.total_len.store(image.total_len, Ordering::Relaxed);
        for (dst, &src) in self.type_name.iter().zip(&image.type_name) {
            dst.store(src, Ordering::Relaxed);
        }
        // Release: pairs with the Acquire load in `is_ready` (as `publish`).
        self.init_state.store(image.init_state, Ordering::Release);
    }

    /// Step 1-3 of the creator's protocol (everything but READY).
    /// `(pid, start)`: the creator's identity
    /// ([`process_identity`](crate::sys::thread::process_identity)).
    pub(crate) fn write_fields(&self, kind: Kind, fp: &Fingerprint, capacity: u64, total_len: u64, (pid, start): (u32, u64)) {
        self.creator_pid.store(pid, Ordering::Relaxed);
        self.creator_start.store(start, Ordering::Relaxed);
        self.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        // Release: pairs with gc's Acquire load of `magic`, so a reader that
        // sees the magic also sees the creator identity and version above.
        self.magic.store(MAGIC, Ordering::Release);
        self.kind.store(kind.to_u32(), Ordering::Relaxed);
        self.elem_size.store(fp.size, Ordering::Relaxed);
        self.elem_align.store(fp.align, Ordering::Relaxed);
        self.elem_hash.store(fp.hash, Ordering::Relaxed);
        self.capacity.store(capacity, Ordering::Relaxed);
        self.total_len.store(total_len, Ordering::Relaxed);
        for (dst, src) in self.type_name.iter().zip(fp.name.bytes()) {
            dst.store(src, Ordering::Relaxed);
        }
    }

    /// Step 4: publish. Release pairs with the Acquire load in `is_ready`.
    pub(crate) fn publish(&self) {
        self.init_state.store(READY, Ordering::Release);
    }

    /// Acquire pairs with `publish`'s Release store.
    pub(crate) fn is_ready(&self) -> bool {
        self.init_state.load(Ordering::Acquire) == READY
    }

    /// The element type name recorded by the creator (possibly truncated).
    pub(crate) fn type_name(&self) -> String {
        let bytes: Vec<u8> = self.type_name.iter().map(|b| b.load(Ordering::Relaxed)).take_while(|&b| b != 0).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
