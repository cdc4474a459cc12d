//! What a Python-shaped queue handle holds: one ring (bounded) or a chain
//! of rings (unbounded), and the conversion of their failures into each
//! public operation's error enum.

use super::chain::{Chain, DEFAULT_MEMORY_LIMIT};
use super::error::{GetError, GetTimeoutError, PutError, PutTimeoutError, TaskDoneError, TryGetError, TryPutError};
use super::itemring::{DEFAULT_MAX_FRAME, GetFail, ItemRing, Mode, PutFail, each};
use crate::handoff::Handoff;
use crate::wait::Deadline;
use crate::{OpenError, Options};

/// A bounded queue's one ring, or an unbounded queue's chain of rings.
pub(super) enum Inner<T> {
    Ring(ItemRing<T>),
    Chain(Chain<T>),
}

impl<T> Clone for Inner<T> {
    fn clone(&self) -> Self {
        match self {
            Inner::Ring(r) => Inner::Ring(r.clone()),
            Inner::Chain(c) => Inner::Chain(c.clone()),
        }
    }
}

impl<T> std::fmt::Debug for Inner<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inner::Ring(r) => r.fmt(f),
            Inner::Chain(c) => c.fmt(f),
        }
    }
}

impl<T: Handoff> Inner<T> {
    /// A queue of `maxsize` items (0: unbounded, within `memory_limit`).
    pub(super) fn create(name: Option<&str>, maxsize: u64, max_frame: u64, memory_limit: u64, opts: &Options) -> Result<Self, OpenError> {
        if maxsize == 0 {
            Chain::create(name, memory_limit, opts).map(Inner::Chain)
        } else {
            ItemRing::create(name, maxsize, max_frame, opts).map(Inner::Ring)
        }
    }

    pub(super) fn open(name: &str, opts: &Options) -> Result<Self, OpenError> {
        match ItemRing::open(name, opts) {
            Ok(r) => Ok(Inner::Ring(r)),
            Err(OpenError::WrongKind { found: crate::Kind::QueueChain, .. }) => Chain::open(name, opts).map(Inner::Chain),
            Err(e) => Err(e),
        }
    }

    pub(super) fn open_or_create(name: &str, maxsize: u64, opts: &Options) -> Result<Self, OpenError> {
        loop {
            match Self::open(name, opts) {
                Err(OpenError::NotFound(_)) => {}
                r => return r,
            }
            match Self::create(Some(name), maxsize, DEFAULT_MAX_FRAME, DEFAULT_MEMORY_LIMIT, opts) {
                Err(OpenError::AlreadyExists(_)) => {}
                r => return r,
            }
        }
    }

    #[inline(always)]
    pub(super) fn put(&self, item: T, mode: Mode) -> Result<(), PutFail<T>> {
        match self {
            Inner::Ring(r) => r.put(item, mode),
            Inner::Chain(c) => c.put(item, mode),
        }
    }

    #[inline(always)]
    pub(super) fn get(&self, mode: Mode) -> Result<T, GetFail> {
        match self {
            Inner::Ring(r) => r.get(mode),
            Inner::Chain(c) => c.get(mode),
        }
    }

    #[inline(always)]
    pub(super) fn put_ref(&self, item: &T, mode: Mode) -> Result<(), PutFail<()>> {
        match self {
            Inner::Ring(r) => r.put_ref(item, mode),
            Inner::Chain(c) => c.put_ref(item, mode),
        }
    }

    #[inline(always)]
    pub(super) fn get_into(&self, out: &mut T, mode: Mode) -> Result<(), GetFail> {
        match self {
            Inner::Ring(r) => r.get_into(out, mode),
            Inner::Chain(c) => c.get_into(out, mode),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Inner::Ring(r) => r.len(),
            Inner::Chain(c) => c.len(),
        }
    }

    /// Whether the queue holds no item (a chain that cannot count a ring
    /// this process cannot map now is not known to be empty).
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Inner::Ring(r) => r.len() == 0,
            Inner::Chain(c) => c.is_empty(),
        }
    }

    /// `maxsize`: 0 for an unbounded queue.
    pub(super) fn capacity(&self) -> usize {
        match self {
            Inner::Ring(r) => r.capacity(),
            Inner::Chain(_) => 0,
        }
    }

    pub(super) fn is_full(&self) -> bool {
        match self {
            Inner::Ring(r) => r.len() >= r.capacity(),
            Inner::Chain(c) => c.is_full(),
        }
    }

    pub(super) fn max_frame(&self) -> usize {
        match self {
            Inner::Ring(r) => r.max_frame(),
            Inner::Chain(c) => c.max_item(),
        }
    }

    pub(super) fn close(&self) {
        match self {
            Inner::Ring(r) => r.close(),
            Inner::Chain(c) => c.close(),
        }
    }

    pub(super) fn name(&self) -> &str {
        match self {
            Inner::Ring(r) => r.name(),
            Inner::Chain(c) => c.name_str(),
        }
    }

    pub(super) fn persist(&self) {
        match self {
            Inner::Ring(r) => r.persist(),
            Inner::Chain(c) => c.persist(),
        }
    }

    pub(super) fn task_done(&self) -> Result<(), TaskDoneError> {
        match self {
            Inner::Ring(r) => each!(r, q => q.task_done()),
            Inner::Chain(c) => c.task_done(),
        }
    }

    pub(super) fn join_until(&self, deadline: Deadline) -> bool {
        match self {
            Inner::Ring(r) => each!(r, q => q.join_until(deadline)),
            Inner::Chain(c) => c.join_until(deadline),
        }
    }

    pub(super) fn unfinished(&self) -> u64 {
        match self {
            Inner::Ring(r) => each!(r, q => q.unfinished()),
            Inner::Chain(c) => c.unfinished(),
        }
    }
}

impl<T> PutFail<T> {
    /// As a waiting put's error (no `Full`, no `TimedOut`).
    #[inline]
    pub(super) fn waited(self) -> PutError<T> {
        match self {
            PutFail::Closed(v) => PutError::Closed(v),
            PutFail::TooLarge(item, len, max) => PutError::TooLarge { item, len, max },
            PutFail::Full(_) | PutFail::TimedOut(_) => unreachable!("a put without deadline neither times out nor is full"),
        }
    }
    #[inline]
    pub(super) fn tried(self) -> TryPutError<T> {
        match self {
            PutFail::Full(v) => TryPutError::Full(v),
            PutFail::Closed(v) => TryPutError::Closed(v),
            PutFail::TooLarge(item, len, max) => TryPutError::TooLarge { item, len, max },
            PutFail::TimedOut(_) => unreachable!("a try does not time out"),
        }
    }
    #[inline]
    pub(super) fn timed(self) -> PutTimeoutError<T> {
        match self {
            PutFail::TimedOut(v) => PutTimeoutError::TimedOut(v),
            PutFail::Closed(v) => PutTimeoutError::Closed(v),
            PutFail::TooLarge(item, len, max) => PutTimeoutError::TooLarge { item, len, max },
            PutFail::Full(_) => unreachable!("a put with a deadline is not refused as full"),
        }
    }
}

impl GetFail {
    #[inline]
    pub(super) fn waited(self) -> GetError {
        match self {
            GetFail::Closed => GetError::Closed,
            GetFail::Corrupted => GetError::Corrupted,
            GetFail::Decode(d) => GetError::Decode(d),
            GetFail::Empty | GetFail::TimedOut => unreachable!("a get without deadline waits"),
        }
    }
    #[inline]
    pub(super) fn tried(self) -> TryGetError {
        match self {
            GetFail::Empty => TryGetError::Empty,
            GetFail::Closed => TryGetError::Closed,
            GetFail::Corrupted => TryGetError::Corrupted,
            GetFail::Decode(d) => TryGetError::Decode(d),
            GetFail::TimedOut => unreachable!("a try does not time out"),
        }
    }
    #[inline]
    pub(super) fn timed(self) -> GetTimeoutError {
        match self {
            GetFail::TimedOut => GetTimeoutError::TimedOut,
            GetFail::Closed => GetTimeoutError::Closed,
            GetFail::Corrupted => GetTimeoutError::Corrupted,
            GetFail::Decode(d) => GetTimeoutError::Decode(d),
            GetFail::Empty => unreachable!("a get with a deadline waits"),
        }
    }
}

