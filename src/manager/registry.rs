//! `Manager`: a named registry segment mapping names to the shared objects
//! it holds (kind, element identity, segment name). It is itself a dict
//! in a container store (kind `Manager`), so lookups are lock-free reads
//! and find-or-create runs under the registry's lock, crash-atomically.

use std::sync::Arc;

use super::store::Owner;
use super::{ContainerError, DictProxy, Element, ListProxy};
use crate::shm::{Fingerprint, Kind, unique_name};
use crate::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, OpenError, Options, Queue, RLock, Semaphore, ShmType, Value,
};

/// What a [`Manager`] holds under a name.
///
/// ```
/// let mgr = shmproc::Manager::new().unwrap();
/// mgr.list::<u64>("xs").unwrap();
/// let names = mgr.names().unwrap();
/// assert_eq!(names[0].name, "xs");
/// assert_eq!(names[0].kind, shmproc::Kind::List);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name in the Manager.
    pub name: String,
    /// What kind of object it is.
    pub kind: Kind,
    /// Its element type(s), as recorded (`"ListProxy<u64>"`, `"u64"`...).
    pub type_name: String,
    /// The segment holding it (what `open` of its type takes).
    pub segment: String,
}

/// A registry record: kind, fingerprint, segment name, type name.
struct Record {
    kind: Kind,
    /// The element fingerprint's hash; while `making`, the maker's packed
    /// process identity instead.
    hash: u64,
    segment: String,
    type_name: String,
    /// The object is being made (its segment may not exist yet, or be
    /// half made): recorded before the segment is made, so the segment is
    /// always named by the registry and a maker killed midway leaks
    /// nothing (the next find-or-create of the name, or the Manager's end,
    /// removes it).
    making: bool,
}

/// Bit of a record's kind word: [`Record::making`]. (An older build reads
/// such a record as an unknown kind: an error, never an open.)
const MAKING: u32 = 1 << 31;

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let word = self.kind.to_u32() | if self.making { MAKING } else { 0 };
        b.extend_from_slice(&word.to_le_bytes());
        b.extend_from_slice(&self.hash.to_le_bytes());
        b.extend_from_slice(&(self.segment.len() as u32).to_le_bytes());
        b.extend_from_slice(self.segment.as_bytes());
        b.extend_from_slice(self.type_name.as_bytes());
        b
    }

    /// Decodes untrusted bytes (`None` if malformed).
    fn decode(b: &[u8]) -> Option<Record> {
        let word = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?);
        let (kind, making) = (Kind::from_u32(word & !MAKING), word & MAKING != 0);
        let hash = u64::from_le_bytes(b.get(4..12)?.try_into().ok()?);
        let n = u32::from_le_bytes(b.get(12..16)?.try_into().ok()?) as usize;
        let segment = String::from_utf8(b.get(16..16usize.checked_add(n)?)?.to_vec()).ok()?;
        let type_name = String::from_utf8_lossy(&b[16 + n..]).into_owned();
        Some(Record { kind, hash, segment, type_name, making })
    }
}

struct Inner {
    reg: DictProxy<String, Vec<u8>>,
    owner: Owner,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Persisted by any process (a child's `persist` too): keep all.
        if self.reg.store_segment().persisted_anywhere() {
            self.reg.persist();
            return;
        }
        // The creator's last handle: remove every object's name, as each
        // object's creator would (openers never remove names), then the
        // registry's, under its lock: a find-or-create in another process
        // either recorded its object before (removed here) or finds the
        // registry gone (and makes nothing, or removes what it made).
        if self.reg.store_segment().owns_name() {
            let locked = self.reg.with_lock(|reg| {
                let _ = unlink_objects(reg);
                reg.store_segment().unlink_own_name();
            });
            if locked.is_err() {
                // The lock word is unusable (a peer wrote garbage): remove what it lists all the same.
                let _ = unlink_objects(&self.reg);
            }
        }
    }
}

/// Removes the name of every object `reg` lists ([`unlink_segment`](crate::shm::unlink_segment): an
/// unbounded queue's rings go with it); returns the names it removed
/// (names already gone are skipped).
fn unlink_objects(reg: &DictProxy<String, Vec<u8>>) -> Result<Vec<String>, ContainerError> {
    let mut removed = Vec::new();
    for (_, rec) in reg.items()? {
        if let Some(r) = Record::decode(&rec)
            && crate::shm::unlink_segment(&r.segment).is_ok()
        {
            removed.push(r.segment);
        }
    }
    Ok(removed)
}

/// For [`unlink`](crate::unlink) of the Manager `name`: removes every
/// object it lists and then its own name, under its lock (as its
/// creator's drop does: a find-or-create meanwhile either recorded its
/// object before, removed here, or finds the registry gone). False if
/// the registry cannot be opened or locked (the caller then removes the
/// name alone).
pub(crate) fn unlink_manager(name: &str) -> bool {
    let opts = Options::new().init_timeout(std::time::Duration::from_millis(50));
    let Ok(reg) = DictProxy::<String, Vec<u8>>::open_kind(name, &opts, Kind::Manager, &registry_fp()) else {
        return false;
    };
    reg.with_lock(|reg| {
        let _ = unlink_objects(reg);
        let _ = crate::shm::unlink_segment(name);
    })
    .is_ok()
}

/// Find-or-create methods of [`Manager`] for the objects that have no
/// element type (locks, events, semaphores...): recorded under their kind
/// with the unit type's fingerprint, as `lock` is.
macro_rules! primitive {
    ($(#[$doc:meta])* $fn:ident -> $ty:ident, $kind:ident $(, $arg:ident : $aty:ty)?) => {
        $(#[$doc])*
        pub fn $fn(&self, name: &str $(, $arg: $aty)?) -> Result<$ty, OpenError> {
            self.find_or_create(name, Kind::$kind, &Fingerprint::of::<()>(), $ty::open, |seg| {
                let obj = $ty::create(seg $(, $arg)?)?;
                obj.persist();
                Ok(obj)
            })
        }
    };
}

/// Python's `multiprocessing.Manager()` without the server process: a
/// named registry of shared lists, dicts, values, arrays, locks and queues.
/// One Manager handle is all a child needs: it finds every object by name.
///
/// - `list::<T>(name)` / `dict::<K, V>(name)` find or create a container
///   (element types checked when found); `list_anon` / `dict_anon` make
///   unnamed ones; `names()` lists what the Manager holds.
/// - `value`, `array`, `lock`, `queue` do the same for the other objects,
///   and `rlock`, `event`, `semaphore`, `bounded_semaphore`, `condition`,
///   `barrier` for the synchronisation primitives (Python's `m.RLock()`,
///   `m.Event()`, ...).
/// - The process that created the Manager owns every object in it (also
///   those a child created through it): their names are removed when its
///   last Manager handle drops, unless [`persist`](Self::persist) was
///   called. Handles already open keep working either way.
/// - If that process is killed (`kill -9`, or any end that skips the
///   drops): [`gc`](crate::gc) removes the Manager and everything in it,
///   unless it was persisted. A persisted Manager (whatever became of its
///   creator) is removed with [`unlink_all`](Self::unlink_all):
///   `Manager::open(name)?.unlink_all()`. `gc` alone never removes a
///   persisted Manager's objects, nor part of a Manager.
///
/// ```
/// use shmproc::Manager;
/// let mgr = Manager::new().unwrap();
/// let squares = mgr.list::<u64>("squares").unwrap();
/// squares.extend((0..10).map(|i| i * i)).unwrap();
/// // A child gets `mgr` (a handle goes to a child like any other) and finds the list:
/// let child_view = Manager::open(mgr.name()).unwrap();
/// assert_eq!(child_view.list::<u64>("squares").unwrap().slice(2..5).unwrap(), [4, 9, 16]);
/// assert!(child_view.list::<u32>("squares").is_err()); // other element type
/// assert!(child_view.dict::<u64, u64>("squares").is_err()); // other kind
/// ```
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("name", &self.name()).finish()
    }
}

fn registry_fp() -> Fingerprint {
    // "v2": records may be marked as being made (`MAKING`).
    super::fingerprint("Manager v2", &[String::__shape(), Vec::<u8>::__shape()])
}

/// Whether `k` is one of the kinds [`Manager::queue`] makes (a lookup
/// finds a queue whatever its size).
fn is_queue(k: Kind) -> bool {
    matches!(k, Kind::MpmcQueue | Kind::FrameQueue | Kind::QueueChain)
}

fn corrupted(name: &str, e: ContainerError) -> OpenError {
    match e {
        ContainerError::NoSpace { name, bytes } => OpenError::NoSpace { name, bytes },
        e => OpenError::Corrupted { name: name.to_owned(), reason: e.to_string() },
    }
}

impl Manager {
    fn wrap(reg: DictProxy<String, Vec<u8>>) -> Manager {
        let (pid, start) = reg.store_segment().recorded_creator();
        Manager { inner: Arc::new(Inner { reg, owner: Owner { pid, start } }) }
    }

    /// A new Manager under a fresh unique name; this process owns it.
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// assert!(mgr.names().unwrap().is_empty());
    /// ```
    pub fn new() -> Result<Manager, OpenError> {
        Self::create(&unique_name())
    }

    /// A new Manager named `name` ([`OpenError::AlreadyExists`] if taken).
    ///
    /// ```
    /// let name = format!("doc-mgr-create-{}", std::process::id());
    /// let mgr = shmproc::Manager::create(&name).unwrap();
    /// assert_eq!(mgr.name(), name);
    /// assert!(shmproc::Manager::create(&name).is_err());
    /// ```
    pub fn create(name: &str) -> Result<Manager, OpenError> {
        Ok(Self::wrap(DictProxy::create_kind(name, &Options::new(), None, Kind::Manager, &registry_fp())?))
    }

    /// Opens the Manager named `name`.
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// assert!(shmproc::Manager::open(mgr.name()).is_ok());
    /// assert!(shmproc::Manager::open("doc-no-such-manager").is_err());
    /// ```
    pub fn open(name: &str) -> Result<Manager, OpenError> {
        Ok(Self::wrap(DictProxy::open_kind(name, &Options::new(), Kind::Manager, &registry_fp())?))
    }

    /// The Manager's name (what [`Manager::open`] takes).
    ///
    /// ```
    /// assert!(shmproc::Manager::new().unwrap().name().starts_with("anon."));
    /// ```
    pub fn name(&self) -> &str {
        self.inner.reg.name()
    }

    /// Keeps the Manager and every object in it after the creator's last
    /// handle drops or the creator dies ([`gc`](crate::gc) leaves them);
    /// remove them later with [`unlink_all`](Self::unlink_all). Any
    /// process may call it (a child given the Manager too).
    ///
    /// ```
    /// let name = format!("doc-mgr-persist-{}", std::process::id());
    /// let mgr = shmproc::Manager::create(&name).unwrap();
    /// mgr.list::<u8>("l").unwrap().append(1).unwrap();
    /// mgr.persist();
    /// drop(mgr);
    /// let again = shmproc::Manager::open(&name).unwrap();
    /// assert_eq!(again.list::<u8>("l").unwrap().to_vec().unwrap(), [1]);
    /// again.unlink_all().unwrap();
    /// assert!(shmproc::Manager::open(&name).is_err());
    /// ```
    pub fn persist(&self) {
        self.inner.reg.persist()
    }

    /// Removes the names of the Manager and of every object it holds
    /// (an unbounded queue's rings included), from any process: how a
    /// persisted Manager is removed, also after its creator was killed.
    /// Handles already open (here and in other processes) keep working;
    /// later `open`s fail with [`OpenError::NotFound`], and so does
    /// creating an object through any handle of this Manager (one being
    /// made meanwhile is removed by its maker, who gets that error too).
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// let seg = mgr.list::<u8>("l").unwrap().name().to_owned();
    /// mgr.unlink_all().unwrap();
    /// assert!(shmproc::Manager::open(mgr.name()).is_err());
    /// assert!(shmproc::ListProxy::<u8>::open(&seg).is_err());
    /// assert!(matches!(mgr.list::<u8>("new"), Err(shmproc::OpenError::NotFound(_))));
    /// ```
    pub fn unlink_all(&self) -> Result<(), ContainerError> {
        // Under the registry's lock: no find-or-create runs meanwhile.
        self.inner.reg.with_lock(unlink_objects)??;
        let _ = crate::shm::unlink_segment(self.name());
        Ok(())
    }

    /// Everything the Manager holds (a snapshot, sorted by name).
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// mgr.dict::<String, u64>("counts").unwrap();
    /// mgr.lock("l").unwrap();
    /// let kinds: Vec<_> = mgr.names().unwrap().into_iter().map(|e| (e.name, e.kind)).collect();
    /// assert_eq!(kinds, [("counts".to_string(), shmproc::Kind::Dict), ("l".to_string(), shmproc::Kind::Lock)]);
    /// ```
    pub fn names(&self) -> Result<Vec<Entry>, ContainerError> {
        let mut out: Vec<Entry> = self
            .inner
            .reg
            .items()?
            .into_iter()
            .filter_map(|(name, b)| {
                let r = Record::decode(&b).filter(|r| !r.making)?;
                Some(Entry { name, kind: r.kind, type_name: r.type_name, segment: r.segment })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Finds `name` (checking kind and identity) or creates it with
    /// `create(segment name)`. Every object is created persisted,
    /// whichever process creates it: its name lives as long as the
    /// registry lists it (the creator's drop, [`unlink_all`] and
    /// [`gc`](crate::gc) remove the listed names, never one object alone).
    ///
    /// Making is two registry operations around the segment's creation,
    /// so that no segment is ever named nowhere: under the registry's
    /// lock, a record "being made by process P" naming a fresh segment;
    /// then the segment; then the record as done (or removed, if creating
    /// failed). Whoever finds a record being made waits while P lives, at
    /// most an `open`'s init timeout ([`OpenError::InitTimeout`]: P stopped
    /// for good, or a record a hostile peer wrote); if P died midway
    /// (SIGKILL), it removes what P made and makes the object afresh.
    ///
    /// [`unlink_all`]: Self::unlink_all
    fn find_or_create<H>(
        &self,
        name: &str,
        kind: Kind,
        fp: &Fingerprint,
        open: impl FnOnce(&str) -> Result<H, OpenError>,
        create: impl FnOnce(&str) -> Result<H, OpenError>,
    ) -> Result<H, OpenError> {
        crate::shm::os_name(name).map_err(|_| OpenError::InvalidName { name: name.to_owned(), reason: "not a valid object name" })?;
        let reg = &self.inner.reg;
        let key = name.to_owned();
        let found = |b: &[u8]| -> Result<H, OpenError> {
            let r = Record::decode(b)
                .ok_or_else(|| OpenError::Corrupted { name: self.name().to_owned(), reason: format!("bad record for {name:?}") })?;
            if r.kind != kind && !(is_queue(r.kind) && is_queue(kind)) {
                return Err(OpenError::WrongKind { name: name.to_owned(), expected: kind, found: r.kind });
            }
            if r.hash != fp.hash {
                return Err(OpenError::IncompatibleType {
                    name: name.to_owned(),
                    expected: fp.name.to_string(),
                    found: r.type_name,
                });
            }
            open(&r.segment)
        };
        let being_made = |b: &[u8]| Record::decode(b).is_some_and(|r| r.making);
        enum Step {
            Found(Vec<u8>),
            Wait,
            Make(String),
        }
        let me = crate::sys::thread::process_packed();
        let mut create = Some(create);
        // A maker that never finishes (stopped for good, or a record a
        // hostile peer wrote naming a live process) is waited for as long
        // as an `open` waits for a creator to publish its segment.
        let patience = Options::new().init_timeout;
        let mut waiting_since: Option<std::time::Instant> = None;
        loop {
            // Lock-free lookup first; find or record the making under the lock.
            if let Some(b) = reg.get(&key).map_err(|e| corrupted(self.name(), e))?
                && !being_made(&b)
            {
                return found(&b);
            }
            let step = reg
                .with_lock(|reg| -> Result<Step, OpenError> {
                    if let Some(b) = reg.get(&key).map_err(|e| corrupted(self.name(), e))? {
                        match Record::decode(&b) {
                            Some(r) if r.making => {
                                if !crate::sys::thread::owner_is_dead(r.hash) {
                                    return Ok(Step::Wait);
                                }
                                // Its maker died midway: remove what it made.
                                let _ = crate::shm::unlink_segment(&r.segment);
                            }
                            _ => return Ok(Step::Found(b)),
                        }
                    }
                    // A Manager whose creator died (not persisted) is
                    // `gc`'s, or already removed by it: an object made in it
                    // now would be persisted with no registry left to remove
                    // it, in /dev/shm for good. Lookups of what it holds
                    // still work.
                    if crate::shm::is_gone_or_dead(self.name()) {
                        return Err(OpenError::NotFound(self.name().to_owned()));
                    }
                    let segment = unique_name();
                    let rec =
                        Record { kind, hash: me, segment: segment.clone(), type_name: fp.name.to_string(), making: true };
                    reg.insert(key.clone(), rec.encode()).map_err(|e| corrupted(self.name(), e))?;
                    Ok(Step::Make(segment))
                })
                .map_err(|e| corrupted(self.name(), e))??;
            let segment = match step {
                Step::Found(b) => return found(&b),
                // Another live process is making it (a segment's creation: milliseconds).
                Step::Wait => {
                    if waiting_since.get_or_insert_with(std::time::Instant::now).elapsed() >= patience {
                        return Err(OpenError::InitTimeout { name: name.to_owned(), timeout: patience });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
                Step::Make(segment) => segment,
            };
            let made = (create.take().expect("made once"))(&segment);
            #[cfg(feature = "test-hooks")]
            crash::after_create(&segment);
            let done = match &made {
                // Under the lock, as the Manager's end (its creator's drop,
                // `unlink_all`, `gc`) removes what the registry lists: if it
                // is gone meanwhile, nothing lists the object any more, so
                // its name goes now (rather than stay in /dev/shm for good).
                Ok(_) => reg.with_lock(|reg| {
                    if crate::shm::is_gone_or_dead(self.name()) {
                        return Ok(false);
                    }
                    let rec =
                        Record { kind, hash: fp.hash, segment: segment.clone(), type_name: fp.name.to_string(), making: false };
                    reg.insert(key.clone(), rec.encode()).map(|_| true)
                }),
                Err(_) => reg.remove(&key).map(|_| Ok(true)),
            }
            .and_then(|r| r);
            if let Ok(false) = done {
                let _ = crate::shm::unlink_segment(&segment);
                return Err(OpenError::NotFound(self.name().to_owned()));
            }
            if let Err(e) = done {
                // Not listed as done: take it back rather than leave it "being made" by a live process.
                let _ = crate::shm::unlink_segment(&segment);
                let _ = reg.remove(&key);
                return Err(corrupted(self.name(), e));
            }
            return made;
        }
    }

    /// The list named `name`, created empty if absent.
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// mgr.list::<String>("l").unwrap().append("x".into()).unwrap();
    /// assert_eq!(mgr.list::<String>("l").unwrap().len(), 1);
    /// ```
    pub fn list<T: Element>(&self, name: &str) -> Result<ListProxy<T>, OpenError> {
        let owner = self.inner.owner;
        self.find_or_create(name, Kind::List, &ListProxy::<T>::fingerprint(), ListProxy::open, |seg| {
            let l = ListProxy::create_owned(seg, &Options::new(), Some(owner))?;
            l.persist();
            Ok(l)
        })
    }

    /// The dict named `name`, created empty if absent.
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// mgr.dict::<String, u64>("d").unwrap().insert("a".into(), 1).unwrap();
    /// assert_eq!(mgr.dict::<String, u64>("d").unwrap().len(), 1);
    /// ```
    pub fn dict<K: Element, V: Element>(&self, name: &str) -> Result<DictProxy<K, V>, OpenError> {
        let owner = self.inner.owner;
        self.find_or_create(name, Kind::Dict, &DictProxy::<K, V>::fingerprint(), DictProxy::open, |seg| {
            let d = DictProxy::create_owned(seg, &Options::new(), Some(owner))?;
            d.persist();
            Ok(d)
        })
    }

    /// A new list under a generated name (listed by [`Self::names`]).
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// let a = mgr.list_anon::<u8>().unwrap();
    /// let b = mgr.list_anon::<u8>().unwrap();
    /// assert_ne!(a.name(), b.name());
    /// ```
    pub fn list_anon<T: Element>(&self) -> Result<ListProxy<T>, OpenError> {
        self.list(&unique_name())
    }

    /// A new dict under a generated name (listed by [`Self::names`]).
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// assert!(mgr.dict_anon::<u8, u8>().unwrap().is_empty());
    /// ```
    pub fn dict_anon<K: Element, V: Element>(&self) -> Result<DictProxy<K, V>, OpenError> {
        self.dict(&unique_name())
    }

    /// The [`Value`] named `name`, created holding `initial` if absent.
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// mgr.value("v", 5u64).unwrap();
    /// assert_eq!(mgr.value("v", 0u64).unwrap().get().unwrap(), 5);
    /// assert!(mgr.value("v", 0u32).is_err());
    /// ```
    pub fn value<T: ShmType>(&self, name: &str, initial: T) -> Result<Value<T>, OpenError> {
        let fp = Fingerprint::of::<T>();
        self.find_or_create(name, Kind::Value, &fp, Value::open, |seg| {
            let v = Value::create(seg, initial)?;
            v.persist();
            Ok(v)
        })
    }

    /// The [`Array`] named `name`, created with `len` zeros if absent.
    ///
    /// ```
    /// let mgr = shmproc::Manager::new().unwrap();
    /// assert_eq!(mgr.array::<f64>("a", 3).unwrap().len(), 3);
    /// ```
    pub fn array<T: ShmType>(&self, name: &str, len: u64) -> Result<Array<T>, OpenError> {
        let fp = Fingerprint::of::<T>();
        self.find_or_create(name, Kind::Array, &fp, Array::open, |seg| {
            let a = Array::create(seg, len)?;
            a.persist();
            Ok(a)
        })
    }

    primitive! {
        /// The [`Lock`] named `name`, created if absent.
        ///
        /// ```
        /// let mgr = shmproc::Manager::new().unwrap();
        /// let l = mgr.lock("l").unwrap();
        /// let _held = l.lock().unwrap();
        /// assert!(mgr.lock("l").unwrap().try_lock().is_err());
        /// ```
        lock -> Lock, Lock
    }

    primitive! {
        /// The [`RLock`] named `name` (Python's `m.RLock()`), created if absent.
        ///
        /// ```
        /// let mgr = shmproc::Manager::new().unwrap();
        /// let r = mgr.rlock("r").unwrap();
        /// let _a = r.lock().unwrap();
        /// assert_eq!(mgr.rlock("r").unwrap().level(), 1);
        /// ```
        rlock -> RLock, RLock
    }

    primitive! {
        /// The [`Event`] named `name` (Python's `m.Event()`), created clear
        /// if absent.
        ///
        /// ```
        /// let mgr = shmproc::Manager::new().unwrap();
        /// mgr.event("go").unwrap().set();
        /// assert!(mgr.event("go").unwrap().is_set());
        /// assert!(mgr.lock("go").is_err()); // another kind under that name
        /// ```
        event -> Event, Event
    }

    primitive! {
        /// The [`Semaphore`] named `name` (Python's `m.Semaphore(value)`),
        /// created holding `value` if absent; `value` is used only to create.
        ///
        /// ```
        /// let mgr = shmproc::Manager::new().unwrap();
        /// assert!(mgr.semaphore("s", 1).unwrap().try_acquire());
        /// assert!(!mgr.semaphore("s", 1).unwrap().try_acquire());
        /// ```
        semaphore -> Semaphore, Semaphore, value: u32
    }

    primitive! {
        /// The [`BoundedSemaphore`] named `name` (Python's
        /// `m.BoundedSemaphore(value)`), created holding `value` if absent;
        /// `value` is used only to create.
        ///
        /// ```
        /// let mgr = shmproc::Manager::new().unwrap();
        /// assert!(mgr.bounded_semaphore("b", 1).unwrap().release().is_err());
        /// ```
        bounded_semaphore -> BoundedSemaphore, BoundedSemaphore, value: u32
    }

    primitive! {
        /// The [`Condition`] named `name` (Python's `m.Condition()`),
        /// created if absent.
        ///
        /// ```
        /// let mgr = shmproc::Manager::new().unwrap();
        /// let c = mgr.condition("c").unwrap();
        /// let mut g = c.lock().unwrap();
        /// assert!(!c.wait_timeout(&mut g, std::time::Duration::from_millis(1)).unwrap());
        /// ```
        condition -> Condition, Condition
    }

    primitive! {
        /// The [`Barrier`] named `name` (Python's `m.Barrier(parties)`),
        /// created for `parties` if absent; `parties` is used only to create.
        ///
        /// ```
        /// let mgr = shmproc::Manager::new().unwrap();
        /// mgr.barrier("b", 3).unwrap();
        /// assert_eq!(mgr.barrier("b", 5).unwrap().parties(), 3);
        /// ```
        barrier -> Barrier, Barrier, parties: u32
    }

    /// The [`Queue`] named `name`, created if absent holding at most
    /// `maxsize` items (`0`: unbounded, as Python's `Manager().Queue()`).
    /// Items are any [`Handoff`](crate::Handoff) type, as for [`Queue`]
    /// itself: plain data in fixed slots, anything else (`String`,
    /// tuples, `Vec`s...) encoded. `maxsize` is used only to create: a
    /// queue found under `name` is returned whatever its size.
    /// [`names`](Self::names) reports what was made:
    /// [`Kind::MpmcQueue`] (bounded, plain data), [`Kind::FrameQueue`]
    /// (bounded, encoded items) or [`Kind::QueueChain`] (unbounded).
    ///
    /// ```
    /// use shmproc::{Kind, Manager};
    /// let mgr = Manager::new().unwrap();
    /// mgr.queue::<u32>("q", 8).unwrap().put(7).unwrap();
    /// assert_eq!(mgr.queue::<u32>("q", 8).unwrap().get().unwrap(), 7);
    /// let jobs = mgr.queue::<(u32, String)>("jobs", 0).unwrap(); // unbounded, any Handoff item
    /// jobs.put((1, "resize".into())).unwrap();
    /// assert_eq!(mgr.queue::<(u32, String)>("jobs", 0).unwrap().get().unwrap().1, "resize");
    /// assert!(mgr.queue::<String>("jobs", 0).is_err()); // other item type
    /// let kinds: Vec<Kind> = mgr.names().unwrap().into_iter().map(|e| e.kind).collect();
    /// assert_eq!(kinds, [Kind::QueueChain, Kind::MpmcQueue]); // "jobs", "q"
    /// ```
    pub fn queue<T: crate::Handoff>(&self, name: &str, maxsize: u64) -> Result<Queue<T>, OpenError> {
        use crate::queue::{FrameCell, PodVia, RingItem};
        let (kind, fp) = if T::__POD.is_some() {
            (Kind::MpmcQueue, <PodVia<T> as RingItem>::fingerprint())
        } else {
            (Kind::FrameQueue, <FrameCell<T> as RingItem>::fingerprint())
        };
        let kind = if maxsize == 0 { Kind::QueueChain } else { kind };
        self.find_or_create(name, kind, &fp, Queue::open, |seg| {
            let q = Queue::create(seg, maxsize)?;
            q.persist();
            Ok(q)
        })
    }
}

/// Crash injection for the crash tests (feature `test-hooks`; not API).
#[cfg(feature = "test-hooks")]
pub(crate) mod crash {
    use std::sync::Mutex;
    static REPORT: Mutex<Option<String>> = Mutex::new(None);

    /// The next find-or-create that makes an object writes the object's
    /// segment name to the file `report`, then kills this process with
    /// SIGKILL, right after the segment was made and before the registry
    /// lists it as done.
    pub(crate) fn arm(report: &str) {
        *REPORT.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.to_owned());
    }

    pub(crate) fn after_create(segment: &str) {
        if let Some(path) = REPORT.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = std::fs::write(path, segment);
            crate::sys::thread::kill_self();
        }
    }
}

/// Removes this crate's segments whose creator process is dead, and the
/// objects of every [`Manager`] whose creator is dead and that was not
/// persisted (a Manager's objects are removed with it, never alone: they
/// are listed in its registry, which is read before it is removed). Only a
/// regular file owned by our effective uid whose header proves it is ours
/// (magic and this build's layout version) is considered, so foreign files
/// (short, zero-filled, FIFOs, other users' files) are left alone, and so
/// are persisted segments. Right before removing a name, `gc` checks that
/// it still refers to the file it judged (a segment re-created under the
/// same name meanwhile is kept). Returns the names removed.
///
/// A creator is dead when its pid is gone, a zombie, or now names a
/// process started at another time (a reused pid: the header records
/// the creator's start time too); all processes must share one PID
/// namespace. A dead creator's segment is removed even while other
/// processes have it open, as the creator's own drop would have removed
/// it: their handles keep working, later `open`s fail with
/// [`OpenError::NotFound`], and an `open_or_create` makes a new object
/// (not shared with the old handles). An unbounded queue is the
/// exception (below). To keep an object beyond its creator, `persist` it.
///
/// When segments are left behind: a creator that ends without dropping
/// its handles, killed by a signal (SIGKILL, and also SIGINT (Ctrl-C) or
/// SIGTERM at their default action), aborted, or leaving through
/// `std::process::exit` with handles alive. shmproc installs no signal
/// handler (a library must not take over a program's signals; Python's
/// resource tracker does this job there): call `gc` at startup or from a
/// supervisor, or have the program handle SIGINT/SIGTERM itself (set a
/// flag, return from `main`, and the handles' drops remove the names).
///
/// An unbounded queue ([`Queue::new(0)`](crate::Queue::new)) whose
/// creator is dead goes with its rings (`<name>.<generation>.<k>.<tag>`), once
/// no live process holds it (a live holder removes the rings when it
/// leaves; the queue's name then goes at a later `gc`). A ring of ours
/// that a process of another user retired, or left when it removed the
/// queue (/dev/shm is sticky: only we may remove our files), was given up
/// to us: `gc` removes it once the process that made it is dead.
///
/// A segment gets its name only once its header names its creator: it is
/// made under a name of its own, `.making.<pid>.<start>.<n>`, which `gc`
/// removes once that process is dead, and a name given to a segment is
/// never half made for `gc`: a creator killed at any point of a `create`
/// leaves nothing `gc` does not remove. (A zero-filled file under a
/// user's name, as an older build could leave, is not judged: remove it
/// with [`unlink`](crate::unlink).)
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
    let opts = Options::new().init_timeout(std::time::Duration::from_millis(50));
    // Managers that keep an unbounded queue a live process still holds:
    // their registry stays for a later `gc` (it is the only record of that
    // queue, which is persisted).
    let mut kept = Vec::new();
    for name in crate::shm::dead_segments_of_kind(Kind::Manager) {
        let Ok(reg) = DictProxy::<String, Vec<u8>>::open_kind(&name, &opts, Kind::Manager, &registry_fp()) else {
            continue;
        };
        match reg.with_lock(unlink_objects_not_held) {
            Ok(Ok((names, held))) => {
                removed.extend(names);
                if held {
                    kept.push(name);
                }
            }
            _ => kept.push(name),
        }
    }
    removed.extend(crate::shm::gc_matching(|user| !kept.iter().any(|k| k == user))?);
    Ok(removed)
}

/// [`unlink_objects`] for `gc`: an unbounded queue that a live process
/// still holds is left alone, as `gc` leaves such a queue made outside a
/// Manager (unlinking it removed its rings under its live users: their
/// next put or get said `Closed`, items queued were lost). Returns the
/// names removed and whether such a queue was kept.
fn unlink_objects_not_held(reg: &DictProxy<String, Vec<u8>>) -> Result<(Vec<String>, bool), ContainerError> {
    let mut removed = Vec::new();
    let mut held = false;
    for (_, rec) in reg.items()? {
        let Some(r) = Record::decode(&rec) else { continue };
        if crate::shm::is_held_chain(&r.segment) {
            held = true;
        } else if crate::shm::unlink_segment(&r.segment).is_ok() {
            removed.push(r.segment);
        }
    }
    Ok((removed, held))
}

/// Handles travel to a child by name and are re-opened (and validated) there.
macro_rules! handoff_by_name {
    ($([$($g:ident: $b:path),*] $t:ty => $kind:literal),* $(,)?) => {$(
        impl<$($g: $b),*> crate::process::Handoff for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                self.name().to_owned().encode(out);
            }
            fn decode(input: &mut &[u8]) -> Result<Self, crate::process::HandoffError> {
                let name = String::decode(input)?;
                <$t>::open(&name).map_err(|e| crate::process::HandoffError::Open {
                    kind: $kind,
                    name: name.clone(),
                    reason: e.to_string(),
                })
            }
        }
    )*};
}
handoff_by_name!(
    [] Manager => "Manager",
    [T: Element] ListProxy<T> => "ListProxy",
    [K: Element, V: Element] DictProxy<K, V> => "DictProxy",
);
