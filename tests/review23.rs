//! Hostile review, round 3 of the manager layer: the `Manager` registry's
//! ownership races, groups, nested containers.

mod common;

use std::time::{Duration, Instant};

use shmproc::{Manager, Process};

/// The files in /dev/shm of segment `seg`.
fn exists(seg: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm/{}{seg}", shmproc::NAME_PREFIX)).exists()
}

shmproc::entry! {
    /// Creates anonymous lists through `mgr` as fast as it can until the
    /// Manager is gone (its creator dropped it), writing each list's
    /// segment name to the file `report` (one a line) as soon as it has it.
    fn create_until_gone(args: (Manager, String)) -> Result<(), String> {
        use std::io::Write;
        let (mgr, report) = args;
        let mut out = std::fs::File::create(&report).map_err(|e| e.to_string())?;
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            match mgr.list_anon::<u64>() {
                Ok(l) => writeln!(out, "{}", l.name()).map_err(|e| e.to_string())?,
                Err(shmproc::OpenError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(format!("list_anon: {e}")),
            }
        }
        Err("the Manager was not gone within 30 s".into())
    }
}

/// Regression: the creator's last `Manager` handle dropping while a child
/// creates containers through the Manager left some of the child's
/// containers in /dev/shm for good (persisted, named by no registry). The
/// drop listed the registry without its lock and removed the registry's
/// name after, so a container recorded in between (or one being made,
/// whose segment the child created after the drop had removed its name)
/// was never removed.
#[test]
fn a_manager_dropped_while_a_child_creates_through_it_leaves_nothing() {
    for round in 0..6 {
        let mgr = Manager::new().unwrap();
        // Many objects: the drop's removal of them takes a while.
        for i in 0..300 {
            mgr.lock(&format!("l{i}")).unwrap();
        }
        let report = std::env::temp_dir().join(format!("shmproc-r23-cug-{}-{round}", std::process::id()));
        let mut p = Process::new(create_until_gone, (mgr.clone(), report.to_str().unwrap().to_owned()));
        p.start().unwrap();
        // Drop once the child is creating.
        let deadline = Instant::now() + common::DEADLINE;
        while mgr.names().unwrap().len() < 320 {
            assert!(Instant::now() < deadline, "the child created nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(mgr);
        let end = common::join(&p);
        let made = std::fs::read_to_string(&report).unwrap_or_default();
        let _ = std::fs::remove_file(&report);
        assert!(end.is_ok(), "round {round}: the child failed: {end:?}");
        let left: Vec<&str> = made.lines().filter(|s| exists(s)).collect();
        for s in &left {
            let _ = shmproc::unlink(s);
        }
        assert!(
            left.is_empty(),
            "round {round}: {} of {} lists left in /dev/shm: {left:?}",
            left.len(),
            made.lines().count()
        );
    }
}
