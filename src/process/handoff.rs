//! `Handoff`: what a child process can be given as its argument.
//!
//! Values are encoded into bytes in the parent and decoded in the child
//! (also under `Fork`, so both start methods behave alike). Shared objects
//! travel by name and are re-opened (and validated) in the child. The
//! decoder treats its input as untrusted: every length is checked.

use std::cell::RefCell;

use bytemuck::Pod;

use crate::ShmType;

use crate::queue::ByteQueue;

/// Why an argument could not be decoded in the child.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// The encoded bytes ended early.
    #[error("argument bytes ended early while decoding {0}")]
    Truncated(&'static str),
    /// A value was out of range for its type.
    #[error("invalid encoded value for {0}")]
    Invalid(&'static str),
    /// A shared object named in the argument could not be opened.
    #[error("cannot open the {kind} {name:?} handed to this process: {reason}")]
    Open {
        /// Which handle type.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The open error.
        reason: String,
    },
}

/// A value a parent can hand to a child process: plain data, strings,
/// shmproc handles, and tuples / `Vec`s / `Option`s / arrays of these.
///
/// Handles are sent by name: the child re-opens the same object, so a
/// [`Lock`](crate::Lock) handed over is the very same lock.
///
/// ```
/// use shmproc::process::Handoff;
/// let arg = (7u32, String::from("seven"), vec![1.5f64, 2.5], Some(-1i8));
/// let mut bytes = Vec::new();
/// arg.encode(&mut bytes);
/// let back = <(u32, String, Vec<f64>, Option<i8>)>::decode(&mut &bytes[..]).unwrap();
/// assert_eq!(back, arg);
/// ```
pub trait Handoff: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it.
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError>;
}

/// A queue role that travels with a handle to the child it is handed to
/// (the directions of a pipe end): `Process::start` hands it over to the
/// child as soon as the child's pid is known, so it counts as attached to
/// the child from then on (the peer sees the child's death even if the
/// child never touched it).
pub(crate) struct Transfer {
    queue: ByteQueue,
    producer: bool,
}

impl Transfer {
    /// Hands the role to the process with packed identity `owner`.
    pub(crate) fn designate(&self, owner: u64) -> bool {
        self.queue.designate(self.producer, owner)
    }
}

thread_local! {
    /// Set while `Process::start` encodes an argument.
    static TRANSFERS: RefCell<Option<Vec<Transfer>>> = const { RefCell::new(None) };
}

/// Runs `encode` and returns the roles that the encoded handles carry.
pub(crate) fn collect_transfers(encode: impl FnOnce()) -> Vec<Transfer> {
    let outer = TRANSFERS.with(|t| t.borrow_mut().replace(Vec::new()));
    encode();
    TRANSFERS.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer)).unwrap_or_default()
}

/// Called by an encoding handle: `queue`'s sending (`producer`) or
/// receiving role goes with it. Outside `Process::start`, nothing happens.
pub(crate) fn note_transfer(queue: &ByteQueue, producer: bool) {
    TRANSFERS.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            v.push(Transfer { queue: queue.clone(), producer });
        }
    });
}

#[inline]
pub(crate) fn take<'a>(input: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], HandoffError> {
    if input.len() < n {
        return Err(HandoffError::Truncated(what));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn take_len(input: &mut &[u8], what: &'static str) -> Result<usize, HandoffError> {
    let n = u64::decode(input)?;
    // A length can never exceed the bytes left (each element takes >= 1
    // byte, except zero-sized ones, which we bound the same way).
    usize::try_from(n).ok().filter(|&n| n <= input.len().max(1 << 20)).ok_or(HandoffError::Invalid(what))
}

macro_rules! handoff_int {
    ($($t:ty),*) => {$(
        impl Handoff for $t {
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
                let b = take(input, std::mem::size_of::<$t>(), stringify!($t))?;
                Ok(<$t>::from_le_bytes(b.try_into().expect("length checked")))
            }
        }
    )*};
}
handoff_int!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

impl Handoff for usize {
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        usize::try_from(u64::decode(input)?).map_err(|_| HandoffError::Invalid("usize"))
    }
}

impl Handoff for isize {
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as i64).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        isize::try_from(i64::decode(input)?).map_err(|_| HandoffError::Invalid("isize"))
    }
}

impl Handoff for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self))
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        match u8::decode(input)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(HandoffError::Invalid("bool")),
        }
    }
}

impl Handoff for char {
    fn encode(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        char::from_u32(u32::decode(input)?).ok_or(HandoffError::Invalid("char"))
    }
}

impl Handoff for () {
    fn encode(&self, _: &mut Vec<u8>) {}
    fn decode(_: &mut &[u8]) -> Result<Self, HandoffError> {
        Ok(())
    }
}

impl Handoff for String {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let n = take_len(input, "String")?;
        let b = take(input, n, "String")?;
        String::from_utf8(b.to_vec()).map_err(|_| HandoffError::Invalid("String"))
    }
}

impl<T: Handoff> Handoff for Vec<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (self.len() as u64).encode(out);
        for x in self {
            x.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let n = take_len(input, "Vec")?;
        let mut v = Vec::with_capacity(n.min(input.len()));
        for _ in 0..n {
            v.push(T::decode(input)?);
        }
        Ok(v)
    }
}

impl<T: Handoff> Handoff for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(x) => {
                out.push(1);
                x.encode(out);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        match u8::decode(input)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(input)?)),
            _ => Err(HandoffError::Invalid("Option")),
        }
    }
}

impl<T: Handoff, const N: usize> Handoff for [T; N] {
    fn encode(&self, out: &mut Vec<u8>) {
        for x in self {
            x.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let mut v = Vec::with_capacity(N);
        for _ in 0..N {
            v.push(T::decode(input)?);
        }
        v.try_into().map_err(|_| HandoffError::Invalid("array"))
    }
}

macro_rules! handoff_tuple {
    ($($n:ident),+) => {
        impl<$($n: Handoff),+> Handoff for ($($n,)+) {
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($n,)+) = self;
                $($n.encode(out);)+
            }
            fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
                Ok(($($n::decode(input)?,)+))
            }
        }
    };
}
handoff_tuple!(A);
handoff_tuple!(A, B);
handoff_tuple!(A, B, C);
handoff_tuple!(A, B, C, D);
handoff_tuple!(A, B, C, D, E);
handoff_tuple!(A, B, C, D, E, F);
handoff_tuple!(A, B, C, D, E, F, G);
handoff_tuple!(A, B, C, D, E, F, G, H);

/// Wraps any `bytemuck::Pod` type (your own `#[repr(C)]` structs) so it
/// can be handed to a child as raw bytes.
///
/// ```
/// use shmproc::process::{Handoff, PodArg};
/// #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Point { x: f32, y: f32 }
/// let mut b = Vec::new();
/// PodArg(Point { x: 1.0, y: 2.0 }).encode(&mut b);
/// assert_eq!(PodArg::<Point>::decode(&mut &b[..]).unwrap().0, Point { x: 1.0, y: 2.0 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodArg<T>(pub T);

impl<T: Pod> Handoff for PodArg<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(bytemuck::bytes_of(&self.0));
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let b = take(input, std::mem::size_of::<T>(), "PodArg")?;
        Ok(PodArg(bytemuck::pod_read_unaligned(b)))
    }
}

/// Shared objects travel by name and are re-opened in the child.
macro_rules! handoff_handle {
    ($($t:ident $(<$g:ident>)?),*) => {$(
        impl$(<$g: $crate::ShmType>)? Handoff for crate::$t$(<$g>)? {
            fn encode(&self, out: &mut Vec<u8>) {
                self.name().to_owned().encode(out);
            }
            fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
                let name = String::decode(input)?;
                let h = Self::open(&name).map_err(|e| HandoffError::Open {
                    kind: stringify!($t),
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
                log::debug!(target: crate::process::LOG_TARGET, "opened {} {name}", stringify!($t));
                Ok(h)
            }
        }
    )*};
}
handoff_handle!(
    Lock,
    RLock,
    Semaphore,
    BoundedSemaphore,
    Event,
    Condition,
    Barrier,
    RawSegment,
    Mutex<T>,
    Value<T>,
    Array<T>
);

/// Queues live in a module of their own: same rule, by name.
macro_rules! handoff_queue {
    ($($t:ident),*) => {$(
        impl<T: ShmType> Handoff for crate::queue::$t<T> {
            fn encode(&self, out: &mut Vec<u8>) {
                self.name().to_owned().encode(out);
            }
            fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
                let name = String::decode(input)?;
                let h = Self::open(&name)
                    .map_err(|e| HandoffError::Open { kind: stringify!($t), name: name.clone(), reason: e.to_string() })?;
                log::debug!(target: crate::process::LOG_TARGET, "opened {} {name}", stringify!($t));
                Ok(h)
            }
        }
    )*};
}
handoff_queue!(SpscQueue, MpmcQueue, Queue, JoinableQueue, SimpleQueue);

impl Handoff for crate::queue::ByteQueue {
    fn encode(&self, out: &mut Vec<u8>) {
        self.name().to_owned().encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let name = String::decode(input)?;
        let h = Self::open(&name).map_err(|e| HandoffError::Open {
            kind: "ByteQueue",
            name: name.clone(),
            reason: e.to_string(),
        })?;
        log::debug!(target: crate::process::LOG_TARGET, "opened ByteQueue {name}");
        Ok(h)
    }
}

/// A pipe end travels as the names of its two directions. Its roles are
/// handed over to the child by `Process::start` (they count as the child's
/// from then on); the child claims them when it first sends or receives,
/// and gives them back if it drops the end unused.
impl Handoff for crate::Connection {
    fn encode(&self, out: &mut Vec<u8>) {
        self.names().encode(out);
        self.note_handed();
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let (send, recv) = <(Option<String>, Option<String>)>::decode(input)?;
        let name = format!("{send:?}/{recv:?}");
        let conn = Self::received(send, recv).map_err(|e| HandoffError::Open {
            kind: "Connection",
            name: name.clone(),
            reason: e.to_string(),
        })?;
        log::debug!(target: crate::process::LOG_TARGET, "opened Connection {name}");
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_invalid_inputs_are_errors() {
        let mut b = Vec::new();
        String::from("hello").encode(&mut b);
        assert!(String::decode(&mut &b[..b.len() - 1]).is_err());
        assert!(bool::decode(&mut &[7u8][..]).is_err());
        // A huge claimed length does not allocate or read out of bounds.
        let mut huge = Vec::new();
        u64::MAX.encode(&mut huge);
        assert!(Vec::<u8>::decode(&mut &huge[..]).is_err());
        assert!(char::decode(&mut &0xD800u32.to_le_bytes()[..]).is_err());
    }
}
