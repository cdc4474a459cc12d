//! Hostile review of the manager branch: each test here states a property
//! the issue or the code's own docs promise and that the code breaks.

mod common;

use std::time::Duration;

use shmproc::{DictProxy, ListProxy, Process, ProcessError};

// ---- with_lock / update: "several operations as one" ------------------

/// `ListProxy::with_lock` documents "no other process reads a half-done
/// group". A lock-free reader (another handle, another thread) that reads
/// while the group is between its two appends must see 3 (before) or 5
/// (after), never 4.
#[test]
fn with_lock_group_is_not_seen_half_done_by_another_handle() {
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
fn dict_update_is_not_seen_half_done_by_a_reader() {
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
fn with_lock_group_killed_in_the_middle_is_all_or_nothing() {
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

/// `update(iter)` is one operation of the DictProxy surface; a
/// SIGKILL inside it must leave the dict empty (before) or full (after).
#[test]
fn dict_update_killed_in_the_middle_is_all_or_nothing() {
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

// ---- element types: "every bytemuck::Pod type" -------------------------

/// A Pod value (here 32 KiB) larger than the 16 KiB undo log cannot be stored in a dict
/// at all (the bucket write is logged even in a table built by this very
/// operation), nor replaced in a list.
#[test]
fn a_large_pod_value_can_be_inserted_and_set() {
    let d = DictProxy::<u64, [u64; 4096]>::new().unwrap();
    let r = d.insert(1, [7u64; 4096]);
    assert!(r.is_ok(), "dict insert of a 32 KiB Pod value: {r:?}");
    let l = ListProxy::<[u64; 4096]>::new().unwrap();
    l.append([1u64; 4096]).unwrap();
    let r = l.set(0, [2u64; 4096]);
    assert!(r.is_ok(), "list set of a 32 KiB Pod element: {r:?}");
}

// ---- user code run while an operation is open -------------------------

/// `sort_by_key` runs the key function while its transaction is open (lock
/// held, seq odd, the slots already read). An append through another
/// handle from the key function is accepted (the lock is reentrant for the
/// thread), commits on its own (making seq even, then odd again, then the
/// sort's commit moves seq back to a value it already had), and is then
/// silently discarded by the sort's rebuild from the stale slots: a
/// successful append that is lost. Python raises "list modified during
/// sort"; here it should be an error or keep the element.
#[test]
fn an_append_from_a_sort_key_is_not_lost() {
    let l = ListProxy::<u64>::new().unwrap();
    let other = ListProxy::<u64>::open(l.name()).unwrap();
    l.extend([3, 1, 2]).unwrap();
    let mut first = true;
    let r = l.sort_by_key(|x| {
        if first {
            first = false;
            other.append(9).unwrap();
        }
        *x
    });
    let got = l.to_vec().unwrap();
    assert!(
        r.is_err() || got.contains(&9),
        "append(9) returned Ok inside sort_by_key, then vanished: sort -> {r:?}, list {got:?}"
    );
}

// ---- hostile shared memory ---------------------------------------------

// ---- space reuse ---------------------------------------------------------

/// The issue: variable-length data "with its space reused after
/// removals". The heap is segregated power-of-two free lists that never
/// split or merge blocks, so the 8 MiB block of one removed 4 MiB blob is
/// never reused for smaller elements: 4 MiB of 1 KiB blobs appended after
/// the removal grow the segment by another 8 MiB instead.
#[test]
fn space_of_a_removed_large_blob_is_reused_for_small_ones() {
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

/// Offset of the seqlock word (header 128 + lock 8), as laid out by store.rs.
const SEQ_OFF: u64 = 136;

/// The seqlock word must only move forward (a reader accepts a read when
/// it loads the same even value before and after). An operation run from
/// inside `update_with`'s closure (same thread: the lock is reentrant)
/// starts from the outer operation's odd seq, so it writes with seq EVEN
/// (s+2: its writes are visible to optimistic readers as committed) and
/// commits s+3; the outer commit then stores s+2 again. A reader that
/// loaded s+2 during the inner write and s+2 after the outer commit
/// accepts a torn read (ABA).
#[test]
fn seq_never_goes_backwards_with_an_operation_inside_update_with() {
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
    d.update_with(&1, 0, |v| {
        other.insert(2, 2).unwrap();
        inside = seq();
        *v += 1;
    })
    .unwrap();
    let after = seq();
    assert!(
        after > inside,
        "seq went from {s0} to {inside} (inside update_with, after a nested insert) back to {after}"
    );
}

/// (Passes: a probe of remap under threads sharing one handle.)
#[test]
fn probe_same_handle_threads_read_while_it_grows() {
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
