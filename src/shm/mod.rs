//! Named shared-memory segments: names, the common header, creation and
//! opening with validation, ownership and `gc`.

pub(crate) mod copy;
mod element;
mod header;
pub(crate) mod object;
mod raw;
mod names;
mod segment;

pub use element::ShmType;
pub(crate) use header::{Fingerprint, HEADER_SIZE, HeaderImage, elem_u32, fnv1a};
pub use object::Options;
pub(crate) use object::{Mapped, Object};
pub use raw::RawSegment;
pub(crate) use names::{
    dead_segments_of_kind, file_size, gc_matching, is_gone_or_dead, is_held_chain, is_ours_unpersisted, is_ring_name, link,
    memory_of, names_starting_with, unlink_or_release, unlink_segment,
};
pub use names::unlink;
pub(crate) use segment::Segment;

use std::fmt;

/// The prefix of every segment file this crate makes in `/dev/shm`.
pub const NAME_PREFIX: &str = "shmproc.";
/// The longest user name accepted (`NAME_MAX` minus the prefix).
pub const MAX_NAME_LEN: usize = 255 - NAME_PREFIX.len();

/// What kind of object a segment holds (recorded in its header).
///
/// ```
/// use shmproc::Kind;
/// assert_eq!(Kind::Lock.to_string(), "Lock");
/// assert_eq!(Kind::Unknown(77).to_string(), "unknown kind 77");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// [`crate::Lock`]
    Lock,
    /// [`crate::RLock`]
    RLock,
    /// [`crate::Semaphore`]
    Semaphore,
    /// [`crate::BoundedSemaphore`]
    BoundedSemaphore,
    /// [`crate::Event`]
    Event,
    /// [`crate::Condition`]
    Condition,
    /// [`crate::Barrier`]
    Barrier,
    /// [`crate::Mutex`]
    Mutex,
    /// [`crate::Value`]
    Value,
    /// [`crate::Array`]
    Array,
    /// [`crate::RawSegment`]
    RawSegment,
    /// [`crate::queue::SpscQueue`]
    SpscQueue,
    /// [`crate::queue::MpmcQueue`] (and the `Queue` family built on it)
    MpmcQueue,
    /// [`crate::queue::ByteQueue`]
    ByteQueue,
    /// The frame ring of a [`crate::Queue`] whose items are not plain data
    FrameQueue,
    /// The chain of rings of an unbounded [`crate::Queue`] (`maxsize` 0)
    QueueChain,
    /// [`crate::ListProxy`]
    List,
    /// [`crate::DictProxy`]
    Dict,
    /// [`crate::Manager`] (its registry)
    Manager,
    /// A kind this build does not know.
    Unknown(u32),
}

impl Kind {
    /// The number stored in the header (a layout detail, not API).
    pub(crate) fn to_u32(self) -> u32 {
        match self {
            Kind::Lock => 1,
            Kind::RLock => 2,
            Kind::Semaphore => 3,
            Kind::BoundedSemaphore => 4,
            Kind::Event => 5,
            Kind::Condition => 6,
            Kind::Barrier => 7,
            Kind::Mutex => 8,
            Kind::Value => 9,
            Kind::Array => 10,
            Kind::RawSegment => 11,
            Kind::SpscQueue => 12,
            Kind::MpmcQueue => 13,
            Kind::ByteQueue => 14,
            // Numbered apart from the run above, so kinds added on other
            // branches meanwhile cannot collide.
            Kind::FrameQueue => 40,
            Kind::QueueChain => 41,
            Kind::List => 15,
            Kind::Dict => 16,
            Kind::Manager => 17,
            Kind::Unknown(n) => n,
        }
    }

    /// The kind for a header number ([`Kind::Unknown`] if not known).
    pub(crate) fn from_u32(n: u32) -> Kind {
        [
            Kind::Lock,
            Kind::RLock,
            Kind::Semaphore,
            Kind::BoundedSemaphore,
            Kind::Event,
            Kind::Condition,
            Kind::Barrier,
            Kind::Mutex,
            Kind::Value,
            Kind::Array,
            Kind::RawSegment,
            Kind::SpscQueue,
            Kind::MpmcQueue,
            Kind::ByteQueue,
            Kind::FrameQueue,
            Kind::QueueChain,
            Kind::List,
            Kind::Dict,
            Kind::Manager,
        ]
        .into_iter()
        .find(|k| k.to_u32() == n)
        .unwrap_or(Kind::Unknown(n))
    }
}

impl Kind {
    /// The kind with its indefinite article, for messages: "a Lock",
    /// "an Event", "an RLock" (said "ar-lock"), "an MpmcQueue" (letters).
    pub(crate) fn with_article(self) -> String {
        let article = match self {
            Kind::Event | Kind::Array | Kind::RLock | Kind::SpscQueue | Kind::MpmcQueue | Kind::Unknown(_) => "an",
            Kind::Lock
            | Kind::Semaphore
            | Kind::BoundedSemaphore
            | Kind::Condition
            | Kind::Barrier
            | Kind::Mutex
            | Kind::Value
            | Kind::RawSegment
            | Kind::ByteQueue
            | Kind::FrameQueue
            | Kind::QueueChain
            | Kind::List
            | Kind::Dict
            | Kind::Manager => "a",
        };
        format!("{article} {self}")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Unknown(n) => write!(f, "unknown kind {n}"),
            k => fmt::Debug::fmt(k, f),
        }
    }
}

/// Checks a user name and returns the `shm_open` name (`/shmproc.<name>`).
pub(crate) fn os_name(name: &str) -> Result<std::ffi::CString, crate::OpenError> {
    let bad = |reason| crate::OpenError::InvalidName { name: name.to_owned(), reason };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("longer than 247 bytes"));
    }
    if name.contains('/') {
        return Err(bad("contains '/'"));
    }
    if name.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if name == "." || name == ".." {
        return Err(bad("reserved"));
    }
    std::ffi::CString::new(format!("/{NAME_PREFIX}{name}")).map_err(|_| bad("contains NUL"))
}

/// A fresh name no other live object uses: pid, a per-process counter and
/// some clock bits.
pub(crate) fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("anon.{}.{n}.{nanos:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(os_name("ok-name_1.2").is_ok());
        for bad in ["", "a/b", "/x", "a\0b", ".", ".."] {
            assert!(matches!(os_name(bad), Err(crate::OpenError::InvalidName { .. })), "{bad:?} accepted");
        }
        assert!(os_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(os_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn kind_header_numbers_round_trip() {
        assert_eq!(Kind::from_u32(Kind::Barrier.to_u32()), Kind::Barrier);
        assert_eq!(Kind::from_u32(Kind::ByteQueue.to_u32()), Kind::ByteQueue);
        assert_eq!(Kind::from_u32(999), Kind::Unknown(999));
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name(), unique_name());
    }
}
