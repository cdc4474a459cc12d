//! Hostile review (review17) of the Manager's containers: Python's
//! semantics a ported program would notice (dict order, popitem LIFO),
//! crashes inside the less-tested operations, hostile bytes.

mod common;

use proptest::prelude::*;
use shmproc::{ContainerError, DictProxy, ListProxy, Process, ProcessError};

/// Python's dict as a model: entries in insertion order (a new value for
/// a present key keeps its place; a removed key inserted again goes last).
#[derive(Default, Debug)]
struct PyDict(Vec<(String, Vec<u8>)>);

impl PyDict {
    fn pos(&self, k: &str) -> Option<usize> {
        self.0.iter().position(|(x, _)| x == k)
    }
    fn insert(&mut self, k: String, v: Vec<u8>) -> Option<Vec<u8>> {
        match self.pos(&k) {
            Some(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            None => {
                self.0.push((k, v));
                None
            }
        }
    }
    fn remove(&mut self, k: &str) -> Option<Vec<u8>> {
        self.pos(k).map(|i| self.0.remove(i).1)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, Vec<u8>),
    Remove(String),
    PopItem,
    SetDefault(String, Vec<u8>),
    Update(Vec<(String, Vec<u8>)>),
    UpdateWith(String),
    Clear,
    Shrink,
    /// with_lock: insert, then an operation that fails (pop of a missing
    /// key: undone alone), then remove.
    Group(String, Vec<u8>, String),
    /// with_lock whose closure panics after an insert and a popitem.
    PanicGroup(String),
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => "k[0-9]{1,2}", 1 => "[a-z]{30,80}"]
}

fn val() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..12)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (key(), val()).prop_map(|(k, v)| Op::Insert(k, v)),
        3 => key().prop_map(Op::Remove),
        3 => Just(Op::PopItem),
        2 => (key(), val()).prop_map(|(k, v)| Op::SetDefault(k, v)),
        2 => prop::collection::vec((key(), val()), 0..20).prop_map(Op::Update),
        2 => key().prop_map(Op::UpdateWith),
        1 => Just(Op::Clear),
        1 => Just(Op::Shrink),
        2 => (key(), val(), key()).prop_map(|(k, v, r)| Op::Group(k, v, r)),
        1 => key().prop_map(Op::PanicGroup),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every operation of a dict, two handles taking turns, against
    /// Python's ordered dict: keys(), values(), items() in insertion order
    /// and popitem() the last inserted, after each step.
    #[test]
    fn dict_order_and_popitem_match_python(ops in prop::collection::vec(op(), 1..120)) {
        let a = DictProxy::<String, Vec<u8>>::new().unwrap();
        let b = DictProxy::<String, Vec<u8>>::open(a.name()).unwrap();
        let mut m = PyDict::default();
        for (n, op) in ops.into_iter().enumerate() {
            let sut = if n % 2 == 0 { &a } else { &b };
            match op {
                Op::Insert(k, v) => prop_assert_eq!(sut.insert(k.clone(), v.clone()).unwrap(), m.insert(k, v)),
                Op::Remove(k) => prop_assert_eq!(sut.remove(&k).unwrap(), m.remove(&k)),
                Op::PopItem => match sut.popitem() {
                    Ok(kv) => prop_assert_eq!(Some(kv), m.0.pop()),
                    Err(e) => {
                        prop_assert_eq!(e, ContainerError::Empty("dict"));
                        prop_assert!(m.0.is_empty());
                    }
                },
                Op::SetDefault(k, v) => {
                    let want = match m.pos(&k) {
                        Some(i) => m.0[i].1.clone(),
                        None => {
                            m.0.push((k.clone(), v.clone()));
                            v.clone()
                        }
                    };
                    prop_assert_eq!(sut.setdefault(k, v).unwrap(), want);
                }
                Op::Update(items) => {
                    sut.update(items.clone()).unwrap();
                    for (k, v) in items {
                        m.insert(k, v);
                    }
                }
                Op::UpdateWith(k) => {
                    let mut cur = m.pos(&k).map(|i| m.0[i].1.clone()).unwrap_or_default();
                    cur.push(7);
                    m.insert(k.clone(), cur.clone());
                    prop_assert_eq!(sut.update_with(&k, Vec::new(), |v| v.push(7)).unwrap(), cur);
                }
                Op::Clear => {
                    sut.clear().unwrap();
                    m.0.clear();
                }
                Op::Shrink => sut.shrink_to_fit().unwrap(),
                Op::Group(k, v, r) => {
                    let got = sut
                        .with_lock(|d| {
                            let old = d.insert(k.clone(), v.clone())?;
                            let missing = d.pop(&"no such key".to_string());
                            Ok::<_, ContainerError>((old, missing, d.remove(&r)?))
                        })
                        .unwrap()
                        .unwrap();
                    let old = m.insert(k, v);
                    prop_assert_eq!(got, (old, Err(ContainerError::KeyNotFound), m.remove(&r)));
                }
                Op::PanicGroup(k) => {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        sut.with_lock(|d| {
                            d.insert(k.clone(), vec![1]).unwrap();
                            let _ = d.popitem();
                            panic!("inside the group");
                        })
                    }));
                    prop_assert!(r.is_err());
                }
            }
            let other = if n % 2 == 0 { &b } else { &a };
            let items = other.items().unwrap();
            prop_assert_eq!(&items, &m.0);
            prop_assert_eq!(other.keys().unwrap(), m.0.iter().map(|e| e.0.clone()).collect::<Vec<_>>());
            prop_assert_eq!(other.values().unwrap(), m.0.iter().map(|e| e.1.clone()).collect::<Vec<_>>());
            prop_assert_eq!(other.len(), m.0.len());
        }
    }
}

/// Python's list semantics a ported program notices, in one place.
#[test]
fn list_corner_cases_behave_like_python() {
    let l = ListProxy::<i64>::new().unwrap();
    assert_eq!(l.pop(), Err(ContainerError::Empty("list")));
    assert!(l.pop_at(0).is_err());
    assert!(l.pop_at(-1).is_err());
    assert_eq!(l.index(&1), Err(ContainerError::ValueNotFound));
    assert_eq!(l.remove(&1), Err(ContainerError::ValueNotFound));
    assert_eq!(l.slice(-5..5).unwrap(), Vec::<i64>::new());
    l.insert(-1, 5).unwrap(); // [].insert(-1, 5) -> [5]
    l.insert(0, 4).unwrap();
    l.insert(-1, 6).unwrap(); // before the last: [4, 6, 5]
    assert_eq!(l.to_vec().unwrap(), [4, 6, 5]);
    assert_eq!(l.pop_at(-3).unwrap(), 4);
    assert_eq!(l.pop_at(-3), Err(ContainerError::IndexOutOfRange { index: -3, len: 2 }));
    assert_eq!(l.get(isize::MIN), Err(ContainerError::IndexOutOfRange { index: isize::MIN as i64, len: 2 }));
    assert_eq!(l.slice(isize::MIN..isize::MAX).unwrap(), [6, 5]);
    assert_eq!(l.slice(i64::MIN..=i64::MAX).unwrap(), [6, 5]);
    assert_eq!(l.slice(u64::MAX..).unwrap(), Vec::<i64>::new());
    l.extend(std::iter::empty()).unwrap();
    l.extend(0..5000).unwrap();
    assert_eq!(l.len(), 5002);
    l.sort().unwrap();
    assert_eq!(l.slice(..3).unwrap(), [0, 1, 2]);
    assert_eq!(l.get(-1).unwrap(), 4999);
    l.reverse().unwrap();
    assert_eq!(l.get(0).unwrap(), 4999);
    l.clear().unwrap();
    l.shrink_to_fit().unwrap();
    assert!(l.is_empty() && l == Vec::<i64>::new());
}

/// Python's `l.extend(["x"] * 4000)` just works. Here the space of a
/// removed large element is reused for the new small ones: each block
/// split off it logs the header of the block it splits, and an extend of
/// a few thousand short strings must not fill the undo log with them.
#[test]
fn extend_of_many_short_strings_into_the_space_of_a_removed_large_one_succeeds() {
    let l = ListProxy::<String>::new().unwrap();
    l.append("y".repeat(4 << 20)).unwrap();
    l.pop().unwrap();
    let r = l.extend((0..4000).map(|i| format!("{}", i % 10)));
    assert_eq!(r, Ok(()), "extend of 4000 one-byte strings after a 4 MiB one was removed");
    assert_eq!(l.len(), 4000);
    assert_eq!(l.get(-1).unwrap(), "9");
    // The same through a dict's update (new String keys) and a with_lock group of appends.
    let d = DictProxy::<String, u64>::new().unwrap();
    d.insert("big".into(), 0).unwrap();
    let big = DictProxy::<String, Vec<u8>>::new().unwrap();
    big.insert("b".into(), vec![0; 4 << 20]).unwrap();
    big.clear().unwrap();
    big.insert("c".into(), vec![0; 4 << 20]).unwrap();
    big.remove(&"c".into()).unwrap();
    let r = big.update((0..4000u64).map(|i| (format!("k{i}"), vec![1])));
    assert_eq!(r, Ok(()), "update of 4000 new short keys after a 4 MiB value was removed");
    assert_eq!(big.len(), 4000);
}

shmproc::entry! {
    /// Extends the list with 3000 short strings (blocks split off the
    /// free space of a removed large one), then appends 10 more one by
    /// one, killing itself with SIGKILL at write step `steps`.
    fn r17_extend_split_and_die(args: (ListProxy<String>, u64)) -> Result<(), String> {
        let (l, steps) = args;
        shmproc::__crash_after_steps(steps);
        l.extend((0..3000u64).map(|i| format!("s{i}"))).map_err(|e| e.to_string())?;
        for i in 0..10u64 {
            l.append(format!("t{i}")).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// An extend that splits many free blocks (their headers written
/// unlogged), killed at write steps all through it: the list is exactly
/// as before or after each operation, and the free space (the lists
/// whose blocks carry the header of an undone split) serves the next
/// allocations: the list fills again, reads back whole, and a fresh
/// large element fits in the space given back.
#[test]
fn an_extend_splitting_free_blocks_killed_anywhere_is_all_or_nothing_and_the_space_still_serves() {
    for steps in [3, 40, 500, 2000, 6000, 12_000, 16_000, 20_000, 24_000, 30_000] {
        let l = ListProxy::<String>::new().unwrap();
        l.extend(["a".to_string(), "b".to_string()]).unwrap();
        l.append("y".repeat(1 << 20)).unwrap();
        l.pop().unwrap();
        let before = l.to_vec().unwrap();
        let mut p = Process::new(r17_extend_split_and_die, (l.clone(), steps));
        p.start().unwrap();
        let died = match common::join(&p) {
            Err(ProcessError::Signaled { signal: 9, .. }) => true,
            Ok(()) => false,
            other => panic!("step {steps}: {other:?}"),
        };
        let got = l.to_vec().unwrap();
        let mut want = before.clone();
        want.extend((0..3000u64).map(|i| format!("s{i}")));
        let ok = got == before
            || (got.len() >= want.len() && got[..want.len()] == want[..] && {
                let extra = got.len() - want.len();
                extra <= 10 && (0..extra).all(|i| got[want.len() + i] == format!("t{i}"))
            });
        assert!(ok, "step {steps} (died: {died}): torn list of {} elements", got.len());
        // The space keeps serving: many allocations off the free lists, and a large one.
        l.extend((0..3000u64).map(|i| format!("again{i}"))).unwrap();
        l.append("z".repeat(1 << 20)).unwrap();
        assert_eq!(l.get(-2).unwrap(), "again2999");
        assert_eq!(l.get(-1).unwrap().len(), 1 << 20);
        let all = l.to_vec().unwrap();
        assert_eq!(all.len(), got.len() + 3001);
        while l.len() > 2 {
            l.pop().unwrap();
        }
        l.extend((0..3000u64).map(|i| format!("third{i}"))).unwrap();
        assert_eq!(l.get(-1).unwrap(), "third2999");
        assert_eq!(l.slice(..2).unwrap(), ["a", "b"]);
    }
}

/// Plausible garbage (heap offsets, small lengths, block headers, odd and
/// even counters) written by a peer into the control block after the
/// lock word (seq, map_len, log_used, the heap top, the free-list heads
/// and their mask, the root words) and into the undo log, while other
/// handles append, extend, insert at the front, pop, sort and update:
/// errors or garbage values only, never a crash, a hang or a huge
/// allocation; and a container made afresh afterwards works.
#[test]
fn plausible_garbage_in_the_control_block_and_undo_log_gives_errors_never_a_crash() {
    use std::io::{Seek, SeekFrom, Write};
    use std::time::{Duration, Instant};
    fn mix(mut x: u64) -> u64 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
    fn scribble(name: &str, seed: u64) {
        let path = format!("/dev/shm/shmproc.{name}");
        let Ok(meta) = std::fs::metadata(&path) else { return };
        let len = meta.len();
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for k in 0..3 {
            let h = mix(seed * 8 + k);
            // Control block past the lock word (136..544), or the first 512 bytes of the undo log.
            let off = if h & 1 == 0 { 136 + (h >> 8) % (544 - 136) } else { 1024 + (h >> 8) % 512 } & !7;
            let word = match (h >> 40) % 6 {
                0 => 17408 + ((h >> 12) % len.max(17409)) / 32 * 32, // a block boundary
                1 => 17408 + 16 + ((h >> 12) % len.max(17409)) / 32 * 32, // a payload offset
                2 => (h >> 12) % 64,                                 // a small length or class
                3 => 0x424C_4B00_0000_0000 | ((h >> 12) % 40),       // a block header
                4 => (h >> 12) | (1 << 63),                          // a spilled length word
                _ => mix(h),
            };
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&word.to_ne_bytes()).unwrap();
        }
    }
    let bound = Duration::from_secs(60);
    for round in 0..common::count(6, 30) {
        let l = ListProxy::<String>::new().unwrap();
        let d = DictProxy::<String, Vec<u8>>::new().unwrap();
        for i in 0..40u64 {
            l.append(format!("e{i}-{}", "x".repeat(i as usize * 3))).unwrap();
            d.insert(format!("k{i}"), vec![i as u8; i as usize * 7]).unwrap();
        }
        l.append("big".repeat(5000)).unwrap();
        l.pop().unwrap();
        let (lp, dp) =
            (ListProxy::<String>::open(l.name()).unwrap(), DictProxy::<String, Vec<u8>>::open(d.name()).unwrap());
        std::thread::scope(|s| {
            let peer = s.spawn(|| {
                for k in 0..60 {
                    scribble(l.name(), round * 1000 + k);
                    scribble(d.name(), round * 1000 + k + 500);
                    std::thread::yield_now();
                }
            });
            let end = Instant::now() + bound;
            while !peer.is_finished() {
                assert!(Instant::now() < end, "operations on a scribbled segment hung");
                let _ = (lp.extend((0..30).map(|i| i.to_string())), lp.insert(0, "f".into()), lp.pop_at(0), lp.pop());
                let _ = (lp.sort(), lp.reverse(), lp.to_vec(), lp.shrink_to_fit(), lp.remove(&"3".into()));
                let _ = lp.with_lock(|l| (l.append("g".into()), l.pop_at(-2), l.set(0, "h".into())));
                let _ = (dp.update((0..20).map(|i| (format!("u{i}"), vec![1; i]))), dp.popitem(), dp.items());
                let _ = (dp.setdefault("s".into(), vec![2]), dp.update_with(&"k3".into(), vec![], |v| v.push(1)));
                let _ = (dp.remove(&"k5".into()), dp.shrink_to_fit(), dp.get(&"k7".into()));
                if lp.len() > 400 {
                    let _ = lp.clear();
                }
            }
        });
        let _ = (l.clear(), d.clear());
    }
    let fresh = ListProxy::<String>::new().unwrap();
    fresh.extend((0..100).map(|i| i.to_string())).unwrap();
    assert_eq!(fresh.len(), 100);
}

/// Python's `with lock: for x in xs: l.append(x); l.pop()` (a work list
/// used under its lock) and `with lock: l.extend(xs); l.clear()`: blocks
/// allocated and freed inside one group are given back at its commit,
/// and that must not fill the group's undo log (a block carved from the
/// heap top in the group was on no free list before it, so its link word
/// needs no undo).
#[test]
fn a_group_that_allocates_and_frees_many_blocks_commits() {
    let l = ListProxy::<String>::new().unwrap();
    l.append("keep".into()).unwrap();
    let r = l.with_lock(|l| {
        for i in 0..1500u64 {
            l.append(format!("work-{i}"))?;
            assert_eq!(l.pop()?, format!("work-{i}"));
        }
        Ok::<_, ContainerError>(())
    });
    assert_eq!(r, Ok(Ok(())), "1500 appends and pops under the list's lock");
    assert_eq!(l.to_vec().unwrap(), ["keep"]);
    let fresh = ListProxy::<String>::new().unwrap();
    let r = fresh.with_lock(|l| {
        l.extend((0..2000u64).map(|i| format!("tmp-{i}")))?;
        l.clear()?;
        l.append("after".into())
    });
    assert_eq!(r, Ok(Ok(())), "extend of 2000 strings and a clear under the list's lock");
    assert_eq!(fresh.to_vec().unwrap(), ["after"]);
    // The blocks given back at that commit are taken again and given back in one more such group.
    let r = fresh.with_lock(|l| {
        l.extend((0..2000u64).map(|i| format!("tmp-{i}")))?;
        l.clear()?;
        l.append("after".into())
    });
    assert_eq!(r, Ok(Ok(())), "the same group again, its blocks off the free lists");
    l.clear().unwrap();
    l.append("after".into()).unwrap();
    let d = DictProxy::<String, String>::new().unwrap();
    let r = d.update((0..1500u64).map(|i| ("k".to_string(), format!("v{i}"))));
    assert_eq!(r, Ok(()), "update giving one key 1500 successive values");
    assert_eq!(d.get(&"k".into()).unwrap().as_deref(), Some("v1499"));
    // The space freed at those commits is reused, elements intact.
    l.extend((0..3000u64).map(|i| format!("more-{i}"))).unwrap();
    assert_eq!(l.len(), 3001);
    assert_eq!(l.get(-1).unwrap(), "more-2999");
    assert_eq!(l.get(0).unwrap(), "after");
}

shmproc::entry! {
    /// Under the list's lock: 300 appends each popped again, then an
    /// extend of 500 and a clear, then 300 new strings; killed at write
    /// step `steps` (0: not).
    fn r17_alloc_free_group_and_die(args: (ListProxy<String>, u64)) -> Result<(), String> {
        let (l, steps) = args;
        shmproc::__crash_after_steps(steps);
        l.with_lock(|l| {
            for i in 0..300u64 {
                l.append(format!("work-{i}-{}", "w".repeat(i as usize % 40)))?;
                l.pop()?;
            }
            l.extend((0..500u64).map(|i| format!("tmp-{i}-{}", "t".repeat(i as usize % 60))))?;
            l.clear()?;
            l.extend((0..300u64).map(|i| format!("new-{i}")))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

/// That group (blocks carved from the top and blocks taken off the free
/// lists, freed again at its commit with their links logged only where
/// a rollback needs them) killed at write steps all through it: the list
/// is exactly as before or after, and its free lists are sound: 2000 more
/// strings allocated afterwards leave every element intact.
#[test]
fn a_group_allocating_and_freeing_many_blocks_killed_anywhere_is_all_or_nothing() {
    let old: Vec<String> = (0..200u64).map(|i| format!("old-{i}-{}", "x".repeat(i as usize % 70))).collect();
    let new: Vec<String> = (0..300u64).map(|i| format!("new-{i}")).collect();
    let mut killed = 0;
    let mut trials = 0;
    let mut steps = 1;
    loop {
        let l = ListProxy::<String>::new().unwrap();
        l.extend(old.iter().cloned()).unwrap();
        // Free blocks of several classes on the lists before the group.
        for i in (0..200).step_by(3).rev() {
            l.pop_at(i).unwrap();
        }
        let before = l.to_vec().unwrap();
        let mut p = Process::new(r17_alloc_free_group_and_die, (l.clone(), steps));
        p.start().unwrap();
        trials += 1;
        let died = match common::join(&p) {
            Ok(()) => false,
            Err(ProcessError::Signaled { signal: 9, .. }) => true,
            other => panic!("step {steps}: the child ended otherwise: {other:?}"),
        };
        killed += u64::from(died);
        let got = l.to_vec().unwrap();
        assert!(got == before || got == new, "step {steps}: torn group: {} elements", got.len());
        assert!(died || got == new, "step {steps}: the group ended without its effect");
        let more: Vec<String> = (0..2000u64).map(|i| format!("more-{i}-{}", "y".repeat(i as usize % 90))).collect();
        for _ in 0..3 {
            // Taken off the free lists and given back, three times over: a block on two lists at once would
            // be handed out twice and overwrite an element.
            l.with_lock(|l| {
                l.extend(more.iter().cloned())?;
                for _ in 0..more.len() {
                    l.pop()?;
                }
                Ok::<_, ContainerError>(())
            })
            .unwrap()
            .unwrap();
        }
        l.extend(more.iter().cloned()).unwrap();
        let mut want = got;
        want.extend(more);
        assert!(
            l.to_vec().unwrap() == want,
            "step {steps}: elements changed by later allocations (a free list gone wrong)"
        );
        let size = file_size(l.name());
        assert!(size <= 1 << 20, "step {steps}: the segment grew to {size} bytes: freed space not reused");
        if !died {
            break;
        }
        steps += 1 + steps / 12;
    }
    assert!(killed >= 30, "only {killed} of {trials} trials were killed inside the group");
}

/// The size of a container's segment file.
fn file_size(name: &str) -> u64 {
    std::fs::metadata(format!("/dev/shm/shmproc.{name}")).map(|m| m.len()).unwrap_or(0)
}

/// Elements of 0 bytes and of many MiB, as keys and values, through two
/// handles (the second one mapping the growth), replaced and removed.
#[test]
fn empty_and_many_mib_elements_round_trip() {
    let l = ListProxy::<Vec<u8>>::new().unwrap();
    let l2 = ListProxy::<Vec<u8>>::open(l.name()).unwrap();
    l.append(Vec::new()).unwrap();
    let big: Vec<u8> = (0..(24u32 << 20)).map(|i| (i % 251) as u8).collect();
    l.append(big.clone()).unwrap();
    l.append(Vec::new()).unwrap();
    assert_eq!(l2.len(), 3);
    assert_eq!(l2.get(0).unwrap(), Vec::<u8>::new());
    assert!(l2.get(1).unwrap() == big);
    assert_eq!(l2.index(&Vec::new()).unwrap(), 0);
    assert_eq!(l2.count(&Vec::new()).unwrap(), 2);
    assert_eq!(l2.index(&big).unwrap(), 1);
    l2.set(1, Vec::new()).unwrap();
    assert_eq!(l.count(&Vec::new()).unwrap(), 3);
    l.remove(&Vec::new()).unwrap();
    assert_eq!(l2.len(), 2);
    let d = DictProxy::<String, String>::new().unwrap();
    let d2 = DictProxy::<String, String>::open(d.name()).unwrap();
    d.insert(String::new(), String::new()).unwrap();
    let bigs = "z".repeat(20 << 20);
    d.insert(bigs.clone(), "v".into()).unwrap();
    d.insert("k".into(), bigs.clone()).unwrap();
    assert_eq!(d2.get(&String::new()).unwrap(), Some(String::new()));
    assert_eq!(d2.get(&bigs).unwrap().as_deref(), Some("v"));
    assert!(d2.get(&"k".into()).unwrap().unwrap() == bigs);
    let mut near = bigs.clone();
    near.pop();
    near.push('y');
    assert_eq!(d2.get(&near).unwrap(), None);
    assert_eq!(d2.keys().unwrap(), [String::new(), bigs.clone(), "k".into()]);
    assert_eq!(d2.popitem().unwrap().0, "k");
    assert_eq!(d2.remove(&bigs).unwrap().as_deref(), Some("v"));
    assert_eq!(d.items().unwrap(), [(String::new(), String::new())]);
}

/// A panic in a sort key, in an update_with closure and inside a group
/// of a list that holds a dict operation: each container as before the
/// operation (or group), its lock free for the next user, the dict's own
/// committed operation kept (a group is one container's transaction).
#[test]
fn panics_in_callbacks_leave_each_container_as_before_and_unlocked() {
    let l = ListProxy::<String>::new().unwrap();
    l.extend(["c", "a", "b"].map(String::from)).unwrap();
    let d = DictProxy::<String, u64>::new().unwrap();
    d.insert("n".into(), 1).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        l.sort_by_key(|s| if s == "b" { panic!("key") } else { s.clone() })
    }));
    assert!(r.is_err());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.update_with(&"n".into(), 0, |_| panic!("f"))));
    assert!(r.is_err());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        l.with_lock(|l| {
            l.append("d".into()).unwrap();
            d.insert("m".into(), 2).unwrap();
            l.sort().unwrap();
            panic!("group")
        })
    }));
    assert!(r.is_err());
    assert_eq!(l.to_vec().unwrap(), ["c", "a", "b"]);
    assert_eq!(d.items().unwrap(), [("n".to_string(), 1), ("m".to_string(), 2)]);
    // Another thread (another lock owner) writes both at once: nothing is left locked.
    let (l2, d2) = (l.clone(), d.clone());
    std::thread::spawn(move || {
        l2.sort().unwrap();
        d2.update_with(&"n".into(), 0, |v| *v += 1).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(l.to_vec().unwrap(), ["a", "b", "c"]);
    assert_eq!(d.get(&"n".into()).unwrap(), Some(2));
}

shmproc::entry! {
    /// Moves money between accounts and items between two lists, each
    /// move one `with_lock` group (a dict group: two `update_with`s and a
    /// `setdefault`; a list group: a `pop_at(0)` from one list and an
    /// `insert(0, ..)` into the other, then a sort now and then), and
    /// grows a nested list in the dict of lists, for ever (until killed),
    /// counting its moves in `done`.
    fn r17_mover(args: (shmproc::Manager, u64)) -> Result<(), String> {
        let (mgr, seed) = args;
        let e = |e: ContainerError| e.to_string();
        let bank = mgr.dict::<String, i64>("bank").map_err(|e| e.to_string())?;
        let a = mgr.list::<String>("a").map_err(|e| e.to_string())?;
        let b = mgr.list::<String>("b").map_err(|e| e.to_string())?;
        let nested = mgr.dict::<String, ListProxy<u64>>("nested").map_err(|e| e.to_string())?;
        let done = mgr.list::<u64>("done").map_err(|e| e.to_string())?;
        let mut x = seed | 1;
        loop {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (from, to) = (format!("acct{}", x % 7), format!("acct{}", (x >> 8) % 7));
            let amount = (x >> 16) as i64 % 50;
            bank.with_lock(|d| {
                d.update_with(&from, 0, |v| *v -= amount)?;
                d.setdefault(to.clone(), 0)?;
                d.update_with(&to, 0, |v| *v += amount).map(drop)
            })
            .map_err(e)?
            .map_err(e)?;
            let (src, dst) = if x & 1 == 0 { (&a, &b) } else { (&b, &a) };
            src.with_lock(|s| {
                if let Ok(item) = s.pop_at(0) {
                    // A second container's own transaction inside the first one's group.
                    dst.insert(0, item)?;
                }
                if x % 5 == 0 {
                    s.sort()?;
                }
                Ok::<_, ContainerError>(())
            })
            .map_err(e)?
            .map_err(e)?;
            if let Some(l) = nested.get(&"log".to_string()).map_err(e)? {
                l.append(x).map_err(e)?;
                if l.len() > 500 {
                    l.with_lock(|l| l.clear()).map_err(e)?.map_err(e)?;
                }
            }
            done.append(1).map_err(e)?;
        }
    }
}

/// Three processes run those groups while the test kills one of them
/// with SIGKILL every few milliseconds (and starts another): the money
/// adds up, no item of the two lists is lost or duplicated beyond the
/// one move a killed process may have had between its two lists (a move
/// is two containers' transactions), nothing hangs, and every operation
/// afterwards works (no OwnerDied, no corruption).
#[test]
fn groups_of_several_processes_killed_at_random_keep_the_money_and_the_items() {
    let mgr = shmproc::Manager::new().unwrap();
    let bank = mgr.dict::<String, i64>("bank").unwrap();
    let (a, b) = (mgr.list::<String>("a").unwrap(), mgr.list::<String>("b").unwrap());
    a.extend((0..100u64).map(|i| format!("item{i:03}"))).unwrap();
    let nested = mgr.dict::<String, ListProxy<u64>>("nested").unwrap();
    nested.insert("log".into(), mgr.list_anon::<u64>().unwrap()).unwrap();
    let done = mgr.list::<u64>("done").unwrap();
    let spawn = |seed: u64| {
        let mut p = Process::new(r17_mover, (mgr.clone(), seed));
        p.start().unwrap();
        p
    };
    let mut movers: Vec<Process> = (1..=3).map(|s| spawn(s * 7919)).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let kills = common::count(30, 200);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    for k in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(std::time::Duration::from_millis(25 + seed % 60));
        let v = (seed >> 8) as usize % movers.len();
        if let Some(code) = movers[v].exitcode() {
            panic!("a mover ended on its own with {code} (an operation failed)");
        }
        let _ = movers[v].kill();
        let _ = movers[v].join_timeout(common::DEADLINE);
        movers[v] = spawn(seed ^ k);
        assert!(std::time::Instant::now() < end, "the kills took too long");
    }
    for p in &movers {
        let _ = p.kill();
        let _ = p.join_timeout(common::DEADLINE);
    }
    let moves = done.len();
    assert!(moves > 0, "no move was done");
    let total: i64 = bank.values().unwrap().iter().sum();
    assert_eq!(total, 0, "money created or lost after {kills} kills and {moves} moves");
    let mut items = a.to_vec().unwrap();
    items.extend(b.to_vec().unwrap());
    let n = items.len();
    items.sort();
    items.dedup();
    // The insert into the other list is that list's own transaction, committed inside the first list's group:
    // a process killed after it and before the group's commit leaves the item in both lists (the pop is rolled
    // back), one item per kill at most; an item is never lost.
    assert_eq!(items.len(), 100, "an item lost ({n} items in the two lists)");
    assert!(n <= 100 + kills as usize, "{} items duplicated after {kills} kills", n - 100);
    // Everything still works.
    bank.update_with(&"acct0".into(), 0, |v| *v += 1).unwrap();
    a.insert(0, "x".into()).unwrap();
    b.sort().unwrap();
    nested.get(&"log".into()).unwrap().unwrap().append(1).unwrap();
    assert_eq!(bank.values().unwrap().iter().sum::<i64>(), 1);
}

/// Python's `with lock: l.extend(batch); process(l); l.clear()`, round
/// after round, with batches of strings of varying lengths (blocks taken
/// off the free lists, split, and given back at each commit).
#[test]
fn rounds_of_extend_and_clear_under_the_lock_commit() {
    let l = ListProxy::<String>::new().unwrap();
    for round in 0..60u64 {
        let n = 300 + (round * 7717) % 1200;
        let batch: Vec<String> = (0..n)
            .map(|i| {
                format!("{round}-{i}-{}", "v".repeat(((i * 7919 + round * 31) % (40 + round * 37 % 900)) as usize))
            })
            .collect();
        let r = l.with_lock(|l| {
            l.extend(batch.iter().cloned())?;
            assert_eq!(l.len() as u64, n);
            l.clear()
        });
        assert_eq!(r, Ok(Ok(())), "round {round}");
    }
    assert!(l.is_empty());
}

/// Points every slot of `list` (2001 String slots, the last naming a
/// large blob) at that large blob, as a hostile peer could.
fn alias_every_slot_to_the_last_blob(name: &str, marker: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let (_, at) = common::find_in_segment(name, marker);
    let blob = at - 8; // the blob's payload: [len][bytes]
    let (mut f, slot) = common::find_in_segment(name, &blob.to_ne_bytes());
    let base = slot - 2000 * 8;
    f.seek(SeekFrom::Start(base)).unwrap();
    for _ in 0..2000 {
        f.write_all(&blob.to_ne_bytes()).unwrap();
    }
}

shmproc::entry! {
    /// Reads the aliased list and dict (`to_vec`, `slice`, `iter`, `sort`,
    /// `items`, `values`) under an address-space limit of 1 GiB more than
    /// it uses: each must give an error or a result no larger than the
    /// segment, never try to allocate the aliased blob thousands of times.
    fn r17_read_aliased(args: (ListProxy<String>, DictProxy<u64, Vec<u8>>)) -> Result<(), String> {
        let (l, d) = args;
        let lim = libc::rlimit { rlim_cur: common::vm_size() + (1 << 30), rlim_max: libc::RLIM_INFINITY };
        // SAFETY: a valid rlimit struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) } != 0 {
            return Err("setrlimit failed".into());
        }
        let small = |n: usize| n <= 64 << 20;
        if let Ok(v) = l.to_vec()
            && !small(v.iter().map(String::len).sum())
        {
            return Err("to_vec returned more bytes than the segment holds".into());
        }
        let _ = (l.slice(..), l.iter().map(|it| it.count()), l.sort(), l.reverse(), l.insert(0, "x".into()));
        if let Ok(v) = d.values()
            && !small(v.iter().map(Vec::len).sum())
        {
            return Err("values returned more bytes than the segment holds".into());
        }
        let _ = (d.items(), d.popitem());
        Ok(())
    }
}

/// A peer points every element of a list (and every value of a dict) at
/// one 8 MiB blob: reading them all must not allocate 2000 copies of it
/// (16 GiB: an abort, or the OOM killer) but give an error (or garbage
/// no larger than the segment).
#[test]
fn elements_aliased_to_one_large_blob_are_not_copied_thousands_of_times() {
    let l = ListProxy::<String>::new().unwrap();
    l.extend((0..2000u64).map(|i| format!("s{i}"))).unwrap();
    let marker = "BIG-LIST-BLOB-";
    l.append(format!("{marker}{}", "z".repeat(8 << 20))).unwrap();
    alias_every_slot_to_the_last_blob(l.name(), marker.as_bytes());
    let d = DictProxy::<u64, Vec<u8>>::new().unwrap();
    for i in 0..2000u64 {
        d.insert(i, vec![1]).unwrap();
    }
    let dmarker = b"BIG-DICT-BLOB-";
    let mut big = dmarker.to_vec();
    big.resize(8 << 20, 7);
    d.insert(9999, big).unwrap();
    {
        // Every value slot (bucket word 2: [tag|order][key][value]) naming the large blob.
        use std::io::{Seek, SeekFrom, Write};
        let (_, at) = common::find_in_segment(d.name(), dmarker);
        let blob = at - 8;
        let (mut f, vslot) = common::find_in_segment(d.name(), &blob.to_ne_bytes());
        let bytes = std::fs::read(format!("/dev/shm/{}{}", shmproc::NAME_PREFIX, d.name())).unwrap();
        // Walk the table from the big value's bucket in strides of 24 bytes both ways while words look like live
        // buckets (a tag word with its bit 1 set), rewriting each value slot.
        let word = |o: u64| u64::from_ne_bytes(bytes[o as usize..o as usize + 8].try_into().unwrap());
        let first = vslot - 16;
        let mut b = first;
        while b >= 24 + 17408 {
            b -= 24;
        }
        while b + 24 <= bytes.len() as u64 {
            if word(b) & 2 != 0 && (word(b) as u32) > 1 && word(b + 8) < 2000 {
                f.seek(SeekFrom::Start(b + 16)).unwrap();
                f.write_all(&blob.to_ne_bytes()).unwrap();
            }
            b += 24;
        }
    }
    let mut p = Process::new(r17_read_aliased, (l.clone(), d.clone()));
    p.start().unwrap();
    let r = common::join(&p);
    assert!(r.is_ok(), "reading elements aliased to one large blob: {r:?}");
}

shmproc::entry! {
    /// Stores a list it made itself (not through the Manager) in the
    /// dict, then ends: the list goes with it.
    fn r17_store_own_list(d: DictProxy<String, ListProxy<u64>>) -> Result<(), String> {
        let own = ListProxy::<u64>::new().map_err(|e| e.to_string())?;
        own.append(1).map_err(|e| e.to_string())?;
        d.insert("mine".into(), own).map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// A dict value naming a list that is gone (its maker ended, and it was
/// not made through a Manager): reading it is an error that says so,
/// not "corrupted container"; the dict itself is sound (its other
/// entries read fine).
#[test]
fn a_nested_container_that_is_gone_is_reported_as_gone_not_as_corruption() {
    let mgr = shmproc::Manager::new().unwrap();
    let d = mgr.dict::<String, ListProxy<u64>>("groups").unwrap();
    d.insert("kept".into(), mgr.list_anon().unwrap()).unwrap();
    let mut p = Process::new(r17_store_own_list, d.clone());
    p.start().unwrap();
    common::join(&p).unwrap();
    let e = d.get(&"mine".into()).unwrap_err();
    let msg = e.to_string();
    assert!(!matches!(e, ContainerError::Corrupted { .. }), "reported as corruption: {msg}");
    assert!(matches!(e, ContainerError::NestedGone { .. }), "{msg}");
    assert!(msg.contains("cannot be opened") && msg.contains("not found"), "{msg}");
    assert!(d.get(&"kept".into()).unwrap().unwrap().is_empty());
    assert_eq!(d.keys().unwrap(), ["kept", "mine"]);
}

/// Python's per-element loops under the container's lock: `with lock:
/// for i in range(len(l)): l[i] = f(l[i])`, `for k in keys: d[k] += 1`,
/// `for k in keys: del d[k]`, on containers of a few thousand entries:
/// the group commits (its changes to live slots and buckets do not each
/// cost undo log once the log is half full: the array or table moves to
/// fresh space, as `DictProxy::update` does).
#[test]
fn per_element_loops_under_the_lock_over_thousands_of_entries_commit() {
    let l = ListProxy::<u64>::new().unwrap();
    l.extend(0..3000).unwrap();
    let r = l.with_lock(|l| {
        for i in 0..3000isize {
            let v = l.get(i)?;
            l.set(i, v * 2)?;
        }
        Ok::<_, ContainerError>(())
    });
    assert_eq!(r, Ok(Ok(())), "3000 sets under the list's lock");
    assert_eq!(l.to_vec().unwrap(), (0..3000).map(|i| i * 2).collect::<Vec<u64>>());
    let s = ListProxy::<String>::new().unwrap();
    s.extend((0..3000).map(|i| i.to_string())).unwrap();
    let r = s.with_lock(|s| (0..3000isize).try_for_each(|i| s.set(i, format!("n{i}"))));
    assert_eq!(r, Ok(Ok(())), "3000 String sets under the list's lock");
    assert_eq!(s.get(-1).unwrap(), "n2999");
    let d = DictProxy::<String, u64>::new().unwrap();
    d.update((0..3000u64).map(|i| (format!("k{i}"), i))).unwrap();
    let r = d.with_lock(|d| (0..3000u64).try_for_each(|i| d.update_with(&format!("k{i}"), 0, |v| *v += 1).map(drop)));
    assert_eq!(r, Ok(Ok(())), "3000 update_with under the dict's lock");
    assert_eq!(d.get(&"k2999".into()).unwrap(), Some(3000));
    let r = d.with_lock(|d| (0..3000u64).step_by(2).try_for_each(|i| d.remove(&format!("k{i}")).map(drop)));
    assert_eq!(r, Ok(Ok(())), "1500 removes under the dict's lock");
    assert_eq!(d.len(), 1500);
    assert_eq!(d.keys().unwrap()[..2], ["k1".to_string(), "k3".to_string()]);
    let du = DictProxy::<u64, u64>::new().unwrap();
    du.update((0..3000u64).map(|i| (i, i))).unwrap();
    let r = du.with_lock(|d| (0..3000u64).try_for_each(|i| d.insert(i, i + 1).map(drop)));
    assert_eq!(r, Ok(Ok(())), "3000 new values under the dict's lock");
    let r = du.with_lock(|d| {
        while d.len() > 10 {
            d.popitem()?;
        }
        Ok::<_, ContainerError>(())
    });
    assert_eq!(r, Ok(Ok(())), "2990 popitems under the dict's lock");
    assert_eq!(du.items().unwrap(), (0..10u64).map(|i| (i, i + 1)).collect::<Vec<_>>());
}

shmproc::entry! {
    /// Under each container's lock: 1200 sets of the list, then 1200
    /// update_with and 600 removes of the dict; killed at write step
    /// `steps`.
    fn r17_loops_under_lock_and_die(args: (ListProxy<String>, DictProxy<String, u64>, u64)) -> Result<(), String> {
        let (l, d, steps) = args;
        shmproc::__crash_after_steps(steps);
        let e = |e: ContainerError| e.to_string();
        l.with_lock(|l| (0..1200isize).try_for_each(|i| l.set(i, format!("new{i}")))).map_err(e)?.map_err(e)?;
        d.with_lock(|d| {
            (0..1200u64).try_for_each(|i| d.update_with(&format!("k{i}"), 0, |v| *v += 1).map(drop))?;
            (0..1200u64).step_by(2).try_for_each(|i| d.remove(&format!("k{i}")).map(drop))
        })
        .map_err(e)?
        .map_err(e)
    }
}

/// Those loops (the array and the table moved to fresh space part way,
/// the later writes unlogged) killed at write steps all through them:
/// each container exactly as before or after its group, and working.
#[test]
fn per_element_loops_under_the_lock_killed_anywhere_are_all_or_nothing() {
    let l_before: Vec<String> = (0..1200).map(|i| format!("old{i}")).collect();
    let l_after: Vec<String> = (0..1200).map(|i| format!("new{i}")).collect();
    let d_before: Vec<(String, u64)> = (0..1200u64).map(|i| (format!("k{i}"), i)).collect();
    let d_after: Vec<(String, u64)> = (1..1200u64).step_by(2).map(|i| (format!("k{i}"), i + 1)).collect();
    let mut killed = 0;
    let mut steps = 1u64;
    loop {
        let l = ListProxy::<String>::new().unwrap();
        l.extend(l_before.iter().cloned()).unwrap();
        let d = DictProxy::<String, u64>::new().unwrap();
        d.update(d_before.iter().cloned()).unwrap();
        let mut p = Process::new(r17_loops_under_lock_and_die, (l.clone(), d.clone(), steps));
        p.start().unwrap();
        let died = match common::join(&p) {
            Ok(()) => false,
            Err(ProcessError::Signaled { signal: 9, .. }) => true,
            other => panic!("step {steps}: the child ended otherwise: {other:?}"),
        };
        killed += u64::from(died);
        let (lg, dg) = (l.to_vec().unwrap(), d.items().unwrap());
        assert!(lg == l_before || lg == l_after, "step {steps}: torn list group");
        assert!(dg == d_before || dg == d_after, "step {steps}: torn dict group ({} entries)", dg.len());
        assert!(lg == l_before || dg == d_before || dg == d_after);
        assert!(died || (lg == l_after && dg == d_after), "step {steps}: the groups ended without their effect");
        l.set(0, "x".into()).unwrap();
        d.insert("x".into(), 1).unwrap();
        l.extend((0..500).map(|i| i.to_string())).unwrap();
        assert_eq!(l.get(-1).unwrap(), "499");
        assert_eq!(d.get(&"x".into()).unwrap(), Some(1));
        if !died {
            break;
        }
        steps += 1 + steps / 10;
    }
    assert!(killed >= 40, "only {killed} trials were killed inside the groups");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Long `with_lock` groups (hundreds of operations: the undo log
    /// passes half and the table or array moves to fresh space part way)
    /// of random dict and list operations, some failing inside the group,
    /// against Python's ordered dict and list; then the same group again
    /// ending in a panic, which must leave everything as it was.
    #[test]
    fn long_groups_match_python(ops in prop::collection::vec((0u64..120, any::<u16>(), 0u8..9), 200..700)) {
        let d = DictProxy::<String, String>::new().unwrap();
        let l = ListProxy::<String>::new().unwrap();
        d.update((0..60u64).map(|k| (format!("k{k}"), "v".repeat(k as usize % 13)))).unwrap();
        l.extend((0..60u64).map(|k| format!("e{k}"))).unwrap();
        let mut m = PyDict::default();
        for k in 0..60u64 {
            m.insert(format!("k{k}"), "v".repeat(k as usize % 13).into_bytes());
        }
        let mut ml: Vec<String> = (0..60u64).map(|k| format!("e{k}")).collect();
        let run = |d: &DictProxy<String, String>, l: &ListProxy<String>, m: &mut PyDict, ml: &mut Vec<String>| -> Result<(), TestCaseError> {
            for &(k, v, what) in &ops {
                let key = format!("k{k}");
                let val = format!("{v}-{}", "x".repeat(v as usize % 17));
                match what {
                    0 | 1 => prop_assert_eq!(d.insert(key.clone(), val.clone()).unwrap().map(String::into_bytes), m.insert(key, val.into_bytes())),
                    2 => prop_assert_eq!(d.remove(&key).unwrap().map(String::into_bytes), m.remove(&key)),
                    3 => {
                        let got = d.update_with(&key, String::new(), |s| s.push('u')).unwrap();
                        let mut cur = m.pos(&key).map(|i| m.0[i].1.clone()).unwrap_or_default();
                        cur.push(b'u');
                        m.insert(key, cur.clone());
                        prop_assert_eq!(got.into_bytes(), cur);
                    }
                    4 => match d.popitem() {
                        Ok((k2, v2)) => prop_assert_eq!(Some((k2, v2.into_bytes())), m.0.pop()),
                        Err(e) => { prop_assert_eq!(e, ContainerError::Empty("dict")); prop_assert!(m.0.is_empty()); }
                    },
                    5 => prop_assert_eq!(d.pop(&"missing".to_string()), Err(ContainerError::KeyNotFound)),
                    6 if !ml.is_empty() => {
                        let i = (v as usize % ml.len()) as isize;
                        l.set(i, val.clone()).unwrap();
                        ml[i as usize] = val;
                    }
                    7 => { l.append(val.clone()).unwrap(); ml.push(val); }
                    _ => {
                        let r = l.pop_at(v as isize % 7 - 3);
                        let n = ml.len() as isize;
                        let i = v as isize % 7 - 3;
                        let j = if i < 0 { n + i } else { i };
                        if j >= 0 && j < n { prop_assert_eq!(r.unwrap(), ml.remove(j as usize)); } else { prop_assert!(r.is_err()); }
                    }
                }
            }
            Ok(())
        };
        let before = (d.items().unwrap(), l.to_vec().unwrap());
        // A group that panics at its end: nothing of it stays.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            d.with_lock(|d| l.with_lock(|l| {
                let (mut m2, mut ml2) = (PyDict(m.0.clone()), ml.clone());
                let _ = run(d, l, &mut m2, &mut ml2);
                panic!("end of the group");
            }))
        }));
        prop_assert!(r.is_err());
        prop_assert_eq!((d.items().unwrap(), l.to_vec().unwrap()), before);
        // The same group committed.
        d.with_lock(|d| l.with_lock(|l| run(d, l, &mut m, &mut ml)).unwrap()).unwrap()?;
        let items: Vec<(String, Vec<u8>)> = d.items().unwrap().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        prop_assert_eq!(items, m.0.clone());
        prop_assert_eq!(l.to_vec().unwrap(), ml);
    }
}

/// Python's `with lock: for x in xs: l.insert(0, x)` and `with lock:
/// while l: l.pop(0)`: each such operation builds the array anew, and
/// inside a group the old one is freed only at the commit; the segment
/// must not grow by a whole array per operation (3000 inserts into a list
/// of 3000 u64 would take ~100 MB of /dev/shm for good).
#[test]
fn front_inserts_and_pops_under_the_lock_do_not_grow_the_segment_per_operation() {
    let l = ListProxy::<u64>::new().unwrap();
    l.extend(0..3000).unwrap();
    l.with_lock(|l| (0..3000u64).try_for_each(|i| l.insert(0, 10_000 + i))).unwrap().unwrap();
    assert_eq!(l.len(), 6000);
    assert_eq!(l.get(0).unwrap(), 12_999);
    assert_eq!(l.get(2999).unwrap(), 10_000);
    assert_eq!(l.get(3000).unwrap(), 0);
    l.with_lock(|l| {
        while l.len() > 10 {
            l.pop_at(0)?;
        }
        l.remove(&2995)?;
        l.reverse()
    })
    .unwrap()
    .unwrap();
    assert_eq!(l.to_vec().unwrap(), [2999, 2998, 2997, 2996, 2994, 2993, 2992, 2991, 2990]);
    let size = file_size(l.name());
    assert!(size <= 4 << 20, "the segment grew to {size} bytes for a list of at most 6000 u64");
}

shmproc::entry! {
    /// Under the list's lock: 400 front inserts, 300 pops from the front,
    /// a remove, a reverse and a sort (the array rebuilt in place once the
    /// group made it); killed at write step `steps`.
    fn r17_front_ops_and_die(args: (ListProxy<String>, u64)) -> Result<(), String> {
        let (l, steps) = args;
        shmproc::__crash_after_steps(steps);
        l.with_lock(|l| {
            for i in 0..400u64 {
                l.insert(0, format!("f{i:03}"))?;
            }
            for _ in 0..300 {
                l.pop_at(0)?;
            }
            l.remove(&"f050".to_string())?;
            l.reverse()?;
            l.sort()
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

/// That group killed at write steps all through it: the list exactly as
/// before or after, and working.
#[test]
fn front_inserts_and_pops_under_the_lock_killed_anywhere_are_all_or_nothing() {
    let before: Vec<String> = (0..200u64).map(|i| format!("b{i:03}")).collect();
    let after = {
        let mut m = before.clone();
        for i in 0..400u64 {
            m.insert(0, format!("f{i:03}"));
        }
        m.drain(..300);
        let at = m.iter().position(|s| s == "f050").unwrap();
        m.remove(at);
        m.reverse();
        m.sort();
        m
    };
    let mut killed = 0;
    let mut steps = 1u64;
    loop {
        let l = ListProxy::<String>::new().unwrap();
        l.extend(before.iter().cloned()).unwrap();
        let mut p = Process::new(r17_front_ops_and_die, (l.clone(), steps));
        p.start().unwrap();
        let died = match common::join(&p) {
            Ok(()) => false,
            Err(ProcessError::Signaled { signal: 9, .. }) => true,
            other => panic!("step {steps}: the child ended otherwise: {other:?}"),
        };
        killed += u64::from(died);
        let got = l.to_vec().unwrap();
        assert!(got == before || got == after, "step {steps}: torn group ({} elements)", got.len());
        assert!(died || got == after, "step {steps}: the group ended without its effect");
        l.insert(0, "x".into()).unwrap();
        l.extend((0..300).map(|i| i.to_string())).unwrap();
        assert_eq!(l.get(0).unwrap(), "x");
        assert_eq!(l.get(-1).unwrap(), "299");
        assert_eq!(l.len(), got.len() + 301);
        if !died {
            break;
        }
        steps += 1 + steps / 10;
    }
    assert!(killed >= 40, "only {killed} trials were killed inside the group");
}
