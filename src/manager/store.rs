//! The store every container is built on: a growable segment, a robust
//! writer lock, a seqlock for optimistic readers, an undo log that makes
//! every mutating operation crash-atomic, and the in-segment heap
//! (`heap.rs`) that the containers allocate from.
//!
//! ```text
//! offset   what
//!      0   common header (kind List/Dict/Manager, element fingerprint)
//!    128   Ctl: lock | seq | map_len | log_used | state words | layout | seed
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
//! past the local mapping: the file is mapped into an address range the
//! store holds (reserved 8 times larger, `PROT_NONE`), a growth mapping
//! only its new bytes after the old ones, so pages mapped before stay
//! mapped. Old mappings stay mapped until the handle drops (pointers
//! taken during an operation stay valid), and every access is checked
//! against the length of the view it goes through, so nothing is read
//! past what is mapped. The file never shrinks: a process
//! that has not yet seen a shrink would fault (SIGBUS) touching the cut
//! pages; space is reused through the heap's free lists instead.
//!
//! **Cost** (the speed targets of benches/manager.rs): an operation's
//! fixed cost is one CAS to lock and one swap to unlock, two loads to see
//! that nothing needs repair, the odd and even `seq` stores and the
//! commit store; an append or a new dict entry logs only the words a
//! committed state can reach (the length; a bucket's tag word and the
//! three count words as one log append, `write_word_and_roots`), and the
//! bytes it writes where no committed state reaches go unlogged. A dict
//! insert of inline types runs as a quick write (`write_quick`: no
//! transaction state at all; a new value is one unlogged word store, which
//! is itself the operation's commit point); a list append of an inline
//! element with room in its array is a quick write too (the element
//! unlogged past the length, the length logged and stored). The
//! heap finds a free block through a mask of its non-empty lists (one
//! load), and a dict resize moves buckets as whole words through ranges
//! checked once. A read is two `seq` loads around the
//! bounds-checked copies, with no lock and no allocation for inline
//! elements.

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};

use crate::sys::shm::AddressRange;

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
/// Bit `c` set: the free list of class `c` is not empty (so an allocation
/// finds its list with one load, not a scan of the heads).
pub(crate) const S_FREE_MASK: usize = S_ROOT + ROOT_WORDS;
pub(crate) const STATE_WORDS: usize = S_FREE_MASK + 1;

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
    /// `STORE_LAYOUT`, written at creation and checked on open.
    pub(crate) layout: AtomicU64,
    /// A random key chosen at creation (the dict's hash function is keyed
    /// with it, so keys that collide cannot be chosen in advance).
    pub(crate) seed: AtomicU64,
}

/// The version of this layout (control block, log entries, heap, and the
/// containers' root words and hashing). Bumped on every change.
/// 2: word-sized log entries, the layout and seed words, keyed dict hash.
/// 3: dict buckets `[tag u32 | order u32][key][value]`, Fibonacci home
/// bucket from the tag, 4/5 load; the heap's free-list mask state word.
pub(crate) const STORE_LAYOUT: u32 = 3;

const CTL_OFF: u64 = HEADER_SIZE as u64;
const STATE_OFF: u64 = CTL_OFF + std::mem::offset_of!(Ctl, state) as u64;
const STATE_END: u64 = STATE_OFF + 8 * STATE_WORDS as u64;
const _: () = assert!(CTL_OFF + std::mem::size_of::<Ctl>() as u64 <= LOG_OFF);
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

    /// The address of the `len` bytes at `off` (8-aligned), checked to lie
    /// inside this mapping: for a loop over a whole dict table that checks
    /// its range once. Only for a view without an undo overlay (`has_undo`):
    /// reads through the pointer see the bytes as they are. Shared memory,
    /// so only through `copy`.
    #[inline(always)]
    pub(crate) fn words(&self, off: u64, len: u64) -> R<*const u8> {
        if !off.is_multiple_of(8) {
            return Err(Fail::Torn("misaligned range"));
        }
        self.at(off, len).map(|p| p.cast_const()).ok_or(Fail::Torn("range out of bounds"))
    }

    /// Whether reads through this view lay an undo log's old bytes over
    /// what they read (a reader beside an open transaction).
    #[inline(always)]
    pub(crate) fn has_undo(&self) -> bool {
        !self.undo.is_null()
    }

    /// Reads the u64 at `off` (8-aligned, inside the mapping).
    #[inline(always)]
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
        if out.len() == 8 && off.is_multiple_of(8) {
            // One aligned word (a slot, a key, a log entry's old word): one load.
            out.copy_from_slice(&self.u64(off)?.to_ne_bytes());
            return Ok(());
        }
        let p = self.at(off, out.len() as u64).ok_or(Fail::Torn("bytes out of bounds"))?;
        // SAFETY: the range is inside the mapping (checked above); sanctioned copy primitive.
        unsafe { copy::copy_from_shared(p, out) };
        if !self.undo.is_null() {
            self.patch(off, out);
        }
        Ok(())
    }

    /// Whether the `want.len()` bytes at `off` are `want` (compared in
    /// stack-sized pieces: no allocation).
    #[inline]
    pub(crate) fn bytes_eq(&self, off: u64, want: &[u8]) -> R<bool> {
        // A short run at an aligned offset (a String key's blob, an inline key): word by word through `u64`
        // (each word bounds-checked and overlaid as any read), the last word read whole and only its first
        // bytes compared. Taken only when every word it reads lies inside the mapping, so the answer is the
        // one of the copy below.
        let short = want.len() <= 64 && off.is_multiple_of(8);
        if short && off.checked_add(want.len() as u64 + 7).is_some_and(|e| e & !7 <= self.len) {
            let mut at = off;
            let mut words = want.chunks_exact(8);
            for chunk in words.by_ref() {
                if self.u64(at)?.to_ne_bytes() != *chunk {
                    return Ok(false);
                }
                at += 8;
            }
            let tail = words.remainder();
            if tail.is_empty() {
                return Ok(true);
            }
            return Ok(tail_matches(self.u64(at)?, want, tail.len()));
        }
        let mut buf = [0u64; 8];
        let mut at = off;
        for chunk in want.chunks(64) {
            let b = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[..chunk.len()];
            self.bytes(at, b)?;
            if b != chunk {
                return Ok(false);
            }
            at += 64;
        }
        Ok(true)
    }

    /// `bytes_eq` for a view without an undo overlay (`DictProxy::get`'s
    /// first try): the words holding the run read straight through one
    /// range check, the last one masked to the run's bytes. `None` (ask
    /// `bytes_eq`) when the view has an overlay, or the run is not
    /// 8-aligned or not inside the mapping in whole words.
    #[inline(always)]
    pub(crate) fn bytes_eq_words(&self, off: u64, want: &[u8]) -> Option<bool> {
        if !self.undo.is_null() || !off.is_multiple_of(8) {
            return None;
        }
        let p = self.at(off, 8 * want.len().div_ceil(8) as u64)?.cast::<u64>();
        let mut words = want.chunks_exact(8);
        let mut k = 0;
        for chunk in words.by_ref() {
            // SAFETY: word k lies inside the range checked above (want.len().div_ceil(8) words), 8-aligned (off
            // is, the mapping is page-aligned); memory model: a racing write gives garbage, never UB.
            if unsafe { copy::read(p.add(k)) }.to_ne_bytes() != *chunk {
                return Some(false);
            }
            k += 1;
        }
        let tail = words.remainder().len();
        // SAFETY: as above (the last, partial word of the run is a whole word of the checked range).
        Some(tail == 0 || tail_matches(unsafe { copy::read(p.add(k)) }, want, tail))
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

    #[inline(always)]
    fn put(&self, off: u64, src: &[u8]) -> R<()> {
        if let (Ok(w), true) = (<[u8; 8]>::try_from(src), off.is_multiple_of(8)) {
            let p = self.at(off, 8).ok_or(Fail::Torn("write out of bounds"))?;
            // SAFETY: inside the mapping, 8-aligned (the mapping is page-aligned); the caller holds the lock.
            unsafe { copy::write(p.cast::<u64>(), u64::from_ne_bytes(w)) };
            return Ok(());
        }
        self.put_bytes(off, src)
    }

    fn put_bytes(&self, off: u64, src: &[u8]) -> R<()> {
        let p = self.at(off, src.len() as u64).ok_or(Fail::Torn("write out of bounds"))?;
        // SAFETY: inside the mapping; the caller holds the writer lock (the protocol that lets it write).
        unsafe { copy::copy_to_shared(src, p) };
        Ok(())
    }

    #[inline]
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// Whether the first `tail` (1..8) bytes of the word `w` (as stored:
/// native order) are the last `tail` bytes of `want`.
#[inline(always)]
fn tail_matches(w: u64, want: &[u8], tail: usize) -> bool {
    // The first tail (< 8) bytes of the word, as the low bytes of a little-endian value.
    let w = u64::from_le_bytes(w.to_ne_bytes());
    let k = match want.len().checked_sub(8) {
        // The tail as the top bytes of `want`'s last 8 (one unaligned load), shifted down.
        Some(from) => u64::from_le_bytes(want[from..].try_into().unwrap_or([0; 8])) >> (8 * (8 - tail)),
        None => want[want.len() - tail..].iter().rev().fold(0u64, |k, &b| (k << 8) | u64::from(b)),
    };
    w & ((1u64 << (8 * tail)) - 1) == k
}

/// The base address of a store's first mapping.
struct Base(*mut u8);

// SAFETY: the address of a mapping that its Store keeps alive; only used to reach the control block's atomics.
unsafe impl Send for Base {}
// SAFETY: as above.
unsafe impl Sync for Base {}

/// The mappings this process made after the first one: address ranges
/// that the file is mapped into as it grows (a growth maps only its new
/// bytes, at their place after the old ones, so the pages mapped before
/// stay mapped), and the views over them. Nothing is unmapped before the
/// store drops.
#[derive(Default)]
struct Maps {
    ranges: Vec<AddressRange>,
    /// Boxed so a `View` keeps its address when the vector reallocates.
    #[allow(clippy::vec_box)]
    views: Vec<Box<View>>,
}

/// The least address space a growing store holds at once (a growth past
/// it maps the whole file again, into a new range 8 times its size).
const RANGE_MIN: usize = 64 << 20;

/// How often a store inherited through `fork()` tries its mappings' lock
/// before taking it as held for good (see `Store::maps`).
const INHERITED_LOCK_TRIES: u32 = 200;

/// A container's segment as seen by this process.
pub(crate) struct Store {
    /// The segment's first mapping's base (where the control block is).
    base: Base,
    seg: Segment,
    /// The first mapping's view (boxed: `cur` may point at it).
    _first: Box<View>,
    /// Later, larger mappings; never unmapped before the store drops.
    extra: StdMutex<Maps>,
    /// This process's fork count when the store was made
    /// (`thread::fork_generation`): another count means the store was
    /// inherited through `fork()`, and `extra` may be held for ever by a
    /// parent thread that is not in this process (see `maps`).
    fork_gen: u32,
    /// The fork count of the process that found `extra` held for good
    /// (`u32::MAX`: none): that process stops trying it.
    lost_gen: AtomicU32,
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
        let extra = StdMutex::new(Maps::default());
        let fork_gen = crate::sys::thread::fork_generation();
        Store { base: Base(seg.base()), seg, _first: first, extra, fork_gen, lost_gen: AtomicU32::new(u32::MAX), cur, id }
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
        ctl.layout.store(u64::from(STORE_LAYOUT), Ordering::Relaxed);
        let seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), name);
        ctl.seed.store(seed, Ordering::Relaxed);
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
        let store = Store::from_segment(seg);
        let found = store.ctl().layout.load(Ordering::Relaxed);
        if found != u64::from(STORE_LAYOUT) {
            return Err(OpenError::LayoutVersion {
                name: name.to_owned(),
                found: found.min(u64::from(u32::MAX)) as u32,
                expected: STORE_LAYOUT,
            });
        }
        Ok(store)
    }

    /// Root word `i` as it stands, read without the lock: for hints (where
    /// to prefetch), or inside `read_fast`, whose seq check says whether it
    /// was part of one committed state.
    #[inline(always)]
    pub(crate) fn root_hint(&self, i: usize) -> u64 {
        self.ctl().state[S_ROOT + i].load(Ordering::Relaxed)
    }

    /// Whether the undo log holds more than half of what it can: for an
    /// operation of this thread's open group (which holds the lock, so the
    /// log is its own) that can switch to writing only fresh space.
    pub(crate) fn log_past_half(&self) -> bool {
        self.ctl().log_used.load(Ordering::Relaxed) > LOG_CAP / 2
    }

    /// The container's hash key (read once by each handle: a hostile value
    /// only makes its hashing disagree with other handles').
    pub(crate) fn seed(&self) -> u64 {
        self.ctl().seed.load(Ordering::Relaxed)
    }

    pub(crate) fn name(&self) -> &str {
        self.seg.name()
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    #[inline]
    pub(crate) fn ctl(&self) -> &Ctl {
        // SAFETY: the first mapping (`base` == `seg.base()`) is >= INITIAL_LEN bytes (checked at create/open) and
        // page-aligned; Ctl is atomics only, so a shared reference is sound while other processes write to it.
        unsafe { &*(self.base.0.add(HEADER_SIZE) as *const Ctl) }
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

    /// Maps the file up to its current size (at most what the file holds:
    /// `map_len` is untrusted): its new bytes into this store's address
    /// range after those mapped already, or the whole file into a new,
    /// larger range when the last one is full.
    #[cold]
    fn remap(&self, want: u64) -> Option<&View> {
        let Some(mut maps) = self.maps() else {
            return self.remap_alone(want);
        };
        let len = match self.growth(want)? {
            Ok(cur) => return Some(cur),
            Err(len) => len,
        };
        if maps.ranges.last().is_none_or(|r| len > r.cap()) {
            let mut cap = len.saturating_mul(8).max(RANGE_MIN);
            // Under an address-space limit the range is address space the program's own allocations no longer
            // get: a sixteenth of what is left (twice the file at least, as doubling whole-file maps held).
            if let Some(room) = crate::sys::shm::address_space_room() {
                cap = cap.min((room / 16).max(len.saturating_mul(2)));
            }
            let cap = cap.next_multiple_of(4096);
            let range = AddressRange::reserve(cap).or_else(|_| AddressRange::reserve(len)).ok()?;
            maps.ranges.push(range);
        }
        let range = maps.ranges.last_mut()?;
        range.map_to(std::os::fd::AsFd::as_fd(self.seg.file()?), len).ok()?;
        let view = Box::new(View { base: range.base(), len: len as u64, undo: std::ptr::null() });
        let p = &*view as *const View as *mut View;
        maps.views.push(view);
        // Release: pairs with the Acquire loads in `view`.
        self.cur.store(p, Ordering::Release);
        // SAFETY: p points into the box just pushed, which lives as long as the store.
        Some(unsafe { &*p })
    }

    /// What a growth to `want` bytes (untrusted) needs mapped:
    /// `Some(Ok(view))` if the current view already covers it,
    /// `Some(Err(len))` the whole pages to map (bounded by the file's
    /// real size), `None` if nothing more can be mapped.
    fn growth(&self, want: u64) -> Option<Result<&View, usize>> {
        // SAFETY: as in `view`.
        let cur = unsafe { &*self.cur.load(Ordering::Acquire) };
        if cur.len >= want {
            return Some(Ok(cur));
        }
        let size = crate::sys::shm::fstat_file(self.seg.file()?).ok()?;
        // Whole pages: a range is filled from its start, one mapping after another.
        let len = want.min(size) & !4095;
        if len <= cur.len || len > isize::MAX as u64 / 2 {
            return None;
        }
        Some(Err(usize::try_from(len).ok()?))
    }

    /// The later mappings (locked), or `None` in a forked child that
    /// cannot take them: a store inherited through `fork()` from a
    /// multi-threaded parent may find the lock held for ever, by a parent
    /// thread that was mapping a growth at the fork and is not in the
    /// child (and `Maps` half-changed). The child tries it a while
    /// (yielding: a thread of its own holds it for a moment only); if it
    /// stays held, it stops trying (`lost_gen`). Cold: growths only.
    fn maps(&self) -> Option<std::sync::MutexGuard<'_, Maps>> {
        let now = crate::sys::thread::forks_now();
        if now == self.fork_gen {
            return Some(self.extra.lock().unwrap_or_else(|e| e.into_inner()));
        }
        // Relaxed: a hint of this process alone (a forked child's copy of
        // the word is its own); a stale read only costs the tries below.
        if self.lost_gen.load(Ordering::Relaxed) == now {
            return None;
        }
        for _ in 0..INHERITED_LOCK_TRIES {
            match self.extra.try_lock() {
                Ok(maps) => return Some(maps),
                Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => std::thread::yield_now(),
            }
        }
        // Relaxed: as the load above.
        self.lost_gen.store(now, Ordering::Relaxed);
        None
    }

    /// [`remap`](Self::remap) in a forked child whose `extra` is lost
    /// (see [`maps`](Self::maps)): the whole file is mapped into a new
    /// range, which (with its view) is leaked, never unmapped: `cur` and
    /// views handed out point into it for as long as the store lives, and
    /// without the lock it cannot be recorded for the store's drop. Only
    /// such a child pays this, once per growth it sees (address space,
    /// the pages are the file's).
    #[cold]
    fn remap_alone(&self, want: u64) -> Option<&View> {
        let len = match self.growth(want)? {
            Ok(cur) => return Some(cur),
            Err(len) => len,
        };
        let mut range = AddressRange::reserve(len).ok()?;
        range.map_to(std::os::fd::AsFd::as_fd(self.seg.file()?), len).ok()?;
        let view: &'static View = Box::leak(Box::new(View { base: range.base(), len: len as u64, undo: std::ptr::null() }));
        std::mem::forget(range);
        // Release: pairs with the Acquire loads in `view`.
        self.cur.store(view as *const View as *mut View, Ordering::Release);
        Some(view)
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
    #[inline]
    pub(crate) fn read<T>(&self, f: impl Fn(&View) -> R<T>) -> Result<T, ContainerError> {
        let ctl = self.ctl();
        // The common case, first and inline: no writer inside (seq even), one read, seq unchanged.
        // Acquire: pairs with the Release store that makes seq even at commit (as in `read_slow`).
        let s1 = ctl.seq.load(Ordering::Acquire);
        if s1 & 1 == 0 {
            let r = f(self.view());
            // Acquire: pairs with the writer's Release fence after it made seq odd (as in `read_slow`).
            fence(Ordering::Acquire);
            if ctl.seq.load(Ordering::Relaxed) == s1 {
                match r {
                    Ok(v) => return Ok(v),
                    Err(Fail::Err(e)) => return Err(e),
                    Err(Fail::Torn(_)) => {}
                }
            }
        }
        self.read_slow(&f)
    }

    /// The first try of `read` alone, for a hot read that has a lean form:
    /// `Some` when no writer was inside (seq even and unchanged around `f`)
    /// and `f` gave `Some`; `None` means "ask `read`" (a writer inside, a
    /// torn or failed read: `f` maps every failure to `None`).
    #[inline(always)]
    pub(crate) fn read_fast<T>(&self, f: impl FnOnce(&View) -> Option<T>) -> Option<T> {
        let ctl = self.ctl();
        // Acquire: pairs with the Release store that makes seq even at commit (as in `read_slow`).
        let s1 = ctl.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return None;
        }
        let r = f(self.view());
        // Acquire: pairs with the writer's Release fence after it made seq odd (as in `read_slow`).
        fence(Ordering::Acquire);
        if ctl.seq.load(Ordering::Relaxed) != s1 {
            return None;
        }
        r
    }

    /// `read` beyond its first try: retries, reads beside an open
    /// transaction, and the lock as the last resort.
    #[inline(never)]
    fn read_slow<T>(&self, f: &impl Fn(&View) -> R<T>) -> Result<T, ContainerError> {
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
                match self.read_beside(f) {
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
        let entries = parse_log(v, used, 0);
        // Each spilled entry's old bytes are a heap blob of its own, so
        // together they fit in the mapping (the others are inside the log):
        // a log that adds up to more is hostile (one large blob named by
        // every entry would have each reader copy it hundreds of times at
        // once). Left to the lock, whose repair undoes it one entry at a time.
        let total = entries.iter().map(|e| e.2 & !SPILLED).fold(0u64, u64::saturating_add);
        if total > v.len.saturating_add(LOG_CAP) {
            return None;
        }
        let mut ov = Vec::new();
        for (_, off, word, data) in entries {
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
            Fail::Torn(reason) => match self.unmapped_growth() {
                Some(why) => ContainerError::Io(why),
                None => ContainerError::Corrupted { name: self.name().to_owned(), reason },
            },
        }
    }

    /// Why an inconsistent read or write is this process's own: the
    /// container grew (a peer's growth: `map_len`, and the file really
    /// holds that much) past what this process could map (no address
    /// space or descriptor left for the remap), so what it needs lies
    /// beyond its view. `None` when the view covers what was published,
    /// or the file does not hold it (a hostile `map_len`: corruption).
    #[cold]
    fn unmapped_growth(&self) -> Option<String> {
        // Acquire: pairs with the Release store of map_len in `Txn::grow` (as in `view`).
        let want = self.ctl().map_len.load(Ordering::Acquire);
        let have = self.view().len;
        let size = crate::sys::shm::fstat_file(self.seg.file()?).ok()?;
        (want > have && size >= want).then(|| {
            format!(
                "container {:?} grew to {want} bytes; this process could map only {have} of them (no address space or \
                 file descriptor left?)",
                self.name()
            )
        })
    }

    /// Takes the lock unless this thread holds it already (inside
    /// `with_lock`); repairs after a dead writer. Returns whether it took it.
    #[inline]
    fn acquire(&self) -> Result<bool, ContainerError> {
        let ctl = self.ctl();
        // The uncontended path: one CAS. Then a clean log and an even seq (two loads) mean nothing to repair.
        if ctl.lock.try_lock_fast() {
            if ctl.log_used.load(Ordering::Relaxed) != 0 || ctl.seq.load(Ordering::Relaxed) & 1 == 1 {
                self.recover();
            }
            return Ok(true);
        }
        self.acquire_slow()
    }

    #[cold]
    fn acquire_slow(&self) -> Result<bool, ContainerError> {
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
    /// group back. Nested calls on the same thread join the open group as
    /// a savepoint: an `Err` from a nested [`Self::group`] undoes its own
    /// part only, and an operation of the group that fails undoes itself
    /// only (its log entries and the state words it changed).
    pub(crate) fn with_lock<T>(&self, f: impl FnOnce() -> T) -> Result<T, ContainerError> {
        self.group(|| Ok(f()))
    }

    /// As [`Self::with_lock`], and an `Err` from `f` rolls the whole group
    /// back too (when this call opened it).
    pub(crate) fn group<T>(&self, f: impl FnOnce() -> Result<T, ContainerError>) -> Result<T, ContainerError> {
        let held = self.acquire()?;
        if !held {
            // Already inside a group (joined, as a savepoint) or an operation (whose writes are refused) on this
            // thread.
            return self.nested_group(f);
        }
        let ctl = self.ctl();
        let s = ctl.seq.load(Ordering::Relaxed);
        ctl.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Release fence: pairs with the reader's Acquire fence before its second seq load, as in `write`.
        fence(Ordering::Release);
        let top0 = ctl.state[S_TOP].load(Ordering::Relaxed);
        group::push_group(self.id, Group { seq: s.wrapping_add(1), fresh_low: u64::MAX, top0, ..Group::default() });
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
        // Whole words (a peer may have written any length): entries are appended at 8-aligned offsets.
        let used = ctl.log_used.load(Ordering::Relaxed).min(LOG_CAP) & !7;
        let mut tx = Txn::new(self, self.view(), used, true, g.seq);
        tx.logged = g.logged;
        tx.freed = g.freed;
        tx.fresh = g.fresh;
        tx.top0 = g.top0;
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

    /// A group opened inside this thread's open group: a savepoint of it.
    /// An `Err` from `f` undoes what `f` did (and only that); the open
    /// group goes on. Inside an operation (no group state to join) it only
    /// runs `f`, whose writes are refused.
    #[cold]
    fn nested_group<T>(&self, f: impl FnOnce() -> Result<T, ContainerError>) -> Result<T, ContainerError> {
        let ctl = self.ctl();
        let Some((used, logged, freed, ops, fresh_low)) = group::with_group(self.id, |g| {
            (ctl.log_used.load(Ordering::Relaxed).min(LOG_CAP) & !7, g.logged, g.freed.len(), g.ops, std::mem::replace(&mut g.fresh_low, u64::MAX))
        }) else {
            return f();
        };
        let snap = self.states();
        let r = f();
        let err = r.is_err();
        group::with_group(self.id, |g| {
            if err {
                self.undo_from(used);
                self.restore_states(&snap);
                g.logged = logged;
                g.freed.truncate(freed);
                g.fresh.forget_after(ops);
                if g.fresh_low <= ops {
                    g.doomed.get_or_insert_with(Self::doomed_by_fresh);
                }
                // seq only moves forward (stays odd): a reader that copied the log beside it starts over.
                g.seq = g.seq.wrapping_add(2);
                // Release: pairs with the readers' Acquire load of seq.
                ctl.seq.store(g.seq, Ordering::Release);
            }
            g.fresh_low = g.fresh_low.min(fresh_low);
        });
        r
    }

    /// The error of a group doomed by an undone part that had written into
    /// space an earlier part allocated.
    fn doomed_by_fresh() -> ContainerError {
        ContainerError::Io(
            "an operation undone inside a group had written to space the group allocated; the whole group is \
             rolled back"
                .into(),
        )
    }

    /// The state words, in order.
    fn states(&self) -> Vec<u64> {
        self.ctl().state.iter().map(|w| w.load(Ordering::Relaxed)).collect()
    }

    /// Stores the state words that differ from `snap` (taken by `states`
    /// inside the open group: every word the group changed is in its log,
    /// so a crash here still rolls the group back). Caller holds the lock.
    fn restore_states(&self, snap: &[u64]) {
        for (w, &v) in self.ctl().state.iter().zip(snap) {
            if w.load(Ordering::Relaxed) != v {
                crash_point();
                w.store(v, Ordering::Relaxed);
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
                    let used = ctl.log_used.load(Ordering::Relaxed).min(LOG_CAP) & !7;
                    let mut tx = Txn::new(self, self.view(), used, false, g.seq);
                    tx.logged = g.logged;
                    tx.freed = std::mem::take(&mut g.freed);
                    tx.fresh = std::mem::take(&mut g.fresh);
                    tx.top0 = g.top0;
                    g.ops += 1;
                    tx.op = g.ops;
                    g.snap.clear();
                    g.snap.extend(ctl.state.iter().map(|w| w.load(Ordering::Relaxed)));
                    tx.undo_to = Some((g.logged, tx.freed.len()));
                    tx.group = Some(g);
                    tx
                }
            }
        };
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
/// Old bytes up to this long are logged through a stack buffer.
const SMALL_LOG: u64 = 64;

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

/// Appends one entry (`[off][len word][old bytes as words]`) to the log
/// at `*used` and publishes it (a transaction's and a quick write's).
#[inline(always)]
fn append_log(store: &Store, view: &View, used: &mut u64, entry: &[u64]) -> R<()> {
    let n = 8 * entry.len() as u64;
    if !used.is_multiple_of(8) {
        // Only from a log length a hostile peer wrote (ours are whole words): a misaligned store would be UB.
        return Err(Fail::Torn("log length"));
    }
    if *used + n > LOG_CAP {
        return Err(Fail::Err(ContainerError::TooLarge { what: "one operation's undo log", limit: LOG_CAP }));
    }
    crash_point();
    // LOG_OFF + used is 8-aligned (entries are whole words) and the log lies in the first mapping (>= HEAP_START
    // bytes, checked at create/open), so `at` only fails on a view that is not this store's.
    let p = view.at(LOG_OFF + *used, n).ok_or(Fail::Torn("log out of bounds"))?;
    let p = p.cast::<u64>();
    for (k, &w) in entry.iter().enumerate() {
        // SAFETY: k < entry.len(): inside the n bytes checked above, 8-aligned (the mapping is page-aligned);
        // we hold the writer lock. One volatile store per word.
        unsafe { copy::write(p.add(k), w) };
    }
    crash_point();
    *used += n;
    // Release: pairs with the Acquire of the lock takeover in the next locker's recovery: the entry's
    // bytes are in place before the log says they are.
    store.ctl().log_used.store(*used, Ordering::Release);
    // The new log length must reach memory before the logged bytes change: a store-store order (free on
    // x86's TSO; `dmb ish` on aarch64). A crash is observed by the next locker through the lock word, so
    // hardware store order is what matters here.
    fence(Ordering::Release);
    Ok(())
}

/// Writes the live aligned word at `off`, its old value logged first
/// (`[off][8][old word]`, one checked load).
#[inline(always)]
fn log_and_put_word(store: &Store, view: &View, used: &mut u64, off: u64, w: u64) -> R<()> {
    let old = view.u64(off)?;
    append_log(store, view, used, &[off, 8, old])?;
    crash_point();
    view.put(off, &w.to_ne_bytes())?;
    crash_point();
    Ok(())
}

/// Writes the live aligned word at `off` and sets the state words
/// `lo..lo + vals.len()`, their old values logged as one log append (two
/// entries, one publication): the common end of an insert.
#[inline(always)]
fn word_and_states(store: &Store, view: &View, used: &mut u64, off: u64, w: u64, lo: usize, vals: &[u64]) -> R<()> {
    let n = vals.len();
    debug_assert!((1..=ROOT_WORDS).contains(&n) && lo + n <= STATE_WORDS);
    let mut e = [0u64; 5 + ROOT_WORDS];
    e[0] = off;
    e[1] = 8;
    e[2] = view.u64(off)?;
    e[3] = STATE_OFF + 8 * lo as u64;
    e[4] = 8 * n as u64;
    for k in 0..n {
        e[5 + k] = store.ctl().state[lo + k].load(Ordering::Relaxed);
    }
    append_log(store, view, used, &e[..5 + n])?;
    crash_point();
    view.put(off, &w.to_ne_bytes())?;
    crash_point();
    store.store_states_after_point(lo, vals);
    Ok(())
}

impl Store {
    /// Stores the state words `lo..lo + vals.len()`, a crash point after
    /// each (the caller has just passed one). Caller holds the lock.
    #[inline(always)]
    fn store_states_after_point(&self, lo: usize, vals: &[u64]) {
        for (k, &v) in vals.iter().enumerate() {
            self.ctl().state[lo + k].store(v, Ordering::Relaxed);
            crash_point();
        }
    }

    /// The commit of an operation whose odd `seq` is `seq`: the one store
    /// `log_used = 0`, `seq` even, the lock released (if `held`).
    #[inline(always)]
    fn commit(&self, seq: u64, held: bool) {
        let ctl = self.ctl();
        crash_point();
        // The commit point. Release: everything written before is visible with it.
        ctl.log_used.store(0, Ordering::Release);
        crash_point();
        // Release: pairs with the readers' Acquire load of seq.
        ctl.seq.store(seq.wrapping_add(1), Ordering::Release);
        if held {
            ctl.lock.unlock();
        }
    }

    /// Runs `f` as a quick write: one operation that needs no allocation,
    /// no free and no group (a dict's new entry or new value of inline
    /// types). The lock is taken (repairing first, as for `write`), `seq`
    /// made odd, `f` writes through [`Quick`] (unlogged bytes no committed
    /// state reaches, and logged words), and one commit store ends it.
    /// `f` gives `None` for "not quick" (a resize is due, a check failed,
    /// or this thread already holds the lock: a group's operation): what it
    /// wrote is undone and `None` returned, for the full `write` to run.
    #[inline(always)]
    pub(crate) fn write_quick<T>(&self, f: impl FnOnce(&mut Quick<'_>) -> Option<T>) -> Option<T> {
        if !self.acquire().ok()? {
            // This thread's group or operation holds the lock: `write` joins or refuses.
            return None;
        }
        let ctl = self.ctl();
        let s = ctl.seq.load(Ordering::Relaxed);
        ctl.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Release fence: pairs with the reader's Acquire fence before its second seq load, as in `write`.
        fence(Ordering::Release);
        let mut q = Quick { store: self, view: self.view(), seq: s.wrapping_add(1), used: 0, done: false };
        let r = f(&mut q);
        if r.is_some() {
            self.commit(q.seq, true);
            q.done = true;
        }
        r
    }
}

/// A quick write in progress (`Store::write_quick`): holds the lock.
pub(crate) struct Quick<'a> {
    store: &'a Store,
    view: &'a View,
    seq: u64,
    /// Bytes of log written.
    used: u64,
    done: bool,
}

impl<'a> Quick<'a> {
    #[inline(always)]
    pub(crate) fn view(&self) -> &'a View {
        self.view
    }

    /// Root word `i`.
    #[inline(always)]
    pub(crate) fn root(&self, i: usize) -> u64 {
        self.store.ctl().state[S_ROOT + i].load(Ordering::Relaxed)
    }

    /// Writes bytes no committed state reaches (unlogged).
    #[inline(always)]
    pub(crate) fn write_fresh(&mut self, off: u64, src: &[u8]) -> Option<()> {
        crash_point();
        self.view.put(off, src).ok()
    }

    /// Makes `w` the live aligned word at `off` as the operation's only
    /// change: unlogged, since the one 8-byte store is itself the point
    /// where the operation takes effect (a death before it leaves the state
    /// before, after it the state after; a reader beside it sees the old
    /// word or the new one, and the new one only once it is stored).
    #[inline(always)]
    pub(crate) fn write_only_word(&mut self, off: u64, w: u64) -> Option<()> {
        crash_point();
        self.view.put(off, &w.to_ne_bytes()).ok()?;
        crash_point();
        Some(())
    }

    /// Sets root word `i` to `v`, its old value logged first (one log
    /// append), so a crash after the store is undone by the next locker
    /// and a reader beside the open write sees the old value.
    #[inline(always)]
    pub(crate) fn set_root(&mut self, i: usize, v: u64) -> Option<()> {
        let w = S_ROOT + i;
        let old = self.store.ctl().state[w].load(Ordering::Relaxed);
        append_log(self.store, self.view, &mut self.used, &[STATE_OFF + 8 * w as u64, 8, old]).ok()?;
        crash_point();
        self.store.ctl().state[w].store(v, Ordering::Relaxed);
        crash_point();
        Some(())
    }

    /// Writes the live aligned word at `off` and sets the root words
    /// `first..first + vals.len()` (one log append), as
    /// [`Txn::write_word_and_roots`].
    #[inline(always)]
    pub(crate) fn write_word_and_roots(&mut self, off: u64, w: u64, first: usize, vals: &[u64]) -> Option<()> {
        if !off.is_multiple_of(8) {
            return None;
        }
        word_and_states(self.store, self.view, &mut self.used, off, w, S_ROOT + first, vals).ok()
    }
}

impl Drop for Quick<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if !self.done {
            self.abort();
        }
    }
}

impl Quick<'_> {
    /// Undoes what a quick write that gave up (or panicked) did, as a
    /// survivor would after a crash, and releases the lock.
    #[cold]
    fn abort(&mut self) {
        self.store.recover();
        self.store.ctl().lock.unlock();
    }
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
    fresh: group::Fresh,
    /// This operation's number in its group (0 outside a group).
    op: u64,
    /// Log position where this operation started.
    start: u64,
    /// Inside a group: its state, and (logged, freed.len()) to restore if
    /// this operation alone is undone.
    group: Option<Box<Group>>,
    undo_to: Option<(u64, usize)>,
    /// The lowest number of an earlier operation of its group into whose
    /// block this operation wrote unlogged (`u64::MAX`: none; undoing it
    /// alone would not undo such a write).
    fresh_low: u64,
    /// The heap top when this transaction (its group) began: a block at
    /// or above it was carved from the top here and was on no free list
    /// before, so freeing it needs no undo of its link word.
    top0: u64,
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
pub(crate) fn crash_point() {
    #[cfg(feature = "test-hooks")]
    crash::step();
}

impl<'a> Txn<'a> {
    #[inline(always)]
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
            fresh: group::Fresh::default(),
            op: 0,
            start: used,
            group: None,
            undo_to: None,
            fresh_low: u64::MAX,
            top0: store.ctl().state[S_TOP].load(Ordering::Relaxed),
        }
    }

    /// Whether this operation runs inside a group.
    #[inline]
    pub(crate) fn in_group(&self) -> bool {
        self.group.is_some()
    }

    /// Records a block this transaction allocated (payload `p..end`).
    #[inline]
    pub(crate) fn note_fresh(&mut self, p: u64, end: u64) {
        self.fresh.insert(p, end, self.op);
    }

    /// Whether the block whose payload starts at `p` was allocated by this
    /// transaction (its group).
    #[inline]
    pub(crate) fn allocated_here(&self, p: u64) -> bool {
        self.fresh.containing(p, p.saturating_add(8)).is_some()
    }

    /// Whether the block at `b` lies at or above the heap top of when this
    /// transaction (its group) began: carved from the top here, on no
    /// free list before.
    #[inline]
    pub(crate) fn above_start_top(&self, b: u64) -> bool {
        b >= self.top0
    }

    /// The fresh-block record starting at payload `p`, if any.
    pub(crate) fn fresh_mut(&mut self, p: u64) -> Option<&mut (u64, u64)> {
        self.fresh.get_mut(p)
    }

    /// Whether `off..off+len` lies in a block this transaction allocated.
    #[inline]
    fn is_fresh(&mut self, off: u64, len: u64) -> bool {
        let Some(end) = off.checked_add(len) else { return false };
        match self.fresh.containing(off, end) {
            Some(op) => {
                if op != self.op {
                    self.fresh_low = self.fresh_low.min(op);
                }
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    pub(crate) fn view(&self) -> &'a View {
        self.view
    }

    /// A state word.
    #[inline(always)]
    pub(crate) fn state(&self, i: usize) -> u64 {
        self.store.ctl().state[i].load(Ordering::Relaxed)
    }

    /// Sets a state word (logged the first time in this operation).
    #[inline(always)]
    pub(crate) fn set_state(&mut self, i: usize, v: u64) -> R<()> {
        self.log_states(i, 1)?;
        self.store_state(i, v);
        Ok(())
    }

    /// Sets the state words `lo..lo + vals.len()` (one log entry for those
    /// not yet logged in this operation).
    #[inline]
    pub(crate) fn set_states(&mut self, lo: usize, vals: &[u64]) -> R<()> {
        self.log_states(lo, vals.len())?;
        crash_point();
        self.store_states_after_point(lo, vals);
        Ok(())
    }

    #[inline(always)]
    fn store_state(&self, i: usize, v: u64) {
        crash_point();
        self.store.ctl().state[i].store(v, Ordering::Relaxed);
        crash_point();
    }

    /// Stores the state words `lo..lo + vals.len()`, a crash point after
    /// each (the caller has just passed one: a point before each store
    /// would only repeat the one after the store before it).
    #[inline(always)]
    fn store_states_after_point(&self, lo: usize, vals: &[u64]) {
        self.store.store_states_after_point(lo, vals);
    }

    /// Logs state word `i` (the common case of `log_states`).
    #[inline(always)]
    fn log_state(&mut self, i: usize) -> R<()> {
        self.append_entry(&[STATE_OFF + 8 * i as u64, 8, self.state(i)])?;
        self.logged |= 1 << i;
        Ok(())
    }

    /// Logs the state words `lo..lo + n` as one entry, unless every one of
    /// them is in the log already (their values from before this
    /// operation are what a rollback needs; logging one again is
    /// harmless: entries are undone newest first).
    #[inline]
    fn log_states(&mut self, lo: usize, n: usize) -> R<()> {
        debug_assert!((1..=ROOT_WORDS).contains(&n) && lo + n <= STATE_WORDS);
        let mask = ((1u64 << n) - 1) << lo;
        if self.logged & mask == mask {
            return Ok(());
        }
        if n == 1 {
            return self.log_state(lo);
        }
        let mut e = [0u64; 2 + ROOT_WORDS];
        e[0] = STATE_OFF + 8 * lo as u64;
        e[1] = 8 * n as u64;
        for k in 0..n {
            e[2 + k] = self.state(lo + k);
        }
        self.append_entry(&e[..2 + n])?;
        self.logged |= mask;
        Ok(())
    }

    #[inline]
    pub(crate) fn defer_free(&mut self, p: u64) {
        self.freed.push(p);
    }

    #[inline]
    pub(crate) fn has_deferred(&self) -> bool {
        !self.freed.is_empty()
    }

    pub(crate) fn take_deferred(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.freed)
    }

    #[inline(always)]
    pub(crate) fn root(&self, i: usize) -> u64 {
        self.state(S_ROOT + i)
    }

    #[inline(always)]
    pub(crate) fn set_root(&mut self, i: usize, v: u64) -> R<()> {
        self.set_state(S_ROOT + i, v)
    }

    /// Sets the root words `first..first + vals.len()` (one log entry).
    #[inline]
    pub(crate) fn set_roots(&mut self, first: usize, vals: &[u64]) -> R<()> {
        self.set_states(S_ROOT + first, vals)
    }

    /// Records the current `len` bytes at `off` in the undo log (bytes
    /// longer than `SPILL_OVER` in a heap blob the entry names).
    #[inline]
    fn log(&mut self, off: u64, len: u64) -> R<()> {
        if len > SMALL_LOG {
            return if len > SPILL_OVER { self.log_spilled(off, len) } else { self.log_big(off, len) };
        }
        let words = len.div_ceil(8) as usize;
        let mut e = [0u64; 2 + SMALL_LOG as usize / 8];
        e[0] = off;
        e[1] = len;
        self.view.bytes(off, &mut bytemuck::cast_slice_mut(&mut e[2..2 + words])[..len as usize])?;
        self.append_entry(&e[..2 + words])
    }

    /// As `log`, for old bytes too long for the stack entry.
    #[cold]
    fn log_big(&mut self, off: u64, len: u64) -> R<()> {
        let words = len.div_ceil(8) as usize;
        let mut e = vec![0u64; 2 + words];
        e[0] = off;
        e[1] = len;
        self.view.bytes(off, &mut bytemuck::cast_slice_mut(&mut e[2..])[..len as usize])?;
        self.append_entry(&e)
    }

    /// Logs `len` bytes at `off` through a fresh heap blob (freed at
    /// commit; a rollback restores from it before it restores the heap
    /// state that allocated it).
    fn log_spilled(&mut self, off: u64, len: u64) -> R<()> {
        let old = self.view.vec(off, len)?;
        let p = self.put_blob(&old)?;
        self.defer_free(p);
        self.append_entry(&[off, len | SPILLED, p])
    }

    /// Appends one entry (`[off][len word][old bytes as words]`) to the log
    /// and publishes it.
    #[inline]
    fn append_entry(&mut self, entry: &[u64]) -> R<()> {
        append_log(self.store, self.view, &mut self.used, entry)
    }

    /// Records the `len` bytes at `off` in the undo log (the caller then
    /// writes them with `write_fresh`).
    #[inline]
    pub(crate) fn log_bytes(&mut self, off: u64, len: u64) -> R<()> {
        if self.is_fresh(off, len) { Ok(()) } else { self.log(off, len) }
    }

    /// Writes live bytes (logged first).
    #[inline]
    pub(crate) fn write(&mut self, off: u64, src: &[u8]) -> R<()> {
        if self.is_fresh(off, src.len() as u64) {
            return self.write_fresh(off, src);
        }
        if let (Ok(w), true) = (<[u8; 8]>::try_from(src), off.is_multiple_of(8)) {
            return self.write_word(off, u64::from_ne_bytes(w));
        }
        self.log(off, src.len() as u64)?;
        crash_point();
        self.put_torn(off, src)?;
        crash_point();
        Ok(())
    }

    /// `write` of one aligned live word (a value slot, a bucket word): the
    /// same log entry as `log(off, 8)` (`[off][8][old word]`), built from
    /// one checked load, then one store.
    #[inline(always)]
    fn write_word(&mut self, off: u64, w: u64) -> R<()> {
        log_and_put_word(self.store, self.view, &mut self.used, off, w)
    }

    /// Puts `src` at `off`; with crash injection, a death may land after
    /// only the first half of the bytes (a torn multi-word write).
    #[inline(always)]
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
    #[inline]
    pub(crate) fn write_u64(&mut self, off: u64, w: u64) -> R<()> {
        self.write(off, &w.to_ne_bytes())
    }

    /// Writes bytes no committed state can reach (fresh blocks, slots past
    /// the length): no log needed.
    #[inline(always)]
    pub(crate) fn write_fresh(&mut self, off: u64, src: &[u8]) -> R<()> {
        crash_point();
        self.put_torn(off, src)
    }

    /// Writes the live word at `off` and sets the root words
    /// `first..first + vals.len()`, their old values logged as one log
    /// append (two entries, one publication): the common end of an insert.
    #[inline]
    pub(crate) fn write_word_and_roots(&mut self, off: u64, w: u64, first: usize, vals: &[u64]) -> R<()> {
        let (lo, n) = (S_ROOT + first, vals.len());
        debug_assert!((1..=ROOT_WORDS).contains(&n) && lo + n <= STATE_WORDS);
        if !off.is_multiple_of(8) || self.is_fresh(off, 8) {
            self.write(off, &w.to_ne_bytes())?;
            return self.set_states(lo, vals);
        }
        // Logging a state word already logged in this operation again is harmless (entries are undone newest
        // first, so the oldest value is the one left).
        word_and_states(self.store, self.view, &mut self.used, off, w, lo, vals)?;
        self.logged |= ((1u64 << n) - 1) << lo;
        Ok(())
    }

    /// The address of the `len` bytes at `off` (8-aligned) in this
    /// operation's mapping, checked to lie inside it: for a loop over a
    /// whole table (a resize) that checks its range once. The pointer
    /// stays valid for the whole operation (mappings are never unmapped
    /// before the store drops); shared memory, so only through `copy`.
    #[inline]
    pub(crate) fn range(&self, off: u64, len: u64) -> R<*mut u8> {
        if !off.is_multiple_of(8) {
            return Err(Fail::Torn("misaligned range"));
        }
        self.view.at(off, len).ok_or(Fail::Torn("range out of bounds"))
    }

    /// Stores `w` at `off + k * stride` for `k` in `0..count`, in bytes no
    /// committed state can reach (a fresh block): no log needed.
    pub(crate) fn fill_fresh_words(&mut self, off: u64, stride: u64, count: u64, w: u64) -> R<()> {
        if count == 0 {
            return Ok(());
        }
        if !off.is_multiple_of(8) || !stride.is_multiple_of(8) || stride == 0 {
            return Err(Fail::Torn("misaligned words"));
        }
        let span = (count - 1).checked_mul(stride).and_then(|n| n.checked_add(8)).ok_or(Fail::Torn("words"))?;
        let p = self.view.at(off, span).ok_or(Fail::Torn("write out of bounds"))?;
        crash_point();
        for k in 0..count {
            // SAFETY: k * stride + 8 <= span: inside the mapping (checked above), 8-aligned (off and stride are,
            // the mapping is page-aligned); we hold the writer lock.
            unsafe { copy::write(p.add((k * stride) as usize).cast::<u64>(), w) };
        }
        Ok(())
    }

    /// Makes the file at least `needed` bytes (a geometric step more when
    /// there is room), reserved.
    pub(crate) fn grow(&mut self, needed: u64) -> R<()> {
        let ctl = self.store.ctl();
        let have = ctl.map_len.load(Ordering::Relaxed).max(self.view.len);
        if needed <= have {
            return Ok(());
        }
        // A quarter more than the file holds, or an eighth more than needed: geometric, so growths stay few,
        // without doubling (every byte reserved is a page allocated and zeroed now, and a table that doubles
        // past a doubled file would leave half the file reserved for nothing). A growth maps only its new bytes
        // (`Store::remap`), so a smaller step costs no fault on the pages mapped before.
        let new_len = needed
            .saturating_add(needed / 8)
            .max(have.saturating_add(have / 4))
            .checked_next_multiple_of(64 * 1024)
            .ok_or(
            Fail::Err(ContainerError::NoSpace { name: self.store.name().to_owned(), bytes: needed }),
        )?;
        if new_len > isize::MAX as u64 / 2 {
            return Err(Fail::Err(ContainerError::NoSpace { name: self.store.name().to_owned(), bytes: new_len }));
        }
        let seg = self.store.segment();
        // No room for the step: the bytes needed alone, if they fit.
        let exact = needed.next_multiple_of(64 * 1024);
        let new_len = match seg.extend(have, new_len) {
            Err(OpenError::NoSpace { .. }) if exact < new_len => seg.extend(have, exact).map(|()| exact),
            r => r.map(|()| new_len),
        }
        .map_err(|e| match e {
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

    #[inline(always)]
    fn commit(&mut self) {
        self.store.commit(self.seq, self.held);
        self.done = true;
    }
}

impl Drop for Txn<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.done && self.group.is_none() {
            return;
        }
        self.drop_slow();
    }
}

impl Txn<'_> {
    #[cold]
    fn drop_slow(&mut self) {
        let id = self.store.id;
        if let Some(mut g) = self.group.take() {
            if !self.done {
                // Undo this operation only; the group goes on (or is doomed if that is not enough).
                self.store.undo_from(self.start);
                // State words that earlier operations of the group logged were not logged again by this one.
                self.store.restore_states(&g.snap);
                if let Some((logged, freed)) = self.undo_to {
                    self.logged = logged;
                    self.freed.truncate(freed);
                }
                self.fresh.forget_after(self.op - 1);
                if self.fresh_low != u64::MAX {
                    g.doomed.get_or_insert_with(Store::doomed_by_fresh);
                }
                // seq only moves forward (stays odd): a reader that copied the log beside it starts over.
                g.seq = self.seq.wrapping_add(2);
                // Release: pairs with the readers' Acquire load of seq.
                self.store.ctl().seq.store(g.seq, Ordering::Release);
            }
            g.logged = self.logged;
            g.fresh_low = g.fresh_low.min(self.fresh_low);
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
