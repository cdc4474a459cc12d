//! A pool of worker processes, like Python's `multiprocessing.Pool`, that
//! survives its workers' deaths.
//!
//! ```no_run
//! use shmproc::Pool;
//!
//! shmproc::task! { fn doubler(n: i64) -> i64 { n * 2 } }
//!
//! let pool = Pool::new(3).unwrap();
//! assert_eq!(pool.map(doubler, [5, 10, 20]).unwrap(), [10, 20, 40]);
//! ```
//!
//! ## How it works
//!
//! - Task functions are registered with [`task!`](crate::task) and found by
//!   id in the workers; the pool refuses ids that are not registered
//!   ([`PoolError::NotRegistered`]), and so does a worker.
//! - Each worker has two [`ByteQueue`](crate::queue::ByteQueue)s of its
//!   own: task frames in (each a run of items of one chunk), result frames
//!   out. Arguments and results are [`Handoff`]-encoded straight into the
//!   frames; the rings copy them once each way.
//! - Plain data (`u64`, `f64`, arrays, [`shm_type!`](crate::shm_type)
//!   structs: types whose encoding is their memory image) takes a bulk
//!   path: the arguments are written once, as their memory images, into a
//!   shared-memory arena the pool keeps for the next map (so neither the
//!   pool nor its workers page-fault it in again; a synchronous `map`
//!   recycles a dozen frame-sized slots of it, which stay in the caches,
//!   waiting for a free one when the workers are behind); each task frame carries
//!   only a reference to its slice; the worker reads its arguments there
//!   and writes each value straight into a frame lent by its result ring;
//!   the manager copies a result frame's values from the ring straight into
//!   their place in the output `Vec` (no per-item encoding, decoding or
//!   allocation). When a worker dies, the items it did not finish are read
//!   back from the arena into ordinary frames for the others.
//! - A manager thread in the pool's process owns the workers: it hands
//!   frames to them (one per idle worker, a second one ahead for chunks of
//!   several items), files results into the jobs, and sleeps on one futex
//!   word that the workers and the pool's users bump. A busy worker makes
//!   no system call per item; an idle one sleeps in its ring.
//! - Callers help it: `apply_async` writes its task frame straight into an
//!   idle worker's ring when the manager's state is free, and a caller
//!   waiting in `get` polls the workers' results itself for a few
//!   microseconds before it sleeps, so a short task's round trip involves
//!   no other thread of the pool's process (and no system call). The
//!   manager thread keeps the liveness checks, timeouts and restarts.
//! - Once the workers are up, a steady loop of `apply_async(..).get()`
//!   allocates nothing per call in the caller: a finished `apply`'s state
//!   (its job, result handle and task frame buffer) goes back to a small
//!   per-pool free list when its [`AsyncResult`] is dropped, and the next
//!   `apply` of the same types reuses it (only when nothing else holds it:
//!   a handle given a callback, or a job the manager has not let go of yet,
//!   is simply not reused). A plain-data `map` allocates per map and per
//!   batch of frames, not per chunk or per item.
//! - Completion callbacks ([`AsyncResult::then`]) run on a thread of their
//!   own, one after another (as Python's result-handler thread), started
//!   with the pool's first callback: a callback that waits for its pool
//!   does not stop the pool.
//! - A worker claims each frame in its record of the control segment
//!   before running it, so the manager can take back a frame handed ahead
//!   that the worker has not begun: for an idle worker when nothing else
//!   waits (no frame waits behind another job's long item while a worker
//!   is free), and for [`AsyncResult::cancel`] (a cancelled job's items
//!   that no worker began never run).
//! - Each worker says in its record in the shared control segment how many
//!   items it has begun, before running each (like LMDB's reader table).
//!   When a worker dies, the manager reads what it sent, and that record
//!   names the one item it was running: that item fails with
//!   [`TaskError::WorkerLost`]; the items it had not reached (and any it
//!   had finished without sending their results yet) go to other workers,
//!   and a replacement starts. Deaths are noticed within about 100 ms
//!   (the manager's liveness period) of the worker being gone.
//! - Workers die with the pool's process: each watches its parent (a
//!   pidfd) and kills itself with SIGKILL when the parent is gone, even
//!   killed with SIGKILL, whatever its task does with SIGTERM. A normal
//!   exit of that process with the pool still alive (`std::process::exit`,
//!   a pool its drop never reached) kills them too (SIGKILL, as the drop
//!   does), where other daemon children get SIGTERM.
//! - An idle pool sleeps: the manager wakes twice a second and each idle
//!   worker ten times a second (its ring's liveness poll) to look for dead
//!   peers, and otherwise uses no CPU.
//! - Limits, for now: each worker has two 1 MiB rings in `/dev/shm`; results
//!   are copied into the result ring and out of it (once each) besides
//!   their encoding. A pool keeps the argument arena of its largest
//!   plain-data `map` so far (a segment in `/dev/shm`, removed with the
//!   pool), up to 32 MiB, for the next one (a synchronous `map` needs a
//!   few MiB whatever its size; `map_async` writes its whole input).
//!
//! ## What dropping a pool does
//!
//! Dropping a [`Pool`] **terminates** it, like leaving Python's
//! `with Pool() as p:` block: the workers are killed at once, unfinished
//! items fail with [`TaskError::Terminated`], and the drop returns when
//! every worker is reaped (it never waits for a task, so it never hangs).
//! To let submitted work finish first, call [`close`](Pool::close) and
//! [`join`](Pool::join) before dropping it.
//!
//! ## Differences from Python
//!
//! - Results carry their errors per item: [`Pool::map`] returns the first
//!   error by index (as Python raises it), [`Pool::map_results`] every
//!   item's outcome, and the `imap` iterators yield `Result`s.
//! - [`imap`](Pool::imap) pulls its input lazily with a bounded number of
//!   items in flight, so an endless iterator works (Python reads it all).
//! - Per-item timeouts ([`AsyncResult::timeout`], [`PoolBuilder::task_timeout`])
//!   and [`AsyncResult::cancel`] really stop the work: the worker is
//!   killed and replaced.
//! - A worker that finished some items of a chunk and died before sending
//!   them: those items run again in another worker (their functions
//!   should be safe to re-run; Python would lose the whole chunk).
//! - An item's encoded argument or result is limited to
//!   [`MAX_ITEM_BYTES`]; a larger one fails with [`TaskError::TooLarge`].

// Where things are: `task.rs` the `task!` registry; `ctl.rs` the
// control segment; `frame.rs` the frame formats; `worker.rs` the worker process;
// `manager.rs` the manager thread (dispatch, results, deaths, timeouts);
// `result.rs` a job's results and `AsyncResult`; `imap.rs` the iterators;
// `builder.rs` the settings and start; this file `Pool` and submission.
mod builder;
mod bulk;
mod ctl;
mod error;
mod frame;
mod imap;
mod manager;
mod result;
mod task;
mod worker;

pub use builder::PoolBuilder;
pub use imap::{Imap, NextTimedOut};
use imap::ImapSource;

pub use error::{GetTimeoutError, PoolError, TaskError};
pub use frame::MAX_ITEM_BYTES;
pub use result::AsyncResult;
pub use task::{__register_task, Task, TaskValue};

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use ctl::Ctl;
use frame::TaskFrame;
use result::{Finisher, Job, Sink};

use crate::process::{Handoff, StartMethod};

/// Python's default chunk size for `map`: `len / (4 * processes)`, rounded
/// up (`divmod`, plus one if there is a remainder), and at least 1.
///
/// ```
/// use shmproc::pool::default_chunksize;
/// assert_eq!(default_chunksize(1_000_000, 2), 125_000);
/// assert_eq!(default_chunksize(10, 3), 1);
/// assert_eq!(default_chunksize(13, 3), 2);
/// assert_eq!(default_chunksize(0, 4), 1);
/// ```
pub fn default_chunksize(len: usize, processes: usize) -> usize {
    let per = 4usize.saturating_mul(processes.max(1));
    let (q, r) = (len / per, len % per);
    (q + usize::from(r != 0)).max(1)
}

/// Items encoded before a batch of frames is handed to the manager.
const SUBMIT_BATCH: usize = 1 << 16;

/// Frame-sized slots of a streamed plain-data `map`'s arena (see
/// `frame::Slots`): enough for the frames its workers hold (two each)
/// and a few waiting, few enough that they stay in the caches (a frame
/// of `u64` is about 200 KiB).
const ARENA_SLOTS: usize = 12;

/// A job's id and its state.
type Submitted<R> = (u64, Arc<Job<R>>);

/// Pulls up to `n` items from an input into frames (job, n, first index,
/// task id, sink for items refused at once); returns them and how many
/// items it pulled.
type Pull<I> = fn(&mut I, u64, usize, u64, &'static str, &dyn Sink) -> (Vec<TaskFrame>, u64);

/// What the pool's users ask the manager thread.
pub(crate) enum Msg {
    /// `lazy`: an `imap`, whose input its caller pulls (cut off by `join`).
    Job { id: u64, sink: Arc<dyn Sink>, timeout: Option<Duration>, lazy: bool },
    Frames(Vec<TaskFrame>),
    InputDone { job: u64 },
    Timeout { job: u64, timeout: Duration },
    Cancel { job: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    Closed,
    /// Closed, and `join` waits: the input an `imap` has not submitted yet
    /// is cut off (see [`Pool::join`]).
    Joining,
    Terminating,
}

pub(crate) struct Inbox {
    pub(crate) msgs: Vec<Msg>,
    pub(crate) state: State,
    /// Jobs (`imap`s) whose input `join` cut off: their later input is
    /// refused (see `Manager::cut_inputs`).
    pub(crate) cut: Vec<u64>,
}

impl Inbox {
    /// Whether `m` is input of a job that `join` cut off.
    fn cut_input(&self, m: &Msg) -> bool {
        match m {
            Msg::Frames(frames) => frames.iter().any(|f| self.cut.contains(&f.job)),
            Msg::InputDone { job } => self.cut.contains(job),
            _ => false,
        }
    }
}

/// A completion callback (run on the pool's callback thread: see
/// `result::Callbacks`).
pub(crate) type Callback = Box<dyn FnOnce() + Send>;

/// What the pool's handles share with the manager thread.
pub(crate) struct Shared {
    pub(crate) ctl: Ctl,
    inbox: Mutex<Inbox>,
    next_job: AtomicU64,
    processes: usize,
    /// The buffer of the last plain-data `map`'s arguments, kept for the
    /// next (see [`frame::PodBlock`]).
    spare: frame::Spare,
    /// The manager's state (the workers, their rings, the jobs): its
    /// thread and callers that help (see `manager.rs`, "Helping") take
    /// turns with it. `None` once the manager thread has ended. Lock
    /// order: `core` before `inbox`.
    pub(crate) core: Mutex<Option<manager::Manager>>,
    /// Callers helping now (each polls the core until its job is done).
    pub(crate) helpers: AtomicU32,
    /// How many callers may help at once: half the cores this process may
    /// run on (at least one; see `start_helping`).
    pub(crate) max_helpers: u32,
    /// Bumped by [`Shared::notify`]: the manager sleeps on it while
    /// callers help (the workers' bumps of `ctl.seq` then wake nobody).
    pub(crate) req: AtomicU32,
    /// 1 while the manager may sleep on `req`.
    pub(crate) req_waiting: AtomicU32,
    /// The completion callbacks' queue and thread.
    pub(crate) callbacks: Arc<result::Callbacks>,
    /// Finished `apply` jobs' states, kept for the next `apply` of the
    /// same types (at most [`FREE_MAX`]; see `Finisher::recycle`).
    pub(crate) free: Mutex<Vec<Arc<dyn std::any::Any + Send + Sync>>>,
}

/// How many finished `apply` states a pool keeps for reuse (more than one
/// for a caller that keeps a few `apply_async` handles in flight).
pub(crate) const FREE_MAX: usize = 16;

impl Shared {
    /// A kept state of type `X` (see [`Shared::free`]), if there is one.
    pub(crate) fn take_free<X: Send + Sync + 'static>(&self) -> Option<Arc<X>> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let at = free.iter().rposition(|f| (**f).is::<X>())?;
        free.swap_remove(at).downcast::<X>().ok()
    }

    /// Keeps a finished state for reuse, if there is room (the list's
    /// capacity is reserved: no allocation here).
    pub(crate) fn put_free(&self, x: Arc<dyn std::any::Any + Send + Sync>) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < FREE_MAX.min(free.capacity()) {
            free.push(x);
        }
    }

    pub(crate) fn lock_inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn lock_core(&self) -> MutexGuard<'_, Option<manager::Manager>> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The manager's state if nobody holds it now.
    fn try_core(&self) -> Option<MutexGuard<'_, Option<manager::Manager>>> {
        match self.core.try_lock() {
            Ok(c) => Some(c),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Tells the manager thread to look: wakes it however it sleeps (on
    /// `ctl.seq`, or on `req` while callers help). A system call only if
    /// it sleeps.
    pub(crate) fn notify(&self) {
        self.ctl.bump();
        // SeqCst RMW then SeqCst load: pairs with the manager's SeqCst
        // store of `req_waiting` then SeqCst load of `req` in
        // `manager::sleep` (either it sees the bump and does not sleep,
        // or this sees it waiting and wakes it).
        self.req.fetch_add(1, Ordering::SeqCst);
        if self.req_waiting.load(Ordering::SeqCst) != 0 {
            crate::wait::futex::wake32(&self.req, 1);
        }
    }

    /// Queues messages for the manager and wakes it. `new_job`: refused
    /// (with `Closed`) unless the pool is open. Input of a job that `join`
    /// cut off is refused too (with `Closed`: see `Inbox::cut`).
    fn send(&self, msgs: impl IntoIterator<Item = Msg>, new_job: bool) -> Result<(), PoolError> {
        {
            let mut inbox = self.lock_inbox();
            match inbox.state {
                State::Open => {}
                State::Closed | State::Joining if !new_job => {}
                _ => return Err(PoolError::Closed),
            }
            let msgs: Vec<Msg> = msgs.into_iter().collect();
            if msgs.iter().any(|m| inbox.cut_input(m)) {
                return Err(PoolError::Closed);
            }
            inbox.msgs.extend(msgs);
        }
        self.notify();
        Ok(())
    }

    /// Sends a streamed job's input ([`Pool::submit_streamed`]): handed
    /// to the manager's state in this thread when nobody holds it (the
    /// frames go straight to the workers, whether or not the manager
    /// thread gets a core), else through the inbox. Refused as
    /// [`send`](Self::send) refuses.
    fn send_input(&self, msgs: Vec<Msg>, new_job: bool) -> Result<(), PoolError> {
        let Some(mut core) = self.try_core() else {
            return self.send(msgs, new_job);
        };
        let Some(m) = core.as_mut() else {
            drop(core);
            return self.send(msgs, new_job);
        };
        let (r, callbacks) = result::deferring_callbacks(|| m.take_input(self, msgs, new_job));
        // Queued before the lock goes (see `Callbacks::post`).
        self.callbacks.post(callbacks);
        drop(core);
        self.after_assist(r.as_ref().is_ok_and(|&wake| wake));
        r.map(|_| ())
    }

    /// Submits a new job of one frame (none if its item failed already)
    /// as the manager would take it, in this thread, when nobody else
    /// holds the manager's state: the frame goes straight into an idle
    /// worker's ring (no hand-off to the manager thread). `Err` (the
    /// job's parts back) if the state is busy: send it through the inbox
    /// then. The caller watches the job from here on (see
    /// `manager.rs`, "Helping").
    // (The `Err` hands the job's parts back, frame and all: moved, not
    // boxed, so the path that falls back to the inbox allocates nothing more.)
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    fn submit_direct(
        &self,
        id: u64,
        sink: Arc<dyn Sink>,
        frame: Option<TaskFrame>,
    ) -> Result<Result<Option<(usize, u64)>, PoolError>, (Arc<dyn Sink>, Option<TaskFrame>)> {
        let Some(mut core) = self.try_core() else { return Err((sink, frame)) };
        let Some(m) = core.as_mut() else { return Err((sink, frame)) };
        let (r, callbacks) = result::deferring_callbacks(|| m.submit(self, id, sink, frame));
        // Queued before the lock goes (see `Callbacks::post`).
        self.callbacks.post(callbacks);
        drop(core);
        self.after_assist(r.as_ref().is_ok_and(|&(wake, _)| wake));
        Ok(r.map(|(_, placed)| placed))
    }

    /// After a caller worked on the manager's state (and let go of it):
    /// the jobs it finished are dropped here, and the manager thread is
    /// woken when `wake` (a worker to bury).
    pub(crate) fn after_assist(&self, wake: bool) {
        result::drop_deferred();
        if wake {
            self.notify();
        }
    }

    /// One turn of help with the manager's work (see `manager.rs`,
    /// "Helping"), if nobody else holds its state.
    pub(crate) fn assist(&self) {
        let Some(mut core) = self.try_core() else { return };
        let Some(m) = core.as_mut() else { return };
        let (wake, callbacks) = result::deferring_callbacks(|| m.assist(self));
        self.callbacks.post(callbacks);
        drop(core);
        self.after_assist(wake);
    }

    /// A caller starts helping (polling the workers' rings for its job),
    /// if fewer than `max_helpers` do: false (and not counted) if enough
    /// do already (they file its result too, and wake it on its job's
    /// condvar: more pollers than free cores would only take the cores
    /// from the workers and from each other).
    pub(crate) fn start_helping(&self) -> bool {
        // SeqCst: pairs with the SeqCst loads of `helpers` in
        // `manager::sleep` (a manager that saw no helper sleeps on
        // `ctl.seq`, which the workers' results bump).
        if self.helpers.fetch_add(1, Ordering::SeqCst) < self.max_helpers {
            return true;
        }
        self.stop_helping();
        false
    }

    /// A caller stops helping. The last one to stop wakes the manager if
    /// work is left that it must now watch (it may sleep on `req`,
    /// which the workers' results do not bump).
    pub(crate) fn stop_helping(&self) {
        // SeqCst: as in `start_helping`.
        if self.helpers.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        // Someone works on the state now (`None`): let the manager look again.
        let left = self.try_core().is_none_or(|c| c.as_ref().is_some_and(manager::Manager::outstanding));
        if left {
            self.notify();
        }
    }
}

/// Settings shared by every worker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) init: Option<(String, Vec<u8>)>,
    /// The initializer's argument itself, kept while the pool lives (see
    /// [`builder::KeepAlive`]).
    pub(crate) _init_arg: Option<builder::KeepAlive>,
    pub(crate) max_tasks: u64,
    pub(crate) method: Option<StartMethod>,
    pub(crate) timeout: Option<Duration>,
    /// Every worker pid and segment name this pool created (tests check
    /// that none is left). Only with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub(crate) started: Arc<Mutex<(Vec<u32>, Vec<String>)>>,
}

pub(crate) fn next_worker_number() -> u32 {
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A pool of worker processes (Python's `multiprocessing.Pool`). See the
/// [module docs](crate::pool) for how it works and what dropping it does.
///
/// ```no_run
/// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
/// let pool = shmproc::Pool::new(5).unwrap();
/// assert_eq!(pool.map(square, [1, 2, 3]).unwrap(), [1, 4, 9]);
/// pool.close();
/// pool.join().unwrap();
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    /// The manager thread, joined by `join`/`terminate` (under the lock:
    /// a second caller waits for the first to finish joining).
    manager: Mutex<Option<JoinHandle<()>>>,
    manager_id: std::thread::ThreadId,
    #[cfg(feature = "test-hooks")]
    started: Arc<Mutex<(Vec<u32>, Vec<String>)>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("processes", &self.shared.processes).finish()
    }
}

impl Drop for Pool {
    /// Terminates the pool (see the [module docs](crate::pool)): kills the
    /// workers, fails unfinished items with [`TaskError::Terminated`], and
    /// returns once every worker is reaped and every segment removed.
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Checks that `F` can be sent to workers.
fn registered<F: Task>() -> Result<(), PoolError> {
    if F::ID.len() > frame::MAX_ID || !task::is_registered(F::ID) {
        return Err(PoolError::NotRegistered(F::ID));
    }
    Ok(())
}

/// Encodes items `first..` into frames of chunks of `chunksize`; items too
/// large fail at once in `sink`. Called inside a [`Deferred`] encoding
/// (the roles of pipe ends in the items go with them only once the frames
/// are sent): a refused item's roles are undone here.
///
/// [`Deferred`]: crate::process::handoff::Deferred
fn encode_frames<A: Handoff>(
    job: u64,
    id: &'static str,
    first: u64,
    items: impl IntoIterator<Item = A>,
    chunksize: usize,
    sink: &dyn Sink,
) -> (Vec<TaskFrame>, u64) {
    let mut frames = Vec::new();
    let mut index = first;
    let mut in_chunk = 0usize;
    let mut f: Option<TaskFrame> = None;
    for item in items {
        let cur = f.get_or_insert_with(|| TaskFrame::new(job, index, id.as_bytes()));
        let mark = crate::process::handoff::noted();
        match cur.push(|out| item.encode(out)) {
            Ok(true) => {}
            Ok(false) => {
                // The frame is full: seal it (mid-chunk) and start another
                // (the item is encoded again: its first roles are undone).
                crate::process::handoff::undo_noted_since(mark);
                frames.push(f.take().expect("present").finish(false));
                let mut next = TaskFrame::new(job, index, id.as_bytes());
                if let Err(len) = next.push(|out| item.encode(out)) {
                    crate::process::handoff::undo_noted_since(mark);
                    sink.fail(TaskError::TooLarge { index, what: "argument", len, max: MAX_ITEM_BYTES });
                } else {
                    f = Some(next);
                }
            }
            Err(len) => {
                // Not sent: its neighbours go in separate frames.
                crate::process::handoff::undo_noted_since(mark);
                if let Some(cur) = f.take().filter(|c| c.count > 0) {
                    frames.push(cur.finish(false));
                }
                sink.fail(TaskError::TooLarge { index, what: "argument", len, max: MAX_ITEM_BYTES });
            }
        }
        index += 1;
        in_chunk += 1;
        if in_chunk == chunksize {
            in_chunk = 0;
            if let Some(cur) = f.take().filter(|c| c.count > 0) {
                frames.push(cur.finish(true));
            }
        }
    }
    if let Some(cur) = f.take().filter(|c| c.count > 0) {
        frames.push(cur.finish(true));
    }
    (frames, index - first)
}

/// [`encode_frames`] for plain-data arguments: `block` (the memory images
/// of items `0..`, `width` bytes each) cut into chunks of `chunksize` and
/// frames of at most [`TaskFrame::pod_room`] items, each a slice of the
/// block (copied once, into the ring).
fn encode_pod_frames(job: u64, id: &'static str, block: &Arc<frame::PodBlock>, width: usize, chunksize: usize) -> Vec<TaskFrame> {
    let room = TaskFrame::pod_room(id.as_bytes(), width).saturating_mul(width);
    let (len, step) = (block.len(), chunksize.saturating_mul(width));
    let mut frames = Vec::with_capacity(len.div_ceil(room.min(step).max(1)));
    let mut chunk = 0;
    while chunk < len {
        let chunk_end = chunk.saturating_add(step).min(len);
        let mut at = chunk;
        while at < chunk_end {
            let end = at.saturating_add(room).min(chunk_end);
            let f = TaskFrame::from_pod(job, (at / width) as u64, id.as_bytes(), block, at, end, width);
            frames.push(f.finish(end == chunk_end));
            at = end;
        }
        chunk = chunk_end;
    }
    frames
}

/// A streamed job's input on its way to the manager: its frames go in
/// batches, the first with the job itself.
struct Outbox<'a> {
    shared: &'a Shared,
    job: u64,
    msgs: Vec<Msg>,
    frames: Vec<TaskFrame>,
    /// Items in `frames`.
    batched: usize,
    /// Some input was sent: the manager knows the job. Until `finish`, a
    /// drop (the iterator panicked, or the pool refused a batch) lets the
    /// manager retire it: its items sent so far are answered, then it is
    /// dropped.
    sent_any: bool,
}

impl<'a> Outbox<'a> {
    fn new(shared: &'a Shared, job: u64, sink: Arc<dyn Sink>) -> Outbox<'a> {
        let msgs = vec![Msg::Job { id: job, sink, timeout: None, lazy: false }];
        Outbox { shared, job, msgs, frames: Vec::new(), batched: 0, sent_any: false }
    }

    /// A frame of `items` items.
    fn push(&mut self, frame: TaskFrame, items: usize) {
        self.frames.push(frame);
        self.batched += items;
    }

    /// Sends what waits if at least `room` items do (0: whatever waits).
    fn send_from(&mut self, room: usize) -> Result<(), PoolError> {
        if self.batched < room {
            return Ok(());
        }
        if !self.frames.is_empty() {
            self.msgs.push(Msg::Frames(std::mem::take(&mut self.frames)));
            self.batched = 0;
        }
        if !self.msgs.is_empty() {
            self.shared.send_input(std::mem::take(&mut self.msgs), !self.sent_any)?;
            self.sent_any = true;
        }
        Ok(())
    }

    /// Every item is in a frame: the last frames, and the end of the input.
    fn finish(mut self) -> Result<(), PoolError> {
        if !self.frames.is_empty() {
            self.msgs.push(Msg::Frames(std::mem::take(&mut self.frames)));
        }
        self.msgs.push(Msg::InputDone { job: self.job });
        let (msgs, first) = (std::mem::take(&mut self.msgs), !self.sent_any);
        // Ends here, whether the manager takes it or not: no retiring.
        self.sent_any = false;
        self.shared.send_input(msgs, first)
    }
}

/// Ends a job's input at the manager when dropped `armed` (the caller
/// left before its last batch: an encoding panicked, or the pool refused
/// a batch): its items sent so far are answered, then it is dropped.
struct EndInput<'a> {
    shared: &'a Shared,
    job: u64,
    armed: bool,
}

impl Drop for EndInput<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.shared.send([Msg::InputDone { job: self.job }], false);
        }
    }
}

impl Drop for Outbox<'_> {
    fn drop(&mut self) {
        if self.sent_any {
            let _ = self.shared.send([Msg::InputDone { job: self.job }], false);
        }
    }
}

impl Pool {
    /// A pool of `processes` workers (at least 1), started now. Python's
    /// `Pool(processes)`; see [`builder`](Self::builder) for the other settings.
    ///
    /// ```no_run
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// assert_eq!(pool.processes(), 2);
    /// ```
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Self::builder().processes(processes).build()
    }

    /// A builder: processes (default [`cpu_count()`](crate::cpu_count)),
    /// initializer, maxtasksperchild, start method, default timeout.
    ///
    /// ```no_run
    /// let pool = shmproc::Pool::builder().build().unwrap();
    /// assert_eq!(pool.processes(), shmproc::cpu_count());
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Every worker pid and shared-memory segment name this pool has
    /// created so far (the crate's own tests check that none is left).
    /// Only with the `test-hooks` feature; not part of the API.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn __created(&self) -> (Vec<u32>, Vec<String>) {
        self.started.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counts `n` more (or, negative, fewer) callers as helping, as a
    /// caller stuck in its help would (the crate's own tests: the manager
    /// thread must sleep whatever the count). Only with the `test-hooks`
    /// feature; not part of the API.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn __add_helpers(&self, n: i32) {
        if n >= 0 {
            self.shared.helpers.fetch_add(n as u32, Ordering::SeqCst);
        } else {
            for _ in 0..n.unsigned_abs() {
                self.shared.stop_helping();
            }
        }
    }

    /// The number of workers.
    ///
    /// ```no_run
    /// assert_eq!(shmproc::Pool::new(3).unwrap().processes(), 3);
    /// ```
    pub fn processes(&self) -> usize {
        self.shared.processes
    }

    fn new_job<R: Handoff + Send + 'static>(&self, ordered: bool, expected: Option<u64>) -> (u64, Arc<Job<R>>) {
        let bulk = ordered && expected.is_some() && frame::pod_width::<R>().is_some();
        (self.shared.next_job.fetch_add(1, Ordering::Relaxed), Job::new(ordered, expected, bulk))
    }

    fn async_result<R: Handoff + Send + 'static, T: Send + 'static>(
        &self,
        id: u64,
        job: Arc<Job<R>>,
        finish: fn(&mut result::JobState<R>) -> Result<T, PoolError>,
    ) -> AsyncResult<T> {
        // Weak: a result kept after the pool is gone keeps nothing of it
        // alive (its segment's name is removed with the pool).
        let small = job.expected().is_some_and(|n| n <= self.shared.processes as u64);
        AsyncResult::new(Arc::new(Finisher { id, job, finish, pool: Arc::downgrade(&self.shared), small, placed: None, reuse: false }))
    }

    /// Submits every item of `items` as one job, in chunks of `chunksize`
    /// (0: Python's default). `waits`: the caller waits for the job's end
    /// right after (a plain-data job's arena may then be recycled: see
    /// [`submit_recycled`](Self::submit_recycled)).
    fn submit<F: Task>(
        &self,
        items: impl IntoIterator<Item = F::Arg>,
        chunksize: usize,
        waits: bool,
    ) -> Result<Submitted<F::Out>, PoolError>
    where
        F::Out: Send + 'static,
    {
        registered::<F>()?;
        if let Some(width) = frame::pod_width::<F::Arg>() {
            let items = items.into_iter();
            let (lo, hi) = items.size_hint();
            // Plain-data arguments of a known count: written into the arena
            // while the workers already run the first frames.
            // A size hint is a promise of the iterator, not a fact: the
            // arena made for it is at most `HINT_MAX` bytes (the items past
            // it go in a private block).
            let bytes = lo.saturating_mul(width).min(frame::HINT_MAX);
            // Recycled a frame at a time: at most `ARENA_SLOTS` frames' worth.
            let slots = TaskFrame::pod_room(F::ID.as_bytes(), width).saturating_mul(width).saturating_mul(ARENA_SLOTS);
            let size = if waits { bytes.min(slots) } else { bytes };
            let arena =
                (hi == Some(lo) && bytes >= frame::ARENA_FROM).then(|| frame::PodBlock::arena(&self.shared.spare, size)).flatten();
            if let Some(arena) = arena {
                return self.submit_streamed::<F>(items, arena, (lo, width), chunksize, waits);
            }
            // Else they go in as they lie in memory, once, into a buffer
            // the pool keeps warm; each frame is a slice of it.
            let block = Arc::new(frame::PodBlock::fill(&self.shared.spare, items, width));
            self.log_arena(&block);
            let n = block.len() / width;
            let chunksize = if chunksize == 0 { default_chunksize(n, self.processes()) } else { chunksize };
            let (id, job) = self.new_job::<F::Out>(true, Some(n as u64));
            let sink: Arc<dyn Sink> = job.clone();
            let frames = encode_pod_frames(id, F::ID, &block, width, chunksize);
            let msgs = [Msg::Job { id, sink, timeout: None, lazy: false }, Msg::Frames(frames), Msg::InputDone { job: id }];
            self.shared.send(msgs, true)?;
            return Ok((id, job));
        }
        // A closed pool refuses the job before its items are encoded (as
        // Python's map raises before pickling): encoding a pipe end marks
        // it handed on, and a refused item is dropped here, so its peer
        // would never learn it is gone. (A close that lands between this
        // check and the first batch's send still refuses the job, as before.)
        if !matches!(self.shared.lock_inbox().state, State::Open) {
            return Err(PoolError::Closed);
        }
        let all: Vec<F::Arg> = items.into_iter().collect();
        let chunksize = if chunksize == 0 { default_chunksize(all.len(), self.processes()) } else { chunksize };
        let n = all.len();
        let (id, job) = self.new_job::<F::Out>(true, Some(n as u64));
        let sink: Arc<dyn Sink> = job.clone();
        // Frames go out in batches as they are encoded, so the workers start
        // while the rest is still being encoded (a batch is whole chunks).
        let batch = chunksize * SUBMIT_BATCH.div_ceil(chunksize);
        let mut items = all.into_iter();
        let mut first = 0u64;
        let mut msgs = vec![Msg::Job { id, sink, timeout: None, lazy: false }];
        // Once the manager knows the job, a later batch whose encoding
        // panics (a user `Handoff::encode`) must still end its input, or
        // the job stays open for good (and `join` waits for it).
        let mut end = EndInput { shared: &self.shared, job: id, armed: false };
        loop {
            // The roles of pipe ends in the items go with them once the
            // batch is sent; a refusal or a panicking encode (a user
            // `Handoff::encode`) leaves them as they were (`Deferred`).
            let (mut frames, mut got) = (Vec::new(), 0);
            let mut deferred = crate::process::handoff::Deferred::encode(|| {
                (frames, got) = encode_frames(id, F::ID, first, items.by_ref().take(batch), chunksize, &*job);
            });
            first += got;
            msgs.push(Msg::Frames(frames));
            let last = first >= n as u64;
            if last {
                msgs.push(Msg::InputDone { job: id });
            }
            // Only the first batch may be refused (the pool closed); later
            // ones belong to an accepted job (`Closed` only if terminated).
            deferred.release();
            self.shared.send(msgs.drain(..), first == got)?;
            deferred.sent();
            end.armed = !last;
            if last {
                return Ok((id, job));
            }
        }
    }

    /// Records an arena's name among the segments this pool made (the
    /// crate's own tests check that none is left).
    fn log_arena(&self, block: &frame::PodBlock) {
        let _ = block;
        #[cfg(feature = "test-hooks")]
        if let Some(name) = block.arena_name() {
            let mut log = self.started.lock().unwrap_or_else(|p| p.into_inner());
            if !log.1.iter().any(|n| n == name) {
                log.1.push(name.to_owned());
            }
        }
    }

    /// [`submit`](Self::submit) of plain-data arguments whose iterator
    /// says it yields `n` items: they are written into `arena` one frame
    /// at a time, and each batch of frames goes to the manager as soon as
    /// it is written, so the workers run the first frames (and the manager
    /// copies their results out) while the caller writes the rest. The
    /// chunks are Python's (`chunksize` from `n`); an iterator whose count
    /// differs from its hint still has every item run, in order: the ones
    /// past the arena's room go in a private block. With `recycle` (the
    /// caller waits for the job's end anyway), see
    /// [`submit_recycled`](Self::submit_recycled).
    fn submit_streamed<F: Task>(
        &self,
        items: impl Iterator<Item = F::Arg>,
        arena: frame::PodBlock,
        (n, width): (usize, usize),
        chunksize: usize,
        recycle: bool,
    ) -> Result<Submitted<F::Out>, PoolError>
    where
        F::Out: Send + 'static,
    {
        self.log_arena(&arena);
        let chunksize = if chunksize == 0 { default_chunksize(n, self.processes()) } else { chunksize };
        let id = self.shared.next_job.fetch_add(1, Ordering::Relaxed);
        if recycle {
            return self.submit_recycled::<F>(items, arena, (n, width, chunksize), id);
        }
        // Room for the outcomes of the items the arena holds (more are
        // made room for when they come).
        let room_for = n.min(arena.len() / width);
        let job = Job::<F::Out>::streaming(room_for, frame::pod_width::<F::Out>().is_some());
        let sink: Arc<dyn Sink> = job.clone();
        let task = F::ID.as_bytes();
        let room = TaskFrame::pod_room(task, width);
        let mut items = items.peekable();
        let mut block = Arc::new(arena);
        // The block's first item's index, and how many items it holds
        // (an arena: the job has room for the outcomes of; a private
        // block: has). An arena has room for `arena_cap` items.
        let (mut base, mut cap, mut heap) = (0usize, room_for, false);
        let arena_cap = block.len() / width;
        let mut index = 0usize;
        let mut out = Outbox::new(&self.shared, id, sink);
        loop {
            if index - base == cap {
                if items.peek().is_none() {
                    break;
                }
                if !heap && cap < arena_cap {
                    // The iterator yields more than it said, and the arena
                    // has room: room for their outcomes too (doubling),
                    // before any of their frames goes out, so their values
                    // land in place as the others do.
                    cap = arena_cap.min(cap.saturating_mul(2).max(1));
                    job.set_len(cap as u64, false);
                    continue;
                }
                // The iterator yields more than it said: the rest (read
                // now) in a private block, with room for their outcomes
                // before any of their frames goes out.
                let rest = frame::fill_heap(Vec::new(), &mut items);
                (base, cap, heap) = (index, rest.len() / width, true);
                block = Arc::new(frame::PodBlock::heap(rest));
                job.set_len((base + cap) as u64, false);
                continue;
            }
            let chunk_end = (index / chunksize).saturating_add(1).saturating_mul(chunksize);
            let want = room.min(chunk_end - index).min(base + cap - index);
            let got = if heap { want } else { block.write_items((index - base) * width, &mut items, want) };
            if got == 0 {
                break;
            }
            let end = index + got;
            let last = if heap { end == base + cap } else { items.peek().is_none() };
            let (start, stop) = ((index - base) * width, (end - base) * width);
            out.push(TaskFrame::from_pod(id, index as u64, task, &block, start, stop, width).finish(end == chunk_end || last), got);
            index = end;
            if last {
                break;
            }
            // About a frame's worth of items: out now.
            out.send_from(room)?;
        }
        // Every item is in a frame: the job's count, then its last frames.
        job.set_len(index as u64, true);
        drop(block);
        out.finish()?;
        Ok((id, job))
    }

    /// [`submit_streamed`](Self::submit_streamed) (job `id`, `chunksize`
    /// set) for a caller that waits for the job's end anyway (`map`, not
    /// `map_async`: `recycle`): the arena is
    /// recycled a frame-sized slot at a time (see `frame::Slots`), so the
    /// arguments pass through a few frames' worth of shared memory that
    /// stays in the caches, however large the job; the caller waits for a
    /// free slot (helping the manager meanwhile) when every slot is in a
    /// frame not answered yet. (An asynchronous submission must not wait
    /// for the workers: a task may wait for what its caller does next.)
    fn submit_recycled<F: Task>(
        &self,
        items: impl Iterator<Item = F::Arg>,
        arena: frame::PodBlock,
        (n, width, chunksize): (usize, usize, usize),
        id: u64,
    ) -> Result<Submitted<F::Out>, PoolError>
    where
        F::Out: Send + 'static,
    {
        // Room for the outcomes of the items the iterator says it yields
        // (a hint, not a promise: more room is made when more come).
        let mut job_room = n.min(frame::HINT_MAX / width);
        let job = Job::<F::Out>::streaming(job_room, frame::pod_width::<F::Out>().is_some());
        let sink: Arc<dyn Sink> = job.clone();
        let task = F::ID.as_bytes();
        let room = TaskFrame::pod_room(task, width);
        let mut items = items.peekable();
        // The arena is recycled a frame-sized slot at a time (see
        // `frame::Slots`): each frame's arguments go into a free slot.
        let slot_bytes = room * width;
        let block = Arc::new(arena.into_slots(slot_bytes, ARENA_SLOTS));
        let Some(slots) = block.slots() else {
            // (An arena always holds a frame: at least 1 MiB.)
            return Err(PoolError::InvalidArgument("the argument arena holds no frame".into()));
        };
        let mut index = 0usize;
        let mut out = Outbox::new(&self.shared, id, sink);
        // The slot being written (held by this writer) and its bytes used.
        let (mut slot, mut used) = (None::<usize>, 0usize);
        loop {
            if index == job_room {
                if items.peek().is_none() {
                    break;
                }
                // The iterator yields more than it said: room for their
                // outcomes too (doubling), before any of their frames goes
                // out, so their values land in place as the others do.
                job_room = job_room.saturating_mul(2).max(1);
                job.set_len(job_room as u64, false);
                continue;
            }
            if used + width > slot_bytes {
                // The slot is full: the writer lets go of it (its frames
                // still hold it), and takes a free one.
                if let Some(full) = slot.take() {
                    slots.release(full);
                }
                used = 0;
            }
            let at = match slot {
                Some(s) => s * slot_bytes + used,
                None => {
                    let s = match slots.try_take() {
                        Some(s) => s,
                        None => {
                            // Every slot holds frames not answered yet:
                            // the frames written so far go out, then help
                            // (filing results frees slots) or sleep until
                            // one is free.
                            out.send_from(0)?;
                            self.wait_for_slot(slots)?
                        }
                    };
                    slot = Some(s);
                    s * slot_bytes
                }
            };
            let chunk_end = (index / chunksize).saturating_add(1).saturating_mul(chunksize);
            let want = room.min(chunk_end - index).min(job_room - index).min((slot_bytes - used) / width);
            let got = block.write_items(at, &mut items, want);
            if got == 0 {
                break;
            }
            let end = index + got;
            let last = items.peek().is_none();
            let s = slot.unwrap_or(frame::MAX_SLOTS);
            let frame = TaskFrame::from_pod_slot(id, index as u64, task, &block, (at, at + got * width), width, s);
            out.push(frame.finish(end == chunk_end || last), got);
            used += got * width;
            index = end;
            if last {
                break;
            }
            // About a frame's worth of items: out now.
            out.send_from(room)?;
        }
        // Every item is in a frame: the job's count, then its last frames.
        if let Some(s) = slot {
            slots.release(s);
        }
        job.set_len(index as u64, true);
        drop(block);
        out.finish()?;
        Ok((id, job))
    }

    /// A free slot of a recycled arena (see `frame::Slots`): helps the
    /// manager (filing results frees slots) and sleeps until one is free.
    /// `Closed` if the pool terminates meanwhile.
    fn wait_for_slot(&self, slots: &frame::Slots) -> Result<usize, PoolError> {
        loop {
            self.shared.assist();
            if let Some(s) = slots.try_take().or_else(|| slots.take_timeout(manager::LIVENESS)) {
                return Ok(s);
            }
            // (A slot is freed whatever becomes of its frames: answered,
            // failed, cancelled, or dropped with a terminated pool.)
            if self.shared.lock_inbox().state == State::Terminating {
                return Err(PoolError::Closed);
            }
        }
    }

    /// `f(arg)` in a worker, waiting for the value (Python's `apply`).
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// assert_eq!(pool.apply(square, 12).unwrap(), 144);
    /// ```
    pub fn apply<F: Task>(&self, f: F, arg: F::Arg) -> Result<F::Out, PoolError>
    where
        F::Out: Send + 'static,
    {
        self.apply_async(f, arg)?.get()
    }

    /// `f(arg)` in a worker; the value comes later (Python's `apply_async`).
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(square, 12).unwrap();
    /// assert_eq!(r.get().unwrap(), 144);
    /// ```
    pub fn apply_async<F: Task>(&self, f: F, arg: F::Arg) -> Result<AsyncResult<F::Out>, PoolError>
    where
        F::Out: Send + 'static,
    {
        let _ = f;
        registered::<F>()?;
        // One item: its own slot (no bulk state for one value).
        let id = self.shared.next_job.fetch_add(1, Ordering::Relaxed);
        // A finished `apply`'s state and frame buffer when the pool kept
        // one (no allocation per call), else new ones.
        let (fin, buf) = match Finisher::<F::Out, F::Out>::reused(&self.shared, id) {
            Some((fin, buf)) => (Some(fin), buf),
            None => (None, Vec::new()),
        };
        let job = fin.as_ref().map_or_else(|| Job::<F::Out>::new(true, Some(1), false), |f| Arc::clone(&f.job));
        let mut frame = TaskFrame::new_in(buf, id, 0, F::ID.as_bytes());
        // A pipe end in `arg` goes with it only if the task is submitted:
        // refused, `arg` is dropped here as it was (the peer then learns
        // the end is gone).
        let mut deferred = None;
        let frame = match frame.push(|out| deferred = Some(crate::process::handoff::Deferred::encode(|| arg.encode(out)))) {
            // (The first item of a frame always fits, or is too large.)
            Ok(_) => Some(frame.finish(true)),
            Err(len) => {
                job.fail(TaskError::TooLarge { index: 0, what: "argument", len, max: MAX_ITEM_BYTES });
                None
            }
        };
        let sink: Arc<dyn Sink> = job.clone();
        let sending = frame.is_some();
        if let Some(d) = deferred.as_mut().filter(|_| sending) {
            d.release();
        }
        // In this thread when the manager's state is free (the frame goes
        // straight to an idle worker), else through the manager thread.
        let placed = match self.shared.submit_direct(id, sink, frame) {
            Ok(r) => r?,
            Err((sink, frame)) => {
                let msgs = [Msg::Job { id, sink, timeout: None, lazy: false }, Msg::Frames(frame.into_iter().collect()), Msg::InputDone { job: id }];
                self.shared.send(msgs, true)?;
                None
            }
        };
        if let Some(d) = deferred.filter(|_| sending) {
            d.sent();
        }
        let fin = match fin {
            Some(mut fin) => {
                drop(job);
                // Nobody else holds it yet: the manager holds the job only.
                if let Some(f) = Arc::get_mut(&mut fin) {
                    f.placed = placed;
                }
                fin
            }
            None => {
                let pool = Arc::downgrade(&self.shared);
                Arc::new(Finisher { id, job, finish: result::finish_one, pool, small: true, placed, reuse: true })
            }
        };
        Ok(AsyncResult::new(fin))
    }

    /// `f` on every item, results in order, with Python's default chunk
    /// size ([`default_chunksize`]); the first failed item's error, if any.
    ///
    /// ```no_run
    /// shmproc::task! { fn doubler(n: i64) -> i64 { n * 2 } }
    /// let pool = shmproc::Pool::new(3).unwrap();
    /// assert_eq!(pool.map(doubler, [5, 10, 20]).unwrap(), [10, 20, 40]);
    /// ```
    pub fn map<F: Task>(&self, f: F, items: impl IntoIterator<Item = F::Arg>) -> Result<Vec<F::Out>, PoolError>
    where
        F::Out: Send + 'static,
    {
        let _ = f;
        let (id, job) = self.submit::<F>(items, 0, true)?;
        self.async_result(id, job, result::finish_all).get()
    }

    /// [`map`](Self::map) with an explicit chunk size (items per task; 0 is
    /// [`PoolError::InvalidArgument`], as Python refuses it).
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// assert_eq!(pool.map_chunked(square, 0..10, 3).unwrap()[9], 81);
    /// ```
    pub fn map_chunked<F: Task>(
        &self,
        f: F,
        items: impl IntoIterator<Item = F::Arg>,
        chunksize: usize,
    ) -> Result<Vec<F::Out>, PoolError>
    where
        F::Out: Send + 'static,
    {
        let _ = f;
        if chunksize == 0 {
            return Err(PoolError::InvalidArgument("chunksize must be at least 1".into()));
        }
        let (id, job) = self.submit::<F>(items, chunksize, true)?;
        self.async_result(id, job, result::finish_all).get()
    }

    /// Every item's outcome, in order: the values, and each failed item's
    /// error (the others still complete). `chunksize` 0 means Python's default.
    ///
    /// ```no_run
    /// shmproc::task! {
    ///     fn half(x: u32) -> Result<u32, String> {
    ///         if x % 2 == 0 { Ok(x / 2) } else { Err(format!("{x} is odd")) }
    ///     }
    /// }
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// let r = pool.map_results(half, [2, 3, 4], 0).unwrap();
    /// assert_eq!(r[0], Ok(1));
    /// assert!(r[1].as_ref().unwrap_err().to_string().contains("3 is odd"));
    /// assert_eq!(r[2], Ok(2));
    /// ```
    pub fn map_results<F: Task>(
        &self,
        f: F,
        items: impl IntoIterator<Item = F::Arg>,
        chunksize: usize,
    ) -> Result<Vec<Result<F::Out, TaskError>>, PoolError>
    where
        F::Out: Send + 'static,
    {
        let _ = f;
        let (id, job) = self.submit::<F>(items, chunksize, true)?;
        self.async_result(id, job, result::finish_each).get()
    }

    /// [`map`](Self::map) whose value comes later (Python's `map_async`).
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// let r = pool.map_async(square, [1, 2, 3]).unwrap();
    /// assert_eq!(r.get().unwrap(), [1, 4, 9]);
    /// ```
    pub fn map_async<F: Task>(
        &self,
        f: F,
        items: impl IntoIterator<Item = F::Arg>,
    ) -> Result<AsyncResult<Vec<F::Out>>, PoolError>
    where
        F::Out: Send + 'static,
    {
        self.map_async_chunked(f, items, 0)
    }

    /// [`map_async`](Self::map_async) in chunks of `chunksize` items
    /// (Python's `map_async(f, items, chunksize)`; 0: the default, as
    /// [`map`](Self::map) computes it).
    ///
    /// ```no_run
    /// shmproc::task! { fn pid(_: u64) -> u32 { std::process::id() } }
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// let pids = pool.map_async_chunked(pid, 0..8, 8).unwrap().get().unwrap();
    /// assert!(pids.iter().all(|&p| p == pids[0])); // one chunk: one worker
    /// ```
    pub fn map_async_chunked<F: Task>(
        &self,
        f: F,
        items: impl IntoIterator<Item = F::Arg>,
        chunksize: usize,
    ) -> Result<AsyncResult<Vec<F::Out>>, PoolError>
    where
        F::Out: Send + 'static,
    {
        let _ = f;
        let (id, job) = self.submit::<F>(items, chunksize, false)?;
        Ok(self.async_result(id, job, result::finish_all))
    }

    /// Python's `starmap`: tasks take one argument, so a function of
    /// several takes a tuple and `starmap` is [`map`](Self::map) over tuples.
    ///
    /// ```no_run
    /// shmproc::task! { fn add((a, b): (u64, u64)) -> u64 { a + b } }
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
    /// ```
    pub fn starmap<F: Task>(&self, f: F, items: impl IntoIterator<Item = F::Arg>) -> Result<Vec<F::Out>, PoolError>
    where
        F::Out: Send + 'static,
    {
        self.map(f, items)
    }

    /// [`starmap`](Self::starmap) whose value comes later.
    ///
    /// ```no_run
    /// shmproc::task! { fn add((a, b): (u64, u64)) -> u64 { a + b } }
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// assert_eq!(pool.starmap_async(add, [(1, 2)]).unwrap().get().unwrap(), [3]);
    /// ```
    pub fn starmap_async<F: Task>(
        &self,
        f: F,
        items: impl IntoIterator<Item = F::Arg>,
    ) -> Result<AsyncResult<Vec<F::Out>>, PoolError>
    where
        F::Out: Send + 'static,
    {
        self.map_async(f, items)
    }

    /// Results in input order as an iterator (Python's `imap`), pulling
    /// `items` lazily with at most a bounded number in flight (see
    /// [`Imap::max_in_flight`], [`Imap::chunksize`]): an endless iterator
    /// works with bounded memory. Each item is a `Result`.
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// let firsts: Vec<u64> = pool.imap(square, 0..).unwrap().take(5).map(Result::unwrap).collect();
    /// assert_eq!(firsts, [0, 1, 4, 9, 16]);
    /// ```
    pub fn imap<F: Task, I: IntoIterator<Item = F::Arg>>(
        &self,
        f: F,
        items: I,
    ) -> Result<Imap<F::Out, I::IntoIter>, PoolError>
    where
        F::Out: Send + 'static,
    {
        let _ = f;
        self.imap_with::<F, I>(items, true)
    }

    fn imap_with<F: Task, I: IntoIterator<Item = F::Arg>>(
        &self,
        items: I,
        ordered: bool,
    ) -> Result<Imap<F::Out, I::IntoIter>, PoolError>
    where
        F::Out: Send + 'static,
    {
        registered::<F>()?;
        let (id, job) = self.new_job::<F::Out>(ordered, None);
        let sink: Arc<dyn Sink> = job.clone();
        self.shared.send([Msg::Job { id, sink, timeout: None, lazy: true }], true)?;
        Ok(Imap { job, source: ImapSource::new::<F>(Arc::downgrade(&self.shared), items.into_iter(), id) })
    }

    /// Results as they complete (Python's `imap_unordered`), with `imap`'s
    /// lazy, bounded input.
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// let mut all: Vec<u64> = pool.imap_unordered(square, 0..4).unwrap().map(Result::unwrap).collect();
    /// all.sort();
    /// assert_eq!(all, [0, 1, 4, 9]);
    /// ```
    pub fn imap_unordered<F: Task, I: IntoIterator<Item = F::Arg>>(
        &self,
        f: F,
        items: I,
    ) -> Result<Imap<F::Out, I::IntoIter>, PoolError>
    where
        F::Out: Send + 'static,
    {
        let _ = f;
        self.imap_with::<F, I>(items, false)
    }

    /// No more jobs (Python's `close()`): work already submitted (and the
    /// rest of a running `imap`'s input, until [`join`](Self::join)) still
    /// runs; then the workers exit.
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// pool.close();
    /// assert_eq!(pool.apply(square, 2), Err(shmproc::pool::PoolError::Closed));
    /// pool.join().unwrap();
    /// ```
    pub fn close(&self) {
        let mut inbox = self.shared.lock_inbox();
        if inbox.state == State::Open {
            inbox.state = State::Closed;
        }
        drop(inbox);
        self.shared.notify();
    }

    /// Stops at once (Python's `terminate()`): kills every worker, fails
    /// unfinished items with [`TaskError::Terminated`], and returns when the
    /// workers are reaped. Never waits for a task.
    ///
    /// ```no_run
    /// let pool = shmproc::Pool::new(2).unwrap();
    /// pool.terminate();
    /// pool.join().unwrap();
    /// ```
    pub fn terminate(&self) {
        self.shared.lock_inbox().state = State::Terminating;
        self.shared.notify();
        self.wait_manager();
    }

    /// Waits for the workers to exit (Python's `join()`), after
    /// [`close`](Self::close) (when every job is done) or
    /// [`terminate`](Self::terminate). [`PoolError::StillOpen`] before either.
    ///
    /// After `close`, `join` waits for every item submitted so far, as
    /// Python's does. An [`imap`](Self::imap) takes its input lazily
    /// (Python's takes all of it at once): the items it submitted run and
    /// their results stay in the iterator, the rest of its input is cut
    /// off, and the iterator then yields one [`TaskError::NotSubmitted`]
    /// (the first item it did not submit) and ends. Consume an `imap`
    /// before `join` to have all of it.
    ///
    /// ```no_run
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// assert_eq!(pool.join(), Err(shmproc::pool::PoolError::StillOpen));
    /// pool.close();
    /// pool.join().unwrap();
    /// ```
    pub fn join(&self) -> Result<(), PoolError> {
        {
            let mut inbox = self.shared.lock_inbox();
            match inbox.state {
                State::Open => return Err(PoolError::StillOpen),
                State::Closed => inbox.state = State::Joining,
                State::Joining | State::Terminating => {}
            }
        }
        self.shared.notify();
        self.wait_manager();
        Ok(())
    }

    fn wait_manager(&self) {
        // From the manager thread (which runs no user code now; kept as a
        // safeguard): do not wait for ourselves.
        if self.manager_id == std::thread::current().id() {
            return;
        }
        let mut slot = self.manager.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.take() {
            let _ = h.join();
        }
        drop(slot);
        // Every callback has run when `join` returns (the thread leaves
        // once the manager has ended and the queue is empty).
        self.shared.callbacks.join();
    }
}

