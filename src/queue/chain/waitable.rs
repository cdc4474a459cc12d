//! The unbounded queue's side of [`wait`](crate::wait) (the facades'
//! `Waitable` impls call it for an `Inner::Chain`).
//!
//! A `get` reads the oldest ring; when that ring is sealed and drained it
//! moves on (retiring it, or linking the successor a producer has not
//! linked yet) and sleeps, as a blocked `pop`, on the first ring that is
//! still open: producers put into that ring (the newest), and a producer
//! that seals it to grow the chain wakes its sleepers (`close`). So:
//!
//! - **readable**: walking from the oldest ring past the sealed, drained
//!   ones, the first ring that is not both has an item; or the walk ends
//!   at the closed queue's last ring (`get` fails with `Closed`); or a
//!   ring it needs is gone (`get` fails with `Closed` too);
//! - **announce**: as `get` does before it sleeps: retire the sealed,
//!   drained oldest rings, link a missing successor, then count ourselves
//!   on the first open ring (the ring's own consumer protocol, see
//!   `MpmcQueue::announce_reader`), unless it was sealed by the time its
//!   ticket was read (then look again). The ring stays mapped by this
//!   handle until `withdraw`.
//!   If the newest ring is sealed, drained and its successor cannot be
//!   made now (/dev/shm full, the memory limit, a foreign file under its
//!   name), it sleeps as `get` does on the chain's space word (bumped when
//!   a ring is retired, the chain is linked on, or the queue closes), a
//!   poll period at most (`sleep_cap`): never a busy loop.
//!
//! Readiness looks up rings in this process's map of them: a ring never
//! seen before is mapped once (system calls, once per ring and process).

use super::super::itemring::each;
use super::*;
use crate::wait::many::Words;

/// Where a `get` stands now.
enum Next<T> {
    /// It would return now (an item, `Closed`, or corrupted data).
    Ready,
    /// It would sleep on this ring (open and empty).
    Sleep(ItemRing<T>),
    /// Ring `k`, the newest, is sealed and drained and its successor not
    /// linked yet (a producer is doing it, or died doing it).
    Unlinked(u64, ItemRing<T>),
    /// More sealed, drained rings in a row than a `try_` call follows
    /// (a `get` keeps going).
    Far,
}

impl<T: Handoff> Chain<T> {
    /// Walks the chain as a `get` would; with `tidy`, retires the sealed,
    /// drained oldest rings on the way, as a `get` does.
    fn next(&self, tidy: bool) -> Next<T> {
        let ctl = self.ctl();
        // Acquire: pairs with the AcqRel CAS in `retire`.
        let mut o = ctl.oldest.0.load(Ordering::Acquire);
        let mut k = o;
        for _ in 0..TRY_LINKS {
            let ring = match self.ring(k) {
                Ok(ring) => ring,
                Err(_) => {
                    // Acquire: as above.
                    let now = ctl.oldest.0.load(Ordering::Acquire);
                    if now > k {
                        // Retired meanwhile: follow `oldest`, as `get` does.
                        (o, k) = (now, now);
                        continue;
                    }
                    match self.first_ring(k) {
                        // Ring 0 not made yet by the queue's creator: made, as `get` does.
                        Some(Some(ring)) => ring,
                        // Gone by hand, indices corrupted, or ring 0 not
                        // makeable now: `get` says `Closed` or `Empty` at once.
                        _ => return Next::Ready,
                    }
                }
            };
            let (items, sealed) = each!(&ring, q => q.items_and_closed());
            if items {
                return Next::Ready;
            }
            if !sealed {
                return Next::Sleep(ring);
            }
            // Sealed and drained. Acquire: pairs with `advance`'s CAS.
            let n = ctl.newest.0.load(Ordering::Acquire);
            if n & !CLOSED == k {
                if n & CLOSED != 0 {
                    return Next::Ready;
                }
                return Next::Unlinked(k, ring);
            }
            if tidy && k == o {
                self.retire(k, &ring);
                o = k.saturating_add(1);
            }
            k = k.saturating_add(1);
        }
        Next::Far
    }

    /// Whether a `get` would return now (see the module docs).
    pub(in crate::queue) fn readable(&self) -> bool {
        matches!(self.next(false), Next::Ready)
    }

    /// Registers as a sleeping consumer of the ring a `get` reads next, as
    /// a blocked `get` does; `None` if the queue is readable, or if it made
    /// progress instead (linked a successor, retired rings): the caller
    /// looks again.
    pub(in crate::queue) fn announce_reader(&mut self, words: &mut Words) -> Option<u64> {
        match self.next(true) {
            Next::Ready | Next::Far => None,
            Next::Sleep(ring) => {
                let token = each!(&ring, q => q.announce_reader_while_open(words))?;
                self.waiting_on = Some(ring);
                Some(token)
            }
            Next::Unlinked(k, ring) => {
                // As `get`: link the successor (any process may).
                if self.advance(k, &ring, 0).unwrap_or(false) {
                    return None;
                }
                // It cannot be made now (/dev/shm full, the limit, a
                // foreign file under its name): as `get`, sleep on the
                // space word (bumped when a ring is retired, the chain is
                // linked on or the queue closes), a poll period at most
                // (`sleep_cap`: /dev/shm freeing up bumps nothing).
                let w = self.words();
                // Acquire: pairs with the Release bump in `wake_space_sleepers`
                // and `close`.
                let ticket = w.space_seq.load(Ordering::Acquire);
                // Acquire: pairs with `advance`'s CAS. Linked (or closed)
                // since: look again.
                if self.ctl().newest.0.load(Ordering::Acquire) != k {
                    return None;
                }
                // SeqCst: pairs with the SeqCst load in `wake_space_sleepers`.
                w.producers_waiting.fetch_add(1, Ordering::SeqCst);
                words.push(&w.space_seq, ticket);
                self.waiting_for_space = true;
                Some(0)
            }
        }
    }

    /// The longest a sleep announced by [`announce_reader`](Self::announce_reader)
    /// may last: a poll period when it waits for space (see there).
    pub(in crate::queue) fn sleep_cap(&self) -> Option<std::time::Duration> {
        self.waiting_for_space.then_some(POLL)
    }

    /// Undoes [`announce_reader`](Self::announce_reader).
    pub(in crate::queue) fn withdraw_reader(&mut self) {
        if let Some(ring) = self.waiting_on.take() {
            each!(&ring, q => q.withdraw_reader());
        }
        if std::mem::take(&mut self.waiting_for_space) {
            // Saturating: the word is shared (untrusted).
            let _ = self.words().producers_waiting.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        }
    }
}
