//! registries.conf and policy.json against real registries on loopback: a pull-through cache
//! (docker-registry in proxy mode) configured as a mirror of the fixtures' registry (used first,
//! the primary when it is down, only for digests with mirror-by-digest-only), short names with
//! aliases and search registries, a blocked registry, `insecure` for one registry alone, prefix
//! rewrites, and signature policies. Every file lives in a temporary directory given to cimagectl
//! by option.

mod common;
mod regsupport;

use common::*;
use regsupport::*;
use std::path::PathBuf;

const IMAGE: &str = "fixture";

fn prerequisites() -> Option<(&'static Fixtures, &'static Registry)> {
    if !ensure_root_or_skip("pulled layers hold files of other users") {
        return None;
    }
    if !ensure_tools_or_skip(&["docker-registry"]) {
        return None;
    }
    fixtures_and_registry()
}

fn test_dir(name: &str) -> PathBuf {
    let dir = work_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn image_names(image: &serde_json::Value) -> Vec<String> {
    strings(&image["names"])
}

/// Requests for manifests or blobs of the image that went through a proxy.
fn image_requests(proxy: &Proxy) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.contains(&format!("/v2/{REPO_PREFIX}/{IMAGE}/")))
        .collect()
}

#[test]
fn mirrors_a_pull_through_cache_first_then_the_primary() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let dir = test_dir("mirrors");
    // The primary: the fixtures' registry behind a counting proxy.
    let primary = Proxy::start(reg.port(), 0);
    // The mirror: a pull-through cache of the fixtures' registry, behind its own proxy.
    let cache = Server::docker_registry(
        &dir.join("cache"),
        &dir.join("cache-storage"),
        None,
        &format!("proxy:\n  remoteurl: http://{}\n", reg.host_port()),
    );
    let mirror = Proxy::start(cache.port, 0);
    let conf = |by_digest_only: bool| {
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\nmirror-by-digest-only = {by_digest_only}\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            primary.host_port(),
            mirror.host_port()
        )
    };
    let home = Home::new();
    let by_tag = primary.name(IMAGE);
    let by_digest = format!(
        "{}/{REPO_PREFIX}/{IMAGE}@{}",
        primary.host_port(),
        fx.manifest_digest(IMAGE)
    );
    let blobs = fx.blob_digests(IMAGE);

    // Through the mirror: the primary sees no request for the image.
    let args = config_args(&dir, "mirror", &conf(false), None);
    let image = home.pull(&Store::new("overlay"), &with(&args, &[&by_tag]));
    assert_eq!(image["id"], fx.id(IMAGE));
    assert_eq!(
        image_names(&image),
        vec![by_tag.clone()],
        "the image keeps the name asked for"
    );
    assert!(
        image_requests(&primary).is_empty(),
        "{:?}",
        primary.requests()
    );
    for blob in &blobs {
        assert_eq!(
            mirror.blob_gets(blob),
            1,
            "{blob} from the mirror: {:?}",
            mirror.requests()
        );
    }

    // The mirror down: the primary serves.
    mirror.set_down(true);
    mirror.reset_counters();
    let image = home.pull(&Store::new("overlay"), &with(&args, &[&by_tag]));
    assert_eq!(image["id"], fx.id(IMAGE));
    for blob in &blobs {
        assert_eq!(primary.blob_gets(blob), 1, "{blob} from the primary");
    }
    mirror.set_down(false);

    // mirror-by-digest-only: a tag goes to the primary alone, a digest to the mirror.
    let args = config_args(&dir, "digest-only", &conf(true), None);
    primary.reset_counters();
    mirror.reset_counters();
    home.pull(&Store::new("overlay"), &with(&args, &[&by_tag]));
    assert!(
        image_requests(&mirror).is_empty(),
        "{:?}",
        mirror.requests()
    );
    assert!(!image_requests(&primary).is_empty());
    primary.reset_counters();
    let image = home.pull(&Store::new("overlay"), &with(&args, &[&by_digest]));
    assert_eq!(image["id"], fx.id(IMAGE));
    assert_eq!(image_names(&image), vec![by_digest.clone()]);
    assert!(
        image_requests(&primary).is_empty(),
        "{:?}",
        primary.requests()
    );
    assert!(!image_requests(&mirror).is_empty());

    // Both down: one error that names every location tried.
    mirror.set_down(true);
    primary.set_down(true);
    let message = home.pull_fails(
        &Store::new("overlay"),
        &with(&args, &[&by_digest]),
        "NETWORK",
    );
    assert!(
        message.contains(&mirror.host_port()) && message.contains(&primary.host_port()),
        "{message}"
    );
}

#[test]
fn short_names_aliases_and_search_registries() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let dir = test_dir("short-names");
    let closed = format!("127.0.0.1:{}", free_port()); // nothing listens there
    let host = reg.host_port();
    let conf = |mode: &str| {
        format!(
            "unqualified-search-registries = [\"{closed}\", \"{host}\"]\nshort-name-mode = \"{mode}\"\n\
             [[registry]]\nlocation = \"{closed}\"\ninsecure = true\n\
             [[registry]]\nlocation = \"{host}\"\ninsecure = true\n\
             [aliases]\n\"aliased/thing\" = \"{host}/{REPO_PREFIX}/{IMAGE}\"\n"
        )
    };
    let home = Home::new();
    let short = format!("{REPO_PREFIX}/{IMAGE}:{TAG}");
    let qualified = reg.name(IMAGE);

    // Permissive: the search registries in order; the first is down, the second has it.
    let permissive = config_args(&dir, "permissive", &conf("permissive"), None);
    let store = Store::new("overlay");
    let image = home.pull(&store, &with(&permissive, &[&short]));
    assert_eq!(image["id"], fx.id(IMAGE));
    assert_eq!(image_names(&image), vec![qualified.clone()]);

    // Enforcing: two candidates and no prompt possible — an error naming both.
    let enforcing = config_args(&dir, "enforcing", &conf("enforcing"), None);
    let message = home.pull_fails(
        &Store::new("overlay"),
        &with(&enforcing, &[&short]),
        "INVALID_ARGUMENT",
    );
    assert!(
        message.contains(&format!("{closed}/{short}")) && message.contains(&qualified),
        "{message}"
    );
    // … unless the image is already stored under one of the names and the policy allows that.
    let image = home.pull(&store, &with(&enforcing, &["--policy=never", &short]));
    assert_eq!(image["id"], fx.id(IMAGE));

    // An alias resolves even in enforcing mode, and keeps the tag asked for.
    let image = home.pull(
        &Store::new("overlay"),
        &with(&enforcing, &[&format!("aliased/thing:{TAG}")]),
    );
    assert_eq!(image["id"], fx.id(IMAGE));
    assert_eq!(image_names(&image), vec![qualified.clone()]);

    // Nowhere to be found: every candidate's failure is reported.
    let missing = format!("{REPO_PREFIX}/no-such-image:{TAG}");
    let message = home.pull_fails(
        &Store::new("overlay"),
        &with(&permissive, &[&missing]),
        "NETWORK",
    );
    assert!(
        message.contains(&closed) && message.contains(&host),
        "{message}"
    );
    let single = config_args(
        &dir,
        "single",
        &format!("unqualified-search-registries = [\"{host}\"]\n[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
        None,
    );
    home.pull_fails(
        &Store::new("overlay"),
        &with(&single, &[&missing]),
        "MANIFEST_UNKNOWN",
    );

    // An empty search list leaves a short name nothing to resolve to.
    let none = config_args(&dir, "none", "unqualified-search-registries = []\n", None);
    home.pull_fails(
        &Store::new("overlay"),
        &with(&none, &[&short]),
        "INVALID_ARGUMENT",
    );
}

#[test]
fn blocked_insecure_and_rewritten_registries() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let dir = test_dir("registries");
    let host = reg.host_port();
    let home = Home::new();
    let name = reg.name(IMAGE);

    // blocked: POLICY_REJECTED naming the file, nothing contacted or stored.
    let blocked = config_args(
        &dir,
        "blocked",
        &format!("[[registry]]\nlocation = \"{host}/{REPO_PREFIX}\"\nblocked = true\n"),
        None,
    );
    let store = Store::new("overlay");
    let message = home.pull_fails(
        &store,
        &with(&blocked, &["--tls-verify=false", &name]),
        "POLICY_REJECTED",
    );
    assert!(message.contains("blocked-registries.conf"), "{message}");
    assert!(store.images().is_empty());

    // insecure = true: plain HTTP for that registry without --tls-verify=false …
    let insecure = config_args(
        &dir,
        "insecure",
        &format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
        None,
    );
    let image = home.pull(&Store::new("overlay"), &with(&insecure, &[&name]));
    assert_eq!(image["id"], fx.id(IMAGE));
    // … and for no other (the same server through another port is another registry) …
    let other = Proxy::start(reg.port(), 0);
    home.pull_fails(
        &Store::new("overlay"),
        &with(&insecure, &[&other.name(IMAGE)]),
        "NETWORK",
    );
    // … and an explicit --tls-verify=true overrides it.
    home.pull_fails(
        &Store::new("overlay"),
        &with(&insecure, &["--tls-verify=true", &name]),
        "NETWORK",
    );

    // A prefix rewritten to another location; the image keeps the name asked for.
    let rewrite = config_args(
        &dir,
        "rewrite",
        &format!(
            "[[registry]]\nprefix = \"example.invalid/foo\"\nlocation = \"{host}/{REPO_PREFIX}\"\ninsecure = true\n"
        ),
        None,
    );
    let logical = format!("example.invalid/foo/{IMAGE}:{TAG}");
    let image = home.pull(&Store::new("overlay"), &with(&rewrite, &[&logical]));
    assert_eq!(image["id"], fx.id(IMAGE));
    assert_eq!(image_names(&image), vec![logical]);

    // A malformed registries.conf is a CONFIG error naming the file.
    let broken = config_args(
        &dir,
        "broken",
        "[[registry]]\nlocation = \"https://x.io\"\n",
        None,
    );
    let message = home.pull_fails(
        &Store::new("overlay"),
        &with(&broken, &["--tls-verify=false", &name]),
        "CONFIG",
    );
    assert!(message.contains("broken-registries.conf"), "{message}");
}

#[test]
fn signature_policies() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let dir = test_dir("policy");
    let host = reg.host_port();
    let home = Home::new();
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                format!("{host}/{REPO_PREFIX}"): [{"type": "insecureAcceptAnything"}],
                format!("{host}/{REPO_PREFIX}/{IMAGE}"): [
                    {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/nonexistent.gpg"}
                ],
                format!("{host}/{REPO_PREFIX}/sibling@{}", fx.manifest_digest("sibling")): [{"type": "reject"}],
            }
        }
    })
    .to_string();
    let mut args = config_args(&dir, "policy", "", Some(&policy));
    args.push("--tls-verify=false".into());

    // The most specific scope decides: the namespace accepts, one image wants signatures (which
    // cannot be verified yet: refused, never accepted), one digest is rejected.
    let image = home.pull(
        &Store::new("overlay"),
        &with(&args, &[&reg.name("sibling")]),
    );
    assert_eq!(image["id"], fx.id("sibling"));
    let store = Store::new("overlay");
    let message = home.pull_fails(&store, &with(&args, &[&reg.name(IMAGE)]), "POLICY_REJECTED");
    assert!(
        message.contains("signedBy") && message.contains("policy-policy.json"),
        "{message}"
    );
    assert!(store.images().is_empty() && store.layers().is_empty());
    let sibling_by_digest = format!(
        "{host}/{REPO_PREFIX}/sibling@{}",
        fx.manifest_digest("sibling")
    );
    home.pull_fails(
        &store,
        &with(&args, &[&sibling_by_digest]),
        "POLICY_REJECTED",
    );
    // The oci transport has no scope here: the default rejects.
    home.pull_fails(
        &store,
        &with(&args, &[&fx.oci_ref(IMAGE)]),
        "POLICY_REJECTED",
    );

    // A policy file that does not exist or does not parse is a CONFIG error.
    let missing = format!("--signature-policy={}", dir.join("none.json").display());
    home.pull_fails(
        &store,
        &["--tls-verify=false", &missing, &reg.name(IMAGE)],
        "CONFIG",
    );
    let broken = config_args(&dir, "broken", "", Some(r#"{"default": []}"#));
    home.pull_fails(
        &store,
        &with(&broken, &["--tls-verify=false", &reg.name(IMAGE)]),
        "CONFIG",
    );
}
