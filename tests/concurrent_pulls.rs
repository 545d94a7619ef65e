//! Two cimagectl processes pulling into one store at once (different images sharing layers, and
//! the same image), slowed down by a throttling proxy so that they really overlap, while a loop
//! runs `podman images` against the store: both pulls succeed, podman never fails, the
//! metadata parses and every image's layer chain exists with the image's DiffIDs.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Starts the pulls, runs `podman images` in a loop until they end; returns (pull outputs,
/// number of podman runs).
fn pull_while_podman_reads(store: &Store, refs: &[String]) -> (Vec<Ran>, usize) {
    let children: Vec<Child> = refs
        .iter()
        .map(|r| {
            store
                .command(&["--json", "pull", "--tls-verify=false", r])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn cimagectl pull")
        })
        .collect();
    let started = Instant::now();
    let mut podman_runs = 0;
    let mut pending: Vec<Option<Child>> = children.into_iter().map(Some).collect();
    let mut results: Vec<Option<Ran>> = vec![None; refs.len()];
    while pending.iter().any(|c| c.is_some()) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "pulls did not finish in 5 minutes"
        );
        let r = run(store.podman().args(["images", "--format", "json"]));
        assert!(
            r.ok(),
            "podman images failed during the pulls:\n{}",
            r.stderr
        );
        let parsed: Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("podman images --format json: {e}\n{}", r.stdout));
        assert!(parsed.is_array());
        podman_runs += 1;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(child) = slot {
                if child.try_wait().expect("try_wait").is_some() {
                    let out = slot
                        .take()
                        .unwrap()
                        .wait_with_output()
                        .expect("pull output");
                    let ran = Ran {
                        status: out.status.code().unwrap_or(-1),
                        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    };
                    results[i] = Some(ran);
                }
            }
        }
    }
    (
        results.into_iter().map(|r| r.unwrap()).collect(),
        podman_runs,
    )
}

/// Every image's top layer chain exists and carries the image's DiffIDs, bottom to top.
fn assert_chains(store: &Store, fx: &Fixtures, images: &[&str]) {
    let layers = store.layers_json();
    let by_id = |id: &str| layers.iter().find(|l| l["id"] == id).cloned();
    let recs = store.images_json();
    for name in images {
        let rec = recs
            .iter()
            .find(|i| i["id"] == fx.id(name).as_str())
            .unwrap_or_else(|| panic!("no image record for {name}"));
        let mut chain = Vec::new();
        let mut cur = rec["layer"].as_str().map(String::from);
        while let Some(id) = cur {
            let l =
                by_id(&id).unwrap_or_else(|| panic!("{name}: layer {id} of the chain is missing"));
            chain.push(str_of(&l["diff-digest"]));
            cur = l["parent"].as_str().map(String::from);
        }
        chain.reverse();
        assert_eq!(chain, fx.diff_ids(name), "{name}: layer chain");
    }
}

fn concurrent(driver: &str, images: &[&str]) {
    if !ensure_root_or_skip("the store and podman need root") {
        return;
    }
    if !ensure_tools_or_skip(&["podman"]) {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let store = Store::new(driver);
    store.ok(&["store"]);
    // ~210 KiB of layers per image at 100 KiB/s per connection: each pull takes about two
    // seconds, room for two `podman images` (up to a second each on a loaded 2-core machine)
    let proxy = Proxy::start(reg.port(), 100 * 1024);
    let refs: Vec<String> = images.iter().map(|i| proxy.image_ref(i)).collect();
    let started = Instant::now();
    let (results, podman_runs) = pull_while_podman_reads(&store, &refs);
    eprintln!(
        "{driver} {images:?}: pulls took {:?}, podman images ran {podman_runs} times meanwhile",
        started.elapsed()
    );
    assert!(podman_runs >= 2, "podman barely ran during the pulls");
    for (i, r) in results.iter().enumerate() {
        assert!(
            r.ok(),
            "pull of {} failed ({}):\n{}",
            refs[i],
            r.status,
            r.stderr
        );
        let v: Value = serde_json::from_str(r.stdout.trim()).expect("pull --json");
        assert_eq!(v["id"], fx.id(images[i]).as_str());
    }

    // metadata parses (read_list panics otherwise) and is consistent
    let distinct: BTreeSet<&str> = images.iter().copied().collect();
    assert_eq!(store.images_json().len(), distinct.len());
    let all_layers: BTreeSet<String> = distinct.iter().flat_map(|i| fx.layer_ids(i)).collect();
    let have: BTreeSet<String> = store
        .layers_json()
        .iter()
        .map(|l| str_of(&l["id"]))
        .collect();
    assert_eq!(have, all_layers, "each layer once, none missing");
    assert_chains(&store, fx, &distinct.into_iter().collect::<Vec<_>>());
    assert_store_consistent(&store, "after concurrent pulls");
    store.podman_ok(&["images"]);
    // the names went where they belong
    for (i, image) in images.iter().enumerate() {
        let listed = store.images();
        let holder = listed
            .iter()
            .find(|v| {
                v["names"]
                    .as_array()
                    .map(|n| n.iter().any(|x| x == proxy.name(image).as_str()))
                    .unwrap_or(false)
            })
            .unwrap_or_else(|| panic!("no image named {}", refs[i]));
        assert_eq!(holder["id"], fx.id(image).as_str());
    }
    // and the images are usable
    for image in images {
        let c = str_of(&store.json(&["container", &fx.id(image)])["id"]);
        store.ok(&["mount", &c]);
        store.ok(&["unmount", &c]);
        store.ok(&["delete", &c]);
    }
}

#[test]
fn different_images_sharing_layers_overlay() {
    concurrent("overlay", &["fixture", "sibling"]);
}

#[test]
fn same_image_twice_overlay() {
    concurrent("overlay", &["fixture", "fixture"]);
}

#[test]
fn different_images_sharing_layers_vfs() {
    concurrent("vfs", &["fixture", "sibling"]);
}
