//! [`Connection`] as a [`Waitable`](crate::Waitable): readable when a
//! message is waiting, or `recv` would fail at once (the sender is gone,
//! this handle is closed, or the end cannot receive). The receiving role
//! is taken on the first `wait`, as on the first `recv`.

use std::time::Duration;

use super::Connection;
use crate::queue::ByteConsumer;
use crate::wait::many::{WaitObject, Waitable, Words};

impl Connection {
    /// The receiving end, or `None` if `recv` would fail at once.
    fn wait_end(&mut self) -> Option<&mut ByteConsumer> {
        self.rx().ok()
    }
}

impl WaitObject for Connection {
    fn ready(&mut self, thorough: bool) -> bool {
        self.wait_end().is_none_or(|rx| rx.ready(thorough))
    }
    fn announce(&mut self, words: &mut Words) -> Option<u64> {
        self.wait_end()?.announce(words)
    }
    fn withdraw(&mut self, token: u64) {
        if let Some(rx) = self.wait_end() {
            rx.withdraw(token);
        }
    }
    fn handshake(&self) -> bool {
        true
    }
    fn prepare(&mut self) -> Option<Duration> {
        self.wait_end().and_then(|rx| rx.prepare())
    }
}

/// Readable: a message is waiting, or `recv` would fail at once.
impl Waitable for Connection {}
