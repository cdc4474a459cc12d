//! Entry functions: how a child knows what to run.
//!
//! `entry!` turns a function into a unit struct implementing [`Entry`],
//! identified by a stable id (its module path and name), and registers it
//! in a table before `main` runs (a constructor in `.init_array.00500`).
//! A spawned child finds its entry by id in that table — never by address —
//! from a second constructor in the plain `.init_array`, which the linker
//! orders after every prioritised one, so all entries are registered by
//! then (and after std's own argument setup). An id that is not in the
//! table makes the child exit with a clear error.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use super::handoff::Handoff;

/// A function a child process can run. Implemented by [`entry!`](crate::entry)
/// (for functions) and by `entry!(impl Run for T)` (for [`Run`] types);
/// not meant to be implemented by hand.
pub trait Entry: 'static {
    /// Stable id: module path, name and the macro call's place
    /// (`file:line:column`), so two functions of the same name in one
    /// module (say, each inside its own function body) never share an
    /// id and a child never runs the other one.
    const ID: &'static str;
    /// What the parent hands over.
    type Arg: Handoff + Send + 'static;
    /// Runs the entry; `Err` carries the message the parent sees.
    fn call(arg: Self::Arg) -> Result<(), String>;
}

/// What an entry function may return: `()` or `Result<(), E: Display>`.
pub trait ExitValue {
    /// `Err(message)` for a failure.
    fn into_result(self) -> Result<(), String>;
}

impl ExitValue for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> ExitValue for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A struct that is its own process body, like subclassing
/// `multiprocessing.Process` and overriding `run()`. Register it with
/// `shmproc::entry!(impl Run for MyType);` and start it with
/// [`Process::from_run`](crate::Process::from_run).
pub trait Run: Handoff + Send + 'static {
    /// The process body.
    fn run(self) -> Result<(), String>;
}

/// How an entry ended in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Failed(String),
    Panicked(String),
    /// The child could not start the entry (unknown id, bad argument).
    Startup(String),
}

impl Outcome {
    pub(crate) const EXIT_FAILED: i32 = 1;
    pub(crate) const EXIT_STARTUP: i32 = 2;
    pub(crate) const EXIT_PANICKED: i32 = 101;

    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed(_) => Self::EXIT_FAILED,
            Outcome::Panicked(_) => Self::EXIT_PANICKED,
            Outcome::Startup(_) => Self::EXIT_STARTUP,
        }
    }
}

/// Runs `E` on an already decoded argument, catching panics.
pub(crate) fn run_entry<E: Entry>(arg: E::Arg) -> Outcome {
    match std::panic::catch_unwind(AssertUnwindSafe(|| E::call(arg))) {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(msg)) => Outcome::Failed(msg),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".into());
            drop_payload(payload);
            Outcome::Panicked(msg)
        }
    }
}

/// Drops a caught panic's payload. Its `Drop` is user code (`panic_any`
/// takes any value) and may panic in turn: that second panic is caught
/// and its own payload leaked, so the first panic ends where it was
/// caught. (Dropped plainly, it started a new unwind from there: out of a
/// pool's manager, killing the pool, out of a worker's item loop, or out
/// of the exit handler, aborting the exit.)
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    if let Err(again) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// Decodes the argument bytes (opening every handle they name), calls
/// `opened`, then runs `E`.
fn run_encoded<E: Entry>(mut bytes: &[u8], opened: &dyn Fn()) -> Outcome {
    match E::Arg::decode(&mut bytes) {
        Ok(arg) => {
            opened();
            run_entry::<E>(arg)
        }
        Err(e) => Outcome::Startup(format!("entry {}: bad argument: {e}", E::ID)),
    }
}

/// Runs an entry on its encoded argument; the callback is told when the
/// argument is decoded.
pub(crate) type Runner = fn(&[u8], &dyn Fn()) -> Outcome;

pub(crate) struct Registered {
    id: &'static str,
    run: Runner,
}

static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// The registry's lock, for `Process::start` to hold across `fork()` (so no
/// other thread holds it at that instant; see `Process::fork`).
pub(crate) fn registry_lock() -> std::sync::MutexGuard<'static, Vec<Registered>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Called by the constructor `entry!` generates. Not public API.
#[doc(hidden)]
pub fn __register<E: Entry>() {
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    if !reg.iter().any(|r| r.id == E::ID) {
        reg.push(Registered { id: E::ID, run: run_encoded::<E> });
    }
}

pub(crate) fn is_registered(id: &str) -> bool {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|r| r.id == id)
}

/// The runner registered for `id`, if any.
pub(crate) fn lookup(id: &str) -> Option<Runner> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|r| r.id == id).map(|r| r.run)
}

/// Defines a function that child processes can run, and registers it.
///
/// The function takes zero or one argument (use a tuple for more) of a
/// [`Handoff`] type and returns `()` or `Result<(), E: Display>`. The
/// argument is a name (`mut` allowed), `_`, or a tuple pattern that takes
/// the tuple apart: `fn f((lock, n): (Lock, u32))`. The macro
/// turns its name into a unit struct to pass to
/// [`Process::new`](crate::Process::new); call the body directly with
/// `name::call(arg)` (from the [`Entry`] trait). Define entries in the
/// binary (or test) crate that starts the processes.
///
/// `entry!(impl Run for MyType);` registers a [`Run`] type instead.
///
/// ```
/// use shmproc::Lock;
/// use shmproc::process::Entry;
///
/// shmproc::entry! {
///     fn count_to((lock, n): (Lock, u32)) -> Result<(), String> {
///         let _held = lock.lock().map_err(|e| e.to_string())?;
///         if n > 3 { Err(format!("{n} is too many")) } else { Ok(()) }
///     }
/// }
/// assert_eq!(count_to::call((Lock::new().unwrap(), 3)), Ok(()));
/// assert!(count_to::call((Lock::new().unwrap(), 4)).is_err());
/// ```
///
/// ```
/// use shmproc::{Process, Value};
/// use shmproc::process::Entry;
///
/// shmproc::entry! {
///     /// Adds `n` to the shared total.
///     fn add(args: (Value<u64>, u64)) -> Result<(), shmproc::LockError<()>> {
///         let (total, n) = args;
///         total.get_lock().map_err(|e| e.without_guard())?.update(|t| *t += n);
///         Ok(())
///     }
/// }
///
/// let total = Value::new(0u64).unwrap();
/// add::call((total.clone(), 2)).unwrap(); // run it here, directly
/// assert_eq!(total.get().unwrap(), 2);
/// let p = Process::new(add, (total.clone(), 40)); // or in a child process
/// assert_eq!(p.name(), "Process-1");
/// ```
#[macro_export]
macro_rules! entry {
    (impl Run for $t:ty) => {
        impl $crate::process::Entry for $t {
            const ID: &'static str = concat!(module_path!(), "::", stringify!($t), "@", file!(), ":", line!(), ":", column!());
            type Arg = $t;
            fn call(arg: $t) -> ::std::result::Result<(), ::std::string::String> {
                $crate::process::Run::run(arg)
            }
        }
        $crate::entry!(@register $t);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident () $(-> $ret:ty)? $body:block) => {
        $crate::entry! { $(#[$meta])* $vis fn $name(_unit: ()) $(-> $ret)? $body }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident (mut $arg:ident : $ty:ty $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::entry! { @define [$(#[$meta])*] [$vis] $name [mut $arg] [$ty] [$($ret)?] $body }
    };
    // One token tree: a name, `_`, or a tuple/slice pattern `(lock, n)`.
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($arg:tt : $ty:ty $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::entry! { @define [$(#[$meta])*] [$vis] $name [$arg] [$ty] [$($ret)?] $body }
    };
    (@define [$($meta:tt)*] [$vis:vis] $name:ident [$($pat:tt)+] [$ty:ty] [$($ret:ty)?] $body:block) => {
        $($meta)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis struct $name;

        impl $crate::process::Entry for $name {
            const ID: &'static str = concat!(module_path!(), "::", stringify!($name), "@", file!(), ":", line!(), ":", column!());
            type Arg = $ty;
            fn call($($pat)+: $ty) -> ::std::result::Result<(), ::std::string::String> {
                #[allow(unused_mut)]
                let mut body = move || -> $crate::entry!(@ret $($ret)?) { $body };
                $crate::process::ExitValue::into_result(body())
            }
        }
        $crate::entry!(@register $name);
    };
    (@ret) => { () };
    (@ret $ret:ty) => { $ret };
    (@register $t:ty) => {
        const _: () = {
            extern "C" fn register() {
                $crate::process::__register::<$t>();
            }
            // Runs before main, before the child dispatcher (which sits in
            // the unprioritised .init_array and so runs after this).
            #[used]
            #[unsafe(link_section = ".init_array.00500")]
            static REGISTER: extern "C" fn() = register;
        };
    };
}
