//! Error types shared by the setup paths and the lock family.

use std::fmt;

use crate::shm::Kind;

/// Why creating or opening a shared object failed.
///
/// Every variant names the object, so the message alone tells what went
/// wrong where.
///
/// ```
/// use shmproc::{Lock, OpenError};
/// let err = Lock::open("shmproc-doc-no-such-lock").unwrap_err();
/// assert!(matches!(err, OpenError::NotFound(_)));
/// assert!(err.to_string().contains("not found"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The name is empty, too long, or contains `/` or NUL.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `create` found an object of that name already.
    #[error("shared object {0:?} already exists")]
    AlreadyExists(String),
    /// `open` found no object of that name.
    #[error("shared object {0:?} not found")]
    NotFound(String),
    /// The segment exists but this user may not open it.
    #[error("permission denied for shared object {0:?}")]
    PermissionDenied(String),
    /// The segment holds another kind of object.
    #[error("shared object {name:?} is {}, not {}", found.with_article(), expected.with_article())]
    WrongKind {
        /// The name.
        name: String,
        /// The kind asked for.
        expected: Kind,
        /// The kind found.
        found: Kind,
    },
    /// The segment's element type differs from the one asked for.
    #[error("incompatible element type for {name:?}: it holds {found}, not {expected}")]
    IncompatibleType {
        /// The name.
        name: String,
        /// The requested element type.
        expected: String,
        /// The element type recorded in the segment.
        found: String,
    },
    /// The segment was written by an incompatible version of this crate.
    #[error("shared object {name:?} has layout version {found}, expected {expected}")]
    LayoutVersion {
        /// The name.
        name: String,
        /// Version found in the segment.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
    /// The file is shorter than its header says.
    #[error("truncated segment {name:?}: {actual} bytes, expected {expected}")]
    Truncated {
        /// The name.
        name: String,
        /// Bytes the layout needs.
        expected: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// The segment is owned by another user (name squatting?): `open`
    /// trusts only our own segments unless told otherwise with
    /// [`Options::trust_owner`](crate::Options::trust_owner) or
    /// [`Options::trust_group`](crate::Options::trust_group).
    #[error(
        "shared object {name:?} is owned by uid {uid} (gid {gid}), not by us (uid {expected}); \
         refusing it unless Options::trust_owner/trust_group allows it"
    )]
    ForeignOwner {
        /// The name.
        name: String,
        /// The file's owner.
        uid: u32,
        /// The file's group.
        gid: u32,
        /// Our effective uid.
        expected: u32,
    },
    /// A segment of a trusted other owner or group is writable by group or
    /// others beyond what the [`Options`](crate::Options) given to `open`
    /// grant.
    #[error("shared object {name:?} has mode {mode:#o}: writable by group or others, which the options do not allow")]
    InsecureMode {
        /// The name.
        name: String,
        /// The file's permission bits.
        mode: u32,
    },
    /// There is not enough room in `/dev/shm` (a tmpfs) for the segment's
    /// pages, or the size is beyond what the system can hold.
    #[error("no space in /dev/shm for shared object {name:?} of {bytes} bytes")]
    NoSpace {
        /// The name.
        name: String,
        /// The segment size asked for.
        bytes: u64,
    },
    /// The file is not a shmproc segment at all.
    #[error("{0:?} is not a shmproc segment (foreign or garbage header)")]
    Foreign(String),
    /// The header is a shmproc header but its fields are inconsistent.
    #[error("corrupted segment {name:?}: {reason}")]
    Corrupted {
        /// The name.
        name: String,
        /// Which check failed.
        reason: String,
    },
    /// The creator did not finish initialising in time (it may have died
    /// mid-initialisation; [`gc`](crate::gc) removes such leftovers).
    #[error("shared object {name:?} was not initialised within {timeout:?} (creator died mid-init?)")]
    InitTimeout {
        /// The name.
        name: String,
        /// How long we waited.
        timeout: std::time::Duration,
    },
    /// A creation parameter is out of range (zero parties, huge length...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Any other operating-system error.
    #[error("system error on shared object {name:?}: {source}")]
    Io {
        /// The name.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl OpenError {
    /// Whether this error opening (or making) a segment says this process
    /// cannot map it *now* (no descriptor left, no address space, no room
    /// in /dev/shm) rather than that the segment is gone, foreign or
    /// broken: a user of a chain of segments (an unbounded queue's rings)
    /// waits or reports "not now" instead of taking the segment for gone.
    pub(crate) fn is_resource_shortage(&self) -> bool {
        use crate::sys::shm::Errno;
        match self {
            OpenError::NoSpace { .. } => true,
            OpenError::Io { source, .. } => source.raw_os_error().is_some_and(|code| {
                [Errno::EMFILE, Errno::ENFILE, Errno::ENOMEM, Errno::EAGAIN].contains(&Errno::from_raw(code))
            }),
            _ => false,
        }
    }
}

/// Why acquiring a lock did not simply succeed.
///
/// `G` is the guard type: [`LockError::OwnerDied`] hands the guard over, the
/// lock being held, so the caller can repair the protected state and call
/// `make_consistent()`.
///
/// ```
/// use shmproc::{Lock, LockError};
/// let lock = Lock::new().unwrap();
/// let held = lock.lock().unwrap();
/// // Another thread cannot take it without blocking:
/// std::thread::scope(|s| {
///     s.spawn(|| assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock))));
/// });
/// drop(held);
/// ```
pub enum LockError<G> {
    /// The previous owner died while holding the lock. The lock is now held
    /// by the caller through this guard, marked inconsistent: call
    /// `make_consistent()` on it once the protected data is repaired, or the
    /// lock becomes [`NotRecoverable`](LockError::NotRecoverable) when the
    /// guard drops.
    OwnerDied(G),
    /// An earlier owner died and the survivor that took over dropped its
    /// guard without `make_consistent()`: the lock is permanently unusable.
    NotRecoverable,
    /// `try_` form only: the lock is held by someone else.
    WouldBlock,
    /// `_timeout` form only: the lock was not acquired in time.
    TimedOut,
}

impl<G> LockError<G> {
    /// The guard of an [`OwnerDied`](LockError::OwnerDied) error, if any.
    ///
    /// ```
    /// use shmproc::LockError;
    /// let e: LockError<u8> = LockError::OwnerDied(7);
    /// assert_eq!(e.into_guard(), Some(7));
    /// ```
    pub fn into_guard(self) -> Option<G> {
        match self {
            LockError::OwnerDied(g) => Some(g),
            _ => None,
        }
    }
}

impl<G> LockError<G> {
    /// The same error without the guard, so it can leave the function with
    /// `?` (a guard borrows its lock). Dropping an
    /// [`OwnerDied`](LockError::OwnerDied) guard without repair makes the
    /// lock [`NotRecoverable`](LockError::NotRecoverable) for everyone: the
    /// right outcome when the caller gives up instead of repairing.
    ///
    /// ```
    /// use shmproc::{LockError, Value};
    /// fn add_one(v: &Value<u32>) -> Result<(), Box<dyn std::error::Error>> {
    ///     v.get_lock().map_err(LockError::without_guard)?.update(|x| *x += 1);
    ///     Ok(())
    /// }
    /// let v = Value::new(1u32).unwrap();
    /// add_one(&v).unwrap();
    /// assert_eq!(v.get().unwrap(), 2);
    /// ```
    pub fn without_guard(self) -> LockError<()> {
        match self {
            LockError::OwnerDied(_) => LockError::OwnerDied(()),
            LockError::NotRecoverable => LockError::NotRecoverable,
            LockError::WouldBlock => LockError::WouldBlock,
            LockError::TimedOut => LockError::TimedOut,
        }
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockError::OwnerDied(_) => "OwnerDied(..)",
            LockError::NotRecoverable => "NotRecoverable",
            LockError::WouldBlock => "WouldBlock",
            LockError::TimedOut => "TimedOut",
        })
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockError::OwnerDied(_) => {
                "the previous owner died holding the lock; the caller now holds it and must call make_consistent()"
            }
            LockError::NotRecoverable => {
                "the lock is not recoverable: an owner died and nobody made the state consistent"
            }
            LockError::WouldBlock => "the lock is held by another thread or process",
            LockError::TimedOut => "timed out waiting for the lock",
        })
    }
}

impl<G> std::error::Error for LockError<G> {}

/// A thread released a lock it does not own (e.g. [`RLock::release`](crate::RLock::release)
/// from another thread or process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot release a lock the calling thread does not own")]
pub struct NotOwnerError;
