//! Crash harness: cimagectl is killed with SIGKILL at random points of pulls, container
//! creations, mounts, unmounts and deletions. After every kill:
//! * the store opens (the automatic cleanup runs);
//! * `cimagectl check` reports it clean (warnings, such as a young layer left unreferenced by a
//!   killed deletion, are counted but allowed: containers/storage only calls them damage after
//!   24 hours);
//! * the harness's own consistency checker finds nothing (tests/common store_problems);
//! * podman lists the same images and containers as cimagectl;
//! * a new pull succeeds.
//!
//! At the end a repair removes the unreferenced layers and a wipe leaves an empty store.
//!
//! 20 trials by default; CIMAGE_CRASH_TRIALS=N for more (200 for the long run);
//! CIMAGE_CRASH_SEED=S replays a run (the seed is printed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// xorshift64*: enough randomness for kill points, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.below(items.len() as u64) as usize])
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Pull(&'static str),
    Create(String),
    Mount(String),
    Unmount(String),
    DeleteContainer(String),
    DeleteImage(String),
    Wipe,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Pull(_) => "pull",
            Op::Create(_) => "create",
            Op::Mount(_) => "mount",
            Op::Unmount(_) => "unmount",
            Op::DeleteContainer(_) => "delete-container",
            Op::DeleteImage(_) => "delete-image",
            Op::Wipe => "wipe",
        }
    }
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x[key].as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn choose(rng: &mut Rng, store: &Store, fx: &Fixtures) -> Op {
    let images = ids(&store.json(&["images"]), "id");
    // Pulls of images already there are warm (nothing to kill mid-way): pick absent ones.
    let absent: Vec<&'static str> = PULLS
        .iter()
        .copied()
        .filter(|name| {
            let id = if *name == "multi" {
                String::new()
            } else {
                fx.id(name)
            };
            !(images.contains(&id) || *name == "multi" && images.len() > 2)
        })
        .collect();
    let containers = store.json(&["containers"]);
    let all: Vec<String> = ids(&containers, "id");
    let mounted: Vec<String> = containers
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["mount_point"].is_string())
        .filter_map(|c| c["id"].as_str().map(String::from))
        .collect();
    loop {
        let op = match rng.below(100) {
            0..=29 => rng.pick(&absent).copied().map(Op::Pull),
            30..=51 => rng.pick(&images).cloned().map(Op::Create),
            52..=67 => rng.pick(&all).cloned().map(Op::Mount),
            68..=77 => rng.pick(&mounted).cloned().map(Op::Unmount),
            78..=87 => rng.pick(&all).cloned().map(Op::DeleteContainer),
            88..=97 => rng.pick(&images).cloned().map(Op::DeleteImage),
            _ => Some(Op::Wipe).filter(|_| !images.is_empty()),
        };
        if let Some(op) = op {
            return op;
        }
    }
}

const PULLS: [&str; 4] = ["fixture", "sibling", "big", "multi"];

fn args(op: &Op, proxy: &Proxy) -> Vec<String> {
    let s = |x: &str| x.to_string();
    match op {
        Op::Pull(name) => vec![s("pull"), s("--tls-verify=false"), proxy.image_ref(name)],
        Op::Create(image) => vec![s("container"), image.clone()],
        Op::Mount(c) => vec![s("mount"), c.clone()],
        Op::Unmount(c) => vec![s("unmount"), c.clone()],
        Op::DeleteContainer(c) | Op::DeleteImage(c) => vec![s("delete"), c.clone()],
        Op::Wipe => vec![s("wipe")],
    }
}

/// How long the operation usually runs (the kill lands anywhere in [0, this]).
fn window(op: &Op) -> Duration {
    match op {
        Op::Pull("big") => Duration::from_millis(2500),
        Op::Pull(_) => Duration::from_millis(1200),
        Op::Wipe => Duration::from_millis(400),
        _ => Duration::from_millis(120),
    }
}

/// Image IDs podman sees, and full container IDs (storage-only containers included).
fn podman_view(store: &Store) -> (BTreeSet<String>, BTreeSet<String>) {
    let images: Value =
        serde_json::from_str(&store.podman_ok(&["images", "--format", "json"]).stdout)
            .expect("podman images json");
    let images = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| str_of(&i["Id"]))
        .collect();
    let containers = store
        .podman_ok(&[
            "ps",
            "--all",
            "--external",
            "--no-trunc",
            "--format",
            "{{.ID}}",
        ])
        .stdout
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    (images, containers)
}

#[test]
fn sigkill_at_random_points_leaves_a_consistent_store() {
    if !ensure_root_or_skip("overlay mounts and podman") || !ensure_tools_or_skip(&["podman"]) {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let trials: usize = std::env::var("CIMAGE_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CIMAGE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash harness: {trials} trials, CIMAGE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let store = Store::new("overlay");
    // The small images take about a second through the proxy, big (24 MiB) about two.
    let proxy = Proxy::start(reg.port(), 12 << 20);
    proxy.set_rate(200 * 1024);
    store.ok(&["pull", "--tls-verify=false", &reg.image_ref("fixture")]);

    let started = Instant::now();
    let mut killed: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut finished: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut warnings: BTreeMap<String, usize> = BTreeMap::new();
    for trial in 0..trials {
        let op = choose(&mut rng, &store, fx);
        proxy.set_rate(if matches!(op, Op::Pull("big")) {
            12 << 20
        } else {
            200 * 1024
        });
        let delay = Duration::from_micros(rng.below(window(&op).as_micros() as u64));
        let argv = args(&op, &proxy);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let mut child = store
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cimagectl");
        std::thread::sleep(delay);
        let was_running = child.try_wait().expect("try_wait").is_none();
        let _ = child.kill();
        let _ = child.wait();
        *(if was_running {
            killed.entry(op.name())
        } else {
            finished.entry(op.name())
        })
        .or_insert(0) += 1;
        let what = format!("trial {trial} ({op:?}, killed after {delay:?}, seed {seed})");

        // 1. The store opens: recovery runs.
        let r = store.cmd(&["store"]);
        assert!(r.ok(), "{what}: store does not open:\n{}", r.stderr);
        // 2. check: clean. Layer contents only now and then: a kill cannot change a committed
        // layer's files (they are renamed into place whole), and hashing every layer after
        // every trial would dominate the run. The final check reads them all.
        let content = trial % 8 == 7;
        let r = store.cmd(if content {
            &["--json", "check"][..]
        } else {
            &["--json", "check", "--no-content"][..]
        });
        let report: Value = serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("{what}: check output: {e}\n{}\n{}", r.stdout, r.stderr));
        assert!(
            r.status == 0 && report["clean"] == true,
            "{what}: check is not clean (exit {}):\n{}",
            r.status,
            serde_json::to_string_pretty(&report["errors"]).unwrap()
        );
        for w in report["warnings"].as_array().unwrap() {
            *warnings.entry(str_of(&w["kind"])).or_insert(0) += 1;
        }
        // 3. The harness's own consistency checker.
        let problems = store_problems(&store);
        assert!(
            problems.is_empty(),
            "{what}: store inconsistent:\n  {}",
            problems.join("\n  ")
        );
        // 4. podman sees what cimagectl sees.
        let ours_images: BTreeSet<String> =
            ids(&store.json(&["images"]), "id").into_iter().collect();
        let ours_containers: BTreeSet<String> = ids(&store.json(&["containers"]), "id")
            .into_iter()
            .collect();
        let (pod_images, pod_containers) = podman_view(&store);
        assert_eq!(pod_images, ours_images, "{what}: podman images differ");
        assert_eq!(
            pod_containers, ours_containers,
            "{what}: podman containers differ"
        );
        // 5. A new pull succeeds (the interrupted image, or a small one), straight from the
        // registry. big is pulled again once at the end: extracting it costs seconds.
        let again = match op {
            Op::Pull(name) if name != "big" => name,
            _ => ["fixture", "sibling"][trial % 2],
        };
        let r = store.cmd(&["pull", "--tls-verify=false", &reg.image_ref(again)]);
        assert!(
            r.ok(),
            "{what}: a new pull of {again} failed:\n{}",
            r.stderr
        );
    }
    let elapsed = started.elapsed();
    store.ok(&["pull", "--tls-verify=false", &reg.image_ref("big")]);
    let r = store.cmd(&["--json", "check"]);
    let report: Value = serde_json::from_str(r.stdout.trim()).expect("check json");
    assert!(
        r.status == 0 && report["clean"] == true,
        "final content check: {}",
        r.stdout
    );

    // A repair that treats every unreferenced layer as debris leaves no warnings but mounts'.
    let r = store.cmd(&["--json", "check", "--repair", "--unreferenced-any-age"]);
    let report: Value = serde_json::from_str(r.stdout.trim()).expect("repair json");
    assert_eq!(r.status, 0, "repair: {}", r.stdout);
    let left: Vec<&Value> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["kind"] != "mount-uncounted")
        .collect();
    assert!(left.is_empty(), "warnings after repair: {left:?}");
    // Every image still makes a container that mounts.
    for image in ids(&store.json(&["images"]), "id") {
        let c = store.json(&["container", &image]);
        let id = str_of(&c["id"]);
        store.ok(&["mount", &id]);
        store.ok(&["unmount", &id]);
    }
    store.ok(&["wipe"]);
    assert!(store.json(&["images"]).as_array().unwrap().is_empty());
    let (pod_images, _) = podman_view(&store);
    assert!(pod_images.is_empty(), "podman still lists {pod_images:?}");
    assert_store_consistent(&store, "after the wipe");
    eprintln!(
        "crash harness: {trials} trials in {elapsed:.1?}, 0 failed; killed mid-operation: {killed:?}; \
         finished before the kill: {finished:?}; check warnings seen: {warnings:?}; repaired: {}",
        report["repaired"].as_array().map_or(0, |a| a.len())
    );
}
