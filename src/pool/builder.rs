//! [`PoolBuilder`]: the pool's settings, and starting it.

use std::any::Any;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ctl::{self, Ctl};
use super::{Config, Inbox, Pool, PoolError, Shared, State, Task, manager, task, worker};
use crate::RawSegment;
use crate::process::{Handoff, StartMethod};

/// Builds a [`Pool`]: Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild)` plus a start method and a default per-item timeout.
///
/// ```no_run
/// use std::time::Duration;
/// shmproc::task! { fn setup(tag: String) -> () { println!("worker ready: {tag}") } }
/// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
///
/// let pool = shmproc::Pool::builder()
///     .processes(2)
///     .initializer(setup, "v1".to_string())
///     .maxtasksperchild(100)
///     .task_timeout(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// assert_eq!(pool.processes(), 2);
/// assert_eq!(pool.apply(square, 9).unwrap(), 81);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<(&'static str, Vec<u8>)>,
    init_arg: Option<KeepAlive>,
    max_tasks: u64,
    method: Option<StartMethod>,
    timeout: Option<Duration>,
}

/// The initializer's argument, kept (never read) while the pool lives: the
/// shared objects in it stay open under their names for every worker the
/// pool starts, replacements included, as [`Process`](crate::Process)
/// keeps its argument until the child has opened it. Without it,
/// `initializer(init, Lock::new()?)` (Python's `initargs=(Lock(),)`) would
/// remove the lock's name when the builder dropped its only handle, before
/// any worker opened it.
#[derive(Clone)]
pub(crate) struct KeepAlive {
    _arg: Arc<Mutex<Box<dyn Any + Send>>>,
}

impl std::fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeepAlive(..)")
    }
}

impl PoolBuilder {
    /// Number of workers (default: [`cpu_count()`](crate::cpu_count)); 0
    /// makes [`build`](Self::build) fail with [`PoolError::InvalidArgument`]
    /// (Python: "Number of processes must be at least 1").
    ///
    /// ```
    /// use shmproc::pool::PoolError;
    /// let r = shmproc::Pool::builder().processes(0).build();
    /// assert!(matches!(r, Err(PoolError::InvalidArgument(_))));
    /// ```
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A task each worker runs once, before its first task (Python's
    /// `initializer` / `initargs`). Its return value is ignored; if it
    /// fails or panics the worker exits and is replaced, and after several
    /// failures in a row the pool fails its jobs while no worker lives
    /// (instead of looping), trying new workers ever less often (every
    /// 6.4 s at most): a worker that lives goes on serving, and once the
    /// initializer works again the pool is whole.
    /// The pool keeps `arg` until it ends, so shared objects made just for
    /// the workers can be moved in (`initializer(init, Lock::new()?)`, as
    /// Python's `initargs=(Lock(),)`): every worker, replacements
    /// included, opens them.
    ///
    /// ```
    /// shmproc::task! { fn setup(_: ()) -> () {} }
    /// let b = shmproc::Pool::builder().initializer(setup, ());
    /// # drop(b);
    /// ```
    pub fn initializer<F: Task>(mut self, f: F, arg: F::Arg) -> Self
    where
        F::Arg: Send,
    {
        let _ = f;
        let mut bytes = Vec::new();
        arg.encode(&mut bytes);
        self.init = Some((F::ID, bytes));
        self.init_arg = Some(KeepAlive { _arg: Arc::new(Mutex::new(Box::new(arg))) });
        self
    }

    /// Each worker exits after `k` tasks (chunks) and is replaced (Python's
    /// `maxtasksperchild`; 0, the default, means never).
    ///
    /// ```
    /// let b = shmproc::Pool::builder().maxtasksperchild(10);
    /// # drop(b);
    /// ```
    pub fn maxtasksperchild(mut self, k: u64) -> Self {
        self.max_tasks = k;
        self
    }

    /// How workers are started (default: the process-wide
    /// [`get_start_method`](crate::process::get_start_method)).
    ///
    /// ```
    /// let b = shmproc::Pool::builder().start_method(shmproc::process::StartMethod::Fork);
    /// # drop(b);
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// A default running-time limit for every item (see
    /// [`AsyncResult::timeout`](super::AsyncResult::timeout), which overrides it per job).
    ///
    /// ```
    /// let b = shmproc::Pool::builder().task_timeout(std::time::Duration::from_secs(60));
    /// # drop(b);
    /// ```
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Starts the workers and the manager thread; [`PoolError::Setup`] if
    /// a worker cannot start, [`PoolError::NotRegistered`] for an
    /// unregistered initializer.
    ///
    /// ```no_run
    /// let pool = shmproc::Pool::builder().processes(2).build().unwrap();
    /// assert_eq!(pool.processes(), 2);
    /// ```
    pub fn build(self) -> Result<Pool, PoolError> {
        // Keep the worker's registration linked into every program with a pool.
        std::hint::black_box(&worker::REGISTER_WORKER);
        if let Some((id, _)) = &self.init
            && !task::is_registered(id)
        {
            return Err(PoolError::NotRegistered(id));
        }
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 {
            return Err(PoolError::InvalidArgument("the number of processes must be at least 1".into()));
        }
        let cfg = Config {
            init: self.init.map(|(id, arg)| (id.to_owned(), arg)),
            _init_arg: self.init_arg,
            max_tasks: self.max_tasks,
            method: self.method,
            timeout: self.timeout,
            #[cfg(feature = "test-hooks")]
            started: Arc::default(),
        };
        // (An absurd count overflowed here: a panic instead of an error.)
        let len = ctl::ctl_len(processes)
            .ok_or_else(|| PoolError::InvalidArgument(format!("{processes} processes: too many for a control segment")))?;
        let seg = RawSegment::new(len).map_err(|e| PoolError::Setup(e.to_string()))?;
        // Its workers map it: a task that sets its persist flag must not
        // make the pool leave it behind.
        seg.make_private();
        #[cfg(feature = "test-hooks")]
        cfg.started.lock().unwrap_or_else(|p| p.into_inner()).1.push(seg.name().to_owned());
        #[cfg(feature = "test-hooks")]
        let started = Arc::clone(&cfg.started);
        let ctl = Ctl::new(seg);
        let mut workers = Vec::with_capacity(processes);
        for slot in 0..processes {
            match manager::start_worker(&ctl, &cfg, slot) {
                Ok(w) => workers.push(w),
                Err(e) => {
                    manager::discard(workers);
                    return Err(e);
                }
            }
        }
        let shared = Arc::new(Shared {
            ctl,
            inbox: Mutex::new(Inbox { msgs: Vec::new(), state: State::Open, cut: Vec::new() }),
            next_job: AtomicU64::new(1),
            processes,
            spare: Arc::default(),
            core: Mutex::new(None),
            helpers: AtomicU32::new(0),
            max_helpers: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)) as u32,
            req: AtomicU32::new(0),
            req_waiting: AtomicU32::new(0),
            callbacks: Arc::default(),
            free: Mutex::new(Vec::with_capacity(super::FREE_MAX)),
        });
        // If the thread cannot start, the manager is dropped with `shared`
        // (its workers killed and reaped).
        *shared.lock_core() = Some(manager::Manager::new(&shared, cfg, workers));
        let for_thread = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("shmproc-pool".into())
            .spawn(move || manager::run(for_thread))
            .map_err(|e| PoolError::Setup(format!("cannot start the pool's manager thread: {e}")))?;
        Ok(Pool {
            shared,
            manager_id: handle.thread().id(),
            manager: Mutex::new(Some(handle)),
            #[cfg(feature = "test-hooks")]
            started,
        })
    }
}
