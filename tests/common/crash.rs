//! Helpers of the crash tests (cover6_crash, cover7_crash): random kill
//! instants, reaping a killed victim, pinning threads to a CPU, and the
//! check that a dropped object left no segment.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use shmproc::{Event, Process};

/// How long a crash test's blocking call may wait before it fails.
const T: Duration = Duration::from_secs(30);

/// A small pseudo-random number (differs per call and per run).
pub fn rand_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() % n.max(1)
}

/// A short random timeout (0..2 ms, sometimes zero).
pub fn short() -> Duration {
    Duration::from_micros(rand_below(2000))
}

/// Kills `p` after a random 0..`max_ms` ms and reaps it.
pub fn kill_within(p: &Process, max_ms: u64) {
    std::thread::sleep(Duration::from_micros(rand_below(max_ms * 1000)));
    p.kill().unwrap();
    reap_killed(p);
}

/// Reaps `p`, which must have been killed by our SIGKILL: a child that
/// ended by itself failed a check of its own (its message is in the
/// error), which the test must not miss.
pub fn reap_killed(p: &Process) {
    match super::join(p) {
        Err(shmproc::ProcessError::Signaled { signal: 9, .. }) => {}
        other => panic!("the victim was not killed by us but ended with {other:?}"),
    }
}

/// A thread that SIGKILLs process `p` after a random 0..`max_ms` ms (the
/// caller reaps it afterwards with `super::join`).
pub fn killer(p: &Process, max_ms: u64) -> std::thread::JoinHandle<()> {
    let pid = p.pid().expect("started") as libc::pid_t;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_micros(rand_below(max_ms * 1000)));
        // SAFETY: kill has no memory preconditions; `pid` is our unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    })
}

/// Starts `p` (a daemon) and waits for its `started` event.
pub fn start(p: &mut Process, started: &Event) {
    p.start().unwrap();
    assert!(started.wait_timeout(T), "child never started");
}

/// The entries of /dev/shm whose name contains `name`.
pub fn segments_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.contains(name))
        .collect()
}

/// After the last handle of a queue named `name` dropped: nothing of it
/// (control segment, chain rings) is left in /dev/shm.
pub fn assert_no_segment_left(name: &str) {
    let left = segments_named(name);
    assert!(left.is_empty(), "segments left behind: {left:?}");
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
    // within it; sched_setaffinity reads `size_of` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "sched_setaffinity");
    }
}

/// Lets the calling thread run on every CPU again.
pub fn unpin() {
    // SAFETY: as in `pin_to`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The CPU the calling thread runs on.
pub fn this_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    assert!(c >= 0, "sched_getcpu");
    c as usize
}

/// One test per kind of sleeper, `name => what`: each runs
/// `woken_then_killed(what)` (a function of the calling test file)
/// `rounds()` times.
#[allow(unused_macros)]
macro_rules! woken_then_killed_tests {
    ($($(#[$attr:meta])* $name:ident => $what:literal;)*) => {$(
        $(#[$attr])*
        #[test]
        fn $name() {
            for _ in 0..rounds() {
                woken_then_killed($what);
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use woken_then_killed_tests;
