//! The only module that talks to the kernel (`libc` / `nix`): futexes, POSIX
//! shared-memory files, thread identity and process liveness.

pub(crate) mod futex;
pub(crate) mod membarrier;
pub(crate) mod proc;
pub(crate) mod shm;
pub(crate) mod thread;
