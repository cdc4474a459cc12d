//! `pipe()` → two [`Connection`]s, like `multiprocessing.Pipe(duplex)`.
//!
//! Each direction is a [`ByteQueue`](crate::queue::ByteQueue): frames of
//! bytes (or of any `T: Pod`, copied as bytes). An end takes its roles in a
//! queue the first time it sends or receives, so a `Connection` can be
//! created in one process and handed to a child before either uses it; one
//! end per process. When the peer end is closed, dropped, or its process
//! dies, `recv` drains what was sent and then reports
//! [`ConnectionError::Disconnected`].

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
#[derive(Debug)]
pub struct Connection {
    out: Option<ByteQueue>,
    inp: Option<ByteQueue>,
    tx: Option<ByteProducer>,
    rx: Option<ByteConsumer>,
    closed: bool,
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
        Connection { out, inp, tx: None, rx: None, closed: false }
    }

    /// The names of the two directions (send, receive), for handing over.
    pub(crate) fn names(&self) -> (Option<String>, Option<String>) {
        (self.out.as_ref().map(|q| q.name().to_owned()), self.inp.as_ref().map(|q| q.name().to_owned()))
    }

    pub(crate) fn from_names(out: Option<String>, inp: Option<String>) -> Result<Self, OpenError> {
        let open = |n: Option<String>| n.map(|n| ByteQueue::open(&n)).transpose();
        Ok(Connection::new(open(out)?, open(inp)?))
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

    /// Closes this end: the peer drains what was sent, then gets
    /// `Disconnected`; further calls here fail with `Closed`.
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
        // Dropping the role holders tells the peer we are gone; take the
        // sending role first if never used, so the peer learns it too.
        if self.tx.is_none()
            && let Some(q) = &self.out
        {
            self.tx = q.producer().ok();
        }
        if self.rx.is_none()
            && let Some(q) = &self.inp
        {
            self.rx = q.consumer().ok();
        }
        self.tx = None;
        self.rx = None;
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
