//! POSIX shared-memory files (`shm_open` and friends) via `nix`.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

pub(crate) use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Creates `name` exclusively with exactly `mode` (umask does not apply)
/// and sizes it to `len` bytes.
pub(crate) fn create(name: &CStr, mode: u32, len: u64) -> Result<OwnedFd, Errno> {
    let mode = Mode::from_bits_truncate(mode as nix::libc::mode_t);
    let fd = nix::sys::mman::shm_open(name, OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL, mode)?;
    let sized = nix::sys::stat::fchmod(fd.as_fd(), mode)
        .and_then(|()| nix::unistd::ftruncate(fd.as_fd(), len as nix::libc::off_t));
    if let Err(e) = sized {
        let _ = nix::sys::mman::shm_unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// Opens an existing `name` for reading and writing.
pub(crate) fn open(name: &CStr) -> Result<OwnedFd, Errno> {
    nix::sys::mman::shm_open(name, OFlag::O_RDWR, Mode::empty())
}

/// Size, inode and device of an open file.
pub(crate) fn fstat(fd: &OwnedFd) -> Result<(u64, u64, u64), Errno> {
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    Ok((st.st_size as u64, st.st_ino, st.st_dev))
}

/// Inode and device of the file currently at `path`, if any.
pub(crate) fn stat_path(path: &std::path::Path) -> Option<(u64, u64)> {
    nix::sys::stat::stat(path).ok().map(|st| (st.st_ino, st.st_dev))
}

/// Removes `name`; mappings stay valid until unmapped.
pub(crate) fn unlink(name: &CStr) -> Result<(), Errno> {
    nix::sys::mman::shm_unlink(name)
}
