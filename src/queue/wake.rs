//! The wake protocol of the SPSC-style rings (items and byte frames): an
//! uncontended push or pop makes no syscall and executes no CPU fence.
//! Source: the asymmetric Dekker handshake of Folly's
//! `asymmetricHeavyBarrier` / userspace RCU (a heavy `membarrier` on the
//! rare side, a compiler fence on the hot side), with a futex for sleeping.
//!
//! The sleeping side sets its `*_waiting` flag to 1 (SeqCst), issues the
//! process-wide asymmetric barrier (`membarrier`, see
//! `crate::wait::handshake`), re-checks the index (and the closed / peer
//! gone flags), and sleeps on the *flag's* futex while it holds 1; the
//! publishing side stores its index (Release) and then only needs a plain
//! load of the flag to know whether to wake it: it clears the flag and
//! wakes it. `close` and a peer's detach clear and wake the flags too, so
//! every event a sleeper waits for changes the word it sleeps on: a wake
//! that comes between its re-check and its sleep is not lost (the futex
//! wait finds the flag cleared and returns). Sleepers wake at least once
//! per `POLL` to check that the peer is alive.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::spsc::SpscCtl;
use crate::wait::Deadline;
use crate::wait::futex::{wait32, wake32};
use crate::wait::handshake;
use crate::wait::spin::POLL;

/// Publishes an index (`ring::publish`, Release) and wakes the peer if it
/// announced that it sleeps (see `fence_before_waiter_check`).
#[inline(always)]
pub(super) fn publish_and_wake(c: &SpscCtl, word: &AtomicU64, value: u64, peer_waiting: &AtomicU32) {
    super::ring::publish(word, value);
    handshake::fence_before_waiter_check(&c.meta.0.fences);
    if peer_waiting.load(Ordering::Relaxed) != 0 {
        wake_sleeper(peer_waiting);
    }
}

/// Wakes the sleeper announced by `flag` (if any): clears the flag (the
/// word it sleeps on while it holds 1) and wakes it.
#[cold]
pub(super) fn wake_sleeper(flag: &AtomicU32) {
    // SeqCst: pairs with the sleeper's SeqCst store of 1 (and, from `close`
    // and `detach`, orders their flag store before this one).
    flag.store(0, Ordering::SeqCst);
    wake32(flag, u32::MAX);
}

/// Sleeps on `word` (low half) while it still equals `seen`, with the
/// flag/barrier handshake; returns when woken, on timeout, or on `POLL`.
pub(super) fn sleep_on(word: &AtomicU64, seen: u64, flag: &AtomicU32, deadline: Deadline, recheck: impl Fn() -> bool) {
    // SeqCst store, then the heavy barrier: pairs with the peer's plain
    // (compiler-fenced) flag load after its index store.
    flag.store(1, Ordering::SeqCst);
    handshake::after_announcing();
    // Acquire: pairs with the peer's Release store of this index.
    if word.load(Ordering::Acquire) == seen && !recheck() {
        // Asleep while the flag holds 1: whoever wakes us clears it first.
        wait32(flag, 1, deadline.capped(POLL));
    }
    flag.store(0, Ordering::Relaxed);
}

/// Asks for the cache line at `p` (a hint: no fault, no effect on
/// correctness; a no-op where there is no prefetch instruction).
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults and changes no architectural state.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
