//! Start methods, and `Process::start` with its two paths: spawn (re-exec
//! the executable; the child runs its entry before `main`, see
//! `dispatch.rs`) and fork.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::children::{self, Inner, children, exit_children, reap_finished};
use super::dispatch::{self, CHILD_DISPATCH, report, watch_parent};
use super::identity::{Me, ProcessInfo, current_process, me_lock, set_me};
use super::{LOG_TARGET, Process, ProcessError, Target, entry, handoff, status};
use crate::RawSegment;
use crate::sys::proc as sysproc;

/// How a child process is started. See the [module docs](crate::process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// Re-execute the current program and run the entry before `main`.
    #[default]
    Spawn,
    /// `fork()` the current process.
    Fork,
}

static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

/// Why the OS made no child, and the target it would have run (handed
/// back to the `Process`).
type Refused = (std::io::Error, Box<dyn Target>);

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

impl Process {
    /// Starts the child. Fails if already started, if the entry is not
    /// registered (Spawn), in a daemon process
    /// ([`ProcessError::DaemonicParent`], as Python refuses it), or if the OS refuses ([`ProcessError::Start`]:
    /// no room in /dev/shm, no process made). A refused start loses
    /// nothing, as in Python: the argument stays in this `Process`, which
    /// may be started again, and pipe ends in it stay this process's. So
    /// does an argument whose `Handoff::encode` panics: the panic goes on
    /// to the caller, and a later `start` may succeed.
    ///
    /// The parent keeps its copy of the argument until the child has
    /// opened every handle in it, so an object created just for the child
    /// (`Process::new(f, Value::new(0)?)`) is still there when the child
    /// opens it, even if the parent drops everything or returns from `main`
    /// at once (the exit handler joins non-daemon children first). Pipe
    /// ends in the argument become the child's from here on.
    pub fn start(&mut self) -> Result<(), ProcessError> {
        if self.closed {
            return Err(ProcessError::Closed(self.name.clone()));
        }
        if current_process().daemon {
            // A daemon is ended with its parent (terminated at its exit, or
            // by its parent watch); a child of its own would run on alone.
            return Err(ProcessError::DaemonicParent(self.name.clone()));
        }
        let slot = self.target.get_mut().unwrap_or_else(|p| p.into_inner());
        let Some(target) = slot.take() else {
            return Err(ProcessError::AlreadyStarted(self.name.clone()));
        };
        reap_finished();
        let method = self.start_method();
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
        let mut holds = Vec::new();
        let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            handoff::collect_transfers(|| holds = handoff::collect_fork_holds(|| target.encode(&mut arg)))
        }));
        let transfers = match encoded {
            Ok(transfers) => transfers,
            Err(payload) => {
                // The argument's encode panicked: nothing was started, and
                // (as after Python's `start()` raised) `start` may be called
                // again, so the target goes back before the panic goes on.
                *self.target.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(target);
                std::panic::resume_unwind(payload);
            }
        };
        if method == StartMethod::Fork {
            arg.clear();
        } else {
            holds.clear(); // a spawned child opens its handles (and holds them) itself
        }
        let seg = match RawSegment::new((status::ARG + arg.len()) as u64) {
            Ok(seg) => seg,
            Err(e) => return Err(self.refused(target, transfers, start_err(&self.name, std::io::Error::other(e)))),
        };
        seg.write(status::ARG_LEN, &(arg.len() as u64).to_le_bytes());
        seg.write(status::ARG, &arg);
        let me = current_process();
        let (pid, target) = match method {
            StartMethod::Spawn => match self.spawn(target.id(), &seg, &me) {
                Ok(pid) => (pid, target),
                Err(e) => return Err(self.refused(target, transfers, start_err(&self.name, e))),
            },
            StartMethod::Fork => match self.fork(target, &seg, &me, holds) {
                Ok(r) => {
                    // The child inherited the mapping; the name is not needed.
                    let _ = crate::unlink(seg.name());
                    r
                }
                Err((e, target)) => return Err(self.refused(target, transfers, start_err(&self.name, e))),
            },
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
            name: Mutex::new(self.name.clone()),
            identity: self.identity.clone(),
            daemon: self.daemon,
            kill_at_exit: self.kill_at_exit,
            method,
            pid,
            parent_pid: me.pid,
            seg,
            pidfd: sysproc::pidfd_open(pid).ok(),
            ended: Mutex::new(None),
            ended_flag: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::new(Some(target)),
        });
        children::register(Arc::clone(&inner));
        self.inner = Some(inner);
        self.method = Some(method);
        Ok(())
    }

    /// A start the OS refused (no room for the status segment, no process
    /// made): loses nothing, as in Python, where `start()` may be called
    /// again after its `OSError`. The target goes back into this
    /// `Process` (a later `start` runs it; dropping the `Process` drops
    /// it), and pipe ends in it are no longer counted as handed to a child
    /// (their roles stay this process's: the peer learns it when the end
    /// is dropped unused). Returns `err`.
    #[cold]
    fn refused(&mut self, target: Box<dyn Target>, transfers: Vec<handoff::Transfer>, err: ProcessError) -> ProcessError {
        for t in transfers {
            t.undo();
        }
        *self.target.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(target);
        err
    }

    fn spawn(&self, id: &str, seg: &RawSegment, me: &ProcessInfo) -> std::io::Result<u32> {
        let child = dispatch::child_command(id, seg.name(), &self.name, &self.identity, self.daemon, me)?.spawn()?;
        // We reap it ourselves with waitpid; std's handle is not needed
        // (dropping it neither waits nor kills).
        Ok(child.id())
    }

    /// Forks; in the parent returns the child's pid and the target back
    /// (kept until the child has started), in the child runs the entry.
    /// If `fork()` fails, its error and the target (no child has it).
    ///
    /// Locks and fork: between `fork()` and the entry, the child must not
    /// take a lock that another parent thread held at the fork (it would
    /// never be released). The locks this path (and this crate in the
    /// child) uses are stdout's and stderr's (flush, failure report,
    /// logging), `ME` (identity), `CHILDREN`, the entry registry
    /// (starting grandchildren) and `wait`'s list of watched children
    /// (emptied in the child: the watcher threads stay in the parent): the
    /// parent holds all of them across
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
        holds: Vec<handoff::ForkHold>,
    ) -> Result<(u32, Box<dyn Target>), Refused> {
        use std::io::Write;
        let child_me = Me {
            info: ProcessInfo { name: self.name.clone(), pid: 0, daemon: self.daemon, identity: self.identity.clone() },
            parent: Some((me.name.clone(), me.pid)),
        };
        // Before taking any lock below: it takes std's hook lock.
        dispatch::name_panics();
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        let _ = out.flush();
        let _ = err.flush();
        let mut me_slot = me_lock();
        let children_guard = children();
        let registry_guard = entry::registry_lock();
        let mut watched_guard = super::waitable::watched();
        // The caveats for user code in multi-threaded parents are documented on StartMethod::Fork.
        // SAFETY: the child below only uses what it inherited in a consistent state (the locks above are held by
        // this thread), runs the entry and leaves with _exit.
        let pid = match unsafe { sysproc::fork() } {
            Ok(pid) => pid,
            // No child: the target goes back to the caller (`refused`).
            Err(e) => return Err((e, target)),
        };
        if pid != 0 {
            return Ok((pid, target));
        }
        set_me(&mut me_slot, child_me);
        watched_guard.clear(); // the watcher threads stayed in the parent
        drop((watched_guard, registry_guard, children_guard, me_slot, err, out));
        if self.daemon {
            watch_parent(me.pid);
        }
        status::wait_handed(seg, || sysproc::parent_pid() == me.pid);
        // Before `opened` (the parent may drop its copy then): the
        // inherited handles that need this process as a holder.
        let leave: Vec<Box<dyn FnOnce()>> = holds.into_iter().map(|hold| hold()).collect();
        status::set_opened(seg); // the child has the objects: inherited
        let outcome = target.run_here();
        let code = report(&self.name, seg, outcome);
        leave.into_iter().for_each(|step| step());
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        // Python's forked child runs the exit handler too: join our own
        // children before leaving with _exit.
        exit_children();
        sysproc::exit_now(code)
    }
}
