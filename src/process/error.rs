//! How a process operation failed, or how a child ended badly.

/// Why a process operation failed, or how a child ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// `join`, `terminate`... before `start`.
    #[error("process {0} has not been started")]
    NotStarted(String),
    /// `start` called twice, or a setting that only matters before start
    /// ([`set_daemon`](crate::Process::set_daemon),
    /// [`set_start_method`](crate::Process::set_start_method)) changed after it.
    #[error("process {0} was already started")]
    AlreadyStarted(String),
    /// The process object was [`close`](crate::Process::close)d: it can no
    /// longer be started, joined or signalled (Python: "process object is
    /// closed").
    #[error("process object {0} is closed")]
    Closed(String),
    /// `start` in a daemon process (a daemon child, or a pool worker
    /// running a task): Python refuses it too ("daemonic processes are not
    /// allowed to have children"), since a daemon is ended with its parent
    /// and its own children would be left running on their own.
    #[error("process {0} cannot start: daemonic processes are not allowed to have children")]
    DaemonicParent(String),
    /// `close` while the child runs.
    #[error("process {0} is still running")]
    StillRunning(String),
    /// The entry was not registered with `shmproc::entry!` in this binary.
    #[error("entry {0} is not registered in this executable (define it with shmproc::entry!)")]
    NotRegistered(&'static str),
    /// The OS refused to create the process or its status segment.
    #[error("cannot start process {name}: {source}")]
    Start {
        /// The process name.
        name: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// `terminate` / `kill` could not signal the child: `ESRCH` if it
    /// ended and its status was already collected by someone else.
    #[error("cannot send signal {signal} to process {name}: {source}")]
    Signal {
        /// The process name.
        name: String,
        /// The signal number.
        signal: i32,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The child ended, but its exit status was collected by someone else
    /// (a `waitpid(-1)` elsewhere in this process, or SIGCHLD ignored), and
    /// it did not report an outcome: how it ended is unknown.
    /// `exitcode()` is then [`EXITCODE_UNKNOWN`].
    #[error("process {name} ended, but its exit status was collected elsewhere")]
    StatusUnavailable {
        /// The process name.
        name: String,
    },
    /// The entry returned an error (exit code 1).
    #[error("process {name} failed: {message}")]
    Failed {
        /// The process name.
        name: String,
        /// The error the entry returned.
        message: String,
    },
    /// The entry panicked (exit code 101).
    #[error("process {name} panicked: {message}")]
    Panicked {
        /// The process name.
        name: String,
        /// The panic message.
        message: String,
    },
    /// The child could not run its entry: unknown entry id, or an argument
    /// that did not decode (e.g. a handed-over object was gone). Exit code 2.
    #[error("process {name} could not start its entry: {message}")]
    StartupFailed {
        /// The process name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// Killed by a signal (`exitcode() == Some(-signal)`).
    #[error("process {name} was killed by signal {signal}")]
    Signaled {
        /// The process name.
        name: String,
        /// The signal number.
        signal: i32,
    },
    /// Exited with a non-zero code without reporting why (e.g. it called
    /// `std::process::exit` itself).
    #[error("process {name} exited with code {code}")]
    Exited {
        /// The process name.
        name: String,
        /// The exit code.
        code: i32,
    },
}

/// `exitcode()` of a child that ended while its exit status was collected
/// by someone else and that reported no outcome (see
/// [`ProcessError::StatusUnavailable`]). It can be neither an exit code
/// (0..=255) nor a signal (`-N`).
pub const EXITCODE_UNKNOWN: i32 = i32::MIN;
