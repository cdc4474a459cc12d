//! Shared futex wait / wake on 32-bit words in shared memory.
//!
//! Never uses `FUTEX_PRIVATE_FLAG`: the words live in `MAP_SHARED` mappings
//! and the waker is usually another process. Timeouts are absolute
//! `CLOCK_MONOTONIC` deadlines (`FUTEX_WAIT_BITSET` without
//! `FUTEX_CLOCK_REALTIME`), so a wait interrupted by a signal (`EINTR`) is
//! retried against the same deadline and never stretches.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// Why [`wait`] returned. Callers always re-check their condition: a futex
/// wake-up may be spurious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// Woken by `wake`, or the word no longer held `expected`, or spurious.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// `deadline` as an absolute `CLOCK_MONOTONIC` time (the clock `Instant`
/// uses on Linux). `Instant` is opaque, so the absolute time is rebuilt
/// from "now" on both clocks; far deadlines saturate (still valid for the
/// kernel, which clamps them).
fn as_timespec(deadline: Instant) -> libc::timespec {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let left = deadline.saturating_duration_since(Instant::now());
    let secs = libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX);
    let mut sec = now.tv_sec.saturating_add(secs);
    let mut nsec = now.tv_nsec + left.subsec_nanos() as libc::c_long;
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec { tv_sec: sec, tv_nsec: nsec }
}

/// Sleeps while `*word == expected`, until woken or `deadline` passes
/// (`None`: no timeout).
///
/// The kernel compares the word and enqueues the waiter atomically with
/// respect to [`wake`], so a wake issued after the waker changed the word
/// is never lost.
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
    let ts = deadline.map(as_timespec);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `word` is a valid, aligned 32-bit atomic for the duration of
        // the call; the timespec pointer is null or points at `ts`, alive here.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if r == 0 {
            return WaitOutcome::Woken;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => return WaitOutcome::TimedOut,
            // EAGAIN: the word already differed. Anything else (EFAULT on a
            // mapping torn away by a hostile peer, EINVAL) is reported as a
            // wake-up; the caller re-checks its state and deadline.
            _ => return WaitOutcome::Woken,
        }
    }
}

/// Wakes up to `n` waiters sleeping on `word`; returns how many were woken.
pub(crate) fn wake(word: &AtomicU32, n: u32) -> u32 {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `word` is a valid, aligned 32-bit atomic; FUTEX_WAKE only uses
    // its address as a key and never dereferences beyond it.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    if r < 0 { 0 } else { r as u32 }
}
