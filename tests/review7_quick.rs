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

/// Readers through another handle (their own mapping of the segment)
/// beside a writer on the quick path: an overwritten key reads as one of
/// the values it was given, never a torn or foreign word; a key being
/// inserted reads as absent or with its value, never with another's;
/// the count never exceeds what was inserted. Also through a growth and
/// the table's resizes (the quick path hands those to the full write).
#[test]
fn review7_readers_beside_quick_inserts_see_whole_values() {
    const N: u64 = 20_000;
    let w = DictProxy::<u64, u64>::new().unwrap();
    w.insert(u64::MAX, 0).unwrap();
    let r = DictProxy::<u64, u64>::open(w.name()).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 0..N {
                w.insert(k, k.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unwrap();
                // Alternating all-ones and all-zeros halves: a torn word shows.
                let v = if k % 2 == 0 { 0xFFFF_FFFF_0000_0000 } else { 0x0000_0000_FFFF_FFFF };
                w.insert(u64::MAX, v).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        let mut rounds = 0u64;
        while !done.load(std::sync::atomic::Ordering::Acquire) || rounds < 3 {
            rounds += 1;
            let v = r.get(&u64::MAX).unwrap().expect("the overwritten key vanished");
            assert!(
                [0, 0xFFFF_FFFF_0000_0000, 0x0000_0000_FFFF_FFFF].contains(&v),
                "torn or foreign value {v:#x} for the overwritten key"
            );
            for k in (rounds * 7919 % N..N).step_by(997).take(8) {
                if let Some(v) = r.get(&k).unwrap() {
                    assert_eq!(v, k.wrapping_mul(0x9E37_79B9_7F4A_7C15), "key {k} read with a value not its own");
                }
            }
            assert!(r.len() as u64 <= N + 1, "len {} past what was inserted", r.len());
        }
    });
    assert_eq!(r.len() as u64, N + 1);
}

/// Inserts that would take the quick path, run inside a group on the same
/// thread (through the group's handle and through a second handle of the
/// same dict), join the group: a panic in it undoes them all, new keys
/// and overwrites alike.
#[test]
fn review7_quick_inserts_inside_a_group_roll_back_with_it() {
    let w = DictProxy::<u64, u64>::new().unwrap();
    for k in 0..5u64 {
        w.insert(k, k).unwrap();
    }
    let other = DictProxy::<u64, u64>::open(w.name()).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.with_lock(|d| {
            d.insert(1, 100).unwrap();
            d.insert(50, 50).unwrap();
            other.insert(2, 200).unwrap();
            other.insert(60, 60).unwrap();
            for k in 100..400u64 {
                d.insert(k, k).unwrap();
            }
            panic!("roll the group back");
        })
    }));
    assert!(r.is_err());
    let mut items = w.items().unwrap();
    items.sort_unstable();
    assert_eq!(items, (0..5u64).map(|k| (k, k)).collect::<Vec<_>>());
    assert_eq!(other.len(), 5);
}
