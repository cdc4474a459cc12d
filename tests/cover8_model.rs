//! Model tests (proptest, against the serial result) of what the older
//! models left out: `Pool::map_async_chunked` (any chunk size, several
//! jobs in flight at once, a task that panics failing only its own job)
//! and structs made `Handoff` with `handoff_struct!` (nested, with every
//! kind of field), through every path a value takes: encode/decode (and
//! every truncation of an encoding refused), a bounded and an unbounded
//! `Queue` (`put`/`get` and `put_ref`/`get_into` reusing a destination),
//! a `Pipe` (`send_value`/`recv_value`) and a `Pool` task's argument and
//! result.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use shmproc::{Handoff, Pool, PoolError, Queue};

const T: Duration = Duration::from_secs(60);

fn cases() -> u32 {
    if std::env::var_os("SHMPROC_TEST_FULL").is_some() { 256 } else { 24 }
}

// ---- Pool::map_async_chunked ----

/// The serial model of `mix_or_panic`.
fn mix(x: u64) -> (u64, String) {
    let h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    (h, format!("{x}:{}", "y".repeat((x % 13) as usize)))
}

/// Items at or above this make the task panic.
const POISON: u64 = 1 << 40;

shmproc::task! {
    fn mix_or_panic(x: u64) -> (u64, String) {
        assert!(x < POISON, "poisoned item {x}");
        mix(x)
    }
}

/// Several `map_async_chunked` jobs (random items and chunk sizes, 0 the
/// default) submitted before any is collected, collected in a random
/// order: each is the serial map of its items; a job with a poisoned item
/// fails with the task's panic, and only that job.
#[test]
fn map_async_chunked_equals_the_serial_map_with_jobs_in_flight_together() {
    let pool = Pool::new(2).unwrap();
    // One job in five has one poisoned item, anywhere.
    let items = (prop::collection::vec(0u64..1000, 0..120), prop::option::weighted(0.2, any::<prop::sample::Index>()))
        .prop_map(|(mut items, poison)| {
            if let Some(at) = poison {
                let at = at.index(items.len() + 1);
                items.insert(at, POISON);
            }
            items
        });
    let job = (items, prop_oneof![2 => Just(0usize), 5 => 1usize..40, 1 => 100usize..300]);
    let mut runner = TestRunner::new(Config { cases: cases(), ..Config::default() });
    runner
        .run(&(prop::collection::vec(job, 1..4), any::<prop::sample::Index>()), |(jobs, order)| {
            let mut pending: Vec<_> = jobs
                .iter()
                .map(|(items, chunk)| {
                    let r = pool.map_async_chunked(mix_or_panic, items.iter().copied(), *chunk).unwrap();
                    (items, *chunk, r)
                })
                .collect();
            let first = order.index(pending.len());
            let mut order: Vec<usize> = (0..pending.len()).collect();
            order.rotate_left(first);
            let mut taken: Vec<_> = pending.drain(..).map(Some).collect();
            for i in order {
                let (items, chunk, r) = taken[i].take().unwrap();
                let got = r.get_timeout(T);
                if items.contains(&POISON) {
                    match got {
                        Err(shmproc::PoolGetTimeoutError::Failed(PoolError::Task(e))) => {
                            prop_assert!(e.to_string().contains("poisoned item"), "chunk {}: {}", chunk, e)
                        }
                        other => {
                            prop_assert!(false, "chunk {}: a poisoned job gave {:?}", chunk, other.map(|v| v.len()))
                        }
                    }
                } else {
                    let want: Vec<_> = items.iter().map(|&x| mix(x)).collect();
                    prop_assert_eq!(got.map_err(|e| e.to_string()), Ok(want), "chunk {}", chunk);
                }
            }
            Ok(())
        })
        .unwrap();
    close_and_join(pool);
}

// ---- every map form of the Pool against the serial map ----

shmproc::task! {
    fn mix_or_fail(x: u64) -> Result<(u64, String), String> {
        if x == POISON { Err(format!("poisoned item {x}")) } else { Ok(mix(x)) }
    }
}

/// A pool call of one form, by number: map, map_chunked, starmap,
/// map_async, starmap_async, map_async_chunked, map_results, apply (each
/// item), apply_async (all submitted, then collected), imap,
/// imap_unordered.
const FORMS: usize = 11;

/// What a form gives, made comparable: each item's result in item order
/// (`imap_unordered`'s sorted by item), or the one error of a form that
/// fails as a whole (its item's index).
type Outcome = Result<Vec<ItemOutcome>, u64>;
/// One item's result, or its index if it failed.
type ItemOutcome = Result<(u64, String), u64>;

fn run_form(pool: &Pool, form: usize, items: &[u64], chunk: usize) -> Outcome {
    use shmproc::TaskError;
    let failed = |e: &TaskError| match e {
        TaskError::Failed { index, message, .. } if message.contains("poisoned") => *index,
        other => panic!("form {form}: unexpected {other:?}"),
    };
    let whole = |r: Result<Vec<(u64, String)>, PoolError>| match r {
        Ok(v) => Ok(v.into_iter().map(Ok).collect()),
        Err(PoolError::Task(e)) => Err(failed(&e)),
        Err(e) => panic!("form {form}: {e}"),
    };
    let waited = |r: shmproc::AsyncResult<Vec<(u64, String)>>| {
        whole(r.get_timeout(T).map_err(|e| match e {
            shmproc::PoolGetTimeoutError::Failed(e) => e,
            e => panic!("form {form}: {e}"),
        }))
    };
    let per_item =
        |rs: Vec<Result<(u64, String), TaskError>>| Ok(rs.into_iter().map(|r| r.map_err(|e| failed(&e))).collect());
    let it = items.iter().copied();
    match form {
        0 => whole(pool.map(mix_or_fail, it)),
        // 0 is refused here, as Python refuses it (the other forms take 0
        // for the default chunk size).
        1 if chunk == 0 => {
            let r = pool.map_chunked(mix_or_fail, it, 0);
            assert!(matches!(r, Err(PoolError::InvalidArgument(_))), "map_chunked(0): {:?}", r.map(|v| v.len()));
            model(form, items)
        }
        1 => whole(pool.map_chunked(mix_or_fail, it, chunk)),
        2 => whole(pool.starmap(mix_or_fail, it)),
        3 => waited(pool.map_async(mix_or_fail, it).unwrap()),
        4 => waited(pool.starmap_async(mix_or_fail, it).unwrap()),
        5 => waited(pool.map_async_chunked(mix_or_fail, it, chunk).unwrap()),
        6 => per_item(pool.map_results(mix_or_fail, it, chunk).unwrap()),
        // `apply` reports index 0: give the item's own index back.
        7 => Ok(items
            .iter()
            .enumerate()
            .map(|(i, &x)| match pool.apply(mix_or_fail, x) {
                Ok(v) => Ok(v),
                Err(PoolError::Task(e)) => Err(failed(&e) + i as u64),
                Err(e) => panic!("apply: {e}"),
            })
            .collect()),
        8 => {
            let pending: Vec<_> = items.iter().map(|&x| pool.apply_async(mix_or_fail, x).unwrap()).collect();
            Ok(pending
                .into_iter()
                .enumerate()
                .map(|(i, r)| match r.get_timeout(T) {
                    Ok(v) => Ok(v),
                    Err(shmproc::PoolGetTimeoutError::Failed(PoolError::Task(e))) => Err(failed(&e) + i as u64),
                    Err(e) => panic!("apply_async: {e}"),
                })
                .collect())
        }
        9 => per_item(pool.imap(mix_or_fail, items.to_vec()).unwrap().collect()),
        _ => {
            let mut got: Vec<(u64, ItemOutcome)> = pool
                .imap_unordered(mix_or_fail, items.to_vec())
                .unwrap()
                .map(|r| match r {
                    // An Ok result carries its item (mix is invertible on the
                    // string's number); an error its index.
                    Ok(v) => (v.1.split(':').next().unwrap().parse::<u64>().unwrap(), Ok(v)),
                    Err(e) => {
                        let i = failed(&e);
                        (items[i as usize], Err(i))
                    }
                })
                .collect();
            got.sort_by_key(|(x, r)| (*x, r.is_err()));
            let mut want_order: Vec<(u64, usize)> = items.iter().copied().zip(0..).collect();
            want_order.sort();
            // Back into item order.
            let mut out = vec![Err(u64::MAX); items.len()];
            for ((_, r), (_, i)) in got.into_iter().zip(want_order) {
                out[i] = r;
            }
            Ok(out)
        }
    }
}

/// The serial model: per item the task's result, or (the whole-result
/// forms) the index of the failed item.
fn model(form: usize, items: &[u64]) -> Outcome {
    let per: Vec<Result<(u64, String), u64>> =
        items.iter().enumerate().map(|(i, &x)| if x == POISON { Err(i as u64) } else { Ok(mix(x)) }).collect();
    match form {
        0..=5 => match per.iter().find_map(|r| r.clone().err()) {
            Some(i) => Err(i),
            None => Ok(per),
        },
        _ => Ok(per),
    }
}

/// Every map form of the Pool (random items, at most one failing, random
/// chunk sizes) gives what the serial map gives: the same results in the
/// same order (`imap_unordered`: the same set), the failing item's
/// `Failed` at its own index, per item or for the whole call as the form
/// reports failures.
#[test]
fn every_pool_map_form_equals_the_serial_map() {
    let pool = Pool::new(2).unwrap();
    let items = (prop::collection::vec(0u64..1000, 0..60), prop::option::weighted(0.3, any::<prop::sample::Index>()))
        .prop_map(|(mut items, poison)| {
            if let Some(at) = poison {
                let at = at.index(items.len() + 1);
                items.insert(at, POISON);
            }
            items
        });
    let mut runner = TestRunner::new(Config { cases: cases() * 2, ..Config::default() });
    runner
        .run(&(items, 0..FORMS, prop_oneof![Just(0usize), 1usize..20]), |(items, form, chunk)| {
            prop_assert_eq!(run_form(&pool, form, &items, chunk), model(form, &items), "form {} chunk {}", form, chunk);
            Ok(())
        })
        .unwrap();
    close_and_join(pool);
}

// ---- handoff_struct! ----

#[derive(Debug, Clone, PartialEq, Default)]
struct Job {
    id: u32,
    name: String,
    tags: Vec<String>,
    payload: Vec<u8>,
    opt: Option<i64>,
    pair: (u16, String),
    ratio: f64,
}
shmproc::handoff_struct!(Job { id, name, tags, payload, opt, pair, ratio });

#[derive(Debug, Clone, PartialEq, Default)]
struct Batch {
    seq: u64,
    lead: Job,
    jobs: Vec<Job>,
    note: Option<String>,
}
shmproc::handoff_struct!(Batch { seq, lead, jobs, note });

fn job() -> impl Strategy<Value = Job> {
    (
        any::<u32>(),
        ".{0,12}",
        prop::collection::vec("[a-z]{0,6}", 0..4),
        prop::collection::vec(any::<u8>(), 0..40),
        any::<Option<i64>>(),
        (any::<u16>(), "[ -~]{0,8}"),
        -1e6f64..1e6,
    )
        .prop_map(|(id, name, tags, payload, opt, pair, ratio)| Job { id, name, tags, payload, opt, pair, ratio })
}

fn batch() -> impl Strategy<Value = Batch> {
    (any::<u64>(), job(), prop::collection::vec(job(), 0..5), prop::option::of(".{0,20}"))
        .prop_map(|(seq, lead, jobs, note)| Batch { seq, lead, jobs, note })
}

/// What `rework` does, serially.
fn reworked(mut b: Batch) -> Batch {
    b.seq = b.seq.wrapping_add(1);
    b.jobs.reverse();
    b.lead.tags.push(format!("n{}", b.jobs.len()));
    b.note = b.note.map(|n| n.to_uppercase());
    b
}

shmproc::task! {
    fn rework(b: Batch) -> Batch {
        reworked(b)
    }
}

/// Encoding then decoding gives the value back with nothing left over;
/// every strict prefix of the encoding is refused (an error, never a
/// panic or a wrong value).
#[test]
fn handoff_struct_round_trips_and_refuses_every_truncation() {
    let mut runner = TestRunner::new(Config { cases: cases() * 8, ..Config::default() });
    runner
        .run(&batch(), |b| {
            let mut bytes = Vec::new();
            b.encode(&mut bytes);
            let mut input = &bytes[..];
            prop_assert_eq!(Batch::decode(&mut input).ok(), Some(b.clone()));
            prop_assert!(input.is_empty(), "{} bytes left over", input.len());
            // decode_into an unrelated, owning destination.
            let mut into = reworked(b.clone());
            into.decode_into(&mut &bytes[..]).unwrap();
            prop_assert_eq!(&into, &b);
            for cut in 0..bytes.len() {
                prop_assert!(
                    Batch::decode(&mut &bytes[..cut]).is_err(),
                    "a prefix of {} of {} bytes decoded",
                    cut,
                    bytes.len()
                );
            }
            Ok(())
        })
        .unwrap();
}

/// A sequence of `Batch`es through a bounded and an unbounded queue
/// (`put`/`get`, and `put_ref`/`get_into` into a destination still
/// holding the previous value), a pipe, and a pool task: each arrives
/// equal, in order; the pool's results equal the serial `reworked`.
#[test]
fn handoff_structs_cross_queues_pipes_and_pool_tasks_unchanged() {
    let pool = Pool::new(2).unwrap();
    let bounded = Queue::<Batch>::new(8).unwrap();
    let unbounded = Queue::<Batch>::new(0).unwrap();
    let pipe = std::cell::RefCell::new(shmproc::pipe(false).unwrap());
    let mut runner = TestRunner::new(Config { cases: cases(), ..Config::default() });
    runner
        .run(&prop::collection::vec(batch(), 0..8), |bs| {
            for q in [&bounded, &unbounded] {
                for b in &bs {
                    q.put(b.clone()).unwrap();
                }
                for b in &bs {
                    prop_assert_eq!(&q.get_timeout(T).unwrap(), b);
                }
                let mut into = Batch::default();
                for b in &bs {
                    q.put_ref(b).unwrap();
                    q.get_into_timeout(&mut into, T).unwrap();
                    prop_assert_eq!(&into, b);
                }
                prop_assert!(q.empty());
            }
            let (rx, tx) = &mut *pipe.borrow_mut(); // Python order: (reader, writer)
            for b in &bs {
                tx.send_value(b).unwrap();
                prop_assert_eq!(&rx.recv_value_timeout::<Batch>(T).unwrap(), b);
            }
            let want: Vec<Batch> = bs.iter().cloned().map(reworked).collect();
            prop_assert_eq!(pool.map(rework, bs.clone()).unwrap(), want.clone());
            prop_assert_eq!(pool.map_async_chunked(rework, bs.clone(), 3).unwrap().get_timeout(T).unwrap(), want);
            Ok(())
        })
        .unwrap();
    close_and_join(pool);
}

/// Closes `pool` and joins it within a deadline (the test fails otherwise).
fn close_and_join(pool: shmproc::Pool) {
    pool.close();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = pool.join().map_err(|e| e.to_string());
        // Dropped here, before the test can end (its names go with it).
        drop(pool);
        let _ = tx.send(r);
    });
    match rx.recv_timeout(T) {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("pool.join() did not return within {T:?}"),
    }
    h.join().unwrap();
}

// ---- Manager: find-or-create by name, kinds and identities ----

/// What a Manager is asked for, by number: (its `Kind`, a type label).
const MGR_KINDS: [(shmproc::Kind, &str); 7] = [
    (shmproc::Kind::List, "list<u64>"),
    (shmproc::Kind::List, "list<String>"),
    (shmproc::Kind::Dict, "dict<String,u64>"),
    (shmproc::Kind::Value, "value<u64>"),
    (shmproc::Kind::Value, "value<u32>"),
    (shmproc::Kind::Lock, "lock"),
    (shmproc::Kind::MpmcQueue, "queue<u64>"),
];

/// Looks `name` up as kind `k` through `mgr`; its segment's name.
fn mgr_lookup(mgr: &shmproc::Manager, k: usize, name: &str) -> Result<String, shmproc::OpenError> {
    Ok(match k {
        0 => mgr.list::<u64>(name)?.name().to_owned(),
        1 => mgr.list::<String>(name)?.name().to_owned(),
        2 => mgr.dict::<String, u64>(name)?.name().to_owned(),
        3 => mgr.value(name, 1u64)?.name().to_owned(),
        4 => mgr.value(name, 1u32)?.name().to_owned(),
        5 => mgr.lock(name)?.name().to_owned(),
        _ => mgr.queue::<u64>(name, 3)?.name().to_owned(),
    })
}

#[derive(Debug, Clone)]
enum MOp {
    /// Look name n up as kind k through handle h.
    Lookup(usize, usize, usize),
    /// names() through handle h.
    Names(usize),
}

/// A Manager behaves like a map from names to (kind, type, segment): the
/// first lookup of a name makes it; later ones, through any handle, get
/// the same segment; another kind is `WrongKind`, the same kind of
/// another element type `IncompatibleType`, and neither changes
/// anything; `names()` lists exactly the names made, sorted, with their
/// kinds and segments.
#[test]
fn manager_lookups_match_a_map_model() {
    use std::collections::BTreeMap;
    let op = prop_oneof![
        8 => (0usize..5, 0..MGR_KINDS.len(), 0usize..2).prop_map(|(n, k, h)| MOp::Lookup(n, k, h)),
        1 => (0usize..2).prop_map(MOp::Names),
    ];
    let mut runner = TestRunner::new(Config { cases: cases() * 2, ..Config::default() });
    runner
        .run(&prop::collection::vec(op, 0..40), |ops| {
            let mgr = shmproc::Manager::new().unwrap();
            let handles = [mgr.clone(), shmproc::Manager::open(mgr.name()).unwrap()];
            let mut model: BTreeMap<String, (usize, String)> = BTreeMap::new();
            for op in ops {
                match op {
                    MOp::Lookup(n, k, h) => {
                        let name = format!("n{n}");
                        let got = mgr_lookup(&handles[h], k, &name);
                        match model.get(&name) {
                            None => {
                                let seg = got.map_err(|e| TestCaseError::fail(format!("make {name}: {e}")))?;
                                model.insert(name, (k, seg));
                            }
                            Some((k0, seg)) if MGR_KINDS[*k0].1 == MGR_KINDS[k].1 => {
                                let got = got.ok();
                                prop_assert_eq!(got.as_ref(), Some(seg), "{} found again", name);
                            }
                            Some((k0, _)) if MGR_KINDS[*k0].0 == MGR_KINDS[k].0 => {
                                prop_assert!(
                                    matches!(got, Err(shmproc::OpenError::IncompatibleType { .. })),
                                    "{} as {} after {}: {:?}",
                                    name,
                                    MGR_KINDS[k].1,
                                    MGR_KINDS[*k0].1,
                                    got
                                );
                            }
                            Some((k0, _)) => {
                                prop_assert!(
                                    matches!(got, Err(shmproc::OpenError::WrongKind { .. })),
                                    "{} as {} after {}: {:?}",
                                    name,
                                    MGR_KINDS[k].1,
                                    MGR_KINDS[*k0].1,
                                    got
                                );
                            }
                        }
                    }
                    MOp::Names(h) => {
                        let names: Vec<_> =
                            handles[h].names().unwrap().into_iter().map(|e| (e.name, e.kind, e.segment)).collect();
                        let want: Vec<_> =
                            model.iter().map(|(n, (k, seg))| (n.clone(), MGR_KINDS[*k].0, seg.clone())).collect();
                        prop_assert_eq!(names, want);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}
