//! The children table: the shared state of every started child, reaping,
//! `active_children()`, and the exit handler that joins children at exit.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};

use super::entry::Outcome;
use super::{EXITCODE_UNKNOWN, LOG_TARGET, Process, ProcessError, Target, status};
use crate::RawSegment;
use crate::sys::proc::{self as sysproc, Ended};

/// Shared state of a started process (also held by the exit handler).
pub(super) struct Inner {
    /// The parent's name for the child (`Process::set_name` may change it
    /// after start); read it with `name()`.
    pub(super) name: Mutex<String>,
    pub(super) identity: Vec<u32>,
    pub(super) daemon: bool,
    /// A daemon that gets SIGKILL, not SIGTERM, at the parent's exit.
    pub(super) kill_at_exit: bool,
    pub(super) method: super::StartMethod,
    pub(super) pid: u32,
    pub(super) parent_pid: u32,
    pub(super) seg: RawSegment,
    pub(super) pidfd: Option<OwnedFd>,
    pub(super) ended: Mutex<Option<Ended>>,
    /// Set (Release) once `ended` holds the end: `wait` reads it with no
    /// lock (a lock held by another thread polling this child must not
    /// read as "still running").
    pub(super) ended_flag: std::sync::atomic::AtomicBool,
    /// The parent's copy of the argument, kept until the child has opened
    /// every handle in it (it may hold the only handle that keeps an
    /// object's name alive, e.g. `Process::new(f, Value::new(0)?)`).
    pub(super) held: Mutex<Option<Box<dyn Target>>>,
}

impl Inner {
    pub(super) fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set_name(&self, name: &str) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = name.to_owned();
    }

    /// Reaps the child if it ended (or waits for it with `block`).
    pub(super) fn poll(&self, block: bool) -> Option<Ended> {
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
                // Release: pairs with the Acquire load in `wait`'s
                // readiness check (process/waitable.rs).
                self.ended_flag.store(true, std::sync::atomic::Ordering::Release);
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
                    log::info!(target: LOG_TARGET, "process {} (pid {}) exited with code {c}", self.name(), self.pid)
                }
                EXITCODE_UNKNOWN => log::info!(
                    target: LOG_TARGET,
                    "process {} (pid {}) ended; its exit status was collected elsewhere",
                    self.name(),
                    self.pid
                ),
                c => {
                    log::info!(target: LOG_TARGET, "process {} (pid {}) was killed by signal {}", self.name(), self.pid, -c)
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
            log::debug!(target: LOG_TARGET, "process {}: argument opened by the child, parent copy released", self.name());
        }
        drop(arg);
    }

    /// The exit code as `Process::exitcode` reports it.
    pub(super) fn exitcode(&self, end: Ended) -> i32 {
        match end {
            Ended::Code(c) => c,
            Ended::Signal(s) => -s,
            Ended::Lost => status::read_outcome(&self.seg).map_or(EXITCODE_UNKNOWN, |o| o.exit_code()),
        }
    }

    pub(super) fn result(&self, end: Ended) -> Result<(), ProcessError> {
        let name = self.name();
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
    pub(super) fn signal(&self, sig: i32) -> Result<(), ProcessError> {
        log::info!(target: LOG_TARGET, "sending signal {sig} to process {} (pid {})", self.name(), self.pid);
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
        r.map_err(|source| ProcessError::Signal { name: self.name(), signal: sig, source })
    }
}

/// Children started by this process and not yet closed.
static CHILDREN: Mutex<Vec<Arc<Inner>>> = Mutex::new(Vec::new());


pub(super) fn children() -> std::sync::MutexGuard<'static, Vec<Arc<Inner>>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's children (a snapshot: nothing is polled under the lock).
fn my_children() -> Vec<Arc<Inner>> {
    let me = std::process::id();
    children().iter().filter(|c| c.parent_pid == me).cloned().collect()
}

/// Reaps finished children, and forgets those whose `Process` handle is
/// gone too.
pub(super) fn reap_finished() {
    let done: Vec<Arc<Inner>> = my_children().into_iter().filter(|c| c.poll(false).is_some()).collect();
    if !done.is_empty() {
        // Held only by the list and `done`: no handle left.
        children().retain(|c| !done.iter().any(|d| Arc::ptr_eq(c, d) && Arc::strong_count(c) <= 2));
    }
}

/// Adds a started child to the table, installing the exit handler with the
/// first one.
pub(super) fn register(child: Arc<Inner>) {
    static AT_EXIT: OnceLock<()> = OnceLock::new();
    AT_EXIT.get_or_init(|| sysproc::at_exit(at_exit));
    children().push(child);
}

extern "C" fn at_exit() {
    exit_children();
}

/// What Python's exit handler does: terminate daemon children, then join
/// every child (and drop the arguments kept for them). Pool workers are
/// killed (SIGKILL), as the pool's drop kills them: a task ignoring SIGTERM
/// would otherwise keep this exit waiting for it forever.
///
/// A poll drops the argument kept for a child, which runs user code (its
/// `Drop`): a panic there ends only that child's step (the panic hook has
/// reported it), as Python prints and skips an exception in an exit
/// handler. Unwinding out of here would abort the exit (the handler is a
/// C callback: "panic in a function that cannot unwind"), leaving the
/// other children unjoined, or, in a forked child, unwind into the
/// parent's frames the child inherited.
pub(super) fn exit_children() {
    let guarded = |f: &mut dyn FnMut()| {
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            super::drop_payload(payload);
        }
    };
    let list = my_children();
    for c in list.iter().filter(|c| c.daemon) {
        guarded(&mut || {
            if c.poll(false).is_none() {
                log::debug!(target: LOG_TARGET, "terminating daemon process {} at exit", c.name());
                let _ = c.signal(if c.kill_at_exit { sysproc::SIGKILL } else { sysproc::SIGTERM });
            }
        });
    }
    for c in &list {
        guarded(&mut || {
            if c.poll(false).is_none() {
                log::debug!(target: LOG_TARGET, "joining process {} at exit", c.name());
            }
            c.poll(true);
        });
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
