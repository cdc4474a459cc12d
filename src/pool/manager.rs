//! The pool's manager: the owner of the workers and of their rings. It
//! takes requests from the pool's users (new jobs and chunks,
//! cancellations, close, terminate), hands task frames to workers, collects
//! results into the jobs, watches the workers (death, timeouts) and starts
//! replacements.
//!
//! Its state ([`Manager`]) lives in `Shared::core`, behind a mutex; the
//! manager thread takes it for each turn ([`Manager::tick`]). It sleeps on
//! the control segment's `seq` word while nothing happens (workers bump it
//! after each result frame, users after each request); while work is
//! outstanding it also wakes every [`LIVENESS`] to look for dead workers
//! and expired timeouts, so a worker's death is noticed within that
//! period (plus the reaping).
//!
//! ## Helping
//!
//! A hand-off between threads that sleep costs tens of microseconds each
//! way, so an `apply_async(..).get()` that went caller -> manager thread
//! -> worker -> manager thread -> caller paid two of them in the parent.
//! Instead, callers help:
//!
//! - `apply_async` takes the state itself when it is free
//!   (`Shared::submit_direct`, a `try_lock`) and writes the task frame
//!   straight into an idle worker's ring ([`Manager::submit`]); if the
//!   state is busy, the request goes through the inbox as before.
//! - A caller waiting for a job (`get`, `wait`, and their `_timeout`
//!   twins) polls for a bounded while ([`Manager::assist`] under a
//!   `try_lock`: requests, every worker's results, dispatch), then sleeps
//!   on the job's condvar as before. `ready` and `successful` assist once.
//! - While callers help (`Shared::helpers` > 0) the manager thread does not
//!   spin and sleeps on `Shared::req` (which only users bump, with
//!   `Shared::notify`), not on `seq` (which every result bumps), still
//!   waking every [`LIVENESS`] for its checks: reaping, restarts, timeouts
//!   and `check_claims` stay its own, as do terminate and shutdown.
//!   Helpers never reap or start workers; one that finds a worker's ring
//!   gone wakes the manager.
//! - Nobody's work is left unwatched: the last helper to stop wakes the
//!   manager if a job is open or a frame waits (`Shared::stop_helping`); a
//!   handle dropped, or given a callback (`then`), before its job finished
//!   wakes it (`Finisher::hand_over`); a job submitted with a pool-wide
//!   timeout wakes it at once.
//! - Completion callbacks never run under the state's lock, nor on the
//!   manager thread: they are collected (`result::deferring_callbacks`)
//!   and queued for the pool's callback thread (`result::Callbacks`), so
//!   a callback that waits for its pool holds up no one's work.
//! - User code the manager's work runs (a result's `Handoff::decode`, a
//!   result's `Drop`) cannot leave the state half-updated: a decode that
//!   panics fails its item, and finished jobs are dropped after the lock
//!   (`result::drop_later`).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::error::{PoolError, TaskError};
use super::ctl::{self, Ctl};
use super::frame::{self, TaskFrame};
use super::result::{self, Sink};
use super::worker::{PoolWorker, WorkerArg};
use super::{Config, Msg, Shared, State};
use crate::process::{LOG_TARGET, StartMethod};
use crate::queue::{ByteConsumer, ByteProducer, ByteQueue};
use crate::wait::Deadline;
use crate::wait::futex::wait32;
use crate::wait::spin::{SpinPolicy, spin_step};
use crate::wait::WaitStrategy;
use crate::sys::proc as sysproc;
use crate::{Process, TryRecvError, TrySendError};

/// How often the manager looks at its workers while work is outstanding.
pub(crate) const LIVENESS: Duration = Duration::from_millis(100);
/// ... and while the pool is idle.
const IDLE_LIVENESS: Duration = Duration::from_millis(500);
/// How long the manager spins for the next event while work is outstanding
/// (or just was) before it sleeps (a few microseconds, yielding the core
/// now and then: on a machine with more runnable threads than cores, the
/// worker or caller we wait for may need it).
const MANAGER_SPIN: SpinPolicy = SpinPolicy { pure: 256, limit: 1024, yield_every: 8 };
/// After its last progress the manager keeps spinning (not sleeping) this
/// long: a caller that submits again right after its result came back
/// (`apply` in a loop) then pays no futex wake-up.
const RECENT: Duration = Duration::from_millis(1);
/// How long a worker's control record may show a frame taken up and not
/// begun before the worker is taken for broken (`check_claims`).
const STALL_GRACE: Duration = Duration::from_millis(500);
/// Consecutive worker start failures (or initializer failures) after which
/// the pool gives up on its jobs.
const MAX_START_FAILURES: u32 = 5;
/// Deaths of workers whose record said no item was running, with the same
/// item first in line each time, after which that item fails
/// (`WorkerLost`) instead of running again: a task that rewrites its
/// worker's `started` word and dies would otherwise run again for ever.
const MAX_UNEXPLAINED_DEATHS: u8 = 2;
/// How long after a worker could not be set up (no room in /dev/shm for
/// its rings, no process) the manager tries again: the cause may pass.
/// Doubled after each further failure in a row, up to 64 times.
const SETUP_RETRY: Duration = LIVENESS;

/// When to try starting a worker again after `failures` in a row.
fn retry_at(failures: u32) -> Instant {
    Instant::now() + SETUP_RETRY * (1u32 << failures.saturating_sub(1).min(6))
}

/// Hashes a job id (a number the pool itself hands out, never input from
/// outside) with one multiplication: the job maps are looked up a few
/// times per task, and SipHash was about 1 100 instructions of an
/// `apply` round trip (callgrind).
#[derive(Default)]
struct JobIdHasher(u64);

impl Hasher for JobIdHasher {
    fn finish(&self) -> u64 {
        // Fibonacci hashing: the high bits (which the table's control
        // bytes use) depend on every bit of the id.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).rotate_left(5);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by job id.
type JobMap<V> = HashMap<u64, V, BuildHasherDefault<JobIdHasher>>;

/// A task frame handed to a worker and not fully answered.
struct Sent {
    /// Its number among the frames sent to the worker (see `ctl::claim`).
    n: u64,
    job: u64,
    first: u64,
    count: u32,
    answered: u32,
    frame: TaskFrame,
}

/// Why the manager killed a worker: the item it targeted fails with this
/// reason; another item the worker had begun meanwhile (the kill raced
/// with the end of the targeted one) runs again elsewhere.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Item `index` of `job` ran longer than `timeout`.
    Timeout { timeout: Duration, job: u64, index: u64 },
    /// Its item's job was cancelled.
    Cancel,
    /// The pool is terminating, or the worker misbehaved.
    Terminate,
    /// Its control record says it passed a frame it did not run (see
    /// `check_claims`): its items run again elsewhere.
    Stalled,
}

pub(crate) struct Worker {
    slot: usize,
    process: Process,
    pid: u32,
    tx: ByteProducer,
    rx: ByteConsumer,
    fifo: VecDeque<Sent>,
    /// Task frames sent to it (the number of the last: see `ctl::claim`).
    sent_frames: u64,
    /// The number of the last frame taken back from it (`steal`,
    /// `cancel`; 0: none). Until its `claimed` word shows it passed that
    /// frame, no other is handed ahead to it: a frame behind a taken-back
    /// one cannot be taken back (`revoke` needs the worker at the frame
    /// before), so it would wait there for the worker's long item.
    revoked: u64,
    /// Since when its control record shows a frame taken up and not begun
    /// (with the `claimed` and `started` words then): see `check_claims`.
    stalled: Option<(u64, u64, Instant)>,
    /// Items answered since this worker started.
    received: u64,
    /// The `started` count last seen, and when it was first seen.
    seen_started: u64,
    since: Instant,
    killed: Option<Kill>,
    /// Queues kept alive (and their names) while the worker lives.
    _queues: (ByteQueue, ByteQueue),
}

struct JobEntry {
    sink: Arc<dyn Sink>,
    timeout: Option<Duration>,
    cancelled: bool,
    input_done: bool,
    /// An `imap`'s job: its caller pulls the input (see `cut_inputs`).
    lazy: bool,
    /// Items given to the manager and not yet answered or failed.
    outstanding: u64,
}

pub(crate) struct Manager {
    /// For `Drop` only (the manager lives in `Shared::core`; its thread
    /// and helpers pass the `Shared` to each call).
    shared: Weak<Shared>,
    ctl: Ctl,
    cfg: Config,
    workers: Vec<Option<Worker>>,
    jobs: JobMap<JobEntry>,
    pending: VecDeque<TaskFrame>,
    buf: Vec<u8>,
    closed: bool,
    /// Jobs whose input `join` cut off (an `imap` not consumed to its
    /// end): their later frames fail with `NotSubmitted`; their sinks are
    /// aborted when the manager stops taking requests.
    cut: JobMap<Arc<dyn Sink>>,
    start_failures: u32,
    /// Consecutive failures to set a worker up (`start_worker`: rings,
    /// process), and when to try again (after either kind of failure).
    /// Neither kind stops the pool for good: jobs fail only while no
    /// worker lives, and starts go on being tried, ever less often.
    setup_failures: u32,
    setup_retry: Option<Instant>,
    /// Why the last worker failed to start (or failed its initializer).
    start_error: String,
    /// Per job: the item first in line in a worker of it that died with
    /// no item recorded as running, and how many such deaths in a row
    /// found it there (see [`MAX_UNEXPLAINED_DEATHS`]).
    unexplained: JobMap<(u64, u8)>,
    last_check: Instant,
    /// When the manager last moved something.
    last_progress: Instant,
}

/// Starts one worker in `slot`.
pub(crate) fn start_worker(ctl: &Ctl, cfg: &Config, slot: usize) -> Result<Worker, PoolError> {
    let setup = |e: &dyn std::fmt::Display| PoolError::Setup(format!("worker {slot}: {e}"));
    let tasks = ByteQueue::new(frame::RING_BYTES, frame::MAX_FRAME as u64).map_err(|e| setup(&e))?;
    let results = ByteQueue::new(frame::RING_BYTES, frame::MAX_FRAME as u64).map_err(|e| setup(&e))?;
    // The worker maps them: a task that sets their persist flag must not
    // make the pool leave them behind.
    tasks.make_private();
    results.make_private();
    let tx = tasks.producer().map_err(|e| setup(&e))?;
    let rx = results.consumer().map_err(|e| setup(&e))?;
    // The worker opens the control segment by name and validates its
    // header, which an earlier worker's task may have scribbled over.
    ctl.restore_header();
    if let Some(w) = ctl.started(slot) {
        w.store(0, Ordering::Relaxed);
    }
    if let Some(w) = ctl.claimed(slot) {
        w.store(0, Ordering::Relaxed);
    }
    let arg = WorkerArg {
        ctl: ctl.segment().clone(),
        tasks: tasks.clone(),
        results: results.clone(),
        slot: slot as u32,
        init: cfg.init.clone(),
        max_tasks: cfg.max_tasks,
    };
    let mut process = Process::new(PoolWorker, arg)
        .with_name(format!("PoolWorker-{}", super::next_worker_number()))
        .with_daemon(true)
        .with_kill_at_exit();
    if let Some(m) = cfg.method {
        process = process.with_start_method(m);
    }
    if process.start_method() == StartMethod::Fork {
        // Before the fork: the worker must find its hook installed.
        super::worker::quiet_task_panics();
    }
    process.start().map_err(|e| setup(&e))?;
    let pid = process.pid().unwrap_or(0);
    #[cfg(feature = "test-hooks")]
    {
        let mut log = cfg.started.lock().unwrap_or_else(|p| p.into_inner());
        log.0.push(pid);
        log.1.extend([tasks.name().to_owned(), results.name().to_owned()]);
    }
    log::debug!(target: LOG_TARGET, "pool worker {pid} started in slot {slot}");
    Ok(Worker {
        slot,
        process,
        pid,
        tx,
        rx,
        fifo: VecDeque::new(),
        sent_frames: 0,
        revoked: 0,
        stalled: None,
        received: 0,
        seen_started: 0,
        since: Instant::now(),
        killed: None,
        _queues: (tasks, results),
    })
}

impl Manager {
    pub(crate) fn new(shared: &Arc<Shared>, cfg: Config, workers: Vec<Worker>) -> Manager {
        Manager {
            ctl: shared.ctl.clone(),
            shared: Arc::downgrade(shared),
            cfg,
            workers: workers.into_iter().map(Some).collect(),
            jobs: JobMap::default(),
            pending: VecDeque::new(),
            buf: Vec::new(),
            closed: false,
            cut: JobMap::default(),
            start_failures: 0,
            setup_failures: 0,
            setup_retry: None,
            start_error: String::new(),
            unexplained: JobMap::default(),
            last_check: Instant::now(),
            last_progress: Instant::now(),
        }
    }

    /// One turn of the manager thread: requests, results, liveness and
    /// timeouts (when due), restarts, dispatch. `None` when the manager
    /// is done (terminated, or closed with every job finished).
    fn tick(&mut self, shared: &Shared) -> Option<Idle> {
        let (msgs, state) = {
            let mut inbox = shared.lock_inbox();
            (std::mem::take(&mut inbox.msgs), inbox.state)
        };
        let mut progress = !msgs.is_empty();
        for m in msgs {
            self.handle(m);
        }
        if state == State::Terminating {
            self.terminate();
            return None;
        }
        if matches!(state, State::Closed | State::Joining) {
            self.closed = true;
        }
        if state == State::Joining {
            self.cut_inputs(shared);
        }
        progress |= self.drain_all(true).0;
        let now = Instant::now();
        let busy = !self.jobs.is_empty();
        // While callers help, every `LIVENESS` too: a job a helper
        // submits after this turn is watched in time (the sleep below is
        // until the next check: see `sleep`). SeqCst: as there.
        let period = if busy || shared.helpers.load(Ordering::SeqCst) > 0 { LIVENESS } else { IDLE_LIVENESS };
        if now.duration_since(self.last_check) >= period {
            self.last_check = now;
            self.check_workers();
        }
        self.fill_slots();
        progress |= self.dispatch();
        if self.closed && self.jobs.is_empty() && self.pending.is_empty() && self.stop_taking_requests(shared) {
            self.shutdown();
            return None;
        }
        if progress {
            self.last_progress = now;
        }
        let recent = now.duration_since(self.last_progress) < RECENT;
        Some(Idle { progress, busy, recent, next_check: self.last_check + period })
    }

    /// A helping caller's turn (see "Helping" in the module docs): the
    /// requests, results and dispatch of a manager turn, without its
    /// reaping, restarts and timeouts. True if the manager thread must
    /// look now (a worker's ring says it is gone).
    pub(crate) fn assist(&mut self, shared: &Shared) -> bool {
        let msgs = {
            let mut inbox = shared.lock_inbox();
            if inbox.state == State::Terminating {
                // The manager thread's (`terminate` woke it).
                return false;
            }
            take_msgs(&mut inbox.msgs)
        };
        let requests = !msgs.is_empty();
        if requests {
            for m in msgs {
                self.handle(m);
            }
        }
        let (got, gone) = self.drain_all(false);
        // Nothing new and nothing waiting: no frame to hand out or take
        // back (the common turn of a caller polling for its result).
        if requests || got || !self.pending.is_empty() {
            self.dispatch();
        }
        gone
    }

    /// A new job of one frame (`apply_async`), submitted by a caller (see
    /// "Helping"): taken as the manager thread would take it (after the
    /// requests waiting in the inbox), its frame dispatched at once.
    /// `Ok((wake, placed))`: whether the manager thread must look now (a
    /// worker gone, or the job has a timeout to enforce), and the worker
    /// slot and frame number the frame went to, if it went to a worker;
    /// `Closed` unless the pool is open.
    pub(crate) fn submit(
        &mut self,
        shared: &Shared,
        id: u64,
        sink: Arc<dyn Sink>,
        frame: Option<TaskFrame>,
    ) -> Result<(bool, Option<(usize, u64)>), PoolError> {
        let earlier = {
            let mut inbox = shared.lock_inbox();
            if inbox.state != State::Open {
                return Err(PoolError::Closed);
            }
            take_msgs(&mut inbox.msgs)
        };
        for m in earlier {
            self.handle(m);
        }
        let count = frame.as_ref().map_or(0, |f| u64::from(f.count));
        let timeout = self.cfg.timeout;
        self.jobs.insert(id, JobEntry { sink, timeout, cancelled: false, input_done: true, lazy: false, outstanding: count });
        if let Some(f) = frame {
            self.pending.push_back(f);
        }
        self.maybe_finish(id);
        let gone = self.drain_all(false).1;
        self.dispatch();
        let placed = self.workers.iter().flatten().find(|w| w.fifo.back().is_some_and(|s| s.job == id)).map(|w| (w.slot, w.sent_frames));
        Ok((gone || timeout.is_some(), placed))
    }

    /// Input of a job its caller streams (`Pool::submit_streamed`): taken
    /// as the manager thread would take it (after the requests waiting in
    /// the inbox, its own earlier batches among them), with a turn of
    /// help: results filed, frames dispatched. `Ok(wake)`: whether the
    /// manager thread must look now (a worker's ring says it is gone);
    /// `Closed` as [`Shared::send`] refuses.
    pub(crate) fn take_input(&mut self, shared: &Shared, msgs: Vec<Msg>, new_job: bool) -> Result<bool, PoolError> {
        let earlier = {
            let mut inbox = shared.lock_inbox();
            match inbox.state {
                State::Open => {}
                State::Closed | State::Joining if !new_job => {}
                _ => return Err(PoolError::Closed),
            }
            if msgs.iter().any(|m| inbox.cut_input(m)) {
                return Err(PoolError::Closed);
            }
            take_msgs(&mut inbox.msgs)
        };
        for m in earlier.into_iter().chain(msgs) {
            self.handle(m);
        }
        let gone = self.drain_all(false).1;
        self.dispatch();
        Ok(gone)
    }

    /// Whether a job is open or a frame waits: someone must watch the
    /// workers' rings.
    pub(crate) fn outstanding(&self) -> bool {
        !self.jobs.is_empty() || !self.pending.is_empty()
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Job { id, sink, timeout, lazy } => {
                let timeout = timeout.or(self.cfg.timeout);
                self.jobs.insert(id, JobEntry { sink, timeout, cancelled: false, input_done: false, lazy, outstanding: 0 });
            }
            Msg::Frames(frames) => {
                for f in frames {
                    if let Some(sink) = self.cut.get(&f.job) {
                        for k in 0..u64::from(f.count) {
                            sink.fail(TaskError::NotSubmitted { index: f.first + k });
                        }
                        continue;
                    }
                    match self.jobs.get_mut(&f.job) {
                        Some(j) if j.cancelled => {
                            let sink = Arc::clone(&j.sink);
                            for k in 0..u64::from(f.count) {
                                sink.fail(TaskError::Cancelled { index: f.first + k });
                            }
                        }
                        Some(j) => {
                            j.outstanding += u64::from(f.count);
                            self.pending.push_back(f);
                        }
                        None => {}
                    }
                }
            }
            Msg::InputDone { job } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.input_done = true;
                }
                self.maybe_finish(job);
            }
            Msg::Timeout { job, timeout } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.timeout = Some(timeout);
                }
            }
            Msg::Cancel { job } => self.cancel(job),
        }
    }

    fn cancel(&mut self, job: u64) {
        let Some(j) = self.jobs.get_mut(&job) else { return };
        if j.cancelled {
            return;
        }
        j.cancelled = true;
        let sink = Arc::clone(&j.sink);
        let mut failed = 0;
        self.pending.retain(|f| {
            if f.job != job {
                return true;
            }
            for k in 0..u64::from(f.count) {
                sink.fail(TaskError::Cancelled { index: f.first + k });
            }
            failed += u64::from(f.count);
            false
        });
        // Frames of it that workers have not taken up are taken back.
        for w in self.workers.iter_mut().flatten() {
            if w.fifo.back().is_some_and(|s| s.job == job)
                && let Some(f) = revoke_last(w, &self.ctl)
            {
                for k in 0..u64::from(f.count) {
                    sink.fail(TaskError::Cancelled { index: f.first + k });
                }
                failed += u64::from(f.count);
            }
        }
        self.account(job, failed);
        // Workers running one of its items (or holding only its items) are
        // stopped: their items of other jobs are handed to other workers.
        for w in self.workers.iter_mut().flatten() {
            if !w.fifo.iter().any(|s| s.job == job) {
                continue;
            }
            let current = in_progress(w, &self.ctl).map(|(j, _)| j);
            if current == Some(job) || (current.is_none() && w.fifo.iter().all(|s| s.job == job)) {
                kill(w, Kill::Cancel);
            }
        }
    }

    /// `join` waits: an `imap` whose caller has not pulled all of its
    /// input takes no more; the items it submitted still run (Python's
    /// `join` waits for every task submitted; its `imap` has submitted its
    /// whole input by then). Other jobs still taking input (a large `map`
    /// sent in batches by another thread) are not cut.
    /// The cut is published in the inbox first: later input of these jobs
    /// is refused at `send` (their imaps stop pulling input), and the input
    /// sent before it is handled as submitted.
    fn cut_inputs(&mut self, shared: &Shared) {
        let open: Vec<u64> = self.jobs.iter().filter(|(_, j)| j.lazy && !j.input_done).map(|(&id, _)| id).collect();
        if open.is_empty() {
            return;
        }
        let msgs = {
            let mut inbox = shared.lock_inbox();
            inbox.cut.extend_from_slice(&open);
            std::mem::take(&mut inbox.msgs)
        };
        for m in msgs {
            self.handle(m);
        }
        for id in open {
            let Some(j) = self.jobs.get_mut(&id) else { continue };
            j.input_done = true;
            self.cut.insert(id, Arc::clone(&j.sink));
            self.maybe_finish(id);
        }
    }

    /// Closed and no job open: refuses every later request (so no frame
    /// an `imap` sends after this is lost unanswered: its send fails),
    /// answers those that came meanwhile (only frames of jobs cut by
    /// `join` can need it: they fail), and ends the cut jobs. False if
    /// work is left after all (the manager goes on).
    fn stop_taking_requests(&mut self, shared: &Shared) -> bool {
        if self.cut.is_empty() {
            return true;
        }
        let msgs = {
            let mut inbox = shared.lock_inbox();
            inbox.state = State::Terminating;
            std::mem::take(&mut inbox.msgs)
        };
        for m in msgs {
            self.handle(m);
        }
        for (_, sink) in self.cut.drain() {
            sink.abort();
            result::drop_later(sink);
        }
        self.jobs.is_empty() && self.pending.is_empty()
    }

    /// `n` items of `job` got an outcome.
    fn account(&mut self, job: u64, n: u64) {
        account(&mut self.jobs, job, n);
    }

    fn maybe_finish(&mut self, job: u64) {
        maybe_finish(&mut self.jobs, job);
    }

    /// Reads every result frame the workers have sent: (whether any came,
    /// whether a worker's ring says it is gone). `reap`: bury such a
    /// worker now (the manager thread; a helper leaves it to it).
    fn drain_all(&mut self, reap: bool) -> (bool, bool) {
        let (mut any, mut gone_any) = (false, false);
        for i in 0..self.workers.len() {
            let Some(w) = self.workers[i].as_mut() else { continue };
            let (got, gone) = drain(w, &mut self.buf, &mut self.jobs);
            any |= got;
            if gone {
                gone_any = true;
                if reap {
                    // Its result ring says the worker left: reap it now.
                    self.check_slot(i);
                }
            }
        }
        (any, gone_any)
    }

    /// Looks at every worker: reaps the dead, enforces timeouts.
    fn check_workers(&mut self) {
        for i in 0..self.workers.len() {
            self.check_slot(i);
        }
    }

    fn check_slot(&mut self, i: usize) {
        let Some(w) = self.workers[i].as_mut() else { return };
        if w.process.is_alive() {
            self.check_claims(i);
            self.check_timeout(i);
            return;
        }
        let mut w = self.workers[i].take().expect("checked above");
        // Everything it sent before dying is in its ring.
        let _ = drain(&mut w, &mut self.buf, &mut self.jobs);
        self.bury(w);
    }

    /// The control record is shared memory its worker's tasks can write: a
    /// record that says the worker took up (or skipped as taken back) a
    /// frame it holds unanswered, while no item of it begins, for
    /// [`STALL_GRACE`] (a legitimate worker begins an item right after it
    /// takes up its frame), or that marks a frame taken back that the
    /// manager did not take back, means the worker skipped or will skip a
    /// frame the manager waits for: it is killed (its items run again
    /// elsewhere), or the frame would wait forever, its timeout never
    /// starting.
    fn check_claims(&mut self, i: usize) {
        let Some(w) = self.workers[i].as_mut() else { return };
        let (Some(claimed), Some(started)) = (self.ctl.claimed(w.slot), self.ctl.started(w.slot)) else { return };
        if w.killed.is_some() {
            return;
        }
        // Acquire: pairs with the worker's AcqRel CAS / Release store in
        // `ctl::claim` and its Release store of `started`.
        let c = claimed.load(Ordering::Acquire);
        let s = started.load(Ordering::Acquire);
        let (taken, marked) = ctl::taken_up(c);
        let front = w.fifo.iter().find(|f| f.answered < f.count).map(|f| f.n);
        let broken = marked.is_some_and(|n| n != w.revoked)
            || taken > w.sent_frames
            || (front.is_some_and(|n| n <= taken) && s == w.received);
        if !broken {
            w.stalled = None;
            return;
        }
        match w.stalled {
            Some((c0, s0, since)) if c0 == c && s0 == s => {
                if since.elapsed() >= STALL_GRACE {
                    log::warn!(
                        target: LOG_TARGET,
                        "pool worker {}: its control record ({c:#x}) passed a frame it did not run: killing it",
                        w.pid
                    );
                    kill(w, Kill::Stalled);
                }
            }
            _ => w.stalled = Some((c, s, Instant::now())),
        }
    }

    fn check_timeout(&mut self, i: usize) {
        let Some(w) = self.workers[i].as_mut() else { return };
        // Acquire: pairs with the worker's Release store of `started`.
        let Some(started) = self.ctl.started(w.slot).map(|s| s.load(Ordering::Acquire)) else { return };
        if started != w.seen_started {
            w.seen_started = started;
            w.since = Instant::now();
        }
        if w.killed.is_some() {
            return;
        }
        let Some((job, index)) = in_progress(w, &self.ctl) else { return };
        let Some(timeout) = self.jobs.get(&job).and_then(|j| j.timeout) else { return };
        if w.since.elapsed() > timeout {
            kill(w, Kill::Timeout { timeout, job, index });
        }
    }

    /// A worker ended: fail the item it was running, hand its other items
    /// to the others, start a replacement.
    fn bury(&mut self, mut w: Worker) {
        let signal = w.process.exitcode().filter(|&c| c < 0).map(|c| -c);
        // Acquire: pairs with the worker's Release store of `started`; the
        // worker is dead, so this is its last value.
        let started = self.ctl.started(w.slot).map_or(0, |s| s.load(Ordering::Acquire));
        // Untrusted (a task can write its worker's record): an index past
        // the items it holds names none.
        let unanswered: u64 = w.fifo.iter().map(|s| u64::from(s.count - s.answered)).sum();
        let lost = (started > w.received).then(|| started - 1 - w.received).filter(|&l| l < unanswered);
        log::info!(
            target: LOG_TARGET,
            "pool worker {} (slot {}) ended ({:?}); {} frame(s) unanswered",
            w.pid,
            w.slot,
            w.process.exitcode(),
            w.fifo.len()
        );
        // A worker that was stopped by a signal (the pool's own kill for a
        // timeout or cancel, an outside kill -9 or SIGTERM, the OOM killer)
        // did not fail to start, or five kills of fresh workers would shut
        // the pool down for good. An exit before its first item (whatever
        // its code: a worker exits 0 only after items, or when the pool
        // closes its ring) and a crash of its own (an initializer that
        // aborts, or panics under `panic = "abort"`) count: they would
        // repeat in every replacement, and the jobs would wait for good.
        let crashed = signal.is_some_and(|s| sysproc::CRASH_SIGNALS.contains(&s));
        let start_error = (signal.is_none() || crashed) && w.killed.is_none();
        // A worker that exits before its first item counts as a failed
        // start (below), which has its own bound.
        let failed_start = lost.is_none() && start_error && w.received == 0 && started == 0;
        let blame_first = lost.is_none() && !failed_start && self.unexplained_death(&w);
        if failed_start {
            // It died before its first item: a failing initializer, or a
            // start that went wrong.
            self.start_failures += 1;
            if self.start_failures >= MAX_START_FAILURES {
                self.setup_retry = Some(retry_at(self.start_failures - MAX_START_FAILURES + 1));
            }
            self.start_error = match w.process.join_timeout(Duration::ZERO) {
                Err(e) => e.to_string(),
                Ok(_) => match signal {
                    Some(s) => format!("pool worker {} was killed by signal {s} before its first task", w.pid),
                    None => format!("pool worker {} exited ({:?}) before its first task", w.pid, w.process.exitcode()),
                },
            };
            log::warn!(target: LOG_TARGET, "pool worker {} failed before its first task: {}", w.pid, self.start_error);
        } else {
            self.start_failures = 0;
        }
        let mut redo: Vec<TaskFrame> = Vec::new();
        let mut k = 0u64;
        for s in w.fifo.drain(..) {
            let bytes = s.frame.contiguous();
            let Some(h) = frame::parse_task(&bytes) else { continue };
            let mut items = h.items();
            let mut current: Option<TaskFrame> = None;
            for n in 0..s.count {
                let Some(item) = items.next() else { break };
                if n < s.answered {
                    continue;
                }
                let index = s.first + u64::from(n);
                let entry = self.jobs.get(&s.job);
                let cancelled = entry.is_some_and(|j| j.cancelled);
                let failure = if cancelled {
                    Some(TaskError::Cancelled { index })
                } else if Some(k) == lost {
                    match w.killed {
                        Some(Kill::Timeout { timeout, job, index: i }) if job == s.job && i == index => {
                            Some(TaskError::TimedOut { pid: w.pid, index, timeout })
                        }
                        // Killed for another item: this one runs again.
                        Some(Kill::Timeout { .. } | Kill::Cancel | Kill::Stalled) => None,
                        Some(Kill::Terminate) | None => Some(TaskError::WorkerLost { pid: w.pid, signal, index }),
                    }
                } else if blame_first && k == 0 {
                    // Its worker died again and again with this item first
                    // in line and its record saying none ran: this one.
                    Some(TaskError::WorkerLost { pid: w.pid, signal, index })
                } else {
                    None
                };
                if let Some(err) = failure {
                    if let Some(j) = entry {
                        j.sink.fail(err);
                    }
                    self.account(s.job, 1);
                    if let Some(f) = current.take() {
                        redo.push(f.finish(false));
                    }
                } else {
                    let f = current.get_or_insert_with(|| TaskFrame::new(s.job, index, h.id));
                    let pushed = f.push_raw(item);
                    debug_assert!(pushed, "an item that fitted in its frame fits in a smaller one");
                }
                k += 1;
            }
            if let Some(f) = current.take() {
                redo.push(f.finish(h.flags & frame::END_OF_CHUNK != 0));
            }
        }
        // First in line again, in their order (imap yields in order).
        for f in redo.into_iter().rev() {
            self.pending.push_front(f);
        }
        let _ = w.process.join_timeout(Duration::from_secs(1));
        let _ = w.process.close();
        let slot = w.slot;
        drop(w);
        self.start_in(slot);
    }

    /// `w` died with unanswered items and its record names none as
    /// running (a death between two items, or a record a task rewrote):
    /// true if the item first in line has now been there for more than
    /// [`MAX_UNEXPLAINED_DEATHS`] such deaths (it is then failed, not run
    /// again).
    fn unexplained_death(&mut self, w: &Worker) -> bool {
        // (Also after the pool's own kill for a malformed result frame:
        // the task may have written the frame and cleared the word.)
        let Some(s) = w.fifo.front() else { return false };
        let index = s.first + u64::from(s.answered);
        let jobs = &self.jobs;
        self.unexplained.retain(|job, _| jobs.contains_key(job));
        let e = self.unexplained.entry(s.job).or_insert((index, 0));
        if e.0 != index {
            *e = (index, 0);
        }
        e.1 += 1;
        if e.1 > MAX_UNEXPLAINED_DEATHS {
            self.unexplained.remove(&s.job);
            return true;
        }
        false
    }

    fn start_in(&mut self, slot: usize) {
        if self.setup_retry.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match start_worker(&self.ctl, &self.cfg, slot) {
            Ok(w) => {
                self.workers[slot] = Some(w);
                self.setup_failures = 0;
                self.setup_retry = None;
            }
            Err(e) => {
                self.setup_failures += 1;
                self.setup_retry = Some(retry_at(self.setup_failures));
                log::warn!(target: LOG_TARGET, "cannot start a pool worker: {e}");
                self.start_error = e.to_string();
            }
        }
    }

    /// Restarts workers in empty slots; gives up on every job while no
    /// worker lives and new ones keep failing to start (their initializer
    /// fails, or none can be set up: a full /dev/shm). Starts go on being
    /// tried, ever less often, and jobs work again once one succeeds; a
    /// worker that lives goes on serving the jobs meanwhile.
    fn fill_slots(&mut self) {
        for slot in 0..self.workers.len() {
            if self.workers[slot].is_none() {
                self.start_in(slot);
            }
        }
        let no_worker = self.workers.iter().all(Option::is_none);
        if (self.start_failures >= MAX_START_FAILURES || self.setup_failures >= MAX_START_FAILURES)
            && no_worker
            && !self.jobs.is_empty()
        {
            log::error!(target: LOG_TARGET, "pool workers keep failing to start: failing every job");
            let message = format!("the pool's workers keep failing to start; the last: {}", self.start_error);
            self.fail_everything(|index| TaskError::Refused { pid: 0, index, message: message.clone() });
        }
    }

    /// Hands pending frames to workers: first one to each idle worker, then
    /// a second to each worker (prefetch) while frames of several items wait
    /// (`steal` takes such a frame back when a worker would sit idle).
    fn dispatch(&mut self) -> bool {
        self.steal();
        let mut any = false;
        for depth in 1..=2usize {
            for w in self.workers.iter_mut().flatten() {
                if w.killed.is_some() || w.fifo.len() >= depth || (depth == 2 && slow(w, &self.ctl)) {
                    continue;
                }
                let Some(f) = self.pending.pop_front() else { return any };
                if depth == 2 && f.count < 2 {
                    self.pending.push_front(f);
                    continue;
                }
                match f.try_send(&mut w.tx) {
                    Ok(()) => {
                        any = true;
                        w.sent_frames += 1;
                        w.fifo.push_back(Sent { n: w.sent_frames, job: f.job, first: f.first, count: f.count, answered: 0, frame: f });
                    }
                    Err(TrySendError::Full) => self.pending.push_front(f),
                    Err(e) => {
                        log::debug!(target: LOG_TARGET, "pool worker {}: task ring refused a frame: {e}", w.pid);
                        self.pending.push_front(f);
                    }
                }
            }
        }
        any
    }

    /// Idle workers and nothing pending: frames handed ahead to busy
    /// workers (and not taken up yet) are taken back for the idle ones, so
    /// no frame waits behind a long item while a worker is free.
    fn steal(&mut self) {
        let idle = self.workers.iter().flatten().filter(|w| w.killed.is_none() && w.fifo.is_empty()).count();
        let mut wanted = idle.saturating_sub(self.pending.len());
        for w in self.workers.iter_mut().flatten() {
            if wanted == 0 {
                return;
            }
            if w.killed.is_none()
                && w.fifo.len() >= 2
                && let Some(f) = revoke_last(w, &self.ctl)
            {
                self.pending.push_front(f);
                wanted -= 1;
            }
        }
    }

    /// Fails every item the manager knows of, and aborts every job.
    fn fail_everything(&mut self, err: impl Fn(u64) -> TaskError) {
        for f in std::mem::take(&mut self.pending) {
            if let Some(j) = self.jobs.get(&f.job) {
                for k in 0..u64::from(f.count) {
                    j.sink.fail(err(f.first + k));
                }
            }
        }
        for w in self.workers.iter_mut().flatten() {
            for s in w.fifo.drain(..) {
                if let Some(j) = self.jobs.get(&s.job) {
                    for n in s.answered..s.count {
                        j.sink.fail(err(s.first + u64::from(n)));
                    }
                }
            }
        }
        for (_, j) in self.jobs.drain() {
            j.sink.abort();
            result::drop_later(j.sink);
        }
    }

    fn terminate(&mut self) {
        for w in self.workers.iter_mut().flatten() {
            kill(w, Kill::Terminate);
        }
        // What arrived before the kill still counts.
        self.drain_all_quietly();
        self.fail_everything(|index| TaskError::Terminated { index });
        self.reap_all();
    }

    fn drain_all_quietly(&mut self) {
        for w in self.workers.iter_mut().flatten() {
            let _ = drain(w, &mut self.buf, &mut self.jobs);
        }
    }

    /// Closed and every job done: the workers leave when their task rings
    /// close.
    fn shutdown(&mut self) {
        for w in self.workers.iter().flatten() {
            w._queues.0.close();
        }
        for w in self.workers.iter_mut().flatten() {
            if !matches!(w.process.join_timeout(Duration::from_secs(5)), Ok(true)) && w.process.is_alive() {
                log::warn!(target: LOG_TARGET, "pool worker {} did not leave when the pool closed: killing it", w.pid);
                let _ = w.process.kill();
            }
        }
        self.reap_all();
    }

    fn reap_all(&mut self) {
        for w in self.workers.iter_mut().filter_map(Option::take) {
            let mut w = w;
            let _ = w.process.join_timeout(Duration::from_secs(5));
            let _ = w.process.close();
        }
    }
}

impl Drop for Manager {
    /// However the manager thread ends (also by a panic), nobody waits
    /// forever: new work is refused, every job still open is aborted, and
    /// the workers are killed and reaped.
    fn drop(&mut self) {
        let msgs = match self.shared.upgrade() {
            Some(shared) => {
                let mut inbox = shared.lock_inbox();
                inbox.state = super::State::Terminating;
                std::mem::take(&mut inbox.msgs)
            }
            None => Vec::new(),
        };
        for m in msgs {
            if let Msg::Job { sink, .. } = m {
                sink.abort();
            }
        }
        if !self.jobs.is_empty() || self.workers.iter().any(Option::is_some) {
            for w in self.workers.iter_mut().flatten() {
                kill(w, Kill::Terminate);
            }
            self.fail_everything(|index| TaskError::Terminated { index });
            self.reap_all();
        }
    }
}

/// Kills and reaps workers started for a pool that could not be built.
pub(crate) fn discard(workers: Vec<Worker>) {
    for mut w in workers {
        let _ = w.process.kill();
        let _ = w.process.join_timeout(Duration::from_secs(5));
        let _ = w.process.close();
    }
}

/// Kills `w` (SIGKILL through its pidfd), remembering why.
fn kill(w: &mut Worker, why: Kill) {
    if w.killed.is_none() {
        w.killed = Some(why);
    }
    let _ = w.process.kill();
}

/// Takes back `w`'s last task frame if the worker has not taken it up (it
/// will skip it).
fn revoke_last(w: &mut Worker, ctl: &Ctl) -> Option<TaskFrame> {
    if w.fifo.is_empty() || !ctl::revoke(ctl.claimed(w.slot)?, w.sent_frames) {
        return None;
    }
    w.revoked = w.sent_frames;
    w.fifo.pop_back().map(|s| s.frame)
}

/// A frame taken back from `w` is still ahead of it in its ring (its
/// `claimed` word has not passed it): nothing is to be handed ahead to it.
fn slow(w: &Worker, ctl: &Ctl) -> bool {
    // Acquire: pairs with the worker's AcqRel CAS / Release store in
    // `ctl::claim`.
    w.revoked != 0
        && ctl.claimed(w.slot).is_none_or(|c| !ctl::passed(c.load(Ordering::Acquire), w.revoked))
}

/// The (job, index) of the item `w` is running, if any.
fn in_progress(w: &Worker, ctl: &Ctl) -> Option<(u64, u64)> {
    // Acquire: pairs with the worker's Release store of `started`.
    let started = ctl.started(w.slot)?.load(Ordering::Acquire);
    let mut k = started.checked_sub(1)?.checked_sub(w.received)?;
    for s in &w.fifo {
        let left = u64::from(s.count - s.answered);
        if k < left {
            return Some((s.job, s.first + u64::from(s.answered) + k));
        }
        k -= left;
    }
    None
}

/// The inbox's requests (no allocation or free when there are none).
fn take_msgs(msgs: &mut Vec<Msg>) -> Vec<Msg> {
    if msgs.is_empty() { Vec::new() } else { std::mem::take(msgs) }
}

/// `n` items of `job` got an outcome.
fn account(jobs: &mut JobMap<JobEntry>, job: u64, n: u64) {
    if let Some(j) = jobs.get_mut(&job) {
        j.outstanding = j.outstanding.saturating_sub(n);
    }
    maybe_finish(jobs, job);
}

fn maybe_finish(jobs: &mut JobMap<JobEntry>, job: u64) {
    if jobs.get(&job).is_some_and(|j| j.input_done && j.outstanding == 0)
        && let Some(j) = jobs.remove(&job)
    {
        // Its results (user values) may be dropped with it: not under
        // the lock.
        result::drop_later(j.sink);
    }
}

/// Reads `w`'s result frames (through `buf`) into their jobs; (whether
/// any came, whether the ring says the worker is gone or it sent garbage).
fn drain(w: &mut Worker, buf: &mut Vec<u8>, jobs: &mut JobMap<JobEntry>) -> (bool, bool) {
    let mut got = false;
    loop {
        match recv_result(w, buf, jobs) {
            Ok(true) => got = true,
            Ok(false) => {
                got = true;
                if !accept(w, buf, jobs) {
                    log::warn!(target: LOG_TARGET, "pool worker {} sent a malformed result frame: killing it", w.pid);
                    kill(w, Kill::Terminate);
                    return (got, true);
                }
            }
            Err(TryRecvError::Empty) => return (got, false),
            Err(_) => return (got, true),
        }
    }
}

/// Takes `w`'s next result frame: a packed frame of plain-data values of a
/// bulk job is filed here, copied once from the ring into its place in the
/// job's results (`Ok(true)`); any other is copied into `buf` for
/// [`accept`] (`Ok(false)`).
fn recv_result(w: &mut Worker, buf: &mut Vec<u8>, jobs: &mut JobMap<JobEntry>) -> Result<bool, TryRecvError> {
    let loan = w.rx.try_recv_loan()?;
    let mut header = [0u8; frame::RESULT_HEADER_LEN];
    if let Some(at) = loan.len().checked_sub(header.len()) {
        loan.read_at(0, &mut header);
        // Untrusted: read once into locals, checked against what the
        // worker was given before anything is stored.
        if let Some((job, first, count, width)) = frame::packed_result(&header, loan.len())
            && let Some(front) = w.fifo.front_mut()
            && job == front.job
            && Some(first) == front.first.checked_add(u64::from(front.answered))
            && count <= front.count - front.answered
            && let Some(j) = jobs.get(&job).filter(|j| !j.cancelled)
            && at == count as usize * width
            // This answers the rest of the frame (validated above), so its
            // arguments are needed no more (whichever way it is filed): let
            // them go before the job can finish, so a `map` right after it
            // finds the pool's arena free for reuse.
            && (count < front.count - front.answered || front.frame.release_args())
            && j.sink.deliver_pod(first, count, width, &mut |dst| {
                let n = dst.len().min(at);
                // SAFETY: the `at` value bytes follow the header inside the lent
                // frame, which the worker does not reuse before `release`; n <= at.
                unsafe { crate::shm::copy::copy_from_shared_uninit(loan.as_ptr().add(frame::RESULT_HEADER_LEN), &mut dst[..n]) };
                dst[n..].fill(std::mem::MaybeUninit::new(0));
            })
        {
            loan.release();
            front.answered += count;
            if front.answered == front.count {
                w.fifo.pop_front();
            }
            w.received += u64::from(count);
            account(jobs, job, u64::from(count));
            return Ok(true);
        }
    }
    buf.clear();
    buf.resize(loan.len(), 0);
    loan.read_at(0, buf);
    loan.release();
    Ok(false)
}

/// Files one result frame (`frame`) from `w`; false if it does not match
/// what `w` was given (a corrupted or hostile worker).
fn accept(w: &mut Worker, frame: &[u8], jobs: &mut JobMap<JobEntry>) -> bool {
    let Some(h) = frame::parse_result(frame) else { return false };
    let Some(front) = w.fifo.front_mut() else { return false };
    if h.job != front.job
        || Some(h.first) != front.first.checked_add(u64::from(front.answered))
        || h.count == 0
        || h.count > front.count - front.answered
    {
        return false;
    }
    front.answered += h.count;
    let done = if front.answered == front.count { w.fifo.pop_front() } else { None };
    w.received += u64::from(h.count);
    if let Some(j) = jobs.get(&h.job) {
        // Its buffer back to the job (before the job can finish), for an
        // `apply` recycled with it (no allocation per call).
        if let Some(s) = done {
            j.sink.give_back(s.frame.bytes);
        }
        if j.cancelled {
            for k in 0..u64::from(h.count) {
                j.sink.fail(TaskError::Cancelled { index: h.first + k });
            }
        } else {
            j.sink.deliver(h.first, h.count, h.items(), w.pid);
        }
    }
    account(jobs, h.job, u64::from(h.count));
    true
}

/// What the manager thread saw in its last turn (to choose its sleep).
struct Idle {
    progress: bool,
    busy: bool,
    recent: bool,
    /// When the turn's liveness check is next due (by the period the turn
    /// used: the sleep ends then, never before the turn it would need).
    next_check: Instant,
}

/// The manager thread: turns (`Manager::tick`) and sleeps until the pool
/// is done; then the manager is dropped (which aborts whatever is left,
/// also after a panic).
pub(crate) fn run(shared: Arc<Shared>) {
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| run_loop(&shared)));
    let m = shared.lock_core().take();
    // The callbacks of the jobs it aborts go to the callback thread too,
    // then no more come (helpers queue theirs before they let go of the
    // state, which is gone now).
    let ((), callbacks) = result::deferring_callbacks(|| drop(m));
    result::drop_deferred();
    shared.callbacks.post(callbacks);
    shared.callbacks.manager_done();
    if let Err(payload) = r {
        std::panic::resume_unwind(payload);
    }
}

fn run_loop(shared: &Shared) {
    loop {
        // Read before looking at anything: a bump after this makes the
        // sleep below return at once. SeqCst: pairs with the SeqCst RMWs
        // in `Ctl::bump` (whose result frame we then see) and
        // `Shared::notify`.
        let seen = shared.ctl.seq().load(Ordering::SeqCst);
        let seen_req = shared.req.load(Ordering::SeqCst);
        let idle = {
            let mut core = shared.lock_core();
            let Some(m) = core.as_mut() else { return };
            let (idle, callbacks) = result::deferring_callbacks(|| m.tick(shared));
            // Callbacks run on their own thread: one that submits or
            // waits on this pool holds up neither the lock nor this thread.
            shared.callbacks.post(callbacks);
            idle
        };
        result::drop_deferred();
        let Some(idle) = idle else { return };
        if !idle.progress {
            sleep(shared, seen, seen_req, &idle);
        }
    }
}

/// Sleeps until a worker or user bumps `seq` (or, while callers help, a
/// user calls `Shared::notify`), or the next liveness check.
fn sleep(shared: &Shared, seen: u32, seen_req: u32, idle: &Idle) {
    let ctl = &shared.ctl;
    // SeqCst: pairs with the SeqCst RMWs in `Shared::start_helping` /
    // `stop_helping`.
    let helped = || shared.helpers.load(Ordering::SeqCst) > 0;
    if !helped() && (idle.busy || idle.recent) {
        // A result is likely due soon: look for a while before paying
        // for a futex sleep and wake-up (not while callers help: they
        // look, and the cores are theirs and the workers').
        let mut spins = 0;
        while spin_step(WaitStrategy::Blocking, &mut spins, &MANAGER_SPIN) {
            if ctl.seq().load(Ordering::Relaxed) != seen || shared.req.load(Ordering::Relaxed) != seen_req || helped() {
                return;
            }
        }
    }
    let helped = helped();
    // Until the next check as the turn computed it (with the period it
    // used: a period computed again here could be shorter, its deadline
    // passed with no check due in the turn, and the thread would loop
    // without sleeping). Passed already (a slow turn): the next turn checks.
    let Some(left) = idle.next_check.checked_duration_since(Instant::now()) else { return };
    if helped {
        // Callers poll the rings for results: sleep where only users
        // (`Shared::notify`: requests, a helper leaving work behind,
        // callbacks) wake us, not every result. SeqCst store then SeqCst
        // load: pairs with `Shared::notify` (a Dekker handshake, as for
        // `seq`).
        shared.req_waiting.store(1, Ordering::SeqCst);
        if shared.req.load(Ordering::SeqCst) == seen_req {
            wait32(&shared.req, seen_req, Deadline::after(left));
        }
        shared.req_waiting.store(0, Ordering::Relaxed);
        return;
    }
    // SeqCst store then SeqCst load: pairs with `Ctl::bump` (see there).
    ctl.waiting().store(1, Ordering::SeqCst);
    if ctl.seq().load(Ordering::SeqCst) == seen {
        wait32(ctl.seq(), seen, Deadline::after(left));
    }
    ctl.waiting().store(0, Ordering::Relaxed);
}
