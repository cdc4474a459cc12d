use crate::ShmType;

use crate::shm::object::constructors;
use crate::shm::{Fingerprint, Kind, Mapped, Object};
use crate::sync::lock::{Locked, MutexGuard};
use crate::sync::raw_lock::{RawLock, Wait};
use crate::{LockError, OpenError};

/// A fixed-length array of `T: ShmType` in shared memory with its own robust
/// lock, like `multiprocessing.Array('d', 10)`. Elements start zeroed
/// ([`Array::new`]) or copied from a slice ([`Array::from_slice`]).
///
/// ```
/// use shmproc::Array;
/// let a = Array::<f64>::new(4).unwrap();
/// a.set(2, 1.5).unwrap();
/// assert_eq!(a.to_vec().unwrap(), vec![0.0, 0.0, 1.5, 0.0]);
/// let same = Array::<f64>::open(a.name()).unwrap();
/// assert_eq!(same.len(), 4);
/// assert_eq!(same.get(2).unwrap(), 1.5);
/// assert!(same.get(4).is_err()); // out of range, like Python's IndexError
/// ```
///
/// The one-shot operations (`get`, `set`, `to_vec`) take the lock for one
/// copy and return errors without a guard ([`ArrayError`], `LockError<()>`),
/// so `?` works in any function. If the previous holder died, they report
/// [`LockError::OwnerDied`] and release the lock unrepaired, which makes it
/// [`NotRecoverable`](LockError::NotRecoverable) for everyone: the data may be
/// half-written. To repair instead, use [`get_lock`](Array::get_lock),
/// whose `OwnerDied` error hands over the guard.
pub struct Array<T> {
    m: Locked<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array { m: self.m.clone() }
    }
}

impl<T> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array").field("segment", &self.m.m).finish()
    }
}

/// Why [`Array::get`] or [`Array::set`] failed.
///
/// ```
/// use shmproc::{Array, ArrayError};
/// let a = Array::<u8>::new(2).unwrap();
/// let err = a.set(2, 1).unwrap_err();
/// assert!(matches!(err, ArrayError::IndexOutOfRange { index: 2, len: 2 }));
/// assert_eq!(err.to_string(), "array index 2 out of range for length 2");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArrayError {
    /// The index is not below the length (Python's `IndexError`); nothing
    /// was read or written, and the lock was not taken.
    #[error("array index {index} out of range for length {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// Taking the lock failed (see the [`Array`] docs for `OwnerDied`).
    #[error(transparent)]
    Lock(#[from] LockError<()>),
}

/// How a new array's elements are filled.
#[derive(Clone)]
pub(crate) enum Fill<T> {
    Zeroed(u64),
    From(Vec<T>),
}

impl<T: ShmType> Object for Array<T> {
    const KIND: Kind = Kind::Array;
    type Init = Fill<T>;
    type Ctl = RawLock;
    fn fingerprint() -> Fingerprint {
        Locked::<T>::fingerprint()
    }
    fn capacity(init: &Self::Init) -> Result<u64, OpenError> {
        Ok(match init {
            Fill::Zeroed(n) => *n,
            Fill::From(s) => s.len() as u64,
        })
    }
    fn new_ctl(_: &Self::Init, _: u64) -> RawLock {
        RawLock::new()
    }
    unsafe fn init_data(data: *mut u8, init: Self::Init, _capacity: u64) {
        // A fresh segment is zero-filled already; copy the slice if given.
        if let Fill::From(s) = init {
            // SAFETY: the aligned data area holds `s.len()` elements (capacity); not yet published.
            unsafe { crate::shm::copy::write_slice(&s, data as *mut T) };
        }
    }
    fn from_mapped(m: Mapped<RawLock>) -> Self {
        Array { m: Locked::new(m) }
    }
}

impl<T: ShmType> Array<T> {
    constructors!(doc("Array::<u64>", "4", ", 4"), len: u64 => Fill::Zeroed(len));

    /// A new array (unique name) holding a copy of `items`.
    ///
    /// ```
    /// let a = shmproc::Array::from_slice(&[1u8, 2, 3]).unwrap();
    /// assert_eq!(a.to_vec().unwrap(), vec![1, 2, 3]);
    /// ```
    pub fn from_slice(items: &[T]) -> Result<Self, OpenError> {
        Self::create_from_slice(&crate::shm::unique_name(), items)
    }

    /// Creates `name` holding a copy of `items`.
    ///
    /// ```
    /// let name = format!("doc-array-{}", std::process::id());
    /// let a = shmproc::Array::create_from_slice(&name, &[7u32; 3]).unwrap();
    /// assert_eq!(shmproc::Array::<u32>::open(&name).unwrap().to_vec().unwrap(), vec![7; 3]);
    /// # drop(a);
    /// ```
    pub fn create_from_slice(name: &str, items: &[T]) -> Result<Self, OpenError> {
        crate::shm::object::create::<Self>(name, Fill::From(items.to_vec()), &crate::Options::new())
    }

    /// Number of elements.
    ///
    /// ```
    /// assert_eq!(shmproc::Array::<u8>::new(9).unwrap().len(), 9);
    /// ```
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(shmproc::Array::<u8>::new(0).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.m.len() == 0
    }

    /// Element `i`, copied under the lock;
    /// [`ArrayError::IndexOutOfRange`] past the end. A thread that holds
    /// [`get_lock`](Self::get_lock) may call `get`, `set` and `to_vec`
    /// (under its hold, as with Python's recursive `Array` lock).
    ///
    /// ```
    /// use shmproc::{Array, ArrayError};
    /// let a = Array::from_slice(&[5u8]).unwrap();
    /// assert_eq!(a.get(0).unwrap(), 5);
    /// assert!(matches!(a.get(1), Err(ArrayError::IndexOutOfRange { index: 1, len: 1 })));
    /// ```
    pub fn get(&self, i: usize) -> Result<T, ArrayError> {
        self.check(i)?;
        Ok(self.m.with_data(|g| g.get(i).expect("index checked against the validated length"))?)
    }

    /// Sets element `i` under the lock; [`ArrayError::IndexOutOfRange`]
    /// (and nothing written) past the end.
    ///
    /// ```
    /// let a = shmproc::Array::<u8>::new(1).unwrap();
    /// a.set(0, 9).unwrap();
    /// assert!(a.set(1, 9).is_err());
    /// assert_eq!(a.to_vec().unwrap(), vec![9]);
    /// ```
    pub fn set(&self, i: usize, v: T) -> Result<(), ArrayError> {
        self.check(i)?;
        let written = self.m.with_data(|g| g.set(i, v))?;
        debug_assert!(written, "index checked against the validated length");
        Ok(())
    }

    /// [`ArrayError::IndexOutOfRange`] unless `i` is an index.
    fn check(&self, i: usize) -> Result<(), ArrayError> {
        let len = self.len();
        if i >= len {
            return Err(ArrayError::IndexOutOfRange { index: i, len });
        }
        Ok(())
    }

    /// All elements, copied under the lock. The error carries no guard
    /// (see the type's docs for `OwnerDied`).
    ///
    /// ```
    /// fn sum(a: &shmproc::Array<i8>) -> Result<i32, Box<dyn std::error::Error>> {
    ///     Ok(a.to_vec()?.iter().map(|&x| x as i32).sum())
    /// }
    /// let a = shmproc::Array::from_slice(&[1i8, 2]).unwrap();
    /// assert_eq!(sum(&a).unwrap(), 3);
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>, LockError<()>> {
        self.m.with_data(|g| g.to_vec())
    }

    /// Holds the lock; the guard reads and writes elements. The lock is
    /// recursive, as Python's: the thread that holds it gets a guard for
    /// one more level at once; the lock is free once the last of its
    /// guards dropped, in any order (as an `RLock` counts releases).
    ///
    /// ```
    /// let a = shmproc::Array::<u32>::new(3).unwrap();
    /// let mut g = a.get_lock().unwrap();
    /// for i in 0..g.len() { g.set(i, i as u32 * 10); }
    /// drop(g);
    /// assert_eq!(a.to_vec().unwrap(), vec![0, 10, 20]);
    /// ```
    pub fn get_lock(&self) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.m.acquire_recursive(Wait::Forever)
    }

    /// [`get_lock`](Self::get_lock) if the lock is free now.
    ///
    /// ```
    /// let a = shmproc::Array::<u32>::new(3).unwrap();
    /// let held = a.try_get_lock().unwrap();
    /// std::thread::scope(|s| { s.spawn(|| assert!(a.try_get_lock().is_err())); });
    /// drop(held);
    /// ```
    pub fn try_get_lock(&self) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.m.acquire_recursive(Wait::No)
    }

    /// [`get_lock`](Self::get_lock), waiting at most `timeout`.
    ///
    /// ```
    /// let a = shmproc::Array::<u32>::new(3).unwrap();
    /// assert!(a.get_lock_timeout(std::time::Duration::from_millis(1)).is_ok());
    /// ```
    pub fn get_lock_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<MutexGuard<'_, T>, LockError<MutexGuard<'_, T>>> {
        self.m.acquire_recursive(Wait::timeout(timeout))
    }
}
