//! [`MpmcQueue`] as a [`Waitable`](crate::Waitable): readable when an
//! item is there (or claimed by a producer that is writing it) or the
//! queue is closed. The multi-waiter counts itself in `consumers_waiting`
//! and sleeps on `items_seq`, exactly as a blocked `pop` does
//! ([`MpmcQueue::sleep`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::super::vyukov::{CLOSED, POS};
use super::MpmcQueue;
use crate::ShmType;
use crate::wait::many::{self, WaitObject, Waitable, Words};

impl<T: ShmType> MpmcQueue<T> {
    /// Whether a `pop` would return now (an item, or `Closed`): plain loads.
    pub(crate) fn readable(&self) -> bool {
        let c = self.ctl();
        // Acquire (both): pair with the Release claim CASes. `head` first:
        // it never passes `tail`, so a later `tail` is at least it.
        let h = c.head.0.load(Ordering::Acquire);
        let t = c.tail.0.load(Ordering::Acquire);
        t & CLOSED != 0 || ((t & POS).wrapping_sub(h & POS) as i64) > 0
    }

    /// Registers as a sleeping consumer (see `announce_counted`).
    pub(crate) fn announce_reader(&self, words: &mut Words) -> Option<u64> {
        let m = &self.ctl().meta.0;
        many::announce_counted(&m.consumers_waiting, &m.items_seq, words);
        Some(0)
    }

    /// Undoes [`announce_reader`](Self::announce_reader).
    pub(crate) fn withdraw_reader(&self) {
        let m = &self.ctl().meta.0;
        many::withdraw_counted(&m.consumers_waiting, &m.items_seq, || self.readable());
    }
}

impl<T: ShmType> WaitObject for MpmcQueue<T> {
    fn ready(&mut self, _thorough: bool) -> bool {
        self.readable()
    }
    fn announce(&mut self, words: &mut Words) -> Option<u64> {
        self.announce_reader(words)
    }
    fn withdraw(&mut self, _token: u64) {
        self.withdraw_reader()
    }
    fn handshake(&self) -> bool {
        true
    }
    fn prepare(&mut self) -> Option<Duration> {
        many::handshake_poll()
    }
}

/// Readable: an item is there, or the queue is closed.
impl<T: ShmType> Waitable for MpmcQueue<T> {}
