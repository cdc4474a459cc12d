//! A named mapping of one shared-memory file, with ownership.

use std::ffi::CString;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use super::header::{FLAG_PERSIST, Fingerprint, HEADER_SIZE, Header, LAYOUT_VERSION, MAGIC};
use super::names::making_name;
use super::{Kind, Options, copy, os_name};
use crate::OpenError;
use crate::sys;
use crate::sys::shm::Errno;
use crate::wait::Deadline;

/// Where POSIX shared-memory names live on Linux.
pub(super) const SHM_DIR: &str = "/dev/shm";

/// Header fields `Segment::open` read (once each) for the object layer to
/// validate; nobody reads them from shared memory again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderFields {
    pub(crate) capacity: u64,
    pub(crate) total_len: u64,
}

/// One mapped segment. Dropped when the last handle to its object drops.
pub(crate) struct Segment {
    name: String,
    os_name: CString,
    map: MmapRaw,
    /// The open file, kept only where a segment grows (a Manager
    /// container extends and remaps it); a fixed-size object drops it once
    /// mapped ([`Segment::close_file`]), so a program holding many objects
    /// is not bounded by its open-file limit.
    file: Option<File>,
    /// Set in the creating process only: (pid, inode, device). The creator
    /// unlinks the name on drop if the file there is still ours.
    creator: Option<(u32, u64, u64)>,
    persist: AtomicBool,
    /// Only this process's `persist` keeps the name (the header's flag,
    /// which any process mapping the segment can set, is ignored): for a
    /// segment private to a pool, which no peer has a reason to persist
    /// and a task's scribble must not make its creator leave behind.
    private: AtomicBool,
    /// The other owners and groups `open` was told to trust
    /// (`Options::trust_owner`/`trust_group`, with the `mode` that says how
    /// writable their segment may be), if any: a child given this handle
    /// opens the name with the same trust.
    trust: Option<Box<Options>>,
    /// The file's (device, inode): the same for every handle of this
    /// segment in any process (its mappings keep the inode alive).
    file_id: (u64, u64),
    /// The file's permission bits when this handle made or opened it (set
    /// by its owner; not something a peer can change through the mapping).
    perm: u32,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("name", &self.name).field("len", &self.map.len()).finish()
    }
}

pub(super) fn errno_to_open(name: &str, e: Errno) -> OpenError {
    match e {
        Errno::ENOENT => OpenError::NotFound(name.to_owned()),
        Errno::EEXIST => OpenError::AlreadyExists(name.to_owned()),
        Errno::EACCES | Errno::EPERM => OpenError::PermissionDenied(name.to_owned()),
        Errno::ENAMETOOLONG => OpenError::InvalidName { name: name.to_owned(), reason: "too long" },
        e => OpenError::Io { name: name.to_owned(), source: std::io::Error::from(e) },
    }
}

/// Errors of reserving `bytes` pages: no room is [`OpenError::NoSpace`].
fn space_error(name: &str, bytes: u64, e: Errno) -> OpenError {
    match e {
        Errno::ENOSPC | Errno::EFBIG | Errno::ENOMEM => OpenError::NoSpace { name: name.to_owned(), bytes },
        e => errno_to_open(name, e),
    }
}

fn map(name: &str, fd: std::os::fd::OwnedFd, len: u64) -> Result<(MmapRaw, File), OpenError> {
    let file = File::from(fd);
    let map = map_file(name, &file, len)?;
    Ok((map, file))
}

/// Maps the first `len` bytes of `file` (shared, read-write).
pub(crate) fn map_file(name: &str, file: &File, len: u64) -> Result<MmapRaw, OpenError> {
    let len = usize::try_from(len).map_err(|_| OpenError::Corrupted {
        name: name.to_owned(),
        reason: format!("size {len} does not fit in memory"),
    })?;
    MmapOptions::new().len(len).map_raw(file).map_err(|e| OpenError::Io { name: name.to_owned(), source: e })
}

/// The bytes `Segment::create` reserves before it writes the header: the
/// header's page.
pub(super) const HEAD_PAGE: u64 = 4096;
const _: () = assert!(HEADER_SIZE as u64 <= HEAD_PAGE);

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
        // Made under a name of its own that names this process
        // ([`making_name`]), and given `name` only once its header names
        // us: a creator killed at any point leaves either that name,
        // which `gc` judges by the identity in it, or a file whose header
        // names it. (Made under `name` itself, a creator killed before its
        // header was written, a window of several system calls and a
        // /proc read, left a headerless file `gc` could not judge: the
        // name was taken for good.)
        let path = std::path::Path::new(SHM_DIR).join(&c_name.to_string_lossy()[1..]);
        if sys::shm::stat_path(&path).is_some() {
            // Taken: say so before making anything (`open_or_create` tries
            // `create` first every time). The link below decides races.
            return Err(OpenError::AlreadyExists(name.to_owned()));
        }
        let identity = sys::thread::process_identity();
        // The header's page first, the rest once the header names us (below).
        // A temporary name taken already (left by this very process before
        // an `exec`, which restarts the numbering; or a user's name) is
        // skipped, never reported as `name` taken.
        let mut attempts = 0;
        let (c_temp, fd) = loop {
            let c_temp = os_name(&making_name(identity))?;
            match sys::shm::create(&c_temp, opts.mode, total_len, HEAD_PAGE) {
                Err(Errno::EEXIST) if attempts < 64 => attempts += 1,
                r => break (c_temp, r.map_err(|e| space_error(name, total_len, e))?),
            }
        };
        let made = sys::shm::fstat(&fd).map_err(|e| errno_to_open(name, e)).and_then(|info| Ok((info, map(name, fd, total_len)?)));
        let (info, (map, file)) = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = sys::shm::unlink(&c_temp);
                return Err(e);
            }
        };
        let (ino, dev) = (info.ino, info.dev);
        let seg = Segment {
            name: name.to_owned(),
            os_name: c_name,
            map,
            file: Some(file),
            creator: Some((std::process::id(), ino, dev)),
            persist: AtomicBool::new(false),
            private: AtomicBool::new(false),
            trust: None,
            file_id: (dev, ino),
            perm: info.perm,
        };
        seg.header().write_fields(kind, fp, capacity, total_len, identity);
        // Now under `name`, never replacing a file there (`AlreadyExists`;
        // dropping `seg` then leaves that file alone: another inode).
        let linked = sys::shm::link_no_replace(&c_temp, &seg.os_name);
        let _ = sys::shm::unlink(&c_temp);
        linked.map_err(|e| errno_to_open(name, e))?;
        // The rest of the pages: a creator killed while reserving them (a
        // wide window for a large segment) leaves a file whose header names
        // it, which `gc` removes; on failure, dropping `seg` removes the name.
        let file = seg.file.as_ref().ok_or_else(|| OpenError::Io {
            name: name.to_owned(),
            source: std::io::Error::other("a new segment without its file"),
        })?;
        // Only now the file takes its full size: before the header named
        // us, a killed creator's file could not be judged by `gc`.
        let fd = std::os::fd::AsFd::as_fd(file);
        sys::shm::set_len(fd, total_len).map_err(|e| space_error(name, total_len, e))?;
        sys::shm::reserve_from(fd, HEAD_PAGE, total_len).map_err(|e| space_error(name, total_len, e))?;
        Ok(seg)
    }

    /// Opens `name`, checks that we may trust the file (a regular file
    /// owned by us or by an owner/group `opts` names, not writable by
    /// others unless `opts` allows it: checked on the opened fd, not by
    /// path), waits (bounded by `opts.init_timeout`; too large to represent
    /// = forever) until it is READY, and checks magic, version, kind and
    /// element type. Every header field is read exactly once; the ones the
    /// caller needs come back in [`HeaderFields`], and the caller checks
    /// the object-specific layout with [`Segment::check_len`].
    pub(crate) fn open(
        name: &str,
        opts: &Options,
        kind: Kind,
        fp: &Fingerprint,
    ) -> Result<(Segment, HeaderFields), OpenError> {
        let c_name = os_name(name)?;
        let deadline = Deadline::after(opts.init_timeout); // too large: forever
        let expired = || deadline.passed();
        let init_timeout = || OpenError::InitTimeout { name: name.to_owned(), timeout: opts.init_timeout };
        let pause = || std::thread::sleep(Duration::from_micros(200));
        // Mapped at the size the file had when opened; a creator sizes its
        // file to its full length only after writing the header (see
        // `create`), so a segment seen READY whose file has grown since is
        // opened again, at its full size.
        let (seg, total_len) = 'reopen: loop {
            let seg = loop {
                let fd = sys::shm::open(&c_name).map_err(|e| errno_to_open(name, e))?;
                let info = sys::shm::fstat(&fd).map_err(|e| errno_to_open(name, e))?;
                if !info.regular {
                    return Err(OpenError::Foreign(name.to_owned()));
                }
                opts.check_trusted(name, info.uid, info.gid, info.perm)?;
                let size = info.size;
                if size == 0 {
                    // Created but not sized yet: the creator is mid-init (or died).
                    if expired() {
                        return Err(init_timeout());
                    }
                    pause();
                    continue;
                }
                // A file with holes (a creator still reserving its pages, or
                // killed before it finished, or a sparse file of ours): touching
                // a hole through the mapping allocates a page, a SIGBUS on a
                // full /dev/shm. Reserve the pages now, or fail with NoSpace.
                if info.has_hole() {
                    sys::shm::reserve(&fd, size).map_err(|e| space_error(name, size, e))?;
                }
                let (map, file) = map(name, fd, size)?;
                if size < HEADER_SIZE as u64 {
                    // Ours but cut short, or not ours at all?
                    let mut magic = [0u8; 8];
                    if size >= 8 {
                        // SAFETY: the mapping has at least 8 bytes (memory model: bytes a peer may write are copied
                        // in with the sanctioned primitive; racing writes give garbage bytes, never UB).
                        unsafe { copy::copy_from_shared(map.as_ptr(), &mut magic) };
                    }
                    return Err(if u64::from_le_bytes(magic) == MAGIC {
                        OpenError::Truncated { name: name.to_owned(), expected: HEADER_SIZE as u64, actual: size }
                    } else {
                        OpenError::Foreign(name.to_owned())
                    });
                }
                break Segment {
                    name: name.to_owned(),
                    os_name: c_name.clone(),
                    map,
                    file: Some(file),
                    creator: None,
                    persist: AtomicBool::new(false),
                    private: AtomicBool::new(false),
                    trust: (!opts.trusted_owners.is_empty() || !opts.trusted_groups.is_empty())
                        .then(|| Box::new(opts.clone())),
                    file_id: (info.dev, info.ino),
                    perm: info.perm,
                };
            };
            let h = seg.header();
            loop {
                // Acquire (in is_ready) pairs with the creator's Release in `publish`.
                match h.magic.load(Ordering::Relaxed) {
                    MAGIC if h.is_ready() => break,
                    MAGIC | 0 => {}
                    _ => return Err(OpenError::Foreign(name.to_owned())),
                }
                if expired() {
                    return Err(init_timeout());
                }
                pause();
            }
            let total_len = h.total_len.load(Ordering::Relaxed);
            if (seg.map.len() as u64) < total_len
                && !expired()
                && seg.file.as_ref().and_then(|f| sys::shm::fstat_file(f).ok()).is_some_and(|now| now > seg.map.len() as u64)
            {
                continue 'reopen;
            }
            break (seg, total_len);
        };
        let h = seg.header();
        let version = h.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(OpenError::LayoutVersion { name: name.to_owned(), found: version, expected: LAYOUT_VERSION });
        }
        let found = Kind::from_u32(h.kind.load(Ordering::Relaxed));
        let (size, align, hash) = (
            h.elem_size.load(Ordering::Relaxed),
            h.elem_align.load(Ordering::Relaxed),
            h.elem_hash.load(Ordering::Relaxed),
        );
        let same_type = (size, align, hash) == (fp.size, fp.align, fp.hash);
        // A queue of plain data and one of encoded frames are two kinds of
        // segment, but to a user they are one `Queue<T>` with another `T`.
        let queues = [Kind::MpmcQueue, Kind::FrameQueue];
        if found != kind && (same_type || !(queues.contains(&found) && queues.contains(&kind))) {
            return Err(OpenError::WrongKind { name: name.to_owned(), expected: kind, found });
        }
        if !same_type {
            return Err(OpenError::IncompatibleType {
                name: name.to_owned(),
                expected: describe_type(&fp.name, fp.size, fp.align),
                found: describe_type(&h.type_name(), size, align),
            });
        }
        let fields = HeaderFields {
            capacity: h.capacity.load(Ordering::Relaxed),
            total_len,
        };
        Ok((seg, fields))
    }

    /// Checks the header's recorded length (`recorded`, read once at open)
    /// against what the object layout needs (`needed`) and against the
    /// mapped size.
    pub(crate) fn check_len(&self, recorded: u64, needed: u64) -> Result<(), OpenError> {
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

    /// The trust (other owners or groups) this segment was opened with, if
    /// any; see the `trust` field.
    pub(crate) fn trust(&self) -> Option<&Options> {
        self.trust.as_deref()
    }

    /// The file's (device, inode): equal for two handles (two mappings)
    /// of the same segment.
    pub(crate) fn file_id(&self) -> (u64, u64) {
        self.file_id
    }

    /// The file's permission bits (`0o777` part) when this handle made or
    /// opened it: an upper bound for the modes of files made on its behalf
    /// (a mode word in the shared bytes is the peers' to change).
    pub(crate) fn perm(&self) -> u32 {
        self.perm
    }

    /// Makes the process with identity `(pid, start)` the segment's owner
    /// as `gc` sees it (the header's creator fields), and stops this handle
    /// from unlinking the name on drop: a container created for a Manager
    /// (by any process) belongs to the Manager's creator, which unlinks it
    /// when its last Manager handle drops. Only before the segment is
    /// published.
    pub(crate) fn hand_ownership_to(&mut self, pid: u32, start: u64) {
        let h = self.header();
        h.creator_pid.store(pid, Ordering::Relaxed);
        h.creator_start.store(start, Ordering::Relaxed);
        self.creator = None;
    }

    /// Whether some process called `persist` on this segment (the
    /// header's flag; Relaxed: a flag that publishes no data).
    pub(crate) fn persisted_anywhere(&self) -> bool {
        self.header().flags.load(Ordering::Relaxed) & FLAG_PERSIST != 0
    }

    /// Whether this handle will unlink the name when it drops (this
    /// process created it and no process persisted it).
    pub(crate) fn owns_name(&self) -> bool {
        self.creator.is_some_and(|(pid, _, _)| pid == std::process::id()) && !self.persisted()
    }

    /// Whether this process or any other (one that opened the segment, a
    /// forked child: the header's flag, which `gc` honours too) called
    /// `persist`.
    fn persisted(&self) -> bool {
        self.persist.load(Ordering::Relaxed) || (!self.private.load(Ordering::Relaxed) && self.persisted_anywhere())
    }

    /// Makes this process's handles ignore the header's persist flag (see
    /// `private`): the creator's drop removes the name unless this
    /// process persisted it. (Relaxed: a flag of this process that
    /// publishes no data.)
    pub(crate) fn make_private(&self) {
        self.private.store(true, Ordering::Relaxed);
    }

    /// The creator identity recorded in the header (pid, start time).
    pub(crate) fn recorded_creator(&self) -> (u32, u64) {
        let h = self.header();
        (h.creator_pid.load(Ordering::Relaxed), h.creator_start.load(Ordering::Relaxed))
    }

    /// Length of this process's first mapping of the segment.
    pub(crate) fn mapped_len(&self) -> usize {
        self.map.len()
    }

    /// The open file behind the mapping (`None` once
    /// [`close_file`](Self::close_file) dropped it).
    pub(crate) fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Closes the file of a segment that never grows: the mapping stays
    /// (it keeps the file's pages), the descriptor goes.
    pub(crate) fn close_file(&mut self) {
        self.file = None;
    }

    /// Extends the file to `new_len` bytes, reserving the pages from
    /// `old_len` on (`posix_fallocate`), so a full /dev/shm is
    /// [`OpenError::NoSpace`] here and never a SIGBUS on a later touch.
    pub(crate) fn extend(&self, old_len: u64, new_len: u64) -> Result<(), OpenError> {
        use std::os::fd::AsFd;
        let Some(file) = self.file.as_ref() else {
            let source = std::io::Error::other("the segment's file was closed: it does not grow");
            return Err(OpenError::Io { name: self.name.clone(), source });
        };
        sys::shm::reserve_range(file.as_fd(), old_len, new_len.saturating_sub(old_len))
            .map_err(|e| space_error(&self.name, new_len, e))
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
        // A forked child inherits the handle but is not the creator. A
        // segment persisted by any process stays, whatever became of its
        // creator (`gc` leaves it too); an unbounded queue persisted by a
        // process that opened it kept its rings, and removing its name
        // here left them with nothing to lead `unlink` or `gc` to them.
        if pid != std::process::id() || self.persisted() {
            return;
        }
        self.unlink_if_same_file(ino, dev);
    }
}

impl Segment {
    /// Removes the name now if this process created the segment and the
    /// name still refers to its file, as the drop of a handle that
    /// [`owns_name`](Self::owns_name) does (which then finds it gone).
    pub(crate) fn unlink_own_name(&self) {
        if let Some((pid, ino, dev)) = self.creator
            && pid == std::process::id()
        {
            self.unlink_if_same_file(ino, dev);
        }
    }

    /// Only unlinks if the name still refers to our file (gc or a peer may
    /// have removed it and somebody else created a new one since).
    fn unlink_if_same_file(&self, ino: u64, dev: u64) {
        let path = std::path::Path::new(SHM_DIR).join(&self.os_name.to_string_lossy()[1..]);
        if sys::shm::stat_path(&path) == Some((ino, dev)) {
            let _ = sys::shm::unlink(&self.os_name);
        }
    }
}


/// An element type as a user reads it: `` `u64` (size 8, align 8) ``, or
/// `` `alloc::string::String` items (encoded frames) `` for a queue of
/// encoded items (the `frames:` prefix of their recorded name).
fn describe_type(recorded: &str, size: u32, align: u32) -> String {
    match recorded.strip_prefix(crate::queue::FRAMES_PREFIX) {
        Some(t) => format!("`{t}` items (encoded frames)"),
        None => format!("`{recorded}` (size {size}, align {align})"),
    }
}
