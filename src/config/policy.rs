//! policy.json (containers-policy.json(5)): which images may be pulled.
//!
//! Read from the caller's path, else `$HOME/.config/containers/policy.json` if it exists, else
//! `/etc/containers/policy.json`. When none of these exists the pull is allowed (and a warning
//! logged): a library embedded in a program must work on a machine without containers-common;
//! a path the caller names must exist.
//!
//! The requirements that apply to an image are those of the most specific scope that matches
//! it: its exact identity, then ever shorter namespaces, then the transport's "" scope, then
//! the global "default". All of them must be satisfied. cimage verifies no signatures yet, so
//! `signedBy`, `sigstoreSigned` and `signedBaseLayer` refuse the image (POLICY_REJECTED): a
//! requirement is never silently accepted.

use crate::error::{Error, Result, Status};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SYSTEM_FILE: &str = "/etc/containers/policy.json";

/// One policy requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    /// A signature requirement (its type name), which this version cannot verify.
    Signature(String),
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    default: Vec<Requirement>,
    /// transport → scope → requirements
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
    /// The file it came from; None for the built-in accept-anything policy.
    pub origin: Option<PathBuf>,
}

/// What is being pulled, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySubject {
    /// "docker" or "oci".
    pub transport: &'static str,
    /// The most specific scope, e.g. `docker.io/library/alpine:latest`.
    pub identity: String,
    /// Ever more general scopes, most specific first (the identity not included).
    pub namespaces: Vec<String>,
}

impl Policy {
    /// The policy when no file exists: accept anything.
    pub fn accept_anything() -> Policy {
        Policy {
            default: vec![Requirement::InsecureAcceptAnything],
            transports: BTreeMap::new(),
            origin: None,
        }
    }

    /// Reads the policy: `explicit`, else the user's file, else the system file.
    pub fn load(explicit: Option<&Path>) -> Result<Policy> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let user = super::registries::home_dir()
                    .map(|d| d.join(".config/containers/policy.json"))
                    .filter(|p| p.exists());
                match user {
                    Some(p) => p,
                    None if Path::new(SYSTEM_FILE).exists() => PathBuf::from(SYSTEM_FILE),
                    None => {
                        crate::log::warn(format!(
                            "no policy.json ({SYSTEM_FILE} is missing): accepting any image"
                        ));
                        return Ok(Policy::accept_anything());
                    }
                }
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::new(
                Status::Config,
                format!("reading the signature policy {}: {e}", path.display()),
            )
            .with_subject(path.display().to_string())
        })?;
        let mut policy = Policy::parse(&text).map_err(|e| {
            e.context(format!("signature policy {}", path.display()))
                .with_subject(path.display().to_string())
        })?;
        policy.origin = Some(path);
        Ok(policy)
    }

    /// Parses policy.json text. Strict, as containers/image: unknown fields and requirement
    /// types, and empty requirement lists, are CONFIG errors.
    pub fn parse(text: &str) -> Result<Policy> {
        let bad = |m: String| Error::new(Status::Config, m);
        let doc: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("malformed JSON: {e}")))?;
        let top = doc
            .as_object()
            .ok_or_else(|| bad("the policy is not a JSON object".into()))?;
        for key in top.keys() {
            if key != "default" && key != "transports" {
                return Err(bad(format!("unknown field {key:?}")));
            }
        }
        let default = requirements(
            top.get("default")
                .ok_or_else(|| bad("the mandatory \"default\" requirements are missing".into()))?,
            "default",
        )?;
        let mut transports = BTreeMap::new();
        if let Some(t) = top.get("transports") {
            let t = t
                .as_object()
                .ok_or_else(|| bad("\"transports\" is not an object".into()))?;
            for (transport, scopes) in t {
                let scopes = scopes.as_object().ok_or_else(|| {
                    bad(format!("transports.{transport} is not an object of scopes"))
                })?;
                let mut parsed = BTreeMap::new();
                for (scope, reqs) in scopes {
                    parsed.insert(
                        scope.clone(),
                        requirements(reqs, &format!("transports.{transport}[{scope:?}]"))?,
                    );
                }
                transports.insert(transport.clone(), parsed);
            }
        }
        Ok(Policy {
            default,
            transports,
            origin: None,
        })
    }

    /// The requirements that apply, and the scope they came from (for messages).
    pub fn requirements_for(&self, subject: &PolicySubject) -> (&[Requirement], String) {
        if let Some(scopes) = self.transports.get(subject.transport) {
            let specific = std::iter::once(&subject.identity).chain(subject.namespaces.iter());
            for scope in specific {
                if let Some(reqs) = scopes.get(scope) {
                    return (reqs, format!("{}:{scope}", subject.transport));
                }
            }
            if let Some(reqs) = scopes.get("") {
                return (reqs, format!("the {} transport default", subject.transport));
            }
        }
        (&self.default, "the default".to_string())
    }

    /// Ok when every requirement that applies accepts the image; POLICY_REJECTED otherwise.
    pub fn check(&self, subject: &PolicySubject) -> Result<()> {
        let (reqs, scope) = self.requirements_for(subject);
        let file = match &self.origin {
            Some(p) => p.display().to_string(),
            None => "the built-in policy".to_string(),
        };
        for req in reqs {
            match req {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => {
                    return Err(Error::new(
                        Status::PolicyRejected,
                        format!(
                            "the signature policy {file} rejects {} ({scope}: \"reject\")",
                            subject.identity
                        ),
                    ))
                }
                Requirement::Signature(kind) => {
                    return Err(Error::new(
                        Status::PolicyRejected,
                        format!(
                            "the signature policy {file} requires {kind:?} signatures for {} ({scope}), \
                             and cimage cannot verify signatures yet",
                            subject.identity
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

fn requirements(v: &Value, where_: &str) -> Result<Vec<Requirement>> {
    let bad = |m: String| Error::new(Status::Config, format!("{where_}: {m}"));
    let list = v
        .as_array()
        .ok_or_else(|| bad("requirements must be an array".into()))?;
    if list.is_empty() {
        return Err(bad(
            "an empty requirement list is not allowed (use insecureAcceptAnything)".into(),
        ));
    }
    list.iter()
        .map(|r| {
            let kind = r
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("a requirement without \"type\": {r}")))?;
            match kind {
                "insecureAcceptAnything" | "reject" => {
                    let extra = r.as_object().map_or(0, |o| o.len()) - 1;
                    if extra != 0 {
                        return Err(bad(format!("{kind} takes no other fields: {r}")));
                    }
                    Ok(if kind == "reject" {
                        Requirement::Reject
                    } else {
                        Requirement::InsecureAcceptAnything
                    })
                }
                "signedBy" | "sigstoreSigned" | "signedBaseLayer" => {
                    Ok(Requirement::Signature(kind.to_string()))
                }
                other => Err(bad(format!("unknown requirement type {other:?}"))),
            }
        })
        .collect()
}

/// The scopes of a registry image: `host/repo:tag` (or `@digest`), then `host/repo`, its
/// namespaces, `host`, and `*.domain` wildcards of the host (containers/image's docker
/// transport).
pub fn docker_subject(
    registry: &str,
    repository: &str,
    tag: Option<&str>,
    digest: Option<&str>,
) -> PolicySubject {
    let name = format!("{registry}/{repository}");
    let identity = match (digest, tag) {
        (Some(d), _) => format!("{name}@{d}"),
        (None, Some(t)) => format!("{name}:{t}"),
        (None, None) => format!("{name}:latest"),
    };
    let mut namespaces = Vec::new();
    let mut scope = name.as_str();
    loop {
        namespaces.push(scope.to_string());
        match scope.rfind('/') {
            Some(i) => scope = &scope[..i],
            None => break,
        }
    }
    // `scope` is the host (with port); wildcards drop one label at a time.
    let mut host = scope;
    while let Some(i) = host.find('.') {
        host = &host[i + 1..];
        namespaces.push(format!("*.{host}"));
    }
    PolicySubject {
        transport: "docker",
        identity,
        namespaces,
    }
}

/// The scopes of an OCI layout: `DIR:TAG` (or `DIR`), then DIR and its parents ("/" excluded).
pub fn oci_subject(dir: &Path, tag: Option<&str>) -> PolicySubject {
    let dir_s = dir.display().to_string();
    let identity = match tag {
        Some(t) => format!("{dir_s}:{t}"),
        None => dir_s.clone(),
    };
    let mut namespaces = Vec::new();
    let mut path = dir_s.as_str();
    while !path.is_empty() && path != "/" {
        if path != identity {
            namespaces.push(path.to_string());
        }
        match path.rfind('/') {
            Some(i) => path = &path[..i],
            None => break,
        }
    }
    PolicySubject {
        transport: "oci",
        identity,
        namespaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = r#"{ "default": [ { "type": "insecureAcceptAnything" } ] }"#;

    #[test]
    fn debian_default_accepts_everything() {
        let p = Policy::parse(DEBIAN).unwrap();
        p.check(&docker_subject(
            "docker.io",
            "library/alpine",
            Some("latest"),
            None,
        ))
        .unwrap();
        p.check(&oci_subject(Path::new("/tmp/layout"), Some("t")))
            .unwrap();
    }

    #[test]
    fn most_specific_scope_wins() {
        let p = Policy::parse(
            r#"{
              "default": [{"type": "reject"}],
              "transports": {
                "docker": {
                  "": [{"type": "insecureAcceptAnything"}],
                  "blocked.io": [{"type": "reject"}],
                  "blocked.io/ok": [{"type": "insecureAcceptAnything"}],
                  "blocked.io/ok/sub:bad": [{"type": "reject"}],
                  "*.signed.io": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k"}],
                  "q.signed.io:5000/open": [{"type": "insecureAcceptAnything"}]
                },
                "oci": {
                  "/layouts/trusted": [{"type": "insecureAcceptAnything"}]
                }
              }
            }"#,
        )
        .unwrap();
        let d = |reg: &str, repo: &str, tag: &str| docker_subject(reg, repo, Some(tag), None);
        let status = |s: PolicySubject| p.check(&s).err().map(|e| e.status);
        assert_eq!(status(d("quay.io", "a/b", "t")), None);
        assert_eq!(
            status(d("blocked.io", "x", "t")),
            Some(Status::PolicyRejected)
        );
        assert_eq!(status(d("blocked.io", "ok/sub", "t")), None);
        assert_eq!(
            status(d("blocked.io", "ok/sub", "bad")),
            Some(Status::PolicyRejected)
        );
        assert_eq!(
            status(d("a.q.signed.io", "x", "t")),
            Some(Status::PolicyRejected)
        );
        assert_eq!(status(d("q.signed.io:5000", "open", "t")), None);
        let e = p.check(&d("q.signed.io", "x", "t")).unwrap_err();
        assert!(
            e.message.contains("signedBy") && e.message.contains("cannot verify"),
            "{}",
            e.message
        );
        assert_eq!(
            status(oci_subject(Path::new("/layouts/trusted/a"), Some("t"))),
            None
        );
        assert_eq!(
            status(oci_subject(Path::new("/layouts/other"), None)),
            Some(Status::PolicyRejected)
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        let s = docker_subject("blocked.io", "ok/sub", None, Some(&digest));
        assert_eq!(s.identity, format!("blocked.io/ok/sub@{digest}"));
        assert_eq!(status(s), None);
    }

    #[test]
    fn scopes_of_a_docker_reference() {
        let s = docker_subject("a.b.example.com:5000", "ns/repo", Some("v1"), None);
        assert_eq!(s.identity, "a.b.example.com:5000/ns/repo:v1");
        assert_eq!(
            s.namespaces,
            vec![
                "a.b.example.com:5000/ns/repo",
                "a.b.example.com:5000/ns",
                "a.b.example.com:5000",
                "*.b.example.com:5000",
                "*.example.com:5000",
                "*.com:5000",
            ]
        );
        let s = oci_subject(Path::new("/a/b"), Some("t"));
        assert_eq!(s.identity, "/a/b:t");
        assert_eq!(s.namespaces, vec!["/a/b", "/a"]);
    }

    #[test]
    fn malformed_policies_are_config_errors() {
        for text in [
            "",
            "[]",
            "{}",
            r#"{"default": []}"#,
            r#"{"default": [{"type": "maybe"}]}"#,
            r#"{"default": [{}]}"#,
            r#"{"default": [{"type": "reject", "extra": 1}]}"#,
            r#"{"default": [{"type": "reject"}], "other": 1}"#,
            r#"{"default": [{"type": "reject"}], "transports": {"docker": {"x.io": []}}}"#,
            r#"{"default": [{"type": "reject"}], "transports": {"docker": []}}"#,
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert_eq!(e.status, Status::Config, "{text}: {}", e.message);
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.json");
        let e = Policy::load(Some(&path)).unwrap_err();
        assert_eq!(e.status, Status::Config);
        std::fs::write(&path, r#"{"default": [{"type": "reject"}]}"#).unwrap();
        let p = Policy::load(Some(&path)).unwrap();
        let e = p
            .check(&docker_subject("x.io", "y", Some("t"), None))
            .unwrap_err();
        assert_eq!(e.status, Status::PolicyRejected);
        assert!(
            e.message.contains(&path.display().to_string()),
            "{}",
            e.message
        );
        std::fs::write(&path, "{").unwrap();
        let e = Policy::load(Some(&path)).unwrap_err();
        assert!(
            e.message.contains(&path.display().to_string()),
            "{}",
            e.message
        );
    }
}
