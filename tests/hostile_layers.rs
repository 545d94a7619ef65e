//! Hostile layers are refused with a clear error, nothing appears outside the store, nothing is
//! left half-registered, and the store still works afterwards.
//!
//! Each hostile image (tests/support/mkimage.py) is otherwise valid (correct digests) and aims at
//! a sentinel directory outside the store: the directory must stay empty, its sibling target
//! file must keep its content and link count, and /abs-escape, /escape must not appear.
//! hostile-lying-digest is served with bytes that do not match its digest (DIGEST_MISMATCH).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;

/// Names the attacks try to create; none may exist anywhere in the store afterwards (the
/// failed layer is removed, so even a "contained" leftover would be a half-registered layer).
const ATTACK_NAMES: &[&str] = &[
    "escape",
    "abs-escape",
    "pwned",
    "stolen",
    "outside",
    "evil",
    "dirlink",
];

fn names_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if ATTACK_NAMES.contains(&name.as_str()) {
                out.insert(p.display().to_string());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out
}

struct HostState {
    passwd: (Vec<u8>, u64),
    target: (Vec<u8>, u64),
}

fn host_state(fx: &Fixtures) -> HostState {
    let read = |p: &Path| (fs::read(p).unwrap(), fs::metadata(p).unwrap().nlink());
    HostState {
        passwd: read(Path::new("/etc/passwd")),
        target: read(&fx.sentinel_target()),
    }
}

fn assert_nothing_escaped(fx: &Fixtures, before: &HostState, store: &Store, image: &str) {
    let sentinel: Vec<PathBuf> = fs::read_dir(fx.sentinel())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        sentinel.is_empty(),
        "{image}: created outside the store: {sentinel:?}"
    );
    for p in ["/abs-escape", "/escape", "/pwned"] {
        assert!(fs::symlink_metadata(p).is_err(), "{image}: {p} was created");
    }
    let after = host_state(fx);
    assert_eq!(
        after.passwd, before.passwd,
        "{image}: /etc/passwd changed (content or link count)"
    );
    assert_eq!(
        after.target, before.target,
        "{image}: the sentinel target changed (content or link count)"
    );
    let left = names_under(&store.dir);
    assert!(
        left.is_empty(),
        "{image}: attack files left in the store: {left:?}"
    );
}

fn refuse(image: &str, driver: &str, from_layout: bool) {
    if !ensure_root_or_skip("layer extraction with ownership needs root") {
        return;
    }
    let Some(fx) = fixtures() else { return };
    let reg = if from_layout { None } else { registry() };
    if !from_layout && reg.is_none() {
        return;
    }
    let store = Store::new(driver);
    let reference = match reg {
        Some(r) => r.image_ref(image),
        None => fx.oci_ref(image),
    };
    let expected = str_of(&fx.image(image)["expected_status"]);
    let before = host_state(fx);

    let r = store.cmd(&["pull", "--tls-verify=false", &reference]);
    assert_error_line(
        &r,
        &[expected.as_str()],
        &format!("pull of {image} ({reference})"),
    );
    eprintln!(
        "{image} ({driver}): {}",
        r.stderr.lines().last().unwrap_or("")
    );

    assert_nothing_escaped(fx, &before, &store, image);
    assert!(
        store.layers().is_empty(),
        "{image}: layers left: {:#?}",
        store.layers()
    );
    assert!(
        store.images().is_empty(),
        "{image}: image registered: {:#?}",
        store.images()
    );
    assert_store_consistent(&store, &format!("after refusing {image}"));

    // the store still works: the fixture pulls and mounts
    let id = match reg {
        Some(r) => {
            str_of(&store.json(&["pull", "--tls-verify=false", &r.image_ref("fixture")])["id"])
        }
        None => str_of(&store.json(&["pull", &fx.oci_ref("fixture")])["id"]),
    };
    assert_eq!(id, fx.id("fixture"));
    let c = str_of(&store.json(&["container", &id])["id"]);
    let path = PathBuf::from(str_of(&store.json(&["mount", &c])["path"]));
    assert_fixture_shape(fx, &path);
    store.ok(&["unmount", &c]);
    // and a second attempt at the hostile image is refused the same way
    let again = store.cmd(&["pull", "--tls-verify=false", &reference]);
    assert_error_line(
        &again,
        &[expected.as_str()],
        &format!("second pull of {image}"),
    );
    assert_nothing_escaped(fx, &before, &store, image);
    assert_eq!(store.images().len(), 1);
    assert_eq!(
        store.layers().len(),
        4,
        "fixture's 3 layers + the container's"
    );
    assert_store_consistent(&store, &format!("after refusing {image} twice"));
}

#[test]
fn traversal_is_refused() {
    refuse("hostile-traversal", "overlay", false);
}

#[test]
fn absolute_paths_are_refused() {
    refuse("hostile-absolute", "overlay", false);
}

#[test]
fn symlink_escape_is_refused() {
    refuse("hostile-symlink", "overlay", false);
}

#[test]
fn hardlink_to_host_file_is_refused() {
    refuse("hostile-hardlink", "overlay", false);
}

#[test]
fn hardlink_dotdot_is_refused() {
    refuse("hostile-hardlink-dotdot", "overlay", false);
}

#[test]
fn write_through_symlink_is_refused() {
    refuse("hostile-write-through-symlink", "overlay", false);
}

#[test]
fn lying_digest_from_registry_is_refused() {
    refuse("hostile-lying-digest", "overlay", false);
}

#[test]
fn lying_digest_from_layout_is_refused() {
    refuse("hostile-lying-digest", "overlay", true);
}

#[test]
fn hostile_images_are_refused_with_vfs() {
    for image in [
        "hostile-traversal",
        "hostile-absolute",
        "hostile-symlink",
        "hostile-hardlink",
        "hostile-hardlink-dotdot",
        "hostile-write-through-symlink",
        "hostile-lying-digest",
    ] {
        refuse(image, "vfs", false);
    }
}

#[test]
fn hostile_layouts_are_refused_via_oci() {
    for image in [
        "hostile-traversal",
        "hostile-symlink",
        "hostile-hardlink-dotdot",
    ] {
        refuse(image, "overlay", true);
    }
}
