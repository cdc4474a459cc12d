//! Hostile review (rev3) of DictProxy's lean first try for `get`
//! (src/manager/store.rs `Store::read_fast`, dict.rs `get_fast` /
//! `probe_at`, `View::bytes_eq`'s word compare): gets in one process
//! beside a peer process that inserts, replaces, removes and grows the
//! table never miss a present key and never return a torn value.

mod common;

use std::time::{Duration, Instant};

use shmproc::{DictProxy, Process};

const BOUND: Duration = Duration::from_secs(60);
const STABLE: u64 = 48;
const ROUNDS: u64 = 60;

fn skey(k: u64) -> String {
    format!("s{k}-{}", "x".repeat((k % 41) as usize))
}

fn val(k: u64, g: u64) -> String {
    format!("{k}:{g}:{}", "y".repeat((g % 50) as usize))
}

/// Whether `v` is a value `val(k, _)` (not torn, not another key's).
fn is_val_of(k: u64, v: &str) -> bool {
    let mut it = v.splitn(3, ':');
    let (Some(a), Some(g), Some(ys)) = (it.next(), it.next(), it.next()) else { return false };
    let Ok(g) = g.parse::<u64>() else { return false };
    a == k.to_string() && ys.len() as u64 == g % 50 && ys.bytes().all(|b| b == b'y')
}

shmproc::entry! {
    fn churn(args: (DictProxy<u64, String>, DictProxy<String, String>)) -> Result<(), String> {
        let (du, ds) = args;
        for g in 1..=ROUNDS {
            for k in 0..STABLE {
                du.insert(k, val(k, g)).map_err(|e| e.to_string())?;
                ds.insert(skey(k), val(k, g)).map_err(|e| e.to_string())?;
            }
            // Growth (several doublings), then tombstones, then a rebuild.
            let many = 40 * g;
            for j in 0..many {
                let k = 1_000_000 + g * 100_000 + j;
                du.insert(k, val(k, g)).map_err(|e| e.to_string())?;
                ds.insert(skey(k), val(k, g)).map_err(|e| e.to_string())?;
            }
            for j in 0..many {
                let k = 1_000_000 + g * 100_000 + j;
                du.remove(&k).map_err(|e| e.to_string())?;
                ds.remove(&skey(k)).map_err(|e| e.to_string())?;
            }
            if g % 7 == 0 {
                // A group: readers see the state before it, then after.
                du.with_lock(|d| {
                    for k in 0..STABLE {
                        d.insert(k, val(k, g + 1_000)).unwrap();
                    }
                })
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

#[test]
fn rev3_gets_beside_a_churning_peer_process_never_miss_and_never_tear() {
    let du = DictProxy::<u64, String>::new().unwrap();
    let ds = DictProxy::<String, String>::new().unwrap();
    for k in 0..STABLE {
        du.insert(k, val(k, 0)).unwrap();
        ds.insert(skey(k), val(k, 0)).unwrap();
    }
    let mut p = Process::new(churn, (du.clone(), ds.clone()));
    p.start().unwrap();
    let end = Instant::now() + BOUND;
    let mut reads = 0u64;
    let mut bad = Vec::new();
    loop {
        let done = p.exitcode().is_some();
        for k in 0..STABLE {
            match du.get(&k) {
                Ok(Some(v)) if is_val_of(k, &v) => {}
                other => bad.push(format!("u64 key {k}: {other:?}")),
            }
            match ds.get(&skey(k)) {
                Ok(Some(v)) if is_val_of(k, &v) => {}
                other => bad.push(format!("String key {k}: {other:?}")),
            }
            // Absent keys stay absent (never another key's value).
            assert_eq!(du.get(&(k + 500_000)).unwrap(), None);
            reads += 2;
        }
        if done || !bad.is_empty() || Instant::now() > end {
            break;
        }
    }
    if Instant::now() > end {
        let _ = p.kill();
    }
    let r = common::join(&p);
    assert!(bad.is_empty(), "{} bad reads of {reads}; first: {:?}", bad.len(), &bad[..bad.len().min(5)]);
    r.unwrap();
    assert!(reads > 0);
}

/// Offset of a dict's TABLE root word (NB follows): header 128 + lock,
/// seq, map_len, log_used; heap top, 36 free-list heads, then the roots
/// (as `ORDER_OFF` in tests/manager.rs, 4 words before it).
const TABLE_OFF: u64 = 160 + 8 * (1 + 36);

/// A peer writes hostile TABLE / NB root words (a table past the mapping,
/// over the header and the log, misaligned, of 2^62 buckets): `get` (the
/// lean first try reads them unlocked), `insert` (its prefetch reads them
/// before the lock) and `contains` give errors or answers, never a fault;
/// with the words put back, the dict is whole.
#[test]
fn rev3_hostile_table_root_words_never_fault_a_get_or_an_insert() {
    use std::os::unix::fs::FileExt;
    let du = DictProxy::<u64, u64>::new().unwrap();
    let ds = DictProxy::<String, u64>::new().unwrap();
    for k in 0..100 {
        du.insert(k, k * 3).unwrap();
        ds.insert(skey(k), k * 3).unwrap();
    }
    for name in [du.name().to_owned(), ds.name().to_owned()] {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(format!("/dev/shm/shmproc.{name}")).unwrap();
        let len = f.metadata().unwrap().len();
        let mut saved = [0u8; 16];
        f.read_exact_at(&mut saved, TABLE_OFF).unwrap();
        let bases: [u64; 12] =
            [0, 8, 128, 1024, 17_408, 17_408 + 32, len - 8, len, len + 4096, u64::MAX - 7, 1 << 62, 12_345];
        let nbs: [u64; 10] = [1, 2, 8, 1 << 10, 1 << 20, 1 << 40, 1 << 62, 1 << 63, 3, 0];
        for &b in &bases {
            for &nb in &nbs {
                f.write_all_at(&b.to_ne_bytes(), TABLE_OFF).unwrap();
                f.write_all_at(&nb.to_ne_bytes(), TABLE_OFF + 8).unwrap();
                for k in [0u64, 7, 99, 1_000] {
                    let _ = (du.get(&k), ds.get(&skey(k)), du.contains_key(&k));
                }
                let _ = (du.insert(5_000 + b % 7, 1), ds.insert(skey(5_000), 1));
            }
        }
        f.write_all_at(&saved, TABLE_OFF).unwrap();
    }
    // Inserts that went through against a hostile table may have changed
    // the heap; the original entries' words are back: reads answer.
    for k in 0..100 {
        let _ = (du.get(&k), ds.get(&skey(k)));
    }
}

/// Inline keys of 1..=15 bytes whose word compare masks the bytes past
/// the key (the value's first bytes share its last word): keys that
/// differ in any one byte, with values whose bytes differ too, are told
/// apart; absent keys equal to a present one but for one byte miss.
#[test]
fn rev3_inline_keys_differing_in_one_byte_beside_their_values_are_told_apart() {
    macro_rules! run {
        ($n:literal) => {{
            const N: usize = $n;
            let d = DictProxy::<[u8; N], u64>::new().unwrap();
            let key = |pos: usize, b: u8| {
                let mut k = [0x5au8; N];
                k[pos] = b;
                k
            };
            for pos in 0..N {
                for b in [0u8, 1, 0x80, 0xff] {
                    d.insert(key(pos, b), ((pos as u64) << 8 | u64::from(b)) ^ 0xa5a5_a5a5_a5a5_a5a5).unwrap();
                }
            }
            let other = DictProxy::<[u8; N], u64>::open(d.name()).unwrap();
            for h in [&d, &other] {
                for pos in 0..N {
                    for b in [0u8, 1, 0x80, 0xff] {
                        let want = ((pos as u64) << 8 | u64::from(b)) ^ 0xa5a5_a5a5_a5a5_a5a5;
                        assert_eq!(h.get(&key(pos, b)).unwrap(), Some(want), "N={N} pos={pos} b={b}");
                    }
                    assert_eq!(h.get(&key(pos, 2)).unwrap(), None, "N={N} pos={pos}");
                }
            }
        }};
    }
    run!(1);
    run!(3);
    run!(5);
    run!(7);
    run!(8);
    run!(9);
    run!(12);
    run!(15);
}
