//! Task functions: what a pool worker can run, registered by id.
//!
//! `task!` turns a function of one [`Handoff`] argument returning a
//! [`Handoff`] value (or `Result<value, E: Display>`) into a unit struct
//! implementing [`Task`], and registers it before `main` in a table of its
//! own (a constructor in `.init_array.00500`, as `entry!` does). A worker
//! finds the function by its id in that table, never by address; the
//! parent refuses to submit a task whose id is not registered
//! ([`PoolError::NotRegistered`](super::PoolError::NotRegistered)).

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;

use super::frame::{Items, pod_width};
use super::worker::{Cx, SharedArgs};
use crate::process::Handoff;

/// A function pool workers can run. Implemented by [`task!`](crate::task);
/// not meant to be implemented by hand.
///
/// ```
/// use shmproc::pool::Task;
/// shmproc::task! { fn shout(s: String) -> String { s.to_uppercase() } }
/// assert!(shout::ID.contains("::shout@")); // module::name@file:line:column
/// assert_eq!(shout::call("hi".into()), Ok("HI".to_string()));
/// ```
pub trait Task: 'static {
    /// Stable id: module path, name and the macro call's place
    /// (`file:line:column`), so two functions of the same name in one
    /// module (say, each inside its own function body) never share an
    /// id and a child never runs the other one.
    const ID: &'static str;
    /// The argument (use a tuple for several).
    type Arg: Handoff;
    /// The value returned to the parent.
    type Out: Handoff;
    /// Runs the function; `Err` carries the message the parent sees.
    fn call(arg: Self::Arg) -> Result<Self::Out, String>;
}

/// What a task function may return: a [`Handoff`] value, or
/// `Result<value, E: Display>` (an `Err` fails that item with the message).
///
/// ```
/// use shmproc::pool::TaskValue;
/// assert_eq!(5u8.into_result(), Ok(5));
/// assert_eq!(Err::<u8, _>("no").into_result(), Err("no".to_string()));
/// ```
pub trait TaskValue {
    /// The value that travels back.
    type Out: Handoff;
    /// `Err(message)` for a failure.
    fn into_result(self) -> Result<Self::Out, String>;
}

impl<T: Handoff> TaskValue for T {
    type Out = T;
    fn into_result(self) -> Result<T, String> {
        Ok(self)
    }
}

impl<T: Handoff, E: std::fmt::Display> TaskValue for Result<T, E> {
    type Out = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// How one item ended in the worker (the status byte of a result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Status {
    /// The value follows.
    Ok = 0,
    /// The function returned `Err`: its message follows.
    Failed = 1,
    /// The function panicked: the panic message follows.
    Panicked = 2,
    /// The argument did not decode, or the id is unknown in the worker:
    /// a message follows.
    Refused = 3,
    /// The value's encoding was larger than
    /// [`MAX_ITEM_BYTES`](super::MAX_ITEM_BYTES): its length follows (`u64`).
    TooLarge = 4,
}

impl Status {
    pub(crate) fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Failed,
            2 => Status::Panicked,
            3 => Status::Refused,
            4 => Status::TooLarge,
            _ => return None,
        })
    }
}

/// Runs one encoded item: decodes the argument from `arg`, calls the task
/// (catching a panic), appends the encoded value or the message to `out`.
pub(crate) type Runner = fn(arg: &[u8], out: &mut Vec<u8>) -> Status;

/// Runs the `count` items of a task frame in a worker (one call per frame:
/// the per-item loop is compiled for the task, see [`Cx::run_items`]).
pub(crate) type FrameRunner = fn(cx: &mut Cx<'_>, items: Items<'_>, count: u32) -> Result<(), String>;

/// Runs a packed task frame of plain data in place (its arguments still in
/// the task ring): `Ok(false)` if it cannot (see [`Cx::run_pod_shared`]).
pub(crate) type PodRunner = fn(cx: &mut Cx<'_>, args: SharedArgs, count: u32) -> Result<bool, String>;

/// A task's frame runners: the general one, and the in-place one for
/// packed frames of plain data.
pub(crate) type Runners = (FrameRunner, Option<PodRunner>);

/// One item, without catching a panic (the caller does).
#[inline]
fn run_one<T: Task>(mut arg: &[u8], out: &mut Vec<u8>) -> Status {
    let arg = match T::Arg::decode(&mut arg) {
        Ok(a) => a,
        Err(e) => return bad_argument(T::ID, e, out),
    };
    match T::call(arg) {
        Ok(v) => {
            v.encode(out);
            Status::Ok
        }
        Err(msg) => failed(msg, out),
    }
}

#[cold]
#[inline(never)]
fn bad_argument(id: &str, e: crate::process::HandoffError, out: &mut Vec<u8>) -> Status {
    out.extend_from_slice(format!("task {id}: bad argument: {e}").as_bytes());
    Status::Refused
}

#[cold]
#[inline(never)]
fn failed(msg: String, out: &mut Vec<u8>) -> Status {
    out.extend_from_slice(msg.as_bytes());
    Status::Failed
}

/// The message of a panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".into())
}

fn run_encoded<T: Task>(arg: &[u8], out: &mut Vec<u8>) -> Status {
    std::panic::catch_unwind(AssertUnwindSafe(|| run_one::<T>(arg, &mut *out))).unwrap_or_else(|payload| {
        out.extend_from_slice(panic_message(&*payload).as_bytes());
        crate::process::drop_payload(payload);
        Status::Panicked
    })
}

fn run_frame<T: Task>(cx: &mut Cx<'_>, items: Items<'_>, count: u32) -> Result<(), String> {
    cx.run_items(items, count, run_one::<T>)
}

/// `run_frame` for a task whose argument and value are plain data (see
/// `frame::pod_width`; chosen by `lookup_runners`): packed frames of
/// arguments of `T::Arg`'s width take the bulk path.
fn run_pod_frame<T: Task>(cx: &mut Cx<'_>, items: Items<'_>, count: u32) -> Result<(), String> {
    match items.packed() {
        Some((_, width)) if width == std::mem::size_of::<T::Arg>() => cx.run_pod(items, count, T::call),
        _ => run_frame::<T>(cx, items, count),
    }
}

/// The frame runner for `T`: the bulk one if its argument and value are
/// plain data.
fn pick_frame<T: Task>() -> FrameRunner {
    if pod_width::<T::Arg>().is_some() && pod_width::<T::Out>().is_some() { run_pod_frame::<T> } else { run_frame::<T> }
}

/// [`PodRunner`] for `T`.
fn run_pod_shared<T: Task>(cx: &mut Cx<'_>, args: SharedArgs, count: u32) -> Result<bool, String> {
    cx.run_pod_shared(args, count, T::call)
}

/// The in-place runner for `T`, if its argument and value are plain data.
fn pick_pod<T: Task>() -> Option<PodRunner> {
    (pod_width::<T::Arg>().is_some() && pod_width::<T::Out>().is_some()).then_some(run_pod_shared::<T> as PodRunner)
}

struct Registered {
    id: &'static str,
    run: Runner,
    frame: fn() -> FrameRunner,
    pod: fn() -> Option<PodRunner>,
    /// The task registered after this one.
    next: OnceLock<&'static Registered>,
}

/// The registered tasks: a list that only grows (before `main`, from the
/// `task!` constructors), read without a lock. A lock here was taken by
/// every submission in the parent; a worker forked (`StartMethod::Fork`)
/// while another thread held it inherited it held and hung forever at its
/// first look-up. `OnceLock::get` takes no lock.
static REGISTRY: OnceLock<&'static Registered> = OnceLock::new();

/// The registered tasks, in registration order.
fn registered() -> impl Iterator<Item = &'static Registered> {
    std::iter::successors(REGISTRY.get().copied(), |r| r.next.get().copied())
}

fn find(id: &[u8]) -> Option<&'static Registered> {
    registered().find(|r| r.id.as_bytes() == id)
}

/// Called by the constructor `task!` generates. Not public API.
#[doc(hidden)]
pub fn __register_task<T: Task>() {
    let mut slot = &REGISTRY;
    loop {
        match slot.get() {
            Some(r) if r.id == T::ID => return,
            Some(r) => slot = &r.next,
            None => {
                let new: &'static Registered = Box::leak(Box::new(Registered {
                    id: T::ID,
                    run: run_encoded::<T>,
                    frame: pick_frame::<T>,
                    pod: pick_pod::<T>,
                    next: OnceLock::new(),
                }));
                // Taken by a concurrent registration meanwhile (never,
                // before `main`): `new` stays unlisted, and the walk goes on.
                let _ = slot.set(new);
            }
        }
    }
}

/// The runner registered for `id`, if any.
pub(crate) fn lookup(id: &[u8]) -> Option<Runner> {
    find(id).map(|r| r.run)
}

/// The frame runners registered for `id`, if any: the general one and the
/// in-place one for packed frames of plain data.
pub(crate) fn lookup_runners(id: &[u8]) -> Option<Runners> {
    find(id).map(|r| ((r.frame)(), (r.pod)()))
}

/// Whether `id` is registered in this executable.
pub(crate) fn is_registered(id: &str) -> bool {
    lookup(id.as_bytes()).is_some()
}

/// Defines a function that [`Pool`](crate::Pool) workers can run, and
/// registers it.
///
/// The function takes one argument of a [`Handoff`] type (use a tuple for
/// more; a tuple pattern takes it apart: `fn add((a, b): (u64, u64))`) and
/// returns a [`Handoff`] value (or nothing: `()`), or `Result<value, E:
/// Display>` (an `Err` fails that item, with its message). The macro turns its name into a unit
/// struct to pass to the pool's methods; call the body directly with
/// `name::call(arg)` (from the [`Task`] trait). Define tasks in the binary
/// (or test) crate that creates the pool: workers find them by id.
///
/// ```
/// use shmproc::pool::Task;
///
/// shmproc::task! {
///     /// x squared.
///     fn square(x: u64) -> u64 { x * x }
/// }
/// shmproc::task! {
///     fn checked_div((a, b): (u32, u32)) -> Result<u32, String> {
///         a.checked_div(b).ok_or_else(|| format!("{a} / 0"))
///     }
/// }
/// shmproc::task! { fn hello(who: String) { println!("hello {who}") } }
/// assert_eq!(square::call(7), Ok(49));
/// assert_eq!(hello::call("ann".into()), Ok(()));
/// assert_eq!(checked_div::call((7, 2)), Ok(3));
/// assert_eq!(checked_div::call((7, 0)), Err("7 / 0".to_string()));
/// ```
#[macro_export]
macro_rules! task {
    // No return type: the function returns `()`.
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($($arg:tt)+) $body:block) => {
        $crate::task! { $(#[$meta])* $vis fn $name($($arg)+) -> () $body }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident (mut $arg:ident : $ty:ty $(,)?) -> $ret:ty $body:block) => {
        $crate::task! { @define [$(#[$meta])*] [$vis] $name [mut $arg] [$ty] [$ret] $body }
    };
    // One token tree: a name, `_`, or a tuple/slice pattern `(a, b)`.
    ($(#[$meta:meta])* $vis:vis fn $name:ident ($arg:tt : $ty:ty $(,)?) -> $ret:ty $body:block) => {
        $crate::task! { @define [$(#[$meta])*] [$vis] $name [$arg] [$ty] [$ret] $body }
    };
    (@define [$($meta:tt)*] [$vis:vis] $name:ident [$($pat:tt)+] [$ty:ty] [$ret:ty] $body:block) => {
        $($meta)*
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis struct $name;

        impl $crate::pool::Task for $name {
            const ID: &'static str = concat!(module_path!(), "::", stringify!($name), "@", file!(), ":", line!(), ":", column!());
            type Arg = $ty;
            type Out = <$ret as $crate::pool::TaskValue>::Out;
            fn call($($pat)+: $ty) -> ::std::result::Result<Self::Out, ::std::string::String> {
                #[allow(unused_mut)]
                let mut body = move || -> $ret { $body };
                $crate::pool::TaskValue::into_result(body())
            }
        }
        const _: () = {
            extern "C" fn register() {
                $crate::pool::__register_task::<$name>();
            }
            // Runs before main, before the child dispatcher (which sits in
            // the unprioritised .init_array and so runs after this).
            #[used]
            #[unsafe(link_section = ".init_array.00500")]
            static REGISTER: extern "C" fn() = register;
        };
    };
}
