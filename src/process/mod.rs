//! Processes, the way Python's `multiprocessing.Process` has them.
//!
//! ```no_run
//! use shmproc::{Lock, Process};
//!
//! shmproc::entry! {
//!     fn greet(args: (Lock, String)) {
//!         let (lock, who) = args;
//!         let _held = lock.lock().unwrap();
//!         println!("hello, {who} from {}", shmproc::current_process().name);
//!     }
//! }
//!
//! let lock = Lock::new().unwrap();
//! let mut p = Process::new(greet, (lock.clone(), "bob".to_string()));
//! p.start().unwrap();
//! p.join().unwrap();
//! assert_eq!(p.exitcode(), Some(0));
//! ```
//!
//! ## Start methods
//!
//! - [`StartMethod::Spawn`] (default) re-executes the current executable
//!   (the running file itself, through `/proc/self/exe`: also after its
//!   path was removed or replaced by a new build).
//!   Before `main` runs, a constructor looks for the child marker in the
//!   environment and runs the requested entry instead of `main` — no line
//!   is needed in `main`, and it works in multi-threaded parents and in
//!   `cargo test` binaries. The child gets the argument by re-opening every
//!   handle by name. Its stdin is `/dev/null`, stdout and stderr are
//!   inherited. The entry runs before `main`, so std's main-thread setup
//!   (thread name, stack-overflow message) is not in place, except that
//!   SIGPIPE is ignored, as std does (a write into a closed pipe is an
//!   `EPIPE` error, as in the parent); a panic in a
//!   child is preceded by a `Process <name>:` line on stderr (as Python
//!   prints before a child's traceback), from a panic hook shmproc chains
//!   in front of the existing one: in each spawned child, and for forked
//!   children in the parent at its first `Fork` start (it adds nothing
//!   to panics of a process that is not a child).
//! - [`StartMethod::Fork`] calls `fork()`: the fastest start. In a
//!   multi-threaded parent only the calling thread survives in the child,
//!   and a lock another thread held at that instant stays locked forever
//!   in the child. shmproc's own path from `fork()` to the entry and back
//!   to `_exit` is safe against that: the locks it uses there (stdout's
//!   and stderr's, the process identity, the child list, the entry
//!   registry) are held by the forking thread across `fork()`, so no other
//!   thread holds them then, and released in the child; it allocates only
//!   through the system allocator, which glibc makes fork-safe. The caveat
//!   remains for what the entry itself does, as in Python: a
//!   `std::sync::Mutex` of your own, the environment lock (`std::env`),
//!   a logger's lock, a custom global allocator without fork handling.
//!   Use it from single-threaded parents or where the child touches only
//!   its argument and shmproc.
//!   Hand shared objects to a forked child in its argument, as for
//!   `Spawn`: an unbounded queue there counts the child as one of its
//!   holders, which one it only inherits (a `static`, Python's
//!   module-level global) does not, so the parent must then keep its
//!   handle until the child is done (its last holder leaving removes the
//!   queue's rings).
//!
//! ## Lifecycle
//!
//! Finished children are reaped by `join`, `is_alive`, `exitcode`,
//! [`active_children`] and every `start`. The parent keeps its copy of a
//! child's argument until the child has opened every handle in it (the
//! child says so in its status segment), so objects made only for the
//! child are still there when it opens them. At normal exit of the parent
//! (`main` returns or `std::process::exit`; also when a forked child's
//! entry returns), daemon children get SIGTERM (a pool's workers SIGKILL,
//! see [`Pool`](crate::Pool)) and every child is joined,
//! then the kept arguments are dropped, as in Python. A daemon child also watches its
//! parent (a pidfd) and terminates itself if the parent dies abruptly;
//! a non-daemon child keeps running (as in Python), and the shared objects
//! it uses report the peer's death where they can (`OwnerDied`).

//! ## Where things are
//!
//! - `start.rs`: start methods, and `Process::start` with its spawn and
//!   fork paths (the parent side of starting a child);
//! - `dispatch.rs`: the child side: the pre-`main` dispatcher of spawned
//!   children, reporting the outcome, a daemon watching its parent;
//! - `status.rs`: the status segment a parent shares with each child;
//! - `identity.rs`: `current_process()`, `parent_process()`, identities;
//! - `children.rs`: the children table, reaping, `active_children()`, the
//!   exit handler;
//! - `entry.rs`: the `entry!` registry; `handoff.rs`: how an argument
//!   travels to a child; `logging.rs`: lifecycle logging;
//! - this file: [`Process`] itself.

mod children;
mod dispatch;
mod entry;
mod error;
pub(crate) mod handoff;
mod identity;
mod logging;
mod start;
mod status;
mod waitable;

pub use children::active_children;
pub(crate) use dispatch::signal_self_when_parent_ends;
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use dispatch::PAUSE_IN_WATCH_PARENT as __PAUSE_IN_WATCH_PARENT;
pub(crate) use entry::drop_payload;
pub use entry::{__register, Entry, ExitValue, Run};
pub use error::{EXITCODE_UNKNOWN, ProcessError};
pub use handoff::{Handoff, HandoffError, PodArg};
pub use identity::{ProcessInfo, cpu_count, current_process, parent_process};
pub use logging::{LOG_TARGET, get_logger, log_to_stderr};
pub use start::{StartMethod, get_all_start_methods, get_start_method, set_start_method};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use children::{Inner, children};
use entry::Outcome;

use crate::sys::proc as sysproc;
use crate::wait::Deadline;

/// How often `join_timeout` looks for the exit where no pidfd is available.
const NO_PIDFD_POLL: Duration = Duration::from_millis(5);

/// What `start` needs from the entry, type-erased.
pub(super) trait Target: Send {
    fn id(&self) -> &'static str;
    fn encode(&self, out: &mut Vec<u8>);
    fn run_here(self: Box<Self>) -> Outcome;
}

struct Typed<E: Entry> {
    arg: E::Arg,
}

impl<E: Entry> Target for Typed<E> {
    fn id(&self) -> &'static str {
        E::ID
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.arg.encode(out);
    }
    fn run_here(self: Box<Self>) -> Outcome {
        entry::run_entry::<E>(self.arg)
    }
}

/// A child process, like `multiprocessing.Process`.
///
/// Create it with an [`entry!`](crate::entry) function and its argument,
/// adjust it with the `with_` methods, then [`start`](Self::start) it.
///
/// ```no_run
/// use shmproc::Process;
/// shmproc::entry! { fn square(n: u64) { println!("{}", n * n); } }
///
/// let mut p = Process::new(square, 5).with_name("squarer");
/// p.start().unwrap();
/// p.join().unwrap();
/// assert_eq!(p.exitcode(), Some(0));
/// ```
pub struct Process {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    /// Killed with SIGKILL at the parent's normal exit instead of SIGTERM
    /// (pool workers, whose tasks may ignore SIGTERM; see `kill_at_exit`).
    kill_at_exit: bool,
    method: Option<StartMethod>,
    /// Only touched through `&mut self`; the Mutex (never contended:
    /// `get_mut`) just makes `Process` Sync so threads can share `&Process`.
    target: Mutex<Option<Box<dyn Target>>>,
    inner: Option<Arc<Inner>>,
    /// `close()` was called: every operation but the getters fails with
    /// [`ProcessError::Closed`].
    closed: bool,
}

impl Drop for Process {
    /// Dropping the handle neither waits for nor kills the child (as in
    /// Python); it reaps the child if it already ended. A running child is
    /// still joined (or, if daemon, terminated) at normal exit.
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            inner.poll(false);
        }
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon())
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

impl Process {
    /// A process that will run `entry(arg)`. Named `Process-N` (N counts
    /// the processes this process created, like Python).
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// let p = shmproc::Process::new(nothing, ());
    /// assert!(p.name().starts_with("Process-"));
    /// assert_eq!(p.pid(), None);
    /// ```
    pub fn new<E: Entry>(entry: E, arg: E::Arg) -> Process {
        let _ = entry; // a marker: its type says what to run
        Self::with_target::<E>(arg)
    }

    fn with_target<E: Entry>(arg: E::Arg) -> Process {
        let (identity, name) = identity::next_child();
        Process {
            name,
            identity,
            daemon: false,
            kill_at_exit: false,
            method: None,
            target: Mutex::new(Some(Box::new(Typed::<E> { arg }))),
            inner: None,
            closed: false,
        }
    }

    /// A process whose body is `body.run()` (see [`Run`]); `T` must be
    /// registered with `shmproc::entry!(impl Run for T);`.
    ///
    /// ```
    /// use shmproc::process::{Handoff, HandoffError, Run};
    /// struct Greeter { who: String }
    /// impl Handoff for Greeter {
    ///     fn encode(&self, out: &mut Vec<u8>) { self.who.encode(out) }
    ///     fn decode(i: &mut &[u8]) -> Result<Self, HandoffError> { Ok(Greeter { who: String::decode(i)? }) }
    /// }
    /// impl Run for Greeter {
    ///     fn run(self) -> Result<(), String> { println!("hi {}", self.who); Ok(()) }
    /// }
    /// shmproc::entry!(impl Run for Greeter);
    /// let p = shmproc::Process::from_run(Greeter { who: "ann".into() });
    /// assert_eq!(p.exitcode(), None);
    /// ```
    pub fn from_run<T: Run + Entry<Arg = T>>(body: T) -> Process {
        Self::with_target::<T>(body)
    }

    /// Sets the name (builder form of [`set_name`](Self::set_name)).
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// let p = shmproc::Process::new(nothing, ()).with_name("Test");
    /// assert_eq!(p.name(), "Test");
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Process {
        self.set_name(name);
        self
    }

    /// Sets the name, before or after start (as Python allows). Set before
    /// start, it is what the child sees as `current_process().name`; set
    /// after, only the parent's view changes (this handle, and the name in
    /// its errors, logs and [`active_children`] from then on), as in Python.
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// let mut p = shmproc::Process::new(nothing, ());
    /// p.set_name("worker");
    /// assert_eq!(p.name(), "worker");
    /// ```
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
        if let Some(inner) = &self.inner {
            inner.set_name(&self.name);
        }
    }

    /// Marks the process as a daemon (builder form of
    /// [`set_daemon`](Self::set_daemon)). After `start` it changes nothing
    /// (the child was started as what it is; [`daemon`](Self::daemon)
    /// keeps telling the truth): use `set_daemon` to get the error.
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// assert!(shmproc::Process::new(nothing, ()).with_daemon(true).daemon());
    /// ```
    pub fn with_daemon(mut self, daemon: bool) -> Process {
        if let Err(e) = self.set_daemon(daemon) {
            log::warn!(target: LOG_TARGET, "with_daemon({daemon}) ignored: {e}");
        }
        self
    }

    /// Marks the process as a daemon: terminated when the parent exits
    /// normally, and self-terminating if the parent dies. Only before
    /// `start` (Python raises too): afterwards
    /// [`ProcessError::AlreadyStarted`] and nothing changes; after `close`,
    /// [`ProcessError::Closed`].
    ///
    /// ```
    /// use shmproc::ProcessError;
    /// shmproc::entry! { fn nothing() {} }
    /// let mut p = shmproc::Process::new(nothing, ());
    /// p.set_daemon(true).unwrap();
    /// assert!(p.daemon());
    /// p.close().unwrap();
    /// assert!(matches!(p.set_daemon(false), Err(ProcessError::Closed(_))));
    /// ```
    pub fn set_daemon(&mut self, daemon: bool) -> Result<(), ProcessError> {
        self.check_not_started()?;
        self.daemon = daemon;
        Ok(())
    }

    /// Makes a daemon get SIGKILL instead of SIGTERM at the parent's
    /// normal exit (crate-internal: pool workers, which the pool's drop
    /// kills at once too; a task that ignores or handles SIGTERM must not
    /// make the parent's exit wait for it forever). Before `start` only.
    pub(crate) fn with_kill_at_exit(mut self) -> Process {
        if self.inner.is_none() {
            self.kill_at_exit = true;
        }
        self
    }

    /// Chooses the start method for this process (builder form of
    /// [`set_start_method`](Self::set_start_method); after `start` it
    /// changes nothing).
    ///
    /// ```
    /// use shmproc::process::StartMethod;
    /// shmproc::entry! { fn nothing() {} }
    /// let p = shmproc::Process::new(nothing, ()).with_start_method(StartMethod::Fork);
    /// assert_eq!(p.start_method(), StartMethod::Fork);
    /// ```
    pub fn with_start_method(mut self, method: StartMethod) -> Process {
        if let Err(e) = self.set_start_method(method) {
            log::warn!(target: LOG_TARGET, "with_start_method({method}) ignored: {e}");
        }
        self
    }

    /// Chooses the start method for this process (default:
    /// [`get_start_method`]). Only before `start`: afterwards
    /// [`ProcessError::AlreadyStarted`] and nothing changes.
    ///
    /// ```
    /// use shmproc::process::StartMethod;
    /// shmproc::entry! { fn nothing() {} }
    /// let mut p = shmproc::Process::new(nothing, ());
    /// p.set_start_method(StartMethod::Fork).unwrap();
    /// assert_eq!(p.start_method(), StartMethod::Fork);
    /// ```
    pub fn set_start_method(&mut self, method: StartMethod) -> Result<(), ProcessError> {
        self.check_not_started()?;
        self.method = Some(method);
        Ok(())
    }

    /// The start method: the one it was started with, or (before `start`)
    /// the one `start` will use.
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// let p = shmproc::Process::new(nothing, ());
    /// assert_eq!(p.start_method(), shmproc::process::get_start_method());
    /// ```
    pub fn start_method(&self) -> StartMethod {
        self.method.unwrap_or_else(get_start_method)
    }

    /// `Ok` while the settings may still change: not started, not closed.
    fn check_not_started(&self) -> Result<(), ProcessError> {
        if self.closed {
            Err(ProcessError::Closed(self.name.clone()))
        } else if self.inner.is_some() {
            Err(ProcessError::AlreadyStarted(self.name.clone()))
        } else {
            Ok(())
        }
    }

    /// The process name.
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// assert!(!shmproc::Process::new(nothing, ()).name().is_empty());
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is a daemon (once started: whether it was started as one).
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// assert!(!shmproc::Process::new(nothing, ()).daemon());
    /// ```
    pub fn daemon(&self) -> bool {
        self.inner.as_ref().map_or(self.daemon, |i| i.daemon)
    }

    /// The OS pid, once started.
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// assert_eq!(shmproc::Process::new(nothing, ()).pid(), None);
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.inner.as_ref().map(|i| i.pid)
    }

    /// Python's `ident`: the pid, once started.
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// assert_eq!(shmproc::Process::new(nothing, ()).ident(), None);
    /// ```
    pub fn ident(&self) -> Option<u32> {
        self.pid()
    }

    /// Python's `_identity`: `[n]` for this process's n-th child,
    /// `[2, 1]` for the first child of the second child...
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// let p = shmproc::Process::new(nothing, ());
    /// assert_eq!(p.name(), format!("Process-{}", p.identity()[0]));
    /// ```
    pub fn identity(&self) -> &[u32] {
        &self.identity
    }

    /// A handle on an already started child (for `active_children`).
    fn from_inner(inner: Arc<Inner>) -> Process {
        Process {
            name: inner.name(),
            identity: inner.identity.clone(),
            daemon: inner.daemon,
            kill_at_exit: inner.kill_at_exit,
            method: Some(inner.method),
            target: Mutex::new(None),
            inner: Some(inner),
            closed: false,
        }
    }

    fn inner(&self) -> Result<&Arc<Inner>, ProcessError> {
        if self.closed {
            return Err(ProcessError::Closed(self.name.clone()));
        }
        self.inner.as_ref().ok_or_else(|| ProcessError::NotStarted(self.name.clone()))
    }

    /// Waits for the child to end. `Ok(())` if it succeeded; otherwise how
    /// it failed (its error, its panic message, the signal that killed it).
    pub fn join(&self) -> Result<(), ProcessError> {
        let inner = self.inner()?;
        // Wait on the pidfd without holding the state lock, so other
        // threads' is_alive()/exitcode() on this process do not block.
        if let Some(fd) = &inner.pidfd {
            loop {
                if let Some(end) = inner.poll(false) {
                    return inner.result(end);
                }
                sysproc::pidfd_wait(fd, None);
            }
        }
        let end = inner.poll(true).expect("blocking wait returns an end");
        inner.result(end)
    }

    /// Waits at most `timeout`: `Ok(false)` if the child still runs (its
    /// `exitcode()` is then `None`), `Ok(true)` if it ended well, `Err` as
    /// for [`join`](Self::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<bool, ProcessError> {
        let inner = self.inner()?;
        if let Some(end) = inner.poll(false) {
            return inner.result(end).map(|()| true);
        }
        let deadline = Deadline::after(timeout);
        loop {
            // False: the deadline passed (or the pidfd failed; then give up as on a timeout).
            let again = match &inner.pidfd {
                Some(fd) => sysproc::pidfd_wait(fd, deadline.instant()),
                // No pidfd: look for the exit every few milliseconds.
                None => {
                    std::thread::sleep(deadline.remaining().map_or(NO_PIDFD_POLL, |left| left.min(NO_PIDFD_POLL)));
                    true
                }
            };
            match inner.poll(false) {
                Some(end) => return inner.result(end).map(|()| true),
                None if !again || deadline.passed() => return Ok(false),
                None => {}
            }
        }
    }

    /// Whether the child is running (reaps it if it ended).
    pub fn is_alive(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.poll(false).is_none())
    }

    /// `None` while running (or not started), `Some(0)` on success,
    /// `Some(-N)` if killed by signal N, `Some(1)` if the entry returned an
    /// error, `Some(101)` if it panicked, `Some(2)` if it could not start.
    /// If the exit status was collected by someone else (`ECHILD`), the
    /// code the child reported, or [`EXITCODE_UNKNOWN`].
    pub fn exitcode(&self) -> Option<i32> {
        let inner = self.inner.as_ref()?;
        inner.poll(false).map(|e| inner.exitcode(e))
    }

    /// Sends SIGTERM (through the child's pidfd: never to a process that
    /// reused its pid). A no-op if the child was already reaped here;
    /// [`ProcessError::Signal`] if it cannot be signalled (`ESRCH`: it
    /// ended and was reaped elsewhere).
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.inner()?.signal(sysproc::SIGTERM)
    }

    /// Sends SIGKILL, as [`terminate`](Self::terminate) sends SIGTERM.
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.inner()?.signal(sysproc::SIGKILL)
    }

    /// Releases the process's resources, like Python's `close()`: fails
    /// with [`ProcessError::StillRunning`] (and changes nothing) while the
    /// child runs. Afterwards `start`, `join`, `terminate`, `kill`,
    /// `set_daemon`... fail with [`ProcessError::Closed`] (Python: "process
    /// object is closed"), `pid()` and `exitcode()` are `None` and
    /// `is_alive()` is false. Closing again is a no-op.
    ///
    /// ```
    /// use shmproc::ProcessError;
    /// shmproc::entry! { fn nothing() {} }
    /// let mut p = shmproc::Process::new(nothing, ());
    /// p.close().unwrap();
    /// assert!(matches!(p.join(), Err(ProcessError::Closed(_))));
    /// assert!(p.join().unwrap_err().to_string().contains("is closed"));
    /// ```
    pub fn close(&mut self) -> Result<(), ProcessError> {
        if let Some(inner) = &self.inner {
            if inner.poll(false).is_none() {
                return Err(ProcessError::StillRunning(self.name.clone()));
            }
            children().retain(|c| !Arc::ptr_eq(c, inner));
        }
        self.inner = None;
        *self.target.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        self.closed = true;
        Ok(())
    }
}
