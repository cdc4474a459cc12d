//! The pool's control segment, shared by the pool and its workers.
//!
//! One [`RawSegment`] per pool: a 64-byte header, then one 64-byte record
//! per worker slot (like LMDB's reader table: each worker says there what
//! it holds, so the pool knows what a dead worker took with it).
//!
//! | offset | field | written by | meaning |
//! |---|---|---|---|
//! | 0 | `seq: u32` | workers, pool users | bumped after each result frame or request: the pool's manager sleeps on it (futex) |
//! | 4 | `waiting: u32` | manager | 1 while the manager may sleep: whoever bumps `seq` then wakes it |
//! | 64 + 64 i | `started: u64` | worker in slot i | items this worker has begun (stored before each item runs) |
//! | 72 + 64 i | `pid: u32` | worker in slot i | its pid (informational) |
//! | 80 + 64 i | `claimed: u64` | worker in slot i, manager | task frames this worker has taken up (it stores `n` before running its `n`th frame); the manager stores `n \| REVOKED` to take back frame `n` before the worker takes it up (see [`claim`], [`revoke`]) |

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::RawSegment;
use crate::shm::HeaderImage;
use crate::wait::futex::wake32;

const CTL_HEADER: usize = 64;
const RECORD: usize = 64;
const SEQ: usize = 0;
const WAITING: usize = 4;
const STARTED: usize = 0;
const PID: usize = 8;
const CLAIMED: usize = 16;
/// In `claimed`: the frame numbered by the other bits was taken back.
const REVOKED: u64 = 1 << 63;

/// Bytes of a control segment for `slots` workers (`None` past `u64`).
pub(crate) fn ctl_len(slots: usize) -> Option<u64> {
    u64::try_from(slots).ok()?.checked_mul(RECORD as u64)?.checked_add(CTL_HEADER as u64)
}

/// The shared words of a control segment, bounds-checked once.
#[derive(Debug, Clone)]
pub(crate) struct Ctl {
    seg: RawSegment,
    /// Its header as it was when this handle was made: the pool (its
    /// creator) writes it back before each worker start, so a task that
    /// scribbled over it does not make every later worker fail to open
    /// the segment.
    header: HeaderImage,
}

impl Ctl {
    pub(crate) fn new(seg: RawSegment) -> Ctl {
        let header = seg.header_image();
        Ctl { seg, header }
    }

    /// Writes the header back as it was when this handle was made (see
    /// `header`): a worker about to start opens the segment by name and
    /// validates it.
    pub(crate) fn restore_header(&self) {
        self.seg.restore_header(&self.header);
    }

    pub(crate) fn segment(&self) -> &RawSegment {
        &self.seg
    }

    /// Worker slots this segment has room for.
    pub(crate) fn slots(&self) -> usize {
        self.seg.len().saturating_sub(CTL_HEADER) / RECORD
    }

    fn word32(&self, at: usize) -> &AtomicU32 {
        assert!(at.is_multiple_of(4) && at + 4 <= self.seg.len(), "control word out of bounds");
        // Shared words are only accessed atomically (the crate's memory model).
        // SAFETY: in bounds (checked above), 4-aligned (the segment starts 64-aligned).
        unsafe { &*(self.seg.as_ptr().add(at) as *const AtomicU32) }
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        assert!(at.is_multiple_of(8) && at + 8 <= self.seg.len(), "control word out of bounds");
        // SAFETY: as in `word32`, 8-aligned.
        unsafe { &*(self.seg.as_ptr().add(at) as *const AtomicU64) }
    }

    pub(crate) fn seq(&self) -> &AtomicU32 {
        self.word32(SEQ)
    }

    pub(crate) fn waiting(&self) -> &AtomicU32 {
        self.word32(WAITING)
    }

    /// Slot `i`'s "items begun" counter (`None` if out of range).
    pub(crate) fn started(&self, slot: usize) -> Option<&AtomicU64> {
        (slot < self.slots()).then(|| self.word64(CTL_HEADER + RECORD * slot + STARTED))
    }

    pub(crate) fn pid(&self, slot: usize) -> Option<&AtomicU32> {
        (slot < self.slots()).then(|| self.word32(CTL_HEADER + RECORD * slot + PID))
    }

    /// Slot `i`'s "frames taken up" word (`None` if out of range).
    pub(crate) fn claimed(&self, slot: usize) -> Option<&AtomicU64> {
        (slot < self.slots()).then(|| self.word64(CTL_HEADER + RECORD * slot + CLAIMED))
    }

    /// Tells the manager something happened: bumps `seq`, and wakes the
    /// manager if it announced that it sleeps.
    pub(crate) fn bump(&self) {
        // SeqCst RMW, then a SeqCst load of `waiting`: pairs with the
        // manager's SeqCst store of `waiting` then SeqCst load of `seq` in
        // `Manager::sleep` (a Dekker handshake: either the manager sees
        // the new `seq` and does not sleep, or we see `waiting` and wake
        // it; the futex compares `seq` atomically with its enqueue). The
        // RMW is also a Release that publishes the result frame stored
        // before it (the ring's own Release store did already).
        self.seq().fetch_add(1, Ordering::SeqCst);
        if self.waiting().load(Ordering::SeqCst) != 0 {
            wake32(self.seq(), 1);
        }
    }
}

/// The worker takes up its `n`th task frame (`n` from 1): true if it is to
/// run it, false if the manager took it back ([`revoke`]), `Err` if the
/// word is out of step (a corrupted record).
pub(crate) fn claim(word: &AtomicU64, n: u64) -> Result<bool, String> {
    // AcqRel: pairs with the CAS in `revoke` (one RMW on one word: exactly
    // one of the two takes the value `n - 1`).
    match word.compare_exchange(n - 1, n, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(true),
        Err(v) if v == n | REVOKED => {
            // Release: pairs with the Acquire CAS in `revoke` of frame
            // `n + 1`, which needs this value.
            word.store(n, Ordering::Release);
            Ok(false)
        }
        Err(v) => Err(format!("task frame {n}: control record out of step ({v:#x})")),
    }
}

/// The manager takes back the `n`th task frame it sent to a worker, if the
/// worker has taken up every frame before it and not this one: then the
/// worker skips it. False if the worker took it up (or has not reached
/// the frame before it).
pub(crate) fn revoke(word: &AtomicU64, n: u64) -> bool {
    // AcqRel: pairs with the CAS and the store in `claim`.
    n > 0 && word.compare_exchange(n - 1, n | REVOKED, Ordering::AcqRel, Ordering::Acquire).is_ok()
}

/// A `claimed` word read by the manager: (the frames the worker has taken
/// up or skipped, the frame marked taken back and not yet skipped).
pub(crate) fn taken_up(claimed: u64) -> (u64, Option<u64>) {
    if claimed & REVOKED != 0 {
        let n = claimed & !REVOKED;
        (n.saturating_sub(1), Some(n))
    } else {
        (claimed, None)
    }
}

/// Whether a worker whose `claimed` word reads `claimed` has passed (taken
/// up or skipped) its `n`th frame.
pub(crate) fn passed(claimed: u64, n: u64) -> bool {
    taken_up(claimed).0 >= n
}
