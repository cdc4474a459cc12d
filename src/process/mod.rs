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
//! - [`StartMethod::Fork`] calls `fork()`: the fastest start. Caveats, as in
//!   Python: in a multi-threaded parent only the calling thread survives in
//!   the child, and any lock another thread held at that instant (stdout's,
//!   a `std::sync::Mutex`, an allocator arena outside glibc's fork
//!   handling) stays locked forever in the child. Use it from
//!   single-threaded parents or where the child touches only its argument.
//!
//! ## Lifecycle
//!
//! Finished children are reaped by `join`, `is_alive`, `exitcode`,
//! [`active_children`] and every `start`. At normal exit of the parent
//! (`main` returns or `std::process::exit`), daemon children get SIGTERM and
//! every child is joined, as in Python. A daemon child also watches its
//! parent (a pidfd) and terminates itself if the parent dies abruptly;
//! a non-daemon child keeps running (as in Python), and the shared objects
//! it uses report the peer's death where they can (`OwnerDied`).

mod entry;
pub(crate) mod handoff;

pub use entry::{__register, Entry, ExitValue, Run};
pub use handoff::{Handoff, HandoffError, PodArg};

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
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

fn with_me<R>(f: impl FnOnce(&Me) -> R) -> R {
    let mut me = ME.lock().unwrap_or_else(|p| p.into_inner());
    let me = me.get_or_insert_with(|| Me {
        info: ProcessInfo { name: "MainProcess".into(), pid: std::process::id(), daemon: false, identity: Vec::new() },
        parent: None,
    });
    f(me)
}

fn set_me(info: ProcessInfo, parent: Option<(String, u32)>) {
    *ME.lock().unwrap_or_else(|p| p.into_inner()) = Some(Me { info, parent });
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
// The status segment shared by parent and child.

/// Layout of the per-process status segment: a state word, the outcome
/// message, then the encoded argument.
mod status {
    pub(super) const STATE: usize = 0;
    pub(super) const MSG_LEN: usize = 4;
    pub(super) const ARG_LEN: usize = 8;
    pub(super) const MSG: usize = 64;
    pub(super) const MSG_CAP: usize = 4096;
    pub(super) const ARG: usize = MSG + MSG_CAP;

    pub(super) const STARTED: u32 = 1;
    pub(super) const OK: u32 = 2;
    pub(super) const FAILED: u32 = 3;
    pub(super) const PANICKED: u32 = 4;
    pub(super) const STARTUP: u32 = 5;
}

fn state_word(seg: &RawSegment) -> &AtomicU32 {
    // SAFETY: the segment is >= status::ARG bytes (checked where it is created and opened) and 64-aligned;
    // the word is only accessed atomically.
    unsafe { &*(seg.as_ptr().add(status::STATE) as *const AtomicU32) }
}

fn write_outcome(seg: &RawSegment, outcome: &Outcome) {
    let (state, msg) = match outcome {
        Outcome::Ok => (status::OK, ""),
        Outcome::Failed(m) => (status::FAILED, m.as_str()),
        Outcome::Panicked(m) => (status::PANICKED, m.as_str()),
        Outcome::Startup(m) => (status::STARTUP, m.as_str()),
    };
    let mut cut = msg.len().min(status::MSG_CAP);
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    seg.write(status::MSG, &msg.as_bytes()[..cut]);
    seg.write(status::MSG_LEN, &(cut as u32).to_le_bytes());
    // Release: pairs with the Acquire load in `read_outcome`, publishing
    // the message bytes written above.
    state_word(seg).store(state, Ordering::Release);
}

fn read_outcome(seg: &RawSegment) -> Option<Outcome> {
    // Acquire: pairs with the Release store in `write_outcome`.
    let state = state_word(seg).load(Ordering::Acquire);
    let mut len = [0u8; 4];
    seg.read(status::MSG_LEN, &mut len);
    // Untrusted: the child could have written anything.
    let len = (u32::from_le_bytes(len) as usize).min(status::MSG_CAP);
    let mut msg = vec![0u8; len];
    seg.read(status::MSG, &mut msg);
    let msg = String::from_utf8_lossy(&msg).into_owned();
    match state {
        status::OK => Some(Outcome::Ok),
        status::FAILED => Some(Outcome::Failed(msg)),
        status::PANICKED => Some(Outcome::Panicked(msg)),
        status::STARTUP => Some(Outcome::Startup(msg)),
        _ => None,
    }
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
    for k in [ENV_ENTRY, ENV_SEGMENT, ENV_NAME, ENV_IDENTITY, ENV_PARENT, ENV_DAEMON] {
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
        ProcessInfo { name: name.clone(), pid: std::process::id(), daemon, identity },
        Some((parent_name.to_owned(), parent_pid)),
    );
    if daemon {
        watch_parent(parent_pid);
    }
    let seg_name = seg_name.to_string_lossy();
    let seg = RawSegment::open(&seg_name);
    // The mapping is all we need: remove the name at once, so nothing is
    // left in /dev/shm whatever happens to either process later.
    let _ = crate::unlink(&seg_name);
    let seg = match seg {
        Ok(s) if s.len() >= status::ARG => s,
        Ok(_) => return fail_early(&name, "status segment too small"),
        Err(e) => return fail_early(&name, &format!("cannot open status segment: {e}")),
    };
    state_word(&seg).store(status::STARTED, Ordering::Relaxed);
    let entry_id = entry_id.to_string_lossy().into_owned();
    let outcome = match entry::lookup(&entry_id) {
        None => Outcome::Startup(format!("unknown entry id {entry_id:?}: not registered in this executable")),
        Some(run) => {
            let mut len = [0u8; 8];
            seg.read(status::ARG_LEN, &mut len);
            let len = u64::from_le_bytes(len) as usize;
            let mut arg = vec![0u8; len.min(seg.len() - status::ARG)];
            seg.read(status::ARG, &mut arg);
            run(&arg)
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
    write_outcome(seg, &outcome);
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
    daemon: bool,
    pid: u32,
    parent_pid: u32,
    seg: RawSegment,
    pidfd: Option<OwnedFd>,
    ended: Mutex<Option<Ended>>,
}

impl Inner {
    /// Reaps the child if it ended (or waits for it with `block`).
    fn poll(&self, block: bool) -> Option<Ended> {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        if ended.is_none() {
            match sysproc::wait_pid(self.pid, block) {
                Ok(e) => *ended = e,
                // ECHILD: reaped elsewhere (or not our child): treat as gone.
                Err(_) => *ended = Some(Ended::Code(-1)),
            }
            if ended.is_some() {
                // Normally the child removed the name already; not if it
                // died before opening its status segment.
                let _ = crate::unlink(self.seg.name());
            }
        }
        *ended
    }

    fn result(&self, end: Ended) -> Result<(), ProcessError> {
        let name = self.name.clone();
        match (end, read_outcome(&self.seg)) {
            (Ended::Signal(signal), _) => Err(ProcessError::Signaled { name, signal }),
            (Ended::Code(0), _) => Ok(()),
            (_, Some(Outcome::Failed(message))) => Err(ProcessError::Failed { name, message }),
            (_, Some(Outcome::Panicked(message))) => Err(ProcessError::Panicked { name, message }),
            (_, Some(Outcome::Startup(message))) => Err(ProcessError::StartupFailed { name, message }),
            (Ended::Code(code), _) => Err(ProcessError::Exited { name, code }),
        }
    }
}

/// Children started by this process and not yet closed.
static CHILDREN: Mutex<Vec<Arc<Inner>>> = Mutex::new(Vec::new());
/// Python counts children at creation: Process-1, Process-2, ...
static NEXT_CHILD: AtomicU64 = AtomicU64::new(1);

fn children() -> std::sync::MutexGuard<'static, Vec<Arc<Inner>>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reaps finished children, and forgets those whose `Process` handle is
/// gone too.
fn reap_finished() {
    let me = std::process::id();
    children().retain(|c| c.parent_pid != me || c.poll(false).is_none() || Arc::strong_count(c) > 1);
}

extern "C" fn at_exit() {
    let me = std::process::id();
    let list: Vec<Arc<Inner>> = children().iter().filter(|c| c.parent_pid == me).cloned().collect();
    for c in list.iter().filter(|c| c.daemon) {
        if c.poll(false).is_none() {
            let _ = sysproc::signal(c.pid, sysproc::SIGTERM);
        }
    }
    for c in &list {
        c.poll(true);
    }
}

/// The live (not yet finished) children of the calling process, reaping
/// the finished ones, like Python's `active_children()`.
///
/// ```
/// assert!(shmproc::active_children().is_empty());
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let me = std::process::id();
    children()
        .iter()
        .filter(|c| c.parent_pid == me && c.poll(false).is_none())
        .map(|c| ProcessInfo { name: c.name.clone(), pid: c.pid, daemon: c.daemon, identity: Vec::new() })
        .collect()
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

    /// Starts the child. Fails if already started, if the entry is not
    /// registered (Spawn), or if the OS refuses.
    pub fn start(&mut self) -> Result<(), ProcessError> {
        let slot = self.target.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(target) = slot.take() else {
            return Err(ProcessError::AlreadyStarted(self.name.clone()));
        };
        reap_finished();
        let method = self.method.unwrap_or_else(get_start_method);
        let start_err = |name: &str, e: std::io::Error| ProcessError::Start { name: name.to_owned(), source: e };
        let mut arg = Vec::new();
        if method == StartMethod::Spawn {
            // Keep the dispatcher linked into every binary that starts processes.
            std::hint::black_box(&CHILD_DISPATCH);
            if !entry::is_registered(target.id()) {
                let id = target.id();
                *self.target.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(target);
                return Err(ProcessError::NotRegistered(id));
            }
            target.encode(&mut arg);
        }
        let seg = RawSegment::new((status::ARG + arg.len()) as u64)
            .map_err(|e| start_err(&self.name, std::io::Error::other(e)))?;
        seg.write(status::ARG_LEN, &(arg.len() as u64).to_le_bytes());
        seg.write(status::ARG, &arg);
        let me = current_process();
        let pid = match method {
            StartMethod::Spawn => self.spawn(target.id(), &seg, &me).map_err(|e| start_err(&self.name, e))?,
            StartMethod::Fork => {
                let pid = self.fork(target, &seg, &me).map_err(|e| start_err(&self.name, e))?;
                // The child inherited the mapping; the name is not needed.
                let _ = crate::unlink(seg.name());
                pid
            }
        };
        let inner = Arc::new(Inner {
            name: self.name.clone(),
            daemon: self.daemon,
            pid,
            parent_pid: me.pid,
            seg,
            pidfd: sysproc::pidfd_open(pid).ok(),
            ended: Mutex::new(None),
        });
        static AT_EXIT: OnceLock<()> = OnceLock::new();
        AT_EXIT.get_or_init(|| sysproc::at_exit(at_exit));
        children().push(Arc::clone(&inner));
        self.inner = Some(inner);
        Ok(())
    }

    fn spawn(&self, id: &str, seg: &RawSegment, me: &ProcessInfo) -> std::io::Result<u32> {
        let identity = self.identity.iter().map(u32::to_string).collect::<Vec<_>>().join(":");
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("--shmproc-child")
            .env(ENV_ENTRY, id)
            .env(ENV_SEGMENT, seg.name())
            .env(ENV_NAME, &self.name)
            .env(ENV_IDENTITY, identity)
            .env(ENV_PARENT, format!("{}:{}", me.pid, me.name))
            .env(ENV_DAEMON, if self.daemon { "1" } else { "0" })
            .stdin(std::process::Stdio::null())
            .spawn()?;
        // We reap it ourselves with waitpid; std's handle is not needed
        // (dropping it neither waits nor kills).
        Ok(child.id())
    }

    fn fork(&self, target: Box<dyn Target>, seg: &RawSegment, me: &ProcessInfo) -> std::io::Result<u32> {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // SAFETY: the child below runs only the entry and leaves with _exit; the caveats of fork in
        // multi-threaded parents are documented on StartMethod::Fork.
        let pid = unsafe { sysproc::fork()? };
        if pid != 0 {
            return Ok(pid);
        }
        set_me(
            ProcessInfo {
                name: self.name.clone(),
                pid: std::process::id(),
                daemon: self.daemon,
                identity: self.identity.clone(),
            },
            Some((me.name.clone(), me.pid)),
        );
        if self.daemon {
            watch_parent(me.pid);
        }
        state_word(seg).store(status::STARTED, Ordering::Relaxed);
        let outcome = target.run_here();
        let code = report(&self.name, seg, outcome);
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
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
    pub fn exitcode(&self) -> Option<i32> {
        self.inner.as_ref()?.poll(false).map(|e| match e {
            Ended::Code(c) => c,
            Ended::Signal(s) => -s,
        })
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.signal(sysproc::SIGTERM)
    }

    /// Sends SIGKILL.
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.signal(sysproc::SIGKILL)
    }

    fn signal(&self, sig: i32) -> Result<(), ProcessError> {
        let inner = self.inner()?;
        if inner.poll(false).is_some() {
            return Ok(()); // already ended: nothing to signal (Python: no-op)
        }
        sysproc::signal(inner.pid, sig).map_err(|e| ProcessError::Start { name: self.name.clone(), source: e })
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
