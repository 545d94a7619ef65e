//! Pulls through the library's Rust API from a registry that misbehaves on purpose
//! (tests/common/fault_registry.rs): a body cut off mid-blob is resumed with a Range request and
//! still verified whole (also from a server that ignores Range); 3×500 then success; 429 with
//! Retry-After; retries are bounded; a stalled body ends with TIMEOUT within the stall limit; an
//! overall deadline; a lying digest gives DIGEST_MISMATCH with nothing registered; a 100 MB
//! manifest is refused; blob redirects (to "object storage", another server) are followed; tags
//! are listed across pages and images inspected without pulling. After every failure the store
//! is consistent, no staging directory or held blob lock remains, and the next pull succeeds.

mod common;
#[path = "common/fault_registry.rs"]
mod fault_registry;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cimage::config::storage::DriverKind;
use cimage::pull::{Progress, ProgressSink, PullOptions};
use cimage::registry::retry::RetryPolicy;
use cimage::runtime::{run_blocking, CancelFlag};
use cimage::store::lock::LockFile;
use cimage::store::ImageInfo;
use cimage::{Error, Status, StoreOptions};
use common::*;
use fault_registry::*;

const REPO: &str = "faults/app";

struct Pulled {
    result: Result<ImageInfo, Error>,
    events: Vec<Progress>,
    elapsed: Duration,
}

impl Pulled {
    fn ok(&self) -> &ImageInfo {
        match &self.result {
            Ok(i) => i,
            Err(e) => panic!("pull failed: {}: {}", e.status.name(), e.message),
        }
    }
    fn err(&self) -> &Error {
        match &self.result {
            Ok(i) => panic!("pull succeeded ({}) but should have failed", i.id),
            Err(e) => e,
        }
    }
    fn retries(&self) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Progress::Retrying { digest, message } => Some((digest.clone(), message.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Quick retries so that the tests stay short; the same code paths as the defaults.
fn fast_options() -> PullOptions {
    PullOptions {
        access: cimage::registry::AccessOptions {
            tls_verify: Some(false),
            ..Default::default()
        },
        retry: RetryPolicy {
            max_retries: 4,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
        },
        stall_timeout: Duration::from_secs(10),
        ..PullOptions::default()
    }
}

fn open_store(store: &Store) -> Arc<cimage::Store> {
    Arc::new(
        cimage::Store::open(&StoreOptions {
            graph_root: Some(store.root.clone()),
            run_root: Some(store.run_root.clone()),
            driver: Some(DriverKind::parse(&store.driver).unwrap()),
            config_file: None,
            ..Default::default()
        })
        .expect("open the store"),
    )
}

fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Pulled {
    let s = open_store(store);
    let cancel = CancelFlag::new();
    let c2 = cancel.clone();
    let (r, o) = (reference.to_string(), opts.clone());
    let mut events = Vec::new();
    let started = Instant::now();
    let result = run_blocking(
        &cancel,
        move |tx| async move { cimage::pull::pull(s, &r, &o, ProgressSink::new(tx), c2).await },
        |ev: &Progress| {
            events.push(ev.clone());
            true
        },
    );
    Pulled {
        result,
        events,
        elapsed: started.elapsed(),
    }
}

fn setup(why: &str) -> Option<Store> {
    if !ensure_root_or_skip(why) {
        return None;
    }
    let store = Store::new("vfs");
    Some(store)
}

/// No staging directory, no held blob lock, metadata consistent.
fn assert_clean(store: &Store, when: &str) {
    assert_store_consistent(store, when);
    for dir in [
        store.root.join("tmp"),
        store.root.join("overlay/cimage-staging"),
    ] {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let left: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("cimage-staging"))
                .collect();
            assert!(
                left.is_empty(),
                "{when}: staging left in {}: {left:?}",
                dir.display()
            );
        }
    }
    assert_blob_locks_free(
        &store.run_root.join(format!("{}-locks", store.driver)),
        when,
    );
}

pub fn assert_blob_locks_free(dir: &Path, when: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let held = LockFile::new(e.path())
            .try_lock_exclusive()
            .expect("try the blob lock");
        assert!(
            held.is_some(),
            "{when}: blob lock {} still held",
            e.path().display()
        );
    }
}

/// The image is not in the store and no layer of `blob` was registered.
fn assert_not_registered(store: &Store, image: &TestImage, blob: &str) {
    assert!(
        !store
            .images_json()
            .iter()
            .any(|i| i["id"] == hex_of(&image.config_digest)),
        "the image was registered"
    );
    assert!(
        !store
            .layers_json()
            .iter()
            .any(|l| l["compressed-diff-digest"] == blob),
        "a layer of {blob} was registered"
    );
}

fn image_id(image: &TestImage) -> String {
    hex_of(&image.config_digest).to_string()
}

#[test]
fn a_cut_blob_body_is_resumed_with_a_range_request_and_verified_whole() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    let image = TestImage::with_big_layer(3 << 20, 1);
    reg.add_image(REPO, "t", &image);
    let big = image.layers[1].0.clone();
    reg.fault(Some("GET"), &big, Fault::Truncate { after: 1 << 20 }, 2);

    let p = pull(&store, &reg.reference(REPO, "t"), &fast_options());
    assert_eq!(p.ok().id, image_id(&image));
    let gets: Vec<Request> = reg
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains(&big))
        .collect();
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=1048576-"));
    assert_eq!(gets[2].range.as_deref(), Some("bytes=2097152-"));
    let retries = p.retries();
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries.iter().all(|(d, _)| *d == big));
    assert!(
        retries[0].1.contains("resuming at byte 1048576"),
        "{}",
        retries[0].1
    );
    // The whole blob went through one verified stream: the layer has its DiffID.
    let layers = store.layers_json();
    let layer = layers
        .iter()
        .find(|l| l["compressed-diff-digest"] == big.as_str())
        .expect("the big layer");
    assert_eq!(layer["diff-digest"], image.diff_ids[1].as_str());
    assert_clean(&store, "after a resumed pull");
}

#[test]
fn a_server_that_ignores_range_is_read_again_from_the_start() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    reg.set_honour_range(false);
    let image = TestImage::with_big_layer(2 << 20, 2);
    reg.add_image(REPO, "t", &image);
    let big = image.layers[1].0.clone();
    reg.fault(Some("GET"), &big, Fault::Truncate { after: 700_000 }, 1);
    let p = pull(&store, &reg.reference(REPO, "t"), &fast_options());
    assert_eq!(p.ok().id, image_id(&image));
    assert_eq!(reg.count("GET", &big), 2);
    assert_clean(&store, "after a pull with a restarted blob");
}

#[test]
fn three_server_errors_then_success() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    let image = TestImage::with_big_layer(100_000, 3);
    reg.add_image(REPO, "t", &image);
    let status500 = Fault::Status {
        code: 500,
        retry_after: None,
    };
    reg.fault(Some("GET"), "/manifests/", status500.clone(), 3);
    reg.fault(Some("GET"), &image.layers[0].0, status500, 3);
    let p = pull(&store, &reg.reference(REPO, "t"), &fast_options());
    assert_eq!(p.ok().id, image_id(&image));
    assert_eq!(reg.count("GET", "/manifests/"), 4);
    assert_eq!(reg.count("GET", &image.layers[0].0), 4);
    let retries = p.retries();
    assert_eq!(retries.len(), 6, "{retries:?}");
    assert!(
        retries.iter().any(|(_, m)| m.contains("500")),
        "{retries:?}"
    );
    assert_clean(&store, "after retried 500s");
}

#[test]
fn too_many_requests_with_retry_after_is_retried() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    let image = TestImage::with_big_layer(100_000, 4);
    reg.add_image(REPO, "t", &image);
    let big = image.layers[1].0.clone();
    // Retry-After in seconds: waited for instead of the 50 ms backoff of fast_options().
    reg.fault(
        Some("GET"),
        &big,
        Fault::Status {
            code: 429,
            retry_after: Some(1),
        },
        2,
    );
    let p = pull(&store, &reg.reference(REPO, "t"), &fast_options());
    assert_eq!(p.ok().id, image_id(&image));
    assert_eq!(reg.count("GET", &big), 3);
    let retries = p.retries();
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries
        .iter()
        .all(|(d, m)| *d == big && m.contains("429") && m.contains(" in 1 s:")));
    assert!(
        p.elapsed >= Duration::from_secs(2) && p.elapsed < Duration::from_secs(6),
        "two Retry-After waits of 1 s took {:?}",
        p.elapsed
    );
    assert_clean(&store, "after 429s");

    // A 503 whose Retry-After is an HTTP date about 2 s ahead (whole seconds: 1-2 s from now).
    let store = Store::new("vfs");
    reg.clear_faults();
    reg.fault(
        Some("GET"),
        "/manifests/",
        Fault::StatusUntil {
            code: 503,
            after: Duration::from_secs(2),
        },
        1,
    );
    let p = pull(&store, &reg.reference(REPO, "t"), &fast_options());
    assert_eq!(p.ok().id, image_id(&image));
    let retries = p.retries();
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0].1.contains("503"), "{retries:?}");
    assert!(
        p.elapsed >= Duration::from_millis(900) && p.elapsed < Duration::from_secs(5),
        "the HTTP-date wait took {:?}",
        p.elapsed
    );

    // A wait longer than the deadline allows is not waited for: the 429 is the answer.
    let store = Store::new("vfs");
    reg.clear_faults();
    reg.fault(
        Some("GET"),
        &big,
        Fault::Status {
            code: 429,
            retry_after: Some(30),
        },
        usize::MAX,
    );
    let mut opts = fast_options();
    opts.deadline = Some(Duration::from_secs(10));
    let gets_before = reg.count("GET", &big);
    let p = pull(&store, &reg.reference(REPO, "t"), &opts);
    let e = p.err();
    assert_eq!(
        (e.status, e.http_status),
        (Status::Registry, 429),
        "{}",
        e.message
    );
    assert!(e.message.contains("retry after 30 s"), "{}", e.message);
    assert!(p.elapsed < Duration::from_secs(5), "took {:?}", p.elapsed);
    assert_eq!(reg.count("GET", &big), gets_before + 1, "asked once");
    assert_clean(&store, "after a refused Retry-After");
}

#[test]
fn retries_are_bounded() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    let image = TestImage::with_big_layer(100_000, 5);
    reg.add_image(REPO, "t", &image);
    let big = image.layers[1].0.clone();
    reg.fault(
        Some("GET"),
        &big,
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        usize::MAX,
    );
    let mut opts = fast_options();
    opts.retry.max_retries = 2;
    let p = pull(&store, &reg.reference(REPO, "t"), &opts);
    let e = p.err();
    assert_eq!(
        (e.status, e.http_status),
        (Status::Registry, 503),
        "{}",
        e.message
    );
    assert_eq!(reg.count("GET", &big), 3, "one try and two retries");
    assert_not_registered(&store, &image, &big);
    assert_clean(&store, "after a pull that ran out of retries");

    // A registry that is not there: NETWORK once the retries are used up.
    let port = free_port();
    let p = pull(
        &store,
        &format!("docker://127.0.0.1:{port}/{REPO}:t"),
        &opts,
    );
    assert_eq!(p.err().status, Status::Network, "{}", p.err().message);
    assert_eq!(p.retries().len(), 2);

    reg.clear_faults();
    let p = pull(&store, &reg.reference(REPO, "t"), &opts);
    assert_eq!(p.ok().id, image_id(&image));
    assert_clean(&store, "after the next pull");
}

#[test]
fn a_stalled_body_ends_with_timeout_within_the_stall_limit() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    let image = TestImage::with_big_layer(2 << 20, 6);
    reg.add_image(REPO, "t", &image);
    let big = image.layers[1].0.clone();
    reg.fault(Some("GET"), &big, Fault::Stall { at: 500_000 }, usize::MAX);
    let mut opts = fast_options();
    opts.stall_timeout = Duration::from_millis(1500);
    let p = pull(&store, &reg.reference(REPO, "t"), &opts);
    let e = p.err();
    assert_eq!(e.status, Status::Timeout, "{}", e.message);
    assert!(e.message.contains("stall limit"), "{}", e.message);
    // One stall after bytes had arrived (resumed once), one without any: two stall limits.
    assert!(
        p.elapsed < Duration::from_millis(1500 * 2 + 1500),
        "took {:?}",
        p.elapsed
    );
    assert_eq!(reg.count("GET", &big), 2);
    assert_not_registered(&store, &image, &big);
    assert_clean(&store, "after a stalled pull");

    reg.clear_faults();
    assert_eq!(
        pull(&store, &reg.reference(REPO, "t"), &opts).ok().id,
        image_id(&image)
    );
}

#[test]
fn the_deadline_ends_a_slow_pull_with_timeout() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    let image = TestImage::with_big_layer(2 << 20, 7);
    reg.add_image(REPO, "t", &image);
    let big = image.layers[1].0.clone();
    reg.fault(
        Some("GET"),
        &big,
        Fault::Throttle {
            bytes_per_second: 100_000,
        },
        usize::MAX,
    );
    let mut opts = fast_options();
    opts.deadline = Some(Duration::from_millis(1200));
    let p = pull(&store, &reg.reference(REPO, "t"), &opts);
    let e = p.err();
    assert_eq!(e.status, Status::Timeout, "{}", e.message);
    assert!(e.message.contains("deadline"), "{}", e.message);
    assert!(p.elapsed < Duration::from_secs(4), "took {:?}", p.elapsed);
    assert_not_registered(&store, &image, &big);
    assert_clean(&store, "after the deadline");
}

#[test]
fn a_lying_digest_is_a_digest_mismatch_with_nothing_registered() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    let image = TestImage::with_big_layer(300_000, 8);
    reg.add_image(REPO, "t", &image);
    let big = image.layers[1].0.clone();
    reg.fault(Some("GET"), &big, Fault::Corrupt, usize::MAX);
    let p = pull(&store, &reg.reference(REPO, "t"), &fast_options());
    let e = p.err();
    assert_eq!(e.status, Status::DigestMismatch, "{}", e.message);
    assert!(e.message.contains(&big), "{}", e.message);
    assert_eq!(reg.count("GET", &big), 1, "wrong content is not retried");
    assert!(p.retries().is_empty());
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Progress::Failed { digest, .. } if *digest == big)));
    assert_not_registered(&store, &image, &big);
    assert_clean(&store, "after a lying digest");
}

#[test]
fn a_huge_manifest_is_refused() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    reg.add_huge_manifest(REPO, "huge", 100 << 20);
    let p = pull(&store, &reg.reference(REPO, "huge"), &fast_options());
    let e = p.err();
    assert_eq!(e.status, Status::Registry, "{}", e.message);
    assert!(e.message.contains("limit"), "{}", e.message);
    assert!(store.images_json().is_empty());
    assert_clean(&store, "after a huge manifest");

    // Sent chunked, no length announced: reading stops at the 4 MiB limit.
    reg.add_huge_manifest_framed(REPO, "chunked", 100 << 20, Framing::Chunked);
    let sent_before = reg.body_bytes_sent();
    let p = pull(&store, &reg.reference(REPO, "chunked"), &fast_options());
    let e = p.err();
    assert_eq!(e.status, Status::Registry, "{}", e.message);
    assert!(
        e.message.contains("4194304-byte limit") && e.message.contains("reading stopped"),
        "{}",
        e.message
    );
    assert!(p.elapsed < Duration::from_secs(10), "took {:?}", p.elapsed);
    let sent = reg.body_bytes_sent() - sent_before;
    assert!(sent < 40 << 20, "the client read on: {sent} bytes sent");
    assert_clean(&store, "after a chunked huge manifest");

    // An index entry that announces a huge manifest is refused before any request for it.
    let image = TestImage::with_big_layer(1000, 9);
    reg.add_image(REPO, "t", &image);
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": image.manifest_digest,
                       "size": 50u64 << 20,
                       "platform": {"os": "linux", "architecture": host_arch()}}],
    })
    .to_string();
    reg.add_manifest(REPO, "index", OCI_INDEX, index.as_bytes());
    let p = pull(&store, &reg.reference(REPO, "index"), &fast_options());
    assert!(p.err().message.contains("limit"), "{}", p.err().message);
    assert_eq!(
        reg.count("GET", &format!("/manifests/{}", image.manifest_digest)),
        0
    );
}

/// Exit code, peak RSS (KiB, from wait4(2)), stderr and run time of a cimagectl run.
fn cimagectl_peak_rss(store: &Store, args: &[&str]) -> (i32, i64, String, Duration) {
    use std::os::unix::process::ExitStatusExt;
    // Built (on first use) before the clock starts.
    let mut command = store.command(args);
    let started = Instant::now();
    // Reaped by the wait4 below, which also gives the peak RSS that Child::wait does not.
    #[allow(clippy::zombie_processes)]
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run cimagectl");
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    let mut status = 0;
    // SAFETY: plain syscall on our own child; rusage is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4: {}", std::io::Error::last_os_error());
    let code = std::process::ExitStatus::from_raw(status)
        .code()
        .unwrap_or(-1);
    (code, usage.ru_maxrss, stderr, started.elapsed())
}

#[test]
fn a_huge_manifest_keeps_a_cimagectl_process_small() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    // Chunked (no length), and a Content-Length of 3 MiB (under the limit) in front of 100 MB.
    reg.add_huge_manifest_framed(REPO, "chunked", 100 << 20, Framing::Chunked);
    reg.add_huge_manifest_framed(REPO, "lying", 100 << 20, Framing::LyingLength(3 << 20));
    for (tag, expect) in [("chunked", "limit"), ("lying", "")] {
        let reference = reg.reference(REPO, tag);
        let (code, peak_kib, stderr, took) =
            cimagectl_peak_rss(&store, &["pull", "--tls-verify=false", &reference]);
        assert_ne!(code, 0, "{tag}: the pull succeeded?\n{stderr}");
        assert!(stderr.contains("REGISTRY"), "{tag}: {stderr}");
        assert!(stderr.contains(expect), "{tag}: {stderr}");
        assert!(took < Duration::from_secs(5), "{tag}: took {took:?}");
        eprintln!("{tag}: cimagectl peak RSS {} KiB in {took:?}", peak_kib);
        assert!(
            peak_kib < 64 * 1024,
            "{tag}: cimagectl peaked at {peak_kib} KiB"
        );
    }
    assert!(
        reg.body_bytes_sent() < 80 << 20,
        "the client read on: {} bytes sent",
        reg.body_bytes_sent()
    );
    assert!(store.images_json().is_empty());
    assert_clean(&store, "after huge manifests through cimagectl");
}

#[test]
fn blob_redirects_are_followed() {
    let Some(store) = setup("the store keeps file owners") else {
        return;
    };
    let reg = FaultRegistry::start();
    let storage = FaultRegistry::start();
    let image = TestImage::with_big_layer(500_000, 10);
    reg.add_image(REPO, "t", &image);
    storage.add_image(REPO, "t", &image);
    reg.fault(
        Some("GET"),
        "/blobs/",
        Fault::Redirect {
            to: storage.base_url(),
        },
        usize::MAX,
    );
    // The object store breaks off once: the resume goes through the redirect again.
    let big = image.layers[1].0.clone();
    storage.fault(Some("GET"), &big, Fault::Truncate { after: 200_000 }, 1);
    let p = pull(&store, &reg.reference(REPO, "t"), &fast_options());
    assert_eq!(p.ok().id, image_id(&image));
    for digest in image.layer_digests() {
        assert!(
            storage.count("GET", &digest) >= 1,
            "{digest} not fetched from storage"
        );
    }
    assert_eq!(storage.count("GET", &big), 2);
    assert_clean(&store, "after redirected blobs");
}

#[test]
fn tags_are_listed_across_pages_and_images_inspected_without_pulling() {
    let reg = FaultRegistry::start();
    let image = TestImage::with_big_layer(1000, 11);
    let mut expected: Vec<String> = (0..2500).map(|i| format!("v{i:04}")).collect();
    for tag in &expected {
        reg.add_manifest(REPO, tag, OCI_MANIFEST, &image.manifest);
    }
    reg.add_image(REPO, "latest", &image);
    expected.push("latest".into());
    expected.sort();
    let cancel = CancelFlag::new();
    let opts = fast_options();
    let (o, r) = (opts.clone(), format!("docker://{}/{REPO}", reg.host_port()));
    let c2 = cancel.clone();
    let tags = run_blocking(
        &cancel,
        move |tx| async move {
            cimage::inspect::list_tags(&r, &o, ProgressSink::new(tx), c2).await
        },
        |_: &Progress| true,
    )
    .expect("list tags");
    assert_eq!(tags["name"], format!("{}/{REPO}", reg.host_port()));
    let got: Vec<String> = serde_json::from_value(tags["tags"].clone()).unwrap();
    assert_eq!(got, expected);
    assert_eq!(reg.count("GET", "/tags/list"), 3, "pages of 1000");

    let (o, r) = (opts, reg.reference(REPO, "latest"));
    let c2 = cancel.clone();
    let doc = run_blocking(
        &cancel,
        move |tx| async move { cimage::inspect::inspect(&r, &o, ProgressSink::new(tx), c2).await },
        |_: &Progress| true,
    )
    .expect("inspect");
    assert_eq!(doc["digest"], image.manifest_digest.as_str());
    assert_eq!(doc["config_digest"], image.config_digest.as_str());
    assert_eq!(doc["layers"].as_array().unwrap().len(), 2);
    assert_eq!(doc["layers"][1]["digest"], image.layers[1].0.as_str());
    assert_eq!(doc["labels"]["test"], "fault-registry");
    assert_eq!(doc["manifest"]["schemaVersion"], 2);
    assert_eq!(
        doc["config"]["rootfs"]["diff_ids"][0],
        image.diff_ids[0].as_str()
    );
    // No layer was downloaded.
    for digest in image.layer_digests() {
        assert_eq!(reg.count("GET", &digest), 0);
    }
}
