//! Checks of the test harness itself, independent of cimage: the fixture images are deterministic
//! and valid (podman and umoci agree on them), the hostile images really carry their attacks,
//! the registry serves what was published (and lies where it should), the proxy counts and
//! throttles.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Entries (path, type, link target) of a layer blob of a layout, decompressing gzip.
fn layer_entries(layout: &Path, digest: &str) -> Vec<(String, tar::EntryType, String)> {
    let blob = fs::read(layout.join("blobs/sha256").join(hex_of(digest))).expect("blob");
    let raw: Vec<u8> = if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    } else {
        blob
    };
    let mut archive = tar::Archive::new(&raw[..]);
    archive
        .entries()
        .expect("tar entries")
        .map(|e| {
            let e = e.expect("tar entry");
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let link = e
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            (path, e.header().entry_type(), link)
        })
        .collect()
}

#[test]
fn fixtures_are_deterministic() {
    let Some(fx) = fixtures() else { return };
    let again = work_dir().join("images-again");
    run_ok(
        Command::new("python3")
            .arg(support("mkimage.py"))
            .arg(&again)
            .arg("--sentinel")
            .arg(fx.sentinel()),
    );
    for name in [
        "fixture",
        "multi",
        "sibling",
        "hostile-symlink",
        "hostile-lying-digest",
    ] {
        let a = fs::read(fx.layout_dir(name).join("index.json")).unwrap();
        let b = fs::read(again.join(name).join("index.json")).unwrap();
        assert_eq!(a, b, "{name}: index.json differs between two builds");
        let mut blobs: Vec<PathBuf> = fs::read_dir(fx.layout_dir(name).join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        blobs.sort();
        for blob in blobs {
            let other = again
                .join(name)
                .join("blobs/sha256")
                .join(blob.file_name().unwrap());
            assert_eq!(
                fs::read(&blob).unwrap(),
                fs::read(&other).unwrap(),
                "{}",
                blob.display()
            );
        }
    }
    let _ = fs::remove_dir_all(again);
}

#[test]
fn fixture_layout_is_consistent() {
    let Some(fx) = fixtures() else { return };
    for name in ["fixture", "sibling", "big", "zstd"] {
        if !fx.has(name) {
            assert_eq!(name, "zstd", "{name} missing");
            skip("zstd CLI missing: no zstd image");
            continue;
        }
        let layout = fx.layout_dir(name);
        let index: Value =
            serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let desc = &index["manifests"][0];
        assert_eq!(
            desc["annotations"]["org.opencontainers.image.ref.name"],
            TAG
        );
        assert_eq!(str_of(&desc["digest"]), fx.manifest_digest(name));
        // every blob hashes to its name
        for e in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
            let p = e.unwrap().path();
            let name_hex = p.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                sha256_hex(&fs::read(&p).unwrap()),
                name_hex,
                "{}",
                p.display()
            );
        }
        let config: Value = serde_json::from_slice(
            &fs::read(
                layout
                    .join("blobs/sha256")
                    .join(hex_of(&fx.config_digest(name))),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(strings(&config["rootfs"]["diff_ids"]), fx.diff_ids(name));
    }
    let ids = fx.layer_ids("fixture");
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], hex_of(&fx.diff_ids("fixture")[0]));
    // the worked example of store-format.md §3.2
    let ex = layer_ids(&[
        "sha256:1193205df692b4a02c5a4d2b5a4b4a62bfc89dea9aed27ab5a6e41d9c2146b15".into(),
        "sha256:d297e0b1a5fba3d6c95cbf8ff7cfb4d8f07bd17e2f7c8c9d3bbbf2f3f7f86a65".into(),
    ]);
    assert_eq!(
        ex[1],
        sha256_hex(
            b"1193205df692b4a02c5a4d2b5a4b4a62bfc89dea9aed27ab5a6e41d9c2146b15+d297e0b1a5fba3d6c95cbf8ff7cfb4d8f07bd17e2f7c8c9d3bbbf2f3f7f86a65"
        )
    );
    // the fixture's config carries the fields the issue lists
    let cfg = &fx.image("fixture")["config"];
    for key in ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels"] {
        assert!(!cfg[key].is_null(), "fixture config lacks {key}");
    }
}

#[test]
fn hostile_images_carry_their_attacks() {
    let Some(fx) = fixtures() else { return };
    let sentinel = fx.sentinel().display().to_string();
    let entries = |name: &str| {
        let layout = fx.layout_dir(name);
        layer_entries(&layout, &fx.blob_digests(name)[0])
    };
    use tar::EntryType as T;

    let e = entries("hostile-traversal");
    assert!(e[0].0.starts_with("../../") && e[0].0.ends_with(&format!("{sentinel}/escape")[1..]));
    assert_eq!(e[1].0, "../escape");

    let e = entries("hostile-absolute");
    assert_eq!(e[0].0, format!("{sentinel}/abs-escape"));
    assert_eq!(e[1].0, "/abs-escape");

    let e = entries("hostile-symlink");
    assert_eq!(
        (e[0].0.as_str(), e[0].1, e[0].2.as_str()),
        ("evil", T::Symlink, sentinel.as_str())
    );
    assert_eq!((e[1].0.as_str(), e[1].1), ("evil/pwned", T::Regular));

    let e = entries("hostile-hardlink");
    assert_eq!(
        (e[0].0.as_str(), e[0].1, e[0].2.as_str()),
        ("stolen", T::Link, "/etc/passwd")
    );
    assert_eq!((e[1].0.as_str(), e[1].1), ("stolen", T::Regular));

    let e = entries("hostile-hardlink-dotdot");
    assert_eq!(e[0].1, T::Link);
    assert!(e[0].2.starts_with("../../"));
    assert!(e[0]
        .2
        .ends_with(&fx.sentinel_target().display().to_string()[1..]));
    assert_eq!((e[1].1, e[1].2.as_str()), (T::Link, "../../outside"));

    let e = entries("hostile-write-through-symlink");
    assert_eq!(
        (e[1].0.as_str(), e[1].1, e[1].2.as_str()),
        ("dirlink", T::Symlink, "somedir-inside")
    );
    assert_eq!(e[2].0, "dirlink/file");

    // lying digest: the manifest names a blob whose bytes hash to something else (same size)
    let lying = fx.image("hostile-lying-digest");
    let digest = str_of(&lying["lying_blob"]);
    let blob = fs::read(
        fx.layout_dir("hostile-lying-digest")
            .join("blobs/sha256")
            .join(hex_of(&digest)),
    )
    .unwrap();
    assert_ne!(sha256_hex(&blob), hex_of(&digest));
    assert_eq!(
        blob.len() as i64,
        lying["layers"][0]["compressed_size"].as_i64().unwrap()
    );

    // mkimage left the sentinel empty and its target in place
    assert_eq!(fs::read_dir(fx.sentinel()).unwrap().count(), 0);
    assert!(fx.sentinel_target().is_file());
}

fn http_get(port: u16, path: &str, accept: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&all[..split]).into_owned(),
        all[split + 4..].to_vec(),
    )
}

const ACCEPT: &str =
    "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json";

#[test]
fn registry_serves_the_fixtures() {
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    for name in ["fixture", "sibling", "big"] {
        let (head, body) = http_get(
            reg.port(),
            &format!("/v2/{REPO_PREFIX}/{name}/manifests/{TAG}"),
            ACCEPT,
        );
        assert!(is_200(&head), "{name}: {head}");
        assert_eq!(
            format!("sha256:{}", sha256_hex(&body)),
            fx.manifest_digest(name)
        );
    }
    let (_, body) = http_get(
        reg.port(),
        &format!("/v2/{REPO_PREFIX}/multi/manifests/{TAG}"),
        ACCEPT,
    );
    assert_eq!(
        format!("sha256:{}", sha256_hex(&body)),
        str_of(&fx.image("multi")["index_digest"])
    );
    // the lying layer: announced under one digest, bytes hash to another
    let digest = str_of(&fx.image("hostile-lying-digest")["lying_blob"]);
    let (head, body) = http_get(
        reg.port(),
        &format!("/v2/{REPO_PREFIX}/hostile-lying-digest/blobs/{digest}"),
        "*/*",
    );
    assert!(is_200(&head), "{head}");
    assert_ne!(
        sha256_hex(&body),
        hex_of(&digest),
        "the registry should serve the lying bytes"
    );
}

#[test]
fn proxy_counts_and_throttles() {
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let proxy = Proxy::start(reg.port(), 200 * 1024);
    let digest = &fx.blob_digests("fixture")[0];
    let size = fx.image("fixture")["layers"][0]["compressed_size"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let port: u16 = proxy
        .host_port()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (head, body) = http_get(
        port,
        &format!("/v2/{REPO_PREFIX}/fixture/blobs/{digest}"),
        "*/*",
    );
    assert!(is_200(&head), "{head}");
    assert_eq!(sha256_hex(&body), hex_of(digest));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "200 KiB/s for {size} bytes took only {took:?}"
    );
    assert!(proxy.downstream.load(Ordering::SeqCst) >= size);
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert!(reqs[0].starts_with("GET ") && reqs[0].contains(hex_of(digest)));
    proxy.set_down(true);
    assert!(!registry_answers(port), "a downed proxy must not answer");
}

/// The reference tools agree on the fixture: podman's mount of it equals umoci's unpacking, file
/// by file, and both have the expected shape (whiteouts, opaque dir, hard link, replaced file).
#[test]
fn podman_and_umoci_agree_on_the_fixture() {
    if !ensure_root_or_skip("podman mount and umoci unpack with ownership") {
        return;
    }
    if !ensure_tools_or_skip(&["podman", "umoci", "skopeo"]) {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let store = Store::new("overlay");
    store.podman_ok(&["pull", "-q", "--tls-verify=false", &reg.name("fixture")]);
    store.podman_ok(&[
        "create",
        "--name",
        "pc",
        "--network",
        "none",
        &reg.name("fixture"),
    ]);
    let mnt = PathBuf::from(store.podman_ok(&["mount", "pc"]).stdout.trim());
    let bundle = store.dir.join("bundle");
    run_ok(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{TAG}", fx.layout_dir("fixture").display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert_fixture_shape(fx, &mnt);
    assert_fixture_shape(fx, &rootfs);
    let diffs = tree_differences("podman", &walk_tree(&mnt), "umoci", &walk_tree(&rootfs));
    assert!(
        diffs.is_empty(),
        "podman and umoci differ:\n{}",
        diffs.join("\n")
    );
    // the layer IDs podman computed are those of store-format.md §3.2
    let layers: Vec<String> = store
        .layers_json()
        .iter()
        .map(|l| str_of(&l["id"]))
        .collect();
    for id in fx.layer_ids("fixture") {
        assert!(layers.contains(&id), "podman has no layer {id}");
    }
    store.podman_ok(&["umount", "pc"]);
    store.podman_ok(&["rm", "pc"]);
    store.podman_ok(&["rmi", &reg.name("fixture")]);
    assert_store_consistent(&store, "after podman rmi");
}

fn is_200(head: &str) -> bool {
    head.starts_with("HTTP/1.") && head.get(9..12) == Some("200")
}
