//! The store every container is built on: a growable segment, a robust
//! writer lock, a seqlock for optimistic readers, an undo log that makes
//! every mutating operation crash-atomic, and the in-segment heap
//! (`heap.rs`) that the containers allocate from.
//!
//! ```text
//! offset   what
//!      0   common header (kind List/Dict/Manager, element fingerprint)
//!    128   Ctl: lock | seq | map_len | log_used | state words
//!   1024   undo log (LOG_CAP bytes): entries [off u64][len u64][old bytes, padded to 8]
//!  17408   heap (blocks of 32 << class bytes), up to map_len
//! ```
//!
//! **Commit protocol** (the undo-log / "intent record" scheme of
//! ARIES-style logging reduced to one writer): a writer holds the robust
//! lock, makes `seq` odd, and before it changes any byte that is live (a
//! state word, a slot of a live array, the link word of a block it frees)
//! appends `(offset, len, old bytes)` to the log and publishes the new
//! `log_used` (Release). Bytes that no committed state can reach (a block
//! allocated in this operation, slots past a list's length) are written
//! without logging. Commit is the one store `log_used = 0`; then `seq` is
//! made even again and the lock released. A writer killed anywhere leaves
//! the lock with a dead owner: the next locker takes it over
//! (`OwnerDied`), applies the log backwards (restoring every logged byte),
//! clears it, makes `seq` even and carries on, so container users never
//! see `OwnerDied`.
//!
//! **Readers** (a seqlock, as in the Linux kernel's `seqcount`): load
//! `seq` (Acquire), read with bounds-checked copies, fence (Acquire), load
//! `seq` again; equal and even means the read saw one committed state.
//! Otherwise retry; after a few tries (a writer died mid-write and left
//! `seq` odd, or a storm of writers), take the lock, which repairs.
//!
//! **Growth**: `map_len` is the number of bytes of the file that are
//! reserved (`posix_fallocate`) and may be mapped. A writer that needs room
//! extends the file first, then stores the new `map_len` (Release, before
//! its commit). Every operation loads `map_len` once and remaps when it is
//! past the local mapping. Old mappings stay mapped until the handle
//! drops (pointers taken during an operation stay valid), and every access
//! is checked against the length of the mapping it goes through, so
//! nothing is read past what is mapped. The file never shrinks: a process
//! that has not yet seen a shrink would fault (SIGBUS) touching the cut
//! pages; space is reused through the heap's free lists instead.

use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering, fence};

use memmap2::MmapRaw;

use super::ContainerError;
use super::group::{self, Group, Nested};
use crate::OpenError;
use crate::shm::copy;
use crate::shm::HEADER_SIZE;
use crate::shm::{Fingerprint, Kind, Options, Segment};
use crate::sync::raw_lock::{Acquired, Failed, RawLock, Wait};

/// Number of heap size classes: blocks of `32 << c` bytes, up to 1 TiB.
pub(crate) const NCLASS: usize = 36;
/// Root words the container type uses (list: array, len, cap; dict: ...).
pub(crate) const ROOT_WORDS: usize = 8;
/// State word indices: heap top, free-list heads, roots.
pub(crate) const S_TOP: usize = 0;
pub(crate) const S_FREE: usize = 1;
pub(crate) const S_ROOT: usize = S_FREE + NCLASS;
pub(crate) const STATE_WORDS: usize = S_ROOT + ROOT_WORDS;

/// Where the undo log lives and how large it is.
pub(crate) const LOG_OFF: u64 = 1024;
pub(crate) const LOG_CAP: u64 = 16 * 1024;
/// The first heap byte.
pub(crate) const HEAP_START: u64 = LOG_OFF + LOG_CAP;
/// A new container's file size.
pub(crate) const INITIAL_LEN: u64 = 32 * 1024;

/// Tries of an optimistic read before it falls back to the lock.
const OPTIMISTIC_TRIES: u32 = 64;

/// The control block after the common header. Atomics only.
#[repr(C)]
pub(crate) struct Ctl {
    pub(crate) lock: RawLock,
    /// Odd while a writer changes the data.
    pub(crate) seq: AtomicU64,
    /// Bytes of the file reserved and mappable (only grows).
    pub(crate) map_len: AtomicU64,
    /// Bytes of undo log in use; 0 = nothing to undo. Commit stores 0.
    pub(crate) log_used: AtomicU64,
    pub(crate) state: [AtomicU64; STATE_WORDS],
}

const CTL_OFF: u64 = HEADER_SIZE as u64;
const STATE_OFF: u64 = CTL_OFF + std::mem::offset_of!(Ctl, state) as u64;
const STATE_END: u64 = STATE_OFF + 8 * STATE_WORDS as u64;
const _: () = assert!(STATE_END <= LOG_OFF);
const _: () = assert!(HEAP_START.is_multiple_of(32) && INITIAL_LEN > HEAP_START);

/// Why a read or a step of an operation failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// An offset or length read from shm was out of bounds or inconsistent:
    /// a racing writer (retry) or corruption (error under the lock).
    Torn(&'static str),
    /// A real error to report.
    Err(ContainerError),
}

impl From<ContainerError> for Fail {
    fn from(e: ContainerError) -> Self {
        Fail::Err(e)
    }
}

pub(crate) type R<T> = Result<T, Fail>;

/// One mapping of the segment: where it is and how long.
#[derive(Debug)]
pub(crate) struct View {
    base: *mut u8,
    len: u64,
    /// For a reader beside an open transaction: the undo log's entries
    /// (offset, old bytes), laid over every read so it sees the state
    /// before the transaction. Null in a store's own views.
    undo: *const Vec<(u64, Vec<u8>)>,
}

// SAFETY: a View is a (pointer, length) pair describing a process-wide shared mapping kept alive by its Store;
// every access through it goes through the bounds-checked copy primitives.
unsafe impl Send for View {}
// SAFETY: as above.
unsafe impl Sync for View {}

impl View {
    /// The pointer for `len` bytes at `off`, if inside the mapping.
    #[inline]
    fn at(&self, off: u64, len: u64) -> Option<*mut u8> {
        let end = off.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: off + len <= self.len, inside the mapping (whose length fits in isize).
        Some(unsafe { self.base.add(off as usize) })
    }

    /// Reads the u64 at `off` (8-aligned, inside the mapping).
    #[inline]
    pub(crate) fn u64(&self, off: u64) -> R<u64> {
        if !off.is_multiple_of(8) {
            return Err(Fail::Torn("misaligned word"));
        }
        let p = self.at(off, 8).ok_or(Fail::Torn("word out of bounds"))?;
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); memory model: a racing write gives a
        // garbage value, never UB.
        let w = unsafe { copy::read(p as *const u64) };
        if self.undo.is_null() {
            return Ok(w);
        }
        let mut b = w.to_ne_bytes();
        self.patch(off, &mut b);
        Ok(u64::from_ne_bytes(b))
    }

    /// Root word `i` of the container (a state word, read through the view
    /// so a reader beside a transaction sees its value before it).
    #[inline]
    pub(crate) fn root(&self, i: usize) -> R<u64> {
        self.u64(STATE_OFF + 8 * (S_ROOT + i) as u64)
    }

    /// Lays the old bytes of the undo log over `out` (read from `off`):
    /// the oldest entry for a byte wins (it holds the state before).
    #[cold]
    fn patch(&self, off: u64, out: &mut [u8]) {
        // SAFETY: a non-null `undo` points at the overlay that the reader building this View keeps alive for
        // as long as the View (both are locals of `Store::read_beside`).
        let ov = unsafe { &*self.undo };
        let end = off + out.len() as u64;
        for (eo, data) in ov.iter().rev() {
            let ee = eo.saturating_add(data.len() as u64);
            if *eo < end && ee > off {
                let (s, e) = (off.max(*eo), end.min(ee));
                out[(s - off) as usize..(e - off) as usize].copy_from_slice(&data[(s - eo) as usize..(e - eo) as usize]);
            }
        }
    }

    /// Copies `out.len()` bytes at `off` into `out`.
    #[inline]
    pub(crate) fn bytes(&self, off: u64, out: &mut [u8]) -> R<()> {
        let p = self.at(off, out.len() as u64).ok_or(Fail::Torn("bytes out of bounds"))?;
        // SAFETY: the range is inside the mapping (checked above); sanctioned copy primitive.
        unsafe { copy::copy_from_shared(p, out) };
        if !self.undo.is_null() {
            self.patch(off, out);
        }
        Ok(())
    }

    /// `len` bytes at `off` into a new vector (length checked against the
    /// mapping before allocating).
    pub(crate) fn vec(&self, off: u64, len: u64) -> R<Vec<u8>> {
        let p = self.at(off, len).ok_or(Fail::Torn("bytes out of bounds"))?;
        let mut v = Vec::with_capacity(len as usize);
        // SAFETY: the range is inside the mapping; `v` has `len` bytes of spare capacity, all initialised by
        // the copy before set_len.
        unsafe {
            copy::copy_from_shared_uninit(p, &mut v.spare_capacity_mut()[..len as usize]);
            v.set_len(len as usize);
        }
        if !self.undo.is_null() {
            self.patch(off, &mut v);
        }
        Ok(v)
    }

    fn put(&self, off: u64, src: &[u8]) -> R<()> {
        let p = self.at(off, src.len() as u64).ok_or(Fail::Torn("write out of bounds"))?;
        // SAFETY: inside the mapping; the caller holds the writer lock (the protocol that lets it write).
        unsafe { copy::copy_to_shared(src, p) };
        Ok(())
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// A mapping this process made after the first one, with its view.
struct Extra {
    _map: MmapRaw,
    view: View,
}

/// A container's segment as seen by this process.
pub(crate) struct Store {
    seg: Segment,
    /// The first mapping's view (boxed: `cur` may point at it).
    _first: Box<View>,
    /// Later, larger mappings; never unmapped before the store drops.
    /// Boxed so a `View` keeps its address when the vector reallocates.
    #[allow(clippy::vec_box)]
    extra: StdMutex<Vec<Box<Extra>>>,
    /// The current (largest) view: `first` or one in `extra`.
    cur: AtomicPtr<View>,
    /// Which container this is, for this thread's open groups and
    /// operations (a hash of the segment name: every handle agrees).
    id: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("name", &self.seg.name()).field("mapped", &self.view().len).finish()
    }
}

/// Who owns a container created through a Manager (the Manager creator).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub(crate) pid: u32,
    pub(crate) start: u64,
}

impl Store {
    fn from_segment(seg: Segment) -> Store {
        let first = Box::new(View { base: seg.base(), len: seg.mapped_len() as u64, undo: std::ptr::null() });
        let cur = AtomicPtr::new(&*first as *const View as *mut View);
        let id = crate::shm::fnv1a(seg.name().as_bytes());
        Store { seg, _first: first, extra: StdMutex::new(Vec::new()), cur, id }
    }

    /// Creates a container segment. `init_root` writes the root words.
    pub(crate) fn create(
        name: &str,
        opts: &Options,
        kind: Kind,
        fp: &Fingerprint,
        owner: Option<Owner>,
        init_root: &[u64],
    ) -> Result<Store, OpenError> {
        let mut seg = Segment::create(name, opts, kind, fp, 0, INITIAL_LEN)?;
        if let Some(o) = owner {
            seg.hand_ownership_to(o.pid, o.start);
        }
        let store = Store::from_segment(seg);
        let ctl = store.ctl();
        ctl.map_len.store(INITIAL_LEN, Ordering::Relaxed);
        ctl.state[S_TOP].store(HEAP_START, Ordering::Relaxed);
        for (i, w) in init_root.iter().enumerate().take(ROOT_WORDS) {
            ctl.state[S_ROOT + i].store(*w, Ordering::Relaxed);
        }
        // Release (in publish) pairs with the opener's Acquire READY check.
        store.seg.header().publish();
        Ok(store)
    }

    /// Opens a container segment, checking kind and element type.
    pub(crate) fn open(name: &str, opts: &Options, kind: Kind, fp: &Fingerprint) -> Result<Store, OpenError> {
        let (seg, fields) = Segment::open(name, opts, kind, fp)?;
        if fields.total_len != INITIAL_LEN {
            return Err(OpenError::Corrupted {
                name: name.to_owned(),
                reason: format!("header says {} bytes at creation, containers start with {INITIAL_LEN}", fields.total_len),
            });
        }
        if (seg.mapped_len() as u64) < INITIAL_LEN {
            return Err(OpenError::Truncated {
                name: name.to_owned(),
                expected: INITIAL_LEN,
                actual: seg.mapped_len() as u64,
            });
        }
        Ok(Store::from_segment(seg))
    }

    pub(crate) fn name(&self) -> &str {
        self.seg.name()
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    #[inline]
    pub(crate) fn ctl(&self) -> &Ctl {
        // SAFETY: the first mapping is >= INITIAL_LEN bytes (checked at create/open) and page-aligned; Ctl is
        // atomics only, so a shared reference is sound while other processes write to it.
        unsafe { &*(self.seg.base().add(HEADER_SIZE) as *const Ctl) }
    }

    /// The current view, remapped first if the segment grew (one atomic
    /// load of `map_len` on the fast path).
    #[inline]
    pub(crate) fn view(&self) -> &View {
        // Acquire: pairs with the Release store in `remap`, so the View's fields are visible.
        // SAFETY: `cur` always points at a View owned by this store (`first` or a boxed Extra, never freed
        // before the store drops).
        let v = unsafe { &*self.cur.load(Ordering::Acquire) };
        // Acquire: pairs with the Release store of map_len in `Txn::grow` (after the file was extended).
        let want = self.ctl().map_len.load(Ordering::Acquire);
        if want > v.len { self.remap(want).unwrap_or(v) } else { v }
    }

    /// Maps the file again, at its current size (at most what the file
    /// holds: `map_len` is untrusted).
    #[cold]
    fn remap(&self, want: u64) -> Option<&View> {
        let mut extra = self.extra.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: as in `view`.
        let cur = unsafe { &*self.cur.load(Ordering::Acquire) };
        if cur.len >= want {
            return Some(cur);
        }
        let size = crate::sys::shm::fstat_file(self.seg.file()).ok()?;
        let len = want.min(size);
        if len <= cur.len || len > isize::MAX as u64 / 2 {
            return None;
        }
        let map = crate::shm::map_file(self.seg.name(), self.seg.file(), len).ok()?;
        let view = View { base: map.as_mut_ptr(), len, undo: std::ptr::null() };
        let boxed = Box::new(Extra { _map: map, view });
        let p = &boxed.view as *const View as *mut View;
        extra.push(boxed);
        // Release: pairs with the Acquire loads in `view`.
        self.cur.store(p, Ordering::Release);
        // SAFETY: p points into the box just pushed, which lives as long as the store.
        Some(unsafe { &*p })
    }

    /// Runs an optimistic read; falls back to the lock after a few torn
    /// tries. `f` may run several times and must not have side effects.
    ///
    /// While a writer is inside a transaction (`seq` odd: an operation, a
    /// group, or a writer that died), the read goes beside it: the undo
    /// log's old bytes are laid over what it reads, so it sees the state
    /// before the transaction without waiting. The writer publishes each
    /// entry (Release store of `log_used`, then a Release fence) before it
    /// changes the bytes; a reader that saw a changed byte therefore sees
    /// a `log_used` at least that far after its Acquire fence, and it
    /// accepts its read only if `seq` and `log_used` are what they were
    /// when it copied the log. An operation undone inside a group moves
    /// `seq` on (odd to odd), so a log cut and rewritten is noticed.
    pub(crate) fn read<T>(&self, f: impl Fn(&View) -> R<T>) -> Result<T, ContainerError> {
        let ctl = self.ctl();
        for i in 0..OPTIMISTIC_TRIES {
            // Acquire: pairs with the Release store that makes seq even at commit, so the committed data is
            // visible to the reads below.
            let s1 = ctl.seq.load(Ordering::Acquire);
            let (r, used) = if s1 & 1 == 1 {
                if ctl.lock.is_owned_by_me() {
                    // This thread's own open group: read its current state.
                    break;
                }
                match self.read_beside(&f) {
                    Some(x) => x,
                    None => {
                        crate::wait::spin::backoff(i.min(8));
                        continue;
                    }
                }
            } else {
                (f(self.view()), 0)
            };
            // Acquire: pairs with the writer's Release fence after it made seq odd (and after each log entry):
            // if our reads saw any byte written after that, the loads below see the odd seq (the longer log).
            fence(Ordering::Acquire);
            if ctl.seq.load(Ordering::Relaxed) == s1 && (s1 & 1 == 0 || ctl.log_used.load(Ordering::Relaxed) == used) {
                match r {
                    Ok(v) => return Ok(v),
                    Err(Fail::Err(e)) => return Err(e),
                    // Stable but inconsistent: corruption, or a view older than the data; settle it under the lock.
                    Err(Fail::Torn(_)) => break,
                }
            }
            crate::wait::spin::backoff(i.min(8));
        }
        self.locked(|v| f(v))
    }

    /// Runs `f` over the state before the open transaction (see `read`);
    /// returns its result and the log length it used, or None if the log
    /// could not be read as it stands.
    #[cold]
    fn read_beside<T>(&self, f: &impl Fn(&View) -> R<T>) -> Option<(R<T>, u64)> {
        let ctl = self.ctl();
        // Acquire: pairs with the Release store of log_used in `append_entry`: the entries are in place.
        let used = ctl.log_used.load(Ordering::Acquire);
        if used > LOG_CAP {
            return None;
        }
        let v = self.view();
        let mut ov = Vec::new();
        for (_, off, word, data) in parse_log(v, used, 0) {
            let len = word & !SPILLED;
            let old = if word & SPILLED != 0 { spilled(v, data, len) } else { v.vec(data, len) };
            ov.push((off, old.ok()?));
        }
        let tmp = View { base: v.base, len: v.len, undo: &ov };
        Some((f(&tmp), used))
    }

    /// Runs `f` under the lock (repairing first if needed), without a
    /// transaction: a consistent read.
    fn locked<T>(&self, f: impl FnOnce(&View) -> R<T>) -> Result<T, ContainerError> {
        let held = self.acquire()?;
        let r = f(self.view());
        if held {
            self.ctl().lock.unlock();
        }
        r.map_err(|e| self.fail_to_error(e))
    }

    pub(crate) fn fail_to_error(&self, e: Fail) -> ContainerError {
        match e {
            Fail::Err(e) => e,
            Fail::Torn(reason) => ContainerError::Corrupted { name: self.name().to_owned(), reason },
        }
    }

    /// Takes the lock unless this thread holds it already (inside
    /// `with_lock`); repairs after a dead writer. Returns whether it took it.
    fn acquire(&self) -> Result<bool, ContainerError> {
        let ctl = self.ctl();
        if ctl.lock.is_owned_by_me() {
            return Ok(false);
        }
        match ctl.lock.lock(Wait::Forever) {
            Ok(Acquired::Clean) => {
                if ctl.log_used.load(Ordering::Relaxed) != 0 || ctl.seq.load(Ordering::Relaxed) & 1 == 1 {
                    self.recover();
                }
            }
            Ok(Acquired::OwnerDied) => {
                self.recover();
                ctl.lock.make_consistent();
            }
            Err(Failed::NotRecoverable) => {
                return Err(ContainerError::Corrupted { name: self.name().to_owned(), reason: "lock word unusable" });
            }
            // Wait::Forever neither gives up nor times out; an error rather than a panic all the same.
            Err(Failed::WouldBlock | Failed::TimedOut) => {
                return Err(ContainerError::Io("the container's lock wait ended without the lock".into()));
            }
        }
        Ok(true)
    }

    /// Runs `f` as one transaction (a group): the lock held throughout,
    /// `seq` odd once, every operation `f` runs on this container joins
    /// one undo log, and one commit store ends it. A crash anywhere inside
    /// leaves the container as before the group; a panic in `f`, a log
    /// that fills ([`ContainerError::TooLarge`]) or an undone operation
    /// that had written into space the group allocated rolls the whole
    /// group back. Nested calls on the same thread join the open group.
    pub(crate) fn with_lock<T>(&self, f: impl FnOnce() -> T) -> Result<T, ContainerError> {
        self.group(|| Ok(f()))
    }

    /// As [`Self::with_lock`], and an `Err` from `f` rolls the whole group
    /// back too (when this call opened it).
    pub(crate) fn group<T>(&self, f: impl FnOnce() -> Result<T, ContainerError>) -> Result<T, ContainerError> {
        let held = self.acquire()?;
        if !held {
            // Already inside a group (joined) or an operation (whose writes are refused) on this thread.
            return f();
        }
        let ctl = self.ctl();
        let s = ctl.seq.load(Ordering::Relaxed);
        ctl.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Release fence: pairs with the reader's Acquire fence before its second seq load, as in `write`.
        fence(Ordering::Release);
        group::push_group(self.id, Group { seq: s.wrapping_add(1), ..Group::default() });
        /// Rolls the group back if `f` unwinds.
        struct Abort<'a>(&'a Store, bool);
        impl Drop for Abort<'_> {
            fn drop(&mut self) {
                if self.1 {
                    drop(group::pop_group(self.0.id));
                    self.0.recover();
                    self.0.ctl().lock.unlock();
                }
            }
        }
        let mut abort = Abort(self, true);
        let r = f();
        abort.1 = false;
        let g = match (group::pop_group(self.id), r) {
            (Some(g), Ok(r)) if g.doomed.is_none() => (g, r),
            (_, Err(e)) => {
                self.recover();
                ctl.lock.unlock();
                return Err(e);
            }
            (g, Ok(_)) => {
                self.recover();
                ctl.lock.unlock();
                return Err(g.and_then(|g| g.doomed).unwrap_or(ContainerError::Io("a group lost its state".into())));
            }
        };
        let (g, r) = g;
        let used = ctl.log_used.load(Ordering::Relaxed).min(LOG_CAP);
        let mut tx = Txn::new(self, self.view(), used, true, g.seq);
        tx.logged = g.logged;
        tx.freed = g.freed;
        match tx.flush_frees() {
            Ok(()) => {
                tx.commit();
                Ok(r)
            }
            Err(e) => {
                drop(tx); // rolls the whole group back
                Err(self.fail_to_error(e))
            }
        }
    }

    /// Rolls back an interrupted operation: applies the undo log backwards,
    /// clears it and makes `seq` even. Caller holds the lock.
    #[cold]
    pub(crate) fn recover(&self) {
        self.undo_from(0);
        let ctl = self.ctl();
        let s = ctl.seq.load(Ordering::Relaxed);
        if s & 1 == 1 {
            // Release: pairs with the readers' Acquire load of seq (the restored bytes come first).
            ctl.seq.store(s.wrapping_add(1), Ordering::Release);
        }
    }

    /// Applies the log entries at log positions `start..` backwards and
    /// cuts the log to `start`. Caller holds the lock.
    #[cold]
    fn undo_from(&self, start: u64) {
        let ctl = self.ctl();
        let v = self.view();
        let used = ctl.log_used.load(Ordering::Relaxed).min(LOG_CAP) & !7;
        for (_, off, word, data) in parse_log(v, used, start).into_iter().rev() {
            let len = word & !SPILLED;
            // Only state words and heap bytes are ever logged; anything else is hostile and skipped.
            let state = off >= STATE_OFF && off.saturating_add(len) <= STATE_END;
            if !(state || off >= HEAP_START) {
                continue;
            }
            let old = if word & SPILLED != 0 { spilled(v, data, len) } else { v.vec(data, len) };
            if let Ok(old) = old {
                let _ = v.put(off, &old);
            }
        }
        // Release: the restored bytes before the cut log (pairs with the Acquire of the lock takeover).
        ctl.log_used.store(start.min(used), Ordering::Release);
    }

    /// Runs one mutating operation as a transaction: all of it or (on an
    /// error, a panic in `f`, or a crash) none of it. Inside this thread's
    /// open group it joins the group; inside an operation of this thread
    /// (user code it calls back) it is refused.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> R<T>) -> Result<T, ContainerError> {
        let held = self.acquire()?;
        let ctl = self.ctl();
        let mut tx = if held {
            let s = ctl.seq.load(Ordering::Relaxed);
            ctl.seq.store(s.wrapping_add(1), Ordering::Relaxed);
            // Release fence: pairs with the reader's Acquire fence before its second seq load (a reader that
            // sees any byte we write below also sees seq odd).
            fence(Ordering::Release);
            // The one load of map_len for this operation (after taking the lock: the last writer's growth is
            // visible); `grow` refreshes it.
            Txn::new(self, self.view(), 0, true, s.wrapping_add(1))
        } else {
            match group::nested_write(self.id) {
                Nested::Refuse => return Err(ContainerError::ModifiedDuringOperation),
                Nested::Join(mut g) => {
                    let used = ctl.log_used.load(Ordering::Relaxed).min(LOG_CAP);
                    let mut tx = Txn::new(self, self.view(), used, false, g.seq);
                    tx.logged = g.logged;
                    tx.freed = std::mem::take(&mut g.freed);
                    tx.fresh = std::mem::take(&mut g.fresh);
                    g.ops += 1;
                    tx.op = g.ops;
                    tx.undo_to = Some((g.logged, tx.freed.len()));
                    tx.group = Some(g);
                    tx
                }
            }
        };
        group::push_op(self.id);
        tx.pushed = true;
        let r = f(&mut tx).and_then(|v| if tx.group.is_some() { Ok(v) } else { tx.flush_frees().map(|()| v) });
        match r {
            Ok(v) => {
                if tx.group.is_some() {
                    tx.done = true;
                } else {
                    tx.commit();
                }
                Ok(v)
            }
            Err(e) => {
                let e = self.fail_to_error(e);
                if let (Some(g), ContainerError::TooLarge { .. }) = (tx.group.as_mut(), &e) {
                    g.doomed.get_or_insert(e.clone());
                }
                drop(tx); // rolls back (this operation only, inside a group)
                Err(e)
            }
        }
    }
}

/// Marks a log entry whose old bytes were spilled to a heap blob (the
/// entry holds the blob's offset).
const SPILLED: u64 = 1 << 63;
/// Old bytes longer than this go to a heap blob rather than the log.
const SPILL_OVER: u64 = 1024;

/// The entries of the log's first `used` bytes that start at or after
/// `start`: (position, offset, length word, where the old bytes are).
/// Parsing stops at the first entry that does not fit.
fn parse_log(v: &View, used: u64, start: u64) -> Vec<(u64, u64, u64, u64)> {
    let used = used.min(LOG_CAP) & !7;
    let mut entries = Vec::new();
    let mut pos = 0;
    while pos + 16 <= used {
        let (Ok(off), Ok(word)) = (v.u64(LOG_OFF + pos), v.u64(LOG_OFF + pos + 8)) else { break };
        let stored = if word & SPILLED != 0 { 8 } else { word };
        match stored.checked_add(7).map(|l| l & !7) {
            Some(p) if p <= used - pos - 16 => {
                if pos >= start {
                    entries.push((pos, off, word, LOG_OFF + pos + 16));
                }
                pos += 16 + p;
            }
            _ => break,
        }
    }
    entries
}

/// The old bytes of a spilled entry: the blob named at `data`, checked.
fn spilled(v: &View, data: u64, len: u64) -> R<Vec<u8>> {
    let p = v.u64(data)?;
    let (_, cap) = super::heap::block(v, p)?;
    if v.u64(p)? != len || len > cap - 8 {
        return Err(Fail::Torn("spilled log entry"));
    }
    v.vec(p + 8, len)
}

/// A mutating operation in progress (holds the lock).
pub(crate) struct Txn<'a> {
    store: &'a Store,
    /// The mapping this operation uses (refreshed when it grows the segment).
    view: &'a View,
    /// Which state words are already in the log.
    logged: u64,
    /// Local copy of the log length (only we write it while we hold the lock).
    used: u64,
    done: bool,
    held: bool,
    /// The odd `seq` value while this transaction is open.
    seq: u64,
    /// Blocks freed by this operation, put on the free lists at commit.
    freed: Vec<u64>,
    /// Payload ranges of blocks this transaction (its group) allocated:
    /// start -> (end, operation number). No committed state reaches them,
    /// so writes there need no log.
    fresh: BTreeMap<u64, (u64, u64)>,
    /// This operation's number in its group (0 outside a group).
    op: u64,
    /// Log position where this operation started.
    start: u64,
    /// Inside a group: its state, and (logged, freed.len()) to restore if
    /// this operation alone is undone.
    group: Option<Box<Group>>,
    undo_to: Option<(u64, usize)>,
    /// This operation wrote unlogged into a block an earlier operation of
    /// its group allocated (undoing it alone would not undo that).
    wrote_earlier_fresh: bool,
    /// An entry of this thread's open operations was pushed for it.
    pushed: bool,
}

const _: () = assert!(STATE_WORDS <= 64);

/// Crash injection for the crash matrix (feature `test-hooks` only): the
/// process kills itself with SIGKILL at the N-th step of the mutating
/// operations it runs (each logged write, unlogged write, state-word store
/// and the commit store count as steps, before and after).
#[cfg(feature = "test-hooks")]
pub(crate) mod crash {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTDOWN: AtomicU64 = AtomicU64::new(0);

    /// Kill this process at the `n`-th step from now (0: never).
    pub(crate) fn after(n: u64) {
        COUNTDOWN.store(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn step() {
        let c = COUNTDOWN.load(Ordering::Relaxed);
        if c != 0 {
            COUNTDOWN.store(c - 1, Ordering::Relaxed);
            if c == 1 {
                crate::sys::thread::kill_self();
            }
        }
    }
}

#[inline(always)]
fn crash_point() {
    #[cfg(feature = "test-hooks")]
    crash::step();
}

impl<'a> Txn<'a> {
    fn new(store: &'a Store, view: &'a View, used: u64, held: bool, seq: u64) -> Txn<'a> {
        Txn {
            store,
            view,
            logged: 0,
            used,
            done: false,
            held,
            seq,
            freed: Vec::new(),
            fresh: BTreeMap::new(),
            op: 0,
            start: used,
            group: None,
            undo_to: None,
            wrote_earlier_fresh: false,
            pushed: false,
        }
    }

    /// Whether this operation runs inside a group.
    pub(crate) fn in_group(&self) -> bool {
        self.group.is_some()
    }

    /// Records a block this transaction allocated (payload `p..end`).
    pub(crate) fn note_fresh(&mut self, p: u64, end: u64) {
        self.fresh.insert(p, (end, self.op));
    }

    /// The fresh-block record starting at payload `p`, if any.
    pub(crate) fn fresh_mut(&mut self, p: u64) -> Option<&mut (u64, u64)> {
        self.fresh.get_mut(&p)
    }

    /// Whether `off..off+len` lies in a block this transaction allocated.
    fn is_fresh(&mut self, off: u64, len: u64) -> bool {
        let Some(end) = off.checked_add(len) else { return false };
        match self.fresh.range(..=off).next_back() {
            Some((_, &(e, op))) if end <= e => {
                if op != self.op {
                    self.wrote_earlier_fresh = true;
                }
                true
            }
            _ => false,
        }
    }

    #[inline]
    pub(crate) fn view(&self) -> &'a View {
        self.view
    }

    /// A state word.
    #[inline]
    pub(crate) fn state(&self, i: usize) -> u64 {
        self.store.ctl().state[i].load(Ordering::Relaxed)
    }

    /// Sets a state word (logged the first time in this operation).
    #[inline]
    pub(crate) fn set_state(&mut self, i: usize, v: u64) -> R<()> {
        if self.logged & (1 << i) == 0 {
            self.log(STATE_OFF + 8 * i as u64, 8)?;
            self.logged |= 1 << i;
        }
        crash_point();
        self.store.ctl().state[i].store(v, Ordering::Relaxed);
        crash_point();
        Ok(())
    }

    pub(crate) fn defer_free(&mut self, p: u64) {
        self.freed.push(p);
    }

    pub(crate) fn take_deferred(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.freed)
    }

    pub(crate) fn root(&self, i: usize) -> u64 {
        self.state(S_ROOT + i)
    }

    pub(crate) fn set_root(&mut self, i: usize, v: u64) -> R<()> {
        self.set_state(S_ROOT + i, v)
    }

    /// Records the current `len` bytes at `off` in the undo log (bytes
    /// longer than `SPILL_OVER` in a heap blob the entry names).
    fn log(&mut self, off: u64, len: u64) -> R<()> {
        if len > SPILL_OVER {
            return self.log_spilled(off, len);
        }
        let padded = (len + 7) & !7;
        let n = 16 + padded as usize;
        let mut small = [0u8; 80];
        let mut big = Vec::new();
        let entry: &mut [u8] = if n <= small.len() {
            &mut small[..n]
        } else {
            big.resize(n, 0);
            &mut big
        };
        entry[..8].copy_from_slice(&off.to_ne_bytes());
        entry[8..16].copy_from_slice(&len.to_ne_bytes());
        self.view.bytes(off, &mut entry[16..16 + len as usize])?;
        self.append_entry(entry)
    }

    /// Logs `len` bytes at `off` through a fresh heap blob (freed at
    /// commit; a rollback restores from it before it restores the heap
    /// state that allocated it).
    fn log_spilled(&mut self, off: u64, len: u64) -> R<()> {
        let old = self.view.vec(off, len)?;
        let p = self.put_blob(&old)?;
        self.defer_free(p);
        let mut entry = [0u8; 24];
        entry[..8].copy_from_slice(&off.to_ne_bytes());
        entry[8..16].copy_from_slice(&(len | SPILLED).to_ne_bytes());
        entry[16..].copy_from_slice(&p.to_ne_bytes());
        self.append_entry(&entry)
    }

    fn append_entry(&mut self, entry: &[u8]) -> R<()> {
        let n = entry.len() as u64;
        if self.used + n > LOG_CAP {
            return Err(Fail::Err(ContainerError::TooLarge { what: "one operation's undo log", limit: LOG_CAP }));
        }
        crash_point();
        self.view.put(LOG_OFF + self.used, entry)?;
        crash_point();
        self.used += n;
        // Release: pairs with the Acquire of the lock takeover in the next locker's recovery: the entry's
        // bytes are in place before the log says they are.
        self.store.ctl().log_used.store(self.used, Ordering::Release);
        // The new log length must reach memory before the logged bytes change: a store-store order (free on
        // x86's TSO; `dmb ish` on aarch64). A crash is observed by the next locker through the lock word, so
        // hardware store order is what matters here.
        fence(Ordering::Release);
        Ok(())
    }

    /// Writes live bytes (logged first).
    pub(crate) fn write(&mut self, off: u64, src: &[u8]) -> R<()> {
        if self.is_fresh(off, src.len() as u64) {
            return self.write_fresh(off, src);
        }
        self.log(off, src.len() as u64)?;
        crash_point();
        self.put_torn(off, src)?;
        crash_point();
        Ok(())
    }

    /// Puts `src` at `off`; with crash injection, a death may land after
    /// only the first half of the bytes (a torn multi-word write).
    fn put_torn(&self, off: u64, src: &[u8]) -> R<()> {
        let half = src.len() / 2;
        if half >= 8 {
            self.view.put(off, &src[..half])?;
            crash_point();
            return self.view.put(off + half as u64, &src[half..]);
        }
        self.view.put(off, src)
    }

    /// Writes a live u64 (logged first).
    pub(crate) fn write_u64(&mut self, off: u64, w: u64) -> R<()> {
        self.write(off, &w.to_ne_bytes())
    }

    /// Writes bytes no committed state can reach (fresh blocks, slots past
    /// the length): no log needed.
    pub(crate) fn write_fresh(&mut self, off: u64, src: &[u8]) -> R<()> {
        crash_point();
        self.put_torn(off, src)
    }

    /// Makes the file at least `needed` bytes (doubling), reserved.
    pub(crate) fn grow(&mut self, needed: u64) -> R<()> {
        let ctl = self.store.ctl();
        let have = ctl.map_len.load(Ordering::Relaxed).max(self.view.len);
        if needed <= have {
            return Ok(());
        }
        let new_len = needed.max(have.saturating_mul(2)).checked_next_multiple_of(64 * 1024).ok_or(
            Fail::Err(ContainerError::NoSpace { name: self.store.name().to_owned(), bytes: needed }),
        )?;
        if new_len > isize::MAX as u64 / 2 {
            return Err(Fail::Err(ContainerError::NoSpace { name: self.store.name().to_owned(), bytes: new_len }));
        }
        self.store.segment().extend(have, new_len).map_err(|e| match e {
            OpenError::NoSpace { name, bytes } => Fail::Err(ContainerError::NoSpace { name, bytes }),
            e => Fail::Err(ContainerError::Io(e.to_string())),
        })?;
        crash_point();
        // Release: pairs with the Acquire load in `Store::view`: the file is extended before anyone maps it.
        ctl.map_len.store(new_len, Ordering::Release);
        crash_point();
        self.view = self.store.view();
        if self.view.len < new_len {
            return Err(Fail::Err(ContainerError::Io("could not map the grown segment".into())));
        }
        Ok(())
    }

    fn commit(&mut self) {
        let ctl = self.store.ctl();
        crash_point();
        // The commit point. Release: everything written before is visible with it.
        ctl.log_used.store(0, Ordering::Release);
        crash_point();
        // Release: pairs with the readers' Acquire load of seq.
        ctl.seq.store(self.seq.wrapping_add(1), Ordering::Release);
        self.done = true;
        if self.held {
            ctl.lock.unlock();
        }
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        let id = self.store.id;
        if self.pushed {
            group::pop_op(id);
        }
        if let Some(mut g) = self.group.take() {
            if !self.done {
                // Undo this operation only; the group goes on (or is doomed if that is not enough).
                self.store.undo_from(self.start);
                if let Some((logged, freed)) = self.undo_to {
                    self.logged = logged;
                    self.freed.truncate(freed);
                }
                let op = self.op;
                self.fresh.retain(|_, (_, o)| *o != op);
                if self.wrote_earlier_fresh {
                    g.doomed.get_or_insert(ContainerError::Io(
                        "an operation undone inside a group had written to space the group allocated; \
                         the whole group is rolled back"
                            .into(),
                    ));
                }
                // seq only moves forward (stays odd): a reader that copied the log beside it starts over.
                g.seq = self.seq.wrapping_add(2);
                // Release: pairs with the readers' Acquire load of seq.
                self.store.ctl().seq.store(g.seq, Ordering::Release);
            }
            g.logged = self.logged;
            g.freed = std::mem::take(&mut self.freed);
            g.fresh = std::mem::take(&mut self.fresh);
            group::give_back(id, g);
            return;
        }
        if !self.done {
            // An error or a panic inside the operation: undo it here, as a
            // survivor would after a crash.
            self.store.recover();
            if self.held {
                self.store.ctl().lock.unlock();
            }
        }
    }
}
