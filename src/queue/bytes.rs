//! Variable-length frames in one byte ring (single producer, single
//! consumer): strings and user-serialized messages travel without padding
//! to a fixed slot size.
//!
//! Same ring discipline, roles, waiting and crash handling as
//! [`SpscQueue`](super::SpscQueue), with byte indices. A frame is an 8-byte
//! header (its length as u32, 4 bytes unused) and the payload rounded up to
//! 8 bytes; a frame never wraps: when it does not fit before the end of the
//! ring, the producer writes a WRAP marker there and starts at offset 0.
//! The consumer validates every header it reads (length within the
//! configured maximum and within the published bytes) and reports
//! [`PopError::Corrupted`] otherwise, never reading outside the ring.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::WaitStrategy;
use super::error::{PopError, PushError, RoleError};
use super::roles::{PeerWatch, Role};
use super::spsc::{SpscCtl, new_ctl};
use super::wake::{publish_and_wake, sleep_on};
use crate::OpenError;
use crate::shm::object::constructors;
use crate::shm::{Fingerprint, Kind, Mapped, Object};
use crate::wait::Deadline;
use crate::wait::spin::{RING_SPIN, spin_step};

const HEADER: u64 = 8;
const WRAP: u32 = u32::MAX;

fn frame_size(len: u64) -> u64 {
    HEADER + len.div_ceil(8) * 8
}

/// A byte-frame ring in shared memory: `capacity` bytes, frames of at most
/// `max_frame` bytes.
///
/// ```
/// use shmproc::queue::ByteQueue;
/// let q = ByteQueue::new((4096, 1000)).unwrap();
/// let mut tx = q.producer().unwrap();
/// let mut rx = q.consumer().unwrap();
/// tx.send(b"hello").unwrap();
/// tx.send(b"").unwrap();
/// assert_eq!(rx.recv().unwrap(), b"hello");
/// assert_eq!(rx.recv().unwrap(), b"");
/// assert!(tx.send(&[0; 1001]).is_err()); // larger than max_frame
/// ```
#[derive(Clone, Debug)]
pub struct ByteQueue {
    m: Mapped<SpscCtl>,
    mask: u64,
    max_frame: u64,
}

/// Creation parameters of a [`ByteQueue`]: ring bytes and frame limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByteQueueSize {
    capacity: u64,
    max_frame: u64,
}

fn check(capacity: u64, max_frame: u64) -> Result<(), String> {
    if capacity < 64 || !capacity.is_power_of_two() {
        return Err(format!("byte capacity {capacity} is not supported: use a power of two >= 64"));
    }
    if max_frame > u64::from(u32::MAX - 1) || 2 * frame_size(max_frame) > capacity {
        return Err(format!("max_frame {max_frame} is too large for {capacity} bytes (at most about capacity/2 - 8)"));
    }
    Ok(())
}

impl Object for ByteQueue {
    const KIND: Kind = Kind::ByteQueue;
    type Init = ByteQueueSize;
    type Ctl = SpscCtl;
    fn fingerprint() -> Fingerprint {
        Fingerprint::of::<u8>()
    }
    fn capacity(init: &ByteQueueSize) -> Result<u64, OpenError> {
        check(init.capacity, init.max_frame).map_err(OpenError::InvalidArgument)?;
        Ok(init.capacity)
    }
    fn new_ctl(init: &ByteQueueSize, _: u64) -> SpscCtl {
        let c = new_ctl();
        c.meta.0.aux.store(init.max_frame, Ordering::Relaxed);
        c
    }
    fn validate(m: &Mapped<SpscCtl>) -> Result<(), String> {
        check(m.capacity(), m.ctl().meta.0.aux.load(Ordering::Relaxed))
    }
    fn from_mapped(m: Mapped<SpscCtl>) -> Self {
        m.ctl().use_fences_unless_membarrier();
        let mask = m.capacity() - 1;
        // Re-read once (a peer may have changed it since `validate`): re-checked, and only this copy is used.
        let max_frame = m.ctl().meta.0.aux.load(Ordering::Relaxed);
        let max_frame = if check(m.capacity(), max_frame).is_ok() { max_frame } else { 0 };
        ByteQueue { m, mask, max_frame }
    }
}

impl ByteQueue {
    constructors!(
        doc("queue::ByteQueue", "(4096, 512)", ", (4096, 512)"),
        size: (u64, u64) => ByteQueueSize { capacity: size.0, max_frame: size.1 }
    );

    /// The largest frame accepted.
    ///
    /// ```
    /// assert_eq!(shmproc::queue::ByteQueue::new((4096, 100)).unwrap().max_frame(), 100);
    /// ```
    pub fn max_frame(&self) -> usize {
        self.max_frame as usize
    }

    /// Closes the ring: sends fail, receives drain then fail; waiters wake.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((4096, 100)).unwrap();
    /// q.close();
    /// assert!(q.producer().unwrap().send(b"x").is_err());
    /// ```
    pub fn close(&self) {
        self.m.ctl().close();
    }

    /// Takes the sending role: one live [`ByteProducer`] per ring at a
    /// time, across all processes and threads ([`RoleError`] while another
    /// one lives, this process's included); the role of a dropped handle or
    /// a dead process can be taken again.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((4096, 100)).unwrap();
    /// assert!(q.producer().is_ok());
    /// ```
    pub fn producer(&self) -> Result<ByteProducer, RoleError> {
        let (tail, head_cache) = self.m.ctl().attach(Role::Producer)?;
        Ok(ByteProducer {
            q: self.clone(),
            tail,
            head_cache,
            wait: WaitStrategy::Blocking,
            watch: PeerWatch::default(),
        })
    }

    /// Takes the receiving role: one live [`ByteConsumer`] per ring at a
    /// time (as [`producer`](Self::producer)).
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((4096, 100)).unwrap();
    /// assert!(q.consumer().is_ok());
    /// ```
    pub fn consumer(&self) -> Result<ByteConsumer, RoleError> {
        let (head, tail_cache) = self.m.ctl().attach(Role::Consumer)?;
        Ok(ByteConsumer {
            q: self.clone(),
            head,
            tail_cache,
            wait: WaitStrategy::Blocking,
            watch: PeerWatch::default(),
        })
    }

    fn ctl(&self) -> &SpscCtl {
        self.m.ctl()
    }

    fn at(&self, index: u64) -> *mut u8 {
        // SAFETY: masked index < capacity, inside the data area.
        unsafe { self.m.data().add((index & self.mask) as usize) }
    }
}

/// The sending end of a [`ByteQueue`].
#[derive(Debug)]
pub struct ByteProducer {
    q: ByteQueue,
    tail: u64,
    head_cache: u64,
    wait: WaitStrategy,
    watch: PeerWatch,
}

impl ByteProducer {
    /// Chooses how blocked sends wait.
    ///
    /// ```
    /// use shmproc::queue::{ByteQueue, WaitStrategy};
    /// let q = ByteQueue::new((4096, 100)).unwrap();
    /// let tx = q.producer().unwrap().with_wait(WaitStrategy::BusyPoll);
    /// # drop(tx);
    /// ```
    pub fn with_wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Sends one frame if it fits now: `Full(())` otherwise, `TooLarge(())`
    /// for a frame above [`ByteQueue::max_frame`], and `Closed` /
    /// `Disconnected` as for the SPSC ring.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((64, 16)).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.try_send(b"0123456789").unwrap();
    /// tx.try_send(b"0123456789").unwrap();
    /// assert!(tx.try_send(b"0123456789").is_err());
    /// ```
    pub fn try_send(&mut self, frame: &[u8]) -> Result<(), PushError<()>> {
        let len = frame.len() as u64;
        if len > self.q.max_frame {
            return Err(PushError::TooLarge(()));
        }
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) != 0 {
            return Err(PushError::Closed(()));
        }
        if self.watch.gone(&m.consumer, &m.consumer_gone) {
            return Err(PushError::Disconnected(()));
        }
        let cap = self.q.mask + 1;
        let need = frame_size(len);
        let pos = self.tail & self.q.mask;
        let skip = if cap - pos < need { cap - pos } else { 0 };
        let mut free = cap - self.tail.wrapping_sub(self.head_cache).min(cap);
        if free < skip + need {
            // Acquire: pairs with the consumer's Release store of head.
            self.head_cache = self.q.ctl().head.0.load(Ordering::Acquire);
            free = cap - self.tail.wrapping_sub(self.head_cache).min(cap);
            if free < skip + need {
                return Err(PushError::Full(()));
            }
        }
        if skip > 0 {
            // SAFETY: `skip` (>= 8, a multiple of 8) free bytes from pos.
            unsafe { crate::shm::copy::write(self.q.at(self.tail) as *mut u32, WRAP) };
            self.tail = self.tail.wrapping_add(skip);
        }
        let base = self.q.at(self.tail);
        // SAFETY: `need` free contiguous bytes at base (pos + need <= cap),
        // 8-aligned; the consumer does not read them before publication.
        unsafe {
            crate::shm::copy::write(base as *mut u32, len as u32);
            crate::shm::copy::copy_to_shared(frame, base.add(HEADER as usize));
        }
        self.tail = self.tail.wrapping_add(need);
        let c = self.q.ctl();
        publish_and_wake(c, &c.tail.0, self.tail, &c.meta.0.consumer_waiting);
        Ok(())
    }

    /// Sends one frame, waiting for room.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((4096, 100)).unwrap();
    /// q.producer().unwrap().send(b"abc").unwrap();
    /// ```
    pub fn send(&mut self, frame: &[u8]) -> Result<(), PushError<()>> {
        self.send_until(frame, Deadline::NEVER)
    }

    /// Sends one frame, waiting at most `timeout` for room.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((64, 16)).unwrap();
    /// let _rx = q.consumer().unwrap();
    /// let mut tx = q.producer().unwrap();
    /// while tx.try_send(b"xx").is_ok() {}
    /// let r = tx.send_timeout(b"xx", std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::queue::PushError::TimedOut(())));
    /// ```
    pub fn send_timeout(&mut self, frame: &[u8], timeout: Duration) -> Result<(), PushError<()>> {
        self.send_until(frame, Deadline::after(timeout))
    }

    fn send_until(&mut self, frame: &[u8], deadline: Deadline) -> Result<(), PushError<()>> {
        let mut spins = 0u32;
        loop {
            match self.try_send(frame) {
                Err(PushError::Full(())) => {}
                done => return done,
            }
            if deadline.passed() {
                return Err(PushError::TimedOut(()));
            }
            if spin_step(self.wait, &mut spins, &RING_SPIN) {
                continue;
            }
            let c = self.q.ctl();
            sleep_on(&c.head.0, self.head_cache, &c.meta.0.producer_waiting, deadline, || {
                c.meta.0.closed.load(Ordering::Relaxed) != 0 || c.meta.0.consumer_gone.load(Ordering::Relaxed) != 0
            });
            self.watch.after_sleep();
        }
    }
}

impl Drop for ByteProducer {
    fn drop(&mut self) {
        self.q.ctl().detach(Role::Producer);
    }
}

/// The receiving end of a [`ByteQueue`].
#[derive(Debug)]
pub struct ByteConsumer {
    q: ByteQueue,
    head: u64,
    tail_cache: u64,
    wait: WaitStrategy,
    watch: PeerWatch,
}

impl ByteConsumer {
    /// Chooses how blocked receives wait.
    ///
    /// ```
    /// use shmproc::queue::{ByteQueue, WaitStrategy};
    /// let q = ByteQueue::new((4096, 100)).unwrap();
    /// let rx = q.consumer().unwrap().with_wait(WaitStrategy::BusyPoll);
    /// # drop(rx);
    /// ```
    pub fn with_wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Published bytes not yet consumed (refreshing the cached tail).
    fn available(&mut self) -> u64 {
        let cap = self.q.mask + 1;
        // Acquire: pairs with the producer's Release store of tail.
        self.tail_cache = self.q.ctl().tail.0.load(Ordering::Acquire);
        self.tail_cache.wrapping_sub(self.head).min(cap)
    }

    /// Receives one frame into `out` (cleared first) if one is there.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((4096, 100)).unwrap();
    /// q.producer().unwrap().send(b"hi").unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let mut buf = Vec::new();
    /// rx.try_recv_into(&mut buf).unwrap();
    /// assert_eq!(buf, b"hi");
    /// ```
    pub fn try_recv_into(&mut self, out: &mut Vec<u8>) -> Result<(), PopError> {
        let cap = self.q.mask + 1;
        let mut wrapped = false;
        loop {
            let mut avail = self.tail_cache.wrapping_sub(self.head).min(cap);
            if avail < HEADER {
                avail = self.available();
                if avail < HEADER {
                    let m = &self.q.ctl().meta.0;
                    let reason = if m.closed.load(Ordering::Relaxed) != 0 {
                        PopError::Closed
                    } else if self.watch.gone(&m.producer, &m.producer_gone) {
                        PopError::Disconnected
                    } else {
                        return Err(PopError::Empty);
                    };
                    // The producer may have published a last frame just
                    // before leaving: look once more.
                    if self.available() < HEADER {
                        return Err(reason);
                    }
                    continue;
                }
            }
            let pos = self.head & self.q.mask;
            // SAFETY: at least HEADER published bytes at pos (8-aligned).
            let len = unsafe { crate::shm::copy::read(self.q.at(self.head) as *const u32) };
            if len == WRAP {
                // A producer wraps at most once per frame, never at offset
                // 0 (a whole lap): anything else is a corrupted ring, and
                // following it could loop forever.
                let skip = cap - pos;
                if pos == 0 || skip > avail || wrapped {
                    return Err(PopError::Corrupted);
                }
                wrapped = true;
                self.head = self.head.wrapping_add(skip);
                continue;
            }
            let need = frame_size(u64::from(len));
            if u64::from(len) > self.q.max_frame || need > avail || pos + need > cap {
                return Err(PopError::Corrupted);
            }
            out.clear();
            out.reserve(len as usize);
            // SAFETY: `len` bytes after the header are published, inside the
            // ring (pos + need <= cap), and `out` has room for them.
            unsafe {
                crate::shm::copy::copy_from_shared_uninit(
                    self.q.at(self.head).add(HEADER as usize),
                    &mut out.spare_capacity_mut()[..len as usize],
                );
                out.set_len(len as usize);
            }
            self.head = self.head.wrapping_add(need);
            let c = self.q.ctl();
            publish_and_wake(c, &c.head.0, self.head, &c.meta.0.producer_waiting);
            return Ok(());
        }
    }

    /// Receives one frame, waiting for it.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((4096, 100)).unwrap();
    /// q.producer().unwrap().send(b"x").unwrap();
    /// assert_eq!(q.consumer().unwrap().recv().unwrap(), b"x");
    /// ```
    pub fn recv(&mut self) -> Result<Vec<u8>, PopError> {
        let mut v = Vec::new();
        self.recv_until(&mut v, Deadline::NEVER).map(|()| v)
    }

    /// Receives one frame into `out`, waiting at most `timeout`.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((4096, 100)).unwrap();
    /// let _tx = q.producer().unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let r = rx.recv_timeout_into(&mut Vec::new(), std::time::Duration::from_millis(2));
    /// assert_eq!(r, Err(shmproc::queue::PopError::TimedOut));
    /// ```
    pub fn recv_timeout_into(&mut self, out: &mut Vec<u8>, timeout: Duration) -> Result<(), PopError> {
        self.recv_until(out, Deadline::after(timeout))
    }

    fn recv_until(&mut self, out: &mut Vec<u8>, deadline: Deadline) -> Result<(), PopError> {
        let mut spins = 0u32;
        loop {
            match self.try_recv_into(out) {
                Err(PopError::Empty) => {}
                done => return done,
            }
            if deadline.passed() {
                return Err(PopError::TimedOut);
            }
            if spin_step(self.wait, &mut spins, &RING_SPIN) {
                continue;
            }
            let c = self.q.ctl();
            sleep_on(&c.tail.0, self.tail_cache, &c.meta.0.consumer_waiting, deadline, || {
                c.meta.0.closed.load(Ordering::Relaxed) != 0 || c.meta.0.producer_gone.load(Ordering::Relaxed) != 0
            });
            self.watch.after_sleep();
        }
    }

    /// Whether a frame is available, waiting at most `timeout` for one
    /// (Python's `Connection.poll`). Does not consume it.
    ///
    /// ```
    /// let q = shmproc::queue::ByteQueue::new((4096, 100)).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// assert!(!rx.poll(std::time::Duration::ZERO));
    /// ```
    pub fn poll(&mut self, timeout: Duration) -> bool {
        let deadline = Deadline::after(timeout);
        loop {
            if self.available() >= HEADER {
                return true;
            }
            let c = self.q.ctl();
            // The producer's liveness too, as `recv` checks it: without a
            // deadline, a killed producer must not leave us asleep forever.
            if deadline.passed()
                || c.meta.0.closed.load(Ordering::Relaxed) != 0
                || self.watch.gone(&c.meta.0.producer, &c.meta.0.producer_gone)
            {
                return self.available() >= HEADER;
            }
            sleep_on(&c.tail.0, self.tail_cache, &c.meta.0.consumer_waiting, deadline, || false);
            self.watch.after_sleep();
        }
    }
}

impl Drop for ByteConsumer {
    fn drop(&mut self) {
        self.q.ctl().detach(Role::Consumer);
    }
}
