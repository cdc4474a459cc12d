//! Review 9: hostile peers and full /dev/shm against what earlier reviews
//! left out (the Manager registry's records, ...).

use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Duration;

use shmproc::{DictProxy, Manager, OpenError};

fn unique(tag: &str) -> String {
    format!("review9-{tag}-{}", std::process::id())
}

/// Header fields of a segment that name its kind and element identity
/// (kind, elem_size, elem_align at 16..28; elem_hash at 32..40; type name
/// at 72..128: src/shm/header.rs).
const IDENTITY: [(u64, usize); 3] = [(16, 12), (32, 8), (72, 56)];

fn file_of(name: &str) -> std::fs::File {
    std::fs::OpenOptions::new().read(true).write(true).open(format!("/dev/shm/shmproc.{name}")).unwrap()
}

fn read_identity(f: &std::fs::File) -> Vec<Vec<u8>> {
    IDENTITY
        .iter()
        .map(|&(off, len)| {
            let mut b = vec![0u8; len];
            f.read_exact_at(&mut b, off).unwrap();
            b
        })
        .collect()
}

fn write_identity(f: &std::fs::File, id: &[Vec<u8>]) {
    for (&(off, _), b) in IDENTITY.iter().zip(id) {
        f.write_all_at(b, off).unwrap();
    }
}

/// What a hostile peer with write access does to a Manager's registry:
/// stores `record` under `key` (the registry is a dict of String to bytes;
/// its header is made a plain dict's for the insert, then put back).
fn hostile_record(mgr: &str, key: &str, record: &[u8]) {
    let probe = DictProxy::<String, Vec<u8>>::new().unwrap();
    let dict_id = read_identity(&file_of(probe.name()));
    let f = file_of(mgr);
    let mgr_id = read_identity(&f);
    write_identity(&f, &dict_id);
    let d = DictProxy::<String, Vec<u8>>::open(mgr).unwrap();
    d.insert(key.to_owned(), record.to_vec()).unwrap();
    drop(d);
    write_identity(&f, &mgr_id);
}

/// A registry record (src/manager/registry.rs `Record::encode`).
fn record(kind_word: u32, hash: u64, segment: &str, type_name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&kind_word.to_le_bytes());
    b.extend_from_slice(&hash.to_le_bytes());
    b.extend_from_slice(&(segment.len() as u32).to_le_bytes());
    b.extend_from_slice(segment.as_bytes());
    b.extend_from_slice(type_name.as_bytes());
    b
}

/// (start time as u32) << 32 | pid: how a record names its live maker.
fn packed_identity(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let start: u64 = after.split(' ').nth(19).unwrap().parse().unwrap();
    (u64::from(start as u32) << 32) | u64::from(pid)
}

/// Runs `f` on a thread; its result, or None if it did not return by `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// A record that says "being made by process P" for a P that lives and
/// never finishes (a hostile peer's record, or a maker stopped for good)
/// must not hang every lookup of that name forever.
#[test]
fn a_record_being_made_by_a_live_process_that_never_finishes_does_not_hang_lookups() {
    let mgr = Manager::create(&unique("making")).unwrap();
    let mut sleeper = std::process::Command::new("sleep").arg("60").spawn().unwrap();
    let hash = packed_identity(sleeper.id());
    const LIST: u32 = 15; // Kind::List in a header or record
    hostile_record(mgr.name(), "victim", &record(1 << 31 | LIST, hash, "review9-nothing", "ListProxy<u64>"));
    let m = mgr.clone();
    let got = within(Duration::from_secs(20), move || m.list::<u64>("victim").map(|_| ()));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let got = got.expect("a lookup of a name 'being made' by a live process hung (20 s)");
    assert!(matches!(got, Err(OpenError::InitTimeout { .. })), "{got:?}");
}
