//! `pipe()` → two [`Connection`]s, like `multiprocessing.Pipe(duplex)`.
//!
//! Each direction is a [`ByteQueue`](crate::queue::ByteQueue): frames of
//! bytes (or of any `T: Pod`, copied as bytes). An end takes its roles in a
//! queue the first time it sends or receives, so a `Connection` can be
//! created in one process and handed to a child before either uses it; one
//! end per process. Handing an end to a child ([`Process`](crate::Process)
//! argument) makes its roles the child's at once: if the child dies before
//! using it, the peer still learns it.
//!
//! Closing follows Python: [`Connection::close`] (or dropping) closes this
//! handle only. The peer's `recv` drains what was sent and then reports
//! [`Disconnected`](PipeRecvError::Disconnected) when the end's holder closes it, drops
//! it or dies (a parent closing its own copy of the end it handed to a
//! child changes nothing for the child). [`Connection::shutdown`] closes
//! the pipe for every process.
//!
//! Every blocking operation has a `try_` twin that never waits and a
//! `_timeout` twin: `send_bytes` / [`try_send_bytes`](Connection::try_send_bytes)
//! / [`send_bytes_timeout`](Connection::send_bytes_timeout), and likewise
//! `send`, `send_value`, `send_loan`, `recv_bytes`, `recv_bytes_into`,
//! `recv`, `recv_value`, `recv_loan`.
//!
//! What travels:
//! - [`send_bytes`](Connection::send_bytes) / [`recv_bytes`](Connection::recv_bytes)
//!   (and [`recv_bytes_into`](Connection::recv_bytes_into), which reuses a
//!   buffer): raw messages;
//! - [`send`](Connection::send) / [`recv`](Connection::recv): a plain-data
//!   (`Pod`) value, as its bytes;
//! - [`send_value`](Connection::send_value) / [`recv_value`](Connection::recv_value):
//!   any [`Handoff`] value (`String`, `Vec`, tuples, `Option`s, handles,
//!   your own types), like Python's `send(obj)` / `recv()`;
//! - [`send_loan`](Connection::send_loan) / [`recv_loan`](Connection::recv_loan):
//!   a message written or read in place in shared memory (zero copy).
//!
//! ## Frame limit
//!
//! A message (a frame) is at most the pipe's frame limit:
//! [`DEFAULT_MAX_FRAME`] (16 KiB) for [`pipe`], the `max_frame` given to
//! [`pipe_with`] otherwise. A larger message is refused with
//! [`PipeSendError::TooLarge`] (nothing is sent); make the pipe with
//! `pipe_with(duplex, capacity, max_frame)` to carry larger ones, or send
//! the message in parts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytemuck::Pod;

use crate::OpenError;
use crate::wait::Deadline;
use crate::process::{Handoff, HandoffError};
use crate::queue::{
    ByteConsumer, ByteProducer, ByteQueue, ByteReadLoan, ByteWriteLoan, RecvError, RecvTimeoutError, SendError,
    SendTimeoutError, TryRecvError, TrySendError,
};

mod error;
mod waitable;
pub use error::{
    ConnectionError, PipePollError, PipeRecvBytesError, PipeRecvBytesTimeoutError, PipeRecvError,
    PipeRecvTimeoutError, PipeRecvValueError, PipeRecvValueTimeoutError, PipeSendError, PipeSendTimeoutError,
    PipeTryRecvBytesError, PipeTryRecvError, PipeTryRecvValueError, PipeTrySendError,
};

/// Default ring size of each direction of a [`pipe`], in bytes.
///
/// ```
/// assert_eq!(shmproc::PIPE_CAPACITY, 64 * 1024);
/// ```
pub const DEFAULT_CAPACITY: u64 = 64 * 1024;
/// Default frame limit of a [`pipe`]: the largest message, in bytes.
///
/// ```
/// let (mut a, _b) = shmproc::pipe(true).unwrap();
/// let big = vec![0u8; shmproc::PIPE_MAX_FRAME as usize + 1];
/// assert!(matches!(a.send_bytes(&big), Err(shmproc::PipeSendError::TooLarge { .. })));
/// ```
pub const DEFAULT_MAX_FRAME: u64 = 16 * 1024;

/// One end of a [`pipe`].
///
/// Messages are at most the pipe's frame limit (see [`pipe_with`]); a
/// larger one fails with [`PipeSendError::TooLarge`]. Sends and receives
/// come in three forms: waiting, `try_` (never waits: `Full` / `Empty`)
/// and `_timeout` (`TimedOut`).
///
/// Each operation has its own error enum, with only what it can produce:
///
/// | operation | never waits (`try_`) | waits | waits at most a timeout (`_timeout`) |
/// |---|---|---|---|
/// | `send`, `send_bytes`, `send_value`, `send_loan` | [`PipeTrySendError`] | [`PipeSendError`] | [`PipeSendTimeoutError`] |
/// | `recv_bytes`, `recv_bytes_into`, `recv_loan` | [`PipeTryRecvBytesError`] | [`PipeRecvBytesError`] | [`PipeRecvBytesTimeoutError`] |
/// | `recv::<T>` | [`PipeTryRecvError`] | [`PipeRecvError`] | [`PipeRecvTimeoutError`] |
/// | `recv_value::<T>` | [`PipeTryRecvValueError`] | [`PipeRecvValueError`] | [`PipeRecvValueTimeoutError`] |
/// | `poll` | | [`PipePollError`] | |
///
/// `send_value` and `send_loan` share the errors of `send`; `recv_bytes_into`
/// and `recv_loan` those of `recv_bytes`.
///
/// Each converts into [`ConnectionError`], the union of them all (`From`),
/// so one `?` serves every operation.
///
/// Cloning gives another handle to the same end (holding no role until it
/// sends or receives), like the copy of a Python `Connection` that a
/// parent keeps after handing the end to a child.
///
/// An end is used by one process at a time: the process that sends or
/// receives on it first (or the child it was handed to) holds it until it
/// closes or drops that end or exits, and meanwhile another process's
/// send or receive on the same end fails with `Role` ("the producer role
/// of this queue is held by live process N"). Python lets several
/// processes given one end use it in turn under a `Lock`; here give each
/// its own pipe, or use a [`Queue`](crate::Queue) (any number of
/// producers and consumers).
///
/// Python's offsets are slices here: `send_bytes(buf, offset, size)` is
/// `send_bytes(&buf[offset..offset + size])`; `recv_bytes_into(buf)`
/// replaces the contents of a `Vec` (to place a message at an offset of
/// your buffer, copy it from there). There is no `maxlength`: a message is
/// at most the pipe's frame limit.
///
/// ```
/// let (mut a, mut b) = shmproc::pipe(true).unwrap();
/// let buf = b"0123456789";
/// a.send_bytes(&buf[2..2 + 5]).unwrap(); // Python: a.send_bytes(buf, 2, 5)
/// let mut out = vec![0u8; 8];
/// let mut msg = Vec::new();
/// let n = b.recv_bytes_into(&mut msg).unwrap(); // then place it at offset 3
/// out[3..3 + n].copy_from_slice(&msg);
/// assert_eq!(out, [0, 0, 0, b'2', b'3', b'4', b'5', b'6']);
/// ```
#[derive(Debug)]
pub struct Connection {
    out: Option<ByteQueue>,
    inp: Option<ByteQueue>,
    tx: Option<ByteProducer>,
    rx: Option<ByteConsumer>,
    closed: bool,
    /// What this handle released already (`close`, then `Drop`).
    released: bool,
    /// Shared by the copies (clones) of this end in this process.
    copies: Arc<Copies>,
    /// Reused by `send_value` / `recv_value` for the encoded bytes.
    scratch: Vec<u8>,
}

/// The copies of one end in one process.
#[derive(Debug)]
struct Copies {
    /// How many are not closed yet.
    open: AtomicUsize,
    /// One was handed to a child process: its roles are the child's.
    handed: AtomicBool,
    /// This end was received from the parent: its roles were handed to
    /// this process.
    received: bool,
}

impl Copies {
    fn new(received: bool) -> Arc<Copies> {
        Arc::new(Copies { open: AtomicUsize::new(1), handed: AtomicBool::new(false), received })
    }
}

impl Clone for Connection {
    /// Another handle to the same end; it holds no role until used.
    ///
    /// ```
    /// let (mut a, b) = shmproc::pipe(true).unwrap();
    /// let mut b2 = b.clone();
    /// drop(b); // an unused copy: the end stays open
    /// b2.send(&3u8).unwrap();
    /// assert_eq!(a.recv::<u8>().unwrap(), 3);
    /// ```
    fn clone(&self) -> Self {
        Connection {
            out: self.out.clone(),
            inp: self.inp.clone(),
            tx: None,
            rx: None,
            closed: false,
            released: false,
            scratch: Vec::new(),
            copies: {
                self.copies.open.fetch_add(1, Ordering::Relaxed);
                Arc::clone(&self.copies)
            },
        }
    }
}

impl Drop for Connection {
    /// Like [`close`](Connection::close).
    fn drop(&mut self) {
        self.release();
    }
}

/// A pipe with default sizes: two connected ends. With `duplex`, both ends
/// send and receive; without, the first end only receives and the second
/// only sends (as in Python).
///
/// Each direction holds [`DEFAULT_CAPACITY`] bytes, and a message is at
/// most [`DEFAULT_MAX_FRAME`] (16 KiB) bytes: a larger one fails with
/// [`PipeSendError::TooLarge`]. Use [`pipe_with`] for other sizes.
///
/// Python's `send(obj)` / `recv()` are [`send_value`](Connection::send_value)
/// / [`recv_value`](Connection::recv_value) (any [`Handoff`](crate::Handoff)
/// value); [`send`](Connection::send) / [`recv`](Connection::recv) move
/// plain data (`Pod`) without encoding.
///
/// ```
/// let (mut a, mut b) = shmproc::pipe(true).unwrap();
/// a.send_value(&(1i64, "hello".to_string(), vec![1.5f64, 2.5])).unwrap();
/// assert_eq!(b.recv_value::<(i64, String, Vec<f64>)>().unwrap(), (1, "hello".to_string(), vec![1.5, 2.5]));
/// a.send(&42u64).unwrap();
/// assert_eq!(b.recv::<u64>().unwrap(), 42);
/// b.send_bytes(b"pong").unwrap();
/// assert_eq!(a.recv_bytes().unwrap(), b"pong");
/// ```
pub fn pipe(duplex: bool) -> Result<(Connection, Connection), OpenError> {
    pipe_with(duplex, DEFAULT_CAPACITY, DEFAULT_MAX_FRAME)
}

/// [`pipe`] with explicit ring bytes per direction and frame limit.
///
/// `capacity` is a power of two of at least 64 bytes; `max_frame`, the
/// largest message in bytes, is at most `capacity / 2 - 64`
/// (`capacity / 2 - 8` below 64 bytes: two frames, with header and
/// alignment padding, must fit in the ring). A message above `max_frame` fails with
/// [`PipeSendError::TooLarge`]; other sizes fail with
/// [`OpenError::InvalidArgument`].
///
/// ```
/// let (mut a, mut b) = shmproc::pipe_with(false, 4096, 1024).unwrap();
/// assert!(a.send_bytes(b"x").is_err()); // a only receives
/// b.send_bytes(b"x").unwrap();
/// assert_eq!(a.recv_bytes().unwrap(), b"x");
/// assert_eq!(b.send_bytes(&[0; 1025]), Err(shmproc::PipeSendError::TooLarge { len: 1025, max: 1024 }));
/// ```
pub fn pipe_with(duplex: bool, capacity: u64, max_frame: u64) -> Result<(Connection, Connection), OpenError> {
    let ab = ByteQueue::new(capacity, max_frame)?; // a -> b
    let ba = ByteQueue::new(capacity, max_frame)?; // b -> a
    // Both ends are this process's until used or handed to a child: every
    // role is designated to it at once, so if this process dies before it
    // used an end (or handed it on), the peer sees `Disconnected` instead
    // of waiting for ever on a role nobody holds. Its own first use claims
    // the designation; `Process::start` hands it on to a child.
    let me = crate::sys::thread::process_packed();
    for q in [&ab, &ba] {
        q.designate(true, me);
        q.designate(false, me);
    }
    if duplex {
        Ok((Connection::new(Some(ab.clone()), Some(ba.clone())), Connection::new(Some(ba), Some(ab))))
    } else {
        Ok((Connection::new(None, Some(ba.clone())), Connection::new(Some(ba), None)))
    }
}

/// [`Connection::release_unused`] for the copies `copies` of an end.
fn release_unused(copies: &Copies, q: &ByteQueue, producer: bool) {
    if copies.received {
        q.release_designation(producer);
    } else if !copies.handed.load(Ordering::Relaxed) {
        let _ = if producer { q.producer().map(drop) } else { q.consumer().map(drop) };
    }
}

impl Connection {
    fn new(out: Option<ByteQueue>, inp: Option<ByteQueue>) -> Self {
        Self::with_copies(out, inp, Copies::new(false))
    }

    fn with_copies(out: Option<ByteQueue>, inp: Option<ByteQueue>, copies: Arc<Copies>) -> Self {
        Connection { out, inp, tx: None, rx: None, closed: false, released: false, copies, scratch: Vec::new() }
    }

    /// The names of the two directions (send, receive), for handing over.
    pub(crate) fn names(&self) -> (Option<String>, Option<String>) {
        (self.out.as_ref().map(|q| q.name().to_owned()), self.inp.as_ref().map(|q| q.name().to_owned()))
    }

    /// Records that this end is being handed to a child: its roles travel
    /// with it (see `process::handoff::collect_transfers`).
    pub(crate) fn note_handed(&self) {
        let was = self.copies.handed.swap(true, Ordering::Relaxed);
        // A start that makes no child clears the mark again, unless an
        // earlier handing set it. If every copy of the end is gone by then
        // (a pool's `map` drops each argument once encoded, before it
        // knows whether its batch is sent), the role is given up as the
        // last copy's drop would have done, unmarked: the peer learns
        // nobody will use this end.
        let undo = |copies: &Arc<Copies>, q: &ByteQueue, producer: bool| -> Option<Box<dyn FnOnce()>> {
            let (copies, q) = (Arc::clone(copies), q.clone());
            (!was).then(|| {
                Box::new(move || {
                    copies.handed.store(false, Ordering::Relaxed);
                    // Acquire: pairs with the AcqRel fetch_sub in `release`.
                    if copies.open.load(Ordering::Acquire) == 0 {
                        release_unused(&copies, &q, producer);
                    }
                }) as Box<dyn FnOnce()>
            })
        };
        if let Some(q) = &self.out {
            crate::process::handoff::note_transfer(q, true, undo(&self.copies, q, true));
        }
        if let Some(q) = &self.inp {
            crate::process::handoff::note_transfer(q, false, undo(&self.copies, q, false));
        }
    }

    /// The end a child receives from its parent.
    ///
    /// An end handed over as a child's start argument has its roles
    /// designated to the child already; one that came through a queue or
    /// a pipe has them free (its sender let them go): they are designated
    /// to this process now, so that dropping the end unused (or dying
    /// before using it) tells the peer, as for a start argument.
    pub(crate) fn received(out: Option<String>, inp: Option<String>) -> Result<Self, OpenError> {
        let open = |n: Option<String>| n.map(|n| ByteQueue::open(&n)).transpose();
        let (out, inp) = (open(out)?, open(inp)?);
        if let Some(q) = &out {
            q.designate_if_free(true);
        }
        if let Some(q) = &inp {
            q.designate_if_free(false);
        }
        Ok(Connection::with_copies(out, inp, Copies::new(true)))
    }

    /// Gives up what this handle holds (once): roles in use are detached
    /// (the peer sees this end gone). When the last copy of the end in
    /// this process goes, a role no copy used is given up too, see
    /// [`release_unused`](Self::release_unused).
    fn release(&mut self) {
        if std::mem::replace(&mut self.released, true) {
            return;
        }
        let (tx, rx) = (self.tx.take(), self.rx.take());
        // AcqRel: pairs with the other copies' fetch_sub here, so the last
        // copy sees what they did before closing.
        let last = self.copies.open.fetch_sub(1, Ordering::AcqRel) == 1;
        if last
            && tx.is_none()
            && let Some(q) = &self.out
        {
            self.release_unused(q, true);
        }
        if last
            && rx.is_none()
            && let Some(q) = &self.inp
        {
            self.release_unused(q, false);
        }
        drop((tx, rx));
    }

    /// A role this end's copies never used, when the last copy goes: if it
    /// was handed to this process, give it back (a child drops its end
    /// unused: the peer learns it at once). If the end was never handed to
    /// a child and nobody holds the role, take it and leave at once, so the
    /// peer learns that nobody will use this end (Python: the last copy
    /// was closed). A role handed to a child is never touched here.
    fn release_unused(&self, q: &ByteQueue, producer: bool) {
        release_unused(&self.copies, q, producer)
    }

    /// This end's sending role, taken on first use. (Held only while this
    /// handle is open: `close` takes it.)
    #[inline(always)]
    fn tx(&mut self) -> Result<&mut ByteProducer, PipeSendError> {
        // Not `if let Some(..) = &mut self.tx`: returning that borrow and
        // otherwise borrowing `self` again is refused by the borrow checker.
        #[allow(clippy::unnecessary_unwrap)]
        if self.tx.is_some() {
            return Ok(self.tx.as_mut().expect("just checked"));
        }
        self.take_tx()
    }

    #[cold]
    #[inline(never)]
    fn take_tx(&mut self) -> Result<&mut ByteProducer, PipeSendError> {
        if self.closed {
            return Err(PipeSendError::Closed);
        }
        let q = self.out.as_ref().ok_or(PipeSendError::NotWritable)?;
        if self.tx.is_none() {
            self.tx = Some(q.producer()?);
        }
        Ok(self.tx.as_mut().expect("just set"))
    }

    /// This end's receiving role, taken on first use. (Held only while
    /// this handle is open: `close` takes it.)
    #[inline(always)]
    fn rx(&mut self) -> Result<&mut ByteConsumer, PipePollError> {
        // Not `if let Some(..) = &mut self.rx`: returning that borrow and
        // otherwise borrowing `self` again is refused by the borrow checker.
        #[allow(clippy::unnecessary_unwrap)]
        if self.rx.is_some() {
            return Ok(self.rx.as_mut().expect("just checked"));
        }
        self.take_rx()
    }

    #[cold]
    #[inline(never)]
    fn take_rx(&mut self) -> Result<&mut ByteConsumer, PipePollError> {
        if self.closed {
            return Err(PipePollError::Closed);
        }
        let q = self.inp.as_ref().ok_or(PipePollError::NotReadable)?;
        if self.rx.is_none() {
            self.rx = Some(q.consumer()?);
        }
        Ok(self.rx.as_mut().expect("just set"))
    }

    /// Sends `bytes` as one message, waiting for room.
    ///
    /// Errors: [`TooLarge`](PipeSendError::TooLarge) above the pipe's
    /// frame limit, `Closed`, `Disconnected` (the receiving end is gone),
    /// `NotWritable`, `Role`.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send_bytes(b"hello").unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"hello");
    /// ```
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), PipeSendError> {
        self.tx()?.send(bytes).map_err(send_error)
    }

    /// Sends `bytes` as one message if there is room now, never waiting:
    /// [`Full`](PipeTrySendError::Full) otherwise (nothing is sent). Other
    /// errors as for [`send_bytes`](Self::send_bytes).
    ///
    /// ```
    /// use shmproc::PipeTrySendError;
    /// let (mut a, mut b) = shmproc::pipe_with(true, 64, 8).unwrap();
    /// a.try_send_bytes(b"one").unwrap();
    /// while a.try_send_bytes(b"more").is_ok() {}
    /// assert_eq!(a.try_send_bytes(b"more"), Err(PipeTrySendError::Full));
    /// assert_eq!(b.recv_bytes().unwrap(), b"one");
    /// ```
    pub fn try_send_bytes(&mut self, bytes: &[u8]) -> Result<(), PipeTrySendError> {
        self.tx()?.try_send(bytes).map_err(try_send_error)
    }

    /// Sends `bytes` as one message, waiting at most `timeout` for room:
    /// [`TimedOut`](PipeSendTimeoutError::TimedOut) then (nothing is sent).
    /// Other errors as for [`send_bytes`](Self::send_bytes).
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmproc::PipeSendTimeoutError;
    /// let (mut a, _b) = shmproc::pipe_with(true, 64, 8).unwrap();
    /// a.send_bytes_timeout(b"fits", Duration::from_secs(10)).unwrap();
    /// while a.try_send_bytes(b"more").is_ok() {}
    /// assert_eq!(a.send_bytes_timeout(b"more", Duration::from_millis(2)), Err(PipeSendTimeoutError::TimedOut));
    /// ```
    pub fn send_bytes_timeout(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), PipeSendTimeoutError> {
        self.tx()?.send_timeout(bytes, timeout).map_err(send_timeout_error)
    }

    /// Sends a plain-data value (its bytes), waiting for room. Errors as for
    /// [`send_bytes`](Self::send_bytes). For strings, vectors, tuples and
    /// other [`Handoff`](crate::Handoff) values (Python's `send(obj)`), use
    /// [`send_value`](Self::send_value).
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send(&[1.5f32, 2.5]).unwrap();
    /// assert_eq!(b.recv::<[f32; 2]>().unwrap(), [1.5, 2.5]);
    /// ```
    pub fn send<T: Pod>(&mut self, value: &T) -> Result<(), PipeSendError> {
        self.tx()?.send_pod_until(value, Deadline::NEVER).map_err(|e| send_error(e.untimed()))
    }

    /// Sends a plain-data value if there is room now, never waiting:
    /// [`Full`](PipeTrySendError::Full) otherwise. Errors as for
    /// [`try_send_bytes`](Self::try_send_bytes).
    ///
    /// ```
    /// use shmproc::PipeTrySendError;
    /// let (mut a, mut b) = shmproc::pipe_with(true, 64, 8).unwrap();
    /// a.try_send(&7u64).unwrap();
    /// while a.try_send(&8u64).is_ok() {}
    /// assert_eq!(a.try_send(&9u64), Err(PipeTrySendError::Full));
    /// assert_eq!(b.recv::<u64>(), Ok(7));
    /// ```
    pub fn try_send<T: Pod>(&mut self, value: &T) -> Result<(), PipeTrySendError> {
        self.tx()?.try_send_pod(value).map_err(try_send_error)
    }

    /// Sends a plain-data value, waiting at most `timeout` for room.
    /// Errors as for [`send_bytes_timeout`](Self::send_bytes_timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmproc::PipeSendTimeoutError;
    /// let (mut a, _b) = shmproc::pipe_with(true, 64, 8).unwrap();
    /// while a.try_send(&1u64).is_ok() {}
    /// assert_eq!(a.send_timeout(&2u64, Duration::from_millis(2)), Err(PipeSendTimeoutError::TimedOut));
    /// ```
    pub fn send_timeout<T: Pod>(&mut self, value: &T, timeout: Duration) -> Result<(), PipeSendTimeoutError> {
        self.tx()?.send_pod_until(value, Deadline::after(timeout)).map_err(send_timeout_error)
    }

    /// Receives one message, waiting for it.
    ///
    /// Errors: [`Disconnected`](PipeRecvBytesError::Disconnected) once the
    /// sending end is gone (or the pipe was shut down) and everything it
    /// sent was received, `Closed` (this handle was closed), `Corrupted`,
    /// `NotReadable`, `Role`.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// b.send_bytes(&[]).unwrap();
    /// assert_eq!(a.recv_bytes().unwrap(), Vec::<u8>::new());
    /// ```
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>, PipeRecvBytesError> {
        let mut frame = Vec::new();
        self.recv_bytes_into(&mut frame)?;
        Ok(frame)
    }

    /// Receives one message if one is waiting, never waiting:
    /// [`Empty`](PipeTryRecvBytesError::Empty) otherwise. Other errors as for
    /// [`recv_bytes`](Self::recv_bytes).
    ///
    /// ```
    /// use shmproc::PipeTryRecvBytesError;
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// assert_eq!(a.try_recv_bytes(), Err(PipeTryRecvBytesError::Empty));
    /// b.send_bytes(b"hi").unwrap();
    /// assert_eq!(a.try_recv_bytes().unwrap(), b"hi");
    /// ```
    pub fn try_recv_bytes(&mut self) -> Result<Vec<u8>, PipeTryRecvBytesError> {
        let mut frame = Vec::new();
        self.try_recv_bytes_into(&mut frame)?;
        Ok(frame)
    }

    /// Receives one message, waiting at most `timeout`:
    /// [`TimedOut`](PipeRecvBytesTimeoutError::TimedOut) then. Other errors as for
    /// [`recv_bytes`](Self::recv_bytes).
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// let _ = b.send_bytes(b"");  // b now holds its sending role
    /// let r = a.recv_bytes_timeout(std::time::Duration::from_millis(2));
    /// assert!(r.is_ok()); // the empty message
    /// let r = a.recv_bytes_timeout(std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::PipeRecvBytesTimeoutError::TimedOut));
    /// ```
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, PipeRecvBytesTimeoutError> {
        let mut frame = Vec::new();
        self.recv_bytes_timeout_into(&mut frame, timeout)?;
        Ok(frame)
    }

    /// Receives one message into `out` (cleared first; it keeps its
    /// allocation from call to call), waiting for it, and returns its
    /// length: Python's `recv_bytes_into`, with a buffer that grows as
    /// needed. No deadline: a message that is there costs no system call
    /// and no clock read. Errors as for [`recv_bytes`](Self::recv_bytes).
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// let mut buf = Vec::new();
    /// for msg in [&b"one"[..], b"three"] {
    ///     a.send_bytes(msg).unwrap();
    ///     assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), msg.len());
    ///     assert_eq!(buf, msg);
    /// }
    /// ```
    pub fn recv_bytes_into(&mut self, out: &mut Vec<u8>) -> Result<usize, PipeRecvBytesError> {
        self.rx()?.recv_into(out).map_err(recv_error)?;
        Ok(out.len())
    }

    /// [`recv_bytes_into`](Self::recv_bytes_into) if a message is waiting,
    /// never waiting: [`Empty`](PipeTryRecvBytesError::Empty) otherwise
    /// (`out` is then left as it was).
    ///
    /// ```
    /// use shmproc::PipeTryRecvBytesError;
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// let mut buf = b"old".to_vec();
    /// assert_eq!(a.try_recv_bytes_into(&mut buf), Err(PipeTryRecvBytesError::Empty));
    /// assert_eq!(buf, b"old");
    /// b.send_bytes(b"new").unwrap();
    /// assert_eq!(a.try_recv_bytes_into(&mut buf), Ok(3));
    /// assert_eq!(buf, b"new");
    /// ```
    pub fn try_recv_bytes_into(&mut self, out: &mut Vec<u8>) -> Result<usize, PipeTryRecvBytesError> {
        self.rx()?.try_recv_into(out).map_err(try_recv_error)?;
        Ok(out.len())
    }

    /// [`recv_bytes_into`](Self::recv_bytes_into), waiting at most
    /// `timeout`: [`TimedOut`](PipeRecvBytesTimeoutError::TimedOut) then.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// let mut buf = Vec::new();
    /// b.send_bytes(b"hi").unwrap();
    /// assert_eq!(a.recv_bytes_timeout_into(&mut buf, Duration::from_secs(10)), Ok(2));
    /// let r = a.recv_bytes_timeout_into(&mut buf, Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::PipeRecvBytesTimeoutError::TimedOut));
    /// ```
    pub fn recv_bytes_timeout_into(
        &mut self,
        out: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, PipeRecvBytesTimeoutError> {
        self.rx()?.recv_timeout_into(out, timeout).map_err(recv_timeout_error)?;
        Ok(out.len())
    }

    /// Receives a plain-data value sent with [`send`](Self::send), waiting
    /// for it. Errors as for [`recv_bytes`](Self::recv_bytes), and
    /// [`WrongSize`](PipeRecvError::WrongSize) for a message that is not
    /// `size_of::<T>()` bytes (it is consumed).
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send(&7u16).unwrap();
    /// assert!(b.recv::<u64>().is_err()); // 2 bytes are not a u64
    /// ```
    pub fn recv<T: Pod>(&mut self) -> Result<T, PipeRecvError> {
        let loan = self.rx()?.recv_loan().map_err(recv_error)?;
        take_pod(loan).map_err(|(expected, got)| PipeRecvError::WrongSize { expected, got })
    }

    /// Receives a plain-data value if one is waiting, never waiting:
    /// [`Empty`](PipeTryRecvError::Empty) otherwise. Errors as for
    /// [`recv`](Self::recv).
    ///
    /// ```
    /// use shmproc::PipeTryRecvError;
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// assert_eq!(a.try_recv::<u32>(), Err(PipeTryRecvError::Empty));
    /// b.send(&5u32).unwrap();
    /// assert_eq!(a.try_recv::<u32>(), Ok(5));
    /// ```
    pub fn try_recv<T: Pod>(&mut self) -> Result<T, PipeTryRecvError> {
        let loan = self.rx()?.try_recv_loan().map_err(try_recv_error)?;
        take_pod(loan).map_err(|(expected, got)| PipeTryRecvError::WrongSize { expected, got })
    }

    /// Receives a plain-data value, waiting at most `timeout`:
    /// [`TimedOut`](PipeRecvTimeoutError::TimedOut) then. Errors as for
    /// [`recv`](Self::recv).
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmproc::PipeRecvTimeoutError;
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// b.send(&5u32).unwrap();
    /// assert_eq!(a.recv_timeout::<u32>(Duration::from_secs(10)), Ok(5));
    /// assert_eq!(a.recv_timeout::<u32>(Duration::from_millis(2)), Err(PipeRecvTimeoutError::TimedOut));
    /// ```
    pub fn recv_timeout<T: Pod>(&mut self, timeout: Duration) -> Result<T, PipeRecvTimeoutError> {
        let loan = self.rx()?.recv_loan_timeout(timeout).map_err(recv_timeout_error)?;
        take_pod(loan).map_err(|(expected, got)| PipeRecvTimeoutError::WrongSize { expected, got })
    }

    /// Sends any [`Handoff`] value (a `String`, a `Vec`, a tuple, an
    /// `Option`, a shmproc handle, your own type), encoded as one message,
    /// waiting for room: Python's `send(obj)`. Errors as for
    /// [`send_bytes`](Self::send_bytes) (`TooLarge` if the encoding is
    /// above the frame limit).
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send_value(&(7u32, String::from("seven"))).unwrap();
    /// assert_eq!(b.recv_value::<(u32, String)>().unwrap(), (7, "seven".to_string()));
    /// ```
    pub fn send_value<T: Handoff>(&mut self, value: &T) -> Result<(), PipeSendError> {
        let (buf, transfers) = self.encode(value);
        let r = self.send_bytes(&buf);
        self.scratch = buf;
        settle(transfers, r.is_ok());
        r
    }

    /// [`send_value`](Self::send_value) if there is room now, never
    /// waiting: [`Full`](PipeTrySendError::Full) otherwise.
    ///
    /// ```
    /// use shmproc::PipeTrySendError;
    /// let (mut a, mut b) = shmproc::pipe_with(true, 64, 16).unwrap();
    /// a.try_send_value(&String::from("abc")).unwrap();
    /// while a.try_send_value(&String::from("abc")).is_ok() {}
    /// assert_eq!(a.try_send_value(&String::from("abc")), Err(PipeTrySendError::Full));
    /// assert_eq!(b.recv_value::<String>().unwrap(), "abc");
    /// ```
    pub fn try_send_value<T: Handoff>(&mut self, value: &T) -> Result<(), PipeTrySendError> {
        let (buf, transfers) = self.encode(value);
        let r = self.try_send_bytes(&buf);
        self.scratch = buf;
        settle(transfers, r.is_ok());
        r
    }

    /// [`send_value`](Self::send_value), waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (mut a, _b) = shmproc::pipe_with(true, 64, 16).unwrap();
    /// while a.try_send_value(&1u64).is_ok() {}
    /// let r = a.send_value_timeout(&2u64, Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::PipeSendTimeoutError::TimedOut));
    /// ```
    pub fn send_value_timeout<T: Handoff>(&mut self, value: &T, timeout: Duration) -> Result<(), PipeSendTimeoutError> {
        let (buf, transfers) = self.encode(value);
        let r = self.send_bytes_timeout(&buf, timeout);
        self.scratch = buf;
        settle(transfers, r.is_ok());
        r
    }

    /// `value` encoded into this handle's scratch buffer (taken out; the
    /// caller puts it back, so its allocation is reused).
    /// `value` encoded, and the roles its handles carry (a pipe end's),
    /// which go with it only if the send succeeds ([`settle`]).
    fn encode<T: Handoff>(&mut self, value: &T) -> (Vec<u8>, Vec<crate::process::handoff::Transfer>) {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let mut transfers = crate::process::handoff::encode_deferred(|| value.encode(&mut buf));
        // The roles go now, just before the send (see `release_transfers`:
        // let go after it, a receiver that dropped the end at once left its
        // peer waiting for ever); a failed send takes them back (`settle`).
        if !transfers.is_empty() {
            crate::process::handoff::release_transfers(&mut transfers);
        }
        (buf, transfers)
    }

    /// Receives a value sent with [`send_value`](Self::send_value), waiting
    /// for it: Python's `recv()`. A message that is not a whole, valid
    /// encoding of a `T` is consumed and reported as
    /// [`Decode`](PipeRecvValueError::Decode) (never a panic); other errors
    /// as for [`recv_bytes`](Self::recv_bytes).
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send_value(&vec![Some(1.5f64), None]).unwrap();
    /// assert_eq!(b.recv_value::<Vec<Option<f64>>>().unwrap(), vec![Some(1.5), None]);
    /// a.send_value(&String::from("not a number")).unwrap();
    /// assert!(matches!(b.recv_value::<u8>(), Err(shmproc::PipeRecvValueError::Decode(_))));
    /// ```
    pub fn recv_value<T: Handoff>(&mut self) -> Result<T, PipeRecvValueError> {
        let mut buf = std::mem::take(&mut self.scratch);
        let r = self.recv_bytes_into(&mut buf).map_err(PipeRecvValueError::from);
        let r = r.and_then(|_| decode_value(&buf).map_err(PipeRecvValueError::Decode));
        self.scratch = buf;
        r
    }

    /// [`recv_value`](Self::recv_value) if a message is waiting, never
    /// waiting: [`Empty`](PipeTryRecvValueError::Empty) otherwise.
    ///
    /// ```
    /// use shmproc::PipeTryRecvValueError;
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// assert_eq!(a.try_recv_value::<String>(), Err(PipeTryRecvValueError::Empty));
    /// b.send_value(&String::from("x")).unwrap();
    /// assert_eq!(a.try_recv_value::<String>(), Ok("x".to_string()));
    /// ```
    pub fn try_recv_value<T: Handoff>(&mut self) -> Result<T, PipeTryRecvValueError> {
        let mut buf = std::mem::take(&mut self.scratch);
        let r = self.try_recv_bytes_into(&mut buf).map_err(PipeTryRecvValueError::from);
        let r = r.and_then(|_| decode_value(&buf).map_err(PipeTryRecvValueError::Decode));
        self.scratch = buf;
        r
    }

    /// [`recv_value`](Self::recv_value), waiting at most `timeout`:
    /// [`TimedOut`](PipeRecvValueTimeoutError::TimedOut) then.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// b.send_value(&(1u8, 'z')).unwrap();
    /// assert_eq!(a.recv_value_timeout::<(u8, char)>(Duration::from_secs(10)), Ok((1, 'z')));
    /// let r = a.recv_value_timeout::<(u8, char)>(Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::PipeRecvValueTimeoutError::TimedOut));
    /// ```
    pub fn recv_value_timeout<T: Handoff>(&mut self, timeout: Duration) -> Result<T, PipeRecvValueTimeoutError> {
        let mut buf = std::mem::take(&mut self.scratch);
        let r = self.recv_bytes_timeout_into(&mut buf, timeout).map_err(PipeRecvValueTimeoutError::from);
        let r = r.and_then(|_| decode_value(&buf).map_err(PipeRecvValueTimeoutError::Decode));
        self.scratch = buf;
        r
    }

    /// Borrows room for a message of exactly `len` bytes in the pipe, to
    /// write in place (zero copy); [`ByteWriteLoan::commit`] sends it,
    /// dropping the loan sends nothing. Waits for room; errors as for
    /// [`send_bytes`](Self::send_bytes). Messages of 64 bytes or more are
    /// 64-aligned.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// let mut loan = a.send_loan(4096).unwrap();
    /// assert_eq!(loan.as_mut_ptr() as usize % 64, 0);
    /// loan.write_at(0, &[5; 4096]);
    /// loan.commit().unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), vec![5; 4096]);
    /// ```
    pub fn send_loan(&mut self, len: usize) -> Result<ByteWriteLoan<'_>, PipeSendError> {
        self.tx()?.send_loan(len).map_err(send_error)
    }

    /// [`send_loan`](Self::send_loan) if there is room now, never waiting:
    /// [`Full`](PipeTrySendError::Full) otherwise.
    ///
    /// ```
    /// let (mut a, _b) = shmproc::pipe_with(true, 64, 16).unwrap();
    /// while a.try_send_bytes(b"fill").is_ok() {}
    /// assert!(matches!(a.try_send_loan(4), Err(shmproc::PipeTrySendError::Full)));
    /// ```
    pub fn try_send_loan(&mut self, len: usize) -> Result<ByteWriteLoan<'_>, PipeTrySendError> {
        self.tx()?.try_send_loan(len).map_err(try_send_error)
    }

    /// [`send_loan`](Self::send_loan), waiting at most `timeout` for room.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (mut a, _b) = shmproc::pipe_with(true, 64, 16).unwrap();
    /// while a.try_send_bytes(b"fill").is_ok() {}
    /// let r = a.send_loan_timeout(4, Duration::from_millis(2));
    /// assert!(matches!(r, Err(shmproc::PipeSendTimeoutError::TimedOut)));
    /// ```
    pub fn send_loan_timeout(&mut self, len: usize, timeout: Duration) -> Result<ByteWriteLoan<'_>, PipeSendTimeoutError> {
        self.tx()?.send_loan_timeout(len, timeout).map_err(send_timeout_error)
    }

    /// Borrows the oldest message in place (zero copy), waiting for one;
    /// [`ByteReadLoan::release`] consumes it, dropping the loan leaves it
    /// to be received again. Errors as for [`recv_bytes`](Self::recv_bytes).
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send_bytes(&[3; 1000]).unwrap();
    /// let loan = b.recv_loan().unwrap();
    /// assert_eq!(loan.as_ptr() as usize % 64, 0);
    /// // SAFETY: the sending end follows the protocol (it does not write a sent message).
    /// let sum: u32 = unsafe { loan.as_slice() }.iter().map(|&x| u32::from(x)).sum();
    /// assert_eq!(sum, 3000);
    /// loan.release();
    /// ```
    pub fn recv_loan(&mut self) -> Result<ByteReadLoan<'_>, PipeRecvBytesError> {
        self.rx()?.recv_loan().map_err(recv_error)
    }

    /// [`recv_loan`](Self::recv_loan) if a message is waiting, never
    /// waiting: [`Empty`](PipeTryRecvBytesError::Empty) otherwise.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// assert!(matches!(b.try_recv_loan(), Err(shmproc::PipeTryRecvBytesError::Empty)));
    /// a.send_bytes(b"m").unwrap();
    /// assert_eq!(b.try_recv_loan().unwrap().to_vec(), b"m");
    /// ```
    pub fn try_recv_loan(&mut self) -> Result<ByteReadLoan<'_>, PipeTryRecvBytesError> {
        self.rx()?.try_recv_loan().map_err(try_recv_error)
    }

    /// [`recv_loan`](Self::recv_loan), waiting at most `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (mut a, _b) = shmproc::pipe(true).unwrap();
    /// let r = a.recv_loan_timeout(Duration::from_millis(2));
    /// assert!(matches!(r, Err(shmproc::PipeRecvBytesTimeoutError::TimedOut)));
    /// ```
    pub fn recv_loan_timeout(&mut self, timeout: Duration) -> Result<ByteReadLoan<'_>, PipeRecvBytesTimeoutError> {
        self.rx()?.recv_loan_timeout(timeout).map_err(recv_timeout_error)
    }

    /// Whether a receive would not wait, waiting at most `timeout` for
    /// that: a message is waiting, or the sending end is gone (closed,
    /// dropped, its process dead) or the pipe was shut down, so that
    /// `recv` fails at once with `Disconnected`. As Python's
    /// `Connection.poll`, which returns `True` at the other end's EOF (the
    /// next `recv` raises `EOFError`), and as [`wait`](crate::wait), which
    /// reports such an end ready: a loop `while !conn.poll(t)? {}` ends.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// assert!(!a.poll(std::time::Duration::ZERO).unwrap());
    /// b.send(&1u8).unwrap();
    /// assert!(a.poll(std::time::Duration::from_secs(1)).unwrap());
    /// assert_eq!(a.recv::<u8>(), Ok(1));
    /// drop(b);
    /// assert!(a.poll(std::time::Duration::from_secs(1)).unwrap()); // EOF: recv fails at once
    /// assert_eq!(a.recv::<u8>(), Err(shmproc::PipeRecvError::Disconnected));
    /// ```
    pub fn poll(&mut self, timeout: Duration) -> Result<bool, PipePollError> {
        let rx = self.rx()?;
        // `ByteConsumer::poll` says whether a frame is there; a look that
        // consumes nothing (a loan dropped unreleased) tells whether a
        // receive would fail at once instead of waiting.
        Ok(rx.poll(timeout) || !matches!(rx.try_recv_loan(), Err(TryRecvError::Empty)))
    }

    /// Closes this handle, as Python's `Connection.close()`: further calls
    /// on it fail with `Closed`. The channel stays open for other holders
    /// of the end: a parent closing its copy of the end it handed to a
    /// child does not disturb the child. The peer drains what was sent and
    /// then gets `Disconnected` once this end's holder (the handle that
    /// sent or received on it, or the child it was handed to) closed or
    /// dropped it or died. [`shutdown`](Self::shutdown) closes the pipe
    /// for everybody.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send(&1u8).unwrap();
    /// a.close();
    /// assert_eq!(b.recv::<u8>().unwrap(), 1);
    /// assert_eq!(b.recv::<u8>(), Err(shmproc::PipeRecvError::Disconnected));
    /// assert_eq!(a.send(&2u8), Err(shmproc::PipeSendError::Closed));
    /// ```
    pub fn close(&mut self) {
        self.closed = true;
        self.release();
    }

    /// Closes the pipe for every process, in both directions: every
    /// holder's sends fail with `Closed`, receives drain what was sent and
    /// then fail with `Disconnected`; blocked calls wake up. This handle
    /// is closed too.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// b.send(&1u8).unwrap();
    /// let mut a2 = a.clone();
    /// a.shutdown();
    /// assert_eq!(b.send(&2u8), Err(shmproc::PipeSendError::Closed));
    /// assert_eq!(a2.recv::<u8>(), Ok(1));
    /// assert_eq!(a2.recv::<u8>(), Err(shmproc::PipeRecvError::Disconnected));
    /// ```
    pub fn shutdown(&mut self) {
        for q in self.out.iter().chain(self.inp.iter()) {
            q.close();
        }
        self.close();
    }

    /// Whether this end can receive.
    ///
    /// ```
    /// let (a, b) = shmproc::pipe(false).unwrap();
    /// assert!(a.readable() && !a.writable() && b.writable());
    /// ```
    pub fn readable(&self) -> bool {
        self.inp.is_some()
    }

    /// Whether this end can send.
    ///
    /// ```
    /// let (a, _b) = shmproc::pipe(true).unwrap();
    /// assert!(a.writable());
    /// ```
    pub fn writable(&self) -> bool {
        self.out.is_some()
    }
}

/// A plain-data value read from a whole message in place (no buffer), or
/// `(size_of::<T>(), length)` for a message of another size; the message
/// is consumed either way.
/// The roles of the handles inside a value sent with `send_value` go with
/// it if it was `sent`; a refused send leaves them as they were (the
/// caller still has the value).
fn settle(transfers: Vec<crate::process::handoff::Transfer>, sent: bool) {
    if !transfers.is_empty() {
        crate::process::handoff::settle_released(transfers, sent);
    }
}

#[inline(always)]
fn take_pod<T: Pod>(loan: ByteReadLoan<'_>) -> Result<T, (usize, usize)> {
    let n = loan.len();
    let r = if n == std::mem::size_of::<T>() {
        if crate::queue::typed_payload::<T>() {
            // SAFETY: a published payload of size_of::<T>() bytes, aligned
            // for T (typed_payload), not reused before release.
            Ok(unsafe { crate::shm::copy::read(loan.as_ptr().cast::<T>()) })
        } else {
            let mut v = T::zeroed();
            loan.read_at(0, bytemuck::bytes_of_mut(&mut v));
            Ok(v)
        }
    } else {
        Err((std::mem::size_of::<T>(), n))
    };
    loan.release();
    r
}

/// A whole message as one `T` (`Decode` errors for trailing bytes too).
fn decode_value<T: Handoff>(bytes: &[u8]) -> Result<T, HandoffError> {
    let mut input = bytes;
    let v = T::decode(&mut input)?;
    if !input.is_empty() {
        return Err(HandoffError::Invalid(std::any::type_name::<T>()));
    }
    Ok(v)
}

// The byte ring's errors as the pipe's (cold: only refusals come here).

#[cold]
fn send_error(e: SendError) -> PipeSendError {
    match e {
        SendError::TooLarge { len, max } => PipeSendError::TooLarge { len, max: max as usize },
        SendError::Closed => PipeSendError::Closed,
        SendError::Disconnected => PipeSendError::Disconnected,
    }
}

#[cold]
fn try_send_error(e: TrySendError) -> PipeTrySendError {
    match e {
        TrySendError::Full => PipeTrySendError::Full,
        TrySendError::TooLarge { len, max } => PipeTrySendError::TooLarge { len, max: max as usize },
        TrySendError::Closed => PipeTrySendError::Closed,
        TrySendError::Disconnected => PipeTrySendError::Disconnected,
    }
}

#[cold]
fn send_timeout_error(e: SendTimeoutError) -> PipeSendTimeoutError {
    match e {
        SendTimeoutError::TimedOut => PipeSendTimeoutError::TimedOut,
        SendTimeoutError::TooLarge { len, max } => PipeSendTimeoutError::TooLarge { len, max: max as usize },
        SendTimeoutError::Closed => PipeSendTimeoutError::Closed,
        SendTimeoutError::Disconnected => PipeSendTimeoutError::Disconnected,
    }
}

#[cold]
fn recv_error(e: RecvError) -> PipeRecvBytesError {
    match e {
        RecvError::Corrupted => PipeRecvBytesError::Corrupted,
        RecvError::Closed | RecvError::Disconnected => PipeRecvBytesError::Disconnected,
    }
}

#[cold]
fn try_recv_error(e: TryRecvError) -> PipeTryRecvBytesError {
    match e {
        TryRecvError::Empty => PipeTryRecvBytesError::Empty,
        TryRecvError::Corrupted => PipeTryRecvBytesError::Corrupted,
        TryRecvError::Closed | TryRecvError::Disconnected => PipeTryRecvBytesError::Disconnected,
    }
}

#[cold]
fn recv_timeout_error(e: RecvTimeoutError) -> PipeRecvBytesTimeoutError {
    match e {
        RecvTimeoutError::TimedOut => PipeRecvBytesTimeoutError::TimedOut,
        RecvTimeoutError::Corrupted => PipeRecvBytesTimeoutError::Corrupted,
        RecvTimeoutError::Closed | RecvTimeoutError::Disconnected => PipeRecvBytesTimeoutError::Disconnected,
    }
}
