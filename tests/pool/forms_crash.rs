//! `kill -9` of a worker in the middle of a task, in every form that runs
//! tasks (the first crash tests covered `map_async` / `map_results` and the
//! bulk map only): `imap` (default and chunked), `imap_unordered`,
//! `map_chunked`, `starmap_async`, `apply`, `apply_async`. Each time exactly
//! the parked item fails with `WorkerLost { pid, signal: Some(9), index }`,
//! every other item is right, and the same pool runs the next form.

use super::*;

const N: u64 = 60;
const VICTIM: u64 = 33;

/// Every item's `(index, outcome)`.
type Outcomes = Vec<(u64, Result<u64, TaskError>)>;
/// A form run over the items.
type Form = fn(&Pool, Vec<(u64, u64, Value<u32>)>) -> Outcomes;

fn items(slot: &Value<u32>) -> Vec<(u64, u64, Value<u32>)> {
    (0..N).map(|x| (x, VICTIM, slot.clone())).collect()
}

/// Waits for the victim item to park its worker, kills that worker; its pid.
fn kill_the_parked_worker(slot: &Value<u32>, killed: &mut Vec<u32>) -> u32 {
    wait_until("the victim item to start", || slot.get().unwrap() != 0);
    let victim = slot.get().unwrap();
    slot.set(0).unwrap();
    assert!(!killed.contains(&victim), "a worker killed before ran the item again");
    kill9(victim);
    killed.push(victim);
    victim
}

fn lost(e: &TaskError, victim: u32, index: u64) -> bool {
    matches!(e, TaskError::WorkerLost { pid, signal: Some(9), index: i } if *pid == victim && *i == index)
}

/// `(index, outcome)` of every item: exactly `VICTIM` lost to `victim`, the rest `x * 3`.
fn check(form: &str, mut got: Outcomes, victim: u32) {
    got.sort_by_key(|(i, _)| *i);
    assert_eq!(got.len() as u64, N, "{form}: every item has an outcome");
    for (i, o) in got {
        match o {
            Err(e) if i == VICTIM => assert!(lost(&e, victim, VICTIM), "{form}: item {i}: {e:?}"),
            o => assert_eq!(o, Ok(i * 3), "{form}: item {i}"),
        }
    }
}

/// Runs `run` (which submits a form over `items` and returns every item's
/// outcome) on a thread, kills the parked worker, checks the outcomes.
fn one_form(pool: &std::sync::Arc<Pool>, slot: &Value<u32>, killed: &mut Vec<u32>, form: &'static str, run: Form) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (p, it) = (std::sync::Arc::clone(pool), items(slot));
    let h = std::thread::spawn(move || tx.send(run(&p, it)).unwrap());
    let victim = kill_the_parked_worker(slot, killed);
    let got = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("{form} did not finish within {DEADLINE:?}"));
    h.join().unwrap();
    check(form, got, victim);
}

fn indexed(v: impl IntoIterator<Item = Result<u64, TaskError>>) -> Outcomes {
    (0..).zip(v).collect()
}

/// `imap_unordered` gives no index with a success: the value says it (x * 3).
fn by_value(v: impl IntoIterator<Item = Result<u64, TaskError>>) -> Outcomes {
    v.into_iter()
        .map(|o| match &o {
            Ok(x) => (x / 3, o),
            Err(TaskError::WorkerLost { index, .. }) => (*index, o),
            Err(e) => panic!("imap_unordered: {e:?}"),
        })
        .collect()
}

#[test]
fn kill_9_mid_task_in_every_form_fails_exactly_that_item() {
    let _watchdog = watchdog("kill_9_mid_task_in_every_form_fails_exactly_that_item");
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let slot = Value::new(0u32).unwrap();
    let mut killed = Vec::new();
    one_form(&pool, &slot, &mut killed, "imap", |p, it| indexed(p.imap(park_on, it).unwrap()));
    one_form(&pool, &slot, &mut killed, "imap chunksize 7", |p, it| indexed(p.imap(park_on, it).unwrap().chunksize(7)));
    one_form(&pool, &slot, &mut killed, "imap_unordered", |p, it| by_value(p.imap_unordered(park_on, it).unwrap()));
    one_form(&pool, &slot, &mut killed, "map_results chunksize 7", |p, it| {
        indexed(p.map_results(park_on, it, 7).unwrap())
    });
    // The whole-job forms fail with the lost item's error; the items are
    // checked by rerunning without the victim.
    for form in ["map_chunked 7", "starmap_async"] {
        let (tx, rx) = std::sync::mpsc::channel();
        let (p, it) = (std::sync::Arc::clone(&pool), items(&slot));
        let h = std::thread::spawn(move || {
            let r = if form == "starmap_async" {
                p.starmap_async(park_on, it).unwrap().get()
            } else {
                p.map_chunked(park_on, it, 7)
            };
            tx.send(r).unwrap()
        });
        let victim = kill_the_parked_worker(&slot, &mut killed);
        let r = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("{form} did not finish within {DEADLINE:?}"));
        h.join().unwrap();
        match r {
            Err(PoolError::Task(e)) => assert!(lost(&e, victim, VICTIM), "{form}: {e:?}"),
            other => panic!("{form}: {other:?}"),
        }
    }
    // apply and apply_async: the one item (index 0) is lost.
    for form in ["apply", "apply_async"] {
        let (tx, rx) = std::sync::mpsc::channel();
        let (p, s) = (std::sync::Arc::clone(&pool), slot.clone());
        let h = std::thread::spawn(move || {
            let arg = (VICTIM, VICTIM, s);
            let r = if form == "apply" { p.apply(park_on, arg) } else { p.apply_async(park_on, arg).unwrap().get() };
            tx.send(r).unwrap()
        });
        let victim = kill_the_parked_worker(&slot, &mut killed);
        let r = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("{form} did not finish within {DEADLINE:?}"));
        h.join().unwrap();
        match r {
            Err(PoolError::Task(e)) => assert!(lost(&e, victim, 0), "{form}: {e:?}"),
            other => panic!("{form}: {other:?}"),
        }
    }
    // Still a working pool, with every killed worker replaced.
    assert_eq!(pool.map(square, 0..1000).unwrap(), serial(1000));
    assert_eq!(pool.apply(park_on, (1, VICTIM, slot.clone())).unwrap(), 3);
    let pool = std::sync::Arc::try_unwrap(pool).unwrap();
    finish(pool, &killed);
}
