//! Role claiming for the SPSC-style rings (items and byte frames): one live
//! producer and one live consumer per ring, across all processes and
//! threads; a dead process's role is reclaimed, and each end watches
//! whether its peer has left or died.
//!
//! A role is an owner word (packed process start time | pid, 0 = free) and a
//! `gone` flag in the ring's control block. Claiming is a CAS from free (or
//! from a dead owner) to us; detaching sets `gone`, frees the owner word and
//! wakes a peer asleep on our index. The peer reads `gone` on every call and
//! checks the owner's liveness in `/proc` at most once per `POLL`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::error::RoleError;
use super::spsc::SpscCtl;
use crate::sys::thread;
use crate::wait::spin::POLL;

/// Which end of an SPSC-style ring (items or byte frames).
#[derive(Debug, Clone, Copy)]
pub(super) enum Role {
    Producer,
    Consumer,
}

impl SpscCtl {
    /// The role's owner slot, its `gone` flag, its own index and the
    /// peer's index.
    fn role_words(&self, role: Role) -> (&AtomicU64, &AtomicU32, &AtomicU64, &AtomicU64) {
        let m = &self.meta.0;
        match role {
            Role::Producer => (&m.producer, &m.producer_gone, &self.tail.0, &self.head.0),
            Role::Consumer => (&m.consumer, &m.consumer_gone, &self.head.0, &self.tail.0),
        }
    }

    /// The flag the peer of `role` sleeps on (`wake::sleep_on`).
    fn peer_flag(&self, role: Role) -> &AtomicU32 {
        match role {
            Role::Producer => &self.meta.0.consumer_waiting,
            Role::Consumer => &self.meta.0.producer_waiting,
        }
    }

    /// Takes `role` for this process (see [`claim`]); returns the role's
    /// own index and a first cached copy of the peer's.
    pub(super) fn attach(&self, role: Role) -> Result<(u64, u64), RoleError> {
        let (owner, gone, own, peer) = self.role_words(role);
        let name = match role {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        };
        claim(owner, gone, name)?;
        // Acquire: pairs with the peer's Release store of its index
        // (`ring::publish`), so what it published is visible.
        Ok((own.load(Ordering::Relaxed), peer.load(Ordering::Acquire)))
    }

    /// Gives `role` up (a handle's Drop): the peer sees it gone, the next
    /// claimant may take it, and a peer asleep on our index wakes to learn.
    pub(super) fn detach(&self, role: Role) {
        let (owner, gone, _, _) = self.role_words(role);
        // SeqCst: pairs with the peer's Acquire load of `gone` (PeerWatch)
        // and its re-check in sleep_on; ordered before the wake below.
        gone.store(1, Ordering::SeqCst);
        // Release: pairs with the next claimant's Acquire load/CAS in claim().
        owner.store(0, Ordering::Release);
        super::wake::wake_sleeper(self.peer_flag(role));
    }

    /// Hands `role` over to the process `owner` (its packed identity) before
    /// that process has touched the ring: from now on the role counts as
    /// attached to it, so if it dies before its first use the peer sees
    /// Disconnected. Only a free role, one of a dead process, or one handed
    /// over to this process and not claimed yet (a child handing the end it
    /// received on to its own child) is handed over; returns whether it
    /// was.
    pub(super) fn designate(&self, role: Role, owner: u64) -> bool {
        let (slot, gone, _, _) = self.role_words(role);
        // Acquire: pairs with the Release store of the previous holder's detach.
        let cur = slot.load(Ordering::Acquire);
        let mine_unclaimed = cur == thread::process_packed() | DESIGNATED;
        if cur != 0 && !mine_unclaimed && !thread::owner_is_dead(cur) {
            return false;
        }
        // Relaxed is enough: the receiver's claim() reads only this word;
        // the flag store below is SeqCst (pairs as in claim()).
        if slot.compare_exchange(cur, owner | DESIGNATED, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return false;
        }
        // SeqCst: as in claim(): the peer's Acquire load of `gone` sees the new holder present.
        gone.store(0, Ordering::SeqCst);
        true
    }

    /// Hands a free `role` (nobody holds it, nobody was handed it) over to
    /// this process, as [`designate`](Self::designate) would: a pipe end
    /// that reached this process through a queue or a pipe (its sender
    /// freed its roles, `undesignate`) counts as this process's from then
    /// on, so if it is dropped unused or this process dies before its
    /// first use, the peer learns it. A role held or handed to anyone is
    /// left alone.
    pub(super) fn designate_if_free(&self, role: Role) {
        let (slot, gone, _, _) = self.role_words(role);
        let me = thread::process_packed() | DESIGNATED;
        // Relaxed: as in `designate` (the receiver's claim() reads only this word; the flag store is SeqCst).
        if slot.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            // SeqCst: as in `designate`: the peer's Acquire load of `gone` sees the new holder present.
            gone.store(0, Ordering::SeqCst);
        }
    }

    /// Frees `role` if it is designated to this process and not claimed,
    /// without marking it gone: the end travels to a process not known
    /// yet (a pipe end sent through a queue), which claims it on first
    /// use. A claimed role is left alone. Whether it was freed here.
    pub(super) fn undesignate(&self, role: Role) -> bool {
        let (slot, _, _, _) = self.role_words(role);
        let me = thread::process_packed() | DESIGNATED;
        // Release: pairs with the next claimant's Acquire load/CAS in claim().
        slot.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed).is_ok()
    }

    /// Gives back `role` if it was handed over to this process and never
    /// claimed (the receiving handle is dropped unused): the peer sees it
    /// gone at once. A claimed role is left alone.
    pub(super) fn release_designation(&self, role: Role) {
        let (slot, gone, _, _) = self.role_words(role);
        let me = thread::process_packed() | DESIGNATED;
        // Release: pairs with the next claimant's Acquire load/CAS in claim().
        if slot.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed).is_ok() {
            // SeqCst: as in detach().
            gone.store(1, Ordering::SeqCst);
            super::wake::wake_sleeper(self.peer_flag(role));
        }
    }
}

/// Flag in a role slot: the role was handed over to the process named by
/// the rest of the word ([`SpscCtl::designate`]) and not claimed yet. Bit
/// 31 of the pid half is free (pids are < 2^22, see `thread::TID_MASK`),
/// so liveness checks read the word unchanged.
const DESIGNATED: u64 = 1 << 31;

/// Takes a role for a new handle of this process: free, handed over to
/// this process and not claimed yet, or held by a dead process
/// (reclaimed). Held by a live handle, ours included, it is refused: two
/// producers (or consumers) would write one slot and one index, and either
/// one's Drop would tell the peer the role is gone while the other still
/// uses it. `gone` is reset so the peer sees us as present.
pub(super) fn claim(slot: &AtomicU64, gone: &AtomicU32, role: &'static str) -> Result<(), RoleError> {
    let me = thread::process_packed();
    // Acquire: pairs with the Release store of the previous holder's detach.
    let mut cur = slot.load(Ordering::Acquire);
    loop {
        if cur != 0 && cur != me | DESIGNATED && (cur == me || !thread::owner_is_dead(cur)) {
            return Err(RoleError { role, pid: cur as u32 & thread::TID_MASK });
        }
        // Acquire: pairs with the Release store of the previous holder's
        // detach, so we see the index it left.
        match slot.compare_exchange(cur, me, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                // SeqCst: the peer's Acquire load of `gone` (PeerWatch) sees us present before our first index store.
                gone.store(0, Ordering::SeqCst);
                return Ok(());
            }
            Err(now) => cur = now,
        }
    }
}

/// Tracks whether a handle's peer has left or died. The `gone` flag is
/// read on every call; the liveness check reads `/proc`, so it runs at most
/// once per `POLL`, and even the clock is read only every 1024th call:
/// busy polling an empty queue stays cheap.
///
/// A death found in `/proc` is remembered in the handle (the owner word
/// judged dead), never written to the shared `gone` flag: between reading
/// the owner word and writing the flag, a new process may claim the role
/// and reset `gone`, and our late store would then report that live peer
/// gone to every handle until it detaches.
#[derive(Debug, Default)]
pub(super) struct PeerWatch {
    last_check: Option<Instant>,
    calls: u32,
    /// The owner word last judged dead (0: none).
    dead: u64,
}

impl PeerWatch {
    /// After a sleep: let the next call read the clock (and, if a poll
    /// period passed, check liveness) whatever the call count.
    pub(super) fn after_sleep(&mut self) {
        self.calls = 1023;
    }

    /// Whether the peer left or died. The common case (the `gone` flag
    /// clear, nobody judged dead, not the 1024th call) is inline; the
    /// clock and `/proc` are out of line.
    #[inline(always)]
    pub(super) fn gone(&mut self, owner_slot: &AtomicU64, gone: &AtomicU32) -> bool {
        // Acquire: pairs with the SeqCst store in the peer's detach.
        if gone.load(Ordering::Acquire) != 0 {
            return true;
        }
        self.calls = self.calls.wrapping_add(1);
        if self.dead == 0 && self.last_check.is_some() && !self.calls.is_multiple_of(1024) {
            return false;
        }
        self.check(owner_slot)
    }

    /// The rest of [`gone`](Self::gone): a peer judged dead before, or
    /// time for a liveness check.
    #[cold]
    #[inline(never)]
    fn check(&mut self, owner_slot: &AtomicU64) -> bool {
        if self.dead != 0 {
            // Still the owner we found dead: gone. A new owner (the role
            // was claimed since) is judged afresh.
            if owner_slot.load(Ordering::Relaxed) == self.dead {
                return true;
            }
            self.dead = 0;
        }
        if self.last_check.is_some() && !self.calls.is_multiple_of(1024) {
            return false;
        }
        let now = Instant::now();
        if self.last_check.is_some_and(|t| now.duration_since(t) < POLL) {
            return false;
        }
        self.last_check = Some(now);
        let owner = owner_slot.load(Ordering::Relaxed);
        if owner != 0 && thread::owner_is_dead(owner) {
            self.dead = owner;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed identity of a process that has exited and been reaped.
    fn dead_identity() -> u64 {
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        child.wait().expect("wait for true");
        (1u64 << 32) | u64::from(child.id())
    }

    /// A consumer's watcher that finds the producer role's owner dead while
    /// a new producer claims that role must not report the new, live
    /// producer gone. Before, the watcher stored `gone = 1` after its
    /// `/proc` check: when the claim (which resets `gone`) landed in
    /// between, the role stayed marked gone while its new owner pushed, and
    /// every consumer saw `Disconnected` (about a quarter of the rounds hit it on 2 cores).
    #[test]
    fn a_watcher_racing_a_reclaim_never_marks_the_new_owner_gone() {
        let ctl = super::super::spsc::new_ctl();
        let (owner, gone) = (&ctl.meta.0.producer, &ctl.meta.0.producer_gone);
        let dead = dead_identity();
        let mut marked = 0;
        let pause = |n: u32| (0..n).for_each(|_| std::hint::spin_loop());
        for round in 0..600u32 {
            owner.store(dead, Ordering::SeqCst);
            gone.store(0, Ordering::SeqCst);
            // Both sides spin to a common start, then one of them waits a
            // little longer (swept over a few microseconds, the length of a
            // /proc read), so some rounds land the claim inside the
            // watcher's check.
            let (ready, go) = (AtomicU32::new(0), AtomicU32::new(0));
            let (watcher_delay, claimer_delay) = if round % 2 == 0 { (round % 400, 0) } else { (0, round % 400) };
            std::thread::scope(|s| {
                s.spawn(|| {
                    ready.store(1, Ordering::SeqCst);
                    while go.load(Ordering::SeqCst) == 0 {
                        std::hint::spin_loop();
                    }
                    pause(watcher_delay);
                    let _ = PeerWatch::default().gone(owner, gone);
                });
                while ready.load(Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
                go.store(1, Ordering::SeqCst);
                pause(claimer_delay);
                claim(owner, gone, "producer").expect("the dead owner's role is reclaimed");
            });
            // The role is ours (a live owner): a fresh watcher must not see it gone.
            if PeerWatch::default().gone(owner, gone) {
                marked += 1;
            }
            owner.store(0, Ordering::SeqCst);
        }
        assert_eq!(marked, 0, "rounds in which a live, newly claimed role was reported gone");
    }
}
