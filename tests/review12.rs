//! Review 12: Manager, ListProxy, DictProxy and Pool: the less-used
//! operations, in-between states, and what a Python user expects.

mod common;

use shmproc::{DictProxy, ListProxy, Process, ProcessError};

/// Python's `d.update(other)` adds the pairs of `other`, whatever their
/// number. `update`'s documentation bounds only the old bytes of entries
/// that existed before (and says new entries cost nothing): here 300 new
/// keys into a dict of 1000 (whose table has room, so the update does not
/// grow it), and 1000 new values for existing keys of inline types.
#[test]
fn update_with_many_new_keys_into_a_dict_with_room_succeeds() {
    let d = DictProxy::<u64, u64>::new().unwrap();
    d.update((0..1000u64).map(|i| (i, i))).unwrap();
    let r = d.update((1000..1300u64).map(|i| (i, 2 * i)));
    assert_eq!(r, Ok(()), "update of 300 new keys into a dict of 1000");
    assert_eq!(d.len(), 1300);
    assert_eq!(d.get(&1299).unwrap(), Some(2598));
    let r = d.update((0..1300u64).map(|i| (i, 3 * i)));
    assert_eq!(r, Ok(()), "update of 1300 present keys of u64 values");
    assert!((0..1300u64).all(|i| d.get(&i).unwrap() == Some(3 * i)));
    let keys = d.keys().unwrap();
    assert_eq!(keys, (0..1300u64).collect::<Vec<_>>(), "insertion order kept");
    // String keys and values: 300 new ones into a dict of 1000.
    let s = DictProxy::<String, String>::new().unwrap();
    s.update((0..1000u64).map(|i| (format!("k{i}"), format!("v{i}")))).unwrap();
    let r = s.update((1000..1300u64).map(|i| (format!("k{i}"), format!("v{i}"))));
    assert_eq!(r, Ok(()), "update of 300 new String keys into a dict of 1000");
    assert_eq!(s.len(), 1300);
    assert_eq!(s.get(&"k1200".to_string()).unwrap().as_deref(), Some("v1200"));
}

shmproc::entry! {
    /// Updates a dict of 1000 entries with 300 new keys and 1000 new
    /// values, killing itself with SIGKILL at write step `steps`.
    fn r12_update_and_die(args: (DictProxy<u64, u64>, u64)) -> Result<(), String> {
        let (d, steps) = args;
        shmproc::__crash_after_steps(steps);
        d.update((0..1300u64).map(|i| (i, 2 * i))).map_err(|e| e.to_string())
    }
}

/// An update large enough to move the table part way (above) killed at
/// write steps before the move (about step 1300) and after it (the
/// update has some 6000 steps): the dict is exactly as before or exactly
/// as after, and keeps working.
#[test]
fn a_large_update_killed_anywhere_is_all_or_nothing() {
    for steps in [40, 300, 700, 1200, 2000, 3000, 4000, 5000] {
        let d = DictProxy::<u64, u64>::new().unwrap();
        d.update((0..1000u64).map(|i| (i, i))).unwrap();
        let before = d.items().unwrap();
        let mut p = Process::new(r12_update_and_die, (d.clone(), steps));
        p.start().unwrap();
        match common::join(&p) {
            Err(ProcessError::Signaled { signal: 9, .. }) => {}
            other => panic!("step {steps}: the child should have died by its injected SIGKILL: {other:?}"),
        }
        let got = d.items().unwrap();
        let after: Vec<(u64, u64)> = (0..1300u64).map(|i| (i, 2 * i)).collect();
        assert!(got == before || got == after, "step {steps}: torn update: {} entries", got.len());
        assert_eq!(d.len(), got.len(), "step {steps}: len does not match the entries");
        d.insert(5000, 1).unwrap();
        assert_eq!(d.get(&5000).unwrap(), Some(1));
    }
}

/// The size of a container's segment file.
fn file_size(name: &str) -> u64 {
    std::fs::metadata(format!("/dev/shm/shmproc.{name}")).map(|m| m.len()).unwrap_or(0)
}

/// `clear()` "frees all their space at once"; inside a `with_lock` group
/// (Python's `with lock: l[:] = new`) it must free it too, or a program
/// that replaces a container's contents under its lock grows the segment
/// by the whole contents every time, until /dev/shm is full. Here 300
/// rounds of clear-and-refill under the lock, for a list of 1000 `u64`,
/// a list of 1000 `String`s and a dict with one 10 KB value: the file
/// stays within a few times what one round needs.
#[test]
fn clear_inside_with_lock_frees_the_old_contents() {
    let l = ListProxy::<u64>::new().unwrap();
    let s = ListProxy::<String>::new().unwrap();
    let d = DictProxy::<String, String>::new().unwrap();
    for round in 0..300u64 {
        l.with_lock(|l| {
            l.clear()?;
            l.extend(round..round + 1000)
        })
        .unwrap()
        .unwrap();
        s.with_lock(|s| {
            s.clear()?;
            s.extend((0..1000u64).map(|i| format!("{round}-{i}")))
        })
        .unwrap()
        .unwrap();
        d.with_lock(|d| {
            d.clear()?;
            d.insert("k".into(), round.to_string().repeat(10_000 / (1 + round.to_string().len())))
        })
        .unwrap()
        .unwrap();
    }
    assert_eq!(l.to_vec().unwrap(), (299..1299).collect::<Vec<u64>>());
    assert_eq!(s.len(), 1000);
    assert_eq!(s.get(999).unwrap(), "299-999");
    assert_eq!(d.len(), 1);
    for (c, name, max) in
        [("list of u64", l.name(), 256 << 10), ("list of String", s.name(), 1 << 20), ("dict", d.name(), 256 << 10)]
    {
        let size = file_size(name);
        assert!(size <= max, "{c}: the segment grew to {size} bytes after 300 clear-and-refill rounds under the lock");
    }
}

shmproc::entry! {
    /// Under the list's lock: pops 50 (their blobs freed at the group's
    /// commit), clears, appends and pops 20 (blocks taken off the free
    /// lists and freed again), refills with 300 new strings; killed at
    /// write step `steps`.
    fn r12_clear_in_group_and_die(args: (ListProxy<String>, u64)) -> Result<(), String> {
        let (l, steps) = args;
        shmproc::__crash_after_steps(steps);
        l.with_lock(|l| {
            for _ in 0..50 {
                l.pop()?;
            }
            l.clear()?;
            // Blocks taken off the free lists in the group, then freed in it.
            l.extend((0..20u64).map(|i| format!("tmp-{i}")))?;
            for _ in 0..20 {
                l.pop()?;
            }
            l.extend((0..300u64).map(|i| format!("new-{i}")))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

/// A `with_lock` group that frees many blocks (pops, a clear) killed at
/// write steps all through it, the commit's frees (their links written
/// unlogged, review12) included: the list is
/// exactly as before or after, and its heap is sound: 2000 more strings
/// allocated afterwards (reusing what the free lists hold) leave every
/// element intact.
#[test]
fn a_group_freeing_many_blocks_killed_anywhere_is_all_or_nothing() {
    let old: Vec<String> = (0..200u64).map(|i| format!("old-{i}-{}", "x".repeat(i as usize % 70))).collect();
    let new: Vec<String> = (0..300u64).map(|i| format!("new-{i}")).collect();
    let mut killed = 0;
    // The group has some 3 830 steps (3 960 before a split's header went unlogged, review17), the frees of its
    // commit the last several hundred of them.
    for steps in (1..3070).step_by(97).chain((3070..3830).step_by(19)) {
        let l = ListProxy::<String>::new().unwrap();
        l.extend(old.iter().cloned()).unwrap();
        // Free blocks of several classes on the lists before the group.
        for i in (0..200).step_by(7).rev() {
            l.pop_at(i).unwrap();
        }
        let before = l.to_vec().unwrap();
        let mut p = Process::new(r12_clear_in_group_and_die, (l.clone(), steps));
        p.start().unwrap();
        match common::join(&p) {
            Ok(()) => {}
            Err(ProcessError::Signaled { signal: 9, .. }) => killed += 1,
            other => panic!("step {steps}: the child ended otherwise: {other:?}"),
        }
        let got = l.to_vec().unwrap();
        assert!(got == before || got == new, "step {steps}: torn group: {} elements", got.len());
        let more: Vec<String> = (0..2000u64).map(|i| format!("more-{i}-{}", "y".repeat(i as usize % 90))).collect();
        l.extend(more.iter().cloned()).unwrap();
        let mut want = got;
        want.extend(more);
        assert!(
            l.to_vec().unwrap() == want,
            "step {steps}: elements changed by later allocations (a free list gone wrong)"
        );
    }
    assert!(killed >= 70, "only {killed} of 72 trials were killed inside the group");
}
