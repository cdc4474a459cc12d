//! The SPSC index protocol, shared by [`SpscQueue`](super::SpscQueue)'s
//! ends and checked under loom (`tests/loom.rs`, heap-backed).
//!
//! Free-running u64 indices; `tail - head` is the fill level, clamped to
//! the capacity because the indices live in untrusted shared memory. Each
//! side keeps a cached copy of the other's index and reloads it only when
//! the cached copy says it cannot proceed.

use crate::wait::atomic::{AtomicU64, Ordering};

/// Producer: free slots, reloading `head` into `head_cache` only if the
/// cached value shows fewer than `want`.
#[inline(always)]
pub fn free(tail: u64, head_cache: &mut u64, head: &AtomicU64, cap: u64, want: u64) -> u64 {
    let free = cap - tail.wrapping_sub(*head_cache).min(cap);
    if free >= want {
        return free;
    }
    // Acquire: pairs with the consumer's Release store in `publish` of
    // head, so the slots it freed are no longer being read.
    *head_cache = head.load(Ordering::Acquire);
    cap - tail.wrapping_sub(*head_cache).min(cap)
}

/// Consumer: items available, reloading `tail` into `tail_cache` only if
/// the cached value shows fewer than `want`.
#[inline(always)]
pub fn available(head: u64, tail_cache: &mut u64, tail: &AtomicU64, cap: u64, want: u64) -> u64 {
    let avail = tail_cache.wrapping_sub(head).min(cap);
    if avail >= want {
        return avail;
    }
    // Acquire: pairs with the producer's Release store in `publish` of
    // tail, so the slots it wrote are visible.
    *tail_cache = tail.load(Ordering::Acquire);
    tail_cache.wrapping_sub(head).min(cap)
}

/// Either side: publishes its index after writing (producer) or reading
/// (consumer) the slots it covers.
#[inline(always)]
pub fn publish(index: &AtomicU64, value: u64) {
    // Release: pairs with the Acquire loads in `free` / `available`.
    index.store(value, Ordering::Release);
}
