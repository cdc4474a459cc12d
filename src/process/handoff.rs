//! `Handoff`: what a child process can be given as its argument (the
//! trait and its plain-data impls are in `crate::handoff`; the impls for
//! shmproc's handles are here).
//!
//! Values are encoded into bytes in the parent and decoded in the child.
//! Shared objects travel by name and are re-opened (and validated) in the
//! child. The decoder treats its input as untrusted: every length is
//! checked. A child started with `Fork` uses the inherited values instead
//! (its argument is encoded only to learn what travels with it: the pipe
//! roles ([`Transfer`]) and the unbounded queues it must hold
//! ([`ForkHold`])).

use std::cell::RefCell;

use crate::ShmType;

pub use crate::handoff::{Handoff, HandoffError, PodArg};
use crate::queue::ByteQueue;

/// A queue role that travels with a handle to the child it is handed to
/// (the directions of a pipe end): `Process::start` hands it over to the
/// child as soon as the child's pid is known, so it counts as attached to
/// the child from then on (the peer sees the child's death even if the
/// child never touched it).
pub(crate) struct Transfer {
    queue: ByteQueue,
    producer: bool,
    /// [`release_transfers`] freed the role (it was designated to this
    /// process), for [`unrelease_transfers`] to take back.
    released: bool,
    /// Undoes what encoding the handle marked (a pipe end: "handed to a
    /// child"), for a start that made no child.
    undo: Option<Box<dyn FnOnce()>>,
}

impl Transfer {
    /// Hands the role to the process with packed identity `owner`.
    pub(crate) fn designate(&self, owner: u64) -> bool {
        self.queue.designate(self.producer, owner)
    }

    /// The start made no child: the handle is as if it had not been
    /// encoded (the role stays this process's, as it was).
    pub(crate) fn undo(self) {
        if let Some(undo) = self.undo {
            undo();
        }
    }
}

thread_local! {
    /// Set while `Process::start` encodes an argument.
    static TRANSFERS: RefCell<Option<Vec<Transfer>>> = const { RefCell::new(None) };
}

/// What a child forked with a handle in its argument runs before its
/// entry (an unbounded queue's: attach as a holder, see
/// `Chain::fork_hold`); the step it returns runs when the entry is done.
pub(crate) type ForkHold = Box<dyn FnOnce() -> Box<dyn FnOnce()>>;

thread_local! {
    /// Set while `Process::start` encodes an argument.
    static FORK_HOLDS: RefCell<Option<Vec<ForkHold>>> = const { RefCell::new(None) };
}

/// Runs `encode` and returns the fork steps of the encoded handles (see
/// [`ForkHold`]).
pub(crate) fn collect_fork_holds(encode: impl FnOnce()) -> Vec<ForkHold> {
    // A panic drops the steps unrun (they do nothing until run).
    collect_in(&FORK_HOLDS, encode, drop)
}

/// Runs `encode` with a fresh collection in `slot` (what the encoded
/// handles note there) and returns it, putting the outer collection back,
/// also when `encode` panics (a user `Handoff::encode`): a collection left
/// in place would take every later handle's note in this thread, never to
/// be settled. On such a panic what was collected goes to `unwound` (the
/// value was not sent: its handles must be as they were).
fn collect_in<T: 'static>(
    slot: &'static std::thread::LocalKey<RefCell<Option<Vec<T>>>>,
    encode: impl FnOnce(),
    unwound: fn(Vec<T>),
) -> Vec<T> {
    /// Puts the outer collection back on drop; during a panic, hands the
    /// inner one to `unwound`.
    struct Restore<T: 'static>(&'static std::thread::LocalKey<RefCell<Option<Vec<T>>>>, Option<Option<Vec<T>>>, fn(Vec<T>));
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            if let Some(outer) = self.1.take()
                && let Ok(inner) = self.0.try_with(|c| std::mem::replace(&mut *c.borrow_mut(), outer))
            {
                (self.2)(inner.unwrap_or_default());
            }
        }
    }
    let mut restore = Restore(slot, Some(slot.with(|c| c.borrow_mut().replace(Vec::new()))), unwound);
    encode();
    let outer = restore.1.take().expect("set above");
    slot.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer)).unwrap_or_default()
}

/// Called by an encoding handle that a forked child must hold (see
/// [`ForkHold`]): `make` runs only while `Process::start` collects.
pub(crate) fn note_fork_hold(make: impl FnOnce() -> ForkHold) {
    FORK_HOLDS.with(|h| {
        if let Some(v) = h.borrow_mut().as_mut() {
            v.push(make());
        }
    });
}

/// Runs `encode` and returns the roles that the encoded handles carry.
///
/// If `encode` panics (a user `Handoff::encode` after a handle in the same
/// value was encoded), the roles noted so far are undone, as for a start
/// or a send that did not happen: a pipe end left marked "handed to a
/// child" would, dropped unused, never tell its peer, which then waited
/// for ever.
pub(crate) fn collect_transfers(encode: impl FnOnce()) -> Vec<Transfer> {
    collect_in(&TRANSFERS, encode, |noted| settle_transfers(noted, false))
}

/// Runs `encode` for a value that is then sent somewhere other than a
/// child's start (a queue's put, a pipe's `send_value`): the roles that
/// the encoded handles carry are kept back, to be settled by
/// [`settle_transfers`] once the send's fate is known. A send can fail
/// (`Full`, `TimedOut`, `Closed`...) and hand the value back: its
/// handles must then be as they were before the encoding.
pub(crate) fn encode_deferred(encode: impl FnOnce()) -> Vec<Transfer> {
    collect_transfers(encode)
}

/// Settles the roles kept back by [`encode_deferred`]: if the value was
/// `sent`, a role still designated to this process is freed unclaimed,
/// for the receiver to claim on first use (as `note_transfer` does
/// outside `Process::start`); if not, each handle is as if it had not
/// been encoded (its role stays this process's).
pub(crate) fn settle_transfers(transfers: Vec<Transfer>, sent: bool) {
    for t in transfers {
        if sent {
            let _ = t.queue.undesignate(t.producer);
        } else {
            t.undo();
        }
    }
}

/// How many roles the collection in progress holds (0 outside one): a
/// mark for [`undo_noted_since`].
pub(crate) fn noted() -> usize {
    TRANSFERS.with(|t| t.borrow().as_ref().map_or(0, Vec::len))
}

/// Undoes the roles the collection in progress noted past `mark` (from
/// [`noted`]): the value encoded since was not sent after all (a pool
/// argument refused as too large), so its handles are as they were.
pub(crate) fn undo_noted_since(mark: usize) {
    let late = TRANSFERS.with(|t| t.borrow_mut().as_mut().map(|v| v.split_off(mark.min(v.len()))));
    settle_transfers(late.unwrap_or_default(), false);
}

/// Roles kept back by an encoding ([`encode_deferred`]) until the fate of
/// the value's send is known: [`sent`](Self::sent) lets them go with it;
/// dropped unsent (a refusal, an early return), the handles are as they
/// were before the encoding.
pub(crate) struct Deferred(Vec<Transfer>, bool);

impl Deferred {
    /// Runs `encode`, keeping back the roles the encoded handles carry.
    pub(crate) fn encode(encode: impl FnOnce()) -> Self {
        Deferred(encode_deferred(encode), false)
    }

    /// Lets the roles go now, just before the send (see
    /// [`release_transfers`]); dropped unsent after all, they come back.
    pub(crate) fn release(&mut self) {
        release_transfers(&mut self.0);
        self.1 = true;
    }

    /// The value was sent: its handles' roles go with it.
    pub(crate) fn sent(mut self) {
        settle_transfers(std::mem::take(&mut self.0), true);
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let transfers = std::mem::take(&mut self.0);
        if self.1 {
            unrelease_transfers(&transfers);
        }
        settle_transfers(transfers, false);
    }
}

/// Settles roles that [`release_transfers`] let go before the send: a
/// send that failed takes them back first (as [`Deferred`]'s drop does).
pub(crate) fn settle_released(transfers: Vec<Transfer>, sent: bool) {
    if !sent {
        unrelease_transfers(&transfers);
    }
    settle_transfers(transfers, sent);
}

/// Lets the roles kept back by [`encode_deferred`] go now, just before
/// the send whose fate is not known yet: a role still designated to this
/// process is freed, for the receiver to claim. (Settled only after the
/// send, a receiver that decoded the value at once found the role still
/// this process's and did not take it over: an end it then dropped unused
/// never told its peer, which waited for ever.) If the send fails,
/// [`unrelease_transfers`] takes them back before they are settled unsent.
pub(crate) fn release_transfers(transfers: &mut [Transfer]) {
    for t in transfers {
        t.released = t.queue.undesignate(t.producer);
    }
}

/// Takes back the roles [`release_transfers`] freed, for a send that
/// failed (nobody received the value): each is designated to this process
/// again if still free, as before the encoding.
pub(crate) fn unrelease_transfers(transfers: &[Transfer]) {
    for t in transfers.iter().filter(|t| t.released) {
        t.queue.designate_if_free(t.producer);
    }
}

/// Called by an encoding handle: `queue`'s sending (`producer`) or
/// receiving role goes with it. Outside `Process::start` (the end is sent
/// through a queue, a pipe, a pool task...), the receiver is not known:
/// a role still designated to this process (a new pipe's) is freed
/// unclaimed, for the receiver to claim on first use.
/// `undo` reverses what the handle marked when it was encoded, should
/// `Process::start` make no child (see [`Transfer::undo`]).
pub(crate) fn note_transfer(queue: &ByteQueue, producer: bool, undo: Option<Box<dyn FnOnce()>>) {
    TRANSFERS.with(|t| {
        if let Some(v) = t.borrow_mut().as_mut() {
            v.push(Transfer { queue: queue.clone(), producer, released: false, undo });
        } else {
            let _ = queue.undesignate(producer);
        }
    });
}

/// Shared objects travel by name and are re-opened in the child.
/// The trust a handle was opened with (other owners and groups, and the
/// mode that bounds how writable their segment may be), for the child to
/// open it alike: a handle the parent opened with
/// `Options::trust_owner`/`trust_group` works in the child too.
fn encode_trust(trust: Option<&crate::Options>, out: &mut Vec<u8>) {
    trust.map(|o| (o.trusted_owners.clone(), o.trusted_groups.clone(), o.mode)).encode(out);
}

/// The options to open a handed-over handle with (see [`encode_trust`]).
fn decode_trust(input: &mut &[u8]) -> Result<crate::Options, HandoffError> {
    let mut opts = crate::Options::new();
    if let Some((owners, groups, mode)) = <Option<(Vec<u32>, Vec<u32>, u32)>>::decode(input)? {
        opts = opts.mode(mode);
        opts.trusted_owners = owners;
        opts.trusted_groups = groups;
    }
    Ok(opts)
}

macro_rules! handoff_handle {
    ($($t:ident $(<$g:ident>)?),*) => {$(
        impl$(<$g: $crate::ShmType>)? Handoff for crate::$t$(<$g>)? {
            fn encode(&self, out: &mut Vec<u8>) {
                self.name().to_owned().encode(out);
                encode_trust(self.trust(), out);
            }
            fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
                let name = String::decode(input)?;
                let opts = decode_trust(input)?;
                let h = Self::open_with(&name, &opts).map_err(|e| HandoffError::Open {
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

/// Queues live in a module of their own: same rule, by name. The rings
/// carry plain data; the Python-shaped queues any `Handoff` item, and an
/// unbounded one gives a forked child its holder step ([`ForkHold`]):
/// `after` runs on the handle (`q`) once its name is encoded.
macro_rules! handoff_queue {
    ($bound:path, |$q:ident| $after:block: $($t:ident),*) => {$(
        impl<T: $bound> Handoff for crate::queue::$t<T> {
            fn encode(&self, out: &mut Vec<u8>) {
                self.name().to_owned().encode(out);
                let $q = self;
                $after
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
handoff_queue!(ShmType, |_q| {}: SpscQueue, MpmcQueue);
handoff_queue!(Handoff, |q| { q.__note_fork_hold(); }: Queue, JoinableQueue, SimpleQueue);

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
