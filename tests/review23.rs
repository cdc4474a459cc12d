//! Hostile review, round 3 of the manager layer: the `Manager` registry's
//! ownership races, groups, nested containers.

mod common;

use std::time::{Duration, Instant};

use shmproc::{Manager, Process};

/// The files in /dev/shm of segment `seg`.
fn exists(seg: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm/{}{seg}", shmproc::NAME_PREFIX)).exists()
}

shmproc::entry! {
    /// Creates anonymous lists through `mgr` as fast as it can until the
    /// Manager is gone (its creator dropped it), writing each list's
    /// segment name to the file `report` (one a line) as soon as it has it.
    fn create_until_gone(args: (Manager, String)) -> Result<(), String> {
        use std::io::Write;
        let (mgr, report) = args;
        let mut out = std::fs::File::create(&report).map_err(|e| e.to_string())?;
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            match mgr.list_anon::<u64>() {
                Ok(l) => writeln!(out, "{}", l.name()).map_err(|e| e.to_string())?,
                Err(shmproc::OpenError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(format!("list_anon: {e}")),
            }
        }
        Err("the Manager was not gone within 30 s".into())
    }
}

/// Regression: the creator's last `Manager` handle dropping while a child
/// creates containers through the Manager left some of the child's
/// containers in /dev/shm for good (persisted, named by no registry). The
/// drop listed the registry without its lock and removed the registry's
/// name after, so a container recorded in between (or one being made,
/// whose segment the child created after the drop had removed its name)
/// was never removed.
#[test]
fn a_manager_dropped_while_a_child_creates_through_it_leaves_nothing() {
    end_while_a_child_creates(drop);
}

/// Regression: `unlink_all` while a child creates containers through the
/// Manager: it removed the objects' names under the registry's lock but
/// the registry's own name after releasing it, so an object made in
/// between stayed in /dev/shm, named by no registry.
#[test]
fn unlink_all_while_a_child_creates_through_the_manager_leaves_nothing() {
    end_while_a_child_creates(|mgr| mgr.unlink_all().unwrap());
}

/// Ends a Manager with `end` while a child creates lists through it, and
/// checks that none of the child's lists is left in /dev/shm.
fn end_while_a_child_creates(end: impl Fn(Manager)) {
    for round in 0..common::count(6, 60) {
        let mgr = Manager::new().unwrap();
        // Many objects: the drop's removal of them takes a while.
        for i in 0..300 {
            mgr.lock(&format!("l{i}")).unwrap();
        }
        let report = std::env::temp_dir().join(format!("shmproc-r23-cug-{}-{round}", std::process::id()));
        let mut p = Process::new(create_until_gone, (mgr.clone(), report.to_str().unwrap().to_owned()));
        p.start().unwrap();
        // Drop once the child is creating.
        let deadline = Instant::now() + common::DEADLINE;
        while mgr.names().unwrap().len() < 320 {
            assert!(Instant::now() < deadline, "the child created nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
        end(mgr);
        let end = common::join(&p);
        let made = std::fs::read_to_string(&report).unwrap_or_default();
        let _ = std::fs::remove_file(&report);
        assert!(end.is_ok(), "round {round}: the child failed: {end:?}");
        let left: Vec<&str> = made.lines().filter(|s| exists(s)).collect();
        for s in &left {
            let _ = shmproc::unlink(s);
        }
        assert!(
            left.is_empty(),
            "round {round}: {} of {} lists left in /dev/shm: {left:?}",
            left.len(),
            made.lines().count()
        );
    }
}

use shmproc::{ContainerError, DictProxy, ListProxy};

/// An element whose comparison panics when either side is 13.
#[derive(Clone, Copy, Debug, PartialEq, Eq, shmproc::Pod, shmproc::Zeroable)]
#[bytemuck(crate = "shmproc::bytemuck")]
#[repr(C)]
struct Touchy(u64);
shmproc::shm_type!(Touchy = "review23.Touchy");
impl PartialOrd for Touchy {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Touchy {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        assert!(self.0 != 13 && o.0 != 13, "13 compared");
        self.0.cmp(&o.0)
    }
}

#[test]
fn a_panicking_key_or_ord_in_sort_leaves_the_list_intact_and_unlocked() {
    let l = ListProxy::<Touchy>::new().unwrap();
    let start: Vec<Touchy> = [5, 13, 2, 9, 1].map(Touchy).to_vec();
    l.extend(start.clone()).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l.sort()));
    assert!(r.is_err());
    assert_eq!(l.to_vec().unwrap(), start);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        l.sort_by_key(|t| if t.0 == 9 { panic!("key") } else { t.0 })
    }));
    assert!(r.is_err());
    assert_eq!(l.to_vec().unwrap(), start);
    // Inside a group too: the group goes on after the caught panic.
    l.with_lock(|l| {
        l.append(Touchy(7)).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l.sort()));
        assert!(r.is_err());
        l.append(Touchy(8)).unwrap();
    })
    .unwrap();
    let mut want = start.clone();
    want.extend([Touchy(7), Touchy(8)]);
    assert_eq!(l.to_vec().unwrap(), want);
    // The lock is free: another handle (another mapping) writes.
    let other = ListProxy::<Touchy>::open(l.name()).unwrap();
    other.del(1).unwrap();
    other.sort().unwrap();
    assert_eq!(l.to_vec().unwrap(), [1, 2, 5, 7, 8, 9].map(Touchy));
}

#[test]
fn a_panic_in_a_group_that_grew_the_segment_rolls_all_of_it_back() {
    let l = ListProxy::<String>::new().unwrap();
    l.append("keep".into()).unwrap();
    let big = "x".repeat(4096);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        l.with_lock(|l| {
            for _ in 0..2000 {
                l.append(big.clone()).unwrap();
            }
            l.clear().unwrap();
            l.append("other".into()).unwrap();
            panic!("inside the group");
        })
    }));
    assert!(r.is_err());
    assert_eq!(l.to_vec().unwrap(), ["keep"]);
    let other = ListProxy::<String>::open(l.name()).unwrap();
    assert_eq!(other.to_vec().unwrap(), ["keep"]);
    other.append(big.clone()).unwrap();
    assert_eq!(l.len(), 2);
    // Nested groups, on the same container (through a second mapping) and another one.
    let d = DictProxy::<u64, u64>::new().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        l.with_lock(|l| {
            l.append("a".into()).unwrap();
            other.with_lock(|o| o.append("b".into()).unwrap()).unwrap();
            d.with_lock(|d| d.insert(1, 1).unwrap()).unwrap();
            panic!("after nested groups");
        })
    }));
    assert!(r.is_err());
    assert_eq!(l.len(), 2);
    assert_eq!(d.len(), 1, "the dict's own group committed before the panic");
}

#[test]
fn a_list_storing_itself() {
    let l = ListProxy::<ListProxy<u64>>::new().unwrap();
    let inner = ListProxy::<u64>::new().unwrap();
    l.append(inner.clone()).unwrap();
    // A list of lists of u64 cannot hold itself (other type); a list in a dict that holds the dict:
    let d = DictProxy::<String, DictProxy<String, u64>>::new().unwrap();
    let _ = d;
    let ll = ListProxy::<ListProxy<ListProxy<u64>>>::new().unwrap();
    ll.append(l.clone()).unwrap();
    ll.get(0).unwrap().get(0).unwrap().append(3).unwrap();
    assert_eq!(inner.to_vec().unwrap(), [3]);
    assert_eq!(ll.index(&l).unwrap(), 0);
    assert!(ll.contains(&l).unwrap());
    ll.remove(&l).unwrap();
    assert!(ll.is_empty());
    let _: Result<(), ContainerError> = Ok(());
}

shmproc::entry! {
    /// Appends `n` times to the list stored under `key` in `d`, each
    /// through a fresh `d.get(key)`.
    fn append_through_dict(args: (DictProxy<String, ListProxy<u64>>, String, u64)) -> Result<(), String> {
        let (d, key, n) = args;
        for i in 0..n {
            d.get(&key).map_err(|e| e.to_string())?.ok_or("no list")?.append(i).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[test]
fn writes_through_a_nested_list_from_several_processes_all_land() {
    let mgr = Manager::new().unwrap();
    let d = mgr.dict::<String, ListProxy<u64>>("d").unwrap();
    d.insert("k".into(), mgr.list::<u64>("inner").unwrap()).unwrap();
    let ps: Vec<Process> = (0..3)
        .map(|_| {
            let mut p = Process::new(append_through_dict, (d.clone(), "k".to_string(), 300));
            p.start().unwrap();
            p
        })
        .collect();
    // Meanwhile replace the entry with another list: handles already got keep writing to the old one.
    std::thread::sleep(Duration::from_millis(5));
    let second = mgr.list::<u64>("second").unwrap();
    let old = d.insert("k".into(), second.clone()).unwrap().unwrap();
    for p in &ps {
        common::join(p).unwrap();
    }
    assert_eq!(old.len() + second.len(), 900);
    assert_eq!(mgr.list::<u64>("inner").unwrap().len(), old.len());
}

shmproc::entry! {
    /// Makes every element of `l` equal to `k`, as one group, for k = 1.. until `stop` is set.
    fn rewrite_all(args: (ListProxy<u64>, shmproc::Event)) -> Result<(), String> {
        let (l, stop) = args;
        let mut k = 1;
        while !stop.is_set() {
            l.with_lock(|l| -> Result<(), ContainerError> {
                let n = l.len();
                l.clear()?;
                l.extend(std::iter::repeat_n(k, n))
            })
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            k += 1;
        }
        Ok(())
    }
}

#[test]
fn iter_is_one_snapshot_while_another_process_rewrites_the_list_in_groups() {
    let l = ListProxy::<u64>::new().unwrap();
    l.extend(std::iter::repeat_n(0, 5000)).unwrap();
    let stop = shmproc::Event::new().unwrap();
    let mut p = Process::new(rewrite_all, (l.clone(), stop.clone()));
    p.start().unwrap();
    let mut distinct = std::collections::BTreeSet::new();
    for _ in 0..300 {
        let v: Vec<u64> = l.iter().unwrap().collect();
        assert_eq!(v.len(), 5000);
        assert!(v.iter().all(|&x| x == v[0]), "a torn snapshot");
        distinct.insert(v[0]);
        l.shrink_to_fit().unwrap();
    }
    stop.set();
    common::join(&p).unwrap();
    let _ = &mut p;
    assert!(!distinct.is_empty());
}

shmproc::entry! {
    /// Finds or creates `name` in `mgr` as kind `kind` (0 list<u64>, 1
    /// list<u32>, 2 dict, 3 value, 4 queue) at once with its siblings
    /// (they all wait for `go`), then reports what it got through `out`.
    fn race_for_a_name(args: (Manager, String, u32, shmproc::Event, shmproc::Queue<String>)) -> Result<(), String> {
        let (mgr, name, kind, go, out) = args;
        go.wait();
        let r = match kind {
            0 => mgr.list::<u64>(&name).and_then(|l| l.append(1).map_err(|e| shmproc::OpenError::InvalidArgument(e.to_string()))),
            1 => mgr.list::<u32>(&name).map(drop),
            2 => mgr.dict::<u64, u64>(&name).map(drop),
            3 => mgr.value(&name, 0u64).map(drop),
            _ => mgr.queue::<u64>(&name, 4).map(drop),
        };
        let tag = match r {
            Ok(()) => "ok".to_string(),
            Err(shmproc::OpenError::WrongKind { .. }) => "kind".into(),
            Err(shmproc::OpenError::IncompatibleType { .. }) => "type".into(),
            Err(e) => format!("other: {e}"),
        };
        out.put(format!("{kind}:{tag}")).map_err(|e| e.to_string())
    }
}

#[test]
fn processes_racing_to_create_one_name_get_one_object_or_a_clear_error() {
    for round in 0..4 {
        let mgr = Manager::new().unwrap();
        let go = shmproc::Event::new().unwrap();
        let out = shmproc::Queue::<String>::new(64).unwrap();
        let kinds = [0u32, 0, 0, 1, 2, 3, 4, 0];
        let ps: Vec<Process> = kinds
            .iter()
            .map(|&k| {
                let mut p = Process::new(race_for_a_name, (mgr.clone(), "x".to_string(), k, go.clone(), out.clone()));
                p.start().unwrap();
                p
            })
            .collect();
        go.set();
        for p in &ps {
            common::join(p).unwrap();
        }
        let tags: Vec<String> = std::iter::from_fn(|| out.get_nowait().ok()).collect();
        assert_eq!(tags.len(), kinds.len(), "{tags:?}");
        assert!(tags.iter().all(|t| !t.contains("other")), "round {round}: {tags:?}");
        let names = mgr.names().unwrap();
        assert_eq!(names.len(), 1, "round {round}: {names:?}");
        let winners: Vec<&String> = tags.iter().filter(|t| t.ends_with(":ok")).collect();
        assert!(!winners.is_empty(), "{tags:?}");
        let wk = &winners[0][..1];
        assert!(winners.iter().all(|w| &w[..1] == wk), "round {round}: {tags:?}");
        if wk == "0" {
            assert_eq!(mgr.list::<u64>("x").unwrap().len(), winners.len());
        }
    }
}

const RLIMIT_NOFILE: i32 = 7;

unsafe extern "C" {
    fn setrlimit(resource: i32, rlim: *const [u64; 2]) -> i32;
    fn getrlimit(resource: i32, rlim: *mut [u64; 2]) -> i32;
}

/// Sets this process's soft limit of open files (the hard one unchanged).
fn limit_open_files(soft: u64) -> Result<(), String> {
    let mut cur = [0u64; 2];
    // SAFETY: plain libc calls with valid pointers to two rlim_t words.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut cur) != 0 || setrlimit(RLIMIT_NOFILE, &[soft, cur[1]]) != 0 {
            return Err("setrlimit failed".into());
        }
    }
    Ok(())
}

shmproc::entry! {
    /// Reads every value of `d` (lists it holds by name) with the soft limit of
    /// open files lowered below their number, then once more with it restored;
    /// reports both outcomes through `out` ("ok", "gone: ..." or "other: ...").
    fn read_nested_without_fds(args: (DictProxy<String, ListProxy<u64>>, shmproc::Queue<String>)) -> Result<(), String> {
        let (d, out) = args;
        let tag = |r: Result<Vec<ListProxy<u64>>, ContainerError>| match r {
            Ok(v) => format!("ok {}", v.len()),
            Err(ContainerError::NestedGone { name, reason }) => format!("gone: {name} ({reason})"),
            Err(e) => format!("other: {e}"),
        };
        limit_open_files(64)?;
        let low = tag(d.values());
        limit_open_files(4096)?;
        let again = tag(d.values());
        out.put(low).map_err(|e| e.to_string())?;
        out.put(again).map_err(|e| e.to_string())
    }
}

/// Regression: reading nested containers when the process has no free file
/// descriptor (each open container holds one) said `NestedGone` ("cannot be
/// opened ...; `del` removes its entry"), the error of a stored container
/// that is gone for good, inviting the caller to delete live entries. A
/// failure to open one that exists is now a system error (`Io`).
#[test]
fn nested_containers_that_exist_are_not_reported_gone_when_file_descriptors_run_out() {
    let mgr = Manager::new().unwrap();
    let d = mgr.dict::<String, ListProxy<u64>>("d").unwrap();
    for i in 0..100 {
        d.insert(format!("k{i}"), mgr.list_anon::<u64>().unwrap()).unwrap();
    }
    let out = shmproc::Queue::<String>::new(4).unwrap();
    let p = {
        let mut p = Process::new(read_nested_without_fds, (d.clone(), out.clone()));
        p.start().unwrap();
        p
    };
    common::join(&p).unwrap();
    let low = out.get_nowait().unwrap();
    let again = out.get_nowait().unwrap();
    assert_eq!(again, "ok 100");
    assert!(low.starts_with("other: ") && low.contains("open files"), "with no file descriptor left: {low}");
}

shmproc::entry! {
    /// Makes a Manager holding 300 locks, writes its name to the file
    /// `report`, and waits to be killed.
    fn make_manager_and_wait(report: String) -> Result<(), String> {
        let mgr = Manager::new().map_err(|e| e.to_string())?;
        for i in 0..300 {
            mgr.lock(&format!("l{i}")).map_err(|e| e.to_string())?;
        }
        std::fs::write(&report, mgr.name()).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_secs(60));
        Err("not killed".into())
    }
}

/// `gc` of a Manager whose creator was killed while another process
/// creates containers through it: none of them stays in /dev/shm (a
/// container being made while `gc` removed the Manager's objects is
/// removed by its maker, who gets `NotFound`).
#[test]
fn gc_of_a_killed_creators_manager_while_a_child_creates_through_it_leaves_nothing() {
    for round in 0..common::count(4, 30) {
        let tmp = std::env::temp_dir();
        let name_file = tmp.join(format!("shmproc-r23-gcm-{}-{round}", std::process::id()));
        let report = tmp.join(format!("shmproc-r23-gcr-{}-{round}", std::process::id()));
        let mut creator = Process::new(make_manager_and_wait, name_file.to_str().unwrap().to_owned());
        creator.start().unwrap();
        let deadline = Instant::now() + common::DEADLINE;
        let mgr_name = loop {
            match std::fs::read_to_string(&name_file) {
                Ok(s) if !s.is_empty() => break s,
                _ => {
                    assert!(Instant::now() < deadline, "the creator made no Manager");
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        };
        let _ = std::fs::remove_file(&name_file);
        let mgr = Manager::open(&mgr_name).unwrap();
        let mut p = Process::new(create_until_gone, (mgr.clone(), report.to_str().unwrap().to_owned()));
        p.start().unwrap();
        while mgr.names().unwrap().len() < 320 {
            assert!(Instant::now() < deadline, "the child created nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
        creator.kill().unwrap();
        let _ = creator.join_timeout(common::DEADLINE);
        drop(mgr);
        // gc until the child has seen the Manager gone.
        while p.exitcode().is_none() {
            shmproc::gc().unwrap();
            assert!(Instant::now() < deadline, "the child did not stop");
            std::thread::sleep(Duration::from_millis(1));
        }
        let end = common::join(&p);
        shmproc::gc().unwrap();
        let made = std::fs::read_to_string(&report).unwrap_or_default();
        let _ = std::fs::remove_file(&report);
        assert!(end.is_ok(), "round {round}: the child failed: {end:?}");
        let left: Vec<&str> = made.lines().filter(|s| exists(s)).collect();
        for s in &left {
            let _ = shmproc::unlink(s);
        }
        assert!(!exists(&mgr_name), "round {round}: the Manager is left");
        assert!(left.is_empty(), "round {round}: {} of {} lists left: {left:?}", left.len(), made.lines().count());
    }
}

/// A Manager filling /dev/shm: each find-or-create that finds no room says
/// `NoSpace` and leaves nothing (no segment, no record); the lists made
/// before keep working, and the Manager's end removes them all. (Run with a
/// tiny /dev/shm to reach the limit; on a large one it stops at 2000.)
#[test]
fn a_manager_filling_dev_shm_says_no_space_and_leaves_nothing() {
    let mgr = Manager::new().unwrap();
    let mut made = Vec::new();
    let mut full = 0;
    for i in 0..2000 {
        match mgr.list::<u64>(&format!("l{i}")) {
            Ok(l) => made.push(l.name().to_owned()),
            Err(shmproc::OpenError::NoSpace { .. }) => {
                full += 1;
                if full > 20 {
                    break;
                }
            }
            Err(e) => panic!("list {i}: {e}"),
        }
    }
    let names = mgr.names().unwrap();
    eprintln!("{} lists made, {full} refused", made.len());
    assert_eq!(names.len(), made.len(), "a failed find-or-create left a record");
    let on_disk = std::fs::read_dir("/dev/shm").unwrap().count();
    if full > 0 {
        assert_eq!(on_disk, made.len() + 1, "a failed find-or-create left a segment");
    }
    drop(mgr);
    assert!(made.iter().all(|s| !exists(s)));
}

shmproc::entry! {
    /// Appends strings `"<i>:" + "x" * (i % 3000)` for i in 0..n (the
    /// segment grows many times).
    fn append_growing(args: (ListProxy<String>, u64)) -> Result<(), String> {
        let (l, n) = args;
        for i in 0..n {
            l.append(format!("{i}:{}", "x".repeat((i % 3000) as usize))).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// A reader in one process reads whole snapshots while another process
/// appends and grows the segment (each growth remapped by the reader in
/// the middle of its reads): every snapshot is a prefix of the final list.
#[test]
fn snapshots_read_while_another_process_grows_the_list_are_prefixes() {
    let l = ListProxy::<String>::new().unwrap();
    let n = common::count(3000, 20000);
    let mut p = Process::new(append_growing, (l.clone(), n));
    p.start().unwrap();
    let check = |v: &[String]| {
        for (i, s) in v.iter().enumerate() {
            let want = format!("{i}:{}", "x".repeat(i % 3000));
            assert!(*s == want, "element {i} of a snapshot of {} is wrong", v.len());
        }
    };
    let deadline = Instant::now() + common::DEADLINE;
    while p.exitcode().is_none() {
        assert!(Instant::now() < deadline, "the writer did not finish");
        check(&l.to_vec().unwrap());
        let len = l.len();
        if len > 10 {
            check(&l.slice(..len / 2).unwrap());
        }
    }
    common::join(&p).unwrap();
    let _ = &mut p;
    let all = l.to_vec().unwrap();
    assert_eq!(all.len() as u64, n);
    check(&all);
}
