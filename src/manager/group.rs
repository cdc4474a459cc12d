//! What this thread has open on each container: a group (`with_lock`,
//! `DictProxy::update`) or an operation (whose callbacks run user code).
//!
//! The container lock is reentrant for its owner thread, so an operation
//! started while this thread already holds the lock is either part of an
//! open group (it joins the group's transaction: one undo log, one odd
//! `seq`, one commit) or was started from user code that an open
//! operation runs (`update_with`'s closure, a `sort_by_key` key, ...):
//! that one is refused with [`ContainerError::ModifiedDuringOperation`]
//! (Python's "list modified during sort"), because the outer operation
//! would overwrite it from the state it already read.
//!
//! Containers are told apart by a hash of their segment name, so two
//! handles of one container (two mappings) share their entries.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::ContainerError;

/// A group transaction's state between its operations.
#[derive(Debug, Default)]
pub(crate) struct Group {
    /// The odd `seq` value while the group is open (moves forward by 2
    /// when an operation of the group is undone on its own).
    pub(crate) seq: u64,
    /// State words already in the log.
    pub(crate) logged: u64,
    /// Blocks freed by the group (put on the free lists at its commit).
    pub(crate) freed: Vec<u64>,
    /// Payload ranges of blocks the group allocated: start -> (end,
    /// number of the operation that allocated it).
    pub(crate) fresh: Fresh,
    /// Operations run so far.
    pub(crate) ops: u64,
    /// The state words when the running operation started (restored if
    /// it is undone on its own: a word an earlier operation of the group
    /// logged is not logged again, so the log alone cannot restore it).
    pub(crate) snap: Vec<u64>,
    /// The lowest number of an operation whose fresh block a later
    /// operation wrote unlogged (`u64::MAX`: none) since the innermost
    /// savepoint (a nested group) began.
    pub(crate) fresh_low: u64,
    /// Set when the group cannot commit (its log filled, or an undone
    /// operation had written to space an earlier one allocated): the whole
    /// group is rolled back at its end and this is returned.
    pub(crate) doomed: Option<ContainerError>,
    /// The heap top when the group began (see `Txn::above_start_top`).
    pub(crate) top0: u64,
}

/// A group open on container `id`; `None` while one of its operations
/// runs (the operation holds the state).
///
/// Plain operations are not recorded: one holds the container's lock, so
/// a write started under it (from user code the operation calls back)
/// finds the lock its own and either no group on `id` (refused) or the
/// innermost group on `id` with its state taken by the running operation
/// (refused too). A group cannot be opened on `id` below an operation on
/// `id`: opening one while the lock is this thread's own only runs the
/// closure. So the stack holds groups only, and an operation costs
/// nothing here.
struct Open(u64, Option<Box<Group>>);

thread_local! {
    static OPEN: RefCell<Vec<Open>> = const { RefCell::new(Vec::new()) };
}

/// What a write started while this thread holds the lock may do.
pub(crate) enum Nested {
    /// Join this group.
    Join(Box<Group>),
    /// Refuse: an operation (or a group whose operation runs) is open.
    Refuse,
}

/// Called when this thread already holds container `id`'s lock.
pub(crate) fn nested_write(id: u64) -> Nested {
    OPEN.with_borrow_mut(|open| {
        match open.iter_mut().rev().find(|e| e.0 == id) {
            Some(Open(_, g)) => g.take().map_or(Nested::Refuse, Nested::Join),
            None => Nested::Refuse,
        }
    })
}

/// Gives a group's state back after one of its operations.
pub(crate) fn give_back(id: u64, g: Box<Group>) {
    OPEN.with_borrow_mut(|open| {
        if let Some(Open(_, slot)) = open.iter_mut().rev().find(|e| e.0 == id && e.1.is_none()) {
            *slot = Some(g);
        }
    })
}

pub(crate) fn push_group(id: u64, g: Group) {
    OPEN.with_borrow_mut(|open| open.push(Open(id, Some(Box::new(g)))));
}

/// Runs `f` on the state of the innermost group on `id`, if one is open
/// and no operation of it holds its state (None otherwise: no group, or
/// this thread is inside an operation).
pub(crate) fn with_group<T>(id: u64, f: impl FnOnce(&mut Group) -> T) -> Option<T> {
    OPEN.with_borrow_mut(|open| match open.iter_mut().rev().find(|e| e.0 == id) {
        Some(Open(_, Some(g))) => Some(f(g)),
        _ => None,
    })
}

/// Ends the innermost group on `id`; its state (None if an operation of
/// it still holds it, which a panic unwinding through it can leave).
pub(crate) fn pop_group(id: u64) -> Option<Box<Group>> {
    OPEN.with_borrow_mut(|open| {
        let i = open.iter().rposition(|e| e.0 == id)?;
        open.remove(i).1
    })
}

/// Payload ranges of blocks a transaction (its group) allocated: start ->
/// (end, number of the operation that allocated it). The first few are
/// kept inline (an operation rarely allocates more than one or two blocks,
/// and a map node would cost an allocation per operation), the rest in a
/// map. The ranges never overlap (distinct blocks; a freed block is not
/// handed out again before the commit).
#[derive(Debug, Default)]
pub(crate) struct Fresh {
    small: [(u64, (u64, u64)); SMALL],
    n: usize,
    big: Option<BTreeMap<u64, (u64, u64)>>,
}

const SMALL: usize = 4;

impl Fresh {
    /// Records the block with payload `p..end`, allocated by operation `op`.
    #[inline]
    pub(crate) fn insert(&mut self, p: u64, end: u64, op: u64) {
        if let Some(e) = self.get_mut(p) {
            *e = (end, op);
        } else if self.n < SMALL {
            self.small[self.n] = (p, (end, op));
            self.n += 1;
        } else {
            self.big.get_or_insert_default().insert(p, (end, op));
        }
    }

    /// The record of the block whose payload starts at `p`.
    #[inline]
    pub(crate) fn get_mut(&mut self, p: u64) -> Option<&mut (u64, u64)> {
        match self.small[..self.n].iter_mut().find(|e| e.0 == p) {
            Some(e) => Some(&mut e.1),
            None => self.big.as_mut()?.get_mut(&p),
        }
    }

    /// The operation that allocated the block holding all of `off..end`.
    #[inline]
    pub(crate) fn containing(&self, off: u64, end: u64) -> Option<u64> {
        if let Some(e) = self.small[..self.n].iter().find(|e| e.0 <= off && end <= e.1.0) {
            return Some(e.1.1);
        }
        match self.big.as_ref()?.range(..=off).next_back() {
            Some((_, &(e, op))) if end <= e => Some(op),
            _ => None,
        }
    }

    /// Forgets the blocks operations after `op` allocated.
    pub(crate) fn forget_after(&mut self, op: u64) {
        let mut k = 0;
        for i in 0..self.n {
            if self.small[i].1.1 <= op {
                self.small[k] = self.small[i];
                k += 1;
            }
        }
        self.n = k;
        if let Some(big) = &mut self.big {
            big.retain(|_, (_, o)| *o <= op);
        }
    }
}
