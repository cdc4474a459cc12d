//! Review 6: `Queue<String>::get`'s `FrameTake` reader (commit 88e79fa):
//! the String is built from a private copy of the frame, whatever a
//! hostile peer writes into the slot while it is read, and a hostile
//! length never sizes an allocation beyond the slot.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use shmproc::{GetError, Queue, TryGetError};

/// The offsets in the segment of `q`'s two slots' string bytes: two
/// marked strings of `len` bytes are put, found, and got back.
fn string_bytes_at(q: &Queue<String>, len: usize) -> Vec<u64> {
    let mut at = Vec::new();
    for m in ["MARKER-A-", "MARKER-B-"] {
        let s = format!("{m}{}", "x".repeat(len - m.len()));
        q.put(s).unwrap();
        at.push(common::find_in_segment(q.name(), m.as_bytes()).1);
    }
    for _ in 0..2 {
        q.get().unwrap();
    }
    at
}

/// A hostile peer rewrites the bytes of both slots of a 2-slot
/// `Queue<String>` without pause (ASCII, then invalid UTF-8, then valid
/// multi-byte UTF-8) while this process puts and gets strings through
/// them, small frames (in the header's line) and large ones (past the
/// wide-copy threshold): every `get` that returns a `String` returns a
/// valid one of the length put (the UTF-8 verdict is on the private copy,
/// never on the slot's bytes read again), the others are `Decode` errors,
/// and the queue goes on.
#[test]
fn strings_got_from_slots_a_hostile_peer_rewrites_are_valid_or_errors() {
    for len in [200usize, 1000] {
        let q = Queue::<String>::new(2).unwrap();
        let at = string_bytes_at(&q, len);
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/dev/shm/{}{}", shmproc::NAME_PREFIX, q.name());
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                let patterns = [vec![b'a'; len], [0xC3u8, 0x28].repeat(len / 2), "é".repeat(len / 2).into_bytes()];
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    for &a in &at {
                        f.write_all_at(&patterns[i % 3], a).unwrap();
                    }
                    i += 1;
                }
                i
            })
        };
        let (mut ok, mut bad) = (0u32, 0u32);
        for _ in 0..common::count(20_000, 200_000) {
            q.put("b".repeat(len)).unwrap();
            match q.get() {
                Ok(s) => {
                    assert!(std::str::from_utf8(s.as_bytes()).is_ok(), "an invalid String was returned");
                    assert_eq!(s.len(), len);
                    assert_eq!(s.capacity(), len, "one exact allocation");
                    ok += 1;
                }
                Err(GetError::Decode(_)) => bad += 1,
                Err(e) => panic!("get: {e:?}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        let rounds = writer.join().unwrap();
        eprintln!("len {len}: {ok} strings, {bad} decode errors, {rounds} hostile rounds");
        assert_eq!(q.qsize(), 0);
    }
}

/// A hostile frame length: the slot's `len` word just past the slot's
/// room, and `u64::MAX`, is `Corrupted` (no allocation of that size); the
/// String's own length word lying (larger than the frame, up to
/// `u64::MAX`) is a `Decode` error. The next frame arrives.
#[test]
fn hostile_lengths_in_a_string_slot_are_errors_not_allocations() {
    let q = Queue::<String>::new(4).unwrap();
    let room = q.max_frame() as u64;
    // Large frames: the payload starts at byte 64 of the slot, the
    // slot's `len` word at byte 8 (the String's own length word first).
    let body = "y".repeat(600);
    let cases = [(room + 1, None), (u64::MAX, None), (1 << 40, None), (608, Some(u64::MAX)), (608, Some(609))];
    for (i, (slot_len, string_len)) in cases.into_iter().enumerate() {
        let marker = format!("MARKER-H{i}-");
        let marker = marker.as_str();
        q.put(format!("{marker}{}", &body[marker.len()..])).unwrap();
        q.put("next".to_string()).unwrap();
        let (f, at) = common::find_in_segment(q.name(), marker.as_bytes());
        let payload = at - 8; // the String's length word
        let slot = payload - 64;
        f.write_all_at(&slot_len.to_ne_bytes(), slot + 8).unwrap();
        if let Some(n) = string_len {
            f.write_all_at(&n.to_le_bytes(), payload).unwrap();
        }
        let r = q.get_nowait();
        match string_len {
            None => assert_eq!(r, Err(TryGetError::Corrupted), "slot len {slot_len}"),
            Some(n) => assert!(matches!(r, Err(TryGetError::Decode(_))), "string len {n}: {r:?}"),
        }
        assert_eq!(q.get_nowait().as_deref(), Ok("next"));
        assert_eq!(q.qsize(), 0);
    }
}
