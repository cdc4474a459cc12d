//! The "hostile peer" of the hostile_* targets (a module of each, not a
//! target): it writes arbitrary bytes into an object's segment file, once
//! before the operations run or over and over from another thread while
//! they run.

#![allow(dead_code)] // each target uses what it needs

use std::io::{Seek, SeekFrom, Write};

/// Writes `data` into segment `name` as 9-byte chunks: a byte `at`, then
/// 8 bytes written at offset `at * step` (so within the header and control
/// block for a small `step`).
pub fn scribble_at(name: &str, data: &[u8], step: u64) {
    let mut f = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm/shmproc.{name}")).unwrap();
    for chunk in data.chunks(9) {
        let [at, rest @ ..] = chunk else { continue };
        f.seek(SeekFrom::Start(u64::from(*at) * step)).unwrap();
        f.write_all(rest).unwrap();
    }
}

/// Runs `ops` after `scribble(data)` (`concurrent` false), or again and
/// again while another thread runs `scribble` over `data` in pieces of
/// `piece` bytes (`concurrent` true), so every check also meets fields
/// that change between two reads.
pub fn hostile(data: &[u8], concurrent: bool, piece: usize, scribble: impl Fn(&[u8]) + Sync, mut ops: impl FnMut()) {
    if !concurrent {
        scribble(data);
        ops();
        return;
    }
    std::thread::scope(|s| {
        let peer = s.spawn(|| {
            for chunk in data.chunks(piece) {
                scribble(chunk);
                std::thread::yield_now();
            }
        });
        while !peer.is_finished() {
            ops();
        }
        ops();
    });
}
