//! How a pool operation or one of its items failed.

use std::time::Duration;

/// Why one item (one call of the task function) has no value.
///
/// ```
/// use shmproc::pool::TaskError;
/// let e = TaskError::WorkerLost { pid: 42, signal: Some(9), index: 7 };
/// assert_eq!(e.to_string(), "worker 42 died running item 7 (killed by signal 9)");
/// assert_eq!(e.index(), 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task function returned `Err(message)`.
    #[error("item {index} failed in worker {pid}: {message}")]
    Failed {
        /// The worker's pid.
        pid: u32,
        /// The item's index in its job (0 for `apply`).
        index: u64,
        /// The error's message.
        message: String,
    },
    /// The task function panicked.
    #[error("item {index} panicked in worker {pid}: {message}")]
    Panicked {
        /// The worker's pid.
        pid: u32,
        /// The item's index.
        index: u64,
        /// The panic message.
        message: String,
    },
    /// The worker running this item died (killed by a signal, or exited)
    /// before it finished; the pool started a replacement.
    #[error("worker {pid} died running item {index} ({})", match signal {
        Some(s) => format!("killed by signal {s}"),
        None => "it exited".to_string(),
    })]
    WorkerLost {
        /// The dead worker's pid.
        pid: u32,
        /// The signal that killed it (`None`: it exited).
        signal: Option<i32>,
        /// The item it was running.
        index: u64,
    },
    /// The item ran longer than its timeout: its worker was killed and
    /// replaced.
    #[error("item {index} timed out after {timeout:?} in worker {pid}, which was killed")]
    TimedOut {
        /// The killed worker's pid.
        pid: u32,
        /// The item's index.
        index: u64,
        /// The timeout.
        timeout: Duration,
    },
    /// The job was cancelled ([`AsyncResult::cancel`](super::AsyncResult::cancel))
    /// before this item finished.
    #[error("item {index} was cancelled")]
    Cancelled {
        /// The item's index.
        index: u64,
    },
    /// The pool was terminated (or dropped) before this item finished.
    #[error("item {index} was not finished: the pool was terminated")]
    Terminated {
        /// The item's index.
        index: u64,
    },
    /// An [`imap`](super::Pool::imap) item that was never run: the pool was
    /// joined (after [`close`](super::Pool::close)) or terminated before the
    /// iterator submitted it. The iterator yields it for each item it had
    /// taken from its input but not submitted, or once, for the first item
    /// it had not taken yet, and then ends.
    #[error("item {index} was not run: the pool was joined or terminated before the imap submitted it")]
    NotSubmitted {
        /// The item's index.
        index: u64,
    },
    /// The item's encoded argument (or its result) is larger than a pool
    /// frame ([`MAX_ITEM_BYTES`](super::MAX_ITEM_BYTES)).
    #[error("item {index}: {what} of {len} bytes exceeds the pool's limit of {max} bytes")]
    TooLarge {
        /// The item's index.
        index: u64,
        /// "argument" or "result".
        what: &'static str,
        /// Its encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The worker could not run the item (its argument did not decode
    /// there, or the task id is unknown in the worker's executable), or the
    /// parent could not decode the result.
    #[error("item {index}: {message}")]
    Refused {
        /// The worker's pid (0 if the parent refused the result).
        pid: u32,
        /// The item's index.
        index: u64,
        /// What went wrong.
        message: String,
    },
}

impl TaskError {
    /// The index of the item this error belongs to.
    ///
    /// ```
    /// let e = shmproc::pool::TaskError::Cancelled { index: 3 };
    /// assert_eq!(e.index(), 3);
    /// ```
    pub fn index(&self) -> u64 {
        match self {
            TaskError::Failed { index, .. }
            | TaskError::Panicked { index, .. }
            | TaskError::WorkerLost { index, .. }
            | TaskError::TimedOut { index, .. }
            | TaskError::Cancelled { index }
            | TaskError::Terminated { index }
            | TaskError::NotSubmitted { index }
            | TaskError::TooLarge { index, .. }
            | TaskError::Refused { index, .. } => *index,
        }
    }
}

/// Why a pool operation failed.
///
/// ```
/// use shmproc::pool::{PoolError, TaskError};
/// let e = PoolError::from(TaskError::Cancelled { index: 2 });
/// assert_eq!(e.to_string(), "item 2 was cancelled");
/// assert!(PoolError::NotRegistered("x::f").to_string().contains("task!"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool was closed or terminated: it accepts no new work.
    #[error("the pool is closed: it accepts no new work")]
    Closed,
    /// The task was not registered with `shmproc::task!` in this executable.
    #[error("task {0} is not registered in this executable (define it with shmproc::task!)")]
    NotRegistered(&'static str),
    /// A setting or argument out of range (0 processes, chunk size 0).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The pool could not be set up (shared memory, starting a worker).
    #[error("cannot set up the pool: {0}")]
    Setup(String),
    /// An item failed (for `map`-like calls: the first failed item by
    /// index, as Python raises the first error).
    #[error(transparent)]
    Task(#[from] TaskError),
    /// `join` before `close` or `terminate` (Python: "Pool is still running").
    #[error("the pool is still open: close() or terminate() it before join()")]
    StillOpen,
    /// The result was already taken (a second `get` on a clone of the
    /// same job), or the job's items were already consumed by an iterator.
    #[error("the result was already taken")]
    Taken,
}

/// Why [`AsyncResult::get_timeout`](super::AsyncResult::get_timeout) returned
/// without a value.
///
/// ```no_run
/// use shmproc::pool::GetTimeoutError;
/// shmproc::task! { fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms } }
/// let pool = shmproc::Pool::new(1).unwrap();
/// let r = pool.apply_async(nap, 500).unwrap();
/// match r.get_timeout(std::time::Duration::from_millis(1)) {
///     Err(GetTimeoutError::TimedOut(r)) => assert_eq!(r.get().unwrap(), 500),
///     other => panic!("{:?}", other.map(|_| ())),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GetTimeoutError<T> {
    /// Not ready within the timeout: the handle comes back, to wait again.
    #[error("the result is not ready yet")]
    TimedOut(super::AsyncResult<T>),
    /// Ready, and failed.
    #[error(transparent)]
    Failed(PoolError),
}
