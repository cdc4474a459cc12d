use crate::ShmType;

use crate::LockError;
use crate::shm::object::constructors;
use crate::shm::{Fingerprint, Kind, Mapped, Object};
use crate::sync::lock::{Locked, MutexGuard};
use crate::sync::raw_lock::{RawLock, Wait};

/// One `T: ShmType` in shared memory with its own robust lock, like
/// `multiprocessing.Value('i', 0)`.
///
/// `get` and `set` take the lock for one copy; `get_lock()` holds it across
/// a read-modify-write (Python's `with v.get_lock(): v.value += 1`).
///
/// `get` and `set` return `LockError<()>` (no guard), so `?` works in any
/// function. If the previous holder died, they report
/// [`LockError::OwnerDied`] and release the lock unrepaired, which makes it
/// [`NotRecoverable`](LockError::NotRecoverable) for everyone: the value
/// may be half-written. To repair instead, use
/// [`get_lock`](Value::get_lock), whose `OwnerDied` error hands over the
/// guard: write a good value, then `make_consistent()`.
///
/// ```
/// use shmproc::Value;
/// let counter = Value::new(0i32).unwrap();
/// {
///     let mut g = counter.get_lock().unwrap();
///     g.update(|v| *v += 1);
/// }
/// assert_eq!(counter.get().unwrap(), 1);
/// // Another process opens it by name, with the same element type:
/// let same = Value::<i32>::open(counter.name()).unwrap();
/// same.set(41).unwrap();
/// assert_eq!(counter.get().unwrap(), 41);
/// assert!(Value::<u64>::open(counter.name()).is_err()); // wrong type
/// ```
pub struct Value<T> {
    m: Locked<T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value { m: self.m.clone() }
    }
}

impl<T> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value").field("segment", &self.m.m).finish()
    }
}

impl<T: ShmType> Object for Value<T> {
    const KIND: Kind = Kind::Value;
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
        if cap == 1 { Ok(()) } else { Err(format!("a Value holds 1 element, header says {cap}")) }
    }
    fn from_mapped(m: Mapped<RawLock>) -> Self {
        Value { m: Locked::new(m) }
    }
}

impl<T: ShmType> Value<T> {
    constructors!(doc("Value::<u64>", "7u64", ", 7u64"), initial: T);

    /// Reads the value under the lock (see the type's docs for `OwnerDied`).
    /// A thread that holds [`get_lock`](Self::get_lock) may call `get` and
    /// `set` (under its hold, as Python's recursive `Value` lock allows
    /// `with v.get_lock(): v.value += 1`); they do not wait for it.
    ///
    /// ```
    /// let v = shmproc::Value::new(1u8).unwrap();
    /// let held = v.get_lock().unwrap();
    /// v.set(v.get().unwrap() + 1).unwrap(); // no self-deadlock
    /// drop(held);
    /// assert_eq!(v.get().unwrap(), 2);
    /// ```
    ///
    /// ```
    /// fn double(v: &shmproc::Value<u8>) -> Result<u8, Box<dyn std::error::Error>> {
    ///     Ok(v.get()? * 2) // the error borrows nothing: `?` works
    /// }
    /// assert_eq!(double(&shmproc::Value::new(3u8).unwrap()).unwrap(), 6);
    /// ```
    pub fn get(&self) -> Result<T, LockError<()>> {
        self.m.with_data(|g| g.value())
    }

    /// Writes the value under the lock (see the type's docs for `OwnerDied`).
    ///
    /// ```
    /// let v = shmproc::Value::new(3u8).unwrap();
    /// v.set(4).unwrap();
    /// assert_eq!(v.get().unwrap(), 4);
    /// ```
    pub fn set(&self, value: T) -> Result<(), LockError<()>> {
        self.m.with_data(|g| g.set_value(value))
    }

    /// Holds the lock; the guard reads and writes the value. The lock is
    /// recursive, as Python's: the thread that holds it gets a guard for
    /// one more level at once; the lock is free once the last of its
    /// guards dropped, in any order (as an `RLock` counts releases).
    ///
    /// ```
    /// let v = shmproc::Value::new(1u8).unwrap();
    /// let outer = v.get_lock().unwrap();
    /// v.get_lock().unwrap().update(|x| *x += 1); // nested: no self-deadlock
    /// drop(outer);
    /// assert_eq!(v.get().unwrap(), 2);
    /// ```
    ///
    /// ```
    /// let v = shmproc::Value::new(1.5f64).unwrap();
    /// let mut g = v.get_lock().unwrap();
    /// g.set_value(g.value() * 2.0);
    /// drop(g);
    /// assert_eq!(v.get().unwrap(), 3.0);
    /// ```
    pub fn get_lock(&self) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.m.acquire_recursive(Wait::Forever)
    }

    /// [`get_lock`](Self::get_lock), waiting at most `timeout`.
    ///
    /// ```
    /// let v = shmproc::Value::new(1u8).unwrap();
    /// assert!(v.get_lock_timeout(std::time::Duration::from_millis(1)).is_ok());
    /// ```
    pub fn get_lock_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.m.acquire_recursive(Wait::timeout(timeout))
    }

    /// [`get_lock`](Self::get_lock) if the lock is free now.
    ///
    /// ```
    /// let v = shmproc::Value::new(1u8).unwrap();
    /// assert!(v.try_get_lock().is_ok());
    /// ```
    pub fn try_get_lock(&self) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.m.acquire_recursive(Wait::No)
    }
}
