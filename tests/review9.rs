//! Review 9: hostile peers and full /dev/shm against what earlier reviews
//! left out (the Manager registry's records, ...).

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shmproc::{DictProxy, ListProxy, Manager, OpenError, Pool, RawSegment};

mod common;
use common::dev_shm_files;

fn unique(tag: &str) -> String {
    format!("review9-{tag}-{}", std::process::id())
}

/// Header fields of a segment that name its kind and element identity
/// (kind, elem_size, elem_align at 16..28; elem_hash at 32..40; type name
/// at 72..128: src/shm/header.rs).
const IDENTITY: [(u64, usize); 3] = [(16, 12), (32, 8), (72, 56)];

fn file_of(name: &str) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(format!("/dev/shm/shmproc.{name}")).unwrap()
}

fn read_identity(f: &std::fs::File) -> Vec<Vec<u8>> {
    IDENTITY
        .iter()
        .map(|&(off, len)| {
            let mut b = vec![0u8; len];
            f.read_exact_at(&mut b, off).unwrap();
            b
        })
        .collect()
}

fn write_identity(f: &std::fs::File, id: &[Vec<u8>]) {
    for (&(off, _), b) in IDENTITY.iter().zip(id) {
        f.write_all_at(b, off).unwrap();
    }
}

/// What a hostile peer with write access does to a Manager's registry:
/// stores `record` under `key` (the registry is a dict of String to bytes;
/// its header is made a plain dict's for the insert, then put back).
fn hostile_record(mgr: &str, key: &str, record: &[u8]) {
    let probe = DictProxy::<String, Vec<u8>>::new().unwrap();
    let dict_id = read_identity(&file_of(probe.name()));
    let f = file_of(mgr);
    let mgr_id = read_identity(&f);
    write_identity(&f, &dict_id);
    let d = DictProxy::<String, Vec<u8>>::open(mgr).unwrap();
    d.insert(key.to_owned(), record.to_vec()).unwrap();
    drop(d);
    write_identity(&f, &mgr_id);
}

/// A registry record (src/manager/registry.rs `Record::encode`).
fn record(kind_word: u32, hash: u64, segment: &str, type_name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&kind_word.to_le_bytes());
    b.extend_from_slice(&hash.to_le_bytes());
    b.extend_from_slice(&(segment.len() as u32).to_le_bytes());
    b.extend_from_slice(segment.as_bytes());
    b.extend_from_slice(type_name.as_bytes());
    b
}

/// (start time as u32) << 32 | pid: how a record names its live maker.
fn packed_identity(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let start: u64 = after.split(' ').nth(19).unwrap().parse().unwrap();
    (u64::from(start as u32) << 32) | u64::from(pid)
}

/// Runs `f` on a thread; its result, or None if it did not return by `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// A record that says "being made by process P" for a P that lives and
/// never finishes (a hostile peer's record, or a maker stopped for good)
/// must not hang every lookup of that name forever.
#[test]
fn a_record_being_made_by_a_live_process_that_never_finishes_does_not_hang_lookups() {
    let mgr = Manager::create(&unique("making")).unwrap();
    let mut sleeper = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let hash = packed_identity(sleeper.id());
    const LIST: u32 = 15; // Kind::List in a header or record
    hostile_record(mgr.name(), "victim", &record(1 << 31 | LIST, hash, "review9-nothing", "ListProxy<u64>"));
    let m = mgr.clone();
    let got = within(Duration::from_secs(20), move || m.list::<u64>("victim").map(|_| ()));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let got = got.expect("a lookup of a name 'being made' by a live process hung (20 s)");
    assert!(matches!(got, Err(OpenError::InitTimeout { .. })), "{got:?}");
}

/// Set (to the test's name) in the re-run inside a private tmpfs.
const INNER: &str = "SHMPROC_REVIEW9_INNER";

/// Runs `test` again inside a private mount namespace with a tmpfs of
/// `size` on /dev/shm (as tests/review4_space.rs does; needs root, skips
/// otherwise). True in the re-run (the caller does the work there).
fn inside_dev_shm_of(test: &str, size: &str) -> bool {
    rerun(test, Some(size))
}

/// Runs `test` again in a child process (the same test binary, that one
/// test), inside a private tmpfs of `size` if given. True in the re-run.
fn rerun(test: &str, size: Option<&str>) -> bool {
    common::rerun_in_tmpfs(test, INNER, size, Duration::from_secs(60))
}

/// Fills the (private) /dev/shm to its last page; dropping the result
/// frees it again.
fn fill_dev_shm(tag: &str) -> Vec<RawSegment> {
    common::fill_dev_shm(&format!("review9-fill-{tag}"), &[1 << 20, 1 << 16, 4096, 1])
}

shmproc::task! { fn review9_shout(s: String) -> String { s.to_uppercase() } }

/// Waits (at most 10 s) until `pool` has started `n` workers in all.
fn wait_started(pool: &Pool, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while pool.__created().0.len() < n {
        assert!(Instant::now() < until, "the pool started {} workers, not {n}, within 10 s", pool.__created().0.len());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A worker dies while /dev/shm is full, so its replacement cannot get
/// its rings: the pool goes on with the workers it has (their results
/// are not failed for it), and once space is back it is whole again.
#[test]
fn a_worker_replacement_on_a_full_dev_shm_does_not_fail_the_pool_for_good() {
    if !inside_dev_shm_of("a_worker_replacement_on_a_full_dev_shm_does_not_fail_the_pool_for_good", "16m") {
        return;
    }
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.apply(review9_shout, "a".into()).unwrap(), "A");
    let (pids, rings) = pool.__created();
    assert_eq!((pids.len(), rings.len()), (2, 5)); // the control segment, then two rings per worker
    let filler = fill_dev_shm("pool");
    // Held open, the first worker's rings keep their pages after the pool
    // removes their names: /dev/shm stays full when the worker is gone.
    let held: Vec<std::fs::File> =
        rings[1..3].iter().map(|r| std::fs::File::open(format!("/dev/shm/shmproc.{r}")).unwrap()).collect();
    // SAFETY: kill has no memory preconditions; the pid is our pool's worker (not reaped yet).
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
    // The other worker serves everything meanwhile (well past the
    // manager's noticing the death and failing to start a replacement).
    let until = Instant::now() + Duration::from_secs(2);
    let mut k = 0;
    while Instant::now() < until {
        let r = pool.apply(review9_shout, format!("x{k}"));
        assert_eq!(
            r.as_deref().ok(),
            Some(format!("X{k}").as_str()),
            "apply {k} with one worker left on a full /dev/shm: {r:?}"
        );
        k += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = pool.map(review9_shout, (0..20).map(|i| format!("z{i}")).collect::<Vec<_>>());
    assert_eq!(r.unwrap(), (0..20).map(|i| format!("Z{i}")).collect::<Vec<_>>(), "a map with one worker left");
    drop((filler, held));
    // Space again: a replacement starts, and serves after the last original dies.
    wait_started(&pool, 3);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pids[1] as i32, libc::SIGKILL) }, 0);
    let r = pool.map(review9_shout, (0..20).map(|i| format!("y{i}")).collect::<Vec<_>>());
    assert_eq!(r.unwrap(), (0..20).map(|i| format!("Y{i}")).collect::<Vec<_>>());
    pool.terminate();
    pool.join().unwrap();
    drop(pool);
    assert_eq!(dev_shm_files(), Vec::<String>::new(), "the pool left files");
}

/// The only worker dies while /dev/shm is full: jobs fail with a clear
/// error (no hang) while no worker can be set up, and the pool works
/// again once space is back.
#[test]
fn a_pool_whose_only_worker_cannot_be_replaced_fails_jobs_clearly_and_recovers() {
    if !inside_dev_shm_of("a_pool_whose_only_worker_cannot_be_replaced_fails_jobs_clearly_and_recovers", "16m") {
        return;
    }
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(review9_shout, "a".into()).unwrap(), "A");
    let (pids, rings) = pool.__created();
    let filler = fill_dev_shm("pool1");
    let held: Vec<std::fs::File> =
        rings[1..3].iter().map(|r| std::fs::File::open(format!("/dev/shm/shmproc.{r}")).unwrap()).collect();
    // SAFETY: kill has no memory preconditions; the pid is our pool's worker (not reaped yet).
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
    let r = pool.apply_async(review9_shout, "b".into()).unwrap().get_timeout(Duration::from_secs(20));
    let err = format!("{:?}", r.expect_err("an apply with no worker and a full /dev/shm succeeded"));
    assert!(err.contains("no space"), "{err}");
    drop((filler, held));
    // Space again: a replacement starts and serves.
    wait_started(&pool, 2);
    let r = pool.map(review9_shout, (0..20).map(|i| format!("y{i}")).collect::<Vec<_>>());
    assert_eq!(r.unwrap(), (0..20).map(|i| format!("Y{i}")).collect::<Vec<_>>());
    pool.terminate();
    pool.join().unwrap();
    drop(pool);
    assert_eq!(dev_shm_files(), Vec::<String>::new(), "the pool left files");
}

shmproc::entry! {
    fn review9_len(v: Vec<u8>) {
        assert!(!v.is_empty());
    }
}

/// Pids of this process's children (running or not reaped).
fn children() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Everything made at once (not grown) on a full /dev/shm, and on one with
/// a little room: a clear error, no file and no process left behind, and
/// all of it works once space is back.
#[test]
fn creations_on_a_full_dev_shm_fail_cleanly_and_leave_nothing() {
    if !inside_dev_shm_of("creations_on_a_full_dev_shm_fail_cleanly_and_leave_nothing", "16m") {
        return;
    }
    use shmproc::{JoinableQueue, Process, Queue, SimpleQueue};
    let mgr = Manager::create("review9-mgr").unwrap();
    let before = dev_shm_files();
    for room in [0u64, 64 << 10, 1100 << 10, 2300 << 10, 3 << 20] {
        let mut filler = fill_dev_shm(&format!("c{room}"));
        // Leave about `room` bytes free.
        let mut freed = 0;
        while freed < room {
            let Some(seg) = filler.pop() else { break };
            freed += seg.len() as u64;
        }
        let files = dev_shm_files();
        let kids = children();
        let what = |x: &str| format!("{x} with {room} bytes free");
        let mut p = Process::new(review9_len, vec![7u8; 4 << 20]);
        assert!(p.start().is_err(), "{}", what("a process with a 4 MiB argument started"));
        match shmproc::pipe(true) {
            Err(e) => println!("{}: {e}", what("pipe")),
            Ok(pair) => drop(pair),
        }
        for r in [
            Queue::<String>::new(64).map(drop),
            Queue::<u64>::new(100_000).map(drop),
            JoinableQueue::<String>::new(64).map(drop),
            SimpleQueue::<Vec<u8>>::new(16).map(drop),
            Queue::<String>::new(0).map(drop),
        ] {
            if let Err(e) = r {
                assert!(matches!(e, OpenError::NoSpace { .. }), "{}: {e:?}", what("a queue"));
            }
        }
        for r in [
            mgr.list::<String>("l").map(drop),
            mgr.dict::<String, u64>("d").map(drop),
            mgr.queue::<String>("q", 0).map(drop),
            mgr.queue::<u64>("b", 100_000).map(drop),
            mgr.array::<u64>("a", 1 << 20).map(drop),
        ] {
            if let Err(e) = r {
                assert!(matches!(e, OpenError::NoSpace { .. }), "{}: {e:?}", what("a Manager object"));
            }
        }
        match Pool::new(2) {
            Err(e) => println!("{}: {e}", what("Pool::new(2)")),
            Ok(pool) => {
                let r = pool.map(review9_shout, vec!["a".to_string(); 10]);
                assert_eq!(r.unwrap(), vec!["A".to_string(); 10], "{}", what("a pool's map"));
                pool.terminate();
                pool.join().unwrap();
            }
        }
        // What failed left nothing; the Manager keeps what it made.
        let listed: Vec<String> = mgr.names().unwrap().into_iter().map(|e| e.segment).collect();
        let mut now = dev_shm_files();
        now.retain(|f| !listed.iter().any(|s| f.starts_with(&format!("shmproc.{s}"))));
        let mut expect = files.clone();
        expect.retain(|f| !listed.iter().any(|s| f.starts_with(&format!("shmproc.{s}"))));
        assert_eq!(now, expect, "{}", what("files left behind"));
        let until = Instant::now() + Duration::from_secs(10);
        while children() != kids {
            assert!(Instant::now() < until, "{}: children {:?}, before {kids:?}", what("processes left"), children());
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(filler);
        let names = mgr.names().unwrap();
        for e in &names {
            assert!(
                std::path::Path::new(&format!("/dev/shm/shmproc.{}", e.segment)).exists(),
                "{e:?} listed, not there"
            );
        }
    }
    // Space again: everything works.
    let mut p = Process::new(review9_len, vec![7u8; 4 << 20]);
    p.start().unwrap();
    p.join().unwrap();
    let (mut a, mut b) = shmproc::pipe(true).unwrap();
    a.send_value(&"hi".to_string()).unwrap();
    assert_eq!(b.recv_value::<String>().unwrap(), "hi");
    drop((a, b));
    let l = mgr.list::<String>("l").unwrap();
    l.append("x".into()).unwrap();
    drop(l);
    mgr.queue::<String>("q", 0).unwrap().put("y".into()).unwrap();
    assert_eq!(mgr.queue::<String>("q", 0).unwrap().get().unwrap(), "y");
    mgr.unlink_all().unwrap();
    drop(mgr);
    let after = dev_shm_files();
    assert!(after.iter().all(|f| before.contains(f) || f.starts_with("shmproc.review9-fill")), "{after:?}");
    assert!(after.is_empty() || after == before, "left: {after:?} (before {before:?})");
}

/// Free bytes of (the private) /dev/shm.
fn dev_shm_free() -> u64 {
    // SAFETY: a zeroed statvfs is a valid out-parameter; the path is a C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut st) }, 0);
    st.f_bavail * st.f_frsize
}

/// An unbounded queue made on a /dev/shm with room for its control
/// segment but not for its first ring: either an error at once, or a
/// queue that takes puts. Before, `Queue::new(0)` succeeded without ring
/// 0, and every put of that queue (a Manager's queue too, persisted)
/// failed with `Closed` for good, even after space came back.
#[test]
fn an_unbounded_queue_made_without_room_for_its_first_ring_is_an_error_not_closed() {
    if !inside_dev_shm_of("an_unbounded_queue_made_without_room_for_its_first_ring_is_an_error_not_closed", "8m") {
        return;
    }
    let mgr = Manager::create("review9-q-mgr").unwrap();
    let before = dev_shm_files();
    let (mut made, mut refused) = (0, 0);
    for pages in 0..40u64 {
        let mut filler = fill_dev_shm(&format!("q{pages}"));
        while dev_shm_free() < pages * 4096 {
            filler.pop().expect("freed every filler");
        }
        let q = shmproc::Queue::<String>::new(0);
        let m = mgr.queue::<String>(&format!("q{pages}"), 0);
        let got = (q.is_ok(), m.is_ok());
        for (what, r) in [("Queue::new(0)", q), ("Manager::queue", m)] {
            match r {
                Ok(q) => {
                    made += 1;
                    let put = q.put_nowait("x".into());
                    assert!(put.is_ok(), "{what} with {pages} pages free: made, but a put gives {put:?}");
                    assert_eq!(q.get_nowait().unwrap(), "x");
                }
                Err(e) => {
                    refused += 1;
                    assert!(matches!(e, OpenError::NoSpace { .. }), "{what} with {pages} pages free: {e:?}");
                }
            }
        }
        drop(filler);
        // Space again: the Manager's queue (made now if it was refused) takes puts.
        let q = mgr.queue::<String>(&format!("q{pages}"), 0).unwrap();
        q.put("y".into()).unwrap();
        assert_eq!(q.get_nowait().unwrap(), "y", "{pages} pages, made {got:?}");
    }
    assert!(made > 0 && refused > 0, "made {made}, refused {refused}: the sweep missed the edge");
    mgr.unlink_all().unwrap();
    drop(mgr);
    assert_eq!(dev_shm_files(), before.into_iter().filter(|f| !f.contains("review9-q-mgr")).collect::<Vec<_>>());
}

/// Garbage records in a Manager's registry (short, lengths past the end,
/// names that are no segment names, unknown kinds, a maker of id 0, a
/// record naming another record's segment): `names()` lists what decodes,
/// lookups give errors, `unlink_all` and the drop work; nothing panics.
#[test]
fn garbage_records_in_a_manager_registry_give_errors_never_a_crash() {
    let mgr = Manager::create(&unique("garbage")).unwrap();
    let good = mgr.list::<u64>("good").unwrap();
    good.append(5).unwrap();
    let good_seg = good.name().to_owned();
    let records: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("short", vec![15, 0, 0]),
        ("no-len", record(15, 0, "", "")[..13].to_vec()),
        ("len-past-end", {
            let mut r = record(15, 0, "abc", "");
            r[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            r
        }),
        ("bad-utf8", {
            let mut r = record(15, 0, "abc", "");
            r[16] = 0xff;
            r
        }),
        ("slash", record(15, 0, "../../etc/passwd", "ListProxy<u64>")),
        ("nul", record(15, 0, "a\0b", "x")),
        ("unknown-kind", record(999, 0, "x", "x")),
        ("making-tid-0", record(1 << 31 | 15, 0, "review9-made-by-nobody", "x")),
        ("making-garbage", record(u32::MAX, u64::MAX, "review9-made-by-garbage", "x")),
        ("same-seg-other-kind", record(16, 0, &good_seg, "DictProxy")),
    ];
    for (k, r) in &records {
        hostile_record(mgr.name(), k, r);
    }
    let names = mgr.names().unwrap();
    assert!(names.iter().any(|e| e.name == "good" && e.segment == good_seg), "{names:?}");
    for (k, _) in &records {
        let r = within(Duration::from_secs(10), {
            let (m, k) = (mgr.clone(), k.to_string());
            move || m.list::<u64>(&k).map(|l| l.len())
        });
        let r = r.unwrap_or_else(|| panic!("lookup of {k:?} hung"));
        // A record whose maker is gone is made afresh; any other is an error.
        assert!(r.is_err() || k.starts_with("making"), "{k}: {r:?}");
    }
    assert_eq!(mgr.list::<u64>("good").unwrap().to_vec().unwrap(), [5]);
    mgr.unlink_all().unwrap();
    assert!(ListProxy::<u64>::open(&good_seg).is_err());
    drop((good, mgr));
}

/// Every list and dict operation on a /dev/shm filled after the
/// container was (not growth alone, which review4 covers): each is done
/// or refused with `NoSpace`, and the container then reads as a model
/// that applied exactly the operations that were done.
#[test]
fn container_operations_on_a_full_dev_shm_are_done_or_refused_whole() {
    if !inside_dev_shm_of("container_operations_on_a_full_dev_shm_are_done_or_refused_whole", "8m") {
        return;
    }
    use shmproc::ContainerError;
    use std::collections::BTreeMap;
    let l = ListProxy::<String>::create("review9-ops-list").unwrap();
    let d = DictProxy::<String, Vec<u8>>::create("review9-ops-dict").unwrap();
    let mut lm: Vec<String> = (0..300).map(|i| format!("item-{i}-{}", "z".repeat(i % 50))).collect();
    l.extend(lm.clone()).unwrap();
    let mut dm: BTreeMap<String, Vec<u8>> = (0..300).map(|i| (format!("k{i}"), vec![i as u8; i % 200])).collect();
    d.update(dm.clone()).unwrap();
    // Deletions first (they free room in the heap), to leave little.
    for _ in 0..50 {
        assert_eq!(l.pop().unwrap(), lm.pop().unwrap());
    }
    let filler = fill_dev_shm("ops");
    let refused = |r: &Result<(), ContainerError>, what: &str| match r {
        Ok(()) => false,
        Err(ContainerError::NoSpace { .. }) => true,
        Err(e) => panic!("{what} on a full /dev/shm: {e:?}"),
    };
    let (mut done, mut no) = (0, 0);
    for round in 0..400usize {
        let big = "b".repeat(round * 37 % 3000);
        let (what, r) = match round % 10 {
            0 => ("list set", l.set(3, big.clone()).map(|()| lm[3] = big.clone())),
            1 => ("list insert", l.insert(1, big.clone()).map(|()| lm.insert(1, big.clone()))),
            2 => ("list pop_at", l.pop_at(2).map(|v| assert_eq!(v, lm.remove(2)))),
            3 => ("list reverse", l.reverse().map(|()| lm.reverse())),
            4 => ("list sort", l.sort().map(|()| lm.sort())),
            5 => (
                "dict insert",
                d.insert(format!("n{round}"), big.clone().into_bytes()).map(|_| {
                    dm.insert(format!("n{round}"), big.clone().into_bytes());
                }),
            ),
            6 => (
                "dict replace",
                d.insert("k7".into(), big.clone().into_bytes()).map(|_| {
                    dm.insert("k7".into(), big.clone().into_bytes());
                }),
            ),
            7 => (
                "dict remove",
                d.remove(&format!("k{}", round / 10)).map(|v| assert_eq!(v, dm.remove(&format!("k{}", round / 10)))),
            ),
            8 => ("dict popitem", d.popitem().map(|(k, v)| assert_eq!(dm.remove(&k), Some(v)))),
            _ => ("shrink_to_fit", l.shrink_to_fit().and_then(|()| d.shrink_to_fit())),
        };
        if refused(&r, what) {
            no += 1;
        } else {
            done += 1;
        }
        assert_eq!(l.to_vec().unwrap(), lm, "list after {what} (round {round}, {r:?})");
        assert_eq!(d.items().unwrap().into_iter().collect::<BTreeMap<_, _>>(), dm, "dict after {what} (round {round})");
    }
    println!("{done} done, {no} refused");
    drop(filler);
    l.append("after".into()).unwrap();
    lm.push("after".into());
    assert_eq!(l.to_vec().unwrap(), lm);
}

/// A process that opens an unbounded queue right after another created
/// it (`open_or_create` by both, say) uses it at once: a get finds it
/// empty and a put goes in. The control segment is published before the
/// creator has made ring 0; a put or get in between found no ring and
/// gave `Closed` (a blocking `get` returned at once with it).
#[test]
fn an_unbounded_queue_opened_while_its_creator_makes_its_first_ring_is_not_closed() {
    use shmproc::{Queue, TryGetError};
    let rounds = 300;
    let mut closed = Vec::new();
    for i in 0..rounds {
        let name = unique(&format!("fresh-{i}"));
        let opener = std::thread::spawn({
            let name = name.clone();
            move || {
                let until = Instant::now() + Duration::from_secs(10);
                let q = loop {
                    match Queue::<u64>::open(&name) {
                        Ok(q) => break q,
                        Err(_) if Instant::now() < until => std::hint::spin_loop(),
                        Err(e) => panic!("open of {name}: {e}"),
                    }
                };
                let got = q.get_nowait();
                let put = q.put_nowait(7);
                (matches!(got, Err(TryGetError::Empty)), format!("get {got:?}, put {put:?}"))
            }
        });
        let q = Queue::<u64>::create(&name, 0).unwrap();
        let (ok, what) = opener.join().unwrap();
        if !ok || what.contains("Err(Closed") {
            closed.push(what);
        }
        drop(q);
    }
    assert!(
        closed.is_empty(),
        "{} of {rounds} opens saw the fresh queue closed: {:?}",
        closed.len(),
        &closed[..closed.len().min(3)]
    );
}

/// What a hostile task does in its worker: writes `n` random 8-byte words
/// at random offsets of every shmproc segment its process maps (the
/// pool's control segment, the worker's two rings, an arena), through the
/// files (the mappings see it).
fn vandalize(seed: u64, n: u32) {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut paths: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with("/dev/shm/shmproc."))
        .collect();
    paths.dedup();
    for p in paths {
        let Ok(f) = std::fs::OpenOptions::new().write(true).open(p) else { continue };
        let len = f.metadata().map_or(0, |m| m.len());
        // Past the common header (a garbage header only makes the
        // segment unopenable: the pool cannot start workers, a clear error).
        if len < 136 {
            continue;
        }
        for _ in 0..n {
            let off = 128 + next() % ((len - 128) / 8) * 8;
            let _ = f.write_all_at(&next().to_ne_bytes(), off);
        }
    }
}

shmproc::task! { fn review9_vandal(seed: u64) -> u64 { if seed % 1000 == 7 { vandalize(seed, 64) } seed } }
shmproc::task! { fn review9_vandal_s(s: String) -> String { if s.len().is_multiple_of(3) { vandalize(s.len() as u64 * 7919, 256) } s } }

/// Tasks that write garbage over their pool's shared memory (the control
/// records, the worker's task and result rings): every job still ends
/// (values, garbage values or errors) within its deadline, the pool's
/// process does not crash, and the pool can be terminated.
#[test]
fn tasks_that_write_garbage_over_their_pool_never_hang_or_crash_it() {
    if !rerun("tasks_that_write_garbage_over_their_pool_never_hang_or_crash_it", None) {
        return;
    }
    let pool = Pool::new(2).unwrap();
    let (mut ok, mut failed) = (0, 0);
    for round in 0..8u64 {
        let items: Vec<u64> =
            (round * 10..round * 10 + 10).map(|i| if i % 3 == 0 { i * 1000 + 7 } else { i }).collect();
        let r = pool.map_async_chunked(review9_vandal, items, 1).unwrap();
        match r.get_timeout(Duration::from_secs(20)) {
            Ok(v) => {
                ok += v.len();
            }
            Err(shmproc::pool::GetTimeoutError::TimedOut(_)) => panic!("round {round}: the map hung (20 s)"),
            Err(e) => {
                println!("round {round}: {e}");
                failed += 1;
            }
        }
        let strings: Vec<String> = (0..20).map(|i| "s".repeat((round * 20 + i) as usize % 97)).collect();
        match pool.map_async(review9_vandal_s, strings).unwrap().get_timeout(Duration::from_secs(20)) {
            Ok(v) => ok += v.len(),
            Err(shmproc::pool::GetTimeoutError::TimedOut(_)) => panic!("round {round}: the map of strings hung (20 s)"),
            Err(e) => {
                println!("round {round}: {e}");
                failed += 1;
            }
        }
        // Plain data past the arena threshold: the bulk path.
        let many: Vec<u64> =
            (0..20_000).map(|i| i * 1000 + u64::from(i % 4000 == 0) * 7 + round * 10_000_000).collect();
        match pool.map_async(review9_vandal, many).unwrap().get_timeout(Duration::from_secs(20)) {
            Ok(v) => ok += v.len(),
            Err(shmproc::pool::GetTimeoutError::TimedOut(_)) => panic!("round {round}: the bulk map hung (20 s)"),
            Err(e) => {
                println!("round {round}: {e}");
                failed += 1;
            }
        }
        let r = pool.apply_async(review9_shout, "x".into()).unwrap().get_timeout(Duration::from_secs(20));
        assert!(!matches!(r, Err(shmproc::pool::GetTimeoutError::TimedOut(_))), "round {round}: an apply hung");
    }
    println!("{ok} values, {failed} failed maps");
    pool.terminate();
    pool.join().unwrap();
}

shmproc::task! { fn review9_triple(x: u64) -> u64 { x.wrapping_mul(3) } }

/// A pool's plain-data jobs that want an arena (map_async writes its
/// whole input into one; imap and starmap-like streams too) on a full
/// /dev/shm: they run without one, with the right values.
#[test]
fn plain_data_jobs_on_a_full_dev_shm_run_without_an_arena() {
    if !inside_dev_shm_of("plain_data_jobs_on_a_full_dev_shm_run_without_an_arena", "16m") {
        return;
    }
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(review9_triple, 0..10u64).unwrap(), (0..10).map(|x| x * 3).collect::<Vec<_>>());
    let filler = fill_dev_shm("arena");
    let n = 1_000_000u64;
    let want: Vec<u64> = (0..n).map(|x| x * 3).collect();
    let r = pool.map_async(review9_triple, (0..n).collect::<Vec<_>>()).unwrap().get_timeout(Duration::from_secs(40));
    assert!(r.as_ref().is_ok_and(|v| *v == want), "map_async on a full /dev/shm: {:?}", r.map(|v| v.len()));
    let r = pool
        .map_async_chunked(review9_triple, (0..n).collect::<Vec<_>>(), 1000)
        .unwrap()
        .get_timeout(Duration::from_secs(40));
    assert!(r.as_ref().is_ok_and(|v| *v == want), "map_async_chunked on a full /dev/shm: {:?}", r.map(|v| v.len()));
    let got: Vec<u64> = pool.imap(review9_triple, 0..100_000u64).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(got, want[..100_000]);
    let v = pool.map(review9_triple, 0..n).unwrap();
    assert_eq!(v, want);
    drop(filler);
    let v = pool.map_async(review9_triple, (0..n).collect::<Vec<_>>()).unwrap().get().unwrap();
    assert_eq!(v, want);
    pool.terminate();
    pool.join().unwrap();
    drop(pool);
    assert_eq!(dev_shm_files(), Vec::<String>::new(), "the pool left files");
}

/// Every segment a Manager (its registry, a list, a dict, an unbounded
/// queue and its rings, a value, a lock, an array) and a Pool (control
/// segment, worker rings, map arena) make is closed to another user:
/// `nobody` can neither read nor write any of them.
#[test]
fn every_segment_of_a_manager_and_a_pool_is_closed_to_other_users() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--version").output().is_err() {
        println!("skipping: needs root and setpriv to act as another user");
        return;
    }
    let mgr = Manager::create(&unique("closed")).unwrap();
    mgr.list::<String>("l").unwrap().append("x".into()).unwrap();
    mgr.dict::<u64, u64>("d").unwrap().insert(1, 2).unwrap();
    let q = mgr.queue::<String>("q", 0).unwrap();
    for i in 0..3000 {
        q.put(format!("item {i}")).unwrap(); // a few rings
    }
    mgr.value("v", 1u64).unwrap();
    mgr.lock("k").unwrap();
    mgr.array::<u8>("a", 10).unwrap();
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.map(review9_triple, 0..200_000u64).unwrap().len(), 200_000);
    let (_, pool_segs) = pool.__created();
    let me = format!("anon.{}.", std::process::id());
    let files: Vec<String> = dev_shm_files()
        .into_iter()
        .filter(|f| f.contains(&me) || f.contains(mgr.name()))
        .map(|f| format!("/dev/shm/{f}"))
        .collect();
    for s in pool_segs.iter().chain(mgr.names().unwrap().iter().map(|e| &e.segment)) {
        assert!(files.iter().any(|f| f.ends_with(&format!("shmproc.{s}"))), "{s} not among {files:?}");
    }
    let q_seg = mgr.names().unwrap().into_iter().find(|e| e.name == "q").unwrap().segment;
    assert!(files.iter().filter(|f| f.contains(&format!("{q_seg}."))).count() > 1, "no rings of {q_seg} in {files:?}");
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "sh", "-c"])
        .arg(r#"for f; do if cat "$f" >/dev/null 2>&1; then echo "READ $f"; fi; if (: >>"$f") 2>/dev/null; then echo "WRITE $f"; fi; done; echo done"#)
        .arg("sh")
        .args(&files)
        .current_dir("/")
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.trim(), "done", "another user got at {} files:\n{out}", files.len());
    pool.terminate();
    pool.join().unwrap();
    mgr.unlink_all().unwrap();
}

/// `wait()` on an unbounded queue opened while its creator makes its
/// first ring: empty and open, so not ready (it was reported readable at
/// once, as `get` then said `Closed`).
#[test]
fn wait_on_an_unbounded_queue_opened_while_its_creator_makes_its_first_ring_is_not_ready() {
    use shmproc::Queue;
    let rounds = 300;
    let mut ready = Vec::new();
    for i in 0..rounds {
        let name = unique(&format!("fresh-wait-{i}"));
        let opener = std::thread::spawn({
            let name = name.clone();
            move || {
                let until = Instant::now() + Duration::from_secs(10);
                let mut q = loop {
                    match Queue::<u64>::open(&name) {
                        Ok(q) => break q,
                        Err(_) if Instant::now() < until => std::hint::spin_loop(),
                        Err(e) => panic!("open of {name}: {e}"),
                    }
                };
                let r = shmproc::wait(&mut [&mut q], Some(Duration::from_millis(1)));
                let got = q.get_nowait();
                (r.as_ref().is_ok_and(|r| r.is_empty()), format!("wait {r:?}, then get {got:?}"))
            }
        });
        let q = Queue::<u64>::create(&name, 0).unwrap();
        let (not_ready, what) = opener.join().unwrap();
        if !not_ready {
            ready.push(what);
        }
        drop(q);
    }
    assert!(
        ready.is_empty(),
        "{} of {rounds} waits on an empty fresh queue returned it ready: {:?}",
        ready.len(),
        &ready[..ready.len().min(3)]
    );
}

shmproc::task! {
    fn review9_init(marker: String) -> Result<(), String> {
        if std::path::Path::new(&marker).exists() { Err("the marker says no".into()) } else { Ok(()) }
    }
}

/// A worker dies while new workers' initializer fails (it may need
/// something that is missing for a while: room in /dev/shm, a file): the
/// worker that lives goes on serving every job, and once the initializer
/// works again the pool is whole. Before, five failed starts in a row
/// failed every job (those the live worker would run too) and no worker
/// was ever started again.
#[test]
fn workers_failing_their_initializer_for_a_while_do_not_fail_the_pool_for_good() {
    let marker = format!("/tmp/review9-init-marker-{}", std::process::id());
    let _ = std::fs::remove_file(&marker);
    let pool = Pool::builder().processes(2).initializer(review9_init, marker.clone()).build().unwrap();
    assert_eq!(pool.apply(review9_shout, "a".into()).unwrap(), "A");
    // Both first workers past their initializer before the marker appears (a worker still in it would
    // fail too, and with both slots failing the pool rightly fails its jobs).
    let until = Instant::now() + Duration::from_secs(20);
    let pids = loop {
        let pids = pool.__created().0;
        let ran = pool.map_chunked(review9_pid, 0..200u32, 1).unwrap();
        if pids.len() == 2 && pids.iter().all(|p| ran.contains(p)) {
            break pids;
        }
        assert!(Instant::now() < until, "the two first workers did not both run a task within 20 s");
    };
    std::fs::write(&marker, b"no").unwrap();
    // SAFETY: kill has no memory preconditions; the pid is our pool's worker (not reaped yet).
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
    // Well past five failed replacements, the other worker serves.
    wait_started(&pool, 2 + 5);
    let r = pool.map(review9_shout, (0..20).map(|i| format!("z{i}")).collect::<Vec<_>>());
    let _ = std::fs::remove_file(&marker);
    assert_eq!(r.unwrap(), (0..20).map(|i| format!("Z{i}")).collect::<Vec<_>>(), "a map with one worker left");
    // The initializer works again: a replacement serves after the last original dies.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let r = pool.map_chunked(review9_pid, 0..200u32, 1).unwrap();
        if r.iter().any(|p| !pids.contains(p)) {
            break;
        }
        assert!(Instant::now() < until, "no replacement worker ran a task within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.terminate();
    pool.join().unwrap();
}

shmproc::task! { fn review9_pid(_x: u32) -> u32 { std::process::id() } }
