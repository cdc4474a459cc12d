//! The status segment a parent shares with each child it starts.
//!
//! Layout (private to one executable, so no layout version): a state word,
//! a "handed over" word, the outcome message, then the encoded argument.
//!
//! Protocol:
//! 1. The parent creates the segment with the argument, starts the child,
//!    hands the roles carried by the argument (pipe ends) over to the
//!    child's identity, then sets HANDED (Release) and wakes it.
//! 2. The child waits for HANDED (or for its parent to go away), decodes
//!    the argument — opening every handle it names — and stores OPENED
//!    (Release). From then on the parent may drop its own copy of the
//!    argument (which may own the objects' names): the child has them.
//! 3. The child stores its outcome (OK, FAILED, ... with a message,
//!    Release) before exiting.
//!
//! Everything read here was written by the child: untrusted, bounded.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::entry::Outcome;
use crate::RawSegment;
use crate::wait::Deadline;
use crate::wait::futex::{wait32, wake32};

const STATE: usize = 0;
const MSG_LEN: usize = 4;
pub(super) const ARG_LEN: usize = 8;
const HANDED: usize = 16;
const MSG: usize = 64;
const MSG_CAP: usize = 4096;
/// Offset of the argument bytes, and the smallest valid segment.
pub(super) const ARG: usize = MSG + MSG_CAP;

/// The child decoded its argument (every handle in it is open).
const OPENED: u32 = 1;
const OK: u32 = 2;
const FAILED: u32 = 3;
const PANICKED: u32 = 4;
const STARTUP: u32 = 5;

fn word(seg: &RawSegment, at: usize) -> &AtomicU32 {
    assert!(seg.len() >= ARG && at.is_multiple_of(4) && at + 4 <= MSG);
    // SAFETY: `at + 4 <= MSG <= seg.len()` (checked above), the bytes start 64-byte aligned (`RawSegment::as_ptr`):
    // the word is in bounds and 4-aligned; only accessed atomically (the crate's memory model for shared words).
    unsafe { &*(seg.as_ptr().add(at) as *const AtomicU32) }
}

/// Parent: the roles the argument carries are the child's now.
pub(super) fn set_handed(seg: &RawSegment) {
    let w = word(seg, HANDED);
    // Release: pairs with the Acquire load in `wait_handed`, so the child
    // sees the role slots written before.
    w.store(1, Ordering::Release);
    wake32(w, u32::MAX);
}

/// Child: waits until the parent handed the roles over, or `parent_alive`
/// says it is gone (then the argument may be gone too; decoding says so).
pub(super) fn wait_handed(seg: &RawSegment, parent_alive: impl Fn() -> bool) {
    let w = word(seg, HANDED);
    // Acquire: pairs with the Release store in `set_handed`.
    while w.load(Ordering::Acquire) == 0 && parent_alive() {
        wait32(w, 0, Deadline::after(Duration::from_millis(100)));
    }
}

/// Child: the argument is decoded, every handle in it open.
pub(super) fn set_opened(seg: &RawSegment) {
    // Release: pairs with the Acquire load in `opened`: the parent drops
    // its copy of the argument only after the child's opens.
    let _ = word(seg, STATE).compare_exchange(0, OPENED, Ordering::Release, Ordering::Relaxed);
}

/// Parent: whether the child has opened its argument (or gone further).
pub(super) fn opened(seg: &RawSegment) -> bool {
    // Acquire: pairs with the Release store in `set_opened` / `write_outcome`.
    word(seg, STATE).load(Ordering::Acquire) != 0
}

pub(super) fn write_outcome(seg: &RawSegment, outcome: &Outcome) {
    let (state, msg) = match outcome {
        Outcome::Ok => (OK, ""),
        Outcome::Failed(m) => (FAILED, m.as_str()),
        Outcome::Panicked(m) => (PANICKED, m.as_str()),
        Outcome::Startup(m) => (STARTUP, m.as_str()),
    };
    let mut cut = msg.len().min(MSG_CAP);
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    seg.write(MSG, &msg.as_bytes()[..cut]);
    seg.write(MSG_LEN, &(cut as u32).to_le_bytes());
    // Release: pairs with the Acquire load in `read_outcome`, publishing
    // the message bytes written above.
    word(seg, STATE).store(state, Ordering::Release);
}

pub(super) fn read_outcome(seg: &RawSegment) -> Option<Outcome> {
    // Acquire: pairs with the Release store in `write_outcome`.
    let state = word(seg, STATE).load(Ordering::Acquire);
    let mut len = [0u8; 4];
    seg.read(MSG_LEN, &mut len);
    // Untrusted: the child could have written anything.
    let len = (u32::from_le_bytes(len) as usize).min(MSG_CAP);
    let mut msg = vec![0u8; len];
    seg.read(MSG, &mut msg);
    let msg = String::from_utf8_lossy(&msg).into_owned();
    match state {
        OK => Some(Outcome::Ok),
        FAILED => Some(Outcome::Failed(msg)),
        PANICKED => Some(Outcome::Panicked(msg)),
        STARTUP => Some(Outcome::Startup(msg)),
        _ => None,
    }
}
