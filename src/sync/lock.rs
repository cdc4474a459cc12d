//! `Lock` (like `multiprocessing.Lock`) and `Mutex<T>` (data behind a lock),
//! both robust against an owner dying.

use std::marker::PhantomData;
use std::time::Duration;

use crate::ShmType;

use super::raw_lock::{Acquired, Failed, RawLock, Wait};
use crate::LockError;
use crate::shm::copy;
use crate::shm::object::constructors;
use crate::shm::{Fingerprint, Kind, Mapped, Object};

/// Turns a raw acquisition into the public result, building the guard with
/// `consistent = true` for a clean acquisition and `false` after a takeover.
pub(crate) fn guard_result<G>(r: Result<Acquired, Failed>, make: impl FnOnce(bool) -> G) -> Result<G, LockError<G>> {
    match r {
        Ok(Acquired::Clean) => Ok(make(true)),
        Ok(Acquired::OwnerDied) => Err(LockError::OwnerDied(make(false))),
        Err(Failed::WouldBlock) => Err(LockError::WouldBlock),
        Err(Failed::TimedOut) => Err(LockError::TimedOut),
        Err(Failed::NotRecoverable) => Err(LockError::NotRecoverable),
    }
}

thread_local! {
    /// The recursive locks (`Value`, `Array`, `Condition`) this thread
    /// holds at more than one level: each one's segment (device, inode)
    /// and its levels beyond the first. Every guard's drop takes one level;
    /// the lock is released with the last, whichever guard that is (as
    /// Python's `RLock` counts its releases). Empty unless a thread nests.
    static EXTRA_LEVELS: std::cell::RefCell<Vec<((u64, u64), u32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Counts one more level of the lock of segment `file` held by this thread.
fn add_level(file: (u64, u64)) {
    // Before any level exists, so before a fork could copy one.
    static FORGET_IN_FORKED_CHILD: std::sync::Once = std::sync::Once::new();
    FORGET_IN_FORKED_CHILD.call_once(|| crate::sys::thread::on_fork_child(forget_levels));
    EXTRA_LEVELS.with(|v| {
        let mut v = v.borrow_mut();
        match v.iter_mut().find(|(k, _)| *k == file) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => v.push((file, 1)),
        }
    });
}

/// In a forked child: the levels copied from the forking thread are not
/// the child's (its thread is a new one, which owns none of those locks),
/// so they go. Kept, the child's own first guard of such a lock would take
/// an inherited level at its drop instead of unlocking, and the child
/// would keep the lock until it died (the others then got `OwnerDied`).
extern "C" fn forget_levels() {
    // `try_`: never panic in a fork handler. No allocation: `clear` keeps
    // the buffer.
    let _ = EXTRA_LEVELS.try_with(|v| {
        if let Ok(mut v) = v.try_borrow_mut() {
            v.clear();
        }
    });
}

/// Takes one extra level of the lock of segment `file`, if this thread
/// has one: true then (the lock stays held by the other levels).
fn take_extra_level(file: (u64, u64)) -> bool {
    EXTRA_LEVELS
        .try_with(|v| {
            let mut v = v.borrow_mut();
            let Some(i) = v.iter().position(|(k, _)| *k == file) else { return false };
            v[i].1 -= 1;
            if v[i].1 == 0 {
                v.swap_remove(i);
            }
            true
        })
        .unwrap_or(false)
}

/// Proof that the calling thread holds a [`Lock`] (or the lock of a [`crate::Condition`]); releases it on drop.
/// Not `Send`: a lock is owned by a thread.
pub struct LockGuard<'a> {
    raw: &'a RawLock,
    consistent: bool,
    /// The (device, inode) of the segment holding the lock, for the
    /// recursive locks (`Value`, `Array`, `Condition`): their levels are
    /// counted per segment (see `EXTRA_LEVELS`), and another handle of the
    /// same object maps the lock at another address.
    file: Option<(u64, u64)>,
    _not_send: PhantomData<*const ()>,
}

impl<'a> LockGuard<'a> {
    pub(crate) fn new(raw: &'a RawLock, consistent: bool) -> Self {
        LockGuard { raw, consistent, file: None, _not_send: PhantomData }
    }

    /// One more level of a recursive lock (of segment `file`) that this
    /// thread holds already. Its consistency is the word's (a level taken
    /// over from a dead owner is marked there until `make_consistent`).
    pub(crate) fn nested(raw: &'a RawLock, file: (u64, u64)) -> Self {
        add_level(file);
        LockGuard { raw, consistent: true, file: Some(file), _not_send: PhantomData }
    }

    /// Records which segment's lock this is (see the `file` field).
    pub(crate) fn in_file(mut self, file: (u64, u64)) -> Self {
        self.file = Some(file);
        self
    }

    pub(crate) fn raw(&self) -> &'a RawLock {
        self.raw
    }

    /// The segment the lock is in, if recorded (see [`Self::in_file`]).
    pub(crate) fn file(&self) -> Option<(u64, u64)> {
        self.file
    }

    /// Declares the protected state repaired after
    /// [`LockError::OwnerDied`]; the lock then works normally again.
    ///
    /// ```
    /// let lock = shmproc::Lock::new().unwrap();
    /// let mut g = lock.lock().unwrap();
    /// g.make_consistent(); // harmless on a consistent guard
    /// assert!(g.is_consistent());
    /// ```
    pub fn make_consistent(&mut self) {
        if !self.is_consistent() {
            self.raw.make_consistent();
            self.consistent = true;
        }
    }

    /// False for a guard obtained through [`LockError::OwnerDied`] until
    /// [`make_consistent`](Self::make_consistent) is called.
    ///
    /// ```
    /// let lock = shmproc::Lock::new().unwrap();
    /// assert!(lock.lock().unwrap().is_consistent());
    /// ```
    pub fn is_consistent(&self) -> bool {
        // The word too: another level of this thread (a recursive lock's)
        // may have taken the lock back from a dead owner meanwhile (a
        // `Condition::wait` through it), which only the word records.
        self.consistent && !self.raw.is_inconsistent()
    }

    /// Used by `Condition::wait`, which releases and re-acquires the lock
    /// under the same guard.
    pub(crate) fn set_consistent(&mut self, consistent: bool) {
        self.consistent = consistent;
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // Not the last level of a recursive lock: it stays held.
        if let Some(file) = self.file
            && take_extra_level(file)
        {
            return;
        }
        // Unrepaired if this guard, or a nested one of this thread (see
        // `is_consistent`), took the lock over from a dead owner.
        if self.is_consistent() {
            self.raw.unlock();
        } else {
            self.raw.unlock_inconsistent();
        }
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("consistent", &self.consistent).finish()
    }
}

/// A cross-process, crash-robust lock, like `multiprocessing.Lock`.
///
/// Uncontended `lock` + unlock is one CAS and one swap on a shared word: no
/// syscall. A blocked locker spins briefly, then sleeps on a futex. If the
/// holder dies (even by `kill -9`), the next locker gets
/// [`LockError::OwnerDied`] with the guard, within about 100 ms of waiting;
/// it repairs what the lock protects and calls
/// [`LockGuard::make_consistent`]. If it drops the guard without doing so,
/// every later locker gets [`LockError::NotRecoverable`].
///
/// All processes must share one PID namespace and see `/proc` (owners are
/// identified by thread id and start time).
///
/// Unlike Python's, the lock is released by dropping its guard, in the
/// thread that took it: there is no `release()`, so releasing a lock that
/// is not held (Python's `ValueError`) cannot happen, and neither can
/// Python's release by another thread or process. For that hand-over
/// (taken in one process, released in another), use
/// [`BoundedSemaphore::new(1)`](crate::BoundedSemaphore), whose
/// over-release is an error as Python's `ValueError`.
///
/// ```
/// use shmproc::Lock;
/// let lock = Lock::new().unwrap();
/// {
///     let _held = lock.lock().unwrap();
///     assert!(lock.is_locked());
/// } // released here
/// assert!(!lock.is_locked());
/// // Another process opens the same lock by name:
/// let same = Lock::open(lock.name()).unwrap();
/// assert!(same.try_lock().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct Lock {
    m: Mapped<RawLock>,
}

impl Object for Lock {
    const KIND: Kind = Kind::Lock;
    type Init = ();
    type Ctl = RawLock;
    fn new_ctl(_: &(), _: u64) -> RawLock {
        RawLock::new()
    }
    fn from_mapped(m: Mapped<RawLock>) -> Self {
        Lock { m }
    }
}

impl Lock {
    constructors!(doc("Lock", "", ""));

    /// Blocks until the lock is held.
    ///
    /// ```
    /// let lock = shmproc::Lock::new().unwrap();
    /// let g = lock.lock().unwrap();
    /// assert!(g.is_consistent());
    /// ```
    pub fn lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        self.acquire(Wait::Forever)
    }

    /// Takes the lock if it is free; [`LockError::WouldBlock`] otherwise.
    ///
    /// ```
    /// let lock = shmproc::Lock::new().unwrap();
    /// let _g = lock.try_lock().unwrap();
    /// ```
    pub fn try_lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        self.acquire(Wait::No)
    }

    /// Waits at most `timeout`; [`LockError::TimedOut`] after that.
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = shmproc::Lock::new().unwrap();
    /// let _held = lock.lock().unwrap();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let r = lock.lock_timeout(Duration::from_millis(20));
    ///         assert!(matches!(r, Err(shmproc::LockError::TimedOut)));
    ///     });
    /// });
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        self.acquire(Wait::timeout(timeout))
    }

    fn acquire(&self, wait: Wait) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        let raw = self.m.ctl();
        guard_result(raw.lock(wait), |c| LockGuard::new(raw, c))
    }

    /// Whether anybody holds the lock right now (a snapshot).
    ///
    /// ```
    /// let lock = shmproc::Lock::new().unwrap();
    /// assert!(!lock.is_locked());
    /// ```
    pub fn is_locked(&self) -> bool {
        self.m.ctl().is_locked()
    }
}

// ---------------------------------------------------------------------------

/// The control block shared by `Mutex<T>`, `Value<T>` and `Array<T>`: a
/// lock, then `capacity` elements of `T` in the data area.
pub(crate) struct Locked<T> {
    pub(crate) m: Mapped<RawLock>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for Locked<T> {
    fn clone(&self) -> Self {
        Locked { m: self.m.clone(), len: self.len, _t: PhantomData }
    }
}

impl<T: ShmType> Locked<T> {
    pub(crate) fn new(m: Mapped<RawLock>) -> Self {
        // The layout was validated for `capacity` elements at create/open.
        let len = m.capacity() as usize;
        Locked { m, len, _t: PhantomData }
    }

    pub(crate) fn fingerprint() -> Fingerprint {
        Fingerprint::of::<T>()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn segment(&self) -> &crate::shm::Segment {
        self.m.segment()
    }

    pub(crate) fn acquire(&self, wait: Wait) -> Result<DataGuard<'_, T>, LockError<DataGuard<'_, T>>> {
        self.acquire_in(wait, None)
    }

    /// [`acquire`](Self::acquire), the guard recording the segment of a
    /// recursive lock (see `LockGuard::file`).
    fn acquire_in(
        &self,
        wait: Wait,
        file: Option<(u64, u64)>,
    ) -> Result<DataGuard<'_, T>, LockError<DataGuard<'_, T>>> {
        let raw = self.m.ctl();
        guard_result(raw.lock(wait), |c| DataGuard {
            lock: LockGuard { raw, consistent: c, file, _not_send: PhantomData },
            data: self.m.data() as *mut T,
            len: self.len,
        })
    }

    /// Runs `f` on the data for a one-shot access (`Value::get`/`set`,
    /// `Array::get`/`set`/`to_vec`): under the lock, or, when the calling
    /// thread already holds it (a live guard of this thread: guards are not
    /// `Send`), under that hold, as Python's recursive `Value`/`Array` locks
    /// allow `with v.get_lock(): v.value += 1`. Without this the call would
    /// wait for itself forever.
    pub(crate) fn with_data<R>(&self, f: impl FnOnce(&mut DataGuard<'_, T>) -> R) -> Result<R, LockError<()>> {
        self.acquire_recursive(Wait::Forever).map(|mut g| f(&mut g)).map_err(LockError::without_guard)
    }

    /// [`acquire`](Self::acquire), except that a thread that holds the lock
    /// already (a live guard of this thread: guards are not `Send`) gets a
    /// guard for one more level at once: the recursive lock of Python's
    /// `Value` and `Array` (released when the last of its guards drops,
    /// in any order).
    pub(crate) fn acquire_recursive(&self, wait: Wait) -> Result<DataGuard<'_, T>, LockError<DataGuard<'_, T>>> {
        let raw = self.m.ctl();
        let file = self.m.segment().file_id();
        if raw.is_owned_by_me() {
            return Ok(DataGuard { lock: LockGuard::nested(raw, file), data: self.m.data() as *mut T, len: self.len });
        }
        self.acquire_in(wait, Some(file))
    }

    /// Writes `init` into every element of a fresh data area.
    ///
    /// # Safety
    /// `data` points at `len` writable, aligned `T`s nobody else sees yet.
    pub(crate) unsafe fn fill(data: *mut u8, len: u64, init: T) {
        for i in 0..len as usize {
            // SAFETY: i < len, within the fresh, aligned data area (caller's contract).
            unsafe { copy::write((data as *mut T).add(i), init) };
        }
    }
}

/// Access to the data behind a held lock: `T` values are copied in and out
/// (the bytes are shared memory, so no `&mut` into them is ever handed out).
pub struct DataGuard<'a, T> {
    lock: LockGuard<'a>,
    data: *mut T,
    len: usize,
}

impl<T: ShmType> DataGuard<'_, T> {
    /// Element `i`, or `None` past the end.
    ///
    /// ```
    /// let a = shmproc::Array::<u32>::new(3).unwrap();
    /// let g = a.get_lock().unwrap();
    /// assert_eq!(g.get(2), Some(0));
    /// assert_eq!(g.get(3), None);
    /// ```
    pub fn get(&self, i: usize) -> Option<T> {
        // The lock is held, so only a misbehaving peer writes now; by the memory model (sanctioned copy,
        // T: ShmType) that gives a garbage value, never UB.
        // SAFETY: i < len (the validated count), so the element is inside the aligned data area; the copy is the
        // sanctioned one (above).
        (i < self.len).then(|| unsafe { copy::read(self.data.add(i)) })
    }

    /// Sets element `i`; returns `false` (and writes nothing) past the end.
    ///
    /// ```
    /// let a = shmproc::Array::<u32>::new(3).unwrap();
    /// let mut g = a.get_lock().unwrap();
    /// assert!(g.set(1, 7));
    /// assert!(!g.set(3, 7));
    /// assert_eq!(g.get(1), Some(7));
    /// ```
    pub fn set(&mut self, i: usize, v: T) -> bool {
        if i >= self.len {
            return false;
        }
        // SAFETY: i < len; lock held (see `get`).
        unsafe { copy::write(self.data.add(i), v) };
        true
    }

    /// Number of elements.
    ///
    /// ```
    /// let a = shmproc::Array::<u8>::new(5).unwrap();
    /// assert_eq!(a.get_lock().unwrap().len(), 5);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    ///
    /// ```
    /// let a = shmproc::Array::<u8>::new(0).unwrap();
    /// assert!(a.get_lock().unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies elements starting at `start` into `out`; returns how many.
    ///
    /// ```
    /// let a = shmproc::Array::from_slice(&[1u16, 2, 3]).unwrap();
    /// let mut out = [0u16; 2];
    /// assert_eq!(a.get_lock().unwrap().read(1, &mut out), 2);
    /// assert_eq!(out, [2, 3]);
    /// ```
    pub fn read(&self, start: usize, out: &mut [T]) -> usize {
        // Bounds first, with no pointer formed: `start` may be anything.
        let Some(n) = self.len.checked_sub(start).map(|room| room.min(out.len())) else {
            return 0;
        };
        // SAFETY: start + n <= len, inside the aligned data area; lock held; copied per the memory model (see
        // `get`).
        unsafe { copy::read_slice(self.data.add(start), &mut out[..n]) };
        n
    }

    /// Copies `src` into the elements starting at `start`; returns how many
    /// fitted.
    ///
    /// ```
    /// let a = shmproc::Array::<u16>::new(3).unwrap();
    /// let mut g = a.get_lock().unwrap();
    /// assert_eq!(g.write(1, &[8, 9, 10]), 2);
    /// assert_eq!(g.write(usize::MAX, &[1]), 0); // any start is safe
    /// assert_eq!(g.to_vec(), vec![0, 8, 9]);
    /// ```
    pub fn write(&mut self, start: usize, src: &[T]) -> usize {
        // Bounds first, with no pointer formed: `start` may be anything.
        let Some(n) = self.len.checked_sub(start).map(|room| room.min(src.len())) else {
            return 0;
        };
        // SAFETY: start + n <= len, inside the aligned data area; lock held (see `get`).
        unsafe { copy::write_slice(&src[..n], self.data.add(start)) };
        n
    }

    /// All elements, copied out.
    ///
    /// ```
    /// let a = shmproc::Array::from_slice(&[4i64, 5]).unwrap();
    /// assert_eq!(a.get_lock().unwrap().to_vec(), vec![4, 5]);
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        let mut v = vec![T::zeroed(); self.len];
        self.read(0, &mut v);
        v
    }

    /// See [`LockGuard::make_consistent`].
    ///
    /// ```
    /// let v = shmproc::Value::new(0u8).unwrap();
    /// let mut g = v.get_lock().unwrap();
    /// g.make_consistent();
    /// assert!(g.is_consistent());
    /// ```
    pub fn make_consistent(&mut self) {
        self.lock.make_consistent();
    }

    /// See [`LockGuard::is_consistent`].
    ///
    /// ```
    /// let v = shmproc::Value::new(0u8).unwrap();
    /// assert!(v.get_lock().unwrap().is_consistent());
    /// ```
    pub fn is_consistent(&self) -> bool {
        self.lock.is_consistent()
    }
}

/// Single-value access, for `Mutex<T>` and `Value<T>` (element 0).
impl<T: ShmType> DataGuard<'_, T> {
    /// The value (element 0).
    ///
    /// ```
    /// let m = shmproc::Mutex::new(5u32).unwrap();
    /// assert_eq!(m.lock().unwrap().value(), 5);
    /// ```
    pub fn value(&self) -> T {
        self.get(0).unwrap_or_else(T::zeroed)
    }

    /// Replaces the value (element 0).
    ///
    /// ```
    /// let m = shmproc::Mutex::new(5u32).unwrap();
    /// m.lock().unwrap().set_value(6);
    /// assert_eq!(m.lock().unwrap().value(), 6);
    /// ```
    pub fn set_value(&mut self, v: T) {
        self.set(0, v);
    }

    /// Reads the value, lets `f` change a local copy, writes it back, and
    /// returns what `f` returned.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(5u32).unwrap();
    /// let old = m.lock().unwrap().update(|v| { let o = *v; *v += 1; o });
    /// assert_eq!((old, m.lock().unwrap().value()), (5, 6));
    /// ```
    pub fn update<R>(&mut self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut v = self.value();
        let r = f(&mut v);
        self.set_value(v);
        r
    }
}

impl<T> std::fmt::Debug for DataGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataGuard").field("len", &self.len).field("lock", &self.lock).finish()
    }
}

/// The guard of a [`Mutex<T>`] (and of [`crate::Value`] / [`crate::Array`]).
pub type MutexGuard<'a, T> = DataGuard<'a, T>;

/// A `T: ShmType` in shared memory behind a robust lock.
///
/// ```
/// use shmproc::Mutex;
/// let m = Mutex::new([0u64; 4]).unwrap();
/// m.lock().unwrap().update(|a| a[2] = 9);
/// let other = Mutex::<[u64; 4]>::open(m.name()).unwrap();
/// assert_eq!(other.lock().unwrap().value()[2], 9);
/// // Opening with another element type is refused:
/// assert!(Mutex::<[u32; 8]>::open(m.name()).is_err());
/// ```
pub struct Mutex<T> {
    m: Locked<T>,
}

impl<T> Clone for Mutex<T> {
    fn clone(&self) -> Self {
        Mutex { m: self.m.clone() }
    }
}

impl<T> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex").field("segment", &self.m.m).finish()
    }
}

impl<T: ShmType> Object for Mutex<T> {
    const KIND: Kind = Kind::Mutex;
    type Init = T;
    type Ctl = RawLock;
    fn fingerprint() -> Fingerprint {
        Locked::<T>::fingerprint()
    }
    fn capacity(_: &T) -> Result<u64, crate::OpenError> {
        Ok(1)
    }
    fn new_ctl(_: &T, _: u64) -> RawLock {
        RawLock::new()
    }
    unsafe fn init_data(data: *mut u8, init: T, capacity: u64) {
        // SAFETY: forwarded contract.
        unsafe { Locked::fill(data, capacity, init) }
    }
    fn validate(m: &Mapped<RawLock>) -> Result<(), String> {
        let cap = m.capacity();
        if cap == 1 { Ok(()) } else { Err(format!("a Mutex holds 1 element, header says {cap}")) }
    }
    fn from_mapped(m: Mapped<RawLock>) -> Self {
        Mutex { m: Locked::new(m) }
    }
}

impl<T: ShmType> Mutex<T> {
    constructors!(doc("Mutex::<[u8; 4]>", "[1, 2, 3, 4]", ", [1, 2, 3, 4]"), initial: T);

    /// Blocks until the lock is held. See [`Lock`] for dead owners.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(1u8).unwrap();
    /// assert_eq!(m.lock().unwrap().value(), 1);
    /// ```
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.m.acquire(Wait::Forever)
    }

    /// Takes the lock if free; [`LockError::WouldBlock`] otherwise.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(1u8).unwrap();
    /// let held = m.lock().unwrap();
    /// std::thread::scope(|s| { s.spawn(|| assert!(m.try_lock().is_err())); });
    /// drop(held);
    /// ```
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.m.acquire(Wait::No)
    }

    /// Waits at most `timeout`.
    ///
    /// ```
    /// let m = shmproc::Mutex::new(1u8).unwrap();
    /// assert!(m.lock_timeout(std::time::Duration::from_millis(5)).is_ok());
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.m.acquire(Wait::timeout(timeout))
    }
}
