//! The in-segment heap: segregated free lists of power-of-two blocks
//! (`32 << class` bytes, the classic binary size-class allocator), carved
//! from a bump top that grows the segment when it runs out. Offsets only.
//!
//! ```text
//! block:  [MAGIC | class : u64][next free block : u64][payload ...]
//! blob:   payload = [len : u64][len bytes]
//! ```
//! Every change goes through the transaction: the free-list heads, the
//! mask of the non-empty lists (an allocation's one load to find a list)
//! and the top are state words (logged), and a block handed out is
//! written without logging (no committed state reaches it). The `next`
//! word of a block being freed is logged only if the block was allocated
//! in the same transaction below the heap top of its start (it came off a
//! free list that a rollback restores, link and all; a block carved from
//! the top was on no list); the `next` word of a block that was
//! live before is read by nobody (only free blocks' links are), so it is
//! written unlogged, and freeing many blocks costs no log. The header of
//! a free block handed out (split or not) is written unlogged as well: a
//! free block's class is the class of the list it is on, never read from
//! its header, so a rollback needs only the list heads. So a crash
//! mid-allocation or mid-free rolls back to the exact free lists of
//! before, and allocations cost no log however many blocks they split.
//!
//! Offsets read from shared memory are checked before use: inside the
//! heap, on a block boundary, with a valid header, ending inside the
//! mapping; a bad one is an error or garbage, never an access outside.

use super::store::{Fail, HEAP_START, NCLASS, R, S_FREE, S_FREE_MASK, S_TOP, STATE_WORDS, Txn, View};

/// High bits of a block header word ("BLK").
const BLOCK_MAGIC: u64 = 0x424C_4B00_0000_0000;
const MAGIC_MASK: u64 = 0xFFFF_FF00_0000_0000;
/// Bytes before a block's payload.
pub(crate) const BLOCK_HDR: u64 = 16;

/// Total bytes of a block of class `c`.
pub(crate) fn block_size(c: usize) -> u64 {
    32u64 << c
}

/// The smallest class whose payload holds `payload` bytes.
#[inline]
fn class_for(payload: u64) -> Option<usize> {
    let total = payload.checked_add(BLOCK_HDR)?;
    // ceil(log2(total)) - 5, at least 0: the first class whose 32 << c bytes hold `total`.
    let c = (total.max(32).checked_next_power_of_two()?.trailing_zeros() as usize).saturating_sub(5);
    (c < NCLASS && block_size(c) >= total).then_some(c)
}

/// Checks the block whose payload is at `p` and returns (class, payload
/// capacity).
#[inline]
pub(crate) fn block(v: &View, p: u64) -> R<(usize, u64)> {
    let b = p.checked_sub(BLOCK_HDR).ok_or(Fail::Torn("block offset"))?;
    if b < HEAP_START || !(b - HEAP_START).is_multiple_of(32) {
        return Err(Fail::Torn("block offset"));
    }
    let h = v.u64(b)?;
    let c = (h & !MAGIC_MASK) as usize;
    if h & MAGIC_MASK != BLOCK_MAGIC || c >= NCLASS {
        return Err(Fail::Torn("block header"));
    }
    let size = block_size(c);
    if b.checked_add(size).is_none_or(|end| end > v.len()) {
        return Err(Fail::Torn("block past the mapping"));
    }
    Ok((c, size - BLOCK_HDR))
}

/// Reads the blob at `p`.
#[inline]
pub(crate) fn read_blob(v: &View, p: u64) -> R<Vec<u8>> {
    let (_, cap) = block(v, p)?;
    let len = v.u64(p)?;
    if len > cap - 8 {
        return Err(Fail::Torn("blob length"));
    }
    v.vec(p + 8, len)
}

/// `read_blob` for a read of many elements: the blob's length counts
/// against `budget`, which starts at the mapping's length. Distinct blobs
/// are distinct blocks inside the mapping, so they never add up to more;
/// more means slots naming one blob many times (a hostile peer's), and
/// copying it again and again could ask for any amount of memory: an
/// error instead.
#[inline]
pub(crate) fn read_blob_counted(v: &View, p: u64, budget: &mut u64) -> R<Vec<u8>> {
    let (_, cap) = block(v, p)?;
    let len = v.u64(p)?;
    if len > cap - 8 {
        return Err(Fail::Torn("blob length"));
    }
    *budget = budget.checked_sub(len).ok_or(Fail::Torn("elements adding up to more than the segment"))?;
    v.vec(p + 8, len)
}

/// Whether the blob at `p` holds exactly `bytes`.
#[inline]
pub(crate) fn blob_eq(v: &View, p: u64, bytes: &[u8]) -> R<bool> {
    let (_, cap) = block(v, p)?;
    let len = v.u64(p)?;
    if len > cap - 8 {
        return Err(Fail::Torn("blob length"));
    }
    if len != bytes.len() as u64 {
        return Ok(false);
    }
    v.bytes_eq(p + 8, bytes)
}

/// `blob_eq` for an optimistic reader (`DictProxy::get`'s first try):
/// the blob's length word and bytes compared through bounds-checked reads
/// only, its block header not checked (a read needs nothing more to stay
/// inside the mapping; a hostile or torn offset gives a wrong answer, which
/// the reader's seq check or its full path settles, as for any read).
#[inline]
pub(crate) fn blob_eq_lean(v: &View, p: u64, bytes: &[u8]) -> R<bool> {
    if v.u64(p)? != bytes.len() as u64 {
        return Ok(false);
    }
    match v.bytes_eq_words(p + 8, bytes) {
        Some(eq) => Ok(eq),
        None => v.bytes_eq(p + 8, bytes),
    }
}

impl Txn<'_> {
    /// A block with at least `payload` bytes; returns the payload offset.
    pub(crate) fn alloc(&mut self, payload: u64) -> R<u64> {
        let c = class_for(payload).ok_or(Fail::Err(super::ContainerError::TooLarge {
            what: "one allocation",
            limit: block_size(NCLASS - 1) - BLOCK_HDR,
        }))?;
        // The smallest free block of class c or larger: the mask's lowest bit from c whose list is not empty
        // (a mask bit without a list is skipped; a list without its bit is only not reused: a hostile mask
        // costs space, never a wrong block).
        if let Some(big) = self.free_class_from(c) {
            let head = self.pop_free(big)?;
            self.split(head, big, c)?;
            self.note_fresh(head + BLOCK_HDR, head + block_size(c));
            return Ok(head + BLOCK_HDR);
        }
        let b = self.state(S_TOP);
        // The top never passes the mapped length (a hostile one would make us reserve absurd room).
        if b < HEAP_START || b > self.view().len() || !(b - HEAP_START).is_multiple_of(32) {
            return Err(Fail::Torn("heap top"));
        }
        let end = b.checked_add(block_size(c)).ok_or(Fail::Torn("heap top"))?;
        self.grow(end)?;
        self.set_state(S_TOP, end)?;
        let mut hdr = [0u8; 16];
        hdr[..8].copy_from_slice(&(BLOCK_MAGIC | c as u64).to_ne_bytes());
        self.write_fresh(b, &hdr)?;
        self.note_fresh(b + BLOCK_HDR, end);
        Ok(b + BLOCK_HDR)
    }

    /// The smallest class from `c` whose free list is not empty, by the
    /// free-list mask.
    #[inline]
    fn free_class_from(&self, c: usize) -> Option<usize> {
        let mut m = self.state(S_FREE_MASK) & (u64::MAX << c) & ((1u64 << NCLASS) - 1);
        while m != 0 {
            let k = m.trailing_zeros() as usize;
            if self.state(S_FREE + k) != 0 {
                return Some(k);
            }
            m &= m - 1;
        }
        None
    }

    /// Sets the free-list head of class `c` and its mask bit.
    #[inline]
    fn set_free_head(&mut self, c: usize, head: u64) -> R<()> {
        self.set_state(S_FREE + c, head)?;
        let m = self.state(S_FREE_MASK);
        let want = if head != 0 { m | 1 << c } else { m & !(1 << c) };
        if want != m {
            self.set_state(S_FREE_MASK, want)?;
        }
        Ok(())
    }

    /// Takes the first block off the free list of class `c` (validated);
    /// returns its offset.
    ///
    /// The list, not the block's header, says the class: a free block's
    /// header is rewritten unlogged when it is handed out (`split`), so
    /// after a rollback a block back on its list may carry the class it
    /// was split to. The block is checked to lie on a block boundary in
    /// the heap, below the top and inside the mapping.
    fn pop_free(&mut self, c: usize) -> R<u64> {
        let head = self.state(S_FREE + c);
        let top = self.state(S_TOP);
        let inside = head >= HEAP_START
            && (head - HEAP_START).is_multiple_of(32)
            && head.checked_add(block_size(c)).is_some_and(|end| end <= top && end <= self.view().len());
        if !inside {
            return Err(Fail::Torn("free list"));
        }
        let next = self.view().u64(head + 8)?;
        if next != 0 && (next < HEAP_START || next >= top) {
            return Err(Fail::Torn("free list"));
        }
        self.set_free_head(c, next)?;
        Ok(head)
    }

    /// Splits the free block at `b` of class `big` (already off its list)
    /// into a block of class `c` at `b`, and one free block of each class
    /// `c..big` after it (the binary buddy split; none when `big == c`).
    /// The pieces lie in the old block's payload, which no committed state
    /// reaches, so their headers are written unlogged; the list heads are
    /// logged. The header at `b` is written unlogged too: before this
    /// transaction the block was free, and a free block's header is read
    /// by nobody (`pop_free` takes the class from its list), so a rollback
    /// needs only the list heads back. (Logged, each split cost a log
    /// entry: an `extend` of a few thousand short strings into the space of
    /// a removed large one filled the undo log.)
    fn split(&mut self, b: u64, big: usize, c: usize) -> R<()> {
        for k in c..big {
            let piece = b + block_size(k);
            let mut hdr = [0u8; 16];
            hdr[..8].copy_from_slice(&(BLOCK_MAGIC | k as u64).to_ne_bytes());
            hdr[8..].copy_from_slice(&self.state(S_FREE + k).to_ne_bytes());
            self.write_fresh(piece, &hdr)?;
            self.set_free_head(k, piece)?;
        }
        self.write_fresh(b, &(BLOCK_MAGIC | c as u64).to_ne_bytes())
    }

    /// Frees the block at payload offset `p` when the operation commits.
    ///
    /// Deferred: a block freed now and handed out again by an allocation
    /// later in the same operation would be written without logging while
    /// the state before the operation still reaches it; a rollback would
    /// then bring back a live block with overwritten bytes.
    pub(crate) fn free(&mut self, p: u64) -> R<()> {
        let (c, _) = block(self.view(), p)?;
        let b = p - BLOCK_HDR;
        if b + block_size(c) > self.state(S_TOP) {
            return Err(Fail::Torn("freed block past the heap top"));
        }
        self.defer_free(p);
        Ok(())
    }

    /// Puts the blocks freed by this operation on their free lists (the
    /// last step before the commit store; no allocation follows).
    #[inline]
    pub(crate) fn flush_frees(&mut self) -> R<()> {
        if !self.has_deferred() {
            return Ok(());
        }
        self.flush_frees_slow()
    }

    fn flush_frees_slow(&mut self) -> R<()> {
        let mut ps = self.take_deferred();
        ps.sort_unstable();
        ps.dedup();
        for p in ps {
            // Checked again: an allocation after the free may have moved the top (a reset).
            let (c, _) = block(self.view(), p)?;
            let b = p - BLOCK_HDR;
            if b + block_size(c) > self.state(S_TOP) {
                continue;
            }
            let head = self.state(S_FREE + c);
            if self.allocated_here(p) && !self.above_start_top(b) {
                // Taken off a free list in this transaction: a rollback puts it back there, link and all. A link
                // that already is `head` stays as it is (no write, no log): blocks taken off a list and given
                // back in the same transaction mostly go back in the order they came off (frees in ascending
                // offsets; a list handed out from its highest block), each onto the block that followed it.
                if self.view().u64(b + 8)? != head {
                    self.write_u64(b + 8, head)?;
                }
            } else {
                // Live before this transaction: its link is read by nobody until it is on a list, and a rollback
                // (the heads restored) makes it live again. Or carved from the heap top in this transaction: on
                // no list before it, and past the top a rollback restores.
                self.write_fresh(b + 8, &head.to_ne_bytes())?;
            }
            self.set_free_head(c, b)?;
        }
        Ok(())
    }

    /// Grows the block at `p` in place to hold `payload` bytes if it is the
    /// last block of the heap; returns whether it did.
    pub(crate) fn grow_in_place(&mut self, p: u64, payload: u64) -> R<bool> {
        let (c, cap) = block(self.view(), p)?;
        if cap >= payload {
            return Ok(true);
        }
        let b = p - BLOCK_HDR;
        if b + block_size(c) != self.state(S_TOP) {
            return Ok(false);
        }
        let Some(c2) = class_for(payload) else { return Ok(false) };
        let end = b + block_size(c2);
        self.grow(end)?;
        self.set_state(S_TOP, end)?;
        self.write_u64(b, BLOCK_MAGIC | c2 as u64)?;
        if let Some(f) = self.fresh_mut(p) {
            f.0 = end;
        }
        Ok(true)
    }

    /// Frees every block at once (`clear` outside a group): an empty heap,
    /// roots zeroed.
    ///
    /// Not inside a group: earlier operations of the group may still need
    /// the old blocks for their rollback, and blocks handed out again
    /// later in the group would be written unlogged. There the containers
    /// free the blocks they hold instead (at the group's commit).
    pub(crate) fn reset(&mut self) -> R<()> {
        debug_assert!(!self.in_group(), "a heap reset inside a group");
        drop(self.take_deferred());
        self.set_state(S_TOP, HEAP_START)?;
        for i in S_FREE..STATE_WORDS {
            if self.state(i) != 0 {
                self.set_state(i, 0)?;
            }
        }
        Ok(())
    }

    /// Stores `bytes` as a new blob; returns its offset.
    pub(crate) fn put_blob(&mut self, bytes: &[u8]) -> R<u64> {
        let p = self.alloc(8 + bytes.len() as u64)?;
        self.write_fresh(p, &(bytes.len() as u64).to_ne_bytes())?;
        self.write_fresh(p + 8, bytes)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_fit_their_payload() {
        assert_eq!(class_for(0), Some(0));
        assert_eq!(class_for(16), Some(0));
        assert_eq!(class_for(17), Some(1));
        assert_eq!(class_for(u64::MAX), None);
        for n in [1u64, 100, 4096, 1 << 30] {
            let c = class_for(n).unwrap();
            assert!(block_size(c) - BLOCK_HDR >= n);
            assert!(c == 0 || block_size(c - 1) - BLOCK_HDR < n);
        }
    }
}
