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

/// Test hook: this thread's futex waits (`wait`, `waitv`) that ended by
/// their deadline (`ETIMEDOUT`): how many, and the absolute
/// `CLOCK_MONOTONIC` deadline (ns) of the latest. The kernel reports a
/// timeout only if no `FUTEX_WAKE` dequeued the waiter before it ran again,
/// so a timed-out wait whose deadline lies after a wake completed was never
/// reached by that wake (a lost wake-up), however late the thread ran.
#[cfg(feature = "test-hooks")]
#[cfg_attr(loom, allow(dead_code))] // exported only off loom
#[doc(hidden)]
pub fn __timed_out_waits() -> (u64, u64) {
    TIMED_OUT.with(|t| t.get())
}

#[cfg(feature = "test-hooks")]
thread_local! {
    static TIMED_OUT: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Counts a timed-out wait for [`__timed_out_waits`] (a no-op without
/// `test-hooks`).
#[inline]
fn note_timeout(ts: Option<&libc::timespec>) {
    #[cfg(feature = "test-hooks")]
    {
        let at = ts.map_or(0, |t| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
        TIMED_OUT.with(|c| c.set((c.get().0 + 1, at)));
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = ts;
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
            Some(libc::ETIMEDOUT) => {
                note_timeout(ts.as_ref());
                return WaitOutcome::TimedOut;
            }
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

/// One word of a [`waitv`] call: sleep while `*word == expected`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitvWord {
    /// The 32-bit word's address (in a shared or private mapping).
    pub(crate) word: *const AtomicU32,
    pub(crate) expected: u32,
}

/// Why [`waitv`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitvOutcome {
    /// Woken through the word at this index.
    Woken(usize),
    /// A word no longer held its expected value (or a spurious return).
    Changed,
    /// The deadline passed.
    TimedOut,
    /// The call was refused: `permanent` when the kernel has no
    /// `futex_waitv` (`ENOSYS`, Linux < 5.16); otherwise this one call
    /// failed (a seccomp filter's `EPERM`, `EFAULT`...). Use the fallback.
    Unsupported { permanent: bool },
}

/// Most words one `futex_waitv` call takes (`FUTEX_WAITV_MAX`).
pub(crate) const WAITV_MAX: usize = 128;

/// `struct futex_waitv` of `<linux/futex.h>`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`; no `FUTEX2_PRIVATE`: the words live in shared mappings.
const FUTEX2_SIZE_U32: u32 = 0x02;
/// `__NR_futex_waitv`, the same number on x86_64 and aarch64.
const SYS_FUTEX_WAITV: libc::c_long = 449;

/// Sleeps until one of `words` (at most [`WAITV_MAX`]) is woken or no
/// longer holds its expected value, or `deadline` passes (`None`: no
/// timeout). Like [`wait`], the compare and the enqueue on every word are
/// atomic with respect to [`wake`]; the deadline is absolute on
/// `CLOCK_MONOTONIC`, so `EINTR` is retried without stretching it.
///
/// # Safety
/// Every `word` points at a live, 4-aligned 32-bit atomic for the whole
/// call (the kernel only compares it and uses its address as a key).
pub(crate) unsafe fn waitv(words: &[WaitvWord], deadline: Option<Instant>) -> WaitvOutcome {
    debug_assert!(!words.is_empty() && words.len() <= WAITV_MAX);
    let list: Vec<FutexWaitv> = words
        .iter()
        .map(|w| FutexWaitv { val: u64::from(w.expected), uaddr: w.word as u64, flags: FUTEX2_SIZE_U32, reserved: 0 })
        .collect();
    let ts = deadline.map(as_timespec);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `list` holds `list.len()` (<= 128) initialised entries whose addresses are live atomics (the
        // caller's contract); the timespec pointer is null or points at `ts`, alive here; flags 0.
        let r = unsafe {
            libc::syscall(
                SYS_FUTEX_WAITV,
                list.as_ptr(),
                list.len() as libc::c_uint,
                0u32,
                ts_ptr,
                libc::CLOCK_MONOTONIC,
            )
        };
        if r >= 0 {
            return WaitvOutcome::Woken(r as usize);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => {
                note_timeout(ts.as_ref());
                return WaitvOutcome::TimedOut;
            }
            // EAGAIN: a word differed (the caller re-checks every object).
            Some(libc::EAGAIN) => return WaitvOutcome::Changed,
            // ENOSYS (Linux < 5.16), or a refusal (a seccomp filter's
            // EPERM, EINVAL, EFAULT on a mapping torn away): the caller
            // falls back to single-word waits, never to a busy loop.
            e => return WaitvOutcome::Unsupported { permanent: e == Some(libc::ENOSYS) },
        }
    }
}
