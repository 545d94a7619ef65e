//! `cimagectl check`'s content pass on real pulls, through the C API:
//! * layers written by containers/storage (skopeo copying the fixture image, with its hard
//!   links, symlinks, fifo, whiteouts, opaque directory and files owned by uid 1000) and by
//!   cimage check clean on overlay and vfs: the comparison of files with tar headers agrees
//!   with both appliers;
//! * a layer altered after the pull (content changed, mode changed, a file added, an empty
//!   file removed) is reported as layer-content-mismatch, only by the content pass;
//!   `check --repair` removes the image built on it, the next pull fetches the layer again,
//!   and the store is clean and readable by podman.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::Value;

fn prerequisites() -> Option<(&'static Fixtures, &'static Registry)> {
    if !ensure_root_or_skip("files owned by other users, overlay whiteouts") {
        return None;
    }
    if !ensure_tools_or_skip(&["skopeo", "podman"]) {
        return None;
    }
    fixtures_and_registry()
}

fn check(store: &Store, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["--json", "check"];
    args.extend_from_slice(extra);
    let r = store.cmd(&args);
    let report: Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("check output: {e}\n{}\n{}", r.stdout, r.stderr));
    (r.status, report)
}

fn assert_clean(store: &Store, what: &str) -> Value {
    let (status, report) = check(store, &[]);
    assert!(
        status == 0 && report["clean"] == true && report["warnings"] == serde_json::json!([]),
        "{what}: {}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    report
}

#[test]
fn layers_written_by_containers_storage_and_by_cimage_check_clean() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    for driver in ["overlay", "vfs"] {
        let store = Store::new(driver);
        run_ok(skopeo().args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &reg.image_ref("fixture"),
            &store.cs_ref(&reg.name("fixture")),
        ]));
        let report = assert_clean(&store, &format!("{driver}, skopeo's layers"));
        assert_eq!(report["layers_verified"], 3, "{report}");
        // cimage adds an image sharing two of those layers.
        store.ok(&["pull", "--tls-verify=false", &reg.image_ref("sibling")]);
        let report = assert_clean(&store, &format!("{driver}, skopeo's and cimage's layers"));
        assert_eq!(report["layers_verified"], 4, "{report}");
        assert_eq!(fx.layer_ids("fixture").len(), 3);
    }
}

#[test]
fn a_layer_altered_after_the_pull_is_found_and_repaired() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 4] = [
        ("content changed", |d| {
            let p = d.join("etc/hostname");
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[0] ^= 0x20; // same size, other content
            std::fs::write(&p, bytes).unwrap();
        }),
        ("mode changed", |d| {
            std::fs::set_permissions(d.join("bin/hello"), std::fs::Permissions::from_mode(0o6777))
                .unwrap()
        }),
        ("file added", |d| {
            std::fs::write(d.join("etc/planted"), b"not from the image\n").unwrap()
        }),
        ("directory removed", |d| {
            std::fs::remove_dir_all(d.join("home")).unwrap()
        }),
    ];
    for driver in ["overlay", "vfs"] {
        for (what, damage) in damages {
            let store = Store::new(driver);
            let reference = reg.image_ref("fixture");
            store.ok(&["pull", "--tls-verify=false", &reference]);
            assert_clean(&store, &format!("{driver} {what}: before"));
            let base = fx.layer_ids("fixture")[0].clone();
            damage(&store.layer_data_dir(&base));

            let (status, quick) = check(&store, &["--no-content"]);
            assert!(
                status == 0 && quick["clean"] == true,
                "{driver} {what}: {quick}"
            );
            let (status, report) = check(&store, &[]);
            assert_eq!(status, 3, "{driver} {what}: {report}");
            let errors: Vec<(String, String)> = report["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (str_of(&e["kind"]), str_of(&e["id"])))
                .collect();
            // vfs: the layers above hold copies, untouched; overlay: they hold their own files.
            assert_eq!(
                errors,
                vec![("layer-content-mismatch".to_string(), base.clone())],
                "{driver} {what}: {report}"
            );

            let (status, repaired) = check(&store, &["--repair"]);
            assert_eq!(status, 0, "{driver} {what}: {repaired}");
            let removed: Vec<String> = repaired["repaired"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["kind"] == "removed-layer" || f["kind"] == "removed-image")
                .map(|f| str_of(&f["id"]))
                .collect();
            assert!(
                removed.contains(&base) && removed.contains(&fx.id("fixture")),
                "{driver} {what}: {repaired}"
            );
            assert_eq!(store.images(), Vec::<Value>::new(), "{driver} {what}");

            // The next pull fetches the layer again; podman reads the result.
            store.ok(&["pull", "--tls-verify=false", &reference]);
            let report = assert_clean(&store, &format!("{driver} {what}: pulled again"));
            assert_eq!(report["layers_verified"], 3, "{report}");
            let listed = store.podman_ok(&["images", "--format", "{{.ID}}", "--no-trunc"]);
            assert!(
                listed.stdout.contains(&fx.id("fixture")),
                "{driver} {what}: podman lists {}",
                listed.stdout
            );
        }
    }
}
