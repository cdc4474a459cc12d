//! [`ByteConsumer`] as a [`Waitable`](crate::Waitable): readable when a
//! frame (at least its header) is published, or `recv` would fail at once;
//! the protocol is the SPSC consumer's (`spsc/waitable.rs`).

use super::super::spsc::consumer_waitable;
use super::{ByteConsumer, HEADER};
use crate::wait::many::{WaitObject, Waitable};

impl WaitObject for ByteConsumer {
    consumer_waitable!(|s| s.q.ctl(), s.head, HEADER);
}

/// Readable: a frame is there, or `recv` would fail at once (`Closed`,
/// `Disconnected`).
impl Waitable for ByteConsumer {}
