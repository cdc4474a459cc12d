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
//! [`ConnectionError::Disconnected`] when the end's holder closes it, drops
//! it or dies (a parent closing its own copy of the end it handed to a
//! child changes nothing for the child). [`Connection::shutdown`] closes
//! the pipe for every process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytemuck::Pod;

use crate::OpenError;
use crate::queue::{ByteConsumer, ByteProducer, ByteQueue, RecvTimeoutError, RoleError, SendError};

/// Default ring size of each direction.
pub const DEFAULT_CAPACITY: u64 = 64 * 1024;
/// Default largest frame.
pub const DEFAULT_MAX_FRAME: u64 = 16 * 1024;

/// Why a connection operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// `send` on the receive-only end of a one-way pipe.
    #[error("this end of the pipe cannot send")]
    NotWritable,
    /// `recv` on the send-only end of a one-way pipe.
    #[error("this end of the pipe cannot receive")]
    NotReadable,
    /// `close()` was called on this end.
    #[error("this end of the pipe is closed")]
    Closed,
    /// The other end was closed or dropped, or its process died (after
    /// everything it sent was received).
    #[error("the other end of the pipe is gone")]
    Disconnected,
    /// A frame above the pipe's frame limit.
    #[error("message of {len} bytes exceeds the pipe's limit of {max} bytes")]
    TooLarge {
        /// The frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `recv::<T>()` got a frame whose size is not `size_of::<T>()`.
    #[error("received {got} bytes, expected {expected}")]
    WrongSize {
        /// `size_of::<T>()`.
        expected: usize,
        /// The frame's length.
        got: usize,
    },
    /// `_timeout` forms only.
    #[error("timed out")]
    TimedOut,
    /// A frame header in shared memory was invalid.
    #[error("corrupted frame in the pipe")]
    Corrupted,
    /// Another process already uses this end.
    #[error(transparent)]
    Role(#[from] RoleError),
}

/// One end of a [`pipe`].
///
/// Cloning gives another handle to the same end (holding no role until it
/// sends or receives), like the copy of a Python `Connection` that a
/// parent keeps after handing the end to a child.
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
/// ```
/// let (mut a, mut b) = shmproc::pipe(true).unwrap();
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
/// ```
/// let (mut a, mut b) = shmproc::pipe_with(false, 4096, 1024).unwrap();
/// assert!(a.send_bytes(b"x").is_err()); // a only receives
/// b.send_bytes(b"x").unwrap();
/// assert_eq!(a.recv_bytes().unwrap(), b"x");
/// ```
pub fn pipe_with(duplex: bool, capacity: u64, max_frame: u64) -> Result<(Connection, Connection), OpenError> {
    let ab = ByteQueue::new(capacity, max_frame)?; // a -> b
    let ba = ByteQueue::new(capacity, max_frame)?; // b -> a
    if duplex {
        Ok((Connection::new(Some(ab.clone()), Some(ba.clone())), Connection::new(Some(ba), Some(ab))))
    } else {
        Ok((Connection::new(None, Some(ba.clone())), Connection::new(Some(ba), None)))
    }
}

impl Connection {
    fn new(out: Option<ByteQueue>, inp: Option<ByteQueue>) -> Self {
        Self::with_copies(out, inp, Copies::new(false))
    }

    fn with_copies(out: Option<ByteQueue>, inp: Option<ByteQueue>, copies: Arc<Copies>) -> Self {
        Connection { out, inp, tx: None, rx: None, closed: false, released: false, copies }
    }

    /// The names of the two directions (send, receive), for handing over.
    pub(crate) fn names(&self) -> (Option<String>, Option<String>) {
        (self.out.as_ref().map(|q| q.name().to_owned()), self.inp.as_ref().map(|q| q.name().to_owned()))
    }

    /// Records that this end is being handed to a child: its roles travel
    /// with it (see `process::handoff::collect_transfers`).
    pub(crate) fn note_handed(&self) {
        self.copies.handed.store(true, Ordering::Relaxed);
        if let Some(q) = &self.out {
            crate::process::handoff::note_transfer(q, true);
        }
        if let Some(q) = &self.inp {
            crate::process::handoff::note_transfer(q, false);
        }
    }

    /// The end a child receives from its parent.
    pub(crate) fn received(out: Option<String>, inp: Option<String>) -> Result<Self, OpenError> {
        let open = |n: Option<String>| n.map(|n| ByteQueue::open(&n)).transpose();
        Ok(Connection::with_copies(open(out)?, open(inp)?, Copies::new(true)))
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
        if self.copies.received {
            q.release_designation(producer);
        } else if !self.copies.handed.load(Ordering::Relaxed) {
            let _ = if producer { q.producer().map(drop) } else { q.consumer().map(drop) };
        }
    }

    fn tx(&mut self) -> Result<&mut ByteProducer, ConnectionError> {
        if self.closed {
            return Err(ConnectionError::Closed);
        }
        let q = self.out.as_ref().ok_or(ConnectionError::NotWritable)?;
        if self.tx.is_none() {
            self.tx = Some(q.producer()?);
        }
        Ok(self.tx.as_mut().expect("just set"))
    }

    fn rx(&mut self) -> Result<&mut ByteConsumer, ConnectionError> {
        if self.closed {
            return Err(ConnectionError::Closed);
        }
        let q = self.inp.as_ref().ok_or(ConnectionError::NotReadable)?;
        if self.rx.is_none() {
            self.rx = Some(q.consumer()?);
        }
        Ok(self.rx.as_mut().expect("just set"))
    }

    /// Sends `bytes` as one message, waiting for room.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send_bytes(b"hello").unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"hello");
    /// ```
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        let max = self.out.as_ref().map_or(0, |q| q.max_frame());
        self.tx()?.send(bytes).map_err(|e| match e {
            SendError::TooLarge { .. } => ConnectionError::TooLarge { len: bytes.len(), max },
            SendError::Closed => ConnectionError::Closed,
            SendError::Disconnected => ConnectionError::Disconnected,
        })
    }

    /// Sends a plain-data value (its bytes).
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send(&[1.5f32, 2.5]).unwrap();
    /// assert_eq!(b.recv::<[f32; 2]>().unwrap(), [1.5, 2.5]);
    /// ```
    pub fn send<T: Pod>(&mut self, value: &T) -> Result<(), ConnectionError> {
        self.send_bytes(bytemuck::bytes_of(value))
    }

    fn map_pop(e: RecvTimeoutError) -> ConnectionError {
        match e {
            RecvTimeoutError::TimedOut => ConnectionError::TimedOut,
            RecvTimeoutError::Corrupted => ConnectionError::Corrupted,
            RecvTimeoutError::Closed | RecvTimeoutError::Disconnected => ConnectionError::Disconnected,
        }
    }

    /// Receives one message, waiting for it.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// b.send_bytes(&[]).unwrap();
    /// assert_eq!(a.recv_bytes().unwrap(), Vec::<u8>::new());
    /// ```
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>, ConnectionError> {
        self.rx()?.recv().map_err(|e| Self::map_pop(e.into()))
    }

    /// Receives one message, waiting at most `timeout`.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// let _ = b.send_bytes(b"");  // b now holds its sending role
    /// let r = a.recv_bytes_timeout(std::time::Duration::from_millis(2));
    /// assert!(r.is_ok()); // the empty message
    /// let r = a.recv_bytes_timeout(std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::ConnectionError::TimedOut));
    /// ```
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>, ConnectionError> {
        let mut v = Vec::new();
        self.rx()?.recv_timeout_into(&mut v, timeout).map_err(Self::map_pop)?;
        Ok(v)
    }

    /// Receives a plain-data value sent with [`send`](Self::send).
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// a.send(&7u16).unwrap();
    /// assert!(b.recv::<u64>().is_err()); // 2 bytes are not a u64
    /// ```
    pub fn recv<T: Pod>(&mut self) -> Result<T, ConnectionError> {
        let bytes = self.recv_bytes()?;
        if bytes.len() != std::mem::size_of::<T>() {
            return Err(ConnectionError::WrongSize { expected: std::mem::size_of::<T>(), got: bytes.len() });
        }
        Ok(bytemuck::pod_read_unaligned(&bytes))
    }

    /// Whether a message is waiting, waiting at most `timeout` for one.
    ///
    /// ```
    /// let (mut a, mut b) = shmproc::pipe(true).unwrap();
    /// assert!(!a.poll(std::time::Duration::ZERO).unwrap());
    /// b.send(&1u8).unwrap();
    /// assert!(a.poll(std::time::Duration::from_secs(1)).unwrap());
    /// ```
    pub fn poll(&mut self, timeout: Duration) -> Result<bool, ConnectionError> {
        Ok(self.rx()?.poll(timeout))
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
    /// assert_eq!(b.recv::<u8>(), Err(shmproc::ConnectionError::Disconnected));
    /// assert_eq!(a.send(&2u8), Err(shmproc::ConnectionError::Closed));
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
    /// assert_eq!(b.send(&2u8), Err(shmproc::ConnectionError::Closed));
    /// assert_eq!(a2.recv::<u8>(), Ok(1));
    /// assert_eq!(a2.recv::<u8>(), Err(shmproc::ConnectionError::Disconnected));
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
