//! The pipe's errors: one enum per [`Connection`](super::Connection)
//! operation, holding only the variants that operation can produce
//! (iceoryx2's style, as the queues' errors), so a `match` lists exactly
//! what can happen. All are reachable from the crate root.
//!
//! | operation | never waits (`try_`) | waits | waits at most a timeout (`_timeout`) |
//! |---|---|---|---|
//! | `send`, `send_bytes` | [`PipeTrySendError`] | [`PipeSendError`] | [`PipeSendTimeoutError`] |
//! | `recv_bytes` | [`PipeTryRecvBytesError`] | [`PipeRecvBytesError`] | [`PipeRecvBytesTimeoutError`] |
//! | `recv::<T>` | [`PipeTryRecvError`] | [`PipeRecvError`] | [`PipeRecvTimeoutError`] |
//! | `recv_value::<T>` | [`PipeTryRecvValueError`] | [`PipeRecvValueError`] | [`PipeRecvValueTimeoutError`] |
//! | `poll` | | [`PipePollError`] | |
//!
//! `send_value`, `send_loan` and `recv_bytes_into`, `recv_loan` share the
//! errors of `send_bytes` and `recv_bytes`. Only sends can be `TooLarge`,
//! only the typed `recv::<T>` forms `WrongSize`, only `recv_value::<T>`
//! `Decode` (those errors, and `ConnectionError`, are not `Copy`: they
//! carry the decoder's error). Each error converts (`From`) into the wider errors of the
//! same direction (a waiting form's into its `try_` and `_timeout`
//! twins', `recv_bytes`' into `recv`'s, `poll`'s into every receive's)
//! and every one into [`ConnectionError`], the union of them all, so one
//! `?` can serve several operations.

use crate::process::HandoffError;
use crate::queue::RoleError;

/// Declares a pipe error enum with the listed variants, in order (each
/// variant is written once, here).
/// Errors are `Copy` unless marked `nocopy` (those with `Decode`, which
/// carries the decoder's error).
macro_rules! conn_error {
    (nocopy $(#[$attr:meta])* $name:ident { $($v:ident),* $(,)? }) => {
        conn_error!(@next [$(#[$attr])*] $name [] $($v)*);
    };
    ($(#[$attr:meta])* $name:ident { $($v:ident),* $(,)? }) => {
        conn_error!(@next [$(#[$attr])* #[derive(Copy)]] $name [] $($v)*);
    };
    (@next [$($attr:tt)*] $name:ident [$($body:tt)*]) => {
        $($attr)*
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        pub enum $name { $($body)* }

        // Every pipe error has `Role` (each operation takes its role on
        // first use). Not `#[from]`: that would make the `RoleError` also
        // the `source()`, so an error chain would print it twice.
        impl From<RoleError> for $name {
            fn from(e: RoleError) -> Self {
                $name::Role(e)
            }
        }
    };
    (@next $attr:tt $name:ident [$($body:tt)*] NotWritable $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// A send on the receive-only end of a one-way pipe.
            #[error("this end of the pipe cannot send")]
            NotWritable,
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] NotReadable $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// A receive (or `poll`) on the send-only end of a one-way pipe.
            #[error("this end of the pipe cannot receive")]
            NotReadable,
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] Closed $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// `close()` was called on this handle, or (sends only)
            /// [`Connection::shutdown`](super::Connection::shutdown) closed
            /// the pipe for everybody.
            #[error("this end of the pipe is closed")]
            Closed,
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] Disconnected $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// The other end was closed or dropped, or its process died, or
            /// the pipe was shut down (receives: after everything sent was
            /// received).
            #[error("the other end of the pipe is gone")]
            Disconnected,
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] TooLarge $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// A message above the pipe's frame limit
            /// ([`PIPE_MAX_FRAME`](crate::PIPE_MAX_FRAME) for
            /// [`pipe`](crate::pipe), the `max_frame` of
            /// [`pipe_with`](crate::pipe_with)); nothing was sent.
            #[error(
                "message of {len} bytes exceeds the pipe's frame limit of {max} bytes: send it in parts, or make the \
                 pipe with pipe_with(duplex, capacity, max_frame) with a larger max_frame"
            )]
            TooLarge {
                /// The message's length.
                len: usize,
                /// The pipe's frame limit.
                max: usize,
            },
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] WrongSize $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// `recv::<T>()` got a message whose size is not
            /// `size_of::<T>()` (it is consumed).
            #[error("received {got} bytes, expected {expected}")]
            WrongSize {
                /// `size_of::<T>()`.
                expected: usize,
                /// The message's length.
                got: usize,
            },
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] Decode $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// `recv_value::<T>()` got a message that is not a valid
            /// encoding of a `T` (it is consumed); for a handle (a queue, a
            /// lock...), the object it names could not be opened.
            #[error("cannot decode the message: {0}")]
            Decode(HandoffError),
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] Full $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// No room for the message now (nothing was sent).
            #[error("the pipe is full")]
            Full,
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] Empty $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// No message is waiting now.
            #[error("no message is waiting in the pipe")]
            Empty,
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] TimedOut $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// The timeout expired first (nothing was sent or received).
            #[error("timed out")]
            TimedOut,
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] Corrupted $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// A frame header in shared memory was invalid.
            #[error("corrupted frame in the pipe")]
            Corrupted,
        ] $($rest)*);
    };
    (@next $attr:tt $name:ident [$($body:tt)*] Role $($rest:ident)*) => {
        conn_error!(@next $attr $name [$($body)*
            /// Another live handle (in this or another process) already
            /// holds this end's role.
            #[error("{0}")]
            Role(RoleError),
        ] $($rest)*);
    };
}

/// `From<$narrow> for $wide`, variant by variant (every variant of the
/// narrow error exists in each wide one).
macro_rules! widen {
    ($narrow:ident => $($wide:ident),+ : $($v:ident),* $(,)?) => {
        widen!(@each $narrow [$($v)*] $($wide)+);
    };
    (@each $narrow:ident $vs:tt) => {};
    (@each $narrow:ident $vs:tt $wide:ident $($rest:ident)*) => {
        impl From<$narrow> for $wide {
            fn from(e: $narrow) -> Self {
                widen!(@start e $narrow $wide $vs)
            }
        }
        widen!(@each $narrow $vs $($rest)*);
    };
    (@start $e:ident $narrow:ident $wide:ident [$($v:ident)*]) => {
        widen!(@arms $e $narrow $wide [] $($v)*)
    };
    (@arms $e:ident $narrow:ident $wide:ident [$($arms:tt)*]) => {
        match $e { $($arms)* }
    };
    (@arms $e:ident $narrow:ident $wide:ident [$($arms:tt)*] TooLarge $($rest:ident)*) => {
        widen!(@arms $e $narrow $wide [$($arms)* $narrow::TooLarge { len, max } => $wide::TooLarge { len, max },] $($rest)*)
    };
    (@arms $e:ident $narrow:ident $wide:ident [$($arms:tt)*] WrongSize $($rest:ident)*) => {
        widen!(@arms $e $narrow $wide [$($arms)* $narrow::WrongSize { expected, got } => $wide::WrongSize { expected, got },] $($rest)*)
    };
    (@arms $e:ident $narrow:ident $wide:ident [$($arms:tt)*] Decode $($rest:ident)*) => {
        widen!(@arms $e $narrow $wide [$($arms)* $narrow::Decode(d) => $wide::Decode(d),] $($rest)*)
    };
    (@arms $e:ident $narrow:ident $wide:ident [$($arms:tt)*] Role $($rest:ident)*) => {
        widen!(@arms $e $narrow $wide [$($arms)* $narrow::Role(r) => $wide::Role(r),] $($rest)*)
    };
    (@arms $e:ident $narrow:ident $wide:ident [$($arms:tt)*] $v:ident $($rest:ident)*) => {
        widen!(@arms $e $narrow $wide [$($arms)* $narrow::$v => $wide::$v,] $($rest)*)
    };
}

conn_error! {
    /// Why [`send`](super::Connection::send) or
    /// [`send_bytes`](super::Connection::send_bytes) did not send (they
    /// wait while the pipe is full).
    ///
    /// ```
    /// use shmproc::PipeSendError;
    /// let (mut a, mut b) = shmproc::pipe_with(false, 1024, 8).unwrap();
    /// assert_eq!(a.send_bytes(b"x"), Err(PipeSendError::NotWritable));
    /// assert_eq!(b.send_bytes(&[0; 9]), Err(PipeSendError::TooLarge { len: 9, max: 8 }));
    /// b.close();
    /// assert_eq!(b.send(&1u8), Err(PipeSendError::Closed));
    /// ```
    PipeSendError { NotWritable, Closed, Disconnected, TooLarge, Role }
}

conn_error! {
    /// Why [`try_send`](super::Connection::try_send) or
    /// [`try_send_bytes`](super::Connection::try_send_bytes) did not send
    /// (they never wait).
    ///
    /// ```
    /// use shmproc::PipeTrySendError;
    /// let (mut a, _b) = shmproc::pipe_with(true, 64, 8).unwrap();
    /// while a.try_send_bytes(b"more").is_ok() {}
    /// assert_eq!(a.try_send_bytes(b"more"), Err(PipeTrySendError::Full));
    /// ```
    PipeTrySendError { NotWritable, Closed, Disconnected, TooLarge, Full, Role }
}

conn_error! {
    /// Why [`send_timeout`](super::Connection::send_timeout) or
    /// [`send_bytes_timeout`](super::Connection::send_bytes_timeout) did
    /// not send.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmproc::PipeSendTimeoutError;
    /// let (mut a, _b) = shmproc::pipe_with(true, 64, 8).unwrap();
    /// while a.try_send(&1u64).is_ok() {}
    /// assert_eq!(a.send_timeout(&2u64, Duration::from_millis(2)), Err(PipeSendTimeoutError::TimedOut));
    /// ```
    PipeSendTimeoutError { NotWritable, Closed, Disconnected, TooLarge, TimedOut, Role }
}
widen!(PipeSendError => PipeTrySendError, PipeSendTimeoutError: NotWritable, Closed, Disconnected, TooLarge, Role);

conn_error! {
    /// Why [`recv_bytes`](super::Connection::recv_bytes) returned no
    /// message (it waits while none is waiting).
    ///
    /// ```
    /// use shmproc::PipeRecvBytesError;
    /// let (mut a, mut b) = shmproc::pipe(false).unwrap();
    /// assert_eq!(b.recv_bytes(), Err(PipeRecvBytesError::NotReadable));
    /// b.send_bytes(b"last").unwrap();
    /// b.close();
    /// assert_eq!(a.recv_bytes().unwrap(), b"last");
    /// assert_eq!(a.recv_bytes(), Err(PipeRecvBytesError::Disconnected));
    /// ```
    PipeRecvBytesError { NotReadable, Closed, Disconnected, Corrupted, Role }
}

conn_error! {
    /// Why [`try_recv_bytes`](super::Connection::try_recv_bytes) returned
    /// no message (it never waits).
    ///
    /// ```
    /// let (mut a, _b) = shmproc::pipe(true).unwrap();
    /// assert_eq!(a.try_recv_bytes(), Err(shmproc::PipeTryRecvBytesError::Empty));
    /// ```
    PipeTryRecvBytesError { NotReadable, Closed, Disconnected, Corrupted, Empty, Role }
}

conn_error! {
    /// Why [`recv_bytes_timeout`](super::Connection::recv_bytes_timeout)
    /// returned no message.
    ///
    /// ```
    /// let (mut a, _b) = shmproc::pipe(true).unwrap();
    /// let r = a.recv_bytes_timeout(std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::PipeRecvBytesTimeoutError::TimedOut));
    /// ```
    PipeRecvBytesTimeoutError { NotReadable, Closed, Disconnected, Corrupted, TimedOut, Role }
}
widen!(PipeRecvBytesError => PipeTryRecvBytesError, PipeRecvBytesTimeoutError, PipeRecvError, PipeTryRecvError, PipeRecvTimeoutError,
    PipeRecvValueError, PipeTryRecvValueError, PipeRecvValueTimeoutError: NotReadable, Closed, Disconnected, Corrupted, Role);
widen!(PipeTryRecvBytesError => PipeTryRecvError, PipeTryRecvValueError: NotReadable, Closed, Disconnected, Corrupted, Empty, Role);
widen!(PipeRecvBytesTimeoutError => PipeRecvTimeoutError, PipeRecvValueTimeoutError:
    NotReadable, Closed, Disconnected, Corrupted, TimedOut, Role);

conn_error! {
    /// Why [`recv::<T>`](super::Connection::recv) returned no value (it
    /// waits while no message is waiting): as [`PipeRecvBytesError`], and
    /// `WrongSize` for a message that is not `size_of::<T>()` bytes.
    ///
    /// ```
    /// use shmproc::PipeRecvError;
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send(&7u16).unwrap();
    /// assert_eq!(b.recv::<u64>(), Err(PipeRecvError::WrongSize { expected: 8, got: 2 }));
    /// ```
    PipeRecvError { NotReadable, Closed, Disconnected, Corrupted, WrongSize, Role }
}

conn_error! {
    /// Why [`try_recv::<T>`](super::Connection::try_recv) returned no
    /// value (it never waits).
    ///
    /// ```
    /// let (mut a, _b) = shmproc::pipe(true).unwrap();
    /// assert_eq!(a.try_recv::<u32>(), Err(shmproc::PipeTryRecvError::Empty));
    /// ```
    PipeTryRecvError { NotReadable, Closed, Disconnected, Corrupted, WrongSize, Empty, Role }
}

conn_error! {
    /// Why [`recv_timeout::<T>`](super::Connection::recv_timeout) returned
    /// no value.
    ///
    /// ```
    /// let (mut a, _b) = shmproc::pipe(true).unwrap();
    /// let r = a.recv_timeout::<u32>(std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::PipeRecvTimeoutError::TimedOut));
    /// ```
    PipeRecvTimeoutError { NotReadable, Closed, Disconnected, Corrupted, WrongSize, TimedOut, Role }
}
widen!(PipeRecvError => PipeTryRecvError, PipeRecvTimeoutError: NotReadable, Closed, Disconnected, Corrupted, WrongSize, Role);

conn_error! {
    nocopy
    /// Why [`recv_value::<T>`](super::Connection::recv_value) returned no
    /// value (it waits while no message is waiting): as
    /// [`PipeRecvBytesError`], and `Decode` for a message that is not a
    /// valid encoding of a `T` (it is consumed).
    ///
    /// ```
    /// use shmproc::PipeRecvValueError;
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send_bytes(&[1, 2, 3]).unwrap(); // not an encoded String
    /// assert!(matches!(b.recv_value::<String>(), Err(PipeRecvValueError::Decode(_))));
    /// ```
    PipeRecvValueError { NotReadable, Closed, Disconnected, Corrupted, Decode, Role }
}

conn_error! {
    nocopy
    /// Why [`try_recv_value::<T>`](super::Connection::try_recv_value)
    /// returned no value (it never waits).
    ///
    /// ```
    /// let (mut a, _b) = shmproc::pipe(true).unwrap();
    /// assert_eq!(a.try_recv_value::<String>(), Err(shmproc::PipeTryRecvValueError::Empty));
    /// ```
    PipeTryRecvValueError { NotReadable, Closed, Disconnected, Corrupted, Decode, Empty, Role }
}

conn_error! {
    nocopy
    /// Why [`recv_value_timeout::<T>`](super::Connection::recv_value_timeout)
    /// returned no value.
    ///
    /// ```
    /// let (mut a, _b) = shmproc::pipe(true).unwrap();
    /// let r = a.recv_value_timeout::<String>(std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::PipeRecvValueTimeoutError::TimedOut));
    /// ```
    PipeRecvValueTimeoutError { NotReadable, Closed, Disconnected, Corrupted, Decode, TimedOut, Role }
}
widen!(PipeRecvValueError => PipeTryRecvValueError, PipeRecvValueTimeoutError:
    NotReadable, Closed, Disconnected, Corrupted, Decode, Role);

conn_error! {
    /// Why [`poll`](super::Connection::poll) could not look for a message
    /// (it cannot see a corrupted frame or a gone peer: it only reports
    /// whether something is waiting).
    ///
    /// ```
    /// let (_a, mut b) = shmproc::pipe(false).unwrap();
    /// let r = b.poll(std::time::Duration::ZERO);
    /// assert_eq!(r, Err(shmproc::PipePollError::NotReadable));
    /// ```
    PipePollError { NotReadable, Closed, Role }
}
widen!(PipePollError => PipeRecvBytesError, PipeTryRecvBytesError, PipeRecvBytesTimeoutError, PipeRecvError,
    PipeTryRecvError, PipeRecvTimeoutError, PipeRecvValueError, PipeTryRecvValueError, PipeRecvValueTimeoutError:
    NotReadable, Closed, Role);

conn_error! {
    nocopy
    /// Any [`Connection`](super::Connection) error: the union of the
    /// per-operation errors above, each of which converts into it
    /// (`From`), so one `?` serves every operation.
    ///
    /// ```
    /// use shmproc::ConnectionError;
    /// fn echo(c: &mut shmproc::Connection) -> Result<u32, ConnectionError> {
    ///     let v: u32 = c.recv()?; // PipeRecvError
    ///     c.send(&v)?; // PipeSendError
    ///     Ok(v)
    /// }
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send(&5u32).unwrap();
    /// assert_eq!(echo(&mut b), Ok(5));
    /// a.close();
    /// assert_eq!(echo(&mut b), Err(ConnectionError::Disconnected));
    /// ```
    #[non_exhaustive]
    ConnectionError {
        NotWritable, NotReadable, Closed, Disconnected, TooLarge, WrongSize, Full, Empty, TimedOut, Corrupted, Decode, Role
    }
}
widen!(PipeSendError => ConnectionError: NotWritable, Closed, Disconnected, TooLarge, Role);
widen!(PipeTrySendError => ConnectionError: NotWritable, Closed, Disconnected, TooLarge, Full, Role);
widen!(PipeSendTimeoutError => ConnectionError: NotWritable, Closed, Disconnected, TooLarge, TimedOut, Role);
widen!(PipeRecvBytesError => ConnectionError: NotReadable, Closed, Disconnected, Corrupted, Role);
widen!(PipeTryRecvBytesError => ConnectionError: NotReadable, Closed, Disconnected, Corrupted, Empty, Role);
widen!(PipeRecvBytesTimeoutError => ConnectionError: NotReadable, Closed, Disconnected, Corrupted, TimedOut, Role);
widen!(PipeRecvError => ConnectionError: NotReadable, Closed, Disconnected, Corrupted, WrongSize, Role);
widen!(PipeTryRecvError => ConnectionError: NotReadable, Closed, Disconnected, Corrupted, WrongSize, Empty, Role);
widen!(PipeRecvTimeoutError => ConnectionError: NotReadable, Closed, Disconnected, Corrupted, WrongSize, TimedOut, Role);
widen!(PipeRecvValueError => ConnectionError: NotReadable, Closed, Disconnected, Corrupted, Decode, Role);
widen!(PipeTryRecvValueError => ConnectionError: NotReadable, Closed, Disconnected, Corrupted, Decode, Empty, Role);
widen!(PipeRecvValueTimeoutError => ConnectionError: NotReadable, Closed, Disconnected, Corrupted, Decode, TimedOut, Role);
widen!(PipePollError => ConnectionError: NotReadable, Closed, Role);
