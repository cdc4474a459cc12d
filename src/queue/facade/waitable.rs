//! The Python-shaped queues as [`Waitable`](crate::Waitable)s: readable
//! as their [`MpmcQueue`](super::MpmcQueue) is, and also once this handle
//! was closed (`get` then fails at once).

use std::time::Duration;

use super::{JoinableQueue, Queue, SimpleQueue};
use crate::ShmType;
use crate::wait::many::{self, WaitObject, Waitable, Words};

macro_rules! waitable {
    ($t:ident) => {
        impl<T: ShmType> WaitObject for $t<T> {
            fn ready(&mut self, _thorough: bool) -> bool {
                self.handle_closed() || self.q.readable()
            }
            fn announce(&mut self, words: &mut Words) -> Option<u64> {
                if self.handle_closed() { None } else { self.q.announce_reader(words) }
            }
            fn withdraw(&mut self, _token: u64) {
                self.q.withdraw_reader()
            }
            fn handshake(&self) -> bool {
                true
            }
            fn prepare(&mut self) -> Option<Duration> {
                many::handshake_poll()
            }
        }

        /// Readable: an item is there, or `get` would fail at once (the
        /// queue is closed, or this handle is).
        impl<T: ShmType> Waitable for $t<T> {}
    };
}

waitable!(Queue);
waitable!(JoinableQueue);
waitable!(SimpleQueue);
