//! The identity of an element type in shared memory: what `open` checks so
//! that a process opening an object with another element type gets a clear
//! error instead of garbage.

use std::borrow::Cow;

use bytemuck::Pod;

/// An element type that can live in shared memory: the `T` of
/// [`Value<T>`](crate::Value), [`Array<T>`](crate::Array),
/// [`Mutex<T>`](crate::Mutex) and the queues.
///
/// Every segment records its element type's size, alignment and name (as
/// a hash), and every `open` compares them: a mismatch is
/// [`OpenError::IncompatibleType`](crate::OpenError::IncompatibleType).
///
/// **The rule.** Two programs agree on an element type when size,
/// alignment and [`type_name`](Self::type_name) agree. The primitive types
/// (`u8`..`u128`, `i8`..`i128`, `usize`, `isize`, `f32`, `f64`, `()`) and
/// arrays of element types have fixed names (`"u64"`, `"[f64; 3]"`). For
/// your own types the default name is `std::any::type_name`, e.g.
/// `"my_service::Order"`: stable for one compiler version and crate name,
/// but not promised across toolchains or crate renames. Services built
/// separately should name their shared types explicitly:
///
/// ```
/// use shmproc::{Pod, ShmType, Value, Zeroable};
///
/// #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
/// #[bytemuck(crate = "shmproc::bytemuck")]
/// #[repr(C)]
/// struct Order {
///     id: u64,
///     qty: u32,
///     price_cents: u32,
/// }
///
/// // A name both services agree on, whatever compiler built them.
/// impl ShmType for Order {
///     fn type_name() -> std::borrow::Cow<'static, str> {
///         "orders.Order/v1".into()
///     }
/// }
///
/// let v = Value::new(Order { id: 1, qty: 2, price_cents: 300 }).unwrap();
/// assert_eq!(Value::<Order>::open(v.name()).unwrap().get().unwrap().qty, 2);
/// assert!(Value::<[u64; 2]>::open(v.name()).is_err()); // same size, other type
/// ```
///
/// **Limits.** A type of 4 GiB or more panics when an object of it is made;
/// one aligned to more than a page (4096 bytes) is refused with
/// [`OpenError::InvalidArgument`](crate::OpenError::InvalidArgument) by
/// `create` and `open` (a mapping is only page-aligned).
///
/// The [`shm_type!`](crate::shm_type) macro writes either impl in one line:
/// `shm_type!(Order = "orders.Order/v1");` or, keeping the default name,
/// `shm_type!(Order);`. It also implements [`Handoff`](crate::Handoff),
/// which a [`Queue`](crate::Queue) of the type needs; beside a hand-written
/// `impl ShmType`, add [`handoff_pod!`](crate::handoff_pod)`(Order);`.
pub trait ShmType: Pod {
    /// The name recorded in (and checked against) every segment holding
    /// this type. Default: `std::any::type_name::<Self>()`.
    ///
    /// ```
    /// use shmproc::ShmType;
    /// assert_eq!(u64::type_name(), "u64");
    /// assert_eq!(<[f64; 3]>::type_name(), "[f64; 3]");
    /// ```
    fn type_name() -> Cow<'static, str> {
        Cow::Borrowed(std::any::type_name::<Self>())
    }
}

/// Implements [`ShmType`](crate::ShmType) for your types: with the
/// default name (`std::any::type_name`), or with a stable name you choose.
///
/// ```
/// use shmproc::{Pod, ShmType, Zeroable};
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// #[bytemuck(crate = "shmproc::bytemuck")]
/// #[repr(C)]
/// struct Tick { px: f64, qty: f64 }
/// #[derive(Clone, Copy, Pod, Zeroable)]
/// #[bytemuck(crate = "shmproc::bytemuck")]
/// #[repr(C)]
/// struct Local { n: u32 }
///
/// shmproc::shm_type!(Tick = "md.Tick/v2");
/// shmproc::shm_type!(Local);
/// assert_eq!(Tick::type_name(), "md.Tick/v2");
/// assert!(Local::type_name().ends_with("Local"));
/// ```
#[macro_export]
macro_rules! shm_type {
    ($t:ty = $name:expr) => {
        impl $crate::ShmType for $t {
            fn type_name() -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed($name)
            }
        }
        $crate::handoff_pod!($t);
    };
    ($($t:ty),+ $(,)?) => {
        $(impl $crate::ShmType for $t {})+
        $crate::handoff_pod!($($t),+);
    };
}

macro_rules! primitive {
    ($($t:ty),*) => {
        $(impl ShmType for $t {
            fn type_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($t))
            }
        })*
    };
}
primitive!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, ());

impl<T: ShmType, const N: usize> ShmType for [T; N]
where
    [T; N]: Pod,
{
    fn type_name() -> Cow<'static, str> {
        Cow::Owned(format!("[{}; {N}]", T::type_name()))
    }
}
