//! Where results land: a job's shared state (filled by the pool's manager
//! thread, read by the caller), [`AsyncResult`], and the `imap` iterators.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::cell::{Cell, RefCell};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::bulk::Bulk;
use super::error::{GetTimeoutError, PoolError, TaskError};
use super::frame::Items;
use super::task::Status;
use super::{Callback, Shared};
use crate::process::Handoff;
use crate::wait::Deadline;
use crate::wait::WaitStrategy;
use crate::wait::spin::{SpinPolicy, spin_step};

/// How long a caller of `get`/`wait` helps (polls the workers' rings
/// itself: see `manager.rs`, "Helping") before sleeping on the condvar: a
/// result due in microseconds saves a sleep and a wake-up on each side.
/// The pure steps (a few microseconds) cover a short task's round trip
/// when the worker has a core of its own (no system call); after them the
/// caller yields every other step, as the worker may be waiting for this
/// very core (more runnable threads than cores); then it sleeps. At most
/// `Shared::max_helpers` callers poll at once (the others sleep at once:
/// the pollers file their results and wake them), so many callers waiting
/// for long items cost a few hundred steps each, not a core.
const HELP_SPIN: SpinPolicy = SpinPolicy { pure: 24, limit: 256, yield_every: 2 };

/// Steps a waiting caller spins before it takes a frame its worker has not
/// taken up for a sign that the worker is not running (a worker that is
/// polling takes it up well within them).
const UNCLAIMED_GRACE: u32 = 4;

thread_local! {
    /// Set while a thread works on the manager's state (under its lock):
    /// completion callbacks are then collected in [`DEFERRED`], for the
    /// callback thread ([`Callbacks`]).
    static DEFERRING: Cell<bool> = const { Cell::new(false) };
    static DEFERRED: RefCell<Vec<Callback>> = const { RefCell::new(Vec::new()) };
    /// Jobs whose last reference the manager let go of while
    /// [`DEFERRING`]: dropped by [`drop_deferred`] after the lock (their
    /// results are user values, whose `Drop` may panic). The vector keeps
    /// its capacity: no allocation per job.
    static DROPS: RefCell<Vec<Arc<dyn Sink>>> = const { RefCell::new(Vec::new()) };
}

/// Lets go of a job's sink: while the manager's state is locked (see
/// [`deferring_callbacks`]) the sink is kept until [`drop_deferred`] (if
/// this was its last reference, its results' user `Drop`s run then, not
/// under the lock); else now.
pub(crate) fn drop_later(sink: Arc<dyn Sink>) {
    if DEFERRING.with(Cell::get) {
        DROPS.with(|d| d.borrow_mut().push(sink));
    }
}

/// Drops the sinks [`drop_later`] kept in this thread (after the
/// manager's lock is released). A user `Drop` that panics is logged, as a
/// panicking callback is: the caller that happened to help has nothing to
/// do with it.
pub(crate) fn drop_deferred() {
    loop {
        let Some(sink) = DROPS.with(|d| d.borrow_mut().pop()) else { return };
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(sink))) {
            log::error!(
                target: crate::process::LOG_TARGET,
                "dropping a pool result panicked: {}",
                super::task::panic_message(&*payload)
            );
            crate::process::drop_payload(payload);
        }
    }
}

/// Runs `f` with the completion callbacks of the jobs it finishes
/// collected instead of run: returns them with `f`'s value.
#[inline]
pub(crate) fn deferring_callbacks<T>(f: impl FnOnce() -> T) -> (T, Vec<Callback>) {
    /// Stops collecting however `f` ends (a panic drops what it collected).
    struct Stop;
    impl Drop for Stop {
        fn drop(&mut self) {
            DEFERRING.with(|d| d.set(false));
        }
    }
    DEFERRING.with(|d| d.set(true));
    let stop = Stop;
    let v = f();
    drop(stop);
    // Empty in the common case: no allocation, nothing to hand over.
    let callbacks = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    (v, callbacks)
}

/// Runs a completion callback. A panicking callback is the caller's bug,
/// not the pool's: it is logged and the pool goes on.
pub(crate) fn run_callback(cb: Callback) {
    if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb)) {
        log::error!(
            target: crate::process::LOG_TARGET,
            "a pool result callback panicked: {}",
            super::task::panic_message(&*payload)
        );
        crate::process::drop_payload(payload);
    }
}

/// The pool's completion callbacks, run one after another on a thread of
/// their own (named `shmproc-pool-cb`, started with the first callback),
/// like Python's result-handler thread: never on the manager thread, so
/// a callback that waits (for instance for another result of its pool)
/// holds up only the callbacks after it, never the pool's work.
#[derive(Default)]
pub(crate) struct Callbacks {
    queue: Mutex<CallbackQueue>,
    cond: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The callback thread's id, set before it runs any callback: `join`
    /// from that thread returns without taking `thread`'s lock (another
    /// joiner may hold it while it waits for this very thread).
    id: std::sync::OnceLock<std::thread::ThreadId>,
}

#[derive(Default)]
struct CallbackQueue {
    items: Vec<Callback>,
    started: bool,
    /// The thread sleeps on the condvar.
    sleeping: bool,
    /// The manager has ended: no callback comes any more (the thread
    /// leaves once the queue is empty).
    manager_done: bool,
    /// The thread left (or never started and the manager has ended):
    /// a callback posted now runs in its poster.
    exited: bool,
}

impl Callbacks {
    fn lock(&self) -> MutexGuard<'_, CallbackQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues callbacks for the callback thread (started here with the
    /// first). No user code runs here: callers may hold the manager's
    /// lock (queued before it is released, they run before the manager
    /// can end: see `manager::run`).
    pub(crate) fn post(self: &Arc<Self>, callbacks: Vec<Callback>) {
        if callbacks.is_empty() {
            return;
        }
        let mut q = self.lock();
        if q.exited {
            drop(q);
            callbacks.into_iter().for_each(run_callback);
            return;
        }
        q.items.extend(callbacks);
        if !q.started {
            let this = Arc::clone(self);
            match std::thread::Builder::new().name("shmproc-pool-cb".into()).spawn(move || this.run()) {
                Ok(h) => {
                    q.started = true;
                    // Under `queue`'s lock, which the thread takes before
                    // its first callback.
                    let _ = self.id.set(h.thread().id());
                    *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
                }
                Err(e) => {
                    log::error!(target: crate::process::LOG_TARGET, "cannot start the pool's callback thread ({e}): running callbacks here");
                    let now = std::mem::take(&mut q.items);
                    drop(q);
                    now.into_iter().for_each(run_callback);
                }
            }
        } else if q.sleeping {
            self.cond.notify_one();
        }
    }

    /// The callback thread.
    fn run(&self) {
        let mut q = self.lock();
        loop {
            if !q.items.is_empty() {
                let now = std::mem::take(&mut q.items);
                drop(q);
                now.into_iter().for_each(run_callback);
                q = self.lock();
            } else if q.manager_done {
                q.exited = true;
                return;
            } else {
                q.sleeping = true;
                q = self.cond.wait(q).unwrap_or_else(|p| p.into_inner());
                q.sleeping = false;
            }
        }
    }

    /// The manager has ended (after posting its last callbacks).
    pub(crate) fn manager_done(&self) {
        let mut q = self.lock();
        q.manager_done = true;
        if !q.started {
            q.exited = true;
        }
        self.cond.notify_one();
    }

    /// Waits for the callback thread to finish (after `manager_done`),
    /// unless called from it (a callback that joins or drops its pool).
    pub(crate) fn join(&self) {
        // Before the lock: another thread in `join` holds it while it waits
        // for this one to finish.
        if self.id.get() == Some(&std::thread::current().id()) {
            return;
        }
        let mut slot = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.take() {
            let _ = h.join();
        }
    }
}

/// One item's outcome (the error boxed: slots stay small).
pub(crate) type Outcome<R> = Result<R, Box<TaskError>>;

/// A job's results as they arrive.
pub(crate) struct JobState<R> {
    /// In-order jobs keep a window of slots from `base`; unordered ones
    /// a queue in completion order.
    ordered: bool,
    slots: VecDeque<Option<Outcome<R>>>,
    base: u64,
    done: VecDeque<(u64, Outcome<R>)>,
    /// Items with an outcome so far, and how many the job has (once known).
    filled: u64,
    expected: Option<u64>,
    /// Set when the pool gave up on the job (terminated) before every item
    /// had an outcome.
    pub(super) aborted: bool,
    /// The results were taken (`get`) or are being consumed by an iterator.
    taken: bool,
    on_done: Option<Box<dyn FnOnce() + Send>>,
    /// Threads asleep on the condvar for any progress (an `imap`'s next
    /// item; counted under the lock).
    waiters: u32,
    /// Threads asleep on the condvar until the job is finished (`get`,
    /// `wait`): woken only then, not by every result frame (a `map` of
    /// a million items has dozens of frames; each wake-up of a caller
    /// that goes back to sleep took a core's turn from the workers).
    finish_waiters: u32,
    /// Plain-data results of a job of known size: they land here (in
    /// place, a frame at a time) and `slots` stays empty.
    bulk: Option<Bulk<R>>,
    /// The buffer of the job's task frame, given back by the manager once
    /// the frame is answered ([`Sink::give_back`]): a recycled `apply`
    /// job builds its next frame in it (see [`Finisher::recycle`]).
    spare: Vec<u8>,
}

impl<R> JobState<R> {
    /// Back to a new one-item job's state (an `apply`'s, as `Job::new(true,
    /// Some(1), false)` makes it), keeping its buffers' capacity.
    fn reset_one(&mut self) {
        self.ordered = true;
        self.slots.clear();
        self.slots.push_back(None);
        self.base = 0;
        self.done.clear();
        self.filled = 0;
        self.expected = Some(1);
        self.aborted = false;
        self.taken = false;
        self.on_done = None;
        self.waiters = 0;
        self.finish_waiters = 0;
        self.bulk = None;
    }

    fn finished(&self) -> bool {
        self.aborted || self.expected.is_some_and(|n| self.filled >= n)
    }

    #[inline]
    fn store(&mut self, index: u64, outcome: Outcome<R>) {
        if let Some(b) = self.bulk.as_mut() {
            if b.put(index, outcome) {
                self.filled += 1;
            }
            return;
        }
        if self.ordered {
            let Some(at) = index.checked_sub(self.base) else { return };
            let at = at as usize;
            if self.slots.len() <= at {
                // Only jobs of unknown size grow here (`Job::new` gives the
                // others every slot at once).
                self.slots.resize_with(at + 1, || None);
            }
            let slot = &mut self.slots[at];
            if slot.is_none() {
                *slot = Some(outcome);
                self.filled += 1;
            }
        } else {
            self.done.push_back((index, outcome));
            self.filled += 1;
        }
    }

    /// The next outcome in this job's order, if it is there.
    pub(super) fn pop(&mut self) -> Option<(u64, Outcome<R>)> {
        if let Some(b) = self.bulk.as_mut() {
            let index = self.base;
            let i = usize::try_from(index).ok().filter(|&i| b.has(i))?;
            self.base += 1;
            return Some((index, b.take(i)));
        }
        if self.ordered {
            if self.slots.front().is_some_and(Option::is_some) {
                let o = self.slots.pop_front().flatten().expect("checked above");
                let index = self.base;
                self.base += 1;
                return Some((index, o));
            }
            None
        } else {
            self.done.pop_front()
        }
    }
}

/// A job's state, shared by the caller's handle and the manager thread.
pub(crate) struct Job<R> {
    state: Mutex<JobState<R>>,
    cond: Condvar,
    /// Set (Release) once the state is finished: waiters spin on it a
    /// little before sleeping on the condvar.
    finished: AtomicBool,
}

impl<R> Job<R> {
    /// A job's state; its results take the bulk path if `bulk` (in order,
    /// of known size, and `R`'s encoding its memory image: see [`Bulk::new`]).
    pub(crate) fn new(ordered: bool, expected: Option<u64>, bulk: bool) -> Arc<Job<R>> {
        // A job of known size gets its slots at once (no growth per item).
        let mut slots = VecDeque::new();
        let mut bulk_state = None;
        if let (true, Some(n)) = (ordered, expected) {
            if bulk {
                bulk_state = Some(Bulk::new(n as usize));
            } else {
                slots.resize_with(n as usize, || None);
            }
        }
        Arc::new(Job {
            state: Mutex::new(JobState {
                ordered,
                slots,
                base: 0,
                done: VecDeque::new(),
                filled: 0,
                expected,
                aborted: false,
                taken: false,
                on_done: None,
                waiters: 0,
                finish_waiters: 0,
                bulk: bulk_state,
                spare: Vec::new(),
            }),
            cond: Condvar::new(),
            finished: AtomicBool::new(false),
        })
    }

    /// An ordered job whose input is still being read (a streamed `map`):
    /// no item count until [`set_len`](Self::set_len) gives it (it cannot
    /// finish before); with `bulk` (`R` is plain data whose encoding is its
    /// memory image: see [`Bulk::new`]) its values land in place, with
    /// room for `n` (its iterator's size hint).
    pub(crate) fn streaming(n: usize, bulk: bool) -> Arc<Job<R>> {
        let job = Job::new(true, None, false);
        if bulk {
            job.lock().bulk = Some(Bulk::new(n));
        }
        job
    }

    /// A streamed job's input holds `n` items after all: room for them
    /// (before any frame past the room it had is sent), and, with `last`,
    /// its item count (it may finish now).
    pub(crate) fn set_len(&self, n: u64, last: bool) {
        self.update(|s| {
            if let Some(b) = s.bulk.as_mut() {
                b.resize(n as usize);
            }
            if last {
                s.expected = Some(n);
            }
        });
    }

    fn lock(&self) -> MutexGuard<'_, JobState<R>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many items the job has, once known.
    pub(crate) fn expected(&self) -> Option<u64> {
        self.lock().expected
    }

    /// Stores outcomes under one lock; wakes waiters; runs the completion
    /// callback (outside the lock) if this finished the job.
    fn update(&self, f: impl FnOnce(&mut JobState<R>)) {
        let mut s = self.lock();
        let was = s.finished();
        f(&mut s);
        let now = s.finished();
        if now {
            // Release: pairs with the Acquire load in `spin_until_finished`
            // (which then takes the lock anyway).
            self.finished.store(true, Ordering::Release);
        }
        let cb = if now && !was { s.on_done.take() } else { None };
        // Waiters register under the lock before sleeping: no waiter, no
        // wake-up system call; one that waits for the end only at the end.
        let wake = s.waiters > 0 || (now && s.finish_waiters > 0);
        drop(s);
        if wake {
            self.cond.notify_all();
        }
        if let Some(cb) = cb {
            // Under the manager's lock: collected, to run after it (see
            // `deferring_callbacks`); else now.
            if DEFERRING.with(Cell::get) {
                DEFERRED.with(|d| d.borrow_mut().push(cb));
            } else {
                run_callback(cb);
            }
        }
    }

    /// Whether the job is finished (no lock).
    #[inline]
    fn is_finished(&self) -> bool {
        // Acquire: pairs with the Release store in `update` (the caller
        // takes the lock anyway to read the state).
        self.finished.load(Ordering::Acquire)
    }

    /// Waits until `ready` holds for the state or `deadline` passes
    /// (woken by every update: see [`wait_finished`](Self::wait_finished)).
    pub(super) fn wait_for(&self, deadline: Deadline, ready: impl Fn(&JobState<R>) -> bool) -> MutexGuard<'_, JobState<R>> {
        self.wait_counted(deadline, ready, |s| &mut s.waiters)
    }

    /// Waits until the job is finished or `deadline` passes: woken only
    /// by the update that finishes it (see `update`).
    pub(super) fn wait_finished(&self, deadline: Deadline) -> MutexGuard<'_, JobState<R>> {
        self.wait_counted(deadline, JobState::finished, |s| &mut s.finish_waiters)
    }

    fn wait_counted(
        &self,
        deadline: Deadline,
        ready: impl Fn(&JobState<R>) -> bool,
        count: fn(&mut JobState<R>) -> &mut u32,
    ) -> MutexGuard<'_, JobState<R>> {
        let mut s = self.lock();
        while !ready(&s) {
            let left = deadline.remaining();
            if left.is_some_and(|l| l.is_zero()) {
                break;
            }
            *count(&mut s) += 1;
            s = match left {
                None => self.cond.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(left) => self.cond.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0,
            };
            *count(&mut s) -= 1;
        }
        s
    }
}

/// What the manager thread sees of a job (type-erased).
pub(crate) trait Sink: Send + Sync {
    /// Decodes a result frame's items (`first..first+count`) from worker `pid`.
    fn deliver(&self, first: u64, count: u32, items: Items<'_>, pid: u32);
    /// Stores the `count` plain-data values of items `first..` of `width`
    /// bytes each, which `copy` writes straight into their place (the
    /// bulk path: one copy out of the result ring). False (and `copy` not
    /// called) if this job does not take them so (not a bulk job, another
    /// width, a run past its end): deliver the frame the general way.
    /// `copy` must initialise every byte it is given.
    fn deliver_pod(&self, first: u64, count: u32, width: usize, copy: &mut dyn FnMut(&mut [std::mem::MaybeUninit<u8>])) -> bool;
    /// Records a failed item.
    fn fail(&self, err: TaskError);
    /// The job will have `n` items in all.
    fn set_expected(&self, n: u64);
    /// The pool gave up on the job (terminated): wake everyone.
    fn abort(&self);
    /// The buffer of one of the job's task frames, answered: kept (if
    /// small) for the job's next life (see [`Finisher::recycle`]).
    fn give_back(&self, bytes: Vec<u8>);
}

fn message(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// One result's outcome; the failures are out of line (the loop in
/// `deliver` stays tight for the common case).
#[inline]
fn outcome<R: Handoff>(item: Option<(u8, &[u8])>, index: u64, pid: u32) -> Outcome<R> {
    match item {
        Some((0, payload)) => decode::<R>(payload, index, pid),
        other => Err(failure(other, index, pid)),
    }
}

/// Decodes one result value. `R::decode` is user code, run while the
/// manager's state is locked (by its thread or a helping caller): a panic
/// in it becomes the item's error ([`TaskError::Panicked`], as a task's
/// panic would), so the state is never left half-updated.
#[inline]
fn decode<R: Handoff>(mut payload: &[u8], index: u64, pid: u32) -> Outcome<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| R::decode(&mut payload))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(undecodable(index, e)),
        Err(panic) => Err(decode_panicked(index, pid, panic)),
    }
}

#[cold]
#[inline(never)]
fn decode_panicked(index: u64, pid: u32, panic: Box<dyn std::any::Any + Send>) -> Box<TaskError> {
    let message = format!("decoding the result panicked: {}", super::task::panic_message(&*panic));
    // (Under the manager's state: a payload whose drop panics must not
    // unwind from here.)
    crate::process::drop_payload(panic);
    Box::new(TaskError::Panicked { pid, index, message })
}

#[cold]
#[inline(never)]
fn undecodable(index: u64, e: crate::process::HandoffError) -> Box<TaskError> {
    Box::new(TaskError::Refused { pid: 0, index, message: format!("cannot decode the result: {e}") })
}

#[cold]
#[inline(never)]
fn failure(item: Option<(u8, &[u8])>, index: u64, pid: u32) -> Box<TaskError> {
    Box::new(match item {
        None => TaskError::Refused { pid, index, message: "truncated result frame".into() },
        Some((status, payload)) => match Status::from_u8(status) {
            Some(Status::Failed) => TaskError::Failed { pid, index, message: message(payload) },
            Some(Status::Panicked) => TaskError::Panicked { pid, index, message: message(payload) },
            Some(Status::TooLarge) if payload.len() == 8 => {
                // (Untrusted: any length is only reported.)
                let len = u64::from_le_bytes(payload.try_into().expect("8 bytes"));
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                TaskError::TooLarge { index, what: "result", len, max: super::MAX_ITEM_BYTES }
            }
            Some(Status::Ok | Status::Refused | Status::TooLarge) | None => {
                TaskError::Refused { pid, index, message: message(payload) }
            }
        },
    })
}

impl<R: Handoff + Send + 'static> Sink for Job<R> {
    fn deliver(&self, first: u64, count: u32, mut items: Items<'_>, pid: u32) {
        self.update(|s| {
            if let Some(b) = s.bulk.as_mut() {
                // Plain data: a packed frame's values are copied in place
                // at once.
                // (`count` values of `R`'s width: `packed` checked that the
                // frame's bytes are `count` times its width.)
                let run = items.packed().filter(|&(_, w)| w == std::mem::size_of::<R>());
                if let Some(new) = run.and_then(|(values, _)| b.put_run(first, values)) {
                    s.filled += new;
                    return;
                }
            }
            let at = first.checked_sub(s.base).map(|a| a as usize);
            match at {
                // The common case: a run of slots that exist, filled in one
                // pass (no per-item index arithmetic).
                Some(at) if s.ordered && at.saturating_add(count as usize) <= s.slots.len() => {
                    let mut filled = 0;
                    if let Some((values, width)) = items.packed() {
                        // Every item succeeded and has one width: decode
                        // them back to back.
                        let slots = s.slots.range_mut(at..at + count as usize);
                        for (k, (slot, value)) in slots.zip(values.chunks_exact(width)).enumerate() {
                            let o = decode::<R>(value, first + k as u64, pid);
                            if slot.is_none() {
                                *slot = Some(o);
                                filled += 1;
                            }
                        }
                        s.filled += filled;
                        return;
                    }
                    for (k, slot) in s.slots.range_mut(at..at + count as usize).enumerate() {
                        let o = outcome::<R>(items.next_with_status(), first + k as u64, pid);
                        if slot.is_none() {
                            *slot = Some(o);
                            filled += 1;
                        }
                    }
                    s.filled += filled;
                }
                _ => {
                    for k in 0..u64::from(count) {
                        let o = outcome::<R>(items.next_with_status(), first + k, pid);
                        s.store(first + k, o);
                    }
                }
            }
        });
    }

    fn deliver_pod(&self, first: u64, count: u32, width: usize, copy: &mut dyn FnMut(&mut [std::mem::MaybeUninit<u8>])) -> bool {
        if width != std::mem::size_of::<R>() {
            return false;
        }
        let mut stored = false;
        self.update(|s| {
            if let Some(new) = s.bulk.as_mut().and_then(|b| b.put_run_with(first, count as usize, copy)) {
                s.filled += new;
                stored = true;
            }
        });
        stored
    }

    fn fail(&self, err: TaskError) {
        self.update(|s| s.store(err.index(), Err(Box::new(err))));
    }

    fn set_expected(&self, n: u64) {
        self.update(|s| s.expected = Some(n));
    }

    fn abort(&self) {
        self.update(|s| s.aborted = true);
    }

    fn give_back(&self, bytes: Vec<u8>) {
        // Only an `apply`'s small frame is worth keeping (and a lock).
        if bytes.capacity() > 0 && bytes.capacity() <= SPARE_FRAME_MAX {
            let mut s = self.lock();
            if s.spare.capacity() == 0 {
                s.spare = bytes;
            }
        }
    }
}

/// The largest task frame buffer a job keeps for its next life.
const SPARE_FRAME_MAX: usize = 4096;

/// How an [`AsyncResult`] turns its job's outcomes into its value.
type Finish<R, T> = fn(&mut JobState<R>) -> Result<T, PoolError>;

/// Everything `AsyncResult<T>` needs, whatever the items' type `R`.
pub(crate) trait Pending<T>: Send + Sync {
    fn ready(&self) -> bool;
    fn wait_until(&self, deadline: Deadline) -> bool;
    fn successful(&self) -> Option<bool>;
    fn take(&self) -> Result<T, PoolError>;
    fn on_done(&self, cb: Box<dyn FnOnce() + Send>);
    /// The handle is dropped.
    fn release(&self);
    /// `None`: cancel the job; `Some(d)`: set its items' timeout.
    fn control(&self, timeout: Option<Duration>);
    /// The handle is dropped and this was its reference: [`release`](Self::release),
    /// then keep the state for the pool's next job of its kind if nobody
    /// else holds it (see [`Finisher::recycle`]).
    fn recycle(self: Arc<Self>);
}

pub(crate) struct Finisher<R, T> {
    pub(crate) id: u64,
    pub(crate) job: Arc<Job<R>>,
    pub(crate) finish: Finish<R, T>,
    /// The pool (weak: a result kept after the pool is gone keeps nothing
    /// of it alive), whose work the caller helps with while it waits.
    pub(crate) pool: Weak<Shared>,
    /// A job of at most one item per worker: its caller helps while it
    /// waits (a larger one takes longer than any spin is worth; its caller
    /// sleeps at once and leaves the cores to the workers).
    pub(crate) small: bool,
    /// The worker slot and frame number an `apply_async`'s frame went to
    /// (when its caller dispatched it): while that worker has not taken it
    /// up (its `claimed` word), the worker is not running, and a waiting
    /// caller yields its core at once instead of spinning (the worker may
    /// be waiting for this very core).
    pub(crate) placed: Option<(usize, u64)>,
    /// An `apply` job: its state goes back to the pool for the next
    /// `apply` of the same types when its handle is dropped ([`Finisher::recycle`]).
    pub(crate) reuse: bool,
}

impl<R: Send + 'static> Finisher<R, R> {
    /// A recycled `apply` job's state for job `id`, from `pool`'s free
    /// list (and the buffer its last frame was built in), if one of these
    /// types is there: no allocation per `apply` (issue 13, item 5).
    pub(crate) fn reused(pool: &Shared, id: u64) -> Option<(Arc<Self>, Vec<u8>)> {
        let mut fin = pool.take_free::<Finisher<R, R>>()?;
        let me = Arc::get_mut(&mut fin)?;
        me.id = id;
        me.placed = None;
        let job = Arc::get_mut(&mut me.job)?;
        // Relaxed: nobody else holds the job (`get_mut`).
        job.finished.store(false, Ordering::Relaxed);
        let s = job.state.get_mut().unwrap_or_else(|p| p.into_inner());
        s.reset_one();
        let spare = std::mem::take(&mut s.spare);
        Some((fin, spare))
    }
}

impl<R, T> Finisher<R, T> {
    /// Helps with the pool's work (see `manager.rs`, "Helping") until the
    /// job is finished, `deadline` passes or the spin budget is spent: a
    /// result due in microseconds comes back with no thread hand-off.
    fn help(&self, deadline: Deadline) {
        if !self.small || self.job.is_finished() {
            return;
        }
        let Some(shared) = self.pool.upgrade() else { return };
        /// Stops helping however the help ends (also by a panic: the
        /// manager thread would otherwise believe forever that callers
        /// help, and leave them the results).
        struct Helping<'a>(&'a Shared);
        impl Drop for Helping<'_> {
            fn drop(&mut self) {
                self.0.stop_helping();
            }
        }
        if !shared.start_helping() {
            // Enough callers poll (they file this job's result too): one
            // look, then sleep on the job.
            shared.assist();
            return;
        }
        let _helping = Helping(&shared);
        // Relaxed: only a hint for how to wait (a word the worker writes:
        // any value is harmless here).
        let unclaimed = |(slot, n): (usize, u64)| {
            shared.ctl.claimed(slot).is_some_and(|c| !super::ctl::passed(c.load(Ordering::Relaxed), n))
        };
        let mut spins = 0;
        loop {
            shared.assist();
            if self.job.is_finished() || deadline.passed() {
                break;
            }
            if (UNCLAIMED_GRACE..HELP_SPIN.limit).contains(&spins) && self.placed.is_some_and(unclaimed) {
                spins += 1;
                std::thread::yield_now();
            } else if !spin_step(WaitStrategy::Blocking, &mut spins, &HELP_SPIN) {
                break;
            }
        }
    }

    /// One turn of help, if the job is not finished (for the calls that
    /// only look: `ready`, `successful`).
    fn look(&self) {
        if !self.job.is_finished()
            && let Some(shared) = self.pool.upgrade()
        {
            shared.assist();
        }
    }

    /// Nobody will wait on the job through this handle: the manager
    /// thread watches it (its results would otherwise wait in their ring
    /// until its next liveness check; see "Helping").
    fn hand_over(&self) {
        if !self.job.is_finished()
            && let Some(shared) = self.pool.upgrade()
        {
            shared.notify();
        }
    }
}

impl<R: Send + 'static, T: Send + 'static> Pending<T> for Finisher<R, T> {
    fn ready(&self) -> bool {
        self.look();
        self.job.lock().finished()
    }

    fn wait_until(&self, deadline: Deadline) -> bool {
        self.help(deadline);
        self.job.wait_finished(deadline).finished()
    }

    fn successful(&self) -> Option<bool> {
        self.look();
        let s = self.job.lock();
        if !s.finished() {
            return None;
        }
        let all = s.expected.is_some_and(|n| s.filled >= n);
        let ok = |o: &Outcome<R>| o.is_ok();
        let bulk_ok = s.bulk.as_ref().is_none_or(Bulk::none_failed);
        Some(all && bulk_ok && s.slots.iter().all(|o| o.as_ref().is_some_and(ok)) && s.done.iter().all(|(_, o)| ok(o)))
    }

    fn take(&self) -> Result<T, PoolError> {
        self.help(Deadline::NEVER);
        let mut s = self.job.wait_finished(Deadline::NEVER);
        if s.taken {
            return Err(PoolError::Taken);
        }
        s.taken = true;
        (self.finish)(&mut s)
    }

    fn on_done(&self, cb: Box<dyn FnOnce() + Send>) {
        let mut s = self.job.lock();
        if s.finished() {
            drop(s);
            cb();
        } else {
            s.on_done = Some(cb);
            drop(s);
            self.hand_over();
        }
    }

    fn release(&self) {
        self.hand_over();
    }

    fn recycle(mut self: Arc<Self>) {
        self.release();
        if !self.reuse {
            return;
        }
        let Some(pool) = self.pool.upgrade() else { return };
        // Only when nobody else holds the handle's state (a `then`
        // callback's clone) or the job (the manager lets go of it when it
        // finishes; a job it still holds is simply not reused).
        let Some(me) = Arc::get_mut(&mut self) else { return };
        let Some(job) = Arc::get_mut(&mut me.job) else { return };
        let s = job.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if !s.finished() {
            return;
        }
        // Its unread value (a handle dropped without `get`) goes now, in
        // the dropping thread, as it would have without reuse.
        s.slots.clear();
        s.done.clear();
        s.on_done = None;
        pool.put_free(self);
    }

    fn control(&self, timeout: Option<Duration>) {
        let msg = match timeout {
            None => super::Msg::Cancel { job: self.id },
            Some(timeout) => super::Msg::Timeout { job: self.id, timeout },
        };
        if let Some(shared) = self.pool.upgrade() {
            let _ = shared.send([msg], false);
        }
    }
}

/// The first outcome (an `apply`'s only item).
pub(crate) fn finish_one<R>(s: &mut JobState<R>) -> Result<R, PoolError> {
    match s.pop() {
        Some((_, Ok(v))) => Ok(v),
        Some((_, Err(e))) => Err(PoolError::Task(*e)),
        None => Err(PoolError::Task(TaskError::Terminated { index: 0 })),
    }
}

/// Every item's outcome, in order (items the pool never finished:
/// `Terminated`).
pub(crate) fn finish_each<R>(s: &mut JobState<R>) -> Result<Vec<Result<R, TaskError>>, PoolError> {
    let n = s.expected.unwrap_or(s.base + s.slots.len() as u64);
    let mut out = Vec::with_capacity(n as usize);
    for index in 0..n {
        out.push(match s.pop() {
            Some((_, o)) => o.map_err(|e| *e),
            None => {
                // A hole (terminated): skip its slot.
                if s.bulk.as_ref().is_some_and(|b| (s.base as usize) < b.len()) {
                    s.base += 1;
                } else if !s.slots.is_empty() {
                    s.slots.pop_front();
                    s.base += 1;
                }
                Err(TaskError::Terminated { index })
            }
        });
    }
    Ok(out)
}

/// Every item's value in order, or the first error by index (Python's
/// `map` raises the first failure). One pass checks that every slot holds
/// a value; the values then move out in a second (no per-item branches
/// or capacity checks).
pub(crate) fn finish_all<R>(s: &mut JobState<R>) -> Result<Vec<R>, PoolError> {
    let n = s.expected.unwrap_or(s.base + s.slots.len() as u64);
    let base = s.base;
    if let Some(mut b) = s.bulk.take() {
        let from = base as usize;
        if let Some(k) = b.first_not_ok(from) {
            let index = k as u64;
            let err = b.take_failure(k).map_or(TaskError::Terminated { index }, |e| *e);
            s.bulk = Some(b);
            return Err(PoolError::Task(err));
        }
        s.base = b.len() as u64;
        return Ok(b.into_values(from));
    }
    let want = n.saturating_sub(base) as usize;
    let slots = s.slots.make_contiguous();
    let have = slots.len().min(want);
    if let Some(k) = slots[..have].iter().position(|o| !matches!(o, Some(Ok(_)))) {
        return Err(PoolError::Task(match slots[k].take() {
            Some(Err(e)) => *e,
            _ => TaskError::Terminated { index: base + k as u64 },
        }));
    }
    if have < want {
        return Err(PoolError::Task(TaskError::Terminated { index: base + have as u64 }));
    }
    let mut all = Vec::from(std::mem::take(&mut s.slots));
    all.truncate(want);
    s.base += want as u64;
    Ok(all
        .into_iter()
        .map(|o| match o {
            Some(Ok(v)) => v,
            _ => unreachable!("every slot was checked to hold a value"),
        })
        .collect())
}

/// A result that will be there later, like Python's `AsyncResult`: from
/// [`Pool::apply_async`](super::Pool::apply_async),
/// [`map_async`](super::Pool::map_async) and their twins.
///
/// ```no_run
/// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
/// let pool = shmproc::Pool::new(2).unwrap();
/// let r = pool.apply_async(square, 7).unwrap();
/// assert!(r.wait_timeout(std::time::Duration::from_secs(10)));
/// assert!(r.ready());
/// assert_eq!(r.successful(), Some(true));
/// assert_eq!(r.get().unwrap(), 49);
/// ```
pub struct AsyncResult<T> {
    /// Taken out (once) by `drop`, to be recycled.
    pending: std::mem::ManuallyDrop<Arc<dyn Pending<T>>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Drop for AsyncResult<T> {
    /// A job nobody waits on any more is watched by the manager thread.
    fn drop(&mut self) {
        // SAFETY: `drop` runs once, and `pending` is not used after this.
        let pending = unsafe { std::mem::ManuallyDrop::take(&mut self.pending) };
        pending.recycle();
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("ready", &self.pending.ready()).finish()
    }
}

impl<T: Send + 'static> AsyncResult<T> {
    pub(crate) fn new(pending: Arc<dyn Pending<T>>) -> Self {
        AsyncResult { pending: std::mem::ManuallyDrop::new(pending), _t: PhantomData }
    }

    /// Waits for the value (Python's `get()`): the value, or the first
    /// failed item's error ([`PoolError::Task`]).
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// assert_eq!(pool.apply_async(square, 4).unwrap().get().unwrap(), 16);
    /// ```
    pub fn get(self) -> Result<T, PoolError> {
        self.pending.take()
    }

    /// Waits at most `timeout` for the value; on expiry the handle comes
    /// back in [`GetTimeoutError::TimedOut`], to wait again.
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(square, 4).unwrap();
    /// let v = match r.get_timeout(std::time::Duration::from_secs(30)) {
    ///     Ok(v) => v,
    ///     Err(shmproc::pool::GetTimeoutError::TimedOut(r)) => r.get().unwrap(), // wait on
    ///     Err(e) => panic!("{e}"),
    /// };
    /// assert_eq!(v, 16);
    /// ```
    pub fn get_timeout(self, timeout: Duration) -> Result<T, GetTimeoutError<T>> {
        if !self.pending.wait_until(Deadline::after(timeout)) {
            return Err(GetTimeoutError::TimedOut(self));
        }
        self.pending.take().map_err(GetTimeoutError::Failed)
    }

    /// Waits until the job is finished (successfully or not).
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(square, 4).unwrap();
    /// r.wait();
    /// assert!(r.ready());
    /// ```
    pub fn wait(&self) {
        self.pending.wait_until(Deadline::NEVER);
    }

    /// Waits at most `timeout`; whether the job is finished.
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(square, 4).unwrap();
    /// assert!(r.wait_timeout(std::time::Duration::from_secs(30)));
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.pending.wait_until(Deadline::after(timeout))
    }

    /// Whether the job is finished (Python's `ready()`).
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(square, 4).unwrap();
    /// r.wait();
    /// assert!(r.ready());
    /// ```
    pub fn ready(&self) -> bool {
        self.pending.ready()
    }

    /// `None` while running; once finished, whether every item succeeded
    /// (Python's `successful()`, which raises while not ready).
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(square, 4).unwrap();
    /// r.wait();
    /// assert_eq!(r.successful(), Some(true));
    /// ```
    pub fn successful(&self) -> Option<bool> {
        self.pending.successful()
    }

    /// Cancels the job: items not finished yet fail with
    /// [`TaskError::Cancelled`]; a worker running one of them is killed and
    /// replaced (so the work really stops). Asynchronous: `get` returns
    /// once the pool has processed the cancellation.
    ///
    /// ```no_run
    /// use shmproc::pool::{PoolError, TaskError};
    /// shmproc::task! { fn nap(s: u64) -> () { std::thread::sleep(std::time::Duration::from_secs(s)) } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(nap, 3600).unwrap();
    /// r.cancel();
    /// assert_eq!(r.get(), Err(PoolError::Task(TaskError::Cancelled { index: 0 })));
    /// ```
    pub fn cancel(&self) {
        self.pending.control(None)
    }

    /// Gives each item of this job at most `timeout` of running time
    /// (counted from when its worker starts it, also if it started
    /// already): a worker that runs an item longer is killed and replaced,
    /// and the item fails with [`TaskError::TimedOut`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use shmproc::pool::{PoolError, TaskError};
    /// shmproc::task! { fn nap(s: u64) -> () { std::thread::sleep(Duration::from_secs(s)) } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let r = pool.apply_async(nap, 3600).unwrap().timeout(Duration::from_millis(100));
    /// assert!(matches!(r.get(), Err(PoolError::Task(TaskError::TimedOut { index: 0, .. }))));
    /// ```
    pub fn timeout(self, timeout: Duration) -> Self {
        self.pending.control(Some(timeout));
        self
    }

    /// Calls `callback` with the value once the job is finished (Python's
    /// `callback` / `error_callback`): on the pool's callback thread (one
    /// per pool, named `shmproc-pool-cb`, like Python's result-handler
    /// thread), or here and now if it is finished already. The pool's
    /// callbacks run one after another on that thread, never on the
    /// thread that manages the workers: a callback may submit work to its
    /// pool and wait for it (`pool.apply(..)`, however long the item
    /// takes); while it waits, only the callbacks after it wait.
    /// [`Pool::join`](super::Pool::join) returns once every callback has
    /// run (called from a callback, it does not wait for that thread). A
    /// callback that panics is logged (target `shmproc`) and changes
    /// nothing else.
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// pool.map_async(square, [1, 2]).unwrap().then(move |r| tx.send(r).unwrap());
    /// assert_eq!(rx.recv().unwrap(), Ok(vec![1, 4]));
    /// ```
    pub fn then(self, callback: impl FnOnce(Result<T, PoolError>) + Send + 'static) {
        let pending = Arc::clone(&*self.pending);
        self.pending.on_done(Box::new(move || callback(pending.take())));
    }
}

impl<R> JobState<R> {
    pub(super) fn pop_ready(&self) -> bool {
        if let Some(b) = &self.bulk {
            return usize::try_from(self.base).is_ok_and(|i| b.has(i));
        }
        if self.ordered { self.slots.front().is_some_and(Option::is_some) } else { !self.done.is_empty() }
    }
}

