//! Hostile review (rev2) of the plain-data `map` path through the pool's
//! argument arena (src/pool/frame.rs `PodBlock`, worker.rs `arena_args`
//! and `run_pod_shared`, manager.rs `recv_result`): lying size hints,
//! zero-sized and odd-sized plain data, several pools at once, a hostile
//! arena reference in a worker's task ring, an owner killed mid-map.

use std::time::{Duration, Instant};

use super::{DEADLINE, alive, finish, serial, square, wait_until, watchdog};
use shmproc::{Event, Pool};

/// An iterator that yields `n` items while its `size_hint` says `hint`
/// (a contract violation, but safe code).
struct Liar {
    next: u64,
    n: u64,
    hint: usize,
}

impl Iterator for Liar {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        (self.next < self.n).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.hint, None)
    }
}

shmproc::entry! {
    /// Maps 1000 items whose iterator hints `usize::MAX / 16` of them.
    fn rev_lying_hint_map(_x: u32) -> Result<(), String> {
        let pool = Pool::new(1).map_err(|e| e.to_string())?;
        let got = pool.map(square, Liar { next: 0, n: 1000, hint: usize::MAX / 16 }).map_err(|e| e.to_string())?;
        if got != serial(1000) {
            return Err(format!("{} values, not the serial result", got.len()));
        }
        pool.terminate();
        Ok(())
    }
}

/// DEFECT. `a_size_hint_that_lies_changes_nothing` (bulkmap.rs) holds the
/// map to "a lying size hint changes nothing", but only for hints up to a
/// million. A hint past what can be allocated (here `usize::MAX / 16`
/// items of 8 bytes) is trusted as a reservation: `PodBlock::fill`
/// (frame.rs) asks for an arena of `want` bytes (fails), falls back to
/// the heap, and `fill_heap` calls `bytes.reserve(size_hint * size)`:
/// "memory allocation of 9223372036854775800 bytes failed", and the
/// process ABORTS (SIGABRT; not even a panic the caller could catch). Run
/// in a child so that the test binary survives it.
#[test]
fn a_size_hint_too_large_to_allocate_changes_nothing() {
    let _watchdog = watchdog("a_size_hint_too_large_to_allocate_changes_nothing");
    let mut p = shmproc::Process::new(rev_lying_hint_map, 0u32);
    p.start().unwrap();
    let pid = p.pid().unwrap();
    if !p.join_timeout(DEADLINE).unwrap() {
        let _ = p.kill();
        let _ = p.join_timeout(DEADLINE);
        panic!("the child mapping with a lying size hint did not finish within {DEADLINE:?}");
    }
    let code = p.exitcode();
    // A child that aborted leaves its pool's segments (its workers leave
    // by themselves): remove them, the test leaves nothing.
    let mine = format!("{}anon.{pid}.", shmproc::NAME_PREFIX);
    let mut left = Vec::new();
    for e in std::fs::read_dir("/dev/shm").unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(&mine) {
            left.push(name.clone());
            let _ = shmproc::unlink(&format!("anon.{pid}.{rest}"));
        }
    }
    assert_eq!(code, Some(0), "map of 1000 items whose iterator hints usize::MAX/16 (-6: SIGABRT); it left {left:?}");
}

shmproc::task! { fn rev_drop_it(_x: u64) -> () {} }
shmproc::task! { fn rev_from_unit(_u: ()) -> u64 { 7 } }
shmproc::task! { fn rev_three_to_five(v: [u8; 3]) -> [u8; 5] { [v[0], v[1], v[2], v[0] ^ v[1], v[1] ^ v[2]] } }
shmproc::task! { fn rev_wide_to_byte(v: [u8; 257]) -> u8 { v.iter().fold(0u8, |a, &b| a.wrapping_add(b)) } }
shmproc::task! { fn rev_byte_to_wide(x: u8) -> [u64; 32] { [u64::from(x); 32] } }

/// COVERAGE (passes). Zero-sized and odd-sized plain data through the
/// map path, at sizes that use the arena (>= 64 KiB of arguments):
/// `u64 -> ()` (values of width 0: not packed), `() -> u64` (arguments of
/// width 0: not the bulk path), `[u8; 3] -> [u8; 5]` (odd widths, values
/// wider than arguments), `[u8; 257] -> u8` (wider than the bulk path
/// takes), `u8 -> [u64; 32]` (values 256x the argument: a frame's values
/// do not fit one result frame). Every result exact, arenas gone.
#[test]
fn zero_sized_and_odd_sized_plain_data_map_exactly() {
    let _watchdog = watchdog("zero_sized_and_odd_sized_plain_data_map_exactly");
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(rev_drop_it, 0..100_000u64).unwrap().len(), 100_000);
    assert_eq!(pool.map(rev_from_unit, std::iter::repeat_n((), 100_000)).unwrap(), vec![7u64; 100_000]);
    let threes: Vec<[u8; 3]> = (0..60_000u32).map(|i| [i as u8, (i >> 8) as u8, (i >> 16) as u8]).collect();
    let want: Vec<[u8; 5]> = threes.iter().map(|v| [v[0], v[1], v[2], v[0] ^ v[1], v[1] ^ v[2]]).collect();
    assert_eq!(pool.map(rev_three_to_five, threes).unwrap(), want);
    let wides: Vec<[u8; 257]> = (0..600u32).map(|i| [i as u8; 257]).collect();
    let want: Vec<u8> = (0..600u32).map(|i| (i as u8).wrapping_mul(257u32 as u8)).collect();
    assert_eq!(pool.map(rev_wide_to_byte, wides).unwrap(), want);
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
    let got = pool.map(rev_byte_to_wide, bytes.clone()).unwrap();
    assert!(got.iter().zip(&bytes).all(|(v, &b)| v.iter().all(|&x| x == u64::from(b))));
    finish(pool, &[]);
}

/// COVERAGE (passes). Three pools at once, each mapping from two threads
/// (so each pool has an arena in use while its other map needs one),
/// arenas of 1 MiB to over the kept 32 MiB: every result exact; all
/// arenas of all pools gone from /dev/shm once the pools are done.
#[test]
fn several_pools_mapping_at_once_keep_their_arenas_apart() {
    let _watchdog = watchdog("several_pools_mapping_at_once_keep_their_arenas_apart");
    let pools: Vec<std::sync::Arc<Pool>> = (0..3).map(|_| std::sync::Arc::new(Pool::new(1).unwrap())).collect();
    let mut threads = Vec::new();
    for (p, pool) in pools.iter().enumerate() {
        for t in 0..2u64 {
            let pool = std::sync::Arc::clone(pool);
            threads.push(std::thread::spawn(move || {
                for round in 0..3u64 {
                    let n = [10_000u64, 150_000, 4_300_000][((p as u64 + t + round) % 3) as usize];
                    let got = pool.map(square, 0..n).unwrap();
                    assert!(got == serial(n), "pool {p} thread {t} round {round}: {n} items");
                }
            }));
        }
    }
    let t0 = Instant::now();
    for h in threads {
        assert!(t0.elapsed() < 2 * DEADLINE);
        h.join().unwrap();
    }
    for pool in pools {
        finish(std::sync::Arc::try_unwrap(pool).unwrap(), &[]);
    }
}

shmproc::task! {
    /// Holds its worker until `go` is set.
    fn rev_hold(go: Event) -> u64 {
        go.wait();
        1
    }
}

/// Every file in /dev/shm of the pool's segments `names` holding `needle`:
/// (path, offset).
fn find_in(names: &[String], needle: &[u8]) -> Vec<(String, u64)> {
    let mut hits = Vec::new();
    for n in names {
        let path = format!("/dev/shm/{}{n}", shmproc::NAME_PREFIX);
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let mut from = 0;
        while let Some(at) = bytes[from..].windows(needle.len()).position(|w| w == needle) {
            hits.push((path.clone(), (from + at) as u64));
            from += at + 1;
        }
    }
    hits
}

/// COVERAGE (hostile arena reference). A peer rewrites the arena reference
/// of a task frame waiting in a worker's task ring so that its slice lies
/// far past the arena's end. The worker must refuse it (never read out of
/// bounds); the frame's items then run elsewhere from the pool's own copy
/// and the map is exact: no item fails for a reference the pool never
/// sent.
#[test]
fn a_hostile_arena_reference_in_the_task_ring_is_refused_and_the_map_stays_exact() {
    use std::os::unix::fs::FileExt;
    let _watchdog = watchdog("a_hostile_arena_reference_in_the_task_ring_is_refused_and_the_map_stays_exact");
    let pool = Pool::new(1).unwrap();
    let go = Event::new().unwrap();
    let held = pool.apply_async(rev_hold, go.clone()).unwrap();
    let (_, before) = pool.__created();
    const N: u64 = 100_000; // 800 KB of arguments: an arena
    let r = pool.map_async(square, 0..N).unwrap();
    let (_, after) = pool.__created();
    let arenas: Vec<String> = after.iter().filter(|n| !before.contains(n)).cloned().collect();
    assert_eq!(arenas.len(), 1, "one arena for the map: {arenas:?}");
    let arena = arenas[0].clone();
    let others: Vec<String> = after.iter().filter(|n| **n != arena).cloned().collect();
    // The frames wait in the held worker's task ring: find a reference
    // (offset u64 | bytes u64 | name_len u32 | name) and point it past the
    // arena's end.
    let mut hits = Vec::new();
    let t0 = Instant::now();
    while hits.is_empty() && t0.elapsed() < Duration::from_secs(10) {
        hits = find_in(&others, arena.as_bytes());
        std::thread::sleep(Duration::from_millis(20));
    }
    let corrupted = !hits.is_empty();
    for (path, at) in &hits {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&(1u64 << 40).to_le_bytes(), at - 20).unwrap();
    }
    go.set();
    assert_eq!(held.get_timeout(DEADLINE).ok(), Some(1));
    let got = match r.get_timeout(DEADLINE) {
        Ok(v) => Ok(v == serial(N)),
        Err(e) => Err(e.to_string()),
    };
    assert_eq!(pool.map(square, 0..N).unwrap(), serial(N), "the pool after the hostile frame");
    finish(pool, &[]);
    assert!(corrupted, "no arena reference found in the worker's task ring (the test could not corrupt one)");
    assert_eq!(got, Ok(true), "the map whose frame reference was corrupted ({} references rewritten)", hits.len());
}

shmproc::entry! {
    /// Owns a pool and maps over 32 M plain-data items (a 256 MiB arena:
    /// `map_async`, whose arena holds the whole job; `map` recycles a
    /// small one); writes its worker's pid first.
    fn rev_arena_owner(pids: shmproc::Array<u32>) -> Result<(), String> {
        let pool = Pool::new(1).map_err(|e| e.to_string())?;
        let (workers, _) = pool.__created();
        pids.set(0, workers[0]).map_err(|e| e.to_string())?;
        loop {
            let _ = pool.map_async(square, 0..32_000_000u64).and_then(|r| r.get());
        }
    }
}

/// Whether /dev/shm file `name` has pages not reserved yet (its creator
/// is still in `posix_fallocate`, or was killed there).
fn reserving(name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/dev/shm/{name}")).is_ok_and(|m| m.blocks() * 512 < m.len())
}

/// The owner's segment files in /dev/shm: (file name, size, first 8 bytes).
fn owner_files(owner: u32) -> Vec<(String, u64, u64)> {
    use std::os::unix::fs::FileExt;
    let mine = format!("{}anon.{owner}.", shmproc::NAME_PREFIX);
    let mut out = Vec::new();
    for e in std::fs::read_dir("/dev/shm").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&mine) {
            continue;
        }
        let path = format!("/dev/shm/{name}");
        let Ok(f) = std::fs::File::open(&path) else { continue };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut magic = [0u8; 8];
        let _ = f.read_exact_at(&mut magic, 0);
        out.push((name, len, u64::from_le_bytes(magic)));
    }
    out
}

/// DEFECT. The pool owner is SIGKILLed while it creates its map's arena
/// (a 256 MiB `RawSegment`: `Segment::create`, shm/segment.rs:83-110,
/// opens the name, `ftruncate`s and `fallocate`s it, maps it, and only
/// then writes the header with the creator's identity and the magic).
/// Killed in that window, it leaves a file of 256 MiB with no header:
/// `gc()` (`dead_segment`, which needs the magic and the creator pid)
/// never removes it, and nothing else does. Arenas make the window wide
/// (an `fallocate` of every page of a large arena; `PodBlock::fill`
/// also creates a doubled arena while it fills). Now the creator
/// reserves the header's page, writes the header, then reserves the rest.
/// The test kills the owner when it sees the arena's file with pages not
/// yet reserved, checks that it still has some after the kill (the window
/// was hit; otherwise it tries again), and then that `gc()` removes it
/// (seen failing before the fix: the file had no header then).
#[test]
fn an_arena_whose_creator_is_killed_while_creating_it_is_garbage_collected() {
    let test = "an_arena_whose_creator_is_killed_while_creating_it_is_garbage_collected";
    // A 256 MiB arena.
    if !crate::common::dev_shm_has_room(test, 320 << 20) {
        return;
    }
    let _watchdog = watchdog(test);
    let mut caught: Option<(u32, String)> = None;
    let mut tries = 0;
    while caught.is_none() && tries < 5 {
        tries += 1;
        let pids = shmproc::Array::from_slice(&[0u32]).unwrap();
        let mut owner = shmproc::Process::new(rev_arena_owner, pids.clone());
        owner.start().unwrap();
        let owner_pid = owner.pid().unwrap();
        wait_until("the owner's worker to start", || pids.get(0).unwrap() != 0);
        let worker = pids.get(0).unwrap();
        let t0 = Instant::now();
        let mut headerless = None;
        while headerless.is_none() && t0.elapsed() < DEADLINE {
            headerless = owner_files(owner_pid).into_iter().find(|(n, len, _)| *len >= 200 << 20 && reserving(n));
            if headerless.is_none() {
                // A first arena already complete: this try missed the window.
                if owner_files(owner_pid).iter().any(|(n, len, _)| *len >= 200 << 20 && !reserving(n)) {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        owner.kill().unwrap();
        let _ = owner.join_timeout(DEADLINE);
        wait_until("the orphaned worker to leave", || !alive(worker));
        if let Some((name, _, _)) = headerless
            && owner_files(owner_pid).iter().any(|(n, _, _)| *n == name && reserving(n))
        {
            caught = Some((owner_pid, name));
        } else {
            // Missed: clean this owner's leftovers and try again.
            for (n, _, _) in owner_files(owner_pid) {
                let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
            }
        }
    }
    let Some((owner_pid, name)) = caught else {
        panic!("the owner was never killed while creating its arena in {tries} tries (inconclusive)");
    };
    let removed = shmproc::gc().unwrap();
    let left = owner_files(owner_pid);
    // The test leaves nothing: remove by hand what gc left.
    for (n, _, _) in &left {
        let _ = std::fs::remove_file(format!("/dev/shm/{n}"));
    }
    assert!(
        !left.iter().any(|(n, _, _)| *n == name),
        "gc() left the headerless arena {name} of the killed owner {owner_pid} ({} bytes of /dev/shm; left: {:?}; \
         gc removed {removed:?})",
        left.iter().find(|(n, _, _)| *n == name).map_or(0, |f| f.1),
        left.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

/// A hostile peer overwrites the header of the pool's arena (its magic)
/// after a map was submitted and before any worker opened it: every
/// worker must refuse the arena (it cannot be opened as a segment), and
/// the pool must stay usable: the map ends (exact, or with errors) within
/// the deadline, and a later map is exact.
#[test]
fn a_hostile_arena_header_fails_at_most_that_map_not_the_pool() {
    use std::os::unix::fs::FileExt;
    let _watchdog = watchdog("a_hostile_arena_header_fails_at_most_that_map_not_the_pool");
    let pool = Pool::new(1).unwrap();
    let go = Event::new().unwrap();
    let held = pool.apply_async(rev_hold, go.clone()).unwrap();
    let (_, before) = pool.__created();
    const N: u64 = 400_000; // 3.2 MB of arguments: an arena, many frames
    let r = pool.map_async(square, 0..N).unwrap();
    let (_, after) = pool.__created();
    let arena = after.iter().find(|n| !before.contains(n)).expect("an arena").clone();
    let path = format!("/dev/shm/{}{arena}", shmproc::NAME_PREFIX);
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&[0u8; 8], 0).unwrap();
    go.set();
    assert_eq!(held.get_timeout(DEADLINE).ok(), Some(1));
    let first = match r.get_timeout(DEADLINE) {
        Ok(v) => format!("exact: {}", v == serial(N)),
        Err(shmproc::pool::GetTimeoutError::TimedOut(_)) => panic!("the map over a corrupted arena hung"),
        Err(e) => format!("failed: {e}"),
    };
    let later = pool.map_async(square, 0..1000).unwrap().get_timeout(DEADLINE).map_err(|e| e.to_string());
    let (workers, _) = pool.__created();
    let ok = later.as_ref().is_ok_and(|v| *v == serial(1000));
    eprintln!("first map: {first}; workers started: {}", workers.len());
    finish(pool, &[]);
    assert!(
        ok,
        "after a map over a corrupted arena ({first}; {} workers started), a later map: {later:?}",
        workers.len()
    );
}

shmproc::task! {
    /// Plain data in and out (the arena path): parks its worker forever at
    /// `u64::MAX`.
    fn rev_park_max(x: u64) -> u64 {
        if x == u64::MAX {
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        x
    }
}

/// COVERAGE (passes). `terminate` while two maps are parked mid-way, one
/// over an arena the pool would keep (8 MB) and one over an arena past
/// the kept size (40 MB): it returns, both maps fail `Terminated`, and
/// after the drop no worker and no arena is left.
#[test]
fn terminate_mid_map_over_arenas_leaves_no_arena() {
    if !crate::common::dev_shm_has_room("terminate_mid_map_over_arenas_leaves_no_arena", 128 << 20) {
        return;
    }
    let _watchdog = watchdog("terminate_mid_map_over_arenas_leaves_no_arena");
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let (_, before) = pool.__created();
    let park = |n: u64| (0..n).map(move |i| if i == n / 2 { u64::MAX } else { i });
    let small = pool.map_async(rev_park_max, park(1_000_000)).unwrap();
    let big = pool.map_async(rev_park_max, park(5_000_000)).unwrap();
    let (_, after) = pool.__created();
    assert_eq!(after.iter().filter(|n| !before.contains(n)).count(), 2, "two arenas");
    std::thread::sleep(Duration::from_millis(200));
    let p2 = std::sync::Arc::clone(&pool);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        p2.terminate();
        let _ = tx.send(());
    });
    rx.recv_timeout(DEADLINE).expect("terminate did not return");
    for r in [small, big] {
        match r.get_timeout(DEADLINE) {
            Err(shmproc::pool::GetTimeoutError::Failed(shmproc::pool::PoolError::Task(
                shmproc::pool::TaskError::Terminated { .. },
            ))) => {}
            other => panic!("{:?}", other.map(|v| v.len())),
        }
    }
    let pool = std::sync::Arc::try_unwrap(pool).unwrap();
    let (workers, names) = pool.__created();
    drop(pool);
    super::all_gone(workers, names);
}
