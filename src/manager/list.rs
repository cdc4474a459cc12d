//! `ListProxy<T>`: Python's list surface over a growable array in the
//! container's segment.
//!
//! Root words: the array's payload offset, the length, the capacity (in
//! slots). A slot is the element itself (Pod) or the offset of its blob.
//! Appends write the slot past the length (unlogged: nothing reaches it)
//! and then the length (logged): one logged word per append. Operations
//! that move many slots (insert, pop_at, remove, reverse, sort) build the
//! new array in a fresh block and switch the root to it, so their undo
//! log stays a few words whatever the length.

use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use super::element::{self, Element, slot_size};
use super::store::{Fail, HEAP_START, Quick, R, Store, Txn, View};
use super::{ContainerError, fingerprint, heap, normalize};
use crate::shm::Kind;
use crate::{OpenError, Options};

/// A range [`ListProxy::slice`] takes: any Rust range (`a..b`, `a..`,
/// `..b`, `a..=b`, `..=b`, `..`, or a `(Bound, Bound)` pair) of `usize`,
/// `isize`, `i32`, `i64`, `u32` or `u64`, or a `(start, stop)` pair of one
/// of them (Python's `slice(start, stop)`). As in Python's slicing, a
/// negative bound counts from the end and bounds past either end are
/// clamped to it. Sealed: implemented here only.
///
/// Clippy's `reversed_empty_ranges` (deny by default) rejects a literal
/// range such as `1..-1`, not knowing that `-1` counts from the end: write
/// the pair `(1, -1)` instead (or allow the lint there).
///
/// ```
/// let l = shmproc::ListProxy::<u8>::new().unwrap();
/// l.extend(*b"abcde").unwrap();
/// assert_eq!(l.slice(-2..).unwrap(), b"de"); // "abcde"[-2:]
/// assert_eq!(l.slice(..=-2).unwrap(), b"abcd"); // inclusive end -2: through 'd'
/// use std::ops::Bound::{Excluded, Unbounded};
/// assert_eq!(l.slice((Excluded(-3i64), Unbounded)).unwrap(), b"de");
/// assert_eq!(l.slice((1, -1)).unwrap(), b"bcd"); // "abcde"[1:-1]
/// ```
pub trait ListRange: sealed::Sealed {
    /// `(lo, hi)` with `lo <= hi <= len`: the positions the range
    /// selects in a list of `len` elements (not API).
    #[doc(hidden)]
    fn __bounds(&self, len: u64) -> (u64, u64);
}

mod sealed {
    pub trait Sealed {}
}

/// Python's slice bounds: a negative bound counts from the end; both are
/// clamped to `0..=len` and `hi` to at least `lo`.
fn py_bounds(lo: Bound<i128>, hi: Bound<i128>, len: u64) -> (u64, u64) {
    let n = i128::from(len);
    let at = |i: i128| if i < 0 { i + n } else { i };
    let lo = match lo {
        Bound::Included(s) => at(s),
        Bound::Excluded(s) => at(s) + 1,
        Bound::Unbounded => 0,
    }
    .clamp(0, n);
    let hi = match hi {
        Bound::Included(e) => at(e) + 1,
        Bound::Excluded(e) => at(e),
        Bound::Unbounded => n,
    }
    .clamp(lo, n);
    // Both in 0..=len, which is a u64.
    (lo as u64, hi as u64)
}

impl sealed::Sealed for std::ops::RangeFull {}
impl ListRange for std::ops::RangeFull {
    fn __bounds(&self, len: u64) -> (u64, u64) {
        (0, len)
    }
}

macro_rules! list_range {
    ($($i:ty),*) => {$(
        list_range!(@r $i, std::ops::Range<$i>, std::ops::RangeFrom<$i>, std::ops::RangeTo<$i>,
            std::ops::RangeInclusive<$i>, std::ops::RangeToInclusive<$i>, (Bound<$i>, Bound<$i>));
        impl sealed::Sealed for ($i, $i) {}
        impl ListRange for ($i, $i) {
            fn __bounds(&self, len: u64) -> (u64, u64) {
                py_bounds(Bound::Included(self.0 as i128), Bound::Excluded(self.1 as i128), len)
            }
        }
    )*};
    (@r $i:ty, $($r:ty),*) => {$(
        impl sealed::Sealed for $r {}
        impl ListRange for $r {
            fn __bounds(&self, len: u64) -> (u64, u64) {
                let wide = |b: Bound<&$i>| b.map(|&x| x as i128);
                py_bounds(wide(self.start_bound()), wide(self.end_bound()), len)
            }
        }
    )*};
}
list_range!(usize, isize, i32, i64, u32, u64);

const ARR: usize = 0;
const LEN: usize = 1;
const CAP: usize = 2;

/// A list in shared memory with Python's list surface: any process that
/// opens it (by name, or through a [`Manager`](crate::Manager)) sees and
/// changes the same list. No server process: each operation is a few
/// loads and stores on the shared segment.
///
/// - **Growth** needs no capacity: the segment grows as the list does,
///   and every handle notices with one atomic load per operation.
/// - **Atomic**: each operation is atomic for all processes; reads run
///   concurrently without a lock (a version word is checked before and
///   after), writers are exclusive.
/// - **Crash-atomic**: a process killed (even by `kill -9`) in the middle
///   of any operation leaves the list exactly as before that operation;
///   the next user repairs it automatically.
///
/// Elements are every [`ShmType`](crate::ShmType) (inline) and `String`
/// / `Vec<u8>` of any length (in the list's own heap).
///
/// ```
/// use shmproc::ListProxy;
/// let squares = ListProxy::<u64>::new().unwrap();
/// for i in 0..10 {
///     squares.append(i * i).unwrap();
/// }
/// // Another process opens it by name:
/// let same = ListProxy::<u64>::open(squares.name()).unwrap();
/// assert_eq!(same.slice(2..5).unwrap(), [4, 9, 16]);
/// assert_eq!(same.get(-1).unwrap(), 81);
/// assert!(ListProxy::<u32>::open(squares.name()).is_err()); // wrong element type
/// ```
pub struct ListProxy<T: Element> {
    store: Arc<Store>,
    inline: Option<u32>,
    s: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T: Element> Clone for ListProxy<T> {
    fn clone(&self) -> Self {
        ListProxy { store: Arc::clone(&self.store), inline: self.inline, s: self.s, _t: PhantomData }
    }
}

impl<T: Element> std::fmt::Debug for ListProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListProxy").field("name", &self.name()).field("len", &self.len()).finish()
    }
}

/// A validated array: payload offset and length (`len * s` bytes inside
/// the array's block, inside the mapping).
#[derive(Clone, Copy)]
struct Arr {
    base: u64,
    len: u64,
    cap: u64,
}

impl<T: Element> ListProxy<T> {
    pub(crate) fn fingerprint() -> crate::shm::Fingerprint {
        fingerprint("ListProxy", &[T::__shape()])
    }

    fn wrap(store: Store) -> Result<Self, OpenError> {
        let s = slot_size::<T>();
        if s == 0 {
            return Err(OpenError::InvalidArgument("a list of a zero-sized type".into()));
        }
        Ok(ListProxy { store: Arc::new(store), inline: T::__shape().inline, s, _t: PhantomData })
    }

    pub(crate) fn create_owned(
        name: &str,
        opts: &Options,
        owner: Option<super::store::Owner>,
    ) -> Result<Self, OpenError> {
        if slot_size::<T>() == 0 {
            return Err(OpenError::InvalidArgument("a list of a zero-sized type".into()));
        }
        Self::wrap(Store::create(name, opts, Kind::List, &Self::fingerprint(), owner, &[])?)
    }

    fn open_impl(name: &str, opts: &Options) -> Result<Self, OpenError> {
        Self::wrap(Store::open(name, opts, Kind::List, &Self::fingerprint())?)
    }

    super::container_constructors!("ListProxy::<u8>");

    /// Reads and validates the root words (through atomics).
    #[inline(always)]
    fn arr_in(&self, v: &View, arr: u64, len: u64, cap: u64) -> R<Arr> {
        if len > cap {
            return Err(Fail::Torn("length past capacity"));
        }
        if arr == 0 {
            return if cap == 0 { Ok(Arr { base: 0, len: 0, cap: 0 }) } else { Err(Fail::Torn("array offset")) };
        }
        let (_, bytes) = heap::block(v, arr)?;
        if cap.checked_mul(self.s).is_none_or(|n| n > bytes) {
            return Err(Fail::Torn("capacity past the array block"));
        }
        Ok(Arr { base: arr, len, cap })
    }

    /// The array as a reader sees it. Only what keeps a read inside the
    /// mapping is checked here (the length within the capacity, the
    /// capacity's slots inside the mapping past the heap start); the block
    /// header, which a read does not need, is checked by writers
    /// (`arr_tx`). A hostile root gives garbage values or an error.
    #[inline]
    fn arr(&self, v: &View) -> R<Arr> {
        let (arr, len, cap) = (v.root(ARR)?, v.root(LEN)?, v.root(CAP)?);
        if len > cap {
            return Err(Fail::Torn("length past capacity"));
        }
        if arr == 0 {
            return if cap == 0 { Ok(Arr { base: 0, len: 0, cap: 0 }) } else { Err(Fail::Torn("array offset")) };
        }
        let end = cap.checked_mul(self.s).and_then(|n| n.checked_add(arr));
        if arr < HEAP_START + heap::BLOCK_HDR || end.is_none_or(|e| e > v.len()) {
            return Err(Fail::Torn("array past the mapping"));
        }
        Ok(Arr { base: arr, len, cap })
    }

    #[inline(always)]
    fn arr_tx(&self, tx: &Txn<'_>) -> R<Arr> {
        self.arr_in(tx.view(), tx.root(ARR), tx.root(LEN), tx.root(CAP))
    }

    fn slot(&self, a: Arr, i: u64) -> u64 {
        a.base + i * self.s
    }

    fn get_at(&self, v: &View, a: Arr, i: u64) -> R<T> {
        element::decode(v, self.slot(a, i), self.inline)
    }

    /// Makes room for `need` slots (in place at the heap top, or by moving
    /// the array to a fresh block).
    #[inline(always)]
    fn reserve(&self, tx: &mut Txn<'_>, a: Arr, need: u64) -> R<Arr> {
        if need <= a.cap {
            return Ok(a);
        }
        self.reserve_more(tx, a, need)
    }

    fn reserve_more(&self, tx: &mut Txn<'_>, a: Arr, need: u64) -> R<Arr> {
        let want = need.max(a.cap.saturating_mul(2)).max(4);
        let bytes = want.checked_mul(self.s).ok_or(Fail::Err(ContainerError::TooLarge {
            what: "a list",
            limit: u64::MAX,
        }))?;
        if a.base != 0 && tx.grow_in_place(a.base, bytes)? {
            let (_, cap_bytes) = heap::block(tx.view(), a.base)?;
            let cap = cap_bytes / self.s;
            tx.set_root(CAP, cap)?;
            return Ok(Arr { cap, ..a });
        }
        let p = tx.alloc(bytes)?;
        if a.len > 0 {
            let old = tx.view().vec(a.base, a.len * self.s)?;
            tx.write_fresh(p, &old)?;
        }
        let (_, cap_bytes) = heap::block(tx.view(), p)?;
        let cap = cap_bytes / self.s;
        tx.set_root(ARR, p)?;
        tx.set_root(CAP, cap)?;
        if a.base != 0 {
            tx.free(a.base)?;
        }
        Ok(Arr { base: p, len: a.len, cap })
    }

    /// Makes the array hold `slots` (raw slot bytes): a fresh array
    /// (`rebuild_new`), or, inside a group, the array itself when the
    /// group allocated it and it has room. No committed state reaches such
    /// an array, so it is rewritten without log; allocating one per
    /// operation instead would grow the segment by a whole array for each
    /// `insert`, `pop_at` or `remove` of a group (their old arrays are
    /// freed only at its commit): 3000 front inserts under the lock into a
    /// list of 3000 `u64` took 222 MB.
    fn rebuild(&self, tx: &mut Txn<'_>, a: Arr, slots: &[u8]) -> R<()> {
        let len = slots.len() as u64 / self.s;
        if tx.in_group() && a.base != 0 && len <= a.cap && tx.allocated_here(a.base) {
            if !slots.is_empty() {
                // `write` into the group's own block: unlogged (and noted, should this operation alone be undone).
                tx.write(a.base, slots)?;
            }
            return tx.set_root(LEN, len);
        }
        self.rebuild_new(tx, a, slots)
    }

    /// Replaces the array by a fresh one holding `slots` (raw slot bytes).
    fn rebuild_new(&self, tx: &mut Txn<'_>, a: Arr, slots: &[u8]) -> R<()> {
        let len = slots.len() as u64 / self.s;
        let p = tx.alloc((len.max(4)) * self.s)?;
        tx.write_fresh(p, slots)?;
        let (_, cap_bytes) = heap::block(tx.view(), p)?;
        tx.set_root(ARR, p)?;
        tx.set_root(LEN, len)?;
        tx.set_root(CAP, cap_bytes / self.s)?;
        if a.base != 0 {
            tx.free(a.base)?;
        }
        Ok(())
    }

    /// Inside a group whose undo log is half full, moves the array into a
    /// block allocated now (its capacity kept), unless it is in one the
    /// group allocated: the group's later writes to its slots then need
    /// no undo log (no committed state reaches the new block), so a loop
    /// of `set`s under the lock is not limited by the log, as
    /// `DictProxy::update` moves its table.
    fn fresh_in_group(&self, tx: &mut Txn<'_>, a: Arr) -> R<Arr> {
        if !tx.in_group() || a.base == 0 || !self.store.log_past_half() || tx.allocated_here(a.base) {
            return Ok(a);
        }
        let slots = self.slots(tx, a)?;
        let p = tx.alloc(a.cap.max(4) * self.s)?;
        tx.write_fresh(p, &slots)?;
        let (_, cap_bytes) = heap::block(tx.view(), p)?;
        let cap = cap_bytes / self.s;
        tx.set_root(ARR, p)?;
        tx.set_root(CAP, cap)?;
        tx.free(a.base)?;
        Ok(Arr { base: p, len: a.len, cap })
    }

    fn slots(&self, tx: &Txn<'_>, a: Arr) -> R<Vec<u8>> {
        if a.len == 0 { Ok(Vec::new()) } else { tx.view().vec(a.base, a.len * self.s) }
    }

    /// Appends `v` (Python's `append`).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<String>::new().unwrap();
    /// l.append("a".to_string()).unwrap();
    /// l.append("bb".repeat(1000)).unwrap();
    /// assert_eq!(l.len(), 2);
    /// assert_eq!(l.get(1).unwrap().len(), 2000);
    /// ```
    pub fn append(&self, v: T) -> Result<(), ContainerError> {
        if T::__inline().is_some()
            && let Some(()) = self.store.write_quick(|q| self.append_quick(q, &v))
        {
            return Ok(());
        }
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            let a = self.reserve(tx, a, a.len + 1)?;
            let slot = element::encode(tx, &v)?;
            tx.write_fresh(self.slot(a, a.len), &slot)?;
            tx.set_root(LEN, a.len + 1)
        })
    }

    /// `append`'s quick form for an inline element with room in the array:
    /// the array's root words checked as a writer checks them (`arr_tx`:
    /// inside the heap block the root names), the element written unlogged
    /// into the slot past the length (no committed state reaches it), then
    /// the new length, logged (a death after its store is undone by the
    /// next locker; a reader beside the open write sees the old length),
    /// and the one commit store. `None` before anything live is written
    /// when this is not the
    /// quick case (no room: `reserve` allocates; a check failed): `append`
    /// then runs the full transaction, which reports what failed.
    #[inline(always)]
    fn append_quick(&self, q: &mut Quick<'_>, v: &T) -> Option<()> {
        let a = self.arr_in(q.view(), q.root(ARR), q.root(LEN), q.root(CAP)).ok()?;
        if a.len >= a.cap {
            return None;
        }
        q.write_fresh(self.slot(a, a.len), &v.__bytes())?;
        q.set_root(LEN, a.len + 1)
    }

    /// Appends every item, as one operation (all or nothing).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u32>::new().unwrap();
    /// l.extend([1, 2, 3]).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), [1, 2, 3]);
    /// ```
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<(), ContainerError> {
        let items: Vec<T> = items.into_iter().collect();
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            let a = self.reserve(tx, a, a.len + items.len() as u64)?;
            for (k, v) in items.iter().enumerate() {
                let slot = element::encode(tx, v)?;
                tx.write_fresh(self.slot(a, a.len + k as u64), &slot)?;
            }
            tx.set_root(LEN, a.len + items.len() as u64)
        })
    }

    /// Inserts `v` before index `i` (negative counts from the end; like
    /// Python, an index past either end inserts at that end).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<i32>::new().unwrap();
    /// l.extend([1, 3]).unwrap();
    /// l.insert(1, 2).unwrap();
    /// l.insert(-100, 0).unwrap();
    /// l.insert(100, 4).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), [0, 1, 2, 3, 4]);
    /// ```
    pub fn insert(&self, i: isize, v: T) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            let len = a.len as i128;
            let idx = if i < 0 { (len + i as i128).max(0) } else { (i as i128).min(len) } as u64;
            let mut slots = self.slots(tx, a)?;
            let slot = element::encode(tx, &v)?;
            let at = (idx * self.s) as usize;
            slots.splice(at..at, slot.iter().copied());
            self.rebuild(tx, a, &slots)
        })
    }

    /// The element at `i` (negative counts from the end).
    ///
    /// ```
    /// use shmproc::{ContainerError, ListProxy};
    /// let l = ListProxy::<u8>::new().unwrap();
    /// l.extend([10, 20]).unwrap();
    /// assert_eq!(l.get(-2).unwrap(), 10);
    /// assert_eq!(l.get(2), Err(ContainerError::IndexOutOfRange { index: 2, len: 2 }));
    /// ```
    pub fn get(&self, i: isize) -> Result<T, ContainerError> {
        self.store.read(|v| {
            let a = self.arr(v)?;
            let idx = normalize(i, a.len)?;
            self.get_at(v, a, idx)
        })
    }

    /// Replaces the element at `i` (negative counts from the end).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<String>::new().unwrap();
    /// l.append("old".into()).unwrap();
    /// l.set(-1, "new".into()).unwrap();
    /// assert_eq!(l.get(0).unwrap(), "new");
    /// assert!(l.set(1, "x".into()).is_err());
    /// ```
    pub fn set(&self, i: isize, v: T) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            let idx = normalize(i, a.len)?;
            let a = self.fresh_in_group(tx, a)?;
            let off = self.slot(a, idx);
            let old = if self.inline.is_none() { Some(tx.view().u64(off)?) } else { None };
            let slot = element::encode(tx, &v)?;
            tx.write(off, &slot)?;
            if let Some(p) = old {
                tx.free(p)?;
            }
            Ok(())
        })
    }

    /// The elements in `range`, as Python's `l[a:b]`: a negative bound
    /// counts from the end (`-3..` is `l[-3:]`, `(1, -1)` or `1..-1` is
    /// `l[1:-1]`: see [`ListRange`] for clippy and `1..-1`),
    /// and bounds past either end are clamped, so a slice is never an
    /// error (an empty range gives `[]`). The bounds may be any of
    /// `usize`, `isize`, `i32`, `i64`, `u32`, `u64` (see [`ListRange`]).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u64>::new().unwrap();
    /// l.extend((0..10).map(|i| i * i)).unwrap();
    /// assert_eq!(l.slice(2..5).unwrap(), [4, 9, 16]); // squares[2:5]
    /// assert_eq!(l.slice(-3..).unwrap(), [49, 64, 81]); // squares[-3:]
    /// assert_eq!(l.slice((1, -1)).unwrap().len(), 8); // squares[1:-1]
    /// assert_eq!(l.slice(..-8).unwrap(), [0, 1]); // squares[:-8]
    /// assert_eq!(l.slice(-100..2).unwrap(), [0, 1]); // clamped: squares[-100:2]
    /// assert_eq!(l.slice(8..100).unwrap(), [64, 81]);
    /// assert_eq!(l.slice((5, 2)).unwrap(), []);
    /// assert_eq!(l.slice(..).unwrap().len(), 10);
    /// let (a, b): (usize, usize) = (3, 4);
    /// assert_eq!(l.slice(a..=b).unwrap(), [9, 16]);
    /// ```
    pub fn slice(&self, range: impl ListRange) -> Result<Vec<T>, ContainerError> {
        self.store.read(|v| {
            let a = self.arr(v)?;
            let (lo, hi) = range.__bounds(a.len);
            // Blobs copied count against the segment's size: slots a peer pointed at one large blob are an
            // error, not thousands of copies of it.
            let mut budget = v.len();
            (lo..hi).map(|i| element::decode_counted(v, self.slot(a, i), self.inline, &mut budget)).collect()
        })
    }

    /// Removes and returns the last element.
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u8>::new().unwrap();
    /// l.extend([1, 2]).unwrap();
    /// assert_eq!(l.pop().unwrap(), 2);
    /// assert_eq!(l.len(), 1);
    /// ```
    pub fn pop(&self) -> Result<T, ContainerError> {
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            if a.len == 0 {
                return Err(ContainerError::Empty("list").into());
            }
            let v = self.get_at(tx.view(), a, a.len - 1)?;
            element::release(tx, self.slot(a, a.len - 1), self.inline)?;
            tx.set_root(LEN, a.len - 1)?;
            Ok(v)
        })
    }

    /// Removes and returns the element at `i` (negative counts from the end).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u8>::new().unwrap();
    /// l.extend([1, 2, 3]).unwrap();
    /// assert_eq!(l.pop_at(0).unwrap(), 1);
    /// assert_eq!(l.to_vec().unwrap(), [2, 3]);
    /// assert!(l.pop_at(5).is_err());
    /// ```
    pub fn pop_at(&self, i: isize) -> Result<T, ContainerError> {
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            if a.len == 0 {
                return Err(ContainerError::Empty("list").into());
            }
            let idx = normalize(i, a.len)?;
            self.take_at(tx, a, idx)
        })
    }

    /// Removes the element at `i` without reading it back (Python's
    /// `del l[i]`; negative counts from the end). Unlike `pop_at`, it also
    /// removes an element that cannot be read back: a stored container
    /// that is gone ([`ContainerError::NestedGone`]).
    ///
    /// ```
    /// use shmproc::{ContainerError, ListProxy};
    /// let l = ListProxy::<u8>::new().unwrap();
    /// l.extend([1, 2, 3]).unwrap();
    /// l.del(-1).unwrap();
    /// l.del(0).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), [2]);
    /// assert_eq!(l.del(1), Err(ContainerError::IndexOutOfRange { index: 1, len: 1 }));
    /// ```
    pub fn del(&self, i: isize) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            let idx = normalize(i, a.len)?;
            self.discard_at(tx, a, idx)
        })
    }

    fn take_at(&self, tx: &mut Txn<'_>, a: Arr, idx: u64) -> R<T> {
        let v = self.get_at(tx.view(), a, idx)?;
        self.discard_at(tx, a, idx)?;
        Ok(v)
    }

    /// Removes the element at `idx` inside a transaction, unread.
    fn discard_at(&self, tx: &mut Txn<'_>, a: Arr, idx: u64) -> R<()> {
        let mut slots = self.slots(tx, a)?;
        let at = (idx * self.s) as usize;
        slots.drain(at..at + self.s as usize);
        element::release(tx, self.slot(a, idx), self.inline)?;
        self.rebuild(tx, a, &slots)
    }

    fn find(&self, v: &View, a: Arr, want: &[u8]) -> R<Option<u64>> {
        for i in 0..a.len {
            if element::slot_eq(v, self.slot(a, i), self.inline, want)? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Removes the first element equal to `x` (Python's `remove`).
    ///
    /// ```
    /// use shmproc::{ContainerError, ListProxy};
    /// let l = ListProxy::<u8>::new().unwrap();
    /// l.extend([1, 2, 1]).unwrap();
    /// l.remove(&1).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), [2, 1]);
    /// assert_eq!(l.remove(&7), Err(ContainerError::ValueNotFound));
    /// ```
    pub fn remove(&self, x: &T) -> Result<(), ContainerError> {
        let want = x.__bytes();
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            let idx = self.find(tx.view(), a, &want)?.ok_or(Fail::Err(ContainerError::ValueNotFound))?;
            self.take_at(tx, a, idx).map(drop)
        })
    }

    /// The index of the first element equal to `x`.
    ///
    /// ```
    /// let l = shmproc::ListProxy::<String>::new().unwrap();
    /// l.extend(["a".to_string(), "b".to_string()]).unwrap();
    /// assert_eq!(l.index(&"b".to_string()).unwrap(), 1);
    /// assert!(l.index(&"z".to_string()).is_err());
    /// ```
    pub fn index(&self, x: &T) -> Result<usize, ContainerError> {
        let want = x.__bytes();
        self.store.read(|v| {
            let a = self.arr(v)?;
            self.find(v, a, &want)?.map(|i| i as usize).ok_or(Fail::Err(ContainerError::ValueNotFound))
        })
    }

    /// How many elements equal `x`.
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u8>::new().unwrap();
    /// l.extend([1, 2, 1]).unwrap();
    /// assert_eq!(l.count(&1).unwrap(), 2);
    /// ```
    pub fn count(&self, x: &T) -> Result<usize, ContainerError> {
        let want = x.__bytes();
        self.store.read(|v| {
            let a = self.arr(v)?;
            let mut n = 0;
            for i in 0..a.len {
                n += usize::from(element::slot_eq(v, self.slot(a, i), self.inline, &want)?);
            }
            Ok(n)
        })
    }

    /// Whether some element equals `x` (Python's `x in l`).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u8>::new().unwrap();
    /// l.append(3).unwrap();
    /// assert!(l.contains(&3).unwrap() && !l.contains(&4).unwrap());
    /// ```
    pub fn contains(&self, x: &T) -> Result<bool, ContainerError> {
        let want = x.__bytes();
        self.store.read(|v| {
            let a = self.arr(v)?;
            Ok(self.find(v, a, &want)?.is_some())
        })
    }

    /// The number of elements (0 if the segment is corrupted).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u8>::new().unwrap();
    /// l.extend([1, 2]).unwrap();
    /// assert_eq!(l.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        // The length and capacity root words only (in the control block,
        // always mapped): the array itself need not be mapped to count it
        // (a process that cannot map a peer's growth still gets it right).
        let len = |v: &View| -> R<usize> {
            let (len, cap) = (v.root(LEN)?, v.root(CAP)?);
            if len > cap {
                return Err(Fail::Torn("length past capacity"));
            }
            Ok(usize::try_from(len).unwrap_or(usize::MAX))
        };
        self.store.read(len).unwrap_or(0)
    }

    /// Whether the list is empty.
    ///
    /// ```
    /// assert!(shmproc::ListProxy::<u8>::new().unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every element (and frees all their space at once).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<String>::new().unwrap();
    /// l.extend(std::iter::repeat_n("x".to_string(), 100)).unwrap();
    /// l.clear().unwrap();
    /// assert!(l.is_empty());
    /// ```
    pub fn clear(&self) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            if !tx.in_group() {
                return tx.reset();
            }
            // Inside a group the heap cannot be reset (`Txn::reset`): the array and the elements' blobs are freed
            // at the group's commit instead.
            let a = self.arr_tx(tx)?;
            for i in 0..a.len {
                element::release(tx, self.slot(a, i), self.inline)?;
            }
            if a.base != 0 {
                tx.free(a.base)?;
            }
            const _: () = assert!(LEN == ARR + 1 && CAP == ARR + 2);
            tx.set_roots(ARR, &[0, 0, 0])
        })
    }

    /// Reverses the list in place.
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u8>::new().unwrap();
    /// l.extend([1, 2, 3]).unwrap();
    /// l.reverse().unwrap();
    /// assert_eq!(l.to_vec().unwrap(), [3, 2, 1]);
    /// ```
    pub fn reverse(&self) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            let slots = self.slots(tx, a)?;
            let rev: Vec<u8> = slots.chunks_exact(self.s as usize).rev().flatten().copied().collect();
            self.rebuild(tx, a, &rev)
        })
    }

    /// Sorts by `key` (stable), in place, as one operation.
    ///
    /// ```
    /// let l = shmproc::ListProxy::<String>::new().unwrap();
    /// l.extend(["ccc".to_string(), "a".to_string(), "bb".to_string()]).unwrap();
    /// l.sort_by_key(|s| s.len()).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), ["a", "bb", "ccc"]);
    /// ```
    pub fn sort_by_key<K: Ord>(&self, mut key: impl FnMut(&T) -> K) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            let slots = self.slots(tx, a)?;
            let mut items = Vec::with_capacity(a.len as usize);
            // As in `slice`: the elements read never add up to more than the segment.
            let mut budget = tx.view().len();
            for (i, s) in slots.chunks_exact(self.s as usize).enumerate() {
                let e = element::decode_counted(tx.view(), self.slot(a, i as u64), self.inline, &mut budget)?;
                items.push((key(&e), s));
            }
            items.sort_by(|x, y| x.0.cmp(&y.0));
            let sorted: Vec<u8> = items.iter().flat_map(|(_, s)| s.iter().copied()).collect();
            self.rebuild(tx, a, &sorted)
        })
    }

    /// Sorts the list (stable), in place, as one operation.
    ///
    /// ```
    /// let l = shmproc::ListProxy::<i64>::new().unwrap();
    /// l.extend([3, -1, 2]).unwrap();
    /// l.sort().unwrap();
    /// assert_eq!(l.to_vec().unwrap(), [-1, 2, 3]);
    /// ```
    pub fn sort(&self) -> Result<(), ContainerError>
    where
        T: Ord,
    {
        self.sort_by_key(|x| x.clone())
    }

    /// A copy of every element (one consistent snapshot).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u16>::new().unwrap();
    /// l.extend([5, 6]).unwrap();
    /// assert_eq!(l.to_vec().unwrap(), vec![5, 6]);
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>, ContainerError> {
        self.slice(..)
    }

    /// Iterates over a consistent snapshot (taken now; later changes by
    /// any process are not seen).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u8>::new().unwrap();
    /// l.extend([1, 2, 3]).unwrap();
    /// let it = l.iter().unwrap();
    /// l.clear().unwrap();
    /// assert_eq!(it.sum::<u8>(), 6);
    /// ```
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>, ContainerError> {
        Ok(self.to_vec()?.into_iter())
    }

    /// Gives space back: moves the array into the smallest block that
    /// holds the elements (the freed block is reused by later growth).
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u64>::new().unwrap();
    /// l.extend(0..1000).unwrap();
    /// l.extend(0..0).unwrap();
    /// while l.len() > 10 { l.pop().unwrap(); }
    /// l.shrink_to_fit().unwrap();
    /// assert_eq!(l.len(), 10);
    /// ```
    pub fn shrink_to_fit(&self) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            let a = self.arr_tx(tx)?;
            if a.cap <= a.len.max(4) * 2 {
                return Ok(());
            }
            let slots = self.slots(tx, a)?;
            self.rebuild_new(tx, a, &slots)
        })
    }

    /// Runs `f` as one transaction holding the list's lock (several
    /// operations as one, where Python users reach for a separate Lock):
    /// readers in other threads and processes keep reading the state
    /// before the group without waiting, then the state after it; no
    /// writer comes in between; a crash in the middle of `f` (or a panic in
    /// it) leaves the list as before the group. An operation inside that
    /// fails changes nothing and the group goes on; if the group's undo
    /// log fills, the whole group is undone and this returns
    /// [`ContainerError::TooLarge`](crate::ContainerError::TooLarge).
    /// Once the log is half full, a `set` moves the array to fresh space
    /// first, so a loop of `set`s over every element fits whatever the
    /// length.
    ///
    /// The group covers this list only: an operation on another container
    /// inside `f` is that container's own transaction, committed at once
    /// (a crash before the group's end keeps it and undoes the group).
    /// And it takes that container's lock while this one is held: as
    /// with two Python `Lock`s, processes that nest two containers' groups
    /// must nest them in the same order, or they can wait on each other
    /// for ever.
    ///
    /// ```
    /// let l = shmproc::ListProxy::<u64>::new().unwrap();
    /// l.append(1).unwrap();
    /// l.with_lock(|l| {
    ///     let last = l.get(-1)?;
    ///     l.append(last + 1)
    /// }).unwrap().unwrap();
    /// assert_eq!(l.to_vec().unwrap(), [1, 2]);
    /// ```
    pub fn with_lock<U>(&self, f: impl FnOnce(&Self) -> U) -> Result<U, ContainerError> {
        self.store.with_lock(|| f(self))
    }
}

/// Equality with a slice, an array or a `Vec` (Python's `l == [1, 2]`):
/// whether the list holds exactly those elements, in order (one
/// snapshot; false if it cannot be read).
///
/// ```
/// let l = shmproc::ListProxy::<u8>::new().unwrap();
/// l.extend([1, 2]).unwrap();
/// assert!(l == [1, 2] && l == vec![1, 2] && l == [1u8, 2][..]);
/// assert!(l != [2, 1]);
/// ```
impl<T: Element + PartialEq> PartialEq<[T]> for ListProxy<T> {
    fn eq(&self, other: &[T]) -> bool {
        self.to_vec().is_ok_and(|v| v == other)
    }
}

impl<T: Element + PartialEq, const N: usize> PartialEq<[T; N]> for ListProxy<T> {
    fn eq(&self, other: &[T; N]) -> bool {
        self == &other[..]
    }
}

impl<T: Element + PartialEq> PartialEq<Vec<T>> for ListProxy<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        self == &other[..]
    }
}
