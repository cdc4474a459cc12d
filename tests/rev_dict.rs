//! Review tests of the DictProxy changes on branch dictspeed (bucket word
//! `[tag | order]`, one-append insert logging, resize by whole words,
//! renumbering at the 32-bit limit, the heap's free-list mask), across
//! real processes where the defect is cross-process.

mod common;

use shmproc::{DictProxy, Process};

/// Linux x86_64 / aarch64 values (the test binary links libc anyway).
const RLIMIT_FSIZE: i32 = 1;
const SIGXFSZ: i32 = 25;
const SIG_IGN: usize = 1;

unsafe extern "C" {
    fn setrlimit(resource: i32, rlim: *const [u64; 2]) -> i32;
    fn signal(sig: i32, handler: usize) -> usize;
}

/// Makes every later growth of any file of this process past `bytes` fail
/// with EFBIG (as a full /dev/shm fails with ENOSPC): the segment cannot
/// grow, so an allocation past the current mapping is an error.
fn limit_file_size(bytes: u64) -> Result<(), String> {
    // SAFETY: plain libc calls with valid arguments; SIG_IGN for SIGXFSZ so the
    // failing fallocate returns EFBIG instead of killing this child.
    unsafe {
        signal(SIGXFSZ, SIG_IGN);
        if setrlimit(RLIMIT_FSIZE, &[bytes, bytes]) != 0 {
            return Err("setrlimit failed".into());
        }
    }
    Ok(())
}

shmproc::entry! {
    /// Inside one `with_lock` group: remove the only entry, shrink (the
    /// table is freed and TABLE/NB/COUNT/USED are now logged by the
    /// group), then an insert that builds a new table (moving the heap
    /// top, logged first by this operation) and fails on its value's
    /// allocation (the segment cannot grow); the user handles the error
    /// and inserts another key; the group commits.
    fn group_with_a_failed_insert(d: DictProxy<u64, Vec<u8>>) -> Result<(), String> {
        limit_file_size(32 * 1024)?;
        d.with_lock(|d| {
            d.remove(&1).map_err(|e| e.to_string())?;
            d.shrink_to_fit().map_err(|e| e.to_string())?;
            match d.insert(2, vec![0xEE; 64 * 1024]) {
                Err(_) => {}
                Ok(_) => return Err("the 64 KiB insert should fail: the segment cannot grow".to_string()),
            }
            d.insert(3, vec![7; 8]).map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        })
        .map_err(|e| e.to_string())?
    }
}

/// An operation of a group that fails on its own (here: no room to grow,
/// the ENOSPC of a full /dev/shm) must leave the container as before that
/// operation, and the group's later operations and commit must leave a
/// sound dict. Inside a group, root words an earlier operation of the
/// group logged are not logged again, so the failed insert's new table
/// stays in the roots while the heap top it moved is restored: the live
/// table lies past the heap top, and the next allocation from the top is
/// handed the table's own block.
#[test]
fn a_failed_insert_inside_a_group_leaves_no_live_table_past_the_heap_top() {
    let d = DictProxy::<u64, Vec<u8>>::new().unwrap();
    d.insert(1, vec![1; 8]).unwrap();
    let mut p = Process::new(group_with_a_failed_insert, d.clone());
    p.start().unwrap();
    if let Err(e) = common::join(&p) {
        panic!("child failed: {e}");
    }
    assert_eq!(d.get(&3).unwrap(), Some(vec![7; 8]), "the entry inserted after the failed one");
    assert_eq!(d.len(), 1);
    // An allocation from the heap top (a 100-byte value blob) must not land on the live table.
    d.insert(4, vec![9; 100]).unwrap();
    assert_eq!(d.get(&3).unwrap(), Some(vec![7; 8]), "key 3 after an allocation from the heap top");
    assert_eq!(d.get(&4).unwrap(), Some(vec![9; 100]));
    assert_eq!(d.len(), 2);
    let mut items = d.items().unwrap();
    items.sort();
    assert_eq!(items, [(3, vec![7; 8]), (4, vec![9; 100])]);
}

shmproc::entry! {
    /// Inside a `with_lock` group, an `update` whose second pair cannot be
    /// stored (the segment cannot grow) returns an error; `update` says
    /// "an error (nothing changes)". Reports what the group sees after it.
    fn update_inside_a_group_fails(d: DictProxy<u64, Vec<u8>>) -> Result<(), String> {
        limit_file_size(32 * 1024)?;
        d.with_lock(|d| {
            let r = d.update([(10, vec![1; 8]), (11, vec![0xEE; 64 * 1024])]);
            if r.is_ok() {
                return Err("the update with a 64 KiB value should fail: the segment cannot grow".to_string());
            }
            match d.get(&10) {
                Ok(None) => Ok(()),
                other => Err(format!("update failed with {r:?}, yet its first pair is in the dict: get(&10) = {other:?}")),
            }
        })
        .map_err(|e| e.to_string())?
    }
}

/// `update(iter)` is all or nothing on an error, also when it runs inside
/// a `with_lock` group (it joins the group, and a joined group's error is
/// not rolled back): its first pair must not stay in the dict.
#[test]
fn a_failed_update_inside_a_group_leaves_nothing_of_it() {
    let d = DictProxy::<u64, Vec<u8>>::new().unwrap();
    d.insert(1, vec![1; 8]).unwrap();
    let mut p = Process::new(update_inside_a_group_fails, d.clone());
    p.start().unwrap();
    if let Err(e) = common::join(&p) {
        panic!("child failed: {e}");
    }
    assert_eq!(d.get(&10).unwrap(), None, "the first pair of a failed update, after the group committed");
}

shmproc::entry! {
    /// Inside one `with_lock` group: an insert whose value takes the only
    /// free block of its class (logging that free-list head), then an
    /// insert that grows the table, whose new table is split off a larger
    /// free block (a piece goes on the list logged by the first insert),
    /// and that fails on its value's allocation (the segment cannot grow);
    /// the error is handled and the group commits.
    fn group_with_a_failed_growing_insert(d: DictProxy<u64, Vec<u8>>) -> Result<(), String> {
        limit_file_size(32 * 1024)?;
        d.with_lock(|d| {
            d.insert(6, vec![6; 300]).map_err(|e| e.to_string())?;
            match d.insert(7, vec![0xEE; 64 * 1024]) {
                Err(_) => Ok(()),
                Ok(_) => Err("the 64 KiB insert should fail: the segment cannot grow".to_string()),
            }
        })
        .map_err(|e| e.to_string())?
    }
}

/// The failed insert's own undo restores the larger block to its free
/// list (that head was first logged by it) but not the list its split
/// piece went on (logged by the group's earlier insert): the piece stays
/// free inside a block that is free too, and two later allocations are
/// handed overlapping memory. Here the parent's next table lands on the
/// piece and a 600-byte value on the whole block: the table is
/// overwritten.
#[test]
fn a_failed_insert_inside_a_group_leaves_no_block_on_two_free_lists() {
    let d = DictProxy::<u64, Vec<u8>>::new().unwrap();
    // Keys 1..=5 (5 of 8 buckets); a free block of 512 bytes (X) and one of 1024 (Y), freed together at the
    // commit of one group (so no allocation in between splits them).
    d.insert(1, vec![1; 300]).unwrap();
    d.insert(2, vec![2; 600]).unwrap();
    for k in 3..=5 {
        d.insert(k, vec![]).unwrap();
    }
    d.update([(1, vec![]), (2, vec![])]).unwrap();
    let mut p = Process::new(group_with_a_failed_growing_insert, d.clone());
    p.start().unwrap();
    if let Err(e) = common::join(&p) {
        panic!("child failed: {e}");
    }
    let mut model: Vec<(u64, Vec<u8>)> =
        vec![(1, vec![]), (2, vec![]), (3, vec![]), (4, vec![]), (5, vec![]), (6, vec![6; 300])];
    assert_eq!(d.items().unwrap(), model, "after the group");
    // Grows the table (its block comes off the 512-byte list); then a 1024-byte block freed puts the other
    // list back in use, and two 600-byte values take its two blocks.
    d.insert(20, vec![20; 300]).unwrap();
    d.insert(21, vec![21; 600]).unwrap();
    d.remove(&21).unwrap();
    d.insert(22, vec![22; 600]).unwrap();
    d.insert(23, vec![23; 600]).unwrap();
    model.extend([(20, vec![20; 300]), (22, vec![22; 600]), (23, vec![23; 600])]);
    assert_eq!(d.items().unwrap(), model, "after allocations that reuse the free lists");
    for (k, v) in &model {
        assert_eq!(d.get(k).unwrap().as_ref(), Some(v), "key {k}");
    }
}
