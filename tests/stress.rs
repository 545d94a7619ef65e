//! Five cimagectl workers at once on one store — pulling overlapping images (two the same
//! image, one an image sharing layers with it, one a multi-platform index), creating,
//! mounting, unmounting and deleting containers, one deleting and pulling an image again and
//! again — while podman lists images and containers in a loop. Every cimagectl and podman run
//! is bounded by a timeout (a deadlock fails the test instead of hanging it). Afterwards: no
//! container lost or left over, `cimagectl check` clean, the harness's consistency checker
//! clean, podman sees the same images and containers, and every container still mounts.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);
const ITERATIONS: usize = 6;

/// Runs a command, killing it (and failing) after TIMEOUT.
fn bounded(mut cmd: Command, what: &str) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let (o, e) = (dir.path().join("o"), dir.path().join("e"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {TIMEOUT:?} (deadlock?)\nstderr so far:\n{}",
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ran {
        status: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&o).unwrap_or_default(),
        stderr: std::fs::read_to_string(&e).unwrap_or_default(),
    }
}

fn ok(store: &Store, args: &[&str], what: &str) -> Ran {
    let r = bounded(store.command(args), what);
    assert!(
        r.ok(),
        "{what}: cimagectl {args:?} failed ({}):\n{}",
        r.status,
        r.stderr
    );
    r
}

/// A file each image's containers must show.
fn probe_file(image: &str) -> &'static str {
    match image {
        "sibling" => "sibling/only-here.txt",
        "multi" => "etc/arch",
        "zstd" => "zstd/hello.txt",
        _ => "bin/hello",
    }
}

const IMAGES: [&str; 4] = ["fixture", "fixture", "sibling", "multi"];

/// Pull, create, mount and read, unmount, and delete every other container, taking the images
/// in turn (worker i starts with IMAGES[i]). Returns the names of the containers it kept.
fn worker(store: &Store, proxy: &Proxy, id: usize) -> Vec<String> {
    let mut kept = Vec::new();
    for k in 0..ITERATIONS {
        let image = IMAGES[(id + k) % IMAGES.len()];
        let (proxy_ref, name) = (proxy.image_ref(image), proxy.name(image));
        let (proxy_ref, name) = (proxy_ref.as_str(), name.as_str());
        let what = format!("worker {id} ({image}) iteration {k}");
        ok(store, &["pull", "--tls-verify=false", proxy_ref], &what);
        let cname = format!("w{id}-{k}");
        ok(store, &["container", "--name", &cname, name], &what);
        let mount = ok(store, &["mount", &cname], &what)
            .stdout
            .trim()
            .to_string();
        let probe = std::path::Path::new(&mount).join(probe_file(image));
        assert!(
            probe.exists(),
            "{what}: {} missing in the mounted container",
            probe.display()
        );
        ok(store, &["unmount", &cname], &what);
        if k % 2 == 0 {
            ok(store, &["delete", &cname], &what);
        } else {
            kept.push(cname);
        }
    }
    kept
}

/// Pulls an image, uses it, and deletes it again, over and over.
fn churner(store: &Store, proxy_ref: &str, name: &str, stop: &AtomicBool) -> usize {
    let mut rounds = 0;
    while !stop.load(Ordering::SeqCst) || rounds == 0 {
        let what = format!("churner round {rounds}");
        ok(store, &["pull", "--tls-verify=false", proxy_ref], &what);
        let c = format!("churn-{rounds}");
        ok(store, &["container", "--name", &c, name], &what);
        ok(store, &["mount", &c], &what);
        ok(store, &["unmount", &c], &what);
        ok(store, &["delete", &c], &what);
        ok(store, &["delete", name], &what);
        rounds += 1;
    }
    rounds
}

/// The container ID of podman's "determining buildah container for container ID: container
/// not known", the error of a container deleted while `podman ps --external` listed it.
fn vanished_container(stderr: &str) -> Option<String> {
    let rest = stderr
        .split("determining buildah container for container ")
        .nth(1)?;
    let (id, why) = rest.split_once(':')?;
    (why.trim_start().starts_with("container not known") && id.len() == 64).then(|| id.to_string())
}

fn names_of(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["names"].as_array().cloned().unwrap_or_default())
        .map(|n| str_of(&n))
        .collect()
}

#[test]
fn concurrent_workers_and_podman_readers() {
    if !ensure_root_or_skip("overlay mounts and podman") || !ensure_tools_or_skip(&["podman"]) {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let store = Arc::new(Store::new("overlay"));
    ok(&store, &["store"], "open");
    // Slow enough that the pulls overlap each other and the container work.
    let proxy = Arc::new(Proxy::start(reg.port(), 400 * 1024));
    let churn_image = if fx.has("zstd") { "zstd" } else { "sibling" };
    let stop = Arc::new(AtomicBool::new(false));
    let podman_runs = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    // podman looks records up under separate lock acquisitions, so an image deleted between
    // two of them makes that one `podman images` fail with "layer not known" — with podman's
    // own `rmi` just the same. Tolerated only for the image the churner deletes.
    // Likewise podman 4.3's `ps --external` lists the containers, then looks each one up
    // again: a container deleted in between fails the whole listing ("determining buildah
    // container for container ID: container not known"). Tolerated only for containers that
    // are gone at the end, checked below (a kept container must never be unknown).
    let churn_id = fx.id(churn_image);
    let transient = Arc::new(AtomicUsize::new(0));
    let vanished = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (store, stop, runs) = (store.clone(), stop.clone(), podman_runs.clone());
        let (churn_id, transient, vanished) =
            (churn_id.clone(), transient.clone(), vanished.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for args in [
                    &["images", "--format", "json"][..],
                    &["ps", "--all", "--external", "--format", "json"][..],
                ] {
                    let mut cmd = store.podman();
                    cmd.args(args);
                    let r = bounded(cmd, "podman reader");
                    if !r.ok() && r.stderr.contains(&churn_id) && r.stderr.contains("not known") {
                        transient.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    if let Some(id) = vanished_container(&r.stderr) {
                        vanished.lock().unwrap().push(id);
                        transient.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    assert!(r.ok(), "podman {args:?} failed meanwhile:\n{}", r.stderr);
                    let v: Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| {
                        panic!("podman {args:?} printed no JSON ({e}):\n{}", r.stdout)
                    });
                    assert!(v.is_array());
                    runs.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let churn = {
        let (store, stop, proxy) = (store.clone(), stop.clone(), proxy.clone());
        let (r, n) = (proxy.image_ref(churn_image), proxy.name(churn_image));
        std::thread::spawn(move || churner(&store, &r, &n, &stop))
    };
    let handles: Vec<_> = (0..IMAGES.len())
        .map(|i| {
            let (store, proxy) = (store.clone(), proxy.clone());
            std::thread::spawn(move || worker(&store, &proxy, i))
        })
        .collect();
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut panics = Vec::new();
    for h in handles {
        match h.join() {
            Ok(kept) => expected.extend(kept),
            Err(p) => panics.push(p),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let churn_rounds = churn.join();
    let reader_result = reader.join();
    if let Some(p) = panics.pop() {
        std::panic::resume_unwind(p);
    }
    let churn_rounds = churn_rounds.unwrap_or_else(|p| std::panic::resume_unwind(p));
    reader_result.unwrap_or_else(|p| std::panic::resume_unwind(p));
    let elapsed = started.elapsed();

    // No container lost, none left over.
    let containers = store.json(&["containers"]);
    assert_eq!(names_of(&containers), expected, "containers after the run");
    for id in vanished.lock().unwrap().iter() {
        assert!(
            !containers
                .as_array()
                .unwrap()
                .iter()
                .any(|c| str_of(&c["id"]) == *id),
            "podman called container {id} unknown, yet it is still in the store"
        );
    }
    // Consistent, for us and for podman.
    let r = store.cmd(&["--json", "check"]);
    assert_eq!(r.status, 0, "check: {}", r.stdout);
    assert_store_consistent(&store, "after the concurrent run");
    let pod: Value = serde_json::from_str(
        &store
            .podman_ok(&["ps", "--all", "--external", "--format", "json"])
            .stdout,
    )
    .unwrap();
    let pod_names: BTreeSet<String> = names_of(&pod.as_array().map_or(Value::Null, |a| {
        Value::Array(
            a.iter()
                .map(|c| serde_json::json!({"names": c["Names"].clone()}))
                .collect(),
        )
    }));
    assert_eq!(pod_names, expected, "podman's containers");
    let ours: BTreeSet<String> = store
        .json(&["images"])
        .as_array()
        .unwrap()
        .iter()
        .map(|i| str_of(&i["id"]))
        .collect();
    let pod_images: Value =
        serde_json::from_str(&store.podman_ok(&["images", "--format", "json"]).stdout).unwrap();
    let pod_images: BTreeSet<String> = pod_images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| str_of(&i["Id"]))
        .collect();
    assert_eq!(pod_images, ours, "podman's images");
    for c in &expected {
        ok(&store, &["mount", c], "final mount");
        ok(&store, &["unmount", c], "final unmount");
    }
    eprintln!(
        "stress: {} workers x {ITERATIONS} iterations + churner ({churn_rounds} rounds) in {elapsed:.1?}; \
         podman ran {} times meanwhile ({} failed on an image or container being deleted); {} \
         containers kept, all present",
        IMAGES.len(),
        podman_runs.load(Ordering::SeqCst),
        transient.load(Ordering::SeqCst),
        expected.len()
    );
}

#[test]
fn vanished_container_reads_podmans_message() {
    let id = "bd29fe41588fb92edb7302ad56e12db1e567c7fded57e776f29d36db6a23c3e1";
    // As podman 4.3 printed it in a CI run.
    let msg =
        format!("Error: determining buildah container for container {id}: container not known\n");
    assert_eq!(vanished_container(&msg).as_deref(), Some(id));
    let other =
        format!("Error: determining buildah container for container {id}: permission denied\n");
    assert_eq!(vanished_container(&other), None);
    assert_eq!(vanished_container("Error: layer not known"), None);
}
