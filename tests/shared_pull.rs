//! Shared work between processes: two cimagectl processes pulling at once into one store, through
//! the request-counting (and throttling) proxy in front of the test registry, download each layer
//! blob once. The per-digest lock in the run root (RR/<driver>-locks/<digest>) makes the second
//! process wait for the first and then find the layer committed. Also for two different images
//! that share layers. Afterwards no blob lock is held and the store is consistent.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cimage::store::lock::LockFile;
use common::*;
use serde_json::Value;

fn spawn_pull(store: &Store, reference: &str) -> Child {
    store
        .command(&["--json", "pull", "--tls-verify=false", reference])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cimagectl pull")
}

fn wait(child: Child, started: Instant) -> Ran {
    // cimagectl ends on its own; the proxy's throttle bounds how long.
    let out = child.wait_with_output().expect("pull output");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "pulls took {:?}",
        started.elapsed()
    );
    Ran {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn shared(driver: &str, images: [&str; 2]) {
    if !ensure_root_or_skip("the store keeps file owners") {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let store = Store::new(driver);
    store.ok(&["store"]);
    // ~70 KiB per layer blob at 100 KiB/s per connection: each blob takes most of a second, so
    // the two processes overlap on every layer.
    let proxy = Proxy::start(reg.port(), 100 * 1024);
    let started = Instant::now();
    let children: Vec<Child> = images
        .iter()
        .map(|i| spawn_pull(&store, &proxy.image_ref(i)))
        .collect();
    let results: Vec<Ran> = children.into_iter().map(|c| wait(c, started)).collect();
    eprintln!(
        "{driver} {images:?}: both pulls took {:?}",
        started.elapsed()
    );
    for (i, r) in results.iter().enumerate() {
        assert!(r.ok(), "pull of {} failed:\n{}", images[i], r.stderr);
        let v: Value = serde_json::from_str(r.stdout.trim()).expect("pull --json");
        assert_eq!(v["id"], fx.id(images[i]).as_str());
    }
    let mut blobs: Vec<String> = images.iter().flat_map(|i| fx.blob_digests(i)).collect();
    blobs.sort();
    blobs.dedup();
    for blob in &blobs {
        assert_eq!(
            proxy.blob_gets(blob),
            1,
            "blob {blob} was downloaded {} times; requests:\n{}",
            proxy.blob_gets(blob),
            proxy.requests().join("\n")
        );
    }
    // At least one process waited for the other or found its layer.
    let skipped = results
        .iter()
        .map(|r| r.stderr.matches("skipped: already exists").count())
        .sum::<usize>();
    assert!(
        skipped >= 1,
        "no layer was reused:\n{}\n{}",
        results[0].stderr,
        results[1].stderr
    );

    let locks = store.run_root.join(format!("{driver}-locks"));
    let lock_files: Vec<_> = std::fs::read_dir(&locks)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        !lock_files.is_empty(),
        "no per-digest lock in {}",
        locks.display()
    );
    for path in lock_files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(blobs.contains(&name), "lock for an unknown blob: {name}");
        assert!(
            LockFile::new(&path).try_lock_exclusive().unwrap().is_some(),
            "{name} is still locked"
        );
    }
    assert_store_consistent(&store, "after two pulls at once");
    let layer_ids: std::collections::BTreeSet<String> = store
        .layers_json()
        .iter()
        .map(|l| str_of(&l["id"]))
        .collect();
    let expected: std::collections::BTreeSet<String> =
        images.iter().flat_map(|i| fx.layer_ids(i)).collect();
    assert_eq!(layer_ids, expected);
}

#[test]
fn the_same_image_twice_downloads_each_blob_once_overlay() {
    shared("overlay", ["fixture", "fixture"]);
}

#[test]
fn the_same_image_twice_downloads_each_blob_once_vfs() {
    shared("vfs", ["fixture", "fixture"]);
}

#[test]
fn images_sharing_layers_download_the_shared_blobs_once() {
    shared("overlay", ["fixture", "sibling"]);
}
