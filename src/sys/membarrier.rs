//! Asymmetric memory barriers across processes (`membarrier(2)`).
//!
//! A queue producer publishes with a plain store and then checks a
//! "consumer sleeping" flag with a plain load (a compiler fence between
//! them, no CPU fence). A consumer about to sleep sets the flag and calls
//! [`heavy`], which makes every CPU running a registered process execute a
//! full barrier before it returns; then it re-checks the queue. Either the
//! producer's store was visible to that re-check, or the producer's later
//! flag load sees the flag: no wake-up is lost, and the fast path pays
//! nothing. Processes register once ([`register`]); where the kernel
//! refuses, [`available`] is false and callers fall back to real fences.

use std::sync::OnceLock;

const CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 4;

fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: membarrier takes no pointers; flags 0, cpu_id 0.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// Registers this process as a target of global expedited barriers (once).
/// Returns whether asymmetric barriers are usable.
pub(crate) fn register() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| membarrier(CMD_REGISTER_GLOBAL_EXPEDITED))
}

/// Whether [`register`] succeeded in this process.
pub(crate) fn available() -> bool {
    register()
}

/// The heavy side: a full barrier on every CPU running a registered
/// process. Falls back to a local SeqCst fence if the kernel refuses.
pub(crate) fn heavy() {
    if !(available() && membarrier(CMD_GLOBAL_EXPEDITED)) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}
