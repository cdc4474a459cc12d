//! What travels between the pool and its workers, and the control segment
//! they share.
//!
//! ## The control segment
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
//!
//! ## Frames (in per-worker [`ByteQueue`](crate::queue::ByteQueue)s)
//!
//! A task frame (pool to worker), little-endian:
//! `job u64 | first u64 | count u32 | flags u32 | id_len u32 | id | count × (len u32 | argument)`;
//! flag bit 0 marks the last frame of a chunk (one "task" for
//! `maxtasksperchild`). Items are length-prefixed so the pool can cut a
//! frame when a worker dies and hand the unfinished items to another.
//!
//! A result frame (worker to pool): `job u64 | first u64 | count u32 |
//! count × (status u8 | len u32 | payload)`. A worker answers the items of
//! its task frames in order, one or more result frames per task frame.
//!
//! Everything read from a frame is untrusted: every length is checked.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::RawSegment;
use crate::wait::futex::wake32;

/// Ring bytes of each task and result queue.
pub(crate) const RING_BYTES: u64 = 1 << 20;
/// The largest frame in a ring.
pub(crate) const MAX_FRAME: usize = 256 * 1024;
/// The largest encoded argument or result of one item (bytes of its
/// [`Handoff`](crate::process::Handoff) encoding); a larger one fails that
/// item with [`TaskError::TooLarge`](super::TaskError::TooLarge).
///
/// ```
/// assert_eq!(shmproc::pool::MAX_ITEM_BYTES, 192 * 1024);
/// ```
pub const MAX_ITEM_BYTES: usize = 192 * 1024;
/// The longest task id accepted (ids are module paths).
pub(crate) const MAX_ID: usize = 4096;

const CTL_HEADER: usize = 64;
const RECORD: usize = 64;
const SEQ: usize = 0;
const WAITING: usize = 4;
const STARTED: usize = 0;
const PID: usize = 8;

/// Flag: the last frame of a chunk.
pub(crate) const END_OF_CHUNK: u32 = 1;

const TASK_HEADER: usize = 28;
#[cfg(test)]
const RESULT_HEADER: usize = 20;

/// Bytes of a control segment for `slots` workers.
pub(crate) fn ctl_len(slots: usize) -> u64 {
    (CTL_HEADER + RECORD * slots) as u64
}

/// The shared words of a control segment, bounds-checked once.
#[derive(Debug, Clone)]
pub(crate) struct Ctl {
    seg: RawSegment,
}

impl Ctl {
    pub(crate) fn new(seg: RawSegment) -> Ctl {
        Ctl { seg }
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
        // SAFETY: in bounds (checked above), 4-aligned (the segment's bytes
        // start 64-aligned); shared words are only accessed atomically (the
        // crate's memory model).
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

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn set_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Reads `n` bytes from the front of `input` (None if it is shorter).
fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fn get_u32(input: &mut &[u8]) -> Option<u32> {
    take(input, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

fn get_u64(input: &mut &[u8]) -> Option<u64> {
    take(input, 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

fn get_u8(input: &mut &[u8]) -> Option<u8> {
    take(input, 1).map(|b| b[0])
}

/// A task frame under construction (in the submitting thread).
#[derive(Debug)]
pub(crate) struct TaskFrame {
    pub(crate) job: u64,
    pub(crate) first: u64,
    pub(crate) count: u32,
    pub(crate) bytes: Vec<u8>,
}

impl TaskFrame {
    pub(crate) fn new(job: u64, first: u64, id: &[u8]) -> TaskFrame {
        let mut bytes = Vec::with_capacity(TASK_HEADER + id.len() + 64);
        put_u64(&mut bytes, job);
        put_u64(&mut bytes, first);
        put_u32(&mut bytes, 0);
        put_u32(&mut bytes, 0);
        put_u32(&mut bytes, id.len() as u32);
        bytes.extend_from_slice(id);
        TaskFrame { job, first, count: 0, bytes }
    }

    /// Appends one item whose encoding `encode` writes. `Err(len)` (and the
    /// frame unchanged) if the item alone is larger than
    /// [`MAX_ITEM_BYTES`]; `Ok(false)` (frame unchanged) if it does not fit
    /// in this frame any more: finish it and put the item in a new one.
    pub(crate) fn push(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<bool, usize> {
        let mark = self.bytes.len();
        put_u32(&mut self.bytes, 0);
        encode(&mut self.bytes);
        let len = self.bytes.len() - mark - 4;
        if len > MAX_ITEM_BYTES {
            self.bytes.truncate(mark);
            return Err(len);
        }
        if self.bytes.len() > MAX_FRAME && self.count > 0 {
            self.bytes.truncate(mark);
            return Ok(false);
        }
        set_u32(&mut self.bytes, mark, len as u32);
        self.count += 1;
        Ok(true)
    }

    /// Appends an already encoded item (one that fitted in a frame before).
    pub(crate) fn push_raw(&mut self, item: &[u8]) -> bool {
        if self.count > 0 && self.bytes.len() + 4 + item.len() > MAX_FRAME {
            return false;
        }
        put_u32(&mut self.bytes, item.len() as u32);
        self.bytes.extend_from_slice(item);
        self.count += 1;
        true
    }

    /// Seals the header (count, flags).
    pub(crate) fn finish(mut self, end_of_chunk: bool) -> TaskFrame {
        set_u32(&mut self.bytes, 16, self.count);
        set_u32(&mut self.bytes, 20, if end_of_chunk { END_OF_CHUNK } else { 0 });
        self
    }
}

/// A parsed task frame header; `items` walks the arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskHeader<'a> {
    pub(crate) job: u64,
    pub(crate) first: u64,
    pub(crate) count: u32,
    pub(crate) flags: u32,
    pub(crate) id: &'a [u8],
    pub(crate) items: &'a [u8],
}

pub(crate) fn parse_task(mut frame: &[u8]) -> Option<TaskHeader<'_>> {
    let job = get_u64(&mut frame)?;
    let first = get_u64(&mut frame)?;
    let count = get_u32(&mut frame)?;
    let flags = get_u32(&mut frame)?;
    let id_len = get_u32(&mut frame)? as usize;
    if id_len > MAX_ID {
        return None;
    }
    let id = take(&mut frame, id_len)?;
    Some(TaskHeader { job, first, count, flags, id, items: frame })
}

/// The next length-prefixed item of a task frame (None: malformed or end).
pub(crate) fn next_item<'a>(items: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = get_u32(items)? as usize;
    take(items, len)
}

/// A result frame under construction (in a worker): results are written
/// straight into it.
#[derive(Debug, Default)]
pub(crate) struct ResultFrame {
    pub(crate) bytes: Vec<u8>,
    count: u32,
}

impl ResultFrame {
    pub(crate) fn start(&mut self, job: u64, first: u64) {
        self.bytes.clear();
        put_u64(&mut self.bytes, job);
        put_u64(&mut self.bytes, first);
        put_u32(&mut self.bytes, 0);
        self.count = 0;
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Where the next item starts; pass it to `seal_item` after writing
    /// the payload with `payload_buf`.
    pub(crate) fn begin_item(&mut self) -> usize {
        let mark = self.bytes.len();
        self.bytes.push(0);
        put_u32(&mut self.bytes, 0);
        mark
    }

    /// Finishes the item begun at `mark` with `status`; a payload larger
    /// than [`MAX_ITEM_BYTES`] is replaced by a `Refused` message.
    pub(crate) fn seal_item(&mut self, mark: usize, status: u8, refused: u8) {
        let len = self.bytes.len() - mark - 5;
        if len > MAX_ITEM_BYTES {
            self.bytes.truncate(mark + 5);
            self.bytes[mark] = refused;
            self.bytes
                .extend_from_slice(format!("result of {len} bytes exceeds the pool's limit of {MAX_ITEM_BYTES} bytes").as_bytes());
        } else {
            self.bytes[mark] = status;
        }
        let len = (self.bytes.len() - mark - 5) as u32;
        set_u32(&mut self.bytes, mark + 1, len);
        self.count += 1;
    }

    /// Whether the frame is over the ring's frame limit.
    pub(crate) fn over(&self) -> bool {
        self.bytes.len() > MAX_FRAME
    }

    /// Seals the header; the bytes are ready to send.
    pub(crate) fn seal(&mut self) -> &[u8] {
        let count = self.count;
        set_u32(&mut self.bytes, 16, count);
        &self.bytes
    }

    /// Moves the last item (begun at `mark`) out of this frame into
    /// `spill`, so the frame can be sent without it.
    pub(crate) fn split_last(&mut self, mark: usize, spill: &mut Vec<u8>) {
        spill.clear();
        spill.extend_from_slice(&self.bytes[mark..]);
        self.bytes.truncate(mark);
        self.count -= 1;
    }

    /// Appends an item moved out with `split_last`.
    pub(crate) fn push_raw(&mut self, item: &[u8]) {
        self.bytes.extend_from_slice(item);
        self.count += 1;
    }
}

/// A parsed result frame header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResultHeader<'a> {
    pub(crate) job: u64,
    pub(crate) first: u64,
    pub(crate) count: u32,
    pub(crate) items: &'a [u8],
}

pub(crate) fn parse_result(mut frame: &[u8]) -> Option<ResultHeader<'_>> {
    let job = get_u64(&mut frame)?;
    let first = get_u64(&mut frame)?;
    let count = get_u32(&mut frame)?;
    Some(ResultHeader { job, first, count, items: frame })
}

/// The next result of a result frame: status byte and payload.
pub(crate) fn next_result<'a>(items: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let status = get_u8(items)?;
    let len = get_u32(items)? as usize;
    Some((status, take(items, len)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_frames_round_trip_and_reject_truncation() {
        let mut f = TaskFrame::new(7, 100, b"my::task");
        assert_eq!(f.push(|o| o.extend_from_slice(b"abc")), Ok(true));
        assert_eq!(f.push(|o| o.extend_from_slice(b"")), Ok(true));
        assert_eq!(f.push(|o| o.resize(o.len() + MAX_ITEM_BYTES + 1, 0)), Err(MAX_ITEM_BYTES + 1));
        let f = f.finish(true);
        let h = parse_task(&f.bytes).unwrap();
        assert_eq!((h.job, h.first, h.count, h.flags, h.id), (7, 100, 2, END_OF_CHUNK, &b"my::task"[..]));
        let mut items = h.items;
        assert_eq!(next_item(&mut items), Some(&b"abc"[..]));
        assert_eq!(next_item(&mut items), Some(&b""[..]));
        assert_eq!(next_item(&mut items), None);
        for cut in 0..f.bytes.len() {
            if let Some(h) = parse_task(&f.bytes[..cut]) {
                let mut items = h.items;
                while next_item(&mut items).is_some() {}
            }
        }
    }

    /// Frames come from another process: garbage of any length and content
    /// (lengths claiming more than is there included) parses to `None` or
    /// to slices inside the input, never a panic.
    #[test]
    fn garbage_frames_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..600usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Mostly small values, so lengths are often plausible.
                    if x.is_multiple_of(3) { (x >> 8) as u8 } else { (x % 8) as u8 }
                })
                .collect();
            if let Some(h) = parse_task(&bytes) {
                let mut items = h.items;
                for _ in 0..h.count.min(1000) {
                    if next_item(&mut items).is_none() {
                        break;
                    }
                }
            }
            if let Some(h) = parse_result(&bytes) {
                let mut items = h.items;
                for _ in 0..h.count.min(1000) {
                    if next_result(&mut items).is_none() {
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn result_frames_round_trip_and_replace_oversized_results() {
        let mut r = ResultFrame::default();
        r.start(3, 9);
        let m = r.begin_item();
        r.bytes.extend_from_slice(b"xy");
        r.seal_item(m, 0, 3);
        let m = r.begin_item();
        r.bytes.resize(r.bytes.len() + MAX_ITEM_BYTES + 1, 1);
        r.seal_item(m, 0, 3);
        let bytes = r.seal().to_vec();
        let h = parse_result(&bytes).unwrap();
        assert_eq!((h.job, h.first, h.count), (3, 9, 2));
        let mut items = h.items;
        assert_eq!(next_result(&mut items), Some((0, &b"xy"[..])));
        let (status, msg) = next_result(&mut items).unwrap();
        assert_eq!(status, 3);
        assert!(String::from_utf8_lossy(msg).contains("exceeds"));
        assert!(next_result(&mut &bytes[..bytes.len() - 1][RESULT_HEADER..]).is_some());
    }
}
