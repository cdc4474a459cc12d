//! Typed objects in segments: the layout rule, creation and opening.
//!
//! A segment is `[Header (128 B)][control block C][padding][data]`. The
//! control block starts on a 64-byte boundary (right after the header); the
//! data, if any, starts on a 64-byte boundary after it (or the element's
//! alignment if larger), so the data never shares a cache line with the hot
//! control words.

use std::sync::Arc;
use std::time::Duration;

use super::header::{Fingerprint, HEADER_SIZE};
use super::{Kind, Segment, unique_name};
use crate::OpenError;

/// Creation and opening options: file permissions, whose segments `open`
/// trusts, and how long `open` waits for a creator that is still
/// initialising.
///
/// By default `open` (and `open_or_create`) accepts only a segment that is
/// a regular file owned by our effective uid (checked on the opened file),
/// so another user cannot squat a name and have us use their segment.
/// [`trust_owner`](Self::trust_owner) and [`trust_group`](Self::trust_group)
/// accept other owners explicitly; such a segment must not be writable by
/// group or others beyond what the trusted group or [`mode`](Self::mode)
/// grants.
///
/// A segment owned by our effective uid is accepted **whatever its mode**,
/// even group- or world-writable: another user cannot create a file with
/// our uid or change its mode, so wider write bits were granted by one of
/// our own processes (`mode(0o666)` at create) and a child or peer of ours
/// must be able to open it with default options. Anyone those bits let in
/// can write the shared data (which we treat as untrusted: garbage, never
/// undefined behaviour) or truncate the file (later accesses then fault
/// with SIGBUS, as with any shared mapping): widen `mode` only for users
/// you trust.
///
/// ```
/// use shmproc::{Options, Semaphore};
/// let opts = Options::new().mode(0o660).init_timeout(std::time::Duration::from_millis(500));
/// let name = format!("doc-options-{}", std::process::id());
/// let sem = Semaphore::create_with(&name, 2, &opts).unwrap();
/// let again = Semaphore::open_with(&name, &opts).unwrap();
/// assert_eq!(again.get_value(), 2);
/// # drop(sem);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) mode: u32,
    pub(crate) init_timeout: Duration,
    pub(crate) trusted_owners: Vec<u32>,
    pub(crate) trusted_groups: Vec<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: 0o600,
            init_timeout: Duration::from_secs(2),
            trusted_owners: Vec::new(),
            trusted_groups: Vec::new(),
        }
    }
}

impl Options {
    /// Owner-only permissions (0600), only our own segments trusted, and a
    /// 2 s init timeout.
    ///
    /// ```
    /// let o = shmproc::Options::new();
    /// assert_eq!(o.get_mode(), 0o600);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// File permission bits for created segments (umask does not apply).
    /// On `open` of a segment owned by a trusted other user or group, these
    /// bits say how far it may be writable by group or others.
    ///
    /// ```
    /// assert_eq!(shmproc::Options::new().mode(0o640).get_mode(), 0o640);
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// The permission bits that will be used.
    ///
    /// ```
    /// assert_eq!(shmproc::Options::new().get_mode(), 0o600);
    /// ```
    pub fn get_mode(&self) -> u32 {
        self.mode
    }

    /// Also trusts segments owned by user `uid` (by default only our
    /// effective uid's segments are opened). Can be given several times.
    ///
    /// ```
    /// // Also accept segments of user `nobody`; our own still open as before.
    /// let o = shmproc::Options::new().trust_owner(65534);
    /// let lock = shmproc::Lock::new().unwrap();
    /// assert!(shmproc::Lock::open_with(lock.name(), &o).is_ok());
    /// ```
    pub fn trust_owner(mut self, uid: u32) -> Self {
        self.trusted_owners.push(uid);
        self
    }

    /// Also trusts segments whose file group is `gid`, whoever owns them,
    /// and allows them to be group-writable. Can be given several times.
    ///
    /// ```
    /// // Also accept segments whose group is 100 (group-writable ones too).
    /// let o = shmproc::Options::new().trust_group(100);
    /// let lock = shmproc::Lock::new().unwrap();
    /// assert!(shmproc::Lock::open_with(lock.name(), &o).is_ok());
    /// ```
    pub fn trust_group(mut self, gid: u32) -> Self {
        self.trusted_groups.push(gid);
        self
    }

    /// How long `open` waits for a segment still being initialised before
    /// failing with [`OpenError::InitTimeout`]. A timeout too large to
    /// represent as a deadline (such as `Duration::MAX`) waits forever.
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = shmproc::Options::new().init_timeout(Duration::MAX);
    /// let lock = shmproc::Lock::new().unwrap();
    /// assert!(shmproc::Lock::open_with(lock.name(), &o).is_ok());
    /// ```
    pub fn init_timeout(mut self, timeout: Duration) -> Self {
        self.init_timeout = timeout;
        self
    }

    /// Whether `open` may use a file with this owner, group and mode;
    /// `Err` is the refusal.
    ///
    /// A file owned by our effective uid is ours whatever its mode: only we
    /// (or root) could have created it or widened its mode, so its write
    /// bits were our choice (`mode(0o666)` at create). A file of a trusted
    /// other owner or group must not be writable beyond what was granted:
    /// group-writable only for a trusted group or a `mode` with `g+w`,
    /// world-writable only with a `mode` that has `o+w`.
    pub(crate) fn check_trusted(&self, name: &str, uid: u32, gid: u32, perm: u32) -> Result<(), OpenError> {
        let me = crate::sys::shm::euid();
        if uid == me {
            return Ok(());
        }
        let group_trusted = self.trusted_groups.contains(&gid);
        if !self.trusted_owners.contains(&uid) && !group_trusted {
            return Err(OpenError::ForeignOwner { name: name.to_owned(), uid, gid, expected: me });
        }
        let mut allowed_writes = self.mode & 0o022;
        if group_trusted {
            allowed_writes |= 0o020;
        }
        if perm & 0o022 & !allowed_writes != 0 {
            return Err(OpenError::InsecureMode { name: name.to_owned(), mode: perm });
        }
        Ok(())
    }
}

/// What an object type tells the generic create/open code.
pub(crate) trait Object: Sized {
    const KIND: Kind;
    /// Creation parameters.
    type Init;
    /// The control block at offset HEADER_SIZE (atomics only).
    type Ctl;
    /// Element type recorded in the header.
    fn fingerprint() -> Fingerprint {
        Fingerprint::of::<()>()
    }
    /// The capacity recorded in the header (elements, parties, ...).
    fn capacity(_init: &Self::Init) -> Result<u64, OpenError> {
        Ok(0)
    }
    /// Bytes of the data area for `capacity` elements; `None` on overflow.
    /// Default: `capacity` elements of the fingerprinted type.
    fn data_size(capacity: u64) -> Option<u64> {
        capacity.checked_mul(u64::from(Self::fingerprint().size))
    }
    /// The control block for a new object.
    fn new_ctl(init: &Self::Init, capacity: u64) -> Self::Ctl;
    /// Writes the initial data (only for types with a data area).
    ///
    /// # Safety
    /// `data` points at `capacity` writable, aligned elements.
    unsafe fn init_data(_data: *mut u8, _init: Self::Init, _capacity: u64) {}
    /// Checks the control block of an opened object; `Err` is a reason.
    fn validate(_m: &Mapped<Self::Ctl>) -> Result<(), String> {
        Ok(())
    }
    fn from_mapped(m: Mapped<Self::Ctl>) -> Self;
}

/// Where things are in a segment of a given capacity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub(crate) data_offset: u64,
    pub(crate) total: u64,
}

impl Layout {
    /// `None` if the sizes overflow (an absurd capacity).
    pub(crate) fn of<O: Object>(capacity: u64) -> Option<Layout> {
        let data_offset = Self::data_offset::<O>()?;
        let data = O::data_size(capacity)?;
        let total = data_offset.checked_add(data)?;
        // Keep every offset addressable as isize.
        (total <= isize::MAX as u64 / 2).then_some(Layout { data_offset, total })
    }

    /// Where the data area starts (header, control block, alignment): the
    /// same for every capacity. `None` for an absurd alignment.
    pub(crate) fn data_offset<O: Object>() -> Option<u64> {
        let align = u64::from(O::fingerprint().align.max(64));
        let ctl_end = HEADER_SIZE as u64 + std::mem::size_of::<O::Ctl>() as u64;
        Some(ctl_end.checked_add(align - 1)? / align * align)
    }
}

/// A mapped object: the segment (kept alive) and its control block.
pub(crate) struct Mapped<C> {
    seg: Arc<Segment>,
    layout: Layout,
    /// The capacity validated at create/open: the only copy object types
    /// use (the header's field is untrusted and may change under us).
    capacity: u64,
    _ctl: std::marker::PhantomData<C>,
}

impl<C> Clone for Mapped<C> {
    fn clone(&self) -> Self {
        Mapped {
            seg: Arc::clone(&self.seg),
            layout: self.layout,
            capacity: self.capacity,
            _ctl: std::marker::PhantomData,
        }
    }
}

impl<C> std::fmt::Debug for Mapped<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.seg.fmt(f)
    }
}

// The mapping itself is process-wide.
// SAFETY: the control block is atomics (Sync); the data area is reached only
// through raw pointers under the object's own synchronisation.
unsafe impl<C: Sync> Send for Mapped<C> {}
// SAFETY: as above.
unsafe impl<C: Sync> Sync for Mapped<C> {}

impl<C> Mapped<C> {
    /// The control block.
    #[inline]
    pub(crate) fn ctl(&self) -> &C {
        // SAFETY: create/open checked the mapping holds header + `C` (128-aligned, align(C) <= 128 is asserted in
        // `create`); C is made of atomics, so a shared reference is sound while other processes write to it.
        unsafe { &*(self.seg.base().add(HEADER_SIZE) as *const C) }
    }

    /// Start of the data area (valid for `capacity` elements).
    #[inline]
    pub(crate) fn data(&self) -> *mut u8 {
        // SAFETY: data_offset <= total <= mapping length (checked at open).
        unsafe { self.seg.base().add(self.layout.data_offset as usize) }
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    /// The capacity (elements, bytes, parties...) validated when this
    /// mapping was created or opened. Never re-read from the header.
    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }
}

/// The alignment rule every access relies on, checked on create and on
/// open alike: the control block and the data area are aligned for their
/// types (the mapping is page-aligned, so this holds unless the layout
/// computation or the mapping is broken).
fn check_aligned<O: Object>(m: &Mapped<O::Ctl>) -> Result<(), String> {
    let ctl = m.seg.base() as usize + HEADER_SIZE;
    let data = m.data() as usize;
    let elem = O::fingerprint().align.max(1) as usize;
    if !ctl.is_multiple_of(std::mem::align_of::<O::Ctl>()) || !data.is_multiple_of(elem) {
        return Err(format!("misaligned mapping (control block at {ctl:#x}, data at {data:#x}, element align {elem})"));
    }
    Ok(())
}

/// The largest element alignment a segment honours: a mapping is only
/// page-aligned (4096 bytes at least), so a data area aligned to more
/// would be aligned in one process and not in another, depending on where
/// each one's mapping lands.
const MAX_ELEM_ALIGN: u32 = 4096;

/// Refuses, the same way in every process, an element type aligned to
/// more than [`MAX_ELEM_ALIGN`].
fn check_elem_align<O: Object>() -> Result<(), OpenError> {
    let fp = O::fingerprint();
    if fp.align > MAX_ELEM_ALIGN {
        return Err(OpenError::InvalidArgument(format!(
            "element type `{}` is aligned to {} bytes: at most {MAX_ELEM_ALIGN} (a page) is supported",
            fp.name, fp.align
        )));
    }
    Ok(())
}

/// Creates object `O` named `name`.
pub(crate) fn create<O: Object>(name: &str, init: O::Init, opts: &Options) -> Result<O, OpenError> {
    const { assert!(std::mem::align_of::<O::Ctl>() <= 128) };
    check_elem_align::<O>()?;
    let capacity = O::capacity(&init)?;
    let layout = Layout::of::<O>(capacity)
        .ok_or_else(|| OpenError::InvalidArgument(format!("capacity {capacity} is too large")))?;
    let mut seg = Segment::create(name, opts, O::KIND, &O::fingerprint(), capacity, layout.total)?;
    // Fixed size (its pages reserved by `create`): the mapping is all it needs.
    seg.close_file();
    let ctl = O::new_ctl(&init, capacity);
    let m = Mapped { seg: Arc::new(seg), layout, capacity, _ctl: std::marker::PhantomData };
    check_aligned::<O>(&m).map_err(OpenError::InvalidArgument)?;
    // SAFETY: the fresh mapping is `layout.total` bytes, zero-filled, not yet visible to openers (no READY);
    // the control block and data areas lie inside it and are suitably aligned.
    unsafe {
        std::ptr::write(m.seg.base().add(HEADER_SIZE) as *mut O::Ctl, ctl);
        O::init_data(m.data(), init, capacity);
    }
    m.seg.header().publish();
    Ok(O::from_mapped(m))
}

/// Opens object `O` named `name`, validating everything.
pub(crate) fn open<O: Object>(name: &str, opts: &Options) -> Result<O, OpenError> {
    check_elem_align::<O>()?;
    // Every header field is read once (in `Segment::open`, into `fields`),
    // validated there or here, and only that copy is used from now on.
    let (mut seg, fields) = Segment::open(name, opts, O::KIND, &O::fingerprint())?;
    // Fixed size (holes reserved by `open`): the mapping is all it needs.
    seg.close_file();
    let capacity = fields.capacity;
    let layout = Layout::of::<O>(capacity).ok_or_else(|| OpenError::Corrupted {
        name: name.to_owned(),
        reason: format!("capacity {capacity} is impossibly large"),
    })?;
    seg.check_len(fields.total_len, layout.total)?;
    let m = Mapped { seg: Arc::new(seg), layout, capacity, _ctl: std::marker::PhantomData };
    check_aligned::<O>(&m).map_err(|reason| OpenError::Corrupted { name: name.to_owned(), reason })?;
    O::validate(&m).map_err(|reason| OpenError::Corrupted { name: name.to_owned(), reason })?;
    #[cfg(test)]
    tests::AFTER_VALIDATE.with(|h| h.get().map(|f| f(m.segment())));
    Ok(O::from_mapped(m))
}

/// Opens `name`, or creates it with `init` if it does not exist.
pub(crate) fn open_or_create<O: Object>(name: &str, init: O::Init, opts: &Options) -> Result<O, OpenError>
where
    O::Init: Clone,
{
    // A creator may unlink between our failed create and our open: retry.
    for _ in 0..100 {
        match create::<O>(name, init.clone(), opts) {
            Err(OpenError::AlreadyExists(_)) => {}
            other => return other,
        }
        match open::<O>(name, opts) {
            Err(OpenError::NotFound(_)) => continue,
            other => return other,
        }
    }
    Err(OpenError::Io { name: name.to_owned(), source: std::io::Error::other("name keeps appearing and vanishing") })
}

/// Creates `O` under a fresh unique name.
pub(crate) fn create_unique<O: Object>(init: O::Init, opts: &Options) -> Result<O, OpenError> {
    create::<O>(&unique_name(), init, opts)
}

/// Inherent constructors shared by every object type: `new`, `create`,
/// `open`, `open_or_create`, the `_with(Options)` forms, `name` and
/// `persist`. `doc(type, new_args, more_args)` fills the doc examples;
/// `$init: $ty [=> conversion]` is the creation parameter, if any.
macro_rules! constructors {
    (doc($t:literal, $a:literal, $m:literal), $init:ident : $ty:ty => $conv:expr) => {
        constructors!(@all $t, $a, $m; $init: $ty => $conv);
    };
    (doc($t:literal, $a:literal, $m:literal), $init:ident : $ty:ty) => {
        constructors!(@all $t, $a, $m; $init: $ty => $init);
    };
    (doc($t:literal, $a:literal, $m:literal)) => {
        constructors!(@all $t, $a, $m;);
    };
    (@all $t:literal, $a:literal, $m:literal; $($init:ident : $ty:ty => $conv:expr)?) => {
        /// Creates the object under a fresh unique name (see [`Self::name`]),
        /// with owner-only permissions. The name is removed when the last
        /// handle in this process drops.
        ///
        /// ```
        #[doc = concat!("let obj = shmproc::", $t, "::new(", $a, ").unwrap();")]
        /// assert!(obj.name().starts_with("anon."));
        #[doc = concat!("assert!(shmproc::", $t, "::open(obj.name()).is_ok());")]
        /// ```
        pub fn new($($init: $ty)?) -> Result<Self, $crate::OpenError> {
            $crate::shm::object::create_unique::<Self>(constructors!(@init $($conv)?), &$crate::Options::new())
        }

        /// Creates the object as `name`; fails with
        /// [`OpenError::AlreadyExists`]($crate::OpenError::AlreadyExists) if
        /// the name is taken. This process owns the name: it is removed when
        /// the last handle here drops, unless [`Self::persist`] was called.
        ///
        /// ```
        /// let name = format!("doc-create-{}", std::process::id());
        #[doc = concat!("let obj = shmproc::", $t, "::create(&name", $m, ").unwrap();")]
        /// assert_eq!(obj.name(), name);
        #[doc = concat!("let again = shmproc::", $t, "::create(&name", $m, ");")]
        /// assert!(matches!(again, Err(shmproc::OpenError::AlreadyExists(_))));
        /// ```
        pub fn create(name: &str $(, $init: $ty)?) -> Result<Self, $crate::OpenError> {
            $crate::shm::object::create::<Self>(name, constructors!(@init $($conv)?), &$crate::Options::new())
        }

        /// [`Self::create`] with explicit [`Options`]($crate::Options).
        ///
        /// ```
        /// let name = format!("doc-create-with-{}", std::process::id());
        /// let opts = shmproc::Options::new().mode(0o640);
        #[doc = concat!("let obj = shmproc::", $t, "::create_with(&name", $m, ", &opts).unwrap();")]
        /// assert_eq!(obj.name(), name);
        /// ```
        pub fn create_with(name: &str $(, $init: $ty)?, opts: &$crate::Options) -> Result<Self, $crate::OpenError> {
            $crate::shm::object::create::<Self>(name, constructors!(@init $($conv)?), opts)
        }

        /// Opens an existing object created (by any process) as `name`,
        /// waiting up to 2 s for its creator to finish initialising, and
        /// validating kind, element type, layout version and size. Openers
        /// never remove the name.
        ///
        /// ```
        /// let name = format!("doc-open-{}", std::process::id());
        #[doc = concat!("let creator = shmproc::", $t, "::create(&name", $m, ").unwrap();")]
        #[doc = concat!("let opened = shmproc::", $t, "::open(&name).unwrap();")]
        /// assert_eq!(opened.name(), creator.name());
        #[doc = concat!("let missing = shmproc::", $t, "::open(\"doc-never-created\");")]
        /// assert!(matches!(missing, Err(shmproc::OpenError::NotFound(_))));
        /// ```
        pub fn open(name: &str) -> Result<Self, $crate::OpenError> {
            $crate::shm::object::open::<Self>(name, &$crate::Options::new())
        }

        /// [`Self::open`] with explicit [`Options`]($crate::Options).
        ///
        /// ```
        /// let name = format!("doc-open-with-{}", std::process::id());
        #[doc = concat!("let creator = shmproc::", $t, "::create(&name", $m, ").unwrap();")]
        /// let opts = shmproc::Options::new().init_timeout(std::time::Duration::from_millis(100));
        #[doc = concat!("assert!(shmproc::", $t, "::open_with(&name, &opts).is_ok());")]
        /// ```
        pub fn open_with(name: &str, opts: &$crate::Options) -> Result<Self, $crate::OpenError> {
            $crate::shm::object::open::<Self>(name, opts)
        }

        /// Opens `name` if it exists, otherwise creates it (and then owns
        /// it, as with [`Self::create`]).
        ///
        /// ```
        /// let name = format!("doc-open-or-create-{}", std::process::id());
        #[doc = concat!("let first = shmproc::", $t, "::open_or_create(&name", $m, ").unwrap();  // creates")]
        #[doc = concat!("let second = shmproc::", $t, "::open_or_create(&name", $m, ").unwrap(); // opens")]
        /// assert_eq!(first.name(), second.name());
        /// ```
        pub fn open_or_create(name: &str $(, $init: $ty)?) -> Result<Self, $crate::OpenError> {
            $crate::shm::object::open_or_create::<Self>(name, constructors!(@init $($conv)?), &$crate::Options::new())
        }

        /// The name other processes pass to [`Self::open`].
        ///
        /// ```
        #[doc = concat!("let obj = shmproc::", $t, "::new(", $a, ").unwrap();")]
        /// assert!(!obj.name().is_empty());
        /// ```
        pub fn name(&self) -> &str {
            self.m.segment().name()
        }

        /// Keeps the name in `/dev/shm` after the creator's last handle
        /// drops (and makes [`gc`]($crate::gc) leave it alone); remove it
        /// later with [`unlink`]($crate::unlink). Any process may call it
        /// (one that opened the object too).
        ///
        /// ```
        /// let name = format!("doc-persist-{}", std::process::id());
        #[doc = concat!("let obj = shmproc::", $t, "::create(&name", $m, ").unwrap();")]
        /// obj.persist();
        /// drop(obj);
        #[doc = concat!("assert!(shmproc::", $t, "::open(&name).is_ok());")]
        /// shmproc::unlink(&name).unwrap();
        /// ```
        pub fn persist(&self) {
            self.m.segment().persist()
        }

        /// The owners and groups this handle's `open_with` trusted beyond
        /// our own uid, if any (a child given the handle opens it so too).
        #[allow(dead_code)]
        pub(crate) fn trust(&self) -> Option<&$crate::Options> {
            self.m.segment().trust()
        }
    };
    (@init) => { () };
    (@init $conv:expr) => { $conv };
}
pub(crate) use constructors;

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::queue::{ByteQueue, MpmcQueue, SpscQueue};
    use crate::{Array, Mutex, RawSegment, Value};

    thread_local! {
        /// Runs in `open` between validation and the type's constructor:
        /// the moment a hostile peer would rewrite the header.
        pub(super) static AFTER_VALIDATE: Cell<Option<fn(&Segment)>> = const { Cell::new(None) };
    }

    /// Opens `name` as `O` while a "peer" rewrites the header capacity
    /// right after validation (to 1 << 20, a valid-looking power of two).
    fn open_raced<O: Object>(name: &str) -> O {
        fn grow(seg: &Segment) {
            seg.header().capacity.store(1 << 20, Ordering::Relaxed);
        }
        AFTER_VALIDATE.with(|h| h.set(Some(grow)));
        let r = open::<O>(name, &Options::new());
        AFTER_VALIDATE.with(|h| h.set(None));
        r.unwrap_or_else(|e| panic!("open {name}: {e}"))
    }

    /// The capacity field as the file holds it now.
    fn header_capacity(name: &str) -> u64 {
        let bytes = std::fs::read(format!("/dev/shm/{}{name}", super::super::NAME_PREFIX)).unwrap();
        u64::from_le_bytes(bytes[40..48].try_into().unwrap())
    }

    #[test]
    fn capacity_changed_after_validation_is_not_used() {
        let raw = RawSegment::new(64).unwrap();
        let sut = open_raced::<RawSegment>(raw.name());
        assert_eq!(header_capacity(sut.name()), 1 << 20, "the hook did not run");
        assert_eq!(sut.len(), 64);
        assert_eq!(sut.write(64, &[1]), 0, "wrote past the validated end");

        let arr = Array::<u64>::new(8).unwrap();
        let sut = open_raced::<Array<u64>>(arr.name());
        assert_eq!(sut.len(), 8);
        assert!(
            matches!(sut.set(8, 1), Err(crate::ArrayError::IndexOutOfRange { index: 8, len: 8 })),
            "wrote past the validated end"
        );

        let v = Value::new(5u32).unwrap();
        let sut = open_raced::<Value<u32>>(v.name());
        assert_eq!(sut.get_lock().unwrap().len(), 1);

        let m = Mutex::new(5u32).unwrap();
        let sut = open_raced::<Mutex<u32>>(m.name());
        assert_eq!(sut.lock().unwrap().len(), 1);

        let q = SpscQueue::<u64>::new(8).unwrap();
        let sut = open_raced::<SpscQueue<u64>>(q.name());
        assert_eq!(sut.capacity(), 8);
        let mut p = sut.producer().unwrap();
        let pushed = (0..100u64).take_while(|&i| p.try_push(i).is_ok()).count();
        assert_eq!(pushed, 8, "a ring of 8 accepted {pushed} items");

        let q = MpmcQueue::<u64>::new(8).unwrap();
        let sut = open_raced::<MpmcQueue<u64>>(q.name());
        assert_eq!(sut.capacity(), 8);
        let pushed = (0..100u64).take_while(|&i| sut.try_push(i).is_ok()).count();
        assert_eq!(pushed, 8, "a ring of 8 accepted {pushed} items");

        let q = ByteQueue::new(256, 64).unwrap();
        let sut = open_raced::<ByteQueue>(q.name());
        let mut p = sut.producer().unwrap();
        let pushed = (0..100).take_while(|_| p.try_send(&[7u8; 56]).is_ok()).count();
        assert!(pushed <= 4, "a 256-byte ring accepted {pushed} frames of 64 bytes");
    }
}
