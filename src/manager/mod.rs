//! Manager, ListProxy and DictProxy: growable lists and dicts whose data
//! lives in shared memory (no server process, no pickling), crash-atomic.
//!
//! Layers: `store` (growable segment, robust lock, seqlock, undo log),
//! `heap` (in-segment allocator), `element` (what containers hold), then
//! the containers and the registry.


/// `new`, `create`, `open`, `open_with`, `name` and `persist` of a
/// container type (which provides `create_owned` and `open_impl`); `$t`
/// names the type in the doc examples.
macro_rules! container_constructors {
    ($t:literal) => {
        /// A new empty container under a fresh unique name; this process
        /// owns the name (removed when its last handle here drops).
        ///
        /// ```
        #[doc = concat!("let c = shmproc::", $t, "::new().unwrap();")]
        /// assert!(c.is_empty() && c.name().starts_with("anon."));
        /// ```
        pub fn new() -> Result<Self, OpenError> {
            Self::create_owned(&crate::shm::unique_name(), &Options::new(), None)
        }

        /// A new empty container named `name`
        /// ([`OpenError::AlreadyExists`] if taken); this process owns the name.
        ///
        /// ```
        /// let name = format!("doc-container-create-{}", std::process::id());
        #[doc = concat!("let c = shmproc::", $t, "::create(&name).unwrap();")]
        /// assert_eq!(c.name(), name);
        #[doc = concat!("assert!(shmproc::", $t, "::create(&name).is_err());")]
        /// ```
        pub fn create(name: &str) -> Result<Self, OpenError> {
            Self::create_owned(name, &Options::new(), None)
        }

        /// Opens the container named `name`, checking its kind and element
        /// types ([`OpenError::WrongKind`], [`OpenError::IncompatibleType`]).
        ///
        /// ```
        #[doc = concat!("let c = shmproc::", $t, "::new().unwrap();")]
        #[doc = concat!("assert!(shmproc::", $t, "::open(c.name()).is_ok());")]
        /// assert!(shmproc::Manager::open(c.name()).is_err()); // another kind
        /// ```
        pub fn open(name: &str) -> Result<Self, OpenError> {
            Self::open_impl(name, &Options::new())
        }

        /// [`Self::open`] with explicit [`Options`].
        ///
        /// ```
        #[doc = concat!("let c = shmproc::", $t, "::new().unwrap();")]
        #[doc = concat!("assert!(shmproc::", $t, "::open_with(c.name(), &shmproc::Options::new()).is_ok());")]
        /// ```
        pub fn open_with(name: &str, opts: &Options) -> Result<Self, OpenError> {
            Self::open_impl(name, opts)
        }

        /// The name other processes open.
        ///
        /// ```
        #[doc = concat!("let c = shmproc::", $t, "::new().unwrap();")]
        /// assert!(!c.name().is_empty());
        /// ```
        pub fn name(&self) -> &str {
            self.store.name()
        }

        /// Keeps the name after the creator's last handle drops (and makes
        /// [`gc`](crate::gc) leave it alone); remove it later with
        /// [`unlink`](crate::unlink). Any process may call it (one that
        /// opened the container too).
        ///
        /// ```
        /// let name = format!("doc-container-persist-{}", std::process::id());
        #[doc = concat!("shmproc::", $t, "::create(&name).unwrap().persist();")]
        #[doc = concat!("assert!(shmproc::", $t, "::open(&name).is_ok());")]
        /// shmproc::unlink(&name).unwrap();
        /// ```
        pub fn persist(&self) {
            self.store.segment().persist()
        }
    };
}
pub(crate) use container_constructors;

mod dict;
mod element;
mod group;
mod heap;
mod list;
mod registry;
mod store;

pub use dict::DictProxy;
pub use element::{Element, Shape};
pub use list::{ListProxy, ListRange};
pub use registry::{Entry, Manager, gc};
pub(crate) use registry::unlink_manager;

use crate::shm::{Fingerprint, fnv1a};

/// Crash injection for the crash tests (feature `test-hooks`; not API):
/// this process kills itself with SIGKILL at the `n`-th write step of the
/// container operations it runs from now on (0 disarms).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn __crash_after_steps(n: u64) {
    store::crash::after(n)
}

/// Crash injection for the crash tests (feature `test-hooks`; not API):
/// the next [`Manager`] find-or-create that makes an object in this
/// process writes the object's segment name to the file `report`, then
/// kills this process with SIGKILL between making the segment and the
/// registry's record of it.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub fn __crash_in_find_or_create(report: &str) {
    registry::crash::arm(report)
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
    /// A write to a container from user code that one of its own
    /// operations runs on this thread (an `update_with` closure, a
    /// `sort_by_key` key, ...), which that operation would overwrite
    /// (Python's "list modified during sort"). Nothing changed.
    #[error("container modified during an operation on it (from a callback of that operation)")]
    ModifiedDuringOperation,
    /// A container stored in this one (a [`ListProxy`] or [`DictProxy`]
    /// value, kept by name) cannot be opened: most often it is gone, its
    /// creating process having dropped its last handle or died (make
    /// nested containers through a [`Manager`], which keeps them while
    /// its creator lives, or `persist` them). The entry stays; `del`
    /// ([`DictProxy::del`], [`ListProxy::del`]) removes it without
    /// reading it back, and `ListProxy::set` replaces it.
    ///
    /// ```
    /// use shmproc::{ContainerError, DictProxy, ListProxy};
    /// let d = DictProxy::<String, ListProxy<u64>>::new().unwrap();
    /// let l = ListProxy::<u64>::new().unwrap();
    /// let name = l.name().to_owned();
    /// d.insert("k".into(), l).unwrap(); // the only handle: dropped here, the list goes
    /// let err = d.get(&"k".into()).unwrap_err();
    /// assert!(matches!(&err, ContainerError::NestedGone { name: n, .. } if *n == name), "{err}");
    /// assert_eq!(d.keys().unwrap(), ["k"]); // keys, len and contains_key still work
    /// d.del(&"k".into()).unwrap();
    /// assert!(d.is_empty());
    /// ```
    #[error("stored container {name:?} cannot be opened ({reason}); `del` removes its entry")]
    NestedGone {
        /// The stored container's name.
        name: String,
        /// Why it cannot be opened (the open error).
        reason: String,
    },
    /// Any other system error (mapping the grown segment, opening a
    /// stored container with no file descriptor or memory left).
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
#[inline]
pub(crate) fn normalize(i: isize, len: u64) -> Result<u64, ContainerError> {
    let idx = if i < 0 { len.checked_sub(i.unsigned_abs() as u64) } else { Some(i as u64) };
    match idx {
        Some(x) if x < len => Ok(x),
        _ => Err(ContainerError::IndexOutOfRange { index: i as i64, len }),
    }
}
