//! Full disk: stores on a small tmpfs made by the test.
//! * An image bigger than the file system fails with NO_SPACE, leaves the space as it found
//!   it (no staging directory, no partial layer), and the store stays usable: a smaller image
//!   pulls, makes a container, mounts.
//! * With the file system filled up to various points (so that the space runs out while
//!   extracting, while writing the tar-split, while writing layers.json or images.json, ...),
//!   every pull either succeeds or fails with NO_SPACE; the store stays consistent each time,
//!   and once space is freed the pull succeeds.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A tmpfs of `mib` MiB, unmounted on drop.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn new(mib: u64) -> SmallFs {
        let dir = tempfile::Builder::new()
            .prefix("cimage-fulldisk-")
            .tempdir()
            .unwrap()
            .keep();
        nix::mount::mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={mib}m,mode=0700").as_str()),
        )
        .expect("mount a tmpfs");
        SmallFs { dir }
    }

    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).unwrap();
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }

    fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).unwrap();
        s.blocks_available() * s.fragment_size()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        unmount_all_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A store whose graph root is on the small file system (run root stays on the normal one).
fn store_on(small: &SmallFs, driver: &str) -> Store {
    let store = Store::new(driver);
    let root = small.dir.join("root");
    // Store keeps its graph root under its own directory: point it at the small fs instead.
    fs::create_dir_all(&root).unwrap();
    let _ = fs::remove_dir_all(&store.root);
    std::os::unix::fs::symlink(&root, &store.root).unwrap();
    store
}

fn assert_no_space(r: &Ran, what: &str) {
    assert_error_line(r, &["NO_SPACE"], what);
}

fn no_staging_left(small: &SmallFs) -> Vec<String> {
    let mut left = Vec::new();
    let mut stack = vec![small.dir.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("cimage-staging") || name.starts_with(".tmp-") {
                left.push(e.path().display().to_string());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) && name != "l" {
                stack.push(e.path());
            }
        }
    }
    left
}

fn check_clean(store: &Store, what: &str) {
    let r = store.cmd(&["--json", "check"]);
    assert_eq!(r.status, 0, "{what}: check: {}\n{}", r.stdout, r.stderr);
    assert_store_consistent(store, what);
}

fn too_big_image_fails_and_cleans_up(driver: &str) {
    let Some((_fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let small = SmallFs::new(16);
    let store = store_on(&small, driver);
    store.ok(&["store"]);
    let before = small.used();
    // big: one 24 MiB layer.
    let r = store.cmd(&["pull", "--tls-verify=false", &reg.image_ref("big")]);
    assert_no_space(&r, &format!("{driver}: pulling 24 MiB into 16 MiB"));
    let after = small.used();
    assert!(
        after <= before + 64 * 1024,
        "{driver}: the failed pull left {} KiB behind",
        (after - before) / 1024
    );
    assert_eq!(no_staging_left(&small), Vec::<String>::new());
    assert!(store.json(&["images"]).as_array().unwrap().is_empty());
    assert!(store.json(&["layers"]).as_array().unwrap().is_empty());
    check_clean(&store, "after the failed pull");
    // Still usable.
    store.ok(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);
    let c = store.json(&["container", &reg.name("fixture")]);
    let id = str_of(&c["id"]);
    let mount = store.ok(&["mount", &id]).stdout.trim().to_string();
    assert!(Path::new(&mount).join("bin/hello").exists());
    store.ok(&["unmount", &id]);
    check_clean(&store, "after the smaller pull");
    store.ok(&["wipe"]);
}

#[test]
fn too_big_image_overlay() {
    if ensure_root_or_skip("mounting a tmpfs") {
        too_big_image_fails_and_cleans_up("overlay");
    }
}

#[test]
fn too_big_image_vfs() {
    if ensure_root_or_skip("mounting a tmpfs") {
        too_big_image_fails_and_cleans_up("vfs");
    }
}

#[test]
fn space_running_out_at_every_step() {
    if !ensure_root_or_skip("mounting a tmpfs") {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let small = SmallFs::new(8);
    let store = store_on(&small, "overlay");
    store.ok(&["store"]);
    // Enough for everything the fixture needs (layers, tar-splits, metadata) with room to
    // spare; the filler leaves `room` bytes of it free.
    let need: u64 = fx
        .diff_sizes("fixture")
        .iter()
        .map(|s| *s as u64)
        .sum::<u64>()
        * 2
        + (256 << 10);
    let filler = small.dir.join("filler");
    let mut outcomes = (0usize, 0usize);
    let mut room = 0u64;
    while room <= need {
        let _ = fs::remove_file(&filler);
        let free = small.free();
        let size = free.saturating_sub(room);
        let f = fs::File::create(&filler).unwrap();
        // Real pages, not a sparse file: tmpfs counts what is written.
        let chunk = vec![0xA5u8; 1 << 20];
        let mut left = size;
        use std::io::Write;
        let mut w = std::io::BufWriter::new(f);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if w.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = w.flush();
        drop(w);
        let what = format!("pull with {} KiB free", small.free() / 1024);
        let r = store.cmd(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);
        if r.ok() {
            outcomes.0 += 1;
        } else {
            assert_no_space(&r, &what);
            outcomes.1 += 1;
            assert!(
                store.json(&["images"]).as_array().unwrap().is_empty(),
                "{what}: a failed pull recorded the image"
            );
        }
        let _ = fs::remove_file(&filler);
        check_clean(&store, &what);
        assert_eq!(no_staging_left(&small), Vec::<String>::new(), "{what}");
        // With the space back the pull works, and the image is whole.
        store.ok(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);
        check_clean(&store, &format!("{what}, then with space"));
        store.ok(&["wipe"]);
        room += 48 << 10;
    }
    assert!(
        outcomes.1 > 0,
        "the space never ran out: the filler is wrong"
    );
    eprintln!(
        "full disk: {} pulls with the space running out at different points: {} succeeded, {} NO_SPACE, store consistent after each",
        outcomes.0 + outcomes.1,
        outcomes.0,
        outcomes.1
    );
}
