//! Participant records of a lock-free MPMC ring: who may be in the middle
//! of which claim, so that a slot claimed by a process that died can be
//! told from a slot claimed by one that is merely slow (see
//! [`vyukov`](super::vyukov)).
//!
//! Each thread that operates on a queue owns one [`Record`] in the queue's
//! table (claimed on first use, found again through a thread-local cache,
//! reclaimed from threads that have exited or died). Before every claim the
//! thread announces the positions in its record; the claim CAS (Release)
//! publishes the announcement to anyone who sees the claim (Acquire). A
//! repairer scanning the table after seeing the claim therefore finds the
//! claimant's announcement unless the claimant already finished. Threads
//! beyond the table's size share one overflow record under a robust lock:
//! slower, never wrong.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::sync::raw_lock::{Acquired, RawLock, Wait};
use crate::sys::thread;

use super::vyukov::covers;

/// Records in a queue's table (plus one overflow record).
pub(crate) const RECORDS: usize = 128;

/// One participant's announcement, on its own cache line (written by its
/// owner on every operation).
#[repr(C, align(64))]
pub(crate) struct Record {
    /// Packed thread identity of the owner (`thread::me`), or 0 when free.
    owner: AtomicU64,
    /// First announced position + 1, or 0: nothing announced.
    start: AtomicU64,
    /// Number of positions << 1 | 1 for a pop.
    span: AtomicU64,
}

impl Record {
    const fn new() -> Self {
        Record { owner: AtomicU64::new(0), start: AtomicU64::new(0), span: AtomicU64::new(0) }
    }

    /// Announces a claim of `n` positions from `start` (a pop if `pop`).
    #[inline(always)]
    pub(crate) fn announce(&self, start: u64, n: u64, pop: bool) {
        // Relaxed: the claim CAS that follows is a Release operation and
        // publishes both stores to whoever sees the claim.
        self.span.store((n << 1) | u64::from(pop), Ordering::Relaxed);
        self.start.store(start.wrapping_add(1), Ordering::Relaxed);
    }

    /// Covers nothing any more.
    #[inline(always)]
    pub(crate) fn withdraw(&self) {
        self.start.store(0, Ordering::Relaxed);
    }
}

/// The record table, part of a queue's control block.
#[repr(C)]
pub(crate) struct Table {
    /// How many records have ever been handed out (a high-water mark).
    used: AtomicU32,
    overflow_lock: RawLock,
    records: [Record; RECORDS + 1],
}

impl Table {
    pub(crate) fn new() -> Self {
        Table {
            used: AtomicU32::new(0),
            overflow_lock: RawLock::new(),
            records: [const { Record::new() }; RECORDS + 1],
        }
    }

    /// Records handed out so far (clamped: the count is untrusted).
    fn used(&self) -> usize {
        // Acquire: pairs with the AcqRel increment in `claim_slow`, so the
        // new record's owner word is visible too.
        (self.used.load(Ordering::Acquire) as usize).min(RECORDS)
    }

    /// The calling thread's record, or the overflow record under its lock
    /// when the table is full of live owners.
    #[inline(always)]
    pub(crate) fn mine(&self) -> Mine<'_> {
        let key = self as *const Table as usize;
        let me = thread::me();
        let (k, i) = CACHE.with(|c| c[slot_of(key)].get());
        if k == key
            && let Some(r) = self.records.get(i as usize)
            // Relaxed: only this thread or a reclaimer after its death
            // writes its owner word.
            && r.owner.load(Ordering::Relaxed) == me
        {
            return Mine::Own(r);
        }
        self.mine_slow(key, me, if k == key { i } else { 0 })
    }

    /// `cached`: what the cache held for this table (0 if nothing). A
    /// thread that found the table full is remembered as an overflow user
    /// (cache value `OVERFLOW + n`) and tries to claim a record again only
    /// every `RETRY` operations: a claim scans the table and reads `/proc`.
    #[cold]
    #[inline(never)]
    fn mine_slow(&self, key: usize, me: u64, cached: u32) -> Mine<'_> {
        const OVERFLOW: u32 = 1 << 31;
        const RETRY: u32 = 1024;
        let set = |v: u32| CACHE.with(|c| c[slot_of(key)].set((key, v)));
        if cached > OVERFLOW {
            set(cached - 1);
            return Mine::Overflow(self.overflow(me));
        }
        match self.claim(me) {
            Some(i) => {
                set(i as u32);
                Mine::Own(&self.records[i])
            }
            None => {
                set(OVERFLOW + RETRY);
                Mine::Overflow(self.overflow(me))
            }
        }
    }

    /// Finds or claims a record for `me`.
    fn claim(&self, me: u64) -> Option<usize> {
        let used = self.used();
        // Relaxed (owner loads): a hint; the CASes below decide.
        if let Some(i) = (0..used).find(|&i| self.records[i].owner.load(Ordering::Relaxed) == me) {
            return Some(i);
        }
        let take = |i: usize, from: u64| {
            let r = &self.records[i];
            // Acquire: pairs with the Release store in `Overflow::drop` or
            // the previous owner's claim; we see its last announcement.
            let ok = r.owner.compare_exchange(from, me, Ordering::Acquire, Ordering::Relaxed).is_ok();
            if ok {
                // The previous owner's announcement is no evidence of ours.
                r.withdraw();
            }
            ok
        };
        // A free record, then one whose owner has exited or died.
        for i in 0..used {
            if self.records[i].owner.load(Ordering::Relaxed) == 0 && take(i, 0) {
                return Some(i);
            }
        }
        for i in 0..used {
            let o = self.records[i].owner.load(Ordering::Relaxed);
            if o != 0 && o != me && thread::owner_is_dead(o) && take(i, o) {
                return Some(i);
            }
        }
        // A new one.
        loop {
            let u = self.used.load(Ordering::Relaxed);
            if u as usize >= RECORDS {
                return None;
            }
            // AcqRel: pairs with the Acquire load in `used`.
            if self.used.compare_exchange(u, u + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() && take(u as usize, 0)
            {
                return Some(u as usize);
            }
        }
    }

    #[cold]
    fn overflow(&self, me: u64) -> Overflow<'_> {
        match self.overflow_lock.lock(Wait::Forever) {
            // The dead holder's claim, if any, stays visible in the record
            // until now; it is repaired by whoever waits on it.
            Ok(Acquired::OwnerDied) => self.overflow_lock.make_consistent(),
            Ok(Acquired::Clean) => {}
            // Only a foreign process can make the lock unrecoverable:
            // carry on without it rather than hang.
            Err(_) => {}
        }
        let r = &self.records[RECORDS];
        r.withdraw();
        // Release: pairs with the Acquire owner load in `live_claim`: a
        // scanner that sees us as the owner sees the withdrawal too.
        r.owner.store(me, Ordering::Release);
        Overflow { table: self }
    }

    /// Whether a live participant has announced a claim covering `pos` of
    /// the given kind. The caller loaded the index that shows `pos` claimed
    /// with Acquire, so the claimant's announcement is visible (or it has
    /// finished since).
    pub(crate) fn live_claim(&self, pos: u64, by_pop: bool) -> bool {
        let used = self.used();
        self.records[..used].iter().chain(std::iter::once(&self.records[RECORDS])).any(|r| {
            // Acquire: pairs with the Release owner store in `overflow` /
            // the Acquire CAS chain of `claim`.
            let owner = r.owner.load(Ordering::Acquire);
            let start = r.start.load(Ordering::Relaxed);
            let span = r.span.load(Ordering::Relaxed);
            owner != 0
                && start != 0
                && covers(start - 1, span >> 1, span & 1 == 1, pos, by_pop)
                && !thread::owner_is_dead(owner)
        })
    }
}

/// The calling thread's record for one operation.
pub(crate) enum Mine<'a> {
    Own(&'a Record),
    Overflow(Overflow<'a>),
}

impl Mine<'_> {
    #[inline(always)]
    pub(crate) fn record(&self) -> &Record {
        match self {
            Mine::Own(r) => r,
            Mine::Overflow(o) => &o.table.records[RECORDS],
        }
    }
}

/// The overflow record, held under its lock for one operation.
pub(crate) struct Overflow<'a> {
    table: &'a Table,
}

impl Drop for Overflow<'_> {
    fn drop(&mut self) {
        let r = &self.table.records[RECORDS];
        r.withdraw();
        self.table.overflow_lock.unlock();
    }
}

thread_local! {
    /// Direct-mapped cache: record table address -> index of our record.
    static CACHE: [Cell<(usize, u32)>; 4] = const { [const { Cell::new((0, 0)) }; 4] };
}

/// Cache slot of a table address (tables sit at the same offset in
/// page-aligned mappings, so the page number tells them apart).
#[inline(always)]
fn slot_of(key: usize) -> usize {
    (key >> 12) & 3
}
