//! Manager, ListProxy and DictProxy across real processes: concurrent
//! appends and counters lose nothing, a Manager handle goes to a child,
//! bad input gets its own error, and a SIGKILL at a random moment inside
//! mutating operations leaves each container as before or as after the
//! operation in progress (the crash matrix).
//!
//! The crash matrix runs `SHMPROC_CRASH_TRIALS` trials per container kind
//! (default 25 here, 500 with `SHMPROC_TEST_FULL` set): half are killed from outside at a random moment,
//! half kill themselves at a random write step of an operation (the
//! `test-hooks` crash injection: before/after each undo-log entry, each
//! logged or fresh write, halfway through a multi-word write, each
//! state-word store, and the commit store). The full run (>= 1 000 trials
//! in total):
//!
//! ```text
//! SHMPROC_CRASH_TRIALS=500 cargo test --release --test manager crash_matrix -- --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use shmproc::{ContainerError, DictProxy, Kind, ListProxy, Manager, OpenError, Process, ProcessError, Value};

const BOUND: Duration = Duration::from_secs(60);
const PER_CHILD: u64 = 10_000;
const CHILDREN: u64 = 4;

fn join_ok(p: &Process) {
    match common::join(p) {
        Ok(()) => {}
        Err(e) => panic!("child failed: {e}"),
    }
}

shmproc::entry! {
    fn append_many(args: (ListProxy<u64>, u64)) -> Result<(), String> {
        let (list, id) = args;
        for j in 0..PER_CHILD {
            list.append((id << 32) | j).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn four_processes_append_ten_thousand_each_in_order() {
    let list = ListProxy::<u64>::new().unwrap();
    let mut ps: Vec<Process> = (0..CHILDREN).map(|id| Process::new(append_many, (list.clone(), id))).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &ps {
        join_ok(p);
    }
    let all = list.to_vec().unwrap();
    assert_eq!(all.len() as u64, CHILDREN * PER_CHILD);
    let mut next = vec![0u64; CHILDREN as usize];
    for v in all {
        let (id, j) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
        assert_eq!(j, next[id], "process {id}'s values out of order or lost");
        next[id] += 1;
    }
}

shmproc::entry! {
    fn count_words(args: (Manager, u64)) -> Result<(), String> {
        let (mgr, id) = args;
        let d = mgr.dict::<String, u64>("counts").map_err(|e| e.to_string())?;
        let names = mgr.dict::<String, u64>("names").map_err(|e| e.to_string())?;
        for j in 0..PER_CHILD {
            d.update_with(&format!("w{}", j % 16), 0, |n| *n += 1).map_err(|e| e.to_string())?;
            names.insert(format!("child{id}-{j}"), j).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn update_with_counters_and_string_keys_from_four_processes_are_exact() {
    let mgr = Manager::new().unwrap();
    let counts = mgr.dict::<String, u64>("counts").unwrap();
    let mut ps: Vec<Process> = (0..CHILDREN).map(|id| Process::new(count_words, (mgr.clone(), id))).collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &ps {
        join_ok(p);
    }
    assert_eq!(counts.len(), 16);
    for w in 0..16 {
        assert_eq!(counts.get(&format!("w{w}")).unwrap(), Some(CHILDREN * PER_CHILD / 16), "w{w}");
    }
    let names = mgr.dict::<String, u64>("names").unwrap();
    assert_eq!(names.len() as u64, CHILDREN * PER_CHILD);
    for id in 0..CHILDREN {
        for j in (0..PER_CHILD).step_by(997) {
            assert_eq!(names.get(&format!("child{id}-{j}")).unwrap(), Some(j));
        }
    }
}

shmproc::entry! {
    fn fill_squares(mgr: Manager) -> Result<(), String> {
        let l = mgr.list::<u64>("squares").map_err(|e| e.to_string())?;
        l.extend((0..10).map(|i| i * i)).map_err(|e| e.to_string())?;
        // A container the child creates belongs to the Manager's creator.
        mgr.dict::<String, String>("from-child").map_err(|e| e.to_string())?
            .insert("k".into(), "v".into()).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[test]
fn a_manager_handle_goes_to_a_child_and_what_it_creates_outlives_it() {
    let mgr = Manager::new().unwrap();
    let mut p = Process::new(fill_squares, mgr.clone());
    p.start().unwrap();
    join_ok(&p);
    assert_eq!(mgr.list::<u64>("squares").unwrap().slice(2..5).unwrap(), [4, 9, 16]);
    assert_eq!(mgr.dict::<String, String>("from-child").unwrap().get(&"k".into()).unwrap(), Some("v".into()));
    let names: Vec<(String, Kind)> = mgr.names().unwrap().into_iter().map(|e| (e.name, e.kind)).collect();
    assert_eq!(names, [("from-child".to_string(), Kind::Dict), ("squares".to_string(), Kind::List)]);
    // The creator's last handle removes every name.
    let segs: Vec<String> = mgr.names().unwrap().into_iter().map(|e| e.segment).collect();
    let reg = mgr.name().to_owned();
    drop(mgr);
    for s in segs.iter().chain([&reg]) {
        assert!(!std::path::Path::new(&format!("/dev/shm/shmproc.{s}")).exists(), "{s} left behind");
    }
}

/// Python's slicing with negative bounds, on the seed's squares: each line
/// is what CPython gives for the same slice of `[i * i for i in range(10)]`.
#[test]
fn slices_with_negative_bounds_count_from_the_end_and_clamp_like_python() {
    let sut = shmproc::ListProxy::<u64>::new().unwrap();
    sut.extend((0..10).map(|i| i * i)).unwrap();
    assert_eq!(sut.slice(-3..).unwrap(), [49, 64, 81]); // [-3:]
    assert_eq!(sut.slice((1, -1)).unwrap(), [1, 4, 9, 16, 25, 36, 49, 64]); // [1:-1]
    #[allow(clippy::reversed_empty_ranges)] // -1 counts from the end: not empty
    let as_range = sut.slice(1..-1).unwrap();
    assert_eq!(as_range.len(), 8);
    assert_eq!(sut.slice(-4..-2).unwrap(), [36, 49]); // [-4:-2]
    assert_eq!(sut.slice(..-7).unwrap(), [0, 1, 4]); // [:-7]
    assert_eq!(sut.slice(-100..3).unwrap(), [0, 1, 4]); // [-100:3]
    assert_eq!(sut.slice(-2..100).unwrap(), [64, 81]); // [-2:100]
    assert_eq!(sut.slice((-2, -5)).unwrap(), []); // [-2:-5]
    assert_eq!(sut.slice(..-100).unwrap(), []); // [:-100]
    assert_eq!(sut.slice(-1..=-1).unwrap(), [81]); // inclusive end: [-1:]
    assert_eq!(sut.slice(isize::MIN..isize::MAX).unwrap().len(), 10); // no overflow
    assert_eq!(sut.slice(u64::MAX..).unwrap(), []);
    let empty = shmproc::ListProxy::<u64>::new().unwrap();
    assert_eq!(empty.slice(-1..).unwrap(), []);
}

#[test]
fn bad_input_gets_its_own_error() {
    let mgr = Manager::new().unwrap();
    let l = mgr.list::<u64>("l").unwrap();
    assert!(matches!(mgr.list::<u32>("l"), Err(OpenError::IncompatibleType { .. })));
    assert!(matches!(mgr.list::<String>("l"), Err(OpenError::IncompatibleType { .. })));
    assert!(matches!(
        mgr.dict::<u64, u64>("l"),
        Err(OpenError::WrongKind { expected: Kind::Dict, found: Kind::List, .. })
    ));
    assert!(matches!(mgr.lock("l"), Err(OpenError::WrongKind { .. })));
    assert!(matches!(mgr.list::<u64>("a/b"), Err(OpenError::InvalidName { .. })));
    assert!(matches!(ListProxy::<u32>::open(l.name()), Err(OpenError::IncompatibleType { .. })));
    assert!(matches!(DictProxy::<u64, u64>::open(l.name()), Err(OpenError::WrongKind { .. })));
    assert!(matches!(ListProxy::<u64>::open(mgr.name()), Err(OpenError::WrongKind { .. })));
    assert_eq!(l.get(0), Err(ContainerError::IndexOutOfRange { index: 0, len: 0 }));
    assert_eq!(l.get(-1), Err(ContainerError::IndexOutOfRange { index: -1, len: 0 }));
    assert_eq!(l.set(3, 1), Err(ContainerError::IndexOutOfRange { index: 3, len: 0 }));
    assert_eq!(l.pop(), Err(ContainerError::Empty("list")));
    assert_eq!(l.pop_at(0), Err(ContainerError::Empty("list")));
    l.append(1).unwrap();
    assert_eq!(l.pop_at(-2), Err(ContainerError::IndexOutOfRange { index: -2, len: 1 }));
    assert_eq!(l.remove(&9), Err(ContainerError::ValueNotFound));
    assert_eq!(l.index(&9), Err(ContainerError::ValueNotFound));
    let d = mgr.dict::<String, u64>("d").unwrap();
    assert_eq!(d.popitem(), Err(ContainerError::Empty("dict")));
    assert_eq!(d.pop(&"x".into()), Err(ContainerError::KeyNotFound));
    // Nothing was changed by the failed operations.
    assert_eq!(l.to_vec().unwrap(), [1]);
    assert!(d.is_empty());
}

/// `get`'s first try compares a `String` key's blob without its block
/// header and the last bytes of a key of 9 or more bytes through one
/// overlapping load: keys of every length up to 40 that differ in one byte
/// only (in their head, their whole words or their tail) stay apart, and
/// an absent one is absent.
#[test]
fn string_keys_differing_in_one_byte_are_told_apart_by_get() {
    let sut = DictProxy::<String, u64>::new().unwrap();
    let key = |len: usize, at: usize, c: u8| {
        let mut b = vec![b'k'; len];
        if at < len {
            b[at] = c;
        }
        String::from_utf8(b).unwrap()
    };
    for len in 0..=40usize {
        for at in 0..len.max(1) {
            sut.insert(key(len, at, b'x'), (len * 100 + at) as u64).unwrap();
        }
    }
    for len in 0..=40usize {
        for at in 0..len.max(1) {
            let want = if len == 0 { 0 } else { (len * 100 + at) as u64 };
            assert_eq!(sut.get(&key(len, at, b'x')).unwrap(), Some(want), "len {len}, byte {at}");
            if len > 0 {
                assert_eq!(sut.get(&key(len, at, b'y')).unwrap(), None, "len {len}, byte {at} changed");
                assert!(!sut.contains_key(&key(len, at, b'y')).unwrap());
            }
        }
    }
}

#[test]
fn a_panic_inside_update_with_changes_nothing() {
    let d = DictProxy::<String, u64>::new().unwrap();
    d.insert("a".into(), 1).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        d.update_with(&"a".into(), 0, |_| panic!("boom")).unwrap();
    }));
    assert!(r.is_err());
    assert_eq!(d.get(&"a".into()).unwrap(), Some(1));
    assert_eq!(d.update_with(&"a".into(), 0, |v| *v += 1).unwrap(), 2);
}

// ---- crash matrix ----------------------------------------------------

/// A tiny deterministic generator (splitmix64).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn text(i: u64) -> String {
    format!("v{i}-{}", "x".repeat((mix(i ^ 7) % 300) as usize))
}

/// The list operation number `i`, given the current length.
#[derive(Debug)]
enum LStep {
    Append(String),
    Extend(Vec<String>),
    Insert(isize, String),
    Pop,
    PopAt(isize),
    /// del l[i]: the element removed unread.
    Del(isize),
    Set(isize, String),
    Reverse,
    Remove(String),
    Sort,
    SortByKey,
    /// with_lock: append each, then pop one (one transaction).
    Group(Vec<String>),
    Clear,
    Shrink,
}

fn list_step(i: u64, m: &[String]) -> LStep {
    let h = mix(i);
    let len = m.len() as u64;
    if len == 0 {
        return LStep::Append(text(i));
    }
    match h % 23 {
        0..=5 => LStep::Append(text(i)),
        6 => LStep::Extend((0..h % 5).map(|k| text(i * 8 + k)).collect()),
        7..=8 => LStep::Insert((h >> 8) as isize % (len as isize + 1), text(i)),
        9..=11 => LStep::Pop,
        12 if h & (1 << 20) == 0 => LStep::Del(-1 - ((h >> 8) % len) as isize),
        12..=13 => LStep::PopAt(((h >> 8) % len) as isize),
        14..=16 => LStep::Set(((h >> 8) % len) as isize, text(i)),
        17 => LStep::Reverse,
        18..=19 => LStep::Remove(m[((h >> 8) % len) as usize].clone()),
        20 if h & (1 << 20) == 0 => LStep::Sort,
        20 if h & (1 << 21) == 0 => LStep::SortByKey,
        20 => LStep::Group((0..1 + h % 4).map(|k| text(i * 8 + k)).collect()),
        21 if len > 60 => LStep::Clear,
        _ => LStep::Shrink,
    }
}

fn list_apply_model(step: LStep, m: &mut Vec<String>) {
    match step {
        LStep::Append(s) => m.push(s),
        LStep::Extend(v) => m.extend(v),
        LStep::Insert(i, s) => m.insert(i as usize, s),
        LStep::Pop => drop(m.pop()),
        LStep::PopAt(i) => drop(m.remove(i as usize)),
        LStep::Del(i) => drop(m.remove((m.len() as isize + i) as usize)),
        LStep::Set(i, s) => m[i as usize] = s,
        LStep::Reverse => m.reverse(),
        LStep::Remove(s) => {
            let j = m.iter().position(|x| *x == s).unwrap();
            m.remove(j);
        }
        LStep::Sort => m.sort(),
        LStep::SortByKey => m.sort_by_key(|s| std::cmp::Reverse(s.clone())),
        LStep::Group(v) => {
            m.extend(v);
            m.pop();
        }
        LStep::Clear => m.clear(),
        LStep::Shrink => {}
    }
}

fn list_apply(step: LStep, l: &ListProxy<String>) -> Result<(), ContainerError> {
    match step {
        LStep::Append(s) => l.append(s),
        LStep::Extend(v) => l.extend(v),
        LStep::Insert(i, s) => l.insert(i, s),
        LStep::Pop => l.pop().map(drop),
        LStep::PopAt(i) => l.pop_at(i).map(drop),
        LStep::Del(i) => l.del(i),
        LStep::Set(i, s) => l.set(i, s),
        LStep::Reverse => l.reverse(),
        LStep::Remove(s) => l.remove(&s),
        LStep::Sort => l.sort(),
        LStep::SortByKey => l.sort_by_key(|s| std::cmp::Reverse(s.clone())),
        LStep::Group(v) => l.with_lock(|l| {
            for s in v {
                l.append(s)?;
            }
            l.pop().map(drop)
        })?,
        LStep::Clear => l.clear(),
        LStep::Shrink => l.shrink_to_fit(),
    }
}

#[derive(Debug)]
enum DStep {
    Count(String, u64),
    Insert(String, String),
    Remove(String),
    SetDefault(String, String),
    /// update() with several pairs (one transaction).
    Update(Vec<(String, String)>),
    /// pop(k): KeyNotFound when absent (nothing changes).
    Pop(String),
    /// del d[k]: removed unread (KeyNotFound when absent).
    Del(String),
    /// with_lock: insert the first key, remove the second.
    Group(String, String, String),
    /// popitem: the last inserted entry (Empty when empty, nothing changes).
    PopItem,
    Clear,
    /// shrink_to_fit: contents and order unchanged.
    Shrink,
}

fn dict_step(i: u64, len: usize) -> DStep {
    let h = mix(i);
    let k = format!("key{}-{}", h % 97, "k".repeat((h >> 40) as usize % 40));
    match h % 41 {
        0..=14 => DStep::Count(k, i),
        15..=29 => DStep::Insert(k, text(i)),
        30 => DStep::Del(k),
        31..=36 => DStep::Remove(k),
        37..=38 => DStep::PopItem,
        39 if h & (1 << 20) == 0 => DStep::SetDefault(k, text(i)),
        39 if h & (1 << 21) == 0 => DStep::Update(
            (0..1 + (h >> 22) % 6)
                .map(|j| (format!("key{}-u", (h >> 30).wrapping_add(j) % 97), text(i * 8 + j)))
                .collect(),
        ),
        39 if h & (1 << 22) == 0 => DStep::Pop(k),
        39 => DStep::Group(k, text(i), format!("key{}-", (h >> 30) % 97)),
        40 if h & (1 << 20) == 0 => DStep::Shrink,
        _ if len > 50 => DStep::Clear,
        _ => DStep::Remove(k),
    }
}

/// The dict under test maps a key to (text, counter) as two dicts would
/// be awkward to keep atomic together: texts in one, counters in another
/// are separate containers; here one dict of String -> String holds both,
/// counters as decimal text. The model is a list of pairs in insertion
/// order (Python's dict order, which `items()` and `popitem` follow).
type Om = Vec<(String, String)>;

fn om_entry(m: &mut Om, k: String, default: impl FnOnce() -> String) -> &mut String {
    let i = m.iter().position(|(x, _)| *x == k).unwrap_or_else(|| {
        m.push((k, default()));
        m.len() - 1
    });
    &mut m[i].1
}

fn om_remove(m: &mut Om, k: &str) {
    if let Some(i) = m.iter().position(|(x, _)| x == k) {
        m.remove(i);
    }
}

fn dict_apply_model(step: DStep, m: &mut Om) {
    match step {
        DStep::Count(k, i) => {
            let e = om_entry(m, k, || "0".into());
            *e = (e.parse::<u64>().unwrap_or(0) + i).to_string();
        }
        DStep::Insert(k, v) => *om_entry(m, k, String::new) = v,
        DStep::Remove(k) | DStep::Pop(k) | DStep::Del(k) => om_remove(m, &k),
        DStep::SetDefault(k, v) => drop(om_entry(m, k, || v)),
        DStep::Update(kv) => {
            for (k, v) in kv {
                *om_entry(m, k, String::new) = v;
            }
        }
        DStep::Group(k, v, r) => {
            *om_entry(m, k, String::new) = v;
            om_remove(m, &r);
        }
        DStep::PopItem => drop(m.pop()),
        DStep::Clear => m.clear(),
        DStep::Shrink => {}
    }
}

fn dict_apply(step: DStep, d: &DictProxy<String, String>) -> Result<(), ContainerError> {
    match step {
        DStep::Count(k, i) => {
            d.update_with(&k, "0".into(), |v| *v = (v.parse::<u64>().unwrap_or(0) + i).to_string()).map(drop)
        }
        DStep::Insert(k, v) => d.insert(k, v).map(drop),
        DStep::Remove(k) => d.remove(&k).map(drop),
        DStep::SetDefault(k, v) => d.setdefault(k, v).map(drop),
        DStep::Update(kv) => d.update(kv),
        DStep::Pop(k) => match d.pop(&k) {
            Err(ContainerError::KeyNotFound) => Ok(()),
            r => r.map(drop),
        },
        DStep::Group(k, v, r) => d.with_lock(|d| {
            d.insert(k, v)?;
            d.remove(&r).map(drop)
        })?,
        DStep::Del(k) => match d.del(&k) {
            Err(ContainerError::KeyNotFound) => Ok(()),
            r => r,
        },
        DStep::PopItem => match d.popitem() {
            Err(ContainerError::Empty(_)) => Ok(()),
            r => r.map(drop),
        },
        DStep::Clear => d.clear(),
        DStep::Shrink => d.shrink_to_fit(),
    }
}

/// A crash-matrix child's loop: crash injection armed at `steps` (0: off),
/// then operation after operation for ever, the number of the one in
/// flight in `inflight`; `op` applies operation i to the model `m` and to
/// the container. Ends only with an error (or the kill).
fn run_ops<M>(
    steps: u64,
    inflight: &Value<u64>,
    mut m: M,
    mut op: impl FnMut(u64, &mut M) -> Result<(), ContainerError>,
) -> Result<(), String> {
    shmproc::__crash_after_steps(steps);
    for i in 0.. {
        inflight.set(i).map_err(|e| e.to_string())?;
        op(i, &mut m).map_err(|e| format!("op {i}: {e}"))?;
    }
    Ok(())
}

shmproc::entry! {
    fn list_worker(args: (ListProxy<String>, u64, Value<u64>)) -> Result<(), String> {
        let (list, steps, inflight) = args;
        run_ops(steps, &inflight, Vec::new(), |i, m| {
            let step = list_step(i, m);
            list_apply_model(list_step(i, m), m);
            list_apply(step, &list)
        })
    }
}

shmproc::entry! {
    fn dict_worker(args: (DictProxy<String, String>, u64, Value<u64>)) -> Result<(), String> {
        let (dict, steps, inflight) = args;
        run_ops(steps, &inflight, Om::new(), |i, m| {
            let step = dict_step(i, m.len());
            dict_apply_model(dict_step(i, m.len()), m);
            dict_apply(step, &dict)
        })
    }
}

fn trials() -> u64 {
    std::env::var("SHMPROC_CRASH_TRIALS").ok().and_then(|s| s.parse().ok()).unwrap_or(common::count(25, 500))
}

/// Starts `p`; odd trials: it kills itself at an injected step (its
/// argument); even trials: waits until `started()` (bounded), lets it run
/// a random while, then kills it with SIGKILL.
fn kill_at_random(p: &mut Process, seed: u64, started: impl Fn() -> bool) {
    p.start().unwrap();
    if seed % 2 == 1 {
        match common::join(p) {
            Err(ProcessError::Signaled { signal: 9, .. }) => return,
            other => panic!("child ended otherwise than by its injected SIGKILL: {other:?}"),
        }
    }
    let end = Instant::now() + BOUND;
    while !started() {
        if Instant::now() > end {
            let _ = p.kill();
            panic!("child did not start working within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_micros(mix(seed) % 20_000));
    p.kill().unwrap();
    match common::join(p) {
        Err(ProcessError::Signaled { signal: 9, .. }) => {}
        other => panic!("child ended otherwise than by SIGKILL: {other:?}"),
    }
}

/// For a trial killed at an injected write step of a container operation
/// (never inside `Value::set`): the state is exactly the model before or
/// exactly after the operation in flight (its index is in `inflight`).
fn assert_before_or_after<M: Default + Clone + PartialEq>(
    t: u64,
    inflight: &Value<u64>,
    step: impl Fn(u64, &mut M),
    got: M,
) {
    let k = inflight.get().unwrap();
    let mut m = M::default();
    for i in 0..k {
        step(i, &mut m);
    }
    let before = m.clone();
    step(k, &mut m);
    assert!(got == before || got == m, "trial {t}: op {k} in flight, state is neither before nor after it");
}

#[test]
fn crash_matrix_list() {
    let n = trials();
    let mut max_ops = 0;
    for t in 0..n {
        let list = ListProxy::<String>::new().unwrap();
        let steps = if t % 2 == 1 { 1 + mix(t) % 4000 } else { 0 };
        let inflight = Value::new(0u64).unwrap();
        let mut p = Process::new(list_worker, (list.clone(), steps, inflight.clone()));
        kill_at_random(&mut p, t, || !list.is_empty());
        if t % 2 == 1 {
            let step = |i, m: &mut Vec<String>| list_apply_model(list_step(i, m), m);
            assert_before_or_after(t, &inflight, step, list.to_vec().unwrap());
        }
        // The repaired state must be the model after some number of ops.
        let got = list.to_vec().unwrap();
        assert_eq!(got.len(), list.len(), "trial {t}: length does not match contents");
        let ops = ops_to_reach(&got, |i, m| list_apply_model(list_step(i, m), m))
            .unwrap_or_else(|| panic!("trial {t}: state matches no prefix of the operations: {got:?}"));
        max_ops = max_ops.max(ops);
        // And it keeps working.
        list.append("after".into()).unwrap();
        assert_eq!(list.get(-1).unwrap(), "after");
        assert_eq!(list.len(), got.len() + 1);
    }
    eprintln!("crash matrix (list): {n} trials, all repaired; up to {max_ops} ops before a kill");
}

/// How many operations (`step` applies operation i to a model) take an
/// empty model to `got` (the first such prefix), if any within 10 million.
fn ops_to_reach<M: Default + PartialEq>(got: &M, step: impl Fn(u64, &mut M)) -> Option<u64> {
    let mut m = M::default();
    for i in 0..10_000_000u64 {
        if m == *got {
            return Some(i);
        }
        step(i, &mut m);
    }
    None
}

/// After trial `t` of a dict crash matrix: the dict's length matches its
/// entries, each is readable by key, they are the model after some prefix
/// of the operations (`step` applies operation i; returns how many), and
/// the dict keeps working (`after` inserted and read back).
fn check_repaired<K, V>(t: u64, dict: &DictProxy<K, V>, step: impl Fn(u64, &mut Vec<(K, V)>), after: (K, V)) -> u64
where
    K: shmproc::Element + PartialEq + std::fmt::Debug,
    V: shmproc::Element + PartialEq + std::fmt::Debug,
{
    let got = dict.items().unwrap();
    assert_eq!(got.len(), dict.len(), "trial {t}: length does not match contents");
    for (k, v) in &got {
        assert_eq!(dict.get(k).unwrap().as_ref(), Some(v), "trial {t}: entry not readable by key");
    }
    let ops =
        ops_to_reach(&got, step).unwrap_or_else(|| panic!("trial {t}: state matches no prefix of the operations"));
    let had = got.iter().any(|(k, _)| *k == after.0);
    dict.insert(after.0.clone(), after.1.clone()).unwrap();
    assert_eq!(dict.get(&after.0).unwrap(), Some(after.1), "trial {t}: a new entry after the repair");
    assert_eq!(dict.len(), got.len() + usize::from(!had));
    ops
}

#[test]
fn crash_matrix_dict() {
    let n = trials();
    let mut max_ops = 0;
    for t in 0..n {
        let dict = DictProxy::<String, String>::new().unwrap();
        if t % 4 >= 2 {
            // Insertion numbers nearly used up: the table is renumbered after a few inserts (its own rebuild
            // path, which a kill must find all or nothing too).
            set_next_order(&dict, u64::from(u32::MAX) - 1 - t % 16);
        }
        let steps = if t % 2 == 1 { 1 + mix(t ^ 0xD1C7) % 4000 } else { 0 };
        let inflight = Value::new(0u64).unwrap();
        let mut p = Process::new(dict_worker, (dict.clone(), steps, inflight.clone()));
        kill_at_random(&mut p, t, || !dict.is_empty());
        let step = |i, m: &mut Om| dict_apply_model(dict_step(i, m.len()), m);
        if t % 2 == 1 {
            assert_before_or_after(t, &inflight, step, dict.items().unwrap());
        }
        max_ops = max_ops.max(check_repaired(t, &dict, step, ("after".into(), "x".into())));
    }
    eprintln!("crash matrix (dict): {n} trials, all repaired; up to {max_ops} ops before a kill");
}

/// One step of the u64 -> u64 dict's crash matrix: mostly inserts (new
/// keys and new values: `insert`'s quick path for inline types), with
/// removals (tombstones a later insert reuses), counters and a clear now
/// and then, over a few hundred keys (so the table resizes along the way).
fn dict_u64_step(i: u64) -> (u64, u64, u64) {
    let h = mix(i ^ 0x5EED);
    (h % 16, (h >> 8) % 200, i)
}

fn dict_u64_apply_model(i: u64, m: &mut Vec<(u64, u64)>) {
    let (op, k, v) = dict_u64_step(i);
    let at = m.iter().position(|e| e.0 == k);
    match (op, at) {
        (0..=8, Some(j)) => m[j].1 = v,
        (0..=8, None) => m.push((k, v)),
        (9..=13, Some(j)) => drop(m.remove(j)),
        (14, Some(j)) => m[j].1 += v,
        (14, None) => m.push((k, v)),
        (15, _) if m.len() > 100 => m.clear(),
        _ => {}
    }
}

fn dict_u64_apply(i: u64, len: usize, d: &DictProxy<u64, u64>) -> Result<(), ContainerError> {
    let (op, k, v) = dict_u64_step(i);
    match op {
        0..=8 => d.insert(k, v).map(drop),
        9..=13 => d.remove(&k).map(drop),
        14 => d.update_with(&k, 0, |x| *x += v).map(drop),
        _ if len > 100 => d.clear(),
        _ => Ok(()),
    }
}

shmproc::entry! {
    fn dict_u64_worker(args: (DictProxy<u64, u64>, u64, Value<u64>)) -> Result<(), String> {
        let (dict, steps, inflight) = args;
        run_ops(steps, &inflight, Vec::new(), |i, m| {
            let len = m.len();
            dict_u64_apply_model(i, m);
            dict_u64_apply(i, len, &dict)
        })
    }
}

/// The crash matrix of a `DictProxy<u64, u64>`: its inserts take the quick
/// path (`Store::write_quick`: no allocation, one log append), which the
/// String dict's matrix never reaches; a kill anywhere in it leaves the
/// dict before or after the insert in flight, repaired by the next user.
#[test]
fn crash_matrix_dict_u64() {
    let n = trials();
    let mut max_ops = 0;
    for t in 0..n {
        let dict = DictProxy::<u64, u64>::new().unwrap();
        let steps = if t % 2 == 1 { 1 + mix(t ^ 0xD1C8) % 3000 } else { 0 };
        let inflight = Value::new(0u64).unwrap();
        let mut p = Process::new(dict_u64_worker, (dict.clone(), steps, inflight.clone()));
        kill_at_random(&mut p, t, || !dict.is_empty());
        if t % 2 == 1 {
            assert_before_or_after(t, &inflight, dict_u64_apply_model, dict.items().unwrap());
        }
        max_ops = max_ops.max(check_repaired(t, &dict, dict_u64_apply_model, (u64::MAX, 1)));
    }
    eprintln!("crash matrix (dict u64): {n} trials, all repaired; up to {max_ops} ops before a kill");
}

/// One operation of the `ListProxy<u64>` crash matrix: mostly appends
/// (the quick path while the array has room, the full transaction when it
/// grows), with pops, sets, extends and clears among them.
fn list_u64_apply_model(i: u64, m: &mut Vec<u64>) {
    match (mix(i ^ 0x11D) % 16, m.len()) {
        (0..=9, _) => m.push(i),
        (10..=11, _) => drop(m.pop()),
        (12, n) if n > 0 => m[n - 1] = i,
        (13, _) => m.extend([i, i + 1, i + 2]),
        (14, n) if n > 100 => m.clear(),
        _ => {}
    }
}

fn list_u64_apply(i: u64, len: usize, l: &ListProxy<u64>) -> Result<(), ContainerError> {
    match (mix(i ^ 0x11D) % 16, len) {
        (0..=9, _) => l.append(i),
        (10..=11, 0) => Ok(()),
        (10..=11, _) => l.pop().map(drop),
        (12, n) if n > 0 => l.set(-1, i),
        (13, _) => l.extend([i, i + 1, i + 2]),
        (14, n) if n > 100 => l.clear(),
        _ => Ok(()),
    }
}

shmproc::entry! {
    fn list_u64_worker(args: (ListProxy<u64>, u64, Value<u64>)) -> Result<(), String> {
        let (list, steps, inflight) = args;
        run_ops(steps, &inflight, Vec::new(), |i, m| {
            let len = m.len();
            list_u64_apply_model(i, m);
            list_u64_apply(i, len, &list)
        })
    }
}

/// The crash matrix of a `ListProxy<u64>`: its appends take the quick path
/// (`Store::write_quick`: the element into the slot past the length, the
/// length logged and stored) while the array has room, which the String
/// list's matrix never reaches; a kill anywhere leaves the list before or
/// after the operation in flight, repaired by the next user.
#[test]
fn crash_matrix_list_u64() {
    let n = trials();
    let mut max_ops = 0;
    for t in 0..n {
        let list = ListProxy::<u64>::new().unwrap();
        let steps = if t % 2 == 1 { 1 + mix(t ^ 0x5EED) % 2000 } else { 0 };
        let inflight = Value::new(0u64).unwrap();
        let mut p = Process::new(list_u64_worker, (list.clone(), steps, inflight.clone()));
        kill_at_random(&mut p, t, || !list.is_empty());
        if t % 2 == 1 {
            assert_before_or_after(t, &inflight, list_u64_apply_model, list.to_vec().unwrap());
        }
        let got = list.to_vec().unwrap();
        assert_eq!(got.len(), list.len(), "trial {t}: length does not match contents");
        let ops = ops_to_reach(&got, list_u64_apply_model)
            .unwrap_or_else(|| panic!("trial {t}: state matches no prefix of the operations: {got:?}"));
        max_ops = max_ops.max(ops);
        list.append(u64::MAX).unwrap();
        assert_eq!(list.get(-1).unwrap(), u64::MAX);
        assert_eq!(list.len(), got.len() + 1);
    }
    eprintln!("crash matrix (list u64): {n} trials, all repaired; up to {max_ops} ops before a kill");
}

/// Offset of a dict's ORDER root word (the next insertion number): header
/// 128 + lock, seq, map_len, log_used; heap top, 36 free-list heads, then
/// the roots table, buckets, count, used, order (src/manager/store.rs,
/// dict.rs).
const ORDER_OFF: u64 = 160 + 8 * (1 + 36 + 4);

/// Sets the next insertion number of `d` (a test of the renumbering at
/// the 32-bit limit; `d` is not in use).
fn set_next_order(d: &DictProxy<String, String>, order: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmproc.{}", d.name())).unwrap();
    f.write_all_at(&order.to_ne_bytes(), ORDER_OFF).unwrap();
}

/// The insertion numbers of a dict are 32 bits; the insert that would
/// pass the last one renumbers the entries in their order first, so
/// insertion order (keys(), popitem) is kept across it, also with
/// removals and values replaced.
#[test]
fn insertion_order_survives_the_renumbering_at_the_32_bit_limit() {
    let d = DictProxy::<String, String>::new().unwrap();
    set_next_order(&d, u64::from(u32::MAX) - 6);
    let mut model: Vec<(String, String)> = Vec::new();
    for i in 0..40u64 {
        let k = format!("k{}", (i * 7) % 23);
        let v = format!("v{i}");
        match model.iter_mut().find(|(mk, _)| *mk == k) {
            Some(e) => e.1 = v.clone(),
            None => model.push((k.clone(), v.clone())),
        }
        d.insert(k, v).unwrap();
        if i % 5 == 4 {
            let gone = model.remove(1);
            assert_eq!(d.remove(&gone.0).unwrap(), Some(gone.1));
        }
        assert_eq!(d.items().unwrap(), model, "after insert {i}");
    }
    assert_eq!(d.popitem().unwrap(), model.pop().unwrap());
    assert_eq!(d.items().unwrap(), model);
    // The renumbering did happen: the next number is small again.
    use std::os::unix::fs::FileExt;
    let mut w = [0u8; 8];
    std::fs::File::open(format!("/dev/shm/shmproc.{}", d.name())).unwrap().read_exact_at(&mut w, ORDER_OFF).unwrap();
    assert!(u64::from_ne_bytes(w) < 100, "next insertion number {} after the limit", u64::from_ne_bytes(w));
}

/// A store that grows past its first address range (64 MiB) maps the
/// whole file again into a new, larger range (`Store::remap`); growths
/// inside a range map only their new bytes. A handle opened before the
/// growth (its own mappings) and the growing one both read every element
/// back, across both kinds of remap.
#[test]
fn growth_past_the_first_address_range_keeps_every_handle_reading() {
    if !common::dev_shm_has_room("growth_past_the_first_address_range_keeps_every_handle_reading", 192 << 20) {
        return;
    }
    let a = ListProxy::<Vec<u8>>::new().unwrap();
    let b = ListProxy::<Vec<u8>>::open(a.name()).unwrap();
    // Just under 1 MiB each (a blob and its block header fit a 1 MiB heap block): 80 of them pass 64 MiB.
    let blob = |i: u64| vec![i as u8 ^ 0x5A; (1 << 20) - 64];
    for i in 0..80u64 {
        a.append(blob(i)).unwrap();
        if i % 10 == 9 {
            assert_eq!(b.get(i as isize).unwrap(), blob(i), "the other handle, element {i}");
            assert_eq!(b.get(0).unwrap(), blob(0), "the other handle, element 0 after {i}");
        }
    }
    assert_eq!((a.len(), b.len()), (80, 80));
    for i in 0..80u64 {
        assert_eq!(a.get(i as isize).unwrap(), blob(i), "element {i}");
        assert_eq!(b.get(i as isize).unwrap(), blob(i), "the other handle, element {i}");
    }
}

// ---- hostile bytes and lock-free reads -------------------------------

/// Scribbles pseudo-random bytes over a container's segment (inside the
/// file's size) from another thread while a second handle keeps
/// operating: only errors or garbage values, never a crash or a hang.
/// (The fuzz target `hostile_container` does this with fuzzer input.)
#[test]
fn hostile_bytes_give_errors_or_garbage_never_a_crash() {
    use std::io::{Seek, SeekFrom, Write};
    fn scribble(name: &str, seed: u64) {
        let path = format!("/dev/shm/shmproc.{name}");
        let len = std::fs::metadata(&path).unwrap().len();
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for k in 0..4 {
            let h = mix(seed * 4 + k);
            let off = (h % len.saturating_sub(8)) & !7;
            let word = if h & 1 == 0 { mix(h) } else { mix(h) % 64 };
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&word.to_ne_bytes()).unwrap();
        }
    }
    // 40 rounds with SHMPROC_TEST_FULL set (12.6 s in a debug build).
    for round in 0..common::count(10, 40) {
        let l = ListProxy::<String>::new().unwrap();
        let d = DictProxy::<String, u64>::new().unwrap();
        // u64 keys take the probe's one-word key compare (no heap read): scribbled too.
        let du = DictProxy::<u64, u64>::new().unwrap();
        for i in 0..30 {
            l.append(format!("item{i}-{}", "x".repeat(i * 5))).unwrap();
            d.insert(format!("key{i}"), i as u64).unwrap();
            du.insert(i as u64, i as u64).unwrap();
        }
        let (lp, dp) =
            (ListProxy::<String>::open(l.name()).unwrap(), DictProxy::<String, u64>::open(d.name()).unwrap());
        let dup = DictProxy::<u64, u64>::open(du.name()).unwrap();
        std::thread::scope(|s| {
            let peer = s.spawn(|| {
                for k in 0..50 {
                    scribble(l.name(), round * 1000 + k);
                    scribble(d.name(), round * 1000 + k + 500);
                    scribble(du.name(), round * 1000 + k + 700);
                    std::thread::yield_now();
                }
            });
            let end = Instant::now() + BOUND;
            while !peer.is_finished() {
                assert!(Instant::now() < end, "operations on a scribbled segment hung");
                let _ = (lp.get(3), lp.to_vec(), lp.append("m".into()), lp.pop_at(1), lp.sort(), lp.len());
                let _ = (dp.get(&"key3".into()), dp.items(), dp.update_with(&"key4".into(), 0, |v| *v ^= 1));
                let _ = (dp.insert("n".into(), 1), dp.remove(&"key7".into()), dp.popitem(), dp.len());
                let _ = (dup.get(&3), dup.get(&99), dup.insert(round + 40, 1), dup.remove(&5), dup.items());
            }
        });
        let _ = (l.clear(), d.clear(), du.clear());
    }
}

/// Readers do not wait for a group: while a `with_lock` group is open
/// (one append done, one to come) a reader in another thread reads the
/// state before the group without waiting; after the group, the state
/// after it.
#[test]
fn reads_do_not_wait_for_a_lock_holder() {
    let l = ListProxy::<u64>::new().unwrap();
    l.extend([1, 2, 3]).unwrap();
    let reader = ListProxy::<u64>::open(l.name()).unwrap();
    let read = |r: &ListProxy<u64>| (r.get(-1), r.len(), r.to_vec());
    l.with_lock(|l| {
        l.append(4).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let r = reader.clone();
        std::thread::spawn(move || tx.send(read(&r)));
        // On expiry the panic rolls the group back and unlocks, so the reader thread ends too.
        let (last, len, all) = rx.recv_timeout(BOUND).expect("a read waited for the lock holder");
        assert_eq!(last.unwrap(), 3);
        assert_eq!(len, 3);
        assert_eq!(all.unwrap(), [1, 2, 3]);
        l.append(5).unwrap();
    })
    .unwrap();
    let (last, len, all) = read(&reader);
    assert_eq!((last.unwrap(), len, all.unwrap()), (5, 5, vec![1, 2, 3, 4, 5]));
}

/// A dict read while a writer's group is open in another thread (seq
/// odd: the lean first try of `get` gives way to the read beside the
/// writer) sees the state before the group, without waiting; after the
/// group, the state after it. For both the one-word key compare (u64)
/// and heap keys (String).
#[test]
fn dict_reads_beside_an_open_group_see_the_state_before_it() {
    let du = DictProxy::<u64, u64>::new().unwrap();
    let ds = DictProxy::<String, u64>::new().unwrap();
    for i in 0..100 {
        du.insert(i, i).unwrap();
        ds.insert(format!("k{i}"), i).unwrap();
    }
    let (ru, rs) =
        (DictProxy::<u64, u64>::open(du.name()).unwrap(), DictProxy::<String, u64>::open(ds.name()).unwrap());
    let read = move || (ru.get(&7), ru.get(&1000), rs.get(&"k7".to_string()), rs.get(&"new".to_string()));
    let read2 = read.clone();
    du.with_lock(|du| {
        ds.with_lock(|ds| {
            du.insert(7, 70).unwrap();
            du.insert(1000, 1).unwrap();
            ds.insert("k7".into(), 70).unwrap();
            ds.insert("new".into(), 1).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let r = read.clone();
            std::thread::spawn(move || {
                let _ = tx.send(r());
            });
            // On expiry the panic rolls the groups back and unlocks, so the reader thread ends too.
            let (a, b, c, d) = rx.recv_timeout(BOUND).expect("a dict read waited for the lock holder");
            assert_eq!((a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()), (Some(7), None, Some(7), None));
        })
        .unwrap();
    })
    .unwrap();
    let (a, b, c, d) = read2();
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()), (Some(70), Some(1), Some(70), Some(1)));
}

shmproc::entry! {
    fn append_to_nested(mgr: Manager) -> Result<(), String> {
        let d = mgr.dict::<String, ListProxy<u64>>("groups").map_err(|e| e.to_string())?;
        let evens = d.get(&"evens".into()).map_err(|e| e.to_string())?.ok_or("no evens")?;
        evens.extend([2, 4]).map_err(|e| e.to_string())
    }
}

/// Python's most-reported Manager pitfall (`d['k'].append(x)` changes a
/// copy) is fixed by design: a nested list read from a dict in another
/// process is the same list.
#[test]
fn a_nested_list_read_from_a_dict_in_a_child_writes_through() {
    let mgr = Manager::new().unwrap();
    let d = mgr.dict::<String, ListProxy<u64>>("groups").unwrap();
    d.insert("evens".into(), mgr.list_anon::<u64>().unwrap()).unwrap();
    let mut p = Process::new(append_to_nested, mgr.clone());
    p.start().unwrap();
    join_ok(&p);
    assert_eq!(d.get(&"evens".into()).unwrap().unwrap().to_vec().unwrap(), [2, 4]);
    assert!(matches!(mgr.dict::<String, ListProxy<u32>>("groups"), Err(OpenError::IncompatibleType { .. })));
}

const GROW_N: u64 = 300_000;

shmproc::entry! {
    fn grow_list(list: ListProxy<u64>) -> Result<(), String> {
        for i in 0..GROW_N {
            list.append(i).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Growth is seen by every process: a child appends 300 000 u64 (the
/// segment grows from 32 KiB to megabytes, no capacity given anywhere)
/// while the parent keeps reading the newest element and checks it.
#[test]
fn a_list_growing_in_a_child_is_read_by_the_parent_meanwhile() {
    let list = ListProxy::<u64>::new().unwrap();
    let mut p = Process::new(grow_list, list.clone());
    p.start().unwrap();
    let end = Instant::now() + BOUND;
    let mut reads = 0u64;
    loop {
        let n = list.len() as u64;
        if n > 0 {
            let i = (n - 1) as isize;
            assert_eq!(list.get(i).unwrap(), i as u64, "element {i} read wrong while the list grew");
            reads += 1;
        }
        if n == GROW_N {
            break;
        }
        if Instant::now() > end {
            let _ = p.kill();
            panic!("the list did not reach {GROW_N} elements within {BOUND:?} (at {n})");
        }
    }
    join_ok(&p);
    assert!(reads > 0);
    assert_eq!(list.to_vec().unwrap(), (0..GROW_N).collect::<Vec<_>>());
}

/// Found by the fuzz target `hostile_container`: a peer zeroes a dict's
/// entry count while an entry is live; removing it then must be an error
/// (or garbage), not an arithmetic overflow panic.
#[test]
fn a_dict_whose_count_was_zeroed_by_a_peer_reports_an_error() {
    use std::os::unix::fs::FileExt;
    let d = DictProxy::<String, u64>::new().unwrap();
    d.insert("a".into(), 1).unwrap();
    // The dict's COUNT root word: control block at 128, state words from
    // 160 (after lock, seq, map_len, log_used): heap top, 36 free-list
    // heads, then the roots (table, buckets, count, used).
    let count_off = 160 + 8 * (1 + 36 + 2);
    let f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmproc.{}", d.name())).unwrap();
    let mut before = [0u8; 8];
    std::fs::File::open(format!("/dev/shm/shmproc.{}", d.name()))
        .unwrap()
        .read_exact_at(&mut before, count_off)
        .unwrap();
    assert_eq!(u64::from_ne_bytes(before), 1, "the layout this test assumes changed");
    f.write_all_at(&0u64.to_ne_bytes(), count_off).unwrap();
    assert!(matches!(d.popitem(), Err(ContainerError::Corrupted { .. })));
    assert!(matches!(d.remove(&"a".into()), Err(ContainerError::Corrupted { .. })));
}

/// Offset of the heap-top state word (header 128 + lock, seq, map_len,
/// log_used), as laid out by store.rs.
const S_TOP_OFF: u64 = 160;

/// A dict resize probes its new table with an unbounded
/// `while bucket != EMPTY { j = (j + 1) & mask }` (dict.rs, `resize`). The
/// new table is in shared memory; a hostile peer that fills it with
/// non-zero bytes while the resize moves entries makes that loop spin
/// forever, holding the dict's lock: a hang, which the design forbids
/// ("only errors or garbage values, never a crash, hang").
#[test]
fn a_hostile_peer_cannot_hang_a_dict_resize() {
    use std::os::unix::fs::FileExt;
    let d = DictProxy::<u64, u64>::new().unwrap();
    // Up to just below the 16 384 -> 32 768 bucket resize (at 13 107 used: 4/5 of the buckets).
    for i in 0..13_100u64 {
        d.insert(i, i).unwrap();
    }
    let path = format!("/dev/shm/shmproc.{}", d.name());
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut w = [0u8; 8];
    f.read_exact_at(&mut w, S_TOP_OFF).unwrap();
    let top = u64::from_ne_bytes(w);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let hung = std::thread::scope(|s| {
        // The hostile peer: keeps writing 0xFF over every byte past the heap
        // top as it was before the resize (where the new table will be).
        s.spawn(|| {
            let ones = vec![0xFFu8; 1 << 16];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let len = f.metadata().unwrap().len();
                let mut off = top;
                while off < len {
                    let n = ones.len().min((len - off) as usize);
                    let _ = f.write_at(&ones[..n], off);
                    off += n as u64;
                }
            }
        });
        let worker = std::thread::Builder::new()
            .spawn({
                let d = d.clone();
                move || {
                    for i in 13_100..13_220u64 {
                        let _ = d.insert(i, i);
                    }
                }
            })
            .unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while !worker.is_finished() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // A hung worker is left spinning (detached); the test reports it.
        !worker.is_finished()
    });
    if hung {
        // The spinning worker keeps a handle, so no Drop would unlink the name.
        let _ = shmproc::unlink(d.name());
    }
    assert!(
        !hung,
        "dict insert (resize) still running after 20 s with a hostile peer: an unbounded probe loop over shm"
    );
}

/// `sort_by_key` runs the key function while its transaction is open. A
/// write through another handle from the key function was accepted (the
/// lock is reentrant for the thread), committed on its own (seq moved
/// backwards), then was lost to the sort's rebuild from the stale slots.
/// Now it is refused with `ModifiedDuringOperation` (Python: "list
/// modified during sort") and the sort completes.
#[test]
fn a_write_from_a_sort_key_is_refused_and_the_sort_completes() {
    let l = ListProxy::<u64>::new().unwrap();
    let other = ListProxy::<u64>::open(l.name()).unwrap();
    l.extend([3, 1, 2]).unwrap();
    let mut inner = None;
    let r = l.sort_by_key(|x| {
        if inner.is_none() {
            inner = Some(other.append(9));
        }
        *x
    });
    let got = l.to_vec().unwrap();
    assert_eq!(inner, Some(Err(ContainerError::ModifiedDuringOperation)), "the nested append must be refused");
    assert_eq!(r, Ok(()));
    assert_eq!(got, [1, 2, 3]);
}

/// Offset of the seqlock word (header 128 + lock 8), as laid out by store.rs.
const SEQ_OFF: u64 = 136;

/// The seqlock word must only move forward (a reader accepts a read when
/// it loads the same even value before and after). An operation run from
/// inside `update_with`'s closure (same thread: the lock is reentrant)
/// starts from the outer operation's odd seq, so it writes with seq EVEN
/// (s+2: its writes are visible to optimistic readers as committed) and
/// commits s+3; the outer commit then stores s+2 again. A reader that
/// loaded s+2 during the inner write and s+2 after the outer commit
/// accepts a torn read (ABA). Now the nested write is refused
/// (`ModifiedDuringOperation`) and seq only moves forward.
#[test]
fn a_write_inside_update_with_is_refused_and_seq_never_goes_backwards() {
    use std::os::unix::fs::FileExt;
    let d = DictProxy::<u64, u64>::new().unwrap();
    let other = DictProxy::<u64, u64>::open(d.name()).unwrap();
    let f = std::fs::File::open(format!("/dev/shm/shmproc.{}", d.name())).unwrap();
    let seq = || {
        let mut w = [0u8; 8];
        f.read_exact_at(&mut w, SEQ_OFF).unwrap();
        u64::from_ne_bytes(w)
    };
    let s0 = seq();
    let mut inside = 0;
    let mut nested = None;
    d.update_with(&1, 0, |v| {
        nested = Some(other.insert(2, 2));
        inside = seq();
        *v += 1;
    })
    .unwrap();
    let after = seq();
    assert!(
        after > inside,
        "seq went from {s0} to {inside} (inside update_with, after a nested insert) back to {after}"
    );
    assert_eq!(nested, Some(Err(ContainerError::ModifiedDuringOperation)), "the nested insert must be refused");
    assert_eq!(d.items().unwrap(), [(1, 1)]);
}

/// `ListProxy::with_lock` documents "no other process reads a half-done
/// group". A lock-free reader (another handle, another thread) that reads
/// while the group is between its two appends must see 3 (before) or 5
/// (after), never 4.
#[test]
fn a_with_lock_group_is_never_seen_half_done_by_a_reader() {
    let l = ListProxy::<u64>::new().unwrap();
    l.extend([1, 2, 3]).unwrap();
    let reader = ListProxy::<u64>::open(l.name()).unwrap();
    let seen = std::thread::scope(|s| {
        let r = l
            .with_lock(|l| {
                l.append(4).unwrap();
                let r = s.spawn(|| reader.len());
                std::thread::sleep(Duration::from_millis(200));
                l.append(5).unwrap();
                r
            })
            .unwrap();
        r.join().unwrap()
    });
    assert!(seen == 3 || seen == 5, "a reader saw the with_lock group half done: len {seen}");
}

/// `DictProxy::update` documents "no process sees a part of it". A
/// reader (another handle, another thread) that reads while the update is
/// halfway (its items iterator is lazy, as any iterator that computes its
/// items may be; update pulls it between inserts, while seq is even) must
/// see 0 or 2 000 entries, never a part.
#[test]
fn a_dict_update_is_never_seen_half_done_by_a_reader() {
    let d = DictProxy::<u64, u64>::new().unwrap();
    let reader = DictProxy::<u64, u64>::open(d.name()).unwrap();
    let seen = std::thread::scope(|s| {
        let mut r = None;
        d.update((0..2000u64).map(|i| {
            if i == 1000 {
                r = Some(s.spawn(|| reader.len()));
                std::thread::sleep(Duration::from_millis(200));
            }
            (i, i)
        }))
        .unwrap();
        r.unwrap().join().unwrap()
    });
    assert!(seen == 0 || seen == 2000, "a reader saw a part of update(): len {seen}");
}

shmproc::entry! {
    fn die_inside_with_lock(list: ListProxy<u64>) -> Result<(), String> {
        list.with_lock(|l| {
            l.append(1).map_err(|e| e.to_string())?;
            // SIGKILL at the first write step of the group's second operation.
            shmproc::__crash_after_steps(1);
            l.append(2).map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
    }
}

/// The brief/issue: the guard / `with_lock` form "runs several operations
/// as one"; a SIGKILL inside it must leave the container as before or as
/// after the group. Here the child dies between the group's two appends.
#[test]
fn a_with_lock_group_killed_in_the_middle_is_all_or_nothing() {
    let l = ListProxy::<u64>::new().unwrap();
    let mut p = Process::new(die_inside_with_lock, l.clone());
    p.start().unwrap();
    match common::join(&p) {
        Err(ProcessError::Signaled { signal: 9, .. }) => {}
        other => panic!("child should have died by its injected SIGKILL: {other:?}"),
    }
    let got = l.to_vec().unwrap();
    assert!(got.is_empty() || got == [1, 2], "a with_lock group torn by a crash: {got:?}");
}

shmproc::entry! {
    fn die_inside_update(dict: DictProxy<u64, u64>) -> Result<(), String> {
        shmproc::__crash_after_steps(400);
        dict.update((0..1000u64).map(|i| (i, i))).map_err(|e| e.to_string())
    }
}

/// `update(iter)` is one operation of the issue's DictProxy surface; a
/// SIGKILL inside it must leave the dict empty (before) or full (after).
#[test]
fn a_dict_update_killed_in_the_middle_is_all_or_nothing() {
    let d = DictProxy::<u64, u64>::new().unwrap();
    let mut p = Process::new(die_inside_update, d.clone());
    p.start().unwrap();
    match common::join(&p) {
        Err(ProcessError::Signaled { signal: 9, .. }) => {}
        other => panic!("child should have died by its injected SIGKILL: {other:?}"),
    }
    let n = d.len();
    assert!(n == 0 || n == 1000, "update() torn by a crash: {n} of 1000 pairs present");
}

/// A Pod value (here 32 KiB) larger than the 16 KiB undo log cannot be stored in a dict
/// at all (the bucket write is logged even in a table built by this very
/// operation), nor replaced in a list.
#[test]
fn a_pod_element_larger_than_the_undo_log_can_be_inserted_and_set() {
    let d = DictProxy::<u64, [u64; 4096]>::new().unwrap();
    let r = d.insert(1, [7u64; 4096]);
    assert!(r.is_ok(), "dict insert of a 32 KiB Pod value: {r:?}");
    let l = ListProxy::<[u64; 4096]>::new().unwrap();
    l.append([1u64; 4096]).unwrap();
    let r = l.set(0, [2u64; 4096]);
    assert!(r.is_ok(), "list set of a 32 KiB Pod element: {r:?}");
}

/// The issue: variable-length data "with its space reused after
/// removals". The heap is segregated power-of-two free lists that never
/// split or merge blocks, so the 8 MiB block of one removed 4 MiB blob is
/// never reused for smaller elements: 4 MiB of 1 KiB blobs appended after
/// the removal grow the segment by another 8 MiB instead.
#[test]
fn the_space_of_a_removed_large_blob_is_reused_for_small_ones() {
    let l = ListProxy::<Vec<u8>>::new().unwrap();
    let seg = format!("/dev/shm/shmproc.{}", l.name());
    l.append(vec![1u8; 4 << 20]).unwrap();
    l.pop().unwrap();
    let before = std::fs::metadata(&seg).unwrap().len();
    for _ in 0..4096 {
        l.append(vec![2u8; 1000]).unwrap();
    }
    let after = std::fs::metadata(&seg).unwrap().len();
    assert!(
        after <= before + (1 << 20),
        "segment grew from {before} to {after} bytes although a free 8 MiB block could hold the 4 MiB of new data"
    );
}

/// Threads sharing one handle read while another thread of it grows the
/// list (remap under threads).
#[test]
fn threads_sharing_a_handle_read_while_it_grows() {
    let l = ListProxy::<u64>::new().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..200_000u64 {
                l.append(i).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = l.len();
                    if n > 0 {
                        assert_eq!(l.get(n as isize - 1).unwrap(), n as u64 - 1);
                    }
                }
            });
        }
    });
    assert_eq!(l.len(), 200_000);
}

/// Python's dict order: `keys()` / `items()` in insertion order (a new
/// value for a present key keeps its place; a key removed and inserted
/// again goes last), kept across resizes, and `popitem` takes the last
/// inserted entry (LIFO). Before, the order was the hash table's.
#[test]
fn a_dict_keeps_insertion_order_and_popitem_takes_the_last() {
    let d = DictProxy::<String, u64>::new().unwrap();
    for (i, k) in ["b", "a", "d", "c"].into_iter().enumerate() {
        d.insert(k.into(), i as u64).unwrap();
    }
    d.insert("a".into(), 9).unwrap();
    d.remove(&"d".into()).unwrap();
    d.insert("d".into(), 5).unwrap();
    assert_eq!(d.keys().unwrap(), ["b", "a", "c", "d"]);
    assert_eq!(d.values().unwrap(), [0, 9, 3, 5]);
    for i in 0..100u64 {
        d.insert(format!("x{i}"), i).unwrap();
    }
    let items = d.items().unwrap();
    assert_eq!(items.len(), 104);
    assert_eq!(items[..4], [("b".into(), 0), ("a".into(), 9), ("c".into(), 3), ("d".into(), 5)]);
    assert!(items[4..].iter().enumerate().all(|(i, (k, v))| *k == format!("x{i}") && *v == i as u64));
    assert_eq!(d.popitem().unwrap(), ("x99".into(), 99));
    assert_eq!(d.popitem().unwrap(), ("x98".into(), 98));
    assert_eq!(d.len(), 102);
}

/// A group whose undo log fills is refused with `TooLarge` as a whole:
/// nothing of it stays, and the container keeps working. (A `with_lock`
/// group overwriting 3 000 existing entries filled it until review17;
/// such a group now moves the array or table to fresh space once its log
/// is half full, and commits. What still fills it: blocks that were free
/// before the group, split for smaller elements there and freed again in
/// it, whose free-list links are logged at its commit.)
#[test]
fn a_group_whose_undo_log_fills_is_refused_whole() {
    let l = ListProxy::<String>::new().unwrap();
    // 2000 blocks of one size class on its free list ...
    l.extend((0..2000u64).map(|i| format!("{i:020}"))).unwrap();
    l.clear().unwrap();
    l.extend((0..2000u64).map(|i| format!("{i:020}"))).unwrap();
    l.extend(["keep".to_string()]).unwrap();
    while l.len() > 1 {
        l.pop_at(0).unwrap();
    }
    // ... split for 4000 shorter strings and freed again in one group.
    let r = l.with_lock(|l| {
        l.extend((0..4000u64).map(|i| format!("{}", i % 10)))?;
        l.clear()
    });
    assert!(matches!(r, Err(ContainerError::TooLarge { .. })), "{r:?}");
    assert_eq!(l.to_vec().unwrap(), ["keep"]);
    l.append("more".into()).unwrap();
    assert_eq!(l.to_vec().unwrap(), ["keep", "more"]);

    let d = DictProxy::<String, u64>::new().unwrap();
    d.update((0..2000u64).map(|i| (format!("{i:020}"), i))).unwrap();
    for i in 0..2000u64 {
        d.remove(&format!("{i:020}")).unwrap();
    }
    d.insert("keep".into(), 1).unwrap();
    let r = d.with_lock(|d| {
        for i in 0..4000u64 {
            d.insert(format!("{i}"), i)?;
        }
        d.clear()
    });
    assert!(matches!(r, Err(ContainerError::TooLarge { .. })), "{r:?}");
    assert_eq!(d.items().unwrap(), [("keep".to_string(), 1)]);
    d.insert("x".into(), 7).unwrap();
    assert_eq!(d.get(&"x".into()).unwrap(), Some(7));
}

/// Keys compared word by word (`View::bytes_eq`'s short path): String keys
/// of every length 0..=70 that differ from one another only in their last
/// byte, and 3-byte inline keys, are each found with their own value, and
/// a key one byte off is not found.
#[test]
fn keys_that_differ_only_in_their_last_byte_are_told_apart() {
    let d = DictProxy::<String, u64>::new().unwrap();
    for len in 0..=70u64 {
        for last in [b'a', b'b'] {
            let k = format!("{}{}", "p".repeat(len as usize), last as char);
            d.insert(k, len * 2 + u64::from(last - b'a')).unwrap();
        }
    }
    for len in 0..=70u64 {
        for last in [b'a', b'b'] {
            let k = format!("{}{}", "p".repeat(len as usize), last as char);
            assert_eq!(d.get(&k).unwrap(), Some(len * 2 + u64::from(last - b'a')), "key of {} bytes", len + 1);
        }
        assert_eq!(d.get(&format!("{}c", "p".repeat(len as usize))).unwrap(), None);
    }
    assert_eq!(d.get(&String::new()).unwrap(), None);
    let i = DictProxy::<[u8; 3], u8>::new().unwrap();
    i.insert([1, 2, 3], 7).unwrap();
    i.insert([1, 2, 4], 8).unwrap();
    assert_eq!(
        (i.get(&[1, 2, 3]).unwrap(), i.get(&[1, 2, 4]).unwrap(), i.get(&[1, 2, 5]).unwrap()),
        (Some(7), Some(8), None)
    );
}
