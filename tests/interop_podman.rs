//! Interop with podman 4.3, skopeo 1.9 and the containers-storage 1.43 CLI on the same graph root
//! and run root: the checks of store-format.md §9, steps 1–5, 8, 12 (overlay) and 13 (vfs
//! repeats of 1–3, 5, 8, 12), as far as one-shot cimagectl processes can show them.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn prerequisites() -> Option<(&'static Fixtures, &'static Registry)> {
    if !ensure_root_or_skip("podman and overlay mounts need root") {
        return None;
    }
    if !ensure_tools_or_skip(&["podman", "skopeo", "containers-storage"]) {
        return None;
    }
    fixtures_and_registry()
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

fn strip_sha(s: &str) -> &str {
    s.trim().strip_prefix("sha256:").unwrap_or(s.trim())
}

/// Layer IDs listed by `containers-storage layers` (lines without indentation).
fn cs_layer_ids(store: &Store) -> BTreeSet<String> {
    store
        .cs_ok(&["layers"])
        .stdout
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace) && !l.is_empty())
        .map(|l| l.trim().to_string())
        .collect()
}

/// Copies an image from the registry into the store with skopeo (containers/image's writer).
fn skopeo_pull(store: &Store, reg: &Registry, image: &str, name: &str) {
    run_ok(skopeo().args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &reg.image_ref(image),
        &store.cs_ref(name),
    ]));
}

// ------------------------------------------------------------------------------------------
// §9.1 We pull, podman reads.

fn we_pull_podman_reads(driver: &str) {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new(driver);
    let name = reg.name("fixture");
    let id = fx.id("fixture");
    store.ok(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);

    // podman images: same full ID, same name
    let listed = store.podman_ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    let line = listed
        .stdout
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("podman images does not list {id}:\n{}", listed.stdout));
    let (pid, pname) = line.split_once(' ').unwrap();
    assert_eq!(strip_sha(pid), id);
    assert_eq!(pname, name);

    // podman image inspect: manifest digest and the config's DiffIDs
    let inspect = store.podman_ok(&[
        "image",
        "inspect",
        &name,
        "--format",
        "{{.Digest}} {{.RootFS.Layers}}",
    ]);
    let expected = format!(
        "{} [{}]",
        fx.manifest_digest("fixture"),
        fx.diff_ids("fixture").join(" ")
    );
    assert_eq!(inspect.stdout.trim(), expected);
    let config = store.podman_ok(&[
        "image",
        "inspect",
        &name,
        "--format",
        "{{.Config.User}} {{.Config.WorkingDir}} {{.Config.Entrypoint}}",
    ]);
    assert_eq!(config.stdout.trim(), "1000:1000 /data [/bin/hello]");

    // containers-storage: layer IDs (§3.2), the image and its big-data keys
    let cs_layers = cs_layer_ids(&store);
    for lid in fx.layer_ids("fixture") {
        assert!(
            cs_layers.contains(&lid),
            "containers-storage layers lacks {lid}: {cs_layers:?}"
        );
    }
    let images = store.cs_ok(&["images"]).stdout;
    let manifest_hex = hex_of(&fx.manifest_digest("fixture")).to_string();
    for needle in [
        id.clone(),
        format!("name: {name}"),
        format!("data: sha256:{id}"),
        format!("data: manifest-sha256:{manifest_hex}"),
        "data: manifest\n".to_string(),
    ] {
        assert!(
            images.contains(&needle),
            "containers-storage images lacks {needle:?}:\n{images}"
        );
    }

    // tar-split: the rebuilt tar of every layer has the layer's diff digest and size
    let layers_json = store.layers_json();
    for (i, lid) in fx.layer_ids("fixture").iter().enumerate() {
        let out = Command::new("containers-storage")
            .args(["--storage-driver", driver, "--graph"])
            .arg(&store.root)
            .arg("--run")
            .arg(&store.run_root)
            .args(["diff", "-u", lid])
            .output()
            .expect("containers-storage diff");
        assert!(
            out.status.success(),
            "diff -u {lid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            format!("sha256:{}", sha256_hex(&out.stdout)),
            fx.diff_ids("fixture")[i],
            "layer {lid}"
        );
        assert_eq!(out.stdout.len() as i64, fx.diff_sizes("fixture")[i]);
        let rec = layers_json
            .iter()
            .find(|l| l["id"] == lid.as_str())
            .expect("record");
        assert_eq!(rec["diff-size"].as_i64(), Some(out.stdout.len() as i64));
    }

    // podman save: the layer blobs it writes are the DiffIDs
    let out_dir = store.dir.join("saved");
    store.podman_ok(&[
        "save",
        "--format",
        "oci-dir",
        "--uncompressed",
        "-o",
        &out_dir.display().to_string(),
        &name,
    ]);
    let index: Value =
        serde_json::from_slice(&fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    let mdigest = str_of(&index["manifests"][0]["digest"]);
    let manifest: Value = serde_json::from_slice(
        &fs::read(out_dir.join("blobs/sha256").join(hex_of(&mdigest))).unwrap(),
    )
    .unwrap();
    let saved: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| str_of(&l["digest"]))
        .collect();
    assert_eq!(
        saved,
        fx.diff_ids("fixture"),
        "podman save reproduces the layer digests"
    );
    for d in &saved {
        let blob = fs::read(out_dir.join("blobs/sha256").join(hex_of(d))).unwrap();
        assert_eq!(format!("sha256:{}", sha256_hex(&blob)), *d);
    }

    // skopeo sees the original manifest digest
    let digest =
        run_ok(skopeo().args(["inspect", "--format", "{{.Digest}}", &store.cs_ref(&name)]));
    assert_eq!(digest.stdout.trim(), fx.manifest_digest("fixture"));
    assert_store_consistent(&store, "after podman read our image");
}

#[test]
fn we_pull_podman_reads_overlay() {
    we_pull_podman_reads("overlay");
}

#[test]
fn we_pull_podman_reads_vfs() {
    we_pull_podman_reads("vfs");
}

// ------------------------------------------------------------------------------------------
// §9.2 podman creates and mounts on our store: the same files as our mount.

fn podman_creates_on_our_store(driver: &str) {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new(driver);
    let name = reg.name("fixture");
    store.ok(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);

    store.podman_ok(&["create", "--name", "pc", "--network", "none", &name]);
    let theirs = PathBuf::from(store.podman_ok(&["mount", "pc"]).stdout.trim());
    assert_fixture_shape(fx, &theirs);

    let ours_id = str_of(&store.json(&["container", "--name", "oc", &name])["id"]);
    let ours = PathBuf::from(str_of(&store.json(&["mount", &ours_id])["path"]));
    assert_ne!(theirs, ours);
    let diffs = tree_differences("podman", &walk_tree(&theirs), "cimage", &walk_tree(&ours));
    assert!(
        diffs.is_empty(),
        "podman's and our mount differ:\n{}",
        diffs.join("\n")
    );

    if driver == "overlay" {
        // podman's mount of a container on our layers: lowerdir in the order of the lower file
        let m = mount_at(&theirs).expect("podman's overlay mount");
        let podman_layer = theirs
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let home = store.root.join("overlay");
        let lower = fs::read_to_string(home.join(&podman_layer).join("lower")).unwrap();
        let expected: Vec<String> = lower
            .split(':')
            .map(|e| home.join(e).display().to_string())
            .collect();
        let lowerdir = m
            .super_options
            .split(',')
            .chain(m.options.split(','))
            .find_map(|o| o.strip_prefix("lowerdir="))
            .expect("lowerdir option");
        assert_eq!(lowerdir.split(':').collect::<Vec<_>>(), expected);
    }
    store.podman_ok(&["umount", "pc"]);
    store.ok(&["unmount", &ours_id]);
    store.podman_ok(&["rm", "pc"]);
    store.ok(&["delete", &ours_id]);
    assert_store_consistent(&store, "after both containers are gone");
}

#[test]
fn podman_creates_on_our_store_overlay() {
    podman_creates_on_our_store("overlay");
}

#[test]
fn podman_creates_on_our_store_vfs() {
    podman_creates_on_our_store("vfs");
}

// ------------------------------------------------------------------------------------------
// §9.3 podman pulls, we read and mount; shared mount counts.

fn podman_pulls_we_read(driver: &str) {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new(driver);
    skopeo_pull(&store, reg, "fixture", "localhost/p:t");
    let id = fx.id("fixture");

    let images = store.images();
    assert_eq!(images.len(), 1, "{images:#?}");
    assert_eq!(images[0]["id"], id.as_str());
    assert_eq!(names(&images[0]), vec!["localhost/p:t".to_string()]);
    assert_eq!(images[0]["digest"], fx.manifest_digest("fixture").as_str());
    let ours: BTreeSet<String> = store.layers().iter().map(|l| str_of(&l["id"])).collect();
    let expected: BTreeSet<String> = fx.layer_ids("fixture").into_iter().collect();
    assert_eq!(ours, expected);
    for l in store.layers() {
        let i = fx
            .layer_ids("fixture")
            .iter()
            .position(|x| *x == str_of(&l["id"]))
            .unwrap();
        assert_eq!(l["diff_digest"], fx.diff_ids("fixture")[i].as_str());
    }

    let cid = str_of(&store.json(&["container", "--name", "ours", "localhost/p:t"])["id"]);
    let clayer = store.containers()[0]["layer"].as_str().unwrap().to_string();
    let path = PathBuf::from(store.ok(&["mount", "ours"]).stdout.trim());
    assert_fixture_shape(fx, &path);
    assert_eq!(store.mount_count(&clayer), 1);

    // podman sees our container as an external (storage) container
    let ps = store.podman_ok(&[
        "ps",
        "-a",
        "--external",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Status}}",
    ]);
    let line = ps
        .stdout
        .lines()
        .find(|l| l.starts_with(&cid))
        .unwrap_or_else(|| panic!("podman ps --external:\n{}", ps.stdout));
    assert!(line.contains("Storage"), "{line}");

    // podman mount: the same path, count 2; podman umount: back to 1 and still mounted
    let theirs = store.podman_ok(&["mount", &cid]);
    assert_eq!(PathBuf::from(theirs.stdout.trim()), path);
    assert_eq!(store.mount_count(&clayer), 2);
    store.podman_ok(&["umount", &cid]);
    assert_eq!(store.mount_count(&clayer), 1);
    if driver == "overlay" {
        assert!(
            mount_at(&path).is_some(),
            "podman umount must not unmount while we hold a count"
        );
    }
    assert!(path.join("etc/hostname").is_file());

    // our unmount: entry gone, nothing mounted, merged absent or empty
    store.ok(&["unmount", "ours"]);
    assert_eq!(store.mount_count(&clayer), 0);
    assert!(store
        .mountpoints_json()
        .iter()
        .all(|m| m["id"] != clayer.as_str()));
    if driver == "overlay" {
        assert!(mount_at(&path).is_none());
        assert!(
            !path.exists() || fs::read_dir(&path).unwrap().next().is_none(),
            "merged not empty"
        );
    }
    store.ok(&["delete", "ours"]);
    assert_store_consistent(&store, "after our container is gone");
    // podman still uses the image
    store.podman_ok(&[
        "create",
        "--name",
        "after",
        "--network",
        "none",
        "localhost/p:t",
    ]);
    store.podman_ok(&["rm", "after"]);
}

#[test]
fn podman_pulls_we_read_overlay() {
    podman_pulls_we_read("overlay");
}

#[test]
fn podman_pulls_we_read_vfs() {
    podman_pulls_we_read("vfs");
}

// ------------------------------------------------------------------------------------------
// §9.4 Mixed mount counting.

#[test]
fn mixed_mount_counting() {
    let Some((_fx, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new("overlay");
    store.ok(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);
    let created = store.json(&["container", "--name", "mc", &reg.name("fixture")]);
    let (cid, layer) = (str_of(&created["id"]), str_of(&created["layer"]));

    let ours = PathBuf::from(store.ok(&["mount", "mc"]).stdout.trim());
    let cs = store.cs_ok(&["mount", &cid]);
    assert_eq!(PathBuf::from(cs.stdout.trim()), ours);
    let pm = store.podman_ok(&["mount", &cid]);
    assert_eq!(PathBuf::from(pm.stdout.trim()), ours);
    assert_eq!(store.mount_count(&layer), 3);
    let overlay_mounts = || {
        store
            .mounts()
            .iter()
            .filter(|m| m.mount_point == ours)
            .count()
    };
    assert_eq!(overlay_mounts(), 1, "one real mount for three counts");

    // unmount in another order: the real unmount happens only at the last one
    store.podman_ok(&["umount", &cid]);
    assert_eq!(store.mount_count(&layer), 2);
    assert!(mount_at(&ours).is_some());
    store.ok(&["unmount", &cid]);
    assert_eq!(store.mount_count(&layer), 1);
    assert!(
        mount_at(&ours).is_some(),
        "our unmount must not unmount while containers-storage holds a count"
    );
    store.cs_ok(&["unmount", &cid]);
    assert_eq!(store.mount_count(&layer), 0);
    assert!(mount_at(&ours).is_none());

    // containers-storage unmount --force drops it from any count
    store.ok(&["mount", &cid]);
    store.podman_ok(&["mount", &cid]);
    store.ok(&["mount", &cid]);
    assert_eq!(store.mount_count(&layer), 3);
    store.cs_ok(&["unmount", "--force", &cid]);
    assert_eq!(store.mount_count(&layer), 0);
    assert!(mount_at(&ours).is_none());
    // and we can mount again afterwards
    let again = PathBuf::from(store.ok(&["mount", &cid]).stdout.trim());
    assert_eq!(again, ours);
    assert_eq!(store.mount_count(&layer), 1);
    store.ok(&["unmount", &cid]);
    store.ok(&["delete", &cid]);
    assert_store_consistent(&store, "after mixed mounts");
}

// ------------------------------------------------------------------------------------------
// §9.5 Token discipline.

fn lock_tokens(driver: &str) {
    let Some((_fx, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new(driver);
    store.ok(&["store"]);
    let changed = |before: &std::collections::BTreeMap<&str, Vec<u8>>,
                   after: &std::collections::BTreeMap<&str, Vec<u8>>| {
        before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|(k, _)| k.to_string())
            .collect::<BTreeSet<_>>()
    };
    let check_written = |what: &str, expect: &[&str], op: &dyn Fn()| {
        let before = store.lock_tokens();
        op();
        let after = store.lock_tokens();
        let ch = changed(&before, &after);
        for f in expect {
            assert!(
                ch.contains(*f),
                "{what}: {f} token did not change (changed: {ch:?})"
            );
            assert_eq!(
                after[f].len(),
                64,
                "{what}: {f} is {} bytes, not 64",
                after[f].len()
            );
        }
    };
    let check_read = |what: &str, op: &dyn Fn()| {
        let before = store.lock_tokens();
        op();
        let after = store.lock_tokens();
        assert!(
            changed(&before, &after).is_empty(),
            "{what} (a read) changed tokens: {:?}",
            changed(&before, &after)
        );
    };

    check_written("pull", &["layers.lock", "images.lock"], &|| {
        store.ok(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);
    });
    let mut cid = String::new();
    check_written("container", &["layers.lock", "containers.lock"], &|| {
        let _ = store.ok(&["container", "--name", "tok", &reg.name("fixture")]);
    });
    cid.push_str(store.containers()[0]["id"].as_str().unwrap());
    check_written("mount", &["mountpoints.lock"], &|| {
        store.ok(&["mount", "tok"]);
    });
    for args in [&["images"][..], &["layers"], &["containers"], &["store"]] {
        check_read(&format!("{args:?}"), &|| {
            store.ok(args);
        });
        check_read(&format!("--json {args:?}"), &|| {
            store.json(args);
        });
    }
    check_read("pull --policy missing of a present image", &|| {
        store.ok(&[
            "pull",
            "--policy",
            "missing",
            "--tls-verify=false",
            &reg.image_ref("fixture"),
        ]);
    });
    check_written("unmount", &["mountpoints.lock"], &|| {
        store.ok(&["unmount", "tok"]);
    });
    check_written(
        "delete container",
        &["layers.lock", "containers.lock"],
        &|| {
            store.ok(&["delete", &cid]);
        },
    );

    // podman's changes are seen by our next command, ours by podman's
    store.podman_ok(&["tag", &reg.name("fixture"), "localhost/tagged:by-podman"]);
    let imgs = store.images();
    assert!(
        names(&imgs[0]).contains(&"localhost/tagged:by-podman".to_string()),
        "{imgs:#?}"
    );
    run_ok(store.containers_storage().args([
        "create-container",
        "--name",
        "from-cs",
        &reg.name("fixture"),
    ]));
    assert!(store
        .containers()
        .iter()
        .any(|c| names(c).contains(&"from-cs".to_string())));
    store.podman_ok(&["rmi", "localhost/tagged:by-podman"]); // untag only: the other name remains
    assert!(!names(&store.images()[0]).contains(&"localhost/tagged:by-podman".to_string()));
    check_written(
        "delete (containers-storage's container)",
        &["containers.lock"],
        &|| {
            store.ok(&["delete", "from-cs"]);
        },
    );
    assert!(store
        .podman_ok(&["ps", "-a", "--external", "--format", "{{.Names}}"])
        .stdout
        .trim()
        .is_empty());
}

#[test]
fn lock_tokens_overlay() {
    lock_tokens("overlay");
}

#[test]
fn lock_tokens_vfs() {
    lock_tokens("vfs");
}

// ------------------------------------------------------------------------------------------
// §9.8 Crash recovery both ways.

fn has_incomplete(store: &Store) -> bool {
    fs::read_to_string(store.meta_dir("layers").join("layers.json"))
        .map(|s| s.contains("\"incomplete\""))
        .unwrap_or(false)
}

/// After a crash: podman and containers-storage work, leave no incomplete layer, and the store
/// satisfies the structural invariants; then we can pull and mount.
fn assert_recovered(store: &Store, fx: &Fixtures, reg: &Registry, what: &str) {
    store.podman_ok(&["images"]);
    store.cs_ok(&["layers"]);
    assert!(
        !has_incomplete(store),
        "{what}: an incomplete layer survived podman"
    );
    // Our next open may also clear our own scratch leftovers (staging); then every structural
    // invariant holds. Temporary .tmp-* files may stay after a crash (store-format.md §6.1).
    store.ok(&["layers"]);
    let problems = store_problems_with(store, true);
    assert!(
        problems.is_empty(),
        "store inconsistent {what}:\n  {}",
        problems.join("\n  ")
    );
    let id = str_of(&store.json(&["pull", "--tls-verify=false", &reg.image_ref("big")])["id"]);
    assert_eq!(id, fx.id("big"));
    let c = str_of(&store.json(&["container", &id])["id"]);
    let p = PathBuf::from(str_of(&store.json(&["mount", &c])["path"]));
    assert_eq!(
        fs::metadata(p.join("big/chunk00.bin")).unwrap().len(),
        1 << 20
    );
    store.ok(&["unmount", &c]);
    store.ok(&["delete", &c]);
    store.ok(&["delete", &id]);
    let problems = store_problems_with(store, true);
    assert!(
        problems.is_empty(),
        "store inconsistent {what}, after a clean pull:\n  {}",
        problems.join("\n  ")
    );
}

fn crash_ours(driver: &str) {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };

    // (a) killed mid-download: a throttled pull of the 24 MiB layer takes ~6 s
    let store = Store::new(driver);
    let proxy = Proxy::start(reg.port(), 4 << 20);
    let mut child = store
        .command(&["pull", "--tls-verify=false", &proxy.image_ref("big")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cimagectl pull");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the throttled pull finished within 1.5 s?"
    );
    eprintln!(
        "crash_ours({driver}) a: killed mid-download; incomplete record present: {}",
        has_incomplete(&store)
    );
    proxy.set_down(true);
    assert_recovered(&store, fx, reg, "after kill -9 mid-download");

    // (b) killed as soon as an incomplete record shows (or whenever the pull ends first)
    let store = Store::new(driver);
    let mut child = store
        .command(&["pull", "--tls-verify=false", &reg.image_ref("big")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cimagectl pull");
    let started = Instant::now();
    let mut caught = false;
    while started.elapsed() < Duration::from_secs(60) {
        if has_incomplete(&store) {
            let _ = child.kill();
            caught = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "crash_ours({driver}) b: {}",
        if caught {
            "killed while a layer was flagged incomplete"
        } else {
            "the pull ended before an incomplete record was seen"
        }
    );
    if caught {
        // our own next open must clean up as well as podman's
        store.ok(&["layers"]);
        assert!(
            !has_incomplete(&store),
            "cimagectl did not remove the incomplete layer"
        );
    }
    assert_recovered(&store, fx, reg, "after kill -9 at the incomplete record");
}

#[test]
fn crash_recovery_ours_killed_overlay() {
    crash_ours("overlay");
}

#[test]
fn crash_recovery_ours_killed_vfs() {
    crash_ours("vfs");
}

/// The converse: containers-storage import-layer killed while its layer is incomplete; opening
/// the store with cimagectl removes record, directory and l/ link.
fn crash_theirs(driver: &str) {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new(driver);
    store.ok(&["store"]);
    let mut child = store
        .containers_storage()
        .args(["import-layer", "--name", "slowlayer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn containers-storage import-layer");
    // one tar header, then nothing: the import waits with the record flagged incomplete
    let mut header = tar::Header::new_gnu();
    header.set_path("slow.bin").unwrap();
    header.set_size(1 << 20);
    header.set_mode(0o644);
    header.set_cksum();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(header.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let seen = wait_until(Duration::from_secs(20), || has_incomplete(&store));
    assert!(
        seen,
        "containers-storage import-layer never flagged its layer incomplete"
    );
    let rec = store
        .layers_json()
        .into_iter()
        .find(|l| l["flags"]["incomplete"] == true)
        .unwrap();
    let lid = str_of(&rec["id"]);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(has_incomplete(&store));

    let listed = store.layers();
    assert!(
        listed.iter().all(|l| l["id"] != lid.as_str()),
        "cimagectl lists the incomplete layer"
    );
    assert!(
        !has_incomplete(&store),
        "opening the store with cimagectl must remove the incomplete layer"
    );
    assert!(!store.root.join(driver).join(&lid).exists());
    assert!(!store.root.join("vfs/dir").join(&lid).exists());
    assert_store_consistent(
        &store,
        "after cimagectl recovered containers-storage's crash",
    );
    store.cs_ok(&["layers"]);
    let _ = (fx, reg);
}

#[test]
fn crash_recovery_theirs_killed_overlay() {
    crash_theirs("overlay");
}

#[test]
fn crash_recovery_theirs_killed_vfs() {
    crash_theirs("vfs");
}

// ------------------------------------------------------------------------------------------
// §9.12 Deletion both ways; shared layers survive; no orphans.

fn deletion(driver: &str) {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new(driver);
    // podman pulls sibling, we pull fixture: they share the first two layers
    skopeo_pull(&store, reg, "sibling", "localhost/sibling:t");
    store.ok(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);
    let fixture_layers = fx.layer_ids("fixture");
    let sibling_layers = fx.layer_ids("sibling");
    assert_eq!(fixture_layers[..2], sibling_layers[..2]);
    assert_eq!(store.layers().len(), 4, "shared layers are not duplicated");

    // we delete podman's image: its own top layer goes, the shared ones stay
    store.ok(&["delete", "localhost/sibling:t"]);
    let left: BTreeSet<String> = store.layers().iter().map(|l| str_of(&l["id"])).collect();
    assert_eq!(
        left,
        fixture_layers.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert!(!store.layer_data_dir(&sibling_layers[2]).exists());
    assert_store_consistent(&store, "after we deleted podman's image");
    assert_eq!(cs_layer_ids(&store).len(), 3);

    // a container keeps its image's layers alive: podman rmi refuses, we refuse too
    let cid = str_of(&store.json(&["container", &reg.name("fixture")])["id"]);
    store.fails(&["delete", &reg.name("fixture")], &["IN_USE"]);
    let r = run(store.podman().args(["rmi", &reg.name("fixture")]));
    assert!(
        !r.ok(),
        "podman rmi removed an image in use by our container"
    );
    store.ok(&["delete", &cid]);

    // podman deletes ours: everything goes
    store.podman_ok(&["rmi", &reg.name("fixture")]);
    assert!(store.layers().is_empty());
    assert!(store.images().is_empty());
    assert_store_consistent(&store, "after podman deleted our image");
    if driver == "overlay" {
        let l = store.root.join("overlay/l");
        assert!(
            !l.exists() || fs::read_dir(&l).unwrap().count() == 0,
            "l/ links left"
        );
    }
    let leftovers: Vec<String> = fs::read_dir(store.meta_dir("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar-split.gz"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let image_dirs: Vec<String> = fs::read_dir(store.meta_dir("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        image_dirs.is_empty(),
        "image big-data dirs left: {image_dirs:?}"
    );
}

#[test]
fn deletion_leaves_no_orphans_overlay() {
    deletion("overlay");
}

#[test]
fn deletion_leaves_no_orphans_vfs() {
    deletion("vfs");
}
