//! The Python-shaped queues as [`Waitable`](crate::Waitable)s: readable
//! when their `get` would return now, and also once this handle was
//! closed (`get` then fails at once). A bounded queue is its one ring (an
//! [`MpmcQueue`](super::MpmcQueue) of slots or frames: its own
//! readiness and sleeper protocol); an unbounded one follows its chain of
//! rings (`chain/waitable.rs`).

use std::time::Duration;

use super::super::itemring::{ItemRing, each};
use super::{Inner, JoinableQueue, Queue, SimpleQueue};
use crate::handoff::Handoff;
use crate::wait::many::{self, WaitObject, Waitable, Words};

impl<T: Handoff> Inner<T> {
    fn readable(&self) -> bool {
        match self {
            Inner::Ring(r) => each!(r, q => q.readable()),
            Inner::Chain(c) => c.readable(),
        }
    }

    fn announce_reader(&mut self, words: &mut Words) -> Option<u64> {
        match self {
            Inner::Ring(r) => each!(r, q => q.announce_reader(words)),
            Inner::Chain(c) => c.announce_reader(words),
        }
    }

    fn withdraw_reader(&mut self) {
        match self {
            Inner::Ring(r) => each!(r, q => q.withdraw_reader()),
            Inner::Chain(c) => c.withdraw_reader(),
        }
    }
}

macro_rules! waitable {
    ($t:ident) => {
        impl<T: Handoff> WaitObject for $t<T> {
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
            fn sleep_cap(&self) -> Option<Duration> {
                match &self.q {
                    Inner::Chain(c) => c.sleep_cap(),
                    Inner::Ring(_) => None,
                }
            }
        }

        /// Readable: an item is there, or `get` would fail at once (the
        /// queue is closed, or this handle is). Any item type, bounded or
        /// unbounded.
        impl<T: Handoff> Waitable for $t<T> {}
    };
}

waitable!(Queue);
waitable!(JoinableQueue);
waitable!(SimpleQueue);
