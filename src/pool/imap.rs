//! The `imap` iterators: each item's result (in input order, or as
//! completed), pulling the caller's input lazily, in the caller's thread,
//! with a bounded number of items in flight.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::error::{PoolError, TaskError};
use super::frame::TaskFrame;
use super::result::{Job, Sink};
use super::{Msg, Pull, Shared, Task, encode_frames};
use crate::process::Handoff;
use crate::wait::Deadline;

/// The iterator of [`Pool::imap`](super::Pool::imap) and
/// [`imap_unordered`](super::Pool::imap_unordered): each item's result
/// (in input order, or as completed), pulling the input lazily with a
/// bounded number of items in flight.
///
/// ```no_run
/// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
/// let pool = shmproc::Pool::new(2).unwrap();
/// let mut it = pool.imap(square, [1, 2, 3]).unwrap();
/// assert_eq!(it.next(), Some(Ok(1)));
/// assert_eq!(it.collect::<Vec<_>>(), [Ok(4), Ok(9)]);
/// ```
pub struct Imap<R, I> {
    pub(crate) job: Arc<Job<R>>,
    pub(crate) source: super::ImapSource<I>,
}

impl<R, I> std::fmt::Debug for Imap<R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap").field("yielded", &self.source.yielded).finish()
    }
}

impl<R: Handoff + Send + 'static, I: Iterator> Imap<R, I>
where
    I::Item: Handoff,
{
    /// Items per task (Python's `chunksize`; default 1; 0 is taken as 1).
    /// Only before the first `next()`.
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let v: Vec<u64> = pool.imap(square, 0..10).unwrap().chunksize(4).map(Result::unwrap).collect();
    /// assert_eq!(v[9], 81);
    /// ```
    pub fn chunksize(mut self, n: usize) -> Self {
        self.source.chunksize = n.max(1);
        self
    }

    /// At most `n` items submitted and not yet yielded (default: 4 per
    /// worker, times the chunk size): an endless input needs bounded
    /// memory. Only before the first `next()`.
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let mut it = pool.imap(square, 0..).unwrap().max_in_flight(8); // endless input
    /// assert_eq!(it.nth(100).unwrap().unwrap(), 10_000);
    /// ```
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.source.max_in_flight = Some(n.max(1));
        self
    }

    /// Gives each item at most `timeout` of running time (see
    /// [`AsyncResult::timeout`](super::AsyncResult::timeout)), from now on.
    ///
    /// ```no_run
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let mut it = pool.imap(square, [3]).unwrap().timeout(std::time::Duration::from_secs(60));
    /// assert_eq!(it.next().unwrap().unwrap(), 9);
    /// ```
    pub fn timeout(self, timeout: Duration) -> Self {
        self.source.set_timeout(timeout);
        self
    }
}

impl<R: Handoff + Send + 'static, I: Iterator> Iterator for Imap<R, I>
where
    I::Item: Handoff,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Result<R, TaskError>> {
        match self.next_until(Deadline::NEVER) {
            Ok(next) => next,
            Err(NextTimedOut) => unreachable!("no deadline"),
        }
    }
}

/// [`Imap::next_timeout`] found no result within its timeout (Python's
/// `multiprocessing.TimeoutError` from `IMapIterator.next(timeout)`); the
/// iterator is unchanged: call it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no result within the timeout: the item is still running (call next again)")]
pub struct NextTimedOut;

impl<R: Handoff + Send + 'static, I: Iterator> Imap<R, I>
where
    I::Item: Handoff,
{
    /// Python's `IMapIterator.next(timeout)`: the next result if one comes
    /// within `timeout`; `Ok(None)` at the end (`StopIteration`);
    /// [`NextTimedOut`] otherwise (`TimeoutError`), after which the
    /// iterator goes on as before.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// shmproc::task! { fn square(x: u64) -> u64 { x * x } }
    /// let pool = shmproc::Pool::new(1).unwrap();
    /// let mut it = pool.imap(square, [3]).unwrap();
    /// let first = loop {
    ///     match it.next_timeout(Duration::from_millis(20)) {
    ///         Ok(next) => break next,
    ///         Err(shmproc::pool::NextTimedOut) => print!("."),
    ///     }
    /// };
    /// assert_eq!(first, Some(Ok(9)));
    /// assert_eq!(it.next_timeout(Duration::from_secs(60)), Ok(None));
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Result<R, TaskError>>, NextTimedOut> {
        self.next_until(Deadline::after(timeout))
    }

    fn next_until(&mut self, deadline: Deadline) -> Result<Option<Result<R, TaskError>>, NextTimedOut> {
        loop {
            let job = Arc::clone(&self.job);
            let sink: Arc<dyn Sink> = job.clone();
            self.source.top_up(&sink);
            let bound = self.source.yielded;
            let total = self.source.total();
            // Wake at least every 200 ms to top up the input.
            let step = deadline.capped(Duration::from_millis(200));
            let s = job.wait_for(step, |s| s.aborted || s.pop_ready() || total.is_some_and(|t| bound >= t));
            let mut s = s;
            if let Some((_, o)) = s.pop() {
                drop(s);
                self.source.yielded += 1;
                return Ok(Some(o.map_err(|e| *e)));
            }
            if s.aborted || total.is_some_and(|t| self.source.yielded >= t) {
                drop(s);
                return Ok(self.source.not_submitted().map(|index| Err(TaskError::NotSubmitted { index })));
            }
            drop(s);
            if deadline.passed() {
                return Err(NextTimedOut);
            }
        }
    }
}

impl<R, I> Drop for Imap<R, I> {
    /// Dropping the iterator before its end cancels what it submitted and
    /// has not yielded (the workers running it are stopped).
    fn drop(&mut self) {
        self.source.finish_early();
    }
}

/// The input side of an [`Imap`]: the caller's iterator, pulled in the
/// caller's thread as results are consumed.
pub(crate) struct ImapSource<I> {
    /// Weak, as for `AsyncResult`: a pool dropped meanwhile ends the iterator.
    shared: Weak<Shared>,
    input: Option<I>,
    id: &'static str,
    job: u64,
    encode: Pull<I>,
    pub(crate) chunksize: usize,
    pub(crate) max_in_flight: Option<usize>,
    submitted: u64,
    pub(crate) yielded: u64,
    done: bool,
    /// Items from `submitted` on were taken from the input and not
    /// accepted (the pool had stopped).
    unsent: bool,
}

fn pull<I: Iterator>(input: &mut I, job: u64, n: usize, first: u64, id: &'static str, sink: &dyn Sink) -> (Vec<TaskFrame>, u64)
where
    I::Item: Handoff,
{
    encode_frames(job, id, first, input.by_ref().take(n), n, sink)
}

impl<I: Iterator> ImapSource<I>
where
    I::Item: Handoff,
{
    pub(super) fn new<F: Task<Arg = I::Item>>(shared: Weak<Shared>, input: I, job: u64) -> Self {
        ImapSource {
            shared,
            input: Some(input),
            id: F::ID,
            job,
            encode: pull::<I>,
            chunksize: 1,
            max_in_flight: None,
            submitted: 0,
            yielded: 0,
            done: false,
            unsent: false,
        }
    }

    /// Submits more input while fewer than the bound are in flight.
    pub(crate) fn top_up(&mut self, sink: &Arc<dyn Sink>) {
        let processes = self.shared.upgrade().map_or(1, |s| s.processes);
        // Saturating: a chunk size near `usize::MAX` (Python takes any)
        // overflowed (a panic, or in release a bound of 0: nothing was
        // ever submitted and `next` waited for good).
        let bound = self.max_in_flight.unwrap_or(4usize.saturating_mul(processes).saturating_mul(self.chunksize)) as u64;
        let mut frames = Vec::new();
        let before = self.submitted;
        // The roles of pipe ends in the items go with them only once the
        // frames are sent (see `encode_frames`).
        let mut deferred = None;
        let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deferred = Some(crate::process::handoff::Deferred::encode(|| {
                while let Some(input) = self.input.as_mut() {
                    if self.submitted - self.yielded >= bound {
                        break;
                    }
                    let n = (bound - (self.submitted - self.yielded)).min(self.chunksize as u64) as usize;
                    let (mut f, got) = (self.encode)(input, self.job, n, self.submitted, self.id, &**sink);
                    frames.append(&mut f);
                    self.submitted += got;
                    if got < n as u64 {
                        self.input = None;
                    }
                }
            }));
        }));
        if let Err(panic) = encoded {
            self.encode_panicked(before, sink);
            std::panic::resume_unwind(panic);
        }
        let mut deferred = deferred.expect("set when the encoding returned");
        let ended = self.input.is_none();
        if frames.is_empty() && (!ended || self.done) {
            return;
        }
        let mut msgs = vec![Msg::Frames(frames)];
        if ended && !self.done {
            self.done = true;
            sink.set_expected(self.submitted);
            msgs.push(Msg::InputDone { job: self.job });
        }
        deferred.release();
        if self.send(msgs).is_ok() {
            deferred.sent();
        } else {
            // (`deferred` dropped: the ends in the items are as they were.)
            drop(deferred);
            // Never run: reported by `not_submitted`.
            self.unsent |= self.submitted > before;
            self.submitted = before;
            // The pool takes no more input (`join` cut it off, or it
            // terminates): the items submitted still get their outcomes
            // from the manager (run, or failed with `Terminated` before it
            // aborts the job) and are yielded, then one `NotSubmitted`; no
            // more input is pulled. (Aborting the job here ended the
            // iterator at the first item the manager had not failed yet:
            // submitted items were skipped.)
            self.input = None;
            if self.shared.upgrade().is_none() {
                // The manager is gone: it aborted every job it had.
                sink.abort();
            }
        }
    }

    /// Encoding the input panicked (a user `Handoff::encode`, or the input
    /// iterator itself) after `before` items were submitted: the input
    /// ends there, as if the pool had refused the rest (the frames encoded
    /// in this top-up are dropped unsent, the roles of pipe ends in them
    /// undone by `Deferred`). The manager learns the job's input is done,
    /// so the items submitted still come back and a caller that goes on
    /// iterating after catching the panic gets them, then one
    /// `NotSubmitted` for `before`, then the end: not a wait for ever on
    /// items counted as submitted that never were.
    #[cold]
    fn encode_panicked(&mut self, before: u64, sink: &Arc<dyn Sink>) {
        self.unsent = true;
        self.submitted = before;
        self.input = None;
        if !self.done {
            self.done = true;
            sink.set_expected(before);
            let _ = self.send([Msg::InputDone { job: self.job }]);
        }
    }

    /// The pool stopped (the job was aborted): the index of the first item
    /// taken from the input and not submitted, or not taken yet, if there
    /// is one; once (the input is dropped).
    pub(crate) fn not_submitted(&mut self) -> Option<u64> {
        let taken = std::mem::take(&mut self.unsent);
        let more = self.input.take().is_some_and(|mut i| i.next().is_some());
        (taken || more).then_some(self.submitted)
    }

}

impl<I> ImapSource<I> {
    /// Items known in all, once the input ended.
    pub(crate) fn total(&self) -> Option<u64> {
        self.input.is_none().then_some(self.submitted)
    }

    /// Sends to the manager (`Closed` if the pool is gone or terminated).
    fn send(&self, msgs: impl IntoIterator<Item = Msg>) -> Result<(), PoolError> {
        self.shared.upgrade().ok_or(PoolError::Closed)?.send(msgs, false)
    }

    /// Sets the job's per-item timeout.
    pub(crate) fn set_timeout(&self, timeout: Duration) {
        let _ = self.send([Msg::Timeout { job: self.job, timeout }]);
    }

    /// The iterator was dropped early: cancel what is in flight.
    pub(crate) fn finish_early(&mut self) {
        if !self.done {
            self.input = None;
            self.done = true;
            let _ = self.send([Msg::InputDone { job: self.job }, Msg::Cancel { job: self.job }]);
        } else if self.total().is_some_and(|t| self.yielded < t) {
            let _ = self.send([Msg::Cancel { job: self.job }]);
        }
    }
}
