//! Guards of the container store's layout and of its cheaper logging
//! (benches/manager.rs speed work): a store of another layout version is
//! refused on open, and an insert that writes a vacant bucket without
//! logging it never does so where a group's rollback needs the old bytes.

use std::os::unix::fs::FileExt;

use shmproc::{DictProxy, OpenError};

/// Offset of the store's layout word: header 128 + lock, seq, map_len,
/// log_used (4 words) + 46 state words, as laid out by src/manager/store.rs.
const LAYOUT_OFF: u64 = 128 + 8 * 4 + 8 * 46;

/// A container segment whose layout word is not this build's (one made
/// by an older build, before the word existed, reads 0) is refused with
/// `LayoutVersion`, never read with the wrong hashing or log format.
#[test]
fn a_container_of_another_store_layout_is_refused_on_open() {
    let d = DictProxy::<u64, u64>::new().unwrap();
    d.insert(1, 2).unwrap();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(format!("/dev/shm/shmproc.{}", d.name())).unwrap();
    let mut w = [0u8; 8];
    f.read_exact_at(&mut w, LAYOUT_OFF).unwrap();
    let ours = u64::from_ne_bytes(w);
    assert!(ours >= 2, "the layout word of a new container is its version, read {ours}");
    assert!(DictProxy::<u64, u64>::open(d.name()).is_ok());
    f.write_all_at(&0u64.to_ne_bytes(), LAYOUT_OFF).unwrap();
    match DictProxy::<u64, u64>::open(d.name()) {
        Err(OpenError::LayoutVersion { found: 0, expected, .. }) => assert_eq!(u64::from(expected), ours),
        other => panic!("expected a LayoutVersion error, got {other:?}"),
    }
    // The handle already open keeps working.
    assert_eq!(d.get(&1).unwrap(), Some(2));
}

/// An insert writes a vacant bucket's key and value without logging them
/// (only the tag, which makes it live, is logged). A tombstone inside a
/// group may be the bucket of an entry an earlier operation of the same
/// group removed: the group's rollback brings that entry back, so its
/// bytes must have been logged. Each round removes "a" and inserts a new
/// key inside `with_lock`, then panics (rolling the group back); some
/// new key lands on a's tombstone, and "a" must still read "alpha".
#[test]
fn a_tombstone_reused_inside_a_rolled_back_group_keeps_the_removed_entry() {
    let d = DictProxy::<String, String>::new().unwrap();
    for (k, v) in [("a", "alpha"), ("b", "beta"), ("c", "gamma")] {
        d.insert(k.into(), v.into()).unwrap();
    }
    let before = d.items().unwrap();
    // The 200 deliberate panics below would each print a message.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failure = None;
    for i in 0..200 {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            d.with_lock(|d| {
                let gone = d.remove(&"a".to_string());
                d.insert(format!("new-{i}"), format!("value-{i}")).unwrap();
                panic!("roll the group back (removed: {gone:?})");
            })
        }));
        let (a, items) = (d.get(&"a".to_string()), d.items());
        if r.is_ok() || a.as_ref().ok() != Some(&Some("alpha".to_string())) || items.as_ref().ok() != Some(&before) {
            failure = Some(format!("round {i}: group result {:?}, a = {a:?}, items = {items:?}", r.is_ok()));
            break;
        }
    }
    std::panic::set_hook(hook);
    assert_eq!(failure, None);
    d.insert("d".into(), "delta".into()).unwrap();
    assert_eq!(d.len(), 4);
}
