//! Zero-copy loans on the SPSC ring: the producer fills the next free
//! slot in place and publishes it with `commit`; the consumer reads the
//! oldest item in place and frees its slot with `release` (as rtrb's
//! chunks, one slot at a time). Same index protocol as `push` / `pop`: a
//! loan only defers the index store.

use std::sync::atomic::Ordering;

use crate::ShmType;

use super::error::{CommitError, TryPopError, TryPushError};
use super::spsc::{Consumer, Producer};

impl<T: ShmType> Producer<T> {
    /// Borrows the next free slot to fill in place; the item is published
    /// by [`WriteLoan::commit`] (dropping the loan without commit publishes
    /// nothing). `Err` as for [`try_push`](Self::try_push): `Closed` once
    /// the queue is closed.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<[u64; 8]>::new(4).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// let mut loan = tx.loan().unwrap();
    /// loan.write([7; 8]);
    /// loan.commit().unwrap();
    /// assert_eq!(q.consumer().unwrap().pop().unwrap(), [7; 8]);
    /// ```
    pub fn loan(&mut self) -> Result<WriteLoan<'_, T>, TryPushError<()>> {
        let m = &self.q.ctl().meta.0;
        if m.closed.load(Ordering::Relaxed) | m.consumer_gone.load(Ordering::Relaxed) != 0 {
            return Err(self.refusal(()).unwrap_or(TryPushError::Closed(())));
        }
        if self.free(1) == 0 {
            return Err(self.refusal(()).unwrap_or(TryPushError::Full(())));
        }
        let slot = self.q.slot(self.tail);
        Ok(WriteLoan { p: self, slot })
    }
}

impl<T: ShmType> Consumer<T> {
    /// Borrows the oldest item in place; its slot is given back by
    /// [`ReadLoan::release`] (dropping the loan without release leaves the
    /// item in the queue). `Err` as for [`try_pop`](Self::try_pop).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<[u32; 16]>::new(2).unwrap();
    /// q.producer().unwrap().push([3; 16]).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let loan = rx.peek().unwrap();
    /// assert_eq!(loan.read()[15], 3);
    /// loan.release();
    /// assert!(q.is_empty());
    /// ```
    pub fn peek(&mut self) -> Result<ReadLoan<'_, T>, TryPopError> {
        if self.available(1) == 0 {
            let reason = self.empty_reason();
            if reason == TryPopError::Empty || self.available(1) == 0 {
                return Err(reason);
            }
        }
        let slot = self.q.slot(self.head);
        Ok(ReadLoan { c: self, slot })
    }
}

/// A slot of the ring lent to the producer; see [`Producer::loan`].
pub struct WriteLoan<'a, T: ShmType> {
    p: &'a mut Producer<T>,
    slot: *mut T,
}

impl<T: ShmType> WriteLoan<'_, T> {
    /// Writes the whole item into the slot.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u16>::new(2).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// let mut l = tx.loan().unwrap();
    /// l.write(3);
    /// l.commit().unwrap();
    /// ```
    pub fn write(&mut self, v: T) {
        // SAFETY: the slot is free and owned by the producer until commit.
        unsafe { crate::shm::copy::write(self.slot, v) }
    }

    /// The slot itself, to fill field by field.
    ///
    /// # Safety
    /// The reference must not outlive the loan, and no other process may
    /// write this slot meanwhile (true for every process that follows the
    /// SPSC protocol: the consumer does not touch unpublished slots).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<[u8; 4]>::new(2).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// let mut l = tx.loan().unwrap();
    /// // SAFETY: single producer; the consumer never touches unpublished slots.
    /// unsafe { l.as_mut()[2] = 9 };
    /// l.commit().unwrap();
    /// ```
    pub unsafe fn as_mut(&mut self) -> &mut T {
        // SAFETY: caller's contract; the slot is in bounds and aligned.
        unsafe { &mut *self.slot }
    }

    /// Publishes the slot as the next item, unless the queue was closed
    /// since the loan was taken: then nothing is published and the result
    /// is `Closed` (as a push after `close` would be). The consumer being
    /// gone does not refuse a commit (as a push that won the race with its
    /// exit: the item is simply never read).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u16>::new(2).unwrap();
    /// let mut tx = q.producer().unwrap();
    /// tx.loan().unwrap().commit().unwrap();
    /// assert_eq!(q.len(), 1);
    /// let loan = tx.loan().unwrap();
    /// q.close();
    /// assert_eq!(loan.commit(), Err(shmproc::CommitError::Closed));
    /// assert_eq!(q.len(), 1);
    /// ```
    pub fn commit(self) -> Result<(), CommitError> {
        if self.p.q.ctl().meta.0.closed.load(Ordering::Relaxed) != 0 {
            return Err(CommitError::Closed);
        }
        self.p.tail = self.p.tail.wrapping_add(1);
        self.p.publish();
        Ok(())
    }
}

/// The oldest item, lent in place; see [`Consumer::peek`].
pub struct ReadLoan<'a, T: ShmType> {
    c: &'a mut Consumer<T>,
    slot: *const T,
}

impl<T: ShmType> ReadLoan<'_, T> {
    /// A copy of the item.
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// q.producer().unwrap().push(6).unwrap();
    /// assert_eq!(q.consumer().unwrap().peek().unwrap().read(), 6);
    /// ```
    pub fn read(&self) -> T {
        // SAFETY: the slot is published and not reused until release.
        unsafe { crate::shm::copy::read(self.slot) }
    }

    /// The item in place, without copying.
    ///
    /// # Safety
    /// The reference must not outlive the loan, and no other process may
    /// write this slot meanwhile (true for a producer that follows the SPSC
    /// protocol: it does not reuse a slot before the consumer releases it).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<[u8; 64]>::new(2).unwrap();
    /// q.producer().unwrap().push([1; 64]).unwrap();
    /// let mut rx = q.consumer().unwrap();
    /// let loan = rx.peek().unwrap();
    /// // SAFETY: single producer following the protocol.
    /// assert_eq!(unsafe { loan.as_ref() }.iter().map(|&b| b as u32).sum::<u32>(), 64);
    /// ```
    pub unsafe fn as_ref(&self) -> &T {
        // SAFETY: caller's contract; in bounds and aligned.
        unsafe { &*self.slot }
    }

    /// Gives the slot back to the producer (the item is consumed).
    ///
    /// ```
    /// let q = shmproc::queue::SpscQueue::<u8>::new(2).unwrap();
    /// q.producer().unwrap().push(6).unwrap();
    /// q.consumer().unwrap().peek().unwrap().release();
    /// assert!(q.is_empty());
    /// ```
    pub fn release(self) {
        self.c.head = self.c.head.wrapping_add(1);
        self.c.release();
    }
}
