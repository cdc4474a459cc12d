//! Manager, ListProxy and DictProxy: growable lists and dicts whose data
//! lives in shared memory (no server process, no pickling), crash-atomic.
//!
//! Layers: `store` (growable segment, robust lock, seqlock, undo log),
//! `heap` (in-segment allocator), `element` (what containers hold), then
//! the containers and the registry.

mod dict;
mod element;
mod heap;
mod list;
mod registry;
mod store;

pub use dict::DictProxy;
pub use element::{Element, Shape};
pub use list::ListProxy;
pub use registry::{Entry, Manager};

use crate::shm::{Fingerprint, fnv1a};

/// Crash injection for the crash tests (feature `test-hooks`; not API):
/// this process kills itself with SIGKILL at the `n`-th write step of the
/// container operations it runs from now on (0 disarms).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn __crash_after_steps(n: u64) {
    store::crash::after(n)
}

/// Why a container operation failed. Nothing is changed when an
/// operation returns an error.
///
/// ```
/// use shmproc::{ContainerError, ListProxy};
/// let l = ListProxy::<u64>::new().unwrap();
/// assert_eq!(l.get(0), Err(ContainerError::IndexOutOfRange { index: 0, len: 0 }));
/// assert_eq!(l.pop(), Err(ContainerError::Empty("list")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerError {
    /// An index past either end (Python's `IndexError`).
    #[error("list index {index} out of range for length {len}")]
    IndexOutOfRange {
        /// The index asked for (negative ones count from the end).
        index: i64,
        /// The length at the time.
        len: u64,
    },
    /// `pop` / `popitem` on an empty container.
    #[error("pop from an empty {0}")]
    Empty(&'static str),
    /// `remove` / `index` of a value the list does not hold (Python's `ValueError`).
    #[error("value not in list")]
    ValueNotFound,
    /// `pop` of a key the dict does not hold (Python's `KeyError`).
    #[error("key not in dict")]
    KeyNotFound,
    /// /dev/shm has no room for the container to grow (nothing changed).
    #[error("no space in /dev/shm to grow container {name:?} to {bytes} bytes")]
    NoSpace {
        /// The container's name.
        name: String,
        /// The size it needed.
        bytes: u64,
    },
    /// An operation beyond what one container operation can do.
    #[error("{what} is limited to {limit} bytes")]
    TooLarge {
        /// What is limited.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The shared bytes are inconsistent (a peer wrote garbage).
    #[error("corrupted container {name:?}: {reason}")]
    Corrupted {
        /// The container's name.
        name: String,
        /// Which check failed.
        reason: &'static str,
    },
    /// Any other system error (mapping the grown segment).
    #[error("system error: {0}")]
    Io(String),
}

/// The identity recorded in a container's header: its kind's name and the
/// shapes (names, sizes, alignments) of its element types.
pub(crate) fn fingerprint(kind: &str, shapes: &[Shape]) -> Fingerprint {
    let names: Vec<&str> = shapes.iter().map(|s| &*s.name).collect();
    let name = format!("{kind}<{}>", names.join(", "));
    let mut id = name.clone();
    for s in shapes {
        id.push_str(&format!(";{:?}/{}", s.inline, s.align));
    }
    Fingerprint {
        size: shapes.iter().map(|s| s.inline.unwrap_or(8)).sum(),
        align: shapes.iter().map(|s| s.align).max().unwrap_or(1),
        hash: fnv1a(id.as_bytes()),
        name: name.into(),
    }
}

/// Python's index rule: `i` counts from the end when negative.
pub(crate) fn normalize(i: isize, len: u64) -> Result<u64, ContainerError> {
    let idx = if i < 0 { (len as i128) + i as i128 } else { i as i128 };
    if idx < 0 || idx >= len as i128 {
        return Err(ContainerError::IndexOutOfRange { index: i as i64, len });
    }
    Ok(idx as u64)
}
