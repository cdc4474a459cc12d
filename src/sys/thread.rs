//! Thread identity (for lock ownership) and liveness checks (for recovery).
//!
//! A lock owner is identified by a packed `u64`: the low 32 bits hold the
//! thread id (tid, at most 2^22 on Linux, so bits 30 and 31 are free for lock
//! flags), the high 32 bits the low half of the thread's start time in clock
//! ticks since boot (field 22 of `/proc/<tid>/stat`). Pairing the two means a
//! recycled tid (pid_max is often only 32768) is not mistaken for the owner.
//!
//! The identity is computed once per thread and cached in a thread-local, so
//! the lock fast path reads one TLS word and makes no syscall. A
//! `pthread_atfork` child handler clears the cache, because a forked child's
//! only thread has a new tid.

use std::cell::Cell;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

/// Mask of the tid bits in an owner word.
pub(crate) const TID_MASK: u32 = 0x3FFF_FFFF;

/// The start time recorded by a thread or process that could not read its
/// own from `/proc` (no descriptor left, say). Not 0, which garbage in a
/// lock word often is: such a word names a live task as "of unknown start",
/// which liveness checks never judge by start time. (A real start time
/// equal to it only loses the pid-reuse check for that task.)
pub(crate) const UNKNOWN_START: u32 = 0xD1E5_0B5D;

thread_local! {
    static ME: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's packed owner identity (never 0).
#[inline]
pub(crate) fn me() -> u64 {
    let v = ME.with(Cell::get);
    if v != 0 { v } else { me_slow() }
}

#[cold]
fn me_slow() -> u64 {
    static ATFORK: Once = Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registering a plain `extern "C"` handler with no
        // preconditions; it only touches this crate's thread-local.
        unsafe { libc::pthread_atfork(None, None, Some(atfork_child)) };
    });
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32 & TID_MASK;
    // UNKNOWN_START if `/proc` cannot be read now (e.g. no descriptor
    // left): `owner_is_dead` never judges such an identity by start time
    // (it is cached all the same: a lock word written with it must keep
    // naming this thread).
    let start = read_stat(tid).map_or(UNKNOWN_START, |s| s.start_time as u32);
    let packed = (u64::from(start) << 32) | u64::from(tid);
    ME.with(|c| c.set(packed));
    packed
}

extern "C" fn atfork_child() {
    ME.with(|c| c.set(0));
}

/// Runs `handler` in the child of every later `fork()` of this process
/// (`pthread_atfork`'s child handler), for per-thread state that must not
/// survive into a forked child (whose only thread is a new thread). The
/// handler runs in the forked child before `fork` returns there: it must
/// not panic, nor take a lock another thread may have held at the fork.
pub(crate) fn on_fork_child(handler: extern "C" fn()) {
    // SAFETY: registering a plain `extern "C"` handler with no
    // preconditions; the caller's contract (above) covers what it does.
    unsafe { libc::pthread_atfork(None, None, Some(handler)) };
}

/// How many `fork()`s this process is away from the process it was
/// forked from first (0 in a process never forked, 1 in its forked child,
/// 2 in a grandchild...), counted from the first [`fork_generation`] call.
static FORKS: AtomicU32 = AtomicU32::new(0);

extern "C" fn count_fork() {
    // Relaxed: read only by this process's own threads, all started after
    // the fork (thread creation orders it before their reads).
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The fork count of this process (see [`FORKS`]), counting forks from
/// this call on (it registers the counter, once): a handle records it when
/// it is made and compares it with [`forks_now`] to learn that it was
/// inherited through `fork()` (its process-local locks may then be held
/// for ever by a parent thread that is not in this process).
pub(crate) fn fork_generation() -> u32 {
    static WATCH: Once = Once::new();
    WATCH.call_once(|| on_fork_child(count_fork));
    forks_now()
}

/// [`fork_generation`] without registering: one Relaxed load.
#[inline]
pub(crate) fn forks_now() -> u32 {
    // Relaxed: see `count_fork`.
    FORKS.load(Ordering::Relaxed)
}

/// The parts of `/proc/<pid>/stat` this crate uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    /// One-letter state: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub(crate) state: u8,
    /// Start time in clock ticks since boot.
    pub(crate) start_time: u64,
}

/// Reads `/proc/<id>/stat` (works for thread ids too). `None` if it does not
/// exist (the task is gone) or cannot be parsed.
pub(crate) fn read_stat(id: u32) -> Option<Stat> {
    let text = std::fs::read(format!("/proc/{id}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &[u8]) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may itself contain
    // spaces and parentheses: the fields we want follow the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // `state` is field 3; starttime is field 22, i.e. 19 further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// Whether `/proc` can be trusted to tell us about other tasks. Without it we
/// never declare anybody dead (a false "dead" would break mutual exclusion).
///
/// Only a success is remembered: a read that fails may fail for a moment
/// (no descriptor left: `EMFILE`, `ENFILE`), and remembering it would turn
/// every owner check off for the rest of the process's life (a lock whose
/// holder died would then block every waiter forever). Without `/proc`
/// each check retries the read: a failing `open`, on slow paths only.
fn proc_usable() -> bool {
    static USABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // Relaxed: a flag that publishes no data (any thread may compute it again).
    if USABLE.load(std::sync::atomic::Ordering::Relaxed) {
        return true;
    }
    // SAFETY: getpid has no preconditions.
    let usable = read_stat(unsafe { libc::getpid() } as u32).is_some();
    if usable {
        USABLE.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    usable
}

/// Whether the thread named by a packed owner identity is certainly gone:
/// its tid no longer exists, is a zombie, or now belongs to a task started at
/// another time. Errs on the side of "alive".
pub(crate) fn owner_is_dead(packed: u64) -> bool {
    let tid = packed as u32 & TID_MASK;
    let start = (packed >> 32) as u32;
    if !proc_usable() {
        return false;
    }
    if tid == 0 {
        // No thread has id 0: a non-empty word naming it was written by
        // a buggy or hostile peer, and nobody will ever release it.
        return true;
    }
    match std::fs::read(format!("/proc/{tid}/stat")) {
        Ok(text) => match parse_stat(&text) {
            // UNKNOWN_START: the owner could not read its own (no descriptor
            // left when it first needed its identity, see `me_slow`), so
            // only a gone or zombie task is dead; a mismatch proves nothing.
            Some(s) => s.state == b'Z' || s.state == b'X' || (start != UNKNOWN_START && s.start_time as u32 != start),
            None => false,
        },
        // Not found: gone, or only hidden (/proc mounted with `hidepid`
        // hides other users' processes). The kernel still knows: a task that
        // exists answers signal 0 (or EPERM: another user's), a gone one ESRCH.
        Err(e) => e.kind() == std::io::ErrorKind::NotFound && task_is_gone(tid),
    }
}

/// Whether no task has id `tid` (signal 0 is `ESRCH`). Another user's task
/// gives `EPERM`: it exists. (`kill` accepts a thread id; signal 0 sends
/// nothing.)
fn task_is_gone(tid: u32) -> bool {
    let Ok(id) = libc::pid_t::try_from(tid) else { return false };
    // SAFETY: signal 0 only checks that the task exists and may be signalled; no signal is sent.
    let r = unsafe { libc::kill(id, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Whether process `pid`, started at `start_time` ticks, is gone (exited,
/// zombie, or its pid reused). Used by `gc`.
pub(crate) fn process_is_dead(pid: u32, start_time: u64) -> bool {
    owner_is_dead((u64::from(start_time as u32) << 32) | u64::from(pid))
}

/// This process's pid and start time (for segment headers).
pub(crate) fn process_identity() -> (u32, u64) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    (pid, read_stat(pid).map_or(u64::from(UNKNOWN_START), |s| s.start_time))
}

/// The packed identity (start time, pid) of process `pid`, as that process
/// computes it for itself with [`process_packed`]; `None` if `/proc` does
/// not know it. Used to hand a queue role over to a child not yet reaped
/// (so its pid names that very child).
pub(crate) fn packed_identity_of(pid: u32) -> Option<u64> {
    let stat = read_stat(pid)?;
    Some((u64::from(stat.start_time as u32) << 32) | u64::from(pid))
}

/// This process's identity packed like a lock owner (start time, pid):
/// used to record which process holds a queue role.
pub(crate) fn process_packed() -> u64 {
    static ME: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let pid = std::process::id();
    // Recompute after fork (the pid changed). Acquire: pairs with the
    // Release store of `PID` below, so a thread that sees this process's
    // pid there also sees the `ME` stored before it (not the parent's, or
    // 0, on a weakly ordered CPU).
    if PID.load(std::sync::atomic::Ordering::Acquire) != pid {
        let (pid, start) = process_identity();
        ME.store((u64::from(start as u32) << 32) | u64::from(pid), std::sync::atomic::Ordering::Relaxed);
        // Release: pairs with the Acquire load of `PID` above.
        PID.store(pid, std::sync::atomic::Ordering::Release);
    }
    ME.load(std::sync::atomic::Ordering::Relaxed)
}

/// Ends this process at once with SIGKILL (crash tests: a death at an
/// exact point of an operation, as `kill -9` from outside would be).
#[cfg(feature = "test-hooks")]
pub(crate) fn kill_self() -> ! {
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_handles_parentheses_in_comm() {
        let line = b"123 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19 20";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.start_time, 4242);
    }

    #[test]
    fn me_is_stable_and_alive() {
        let a = me();
        assert_eq!(a, me());
        assert!(!owner_is_dead(a));
        let other = std::thread::spawn(me).join().unwrap();
        assert_ne!(a, other);
        // The other thread has exited: its tid goes away (the kernel may
        // take a moment after join returns to release the task).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !owner_is_dead(other) {
            assert!(std::time::Instant::now() < deadline, "exited thread still looks alive");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
