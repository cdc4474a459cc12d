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
