//! The MPMC index protocol: Dmitry Vyukov's bounded MPMC queue
//! (<https://www.1024cores.net/home/lock-free-algorithms/queues/bounded-mpmc-queue>)
//! with crossbeam's `ArrayQueue` refinements (exponential backoff after a
//! lost CAS; `Full`/`Empty` only when the indices say so, not merely
//! because a slot is still being written or read), plus what shared memory
//! between processes needs:
//!
//! - **crash repair**: before every claim a participant announces the
//!   positions it is about to claim (`Env::announce`). A slot claimed by a
//!   process that then died stays "in flight" forever; a waiter that finds
//!   no *live* announcement covering it repairs it with a CAS on the slot's
//!   sequence word ([`repair_push`], [`repair_pop`]). The CAS fails if the
//!   claimant finishes after all, so a slow claimant and its repairer never
//!   both win.
//! - **close**: bit 63 of `tail` ([`CLOSED`]); a producer's claim CAS fails
//!   once it is set, so no item is ever added after `close` returns.
//! - **any capacity**: the ring has a power of two of slots (at least 2:
//!   Vyukov's stamps need two); a smaller `limit` is enforced against
//!   `head`, read only when `limit < slots`.
//!
//! Positions are free-running `u64`s (`< 2^62`, never reached). Slot `i`'s
//! sequence word says whose turn it is: `pos` (free for the producer of
//! `pos`), `pos + 1` (holds the item of `pos`; with [`SKIP`] set, a
//! repaired slot whose producer died: consumers discard it), `pos + slots`
//! (read: free for the next lap).
//!
//! Checked under loom (`tests/loom.rs`) with heap-backed slots, including a
//! producer that "dies" between claim and publish.

use crate::wait::atomic::{AtomicU64, Ordering, fence};
use crate::wait::spin::backoff;

/// Bit of `tail`: the queue is closed.
pub const CLOSED: u64 = 1 << 63;
/// Bit of a slot's sequence word: a dead producer's slot, to be discarded.
pub const SKIP: u64 = 1 << 62;
/// Positions are below this (bits 62 and 63 are flags).
pub const POS: u64 = SKIP - 1;
/// Backoff steps after which a lost race or an in-flight slot stops
/// spinning and asks the environment (which may yield or repair).
const SPIN_STEPS: u32 = 6;
/// Catch-up steps with an index that does not move, after which a slot's
/// sequence word is taken for corrupted (each step is 64 pauses).
const CORRUPT_STEPS: u32 = 64;

/// The slots of a ring: sequence words and values.
pub trait Slots<T> {
    /// The slot's sequence word (`pos` is masked by the implementation).
    fn seq(&self, pos: u64) -> &AtomicU64;
    /// About to try to claim `pos`: a hint with no effect on the protocol
    /// (frame slots prefetch the slot a few positions on).
    #[inline(always)]
    fn touch(&self, pos: u64) {
        let _ = pos;
    }
    /// Writes the value of the slot at `pos`.
    ///
    /// # Safety
    /// The caller owns the slot: it claimed `pos` and the slot's sequence
    /// word equals `pos`.
    unsafe fn write(&self, pos: u64, v: T);
    /// Reads the value of the slot at `pos`.
    ///
    /// # Safety
    /// The caller owns the slot: it claimed `pos` and the sequence word
    /// equals `pos + 1`.
    unsafe fn read(&self, pos: u64) -> T;
}

/// How a pop reads the item of a slot it owns: by value through
/// [`Slots::read`] ([`ByValue`], what [`Ring::pop`] uses), or into a
/// destination the caller lends (a queue's `get_into`). `Via` is the
/// item type whose sequence words and [`Slots::touch`] the pop uses.
pub trait SlotRead<S: Slots<Self::Via>> {
    /// The item type of the slots' sequence-word view.
    type Via;
    /// What a read gives back.
    type Out;
    /// Reads the slot of `pos`.
    ///
    /// # Safety
    /// As [`Slots::read`]: the caller owns the slot (it claimed `pos` and
    /// the sequence word equals `pos + 1`).
    unsafe fn read(&mut self, s: &S, pos: u64) -> Self::Out;
}

/// Reads a slot's item by value ([`Slots::read`]).
pub struct ByValue<T>(core::marker::PhantomData<fn() -> T>);

impl<T> ByValue<T> {
    /// The by-value reader.
    #[inline(always)]
    pub const fn new() -> Self {
        ByValue(core::marker::PhantomData)
    }
}

impl<T> Default for ByValue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, S: Slots<T>> SlotRead<S> for ByValue<T> {
    type Via = T;
    type Out = T;
    #[inline(always)]
    unsafe fn read(&mut self, s: &S, pos: u64) -> T {
        // SAFETY: the caller owns the slot (this method's contract is `Slots::read`'s).
        unsafe { s.read(pos) }
    }
}

/// What the protocol asks of its caller while it works.
pub trait Env {
    /// About to try to claim `n` positions from `start` (`pop`: as a
    /// consumer). Must be visible to whoever sees the claim: the claim CAS
    /// is a Release operation.
    fn announce(&mut self, start: u64, n: u64, pop: bool);
    /// The operation gave up without claiming anything: withdraw the
    /// announcement so it covers nothing.
    fn withdraw(&mut self);
    /// The slot of `pos` was claimed by somebody else's `pop` (`by_pop`) or
    /// push that has not finished. Wait a little (and, if it is due, try a
    /// repair). Return false to give up: the operation reports `Full` or
    /// `Empty`. Only called before this operation claims anything: no
    /// operation ever waits while holding a claim.
    fn in_flight(&mut self, pos: u64, by_pop: bool) -> bool;
}

/// The ring's shared indices and its geometry.
pub struct Ring<'a> {
    pub tail: &'a AtomicU64,
    pub head: &'a AtomicU64,
    /// Number of slots: a power of two, at least 2.
    pub slots: u64,
    /// Most items held: 1..=slots.
    pub limit: u64,
}

/// Why an operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No room (push) or no item (pop) right now.
    Now,
    /// The queue is closed (and, for pops, drained).
    Closed,
}

impl Ring<'_> {
    /// Whether the queue holds no item at this instant (`tail == head`),
    /// and whether it is closed.
    #[inline]
    pub fn empty_and_closed(&self) -> (bool, bool) {
        // SeqCst fence: orders this check after our preceding loads and
        // stores (crossbeam's emptiness check; pairs with the claim CASes).
        fence(Ordering::SeqCst);
        let t = self.tail.load(Ordering::Relaxed);
        (t & POS == self.head.load(Ordering::Relaxed) & POS, t & CLOSED != 0)
    }

    /// Items in the ring: a consistent snapshot of both indices, clamped
    /// to `limit` (they are untrusted shared memory).
    pub fn len(&self) -> u64 {
        loop {
            // Acquire (all three): pair with the Release claim CASes, so the
            // three loads are ordered and the snapshot is consistent.
            let h = self.head.load(Ordering::Acquire);
            let t = self.tail.load(Ordering::Acquire) & POS;
            if self.head.load(Ordering::Acquire) == h {
                return t.wrapping_sub(h & POS).min(self.limit);
            }
        }
    }

    /// Pushes one item; returns its position.
    #[inline(always)]
    pub fn push<T, S: Slots<T>, E: Env>(&self, s: &S, e: &mut E, v: T) -> Result<u64, (Refused, T)> {
        let mut t = self.tail.load(Ordering::Relaxed);
        let mut step = 0;
        loop {
            if t & CLOSED != 0 {
                e.withdraw();
                return Err((Refused::Closed, v));
            }
            s.touch(t);
            // Acquire: pairs with the Release store in `release` by the
            // consumer of this slot's previous lap: its read is finished.
            let seq = s.seq(t).load(Ordering::Acquire);
            if seq == t {
                if self.limit < self.slots && self.full_at(t) {
                    e.withdraw();
                    return Err((Refused::Now, v));
                }
                e.announce(t, 1, false);
                // Release: pairs with the Acquire load of `tail` in a
                // repairer's scan, which must see our announcement.
                match self.tail.compare_exchange_weak(t, t.wrapping_add(1), Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: we claimed `t` and its slot is free (seq == t).
                        unsafe { s.write(t, v) };
                        publish(s, t);
                        return Ok(t);
                    }
                    Err(now) => {
                        t = now;
                        backoff(step.min(SPIN_STEPS));
                        step += 1;
                    }
                }
            } else if (seq & POS).wrapping_add(self.slots) == t.wrapping_add(1) {
                // The slot still holds the previous lap's item: full, or its
                // consumer has claimed it and not finished reading.
                if self.full_at(t) {
                    e.withdraw();
                    return Err((Refused::Now, v));
                }
                if !e.in_flight(t.wrapping_sub(self.slots), true) {
                    e.withdraw();
                    return Err((Refused::Now, v));
                }
                t = self.tail.load(Ordering::Relaxed);
            } else {
                // Another producer claimed `t` meanwhile: catch up. (If
                // `tail` does not move for long, the slot's word is
                // corrupted: give up. Calling into `e` here instead costs a
                // quarter of the 2p x 2c throughput, measured.)
                backoff(step.min(SPIN_STEPS));
                step += 1;
                let now = self.tail.load(Ordering::Relaxed);
                if now == t && step > CORRUPT_STEPS {
                    e.withdraw();
                    return Err((Refused::Now, v));
                }
                t = now;
            }
        }
    }

    /// Whether a producer at position `t` finds the queue full.
    #[inline]
    fn full_at(&self, t: u64) -> bool {
        // SeqCst fence: the head load below is not older than our slot load
        // (crossbeam's fullness check).
        fence(Ordering::SeqCst);
        t.wrapping_sub(self.head.load(Ordering::Relaxed) & POS) >= self.limit
    }

    /// Pops one item; returns it and its position. Discards repaired
    /// (skipped) slots on the way.
    #[inline(always)]
    pub fn pop<T, S: Slots<T>, E: Env>(&self, s: &S, e: &mut E) -> Result<(T, u64), Refused> {
        self.pop_with(s, e, &mut ByValue::<T>::new())
    }

    /// [`pop`](Self::pop), reading the item with `r` (by value, or into
    /// a destination the caller lends): the same protocol, step for step;
    /// only the read of the claimed slot is `r`'s.
    #[inline(always)]
    pub fn pop_with<S: Slots<R::Via>, E: Env, R: SlotRead<S>>(
        &self,
        s: &S,
        e: &mut E,
        r: &mut R,
    ) -> Result<(R::Out, u64), Refused> {
        let mut h = self.head.load(Ordering::Relaxed);
        let mut step = 0;
        loop {
            <S as Slots<R::Via>>::touch(s, h);
            // Acquire: pairs with the Release store in `publish` (or in
            // `repair_push`): the item is written.
            let seq = <S as Slots<R::Via>>::seq(s, h).load(Ordering::Acquire);
            if seq & !SKIP == h.wrapping_add(1) {
                e.announce(h, 1, true);
                // Release: pairs with the Acquire load of `head` in a
                // repairer's scan, which must see our announcement.
                match self.head.compare_exchange_weak(h, h.wrapping_add(1), Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => {
                        // The sequence word cannot change between our load and the CAS: once it says "holds the
                        // item of h", only the claimant of h (now us) changes it.
                        let v = if seq & SKIP == 0 {
                            // SAFETY: we claimed `h` and its item is published.
                            Some(unsafe { r.read(s, h) })
                        } else {
                            None
                        };
                        self.release::<R::Via, S>(s, h);
                        match v {
                            Some(v) => return Ok((v, h)),
                            None => {
                                h = self.head.load(Ordering::Relaxed);
                                continue;
                            }
                        }
                    }
                    Err(now) => {
                        h = now;
                        backoff(step.min(SPIN_STEPS));
                        step += 1;
                    }
                }
            } else if seq == h
                || (seq & !SKIP).wrapping_add(self.slots) == h.wrapping_add(1) && self.empty_and_closed().0
            {
                // Not written yet: empty, or a producer claimed it and has
                // not published. Or the slot still holds the previous lap's
                // item, claimed by a consumer that has not released it (slow,
                // or killed: a producer coming round repairs it), with the
                // ring empty: nothing can be at `h` before that release. (Not
                // "another consumer took `h`": in a closed ring, or an
                // unbounded queue's sealed one, no producer comes round, and
                // the ring must still be seen empty and closed.)
                let (empty, closed) = self.empty_and_closed();
                if empty {
                    e.withdraw();
                    return Err(if closed { Refused::Closed } else { Refused::Now });
                }
                if !e.in_flight(h, false) {
                    e.withdraw();
                    return Err(Refused::Now);
                }
                h = self.head.load(Ordering::Relaxed);
            } else {
                // Another consumer took `h` meanwhile: catch up (as in `push`
                // if `head` does not move).
                backoff(step.min(SPIN_STEPS));
                step += 1;
                let now = self.head.load(Ordering::Relaxed);
                if now == h && step > CORRUPT_STEPS {
                    e.withdraw();
                    return Err(Refused::Now);
                }
                h = now;
            }
        }
    }

    /// Makes the front of the ring say what it holds, as a pop would find
    /// it, without taking an item: discards repaired (skipped) slots at the
    /// front, and a slot at the front claimed by a producer that is not
    /// live any more is repaired through `e.in_flight` (which then lets it
    /// be discarded). Returns whether an item is at the front: a published
    /// one, or a live producer's unfinished claim (counted as an item while
    /// its holder lives, as [`len`](Self::len) counts it). False: the ring
    /// is empty.
    ///
    /// What `qsize` and `empty` run first, so that a producer killed
    /// between its claim and its publication does not leave a queue that
    /// holds nothing saying it holds an item (a `while !q.empty() { q.get() }`
    /// loop would then block in `get` for good). Same protocol as
    /// [`pop_with`](Self::pop_with), step for step, up to the read of a
    /// published item, where it stops.
    pub fn settle_front<T, S: Slots<T>, E: Env>(&self, s: &S, e: &mut E) -> bool {
        let mut h = self.head.load(Ordering::Relaxed);
        let mut step = 0;
        loop {
            // Acquire: as in `pop_with` (pairs with the Release store in
            // `publish` or `repair_push`).
            let seq = s.seq(h).load(Ordering::Acquire);
            if seq == h.wrapping_add(1) {
                // A published item: left for a pop.
                e.withdraw();
                return true;
            }
            if seq == h.wrapping_add(1) | SKIP {
                // A repaired slot: discarded as `pop_with` discards it.
                e.announce(h, 1, true);
                // Release: as the claim CAS in `pop_with`.
                match self.head.compare_exchange_weak(h, h.wrapping_add(1), Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => {
                        self.release::<T, S>(s, h);
                        h = self.head.load(Ordering::Relaxed);
                    }
                    Err(now) => {
                        h = now;
                        backoff(step.min(SPIN_STEPS));
                        step += 1;
                    }
                }
            } else if seq == h
                || (seq & !SKIP).wrapping_add(self.slots) == h.wrapping_add(1) && self.empty_and_closed().0
            {
                // Empty, or claimed by a producer that has not published
                // (as in `pop_with`).
                if self.empty_and_closed().0 {
                    e.withdraw();
                    return false;
                }
                if !e.in_flight(h, false) {
                    // A live producer's claim (or one we gave up on).
                    e.withdraw();
                    return true;
                }
                h = self.head.load(Ordering::Relaxed);
            } else {
                // Another consumer took `h` meanwhile: catch up.
                backoff(step.min(SPIN_STEPS));
                step += 1;
                let now = self.head.load(Ordering::Relaxed);
                if now == h && step > CORRUPT_STEPS {
                    // A sequence word a hostile peer wrote: the indices say.
                    e.withdraw();
                    return !self.empty_and_closed().0;
                }
                h = now;
            }
        }
    }

    /// Frees the slot of `h` for the next lap.
    #[inline(always)]
    fn release<T, S: Slots<T>>(&self, s: &S, h: u64) {
        // Release: pairs with the Acquire slot load in `push`: our read of
        // the slot is finished.
        s.seq(h).store(h.wrapping_add(self.slots), Ordering::Release);
    }

    /// Pushes items of `items` in order, one at a time with the
    /// single-item protocol of [`push`](Self::push) (its claim, its
    /// announcement, its repair), stopping at the first refusal: returns
    /// how many were pushed, or the refusal if none was. A batch is exactly
    /// as safe as that many single pushes: it never claims a position it
    /// does not fill, so nothing is abandoned when a peer is stalled or
    /// dead. (One claim for a whole range cannot guarantee that: a slot of
    /// the range may still be held by a stalled consumer of the previous
    /// lap, and the claimant would have to wait for it without bound.)
    #[inline]
    pub fn push_batch<T: Copy, S: Slots<T>, E: Env>(&self, s: &S, e: &mut E, items: &[T]) -> Result<usize, Refused> {
        for (i, v) in items.iter().enumerate() {
            if let Err((r, _)) = self.push(s, e, *v) {
                return if i == 0 { Err(r) } else { Ok(i) };
            }
        }
        Ok(items.len())
    }

    /// Pops into `out` in order, one item at a time with the single-item
    /// protocol of [`pop`](Self::pop), stopping at the first refusal:
    /// returns how many were stored at the front of `out`, or the refusal
    /// if none was (as [`push_batch`](Self::push_batch)).
    #[inline]
    pub fn pop_batch<T, S: Slots<T>, E: Env>(&self, s: &S, e: &mut E, out: &mut [T]) -> Result<usize, Refused> {
        for (i, o) in out.iter_mut().enumerate() {
            match self.pop(s, e) {
                Ok((v, _)) => *o = v,
                Err(r) => return if i == 0 { Err(r) } else { Ok(i) },
            }
        }
        Ok(out.len())
    }
}

/// Publishes the item of `pos` to consumers.
#[inline(always)]
fn publish<T, S: Slots<T>>(s: &S, pos: u64) {
    // Release: pairs with the Acquire slot load in `pop`.
    s.seq(pos).store(pos.wrapping_add(1), Ordering::Release);
}

/// Repairs the slot of `pos` whose producer claimed it and died before
/// publishing: marks it skipped (consumers discard it). The caller has
/// established that no live participant's announcement covers `pos`.
/// False if the slot is no longer in that state.
pub fn repair_push<T, S: Slots<T>>(s: &S, pos: u64) -> bool {
    // Release: pairs with the Acquire slot load in `pop` (as `publish`).
    s.seq(pos).compare_exchange(pos, pos.wrapping_add(1) | SKIP, Ordering::Release, Ordering::Relaxed).is_ok()
}

/// Repairs the slot of `pos` whose consumer claimed it and died before
/// releasing it: frees it for the next lap (the item is lost with the
/// consumer). Same precondition as [`repair_push`].
pub fn repair_pop<T, S: Slots<T>>(s: &S, pos: u64, slots: u64) -> bool {
    let cell = s.seq(pos);
    // Relaxed: only decides which value to CAS from.
    let seq = cell.load(Ordering::Relaxed);
    if seq & !SKIP != pos.wrapping_add(1) {
        return false;
    }
    // Release: pairs with the Acquire slot load in `push` (as `release`).
    cell.compare_exchange(seq, pos.wrapping_add(slots), Ordering::Release, Ordering::Relaxed).is_ok()
}

/// Whether an announcement `(start, n, pop)` covers a stuck `pos` of the
/// given kind.
pub fn covers(start: u64, n: u64, pop: bool, pos: u64, by_pop: bool) -> bool {
    pop == by_pop && pos.wrapping_sub(start) < n
}
