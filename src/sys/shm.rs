//! POSIX shared-memory files (`shm_open` and friends) via `nix`.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

pub(crate) use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

/// Creates `name` exclusively with exactly `mode` (umask does not apply),
/// checks that `len` bytes fit, and sizes the file to its first `head`
/// bytes only (all of `len` if smaller), reserved (`posix_fallocate`), so a
/// full `/dev/shm` fails here with `ENOSPC` instead of killing a later first
/// touch of a page with SIGBUS. The caller writes its header there, then
/// grows the file to `len` ([`set_len`]) and reserves the rest
/// ([`reserve_from`]): a creator killed at any point after its header is
/// written leaves a file that names it, which `gc` can judge; one killed
/// before leaves at most `head` bytes (under the temporary name
/// `Segment::create` makes it with, which names the creator too). (Sized
/// to `len` at once, a creator killed between the sizing and its header
/// left a full-size file with no header, which `gc` never removes.) On
/// any error the name is removed.
pub(crate) fn create(name: &CStr, mode: u32, len: u64, head: u64) -> Result<OwnedFd, Errno> {
    nix::libc::off_t::try_from(len).map_err(|_| Errno::EFBIG)?;
    let mode = Mode::from_bits_truncate(mode as nix::libc::mode_t);
    let fd = nix::sys::mman::shm_open(name, OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL, mode)?;
    let sized = nix::sys::stat::fchmod(fd.as_fd(), mode)
        .and_then(|()| fits(&fd, len))
        .and_then(|()| set_len(fd.as_fd(), len.min(head)))
        .and_then(|()| reserve_from(fd.as_fd(), 0, len.min(head)));
    if let Err(e) = sized {
        let _ = nix::sys::mman::shm_unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// Sets the size of the file `fd` to `len` bytes (`ftruncate`; the new
/// bytes are a hole until reserved). `EFBIG` if `len` is not a file offset.
pub(crate) fn set_len(fd: std::os::fd::BorrowedFd<'_>, len: u64) -> Result<(), Errno> {
    let len = nix::libc::off_t::try_from(len).map_err(|_| Errno::EFBIG)?;
    nix::unistd::ftruncate(fd, len)
}

/// `ENOSPC` if the file system of `fd` has fewer than `len` bytes free,
/// before any is reserved: /dev/shm is often as large as the machine's
/// memory, and reserving more than it has free (an absurd `max_frame`,
/// say) would fill memory until the OOM killer steps in, with any process
/// as its victim. (A check at one instant: the reservation itself still
/// fails cleanly if others take the space meanwhile.)
fn fits(fd: impl AsFd, len: u64) -> Result<(), Errno> {
    let st = nix::sys::statvfs::fstatvfs(fd)?;
    if st.blocks() == 0 {
        // A tmpfs mounted without a size limit (`size=0`) reports no blocks
        // at all: nothing to check against (the reservation still fails
        // cleanly if memory runs out).
        return Ok(());
    }
    let free = st.blocks_available().saturating_mul(st.fragment_size());
    if len > free { Err(Errno::ENOSPC) } else { Ok(()) }
}

/// `posix_fallocate` of the first `len` bytes, retried when a signal
/// interrupts it (tmpfs gives up with `EINTR` when a signal is pending, and
/// the kernel does not restart it even for `SA_RESTART` handlers: a parent
/// getting `SIGCHLD`s must still be able to create a large segment). It
/// goes in chunks, so an interrupted call only repeats its own chunk (tmpfs
/// undoes what an interrupted call allocated). `EFBIG` if `len` is not a
/// file offset.
///
/// `ENOSPC` at once, reserving nothing, if the file's unallocated pages
/// do not fit in the free room (as in [`reserve_range`]): used on files
/// with holes, which may be far larger than what /dev/shm has left.
pub(crate) fn reserve(fd: &OwnedFd, len: u64) -> Result<(), Errno> {
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    fits(fd, len.saturating_sub((st.st_blocks as u64).saturating_mul(512)))?;
    reserve_from(fd.as_fd(), 0, len)
}

/// [`reserve`] of the bytes from `from` to `len` (nothing if `from >= len`).
pub(crate) fn reserve_from(fd: std::os::fd::BorrowedFd<'_>, from: u64, len: u64) -> Result<(), Errno> {
    let len = nix::libc::off_t::try_from(len).map_err(|_| Errno::EFBIG)?;
    // (1 MiB in the unit tests: their files of several chunks then fit in
    // the 64 MiB /dev/shm of a default container.)
    const CHUNK: nix::libc::off_t = if cfg!(test) { 1 << 20 } else { 64 << 20 };
    let mut off = nix::libc::off_t::try_from(from).map_err(|_| Errno::EFBIG)?;
    while off < len {
        let n = CHUNK.min(len - off);
        #[cfg(test)]
        let r = if tests::INJECT_EINTR.with(|k| k.replace(k.get().saturating_sub(1))) > 0 {
            Err(Errno::EINTR)
        } else {
            nix::fcntl::posix_fallocate(fd.as_fd(), off, n)
        };
        #[cfg(not(test))]
        let r = nix::fcntl::posix_fallocate(fd.as_fd(), off, n);
        match r {
            Ok(()) => off += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `posix_fallocate` of `len` bytes from `offset` (extends the file when
/// the range goes past its end), retried on `EINTR` as in [`reserve`].
/// On failure tmpfs leaves the file size as it was. `ENOSPC` at once,
/// reserving nothing, if the file system has less free room than the
/// range needs (as [`create`] checks with `fits`): tmpfs takes every free
/// page before it gives up, so a growth that cannot fit would leave
/// /dev/shm full for everybody meanwhile. Pages of the file past
/// `offset` that are already allocated (a growth whose grower was killed
/// before it published the new length) count as room.
pub(crate) fn reserve_range(fd: std::os::fd::BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    let off = nix::libc::off_t::try_from(offset).map_err(|_| Errno::EFBIG)?;
    let n = nix::libc::off_t::try_from(len).map_err(|_| Errno::EFBIG)?;
    off.checked_add(n).ok_or(Errno::EFBIG)?;
    if n == 0 {
        return Ok(());
    }
    let st = nix::sys::stat::fstat(fd)?;
    let allocated_past = (st.st_blocks as u64).saturating_mul(512).saturating_sub(offset);
    fits(fd, len.saturating_sub(allocated_past))?;
    loop {
        match nix::fcntl::posix_fallocate(fd, off, n) {
            Err(Errno::EINTR) => {}
            r => return r,
        }
    }
}

/// Reads up to `buf.len()` bytes at `offset` (no mapping: a hole reads as
/// zeros without allocating, so this cannot fault). Returns how many.
pub(crate) fn read_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    let offset = nix::libc::off_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
    loop {
        // SAFETY: `buf` is valid for `buf.len()` byte writes; the fd is open (borrowed for the call).
        let n = unsafe { nix::libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), offset) };
        match Errno::result(n) {
            Err(Errno::EINTR) => continue,
            r => return r.map(|n| n as usize),
        }
    }
}

/// Opens an existing `name` for reading and writing (`shm_open` adds
/// `O_NOFOLLOW` and `O_CLOEXEC`).
pub(crate) fn open(name: &CStr) -> Result<OwnedFd, Errno> {
    nix::sys::mman::shm_open(name, OFlag::O_RDWR, Mode::empty())
}

/// Opens `path` read-only for inspection: never follows a symlink, never
/// blocks (a FIFO opens at once) and never becomes a controlling tty.
pub(crate) fn open_to_inspect(path: &std::path::Path) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, Mode::empty())
}

/// Opens `path` for reading and writing to mark it (a few header bytes
/// written with [`write_at`], never mapped): never follows a symlink,
/// never blocks (a FIFO opens at once) and never becomes a controlling tty.
pub(crate) fn open_to_mark(path: &std::path::Path) -> Result<OwnedFd, Errno> {
    let flags = OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, Mode::empty())
}

/// Writes `buf` at `offset` (no mapping, so a file truncated meanwhile
/// cannot fault us). Returns how many bytes were written.
pub(crate) fn write_at(fd: &OwnedFd, buf: &[u8], offset: u64) -> Result<usize, Errno> {
    let offset = nix::libc::off_t::try_from(offset).map_err(|_| Errno::EINVAL)?;
    loop {
        // SAFETY: `buf` is valid for `buf.len()` byte reads; the fd is open (borrowed for the call).
        let n = unsafe { nix::libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) };
        match Errno::result(n) {
            Err(Errno::EINTR) => continue,
            r => return r.map(|n| n as usize),
        }
    }
}

/// What `fstat` says about an open file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileInfo {
    pub(crate) size: u64,
    pub(crate) ino: u64,
    pub(crate) dev: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Permission bits (`0o777` part of `st_mode`).
    pub(crate) perm: u32,
    /// A regular file (not a FIFO, socket, device, directory...).
    pub(crate) regular: bool,
    /// Bytes of storage allocated to the file (`st_blocks` * 512).
    pub(crate) allocated: u64,
}

impl FileInfo {
    /// Whether the file has holes (pages never allocated). Touching a hole
    /// through a shared tmpfs mapping allocates a page, which is a SIGBUS
    /// when /dev/shm is full. (SEEK_HOLE cannot tell: tmpfs reports pages
    /// reserved by fallocate but not yet written as holes.)
    pub(crate) fn has_hole(&self) -> bool {
        self.allocated < self.size
    }
}

/// `fstat` of an open file.
pub(crate) fn fstat(fd: &OwnedFd) -> Result<FileInfo, Errno> {
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    Ok(FileInfo {
        size: st.st_size as u64,
        ino: st.st_ino,
        dev: st.st_dev,
        uid: st.st_uid,
        gid: st.st_gid,
        perm: st.st_mode & 0o777,
        regular: fmt == SFlag::S_IFREG,
        allocated: (st.st_blocks as u64).saturating_mul(512),
    })
}

/// Size of an open file in bytes.
pub(crate) fn fstat_file(file: &std::fs::File) -> Result<u64, Errno> {
    Ok(nix::sys::stat::fstat(file.as_fd())?.st_size as u64)
}

/// Our effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() }
}

/// Inode and device of the file currently at `path`, if any (the link
/// itself, not what a symlink points at).
pub(crate) fn stat_path(path: &std::path::Path) -> Option<(u64, u64)> {
    nix::sys::stat::lstat(path).ok().map(|st| (st.st_ino, st.st_dev))
}

/// Gives the segment `from` the second name `to` (`link(2)` on the
/// /dev/shm paths), atomically and never replacing: `EEXIST` if `to`
/// exists. So a name linked this way appears only with a complete file.
pub(crate) fn link_no_replace(from: &CStr, to: &CStr) -> Result<(), Errno> {
    let path = |n: &CStr| {
        let n = n.to_str().map_err(|_| Errno::EINVAL)?;
        Ok::<_, Errno>(format!("/dev/shm/{}", n.strip_prefix('/').unwrap_or(n)))
    };
    std::fs::hard_link(path(from)?, path(to)?).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)))
}

/// A range of this process's address space held for a growing shared
/// file: reserved inaccessible (`PROT_NONE`, no memory committed), then
/// filled from its start with shared mappings of the file as the file
/// grows ([`Self::map_to`]), so a growth maps only its new bytes and the
/// pages mapped before stay mapped (a fresh mapping of the whole file
/// would fault every page in again). Unmapped whole on drop.
#[derive(Debug)]
pub(crate) struct AddressRange {
    base: std::ptr::NonNull<u8>,
    cap: usize,
    /// Bytes of the file mapped from `base` (the first `mapped` bytes).
    mapped: usize,
}

// SAFETY: the range is this process's own address space (a raw address and lengths); moving or sharing the handle
// between threads changes nothing about it, and its mutations need `&mut`.
unsafe impl Send for AddressRange {}
// SAFETY: as above.
unsafe impl Sync for AddressRange {}

impl AddressRange {
    /// Reserves `cap` bytes of address space (a multiple of the page size).
    pub(crate) fn reserve(cap: usize) -> Result<AddressRange, Errno> {
        use nix::sys::mman::{MapFlags, ProtFlags};
        let n = std::num::NonZeroUsize::new(cap).ok_or(Errno::EINVAL)?;
        let flags = MapFlags::MAP_PRIVATE | MapFlags::MAP_ANONYMOUS | MapFlags::MAP_NORESERVE;
        // SAFETY: a new anonymous inaccessible mapping at an address the kernel picks: it overlaps nothing.
        let p = unsafe { nix::sys::mman::mmap_anonymous(None, n, ProtFlags::PROT_NONE, flags) }?;
        Ok(AddressRange { base: p.cast(), cap, mapped: 0 })
    }

    /// Where the range starts.
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// How many bytes it can hold.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Maps the file `fd` from its start up to `len` bytes (at most
    /// `cap`; more than mapped so far) shared read-write: only the bytes
    /// past those mapped already, at their place in the range.
    pub(crate) fn map_to(&mut self, fd: std::os::fd::BorrowedFd<'_>, len: usize) -> Result<(), Errno> {
        use nix::sys::mman::{MapFlags, ProtFlags};
        if len > self.cap || len <= self.mapped || !self.mapped.is_multiple_of(4096) {
            return Err(Errno::EINVAL);
        }
        let n = std::num::NonZeroUsize::new(len - self.mapped).ok_or(Errno::EINVAL)?;
        let off = nix::libc::off_t::try_from(self.mapped).map_err(|_| Errno::EFBIG)?;
        // SAFETY: mapped < cap, so the address is inside our reservation.
        let at = unsafe { self.base.as_ptr().add(self.mapped) };
        let addr = std::num::NonZeroUsize::new(at as usize).ok_or(Errno::EINVAL)?;
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: MAP_FIXED replaces only pages of our own PROT_NONE reservation past the bytes mapped so far
        // (mapped..len <= cap): nothing in this process refers to them (views cover at most `mapped` bytes).
        unsafe { nix::sys::mman::mmap(Some(addr), n, prot, MapFlags::MAP_SHARED | MapFlags::MAP_FIXED, fd, off) }?;
        self.mapped = len;
        Ok(())
    }
}

impl Drop for AddressRange {
    fn drop(&mut self) {
        // SAFETY: the whole range is ours (reserved in `reserve`); its owner drops it only when no pointer into
        // it is used any more.
        let _ = unsafe { nix::sys::mman::munmap(self.base.cast(), self.cap) };
    }
}

/// The address space this process may still map under its `RLIMIT_AS`
/// (the limit less its size now, from `/proc/self/statm`), or `None`
/// when the limit is infinite. Unreadable sizes count as no room.
pub(crate) fn address_space_room() -> Option<usize> {
    let mut rl = nix::libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `rl` is a valid, writable rlimit struct.
    if unsafe { nix::libc::getrlimit(nix::libc::RLIMIT_AS, &mut rl) } != 0 || rl.rlim_cur == nix::libc::RLIM_INFINITY {
        return None;
    }
    let lim = rl.rlim_cur;
    let pages: Option<u64> = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|w| w.parse().ok()));
    let used = pages.map_or(u64::MAX, |p| p.saturating_mul(4096));
    Some(usize::try_from(lim.saturating_sub(used)).unwrap_or(usize::MAX))
}

/// Removes `name`; mappings stay valid until unmapped.
pub(crate) fn unlink(name: &CStr) -> Result<(), Errno> {
    nix::sys::mman::shm_unlink(name)
}

/// The size of a memory page: the unit in which /dev/shm (tmpfs) gives a
/// file memory, so a file of `n` bytes takes `n` rounded up to it.
pub(crate) fn page_size() -> u64 {
    // SAFETY: `sysconf` only reads a configuration value; no pointers.
    let n = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&p| p.is_power_of_two()).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// How many of the next `posix_fallocate` calls on this thread
        /// report `EINTR` (as tmpfs does when a signal is pending) instead
        /// of running.
        pub(super) static INJECT_EINTR: Cell<u32> = const { Cell::new(0) };
    }

    /// A signal during the page reservation is not a failure to create.
    /// (A real EINTR needs the signal to land while tmpfs allocates; it was
    /// not seen on kernel 6.18 under a 100 us itimer, so it is injected.)
    #[test]
    fn create_retries_fallocate_interrupted_by_a_signal() {
        let name = std::ffi::CString::new(format!("/shmproc.unit-eintr-{}", std::process::id())).unwrap();
        INJECT_EINTR.with(|n| n.set(3));
        // Three chunks (the last one partial); three calls interrupted.
        let created = create(&name, 0o600, (2 << 20) + 4096, u64::MAX);
        INJECT_EINTR.with(|n| n.set(0));
        let size = created.as_ref().ok().map(|fd| fstat(fd).unwrap().size);
        let holes = created.as_ref().ok().map(|fd| fstat(fd).unwrap().has_hole());
        let _ = unlink(&name);
        assert_eq!(created.err(), None, "an interrupted fallocate made create fail");
        assert_eq!(size, Some((2 << 20) + 4096));
        assert_eq!(holes, Some(false), "pages left unreserved");
    }
}
