//! Names in `/dev/shm`: removing them ([`unlink`], an unbounded queue's
//! rings with it), the temporary names segments are made under, and how
//! `gc` judges a file (ours, not persisted, creator dead) without mapping
//! it.

use std::sync::atomic::Ordering;

use super::header::{self, FLAG_PERSIST, HEADER_SIZE, LAYOUT_VERSION, MAGIC};
use super::segment::{HEAD_PAGE, SHM_DIR, errno_to_open};
use super::{Kind, NAME_PREFIX, os_name};
use crate::OpenError;
use crate::sys;
use crate::sys::shm::Errno;

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
///
/// An unbounded queue's name also takes its rings with it (the segments
/// named `<name>.<generation>.<k>.<tag>`, see [`Queue::new(0)`](crate::Queue::new)),
/// so a queue created again under the same name starts empty. A
/// [`Manager`](crate::Manager)'s name takes every object it holds with it,
/// as [`Manager::unlink_all`](crate::Manager::unlink_all) does (they are
/// persisted: with the Manager gone, nothing would ever remove them).
///
/// ```
/// let name = format!("doc-unlink-mgr-{}", std::process::id());
/// let mgr = shmproc::Manager::create(&name).unwrap();
/// let list = mgr.list::<u8>("l").unwrap().name().to_owned();
/// mgr.persist();
/// drop(mgr);
/// shmproc::unlink(&name).unwrap();
/// assert!(shmproc::ListProxy::<u8>::open(&list).is_err());
/// ```
pub fn unlink(name: &str) -> Result<(), OpenError> {
    let c_name = os_name(name)?;
    let path = std::path::Path::new(SHM_DIR).join(&c_name.to_string_lossy()[1..]);
    if kind_of(&path) == Some(Kind::Manager.to_u32()) && crate::manager::unlink_manager(name) {
        return Ok(());
    }
    unlink_segment(name)
}

/// [`unlink`] of a segment that is not a Manager's registry (an unbounded
/// queue's rings go with it): what removing a Manager's objects uses, so
/// that a registry record naming a registry cannot make it recurse.
pub(crate) fn unlink_segment(name: &str) -> Result<(), OpenError> {
    let c_name = os_name(name)?;
    let path = std::path::Path::new(SHM_DIR).join(&c_name.to_string_lossy()[1..]);
    // The rings first: a process killed in between leaves the queue's
    // name, which leads `unlink` (or `gc`, creator dead) to what is left
    // of them. (Name first, a kill in between left the rings, persisted
    // like every ring, with nothing to lead anybody to them.)
    if kind_of(&path) == Some(Kind::QueueChain.to_u32()) {
        unlink_rings_of(name);
    }
    sys::shm::unlink(&c_name).map_err(|e| errno_to_open(name, e))
}

/// Whether `name` is an unbounded queue that a live process still holds
/// (its holder removes the rings when it leaves, so `gc` must leave it
/// alone: see [`gc`](crate::gc)). An unreadable holder table counts as held.
pub(crate) fn is_held_chain(name: &str) -> bool {
    let Ok(c_name) = os_name(name) else { return false };
    let path = std::path::Path::new(SHM_DIR).join(&c_name.to_string_lossy()[1..]);
    kind_of(&path) == Some(Kind::QueueChain.to_u32())
        && sys::shm::open_to_inspect(&path).map_or(true, |fd| crate::queue::chain_held(&fd))
}

/// Whether the segment `name` is gone from /dev/shm, or is one that
/// [`gc`](crate::gc) would remove (ours, not persisted, creator dead).
pub(crate) fn is_gone_or_dead(name: &str) -> bool {
    let Ok(c_name) = os_name(name) else { return false };
    let path = std::path::Path::new(SHM_DIR).join(&c_name.to_string_lossy()[1..]);
    sys::shm::stat_path(&path).is_none() || dead_segment(&path).is_some()
}

/// Removes the names of the rings of the unbounded queue `name` (and
/// their temporary names); returns the names removed. Another user's
/// rings are given up to their owner instead ([`unlink_or_release`]).
fn unlink_rings_of(name: &str) -> Vec<String> {
    let mut removed = Vec::new();
    for ring in names_starting_with(&format!("{name}.")) {
        if is_ring_name(&ring[name.len() + 1..]) && unlink_or_release(&ring).is_ok() {
            removed.push(ring);
        }
    }
    removed
}

/// Removes the name `name`; when that is refused because the file is
/// another user's (/dev/shm is sticky: only a file's owner, or root, may
/// remove it), gives the segment up to its owner instead: clears its
/// persist flag ([`release`]), so the owner's [`gc`](crate::gc) removes
/// it once the process that created it is gone. The error is the
/// unlink's (`PermissionDenied` for a segment given up).
///
/// For an unbounded queue's rings, which are created persisted (they
/// outlive the producer that happened to make one): a ring retired, or
/// left when its queue is removed, by a process of another user than the
/// ring's maker.
pub(crate) fn unlink_or_release(name: &str) -> Result<(), OpenError> {
    let c_name = os_name(name)?;
    match sys::shm::unlink(&c_name) {
        Err(e @ (Errno::EPERM | Errno::EACCES)) => {
            release(&std::path::Path::new(SHM_DIR).join(&c_name.to_string_lossy()[1..]));
            Err(errno_to_open(name, e))
        }
        r => r.map_err(|e| errno_to_open(name, e)),
    }
}

/// Clears the persist flag of the segment at `path` if it is a shmproc
/// segment of this layout version (regular file, our magic), whoever owns
/// it; true if it did. Read and written with `pread`/`pwrite`, never
/// mapped: the file is another user's, who may truncate it meanwhile. (A
/// ring's flags are written once, before its name is linked: this
/// read-modify-write of the word races with no other writer.)
fn release(path: &std::path::Path) -> bool {
    let Ok(fd) = sys::shm::open_to_mark(path) else { return false };
    let Some(h) = header_of(&fd) else { return false };
    let flags = u32_at(&h, header::OFF_FLAGS);
    flags & FLAG_PERSIST != 0
        && sys::shm::write_at(&fd, &(flags & !FLAG_PERSIST).to_ne_bytes(), header::OFF_FLAGS as u64).ok() == Some(4)
}

/// Whether the segment `name` is ours and not persisted: for a ring of an
/// unbounded queue (created persisted, its flag cleared only when it is
/// given up, [`unlink_or_release`]), whether another user gave it up.
pub(crate) fn is_ours_unpersisted(name: &str) -> bool {
    let Ok(c_name) = os_name(name) else { return false };
    let path = std::path::Path::new(SHM_DIR).join(&c_name.to_string_lossy()[1..]);
    let Ok(fd) = sys::shm::open_to_inspect(&path) else { return false };
    sys::shm::fstat(&fd).is_ok_and(|i| i.uid == sys::shm::euid())
        && header_of(&fd).is_some_and(|h| u32_at(&h, header::OFF_FLAGS) & FLAG_PERSIST == 0)
}

/// The header of the open file `fd` if it is a regular file whose header
/// (read with `pread`, no mapping) has our magic and layout version.
fn header_of(fd: &std::os::fd::OwnedFd) -> Option<[u8; HEADER_SIZE]> {
    let info = sys::shm::fstat(fd).ok()?;
    if !info.regular || info.size < HEADER_SIZE as u64 {
        return None;
    }
    let mut h = [0u8; HEADER_SIZE];
    if sys::shm::read_at(fd, &mut h, 0).ok()? != HEADER_SIZE {
        return None;
    }
    let magic = u64::from_ne_bytes(h[header::OFF_MAGIC..header::OFF_MAGIC + 8].try_into().ok()?);
    (magic == MAGIC && u32_at(&h, header::OFF_VERSION) == LAYOUT_VERSION).then_some(h)
}

/// The native-endian `u32` at byte `at` of a header read with `pread`.
fn u32_at(h: &[u8; HEADER_SIZE], at: usize) -> u32 {
    u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

/// Whether `rest` (what follows `<name>.`) names a ring of an unbounded
/// queue: `<generation: 8 hex digits>.<k>.<tag: 16 hex digits>`, or a
/// ring's temporary name (`<generation>.<k>.<tag>.t...`). (Also the
/// untagged `<generation>.<k>[.t...]` of layout version 4.)
pub(crate) fn is_ring_name(rest: &str) -> bool {
    let Some((generation, tail)) = rest.split_once('.') else { return false };
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    let mut after = &tail[digits..];
    if let Some(tag) = after.strip_prefix('.').and_then(|t| t.get(..16))
        && tag.bytes().all(|b| b.is_ascii_hexdigit())
    {
        after = &after[17..];
    }
    generation.len() == 8
        && generation.bytes().all(|b| b.is_ascii_hexdigit())
        && digits > 0
        && (after.is_empty() || after.starts_with(".t"))
}

/// The kind word of the segment at `path` if it is provably ours (regular
/// file, our uid, magic and layout version), read with `pread` (no mapping).
fn kind_of(path: &std::path::Path) -> Option<u32> {
    let fd = sys::shm::open_to_inspect(path).ok()?;
    if sys::shm::fstat(&fd).ok()?.uid != sys::shm::euid() {
        return None;
    }
    header_of(&fd).map(|h| u32_at(&h, header::OFF_KIND))
}

/// Gives the segment `from` the second name `to`, atomically, failing
/// with `AlreadyExists` if `to` exists (never replacing it).
pub(crate) fn link(from: &str, to: &str) -> Result<(), OpenError> {
    let (f, t) = (os_name(from)?, os_name(to)?);
    sys::shm::link_no_replace(&f, &t).map_err(|e| errno_to_open(to, e))
}

/// The user names in /dev/shm that start with `prefix` (empty on an
/// unreadable directory).
pub(crate) fn names_starting_with(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else { return Vec::new() };
    dir.filter_map(|e| {
        let f = e.ok()?.file_name().into_string().ok()?;
        let user = f.strip_prefix(NAME_PREFIX)?;
        user.starts_with(prefix).then(|| user.to_owned())
    })
    .collect()
}

/// The size of the /dev/shm file of user name `name` (`None`: no such
/// file, or not readable). Read from the name, without opening or mapping.
pub(crate) fn file_size(name: &str) -> Option<u64> {
    std::fs::metadata(format!("{SHM_DIR}/{NAME_PREFIX}{name}")).ok().map(|m| m.len())
}

/// The memory a segment file of `bytes` bytes takes in /dev/shm: whole
/// pages (tmpfs gives a file memory a page at a time, and a segment's
/// pages are all reserved at create).
pub(crate) fn memory_of(bytes: u64) -> u64 {
    let page = sys::shm::page_size();
    bytes.div_ceil(page).saturating_mul(page)
}
/// Removes this crate's segments whose creator process is dead, persisted
/// ones excepted, among the user names for which `wanted` holds (the
/// public [`gc`](crate::gc), which first empties the registries of dead
/// Managers, documents the rules).
pub(crate) fn gc_matching(wanted: impl Fn(&str) -> bool) -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(user) = file_name.to_str().and_then(|n| n.strip_prefix(NAME_PREFIX)) else {
            continue;
        };
        let Ok(c_name) = os_name(user) else {
            continue;
        };
        if !wanted(user) {
            continue;
        }
        let path = entry.path();
        if let Some(identity) = making_identity(user) {
            // A segment being made (see `Segment::create`): its header may
            // not be written yet, the name says who makes it.
            if let Some(judged) = dead_making(&path, identity)
                && sys::shm::stat_path(&path) == Some(judged)
                && sys::shm::unlink(&c_name).is_ok()
            {
                removed.push(user.to_owned());
            }
            continue;
        }
        let Some((judged, kind)) = dead_segment(&path) else {
            continue;
        };
        // An unbounded queue: its rings go with it, unless a live process
        // still holds it (that holder removes them when it leaves; its
        // name stays for a later `gc`).
        let chain = kind == Kind::QueueChain.to_u32();
        if chain && sys::shm::open_to_inspect(&path).map_or(true, |fd| crate::queue::chain_held(&fd)) {
            continue;
        }
        #[cfg(test)]
        tests::BEFORE_UNLINK.with(|h| h.get().map(|f| f(user)));
        // As in Drop: unlink only if the name still refers to the file we
        // judged (it may have been removed and re-created since).
        if sys::shm::stat_path(&path) != Some(judged) {
            continue;
        }
        // The rings first, as in `unlink`: a `gc` killed in between
        // leaves the queue's name for the next one.
        let rings = if chain { unlink_rings_of(user) } else { Vec::new() };
        if sys::shm::unlink(&c_name).is_ok() {
            removed.push(user.to_owned());
        }
        removed.extend(rings);
    }
    Ok(removed)
}

/// The user-name prefix of a segment being made ([`making_name`]).
const MAKING_PREFIX: &str = ".making.";

/// The name a segment is made under before it gets its own
/// ([`Segment::create`]): `.making.<pid>.<start>.<n>`, the maker's
/// identity (pid and start time, as a header records it) and a number
/// unique in the process.
pub(super) fn making_name((pid, start): (u32, u64)) -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Relaxed: a counter that publishes nothing.
    format!("{MAKING_PREFIX}{pid}.{start}.{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The maker's identity `(pid, start)` in a [`making_name`]; `None` for
/// any other name.
fn making_identity(user: &str) -> Option<(u32, u64)> {
    let mut parts = user.strip_prefix(MAKING_PREFIX)?.split('.');
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    let _n: u64 = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((pid, start))
}

/// `Some((inode, device))` if the file at `path`, named for a segment
/// being made by `(pid, start)`, is to be removed: one whose header is
/// written is judged by it, like any segment; one with none yet (a
/// regular file of our uid, at most the header's page) by the maker's
/// identity in its name.
fn dead_making(path: &std::path::Path, (pid, start): (u32, u64)) -> Option<(u64, u64)> {
    let fd = sys::shm::open_to_inspect(path).ok()?;
    let info = sys::shm::fstat(&fd).ok()?;
    if !info.regular || info.uid != sys::shm::euid() {
        return None;
    }
    if header_of(&fd).is_some() {
        return dead_segment(path).map(|(judged, _)| judged);
    }
    (info.size <= HEAD_PAGE && pid != 0 && sys::thread::process_is_dead(pid, start)).then_some((info.ino, info.dev))
}

/// The user names of the segments of `kind` that [`gc`](crate::gc) would remove
/// (ours, not persisted, creator dead): what a layer above must clean up
/// before `gc` removes them (a dead Manager's registry).
pub(crate) fn dead_segments_of_kind(kind: Kind) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else { return Vec::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let user = e.file_name().to_str()?.strip_prefix(NAME_PREFIX)?.to_owned();
        let path = e.path();
        (kind_of(&path) == Some(kind.to_u32()) && dead_segment(&path).is_some()).then_some(user)
    })
    .collect()
}

/// `Some(((inode, device), kind))` if the file at `path` is provably one
/// of our segments (regular file, our uid, our magic and layout version),
/// not persisted, and its creator is dead.
///
/// The header is read with `pread`, never through a mapping: a sparse file
/// would make a mapped read allocate pages, a SIGBUS on a full /dev/shm
/// (just when `gc` is most wanted), and so would a file truncated after
/// the `fstat`.
fn dead_segment(path: &std::path::Path) -> Option<((u64, u64), u32)> {
    let fd = sys::shm::open_to_inspect(path).ok()?;
    let info = sys::shm::fstat(&fd).ok()?;
    if !info.regular || info.uid != sys::shm::euid() || info.size < HEADER_SIZE as u64 {
        return None;
    }
    let read_header = || {
        let mut h = [0u8; HEADER_SIZE];
        (sys::shm::read_at(&fd, &mut h, 0).ok()? == HEADER_SIZE).then_some(h)
    };
    let u64_at = |h: &[u8; HEADER_SIZE], at: usize| u64::from_ne_bytes(h[at..at + 8].try_into().unwrap());
    // The creator stores its identity and the version before the magic
    // (Release, in write_fields): so the identity is read by a second read,
    // issued only after a first one saw the magic.
    let first = read_header()?;
    if u64_at(&first, header::OFF_MAGIC) != MAGIC || u32_at(&first, header::OFF_VERSION) != LAYOUT_VERSION {
        return None;
    }
    let h = read_header()?;
    if u32_at(&h, header::OFF_FLAGS) & FLAG_PERSIST != 0 {
        return None;
    }
    let pid = u32_at(&h, header::OFF_CREATOR_PID);
    let start = u64_at(&h, header::OFF_CREATOR_START);
    (pid != 0 && sys::thread::process_is_dead(pid, start)).then_some(((info.ino, info.dev), u32_at(&h, header::OFF_KIND)))
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::Lock;

    thread_local! {
        /// Runs in `gc` between judging a file and removing its name: the
        /// moment another process may remove and re-create the name.
        pub(super) static BEFORE_UNLINK: Cell<Option<fn(&str)>> = const { Cell::new(None) };
        static REPLACEMENT: RefCell<Option<Lock>> = const { RefCell::new(None) };
    }

    /// Leaves `name` behind as a segment of ours whose creator is dead: a
    /// real (persisted) Lock whose header names our pid with another start
    /// time, as if our pid had been reused.
    fn leave_dead_segment(name: &str) {
        use std::os::unix::fs::FileExt;
        Lock::create(name).unwrap().persist();
        let f =
            std::fs::OpenOptions::new().read(true).write(true).open(format!("{SHM_DIR}/{NAME_PREFIX}{name}")).unwrap();
        let mut start = [0u8; 8];
        f.read_exact_at(&mut start, 64).unwrap();
        let start = u64::from_le_bytes(start).wrapping_add(12345);
        f.write_all_at(&0u32.to_le_bytes(), 28).unwrap(); // flags: not persisted
        f.write_all_at(&start.to_le_bytes(), 64).unwrap(); // creator_start: "pid reused"
    }

    #[test]
    fn gc_keeps_a_segment_recreated_after_it_was_judged() {
        let name = format!("unit-gc-recreated-{}", std::process::id());
        leave_dead_segment(&name);
        fn recreate(user: &str) {
            unlink(user).unwrap();
            REPLACEMENT.with(|r| *r.borrow_mut() = Some(Lock::create(user).unwrap()));
        }
        BEFORE_UNLINK.with(|h| h.set(Some(recreate)));
        let removed = gc_matching(|u| u == name);
        BEFORE_UNLINK.with(|h| h.set(None));
        let live = REPLACEMENT.with(|r| r.borrow_mut().take()).expect("gc did not judge the dead segment");
        assert_eq!(removed.unwrap(), Vec::<String>::new(), "gc reported removing the live re-created segment");
        assert!(Lock::open(&name).is_ok(), "gc removed a live segment re-created under a judged name");
        drop(live);
        assert!(matches!(Lock::open(&name), Err(OpenError::NotFound(_))));
    }

    #[test]
    fn gc_removes_a_dead_segment_it_judged() {
        let name = format!("unit-gc-dead-{}", std::process::id());
        leave_dead_segment(&name);
        assert_eq!(gc_matching(|u| u == name).unwrap(), vec![name.clone()]);
        assert!(matches!(Lock::open(&name), Err(OpenError::NotFound(_))));
    }
}
