//! Zero-copy loans on the byte ring: the producer fills a frame in place
//! and publishes it with [`ByteWriteLoan::commit`]; the consumer reads the
//! oldest frame in place and frees it with [`ByteReadLoan::release`] (as
//! the SPSC ring's [`WriteLoan`](super::WriteLoan) /
//! [`ReadLoan`](super::ReadLoan), one frame at a time). Same index protocol
//! as `send` / `recv`: a loan only defers the index store, so a process
//! killed while it holds a read loan leaves the frame in the ring (the next
//! consumer receives it), and one killed while it holds a write loan
//! publishes nothing.
//!
//! A payload of [`ALIGN_FROM`](super::ALIGN_FROM) (64) bytes or more
//! starts on a 64-byte boundary, so a loan over it is cache-line aligned.
//!
//! Memory model: the loan's bytes are shared memory. The safe accessors
//! copy through the crate's one copy primitive (volatile word accesses);
//! `as_slice` / `as_mut_slice` hand out a plain reference and are `unsafe`:
//! sound as long as no other process writes the frame meanwhile, which a
//! peer that follows the protocol never does.

use std::time::Duration;

use super::bytes::{ByteConsumer, ByteProducer};
use super::error::{
    CommitError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::wait::Deadline;

impl ByteProducer {
    /// Borrows room for a frame of exactly `len` bytes in the ring, to fill
    /// in place; [`ByteWriteLoan::commit`] publishes it (dropping the loan
    /// without commit publishes nothing). Never waits: errors as for
    /// [`try_send`](Self::try_send) (`Full`, `TooLarge`, `Closed`,
    /// `Disconnected`).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 1024).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// let mut loan = tx.try_send_loan(5).unwrap();
    /// loan.write_at(0, b"hello");
    /// loan.commit().unwrap();
    /// assert_eq!(rx.recv().unwrap(), b"hello");
    /// assert!(matches!(tx.try_send_loan(1025), Err(shmproc::TrySendError::TooLarge { .. })));
    /// ```
    #[inline]
    pub fn try_send_loan(&mut self, len: usize) -> Result<ByteWriteLoan<'_>, TrySendError> {
        let slot = self.reserve(len)?;
        Ok(ByteWriteLoan { payload: slot.payload, len: slot.len, end: slot.end, p: self })
    }

    /// [`try_send_loan`](Self::try_send_loan), waiting for room. Errors as
    /// for [`send`](Self::send).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 1024).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// let mut loan = tx.send_loan(64).unwrap();
    /// assert_eq!(loan.as_mut_ptr() as usize % 64, 0); // 64 bytes and more: cache-line aligned
    /// loan.write_at(0, &[9; 64]);
    /// loan.commit().unwrap();
    /// assert_eq!(rx.recv().unwrap(), [9; 64]);
    /// ```
    #[inline]
    pub fn send_loan(&mut self, len: usize) -> Result<ByteWriteLoan<'_>, SendError> {
        let slot = self.reserve_until(len, Deadline::NEVER).map_err(SendTimeoutError::untimed)?;
        Ok(ByteWriteLoan { payload: slot.payload, len: slot.len, end: slot.end, p: self })
    }

    /// [`try_send_loan`](Self::try_send_loan), waiting at most `timeout` for
    /// room. Errors as for [`send_timeout`](Self::send_timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = shmproc::queue::ByteQueue::new(64, 16).unwrap();
    /// let (mut tx, _rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// while tx.try_send(b"xx").is_ok() {}
    /// let r = tx.send_loan_timeout(2, Duration::from_millis(2));
    /// assert!(matches!(r, Err(shmproc::SendTimeoutError::TimedOut)));
    /// ```
    pub fn send_loan_timeout(&mut self, len: usize, timeout: Duration) -> Result<ByteWriteLoan<'_>, SendTimeoutError> {
        let slot = self.reserve_until(len, Deadline::after(timeout))?;
        Ok(ByteWriteLoan { payload: slot.payload, len: slot.len, end: slot.end, p: self })
    }
}

impl ByteConsumer {
    /// Borrows the oldest frame in place, never waiting;
    /// [`ByteReadLoan::release`] consumes it (dropping the loan without
    /// release leaves the frame in the ring, to be received again). Errors
    /// as for [`try_recv`](Self::try_recv).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 1024).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// assert!(matches!(rx.try_recv_loan(), Err(shmproc::TryRecvError::Empty)));
    /// tx.send(b"abc").unwrap();
    /// let loan = rx.try_recv_loan().unwrap();
    /// assert_eq!(loan.to_vec(), b"abc");
    /// drop(loan); // not released: still there
    /// assert_eq!(rx.recv().unwrap(), b"abc");
    /// ```
    #[inline]
    pub fn try_recv_loan(&mut self) -> Result<ByteReadLoan<'_>, TryRecvError> {
        let f = self.locate()?;
        Ok(ByteReadLoan { payload: f.payload, len: f.len, end: f.end, c: self })
    }

    /// [`try_recv_loan`](Self::try_recv_loan), waiting for a frame (no
    /// deadline: the clock is not read unless it sleeps). Errors as for
    /// [`recv`](Self::recv).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 1024).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.send(&[1; 100]).unwrap();
    /// let loan = rx.recv_loan().unwrap();
    /// assert_eq!(loan.len(), 100);
    /// // SAFETY: the producer follows the protocol (it does not write a published frame).
    /// let sum: u32 = unsafe { loan.as_slice() }.iter().map(|&b| u32::from(b)).sum();
    /// assert_eq!(sum, 100);
    /// loan.release();
    /// assert!(matches!(rx.try_recv(), Err(shmproc::TryRecvError::Empty)));
    /// ```
    #[inline]
    pub fn recv_loan(&mut self) -> Result<ByteReadLoan<'_>, RecvError> {
        let f = self.locate_until(Deadline::NEVER).map_err(RecvTimeoutError::untimed)?;
        Ok(ByteReadLoan { payload: f.payload, len: f.len, end: f.end, c: self })
    }

    /// [`try_recv_loan`](Self::try_recv_loan), waiting at most `timeout`.
    /// Errors as for [`recv_timeout`](Self::recv_timeout).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = shmproc::queue::ByteQueue::new(4096, 1024).unwrap();
    /// let (_tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// let r = rx.recv_loan_timeout(Duration::from_millis(2));
    /// assert!(matches!(r, Err(shmproc::RecvTimeoutError::TimedOut)));
    /// ```
    pub fn recv_loan_timeout(&mut self, timeout: Duration) -> Result<ByteReadLoan<'_>, RecvTimeoutError> {
        let f = self.locate_until(Deadline::after(timeout))?;
        Ok(ByteReadLoan { payload: f.payload, len: f.len, end: f.end, c: self })
    }
}

/// Room for one frame in the ring, lent to the producer; see
/// [`ByteProducer::send_loan`]. Fill it ([`write_at`](Self::write_at), or
/// in place through [`as_mut_slice`](Self::as_mut_slice)), then
/// [`commit`](Self::commit); dropping it sends nothing.
///
/// ```
/// let q = shmproc::queue::ByteQueue::new(4096, 512).unwrap();
/// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
/// drop(tx.send_loan(3).unwrap()); // not committed: nothing sent
/// let mut loan = tx.send_loan(3).unwrap();
/// loan.write_at(0, b"yes");
/// loan.commit().unwrap();
/// assert_eq!(rx.recv().unwrap(), b"yes");
/// assert!(rx.try_recv().is_err());
/// ```
pub struct ByteWriteLoan<'a> {
    p: &'a mut ByteProducer,
    payload: *mut u8,
    len: usize,
    end: u64,
}

impl std::fmt::Debug for ByteWriteLoan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteWriteLoan").field("len", &self.len).finish()
    }
}

impl ByteWriteLoan<'_> {
    /// The frame's length (as asked for).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// assert_eq!(tx.send_loan(7).unwrap().len(), 7);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty (a zero-length message).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// assert!(tx.send_loan(0).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The frame's first byte in this process's mapping (64-aligned when
    /// the frame has [`ALIGN_FROM`](super::ALIGN_FROM) bytes or more).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(1 << 16, 4096).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// assert_eq!(tx.send_loan(4096).unwrap().as_mut_ptr() as usize % 64, 0);
    /// ```
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.payload
    }

    /// Copies `bytes` into the frame at `offset`.
    ///
    /// # Panics
    /// If `offset + bytes.len()` is past the frame's end (as slice
    /// indexing would).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// let mut loan = tx.send_loan(4).unwrap();
    /// loan.write_at(2, b"cd");
    /// loan.write_at(0, b"ab");
    /// loan.commit().unwrap();
    /// assert_eq!(rx.recv().unwrap(), b"abcd");
    /// ```
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset.checked_add(bytes.len()).filter(|&e| e <= self.len);
        assert!(end.is_some(), "write_at({offset}, {} bytes) past the end of a {}-byte frame", bytes.len(), self.len);
        // SAFETY: `offset + bytes.len() <= len` (checked): inside the frame
        // reserved for us, which the consumer does not read before commit.
        unsafe { crate::shm::copy::copy_to_shared(bytes, self.payload.add(offset)) }
    }

    /// The frame in place, to fill without an intermediate buffer.
    ///
    /// # Safety
    /// No other process may read or write these bytes while the slice
    /// lives (true for a consumer that follows the protocol: it does not
    /// touch a frame before it is committed).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// let mut loan = tx.send_loan(3).unwrap();
    /// // SAFETY: single producer; the consumer never reads an uncommitted frame.
    /// unsafe { loan.as_mut_slice() }.copy_from_slice(b"xyz");
    /// loan.commit().unwrap();
    /// assert_eq!(rx.recv().unwrap(), b"xyz");
    /// ```
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes at `payload` are inside the ring and reserved for this loan (see
        // `ByteProducer::reserve`); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.payload, self.len) }
    }

    /// Publishes the frame, unless the ring was closed since the loan was
    /// taken: then nothing is published and the result is `Closed` (as a
    /// send after `close` would be).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.send_loan(1).unwrap().commit().unwrap();
    /// let loan = tx.send_loan(1).unwrap();
    /// q.close();
    /// assert_eq!(loan.commit(), Err(shmproc::CommitError::Closed));
    /// ```
    #[inline]
    pub fn commit(self) -> Result<(), CommitError> {
        if self.p.closed() {
            return Err(CommitError::Closed);
        }
        self.p.publish(self.end);
        Ok(())
    }
}

/// The oldest frame, lent in place; see [`ByteConsumer::recv_loan`]. Read
/// it ([`read_at`](Self::read_at), [`to_vec`](Self::to_vec), or in place
/// through [`as_slice`](Self::as_slice)), then [`release`](Self::release)
/// it; dropping it leaves the frame to be received again.
///
/// ```
/// let q = shmproc::queue::ByteQueue::new(4096, 512).unwrap();
/// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
/// tx.send(b"twice").unwrap();
/// drop(rx.recv_loan().unwrap()); // not released: still there
/// let loan = rx.recv_loan().unwrap();
/// assert_eq!(loan.to_vec(), b"twice");
/// loan.release();
/// assert!(rx.try_recv().is_err());
/// ```
pub struct ByteReadLoan<'a> {
    c: &'a mut ByteConsumer,
    payload: *const u8,
    len: usize,
    end: u64,
}

impl std::fmt::Debug for ByteReadLoan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteReadLoan").field("len", &self.len).finish()
    }
}

impl ByteReadLoan<'_> {
    /// The frame's length.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.send(b"four").unwrap();
    /// assert_eq!(rx.recv_loan().unwrap().len(), 4);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty (a zero-length message).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.send(b"").unwrap();
    /// assert!(rx.recv_loan().unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The frame's first byte in this process's mapping (64-aligned when
    /// the frame has [`ALIGN_FROM`](super::ALIGN_FROM) bytes or more).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 1024).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.send(&[0; 200]).unwrap();
    /// assert_eq!(rx.recv_loan().unwrap().as_ptr() as usize % 64, 0);
    /// ```
    pub fn as_ptr(&self) -> *const u8 {
        self.payload
    }

    /// Copies the frame's bytes from `offset` into `dst` (all of `dst`).
    ///
    /// # Panics
    /// If `offset + dst.len()` is past the frame's end (as slice indexing
    /// would).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.send(b"header:body").unwrap();
    /// let loan = rx.recv_loan().unwrap();
    /// let mut body = [0u8; 4];
    /// loan.read_at(7, &mut body);
    /// assert_eq!(&body, b"body");
    /// ```
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) {
        let end = offset.checked_add(dst.len()).filter(|&e| e <= self.len);
        assert!(end.is_some(), "read_at({offset}, {} bytes) past the end of a {}-byte frame", dst.len(), self.len);
        // SAFETY: inside the published frame (checked), which the producer
        // does not reuse before release.
        unsafe { crate::shm::copy::copy_from_shared(self.payload.add(offset), dst) }
    }

    /// A copy of the frame.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.send(b"copy").unwrap();
    /// assert_eq!(rx.recv_loan().unwrap().to_vec(), b"copy");
    /// ```
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len];
        self.read_at(0, &mut v);
        v
    }

    /// The frame in place, without copying.
    ///
    /// # Safety
    /// No other process may write these bytes while the slice lives (true
    /// for a producer that follows the protocol: it does not reuse a frame
    /// before the consumer releases it).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.send(b"in place").unwrap();
    /// let loan = rx.recv_loan().unwrap();
    /// // SAFETY: the producer follows the protocol.
    /// assert_eq!(unsafe { loan.as_slice() }, b"in place");
    /// ```
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` published bytes at `payload`, inside the ring (validated by `locate`); no concurrent
        // writer is the caller's contract.
        unsafe { std::slice::from_raw_parts(self.payload, self.len) }
    }

    /// Consumes the frame: its room goes back to the producer.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new(4096, 100).unwrap();
    /// let (mut tx, mut rx) = (q.producer().unwrap(), q.consumer().unwrap());
    /// tx.send(b"1").unwrap();
    /// tx.send(b"2").unwrap();
    /// rx.recv_loan().unwrap().release();
    /// assert_eq!(rx.recv().unwrap(), b"2");
    /// ```
    #[inline]
    pub fn release(self) {
        self.c.release_to(self.end);
    }
}
