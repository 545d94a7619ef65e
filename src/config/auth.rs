//! Registry credentials: the caller's, the auth files of containers-auth.json(5) and Docker,
//! and docker-credential-* helper programs.
//!
//! Order (containers/image's): the call's credentials; then each entry of registries.conf's
//! `credential-helpers` (default `["containers-auth.json"]`), where `containers-auth.json`
//! means the auth files:
//! * the caller's auth file, else `$REGISTRY_AUTH_FILE` — and then only that file;
//! * else `$XDG_RUNTIME_DIR/containers/auth.json` (`/run/containers/$UID/auth.json` without
//!   XDG_RUNTIME_DIR), `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/…`),
//!   `$DOCKER_CONFIG/config.json` (`~/.docker/config.json`), `~/.dockercfg`.
//!
//! Within a file: `credHelpers[registry]` names a helper for that registry; else the `auths`
//! entry for `registry/namespace/repo`, then each shorter namespace, then `registry` (also
//! under a URL key such as `https://index.docker.io/v1/`); else Docker's `credsStore` helper.
//! A helper is `docker-credential-NAME get` on $PATH, given the registry on stdin.

use crate::error::{Error, Result, Status};
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// What a helper prints on stdout, at most (its answer is a small JSON object).
const MAX_HELPER_OUTPUT: usize = 1 << 20;

/// Something that proves who we are to a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (HTTP basic, or exchanged for a bearer token).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user).
    IdentityToken { username: String, token: String },
    /// A bearer token sent to the registry as is (`registrytoken`).
    RegistryToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username:?}, <redacted>)")
            }
            Credential::RegistryToken(_) => write!(f, "RegistryToken(<redacted>)"),
        }
    }
}

/// A credential and where it was found (for messages; never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub credential: Credential,
    pub source: String,
}

/// Where to look, from the caller and registries.conf.
#[derive(Debug, Clone, Default)]
pub struct AuthLookup {
    /// The call's own credentials: used for every registry, nothing else is read.
    pub credentials: Option<Credential>,
    /// The call's auth file: replaces the default list of auth files.
    pub auth_file: Option<PathBuf>,
    /// registries.conf's `credential-helpers` (None: the auth files only).
    pub helpers: Option<Vec<String>>,
}

impl AuthLookup {
    /// Credentials for `registry` (`host[:port]`, as written in the reference) and the
    /// repository pulled from it, or None (anonymous). Blocks: it may run helper programs.
    pub fn find(&self, registry: &str, repository: &str) -> Result<Option<Found>> {
        if let Some(c) = &self.credentials {
            return Ok(Some(Found {
                credential: c.clone(),
                source: "the call's options".to_string(),
            }));
        }
        let default_helpers = [super::registries::AUTH_FILES_HELPER.to_string()];
        let helpers = self.helpers.as_deref().unwrap_or(&default_helpers);
        for helper in helpers {
            let found = if helper == super::registries::AUTH_FILES_HELPER {
                self.find_in_files(registry, repository)?
            } else {
                run_helper(helper, registry)?
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    fn find_in_files(&self, registry: &str, repository: &str) -> Result<Option<Found>> {
        for file in self.auth_files()? {
            let contents = match std::fs::read(&file.path) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file.must_exist => continue,
                Err(e) => {
                    return Err(file_error(&file.path, format!("cannot read: {e}")));
                }
            };
            if let Some(found) = find_in_file(&contents, &file, registry, repository)? {
                crate::log::debug(format!(
                    "credentials for {registry}/{repository} from {}",
                    found.source
                ));
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// The auth files to read, in order.
    fn auth_files(&self) -> Result<Vec<AuthFile>> {
        if let Some(p) = &self.auth_file {
            return Ok(vec![AuthFile::new(p.clone(), true, false)]);
        }
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
            return Ok(vec![AuthFile::new(PathBuf::from(p), false, false)]);
        }
        let mut files = Vec::new();
        let runtime = match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("containers/auth.json"),
            None => PathBuf::from(format!(
                "/run/containers/{}/auth.json",
                nix::unistd::getuid()
            )),
        };
        files.push(AuthFile::new(runtime, false, false));
        if let Some(dir) = super::registries::user_config_dir() {
            files.push(AuthFile::new(
                dir.join("containers/auth.json"),
                false,
                false,
            ));
        }
        let home = super::registries::home_dir();
        match std::env::var_os("DOCKER_CONFIG").filter(|p| !p.is_empty()) {
            Some(dir) => files.push(AuthFile::new(
                PathBuf::from(dir).join("config.json"),
                false,
                false,
            )),
            None => {
                if let Some(h) = &home {
                    files.push(AuthFile::new(h.join(".docker/config.json"), false, false));
                }
            }
        }
        if let Some(h) = &home {
            files.push(AuthFile::new(h.join(".dockercfg"), false, true));
        }
        Ok(files)
    }
}

struct AuthFile {
    path: PathBuf,
    must_exist: bool,
    /// `~/.dockercfg`: the `auths` map is the whole file.
    legacy: bool,
}

impl AuthFile {
    fn new(path: PathBuf, must_exist: bool, legacy: bool) -> AuthFile {
        AuthFile {
            path,
            must_exist,
            legacy,
        }
    }
}

fn file_error(path: &Path, message: impl fmt::Display) -> Error {
    Error::new(
        Status::Config,
        format!("auth file {}: {message}", path.display()),
    )
    .with_subject(path.display().to_string())
}

#[derive(Deserialize, Default)]
struct FileContents {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct Entry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

fn find_in_file(
    contents: &[u8],
    file: &AuthFile,
    registry: &str,
    repository: &str,
) -> Result<Option<Found>> {
    if contents.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: FileContents = if file.legacy {
        let auths: BTreeMap<String, Entry> = serde_json::from_slice(contents)
            .map_err(|e| file_error(&file.path, format!("malformed JSON: {e}")))?;
        FileContents {
            auths,
            ..Default::default()
        }
    } else {
        serde_json::from_slice(contents)
            .map_err(|e| file_error(&file.path, format!("malformed JSON: {e}")))?
    };
    if let Some(helper) = parsed.cred_helpers.get(registry) {
        return run_helper(helper, registry);
    }
    let source = |key: &str| format!("{} (\"{key}\")", file.path.display());
    // Most specific key first: registry/ns/repo, registry/ns, registry.
    let mut keys = Vec::new();
    if !file.legacy {
        let mut key = format!("{registry}/{repository}");
        loop {
            keys.push(key.clone());
            match key.rfind('/') {
                Some(i) => key.truncate(i),
                None => break,
            }
        }
    } else {
        keys.push(registry.to_string());
    }
    for key in &keys {
        if let Some(entry) = parsed.auths.get(key) {
            if let Some(credential) = decode_entry(entry, &file.path, key)? {
                return Ok(Some(Found {
                    credential,
                    source: source(key),
                }));
            }
        }
    }
    // Keys written as URLs (`https://index.docker.io/v1/`) or with other spellings.
    for (key, entry) in &parsed.auths {
        if normalize_key(key) == registry {
            if let Some(credential) = decode_entry(entry, &file.path, key)? {
                return Ok(Some(Found {
                    credential,
                    source: source(key),
                }));
            }
        }
    }
    if let Some(store) = parsed.creds_store.as_deref().filter(|s| !s.is_empty()) {
        return run_helper(store, registry);
    }
    Ok(None)
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/x` → `host:5000`.
fn normalize_key(key: &str) -> &str {
    let stripped = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = stripped.split('/').next().unwrap_or(stripped);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// An `auths` entry; None for an empty placeholder (Docker writes `{}` next to a credsStore).
fn decode_entry(entry: &Entry, path: &Path, key: &str) -> Result<Option<Credential>> {
    let (mut username, mut password) = (entry.username.clone(), entry.password.clone());
    if !entry.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(entry.auth.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                file_error(
                    path,
                    format!("the \"auth\" of {key:?} is not base64 of user:password"),
                )
            })?;
        let (u, p) = decoded.split_once(':').ok_or_else(|| {
            file_error(
                path,
                format!("the \"auth\" of {key:?} has no ':' between user and password"),
            )
        })?;
        username = u.to_string();
        password = p.trim_end_matches('\n').to_string();
    }
    if !entry.identitytoken.is_empty() {
        return Ok(Some(Credential::IdentityToken {
            username,
            token: entry.identitytoken.clone(),
        }));
    }
    if !entry.registrytoken.is_empty() {
        return Ok(Some(Credential::RegistryToken(entry.registrytoken.clone())));
    }
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential::Basic { username, password }))
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-NAME get` with the registry on stdin. None when the helper has
/// nothing for it; CONFIG when the helper is missing or fails otherwise.
pub fn run_helper(name: &str, registry: &str) -> Result<Option<Found>> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Error::new(
            Status::Config,
            format!("invalid credential helper name {name:?}"),
        ));
    }
    let program = format!("docker-credential-{name}");
    let helper_error = |m: String| Error::new(Status::Config, format!("{program}: {m}"));
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| helper_error(format!("cannot run it (is it on $PATH?): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is fine; its exit status tells.
        let _ = stdin.write_all(registry.as_bytes());
    }
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let started = Instant::now();
    let output = match rx.recv_timeout(HELPER_TIMEOUT) {
        Ok(r) => r.map_err(|e| helper_error(format!("waiting for it: {e}")))?,
        Err(_) => {
            // Still running: it is our child, so the pid cannot have been reused.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(helper_error(format!(
                "no answer for {registry} within {}s",
                started.elapsed().as_secs()
            )));
        }
    };
    let stdout = &output.stdout[..output.stdout.len().min(MAX_HELPER_OUTPUT)];
    if !output.status.success() {
        let said = String::from_utf8_lossy(if output.stdout.is_empty() {
            &output.stderr
        } else {
            stdout
        })
        .trim()
        .to_string();
        // docker-credential-helpers' ErrCredentialsNotFound message.
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(helper_error(format!(
            "`get` for {registry} failed ({}): {}",
            output.status,
            said.chars().take(500).collect::<String>()
        )));
    }
    let answer: HelperAnswer = serde_json::from_slice(stdout)
        .map_err(|e| helper_error(format!("unreadable answer for {registry}: {e}")))?;
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    let credential = if answer.username == "<token>" {
        Credential::IdentityToken {
            username: String::new(),
            token: answer.secret,
        }
    } else {
        Credential::Basic {
            username: answer.username,
            password: answer.secret,
        }
    };
    Ok(Some(Found {
        credential,
        source: format!("credential helper {program}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn lookup_in(path: &Path) -> AuthLookup {
        AuthLookup {
            auth_file: Some(path.to_path_buf()),
            ..Default::default()
        }
    }

    fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn most_specific_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let doc = serde_json::json!({"auths": {
            "r.io": {"auth": b64("host:pw")},
            "r.io/ns": {"auth": b64("ns:pw:with:colons")},
            "r.io/ns/repo": {"auth": b64("repo:pw")},
            "https://index.docker.io/v1/": {"auth": b64("hub:pw")},
            "tok.io": {"auth": b64("me:"), "identitytoken": "refresh"},
            "bearer.io": {"registrytoken": "tok"},
            "empty.io": {},
        }});
        std::fs::write(&path, doc.to_string()).unwrap();
        let l = lookup_in(&path);
        let cred = |reg: &str, repo: &str| l.find(reg, repo).unwrap().map(|f| f.credential);
        assert_eq!(cred("r.io", "ns/repo"), Some(basic("repo", "pw")));
        assert_eq!(
            cred("r.io", "ns/other"),
            Some(basic("ns", "pw:with:colons"))
        );
        assert_eq!(cred("r.io", "x/y"), Some(basic("host", "pw")));
        assert_eq!(
            cred("docker.io", "library/alpine"),
            Some(basic("hub", "pw"))
        );
        assert_eq!(
            cred("tok.io", "a"),
            Some(Credential::IdentityToken {
                username: "me".into(),
                token: "refresh".into()
            })
        );
        assert_eq!(
            cred("bearer.io", "a"),
            Some(Credential::RegistryToken("tok".into()))
        );
        assert_eq!(cred("empty.io", "a"), None);
        assert_eq!(cred("other.io", "a"), None);
        let found = l.find("r.io", "ns/repo").unwrap().unwrap();
        assert!(found.source.contains("auth.json") && found.source.contains("r.io/ns/repo"));
        assert!(
            // Quoted: the temp dir's random name in `source` may contain "pw" by chance.
            !format!("{found:?}").contains("\"pw\""),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn options_come_first_and_bad_files_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let mut l = lookup_in(&path);
        // The caller's auth file must exist.
        assert_eq!(l.find("r.io", "a").unwrap_err().status, Status::Config);
        std::fs::write(&path, "{not json").unwrap();
        let e = l.find("r.io", "a").unwrap_err();
        assert_eq!(e.status, Status::Config);
        assert!(e.message.contains("auth.json"), "{}", e.message);
        std::fs::write(&path, r#"{"auths": {"r.io": {"auth": "!!!"}}}"#).unwrap();
        assert_eq!(l.find("r.io", "a").unwrap_err().status, Status::Config);
        l.credentials = Some(basic("u", "p"));
        let found = l.find("r.io", "a").unwrap().unwrap();
        assert_eq!(found.credential, basic("u", "p"));
        assert_eq!(found.source, "the call's options");
    }

    #[test]
    fn key_normalisation() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("http://r.io:5000/v2/"), "r.io:5000");
        assert_eq!(normalize_key("r.io"), "r.io");
    }
}
