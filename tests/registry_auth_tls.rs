//! TLS and credentials against real servers on loopback: Debian's docker-registry with TLS (a CA
//! this test makes with openssl, given through --cert-dir, a certs.d root, or ~/.config/containers/
//! certs.d) and htpasswd basic auth, pulled with credentials from each source containers-auth.json(5)
//! lists (options, auth files, Docker's config.json, credential helpers), and the bearer-token flow
//! against the token server of tests/support/token_server.py. Every configuration file lives in a
//! temporary home given to cimagectl through HOME/XDG_RUNTIME_DIR or options.

mod common;
mod regsupport;

use common::*;
use regsupport::*;
use std::path::{Path, PathBuf};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret:with-colon";
const IMAGE: &str = "fixture";

fn prerequisites() -> Option<(&'static Fixtures, PathBuf)> {
    if !ensure_root_or_skip("pulled layers hold files of other users") {
        return None;
    }
    if !ensure_tools_or_skip(&["openssl", "python3", "docker-registry"]) {
        return None;
    }
    let fx = fixtures()?;
    Some((fx, shared_storage()?))
}

/// A private directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir = work_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Empty registries.conf and drop-in dir, and an accept-anything policy: the machine's own
/// files play no part.
fn hermetic_args(dir: &Path) -> Vec<String> {
    config_args(dir, "empty", "", None)
}

#[test]
fn tls_roots_come_from_cert_dir_certs_d_and_the_home() {
    let Some((fx, storage)) = prerequisites() else {
        return;
    };
    let dir = test_dir("tls");
    let pki = Pki::new(&dir.join("pki"));
    let registry = Server::docker_registry(&dir.join("registry"), &storage, Some(&pki), "");
    let name = registry.name(IMAGE);
    let base = hermetic_args(&dir);
    let home = Home::new();

    // An unknown CA is a NETWORK error that says so.
    let store = Store::new("overlay");
    let message = home.pull_fails(&store, &with(&base, &[&name]), "NETWORK");
    assert!(
        message.to_lowercase().contains("certificate"),
        "the cause is named: {message}"
    );
    assert!(store.images().is_empty());

    // --cert-dir (skopeo's: the directory holds the files).
    let cert_dir = pki.ca_dir(&dir.join("cert-dir"));
    let arg = format!("--cert-dir={}", cert_dir.display());
    let image = home.pull(&store, &with(&base, &[&arg, &name]));
    assert_eq!(image["id"], fx.id(IMAGE));
    assert_eq!(image["names"][0], name.as_str());

    // A certs.d root with a HOST:PORT directory; another port's directory does not apply.
    let certs_d = pki.certs_d(&dir.join("certs.d"), &registry.host_port());
    let store = Store::new("overlay");
    let arg = format!("--certs-d={}", certs_d.display());
    home.pull(&store, &with(&base, &[&arg, &name]));
    let wrong = pki.certs_d(&dir.join("certs.d-other"), "127.0.0.1:1");
    let arg = format!("--certs-d={}", wrong.display());
    home.pull_fails(
        &Store::new("overlay"),
        &with(&base, &[&arg, &name]),
        "NETWORK",
    );

    // ~/.config/containers/certs.d/HOST:PORT of the (temporary) home.
    pki.certs_d(
        &home.dir.join(".config/containers/certs.d"),
        &registry.host_port(),
    );
    let store = Store::new("overlay");
    home.pull(&store, &with(&base, &[&name]));

    // --tls-verify=false needs no CA.
    let bare = Home::new();
    bare.pull(
        &Store::new("overlay"),
        &with(&base, &["--tls-verify=false", &name]),
    );

    // A CA file that holds no certificate is a CONFIG error naming it.
    let broken = dir.join("broken-certs");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("ca.crt"), "not a certificate").unwrap();
    let arg = format!("--cert-dir={}", broken.display());
    let message = home.pull_fails(
        &Store::new("overlay"),
        &with(&base, &[&arg, &name]),
        "CONFIG",
    );
    assert!(message.contains("ca.crt"), "{message}");
}

/// A TLS registry with htpasswd basic auth, and a --cert-dir for it.
struct BasicAuthRegistry {
    registry: Server,
    cert_arg: String,
    base: Vec<String>,
}

fn basic_auth_registry(dir: &Path, storage: &Path) -> BasicAuthRegistry {
    let pki = Pki::new(&dir.join("pki"));
    let htpasswd_path = dir.join("htpasswd");
    htpasswd(&htpasswd_path, &[(USER, PASSWORD)]);
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: cimage-test\n    path: {}\n",
        htpasswd_path.display()
    );
    let registry = Server::docker_registry(&dir.join("registry"), storage, Some(&pki), &auth);
    let cert_dir = pki.ca_dir(&dir.join("cert-dir"));
    BasicAuthRegistry {
        registry,
        cert_arg: format!("--cert-dir={}", cert_dir.display()),
        base: hermetic_args(dir),
    }
}

#[test]
fn basic_auth_with_credentials_from_every_source() {
    let Some((fx, storage)) = prerequisites() else {
        return;
    };
    let dir = test_dir("basic");
    let r = basic_auth_registry(&dir, &storage);
    let host = r.registry.host_port();
    let name = r.registry.name(IMAGE);
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = r.base.clone();
        v.push(r.cert_arg.clone());
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(name.clone());
        v
    };
    let pull_ok = |home: &Home, extra: &[&str], what: &str| {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let store = Store::new("overlay");
        let image = home.pull(&store, &a);
        assert_eq!(image["id"], fx.id(IMAGE), "{what}");
    };
    let pull_fails = |home: &Home, extra: &[&str], status: &str| -> String {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let store = Store::new("overlay");
        let message = home.pull_fails(&store, &a, status);
        assert!(store.images().is_empty() && store.layers().is_empty());
        message
    };

    // No credentials anywhere: AUTH_REQUIRED. Wrong ones: AUTH_FAILED naming their source.
    let home = Home::new();
    pull_fails(&home, &[], "AUTH_REQUIRED");
    let message = pull_fails(&home, &[&format!("--creds={USER}:wrong")], "AUTH_FAILED");
    assert!(message.contains("the call's options"), "{message}");

    // 1. The call's options.
    pull_ok(&home, &[&format!("--creds={USER}:{PASSWORD}")], "--creds");

    // 2. --authfile, and a wrong password in it.
    let authfile = dir.join("authfile.json");
    std::fs::write(&authfile, auth_json(&host, USER, PASSWORD)).unwrap();
    pull_ok(
        &home,
        &[&format!("--authfile={}", authfile.display())],
        "--authfile",
    );
    let wrong = dir.join("wrong-authfile.json");
    std::fs::write(&wrong, auth_json(&host, USER, "nope")).unwrap();
    let message = pull_fails(
        &home,
        &[&format!("--authfile={}", wrong.display())],
        "AUTH_FAILED",
    );
    assert!(message.contains("wrong-authfile.json"), "{message}");
    // The options' credentials come before any file.
    pull_ok(
        &home,
        &[
            &format!("--authfile={}", wrong.display()),
            &format!("--creds={USER}:{PASSWORD}"),
        ],
        "--creds over --authfile",
    );
    // A missing --authfile is a CONFIG error.
    pull_fails(
        &home,
        &[&format!("--authfile={}", dir.join("none.json").display())],
        "CONFIG",
    );

    // 3. $REGISTRY_AUTH_FILE, keyed by repository namespace.
    let mut env_home = Home::new();
    let file = env_home.write(
        "elsewhere/auth.json",
        &auth_json(&format!("{host}/{REPO_PREFIX}"), USER, PASSWORD),
    );
    env_home
        .env
        .push(("REGISTRY_AUTH_FILE".into(), file.display().to_string()));
    pull_ok(&env_home, &[], "$REGISTRY_AUTH_FILE");

    // 4. ${XDG_RUNTIME_DIR}/containers/auth.json (the home's run/).
    let home = Home::new();
    home.write(
        "run/containers/auth.json",
        &auth_json(&host, USER, PASSWORD),
    );
    pull_ok(&home, &[], "$XDG_RUNTIME_DIR/containers/auth.json");

    // 5. ~/.config/containers/auth.json; the runtime file comes first when both exist.
    let home = Home::new();
    home.write(
        ".config/containers/auth.json",
        &auth_json(&host, USER, PASSWORD),
    );
    pull_ok(&home, &[], "~/.config/containers/auth.json");
    home.write("run/containers/auth.json", &auth_json(&host, USER, "nope"));
    pull_fails(&home, &[], "AUTH_FAILED");

    // 6. ~/.docker/config.json under a URL key, as `docker login` writes it.
    let home = Home::new();
    home.write(
        ".docker/config.json",
        &auth_json(&format!("https://{host}/v2/"), USER, PASSWORD),
    );
    pull_ok(&home, &[], "~/.docker/config.json");

    // 7. A credential helper named by credHelpers, and Docker's credsStore, found on PATH.
    let helpers = dir.join("helpers");
    credential_helper(&helpers, "cimagetest", &host, USER, PASSWORD);
    let mut home = Home::new();
    home.env.push(("PATH".into(), path_with(&helpers)));
    home.write(
        ".docker/config.json",
        &serde_json::json!({"credHelpers": {host.clone(): "cimagetest"}}).to_string(),
    );
    pull_ok(&home, &[], "credHelpers");
    let calls = std::fs::read_to_string(helpers.join("cimagetest.calls")).unwrap();
    assert!(
        calls.lines().any(|l| l == host),
        "the helper was asked for {host}: {calls:?}"
    );
    let mut home = Home::new();
    home.env.push(("PATH".into(), path_with(&helpers)));
    home.write(
        ".docker/config.json",
        &serde_json::json!({"auths": {host.clone(): {}}, "credsStore": "cimagetest"}).to_string(),
    );
    pull_ok(&home, &[], "credsStore");

    // 8. registries.conf's credential-helpers; a missing helper program is a CONFIG error.
    let conf = dir.join("helpers.conf");
    std::fs::write(&conf, "credential-helpers = [\"cimagetest\"]\n").unwrap();
    let arg = format!("--registries-conf={}", conf.display());
    pull_ok(&home, &[&arg], "credential-helpers");
    let conf = dir.join("missing-helper.conf");
    std::fs::write(&conf, "credential-helpers = [\"cimage-no-such-helper\"]\n").unwrap();
    let message = pull_fails(
        &home,
        &[&format!("--registries-conf={}", conf.display())],
        "CONFIG",
    );
    assert!(
        message.contains("docker-credential-cimage-no-such-helper"),
        "{message}"
    );

    drop(r);
}

#[test]
fn bearer_token_flow_with_a_token_server() {
    let Some((fx, storage)) = prerequisites() else {
        return;
    };
    let dir = test_dir("token");
    let (key, cert) = token_signer(&dir.join("signer"));
    let anonymous = format!("{REPO_PREFIX}/sibling");
    let token = Server::token_server(
        &dir.join("token"),
        &key,
        &cert,
        &[(USER, PASSWORD)],
        &anonymous,
    );
    let pki = Pki::new(&dir.join("pki"));
    let registry = Server::docker_registry(
        &dir.join("registry"),
        &storage,
        Some(&pki),
        &token_auth_config(&token, &cert),
    );
    let cert_arg = format!("--cert-dir={}", pki.ca_dir(&dir.join("cert-dir")).display());
    let base = hermetic_args(&dir);
    let home = Home::new();
    let private = registry.name(IMAGE);
    let public = registry.name("sibling");

    // Anonymous: a token without access for the private repository, so AUTH_REQUIRED …
    let store = Store::new("overlay");
    home.pull_fails(
        &store,
        &with(&base, &[&cert_arg, &private]),
        "AUTH_REQUIRED",
    );
    // … and an anonymous token with pull access for the public one.
    let image = home.pull(&store, &with(&base, &[&cert_arg, &public]));
    assert_eq!(image["id"], fx.id("sibling"));
    let log = token.token_requests();
    assert!(
        log.iter().any(|e| e["user"].is_null()
            && e["scopes"][0] == format!("repository:{anonymous}:pull").as_str()
            && e["granted"][0]["actions"][0] == "pull"),
        "an anonymous token for the pull scope: {log:#?}"
    );

    // With credentials the token service grants the private repository.
    let creds = format!("--creds={USER}:{PASSWORD}");
    let image = home.pull(
        &Store::new("overlay"),
        &with(&base, &[&cert_arg, &creds, &private]),
    );
    assert_eq!(image["id"], fx.id(IMAGE));
    assert!(token.token_requests().iter().any(|e| e["user"] == USER
        && e["scopes"][0] == format!("repository:{REPO_PREFIX}/{IMAGE}:pull").as_str()));

    // The token service refuses a wrong password: AUTH_FAILED, nothing stored.
    let store = Store::new("overlay");
    let wrong = format!("--creds={USER}:wrong");
    let message = home.pull_fails(
        &store,
        &with(&base, &[&cert_arg, &wrong, &private]),
        "AUTH_FAILED",
    );
    assert!(message.contains("token"), "{message}");
    assert!(store.images().is_empty());

    // The same flow over plain HTTP fallback is not needed: the registry speaks TLS only, and
    // --tls-verify=false still runs the token flow over unverified TLS.
    let image = home.pull(
        &Store::new("overlay"),
        &with(&base, &["--tls-verify=false", &creds, &private]),
    );
    assert_eq!(image["id"], fx.id(IMAGE));
}

#[test]
fn client_certificates_from_certs_d_are_presented() {
    let Some((fx, storage)) = prerequisites() else {
        return;
    };
    let dir = test_dir("mtls");
    let pki = Pki::new(&dir.join("pki"));
    // Client certificates are signed by the same test CA; the registry requires one.
    let registry = Server::docker_registry_mtls(&dir.join("registry"), &storage, &pki, &pki.ca_crt);
    let name = registry.name(IMAGE);
    let base = hermetic_args(&dir);
    let home = Home::new();

    // The CA alone: the registry refuses the handshake.
    let ca_only = pki.certs_d(&dir.join("certs.d-ca-only"), &registry.host_port());
    let arg = format!("--certs-d={}", ca_only.display());
    let store = Store::new("overlay");
    let message = home.pull_fails(&store, &with(&base, &[&arg, &name]), "NETWORK");
    assert!(store.images().is_empty());
    eprintln!("without a client certificate: {message}");

    // CA and client pair in HOST:PORT: presented, the pull succeeds.
    let certs_d = pki.certs_d(&dir.join("certs.d"), &registry.host_port());
    pki.client_pair(&certs_d.join(registry.host_port()), "client");
    let arg = format!("--certs-d={}", certs_d.display());
    let image = home.pull(&Store::new("overlay"), &with(&base, &[&arg, &name]));
    assert_eq!(image["id"], fx.id(IMAGE));

    // Also without verification (--tls-verify=false still presents the certs.d pair).
    let image = home.pull(
        &Store::new("overlay"),
        &with(&base, &["--tls-verify=false", &arg, &name]),
    );
    assert_eq!(image["id"], fx.id(IMAGE));

    // A client key that does not belong to the certificate is a CONFIG or NETWORK error,
    // never a silent anonymous pull.
    let mismatched = dir.join("certs.d-mismatched");
    let host_dir = pki
        .certs_d(&mismatched, &registry.host_port())
        .join(registry.host_port());
    let (cert, _) = pki.client_pair(&host_dir, "client");
    let (_, other_key) = pki.client_pair(&dir.join("other"), "other");
    std::fs::copy(other_key, cert.with_extension("key")).unwrap();
    let arg = format!("--certs-d={}", mismatched.display());
    let r = home.run(&Store::new("overlay"), &with(&base, &["pull", &arg, &name]));
    assert!(!r.ok(), "a mismatched key pulled");
}

#[test]
fn identity_tokens_are_exchanged_with_the_oauth2_post() {
    let Some((fx, storage)) = prerequisites() else {
        return;
    };
    let dir = test_dir("identity-token");
    let (key, cert) = token_signer(&dir.join("signer"));
    const REFRESH: &str = "refresh-token-for-alice";
    let token = Server::token_server_with(
        &dir.join("token"),
        &key,
        &cert,
        &[(USER, PASSWORD)],
        &[(REFRESH, USER)],
        &format!("{REPO_PREFIX}/sibling"),
    );
    let pki = Pki::new(&dir.join("pki"));
    let registry = Server::docker_registry(
        &dir.join("registry"),
        &storage,
        Some(&pki),
        &token_auth_config(&token, &cert),
    );
    let cert_arg = format!("--cert-dir={}", pki.ca_dir(&dir.join("cert-dir")).display());
    let base = hermetic_args(&dir);
    let host = registry.host_port();
    let private = registry.name(IMAGE);

    // auth.json with an identity token (as `podman login` to an OAuth2 registry writes it).
    let home = Home::new();
    home.write(
        ".config/containers/auth.json",
        &identity_token_json(&host, "<token>", REFRESH),
    );
    let image = home.pull(&Store::new("overlay"), &with(&base, &[&cert_arg, &private]));
    assert_eq!(image["id"], fx.id(IMAGE));
    let log = token.token_requests();
    let post = log
        .iter()
        .find(|e| e["method"] == "POST")
        .unwrap_or_else(|| panic!("no POST to the token service: {log:#?}"));
    assert_eq!(post["grant_type"], "refresh_token");
    assert_eq!(post["user"], USER);
    assert!(!post["client_id"].as_str().unwrap_or("").is_empty());
    assert_eq!(
        post["scopes"][0],
        format!("repository:{REPO_PREFIX}/{IMAGE}:pull").as_str()
    );
    assert!(
        !log.iter()
            .any(|e| e["method"] == "GET" && e["user"] == USER),
        "the identity token was not sent as a password: {log:#?}"
    );

    // Docker's config.json spelling, and a refused refresh token: AUTH_FAILED naming the file.
    let home = Home::new();
    home.write(
        ".docker/config.json",
        &identity_token_json(&format!("https://{host}/v2/"), "", "expired-refresh-token"),
    );
    let store = Store::new("overlay");
    let message = home.pull_fails(&store, &with(&base, &[&cert_arg, &private]), "AUTH_FAILED");
    assert!(message.contains("config.json"), "{message}");
    assert!(store.images().is_empty());
}
