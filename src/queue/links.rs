//! The unbounded queue's link protocol (`chain.rs`), apart from the
//! segments it links: two indices, `newest` (the ring producers put into;
//! bit 63: closed for everyone) and `oldest` (the ring consumers drain),
//! and the holder table. Any process may take every step, and each step is
//! one CAS, so a process killed between two steps delays nobody:
//!
//! - [`Links::advance`]: ring `k` cannot take an item. Make ring `k + 1`
//!   first (idempotent), then seal ring `k`, then move `newest` from `k`
//!   to `k + 1`. A ring is never sealed without a successor to go on with;
//!   when the successor cannot be made, ring `k` stays open.
//! - [`Links::drained`]: the oldest ring was found sealed and drained:
//!   retire it (`oldest` moves on with one CAS, [`Links::retire`]), or,
//!   if it is still the newest, link its successor (a producer sealed it
//!   and has not moved `newest` yet, or died doing it), or report the
//!   queue closed.
//! - holders ([`attach`], [`detach`], [`held`]): every process that
//!   creates or opens the queue takes an entry (its packed identity); the
//!   last one to leave, finding no live holder, removes the rings.
//! - counts (JoinableQueue, [`Tally`]): the items that landed in the
//!   chain are read from the rings themselves, never counted beside them:
//!   each ring's claims (its `tail`: the claim CAS *is* the count) less
//!   its dead producers' skipped slots, plus a base carried across
//!   retirement. [`Links::retire`] folds the retired ring's final count
//!   into its successor's `base` word (one idempotent CAS, before the
//!   `oldest` CAS that makes the successor the oldest), and freezes the
//!   retired ring's skip count ([`FOLDED`]): a skip counted after that (a
//!   repairer between its slot repair and its count while another
//!   consumer drained the ring) is refused by [`count_skip`] and counted
//!   by the caller in the chain's own `late` word. So a process killed at
//!   any instruction of a put leaves the count exact: the claim counts the
//!   item, the repair of its unfinished slot uncounts it.
//!
//! Checked under loom (`tests/loom.rs`) with heap-backed rings (the MPMC
//! ring of `vyukov.rs`, its CLOSED bit as the seal): producers growing the
//! chain while consumers follow it deliver every item once and in each
//! producer's order, and the last holder to leave is seen as the last.

use super::vyukov::POS;
use crate::wait::atomic::{AtomicU32, AtomicU64, Ordering};

/// Bit of `newest`: the queue is closed for everyone (`close_all`).
pub const CLOSED: u64 = 1 << 63;

/// Bit of a ring's skip count: the ring was retired and its count folded
/// into its successor's base; no skip is counted in it any more
/// ([`count_skip`]).
pub const FOLDED: u64 = 1 << 63;

/// A ring's JoinableQueue counters (words of its control block).
pub struct Tally<'a> {
    /// The ring's claim index (`tail`): items claimed (bit 63: sealed).
    pub claims: &'a AtomicU64,
    /// Dead producers' slots skipped (bit 63: [`FOLDED`]).
    pub skipped: &'a AtomicU64,
    /// Items landed in the rings before this one, plus 1 (0: not folded
    /// yet; ring 0's base is 0). Written once, before the ring becomes the
    /// oldest.
    pub base: &'a AtomicU64,
}

impl Tally<'_> {
    /// Items that landed in this ring: claims, less skipped slots (each
    /// exact at its instant; untrusted words, so saturating).
    #[inline]
    pub fn landed(&self) -> u64 {
        // Acquire (both): pair with the Release claim CASes and the
        // `count_skip` updates (and the folding `fetch_or`).
        let skipped = self.skipped.load(Ordering::Acquire) & !FOLDED;
        (self.claims.load(Ordering::Acquire) & POS).saturating_sub(skipped)
    }

    /// Items landed in the rings before ring `k` (this one): set before
    /// ring `k` became the oldest.
    #[inline]
    pub fn base(&self, k: u64) -> u64 {
        if k == 0 {
            return 0;
        }
        // Acquire: pairs with the AcqRel CAS in `Links::retire` (the
        // reader Acquired `oldest`, moved after it).
        self.base.load(Ordering::Acquire).saturating_sub(1)
    }
}

/// Counts a dead producer's skipped slot in its ring's `skipped` word:
/// false if the ring's count was already folded ([`FOLDED`]; the caller
/// counts the skip in the chain's late count instead). One atomic update:
/// a skip is in exactly one of the two counts.
pub fn count_skip(skipped: &AtomicU64) -> bool {
    // AcqRel: pairs with the folding `fetch_or` in `Links::retire` (one
    // modification order decides which count has the skip) and the
    // Acquire loads in `Tally::landed`.
    skipped.fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| (s & FOLDED == 0).then(|| s.wrapping_add(1))).is_ok()
}

/// The rings a chain links: made, sealed and given back by the caller
/// (segments in shared memory, or heap rings in the loom model).
pub trait Rings {
    /// One ring.
    type Ring;
    /// Why a ring can never be made (not "not now").
    type Error;
    /// Makes ring `k` for items of `need` bytes, or opens the one another
    /// participant made; `Ok(None)`: not now (a limit, no space).
    fn make(&self, k: u64, need: u64) -> Result<Option<Self::Ring>, Self::Error>;
    /// Seals `ring`: its producers' claims fail from now on.
    fn seal(&self, ring: &Self::Ring);
    /// Ring `k + 1` was linked (woken: whoever waits for the chain to go on).
    fn linked(&self, k: u64);
    /// Ring `k` was retired by this participant (the one whose CAS won):
    /// give its name and memory back.
    fn retired(&self, k: u64, ring: &Self::Ring);
    /// The live ring `k` (made and linked), if it can be opened.
    fn open(&self, k: u64) -> Option<Self::Ring>;
    /// Calls `f` with the live rings `from..=to` in order, stopping at
    /// the first that cannot be opened; returns how many it visited.
    fn visit(&self, from: u64, to: u64, f: impl FnMut(&Self::Ring)) -> u64;
    /// The ring's JoinableQueue counters.
    fn tally<'r>(&self, ring: &'r Self::Ring) -> Tally<'r>;
}

/// What follows a sealed, drained oldest ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// It is the newest and the queue is closed: `get` fails `Closed`.
    Closed,
    /// It is the newest, not linked on yet: link it ([`Links::advance`]).
    Unlinked,
    /// A newer ring exists: retire it ([`Links::retire`]) and go on.
    Retire,
}

/// The two indices of a chain.
pub struct Links<'a> {
    /// Index of the ring producers put into; bit 63: [`CLOSED`].
    pub newest: &'a AtomicU64,
    /// Index of the oldest live ring.
    pub oldest: &'a AtomicU64,
}

impl Links<'_> {
    /// Ring `k` cannot take an item (full, sealed, or frames of less than
    /// `need` bytes): makes ring `k + 1`, seals ring `k` and moves `newest`
    /// on. `Ok(false)` if ring `k + 1` cannot be made now (ring `k` then
    /// stays open).
    pub fn advance<R: Rings>(&self, rings: &R, k: u64, ring: &R::Ring, need: u64) -> Result<bool, R::Error> {
        // Acquire: pairs with the AcqRel CAS below (by anyone).
        if self.newest.load(Ordering::Acquire) != k {
            rings.seal(ring);
            return Ok(true);
        }
        if rings.make(k + 1, need)?.is_none() {
            return Ok(false);
        }
        rings.seal(ring);
        // AcqRel: publishes ring k + 1 (it exists, complete) to whoever
        // reads `newest`; fails if another participant moved it, or closed
        // the queue.
        if self.newest.compare_exchange(k, k + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            rings.linked(k);
        }
        Ok(true)
    }

    /// Items that landed in the chain (put and not skipped), read from the
    /// rings ([`Tally`]): the oldest ring's base, plus each live ring's
    /// claims less its skips (see [`sum_live`](Self::sum_live)). An item a
    /// caller got is in it (its ring's claim, or a base folded from it).
    pub fn landed<R: Rings>(&self, rings: &R, max_rings: u64) -> u64 {
        self.sum_live(rings, max_rings, |first, k, r| {
            let t = rings.tally(r);
            // The oldest ring visited: its base first.
            if first { t.base(k).saturating_add(t.landed()) } else { t.landed() }
        })
    }

    /// The sum of `count(first, k, ring)` over the live rings
    /// `oldest..=newest` (at most `max_rings` after the oldest: the indices
    /// are untrusted; `first`: ring `k` is the oldest visited). Each
    /// ring's count is exact at its instant; the sum is not one snapshot,
    /// but it never leaves a live ring out: a ring that cannot be opened
    /// (retired and its name removed since `oldest` was read) means
    /// `oldest` moved, and the sum starts again from the new oldest (a
    /// sum that stopped there would leave out the rings after it, whose
    /// items may be anything but gone: `qsize` 0 with items queued, a
    /// JoinableQueue count of 0 with tasks unfinished, so `join` returned
    /// and `task_done` was refused). Only a ring removed by hand, with
    /// `oldest` unchanged, ends the sum early.
    pub fn sum_live<R: Rings>(
        &self,
        rings: &R,
        max_rings: u64,
        mut count: impl FnMut(bool, u64, &R::Ring) -> u64,
    ) -> u64 {
        loop {
            // Acquire (both): pair with the CASes in `retire` and `advance`.
            let o = self.oldest.load(Ordering::Acquire);
            let n = (self.newest.load(Ordering::Acquire) & !CLOSED).clamp(o, o.saturating_add(max_rings));
            let (mut sum, mut k) = (0u64, o);
            // The live rings are consecutive (rings `o + 1..=n` outlive `o`).
            let seen = rings.visit(o, n, |r| {
                sum = sum.saturating_add(count(k == o, k, r));
                k = k.wrapping_add(1);
            });
            // `n - o < max_rings + 1` (clamped): no overflow unless
            // `max_rings` is `u64::MAX`, which no caller passes.
            if seen > n - o {
                return sum;
            }
            // A ring retired meanwhile: start again from the new oldest.
            // Acquire: as above.
            if self.oldest.load(Ordering::Acquire) != o {
                continue;
            }
            // Removed by hand: what could be counted.
            return sum;
        }
    }

    /// The oldest ring `o` was found sealed and drained: what follows.
    pub fn drained(&self, o: u64) -> Drained {
        // Acquire: pairs with `advance`'s CAS.
        let n = self.newest.load(Ordering::Acquire);
        match (n & !CLOSED == o, n & CLOSED != 0) {
            (true, true) => Drained::Closed,
            (true, false) => Drained::Unlinked,
            (false, _) => Drained::Retire,
        }
    }

    /// Retires the sealed, drained ring `k` (`oldest == k < newest`):
    /// folds its final count into ring `k + 1`'s base (any retirer may;
    /// all write the same value, the first wins), then moves `oldest`;
    /// whoever wins that CAS gives the ring back. True if this call did.
    /// False without retiring if ring `k + 1` cannot be opened (removed by
    /// hand, or no mapping possible now): its count would be lost, and a
    /// `get` could not go on to it anyway.
    pub fn retire<R: Rings>(&self, rings: &R, k: u64, ring: &R::Ring) -> bool {
        // The successor exists (`newest > k`).
        let Some(next) = rings.open(k.wrapping_add(1)) else { return false };
        {
            let t = rings.tally(ring);
            // Final: ring `k` is sealed (no claim succeeds) and drained.
            // Acquire: pairs with the Release claim CASes.
            let claims = t.claims.load(Ordering::Acquire) & POS;
            // Freezes the skip count (a later skip goes to the chain's
            // late count, `count_skip`); a second retirer reads the same
            // frozen count. AcqRel: pairs with `count_skip`.
            let skipped = t.skipped.fetch_or(FOLDED, Ordering::AcqRel) & !FOLDED;
            let landed = t.base(k).saturating_add(claims.saturating_sub(skipped));
            // AcqRel: published by our `oldest` CAS below (Release) to
            // readers that Acquire `oldest`; on failure (another retirer
            // folded first, the same value) Acquire, so our CAS publishes
            // theirs too.
            let _ = rings.tally(&next).base.compare_exchange(
                0,
                landed.saturating_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        // AcqRel: pairs with the Acquire loads of `oldest`; only one wins.
        let won = self.oldest.compare_exchange(k, k.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed).is_ok();
        if won {
            rings.retired(k, ring);
        }
        won
    }
}

/// Records `me` (a packed process identity, not 0) as a holder: a free
/// entry of `holders`, else one of a dead holder, else only the overflow
/// count `attached` (`None`).
pub fn attach(holders: &[AtomicU64], attached: &AtomicU32, me: u64, is_dead: impl Fn(u64) -> bool) -> Option<usize> {
    // SeqCst (all): pairs with the detaches and the last holder's scan
    // (`held`).
    for (i, h) in holders.iter().enumerate() {
        if h.compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            return Some(i);
        }
    }
    for (i, h) in holders.iter().enumerate() {
        let cur = h.load(Ordering::Acquire);
        if cur != 0 && is_dead(cur) && h.compare_exchange(cur, me, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            return Some(i);
        }
    }
    attached.fetch_add(1, Ordering::SeqCst);
    None
}

/// Undoes [`attach`] (`entry` is what it returned).
pub fn detach(holders: &[AtomicU64], attached: &AtomicU32, entry: Option<usize>, me: u64) {
    // SeqCst (both): a Dekker pair with the SeqCst loads of `held`. Two
    // holders leaving at once each clear their entry, then read the
    // other's: with only Acquire/Release both could read the other's
    // entry from before its clear (store buffering), both think the other
    // stays, and nobody removes the rings (the loom model found it).
    // SeqCst also gives AcqRel's pairing: the last holder's scan sees
    // every use of the chain before our detach.
    match entry {
        Some(i) => {
            if let Some(h) = holders.get(i) {
                let _ = h.compare_exchange(me, 0, Ordering::SeqCst, Ordering::Relaxed);
            }
        }
        // Saturating: the word is shared (untrusted).
        None => {
            let _ = attached.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| Some(a.saturating_sub(1)));
        }
    }
}

/// Whether any holder is still attached and alive (after our own
/// [`detach`]: false means we were the last, and remove the rings).
pub fn held(holders: &[AtomicU64], attached: &AtomicU32, is_dead: impl Fn(u64) -> bool) -> bool {
    // SeqCst (both): pair with the SeqCst detaches (see there) and the
    // attaches.
    attached.load(Ordering::SeqCst) != 0
        || holders.iter().any(|h| {
            let h = h.load(Ordering::SeqCst);
            h != 0 && !is_dead(h)
        })
}
