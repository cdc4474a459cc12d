//! Unbounded queues (Python's `Queue()` / `maxsize <= 0`): a chain of
//! MPMC rings that grows as needed, in every process.
//!
//! Shape: a small control segment under the queue's name holds two
//! indices, `newest` (the ring producers put into) and `oldest` (the ring
//! consumers drain). Ring `k` is an ordinary [`ItemRing`] segment named
//! `<name>.<generation>.<k>.<tag>` (plain-data slots or frames, as for a
//! bounded queue; the random generation, recorded in the control block,
//! keeps rings left by an earlier queue of the same name out of this one;
//! the tag, a keyed hash of `k` under a secret key kept in the control
//! block, keeps the next ring's name unknown to anyone who cannot read the
//! queue: /dev/shm is listed by every user, and another user who created
//! the name of ring `k + 1` first made the queue `Full` for good).
//!
//! - **put**: try the newest ring; if it is full, or its frames are too
//!   small for the item, *seal* it (close it: its producers' claims fail
//!   from then on, so nothing lands in it after the seal), create ring
//!   `k + 1` (idempotently: whoever comes first creates it, the others
//!   open it) and move `newest` from `k` to `k + 1` with one CAS. Any
//!   process can do every step, so a producer that dies mid-link (after
//!   the seal, or after creating the successor) delays nobody: the next
//!   put, or a consumer that finds the sealed ring drained, finishes it.
//! - **get**: take from the oldest ring; when it is sealed and drained
//!   (`Closed`), move `oldest` on with one CAS, and the winner unlinks the
//!   retired ring's name and gives its bytes back to the memory budget.
//!   Every producer's items stay in order: its puts into ring `k` all
//!   precede its puts into `k + 1`, and ring `k` is drained first.
//! - **crashes**: inside a ring, the ring's own guarantees (a dead
//!   producer's item absent, a dead consumer's item gone with it). Between
//!   rings, every step is idempotent, see above.
//! - **memory**: the live rings' bytes (`oldest..=newest`, their files'
//!   sizes, counted from the names whenever a ring is to be made: no
//!   running total a killed process could leave wrong); a new ring that
//!   would pass the limit (default [`DEFAULT_MEMORY_LIMIT`]) is
//!   not created: the queue is full until consumers retire a ring
//!   (`put_nowait`: `Full`; `put`: waits). A ring takes at most half the
//!   limit, and a ring is sealed only once its successor exists, so the
//!   ring being drained and its successor always fit: no exception to the
//!   limit is needed to avoid a deadlock. A ring's bytes are its memory
//!   in /dev/shm: its file's size in whole pages. An item whose frame needs rings
//!   of more than half the limit can never be put: `TooLarge`. Space is
//!   reserved when a ring is created (`fallocate`), so a full `/dev/shm`
//!   is that same "full", never a SIGBUS.
//! - **names**: ring segments are created persisted (the producer process
//!   that happened to create one may exit before it is drained); the
//!   consumer that retires a ring unlinks it. Every process that creates
//!   or opens the queue is recorded in the control block (`holders`); the
//!   last one to drop its handles unlinks whatever rings are left, so the
//!   creator leaving early takes nothing from the others. A persisted
//!   queue's rings stay. Holders are recorded by process identity, so a
//!   holder killed without detaching does not keep the rings: the last
//!   live one to leave sees it dead and removes them.
//! - **other users' rings**: /dev/shm is sticky, so only a ring's owner
//!   (the user whose process made it) or root may remove its name. A
//!   process that cannot remove a ring it retires, or that the queue's
//!   removal leaves, gives it up to its owner instead: it clears the
//!   ring's persist flag (`shm::unlink_or_release`; the ring is never used
//!   again). The owner's process that made it removes it when it detaches
//!   (`unlink_given_up`), and once that process is gone, the owner's
//!   [`gc`](crate::gc) does (an ordinary segment of a dead creator). Until
//!   one of them runs, the ring's name and memory stay: the memory cannot
//!   be freed earlier, as a process that read `oldest` before the ring
//!   was retired may still touch its pages (a truncated file would be a
//!   SIGBUS; a punched hole would read as zeros, or fault in new pages).
//!
//! `qsize` is the sum of each live ring's exact count (each exact at its
//! instant, the sum not one snapshot).
//!
//! JoinableQueue counts (`unfinished`) are read from the rings, never
//! counted beside them (`links::Tally`): the items landed are the oldest
//! ring's base plus each live ring's claims (its `tail`: the claim CAS is
//! the count, as in a bounded queue) less its dead producers' skipped
//! slots; retiring a ring folds its final count into its successor's base
//! first. Unfinished = landed - late skips (a skip repaired in a ring
//! folded meanwhile, counted in the chain) - `task_done` calls. A put
//! costs nothing extra; a process killed at any instruction of a put,
//! get or `task_done` leaves the count exact (a consumer's item taken and
//! not yet done stays unfinished, as in a bounded queue).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::error::TaskDoneError;
use super::item::{FrameCell, PodVia, RingItem};
use super::itemring::{GetFail, ItemRing, Mode, PutFail};
use super::links::{self, CLOSED, Drained, Links, Rings};
use super::spsc::Line;
use crate::handoff::Handoff;
use crate::shm::object::{self, Mapped, Object};
use crate::shm::{Fingerprint, Kind};
use crate::wait::Deadline;
use crate::wait::futex::{wait32, wake32};
use crate::wait::spin::POLL;
use crate::{OpenError, Options};

thread_local! {
    /// Set by `Chain::visit` when it stopped at a live ring this process
    /// cannot map now for want of a resource (the count it fed is short);
    /// reset and read by `Chain::unfinished_known`, on the same thread.
    static COUNT_SHORT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The memory an unbounded queue's rings may take unless told otherwise.
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;
/// The first ring's bytes (about), and the most any ring takes.
const FIRST_RING_BYTES: u64 = 64 << 10;
const MAX_RING_BYTES: u64 = 64 << 20;
/// Payload bytes of the first frame ring's slots (rings grow for larger
/// items).
const FIRST_MAX_FRAME: u64 = 128 - super::item::FRAME_HEAD;
/// How many rings a queue may ever have (names stay short; far beyond
/// any real use: each ring is at least as large as the one before).
const MAX_RINGS: u64 = 1 << 40;
/// Most rings alive at once that `qsize` and the creator's cleanup look
/// at (the indices are untrusted; a real chain has a few dozen at most).
const LIVE_RINGS: u64 = 1 << 10;
/// Links a `try_` call follows before it reports `Full` / `Empty`.
const TRY_LINKS: u32 = 64;
/// What separates a ring's index from the rest of its temporary name
/// (`<ring name>.t<pid>x<seq>`), and the bound of `<seq>`.
const TEMP_MARK: &str = ".t";
const TEMP_SEQ: u64 = 1 << 20;

/// The chain's control block.
#[repr(C)]
pub(crate) struct ChainCtl {
    /// Index of the ring producers put into; bit 63: closed.
    newest: Line<AtomicU64>,
    /// Index of the oldest live ring (consumers drain it).
    oldest: Line<AtomicU64>,
    words: Line<Words>,
}

#[repr(C)]
struct Words {
    /// The memory limit (bytes of live rings), fixed at creation.
    limit: AtomicU64,
    /// The permission bits rings are created with (the creator's).
    mode: AtomicU32,
    /// The secret key of the rings' name tags (random, fixed at creation;
    /// see `ring_name`). Only those who may open the control segment
    /// learn it. (Was the unused `live` total: same layout, version 5.)
    key: AtomicU64,
    /// Bumped when a ring is retired or the queue closes; producers at
    /// the limit sleep on it.
    space_seq: AtomicU32,
    producers_waiting: AtomicU32,
    /// JoinableQueue: dead producers' slots skipped in a ring after its
    /// count was folded (`links::count_skip`; the items put are read from
    /// the rings), `task_done` calls; joiners sleep on `done_seq`. (Was
    /// the count of puts, before version 6.)
    late: AtomicU64,
    dones: AtomicU64,
    done_seq: AtomicU32,
    joiners: AtomicU32,
    /// Attaches (a create or open each; a forked child does not attach)
    /// that found no free entry in `holders`.
    attached: AtomicU32,
    /// Non-zero once any handle called `persist()`: nobody removes the
    /// rings on detach then (`unlink(name)` / `gc` do).
    persisted: AtomicU32,
    /// The attached processes' packed identities (pid, start time), one
    /// entry per attach, 0 = free. The last live holder to detach removes
    /// the rings' names; a holder killed without detaching is recognised
    /// as dead (so it does not keep the rings forever).
    holders: [AtomicU64; HOLDERS],
    /// This queue's random generation, part of its rings' names
    /// (`<name>.<generation:08x>.<k>`): rings left by an earlier queue of
    /// the same name are never taken for this one's. Fixed at creation.
    generation: AtomicU32,
}

/// Entries of the holder table (attaches beyond it are only counted, and
/// keep the rings until they detach).
const HOLDERS: usize = 64;

/// The control segment (its element identity is the rings').
struct ChainObj<T> {
    m: Mapped<ChainCtl>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: Handoff> Object for ChainObj<T> {
    const KIND: Kind = Kind::QueueChain;
    /// Memory limit, permission bits.
    type Init = (u64, u32);
    type Ctl = ChainCtl;
    fn fingerprint() -> Fingerprint {
        if T::__POD.is_some() { PodVia::<T>::fingerprint() } else { FrameCell::<T>::fingerprint() }
    }
    fn data_size(_: u64) -> Option<u64> {
        Some(0)
    }
    fn new_ctl(&(limit, mode): &(u64, u32), _: u64) -> ChainCtl {
        let z = || AtomicU32::new(0);
        ChainCtl {
            newest: Line(AtomicU64::new(0)),
            oldest: Line(AtomicU64::new(0)),
            words: Line(Words {
                limit: AtomicU64::new(limit),
                mode: AtomicU32::new(mode),
                key: AtomicU64::new(random_key()),
                space_seq: z(),
                producers_waiting: z(),
                late: AtomicU64::new(0),
                dones: AtomicU64::new(0),
                done_seq: z(),
                joiners: z(),
                attached: z(),
                persisted: z(),
                // The creator holds entry 0 from the start.
                generation: AtomicU32::new(random_generation()),
                holders: std::array::from_fn(|i| AtomicU64::new(if i == 0 { crate::sys::thread::process_packed() } else { 0 })),
            }),
        }
    }
    fn from_mapped(m: Mapped<ChainCtl>) -> Self {
        ChainObj { m, _t: std::marker::PhantomData }
    }
}

/// What the handles of one process share.
struct Shared<T> {
    ctl: ChainObj<T>,
    /// Rings this process has mapped, by index (oldest first). Locked
    /// only through [`Chain::cache`] (a forked child may find it held).
    rings: Mutex<RingCache<T>>,
    /// The fork count of the process that made this handle
    /// (`thread::fork_generation`): another count means the handle was
    /// inherited through `fork()`.
    fork_gen: u32,
    /// The fork count of a process that found `rings` held for good
    /// (`Chain::inherited_cache`; `u32::MAX`: none).
    lost_gen: AtomicU32,
    /// The pid of the process that attached (created or opened) through
    /// this handle: only it detaches (a forked child inherits the handle
    /// without attaching).
    attacher: u32,
    /// Its entry in the holder table (`None`: counted in `attached`).
    holder: Option<usize>,
    /// The queue's generation, read once at attach.
    generation: u32,
    /// The key of its rings' name tags, read once at attach.
    key: u64,
    /// How this handle opens rings (and, with the creator's mode, creates
    /// them).
    opts: Options,
    /// Whether this process made (linked) a ring of the chain: at its
    /// detach it removes those another user gave up (`unlink_given_up`).
    /// (Shared with the detach of a forked child, see [`Chain::fork_hold`].)
    made_rings: Arc<std::sync::atomic::AtomicBool>,
}

/// How many times a process that inherited a handle through `fork()`
/// tries its ring cache's lock before it takes the lock for lost (held by
/// a parent thread that is not in the process).
const INHERITED_LOCK_TRIES: u32 = 200;

/// The rings a process has mapped, by index.
type RingCache<T> = Vec<(u64, ItemRing<T>)>;

/// An unbounded queue of `T`: handles to one chain of rings.
pub(super) struct Chain<T> {
    s: Arc<Shared<T>>,
    /// The ring a [`wait`](crate::wait) through this handle is announced
    /// on, kept mapped until it withdraws (`waitable.rs`).
    waiting_on: Option<ItemRing<T>>,
    /// A [`wait`](crate::wait) through this handle is counted in
    /// `producers_waiting` and sleeps on `space_seq` (the chain cannot grow
    /// past a sealed ring now), until it withdraws.
    waiting_for_space: bool,
}

impl<T> Clone for Chain<T> {
    fn clone(&self) -> Self {
        Chain { s: Arc::clone(&self.s), waiting_on: None, waiting_for_space: false }
    }
}

mod waitable;

impl<T> std::fmt::Debug for Chain<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("segment", &self.s.ctl.m).finish()
    }
}

/// Slots of a ring of `bytes` with slots of `stride` bytes: a power of two,
/// at least 2.
fn slots_for(bytes: u64, stride: u64) -> u64 {
    let n = (bytes / stride.max(1)).max(2);
    1 << (63 - n.leading_zeros())
}

impl<T: Handoff> Chain<T> {
    fn ctl(&self) -> &ChainCtl {
        self.s.ctl.m.ctl()
    }

    fn words(&self) -> &Words {
        &self.ctl().words.0
    }

    fn name(&self) -> &str {
        self.s.ctl.m.segment().name()
    }

    pub(super) fn ring_name(&self, k: u64) -> String {
        ring_name(self.name(), self.s.generation, self.s.key, k)
    }

    /// A private name to build ring `k` under before it is linked as
    /// `ring_name(k)` (unique per process and call).
    fn temp_ring_name(&self, k: u64) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        // Relaxed: only uniqueness within this process matters.
        let seq = SEQ.fetch_add(1, Ordering::Relaxed) % TEMP_SEQ;
        format!("{}{TEMP_MARK}{}x{seq}", self.ring_name(k), std::process::id())
    }

    /// How rings are opened: with this handle's trust options, and without
    /// waiting for READY (a ring's name appears only once it is complete,
    /// see `create_ring`: a ring that is not READY is foreign).
    fn ring_opts(&self) -> Options {
        self.s.opts.clone().init_timeout(std::time::Duration::ZERO)
    }

    fn wrap(ctl: ChainObj<T>, creator: bool, opts: &Options) -> Self {
        let holder = if creator { Some(0) } else { attach(&ctl.m.ctl().words.0) };
        // Relaxed: fixed at creation (published with READY); read once.
        let generation = ctl.m.ctl().words.0.generation.load(Ordering::Relaxed);
        // Relaxed: as `generation`.
        let key = ctl.m.ctl().words.0.key.load(Ordering::Relaxed);
        Chain {
            s: Arc::new(Shared {
                ctl,
                rings: Mutex::new(Vec::new()),
                fork_gen: crate::sys::thread::fork_generation(),
                lost_gen: AtomicU32::new(u32::MAX),
                attacher: std::process::id(),
                holder,
                generation,
                key,
                opts: opts.clone(),
                made_rings: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            }),
            waiting_on: None,
            waiting_for_space: false,
        }
    }

    /// Creates an unbounded queue as `name` (or under a unique name) with
    /// a memory limit; ring 0 is created with it.
    pub(super) fn create(name: Option<&str>, limit: u64, opts: &Options) -> Result<Self, OpenError> {
        let ctl: ChainObj<T> = match name {
            Some(n) => {
                check_name(n)?;
                object::create(n, (limit, opts.get_mode()), opts)?
            }
            None => object::create_unique((limit, opts.get_mode()), opts)?,
        };
        let chain = Self::wrap(ctl, true, opts);
        crate::shm::os_name(&format!("{}{TEMP_MARK}{}x{TEMP_SEQ}", chain.ring_name(MAX_RINGS), u32::MAX))?;
        // Ring 0 now or no queue: a chain without it has nothing to put
        // into, ever (a put finds no newest ring: `Closed`).
        chain.try_create_ring(0, 0)??;
        Ok(chain)
    }

    /// Opens the unbounded queue `name`.
    pub(super) fn open(name: &str, opts: &Options) -> Result<Self, OpenError> {
        Ok(Self::wrap(object::open(name, opts)?, false, opts))
    }

    /// The rings this process has mapped (locked), or `None` in a forked
    /// child that cannot take them. A handle inherited through `fork()`
    /// from a multi-threaded parent may find the lock held for ever, by a
    /// parent thread that was putting or getting at the fork and is not in
    /// the child (and the list half-changed): the child never waits for
    /// it. It tries the lock a while (yielding: a thread of its own holds
    /// it for a moment only); if it stays held, the child stops trying
    /// (`lost_gen`) and maps the rings it uses for each call only (slower,
    /// and only there). Elsewhere, one Relaxed load more than the lock.
    #[inline]
    fn cache(&self) -> Option<std::sync::MutexGuard<'_, RingCache<T>>> {
        let now = crate::sys::thread::forks_now();
        if now == self.s.fork_gen {
            return Some(self.s.rings.lock().unwrap_or_else(|e| e.into_inner()));
        }
        self.inherited_cache(now)
    }

    /// [`cache`](Self::cache) in a process that inherited the handle
    /// through `fork()` (`now`: its fork count).
    #[cold]
    fn inherited_cache(&self, now: u32) -> Option<std::sync::MutexGuard<'_, RingCache<T>>> {
        // Relaxed: a hint of this process alone (a forked child's copy of
        // the word is its own); a stale read only costs the tries below.
        if self.s.lost_gen.load(Ordering::Relaxed) == now {
            return None;
        }
        for _ in 0..INHERITED_LOCK_TRIES {
            match self.s.rings.try_lock() {
                Ok(rings) => return Some(rings),
                Err(std::sync::TryLockError::Poisoned(e)) => return Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => std::thread::yield_now(),
            }
        }
        // Relaxed: as the load above.
        self.s.lost_gen.store(now, Ordering::Relaxed);
        None
    }

    /// The ring `k`, mapped once per process (see [`Self::cache`]).
    fn ring(&self, k: u64) -> Result<ItemRing<T>, OpenError> {
        let Some(mut rings) = self.cache() else {
            return ItemRing::open(&self.ring_name(k), &self.ring_opts());
        };
        if let Some((_, r)) = rings.iter().find(|(i, _)| *i == k) {
            return Ok(r.clone());
        }
        let r = ItemRing::open(&self.ring_name(k), &self.ring_opts())?;
        // Forget rings that are retired (below `oldest`).
        // Acquire: pairs with the AcqRel CAS in `retire`.
        let oldest = self.ctl().oldest.0.load(Ordering::Acquire);
        rings.retain(|(i, _)| *i >= oldest);
        rings.push((k, r.clone()));
        Ok(r)
    }

    /// Creates ring `k` with slots for frames of `need` bytes (at least as
    /// large as ring `k - 1`'s), unless the memory limit or /dev/shm
    /// forbids it, or a foreign file holds its name (`Ok(None)`). An
    /// existing ring `k` is opened instead. `Err` only if no ring can hold
    /// frames of `need` bytes.
    ///
    /// The ring is built and made READY under a private temporary name,
    /// then linked under its real name (atomically, never replacing), so
    /// a ring's name is always either absent or a complete ring: a producer
    /// killed mid-creation leaves at most its temporary name (removed by
    /// the last holder, `unlink_rings`), never a half-made ring that
    /// wedges the chain.
    fn create_ring(&self, k: u64, need: u64) -> Result<Option<ItemRing<T>>, OpenError> {
        Ok(self.try_create_ring(k, need)?.ok())
    }

    /// [`create_ring`](Self::create_ring), saying why no ring was made
    /// (`Ok(Err(why))`: the memory limit, a full /dev/shm, a foreign file).
    fn try_create_ring(&self, k: u64, need: u64) -> Result<Result<ItemRing<T>, OpenError>, OpenError> {
        if let Ok(r) = self.ring(k) {
            return Ok(Ok(r));
        }
        let (slots, max_frame, cost) = self.plan(k, need)?;
        let w = self.words();
        // No exception to the limit: a ring takes at most half of it and
        // is sealed only once its successor exists (`advance`), so the
        // ring being drained plus its successor always fit. Only ring
        // `newest + 1` is ever made, so racing makers all make this one
        // ring (one links it, the others drop theirs): the live rings'
        // bytes plus this one's is the whole budget question.
        // Relaxed: fixed at creation.
        if self.live_bytes().saturating_add(cost) > w.limit.load(Ordering::Relaxed) {
            return Ok(Err(OpenError::InvalidArgument(format!(
                "ring {k} of {cost} bytes would pass the queue's memory limit"
            ))));
        }
        // Relaxed: fixed at creation. The rings share the queue's mode, at most the control segment's own
        // permission bits: the word is writable by every peer the queue is shared with, and a group member must
        // not make our rings world-writable (any user could then truncate one under every consumer).
        let opts = self.s.opts.clone().mode(w.mode.load(Ordering::Relaxed) & self.s.ctl.m.segment().perm());
        let temp = self.temp_ring_name(k);
        let linked = ItemRing::create(Some(&temp), slots, max_frame, &opts).and_then(|r| {
            // Persisted before it gets its real name: no process's drop
            // (nor `gc`) removes a linked ring; only `retire` and the
            // last holder do.
            r.persist();
            let linked = crate::shm::link(&temp, &self.ring_name(k));
            let _ = crate::unlink(&temp);
            linked.map(|()| r)
        });
        match linked {
            Ok(r) => {
                // Relaxed: read by this process's own detach only.
                self.s.made_rings.store(true, Ordering::Relaxed);
                if let Some(mut rings) = self.cache() {
                    rings.push((k, r.clone()));
                }
                Ok(Ok(r))
            }
            Err(e) => {
                // Somebody else linked it meanwhile: use theirs. Anything
                // else (/dev/shm full, a foreign file under the name): the
                // chain cannot grow now, as at the memory limit.
                if let OpenError::AlreadyExists(_) = e { Ok(self.ring(k).map_err(|_| e)) } else { Ok(Err(e)) }
            }
        }
    }

    /// Ring 0, made here if it is missing while the chain is open and
    /// still at ring 0 (`None` for any other ring, or a closed chain;
    /// `Some(None)` if it cannot be made now). The creator publishes the
    /// control segment before it makes ring 0 (and may be killed in
    /// between): a process that opened the queue meanwhile makes it, by
    /// the same idempotent step as any growth (one ring gets the name).
    #[cold]
    fn first_ring(&self, k: u64) -> Option<Option<ItemRing<T>>> {
        // Acquire (both): pair with the AcqRel CASes in `advance` and `retire`.
        let at_start = self.ctl().newest.0.load(Ordering::Acquire) == 0 && self.ctl().oldest.0.load(Ordering::Acquire) == 0;
        (k == 0 && at_start).then(|| self.create_ring(0, 0).ok().flatten())
    }

    /// Slots, frame size and bytes of a new ring `k` for items of `need`
    /// bytes (`put_ref`: the item being put, and the longest frame of the
    /// full ring it leaves), rings growing from `FIRST_RING_BYTES` to
    /// `MAX_RING_BYTES`. Frames fit the items of late, not the largest
    /// item ever put: after one large item, short ones get short slots
    /// again a ring later (frames that only grew held 10 240 short strings
    /// under the default limit after one 100 KB item, against millions
    /// before it). `need` 0 (no item known: a consumer linking a
    /// successor, `is_full`'s estimate): ring `k - 1`'s frames.
    fn plan(&self, k: u64, need: u64) -> Result<(u64, u64, u64), OpenError> {
        let (room, overhead) = self.ring_room();
        let stride_of = |max_frame: u64| -> Result<u64, OpenError> {
            if T::__POD.is_some() {
                Ok(std::mem::size_of::<super::item::Slot<T>>() as u64)
            } else {
                super::frames::frame_stride(max_frame).ok_or_else(|| OpenError::InvalidArgument("frame too large".into()))
            }
        };
        let prev_frame = if k == 0 { FIRST_MAX_FRAME } else { self.ring(k - 1).map_or(0, |r| r.max_frame() as u64) };
        let max_frame = if need == 0 {
            prev_frame
        } else if need > prev_frame {
            // Growing: at least twice the frames (where two such slots fit),
            // so items that grow a little at a time (`"x" * i`) make a
            // ring per doubling, not one per 64 bytes (each ring up to
            // `MAX_RING_BYTES`: the limit was reached after a few dozen).
            let grown = need.max(prev_frame.saturating_mul(2));
            if stride_of(grown).is_ok_and(|s| 2 * s <= room) { grown } else { need }
        } else {
            need
        }
        .max(FIRST_MAX_FRAME);
        let stride = stride_of(max_frame)?;
        if 2 * stride > room {
            let ring = crate::shm::memory_of((2 * stride).saturating_add(overhead));
            return Err(OpenError::InvalidArgument(if need == 0 {
                // (Only at create: ring 0, for the smallest items.)
                format!(
                    "a memory limit of {} bytes is too small: a ring takes at least {ring} bytes and two must fit (a limit of at least {} bytes)",
                    self.words().limit.load(Ordering::Relaxed),
                    ring.saturating_mul(2)
                )
            } else {
                format!("an item of {need} bytes needs rings of at least {ring} bytes: more than half the memory limit")
            }));
        }
        let bytes = (FIRST_RING_BYTES << k.min(20)).clamp(FIRST_RING_BYTES, MAX_RING_BYTES).min(room).max(2 * stride);
        let slots = slots_for(bytes, stride);
        Ok((slots, max_frame, crate::shm::memory_of((slots * stride).saturating_add(overhead))))
    }

    /// The most bytes of slots a ring may have, and a ring's bytes beyond
    /// its slots. Two rings (the one drained, its successor) must fit the
    /// limit together: a ring takes at most half of it. A ring's memory is
    /// its slots plus a fixed overhead (header, control block:
    /// `ItemRing::overhead`), its file's size, rounded up to whole pages
    /// (`memory_of`: what /dev/shm really gives it), so its file may be
    /// at most half the limit rounded down to whole pages.
    fn ring_room(&self) -> (u64, u64) {
        let overhead = ItemRing::<T>::overhead();
        // Relaxed: fixed at creation.
        let half = self.words().limit.load(Ordering::Relaxed) / 2;
        let page = crate::shm::memory_of(1);
        ((half / page * page).saturating_sub(overhead), overhead)
    }

    /// The largest encoding an item may have: its ring must take at most
    /// half the memory limit (as in `plan`).
    #[cold]
    pub(super) fn max_item(&self) -> usize {
        let cap = self.ring_room().0;
        let a = super::item::FRAME_ALIGN;
        // The most lines a slot may have, odd past two as `frame_stride`
        // makes them, and at most what it supports (the limit word is
        // shared memory: a peer may have made it anything).
        let mut lines = (cap / 2 / a).min(u64::from(u32::MAX) / 2);
        if lines > 2 && lines.is_multiple_of(2) {
            lines -= 1;
        }
        let max = (lines * a).saturating_sub(super::item::FRAME_HEAD);
        // (No slot at all under a limit too small for any ring: 0.)
        debug_assert!(lines == 0 || super::frames::frame_stride(max).is_some_and(|s| 2 * s <= cap));
        max as usize
    }

    /// Whether a put would find no room now: the newest ring is full (or
    /// sealed) and the limit forbids the next one.
    pub(super) fn is_full(&self) -> bool {
        // Acquire (both): pair with the CASes in `advance` and `retire`.
        let n = self.ctl().newest.0.load(Ordering::Acquire) & !CLOSED;
        let o = self.ctl().oldest.0.load(Ordering::Acquire);
        let Ok(r) = self.ring(n) else { return false };
        if r.len() < r.capacity() && !r.is_closed() {
            return false;
        }
        let Ok((_, _, cost)) = self.plan(n + 1, 0) else { return true };
        // Relaxed: fixed at creation.
        o.saturating_add(1) <= n && self.live_bytes().saturating_add(cost) > self.words().limit.load(Ordering::Relaxed)
    }

    /// Bytes of the live rings `oldest..=newest`: their files' sizes in
    /// whole pages (`memory_of`: the memory /dev/shm gives them), counted
    /// from the names each time (no running total in shared memory: a
    /// process killed between reserving and giving back would
    /// shrink the budget for the queue's life). A ring retired meanwhile
    /// counts 0; the untrusted indices are bounded as in `unlink_rings`.
    #[cold]
    fn live_bytes(&self) -> u64 {
        // Acquire: pairs with the CASes in `advance` and `retire`.
        let o = self.ctl().oldest.0.load(Ordering::Acquire);
        let n = (self.ctl().newest.0.load(Ordering::Acquire) & !CLOSED).clamp(o, o.saturating_add(LIVE_RINGS));
        (o..=n).map(|k| crate::shm::file_size(&self.ring_name(k)).map_or(0, crate::shm::memory_of)).fold(0, u64::saturating_add)
    }

    /// The chain's indices.
    fn links(&self) -> Links<'_> {
        Links { newest: &self.ctl().newest.0, oldest: &self.ctl().oldest.0 }
    }

    /// Ring `k` cannot take an item (full, sealed, or frames of less than
    /// `need` bytes): makes ring `k + 1`, seals ring `k` and moves `newest`
    /// on (`links.rs`). False if the memory limit forbids a new ring.
    fn advance(&self, k: u64, ring: &ItemRing<T>, need: u64) -> Result<bool, OpenError> {
        self.links().advance(self, k, ring, need)
    }

    /// Retires the drained, sealed ring `k` (`oldest == k < newest`); see
    /// `Links::retire`.
    fn retire(&self, k: u64, ring: &ItemRing<T>) -> bool {
        self.links().retire(self, k, ring)
    }

    /// Wakes whoever sleeps on the space word (producers at the limit,
    /// consumers past a sealed ring with no successor).
    fn wake_space_sleepers(&self) {
        let w = self.words();
        // Release: pairs with the sleepers' Acquire ticket load.
        w.space_seq.fetch_add(1, Ordering::Release);
        // SeqCst: pairs with the sleepers' SeqCst count (they also sleep a
        // poll period at most).
        if w.producers_waiting.load(Ordering::SeqCst) != 0 {
            wake32(&w.space_seq, u32::MAX);
        }
    }

    /// Puts `item` into the newest ring, growing the chain as needed.
    #[inline]
    pub(super) fn put(&self, item: T, mode: Mode) -> Result<(), PutFail<T>> {
        self.put_ref(&item, mode).map_err(|e| e.with(item))
    }

    /// Puts the item `item` refers to (as `ItemRing::put_ref`) into the
    /// newest ring, growing the chain as needed.
    pub(super) fn put_ref(&self, item: &T, mode: Mode) -> Result<(), PutFail<()>> {
        let mut step = 0u32;
        loop {
            step = step.saturating_add(1);
            // A `try` gives up after a few links (each link makes
            // progress, unless the indices are corrupted).
            if matches!(mode, Mode::Try) && step > TRY_LINKS {
                return Err(PutFail::Full(()));
            }
            // Acquire: pairs with the AcqRel CAS in `advance`: ring k exists.
            let n = self.ctl().newest.0.load(Ordering::Acquire);
            if n & CLOSED != 0 {
                return Err(PutFail::Closed(()));
            }
            let ring = match self.ring(n) {
                Ok(ring) => ring,
                // Acquire: as above. `newest` moved on since we read it
                // (the ring was retired and its name removed): follow it.
                Err(_) if self.ctl().newest.0.load(Ordering::Acquire) != n => continue,
                // The ring is there but this process cannot map it now
                // (no descriptor, no address space): as a full ring, not
                // a closed queue (`Closed` would tell the producer to stop).
                Err(e) if e.is_resource_shortage() => match mode {
                    Mode::Try => return Err(PutFail::Full(())),
                    Mode::Until(d) if d.passed() => return Err(PutFail::TimedOut(())),
                    Mode::Until(d) => {
                        self.wait_for_space(d);
                        continue;
                    }
                },
                Err(_) => match self.first_ring(n) {
                    Some(Some(ring)) => ring,
                    // Ring 0 cannot be made now (/dev/shm full): as a full ring.
                    Some(None) => match mode {
                        Mode::Try => return Err(PutFail::Full(())),
                        Mode::Until(d) if d.passed() => return Err(PutFail::TimedOut(())),
                        Mode::Until(d) => {
                            self.wait_for_space(d);
                            continue;
                        }
                    },
                    // Only a ring removed by hand; nothing to put into.
                    None => return Err(PutFail::Closed(())),
                },
            };
            // JoinableQueue: the ring's claim is the count (`links::Tally`).
            let put = ring.put_ref(item, Mode::Try);
            let need = match put {
                Ok(()) => return Ok(()),
                Err(PutFail::TooLarge((), len, _)) => len as u64,
                // Full or sealed: the next ring's frames fit this item and
                // the ones this ring carried lately (so a stream of large
                // items keeps its frame size), not every item ever put.
                Err(PutFail::Full(()) | PutFail::Closed(()) | PutFail::TimedOut(())) => {
                    ItemRing::frame_len(item).max(ring.largest_frame())
                }
            };
            match self.advance(n, &ring, need) {
                Ok(true) => {}
                Ok(false) => match mode {
                    Mode::Try => return Err(PutFail::Full(())),
                    Mode::Until(d) => {
                        if d.passed() {
                            return Err(PutFail::TimedOut(()));
                        }
                        self.wait_for_space(d);
                    }
                },
                // No slot size for the item, or the ring cannot be made.
                Err(_) if need > 0 => return Err(PutFail::TooLarge((), need as usize, self.max_item())),
                Err(_) => return Err(PutFail::Closed(())),
            }
        }
    }

    /// Wakes the joiners if no task is unfinished now.
    fn wake_joiners_if_done(&self) {
        let w = self.words();
        // SeqCst: a Dekker pair with the joiners' registration in
        // `join_until` (after our SeqCst count: a joiner not seen here
        // sees our count in its re-check). The count is read only when
        // somebody joins.
        if w.joiners.load(Ordering::SeqCst) != 0 && self.unfinished_known() == Some(0) {
            // Release: pairs with the joiners' Acquire ticket load.
            w.done_seq.fetch_add(1, Ordering::Release);
            wake32(&w.done_seq, u32::MAX);
        }
    }

    /// Sleeps until a ring is retired (or a poll period, or `deadline`).
    #[cold]
    fn wait_for_space(&self, deadline: Deadline) {
        let w = self.words();
        // Acquire: pairs with the Release bump in `retire`.
        let ticket = w.space_seq.load(Ordering::Acquire);
        // SeqCst: pairs with the SeqCst load in `retire` (a Dekker pair
        // with the bump before it; we re-check by sleeping at most a poll).
        w.producers_waiting.fetch_add(1, Ordering::SeqCst);
        wait32(&w.space_seq, ticket, deadline.capped(POLL));
        w.producers_waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// Gets from the oldest ring, following the chain.
    #[inline]
    pub(super) fn get(&self, mode: Mode) -> Result<T, GetFail> {
        self.get_with(mode, |ring, mode| ring.get(mode))
    }

    /// Gets from the oldest ring into `out` (as `ItemRing::get_into`).
    #[inline]
    pub(super) fn get_into(&self, out: &mut T, mode: Mode) -> Result<(), GetFail> {
        self.get_with(mode, |ring, mode| ring.get_into(out, mode))
    }

    /// Gets from the oldest ring with `get`, following the chain.
    fn get_with<V>(&self, mode: Mode, mut get: impl FnMut(&ItemRing<T>, Mode) -> Result<V, GetFail>) -> Result<V, GetFail> {
        let mut step = 0u32;
        loop {
            step = step.saturating_add(1);
            match mode {
                Mode::Try if step > TRY_LINKS => return Err(GetFail::Empty),
                // The deadline is checked on every step after the first.
                Mode::Until(d) if step > 1 && d.passed() => return Err(GetFail::TimedOut),
                _ => {}
            }
            // Acquire: pairs with the AcqRel CAS in `retire`.
            let o = self.ctl().oldest.0.load(Ordering::Acquire);
            let ring = match self.ring(o) {
                Ok(ring) => ring,
                // Retired meanwhile (its name is gone): follow `oldest`.
                // Acquire: as above.
                Err(_) if self.ctl().oldest.0.load(Ordering::Acquire) != o => continue,
                // There, but this process cannot map it now (no
                // descriptor, no address space): nothing to get *yet*, not
                // a closed queue (`Closed` ends a consumer's loop with
                // the ring's items in it).
                Err(e) if e.is_resource_shortage() => match mode {
                    Mode::Try => return Err(GetFail::Empty),
                    Mode::Until(d) => {
                        self.wait_for_space(d);
                        continue;
                    }
                },
                Err(_) => match self.first_ring(o) {
                    Some(Some(ring)) => ring,
                    // Ring 0 cannot be made now (/dev/shm full): nothing in it.
                    Some(None) => match mode {
                        Mode::Try => return Err(GetFail::Empty),
                        Mode::Until(d) => {
                            self.wait_for_space(d);
                            continue;
                        }
                    },
                    None => return Err(GetFail::Closed),
                },
            };
            // A skip the pop repairs in a ring folded meanwhile (rare) is
            // counted in the chain (`links::count_skip`), at once.
            let got = {
                let _late = super::repair::LateSink::new(&self.words().late);
                get(&ring, mode)
            };
            match got {
                Ok(v) => return Ok(v),
                Err(GetFail::Closed) => match self.links().drained(o) {
                    Drained::Closed => return Err(GetFail::Closed),
                    Drained::Unlinked => {
                        // Sealed by a producer that has not linked the
                        // successor yet (or died doing it): link it. If it
                        // cannot be made (/dev/shm full, limit), sleep on
                        // the space word until a ring is retired or the
                        // queue closes (a poll period at most), never spin.
                        if !self.advance(o, &ring, 0).unwrap_or(false) {
                            match mode {
                                Mode::Try => return Err(GetFail::Empty),
                                Mode::Until(d) => self.wait_for_space(d),
                            }
                        }
                    }
                    Drained::Retire => {
                        // Acquire: pairs with the AcqRel CAS in `retire`.
                        // Still the oldest: the successor cannot be opened
                        // (removed by hand): nothing to get from.
                        if !self.retire(o, &ring) && self.ctl().oldest.0.load(Ordering::Acquire) == o {
                            // The successor is there but cannot be mapped
                            // now (no descriptor, no address space): wait
                            // as for an item, as above.
                            match self.ring(o.wrapping_add(1)) {
                                Ok(_) => {}
                                Err(e) if e.is_resource_shortage() => match mode {
                                    Mode::Try => return Err(GetFail::Empty),
                                    Mode::Until(d) => self.wait_for_space(d),
                                },
                                Err(_) => return Err(GetFail::Closed),
                            }
                        }
                    }
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// Items in the live rings (`Links::sum_live`: each ring's count
    /// exact at its instant, no live ring left out).
    pub(super) fn len(&self) -> usize {
        // Untrusted indices: at most `LIVE_RINGS` rings are looked at.
        // A ring's `len` settles its front as a pop does, and may so repair
        // a dead producer's slot: counted as in `get` (`LateSink`).
        let _late = super::repair::LateSink::new(&self.words().late);
        let n = self.links().sum_live(self, LIVE_RINGS, |_, _, r| r.len() as u64);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Whether no live ring holds an item: false when a live ring is
    /// there but this process cannot map it now (no descriptor, no address
    /// space), whose items `len` cannot count.
    pub(super) fn is_empty(&self) -> bool {
        COUNT_SHORT.with(|s| s.set(false));
        let n = self.len();
        n == 0 && !COUNT_SHORT.with(|s| s.replace(false))
    }

    /// Closes the queue for every process.
    pub(super) fn close(&self) {
        // SeqCst: `advance`'s CAS fails from now on, so `n` stays newest.
        let n = self.ctl().newest.0.fetch_or(CLOSED, Ordering::SeqCst) & !CLOSED;
        if let Ok(r) = self.ring(n) {
            r.close();
        }
        let w = self.words();
        // Release: pairs with the producers' Acquire ticket load.
        w.space_seq.fetch_add(1, Ordering::Release);
        wake32(&w.space_seq, u32::MAX);
    }

    pub(super) fn name_str(&self) -> &str {
        self.name()
    }

    pub(super) fn persist(&self) {
        // Release: pairs with the Acquire load in `Shared::drop`.
        self.words().persisted.store(1, Ordering::Release);
        self.s.ctl.m.segment().persist();
    }

    /// Items put and not yet marked done: landed, less late skips, less
    /// `task_done` calls.
    pub(super) fn unfinished(&self) -> u64 {
        self.count_unfinished()
    }

    /// [`unfinished`](Self::unfinished), or `None` if a live ring is
    /// there but this process cannot map it now (no descriptor, no
    /// address space: the count would leave its items out, and a joiner
    /// would return with tasks unfinished).
    fn unfinished_known(&self) -> Option<u64> {
        COUNT_SHORT.with(|s| s.set(false));
        let n = self.count_unfinished();
        (!COUNT_SHORT.with(|s| s.replace(false))).then_some(n)
    }

    fn count_unfinished(&self) -> u64 {
        let w = self.words();
        // Acquire (both): pair with the Release increments.
        let done = w.dones.load(Ordering::Acquire).saturating_add(w.late.load(Ordering::Acquire));
        self.links().landed(self, LIVE_RINGS).saturating_sub(done)
    }

    pub(super) fn task_done(&self) -> Result<(), TaskDoneError> {
        let w = self.words();
        loop {
            let d = w.dones.load(Ordering::Relaxed);
            // (`d + 1` cannot pass `u64::MAX` when the count is not 0,
            // unless a hostile peer wrote the word meanwhile: an error then.)
            // (A count that leaves out rings this process cannot map
            // now cannot tell: the task is taken as unfinished.)
            let (true, Some(d1)) = (self.unfinished_known() != Some(0), d.checked_add(1)) else {
                return Err(TaskDoneError);
            };
            // SeqCst: a Dekker pair with the joiners' registration.
            if w.dones.compare_exchange(d, d1, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                break;
            }
        }
        self.wake_joiners_if_done();
        Ok(())
    }

    pub(super) fn join_until(&self, deadline: Deadline) -> bool {
        let w = self.words();
        loop {
            // Unknown (a ring this process cannot map now): not done; the
            // wait below is a poll period at most, so it counts again.
            if self.unfinished_known() == Some(0) {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            // Acquire: pairs with the Release bump in `task_done`.
            let ticket = w.done_seq.load(Ordering::Acquire);
            // SeqCst (and the fence: the re-check's loads are Acquire):
            // pairs with task_done's SeqCst CAS and load.
            w.joiners.fetch_add(1, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            if self.unfinished_known() != Some(0) {
                wait32(&w.done_seq, ticket, deadline.capped(POLL));
            }
            w.joiners.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Testing aid: `MpmcQueue::__claim_and_stop` on the newest ring (a
    /// put), or the oldest (`pop`).
    #[cfg(feature = "test-hooks")]
    pub(super) fn claim_and_stop(&self, pop: bool) -> bool {
        // Acquire: pairs with the CASes in `advance` and `retire`.
        let k = if pop { self.ctl().oldest.0.load(Ordering::Acquire) } else { self.ctl().newest.0.load(Ordering::Acquire) & !CLOSED };
        self.ring(k).is_ok_and(|r| super::itemring::each!(&r, q => q.__claim_and_stop(pop)))
    }

    /// Testing aid: seals the newest ring without linking a successor, as
    /// a producer that died between the two steps leaves it.
    #[cfg(feature = "test-hooks")]
    pub(super) fn seal_newest(&self) {
        // Acquire: pairs with the CAS in `advance`.
        let n = self.ctl().newest.0.load(Ordering::Acquire) & !CLOSED;
        if let Ok(r) = self.ring(n) {
            r.close();
        }
    }

}

impl<T> Drop for Shared<T> {
    /// The last process to detach from the queue removes the names of the
    /// rings left (the creator leaving first must not take the rings from
    /// the others: they may not have mapped them yet).
    fn drop(&mut self) {
        // A forked child inherits the handle but did not attach.
        if self.attacher != std::process::id() {
            return;
        }
        let me = crate::sys::thread::process_packed();
        leave(&self.ctl.m, self.holder, me, self.generation, self.key, &self.made_rings);
    }
}

/// Detaches holder `entry` (of process `me`) from the chain `m`; the last
/// live holder removes the rings left.
fn leave(
    m: &Mapped<ChainCtl>,
    entry: Option<usize>,
    me: u64,
    generation: u32,
    key: u64,
    made_rings: &std::sync::atomic::AtomicBool,
) {
    let ctl = m.ctl();
    let w = &ctl.words.0;
    links::detach(&w.holders, &w.attached, entry, me);
    // Acquire: pairs with the Release store in `persist`.
    let persisted = w.persisted.load(Ordering::Acquire) != 0;
    if !persisted && !links::held(&w.holders, &w.attached, crate::sys::thread::owner_is_dead) {
        unlink_rings(ctl, m.segment().name(), generation, key);
    } else if made_rings.load(Ordering::Relaxed) {
        // Rings this process made (its own, so `gc` leaves them while
        // it lives) that another user retired, or removed with the
        // queue, and could not remove.
        unlink_given_up(ctl, m.segment().name(), generation);
    }
}

impl<T> Chain<T> {
    /// For a child forked with this handle in its argument: the child
    /// inherits the handle without opening the queue, so, unlike a
    /// spawned child, it would not be a holder, and the parent leaving
    /// (its last handle dropped, its copy of the argument released once
    /// the child started) would remove the rings under the running child:
    /// rings the child had not mapped yet gone (a consumer waits for items
    /// it can no longer reach), rings made afterwards never removed. So
    /// the forked child attaches before it starts (`Process::start`, fork
    /// path), and the returned step, run when its entry is done, leaves as
    /// a holder's drop does. (A child killed before that is a dead holder:
    /// ignored by the others.)
    pub(super) fn fork_hold(&self) -> crate::process::handoff::ForkHold {
        let m = self.s.ctl.m.clone();
        let (generation, key) = (self.s.generation, self.s.key);
        let made_rings = Arc::clone(&self.s.made_rings);
        Box::new(move || {
            let me = crate::sys::thread::process_packed();
            let entry = attach(&m.ctl().words.0);
            Box::new(move || leave(&m, entry, me, generation, key, &made_rings))
        })
    }
}

/// Records this process as a holder of the chain: a free entry of the
/// table, else one of a dead holder, else only the overflow count.
fn attach(w: &Words) -> Option<usize> {
    links::attach(&w.holders, &w.attached, crate::sys::thread::process_packed(), crate::sys::thread::owner_is_dead)
}

/// Removes the names of the live rings of the chain `ctl` (and of a
/// successor created but not linked yet).
fn unlink_rings(ctl: &ChainCtl, name: &str, generation: u32, key: u64) {
    // Acquire: pairs with the CASes in `advance` and `retire`; both are
    // bounded below (untrusted indices).
    let o = ctl.oldest.0.load(Ordering::Acquire);
    let n = (ctl.newest.0.load(Ordering::Acquire) & !CLOSED).clamp(o, o.saturating_add(LIVE_RINGS));
    // n + 1: a successor created by a producer that died before linking it.
    for k in o..=n.saturating_add(1) {
        let _ = crate::shm::unlink_or_release(&ring_name(name, generation, key, k));
    }
    // Temporary names of rings whose creator was killed before linking,
    // and rings below `oldest` whose retiring consumer was killed before
    // it removed their names.
    let prefix = format!("{name}.{generation:08x}.");
    for left in crate::shm::names_starting_with(&prefix) {
        if crate::shm::is_ring_name(&left[name.len() + 1..]) {
            let _ = crate::shm::unlink_or_release(&left);
        }
    }
}

/// Removes the names of the rings of the chain `ctl` that a process of
/// another user gave up to us (/dev/shm is sticky: it could not remove
/// them, `unlink_or_release`): retired ones (below `oldest`), and any
/// other it released (our file, not persisted: a linked ring is persisted
/// before it gets its name, so only a release clears the flag; the queue
/// was removed with `unlink(name)`). Temporary names are left to their
/// makers.
fn unlink_given_up(ctl: &ChainCtl, name: &str, generation: u32) {
    // Acquire: pairs with the CAS in `retire`.
    let o = ctl.oldest.0.load(Ordering::Acquire);
    let prefix = format!("{name}.{generation:08x}.");
    for left in crate::shm::names_starting_with(&prefix) {
        let k = left[prefix.len()..].split('.').next().and_then(|k| k.parse::<u64>().ok());
        let linked = crate::shm::is_ring_name(&left[name.len() + 1..]) && !left[prefix.len()..].contains(TEMP_MARK);
        if linked && (k.is_some_and(|k| k < o) || crate::shm::is_ours_unpersisted(&left)) {
            let _ = crate::shm::unlink_or_release(&left);
        }
    }
}

/// For [`gc`](crate::gc): whether the unbounded queue's control segment
/// open as `fd` (judged ours, its creator dead) still has a live holder
/// (then that holder removes the rings when it leaves, and `gc` leaves
/// the queue alone). Read with `pread` (no mapping, see `gc`); an
/// unreadable table counts as held (nothing is removed on doubt).
pub(crate) fn chain_held(fd: &std::os::fd::OwnedFd) -> bool {
    let base = crate::shm::HEADER_SIZE as u64 + std::mem::offset_of!(ChainCtl, words) as u64;
    let read = |at: u64, buf: &mut [u8]| crate::sys::shm::read_at(fd, buf, base + at).ok() == Some(buf.len());
    let mut attached = [0u8; 4];
    let mut holders = [0u8; 8 * HOLDERS];
    if !read(std::mem::offset_of!(Words, attached) as u64, &mut attached)
        || !read(std::mem::offset_of!(Words, holders) as u64, &mut holders)
    {
        return true;
    }
    let holders: Vec<AtomicU64> =
        holders.chunks_exact(8).map(|h| AtomicU64::new(u64::from_ne_bytes(h.try_into().unwrap_or_default()))).collect();
    links::held(&holders, &AtomicU32::new(u32::from_ne_bytes(attached)), crate::sys::thread::owner_is_dead)
}

/// The name of ring `k` of the queue `name` of generation `generation`
/// and tag key `key`: `<name>.<generation:08x>.<k>.<tag:016x>`. The tag
/// (SipHash-2-4 of `k` under `key`) makes the name of a ring not made yet
/// unguessable from the names of the others, which every user can list.
/// The longest name of an unbounded queue: its rings' names (and their
/// temporary names) add [`RING_SUFFIX_LEN`] bytes to it, and every one
/// must be a valid name (at most `MAX_NAME_LEN`).
pub(super) const MAX_NAME_LEN: usize = crate::shm::MAX_NAME_LEN - RING_SUFFIX_LEN;
/// What the longest (temporary) ring name adds to the queue's name (unit
/// test `the_ring_suffix_is_as_long_as_the_longest_ring_names`).
const RING_SUFFIX_LEN: usize = 60;

/// The longest temporary name of a ring of the queue `name`.
fn longest_ring_name(name: &str) -> String {
    format!("{}{TEMP_MARK}{}x{TEMP_SEQ}", ring_name(name, 0, 0, MAX_RINGS), u32::MAX)
}

/// Checks a name for an unbounded queue: a valid name, short enough for
/// its rings' names. The error names the name as given.
fn check_name(name: &str) -> Result<(), OpenError> {
    crate::shm::os_name(name)?;
    if name.len() > MAX_NAME_LEN || crate::shm::os_name(&longest_ring_name(name)).is_err() {
        return Err(OpenError::InvalidName {
            name: name.to_owned(),
            reason: "longer than 187 bytes, the longest name of an unbounded queue (its rings' names add 60 bytes)",
        });
    }
    Ok(())
}

fn ring_name(name: &str, generation: u32, key: u64, k: u64) -> String {
    format!("{name}.{generation:08x}.{k}.{:016x}", siphash24(key, u64::from(generation), k))
}

/// SipHash-2-4 (Aumasson and Bernstein) of the 8-byte message `m` under
/// the key `(k0, k1)`: a keyed hash whose outputs tell nothing of the key,
/// written out here because std's hasher algorithm may change between
/// Rust versions (two programs built by different compilers share queues).
fn siphash24(k0: u64, k1: u64, m: u64) -> u64 {
    let mut v = [k0 ^ 0x736f_6d65_7073_6575, k1 ^ 0x646f_7261_6e64_6f6d, k0 ^ 0x6c79_6765_6e65_7261, k1 ^ 0x7465_6462_7974_6573];
    let round = |v: &mut [u64; 4]| {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    };
    // The message (one 8-byte word), then the final word: length 8 << 56.
    for w in [m, 8 << 56] {
        v[3] ^= w;
        round(&mut v);
        round(&mut v);
        v[0] ^= w;
    }
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// A secret key for the rings' name tags: std's random hash keys (seeded
/// from the OS's random source once per process, then stepped per
/// `RandomState`), mixed with the time and the pid.
fn random_key() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

/// A generation unlikely to repeat for one name (a [`random_key`]'s low
/// half).
fn random_generation() -> u32 {
    random_key() as u32
}

/// The chain's rings, for the link protocol (`links.rs`).
impl<T: Handoff> Rings for Chain<T> {
    type Ring = ItemRing<T>;
    type Error = OpenError;
    fn make(&self, k: u64, need: u64) -> Result<Option<ItemRing<T>>, OpenError> {
        self.create_ring(k, need)
    }
    fn seal(&self, ring: &ItemRing<T>) {
        ring.close();
    }
    fn linked(&self, _: u64) {
        // Consumers (a `get`, a `wait`) that found ring k sealed with no
        // successor sleep on the space word: the chain goes on now.
        self.wake_space_sleepers();
    }
    fn open(&self, k: u64) -> Option<ItemRing<T>> {
        self.ring(k).ok()
    }
    #[inline]
    fn visit(&self, from: u64, to: u64, mut f: impl FnMut(&ItemRing<T>)) -> u64 {
        // One lock for the rings already mapped (no handle cloned); a ring
        // not mapped yet is mapped first (`ring`, which locks itself).
        // `next`: the index to visit next, `None` once `to` was (never
        // past `u64::MAX`: the indices are untrusted).
        let mut next = (from <= to).then_some(from);
        let mut seen = 0u64;
        while let Some(k) = next {
            if let Some(rings) = self.cache() {
                // Mapped in order of index, mostly: start where `k` is.
                let mut at = rings.iter().position(|(i, _)| *i == k);
                while let (Some(j), Some(k)) = (at, next) {
                    f(&rings[j].1);
                    seen += 1;
                    next = (k < to).then(|| k + 1);
                    let Some(k) = next else { break };
                    at = match rings.get(j + 1) {
                        Some((i, _)) if *i == k => Some(j + 1),
                        _ => rings.iter().position(|(i, _)| *i == k),
                    };
                }
            }
            if let Some(k) = next {
                match self.ring(k) {
                    Err(e) => {
                        if e.is_resource_shortage() {
                            COUNT_SHORT.with(|s| s.set(true));
                        }
                        break;
                    }
                    // Not cached (a forked child, see `cache`): visited here.
                    Ok(r) if self.cache().is_none() => {
                        f(&r);
                        seen += 1;
                        next = (k < to).then(|| k + 1);
                    }
                    Ok(_) => {}
                }
            }
        }
        seen
    }
    fn tally<'r>(&self, ring: &'r ItemRing<T>) -> super::links::Tally<'r> {
        ring.tally()
    }
    fn retired(&self, k: u64, _ring: &ItemRing<T>) {
        // Another user's ring (sticky /dev/shm): given up to its owner.
        let _ = crate::shm::unlink_or_release(&self.ring_name(k));
        self.wake_space_sleepers();
        if let Some(mut rings) = self.cache() {
            rings.retain(|(i, _)| *i > k);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_ring_suffix_is_as_long_as_the_longest_ring_names() {
        for name in ["q", "a-longer-name"] {
            assert_eq!(longest_ring_name(name).len() - name.len(), RING_SUFFIX_LEN);
        }
        assert_eq!(MAX_NAME_LEN, 187); // as `check_name`'s message says
        let longest = "q".repeat(MAX_NAME_LEN);
        assert!(check_name(&longest).is_ok());
        assert!(crate::shm::os_name(&longest_ring_name(&longest)).is_ok());
        assert!(matches!(check_name(&format!("{longest}q")), Err(OpenError::InvalidName { name, .. }) if name.len() == 188));
    }

    /// The reference test vector of the SipHash paper (appendix A): key
    /// 00..0f, the 8-byte message 00..07.
    #[test]
    fn siphash24_matches_the_reference_vector() {
        assert_eq!(siphash24(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908, 0x0706_0504_0302_0100), 0x93f5_f579_9a93_2462);
    }

    /// Ring names carry a tag that depends on the key, and are still ring
    /// names for cleanup (`is_ring_name`), temporary names included.
    #[test]
    fn ring_names_are_keyed_and_recognised() {
        let a = ring_name("q", 0xabcd_0123, 1, 7);
        let b = ring_name("q", 0xabcd_0123, 2, 7);
        assert_ne!(a, b);
        assert!(a.starts_with("q.abcd0123.7."), "{a}");
        for n in [a.clone(), format!("{a}{TEMP_MARK}12x3"), "q.abcd0123.7".into(), "q.abcd0123.7.t1x2".into()] {
            assert!(crate::shm::is_ring_name(&n[2..]), "{n}");
        }
        for n in ["q.abcd0123.x", "q.abcd012.7", "q.abcd0123.7.0123", "q.abcd0123.7.0123456789abcdefz"] {
            assert!(!crate::shm::is_ring_name(&n[2..]), "{n}");
        }
    }
}
