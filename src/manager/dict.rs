//! `DictProxy<K, V>`: Python's dict surface over an open-addressing hash
//! table (linear probing with tombstones) in the container's heap.
//!
//! Root words: the table's payload offset, its number of buckets (a power
//! of two), the number of live entries, the number of used buckets
//! (live + tombstones), and the next insertion number. A bucket is
//! `[tag : u32 | insertion number : u32][key slot][value slot]` (24 bytes
//! for u64 -> u64 and for String -> u64), the tag being 0 (empty), 1
//! (tombstone) or 32 bits of the key's hash with bit 1 set: a probe reads
//! the tag, the key and the value from one bucket, one cache line for most
//! buckets. A key's home bucket is its tag times the golden ratio (top
//! bits; Fibonacci hashing), so a resize places an entry from its tag
//! alone, without hashing its key again. The table is rebuilt (doubled)
//! when its used buckets would pass 4/5 of it.
//!
//! The insertion number gives Python's order: `keys()` / `items()` in
//! insertion order (a new value for a present key keeps its place),
//! `popitem` the last inserted entry. When the next number would not fit
//! in 32 bits the table is rebuilt with its entries renumbered 0..count in
//! their order (once per 4 billion insertions).
//!
//! A change to a live bucket logs that bucket; a new entry writes its
//! vacant bucket's key and value unlogged (nothing reads them while the
//! tag says empty or tombstone) and logs the tag word it makes live and
//! the three count words as one log append (a tombstone inside a group is
//! logged whole: the group's rollback may bring back the entry removed
//! there). A resize builds the new table in a fresh block (only the tag
//! words are cleared), copies each live bucket in whole words, and
//! switches the root to it.
//!
//! Hashing: a wyhash-like multiply-fold keyed with the container's random
//! seed (chosen at creation, in the control block), so a few instructions
//! for a u64 key, and keys that collide cannot be picked without the seed.

use std::marker::PhantomData;
use std::sync::Arc;

use super::element::{self, Element};
use super::store::{Fail, HEAP_START, Quick, R, Store, Txn, View, crash_point};
use super::{ContainerError, fingerprint, heap};
use crate::shm::Kind;
use crate::shm::copy;
use crate::{OpenError, Options};

const TABLE: usize = 0;
const NB: usize = 1;
const COUNT: usize = 2;
const USED: usize = 3;
const ORDER: usize = 4;
/// Where a bucket's key slot starts (after the tag-and-order word).
const KOFF: u64 = 8;

const EMPTY: u32 = 0;
const TOMB: u32 = 1;
/// Insertion numbers are 32 bits; at this one the table is renumbered.
const ORDER_LIMIT: u64 = u32::MAX as u64;

/// The tag of a bucket word.
#[inline(always)]
fn tag_of(w: u64) -> u32 {
    w as u32
}

/// The insertion number of a bucket word.
#[inline(always)]
fn order_of(w: u64) -> u64 {
    w >> 32
}

/// The word of a live bucket.
#[inline(always)]
fn live_word(tag: u32, order: u64) -> u64 {
    u64::from(tag) | (order << 32)
}

/// A key's tag: 32 bits of its hash, never EMPTY or TOMB.
#[inline(always)]
fn tag_for(h: u64) -> u32 {
    (h as u32) | 2
}

/// The home bucket of `tag` in a table of `nb` buckets (a power of two):
/// the top bits of the tag times 2^64 / phi (Fibonacci hashing), so every
/// bit of the tag counts.
#[inline(always)]
fn home(tag: u32, nb: u64) -> u64 {
    let bits = nb.trailing_zeros();
    // The top `bits` bits without a branch for bits == 0 (one bucket: home 0): shifting by 1 and then by
    // 63 - bits (masked, so nb == 0 also gives 0) is shifting by 64 - bits.
    (u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1) >> (63u32.wrapping_sub(bits) & 63)
}

/// Asks for the cache line at `p` ahead of a write (a hint: no fault, no
/// effect on memory; a no-op where there is no prefetch instruction).
#[inline(always)]
fn prefetch_for_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch accesses nothing architecturally and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A dict in shared memory with Python's dict surface, shared by every
/// process that opens it; no server process, no pickling.
///
/// Growth, atomicity, optimistic reads and crash-atomicity are as for
/// [`ListProxy`](crate::ListProxy). Keys and values are any
/// [`Element`]: every [`ShmType`](crate::ShmType), `String` and
/// `Vec<u8>`. `keys()` / `items()` are in insertion order and `popitem`
/// takes the last inserted entry, as in Python.
///
/// [`update_with`](Self::update_with) is an atomic read-modify-write, so
/// counting from several processes loses nothing:
///
/// ```
/// use shmproc::DictProxy;
/// let counts = DictProxy::<String, u64>::new().unwrap();
/// let peer = DictProxy::<String, u64>::open(counts.name()).unwrap();
/// for w in "a b a c a".split(' ') {
///     peer.update_with(&w.to_string(), 0, |n| *n += 1).unwrap();
/// }
/// assert_eq!(counts.get(&"a".to_string()).unwrap(), Some(3));
/// assert_eq!(counts.len(), 3);
/// ```
pub struct DictProxy<K: Element, V: Element> {
    store: Arc<Store>,
    kin: Option<u32>,
    vin: Option<u32>,
    /// The container's hash key (read once, at open).
    seed: u64,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K: Element, V: Element> Clone for DictProxy<K, V> {
    fn clone(&self) -> Self {
        DictProxy {
            store: Arc::clone(&self.store),
            kin: self.kin,
            vin: self.vin,
            seed: self.seed,
            _t: PhantomData,
        }
    }
}

impl<K: Element, V: Element> std::fmt::Debug for DictProxy<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DictProxy").field("name", &self.name()).field("len", &self.len()).finish()
    }
}

/// A validated table.
#[derive(Clone, Copy)]
struct Table {
    base: u64,
    nb: u64,
    count: u64,
    used: u64,
}

/// Where a key is, or where it would go.
enum Probe {
    Found(u64),
    Vacant { idx: u64, was_empty: bool },
}

/// Multiply-fold mixing (as in wyhash): the 128-bit product's halves xored.
#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline(always)]
fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]))
}

#[inline(always)]
fn half(b: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes(b[..4].try_into().unwrap_or([0; 4])))
}

const P0: u64 = 0xa076_1d64_78bd_642f;
const P1: u64 = 0xe703_7ed1_a0b4_28db;

/// The key's hash, keyed with the container's random `seed` (a wyhash-like
/// multiply-fold over 16-byte pieces: a few instructions for a u64 key, and
/// without the seed an attacker cannot pick keys that collide). Not a
/// cryptographic hash; probing is bounded by the table size anyway.
#[inline]
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let n = bytes.len();
    let mut h = seed ^ mix(n as u64 ^ P0, P1);
    let mut rest = bytes;
    while rest.len() > 16 {
        h = mix(word(rest) ^ P1, word(&rest[8..]) ^ h);
        rest = &rest[16..];
    }
    let m = rest.len();
    let (a, b) = if m >= 8 {
        (word(rest), word(&rest[m - 8..]))
    } else if m >= 4 {
        (half(rest), half(&rest[m - 4..]))
    } else if m > 0 {
        (u64::from(rest[0]) << 16 | u64::from(rest[m / 2]) << 8 | u64::from(rest[m - 1]), 0)
    } else {
        (0, 0)
    };
    mix(mix(a ^ P1, b ^ h) ^ P0, h ^ P1)
}

impl<K: Element, V: Element> DictProxy<K, V> {
    /// Bytes of a bucket's key slot (known at compile time: no load).
    #[inline(always)]
    fn ks(&self) -> u64 {
        element::slot_bytes(K::__inline())
    }

    /// Bytes of a bucket: `[tag | order][key][value]`, whole words.
    #[inline(always)]
    fn stride(&self) -> u64 {
        (KOFF + self.ks() + element::slot_bytes(V::__inline())).next_multiple_of(8)
    }

    pub(crate) fn fingerprint() -> crate::shm::Fingerprint {
        fingerprint("DictProxy", &[K::__shape(), V::__shape()])
    }

    fn wrap(store: Store) -> Self {
        DictProxy {
            seed: store.seed(),
            store: Arc::new(store),
            kin: K::__shape().inline,
            vin: V::__shape().inline,
            _t: PhantomData,
        }
    }

    pub(crate) fn create_owned(
        name: &str,
        opts: &Options,
        owner: Option<super::store::Owner>,
    ) -> Result<Self, OpenError> {
        Self::create_kind(name, opts, owner, Kind::Dict, &Self::fingerprint())
    }

    /// A dict store recorded as another kind (the Manager's registry).
    pub(crate) fn create_kind(
        name: &str,
        opts: &Options,
        owner: Option<super::store::Owner>,
        kind: Kind,
        fp: &crate::shm::Fingerprint,
    ) -> Result<Self, OpenError> {
        Ok(Self::wrap(Store::create(name, opts, kind, fp, owner, &[])?))
    }

    pub(crate) fn open_kind(
        name: &str,
        opts: &Options,
        kind: Kind,
        fp: &crate::shm::Fingerprint,
    ) -> Result<Self, OpenError> {
        Ok(Self::wrap(Store::open(name, opts, kind, fp)?))
    }

    pub(crate) fn store_segment(&self) -> &crate::shm::Segment {
        self.store.segment()
    }

    fn open_impl(name: &str, opts: &Options) -> Result<Self, OpenError> {
        Self::open_kind(name, opts, Kind::Dict, &Self::fingerprint())
    }

    super::container_constructors!("DictProxy::<u8, u8>");

    #[inline(always)]
    fn table_in(&self, v: &View, base: u64, nb: u64, count: u64, used: u64) -> R<Table> {
        if base == 0 {
            return if nb == 0 && count == 0 { Ok(Table { base: 0, nb: 0, count: 0, used: 0 }) } else { Err(Fail::Torn("table")) };
        }
        if !nb.is_power_of_two() || count > used || used > nb {
            return Err(Fail::Torn("table counts"));
        }
        let (_, bytes) = heap::block(v, base)?;
        if nb.checked_mul(self.stride()).is_none_or(|n| n > bytes) {
            return Err(Fail::Torn("table past its block"));
        }
        Ok(Table { base, nb, count, used })
    }

    /// The table as a reader sees it: only what keeps a read inside the
    /// mapping is checked (counts, the buckets inside the mapping past the
    /// heap start); the block header, which a read does not need, is
    /// checked by writers (`table_tx`). A hostile root gives garbage values
    /// or an error.
    #[inline]
    fn table(&self, v: &View) -> R<Table> {
        self.table_of(v, v.root(TABLE)?, v.root(NB)?, v.root(COUNT)?, v.root(USED)?)
    }

    /// `table` of the root words `base`, `nb`, `count`, `used`.
    #[inline(always)]
    fn table_of(&self, v: &View, base: u64, nb: u64, count: u64, used: u64) -> R<Table> {
        if base == 0 {
            return if nb == 0 && count == 0 { Ok(Table { base: 0, nb: 0, count: 0, used: 0 }) } else { Err(Fail::Torn("table")) };
        }
        if !nb.is_power_of_two() || count > used || used > nb {
            return Err(Fail::Torn("table counts"));
        }
        let end = nb.checked_mul(self.stride()).and_then(|n| n.checked_add(base));
        if base < HEAP_START + heap::BLOCK_HDR || end.is_none_or(|e| e > v.len()) {
            return Err(Fail::Torn("table past the mapping"));
        }
        Ok(Table { base, nb, count, used })
    }

    #[inline(always)]
    fn table_tx(&self, tx: &Txn<'_>) -> R<Table> {
        self.table_in(tx.view(), tx.root(TABLE), tx.root(NB), tx.root(COUNT), tx.root(USED))
    }

    fn bucket(&self, t: Table, i: u64) -> u64 {
        t.base + i * self.stride()
    }

    /// Where `key` is in the table `t`, or where it would go.
    #[inline(always)]
    fn probe(&self, v: &View, t: Table, key: &[u8], h: u64) -> R<Probe> {
        if v.has_undo() {
            return self.probe_slow(v, t, key, h);
        }
        // A checked table lies inside the mapping (`table`, `table_tx`): one range check for the whole probe.
        let p = v.words(t.base, t.nb * self.stride())?;
        self.probe_at(v, t, p, key, h, false)
    }

    /// `probe` through the table's checked address `p` (a view without an
    /// undo overlay): one word load for a bucket's tag, one for an 8-byte
    /// key, and a heap read only for a key whose 32-bit tag matches.
    /// `lean` (a constant at each call): a blob key compared as
    /// `element::slot_eq_lean` does, for `get`'s first try only.
    #[inline(always)]
    fn probe_at(&self, v: &View, t: Table, p: *const u8, key: &[u8], h: u64, lean: bool) -> R<Probe> {
        let tag = tag_for(h);
        let mask = t.nb.wrapping_sub(1);
        let mut i = home(tag, t.nb);
        // An 8-byte inline key is compared as one native word (its slot holds its bytes as they are).
        let key8 = if K::__inline() == Some(8) { <[u8; 8]>::try_from(key).ok().map(u64::from_ne_bytes) } else { None };
        let mut vacant = None;
        for _ in 0..t.nb {
            // i <= mask < t.nb; memory model: a racing or hostile write gives garbage values, never UB.
            // SAFETY: the bucket is inside the checked range at `p`, 8-aligned (base and stride multiples of 8).
            let bp = unsafe { p.add((i * self.stride()) as usize) }.cast::<u64>();
            // SAFETY: as above (word 0 of the bucket).
            let found = tag_of(unsafe { copy::read(bp) });
            if found == tag {
                let eq = match key8 {
                    // SAFETY: as above: word 1 of the bucket is the 8-byte key slot (KOFF = 8).
                    Some(k) => k == unsafe { copy::read(bp.add(1)) },
                    None if lean => element::slot_eq_lean(v, self.bucket(t, i) + KOFF, self.kin, key)?,
                    None => element::slot_eq(v, self.bucket(t, i) + KOFF, self.kin, key)?,
                };
                if eq {
                    return Ok(Probe::Found(i));
                }
            } else if found == EMPTY {
                return Ok(vacant.unwrap_or(Probe::Vacant { idx: i, was_empty: true }));
            } else if found == TOMB {
                vacant.get_or_insert(Probe::Vacant { idx: i, was_empty: false });
            }
            i = (i + 1) & mask;
        }
        // No empty bucket (only a hostile table is full): a tombstone, or nothing.
        vacant.ok_or(Fail::Torn("table full"))
    }

    /// `probe` through a view with an undo overlay (a reader beside an
    /// open transaction): every word read through the view.
    #[cold]
    fn probe_slow(&self, v: &View, t: Table, key: &[u8], h: u64) -> R<Probe> {
        let tag = tag_for(h);
        let mask = t.nb.wrapping_sub(1);
        let start = home(tag, t.nb);
        let mut vacant = None;
        for step in 0..t.nb {
            let i = start.wrapping_add(step) & mask;
            let b = self.bucket(t, i);
            match tag_of(v.u64(b)?) {
                EMPTY => return Ok(vacant.unwrap_or(Probe::Vacant { idx: i, was_empty: true })),
                TOMB => {
                    vacant.get_or_insert(Probe::Vacant { idx: i, was_empty: false });
                }
                x if x == tag && element::slot_eq(v, b + KOFF, self.kin, key)? => return Ok(Probe::Found(i)),
                _ => {}
            }
        }
        vacant.ok_or(Fail::Torn("table full"))
    }

    /// Prefetches the home bucket of a key hashed to `h` (before an insert
    /// takes the lock, so the line's miss overlaps the lock's cost). Reads
    /// the root words unlocked: a hint only, a stale or hostile table just
    /// fetches a useless line (the address is checked to be mapped).
    #[inline(always)]
    fn prefetch_home(&self, h: u64) {
        let (base, nb) = (self.store.root_hint(TABLE), self.store.root_hint(NB));
        if !nb.is_power_of_two() {
            return;
        }
        let off = home(tag_for(h), nb).wrapping_mul(self.stride()).wrapping_add(base);
        if let Ok(p) = self.store.view().words(off & !7, 8) {
            prefetch_for_write(p);
        }
    }

    /// Rebuilds the table with `nb` buckets (dropping tombstones); when the
    /// insertion numbers are used up, renumbers the entries 0..count in
    /// their order.
    fn resize(&self, tx: &mut Txn<'_>, t: Table, nb: u64) -> R<Table> {
        let bytes = nb.checked_mul(self.stride()).ok_or(Fail::Torn("table size"))?;
        let p = tx.alloc(bytes)?;
        // Only the tag words need to say EMPTY: a probe reads nothing else of an empty bucket.
        tx.fill_fresh_words(p, self.stride(), nb, 0)?;
        let nt = Table { base: p, nb, count: t.count, used: t.count };
        let moved = if tx.root(ORDER) < ORDER_LIMIT {
            self.rehash(tx, t, nt)?
        } else {
            self.renumber(tx, t, nt)?
        };
        // TABLE, NB, COUNT, USED are consecutive root words: one log entry.
        const _: () = assert!(NB == TABLE + 1 && COUNT == TABLE + 2 && USED == TABLE + 3);
        tx.set_roots(TABLE, &[p, nb, moved, moved])?;
        if t.base != 0 {
            tx.free(t.base)?;
        }
        Ok(Table { count: moved, used: moved, ..nt })
    }

    /// Moves the live entries of `t` into the empty table `nt` numbered
    /// 0..count in their insertion order; sets the next number.
    #[cold]
    fn renumber(&self, tx: &mut Txn<'_>, t: Table, nt: Table) -> R<u64> {
        let mut live = Vec::new();
        for i in 0..t.nb {
            let b = self.bucket(t, i);
            let w = tx.view().u64(b)?;
            if tag_of(w) > TOMB {
                if live.len() as u64 >= nt.nb {
                    return Err(Fail::Torn("table counts"));
                }
                live.push((order_of(w), i, tag_of(w)));
            }
        }
        let n = live.len() as u64;
        if n >= ORDER_LIMIT {
            return Err(Fail::Err(ContainerError::TooLarge { what: "a dict's number of entries", limit: ORDER_LIMIT - 1 }));
        }
        live.sort_unstable();
        let src = tx.range(t.base, t.nb * self.stride())?;
        let dst = tx.range(nt.base, nt.nb * self.stride())?;
        for (k, &(_, i, tag)) in live.iter().enumerate() {
            // SAFETY: i < t.nb (collected above): inside the checked source range, 8-aligned (as in `rehash`).
            let s = unsafe { src.add((i * self.stride()) as usize) }.cast::<u64>();
            let d = self.empty_bucket(dst, nt, tag)?;
            self.copy_bucket(s, d, live_word(tag, k as u64));
        }
        tx.set_root(ORDER, n)?;
        Ok(n)
    }

    /// Moves every live entry of `t` into the empty table `nt` (tombstones
    /// dropped, insertion numbers kept); returns how many. Both tables'
    /// ranges are checked against the mapping once; each bucket moves as
    /// whole words.
    fn rehash(&self, tx: &mut Txn<'_>, t: Table, nt: Table) -> R<u64> {
        if t.nb == 0 {
            return Ok(0);
        }
        let stride = self.stride();
        // t and nt were checked (table_tx / our own allocation): nb * stride fits their blocks.
        let src = tx.range(t.base, t.nb * stride)?;
        let dst = tx.range(nt.base, nt.nb * stride)?;
        let mut moved = 0;
        // Each entry lands on a random line of the new table: ask for the line of the entry AHEAD buckets on
        // while this one moves, so the misses overlap.
        const AHEAD: u64 = 8;
        for i in 0..t.nb {
            if i + AHEAD < t.nb {
                // SAFETY: i + AHEAD < t.nb: inside the checked source range, 8-aligned (as below).
                let w = unsafe { copy::read(src.add(((i + AHEAD) * stride) as usize).cast::<u64>()) };
                if tag_of(w) > TOMB {
                    // In bounds: home < nt.nb, and nt.nb * stride bytes from `dst` are checked.
                    prefetch_for_write(dst.wrapping_add((home(tag_of(w), nt.nb) * stride) as usize));
                }
            }
            // SAFETY: i < t.nb: the bucket is inside the checked source range; 8-aligned (base and stride are
            // multiples of 8, the mapping page-aligned); memory model: a racing write gives garbage, never UB.
            let s = unsafe { src.add((i * stride) as usize) }.cast::<u64>();
            // SAFETY: as above.
            let w = unsafe { copy::read(s) };
            if tag_of(w) <= TOMB {
                continue;
            }
            moved += 1;
            if moved > nt.nb {
                return Err(Fail::Torn("table counts"));
            }
            let d = self.empty_bucket(dst, nt, tag_of(w))?;
            self.copy_bucket(s, d, w);
        }
        Ok(moved)
    }

    /// The first empty bucket of the table `nt` (at `dst`, checked) from
    /// the home of `tag`. Bounded by the table size: the new table is in
    /// shm, and a peer that fills it with garbage must get an error out of
    /// this loop, never a spin holding the lock.
    #[inline(always)]
    fn empty_bucket(&self, dst: *mut u8, nt: Table, tag: u32) -> R<*mut u64> {
        let mask = nt.nb - 1;
        let mut j = home(tag, nt.nb);
        for _ in 0..nt.nb {
            // SAFETY: j <= mask < nt.nb: inside the checked range of `nt`, 8-aligned (as in `rehash`).
            let d = unsafe { dst.add((j * self.stride()) as usize) }.cast::<u64>();
            // SAFETY: as above.
            if tag_of(unsafe { copy::read(d) }) == EMPTY {
                return Ok(d);
            }
            j = (j + 1) & mask;
        }
        Err(Fail::Torn("new table full while resizing"))
    }

    /// Copies the bucket at `s` to the empty bucket `d` of a fresh table
    /// (no committed state reaches it: unlogged), its word set to `w`.
    #[inline(always)]
    fn copy_bucket(&self, s: *const u64, d: *mut u64, w: u64) {
        crash_point();
        for k in 1..(self.stride() / 8) as usize {
            // SAFETY: k < stride / 8: inside the buckets at `s` and `d` (both checked by the caller), 8-aligned;
            // we hold the writer lock and `d` is in a block this operation allocated.
            unsafe { copy::write(d.add(k), copy::read(s.add(k))) };
        }
        // SAFETY: as above (word 0 of the bucket).
        unsafe { copy::write(d, w) };
    }

    /// Inside a group whose undo log is half full, moves the table into a
    /// block allocated now (a resize keeping its size), unless it is in
    /// one the group allocated: the group's later changes to its buckets
    /// (new values, tombstones) then need no undo log, so a loop of
    /// inserts, `update_with`s or removes under the lock is not limited by
    /// the log (what `update` does for its own inserts).
    fn fresh_in_group(&self, tx: &mut Txn<'_>, t: Table) -> R<Table> {
        if !tx.in_group() || t.nb == 0 || !self.store.log_past_half() || tx.allocated_here(t.base) {
            return Ok(t);
        }
        self.resize(tx, t, t.nb)
    }

    /// Sets `key` to `val` inside a transaction; returns the old value.
    fn put(&self, tx: &mut Txn<'_>, key: &K, val: &V) -> R<Option<V>> {
        let kb = key.__bytes();
        self.put_hashed(tx, key, &kb, hash(self.seed, &kb), val)
    }

    /// `put` with the key's bytes and hash already at hand.
    #[inline(always)]
    fn put_hashed(&self, tx: &mut Txn<'_>, key: &K, kb: &[u8], h: u64, val: &V) -> R<Option<V>> {
        let mut t = self.table_tx(tx)?;
        if t.nb == 0 || (t.used + 1) * 5 > t.nb * 4 || tx.root(ORDER) >= ORDER_LIMIT {
            let nb = if (t.count + 1) * 2 > t.nb { (t.nb * 2).max(8) } else { t.nb };
            t = self.resize(tx, t, nb)?;
        }
        let t = self.fresh_in_group(tx, t)?;
        match self.probe(tx.view(), t, kb, h)? {
            Probe::Found(i) => {
                let voff = self.bucket(t, i) + KOFF + self.ks();
                let old = element::decode::<V>(tx.view(), voff, self.vin)?;
                let old_blob = if self.vin.is_none() { Some(tx.view().u64(voff)?) } else { None };
                let slot = element::encode(tx, val)?;
                tx.write(voff, &slot)?;
                if let Some(p) = old_blob {
                    tx.free(p)?;
                }
                Ok(Some(old))
            }
            Probe::Vacant { idx, was_empty } => {
                let b = self.bucket(t, idx);
                let order = tx.root(ORDER);
                let (ks, vs) = (element::encode(tx, key)?, element::encode(tx, val)?);
                // A vacant bucket's order, key and value bytes are read by nobody (a probe looks at the tag
                // only), so they are written without logging and the tag, logged, goes live last. Except
                // for a tombstone inside a group: an earlier operation of the group may have removed that
                // entry, and a rollback of the group brings it back, bytes and all.
                if !was_empty && tx.in_group() {
                    tx.log_bytes(b, self.stride())?;
                }
                tx.write_fresh(b + KOFF, &ks)?;
                tx.write_fresh(b + KOFF + self.ks(), &vs)?;
                // The bucket word (tag and order) and COUNT, USED, ORDER (consecutive root words) in one
                // log append; the tag goes live with it.
                const _: () = assert!(USED == COUNT + 1 && ORDER == COUNT + 2);
                let counts = [t.count + 1, t.used + u64::from(was_empty), order.wrapping_add(1)];
                tx.write_word_and_roots(b, live_word(tag_for(h), order), COUNT, &counts)?;
                Ok(None)
            }
        }
    }

    /// Removes bucket `i` inside a transaction; returns its entry.
    fn take(&self, tx: &mut Txn<'_>, t: Table, i: u64) -> R<(K, V)> {
        let b = self.bucket(t, i);
        let k = element::decode::<K>(tx.view(), b + KOFF, self.kin)?;
        let v = element::decode::<V>(tx.view(), b + KOFF + self.ks(), self.vin)?;
        self.discard(tx, t, i)?;
        Ok((k, v))
    }

    /// Removes bucket `i` inside a transaction without reading its entry
    /// back (its blobs freed, the bucket a tombstone).
    fn discard(&self, tx: &mut Txn<'_>, t: Table, i: u64) -> R<()> {
        let b = self.bucket(t, i);
        element::release(tx, b + KOFF, self.kin)?;
        element::release(tx, b + KOFF + self.ks(), self.vin)?;
        tx.write_u64(b, u64::from(TOMB))?;
        // A live bucket with a count of 0 is a hostile table: an error, not an underflow.
        tx.set_root(COUNT, t.count.checked_sub(1).ok_or(Fail::Torn("table counts"))?)?;
        Ok(())
    }

    /// Sets `key` to `value`; returns the previous value, if any.
    ///
    /// ```
    /// let d = shmproc::DictProxy::<String, String>::new().unwrap();
    /// assert_eq!(d.insert("k".into(), "v1".into()).unwrap(), None);
    /// assert_eq!(d.insert("k".into(), "v2".into()).unwrap(), Some("v1".into()));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>, ContainerError> {
        let kb = key.__bytes();
        let h = hash(self.seed, &kb);
        self.prefetch_home(h);
        if K::__inline().is_some()
            && V::__inline().is_some()
            && let Some(old) = self.store.write_quick(|q| self.put_quick(q, &kb, h, &value))
        {
            return Ok(old);
        }
        self.store.write(|tx| self.put_hashed(tx, &key, &kb, h, &value))
    }

    /// `insert`'s quick form for inline keys and values (no blob to
    /// allocate or free): the table's root words checked as a writer
    /// checks them (inside the heap block the root names), the probe
    /// through the table's checked range, then a new value stored (one
    /// word, unlogged: that store is the operation), or a new entry's key and value written unlogged into its
    /// vacant bucket and its tag word and count words logged and set as
    /// `put_hashed` does. `None` before anything live is written when this
    /// is not the quick case (a resize is due, a check failed, a value
    /// slot that is not one aligned word): `insert` then runs `put_hashed`.
    #[inline(always)]
    fn put_quick(&self, q: &mut Quick<'_>, kb: &[u8], h: u64, value: &V) -> Option<Option<V>> {
        let v = q.view();
        // Checked as a writer checks it (`table_tx`): the table inside the heap block its root names, so the
        // unlogged writes below land in the table's own bytes, not in whatever a hostile root points at.
        let t = self.table_in(v, q.root(TABLE), q.root(NB), q.root(COUNT), q.root(USED)).ok()?;
        let order = q.root(ORDER);
        if t.nb == 0 || (t.used + 1) * 5 > t.nb * 4 || order >= ORDER_LIMIT {
            return None;
        }
        let p = v.words(t.base, t.nb * self.stride()).ok()?;
        let vb = value.__bytes();
        match self.probe_at(v, t, p, kb, h, false).ok()? {
            Probe::Found(i) => {
                let voff = self.bucket(t, i) + KOFF + self.ks();
                let w = <[u8; 8]>::try_from(&*vb).ok().filter(|_| voff.is_multiple_of(8))?;
                let old = element::decode::<V>(v, voff, self.vin).ok()?;
                // The only change of this operation: the store of the value word is its commit.
                q.write_only_word(voff, u64::from_ne_bytes(w))?;
                Some(Some(old))
            }
            Probe::Vacant { idx, was_empty } => {
                let b = self.bucket(t, idx);
                // Unlogged, as in `put_hashed` (no group here: a tombstone's bytes are nobody's).
                q.write_fresh(b + KOFF, kb)?;
                q.write_fresh(b + KOFF + self.ks(), &vb)?;
                let counts = [t.count + 1, t.used + u64::from(was_empty), order.wrapping_add(1)];
                q.write_word_and_roots(b, live_word(tag_for(h), order), COUNT, &counts)?;
                Some(None)
            }
        }
    }

    /// The value for `key`, if any.
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u64, f64>::new().unwrap();
    /// d.insert(1, 0.5).unwrap();
    /// assert_eq!(d.get(&1).unwrap(), Some(0.5));
    /// assert_eq!(d.get(&2).unwrap(), None);
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>, ContainerError> {
        let kb = key.__bytes();
        let h = hash(self.seed, &kb);
        match self.store.read_fast(|v| self.get_fast(v, &kb, h)) {
            Some(r) => Ok(r),
            None => self.get_slow(&kb, h),
        }
    }

    /// `get` past its lean first try: the full optimistic read (retries,
    /// reads beside a writer, the lock as the last resort, errors).
    #[cold]
    #[inline(never)]
    fn get_slow(&self, kb: &[u8], h: u64) -> Result<Option<V>, ContainerError> {
        self.store.read(|v| {
            let t = self.table(v)?;
            if t.nb == 0 {
                return Ok(None);
            }
            match self.probe(v, t, kb, h)? {
                Probe::Found(i) => Ok(Some(element::decode(v, self.bucket(t, i) + KOFF + self.ks(), self.vin)?)),
                Probe::Vacant { .. } => Ok(None),
            }
        })
    }

    /// `get`'s lean first try (inside `Store::read_fast`): the table's two
    /// root words checked, its range checked once, the probe through its
    /// address. Any failure gives `None` (and `get` takes the full path,
    /// which reports it).
    #[inline(always)]
    fn get_fast(&self, v: &View, kb: &[u8], h: u64) -> Option<Option<V>> {
        if v.has_undo() {
            return None;
        }
        // The root words as they stand: `read_fast`'s seq check around this read says whether they were
        // one committed state (and a view with no undo overlay reads them as they stand too).
        let (base, nb) = (self.store.root_hint(TABLE), self.store.root_hint(NB));
        if nb == 0 {
            return Some(None);
        }
        // The checks of `table` that keep the probe inside the mapping (count and used are not needed here).
        if !nb.is_power_of_two() || base < HEAP_START + heap::BLOCK_HDR {
            return None;
        }
        let p = v.words(base, nb.checked_mul(self.stride())?).ok()?;
        let t = Table { base, nb, count: 0, used: 0 };
        match self.probe_at(v, t, p, kb, h, true).ok()? {
            Probe::Found(i) => element::decode(v, self.bucket(t, i) + KOFF + self.ks(), V::__inline()).ok().map(Some),
            Probe::Vacant { .. } => Some(None),
        }
    }

    /// Whether `key` is present.
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u8, u8>::new().unwrap();
    /// d.insert(1, 1).unwrap();
    /// assert!(d.contains_key(&1).unwrap() && !d.contains_key(&2).unwrap());
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool, ContainerError> {
        let kb = key.__bytes();
        let h = hash(self.seed, &kb);
        self.store.read(|v| {
            let t = self.table(v)?;
            Ok(t.nb != 0 && matches!(self.probe(v, t, &kb, h)?, Probe::Found(_)))
        })
    }

    /// Removes `key`; returns its value, if it was present.
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u8, u8>::new().unwrap();
    /// d.insert(1, 10).unwrap();
    /// assert_eq!(d.remove(&1).unwrap(), Some(10));
    /// assert_eq!(d.remove(&1).unwrap(), None);
    /// ```
    pub fn remove(&self, key: &K) -> Result<Option<V>, ContainerError> {
        let kb = key.__bytes();
        let h = hash(self.seed, &kb);
        self.store.write(|tx| {
            let t = self.table_tx(tx)?;
            if t.nb == 0 {
                return Ok(None);
            }
            let t = self.fresh_in_group(tx, t)?;
            match self.probe(tx.view(), t, &kb, h)? {
                Probe::Found(i) => Ok(Some(self.take(tx, t, i)?.1)),
                Probe::Vacant { .. } => Ok(None),
            }
        })
    }

    /// Removes `key` without reading its value back (Python's `del d[k]`);
    /// [`ContainerError::KeyNotFound`] if absent. Unlike `remove` and
    /// `pop`, it also removes an entry whose value cannot be read back: a
    /// stored container that is gone ([`ContainerError::NestedGone`]).
    ///
    /// ```
    /// use shmproc::{ContainerError, DictProxy};
    /// let d = DictProxy::<String, u8>::new().unwrap();
    /// d.insert("a".into(), 1).unwrap();
    /// d.del(&"a".into()).unwrap();
    /// assert_eq!(d.del(&"a".into()), Err(ContainerError::KeyNotFound));
    /// assert!(d.is_empty());
    /// ```
    pub fn del(&self, key: &K) -> Result<(), ContainerError> {
        let kb = key.__bytes();
        let h = hash(self.seed, &kb);
        self.store.write(|tx| {
            let t = self.table_tx(tx)?;
            if t.nb == 0 {
                return Err(ContainerError::KeyNotFound.into());
            }
            match self.probe(tx.view(), t, &kb, h)? {
                Probe::Found(i) => self.discard(tx, t, i),
                Probe::Vacant { .. } => Err(ContainerError::KeyNotFound.into()),
            }
        })
    }

    /// Removes `key` and returns its value; [`ContainerError::KeyNotFound`]
    /// if absent (Python's `d.pop(k)`).
    ///
    /// ```
    /// use shmproc::{ContainerError, DictProxy};
    /// let d = DictProxy::<u8, u8>::new().unwrap();
    /// d.insert(1, 10).unwrap();
    /// assert_eq!(d.pop(&1), Ok(10));
    /// assert_eq!(d.pop(&1), Err(ContainerError::KeyNotFound));
    /// ```
    pub fn pop(&self, key: &K) -> Result<V, ContainerError> {
        self.remove(key)?.ok_or(ContainerError::KeyNotFound)
    }

    /// Removes and returns the last inserted entry (Python's LIFO
    /// `popitem`; a scan of the table); [`ContainerError::Empty`] if none.
    ///
    /// ```
    /// use shmproc::{ContainerError, DictProxy};
    /// let d = DictProxy::<u8, u8>::new().unwrap();
    /// d.insert(1, 10).unwrap();
    /// assert_eq!(d.popitem(), Ok((1, 10)));
    /// assert_eq!(d.popitem(), Err(ContainerError::Empty("dict")));
    /// ```
    pub fn popitem(&self) -> Result<(K, V), ContainerError> {
        self.store.write(|tx| {
            let t = self.table_tx(tx)?;
            let t = self.fresh_in_group(tx, t)?;
            let mut last = None;
            for i in 0..t.nb {
                let b = self.bucket(t, i);
                let w = tx.view().u64(b)?;
                if tag_of(w) > TOMB {
                    let order = order_of(w);
                    if last.is_none_or(|(o, _)| order >= o) {
                        last = Some((order, i));
                    }
                }
            }
            match last {
                Some((_, i)) => self.take(tx, t, i),
                None => Err(ContainerError::Empty("dict").into()),
            }
        })
    }

    /// The value for `key`, inserting `default` first if absent.
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u8, u8>::new().unwrap();
    /// assert_eq!(d.setdefault(1, 5).unwrap(), 5);
    /// assert_eq!(d.setdefault(1, 7).unwrap(), 5);
    /// ```
    pub fn setdefault(&self, key: K, default: V) -> Result<V, ContainerError> {
        self.store.write(|tx| {
            let kb = key.__bytes();
            let t = self.table_tx(tx)?;
            if t.nb != 0
                && let Probe::Found(i) = self.probe(tx.view(), t, &kb, hash(self.seed, &kb))?
            {
                return element::decode(tx.view(), self.bucket(t, i) + KOFF + self.ks(), self.vin);
            }
            self.put(tx, &key, &default)?;
            Ok(default.clone())
        })
    }

    /// Inserts every pair as one transaction: no process sees a part of
    /// it, and an error (nothing changes) or a crash part way leaves the
    /// dict as before. Once the pairs have filled half of the group's undo
    /// log (16 KiB), the table moves to a new block (as a resize does), so
    /// the new entries and new inline values after that cost no log,
    /// however many. If the log fills all the same (many `String` /
    /// `Vec<u8>` values replaced), [`ContainerError::TooLarge`] and
    /// nothing changes.
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u8, u8>::new().unwrap();
    /// d.update([(1, 1), (2, 4)]).unwrap();
    /// assert_eq!(d.len(), 2);
    /// ```
    pub fn update(&self, items: impl IntoIterator<Item = (K, V)>) -> Result<(), ContainerError> {
        self.store.group(|| {
            let mut moved = false;
            for (k, v) in items {
                if !moved && self.store.log_past_half() {
                    self.move_table()?;
                    moved = true;
                }
                self.insert(k, v)?;
            }
            Ok(())
        })
    }

    /// Moves the table into a block of the same size allocated now (a
    /// resize that keeps the number of buckets): inside a group, what the
    /// group's later operations write into it needs no undo log (no
    /// committed state reaches it), and the old table is freed at commit.
    fn move_table(&self) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            let t = self.table_tx(tx)?;
            if t.nb != 0 {
                self.resize(tx, t, t.nb)?;
            }
            Ok(())
        })
    }

    /// Atomic read-modify-write: applies `f` to the value for `key` (or to
    /// `default` if absent) and stores the result, as one operation; no
    /// update from another process is lost. Returns the new value. If `f`
    /// panics, nothing changes.
    ///
    /// ```
    /// let d = shmproc::DictProxy::<String, u64>::new().unwrap();
    /// assert_eq!(d.update_with(&"n".to_string(), 0, |v| *v += 5).unwrap(), 5);
    /// assert_eq!(d.update_with(&"n".to_string(), 0, |v| *v *= 2).unwrap(), 10);
    /// ```
    pub fn update_with(&self, key: &K, default: V, f: impl FnOnce(&mut V)) -> Result<V, ContainerError> {
        self.store.write(|tx| {
            let kb = key.__bytes();
            let t = self.table_tx(tx)?;
            let mut cur = default;
            if t.nb != 0
                && let Probe::Found(i) = self.probe(tx.view(), t, &kb, hash(self.seed, &kb))?
            {
                cur = element::decode(tx.view(), self.bucket(t, i) + KOFF + self.ks(), self.vin)?;
            }
            f(&mut cur);
            self.put(tx, key, &cur)?;
            Ok(cur)
        })
    }

    /// `f(view, bucket, budget)` of every live bucket, in insertion order;
    /// `budget` (the segment's size) is what the blobs `f` copies may add
    /// up to (`element::decode_counted`): buckets a peer pointed at one
    /// large blob are an error, not thousands of copies of it.
    fn collect<X>(&self, f: impl Fn(&View, u64, &mut u64) -> R<X>) -> Result<Vec<X>, ContainerError> {
        self.store.read(|v| {
            let t = self.table(v)?;
            let mut out = Vec::with_capacity(t.count.min(1 << 20) as usize);
            let mut budget = v.len();
            for i in 0..t.nb {
                let b = self.bucket(t, i);
                let w = v.u64(b)?;
                if tag_of(w) > TOMB {
                    out.push((order_of(w), f(v, b, &mut budget)?));
                }
            }
            // Insertion order (stable: garbage numbers from a hostile peer give garbage order, nothing worse).
            out.sort_by_key(|(o, _)| *o);
            Ok(out.into_iter().map(|(_, x)| x).collect())
        })
    }

    /// Every key (a consistent snapshot, in insertion order).
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u8, u8>::new().unwrap();
    /// d.update([(1, 0), (2, 0)]).unwrap();
    /// let mut k = d.keys().unwrap();
    /// k.sort();
    /// assert_eq!(k, [1, 2]);
    /// ```
    pub fn keys(&self) -> Result<Vec<K>, ContainerError> {
        let kin = self.kin;
        self.collect(move |v, b, budget| element::decode_counted(v, b + KOFF, kin, budget))
    }

    /// Every value (a consistent snapshot, in the order of [`Self::keys`]).
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u8, u8>::new().unwrap();
    /// d.insert(1, 9).unwrap();
    /// assert_eq!(d.values().unwrap(), [9]);
    /// ```
    pub fn values(&self) -> Result<Vec<V>, ContainerError> {
        let (vin, ks) = (self.vin, self.ks());
        self.collect(move |v, b, budget| element::decode_counted(v, b + KOFF + ks, vin, budget))
    }

    /// Every `(key, value)` pair (a consistent snapshot).
    ///
    /// ```
    /// let d = shmproc::DictProxy::<String, u64>::new().unwrap();
    /// d.insert("x".into(), 1).unwrap();
    /// assert_eq!(d.items().unwrap(), [("x".to_string(), 1)]);
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>, ContainerError> {
        let (kin, vin, ks) = (self.kin, self.vin, self.ks());
        self.collect(move |v, b, budget| {
            Ok((element::decode_counted(v, b + KOFF, kin, budget)?, element::decode_counted(v, b + KOFF + ks, vin, budget)?))
        })
    }

    /// The number of entries (0 if the segment is corrupted).
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u8, u8>::new().unwrap();
    /// d.insert(1, 1).unwrap();
    /// assert_eq!(d.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        // The count root words only (in the control block, always mapped):
        // the table need not be mapped to count it (a process that cannot
        // map a peer's growth still gets it right).
        let count = |v: &View| -> R<usize> {
            let (count, used, nb) = (v.root(COUNT)?, v.root(USED)?, v.root(NB)?);
            if count > used || used > nb {
                return Err(Fail::Torn("table counts"));
            }
            Ok(usize::try_from(count).unwrap_or(usize::MAX))
        };
        self.store.read(count).unwrap_or(0)
    }

    /// Whether the dict is empty.
    ///
    /// ```
    /// assert!(shmproc::DictProxy::<u8, u8>::new().unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every entry (and frees all their space at once).
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u8, u8>::new().unwrap();
    /// d.insert(1, 1).unwrap();
    /// d.clear().unwrap();
    /// assert!(d.is_empty());
    /// ```
    pub fn clear(&self) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            if !tx.in_group() {
                return tx.reset();
            }
            // Inside a group the heap cannot be reset (`Txn::reset`): the table and the live entries' blobs are
            // freed at the group's commit instead.
            let t = self.table_tx(tx)?;
            for i in 0..t.nb {
                let b = self.bucket(t, i);
                if tag_of(tx.view().u64(b)?) > TOMB {
                    element::release(tx, b + KOFF, self.kin)?;
                    element::release(tx, b + KOFF + self.ks(), self.vin)?;
                }
            }
            if t.base != 0 {
                tx.free(t.base)?;
            }
            const _: () = assert!(NB == TABLE + 1 && COUNT == TABLE + 2 && USED == TABLE + 3 && ORDER == TABLE + 4);
            tx.set_roots(TABLE, &[0; 5])
        })
    }

    /// Gives space back: moves the entries into the smallest table that
    /// holds them (dropping the marks removed entries leave), or frees
    /// the table of an empty dict; the freed block is reused by later
    /// growth. Order and contents are unchanged.
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u64, u64>::new().unwrap();
    /// d.update((0..1000).map(|i| (i, i))).unwrap();
    /// for i in 10..1000 { d.remove(&i).unwrap(); }
    /// d.shrink_to_fit().unwrap();
    /// assert_eq!(d.keys().unwrap(), (0..10).collect::<Vec<_>>());
    /// ```
    pub fn shrink_to_fit(&self) -> Result<(), ContainerError> {
        self.store.write(|tx| {
            let t = self.table_tx(tx)?;
            if t.count == 0 && t.base != 0 {
                for i in [TABLE, NB, USED] {
                    tx.set_root(i, 0)?;
                }
                return tx.free(t.base);
            }
            let nb = (t.count + 1).saturating_mul(2).next_power_of_two().max(8);
            if t.base != 0 && (nb < t.nb || t.used > t.count) {
                self.resize(tx, t, nb.min(t.nb))?;
            }
            Ok(())
        })
    }

    /// Runs `f` as one transaction holding the dict's lock, as
    /// [`ListProxy::with_lock`](crate::ListProxy::with_lock): other
    /// readers see the state before the group, then after it; a crash or
    /// a panic inside leaves the dict as before the group. Once the
    /// group's undo log is half full, an insert, `update_with`, remove or
    /// `popitem` moves the table to fresh space first (as `update` does),
    /// so a loop over every entry fits whatever the size.
    ///
    /// As for lists, the group covers this dict only: another container's
    /// operation inside `f` commits on its own, and nesting two containers'
    /// groups in opposite orders in two processes can make them wait on
    /// each other for ever.
    ///
    /// ```
    /// let d = shmproc::DictProxy::<u8, u64>::new().unwrap();
    /// d.with_lock(|d| {
    ///     let a = d.get(&1)?.unwrap_or(0);
    ///     d.insert(1, a + 1)
    /// }).unwrap().unwrap();
    /// assert_eq!(d.get(&1).unwrap(), Some(1));
    /// ```
    pub fn with_lock<U>(&self, f: impl FnOnce(&Self) -> U) -> Result<U, ContainerError> {
        self.store.with_lock(|| f(self))
    }
}
