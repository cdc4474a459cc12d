//! `wait`'s ready path and spin phase: the objects' shared words, watched
//! for change.
//!
//! One pass over the objects ([`Watch::list`]) asks each whether it is
//! ready and, in the same call, which shared words its readiness is made
//! of, with the values it read
//! ([`WaitObject::watch`](super::WaitObject::watch)): an event's state, a
//! semaphore's word, a ring's tail (and an SPSC ring's closed and
//! producer-gone flags). While each of an object's words still holds the
//! value it was listed with, the object is still not ready. So a spin
//! round ([`Watch::first_changed`]) is a comparison of a few words with
//! the values seen, with no call, as `Event::wait`'s load of its one word
//! is; only an object whose word changed is asked again (`ready(false)`,
//! which also says exactly what to report). Objects that cannot be
//! watched this way (an unbounded queue walks a chain of rings that grows;
//! a process's end; words past the capacity) are asked `ready(false)` in
//! every round.
//!
//! Before, every spin round called every object's `ready` (a dynamic call
//! and a few dependent loads each) and built the result set; the previous
//! attempt (branch `waitfast`, not merged) listed readiness rules per word
//! in a separate pass after the ready path, which cost as much as the
//! scan it saved.
//!
//! Only latency rests on the spin phase: a change it does not see (a word
//! changed and changed back between two rounds) is seen by the slow path's
//! scan, which every sleep follows.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{Ready, Waitable};
use crate::wait::spin::{SPIN_LIMIT, spin_hint};

/// Words watched per `wait`; the objects whose words do not all fit are
/// asked `ready` in every round instead.
const CAPACITY: usize = 32;

/// One watched word (64 or 32 bits) and the value it held when seen.
#[derive(Clone, Copy)]
struct Seen {
    /// From a `&AtomicU64` if `wide`, else from a `&AtomicU32`, in an
    /// object's control block.
    word: *const (),
    wide: bool,
    /// Its object's index in the `wait` list (below [`MAX_OBJECTS`](super::MAX_OBJECTS)).
    object: u8,
    value: u64,
    /// Not 0: the word is its object's only word, and the object is ready
    /// exactly when a bit of `mask` is set in it (an event, a semaphore):
    /// a change is judged here, without asking the object.
    mask: u64,
}

impl Seen {
    /// The word's value now, widened.
    #[inline(always)]
    fn look(&self) -> u64 {
        // Relaxed (both): only a hint that the object may have changed; `recheck` asks the object, whose `ready`
        // loads carry the orderings that pair with its publishers.
        if self.wide {
            // SAFETY: `word` came from a `&AtomicU64` (`wide`) in an object's control block; by `watch`'s contract
            // it stays mapped while the object is borrowed, and `wait` borrows every object for as long as its
            // `Watch` (a local of `wait`, given out to no one) is read.
            unsafe { &*(self.word as *const AtomicU64) }.load(Ordering::Relaxed)
        } else {
            // SAFETY: as above, from a `&AtomicU32`.
            unsafe { &*(self.word as *const AtomicU32) }.load(Ordering::Relaxed).into()
        }
    }
}

/// The words the objects of one `wait` listed, with the values seen (see
/// [`WaitObject::watch`](super::WaitObject::watch)), in the order of
/// their objects in the list.
pub struct Watch {
    /// The first `n` are written. Not initialised as a whole: `wait`
    /// makes one per call, and its ready path counts every ns.
    seen: [MaybeUninit<Seen>; CAPACITY],
    n: usize,
    /// The object listing now.
    object: u8,
    /// The objects asked `ready(false)` in every round: those that cannot
    /// be watched, or whose words did not all fit (those that did stay:
    /// a change of one makes the object asked, which is harmless).
    polled: Ready,
}

impl Watch {
    pub(super) fn new() -> Self {
        Watch { seen: [const { MaybeUninit::uninit() }; CAPACITY], n: 0, object: 0, polled: Ready::default() }
    }

    /// The words listed.
    #[inline(always)]
    fn seen(&self) -> &[Seen] {
        let n = self.n.min(CAPACITY);
        // SAFETY: the first `n` elements (at most CAPACITY) were written by `push` (`n` only grows there, after
        // the write), and `MaybeUninit<Seen>` has `Seen`'s layout.
        unsafe { std::slice::from_raw_parts(self.seen.as_ptr() as *const Seen, n) }
    }

    /// As [`seen`](Self::seen), to update.
    #[inline(always)]
    fn seen_mut(&mut self) -> &mut [Seen] {
        let n = self.n.min(CAPACITY);
        // SAFETY: as in `seen`; the borrow of `self` is unique.
        unsafe { std::slice::from_raw_parts_mut(self.seen.as_mut_ptr() as *mut Seen, n) }
    }

    #[inline]
    fn push(&mut self, word: *const (), wide: bool, value: u64, mask: u64) {
        match self.seen.get_mut(self.n) {
            Some(slot) => {
                slot.write(Seen { word, wide, object: self.object, value, mask });
                self.n += 1;
            }
            None => self.polled.insert(self.object.into()),
        }
    }

    /// Watch `word`, which held `value` when the object read it.
    #[inline]
    pub(crate) fn word64(&mut self, word: &AtomicU64, value: u64) {
        self.push(word as *const AtomicU64 as *const (), true, value, 0);
    }

    /// [`word64`](Self::word64) for an object whose only word this is and
    /// that is ready exactly when a bit of `mask` (not 0) is set in it.
    #[inline]
    pub(crate) fn only_word64(&mut self, word: &AtomicU64, value: u64, mask: u64) {
        self.push(word as *const AtomicU64 as *const (), true, value, mask);
    }

    /// [`word64`](Self::word64) for a 32-bit word.
    #[inline]
    pub(crate) fn word32(&mut self, word: &AtomicU32, value: u32) {
        self.push(word as *const AtomicU32 as *const (), false, value.into(), 0);
    }

    /// [`only_word64`](Self::only_word64) for a 32-bit word.
    #[inline]
    pub(crate) fn only_word32(&mut self, word: &AtomicU32, value: u32, mask: u32) {
        self.push(word as *const AtomicU32 as *const (), false, value.into(), mask.into());
    }

    /// The ready path: asks every object whether it is ready, and lists
    /// the words of those that can be watched. The ready ones (empty: none).
    pub(super) fn list(&mut self, objects: &mut [&mut dyn Waitable]) -> Ready {
        let mut ready = Ready::default();
        for (i, o) in objects.iter_mut().enumerate() {
            // `i` < MAX_OBJECTS = 128 (checked by `wait`).
            self.object = i as u8;
            match o.watch(self) {
                Some(false) => {}
                Some(true) => ready.insert(i),
                None => {
                    self.polled.insert(i);
                    if o.ready(false) {
                        ready.insert(i);
                    }
                }
            }
        }
        ready
    }

    /// The spin phase, after [`list`](Self::list) found nothing ready:
    /// [`SPIN_LIMIT`] rounds, each followed by a pause, as `Event::wait`
    /// spins.
    /// (Rounds without a pause, a few ns each, were worse: in
    /// benches/wait.rs, 256 of them first made the wake-up 1.40-1.65x
    /// `Event::wait`'s in the machine's fast core-to-core state, against
    /// 0.92-1.48x with a pause in every round.) With polled objects (each
    /// asked in every round, a call or more), no pause: the calls are the
    /// delay between rounds. The ready objects, or empty when the spin is
    /// over.
    pub(super) fn spin(&mut self, objects: &mut [&mut dyn Waitable]) -> Ready {
        let polled = !self.polled.is_empty();
        for _ in 0..SPIN_LIMIT {
            let ready = if polled {
                self.recheck_all(objects)
            } else if let Some(k) = self.first_changed() {
                self.recheck(objects, k)
            } else {
                spin_hint();
                continue;
            };
            if !ready.is_empty() {
                return ready;
            }
        }
        Ready::default()
    }

    /// One round: the first watched word that no longer holds the value
    /// seen (by index).
    #[inline(always)]
    fn first_changed(&self) -> Option<usize> {
        self.seen().iter().position(|s| s.look() != s.value)
    }

    /// After a change of word `from` (the first changed one): in the order
    /// of the list, from `from`'s object on, each object's words are read
    /// again (a changed one is seen with its new value from now on), and
    /// the object is asked `ready(false)` if one of them changed. The ready
    /// ones. As with a scan, each object is looked at after the ones
    /// before it in the list (those before `from`'s object in the round
    /// that found `from` changed), so an object that became ready before a
    /// later-listed one that is reported is reported too.
    #[inline(never)]
    fn recheck(&mut self, objects: &mut [&mut dyn Waitable], from: usize) -> Ready {
        let mut ready = Ready::default();
        let seen = self.seen_mut();
        // From the first word of `from`'s object (words are pushed in the order of the objects).
        let mut k = from.min(seen.len());
        while k > 0 && seen[k - 1].object == seen[k].object {
            k -= 1;
        }
        while let Some(first) = seen.get_mut(k) {
            let i = first.object;
            if first.mask != 0 {
                // Its only word: judged here (as its `ready` would).
                let now = first.look();
                if now != first.value {
                    first.value = now;
                    if now & first.mask != 0 {
                        ready.insert(i.into());
                    }
                }
                k += 1;
                continue;
            }
            let mut changed = false;
            while let Some(s) = seen.get_mut(k)
                && s.object == i
            {
                let now = s.look();
                if now != s.value {
                    s.value = now;
                    changed = true;
                }
                k += 1;
            }
            if changed && objects.get_mut(usize::from(i)).is_some_and(|o| o.ready(false)) {
                ready.insert(i.into());
            }
        }
        ready
    }

    /// With polled objects, in every round: every object in the order of
    /// the list, its words read again (as in [`recheck`](Self::recheck)),
    /// asked `ready(false)` if one changed or it is polled.
    #[inline(never)]
    fn recheck_all(&mut self, objects: &mut [&mut dyn Waitable]) -> Ready {
        let polled = self.polled;
        let mut ready = Ready::default();
        let mut k = 0;
        for (i, o) in objects.iter_mut().enumerate() {
            let mut ask = polled.contains(i);
            // The words of object `i` (pushed in the order of the objects).
            while let Some(s) = self.seen_mut().get_mut(k)
                && usize::from(s.object) == i
            {
                let now = s.look();
                if now != s.value {
                    s.value = now;
                    ask = true;
                }
                k += 1;
            }
            if ask && o.ready(false) {
                ready.insert(i);
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_any_watched_word_is_seen_and_then_taken_as_the_new_value() {
        let (a, b) = (AtomicU64::new(5), AtomicU32::new(7));
        let mut w = Watch::new();
        w.word64(&a, 5);
        w.word32(&b, 7);
        assert_eq!(w.first_changed(), None);
        b.store(8, Ordering::Relaxed);
        assert_eq!(w.first_changed(), Some(1));
        assert!(w.recheck(&mut [], 1).is_empty(), "no object to ask: nothing ready");
        assert_eq!(w.first_changed(), None, "the new value is the one seen now");
        a.store(1 << 63, Ordering::Relaxed);
        b.store(9, Ordering::Relaxed);
        assert_eq!(w.first_changed(), Some(0), "a high bit counts too");
        assert!(w.recheck(&mut [], 0).is_empty());
        assert_eq!(w.first_changed(), None, "both words of the object were read again");
    }

    #[test]
    fn an_only_word_with_a_mask_is_judged_without_asking_its_object() {
        let (ev, other) = (AtomicU32::new(0), AtomicU64::new(0));
        let mut w = Watch::new();
        w.object = 2;
        w.only_word32(&ev, 0, 1);
        w.object = 3;
        w.word64(&other, 0);
        ev.store(2, Ordering::Relaxed);
        assert_eq!(w.first_changed(), Some(0));
        assert!(w.recheck(&mut [], 0).is_empty(), "changed, but no bit of the mask: not ready");
        ev.store(3, Ordering::Relaxed);
        other.store(1, Ordering::Relaxed);
        let ready = w.recheck(&mut [], 0);
        assert_eq!(ready.iter().collect::<Vec<_>>(), [2], "ready by its mask; object 3 (not in the list) not asked");
        assert_eq!(w.first_changed(), None, "both words seen with their new values");
    }

    #[test]
    fn an_object_whose_words_do_not_fit_is_asked_every_round() {
        let a = AtomicU64::new(0);
        let mut w = Watch::new();
        for _ in 0..CAPACITY {
            w.word64(&a, 0);
        }
        assert!(w.polled.is_empty());
        w.object = 3;
        w.word32(&AtomicU32::new(0), 0);
        assert!(w.n == CAPACITY && w.polled.iter().eq([3]), "its object is asked every round");
    }
}
