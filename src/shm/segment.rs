//! A named mapping of one shared-memory file, with ownership.

use std::ffi::CString;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use super::header::{FLAG_PERSIST, Fingerprint, HEADER_SIZE, Header, LAYOUT_VERSION, MAGIC};
use super::{Kind, NAME_PREFIX, Options, os_name};
use crate::OpenError;
use crate::sys;
use crate::sys::shm::Errno;

/// Where POSIX shared-memory names live on Linux.
const SHM_DIR: &str = "/dev/shm";

/// One mapped segment. Dropped when the last handle to its object drops.
pub(crate) struct Segment {
    name: String,
    os_name: CString,
    map: MmapRaw,
    /// Set in the creating process only: (pid, inode, device). The creator
    /// unlinks the name on drop if the file there is still ours.
    creator: Option<(u32, u64, u64)>,
    persist: AtomicBool,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("name", &self.name).field("len", &self.map.len()).finish()
    }
}

fn errno_to_open(name: &str, e: Errno) -> OpenError {
    match e {
        Errno::ENOENT => OpenError::NotFound(name.to_owned()),
        Errno::EEXIST => OpenError::AlreadyExists(name.to_owned()),
        Errno::EACCES | Errno::EPERM => OpenError::PermissionDenied(name.to_owned()),
        Errno::ENAMETOOLONG => OpenError::InvalidName { name: name.to_owned(), reason: "too long" },
        e => OpenError::Io { name: name.to_owned(), source: std::io::Error::from(e) },
    }
}

fn map(name: &str, fd: std::os::fd::OwnedFd, len: u64) -> Result<MmapRaw, OpenError> {
    let file = File::from(fd);
    let len = usize::try_from(len).map_err(|_| OpenError::Corrupted {
        name: name.to_owned(),
        reason: format!("size {len} does not fit in memory"),
    })?;
    MmapOptions::new().len(len).map_raw(&file).map_err(|e| OpenError::Io { name: name.to_owned(), source: e })
}

impl Segment {
    /// Creates `name` with room for `total_len` bytes and writes the header
    /// (all but READY: the caller builds the object, then calls `publish`).
    pub(crate) fn create(
        name: &str,
        opts: &Options,
        kind: Kind,
        fp: &Fingerprint,
        capacity: u64,
        total_len: u64,
    ) -> Result<Segment, OpenError> {
        let c_name = os_name(name)?;
        let fd = sys::shm::create(&c_name, opts.mode, total_len).map_err(|e| errno_to_open(name, e))?;
        let (_, ino, dev) = sys::shm::fstat(&fd).map_err(|e| errno_to_open(name, e))?;
        let map = match map(name, fd, total_len) {
            Ok(m) => m,
            Err(e) => {
                let _ = sys::shm::unlink(&c_name);
                return Err(e);
            }
        };
        let seg = Segment {
            name: name.to_owned(),
            os_name: c_name,
            map,
            creator: Some((std::process::id(), ino, dev)),
            persist: AtomicBool::new(false),
        };
        seg.header().write_fields(kind, fp, capacity, total_len);
        Ok(seg)
    }

    /// Opens `name`, waits (bounded by `opts.init_timeout`) until it is
    /// READY, and checks magic, version, kind and element type. The caller
    /// checks the object-specific layout with [`Segment::check_len`].
    pub(crate) fn open(name: &str, opts: &Options, kind: Kind, fp: &Fingerprint) -> Result<Segment, OpenError> {
        let c_name = os_name(name)?;
        let deadline = Instant::now() + opts.init_timeout;
        let init_timeout = || OpenError::InitTimeout { name: name.to_owned(), timeout: opts.init_timeout };
        let pause = || std::thread::sleep(Duration::from_micros(200));
        let seg = loop {
            let fd = sys::shm::open(&c_name).map_err(|e| errno_to_open(name, e))?;
            let (size, _, _) = sys::shm::fstat(&fd).map_err(|e| errno_to_open(name, e))?;
            if size == 0 {
                // Created but not sized yet: the creator is mid-init (or died).
                if Instant::now() >= deadline {
                    return Err(init_timeout());
                }
                pause();
                continue;
            }
            let map = map(name, fd, size)?;
            if size < HEADER_SIZE as u64 {
                // Ours but cut short, or not ours at all?
                let mut magic = [0u8; 8];
                if size >= 8 {
                    // SAFETY: the mapping has at least 8 bytes; copying bytes that a peer may be writing only
                    // yields garbage bytes.
                    unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), magic.as_mut_ptr(), 8) };
                }
                return Err(if u64::from_le_bytes(magic) == MAGIC {
                    OpenError::Truncated { name: name.to_owned(), expected: HEADER_SIZE as u64, actual: size }
                } else {
                    OpenError::Foreign(name.to_owned())
                });
            }
            break Segment {
                name: name.to_owned(),
                os_name: c_name,
                map,
                creator: None,
                persist: AtomicBool::new(false),
            };
        };
        let h = seg.header();
        loop {
            match h.magic.load(Ordering::Relaxed) {
                MAGIC if h.is_ready() => break,
                MAGIC | 0 => {}
                _ => return Err(OpenError::Foreign(name.to_owned())),
            }
            if Instant::now() >= deadline {
                return Err(init_timeout());
            }
            pause();
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(OpenError::LayoutVersion { name: name.to_owned(), found: version, expected: LAYOUT_VERSION });
        }
        let found = Kind::from_u32(h.kind.load(Ordering::Relaxed));
        if found != kind {
            return Err(OpenError::WrongKind { name: name.to_owned(), expected: kind, found });
        }
        let (size, align, hash) = (
            h.elem_size.load(Ordering::Relaxed),
            h.elem_align.load(Ordering::Relaxed),
            h.elem_hash.load(Ordering::Relaxed),
        );
        if (size, align, hash) != (fp.size, fp.align, fp.hash) {
            return Err(OpenError::IncompatibleType {
                name: name.to_owned(),
                expected: format!("{} (size {}, align {})", fp.name, fp.size, fp.align),
                found: format!("{} (size {size}, align {align})", h.type_name()),
            });
        }
        Ok(seg)
    }

    /// Checks the header's recorded length against what the object layout
    /// needs (`needed`) and against the real file size.
    pub(crate) fn check_len(&self, needed: u64) -> Result<(), OpenError> {
        let recorded = self.header().total_len.load(Ordering::Relaxed);
        if recorded != needed {
            return Err(OpenError::Corrupted {
                name: self.name.clone(),
                reason: format!("header says {recorded} bytes, layout needs {needed}"),
            });
        }
        let actual = self.map.len() as u64;
        if actual < needed {
            return Err(OpenError::Truncated { name: self.name.clone(), expected: needed, actual });
        }
        Ok(())
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: every mapping is >= HEADER_SIZE bytes (checked in create/open) and page-aligned; Header is
        // atomics only, so a shared reference is sound even while peers write to it.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// Start of the mapping.
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The capacity field recorded by the creator (untrusted).
    pub(crate) fn capacity(&self) -> u64 {
        self.header().capacity.load(Ordering::Relaxed)
    }

    /// Makes the creator leave the name in place when it drops, and marks
    /// the segment so `gc` leaves it too.
    pub(crate) fn persist(&self) {
        self.persist.store(true, Ordering::Relaxed);
        self.header().flags.fetch_or(FLAG_PERSIST, Ordering::Relaxed);
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let Some((pid, ino, dev)) = self.creator else {
            return;
        };
        // A forked child inherits the handle but is not the creator.
        if pid != std::process::id() || self.persist.load(Ordering::Relaxed) {
            return;
        }
        // Only unlink if the name still refers to our file (gc or a peer may
        // have removed it and somebody else created a new one since).
        let path = std::path::Path::new(SHM_DIR).join(&self.os_name.to_string_lossy()[1..]);
        if sys::shm::stat_path(&path) == Some((ino, dev)) {
            let _ = sys::shm::unlink(&self.os_name);
        }
    }
}

/// Removes the name `name` from `/dev/shm` (for example a segment that was
/// [`persist`](crate::Lock::persist)ed). Processes that have it open keep
/// using it; new `open`s fail with [`OpenError::NotFound`].
///
/// ```
/// let name = format!("doc-unlink-{}", std::process::id());
/// let lock = shmproc::Lock::create(&name).unwrap();
/// lock.persist();
/// drop(lock);
/// assert!(shmproc::Lock::open(&name).is_ok()); // persisted
/// shmproc::unlink(&name).unwrap();
/// assert!(matches!(shmproc::Lock::open(&name), Err(shmproc::OpenError::NotFound(_))));
/// ```
pub fn unlink(name: &str) -> Result<(), OpenError> {
    let c_name = os_name(name)?;
    sys::shm::unlink(&c_name).map_err(|e| errno_to_open(name, e))
}

/// Removes this crate's segments whose creator process is dead, and
/// segments abandoned mid-initialisation for more than 10 seconds.
/// Persisted segments and foreign files are left alone. Returns the names
/// removed.
///
/// ```
/// let removed = shmproc::gc().unwrap();
/// // Whatever was removed had a dead creator; live objects are untouched.
/// let lock = shmproc::Lock::new().unwrap();
/// assert!(!shmproc::gc().unwrap().contains(&lock.name().to_owned()));
/// # let _ = removed;
/// ```
pub fn gc() -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(user) = file_name.to_str().and_then(|n| n.strip_prefix(NAME_PREFIX)) else {
            continue;
        };
        if gc_one(user, &entry) {
            let c_name = os_name(user).map_err(std::io::Error::other)?;
            if sys::shm::unlink(&c_name).is_ok() {
                removed.push(user.to_owned());
            }
        }
    }
    Ok(removed)
}

/// Whether `user`'s segment is garbage.
fn gc_one(user: &str, entry: &std::fs::DirEntry) -> bool {
    let Ok(c_name) = os_name(user) else {
        return false;
    };
    let Ok(fd) = sys::shm::open(&c_name) else {
        return false;
    };
    let Ok((size, _, _)) = sys::shm::fstat(&fd) else {
        return false;
    };
    let abandoned = || {
        entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(10))
    };
    if size < HEADER_SIZE as u64 {
        return abandoned();
    }
    let Ok(map) = MmapOptions::new().len(HEADER_SIZE).map_raw_read_only(&File::from(fd)) else {
        return false;
    };
    // SAFETY: the mapping is HEADER_SIZE bytes, page-aligned, and Header is
    // atomics only; `map` outlives `h`.
    let h = unsafe { &*(map.as_ptr() as *const Header) };
    // Acquire pairs with the Release store of `magic` in write_fields: the
    // creator identity is visible once the magic is.
    match h.magic.load(Ordering::Acquire) {
        MAGIC => {
            if h.flags.load(Ordering::Relaxed) & FLAG_PERSIST != 0 {
                return false;
            }
            let pid = h.creator_pid.load(Ordering::Relaxed);
            let start = h.creator_start.load(Ordering::Relaxed);
            sys::thread::process_is_dead(pid, start)
        }
        0 => abandoned(),
        _ => false,
    }
}
