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
//! - [`StartMethod::Spawn`] (default) re-executes the current executable.
//!   Before `main` runs, a constructor looks for the child marker in the
//!   environment and runs the requested entry instead of `main` — no line
//!   is needed in `main`, and it works in multi-threaded parents and in
//!   `cargo test` binaries. The child gets the argument by re-opening every
//!   handle by name. Its stdin is `/dev/null`, stdout and stderr are
//!   inherited. The entry runs before `main`, so std's main-thread setup
//!   (thread name, stack-overflow message) is not in place.
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
//!
//! ## Lifecycle
//!
//! Finished children are reaped by `join`, `is_alive`, `exitcode`,
//! [`active_children`] and every `start`. The parent keeps its copy of a
//! child's argument until the child has opened every handle in it (the
//! child says so in its status segment), so objects made only for the
//! child are still there when it opens them. At normal exit of the parent
//! (`main` returns or `std::process::exit`; also when a forked child's
//! entry returns), daemon children get SIGTERM and every child is joined,
//! then the kept arguments are dropped, as in Python. A daemon child also watches its
//! parent (a pidfd) and terminates itself if the parent dies abruptly;
//! a non-daemon child keeps running (as in Python), and the shared objects
//! it uses report the peer's death where they can (`OwnerDied`).

mod entry;
pub(crate) mod handoff;
mod logging;
mod status;

pub use entry::{__register, Entry, ExitValue, Run};
pub use handoff::{Handoff, HandoffError, PodArg};
pub use logging::{LOG_TARGET, get_logger, log_to_stderr};

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use entry::Outcome;

use crate::RawSegment;
use crate::sys::proc::{self as sysproc, Ended};
use crate::wait::Deadline;

/// How often `join_timeout` looks for the exit where no pidfd is available.
const NO_PIDFD_POLL: Duration = Duration::from_millis(5);

const ENV_ENTRY: &str = "SHMPROC_ENTRY";
const ENV_SEGMENT: &str = "SHMPROC_SEGMENT";
const ENV_NAME: &str = "SHMPROC_NAME";
const ENV_IDENTITY: &str = "SHMPROC_IDENTITY";
const ENV_PARENT: &str = "SHMPROC_PARENT";
const ENV_DAEMON: &str = "SHMPROC_DAEMON";
const ENV_LOG: &str = "SHMPROC_LOG";

/// How a child process is started. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// Re-execute the current program and run the entry before `main`.
    #[default]
    Spawn,
    /// `fork()` the current process.
    Fork,
}

static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

/// Sets the start method used by processes that do not choose one, like
/// Python's `set_start_method`.
///
/// ```
/// use shmproc::process::{StartMethod, get_start_method, set_start_method};
/// set_start_method(StartMethod::Fork);
/// assert_eq!(get_start_method(), StartMethod::Fork);
/// set_start_method(StartMethod::Spawn);
/// ```
pub fn set_start_method(method: StartMethod) {
    DEFAULT_METHOD.store(method as u8, Ordering::Relaxed);
}

/// Every start method this platform offers, the default first (Python's
/// `get_all_start_methods()`).
///
/// ```
/// use shmproc::process::{StartMethod, get_all_start_methods};
/// assert_eq!(get_all_start_methods(), &[StartMethod::Spawn, StartMethod::Fork]);
/// ```
pub fn get_all_start_methods() -> &'static [StartMethod] {
    &[StartMethod::Spawn, StartMethod::Fork]
}

impl std::fmt::Display for StartMethod {
    /// Python's names: `spawn`, `fork`.
    ///
    /// ```
    /// assert_eq!(shmproc::process::StartMethod::Fork.to_string(), "fork");
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StartMethod::Spawn => "spawn",
            StartMethod::Fork => "fork",
        })
    }
}

/// The default start method (initially [`StartMethod::Spawn`]).
///
/// ```
/// assert_eq!(shmproc::process::get_start_method(), shmproc::process::StartMethod::Spawn);
/// ```
pub fn get_start_method() -> StartMethod {
    if DEFAULT_METHOD.load(Ordering::Relaxed) == StartMethod::Fork as u8 {
        StartMethod::Fork
    } else {
        StartMethod::Spawn
    }
}

/// Why a process operation failed, or how a child ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// `join`, `terminate`... before `start`.
    #[error("process {0} has not been started")]
    NotStarted(String),
    /// `start` called twice.
    #[error("process {0} was already started")]
    AlreadyStarted(String),
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

/// Name and identity of a process, as `current_process()` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `MainProcess` for the top process, `Process-N` (or a chosen name).
    pub name: String,
    /// The OS process id.
    pub pid: u32,
    /// Whether it was started as a daemon.
    pub daemon: bool,
    /// Python's `_identity`: empty for the main process, `[2]` for the
    /// second child, `[2, 1]` for its first child...
    pub identity: Vec<u32>,
}

struct Me {
    info: ProcessInfo,
    parent: Option<(String, u32)>,
}

static ME: Mutex<Option<Me>> = Mutex::new(None);

fn me_lock() -> std::sync::MutexGuard<'static, Option<Me>> {
    ME.lock().unwrap_or_else(|p| p.into_inner())
}

fn with_me<R>(f: impl FnOnce(&Me) -> R) -> R {
    let mut me = me_lock();
    let me = me.get_or_insert_with(|| Me {
        info: ProcessInfo { name: "MainProcess".into(), pid: std::process::id(), daemon: false, identity: Vec::new() },
        parent: None,
    });
    f(me)
}

fn set_me(slot: &mut Option<Me>, me: Me) {
    *slot = Some(me);
    NEXT_CHILD.store(1, Ordering::Relaxed);
}

/// The calling process: `MainProcess` in the top process.
///
/// ```
/// let me = shmproc::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    with_me(|m| ProcessInfo { pid: std::process::id(), ..m.info.clone() })
}

/// The parent of the calling process, if it was started by shmproc
/// (`None` in the main process).
///
/// ```
/// assert!(shmproc::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    with_me(|m| {
        m.parent.as_ref().map(|(name, pid)| ProcessInfo {
            name: name.clone(),
            pid: *pid,
            daemon: false,
            identity: m.info.identity[..m.info.identity.len().saturating_sub(1)].to_vec(),
        })
    })
}

/// Number of online CPUs, like `os.cpu_count()`.
///
/// ```
/// assert!(shmproc::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    sysproc::cpu_count()
}

// ---------------------------------------------------------------------------
// Child side.

/// Runs in every process built with shmproc, before `main`: if this
/// process is a spawned child, run its entry and exit; otherwise return.
extern "C" fn child_dispatch() {
    let Some(entry_id) = std::env::var_os(ENV_ENTRY) else {
        return;
    };
    let take = |k: &str| std::env::var_os(k).unwrap_or_default();
    let (seg_name, name, identity, parent, daemon) =
        (take(ENV_SEGMENT), take(ENV_NAME), take(ENV_IDENTITY), take(ENV_PARENT), take(ENV_DAEMON));
    if let Some(level) = std::env::var_os(ENV_LOG).and_then(|l| l.to_str()?.parse().ok()) {
        // The parent logs to stderr (`log_to_stderr`): so does the child, as
        // in Python.
        log_to_stderr(level);
    }
    for k in [ENV_ENTRY, ENV_SEGMENT, ENV_NAME, ENV_IDENTITY, ENV_PARENT, ENV_DAEMON, ENV_LOG] {
        // SAFETY: this runs before main, single-threaded: nobody else reads
        // or writes the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
    let code = spawned_child_main(entry_id, seg_name, name, identity, parent, daemon);
    std::process::exit(code);
}

/// The dispatcher, in the unprioritised `.init_array`: it runs after every
/// `entry!` registration (`.init_array.00500`) and after std's own setup.
#[used]
#[unsafe(link_section = ".init_array")]
static CHILD_DISPATCH: extern "C" fn() = child_dispatch;

fn spawned_child_main(
    entry_id: OsString,
    seg_name: OsString,
    name: OsString,
    identity: OsString,
    parent: OsString,
    daemon: OsString,
) -> i32 {
    let name = name.to_string_lossy().into_owned();
    let identity: Vec<u32> = identity.to_string_lossy().split(':').filter_map(|s| s.parse().ok()).collect();
    let parent = parent.to_string_lossy().into_owned();
    let (parent_pid, parent_name) = parent.split_once(':').unwrap_or(("0", "MainProcess"));
    let parent_pid: u32 = parent_pid.parse().unwrap_or(0);
    let daemon = daemon == "1";
    set_me(
        &mut me_lock(),
        Me {
            info: ProcessInfo { name: name.clone(), pid: std::process::id(), daemon, identity },
            parent: Some((parent_name.to_owned(), parent_pid)),
        },
    );
    let seg_name = seg_name.to_string_lossy();
    let seg = RawSegment::open(&seg_name);
    // The mapping is all we need: remove the name at once, so nothing is
    // left in /dev/shm whatever happens to either process later (before
    // watching the parent: a daemon whose parent is gone ends at once).
    let _ = crate::unlink(&seg_name);
    if daemon {
        watch_parent(parent_pid);
    }
    let seg = match seg {
        Ok(s) if s.len() >= status::ARG => s,
        Ok(_) => return fail_early(&name, "status segment too small"),
        Err(e) => return fail_early(&name, &format!("cannot open status segment: {e}")),
    };
    // The parent hands the argument's pipe roles over to us first.
    status::wait_handed(&seg, || sysproc::parent_pid() == parent_pid);
    let entry_id = entry_id.to_string_lossy().into_owned();
    log::debug!(target: LOG_TARGET, "process {name} (pid {}) runs entry {entry_id}", std::process::id());
    let outcome = match entry::lookup(&entry_id) {
        None => Outcome::Startup(format!("unknown entry id {entry_id:?}: not registered in this executable")),
        Some(run) => {
            let mut len = [0u8; 8];
            seg.read(status::ARG_LEN, &mut len);
            let len = u64::from_le_bytes(len) as usize;
            let mut arg = vec![0u8; len.min(seg.len() - status::ARG)];
            seg.read(status::ARG, &mut arg);
            // Once every handle is open, the parent may drop its copies.
            run(&arg, &|| status::set_opened(&seg))
        }
    };
    report(&name, &seg, outcome)
}

fn fail_early(name: &str, msg: &str) -> i32 {
    eprintln!("shmproc: process {name}: {msg}");
    Outcome::EXIT_STARTUP
}

/// Records the outcome for the parent, prints failures on stderr (like
/// Python's traceback), and returns the exit code.
fn report(name: &str, seg: &RawSegment, outcome: Outcome) -> i32 {
    match &outcome {
        Outcome::Failed(m) => eprintln!("shmproc: process {name} failed: {m}"),
        Outcome::Startup(m) => eprintln!("shmproc: process {name} could not start: {m}"),
        // The panic hook already printed the panic.
        Outcome::Ok | Outcome::Panicked(_) => {}
    }
    log::debug!(target: LOG_TARGET, "process {name} exiting with code {}", outcome.exit_code());
    status::write_outcome(seg, &outcome);
    outcome.exit_code()
}

/// A daemon child terminates itself when its parent goes away.
fn watch_parent(parent_pid: u32) {
    if sysproc::parent_pid() != parent_pid {
        // The parent died before we got here.
        let _ = sysproc::signal(std::process::id(), sysproc::SIGTERM);
        return;
    }
    let Ok(fd) = sysproc::pidfd_open(parent_pid) else {
        return;
    };
    let _ = std::thread::Builder::new().name("shmproc-parent-watch".into()).spawn(move || {
        if sysproc::pidfd_wait(&fd, None) {
            let _ = sysproc::signal(std::process::id(), sysproc::SIGTERM);
        }
    });
}

// ---------------------------------------------------------------------------
// Parent side.

/// What `start` needs from the entry, type-erased.
trait Target: Send {
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

/// Shared state of a started process (also held by the exit handler).
struct Inner {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    pid: u32,
    parent_pid: u32,
    seg: RawSegment,
    pidfd: Option<OwnedFd>,
    ended: Mutex<Option<Ended>>,
    /// The parent's copy of the argument, kept until the child has opened
    /// every handle in it (it may hold the only handle that keeps an
    /// object's name alive, e.g. `Process::new(f, Value::new(0)?)`).
    held: Mutex<Option<Box<dyn Target>>>,
}

impl Inner {
    /// Reaps the child if it ended (or waits for it with `block`).
    fn poll(&self, block: bool) -> Option<Ended> {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        let before = ended.is_some();
        if ended.is_none() {
            *ended = match sysproc::wait_pid(self.pid, block) {
                Ok(e) => e,
                // ECHILD: the status was collected elsewhere. With a pidfd
                // we can still tell whether the child runs; without one, a
                // pid we cannot wait for is taken as ended.
                Err(_) if self.pidfd.as_ref().is_some_and(|fd| !sysproc::pidfd_wait(fd, Some(std::time::Instant::now()))) => None,
                Err(_) => Some(Ended::Lost),
            };
            if ended.is_some() {
                // Normally the child removed the name already; not if it
                // died before opening its status segment.
                let _ = crate::unlink(self.seg.name());
            }
        }
        let end = *ended;
        drop(ended);
        // Logged and released outside the lock: a logger or a handle's
        // Drop must never run under it.
        if !before && let Some(end) = end {
            match self.exitcode(end) {
                c if c >= 0 => {
                    log::info!(target: LOG_TARGET, "process {} (pid {}) exited with code {c}", self.name, self.pid)
                }
                EXITCODE_UNKNOWN => log::info!(
                    target: LOG_TARGET,
                    "process {} (pid {}) ended; its exit status was collected elsewhere",
                    self.name,
                    self.pid
                ),
                c => {
                    log::info!(target: LOG_TARGET, "process {} (pid {}) was killed by signal {}", self.name, self.pid, -c)
                }
            }
        }
        self.release_arg(end.is_some());
        end
    }

    /// Drops the parent's copy of the argument once the child has opened
    /// it (or ended).
    fn release_arg(&self, ended: bool) {
        if !ended && !status::opened(&self.seg) {
            return;
        }
        let arg = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        if arg.is_some() {
            log::debug!(target: LOG_TARGET, "process {}: argument opened by the child, parent copy released", self.name);
        }
        drop(arg);
    }

    /// The exit code as `Process::exitcode` reports it.
    fn exitcode(&self, end: Ended) -> i32 {
        match end {
            Ended::Code(c) => c,
            Ended::Signal(s) => -s,
            Ended::Lost => status::read_outcome(&self.seg).map_or(EXITCODE_UNKNOWN, |o| o.exit_code()),
        }
    }

    fn result(&self, end: Ended) -> Result<(), ProcessError> {
        let name = self.name.clone();
        match (end, status::read_outcome(&self.seg)) {
            (Ended::Signal(signal), _) => Err(ProcessError::Signaled { name, signal }),
            (Ended::Code(0), _) | (Ended::Lost, Some(Outcome::Ok)) => Ok(()),
            (_, Some(Outcome::Failed(message))) => Err(ProcessError::Failed { name, message }),
            (_, Some(Outcome::Panicked(message))) => Err(ProcessError::Panicked { name, message }),
            (_, Some(Outcome::Startup(message))) => Err(ProcessError::StartupFailed { name, message }),
            (Ended::Code(code), _) => Err(ProcessError::Exited { name, code }),
            (Ended::Lost, _) => Err(ProcessError::StatusUnavailable { name }),
        }
    }

    /// Sends `sig` through the pidfd (no pid-reuse race). A child we
    /// already reaped is not signalled (Python: a no-op).
    fn signal(&self, sig: i32) -> Result<(), ProcessError> {
        log::info!(target: LOG_TARGET, "sending signal {sig} to process {} (pid {})", self.name, self.pid);
        let ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        if ended.is_some() {
            return Ok(());
        }
        let r = match &self.pidfd {
            Some(fd) => {
                // The pidfd names this very process whatever happens to the
                // pid: no need to block reaping (a join) meanwhile.
                drop(ended);
                match sysproc::pidfd_signal(fd, sig) {
                    // Reaped by us in between: as if it had ended before.
                    Err(e)
                        if e.raw_os_error() == Some(sysproc::ESRCH)
                            && matches!(
                                *self.ended.lock().unwrap_or_else(|p| p.into_inner()),
                                Some(Ended::Code(_) | Ended::Signal(_))
                            ) =>
                    {
                        Ok(())
                    }
                    r => r,
                }
            }
            // Without a pidfd (Linux < 5.3), the lock stays held while
            // signalling: we cannot reap the child meanwhile, so its pid
            // still names it.
            None => sysproc::signal(self.pid, sig),
        };
        r.map_err(|source| ProcessError::Signal { name: self.name.clone(), signal: sig, source })
    }
}

/// Children started by this process and not yet closed.
static CHILDREN: Mutex<Vec<Arc<Inner>>> = Mutex::new(Vec::new());
/// Python counts children at creation: Process-1, Process-2, ...
static NEXT_CHILD: AtomicU64 = AtomicU64::new(1);

fn children() -> std::sync::MutexGuard<'static, Vec<Arc<Inner>>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's children (a snapshot: nothing is polled under the lock).
fn my_children() -> Vec<Arc<Inner>> {
    let me = std::process::id();
    children().iter().filter(|c| c.parent_pid == me).cloned().collect()
}

/// Reaps finished children, and forgets those whose `Process` handle is
/// gone too.
fn reap_finished() {
    let done: Vec<Arc<Inner>> = my_children().into_iter().filter(|c| c.poll(false).is_some()).collect();
    if !done.is_empty() {
        // Held only by the list and `done`: no handle left.
        children().retain(|c| !done.iter().any(|d| Arc::ptr_eq(c, d) && Arc::strong_count(c) <= 2));
    }
}

extern "C" fn at_exit() {
    exit_children();
}

/// What Python's exit handler does: terminate daemon children, then join
/// every child (and drop the arguments kept for them).
fn exit_children() {
    let list = my_children();
    for c in list.iter().filter(|c| c.daemon) {
        if c.poll(false).is_none() {
            log::debug!(target: LOG_TARGET, "terminating daemon process {} at exit", c.name);
            let _ = c.signal(sysproc::SIGTERM);
        }
    }
    for c in &list {
        if c.poll(false).is_none() {
            log::debug!(target: LOG_TARGET, "joining process {} at exit", c.name);
        }
        c.poll(true);
    }
}

/// The live (not yet finished) children of the calling process, reaping
/// the finished ones, like Python's `active_children()`: handles that can
/// be joined, terminated and killed, with the children's names and pids.
///
/// ```
/// assert!(shmproc::active_children().is_empty());
/// ```
pub fn active_children() -> Vec<Process> {
    reap_finished();
    my_children().into_iter().filter(|c| c.poll(false).is_none()).map(Process::from_inner).collect()
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
    method: Option<StartMethod>,
    /// Only touched through `&mut self`; the Mutex (never contended:
    /// `get_mut`) just makes `Process` Sync so threads can share `&Process`.
    target: Mutex<Option<Box<dyn Target>>>,
    inner: Option<Arc<Inner>>,
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
            .field("daemon", &self.daemon)
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
        let n = NEXT_CHILD.fetch_add(1, Ordering::Relaxed) as u32;
        let mut identity = with_me(|m| m.info.identity.clone());
        identity.push(n);
        let name = format!("Process-{}", identity.iter().map(u32::to_string).collect::<Vec<_>>().join(":"));
        Process {
            name,
            identity,
            daemon: false,
            method: None,
            target: Mutex::new(Some(Box::new(Typed::<E> { arg }))),
            inner: None,
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

    /// Sets the name (before or after start; it is what the child sees as
    /// `current_process().name` if set before start).
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// let p = shmproc::Process::new(nothing, ()).with_name("Test");
    /// assert_eq!(p.name(), "Test");
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Process {
        self.name = name.into();
        self
    }

    /// Marks the process as a daemon: terminated when the parent exits
    /// normally, and self-terminating if the parent dies.
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// assert!(shmproc::Process::new(nothing, ()).with_daemon(true).daemon());
    /// ```
    pub fn with_daemon(mut self, daemon: bool) -> Process {
        self.daemon = daemon;
        self
    }

    /// Chooses the start method for this process (default:
    /// [`get_start_method`]).
    ///
    /// ```
    /// use shmproc::process::StartMethod;
    /// shmproc::entry! { fn nothing() {} }
    /// let p = shmproc::Process::new(nothing, ()).with_start_method(StartMethod::Fork);
    /// # let _ = p;
    /// ```
    pub fn with_start_method(mut self, method: StartMethod) -> Process {
        self.method = Some(method);
        self
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

    /// Whether it is a daemon.
    ///
    /// ```
    /// shmproc::entry! { fn nothing() {} }
    /// assert!(!shmproc::Process::new(nothing, ()).daemon());
    /// ```
    pub fn daemon(&self) -> bool {
        self.daemon
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
            name: inner.name.clone(),
            identity: inner.identity.clone(),
            daemon: inner.daemon,
            method: None,
            target: Mutex::new(None),
            inner: Some(inner),
        }
    }

    /// Starts the child. Fails if already started, if the entry is not
    /// registered (Spawn), or if the OS refuses.
    ///
    /// The parent keeps its copy of the argument until the child has
    /// opened every handle in it, so an object created just for the child
    /// (`Process::new(f, Value::new(0)?)`) is still there when the child
    /// opens it, even if the parent drops everything or returns from `main`
    /// at once (the exit handler joins non-daemon children first). Pipe
    /// ends in the argument become the child's from here on.
    pub fn start(&mut self) -> Result<(), ProcessError> {
        let slot = self.target.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(target) = slot.take() else {
            return Err(ProcessError::AlreadyStarted(self.name.clone()));
        };
        reap_finished();
        let method = self.method.unwrap_or_else(get_start_method);
        let start_err = |name: &str, e: std::io::Error| ProcessError::Start { name: name.to_owned(), source: e };
        if method == StartMethod::Spawn {
            // Keep the dispatcher linked into every binary that starts processes.
            std::hint::black_box(&CHILD_DISPATCH);
            if !entry::is_registered(target.id()) {
                let id = target.id();
                *self.target.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(target);
                return Err(ProcessError::NotRegistered(id));
            }
        }
        // Fork needs no bytes, but encoding tells which roles travel.
        let mut arg = Vec::new();
        let transfers = handoff::collect_transfers(|| target.encode(&mut arg));
        if method == StartMethod::Fork {
            arg.clear();
        }
        let seg = RawSegment::new((status::ARG + arg.len()) as u64)
            .map_err(|e| start_err(&self.name, std::io::Error::other(e)))?;
        seg.write(status::ARG_LEN, &(arg.len() as u64).to_le_bytes());
        seg.write(status::ARG, &arg);
        let me = current_process();
        let (pid, target) = match method {
            StartMethod::Spawn => (self.spawn(target.id(), &seg, &me).map_err(|e| start_err(&self.name, e))?, target),
            StartMethod::Fork => {
                let r = self.fork(target, &seg, &me).map_err(|e| start_err(&self.name, e))?;
                // The child inherited the mapping; the name is not needed.
                let _ = crate::unlink(seg.name());
                r
            }
        };
        // The child is ours and not reaped: its pid names it. Its roles
        // first, then it may go on (it waits for HANDED).
        if !transfers.is_empty()
            && let Some(owner) = crate::sys::thread::packed_identity_of(pid)
        {
            for t in &transfers {
                t.designate(owner);
            }
        }
        status::set_handed(&seg);
        log::info!(target: LOG_TARGET, "process {} started (pid {pid}, {method})", self.name);
        let inner = Arc::new(Inner {
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            pid,
            parent_pid: me.pid,
            seg,
            pidfd: sysproc::pidfd_open(pid).ok(),
            ended: Mutex::new(None),
            held: Mutex::new(Some(target)),
        });
        static AT_EXIT: OnceLock<()> = OnceLock::new();
        AT_EXIT.get_or_init(|| sysproc::at_exit(at_exit));
        children().push(Arc::clone(&inner));
        self.inner = Some(inner);
        Ok(())
    }

    fn spawn(&self, id: &str, seg: &RawSegment, me: &ProcessInfo) -> std::io::Result<u32> {
        let identity = self.identity.iter().map(u32::to_string).collect::<Vec<_>>().join(":");
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.arg("--shmproc-child")
            .env(ENV_ENTRY, id)
            .env(ENV_SEGMENT, seg.name())
            .env(ENV_NAME, &self.name)
            .env(ENV_IDENTITY, identity)
            .env(ENV_PARENT, format!("{}:{}", me.pid, me.name))
            .env(ENV_DAEMON, if self.daemon { "1" } else { "0" })
            .stdin(std::process::Stdio::null());
        if let Some(level) = logging::child_level() {
            cmd.env(ENV_LOG, level.as_str());
        }
        let child = cmd.spawn()?;
        // We reap it ourselves with waitpid; std's handle is not needed
        // (dropping it neither waits nor kills).
        Ok(child.id())
    }

    /// Forks; in the parent returns the child's pid and the target back
    /// (kept until the child has started), in the child runs the entry.
    ///
    /// Locks and fork: between `fork()` and the entry, the child must not
    /// take a lock that another parent thread held at the fork (it would
    /// never be released). The locks this path (and this crate in the
    /// child) uses are stdout's and stderr's (flush, failure report,
    /// logging), `ME` (identity), `CHILDREN` and the entry registry
    /// (starting grandchildren): the parent holds all of them across
    /// `fork()`, in one order (the std streams first, as user code may
    /// hold them while calling into shmproc, and nothing here prints while
    /// holding the others), so no other thread holds them at that instant;
    /// the child inherits them held by its only thread and releases them
    /// (the `pthread_atfork` prepare/child pattern). Everything the child
    /// needs is prepared before the fork; what it allocates afterwards
    /// goes through the system allocator, which glibc makes fork-safe.
    fn fork(
        &self,
        target: Box<dyn Target>,
        seg: &RawSegment,
        me: &ProcessInfo,
    ) -> std::io::Result<(u32, Box<dyn Target>)> {
        use std::io::Write;
        let child_me = Me {
            info: ProcessInfo { name: self.name.clone(), pid: 0, daemon: self.daemon, identity: self.identity.clone() },
            parent: Some((me.name.clone(), me.pid)),
        };
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        let _ = out.flush();
        let _ = err.flush();
        let mut me_slot = me_lock();
        let children_guard = children();
        let registry_guard = entry::registry_lock();
        // SAFETY: the child below only uses what it inherited in a consistent
        // state (the locks above are held by this thread), runs the entry
        // and leaves with _exit; the caveats for user code in
        // multi-threaded parents are documented on StartMethod::Fork.
        let pid = unsafe { sysproc::fork()? };
        if pid != 0 {
            return Ok((pid, target));
        }
        set_me(&mut me_slot, child_me);
        drop((registry_guard, children_guard, me_slot, err, out));
        if self.daemon {
            watch_parent(me.pid);
        }
        status::wait_handed(seg, || sysproc::parent_pid() == me.pid);
        status::set_opened(seg); // the child has the objects: inherited
        let outcome = target.run_here();
        let code = report(&self.name, seg, outcome);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // Python's forked child runs the exit handler too: join our own
        // children before leaving with _exit.
        exit_children();
        sysproc::exit_now(code)
    }

    fn inner(&self) -> Result<&Arc<Inner>, ProcessError> {
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
    /// child runs; afterwards the handle reports `NotStarted`.
    pub fn close(&mut self) -> Result<(), ProcessError> {
        if let Some(inner) = &self.inner {
            if inner.poll(false).is_none() {
                return Err(ProcessError::StillRunning(self.name.clone()));
            }
            children().retain(|c| !Arc::ptr_eq(c, inner));
        }
        self.inner = None;
        *self.target.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}
