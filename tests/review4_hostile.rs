//! Review 4: hostile peers writing into a container's segment (lengths,
//! offsets and counts read from shared memory). A peer that can write the
//! segment may make a reader see garbage or an error, never crash it
//! (abort on a huge allocation, out-of-bounds access) or hang it.

use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::vm_size;
use shmproc::ListProxy;

mod common;

/// Set (to the test's name) in the re-run that does the work.
const INNER: &str = "SHMPROC_REVIEW4_HOSTILE_INNER";
const DEADLINE: Duration = Duration::from_secs(120);

/// Offsets in a container store (src/manager/store.rs): the control block
/// after the 128-byte common header (lock, seq, map_len, log_used, state
/// words), the undo log, the heap.
const SEQ_OFF: u64 = 136;
const LOG_USED_OFF: u64 = 152;
const LOG_OFF: u64 = 1024;
const LOG_CAP: u64 = 16 * 1024;
const HEAP_START: u64 = LOG_OFF + LOG_CAP;
/// A log entry's length word: the old bytes are in a heap blob.
const SPILLED: u64 = 1 << 63;
/// A heap block header's magic ("BLK").
const BLOCK_MAGIC: u64 = 0x424C_4B00_0000_0000;

/// Runs `test` again in a child process (the same test binary, that one
/// test). True in the child.
fn in_child(test: &str) -> bool {
    let Some((status, stdout, stderr)) = common::rerun_test(test, INNER, DEADLINE) else {
        return true;
    };
    // What a crashed child left (its names end with this process's pid).
    for e in std::fs::read_dir("/dev/shm").unwrap() {
        let f = e.unwrap().file_name().to_string_lossy().into_owned();
        if f.starts_with("shmproc.review4-") && f.ends_with(&format!("-{}", std::process::id())) {
            let _ = std::fs::remove_file(format!("/dev/shm/{f}"));
        }
    }
    assert!(status.signal().is_none(), "{test}: child killed by signal {:?}\n{stdout}\n{stderr}", status.signal());
    assert!(status.success(), "{test}: {status:?}\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{test}: the child ran no test\n{stdout}\n{stderr}");
    false
}

/// Caps this process's address space at its size now plus `more` bytes:
/// an allocation past it fails (Rust aborts) instead of pushing the
/// machine into the OOM killer.
fn cap_address_space(more: u64) {
    let lim = libc::rlimit { rlim_cur: vm_size() + more, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
}

fn u64_at(f: &std::fs::File, off: u64) -> u64 {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    u64::from_ne_bytes(b)
}

/// A reader beside an open transaction (`seq` odd) lays the undo log's old
/// bytes over what it reads: it copies every entry's old bytes first. A
/// peer that fills the 16 KiB log with entries that each name the same
/// large heap blob as their spilled old bytes makes every reader allocate
/// (682 entries) x (the blob) at once: with a 2 MiB blob that is 1.3 GiB
/// per read, with a 64 MiB one more than the machine has. The reader must
/// bound what it copies (the log's old bytes can never legitimately be
/// more than the mapping) and fall back to the lock, which undoes the log.
#[test]
fn review4_hostile_undo_log_of_repeated_spilled_entries_does_not_blow_up_a_reader() {
    let test = "review4_hostile_undo_log_of_repeated_spilled_entries_does_not_blow_up_a_reader";
    if !in_child(test) {
        return;
    }
    // SAFETY: getppid has no preconditions.
    let name = format!("review4-undo-bomb-{}", unsafe { libc::getppid() });
    let l = ListProxy::<Vec<u8>>::create(&name).unwrap();
    const BLOB: u64 = 2 << 20;
    l.append(vec![7u8; BLOB as usize]).unwrap();
    // The hostile peer, through the file: find the blob (a block header
    // whose payload starts with its length).
    let f = std::fs::OpenOptions::new().read(true).write(true).open(format!("/dev/shm/shmproc.{name}")).unwrap();
    let size = f.metadata().unwrap().len();
    let p = (HEAP_START..size - 32)
        .step_by(32)
        .find(|&b| u64_at(&f, b) & 0xFFFF_FF00_0000_0000 == BLOCK_MAGIC && u64_at(&f, b + 16) == BLOB)
        .map(|b| b + 16)
        .expect("the blob's block");
    // Entries [off][SPILLED | len][blob offset], all naming the blob; `off`
    // names the log itself, which an undo skips (so the lock's repair is
    // quick) but a reader beside still overlays.
    let n = LOG_CAP / 24;
    let mut log = Vec::new();
    for _ in 0..n {
        log.extend_from_slice(&LOG_OFF.to_ne_bytes());
        log.extend_from_slice(&(SPILLED | BLOB).to_ne_bytes());
        log.extend_from_slice(&p.to_ne_bytes());
    }
    f.write_all_at(&log, LOG_OFF).unwrap();
    f.write_all_at(&(n * 24).to_ne_bytes(), LOG_USED_OFF).unwrap();
    let seq = u64_at(&f, SEQ_OFF);
    f.write_all_at(&(seq | 1).to_ne_bytes(), SEQ_OFF).unwrap();
    // n * 2 MiB = 1.3 GiB of copies if the reader takes them all at once.
    cap_address_space(512 << 20);
    let r = l.get(0);
    assert!(r.as_ref().map_or(true, |v| v.len() as u64 == BLOB), "{:?}", r.map(|v| v.len()));
    // The lock's repair leaves the list usable.
    assert_eq!(l.len(), 1);
    assert_eq!(l.get(0).unwrap().len() as u64, BLOB);
    l.append(vec![1]).unwrap();
    assert_eq!(l.get(1).unwrap(), vec![1]);
}
