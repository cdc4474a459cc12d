//! The queues' errors, one enum per operation where the operations differ
//! (shared by the SPSC ring, the byte ring, the MPMC ring and the
//! Python-shaped queues).

/// Why a push did not happen. The value is handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError<T> {
    /// `try_push` only: the ring is full.
    #[error("the queue is full")]
    Full(T),
    /// `push_timeout` only: still full when the timeout expired.
    #[error("timed out waiting for space in the queue")]
    TimedOut(T),
    /// The queue was closed.
    #[error("the queue is closed")]
    Closed(T),
    /// The consumer process detached or died.
    #[error("the consumer is gone")]
    Disconnected(T),
    /// Byte frames only: longer than the queue's frame limit.
    #[error("the frame is larger than the queue's max_frame")]
    TooLarge(T),
}

impl<T> PushError<T> {
    /// The value that was not pushed.
    ///
    /// ```
    /// use shmproc::queue::PushError;
    /// assert_eq!(PushError::Full(7).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            PushError::Full(v)
            | PushError::TimedOut(v)
            | PushError::Closed(v)
            | PushError::Disconnected(v)
            | PushError::TooLarge(v) => v,
        }
    }
}

/// Why a pop returned no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PopError {
    /// `try_pop` only: nothing to read.
    #[error("the queue is empty")]
    Empty,
    /// `pop_timeout` only: still empty when the timeout expired.
    #[error("timed out waiting for an item")]
    TimedOut,
    /// The queue was closed and is drained.
    #[error("the queue is closed")]
    Closed,
    /// The producer process detached or died and the queue is drained.
    #[error("the producer is gone")]
    Disconnected,
    /// Byte frames only: a frame header in shared memory is invalid (a
    /// buggy or hostile peer); nothing outside the ring was read.
    #[error("corrupted frame header in the queue")]
    Corrupted,
}

/// A role (producer or consumer) is already held by a live handle: in
/// another process, or in this one (roles are exclusive per handle: one
/// live producer and one live consumer per ring, across all processes and
/// threads). It can be taken once that handle is dropped or its process
/// has died.
///
/// ```
/// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
/// let tx = q.producer().unwrap();
/// let e = q.producer().unwrap_err();
/// assert_eq!((e.role, e.pid), ("producer", std::process::id()));
/// drop(tx);
/// assert!(q.producer().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {role} role of this queue is held by {}", holder(*pid))]
pub struct RoleError {
    /// "producer" or "consumer".
    pub role: &'static str,
    /// The holder's pid (ours if another handle of this process holds it).
    pub pid: u32,
}

fn holder(pid: u32) -> String {
    if pid == std::process::id() {
        format!("another live handle in this process ({pid})")
    } else {
        format!("live process {pid}")
    }
}

/// `task_done` was called more often than items were put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called more times than there were items")]
pub struct TaskDoneError;
