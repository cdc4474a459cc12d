//! Review 12: Manager, ListProxy, DictProxy and Pool: the less-used
//! operations, in-between states, and what a Python user expects.

mod common;

use shmproc::{DictProxy, Process, ProcessError};

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
