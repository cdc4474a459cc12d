//! Review 4: growth into a full /dev/shm. Every object that grows after
//! it was created (a ListProxy/DictProxy and their heaps, a Manager's
//! registry, an unbounded Queue's chain of rings, a Pool's map arena) is
//! grown on a private, small tmpfs that is then filled to its last page:
//! the growth must fail with a clear error (or, where the design says so,
//! "full"), lose nothing, never SIGBUS or hang, and work again once space
//! frees up.
//!
//! Each test re-runs itself (the same test binary, the one test) inside
//! `unshare -m` with a 4 MiB tmpfs mounted on /dev/shm (needs root; skips
//! otherwise), so the real /dev/shm is never filled.

use std::time::Duration;

use shmproc::{ContainerError, DictProxy, ListProxy, Manager, OpenError, Queue, RawSegment};

mod common;
use common::dev_shm_files;

/// Set (to the test's name) in the re-run inside the private tmpfs.
const INNER: &str = "SHMPROC_REVIEW4_INNER";
/// Any one re-run.
const DEADLINE: Duration = Duration::from_secs(90);

/// Runs `test` again inside a private mount namespace with a small tmpfs on
/// /dev/shm. Returns true in the re-run (the caller then does the work),
/// false in the outer run (after checking the re-run passed).
fn inside_small_dev_shm(test: &str) -> bool {
    inside_dev_shm_of(test, "4m")
}

/// [`inside_small_dev_shm`] with a tmpfs of `size` (`mount -o size=`).
fn inside_dev_shm_of(test: &str, size: &str) -> bool {
    common::rerun_in_tmpfs(test, INNER, Some(size), DEADLINE)
}

/// Fills the (private) /dev/shm to its last page; dropping the result
/// frees it again.
fn fill_dev_shm(tag: &str) -> Vec<RawSegment> {
    common::fill_dev_shm(&format!("review4-fill-{tag}"), &[1 << 18, 1 << 14, 4096, 1])
}

#[test]
fn review4_list_growth_into_a_full_dev_shm_fails_cleanly_and_loses_nothing() {
    if !inside_small_dev_shm("review4_list_growth_into_a_full_dev_shm_fails_cleanly_and_loses_nothing") {
        return;
    }
    let l = ListProxy::<u64>::create("review4-list").unwrap();
    let s = ListProxy::<String>::create("review4-slist").unwrap();
    l.extend(0..100).unwrap();
    s.extend((0..10).map(|i| format!("s{i}"))).unwrap();
    let filler = fill_dev_shm("list");
    // Grow until the file cannot: an error, the list as before each failure.
    let mut n = 100u64;
    let err = loop {
        match l.extend(n..n + 1000) {
            Ok(()) => n += 1000,
            Err(e) => break e,
        }
        assert!(n < 10_000_000, "a list grew without bound on a full 4 MiB /dev/shm");
    };
    assert!(matches!(err, ContainerError::NoSpace { .. }), "{err:?}");
    assert_eq!(l.len() as u64, n, "a failed extend changed the length");
    assert_eq!(l.to_vec().unwrap(), (0..n).collect::<Vec<_>>());
    let big = "x".repeat(64 << 10);
    let mut k = 10;
    let err = loop {
        match s.append(big.clone()) {
            Ok(()) => k += 1,
            Err(e) => break e,
        }
        assert!(k < 1000, "a list of strings grew without bound");
    };
    assert!(matches!(err, ContainerError::NoSpace { .. }), "{err:?}");
    assert_eq!(s.len(), k);
    assert_eq!(s.get(0).unwrap(), "s0");
    // Space again: both grow on.
    drop(filler);
    l.extend(n..n + 100_000).unwrap();
    assert_eq!(l.len() as u64, n + 100_000);
    assert_eq!(l.get(-1).unwrap(), n + 99_999);
    s.append(big.clone()).unwrap();
    assert_eq!(s.len(), k + 1);
    assert_eq!(s.get(-1).unwrap(), big);
}

#[test]
fn review4_dict_growth_into_a_full_dev_shm_fails_cleanly_and_loses_nothing() {
    if !inside_small_dev_shm("review4_dict_growth_into_a_full_dev_shm_fails_cleanly_and_loses_nothing") {
        return;
    }
    let d = DictProxy::<String, Vec<u8>>::create("review4-dict").unwrap();
    let filler = fill_dev_shm("dict");
    let mut n = 0u32;
    let err = loop {
        match d.insert(format!("key-{n}"), vec![n as u8; 1000 + n as usize]) {
            Ok(None) => n += 1,
            Ok(Some(_)) => panic!("key-{n} was there before"),
            Err(e) => break e,
        }
        assert!(n < 100_000, "a dict grew without bound on a full /dev/shm");
    };
    assert!(matches!(err, ContainerError::NoSpace { .. }), "{err:?}");
    assert_eq!(d.len(), n as usize, "a failed insert changed the count");
    assert_eq!(d.get(&format!("key-{n}")).unwrap(), None, "a failed insert left its key");
    for i in 0..n {
        assert_eq!(d.get(&format!("key-{i}")).unwrap(), Some(vec![i as u8; 1000 + i as usize]), "key-{i}");
    }
    drop(filler);
    for i in n..n + 200 {
        assert_eq!(d.insert(format!("key-{i}"), vec![i as u8; 1000 + i as usize]).unwrap(), None);
    }
    assert_eq!(d.len(), n as usize + 200);
    assert_eq!(d.get(&format!("key-{n}")).unwrap(), Some(vec![n as u8; 1000 + n as usize]));
}

#[test]
fn review4_manager_registry_growth_into_a_full_dev_shm_fails_cleanly_and_leaks_nothing() {
    if !inside_small_dev_shm("review4_manager_registry_growth_into_a_full_dev_shm_fails_cleanly_and_leaks_nothing") {
        return;
    }
    let before = dev_shm_files();
    let mgr = Manager::create("review4-mgr").unwrap();
    let filler = fill_dev_shm("mgr");
    let baseline = dev_shm_files();
    // No room for a new object's segment (nor, soon, for the registry).
    let long = "n".repeat(200);
    let mut made = Vec::new();
    let mut errors = 0;
    for i in 0..50 {
        match mgr.lock(&format!("{long}-{i}")) {
            Ok(l) => made.push(l),
            Err(OpenError::NoSpace { .. }) => errors += 1,
            Err(other) => panic!("manager lock {i} on a full /dev/shm: {other}"),
        }
    }
    assert!(errors > 0, "50 objects fit in a full /dev/shm");
    let names = mgr.names().unwrap();
    assert_eq!(names.len(), made.len(), "the registry keeps records of objects that failed: {names:?}");
    assert_eq!(dev_shm_files().len(), baseline.len() + made.len(), "a failed make left a file");
    drop(filler);
    // Space again: the same names can be made.
    for i in 0..50 {
        mgr.lock(&format!("{long}-{i}")).unwrap();
    }
    assert_eq!(mgr.names().unwrap().len(), 50);
    drop(made);
    drop(mgr);
    assert_eq!(dev_shm_files(), before, "the Manager left files");
}

#[test]
fn review4_unbounded_queue_growth_into_a_full_dev_shm_is_full_and_loses_nothing() {
    if !inside_small_dev_shm("review4_unbounded_queue_growth_into_a_full_dev_shm_is_full_and_loses_nothing") {
        return;
    }
    let q = Queue::<u64>::create("review4-q", 0).unwrap();
    let filler = fill_dev_shm("q");
    let mut n = 0u64;
    loop {
        match q.put_nowait(n) {
            Ok(()) => n += 1,
            Err(shmproc::TryPutError::Full(v)) => {
                assert_eq!(v, n);
                break;
            }
            Err(other) => panic!("put {n} on a full /dev/shm: {other:?}"),
        }
        assert!(n < 10_000_000, "a queue grew without bound on a full /dev/shm");
    }
    assert_eq!(q.qsize() as u64, n);
    // A blocking put with a deadline times out (it does not hang).
    assert!(q.put_timeout(n, Duration::from_millis(50)).is_err());
    drop(filler);
    for i in n..n + 100_000 {
        q.put_nowait(i).unwrap();
    }
    for i in 0..n + 100_000 {
        assert_eq!(q.get_nowait().unwrap(), i);
    }
}

shmproc::task! { fn review4_double(x: u64) -> u64 { x.wrapping_mul(2) } }

#[test]
fn review4_pool_map_arena_on_a_full_dev_shm_still_maps() {
    if !inside_small_dev_shm("review4_pool_map_arena_on_a_full_dev_shm_still_maps") {
        return;
    }
    let pool = shmproc::Pool::new(1).unwrap();
    assert_eq!(pool.map(review4_double, 0..10u64).unwrap(), (0..10).map(|x| x * 2).collect::<Vec<_>>());
    let filler = fill_dev_shm("pool");
    // Enough plain-data items to want an arena (more than the tmpfs holds).
    let n = 1_000_000u64;
    let r = pool.map(review4_double, (0..n).collect::<Vec<_>>());
    match r {
        Ok(v) => assert!(v.iter().enumerate().all(|(i, &x)| x == 2 * i as u64)),
        Err(e) => println!("map on a full /dev/shm: {e}"),
    }
    drop(filler);
    let v = pool.map(review4_double, (0..n).collect::<Vec<_>>()).unwrap();
    assert!(v.iter().enumerate().all(|(i, &x)| x == 2 * i as u64));
    pool.terminate();
    pool.join().unwrap();
}

/// A growth larger than the free space (but not than the whole tmpfs)
/// must fail before it reserves anything, as a creation does (`fits`):
/// `posix_fallocate` on tmpfs takes every free page before it gives up
/// with ENOSPC, so meanwhile every other process on the host finds
/// /dev/shm full (and on a default tmpfs, half the machine's memory is
/// pinned: the OOM killer's business). A watcher thread creates and drops
/// a one-page segment in a loop while the list tries to grow by 32 MiB
/// into the 24 MiB left of a 64 MiB tmpfs: it must never find /dev/shm
/// full. (Before the fix the watcher may miss the window on some runs;
/// after it there is no window at all.)
#[test]
fn review4_growth_past_the_free_space_fails_without_filling_dev_shm_meanwhile() {
    if !inside_dev_shm_of("review4_growth_past_the_free_space_fails_without_filling_dev_shm_meanwhile", "64m") {
        return;
    }
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let l = ListProxy::<Vec<u8>>::create("review4-bigger").unwrap();
    let _filler = RawSegment::create("review4-most", 40 << 20).unwrap();
    let done = AtomicBool::new(false);
    let (tries, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                match RawSegment::create("review4-watcher", 4096) {
                    Ok(seg) => drop(seg),
                    Err(OpenError::NoSpace { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(other) => panic!("watcher: {other}"),
                }
                tries.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Let the watcher start.
        while tries.load(Ordering::Relaxed) < 10 {
            std::thread::yield_now();
        }
        for _ in 0..20 {
            let r = l.append(vec![1u8; 20 << 20]);
            assert!(matches!(r, Err(ContainerError::NoSpace { .. })), "{:?}", r.map(drop));
        }
        done.store(true, Ordering::Relaxed);
    });
    assert_eq!(l.len(), 0);
    let refused = refused.load(Ordering::Relaxed);
    assert_eq!(
        refused,
        0,
        "{refused} of {} one-page creations found /dev/shm full while a growth that could not fit ran",
        tries.load(Ordering::Relaxed)
    );
    l.append(vec![2u8; 1 << 20]).unwrap();
    assert_eq!(l.get(0).unwrap().len(), 1 << 20);
}

/// The same for an open that reserves the holes of a sparse file of ours
/// (a creator killed before it reserved its pages leaves one): a file
/// larger than the free space must be refused before anything is
/// reserved, not after /dev/shm was filled for everybody.
#[test]
fn review4_open_of_a_sparse_file_past_the_free_space_fails_without_filling_dev_shm_meanwhile() {
    if !inside_dev_shm_of(
        "review4_open_of_a_sparse_file_past_the_free_space_fails_without_filling_dev_shm_meanwhile",
        "64m",
    ) {
        return;
    }
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let f = std::fs::File::create("/dev/shm/shmproc.review4-sparse").unwrap();
    f.set_len(32 << 20).unwrap();
    let _filler = RawSegment::create("review4-most", 40 << 20).unwrap();
    let done = AtomicBool::new(false);
    let (tries, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                match RawSegment::create("review4-watcher", 4096) {
                    Ok(seg) => drop(seg),
                    Err(OpenError::NoSpace { .. }) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(other) => panic!("watcher: {other}"),
                }
                tries.fetch_add(1, Ordering::Relaxed);
            }
        });
        while tries.load(Ordering::Relaxed) < 10 {
            std::thread::yield_now();
        }
        for _ in 0..20 {
            let r = shmproc::Value::<u32>::open("review4-sparse");
            assert!(matches!(r, Err(OpenError::NoSpace { .. })), "{r:?}");
        }
        done.store(true, Ordering::Relaxed);
    });
    std::fs::remove_file("/dev/shm/shmproc.review4-sparse").unwrap();
    let refused = refused.load(Ordering::Relaxed);
    assert_eq!(
        refused,
        0,
        "{refused} of {} one-page creations found /dev/shm full while an open reserved a sparse file that could not fit",
        tries.load(Ordering::Relaxed)
    );
}

/// A tmpfs mounted without a size limit (`size=0`) reports 0 blocks in
/// all and 0 free: that is "no limit", not "full". Creating and growing
/// segments there must work.
#[test]
fn review4_an_unlimited_tmpfs_is_not_full() {
    if !inside_dev_shm_of("review4_an_unlimited_tmpfs_is_not_full", "0") {
        return;
    }
    let v = shmproc::Value::<u64>::create("review4-unlimited-value", 7);
    assert!(v.is_ok(), "{v:?}");
    let l = ListProxy::<u64>::create("review4-unlimited-list").unwrap();
    l.extend(0..100_000).unwrap();
    assert_eq!(l.len(), 100_000);
}
