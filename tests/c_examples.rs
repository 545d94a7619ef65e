//! The C examples: every program in c-examples/ compiles warning-free as strict C11 against the
//! committed header, bad_input's 100+ wrong-input checks pass, and quickstart's tour runs
//! against the test registry.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

/// Compiles c-examples/NAME.c with -Werror -pedantic; returns the binary.
fn compile(name: &str) -> PathBuf {
    cimagectl(); // builds the library (and proves cimagectl.c compiles)
    let repo = repo_dir();
    let lib_dir = target_dir().join("debug");
    // Tests run in parallel and may compile the same program: one output file per call.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = work_dir().join(format!("{name}-pedantic-{n}"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let r = run(Command::new(cc)
        .current_dir(&repo)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-O2",
        ])
        .arg(format!("-I{}", repo.join("include").display()))
        .arg(format!("c-examples/{name}.c"))
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lcimage")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-o")
        .arg(&out));
    assert!(
        r.ok(),
        "c-examples/{name}.c does not compile cleanly:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.trim().is_empty(),
        "c-examples/{name}.c: compiler output:\n{}",
        r.stderr
    );
    out
}

#[test]
fn every_example_compiles_strictly() {
    let dir = repo_dir().join("c-examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("c") {
            compile(p.file_stem().unwrap().to_str().unwrap());
            n += 1;
        }
    }
    assert!(
        n >= 3,
        "expected cimagectl.c, quickstart.c and bad_input.c, found {n} programs"
    );
}

#[test]
fn bad_input_gets_statuses_never_crashes() {
    if !ensure_root_or_skip("bad_input mounts overlay containers") {
        return;
    }
    let bin = compile("bad_input");
    let scratch = tempfile::tempdir().unwrap();
    let r = run(Command::new(&bin).arg(scratch.path()));
    assert!(
        r.ok(),
        "bad_input failed ({}):\nstdout:\n{}\nstderr:\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    let checks = r.stdout.lines().filter(|l| l.starts_with("ok")).count();
    assert!(
        checks >= 100,
        "only {checks} checks reported:\n{}",
        r.stdout
    );
    if let Some(m) = mounts_under(scratch.path()).first() {
        panic!("bad_input left a mount behind: {}", m.mount_point.display());
    }
}

#[test]
fn quickstart_runs_the_tour() {
    if !ensure_root_or_skip("quickstart mounts an overlay container") {
        return;
    }
    let Some((_, reg)) = fixtures_and_registry() else {
        return;
    };
    let bin = compile("quickstart");
    let store = Store::new("overlay");
    let r = run(Command::new(&bin)
        .arg(&store.root)
        .arg(&store.run_root)
        .arg(reg.image_ref("fixture")));
    assert!(
        r.ok(),
        "quickstart failed ({}):\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains(&store.root.display().to_string()),
        "no mount point printed:\n{}",
        r.stdout
    );
    // The tour deleted its container; the image stays.
    let containers = store.json(&["containers"]);
    assert_eq!(containers.as_array().map(Vec::len), Some(0), "{containers}");
    let images = store.json(&["images"]);
    assert_eq!(images.as_array().map(Vec::len), Some(1), "{images}");
}
