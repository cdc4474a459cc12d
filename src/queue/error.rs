//! The queues' errors: one enum per operation, holding only the variants
//! that operation can produce (iceoryx2's style), so a `match` lists exactly
//! what can happen. All are reachable from the crate root.
//!
//! | operation | SPSC [`Producer`](super::Producer) / [`Consumer`](super::Consumer) | [`MpmcQueue`](super::MpmcQueue), [`Queue`](super::Queue), [`JoinableQueue`](super::JoinableQueue), [`SimpleQueue`](super::SimpleQueue) | [`ByteProducer`](super::ByteProducer) / [`ByteConsumer`](super::ByteConsumer) |
//! |---|---|---|---|
//! | put, never waits | [`TryPushError`] | [`TryPutError`] | [`TrySendError`] |
//! | put, waits | [`PushError`] | [`PutError`] | [`SendError`] |
//! | put, waits at most a timeout | [`PushTimeoutError`] | [`PutTimeoutError`] | [`SendTimeoutError`] |
//! | get, never waits | [`TryPopError`] | [`TryGetError`] | [`TryRecvError`] |
//! | get, waits | [`PopError`] | [`GetError`] | [`RecvError`] |
//! | get, waits at most a timeout | [`PopTimeoutError`] | [`GetTimeoutError`] | [`RecvTimeoutError`] |
//!
//! Only the ends of a two-party ring (SPSC items, byte frames) can learn
//! that their one peer is gone (`Disconnected`); an MPMC queue has no one
//! peer. Only frames can be `TooLarge` or `Corrupted`: byte frames, and the
//! items of a [`Queue`](super::Queue) that are not plain data (encoded
//! with [`Handoff`](crate::Handoff)); a plain-data queue never reports them.
//! `Corrupted` is a frame that is not whole (a bad length); `Decode` (gets
//! of a `Queue`) is a whole frame that does not decode as the item type,
//! with the decoder's error (it makes the get errors not `Copy`). Errors of puts
//! hand the value back (`into_inner`); `TooLarge { item, len, max }` also says
//! the item's encoded length and the queue's limit (so does its message). Each blocking error converts into
//! its timeout twin (`From`), so one `?` can serve both.
//!
//! The errors of [`MpmcQueue`](super::MpmcQueue) and the Python-shaped
//! queues (`TryPutError`, `PutError`, `PutTimeoutError`, `TryGetError`,
//! `GetError`, `GetTimeoutError`) are `#[non_exhaustive]`: one `Queue<T>`
//! serves plain data and encoded items alike, so they share one error type
//! per operation, and the variants only encoded items produce (`TooLarge`,
//! `Corrupted`, `Decode`) were added to it. A `match` on them needs a `_` arm (once;
//! no variant added later breaks it again):
//!
//! ```
//! let q = shmproc::Queue::<u64>::new(1).unwrap();
//! q.put(1).unwrap();
//! let what = match q.put_nowait(2) {
//!     Ok(()) => "put",
//!     Err(shmproc::TryPutError::Full(_)) => "full",
//!     Err(_) => "closed, or another reason",
//! };
//! assert_eq!(what, "full");
//! ```
//!
//! ```compile_fail,E0004
//! let q = shmproc::Queue::<u64>::new(1).unwrap();
//! match q.get() {
//!     Ok(_) => {}
//!     Err(shmproc::GetError::Closed) => {}
//!     Err(shmproc::GetError::Corrupted) => {}
//!     Err(shmproc::GetError::Decode(_)) => {} // still not exhaustive
//! }
//! ```

/// Declares a put-side error that hands the value back, with
/// `into_inner`.
macro_rules! value_error {
    ($(#[$attr:meta])* $name:ident { $first:ident = $fmsg:literal $(, $v:ident = $msg:literal)* $(,)? } $(; $tl:ident)?) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
        pub enum $name<T> {
            #[doc = concat!("Not done: ", $fmsg, ". The value is handed back.")]
            #[error($fmsg)]
            $first(T),
            $(
                #[doc = concat!("Not done: ", $msg, ". The value is handed back.")]
                #[error($msg)]
                $v(T),
            )*
            $(
                /// Not done: the item's encoding is larger than the queue
                /// takes. The item is handed back, with its encoded length
                /// and the limit.
                #[error(
                    "the item's encoding ({len} bytes) is larger than the queue's limit of {max} bytes (a bounded \
                     queue's `max_frame`: 1024 unless made with `with_max_frame`; an unbounded queue's: what a ring of \
                     half its memory limit holds)"
                )]
                $tl {
                    /// The item that was not put.
                    item: T,
                    /// Its encoded length in bytes.
                    len: usize,
                    /// The largest encoding the queue takes, in bytes.
                    max: usize,
                },
            )?
        }

        impl<T> $name<T> {
            /// The value that was not put.
            ///
            /// ```
            #[doc = concat!("assert_eq!(shmproc::", stringify!($name), "::", stringify!($first), "(7).into_inner(), 7);")]
            /// ```
            pub fn into_inner(self) -> T {
                match self {
                    $name::$first(v) $(| $name::$v(v))* => v,
                    $($name::$tl { item, .. } => item,)?
                }
            }
        }
    };
}

/// Declares a get-side error (no value to hand back).
macro_rules! unit_error {
    ($(#[$attr:meta])* $name:ident { $($v:ident = $msg:literal),* $(,)? }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
        pub enum $name {
            $(
                #[doc = concat!("No item: ", $msg, ".")]
                #[error($msg)]
                $v,
            )*
        }
    };
}

/// A get-side error of the queues that carry encoded items: the unit
/// variants, plus `Decode` (a frame that is whole but does not decode as
/// the item type: it carries the decoder's error, so these errors are not
/// `Copy`).
macro_rules! get_error {
    ($(#[$attr:meta])* $name:ident { $($v:ident = $msg:literal),* $(,)? }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        pub enum $name {
            $(
                #[doc = concat!("No item: ", $msg, ".")]
                #[error($msg)]
                $v,
            )*
            /// No item: the next frame is whole but does not decode as the
            /// item type (the decoder's error says what and why: another
            /// type's items, a handle whose object is gone...); it was
            /// removed.
            #[error("the next item could not be decoded (it was removed): {0}")]
            Decode(crate::process::HandoffError),
        }
    };
}

/// `From<$narrow> for $wide`, variant by variant (every variant of the
/// narrow error exists in the wide one), and the way back for callers
/// that waited without a deadline (`TimedOut` cannot happen there).
macro_rules! widen {
    (<T> $narrow:ident => $wide:ident: $($v:ident),* $(; $s:ident { $($f:ident),* })?) => {
        impl<T> From<$narrow<T>> for $wide<T> {
            fn from(e: $narrow<T>) -> Self {
                match e {
                    $($narrow::$v(x) => $wide::$v(x),)*
                    $($narrow::$s { $($f),* } => $wide::$s { $($f),* },)?
                }
            }
        }
        impl<T> $wide<T> {
            /// The error of a wait without a deadline (never `TimedOut`).
            #[inline]
            pub(crate) fn untimed(self) -> $narrow<T> {
                match self {
                    $($wide::$v(x) => $narrow::$v(x),)*
                    $($wide::$s { $($f),* } => $narrow::$s { $($f),* },)?
                    $wide::TimedOut(_) => unreachable!("a wait without a deadline does not time out"),
                }
            }
        }
    };
    ($narrow:ident => $wide:ident: $($v:ident $({ $($f:ident),* })?),*) => {
        impl From<$narrow> for $wide {
            fn from(e: $narrow) -> Self {
                match e {
                    $($narrow::$v $({ $($f),* })? => $wide::$v $({ $($f),* })?,)*
                }
            }
        }
        impl $wide {
            /// The error of a wait without a deadline (never `TimedOut`).
            #[inline]
            pub(crate) fn untimed(self) -> $narrow {
                match self {
                    $($wide::$v $({ $($f),* })? => $narrow::$v $({ $($f),* })?,)*
                    $wide::TimedOut => unreachable!("a wait without a deadline does not time out"),
                }
            }
        }
    };
}

/// `retry()` on a non-waiting call's error: `Ok` if the call may be
/// retried (the queue was full or empty), otherwise the same error as the
/// waiting twin's (for the wait loops).
macro_rules! retry_on {
    (<T> $try:ident :: $busy:ident => $timeout:ident: $($v:ident),*) => {
        impl<T> $try<T> {
            #[inline]
            pub(crate) fn retry(self) -> Result<T, $timeout<T>> {
                match self {
                    $try::$busy(x) => Ok(x),
                    $($try::$v(x) => Err($timeout::$v(x)),)*
                }
            }
        }
    };
    ($try:ident :: $busy:ident => $timeout:ident: $($v:ident $({ $($f:ident),* })?),*) => {
        impl $try {
            #[inline]
            pub(crate) fn retry(self) -> Result<(), $timeout> {
                match self {
                    $try::$busy => Ok(()),
                    $($try::$v $({ $($f),* })? => Err($timeout::$v $({ $($f),* })?),)*
                }
            }
        }
    };
}

// SPSC items: a producer and a consumer that can each learn that the other
// one is gone.

value_error! {
    /// Why [`Producer::try_push`](super::Producer::try_push) (or
    /// [`loan`](super::Producer::loan)) did not push.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let (mut tx, _rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.push_slice(&[1, 2]);
    /// assert_eq!(tx.try_push(3), Err(shmproc::TryPushError::Full(3)));
    /// ```
    TryPushError { Full = "the queue is full", Closed = "the queue is closed", Disconnected = "the consumer is gone" }
}

value_error! {
    /// Why [`Producer::push`](super::Producer::push) did not push (it waits
    /// while the ring is full).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// drop(q.consumer().unwrap()); // the consumer came and left
    /// assert_eq!(tx.push(1), Err(shmproc::PushError::Disconnected(1)));
    /// ```
    PushError { Closed = "the queue is closed", Disconnected = "the consumer is gone" }
}

value_error! {
    /// Why [`Producer::push_timeout`](super::Producer::push_timeout) did not
    /// push.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let (mut tx, _rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.push_slice(&[1, 2]);
    /// assert_eq!(tx.push_timeout(3, Duration::ZERO), Err(shmproc::PushTimeoutError::TimedOut(3)));
    /// ```
    PushTimeoutError {
        TimedOut = "timed out waiting for space in the queue",
        Closed = "the queue is closed",
        Disconnected = "the consumer is gone",
    }
}
widen!(<T> PushError => PushTimeoutError: Closed, Disconnected);
retry_on!(<T> TryPushError::Full => PushTimeoutError: Closed, Disconnected);

unit_error! {
    /// Why [`Consumer::try_pop`](super::Consumer::try_pop) (or
    /// [`peek`](super::Consumer::peek)) returned no item.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let (_tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// assert_eq!(rx.try_pop(), Err(shmproc::TryPopError::Empty));
    /// ```
    TryPopError { Empty = "the queue is empty", Closed = "the queue is closed and drained", Disconnected = "the producer is gone and the queue is drained" }
}

unit_error! {
    /// Why [`Consumer::pop`](super::Consumer::pop) returned no item (it
    /// waits while the ring is empty).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// q.producer().unwrap().push(1).unwrap(); // pushes, then leaves
    /// let mut rx = q.consumer().unwrap();
    /// assert_eq!(rx.pop(), Ok(1));
    /// assert_eq!(rx.pop(), Err(shmproc::PopError::Disconnected));
    /// ```
    PopError { Closed = "the queue is closed and drained", Disconnected = "the producer is gone and the queue is drained" }
}

unit_error! {
    /// Why [`Consumer::pop_timeout`](super::Consumer::pop_timeout) returned
    /// no item.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// let (_tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// let r = rx.pop_timeout(std::time::Duration::ZERO);
    /// assert_eq!(r, Err(shmproc::PopTimeoutError::TimedOut));
    /// ```
    PopTimeoutError {
        TimedOut = "timed out waiting for an item",
        Closed = "the queue is closed and drained",
        Disconnected = "the producer is gone and the queue is drained",
    }
}
widen!(PopError => PopTimeoutError: Closed, Disconnected);
retry_on!(TryPopError::Empty => PopTimeoutError: Closed, Disconnected);

/// Why [`WriteLoan::commit`](super::WriteLoan::commit) published nothing.
///
/// ```
/// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
/// let mut tx = q.producer().unwrap();
/// let loan = tx.loan().unwrap();
/// q.close();
/// assert_eq!(loan.commit(), Err(shmproc::CommitError::Closed));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The queue was closed since the loan was taken.
    #[error("the queue is closed")]
    Closed,
}

// MPMC and the Python-shaped queues: any number of processes on either
// side, so nobody is ever `Disconnected`.

value_error! {
    /// Why a put that never waits did not put:
    /// [`MpmcQueue::try_push`](super::MpmcQueue::try_push),
    /// [`Queue::put_nowait`](super::Queue::put_nowait) and the other
    /// queues' `put_nowait`.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::new(1).unwrap();
    /// q.put(1).unwrap();
    /// assert_eq!(q.put_nowait(2), Err(shmproc::TryPutError::Full(2)));
    /// ```
    ///
    /// `#[non_exhaustive]`: queues of items that are not plain data added
    /// variants (`TooLarge` / `Corrupted`, which a plain-data queue never
    /// reports), and more may come; a `match` needs a `_` arm.
    #[non_exhaustive]
    TryPutError { Full = "the queue is full", Closed = "the queue is closed" }; TooLarge
}

value_error! {
    /// Why a put that waits for room did not put:
    /// [`MpmcQueue::push`](super::MpmcQueue::push),
    /// [`Queue::put`](super::Queue::put) and the other queues' `put`.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::new(1).unwrap();
    /// q.close();
    /// assert_eq!(q.put(1), Err(shmproc::PutError::Closed(1)));
    /// ```
    ///
    /// `#[non_exhaustive]`: queues of items that are not plain data added
    /// variants (`TooLarge` / `Corrupted`, which a plain-data queue never
    /// reports), and more may come; a `match` needs a `_` arm.
    #[non_exhaustive]
    PutError { Closed = "the queue is closed" }; TooLarge
}

value_error! {
    /// Why a put that waits at most a timeout did not put:
    /// [`MpmcQueue::push_timeout`](super::MpmcQueue::push_timeout),
    /// [`Queue::put_timeout`](super::Queue::put_timeout) and the other
    /// queues' `put_timeout`.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::new(1).unwrap();
    /// q.put(1).unwrap();
    /// let r = q.put_timeout(2, std::time::Duration::ZERO);
    /// assert_eq!(r, Err(shmproc::PutTimeoutError::TimedOut(2)));
    /// ```
    ///
    /// `#[non_exhaustive]`: queues of items that are not plain data added
    /// variants (`TooLarge` / `Corrupted`, which a plain-data queue never
    /// reports), and more may come; a `match` needs a `_` arm.
    #[non_exhaustive]
    PutTimeoutError { TimedOut = "timed out waiting for space in the queue", Closed = "the queue is closed" }; TooLarge
}
widen!(<T> PutError => PutTimeoutError: Closed; TooLarge { item, len, max });

get_error! {
    /// Why a get that never waits returned no item:
    /// [`MpmcQueue::try_pop`](super::MpmcQueue::try_pop),
    /// [`Queue::get_nowait`](super::Queue::get_nowait) and the other
    /// queues' `get_nowait`.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::new(1).unwrap();
    /// assert_eq!(q.get_nowait(), Err(shmproc::TryGetError::Empty));
    /// ```
    ///
    /// `#[non_exhaustive]`: queues of items that are not plain data added
    /// variants (`TooLarge` / `Corrupted`, which a plain-data queue never
    /// reports; `Decode` likewise), and more may come; a `match` needs a `_` arm.
    #[non_exhaustive]
    TryGetError { Empty = "the queue is empty", Closed = "the queue is closed", Corrupted = "the next frame could not be decoded as the item type (a peer of another type or a corrupted segment); it was removed" }
}

get_error! {
    /// Why a get that waits for an item returned none:
    /// [`MpmcQueue::pop`](super::MpmcQueue::pop),
    /// [`Queue::get`](super::Queue::get) and the other queues' `get`.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::new(1).unwrap();
    /// q.close();
    /// assert_eq!(q.get(), Err(shmproc::GetError::Closed));
    /// ```
    ///
    /// `#[non_exhaustive]`: queues of items that are not plain data added
    /// variants (`TooLarge` / `Corrupted`, which a plain-data queue never
    /// reports), and more may come; a `match` needs a `_` arm.
    #[non_exhaustive]
    GetError { Closed = "the queue is closed", Corrupted = "the next frame could not be decoded as the item type (a peer of another type or a corrupted segment); it was removed" }
}

get_error! {
    /// Why a get that waits at most a timeout returned no item:
    /// [`MpmcQueue::pop_timeout`](super::MpmcQueue::pop_timeout),
    /// [`Queue::get_timeout`](super::Queue::get_timeout) and the other
    /// queues' `get_timeout`.
    ///
    /// ```
    /// let q = shmproc::Queue::<u8>::new(1).unwrap();
    /// let r = q.get_timeout(std::time::Duration::ZERO);
    /// assert_eq!(r, Err(shmproc::GetTimeoutError::TimedOut));
    /// ```
    ///
    /// `#[non_exhaustive]`: queues of items that are not plain data added
    /// variants (`TooLarge` / `Corrupted`, which a plain-data queue never
    /// reports), and more may come; a `match` needs a `_` arm.
    #[non_exhaustive]
    GetTimeoutError { TimedOut = "timed out waiting for an item", Closed = "the queue is closed", Corrupted = "the next frame could not be decoded as the item type (a peer of another type or a corrupted segment); it was removed" }
}
impl From<GetError> for GetTimeoutError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Closed => GetTimeoutError::Closed,
            GetError::Corrupted => GetTimeoutError::Corrupted,
            GetError::Decode(d) => GetTimeoutError::Decode(d),
        }
    }
}
impl GetTimeoutError {
    /// The error of a wait without a deadline (never `TimedOut`).
    #[inline]
    pub(crate) fn untimed(self) -> GetError {
        match self {
            GetTimeoutError::Closed => GetError::Closed,
            GetTimeoutError::Corrupted => GetError::Corrupted,
            GetTimeoutError::Decode(d) => GetError::Decode(d),
            GetTimeoutError::TimedOut => unreachable!("a wait without a deadline does not time out"),
        }
    }
}

// Byte frames: an SPSC ring with a frame limit and frame headers to
// validate. Each variant is written once, in `frame_error!`, and each enum
// lists the ones its operation can produce.

/// Declares a byte-frame error enum with the listed variants, in order
/// (`SendClosed` / `RecvClosed` and the like differ only in wording).
macro_rules! frame_error {
    ($(#[doc = $doc:literal])* $name:ident { $($v:ident),* $(,)? }) => {
        frame_error!(@next [$(#[doc = $doc])*] $name [] $($v)*);
    };
    (@next [$($doc:tt)*] $name:ident [$($body:tt)*]) => {
        $($doc)*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
        pub enum $name { $($body)* }
    };
    (@next $doc:tt $name:ident [$($body:tt)*] Full $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// The ring has no room for the frame now.
            #[error("the queue is full")]
            Full,
        ] $($rest)*);
    };
    (@next $doc:tt $name:ident [$($body:tt)*] SendTimedOut $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// Still no room when the timeout expired.
            #[error("timed out waiting for space in the queue")]
            TimedOut,
        ] $($rest)*);
    };
    (@next $doc:tt $name:ident [$($body:tt)*] TooLarge $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// The frame is longer than the queue's `max_frame`.
            #[error("a frame of {len} bytes is larger than the queue's max_frame ({max} bytes)")]
            TooLarge {
                /// The frame's length.
                len: usize,
                /// The queue's frame limit (below `u32::MAX`; a `u32`, so the
                /// error stays two words and a send returns it in registers).
                max: u32,
            },
        ] $($rest)*);
    };
    (@next $doc:tt $name:ident [$($body:tt)*] SendClosed $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// The queue was closed.
            #[error("the queue is closed")]
            Closed,
        ] $($rest)*);
    };
    (@next $doc:tt $name:ident [$($body:tt)*] SendDisconnected $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// The consumer detached or died.
            #[error("the consumer is gone")]
            Disconnected,
        ] $($rest)*);
    };
    (@next $doc:tt $name:ident [$($body:tt)*] Empty $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// No frame now.
            #[error("the queue is empty")]
            Empty,
        ] $($rest)*);
    };
    (@next $doc:tt $name:ident [$($body:tt)*] RecvTimedOut $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// Still no frame when the timeout expired.
            #[error("timed out waiting for a frame")]
            TimedOut,
        ] $($rest)*);
    };
    (@next $doc:tt $name:ident [$($body:tt)*] Corrupted $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// A frame header in shared memory is invalid (a buggy or
            /// hostile peer); nothing outside the ring was read.
            #[error("corrupted frame header in the queue")]
            Corrupted,
        ] $($rest)*);
    };
    (@next $doc:tt $name:ident [$($body:tt)*] RecvClosed $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// The queue was closed and is drained.
            #[error("the queue is closed and drained")]
            Closed,
        ] $($rest)*);
    };
    (@next $doc:tt $name:ident [$($body:tt)*] RecvDisconnected $($rest:ident)*) => {
        frame_error!(@next $doc $name [$($body)*
            /// The producer detached or died and the queue is drained.
            #[error("the producer is gone and the queue is drained")]
            Disconnected,
        ] $($rest)*);
    };
}

frame_error! {
    /// Why [`ByteProducer::try_send`](super::ByteProducer::try_send) did not
    /// send (the frame stays with the caller).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(64, 16).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// assert_eq!(tx.try_send(&[0; 17]), Err(shmproc::TrySendError::TooLarge { len: 17, max: 16 }));
    /// ```
    TrySendError { Full, TooLarge, SendClosed, SendDisconnected }
}

frame_error! {
    /// Why [`ByteProducer::send`](super::ByteProducer::send) did not send (it
    /// waits while the ring is full).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 16).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// q.close();
    /// assert_eq!(tx.send(b"x"), Err(shmproc::SendError::Closed));
    /// ```
    SendError { TooLarge, SendClosed, SendDisconnected }
}

frame_error! {
    /// Why [`ByteProducer::send_timeout`](super::ByteProducer::send_timeout)
    /// did not send.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(64, 16).unwrap();
    /// let (mut tx, _rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// while tx.try_send(b"xx").is_ok() {}
    /// let r = tx.send_timeout(b"xx", std::time::Duration::ZERO);
    /// assert_eq!(r, Err(shmproc::SendTimeoutError::TimedOut));
    /// ```
    SendTimeoutError { SendTimedOut, TooLarge, SendClosed, SendDisconnected }
}
widen!(SendError => SendTimeoutError: TooLarge { len, max }, Closed, Disconnected);
retry_on!(TrySendError::Full => SendTimeoutError: TooLarge { len, max }, Closed, Disconnected);

frame_error! {
    /// Why [`ByteConsumer::try_recv`](super::ByteConsumer::try_recv) (or
    /// [`try_recv_into`](super::ByteConsumer::try_recv_into)) returned no
    /// frame.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 16).unwrap();
    /// let (_tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// assert_eq!(rx.try_recv(), Err(shmproc::TryRecvError::Empty));
    /// ```
    TryRecvError { Empty, Corrupted, RecvClosed, RecvDisconnected }
}

frame_error! {
    /// Why [`ByteConsumer::recv`](super::ByteConsumer::recv) (or
    /// [`recv_into`](super::ByteConsumer::recv_into)) returned no frame (it
    /// waits while the ring is empty).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 16).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// q.close();
    /// assert_eq!(rx.recv(), Err(shmproc::RecvError::Closed));
    /// ```
    RecvError { Corrupted, RecvClosed, RecvDisconnected }
}

frame_error! {
    /// Why [`ByteConsumer::recv_timeout`](super::ByteConsumer::recv_timeout)
    /// (or [`recv_timeout_into`](super::ByteConsumer::recv_timeout_into))
    /// returned no frame.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 16).unwrap();
    /// let (_tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// let r = rx.recv_timeout(std::time::Duration::ZERO);
    /// assert_eq!(r, Err(shmproc::RecvTimeoutError::TimedOut));
    /// ```
    RecvTimeoutError { RecvTimedOut, Corrupted, RecvClosed, RecvDisconnected }
}
widen!(RecvError => RecvTimeoutError: Corrupted, Closed, Disconnected);
retry_on!(TryRecvError::Empty => RecvTimeoutError: Corrupted, Closed, Disconnected);

/// A role (producer or consumer) is already held by a live handle: in
/// another process, or in this one (roles are exclusive per handle: one
/// live producer and one live consumer per ring, across all processes and
/// threads). It can be taken once that handle is dropped or its process
/// has died.
///
/// ```
/// let q = shmproc::queue::SpscQueue::<u8>::new(4).unwrap();
/// let tx = q.producer().unwrap();
/// let e = q.producer().unwrap_err();
/// assert_eq!((e.role, e.pid), ("producer", std::process::id()));
/// drop(tx);
/// assert!(q.producer().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {role} role of this queue is held by {}", holder(*pid))]
pub struct RoleError {
    /// "producer" or "consumer".
    pub role: &'static str,
    /// The holder's pid (ours if another handle of this process holds it).
    pub pid: u32,
}

fn holder(pid: u32) -> String {
    if pid == std::process::id() {
        format!("another live handle in this process ({pid})")
    } else {
        format!("live process {pid}")
    }
}

/// `task_done` was called more often than items were put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task_done() called more times than there were items")]
pub struct TaskDoneError;

// The errors stay small: a refused send or push returns in two registers,
// as the single `PushError` did before the enums were split per operation.
const _: () = assert!(std::mem::size_of::<Result<(), TrySendError>>() <= 16);
const _: () = assert!(std::mem::size_of::<Result<(), SendTimeoutError>>() <= 16);
const _: () = assert!(std::mem::size_of::<Result<(), TryPushError<u64>>>() <= 16);
const _: () = assert!(std::mem::size_of::<Result<u64, TryPopError>>() <= 16);
