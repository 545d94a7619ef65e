//! The root file system cimage mounts equals, file by file, what `umoci unpack` makes of the same
//! OCI layout: a three-layer image with file and directory whiteouts, an opaque dir, a hard
//! link, symlinks (relative and absolute), a FIFO, uid 1000 files, a setuid file, an xattr and a
//! file replaced by a directory.
//!
//! Compared per path: type, permission bits (incl. setuid), uid, gid, size and sha256 of regular
//! files, symlink targets, xattrs (outside the overlay/security namespaces, which overlayfs
//! hides or uses itself), mtimes of regular files, and the hard-link groups.
//! Not compared: mtimes of directories (creating entries inside a directory updates its mtime
//! after extraction; neither tool restores them in the same order) and of symlinks/FIFOs, and
//! the mode of the root directory: containers/storage gives a base layer's root 0555 when the
//! tar has no "./" entry (store-format.md §4.4) while umoci makes rootfs/ 0755.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn compare_with_umoci(driver: &str) {
    if !ensure_root_or_skip("umoci unpack keeps ownership only as root; mounts need root") {
        return;
    }
    if !ensure_tools_or_skip(&["umoci"]) {
        return;
    }
    let Some(fx) = fixtures() else { return };
    let store = Store::new(driver);

    // the reference: umoci's unpacking of the layout
    let bundle = store.dir.join("bundle");
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{TAG}", fx.layout_dir("fixture").display()))
            .arg(&bundle),
    );
    let reference = bundle.join("rootfs");
    assert_fixture_shape(fx, &reference);

    // ours: pulled from the same layout (and from the registry when there is one)
    let id = str_of(&store.json(&["pull", &fx.oci_ref("fixture")])["id"]);
    assert_eq!(id, fx.id("fixture"));
    let cid = str_of(&store.json(&["container", "--name", "cmp", &id])["id"]);
    let mounted = PathBuf::from(str_of(&store.json(&["mount", &cid])["path"]));
    assert_fixture_shape(fx, &mounted);

    let want = walk_tree(&reference);
    let got = walk_tree(&mounted);
    let diffs = tree_differences("umoci", &want, "cimage", &got);
    assert!(
        diffs.is_empty(),
        "{driver}: cimage's rootfs differs from umoci's ({} entries vs {}):\n{}",
        want.len(),
        got.len(),
        diffs.join("\n")
    );
    // the comparison really looked at the interesting entries
    for p in [
        "bin/suid",
        "usr/bin/sh",
        "run/fifo",
        "home/user/owned.txt",
        "etc/xattr.txt",
    ] {
        assert!(got.contains_key(p), "{p} missing from the walk");
    }
    assert_eq!(got["bin/suid"].mode, 0o4755);
    assert_eq!(got["usr/bin/sh"].content, "/bin/hello");
    assert_eq!(
        (
            got["home/user"].uid,
            got["home/user"].gid,
            got["home/user"].mode
        ),
        (1000, 1000, 0o700)
    );
    assert_eq!(
        got["etc/xattr.txt"].xattrs.len(),
        1,
        "user.test xattr: {:?}",
        got["etc/xattr.txt"]
    );
    assert_eq!(
        hardlink_groups(&got),
        vec![vec!["data/b.txt".to_string(), "data/hard.txt".to_string()]]
    );

    store.ok(&["unmount", &cid]);
    store.ok(&["delete", &cid]);

    // the same image through the registry gives the same tree
    if let Some(reg) = registry() {
        let other = Store::new(driver);
        other.ok(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);
        let c = str_of(&other.json(&["container", &id])["id"]);
        let m = PathBuf::from(str_of(&other.json(&["mount", &c])["path"]));
        let diffs = tree_differences("umoci", &want, "cimage (registry)", &walk_tree(&m));
        assert!(
            diffs.is_empty(),
            "{driver} via the registry:\n{}",
            diffs.join("\n")
        );
        other.ok(&["unmount", &c]);
    }
}

#[test]
fn rootfs_equals_umoci_overlay() {
    compare_with_umoci("overlay");
}

#[test]
fn rootfs_equals_umoci_vfs() {
    compare_with_umoci("vfs");
}
