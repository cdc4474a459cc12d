//! `wait`'s ready path and spin phase on the objects' shared words.
//!
//! One pass over the objects ([`Watch::list`], the ready path) asks each
//! whether it is ready and, in the same call, which shared words say when
//! it may become ready ([`WaitObject::watch`](super::WaitObject::watch)):
//! - an *exact* word is its object's only word and the object is ready
//!   exactly when a bit of a mask is set in it (an event's SET bit, a
//!   semaphore's count);
//! - a *changed* word held a value, read before the object was judged not
//!   ready, that it keeps until the object may be ready (an MPMC ring's
//!   tail: only a push or a close moves it).
//!
//! Both reduce to one test per word, `(word ^ x) & m != 0` (exact: `x` 0,
//! `m` the mask; changed: `x` the value seen, `m` all ones), so a spin
//! round ([`Watch::hit`]) is a few plain loads and one branch, with no
//! call, as `Event::wait`'s round is one load; objects that cannot be
//! watched (an unbounded queue's chain of rings, a process's end, a pipe,
//! an SPSC ring, words past [`CAPACITY`]) are asked `ready(false)` in
//! every round. After a hit, [`Watch::recheck`] re-reads every object in
//! list order (as a scan does): exact words judged on the spot, changed
//! or polled objects asked `ready(false)`.
//!
//! Only latency rests on the spin: a change it misses (a word changed and
//! changed back between two rounds) is seen by the slow path's scan,
//! which every sleep follows.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{Ready, Waitable};

/// Words watched per `wait`; the objects whose words do not all fit are
/// asked `ready` in every round instead.
pub(crate) const CAPACITY: usize = 16;

/// One watched word (64 or 32 bits).
#[derive(Clone, Copy)]
struct Word {
    /// From a `&AtomicU64` if `wide`, else from a `&AtomicU32`, in an
    /// object's control block.
    ptr: *const (),
    wide: bool,
    /// The word alone says whether its object is ready (`m` its mask).
    exact: bool,
    /// Its object's index in the `wait` list (below [`MAX_OBJECTS`](super::MAX_OBJECTS)).
    object: u8,
    x: u64,
    m: u64,
}

impl Word {
    /// The word's value now, widened. Acquire: pairs with the Release
    /// store that made the object ready (an event's `set` swap, a
    /// semaphore's `release` CAS, a ring's claim CAS), so what was written
    /// before it is visible to the objects re-checked after this load.
    #[inline(always)]
    fn load(&self) -> u64 {
        if self.wide {
            // SAFETY: `ptr` came from a `&AtomicU64` (`wide`) in an object's control block; by `watch`'s contract
            // it stays mapped while the object is borrowed, and `wait` borrows every object for as long as its
            // `Watch` (a local of `wait`, given out to no one) is read.
            unsafe { &*(self.ptr as *const AtomicU64) }.load(Ordering::Acquire)
        } else {
            // SAFETY: as above, from a `&AtomicU32`.
            unsafe { &*(self.ptr as *const AtomicU32) }.load(Ordering::Acquire).into()
        }
    }
}

/// The words the objects of one `wait` listed, in the order of their
/// objects in the list.
pub struct Watch {
    /// The first `n` are written. Not initialised as a whole: `wait`
    /// makes one per call on its ready path.
    words: [MaybeUninit<Word>; CAPACITY],
    n: usize,
    /// The object listing now.
    object: u8,
    /// The objects asked `ready(false)` in every round: those that cannot
    /// be watched, or whose words did not all fit.
    polled: Ready,
}

impl Watch {
    pub(super) fn new() -> Self {
        Watch { words: [const { MaybeUninit::uninit() }; CAPACITY], n: 0, object: 0, polled: Ready::default() }
    }

    /// The words listed.
    #[inline(always)]
    fn words(&self) -> &[Word] {
        let n = self.n.min(CAPACITY);
        // SAFETY: the first `n` elements (at most CAPACITY) were written by `push` (`n` only grows there, after
        // the write), and `MaybeUninit<Word>` has `Word`'s layout.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const Word, n) }
    }

    /// As [`words`](Self::words), to update.
    #[inline(always)]
    fn words_mut(&mut self) -> &mut [Word] {
        let n = self.n.min(CAPACITY);
        // SAFETY: as in `words`; the borrow of `self` is unique.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut Word, n) }
    }

    #[inline]
    fn push(&mut self, ptr: *const (), wide: bool, exact: bool, x: u64, m: u64) {
        match self.words.get_mut(self.n) {
            Some(slot) => {
                slot.write(Word { ptr, wide, exact, object: self.object, x, m });
                self.n += 1;
            }
            None => self.polled.insert(self.object.into()),
        }
    }

    /// The object is ready exactly when a bit of `mask` is set in `word`,
    /// its only word.
    #[inline]
    pub(crate) fn exact32(&mut self, word: &AtomicU32, mask: u32) {
        self.push(word as *const AtomicU32 as *const (), false, true, 0, mask.into());
    }

    /// [`exact32`](Self::exact32) for a 64-bit word.
    #[inline]
    pub(crate) fn exact64(&mut self, word: &AtomicU64, mask: u64) {
        self.push(word as *const AtomicU64 as *const (), true, true, 0, mask);
    }

    /// The object, judged not ready after `word` was read as `seen`, stays
    /// so while `word` holds `seen`.
    #[inline]
    pub(crate) fn changed64(&mut self, word: &AtomicU64, seen: u64) {
        self.push(word as *const AtomicU64 as *const (), true, false, seen, u64::MAX);
    }

    /// The ready path (inlined into `wait`'s caller): asks every object
    /// whether it is ready, and lists the words of those that can be
    /// watched. The ready ones (empty: none).
    #[inline(always)]
    pub(super) fn list(&mut self, objects: &mut [&mut dyn Waitable]) -> Ready {
        // A running bit (a shift by one per object) rather than `1 << i` of
        // a u128 per object: fewer instructions on the ready path.
        let (mut bits, mut bit) = (0u128, 1u128);
        for (i, o) in objects.iter_mut().enumerate() {
            // `i` < MAX_OBJECTS = 128 (checked by `wait`).
            self.object = i as u8;
            let ready = match o.watch(self) {
                Some(ready) => ready,
                None => {
                    self.polled.insert(i);
                    o.ready(false)
                }
            };
            if ready {
                bits |= bit;
            }
            bit <<= 1;
        }
        Ready { bits }
    }

    /// One spin round: whether a watched word says its object may be
    /// ready, or a polled object is.
    #[inline(always)]
    pub(super) fn hit(&self, objects: &mut [&mut dyn Waitable]) -> bool {
        let mut hit = 0;
        for w in self.words() {
            hit |= (w.load() ^ w.x) & w.m;
        }
        hit != 0 || (!self.polled.is_empty() && self.polled_ready(objects))
    }

    /// Whether a polled object is ready.
    #[inline(never)]
    fn polled_ready(&self, objects: &mut [&mut dyn Waitable]) -> bool {
        let polled = self.polled;
        objects.iter_mut().enumerate().any(|(i, o)| polled.contains(i) && o.ready(false))
    }

    /// After a hit, when no object is polled: the words in list order,
    /// read again; an exact word judged on the spot, a changed one taken
    /// with its new value and its object asked `ready(false)`.
    #[inline(always)]
    pub(super) fn quick_recheck(&mut self, objects: &mut [&mut dyn Waitable]) -> Ready {
        let mut ready = Ready::default();
        for w in self.words_mut() {
            let now = w.load();
            if w.exact {
                if now & w.m != 0 {
                    ready.insert(w.object.into());
                }
            } else if now != w.x {
                w.x = now;
                if objects.get_mut(usize::from(w.object)).is_some_and(|o| o.ready(false)) {
                    ready.insert(w.object.into());
                }
            }
        }
        ready
    }

    /// Whether some objects are polled.
    #[inline(always)]
    pub(super) fn has_polled(&self) -> bool {
        !self.polled.is_empty()
    }

    /// After a hit: every object in list order, its words read again
    /// (exact ones judged here; a changed one taken with its new value
    /// from now on), asked `ready(false)` if one of its words changed or
    /// it is polled. The ready ones. As with a scan, each object is looked
    /// at after the ones before it in the list.
    #[inline(never)]
    pub(super) fn recheck(&mut self, objects: &mut [&mut dyn Waitable]) -> Ready {
        let polled = self.polled;
        let mut ready = Ready::default();
        let mut k = 0;
        for (i, o) in objects.iter_mut().enumerate() {
            let mut ask = polled.contains(i);
            // The words of object `i` (pushed in the order of the objects).
            while let Some(w) = self.words_mut().get_mut(k)
                && usize::from(w.object) == i
            {
                let now = w.load();
                if w.exact {
                    if now & w.m != 0 {
                        ready.insert(i);
                    }
                } else if now != w.x {
                    w.x = now;
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
    fn a_change_of_a_watched_word_or_a_mask_bit_is_a_hit() {
        let (a, b) = (AtomicU64::new(5), AtomicU32::new(2));
        let mut w = Watch::new();
        w.changed64(&a, 5);
        w.object = 1;
        w.exact32(&b, 1);
        assert!(!w.hit(&mut []));
        b.store(3, Ordering::Relaxed);
        assert!(w.hit(&mut []));
        b.store(2, Ordering::Relaxed);
        a.store(6, Ordering::Relaxed);
        assert!(w.hit(&mut []));
        assert!(w.quick_recheck(&mut []).is_empty(), "no object to ask: nothing ready");
        assert!(!w.hit(&mut []), "the new value is the one seen now");
        a.store(1 << 63 | 6, Ordering::Relaxed);
        assert!(w.hit(&mut []), "a high bit counts too");
    }

    #[test]
    fn an_object_whose_words_do_not_fit_is_polled() {
        let a = AtomicU64::new(0);
        let mut w = Watch::new();
        for _ in 0..CAPACITY {
            w.changed64(&a, 0);
        }
        assert!(w.polled.is_empty());
        w.object = 3;
        w.exact32(&AtomicU32::new(0), 1);
        assert!(w.n == CAPACITY && w.polled.iter().eq([3]), "its object is asked every round");
    }
}
