//! Review 30: the Pool's shared memory under a hostile task. A task runs in
//! a worker, which maps the pool's control segment and its own task and
//! result rings (and the arena): the task finds them in /proc/self/maps and
//! writes into them through the files in /dev/shm. The parent must then get
//! errors or wrong values for the affected items only, every call must
//! return within a deadline, and terminate/drop must leave no worker and
//! no segment. Every blocking wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use shmproc::Pool;

const DEADLINE: Duration = Duration::from_secs(60);

shmproc::task! { fn r30_sq(x: u64) -> u64 { x.wrapping_mul(x) } }
shmproc::task! { fn r30_add((a, b): (u64, u64)) -> u64 { a.wrapping_add(b) } }

/// The /dev/shm files this process maps.
fn mapped_segments() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut paths: Vec<String> = maps
        .lines()
        .filter_map(|l| l.find("/dev/shm/").map(|i| l[i..].trim_end_matches(" (deleted)").to_string()))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

shmproc::task! {
    /// A hostile task: for every 5000th item, sets the common header's
    /// persist flag (bit 0 of the word at byte 28) in every segment its
    /// worker maps, as a process that opened them and called `persist`
    /// would. Returns how many.
    fn r30_persist_all(x: u64) -> u64 {
        use std::os::unix::fs::FileExt;
        let mut n = 0;
        if !x.is_multiple_of(5000) {
            return 0;
        }
        for path in mapped_segments() {
            let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&path) else { continue };
            let mut w = [0u8; 4];
            if f.read_exact_at(&mut w, 28).is_err() {
                continue;
            }
            let flags = u32::from_le_bytes(w) | 1;
            if f.write_all_at(&flags.to_le_bytes(), 28).is_ok() {
                n += 1;
            }
        }
        n
    }
}

/// xorshift64*.
fn next(s: &mut u64) -> u64 {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

shmproc::task! {
    /// A hostile task: writes `writes` crafted or random 8-byte words at
    /// random 8-aligned offsets of every segment its worker maps (huge
    /// lengths, small indices, all ones, counts near overflow, random
    /// bytes), leaving the persist flag alone (another test covers it).
    /// With `die`, the worker then kills itself with SIGKILL instead of
    /// returning.
    fn r30_scribble((seed, writes, die): (u64, u64, bool)) -> u64 {
        scribble(seed, writes, die)
    }
}

shmproc::task! {
    /// A hostile task: leaves a thread behind in its worker that goes on
    /// scribbling (as `r30_scribble`, 2 words per segment every
    /// millisecond) for `ms` milliseconds while the pool goes on using
    /// that worker; returns at once.
    fn r30_scribble_on((seed, ms): (u64, u64)) -> u64 {
        std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let mut k = 0;
            while t.elapsed() < Duration::from_millis(ms) {
                scribble(seed.wrapping_add(k), 2, false);
                k += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        0
    }
}

/// Writes `writes` crafted or random words over every mapped segment (see
/// `r30_scribble`); with `die`, then SIGKILLs this process.
fn scribble(seed: u64, writes: u64, die: bool) -> u64 {
    {
        use std::os::unix::fs::FileExt;
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut n = 0;
        for path in mapped_segments() {
            let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&path) else { continue };
            let Ok(len) = f.metadata().map(|m| m.len()) else { continue };
            if len < 64 {
                continue;
            }
            for _ in 0..writes {
                let at = (next(&mut s) % (len / 8)) * 8;
                if at == 24 {
                    continue;
                }
                let v = match next(&mut s) % 8 {
                    0 => u64::MAX,
                    1 => next(&mut s) % 64,
                    2 => u64::MAX - next(&mut s) % 64,
                    3 => 1 << (next(&mut s) % 64),
                    4 => 0,
                    5 => u32::MAX as u64,
                    _ => next(&mut s),
                };
                if f.write_all_at(&v.to_le_bytes(), at).is_ok() {
                    n += 1;
                }
            }
        }
        if die {
            // SAFETY: sends a signal; touches no memory.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        n
    }
}

/// Runs `f` on a thread; fails the test if it panics or does not return
/// within [`DEADLINE`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let e = h.join().err().map(|p| {
                p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            });
            panic!("{what} panicked in the parent: {e:?}")
        }
        Err(_) => panic!("{what} did not return within {DEADLINE:?}"),
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Terminates and drops `pool` (bounded) and returns what it left: workers
/// still running and segments still in /dev/shm (removing those, so a
/// failing test leaves nothing either).
fn terminate_and_leftovers(pool: Arc<Pool>) -> (Vec<u32>, Vec<String>) {
    let (workers, names) = pool.__created();
    bounded("terminate and drop", move || {
        pool.terminate();
        drop(pool);
    });
    let running: Vec<u32> = workers.into_iter().filter(|&p| alive(p)).collect();
    let mut left = Vec::new();
    for n in names {
        let path = format!("/dev/shm/{}{n}", shmproc::NAME_PREFIX);
        if std::path::Path::new(&path).exists() {
            let _ = std::fs::remove_file(&path);
            left.push(n);
        }
    }
    (running, left)
}

/// A task that sets the persist flag of its worker's segments (the pool's
/// control segment, its rings): the pool's drop must still remove them
/// (nothing else ever will: no handle or name of them is known outside
/// the pool).
#[test]
fn a_task_that_persists_its_workers_segments_does_not_make_the_pool_leave_them() {
    let pool = Arc::new(Pool::new(1).unwrap());
    let n = bounded("apply", {
        let pool = Arc::clone(&pool);
        move || pool.apply(r30_persist_all, 0)
    });
    let n = n.unwrap();
    assert!(n >= 3, "the hostile task found {n} segments (test setup)");
    // A plain-data map large enough to go through an arena, which the
    // worker maps too.
    let all = bounded("map", {
        let pool = Arc::clone(&pool);
        move || pool.map(r30_persist_all, 0..20_000u64)
    });
    let all = all.unwrap();
    assert!(all[5000] >= 4, "the hostile task found {} segments during the map (test setup: no arena?)", all[5000]);
    let (running, left) = terminate_and_leftovers(pool);
    assert!(running.is_empty(), "workers still running: {running:?}");
    assert!(left.is_empty(), "a task persisted its worker's segments; the pool's drop left in /dev/shm: {left:?}");
}

/// Every pool method on `pool`, each bounded (errors allowed: the task's
/// scribbles may fail any item; what is asserted is that each returns and
/// nothing panics in the parent).
fn every_method(pool: &Arc<Pool>, round: u64) {
    let p = Arc::clone(pool);
    let items: Vec<u64> = (0..200).collect();
    bounded(&format!("round {round}: map"), move || {
        let _ = p.map(r30_sq, items.clone());
        let _ = p.map_chunked(r30_sq, items.clone(), 7);
        let _ = p.map_results(r30_sq, items.clone(), 5);
        let _ = p.starmap(r30_add, items.iter().map(|&i| (i, i)));
        let _ = p.map_async(r30_sq, items.clone()).map(|r| r.get_timeout(DEADLINE / 2));
        if let Ok(it) = p.imap(r30_sq, items.clone()) {
            let _ = it.count();
        }
        if let Ok(it) = p.imap_unordered(r30_sq, items.clone()) {
            let _ = it.count();
        }
        for i in 0..20u64 {
            if let Ok(r) = p.apply_async(r30_sq, i) {
                let _ = r.get_timeout(DEADLINE / 4);
            }
        }
        let _ = p.apply(r30_sq, 3);
    });
}

/// A task that scribbles crafted and random words over its worker's
/// segments (the control segment, its task and result rings, the arena),
/// then returns or is killed: every method still returns, and the pool
/// terminates and drops leaving no worker and no segment.
#[test]
fn scribbled_control_segment_and_rings_fail_at_most_items_never_the_parent() {
    let rounds: u64 = std::env::var("R30_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let seed0: u64 = std::env::var("R30_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    for round in seed0..seed0 + rounds {
        let pool = Arc::new(Pool::new(2).unwrap());
        let p = Arc::clone(&pool);
        let die = round % 3 == 2;
        let writes = [4, 32, 256][(round % 3) as usize];
        bounded(&format!("round {round}: the hostile task"), move || {
            if let Ok(r) = p.apply_async(r30_scribble, (round, writes, die)) {
                let _ = r.get_timeout(DEADLINE / 2);
            }
        });
        every_method(&pool, round);
        let (running, left) = terminate_and_leftovers(pool);
        eprintln!("round {round} done");
        assert!(running.is_empty(), "round {round}: workers still running: {running:?}");
        assert!(left.is_empty(), "round {round}: left in /dev/shm: {left:?}");
    }
}

shmproc::task! {
    /// A hostile task: zeroes the common header's magic (the first 8 bytes)
    /// of every segment its worker maps (the pool's control segment, its
    /// own rings), then kills its worker with SIGKILL.
    fn r30_break_headers_and_die(_x: u64) -> u64 {
        use std::os::unix::fs::FileExt;
        for path in mapped_segments() {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                let _ = f.write_all_at(&[0u8; 8], 0);
            }
        }
        // SAFETY: sends a signal; touches no memory.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        0
    }
}

/// A task that breaks the header of the pool's control segment (and then
/// its worker dies, as any worker may): the item's worker is lost, but the
/// pool goes on. The control segment is the pool's own (it created it
/// and validated it then); a replacement worker that opens it by name must
/// not find it unusable for the rest of the pool's life.
#[test]
fn a_task_that_breaks_the_control_segments_header_fails_only_its_own_item() {
    let pool = Arc::new(Pool::new(1).unwrap());
    let p = Arc::clone(&pool);
    let hostile = bounded("the hostile task", move || p.apply(r30_break_headers_and_die, 0));
    assert!(hostile.is_err(), "the hostile task's worker was killed: {hostile:?}");
    let p = Arc::clone(&pool);
    let after = bounded("a map after it", move || p.map(r30_sq, 0..100u64));
    let (running, left) = terminate_and_leftovers(pool);
    assert_eq!(
        after.as_ref().ok(),
        Some(&(0..100u64).map(|x| x * x).collect::<Vec<_>>()),
        "a map after a task broke the control segment's header and its worker died: {after:?}"
    );
    assert!(running.is_empty(), "workers still running: {running:?}");
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

shmproc::task! {
    /// A hostile task: finds its worker's record in the pool's control
    /// segment (`started: u64`, `pid: u32`, pad, `claimed: u64`, found by
    /// its pid with `started` 1: its first item), writes `started = 0`
    /// there (as if no item had begun) and kills its worker with SIGKILL.
    /// For item `x == 3` only; the others return `x`.
    fn r30_forget_and_die(x: u64) -> u64 {
        use std::os::unix::fs::FileExt;
        if x != 3 {
            return x;
        }
        let me = std::process::id();
        for path in mapped_segments() {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let u64_at = |p: usize| u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap());
            let mut p = 8;
            while p + 16 <= bytes.len() {
                let pid = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
                if pid == me && u64_at(p - 8) >= 1 && u64_at(p + 8) >= 1 {
                    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    f.write_all_at(&0u64.to_le_bytes(), (p - 8) as u64).unwrap();
                    // SAFETY: sends a signal; touches no memory.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                }
                p += 8;
            }
        }
        u64::MAX
    }
}

/// A task that clears its worker's "items begun" word and then kills its
/// worker: the pool cannot tell which item was running, but it must not
/// run that item again and again for ever (each run clears the word and
/// kills the next worker): the item fails (its worker lost) and the job
/// ends.
#[test]
fn a_task_that_clears_its_started_word_and_dies_is_not_rerun_forever() {
    let pool = Arc::new(Pool::new(1).unwrap());
    let p = Arc::clone(&pool);
    let got = bounded("the hostile task", move || {
        p.apply_async(r30_forget_and_die, 3).map(|r| r.get_timeout(Duration::from_secs(20)))
    });
    let p = Arc::clone(&pool);
    let map = bounded("a map with the hostile item", move || {
        p.map_async(r30_forget_and_die, 0..6u64).map(|r| r.get_timeout(Duration::from_secs(20)))
    });
    let (running, left) = terminate_and_leftovers(pool);
    let got = got.unwrap();
    assert!(
        matches!(got, Err(shmproc::pool::GetTimeoutError::Failed(_))),
        "apply_async of a task that clears its started word and dies: {got:?}"
    );
    let map = map.unwrap();
    assert!(
        matches!(map, Err(shmproc::pool::GetTimeoutError::Failed(_))),
        "map_async with an item that clears its started word and dies: {map:?}"
    );
    assert!(running.is_empty(), "workers still running: {running:?}");
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

/// A task that leaves a thread scribbling over its worker's segments while
/// the pool goes on using the worker (a peer that writes at any time):
/// every method still returns, and the pool terminates and drops leaving
/// no worker and no segment.
#[test]
fn a_thread_left_scribbling_in_a_worker_fails_at_most_items_never_the_parent() {
    let rounds: u64 = std::env::var("R30_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let seed0: u64 = std::env::var("R30_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    for round in seed0..seed0 + rounds {
        let pool = Arc::new(Pool::new(2).unwrap());
        let p = Arc::clone(&pool);
        bounded(&format!("round {round}: the hostile task"), move || {
            for _ in 0..2 {
                if let Ok(r) = p.apply_async(r30_scribble_on, (round, 1500)) {
                    let _ = r.get_timeout(DEADLINE / 2);
                }
            }
        });
        every_method(&pool, round);
        let (running, left) = terminate_and_leftovers(pool);
        assert!(running.is_empty(), "round {round}: workers still running: {running:?}");
        assert!(left.is_empty(), "round {round}: left in /dev/shm: {left:?}");
    }
}

shmproc::task! {
    /// A hostile task: clears its worker's `started` word (as
    /// `r30_forget_and_die`), then appends a malformed 8-byte frame to its
    /// worker's result ring (the byte ring whose producer is this
    /// process: tail at byte 128, data from byte 512, capacity in the
    /// header at byte 40) and waits: the pool kills the worker for the
    /// malformed frame. For item `x == 3` only; the others return `x`.
    fn r30_forget_and_forge(x: u64) -> u64 {
        use std::os::unix::fs::FileExt;
        if x != 3 {
            return x;
        }
        let me = std::process::id();
        for path in mapped_segments() {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            let u64_at = |p: usize| u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap());
            let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) else { continue };
            let mut p = 8;
            while p + 16 <= bytes.len() {
                let pid = u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
                if pid == me && u64_at(p - 8) >= 1 && u64_at(p + 8) >= 1 {
                    f.write_all_at(&0u64.to_le_bytes(), (p - 8) as u64).unwrap();
                }
                p += 8;
            }
        }
        for path in mapped_segments() {
            let Ok(bytes) = std::fs::read(&path) else { continue };
            if bytes.len() < 1024 {
                continue;
            }
            let u64_at = |p: usize| u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap());
            if u64_at(400) as u32 != me {
                continue;
            }
            let (tail, capacity) = (u64_at(128), u64_at(40));
            if !capacity.is_power_of_two() {
                continue;
            }
            let pos = tail & (capacity - 1);
            if pos + 16 > capacity || 512 + pos + 16 > bytes.len() as u64 {
                continue;
            }
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&8u64.to_le_bytes(), 512 + pos).unwrap();
            f.write_all_at(&[0xff; 8], 512 + pos + 8).unwrap();
            f.write_all_at(&(tail + 16).to_le_bytes(), 128).unwrap();
        }
        std::thread::sleep(Duration::from_secs(5));
        u64::MAX
    }
}

/// As `a_task_that_clears_its_started_word_and_dies_is_not_rerun_forever`,
/// but the worker is killed by the pool (for a malformed result frame the
/// task appended to its ring) instead of dying on its own.
#[test]
fn a_task_that_clears_its_started_word_and_forges_a_frame_is_not_rerun_forever() {
    let pool = Arc::new(Pool::new(1).unwrap());
    let p = Arc::clone(&pool);
    let got = bounded("the hostile task", move || {
        p.apply_async(r30_forget_and_forge, 3).map(|r| r.get_timeout(Duration::from_secs(40)))
    });
    let (running, left) = terminate_and_leftovers(pool);
    let got = got.unwrap();
    assert!(
        matches!(got, Err(shmproc::pool::GetTimeoutError::Failed(_))),
        "apply_async of a task that clears its started word and forges a result frame: {got:?}"
    );
    assert!(running.is_empty(), "workers still running: {running:?}");
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}
