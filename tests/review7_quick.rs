//! Review 7: `DictProxy::insert`'s quick path for inline keys and values
//! (`Store::write_quick`) against a hostile table state: a writer checks
//! that the table's root names a heap block that holds it (`table_tx`),
//! not only that it lies inside the mapping as a reader does.

use std::os::unix::fs::FileExt;

use shmproc::DictProxy;

/// The dict's TABLE root word: the state words start at 160 (after the
/// 128-byte common header, lock, seq, map_len and log_used), the roots
/// after 37 heap words (top and 36 free-list heads).
const TABLE_ROOT_OFF: u64 = 160 + 8 * 37;
/// A heap block's header precedes its payload.
const BLOCK_HDR: u64 = 16;

fn u64_at(f: &std::fs::File, off: u64) -> u64 {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    u64::from_ne_bytes(b)
}

/// A peer wipes the header of the block that holds the table: an insert
/// (new key or overwrite) must fail with an error and write nothing, as
/// the full write path does, instead of writing the key and value
/// unlogged into bytes no block claims.
#[test]
fn review7_quick_insert_refuses_a_table_without_its_block() {
    let d = DictProxy::<u64, u64>::new().unwrap();
    for k in 0..10u64 {
        d.insert(k, k + 100).unwrap();
    }
    let f = std::fs::OpenOptions::new().read(true).write(true).open(format!("/dev/shm/shmproc.{}", d.name())).unwrap();
    let base = u64_at(&f, TABLE_ROOT_OFF);
    assert!(base > BLOCK_HDR, "the table root {base} (layout offsets changed?)");
    let hdr = u64_at(&f, base - BLOCK_HDR);
    assert_eq!(hdr >> 40, 0x42_4C4B, "no block header before the table (layout offsets changed?)");
    f.write_all_at(&0u64.to_ne_bytes(), base - BLOCK_HDR).unwrap();
    let before = std::fs::read(format!("/dev/shm/shmproc.{}", d.name())).unwrap();
    let fresh = d.insert(1000, 7);
    assert!(fresh.is_err(), "a new key went into a table without its block: {fresh:?}");
    let over = d.insert(3, 7);
    assert!(over.is_err(), "an overwrite went into a table without its block: {over:?}");
    let after = std::fs::read(format!("/dev/shm/shmproc.{}", d.name())).unwrap();
    // The heap (past the control block and the log) is as the peer left it.
    let heap = 1024 + 16 * 1024;
    assert!(before[heap..] == after[heap..], "a refused insert wrote into the heap");
    // Repaired by the peer, the dict works again.
    f.write_all_at(&hdr.to_ne_bytes(), base - BLOCK_HDR).unwrap();
    assert_eq!(d.insert(3, 8).unwrap(), Some(103));
    assert_eq!(d.get(&3).unwrap(), Some(8));
}
