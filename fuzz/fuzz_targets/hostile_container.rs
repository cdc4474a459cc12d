//! A ListProxy and a DictProxy whose segment bytes (control block, undo
//! log, heap) are overwritten with arbitrary bytes, before or while
//! another handle operates on them: only errors or garbage values, never
//! a panic, a hang, or an access outside the mapping.
#![no_main]

use std::io::{Seek, SeekFrom, Write};

use libfuzzer_sys::fuzz_target;

#[path = "peer.rs"]
mod peer;
use shmproc::{DictProxy, ListProxy};

/// Writes `data` as (offset, bytes) chunks into the segment file, inside
/// its current size (never extending it).
fn scribble(name: &str, data: &[u8]) {
    let path = format!("/dev/shm/shmproc.{name}");
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for chunk in data.chunks(10) {
        let [a, b, rest @ ..] = chunk else { continue };
        let off = (u64::from(u16::from_le_bytes([*a, *b])) * 8).min(len.saturating_sub(rest.len() as u64));
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(rest).unwrap();
    }
}

fn hostile(name: &str, data: &[u8], concurrent: bool, ops: impl FnMut()) {
    peer::hostile(data, concurrent, 30, |d| scribble(name, d), ops);
    // A scribble may have set the segment's persist flag, which its
    // creator's drop honours (as `gc` does): remove the name here.
    let _ = shmproc::unlink(name);
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, data)) = data.split_first() else { return };
    let concurrent = which & 0x80 != 0;
    if which % 2 == 0 {
        let l = ListProxy::<String>::new().unwrap();
        let peer = ListProxy::<String>::open(l.name()).unwrap();
        for i in 0..20 {
            l.append(format!("item{i}-{}", "x".repeat(i * 7))).unwrap();
        }
        hostile(l.name(), data, concurrent, || {
            let _ = peer.get(3);
            let _ = peer.get(-1);
            let _ = peer.to_vec();
            let _ = peer.append("more".into());
            let _ = peer.insert(1, "ins".into());
            let _ = peer.set(0, "set".into());
            let _ = peer.pop();
            let _ = peer.pop_at(2);
            let _ = peer.del(-2);
            let _ = peer.remove(&"item5-".into());
            let _ = peer.count(&"more".into());
            let _ = peer.reverse();
            let _ = peer.sort();
            let _ = peer.sort_by_key(|s| s.len());
            let _ = peer.len();
            let _ = peer.is_empty();
            let _ = peer.slice(1..5);
            let _ = peer.index(&"more".into());
            let _ = peer.contains(&"ins".into());
            let _ = peer.iter().map(|it| it.count());
            let _ = peer.shrink_to_fit();
            let _ = peer.with_lock(|p| {
                p.append("grouped".into())?;
                p.pop_at(0)
            });
            let _ = peer.extend(["c".to_string()]);
            let _ = l.extend(["a".to_string(), "b".to_string()]);
        });
        let _ = peer.clear();
        let _ = l.clear();
        let _ = l.append("works".into());
    } else {
        let d = DictProxy::<String, u64>::new().unwrap();
        let peer = DictProxy::<String, u64>::open(d.name()).unwrap();
        for i in 0..30 {
            d.insert(format!("key{i}"), i).unwrap();
        }
        hostile(d.name(), data, concurrent, || {
            let _ = peer.get(&"key3".into());
            let _ = peer.items();
            let _ = peer.update_with(&"key4".into(), 0, |v| *v = v.wrapping_add(1));
            let _ = peer.insert("new".into(), 1);
            let _ = peer.remove(&"key7".into());
            let _ = peer.popitem();
            let _ = peer.setdefault("sd".into(), 2);
            let _ = peer.pop(&"key8".into());
            let _ = peer.del(&"key11".into());
            let _ = peer.contains_key(&"key9".into());
            let _ = peer.update([("u1".to_string(), 1), ("u2".to_string(), 2)]);
            let _ = peer.shrink_to_fit();
            let _ = peer.with_lock(|p| {
                p.insert("g".into(), 3)?;
                p.remove(&"key10".into())
            });
            let _ = peer.len();
            let _ = peer.is_empty();
            let _ = peer.values();
            let _ = d.keys();
        });
        let _ = peer.shrink_to_fit();
        let _ = d.clear();
        let _ = d.insert("works".into(), 1);
    }
});
