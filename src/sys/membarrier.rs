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

// Commands from <linux/membarrier.h>. (1 << 4 is REGISTER_PRIVATE_EXPEDITED:
// registering with it leaves GLOBAL_EXPEDITED skipping this process.)
const CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;
#[cfg(test)]
const CMD_GET_REGISTRATIONS: libc::c_int = 1 << 9;

fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: membarrier takes no pointers; flags 0, cpu_id 0.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// Registers this process as a target of global expedited barriers (once).
/// Returns whether asymmetric barriers are usable. The registration belongs
/// to the address space: a forked child inherits it, an `exec` drops it
/// (a spawned child registers again when it opens its first queue).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel lists this process as registered for global expedited
    /// barriers (the command that lists registrations exists since Linux
    /// 6.3; on older kernels there is nothing to ask).
    #[test]
    fn registers_for_global_expedited_barriers() {
        assert!(register(), "membarrier registration refused");
        // SAFETY: membarrier takes no pointers.
        let regs = unsafe { libc::syscall(libc::SYS_membarrier, CMD_GET_REGISTRATIONS, 0, 0) };
        if regs < 0 {
            eprintln!("kernel cannot list membarrier registrations; skipped");
            return;
        }
        // MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED in <linux/membarrier.h>,
        // spelled out here so a wrong constant above cannot agree with itself.
        const HEADER_REGISTER_GLOBAL_EXPEDITED: libc::c_long = 0x4;
        assert_ne!(regs & HEADER_REGISTER_GLOBAL_EXPEDITED, 0, "registrations: {regs:#x}");
    }
}
