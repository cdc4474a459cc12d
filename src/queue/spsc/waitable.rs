//! The consumer ends of the SPSC-style rings ([`Consumer`] here, and
//! `ByteConsumer`) as [`Waitable`](crate::Waitable)s: readable when data
//! is published, the ring is closed, or the producer is gone (it left, or
//! its process died: `/proc`, looked at once per `POLL` as `pop` does).
//! The multi-waiter sets `consumer_waiting` and sleeps on it while it
//! holds 1, exactly as a blocked `pop` does (`queue::wake::sleep_on`: a
//! publish, `close` or the producer's detach clears it); the consumer role
//! is exclusive, so the flag has one owner.

use std::sync::atomic::Ordering;

use super::{Consumer, SpscCtl};
use crate::ShmType;
use crate::sys::thread;
use crate::wait::many::{self, WaitObject, Waitable, Words};

impl SpscCtl {
    /// Whether the consumer at `head` would get something now: at least
    /// `min` published units, `Closed` or `Disconnected`. Plain loads;
    /// with `thorough`, also the producer's liveness in `/proc`.
    pub(in crate::queue) fn consumer_ready(&self, head: u64, min: u64, thorough: bool) -> bool {
        let m = &self.meta.0;
        // Acquire: pairs with the producer's Release store of tail.
        let tail = self.tail.0.load(Ordering::Acquire);
        // Acquire: pairs with the SeqCst store in the producer's detach.
        if tail.wrapping_sub(head) >= min
            || m.closed.load(Ordering::Relaxed) != 0
            || m.producer_gone.load(Ordering::Acquire) != 0
        {
            return true;
        }
        thorough && {
            let owner = m.producer.load(Ordering::Relaxed);
            owner != 0 && thread::owner_is_dead(owner)
        }
    }

    /// Registers the consumer as asleep on its flag (see `announce_flag`).
    pub(in crate::queue) fn announce_consumer(&self, words: &mut Words) -> Option<u64> {
        many::announce_flag(&self.meta.0.consumer_waiting, words);
        Some(0)
    }

    /// Undoes [`announce_consumer`](Self::announce_consumer).
    pub(in crate::queue) fn withdraw_consumer(&self) {
        many::withdraw_flag(&self.meta.0.consumer_waiting);
    }
}

/// The [`WaitObject`] methods of an SPSC-style consumer end: `$ctl` gives
/// its control block, `$head` its index, `$min` the units that make it
/// readable.
macro_rules! consumer_waitable {
    (|$s:ident| $ctl:expr, $head:expr, $min:expr) => {
        fn ready(&mut self, thorough: bool) -> bool {
            let $s = &*self;
            $ctl.consumer_ready($head, $min, thorough)
        }
        fn announce(&mut self, words: &mut crate::wait::many::Words) -> Option<u64> {
            let $s = &*self;
            $ctl.announce_consumer(words)
        }
        fn withdraw(&mut self, _token: u64) {
            let $s = &*self;
            $ctl.withdraw_consumer()
        }
        fn handshake(&self) -> bool {
            true
        }
        fn prepare(&mut self) -> Option<std::time::Duration> {
            Some(crate::wait::spin::POLL)
        }
    };
}
pub(in crate::queue) use consumer_waitable;

impl<T: ShmType> WaitObject for Consumer<T> {
    consumer_waitable!(|s| s.q.ctl(), s.head, 1);
}

/// Readable: an item is there, or `pop` would fail at once (`Closed`,
/// `Disconnected`).
impl<T: ShmType> Waitable for Consumer<T> {}

