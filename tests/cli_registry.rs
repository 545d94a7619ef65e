//! cimagectl's registry commands against the test registry: `inspect` (manifest digest, config,
//! layers as JSON, no layer downloaded, also through an index and for an OCI layout), `tags`
//! (one a line, or JSON), the registry options (bad values are usage errors), and the pull's
//! output: skopeo-like lines when stderr is not a terminal, live per-blob bars when it is (run
//! under script(1) for a pseudo-terminal).

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn repo_ref(reg: &Registry, name: &str) -> String {
    format!("docker://{}/{REPO_PREFIX}/{name}", reg.host_port())
}

#[test]
fn inspect_shows_digest_config_and_layers_without_pulling() {
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let store = Store::new("vfs");
    let proxy = Proxy::start(reg.port(), 0);
    let v = store.json(&["inspect", "--tls-verify=false", &proxy.image_ref("fixture")]);
    assert_eq!(v["digest"], fx.manifest_digest("fixture").as_str());
    assert_eq!(v["config_digest"], fx.config_digest("fixture").as_str());
    assert_eq!(
        v["name"],
        format!("{}/{REPO_PREFIX}/fixture", proxy.host_port()).as_str()
    );
    let layers: Vec<String> = v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| str_of(&l["digest"]))
        .collect();
    assert_eq!(layers, fx.blob_digests("fixture"));
    assert_eq!(
        v["config"]["rootfs"]["diff_ids"],
        serde_json::json!(fx.diff_ids("fixture"))
    );
    assert_eq!(v["manifest"]["schemaVersion"], 2);
    for blob in fx.blob_digests("fixture") {
        assert_eq!(proxy.blob_gets(&blob), 0, "inspect downloaded {blob}");
    }
    // inspect prints JSON without --json too (as skopeo does).
    let plain = store.ok(&["inspect", "--tls-verify=false", &reg.image_ref("fixture")]);
    let parsed: Value = serde_json::from_str(plain.stdout.trim()).expect("inspect prints JSON");
    assert_eq!(parsed["digest"], v["digest"]);

    // An index is resolved to the requested platform's image.
    if fx.has("multi") {
        let arm = store.json(&[
            "inspect",
            "--tls-verify=false",
            "--platform",
            "linux/arm64/v8",
            &reg.image_ref("multi"),
        ]);
        assert_eq!(arm["architecture"], "arm64");
        assert!(arm["index_digest"].is_string(), "{arm}");
    }
    // A layout needs no registry.
    let layout = store.json(&["inspect", &fx.oci_ref("fixture")]);
    assert_eq!(layout["digest"], fx.manifest_digest("fixture").as_str());
    // Errors keep the library's statuses.
    store.fails(
        &[
            "inspect",
            "--tls-verify=false",
            &format!("{}/nope:t", repo_ref(reg, "x")),
        ],
        &["MANIFEST_UNKNOWN"],
    );
}

#[test]
fn tags_are_listed_one_a_line_or_as_json() {
    let Some((_fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let store = Store::new("vfs");
    let r = store.ok(&["tags", "--tls-verify=false", &repo_ref(reg, "fixture")]);
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), vec![TAG]);
    let v = store.json(&["tags", "--tls-verify=false", &repo_ref(reg, "fixture")]);
    assert_eq!(v["tags"], serde_json::json!([TAG]));
    assert_eq!(
        v["name"],
        format!("{}/{REPO_PREFIX}/fixture", reg.host_port()).as_str()
    );
}

#[test]
fn registry_options_are_checked() {
    let store = Store::new("vfs");
    for bad in [
        vec!["inspect", "--stall-timeout", "soon", "oci:/x"],
        vec!["pull", "--deadline", "-3s", "oci:/x"],
        vec!["tags", "--retries", "1000", "oci:/x"],
    ] {
        let r = store.cmd(&bad);
        assert_eq!(r.status, 1, "{bad:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("INVALID_ARGUMENT"),
            "{bad:?}: {}",
            r.stderr
        );
    }
    let r = store.cmd(&["tags"]);
    assert_eq!(r.status, 2, "missing argument is a usage error");
}

#[test]
fn pull_prints_lines_off_a_terminal_and_live_bars_on_one() {
    if !ensure_root_or_skip("the store keeps file owners") {
        return;
    }
    if !ensure_tools_or_skip(&["script"]) {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let store = Store::new("vfs");
    let proxy = Proxy::start(reg.port(), 200 * 1024);
    let r = store.ok(&[
        "pull",
        "--tls-verify=false",
        "--stall-timeout",
        "20s",
        "--deadline",
        "2m",
        "--retries",
        "2",
        &proxy.image_ref("fixture"),
    ]);
    for blob in fx.blob_digests("fixture") {
        let line = format!("Copying blob {} done", &hex_of(&blob)[..12]);
        assert!(r.stderr.contains(&line), "no {line:?} in:\n{}", r.stderr);
    }
    assert!(
        !r.stderr.contains('\x1b'),
        "escape sequences off a terminal"
    );

    // The same pull on a pseudo-terminal, into a fresh store: bars redrawn in place.
    let tty_store = Store::new("vfs");
    let mut args = vec![cimagectl().display().to_string()];
    args.extend(tty_store.base_args());
    args.extend(
        ["pull", "--tls-verify=false", &proxy.image_ref("fixture")]
            .iter()
            .map(|s| s.to_string()),
    );
    let shell_line = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let out = run(Command::new("script")
        .args(["-qefc", &shell_line, "/dev/null"])
        .env("TERM", "xterm"));
    assert!(out.ok(), "pull on a terminal failed:\n{}", out.stdout);
    let screen = out.stdout;
    assert!(
        screen.contains("\x1b["),
        "no cursor movement on a terminal:\n{screen}"
    );
    assert!(screen.contains("] "), "no progress bar:\n{screen}");
    for blob in fx.blob_digests("fixture") {
        let short = &hex_of(&blob)[..12];
        assert!(
            screen.contains(&format!("Copying blob {short} [")),
            "no bar for {short}:\n{screen}"
        );
    }
}

#[test]
fn ctrl_c_cancels_a_pull_cleanly() {
    if !ensure_root_or_skip("the store keeps file owners") {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let store = Store::new("overlay");
    store.ok(&["store"]);
    // ~210 KiB at 20 KiB/s: ten seconds, interrupted after one.
    let proxy = Proxy::start(reg.port(), 20 * 1024);
    let child = store
        .command(&["pull", "--tls-verify=false", &proxy.image_ref("fixture")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn cimagectl pull");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || proxy
            .requests()
            .iter()
            .any(|r| r.contains("/blobs/"))),
        "no blob requested"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    // SAFETY: plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().expect("pull output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cimagectl: CANCELLED:"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "the cancel took {:?}",
        started.elapsed()
    );
    assert!(store.images_json().is_empty());
    assert_store_consistent(&store, "after Ctrl-C");
    let staging = store.root.join("overlay/cimage-staging");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging left: {left:?}");
    proxy.set_rate(0);
    let v = store.json(&["pull", "--tls-verify=false", &proxy.image_ref("fixture")]);
    assert_eq!(v["id"], fx.id("fixture").as_str());
}
