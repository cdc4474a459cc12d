//! The Manager's registry: `names()` reports every kind it holds, queues
//! of any `Handoff` item (bounded and unbounded) are found by name in a
//! child, and what a Manager made is removed after its creator is killed
//! (`gc()` when not persisted, `Manager::unlink_all` in every case).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use shmproc::{Kind, ListProxy, Manager, Process, Queue};

const BOUND: Duration = Duration::from_secs(60);

fn exists(seg: &str) -> bool {
    Path::new(&format!("/dev/shm/shmproc.{seg}")).exists()
}

/// Every segment of `mgr` (its registry, its objects, and an unbounded
/// queue's rings, named `<queue segment>.<generation>.<k>.<tag>`).
fn all_segments(mgr_name: &str, objects: &[String]) -> Vec<String> {
    let mut out = vec![mgr_name.to_owned()];
    for dir in std::fs::read_dir("/dev/shm").unwrap() {
        let f = dir.unwrap().file_name().into_string().unwrap();
        if let Some(user) = f.strip_prefix("shmproc.")
            && objects.iter().any(|o| user == o || user.starts_with(&format!("{o}.")))
        {
            out.push(user.to_owned());
        }
    }
    out
}

#[test]
fn names_reports_the_kind_of_everything_a_manager_holds() {
    let mgr = Manager::new().unwrap();
    mgr.list::<u64>("a-list").unwrap();
    mgr.dict::<String, u64>("b-dict").unwrap();
    mgr.value("c-value", 1u32).unwrap();
    mgr.array::<f64>("d-array", 4).unwrap();
    mgr.lock("e-lock").unwrap();
    mgr.queue::<u64>("f-pod-queue", 8).unwrap();
    mgr.queue::<String>("g-frame-queue", 8).unwrap();
    mgr.queue::<u64>("h-unbounded-pod", 0).unwrap();
    mgr.queue::<(u32, String)>("i-unbounded-frames", 0).unwrap();
    let anon = mgr.list_anon::<String>().unwrap();
    let got: Vec<(String, Kind)> = mgr.names().unwrap().into_iter().map(|e| (e.name, e.kind)).collect();
    let mut want = vec![
        ("a-list".to_string(), Kind::List),
        ("b-dict".to_string(), Kind::Dict),
        ("c-value".to_string(), Kind::Value),
        ("d-array".to_string(), Kind::Array),
        ("e-lock".to_string(), Kind::Lock),
        ("f-pod-queue".to_string(), Kind::MpmcQueue),
        ("g-frame-queue".to_string(), Kind::FrameQueue),
        ("h-unbounded-pod".to_string(), Kind::QueueChain),
        ("i-unbounded-frames".to_string(), Kind::QueueChain),
    ];
    // The unnamed list is listed under its generated name.
    let anon_entry = mgr.names().unwrap().into_iter().find(|e| e.segment == anon.name()).expect("anon list listed");
    want.push((anon_entry.name.clone(), Kind::List));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want);
    // And each entry's segment really is an object of that kind.
    for e in mgr.names().unwrap() {
        if e.kind == Kind::QueueChain && e.name.contains("pod") {
            assert!(Queue::<u64>::open(&e.segment).unwrap().maxsize() == 0);
        }
    }
    // A queue lookup finds the queue whatever the size asked for, and
    // refuses another item type.
    assert_eq!(mgr.queue::<u64>("h-unbounded-pod", 5).unwrap().maxsize(), 0);
    assert_eq!(mgr.queue::<u64>("f-pod-queue", 0).unwrap().maxsize(), 8);
    assert!(matches!(mgr.queue::<u32>("f-pod-queue", 8), Err(shmproc::OpenError::IncompatibleType { .. })));
    assert!(matches!(mgr.queue::<u64>("g-frame-queue", 8), Err(shmproc::OpenError::IncompatibleType { .. })));
    assert!(matches!(mgr.queue::<u64>("a-list", 8), Err(shmproc::OpenError::WrongKind { found: Kind::List, .. })));
    assert!(matches!(
        mgr.list::<u64>("f-pod-queue"),
        Err(shmproc::OpenError::WrongKind { found: Kind::MpmcQueue, .. })
    ));
}

shmproc::entry! {
    fn use_queues_by_name(mgr: Manager) -> Result<(), String> {
        let e = |e: shmproc::OpenError| e.to_string();
        // Found by name in the child: an unbounded queue of Strings, a
        // bounded one of tuples; and one the child creates itself.
        let words = mgr.queue::<String>("words", 0).map_err(e)?;
        let pairs = mgr.queue::<(u32, String)>("pairs", 4).map_err(e)?;
        let back = mgr.queue::<String>("back", 0).map_err(e)?;
        for _ in 0..1000 {
            let w = words.get_timeout(BOUND).map_err(|e| e.to_string())?;
            back.put(w.to_uppercase()).map_err(|e| e.to_string())?;
        }
        let (n, s) = pairs.get_timeout(BOUND).map_err(|e| e.to_string())?;
        back.put(format!("{n}:{s}")).map_err(|e| e.to_string())?;
        Ok(())
    }
}

#[test]
fn a_child_finds_queues_of_strings_and_tuples_by_name() {
    let mgr = Manager::new().unwrap();
    let words = mgr.queue::<String>("words", 0).unwrap();
    let pairs = mgr.queue::<(u32, String)>("pairs", 4).unwrap();
    // More than the first ring holds: the unbounded queue grows.
    for i in 0..1000 {
        words.put(format!("word{i}-{}", "x".repeat(i % 200))).unwrap();
    }
    pairs.put((7, "seven".into())).unwrap();
    let mut p = Process::new(use_queues_by_name, mgr.clone());
    p.start().unwrap();
    match common::join(&p) {
        Ok(()) => {}
        Err(e) => panic!("child failed: {e}"),
    }
    // The queue the child created through the Manager outlives the child.
    let back = mgr.queue::<String>("back", 0).unwrap();
    for i in 0..1000 {
        assert_eq!(back.get_timeout(BOUND).unwrap(), format!("WORD{i}-{}", "X".repeat(i % 200)));
    }
    assert_eq!(back.get_timeout(BOUND).unwrap(), "7:seven");
    assert!(back.empty());
    let kinds: Vec<(String, Kind)> = mgr.names().unwrap().into_iter().map(|e| (e.name, e.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("back".to_string(), Kind::QueueChain),
            ("pairs".to_string(), Kind::FrameQueue),
            ("words".to_string(), Kind::QueueChain)
        ]
    );
    // The creator's last handle removes every name, rings included.
    let objects: Vec<String> = mgr.names().unwrap().into_iter().map(|e| e.segment).collect();
    let name = mgr.name().to_owned();
    drop((words, pairs, back, mgr));
    let left = all_segments(&name, &objects);
    assert_eq!(left.iter().filter(|s| exists(s)).count(), 0, "left behind: {left:?}");
}

// ---- a creator killed with SIGKILL -----------------------------------

/// Makes one object of every kind through a Manager named `name`
/// (persisted if asked), fills them, then waits to be killed.
fn fill_and_wait(name: &str, persist: bool) -> Result<(), String> {
    let e = |e: shmproc::OpenError| e.to_string();
    let mgr = Manager::create(name).map_err(e)?;
    if persist {
        mgr.persist();
    }
    let l = mgr.list::<String>("list").map_err(e)?;
    l.extend((0..100).map(|i| format!("item{i}"))).map_err(|e| e.to_string())?;
    mgr.dict::<String, u64>("dict").map_err(e)?.insert("k".into(), 1).map_err(|e| e.to_string())?;
    let _anon = mgr.list_anon::<u8>().map_err(e)?;
    mgr.value("value", 5u64).map_err(e)?;
    mgr.array::<u32>("array", 3).map_err(e)?;
    mgr.lock("lock").map_err(e)?;
    mgr.queue::<u64>("pod-queue", 4).map_err(e)?.put(1).map_err(|e| e.to_string())?;
    mgr.queue::<String>("frame-queue", 4).map_err(e)?.put("x".into()).map_err(|e| e.to_string())?;
    let unbounded = mgr.queue::<String>("unbounded", 0).map_err(e)?;
    for i in 0..2000 {
        unbounded.put(format!("{i:0>100}")).map_err(|e| e.to_string())?; // several rings
    }
    // Ready: the list named "done" says so.
    mgr.list::<u8>("done").map_err(e)?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

shmproc::entry! {
    fn make_everything(args: (String, bool)) -> Result<(), String> {
        fill_and_wait(&args.0, args.1)
    }
}

/// Runs `make_everything` in a child, kills it with SIGKILL once it is
/// ready, and returns the Manager's object segments (and their rings).
fn made_by_a_killed_creator(name: &str, persist: bool) -> Vec<String> {
    let mut p = Process::new(make_everything, (name.to_owned(), persist));
    p.start().unwrap();
    let end = Instant::now() + BOUND;
    loop {
        let ready =
            Manager::open(name).ok().and_then(|m| m.names().ok()).is_some_and(|n| n.iter().any(|e| e.name == "done"));
        if ready {
            break;
        }
        if Instant::now() > end {
            let _ = p.kill();
            panic!("the creator did not get ready within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    p.kill().unwrap();
    assert!(matches!(common::join(&p), Err(shmproc::ProcessError::Signaled { signal: 9, .. })));
    let objects: Vec<String> = Manager::open(name).unwrap().names().unwrap().into_iter().map(|e| e.segment).collect();
    assert_eq!(objects.len(), 10);
    let segs = all_segments(name, &objects);
    assert!(segs.len() > 12, "the unbounded queue should have several rings: {segs:?}");
    assert!(segs.iter().all(|s| exists(s)));
    segs
}

#[test]
fn gc_removes_everything_of_a_manager_whose_creator_was_killed() {
    let name = common::name("mgr-gc-killed");
    let segs = made_by_a_killed_creator(&name, false);
    let removed = shmproc::gc().unwrap();
    let left: Vec<&String> = segs.iter().filter(|s| exists(s)).collect();
    assert!(left.is_empty(), "gc left {left:?} (removed {removed:?})");
    assert!(removed.contains(&name));
}

#[test]
fn a_persisted_manager_survives_gc_after_its_creator_is_killed_and_unlink_all_removes_it() {
    let name = common::name("mgr-persist-killed");
    let segs = made_by_a_killed_creator(&name, true);
    shmproc::gc().unwrap();
    let left: Vec<&String> = segs.iter().filter(|s| !exists(s)).collect();
    assert!(left.is_empty(), "gc removed {left:?} of a persisted Manager");
    // Everything still works after the creator's death and the gc.
    let mgr = Manager::open(&name).unwrap();
    let list = mgr.list::<String>("list").unwrap();
    assert_eq!(list.get(-1).unwrap(), "item99");
    assert_eq!(mgr.dict::<String, u64>("dict").unwrap().get(&"k".into()).unwrap(), Some(1));
    assert_eq!(mgr.value("value", 0u64).unwrap().get().unwrap(), 5);
    assert_eq!(mgr.queue::<u64>("pod-queue", 4).unwrap().get_timeout(BOUND).unwrap(), 1);
    let unbounded = mgr.queue::<String>("unbounded", 0).unwrap();
    assert_eq!(unbounded.get_timeout(BOUND).unwrap(), format!("{:0>100}", 0));
    // The documented way to remove it: every name, rings included.
    mgr.unlink_all().unwrap();
    let left: Vec<&String> = segs.iter().filter(|s| exists(s)).collect();
    assert!(left.is_empty(), "unlink_all left {left:?}");
    // Handles already open keep working.
    list.append("after".into()).unwrap();
    assert_eq!(list.len(), 101);
    assert!(matches!(mgr.list::<String>("list"), Err(shmproc::OpenError::NotFound(_))));
    drop((list, unbounded, mgr));
    assert!(matches!(Manager::open(&name), Err(shmproc::OpenError::NotFound(_))));
}

#[test]
fn unlink_all_removes_a_live_persisted_manager_and_a_nested_list_value() {
    let name = common::name("mgr-unlink-all");
    let mgr = Manager::create(&name).unwrap();
    mgr.persist();
    let d = mgr.dict::<String, ListProxy<u64>>("nested").unwrap();
    d.insert("evens".into(), mgr.list_anon::<u64>().unwrap()).unwrap();
    d.get(&"evens".into()).unwrap().unwrap().append(2).unwrap();
    let objects: Vec<String> = mgr.names().unwrap().into_iter().map(|e| e.segment).collect();
    drop(d);
    drop(mgr);
    let segs = all_segments(&name, &objects);
    assert_eq!(segs.len(), 3);
    assert!(segs.iter().all(|s| exists(s)), "persisted, so kept: {segs:?}");
    Manager::open(&name).unwrap().unlink_all().unwrap();
    assert!(segs.iter().all(|s| !exists(s)), "unlink_all left some of {segs:?}");
}

shmproc::entry! {
    fn persist_from_child(mgr: Manager) -> Result<(), String> {
        mgr.list::<u64>("kept").map_err(|e| e.to_string())?.append(42).map_err(|e| e.to_string())?;
        mgr.persist();
        Ok(())
    }
}

#[test]
fn a_manager_persisted_by_a_child_outlives_its_creator_handles() {
    let name = common::name("mgr-child-persist");
    let mgr = Manager::create(&name).unwrap();
    let mut p = Process::new(persist_from_child, mgr.clone());
    p.start().unwrap();
    if let Err(e) = common::join(&p) {
        panic!("child failed: {e}");
    }
    drop(mgr);
    let again = Manager::open(&name).expect("persisted by the child, so kept");
    assert_eq!(again.list::<u64>("kept").unwrap().to_vec().unwrap(), [42]);
    again.unlink_all().unwrap();
    assert!(matches!(Manager::open(&name), Err(shmproc::OpenError::NotFound(_))));
}

shmproc::entry! {
    /// Dies by the injected SIGKILL inside `Manager`'s find-or-create of
    /// `name` (0: a list, 1: a dict, 2: an unbounded queue), after the
    /// object's segment was made; its name goes to the file `report` first.
    fn die_in_find_or_create(args: (Manager, String, String, u32)) -> Result<(), String> {
        let (mgr, name, report, kind) = args;
        shmproc::__crash_in_find_or_create(&report);
        let r = match kind {
            0 => mgr.list::<u64>(&name).map(drop),
            1 => mgr.dict::<String, u64>(&name).map(drop),
            _ => mgr.queue::<String>(&name, 0).map(drop),
        };
        r.map_err(|e| e.to_string())?;
        Err("the injected crash did not happen".into())
    }
}

/// The files in /dev/shm of segment `seg` (and of its rings, if it is an
/// unbounded queue: `<seg>.<generation>.<k>.<tag>`).
fn files_of(seg: &str) -> Vec<String> {
    let dotted = format!("{seg}.");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| f.strip_prefix(shmproc::NAME_PREFIX).map(str::to_owned))
        .filter(|u| u == seg || u.starts_with(&dotted))
        .collect()
}

/// Regression: a process killed inside a Manager's find-or-create, after it
/// made the object's segment and before the registry listed it, left that
/// segment in /dev/shm for good (persisted, and named nowhere). Now the
/// registry names it first, as being made: the next find-or-create of the
/// name removes it and makes the object afresh, and the Manager's end
/// removes one that nobody asked for again.
#[test]
fn a_process_killed_inside_find_or_create_leaves_no_segment() {
    let mgr = Manager::new().unwrap();
    let half_made = |key: &str, kind: u32| -> String {
        let report = std::env::temp_dir().join(format!("shmproc-test-foc-{}-{key}", std::process::id()));
        let args = (mgr.clone(), key.to_owned(), report.to_str().unwrap().to_owned(), kind);
        let mut p = Process::new(die_in_find_or_create, args);
        p.start().unwrap();
        let end = common::join(&p);
        let seg = std::fs::read_to_string(&report).unwrap_or_default();
        let _ = std::fs::remove_file(&report);
        assert!(matches!(end, Err(shmproc::ProcessError::Signaled { signal: 9, .. })), "{key}: {end:?}");
        assert!(!seg.is_empty() && !files_of(&seg).is_empty(), "{key}: the child made its segment ({seg:?})");
        seg
    };
    // Asked for again: the next find-or-create removes the half-made one.
    let again = half_made("again", 0);
    let listed: Vec<String> = mgr.names().unwrap().into_iter().map(|e| e.name).collect();
    let l = mgr.list::<u64>("again").unwrap();
    l.append(7).unwrap();
    let again_left = files_of(&again);
    let fresh = l.name().to_owned();
    // Never asked for again: the Manager's end (its creator's drop) removes them.
    let never = [half_made("never-dict", 1), half_made("never-queue", 2)];
    drop(l);
    drop(mgr);
    let mut left: Vec<String> = never.iter().flat_map(|s| files_of(s)).collect();
    left.extend(files_of(&fresh));
    for s in never.iter().chain([&again, &fresh]) {
        let _ = shmproc::unlink(s); // a failing run leaves nothing either
    }
    assert!(!listed.contains(&"again".to_owned()), "a half-made object is not listed: {listed:?}");
    assert_eq!(again_left, Vec::<String>::new(), "the next find-or-create of the name removes the half-made one");
    assert_eq!(left, Vec::<String>::new(), "the Manager's end removes what a killed find-or-create made");
}
