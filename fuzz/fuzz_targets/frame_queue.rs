//! A `Queue` of encoded frames (and an unbounded one's chain control
//! segment) whose bytes a hostile peer overwrote: header, indices, frame
//! lengths and payloads. Every non-blocking path and a fresh `open` must
//! give errors (`Corrupted`, `Empty`, open errors) or garbage items, never
//! a panic, a hang or UB.
#![no_main]

use std::io::{Seek, SeekFrom, Write};

use libfuzzer_sys::fuzz_target;
use shmproc::{Options, Queue};

fn opts() -> Options {
    Options::new().init_timeout(std::time::Duration::ZERO)
}

/// Writes chunks `[offset / 8 (2 bytes LE), bytes...]` into the file of
/// `name`, anywhere in its first 64 KiB.
fn scribble(name: &str, data: &[u8]) {
    let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmproc.{name}")) else { return };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    for chunk in data.chunks(11) {
        let [a, b, rest @ ..] = chunk else { continue };
        let off = u64::from(u16::from_le_bytes([*a, *b])) * 8 % len.max(1);
        f.seek(SeekFrom::Start(off)).unwrap();
        let n = rest.len().min((len - off) as usize);
        f.write_all(&rest[..n]).unwrap();
    }
}

/// Drives a handle: gets, puts, sizes; all must return.
fn exercise(q: &Queue<(u32, String)>) {
    for i in 0..8u32 {
        let _ = q.get_nowait();
        let _ = q.qsize();
        let _ = q.empty();
        let _ = q.put_nowait((i, "after".repeat(i as usize)));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    let q = if which & 1 == 0 {
        Queue::<(u32, String)>::with_max_frame(4, 200).unwrap()
    } else {
        Queue::<(u32, String)>::new(0).unwrap()
    };
    for i in 0..3u32 {
        let _ = q.put_nowait((i, "x".repeat(i as usize * 40)));
    }
    scribble(q.name(), data);
    if which & 1 == 1 {
        // The chain's first ring too (`<name>.<generation>.0`).
        let prefix = format!("{}{}.", shmproc::NAME_PREFIX, q.name());
        let ring0 = std::fs::read_dir("/dev/shm").into_iter().flatten().filter_map(|e| e.ok()?.file_name().into_string().ok());
        if let Some(f) = ring0.into_iter().find(|f| f.starts_with(&prefix) && f.ends_with(".0")) {
            scribble(&f[shmproc::NAME_PREFIX.len()..], data);
        }
    }
    exercise(&q);
    if let Ok(again) = Queue::<(u32, String)>::open_with(q.name(), &opts()) {
        exercise(&again);
    }
    q.close_all();
    let _ = q.get_nowait();
    // Scribbled indices can hide rings from the creator's cleanup (which
    // trusts them only within bounds), and a scribbled persist flag keeps
    // the queue's own name (a persist by any process is honoured): sweep
    // the queue's name and its rings' names.
    let own = format!("shmproc.{}", q.name());
    let prefix = format!("{own}.");
    drop(q);
    for f in std::fs::read_dir("/dev/shm").unwrap().filter_map(|e| e.ok()) {
        let file = f.file_name().to_string_lossy().into_owned();
        if file == own || file.starts_with(&prefix) {
            let _ = std::fs::remove_file(f.path());
        }
    }
});
