//! The seed flow through cimagectl against a real registry (Debian's docker-registry serving the
//! images tests/support/mkimage.py builds), with both drivers: store, pull, pull again (nothing
//! fetched), images, layers, container, containers, mount, write a file, unmount (the file stays
//! in the container's layer), delete container, delete image, wipe. Plus the reference forms
//! (bare name, oci:), zstd layers, image indexes, pull policies and error reporting.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::Value;

fn prerequisites(why: &str) -> Option<(&'static Fixtures, &'static Registry)> {
    if !ensure_root_or_skip(why) {
        return None;
    }
    fixtures_and_registry()
}

fn short(digest: &str) -> &str {
    &hex_of(digest)[..12]
}

fn find<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|v| v["id"] == id)
        .unwrap_or_else(|| panic!("no entry with id {id} in {list:#?}"))
}

fn names(v: &Value) -> Vec<String> {
    v["names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The lowerdir= entries of an overlay mount, from its super options.
fn lowerdirs(m: &MountInfo) -> Vec<String> {
    option_value(m, "lowerdir")
        .map(|v| v.split(':').map(String::from).collect())
        .unwrap_or_default()
}

fn option_value(m: &MountInfo, key: &str) -> Option<String> {
    m.super_options
        .split(',')
        .chain(m.options.split(','))
        .find_map(|o| o.strip_prefix(&format!("{key}=")).map(String::from))
}

fn seed_flow(driver: &str) {
    let Some((fx, reg)) = prerequisites("mounts and file ownership need root") else {
        return;
    };
    let store = Store::new(driver);
    // Through a counting proxy, to see what each pull fetches.
    let proxy = Proxy::start(reg.port(), 0);
    let reference = proxy.image_ref("fixture");
    let name = proxy.name("fixture");
    let id = fx.id("fixture");
    let blobs = fx.blob_digests("fixture");
    let diff_ids = fx.diff_ids("fixture");
    let layer_ids = fx.layer_ids("fixture");
    let diff_sizes = fx.diff_sizes("fixture");

    // store
    let info = store.json(&["store"]);
    assert_eq!(info["root"], store.root.display().to_string(), "{info}");
    assert_eq!(
        info["run_root"],
        store.run_root.display().to_string(),
        "{info}"
    );
    assert_eq!(info["driver"], driver, "{info}");
    let status = info["status"].as_object().expect("status object");
    if driver == "overlay" {
        for key in [
            "Backing Filesystem",
            "Supports d_type",
            "Native Overlay Diff",
            "Using metacopy",
        ] {
            assert!(
                status.contains_key(key),
                "overlay status lacks {key:?}: {info}"
            );
        }
    }
    let plain = store.ok(&["store"]);
    assert!(
        plain.stdout.contains(driver),
        "store (table) should name the driver:\n{}",
        plain.stdout
    );

    // pull: progress lines as skopeo prints them, then the image ID
    let first = store.ok(&["pull", "--tls-verify=false", &reference]);
    assert_eq!(first.stdout.trim(), id, "pull prints the image ID");
    for b in &blobs {
        let line = format!("Copying blob {} done", short(b));
        assert!(
            first.stderr.contains(&line),
            "missing {line:?} in:\n{}",
            first.stderr
        );
    }
    let config_line = format!(
        "Copying config {} done",
        short(&fx.config_digest("fixture"))
    );
    assert!(
        first.stderr.contains(&config_line),
        "missing {config_line:?} in:\n{}",
        first.stderr
    );
    assert!(
        first
            .stderr
            .contains("Writing manifest to image destination"),
        "{}",
        first.stderr
    );
    for b in &blobs {
        assert_eq!(
            proxy.blob_gets(b),
            1,
            "first pull fetches {b} once: {:?}",
            proxy.requests()
        );
    }

    // pull again: nothing fetched, every layer reported as already there
    proxy.reset_counters();
    let again = store.ok(&["--json", "pull", "--tls-verify=false", &reference]);
    let pulled: Value = serde_json::from_str(again.stdout.trim()).expect("pull --json");
    assert_eq!(pulled["id"], id.as_str());
    assert_eq!(pulled["digest"], fx.manifest_digest("fixture").as_str());
    assert!(names(&pulled).contains(&name), "{pulled}");
    for b in &blobs {
        let line = format!("Copying blob {} skipped: already exists", short(b));
        assert!(
            again.stderr.contains(&line),
            "missing {line:?} in:\n{}",
            again.stderr
        );
        assert!(!again
            .stderr
            .contains(&format!("Copying blob {} done", short(b))));
        assert_eq!(
            proxy.blob_gets(b),
            0,
            "second pull fetched {b}: {:?}",
            proxy.requests()
        );
    }

    // images
    let images = store.images();
    assert_eq!(images.len(), 1, "{images:#?}");
    let img = &images[0];
    assert_eq!(img["id"], id.as_str());
    assert_eq!(names(img), vec![name.clone()]);
    assert_eq!(img["digest"], fx.manifest_digest("fixture").as_str());
    assert_eq!(
        img["size"].as_i64(),
        Some(diff_sizes.iter().sum::<i64>()),
        "{img}"
    );
    assert!(
        img["created"]
            .as_str()
            .unwrap_or("")
            .starts_with("2024-01-01T00:00:00"),
        "created comes from the config: {img}"
    );
    let table = store.ok(&["images"]);
    assert!(
        table.stdout.contains(&id[..12]),
        "images table shows the short ID:\n{}",
        table.stdout
    );

    // layers: IDs per store-format.md §3.2, chained, with the digests and sizes of the image
    let layers = store.layers();
    assert_eq!(layers.len(), 3, "{layers:#?}");
    for (i, lid) in layer_ids.iter().enumerate() {
        let l = find(&layers, lid);
        let parent = if i == 0 {
            Value::Null
        } else {
            Value::from(layer_ids[i - 1].as_str())
        };
        assert_eq!(l["parent"], parent, "{l}");
        assert_eq!(l["diff_digest"], diff_ids[i].as_str(), "{l}");
        assert_eq!(l["compressed_digest"], blobs[i].as_str(), "{l}");
        assert_eq!(l["size"].as_i64(), Some(diff_sizes[i]), "{l}");
    }
    assert_store_consistent(&store, "after the pulls");

    // container --name demo (image given by name)
    let created = store.json(&["container", "--name", "demo", &name]);
    let cid = str_of(&created["id"]);
    let clayer = str_of(&created["layer"]);
    let containers = store.containers();
    assert_eq!(containers.len(), 1);
    let c = find(&containers, &cid);
    assert_eq!(names(c), vec!["demo".to_string()]);
    assert_eq!(c["image"], id.as_str());
    assert_eq!(c["layer"], clayer.as_str());
    assert_eq!(c["mount_point"], Value::Null);
    let layers = store.layers();
    assert_eq!(layers.len(), 4);
    let cl = find(&layers, &clayer);
    assert_eq!(cl["parent"], layer_ids[2].as_str());
    assert_eq!(cl["diff_digest"], Value::Null);
    let table = store.ok(&["containers"]);
    assert!(
        table.stdout.contains("demo") && table.stdout.contains(&cid[..12]),
        "{}",
        table.stdout
    );

    // a second container, image given by ID prefix; plain output is the ID
    let second = store.ok(&["container", &id[..12]]);
    let second_id = second.stdout.trim().to_string();
    assert_eq!(
        second_id.len(),
        64,
        "container prints the ID: {:?}",
        second.stdout
    );
    assert_eq!(store.containers().len(), 2);
    store.ok(&["delete", &second_id]);
    assert_eq!(store.containers().len(), 1);

    // mount
    let mounted = store.ok(&["mount", "demo"]);
    let path = PathBuf::from(mounted.stdout.trim());
    assert_eq!(path, store.expected_mount_point(&clayer));
    assert!(path.is_dir());
    assert_fixture_shape(fx, &path);
    assert_eq!(
        store.mount_count(&clayer),
        1,
        "{:?}",
        store.mountpoints_json()
    );
    let mp = &store.mountpoints_json()[0];
    assert_eq!(mp["path"], path.display().to_string());
    assert_eq!(
        find(&store.containers(), &cid)["mount_point"],
        path.display().to_string()
    );
    if driver == "overlay" {
        let m = mount_at(&path).expect("an overlay mount at the mount point");
        assert_eq!(m.fs_type, "overlay");
        let home = store.root.join("overlay");
        let lower = fs::read_to_string(home.join(&clayer).join("lower")).expect("lower file");
        let expected: Vec<String> = lower
            .split(':')
            .map(|e| home.join(e).display().to_string())
            .collect();
        assert_eq!(
            lowerdirs(&m),
            expected,
            "lowerdir entries follow the lower file"
        );
        assert_eq!(expected.len(), 3);
        assert_eq!(
            option_value(&m, "upperdir"),
            Some(home.join(&clayer).join("diff").display().to_string())
        );
        assert_eq!(
            option_value(&m, "workdir"),
            Some(home.join(&clayer).join("work").display().to_string())
        );
    }
    // the same container again: counted, same path
    let json_mount = store.json(&["mount", &cid]);
    assert_eq!(json_mount["path"], path.display().to_string());
    assert_eq!(store.mount_count(&clayer), 2);
    store.json(&["unmount", &cid]);
    assert_eq!(store.mount_count(&clayer), 1);

    // refused while in use
    store.fails(&["delete", "demo"], &["IN_USE"]);
    store.fails(&["delete", &id], &["IN_USE"]);

    // write a file, unmount: the file stays in the container's layer
    fs::write(path.join("written-by-test.txt"), b"hello from cli_flow\n")
        .expect("write into the mount");
    fs::create_dir(path.join("new-dir")).expect("mkdir in the mount");
    let unmounted = store.json(&["unmount", "demo"]);
    assert_eq!(unmounted, serde_json::json!({}));
    assert_eq!(store.mount_count(&clayer), 0);
    assert!(store.mountpoints_json().is_empty());
    assert_eq!(find(&store.containers(), &cid)["mount_point"], Value::Null);
    if driver == "overlay" {
        assert!(
            mount_at(&path).is_none(),
            "still mounted at {}",
            path.display()
        );
    }
    let kept = store.layer_data_dir(&clayer).join("written-by-test.txt");
    assert_eq!(
        fs::read(&kept).expect("the file stays in the container layer"),
        b"hello from cli_flow\n"
    );
    assert!(store.layer_data_dir(&clayer).join("new-dir").is_dir());
    // a remount shows it again
    let again_path = PathBuf::from(store.ok(&["mount", "demo"]).stdout.trim());
    assert_eq!(
        fs::read(again_path.join("written-by-test.txt")).unwrap(),
        b"hello from cli_flow\n"
    );
    store.ok(&["unmount", "demo"]);

    // delete the container: record, layer and its directory go
    assert_eq!(store.json(&["delete", "demo"]), serde_json::json!({}));
    assert!(store.containers().is_empty());
    assert!(store.layers().iter().all(|l| l["id"] != clayer.as_str()));
    assert!(!store.layer_data_dir(&clayer).exists());
    assert_store_consistent(&store, "after deleting the container");

    // delete the image: its layers go with it (nothing else uses them)
    store.ok(&["delete", &name]);
    assert!(store.images().is_empty());
    assert!(store.layers().is_empty(), "{:#?}", store.layers());
    assert_store_consistent(&store, "after deleting the image");

    // wipe: pull, create, mount, then wipe removes everything (force-unmounting)
    store.ok(&["pull", "--tls-verify=false", &reference]);
    store.ok(&["container", "--name", "towipe", &name]);
    let wipe_mount = PathBuf::from(store.ok(&["mount", "towipe"]).stdout.trim());
    assert_eq!(store.json(&["wipe"]), serde_json::json!({}));
    assert!(store.images().is_empty());
    assert!(store.layers().is_empty());
    assert!(store.containers().is_empty());
    assert!(store.mountpoints_json().is_empty());
    assert!(mount_at(&wipe_mount).is_none() || driver == "vfs");
    assert!(
        store.mounts().iter().all(|m| m.fs_type != "overlay"),
        "overlay mounts left after wipe: {:?}",
        store.mounts()
    );
    assert_layer_dirs_empty(&store);
    assert_store_consistent(&store, "after wipe");
}

/// No layer data left: R/overlay holds at most l/ (empty), R/vfs/dir is empty, no tar-split.
fn assert_layer_dirs_empty(store: &Store) {
    let home = if store.driver == "overlay" {
        store.root.join("overlay")
    } else {
        store.root.join("vfs/dir")
    };
    if let Ok(rd) = fs::read_dir(&home) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if store.driver == "overlay" && n == "l" {
                assert_eq!(fs::read_dir(e.path()).unwrap().count(), 0, "l/ not empty");
                continue;
            }
            assert!(
                !e.path().is_dir(),
                "layer directory left: {}",
                e.path().display()
            );
        }
    }
    let tar_splits: Vec<_> = fs::read_dir(store.meta_dir("layers"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tar-split.gz"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        tar_splits.is_empty(),
        "tar-split files left: {tar_splits:?}"
    );
}

#[test]
fn seed_flow_overlay() {
    seed_flow("overlay");
}

#[test]
fn seed_flow_vfs() {
    seed_flow("vfs");
}

fn mount_and_read(store: &Store, image: &str, file: &str) -> Vec<u8> {
    let c = store.json(&["container", image]);
    let cid = str_of(&c["id"]);
    let path = PathBuf::from(str_of(&store.json(&["mount", &cid])["path"]));
    let data = fs::read(path.join(file)).unwrap_or_else(|e| panic!("read {file}: {e}"));
    store.ok(&["unmount", &cid]);
    store.ok(&["delete", &cid]);
    data
}

#[test]
fn pull_forms_bare_name_and_oci_layout() {
    let Some((fx, reg)) = prerequisites("mounts need root") else {
        return;
    };
    let store = Store::new("overlay");
    // bare name with a registry host: 127.0.0.1:PORT/cimage-test/fixture:t
    let r = store.ok(&["pull", "--tls-verify=false", &reg.name("fixture")]);
    assert_eq!(r.stdout.trim(), fx.id("fixture"));
    let img = find(&store.images(), &fx.id("fixture")).clone();
    assert!(names(&img).contains(&reg.name("fixture")), "{img}");

    // oci:DIR:TAG, into a fresh store (no registry involved)
    let oci_store = Store::new("overlay");
    let pulled = oci_store.json(&["pull", &fx.oci_ref("fixture")]);
    assert_eq!(pulled["id"], fx.id("fixture").as_str());
    assert_eq!(pulled["digest"], fx.manifest_digest("fixture").as_str());
    let layers: Vec<String> = oci_store
        .layers()
        .iter()
        .map(|l| str_of(&l["id"]))
        .collect();
    let mut expected = fx.layer_ids("fixture");
    expected.sort();
    let mut got = layers.clone();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(
        mount_and_read(&oci_store, &fx.id("fixture"), "etc/hostname"),
        b"cimage-fixture\n"
    );
    assert_store_consistent(&oci_store, "after an oci: pull");

    // the same image under a second name: no layer fetched, the image gains the name
    let proxy = Proxy::start(reg.port(), 0);
    let second = store.json(&["pull", "--tls-verify=false", &proxy.image_ref("fixture")]);
    assert_eq!(second["id"], fx.id("fixture").as_str());
    for b in fx.blob_digests("fixture") {
        assert_eq!(proxy.blob_gets(&b), 0, "{:?}", proxy.requests());
    }
    let images = store.images();
    assert_eq!(images.len(), 1);
    let n = names(&images[0]);
    assert!(
        n.contains(&reg.name("fixture")) && n.contains(&proxy.name("fixture")),
        "{n:?}"
    );
    assert_eq!(store.layers().len(), 3);
}

#[test]
fn zstd_layers() {
    let Some((fx, reg)) = prerequisites("mounts need root") else {
        return;
    };
    if !fx.has("zstd") {
        skip("the zstd CLI was missing when the fixtures were built");
        return;
    }
    for driver in ["overlay", "vfs"] {
        let store = Store::new(driver);
        let id = str_of(&store.json(&["pull", "--tls-verify=false", &reg.image_ref("zstd")])["id"]);
        assert_eq!(id, fx.id("zstd"));
        let layers = store.layers();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0]["diff_digest"], fx.diff_ids("zstd")[0].as_str());
        assert_eq!(
            layers[0]["compressed_digest"],
            fx.blob_digests("zstd")[0].as_str()
        );
        assert_eq!(
            mount_and_read(&store, &id, "zstd/hello.txt"),
            b"from a zstd layer\n"
        );
        assert_store_consistent(&store, "after a zstd pull");
    }
}

#[test]
fn image_index_platforms() {
    let Some((fx, reg)) = prerequisites("mounts need root") else {
        return;
    };
    let platforms = &fx.image("multi")["platforms"];
    let amd64 = str_of(&platforms["linux/amd64"]["id"]);
    let arm64 = str_of(&platforms["linux/arm64/v8"]["id"]);
    let host = str_of(&fx.meta["host_arch"]);
    let store = Store::new("overlay");
    let reference = reg.image_ref("multi");

    let arm = store.json(&[
        "pull",
        "--tls-verify=false",
        "--platform",
        "linux/arm64/v8",
        &reference,
    ]);
    assert_eq!(arm["id"], arm64.as_str());
    assert_eq!(
        arm["digest"], platforms["linux/arm64/v8"]["manifest_digest"],
        "the image digest is the per-platform manifest's"
    );
    assert_eq!(
        mount_and_read(&store, &arm64, "etc/arch"),
        b"built for arm64\n"
    );

    if host == "amd64" || host == "arm64" {
        let default = store.json(&["pull", "--tls-verify=false", &reference]);
        let expected = if host == "amd64" { &amd64 } else { &arm64 };
        assert_eq!(
            default["id"],
            expected.as_str(),
            "default platform is the host's ({host})"
        );
    } else {
        skip(&format!(
            "host architecture {host} is not in the test index"
        ));
    }
    let explicit = store.json(&[
        "pull",
        "--tls-verify=false",
        "--platform",
        "linux/amd64",
        &reference,
    ]);
    assert_eq!(explicit["id"], amd64.as_str());
    assert_eq!(
        mount_and_read(&store, &amd64, "etc/arch"),
        b"built for amd64\n"
    );

    // both images are there; the name belongs to exactly one (the last pulled)
    let images = store.images();
    assert_eq!(images.len(), 2, "{images:#?}");
    let holders: Vec<&Value> = images
        .iter()
        .filter(|i| names(i).contains(&reg.name("multi")))
        .collect();
    assert_eq!(holders.len(), 1, "a name belongs to one image: {images:#?}");
    assert_eq!(holders[0]["id"], amd64.as_str());
    assert_store_consistent(&store, "after multi-platform pulls");

    // a platform the index does not have
    store.fails(
        &[
            "pull",
            "--tls-verify=false",
            "--platform",
            "linux/s390x",
            &reference,
        ],
        &["NOT_FOUND", "MANIFEST_UNKNOWN", "UNSUPPORTED"],
    );
}

#[test]
fn pull_policies() {
    let Some((fx, reg)) = prerequisites("the store is root's") else {
        return;
    };
    let store = Store::new("overlay");
    let proxy = Proxy::start(reg.port(), 0);
    let reference = proxy.image_ref("fixture");

    // never + absent: NOT_FOUND, and no request at all
    store.fails(
        &[
            "pull",
            "--tls-verify=false",
            "--policy",
            "never",
            &reference,
        ],
        &["NOT_FOUND"],
    );
    assert!(
        proxy.requests().is_empty(),
        "policy never asked the registry: {:?}",
        proxy.requests()
    );
    assert!(store.images().is_empty());

    // missing + absent: pulls
    let id = str_of(
        &store.json(&[
            "pull",
            "--tls-verify=false",
            "--policy",
            "missing",
            &reference,
        ])["id"],
    );
    assert_eq!(id, fx.id("fixture"));

    // with the registry unreachable: missing and never succeed from the store, always fails
    proxy.set_down(true);
    proxy.reset_counters();
    for policy in ["missing", "never"] {
        let r = store.json(&["pull", "--tls-verify=false", "--policy", policy, &reference]);
        assert_eq!(r["id"], id.as_str(), "policy {policy}");
    }
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    let r = store.cmd(&[
        "pull",
        "--tls-verify=false",
        "--policy",
        "always",
        &reference,
    ]);
    assert_error_line(&r, &[], "pull --policy always with the registry down");
    // the failed pull left the image alone
    assert_eq!(store.images().len(), 1);
    assert_store_consistent(&store, "after a failed pull");

    // a bad policy value
    store.fails(
        &["pull", "--policy", "sometimes", &reference],
        &["INVALID_ARGUMENT"],
    );
}

#[test]
fn errors_are_reported_as_status_lines() {
    let Some((_fx, reg)) = prerequisites("the store is root's") else {
        return;
    };
    let store = Store::new("overlay");
    // malformed references
    for bad in [
        "docker://UPPER/Case:t",
        "docker://",
        "oci:",
        "bad ref with spaces",
        "docker://host/name:tag:tag",
    ] {
        store.fails(&["pull", "--tls-verify=false", bad], &["INVALID_ARGUMENT"]);
    }
    // unknown ids and names
    store.fails(&["mount", "0123456789ab"], &["NOT_FOUND"]);
    store.fails(&["unmount", "no-such-container"], &["NOT_FOUND"]);
    store.fails(&["delete", "no-such-thing"], &["NOT_FOUND"]);
    store.fails(&["container", "no-such-image"], &["NOT_FOUND"]);
    // a tag the registry does not have
    store.fails(
        &[
            "pull",
            "--tls-verify=false",
            &format!("docker://{}/{REPO_PREFIX}/fixture:nope", reg.host_port()),
        ],
        &["MANIFEST_UNKNOWN", "NOT_FOUND"],
    );
    // an unknown driver
    let r = run(Command::new(cimagectl()).args([
        "-d",
        "nosuchdriver",
        "-r",
        &store.root.display().to_string(),
        "-R",
        &store.run_root.display().to_string(),
        "store",
    ]));
    assert_error_line(
        &r,
        &["INVALID_ARGUMENT", "UNSUPPORTED", "CONFIG"],
        "unknown driver",
    );
    // a graph root that is a file
    let file_root = store.dir.join("a-file");
    fs::write(&file_root, b"not a directory").unwrap();
    let r = run(Command::new(cimagectl()).args([
        "-d",
        "overlay",
        "-r",
        &file_root.display().to_string(),
        "-R",
        &store.run_root.display().to_string(),
        "images",
    ]));
    assert_error_line(&r, &[], "graph root that is a file");
    assert_eq!(
        fs::read(&file_root).unwrap(),
        b"not a directory",
        "the file was left alone"
    );
    // bad usage: exit 2 and the usage text on stderr
    let r = store.cmd(&["frobnicate"]);
    assert_eq!(r.status, 2, "unknown command: {r:?}");
    assert!(r.stderr.to_lowercase().contains("usage"), "{}", r.stderr);
    let r = store.cmd(&["mount"]);
    assert_eq!(r.status, 2, "missing argument: {r:?}");
}
