//! [`MpmcQueue`] as a [`Waitable`](crate::Waitable): readable when an
//! item is there (or claimed by a producer that is writing it) or the
//! queue is closed. The multi-waiter counts itself in `consumers_waiting`
//! and sleeps on `items_seq`, exactly as a blocked `pop` does
//! ([`MpmcQueue::sleep`]).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::super::item::RingItem;
use super::super::vyukov::{CLOSED, POS};
use super::MpmcQueue;
use crate::ShmType;
use crate::wait::many::{self, WaitObject, Waitable, Words};

// Any slot kind (plain data, `PodVia`, frames): the unbounded queue's
// rings and the facades use these too.
impl<T: RingItem> MpmcQueue<T> {
    /// Whether a `pop` would return now (an item, or `Closed`): plain loads.
    pub(crate) fn readable(&self) -> bool {
        let (items, closed) = self.items_and_closed();
        items || closed
    }

    /// Whether an item is there (or claimed by a producer writing it), and
    /// whether the queue is closed: plain loads.
    pub(crate) fn items_and_closed(&self) -> (bool, bool) {
        let c = self.ctl();
        // Acquire (both): pair with the Release claim CASes. `head` first:
        // it never passes `tail`, so a later `tail` is at least it.
        let h = c.head.0.load(Ordering::Acquire);
        let t = c.tail.0.load(Ordering::Acquire);
        (((t & POS).wrapping_sub(h & POS) as i64) > 0, t & CLOSED != 0)
    }

    /// Registers as a sleeping consumer (see `announce_counted`).
    pub(crate) fn announce_reader(&self, words: &mut Words) -> Option<u64> {
        let m = &self.ctl().meta.0;
        many::announce_counted(&m.consumers_waiting, &m.items_seq, words);
        Some(0)
    }

    /// [`announce_reader`](Self::announce_reader) for a ring its consumer
    /// sleeps on only while it is open (an unbounded queue's ring: once
    /// sealed, its consumers move on to the next one): `None` if it is
    /// closed by the time the ticket is read (nothing registered).
    pub(crate) fn announce_reader_while_open(&self, words: &mut Words) -> Option<u64> {
        let c = self.ctl();
        let m = &c.meta.0;
        // Acquire: pairs with `close`'s SeqCst `fetch_or`, seen through the
        // ticket: a ticket read after `close`'s bump sees CLOSED here.
        let sealed = || c.tail.0.load(Ordering::Acquire) & CLOSED != 0;
        many::announce_counted_unless(&m.consumers_waiting, &m.items_seq, words, sealed).then_some(0)
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
