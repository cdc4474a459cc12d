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
    pub(crate) fresh: BTreeMap<u64, (u64, u64)>,
    /// Operations run so far.
    pub(crate) ops: u64,
    /// Set when the group cannot commit (its log filled, or an undone
    /// operation had written to space an earlier one allocated): the whole
    /// group is rolled back at its end and this is returned.
    pub(crate) doomed: Option<ContainerError>,
}

enum Open {
    /// An operation in progress on container `id`.
    Op(u64),
    /// A group on container `id`; `None` while one of its operations runs
    /// (the operation holds the state).
    Group(u64, Option<Box<Group>>),
}

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
        for e in open.iter_mut().rev() {
            match e {
                Open::Op(x) if *x == id => return Nested::Refuse,
                Open::Group(x, g) if *x == id => return g.take().map_or(Nested::Refuse, Nested::Join),
                _ => {}
            }
        }
        Nested::Refuse
    })
}

/// Gives a group's state back after one of its operations.
pub(crate) fn give_back(id: u64, g: Box<Group>) {
    OPEN.with_borrow_mut(|open| {
        if let Some(Open::Group(_, slot)) =
            open.iter_mut().rev().find(|e| matches!(e, Open::Group(x, None) if *x == id))
        {
            *slot = Some(g);
        }
    })
}

pub(crate) fn push_op(id: u64) {
    OPEN.with_borrow_mut(|open| open.push(Open::Op(id)));
}

pub(crate) fn pop_op(id: u64) {
    OPEN.with_borrow_mut(|open| {
        if let Some(i) = open.iter().rposition(|e| matches!(e, Open::Op(x) if *x == id)) {
            open.remove(i);
        }
    })
}

pub(crate) fn push_group(id: u64, g: Group) {
    OPEN.with_borrow_mut(|open| open.push(Open::Group(id, Some(Box::new(g)))));
}

/// Ends the innermost group on `id`; its state (None if an operation of
/// it still holds it, which a panic unwinding through it can leave).
pub(crate) fn pop_group(id: u64) -> Option<Box<Group>> {
    OPEN.with_borrow_mut(|open| {
        let i = open.iter().rposition(|e| matches!(e, Open::Group(x, _) if *x == id))?;
        match open.remove(i) {
            Open::Group(_, g) => g,
            Open::Op(_) => None,
        }
    })
}
