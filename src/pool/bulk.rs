//! The results of a job of plain data (the bulk path): a `map` of `u64`
//! to `u64` keeps its values where they end up, in one `Vec`, filled a
//! result frame at a time with one copy; a bit per item says which have an
//! outcome, and the few failures wait aside. No per-item allocation,
//! decoding or boxing.
//!
//! Used for jobs of known size, in order, whose result type's encoding is
//! its memory image ([`pod_width`](super::frame::pod_width)).

use std::collections::BTreeMap;
use std::mem::MaybeUninit;

use super::error::TaskError;
use super::result::Outcome;

/// Where a bulk job's outcomes land.
pub(crate) struct Bulk<R> {
    /// Item `i`'s value, initialised when its bit is set (zeros for a
    /// failed item).
    vals: Vec<MaybeUninit<R>>,
    /// One bit per item: it has an outcome.
    have: Vec<u64>,
    failed: BTreeMap<u64, Box<TaskError>>,
}

/// Whether none of bits `at..at + n` is set: the partial words one by
/// one, the whole ones in one tight pass (a run of a result
/// frame is thousands of items: a closure call per word was ~0.4
/// instructions per item under callgrind).
#[inline]
fn none_set(have: &[u64], at: usize, n: usize) -> bool {
    let (head, whole, tail) = split_words(at, n);
    let mut clear = have[whole.clone()].iter().fold(0, |a, &w| a | w) == 0;
    for (w, m) in [head, tail].into_iter().flatten() {
        clear &= have[w] & m == 0;
    }
    clear
}

/// Sets bits `at..at + n` (as [`none_set`] walks them).
#[inline]
fn set_all(have: &mut [u64], at: usize, n: usize) {
    let (head, whole, tail) = split_words(at, n);
    have[whole].fill(!0);
    for (w, m) in [head, tail].into_iter().flatten() {
        have[w] |= m;
    }
}

/// A word's index and the mask of some of its bits.
type Masked = (usize, u64);

/// Bits `at..at + n` as (a partial first word and its mask, the whole
/// words, a partial last word and its mask).
#[inline]
fn split_words(at: usize, n: usize) -> (Option<Masked>, std::ops::Range<usize>, Option<Masked>) {
    let end = at + n;
    let (first_whole, end_whole) = (at.div_ceil(64), end / 64);
    if first_whole > end_whole {
        // Inside one word.
        let mask = if n == 0 { 0 } else { ((!0u64) >> (64 - n)) << (at % 64) };
        return (Some((at / 64, mask)).filter(|_| n > 0), 0..0, None);
    }
    let head = (!at.is_multiple_of(64)).then(|| (at / 64, !0u64 << (at % 64)));
    let tail = (!end.is_multiple_of(64)).then(|| (end / 64, (1u64 << (end % 64)) - 1));
    (head, first_whole..end_whole, tail)
}

impl<R> Bulk<R> {
    /// Room for `n` outcomes. `R` must be plain data whose encoding is its
    /// memory image (`pod_width::<R>()` is `Some`): [`put_run`](Self::put_run)
    /// relies on it.
    pub(crate) fn new(n: usize) -> Bulk<R> {
        let mut vals = Vec::with_capacity(n);
        // SAFETY: `MaybeUninit` needs no initialisation; the capacity is `n`.
        unsafe { vals.set_len(n) };
        Bulk { vals, have: vec![0; n.div_ceil(64)], failed: BTreeMap::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.vals.len()
    }

    /// Room for `n` outcomes: more, or fewer (only items that have none
    /// yet may go: a streamed job's input ended before its size hint).
    pub(crate) fn resize(&mut self, n: usize) {
        if n > self.vals.len() {
            self.vals.reserve_exact(n - self.vals.len());
            // SAFETY: `MaybeUninit` needs no initialisation; the capacity
            // is at least `n` (reserved above).
            unsafe { self.vals.set_len(n) };
        } else {
            debug_assert!((n..self.vals.len()).all(|i| !self.has(i)));
            self.vals.truncate(n);
            self.failed.retain(|&k, _| k < n as u64);
        }
        self.have.resize(n.div_ceil(64), 0);
        if !n.is_multiple_of(64)
            && let Some(w) = self.have.last_mut()
        {
            // Bits past the end stay clear (`first_not_ok` reads whole words).
            *w &= (1u64 << (n % 64)) - 1;
        }
    }

    #[inline]
    pub(crate) fn has(&self, i: usize) -> bool {
        i < self.vals.len() && self.have[i / 64] & (1 << (i % 64)) != 0
    }

    /// Stores item `index`'s outcome unless it has one; whether it was new.
    pub(crate) fn put(&mut self, index: u64, outcome: Outcome<R>) -> bool {
        let Some(i) = usize::try_from(index).ok().filter(|&i| i < self.vals.len()) else { return false };
        if self.has(i) {
            return false;
        }
        self.have[i / 64] |= 1 << (i % 64);
        match outcome {
            Ok(v) => {
                self.vals[i].write(v);
            }
            Err(e) => {
                // Zeros are a valid `R` (plain data): every item with an
                // outcome holds an initialised value, failed or not.
                self.vals[i] = MaybeUninit::zeroed();
                self.failed.insert(index, e);
            }
        }
        true
    }

    /// Stores the values `bytes` (their memory images back to back) of
    /// items `at..`, in one copy when none of them has an outcome yet;
    /// how many were new. `None` (nothing stored) if `bytes` is not a whole
    /// number of values or runs past the job.
    pub(crate) fn put_run(&mut self, at: u64, bytes: &[u8]) -> Option<u64> {
        let width = std::mem::size_of::<R>();
        if width == 0 || !bytes.len().is_multiple_of(width) {
            return None;
        }
        let n = bytes.len() / width;
        let at = usize::try_from(at).ok().filter(|&a| a.checked_add(n).is_some_and(|e| e <= self.vals.len()))?;
        if !none_set(&self.have, at, n) {
            // Some came already (never on the normal path): one by one.
            let mut new = 0;
            for (k, v) in bytes.chunks_exact(width).enumerate() {
                if !self.has(at + k) {
                    // SAFETY: `v` is `width` bytes of a private buffer; `R` is plain data: any bytes are an `R`.
                    self.vals[at + k].write(unsafe { v.as_ptr().cast::<R>().read_unaligned() });
                    self.have[(at + k) / 64] |= 1 << ((at + k) % 64);
                    new += 1;
                }
            }
            return Some(new);
        }
        // `bytes`: `n * width` bytes of a private buffer (never shared), not overlapping `vals`.
        // SAFETY: `at + n <= len` (checked): inside `vals`; `R` is plain data: any bytes are a valid `R`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.vals.as_mut_ptr().add(at).cast::<u8>(), bytes.len()) };
        set_all(&mut self.have, at, n);
        Some(n as u64)
    }

    /// Stores the values of items `at..at + n`, written by `copy` straight
    /// into their place (their memory images, `n * size_of::<R>()` bytes:
    /// the bulk path's one copy out of shared memory; `copy` must write
    /// every byte it is given); how many were new.
    /// `None` (nothing stored, `copy` not called) if the run passes the
    /// job's end.
    pub(crate) fn put_run_with(&mut self, at: u64, n: usize, copy: &mut dyn FnMut(&mut [MaybeUninit<u8>])) -> Option<u64> {
        let width = std::mem::size_of::<R>();
        let bytes = n.checked_mul(width)?;
        let at = usize::try_from(at).ok().filter(|&a| a.checked_add(n).is_some_and(|e| e <= self.vals.len()))?;
        if !none_set(&self.have, at, n) {
            // Some came already (never on the normal path): through a buffer.
            let mut buf = vec![MaybeUninit::new(0u8); bytes];
            copy(&mut buf);
            // SAFETY: `copy` initialises every byte it is given (its
            // contract), and they were initialised before anyway.
            let buf: Vec<u8> = buf.into_iter().map(|b| unsafe { b.assume_init() }).collect();
            return self.put_run(at as u64, &buf);
        }
        // Viewed as `MaybeUninit<u8>` (no claim that they are initialised) while `self` is borrowed.
        // SAFETY: `at + n <= len` (checked): the values of items `at..at + n`, inside `vals`.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.vals.as_mut_ptr().add(at).cast::<MaybeUninit<u8>>(), bytes) };
        // `copy` initialises every byte of `dst` (its contract); `R` is
        // plain data (the constructor's contract): any bytes are an `R`.
        copy(dst);
        set_all(&mut self.have, at, n);
        Some(n as u64)
    }

    /// Item `i`'s outcome (it has one: [`has`](Self::has)), moved out.
    pub(crate) fn take(&mut self, i: usize) -> Outcome<R> {
        debug_assert!(self.has(i));
        match self.failed.remove(&(i as u64)) {
            Some(e) => Err(e),
            // SAFETY: it has an outcome, so its value was written (`put`/`put_run`); `R` is plain data,
            // so reading it out leaves nothing to drop twice.
            None => Ok(unsafe { self.vals[i].assume_init_read() }),
        }
    }

    /// Whether no item failed among those not taken yet.
    pub(crate) fn none_failed(&self) -> bool {
        self.failed.is_empty()
    }

    /// The first item of `from..` that has no outcome, or failed.
    pub(crate) fn first_not_ok(&self, from: usize) -> Option<usize> {
        let n = self.vals.len();
        let mut missing = None;
        if from < n {
            let (head, whole, tail) = split_words(from, n - from);
            let hole = |(w, m): (usize, u64)| Some(!self.have[w] & m).filter(|&h| h != 0).map(|h| w * 64 + h.trailing_zeros() as usize);
            missing = head.and_then(hole).or_else(|| {
                // Whole words in one tight pass (all set, normally).
                let k = self.have[whole.clone()].iter().position(|&w| w != !0);
                k.map(|k| (whole.start + k) * 64 + (!self.have[whole.start + k]).trailing_zeros() as usize)
                    .or_else(|| tail.and_then(hole))
            });
        }
        let failed = self.failed.range(from as u64..).next().map(|(&k, _)| k as usize);
        match (missing, failed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Item `i`'s error, moved out (`None` if it did not fail).
    pub(crate) fn take_failure(&mut self, i: usize) -> Option<Box<TaskError>> {
        self.failed.remove(&(i as u64))
    }

    /// Every value from `from` on, in order: only when
    /// [`first_not_ok`](Self::first_not_ok)`(from)` is `None`.
    pub(crate) fn into_values(mut self, from: usize) -> Vec<R> {
        debug_assert!(self.first_not_ok(from).is_none());
        for i in 0..from.min(self.vals.len()) {
            if !self.has(i) {
                // Skipped (a hole): give it a value to drop (zeros are an `R`).
                self.vals[i] = MaybeUninit::zeroed();
            }
        }
        let vals = std::mem::take(&mut self.vals);
        let mut vals = std::mem::ManuallyDrop::new(vals);
        // Every item has an outcome from `from` on (the caller checked), the ones before were taken:
        // all initialised (`put`, `put_run`); `R` is plain data, so dropping the ones read out is a no-op.
        // SAFETY: `MaybeUninit<R>` has `R`'s layout; the allocation moves to the new `Vec` as it stands.
        let mut all = unsafe { Vec::from_raw_parts(vals.as_mut_ptr().cast::<R>(), vals.len(), vals.capacity()) };
        all.drain(..from.min(all.len()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_helpers_agree_with_bit_by_bit() {
        for at in 0..140 {
            for n in 0..140 {
                let mut have = vec![0u64; 5];
                set_all(&mut have, at, n);
                for i in 0..320 {
                    assert_eq!(have[i / 64] >> (i % 64) & 1 == 1, (at..at + n).contains(&i), "at {at} n {n} bit {i}");
                }
                let mut one = vec![0u64; 5];
                for i in [at.wrapping_sub(1), at, at + n / 2, at + n.saturating_sub(1), at + n] {
                    if i < 320 {
                        one.fill(0);
                        one[i / 64] |= 1 << (i % 64);
                        assert_eq!(none_set(&one, at, n), !(at..at + n).contains(&i), "at {at} n {n} bit {i}");
                    }
                }
                let mut b = Bulk::<u64>::new(300);
                set_all(&mut b.have, 0, 300);
                if at + n < 300 && n > 0 {
                    let hole = at + n - 1;
                    b.have[hole / 64] &= !(1 << (hole % 64));
                    assert_eq!(b.first_not_ok(at), Some(hole), "at {at} n {n}");
                } else if at < 300 {
                    assert_eq!(b.first_not_ok(at), None);
                }
            }
        }
    }

    #[test]
    fn runs_fill_in_place_and_the_first_hole_or_failure_is_found() {
        let mut b = Bulk::<u64>::new(200);
        let vals: Vec<u64> = (10..140).collect();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(b.put_run(10, &bytes), Some(130));
        assert_eq!(b.put_run(10, &bytes), Some(0), "a second delivery changes nothing");
        assert_eq!(b.put_run(190, &bytes), None, "past the end");
        assert_eq!(b.put_run(0, &bytes[..7]), None, "not whole values");
        assert_eq!(b.first_not_ok(0), Some(0));
        assert_eq!(b.first_not_ok(10), Some(140));
        assert!(b.put(150, Err(Box::new(TaskError::Cancelled { index: 150 }))));
        assert!(b.put(0, Ok(0)));
        for i in (1..10).chain(140..200) {
            if i != 150 {
                assert!(b.put(i, Ok(i)));
            }
        }
        assert_eq!(b.first_not_ok(0), Some(150));
        assert!(b.has(150) && !b.none_failed());
        assert_eq!(b.take(3), Ok(3));
        assert!(b.take_failure(150).is_some());
        assert!(!b.put(150, Ok(150)), "it had an outcome");
        // In place from a copy function: bounds first, `copy` not called
        // for a run past the end; over values already there, through a
        // buffer (the ones there stay).
        let mut c = Bulk::<u64>::new(10);
        let mut calls = 0;
        let mut fill = |dst: &mut [MaybeUninit<u8>]| {
            calls += 1;
            for (k, b) in dst.iter_mut().enumerate() {
                *b = MaybeUninit::new(if k % 8 == 0 { 40 + (k / 8) as u8 } else { 0 });
            }
        };
        assert_eq!(c.put_run_with(8, 3, &mut fill), None);
        assert_eq!(c.put_run_with(u64::MAX, 1, &mut fill), None);
        assert!(c.put(3, Ok(99)));
        assert_eq!(c.put_run_with(2, 4, &mut fill), Some(3));
        assert_eq!(c.put_run_with(6, 4, &mut fill), Some(4));
        assert_eq!(calls, 2);
        assert_eq!((c.take(2), c.take(3), c.take(4), c.take(9)), (Ok(40), Ok(99), Ok(42), Ok(43)));
        let v = Bulk::<u64>::new(3);
        assert_eq!(v.first_not_ok(0), Some(0));
        let mut w = Bulk::<u64>::new(130);
        assert_eq!(w.put_run(0, &(0..130u64).flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()), Some(130));
        assert_eq!(w.first_not_ok(0), None);
        assert_eq!(w.take(0), Ok(0));
        assert_eq!(w.into_values(1), (1..130).collect::<Vec<u64>>());
    }
}
