//! A container stored in another (a `ListProxy` / `DictProxy` value, kept
//! by name) whose segment is gone: its creating child made it without a
//! Manager and exited, so its name went with its last handle. Reading
//! that entry is `ContainerError::NestedGone` naming it (not "corrupted"),
//! the rest of the outer container keeps working, and `del` removes the
//! entry (before, no operation but `clear` could: `remove`, `pop`,
//! `pop_at`, `insert` over it all failed with `Corrupted`).

mod common;

use shmproc::{ContainerError, DictProxy, ListProxy, Process};

shmproc::entry! {
    /// Makes a list and a dict of its own (no Manager, not persisted),
    /// stores them in the parent's containers, and exits: its drops
    /// remove both names.
    fn store_own_containers(
        (d, l, ld): (DictProxy<String, ListProxy<u64>>, ListProxy<ListProxy<u64>>, ListProxy<DictProxy<String, u64>>),
    ) -> Result<(), String> {
        let e = |e: ContainerError| e.to_string();
        let mine = ListProxy::<u64>::new().map_err(|e| e.to_string())?;
        mine.extend([1, 2, 3]).map_err(e)?;
        d.insert("child".into(), mine.clone()).map_err(e)?;
        l.append(mine.clone()).map_err(e)?;
        let dd = DictProxy::<String, u64>::new().map_err(|e| e.to_string())?;
        dd.insert("x".into(), 1).map_err(e)?;
        ld.append(dd).map_err(e)?;
        Ok(())
    }
}

fn gone_name(r: Result<impl std::fmt::Debug, ContainerError>) -> String {
    match r {
        Err(ContainerError::NestedGone { name, reason }) => {
            assert!(reason.contains("not found"), "reason: {reason}");
            name
        }
        other => panic!("expected NestedGone, got {other:?}"),
    }
}

#[test]
fn a_stored_container_whose_child_creator_exited_is_nested_gone_and_del_removes_it() {
    let d = DictProxy::<String, ListProxy<u64>>::new().unwrap();
    let l = ListProxy::<ListProxy<u64>>::new().unwrap();
    let ld = ListProxy::<DictProxy<String, u64>>::new().unwrap();
    let kept = ListProxy::<u64>::new().unwrap();
    kept.append(42).unwrap();
    d.insert("parent".into(), kept.clone()).unwrap();
    l.append(kept.clone()).unwrap();
    let mut p = Process::new(store_own_containers, (d.clone(), l.clone(), ld.clone()));
    p.start().unwrap();
    if let Err(e) = common::join(&p) {
        panic!("child failed: {e}");
    }

    // The dict: the child's entry names its gone list; the rest works.
    let k = "child".to_string();
    let name = gone_name(d.get(&k));
    assert!(!std::path::Path::new(&format!("/dev/shm/shmproc.{name}")).exists());
    assert_eq!(d.len(), 2);
    assert_eq!(d.keys().unwrap(), ["parent", "child"]);
    assert!(d.contains_key(&k).unwrap());
    assert_eq!(gone_name(d.items()), name);
    assert_eq!(gone_name(d.remove(&k)), name);
    assert_eq!(gone_name(d.pop(&k)), name);
    assert_eq!(gone_name(d.popitem()), name);
    // Each failed operation changed nothing.
    assert_eq!(d.len(), 2);
    assert_eq!(d.get(&"parent".into()).unwrap().unwrap().to_vec().unwrap(), [42]);
    d.del(&k).unwrap();
    assert_eq!(d.del(&k), Err(ContainerError::KeyNotFound));
    assert_eq!(d.len(), 1);
    assert_eq!(d.items().unwrap().len(), 1);
    d.insert(k.clone(), kept.clone()).unwrap();
    d.get(&k).unwrap().unwrap().append(43).unwrap();
    assert_eq!(kept.to_vec().unwrap(), [42, 43]);

    // The list of lists: the same, by index.
    assert_eq!(l.len(), 2);
    assert_eq!(gone_name(l.get(1)), name);
    assert_eq!(gone_name(l.to_vec()), name);
    assert_eq!(gone_name(l.pop()), name);
    assert_eq!(gone_name(l.pop_at(-1)), name);
    assert_eq!(l.len(), 2);
    assert_eq!(l.get(0).unwrap().to_vec().unwrap(), [42, 43]);
    assert_eq!(l.del(2), Err(ContainerError::IndexOutOfRange { index: 2, len: 2 }));
    l.del(-1).unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l.to_vec().unwrap().len(), 1);

    // A list of dicts: a gone dict reads as NestedGone too, and `set` replaces it.
    let dname = gone_name(ld.get(0));
    assert_ne!(dname, name);
    let fresh = DictProxy::<String, u64>::new().unwrap();
    fresh.insert("y".into(), 2).unwrap();
    ld.set(0, fresh.clone()).unwrap();
    assert_eq!(ld.get(0).unwrap().get(&"y".into()).unwrap(), Some(2));
    ld.del(0).unwrap();
    assert!(ld.is_empty());
}
