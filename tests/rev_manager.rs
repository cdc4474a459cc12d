//! Hostile review of the manager branch: each test here states a property
//! the issue or the code's own docs promise and that the code breaks.

use shmproc::ListProxy;

// ---- space reuse ---------------------------------------------------------

/// The issue: variable-length data "with its space reused after
/// removals". The heap is segregated power-of-two free lists that never
/// split or merge blocks, so the 8 MiB block of one removed 4 MiB blob is
/// never reused for smaller elements: 4 MiB of 1 KiB blobs appended after
/// the removal grow the segment by another 8 MiB instead.
#[test]
fn space_of_a_removed_large_blob_is_reused_for_small_ones() {
    let l = ListProxy::<Vec<u8>>::new().unwrap();
    let seg = format!("/dev/shm/shmproc.{}", l.name());
    l.append(vec![1u8; 4 << 20]).unwrap();
    l.pop().unwrap();
    let before = std::fs::metadata(&seg).unwrap().len();
    for _ in 0..4096 {
        l.append(vec![2u8; 1000]).unwrap();
    }
    let after = std::fs::metadata(&seg).unwrap().len();
    assert!(
        after <= before + (1 << 20),
        "segment grew from {before} to {after} bytes although a free 8 MiB block could hold the 4 MiB of new data"
    );
}

/// (Passes: a probe of remap under threads sharing one handle.)
#[test]
fn probe_same_handle_threads_read_while_it_grows() {
    let l = ListProxy::<u64>::new().unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..200_000u64 {
                l.append(i).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = l.len();
                    if n > 0 {
                        assert_eq!(l.get(n as isize - 1).unwrap(), n as u64 - 1);
                    }
                }
            });
        }
    });
    assert_eq!(l.len(), 200_000);
}
