//! A peer writing a log length that is not a whole number of words into a
//! container's control block while this process is inside a `with_lock`
//! group: the group's next logged write must fail (or go on) without a
//! misaligned store, which is undefined behaviour (a debug build aborts
//! the process: seen in a CI run of review17's random garbage test).

use std::io::{Seek, SeekFrom, Write};

use shmproc::{DictProxy, ListProxy};

/// The control block's `log_used` word: after the 128-byte header, the
/// lock, `seq` and `map_len` words (`src/manager/store.rs`, `Ctl`).
const LOG_USED: u64 = 128 + 3 * 8;

fn write_word(name: &str, off: u64, w: u64) {
    let mut f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmproc.{name}")).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(&w.to_ne_bytes()).unwrap();
}

#[test]
fn a_misaligned_log_length_written_during_a_group_is_an_error_not_a_misaligned_store() {
    for bad in [3u64, 1027, 4093] {
        let d = DictProxy::<String, Vec<u8>>::new().unwrap();
        d.insert("a".into(), vec![1; 40]).unwrap();
        let r = d.with_lock(|d| {
            write_word(d.name(), LOG_USED, bad);
            // Logged writes: a new blob (a heap allocation, logged) and a new entry.
            (d.insert("b".into(), vec![2; 300]), d.insert("c".into(), vec![3; 5]))
        });
        // Whatever the outcome, the dict is usable afterwards (repaired or reporting errors, never a crash).
        let _ = r;
        let _ = (d.get(&"a".into()), d.len(), d.items());
        let l = ListProxy::<String>::new().unwrap();
        l.append("x".into()).unwrap();
        let r = l.with_lock(|l| {
            write_word(l.name(), LOG_USED, bad);
            (l.append("y".repeat(200)), l.insert(0, "z".into()))
        });
        let _ = r;
        let _ = (l.to_vec(), l.len());
    }
}
