//! From the reference a caller wrote to the places the image is pulled from, as registries.conf
//! says: short names become candidates (an alias, else one per unqualified-search registry),
//! and each candidate's `[[registry]]` table gives its mirrors and its (possibly rewritten)
//! primary location, or blocks it.
//!
//! A short name is a bare name without registry (`alpine`, `foo/bar:1`); `docker://alpine` is
//! no short name: the docker transport always means docker.io there, as in containers/image.
//! When no file sets `unqualified-search-registries`, a short name means docker.io as well
//! (Docker's rule, and cimage's behaviour without any registries.conf).

use super::reference::{parse_reference, DockerRef, Reference, DOCKER_HUB};
use crate::config::registries::{PullFromMirror, RegistriesConf, ShortNameMode};
use crate::error::{Error, Result, Status};

/// One place to fetch an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub reference: Reference,
    /// registries.conf allows plain HTTP and unverified TLS here.
    pub insecure: bool,
    pub mirror: bool,
}

/// One image the caller may mean, with the places to get it from in order.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The image's name: recorded in the store, checked against the signature policy.
    pub reference: Reference,
    /// Mirrors first, the primary location last.
    pub locations: Vec<Location>,
    /// registries.conf blocks this image (POLICY_REJECTED).
    pub blocked: Option<Error>,
}

/// Every candidate, in the order to try them.
#[derive(Debug, Clone)]
pub struct PullPlan {
    pub candidates: Vec<Candidate>,
    /// Set when the network must not be used to pick among the candidates: an ambiguous short
    /// name in enforcing mode. The store may still be searched for them.
    pub ambiguity: Option<Error>,
}

/// True when the name's first component names a registry (containers/image's rule: it
/// contains '.' or ':', or is `localhost`, and a '/' follows it).
pub fn has_registry(name: &str) -> bool {
    match name.split_once('/') {
        Some((first, _)) => first.contains(['.', ':']) || first == "localhost",
        None => false,
    }
}

/// The short name of a bare reference without a registry (`foo/bar` of `foo/bar:1@sha256:…`).
fn short_name(input: &str) -> Option<&str> {
    if input.starts_with("docker://") || input.contains("://") || input.starts_with("oci:") {
        return None;
    }
    let name = input.split('@').next().unwrap_or(input);
    if has_registry(name) {
        return None;
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    Some(match name[last_slash..].find(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    })
}

/// `:tag` or `@digest` of a parsed reference.
fn suffix(r: &DockerRef) -> String {
    match (&r.digest, &r.tag) {
        (Some(d), _) => format!("@{d}"),
        (None, Some(t)) => format!(":{t}"),
        (None, None) => String::new(),
    }
}

fn docker(s: &str) -> Result<DockerRef> {
    match parse_reference(&format!("docker://{s}"))? {
        Reference::Docker(r) => Ok(r),
        Reference::Layout(_) => Err(Error::internal(format!("{s} parsed as a layout"))),
    }
}

/// The pull plan for `input` under `conf`.
pub fn plan(input: &str, conf: &RegistriesConf) -> Result<PullPlan> {
    let parsed = parse_reference(input)?;
    let docker_ref = match &parsed {
        Reference::Layout(_) => {
            return Ok(PullPlan {
                candidates: vec![Candidate {
                    reference: parsed.clone(),
                    locations: vec![Location {
                        reference: parsed,
                        insecure: false,
                        mirror: false,
                    }],
                    blocked: None,
                }],
                ambiguity: None,
            })
        }
        Reference::Docker(r) => r,
    };
    let mut ambiguity = None;
    let names: Vec<DockerRef> = match short_name(input) {
        None => vec![docker_ref.clone()],
        Some(short) => {
            let tail = suffix(docker_ref);
            if let Some((alias, origin)) = conf.aliases.get(short) {
                crate::log::debug(format!(
                    "short name {short:?} is an alias of {alias} ({})",
                    origin.display()
                ));
                vec![docker(&format!("{alias}{tail}")).map_err(|e| {
                    Error::new(
                        Status::Config,
                        format!("alias {short:?} in {}: {}", origin.display(), e.message),
                    )
                })?]
            } else {
                let search = match &conf.unqualified_search_registries {
                    None => vec![DOCKER_HUB.to_string()],
                    Some(list) if list.is_empty() => {
                        return Err(Error::invalid(format!(
                        "short name {short:?} has no alias and no unqualified-search-registries \
                             are configured ({}): use a fully qualified name",
                        conf.describe_files()
                    ))
                        .with_subject(input))
                    }
                    Some(list) => list.clone(),
                };
                let names = search
                    .iter()
                    .map(|registry| docker(&format!("{registry}/{short}{tail}")))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| e.with_subject(input))?;
                if names.len() > 1 && conf.short_name_mode == ShortNameMode::Enforcing {
                    let listed: Vec<String> = names
                        .iter()
                        .map(|n| Reference::Docker(n.clone()).storage_name())
                        .collect();
                    ambiguity = Some(
                        Error::invalid(format!(
                            "short name {short:?} is ambiguous: it may be any of {} and \
                             short-name-mode is \"enforcing\" ({}); use a fully qualified name \
                             or add an alias to [aliases]",
                            listed.join(", "),
                            conf.describe_files()
                        ))
                        .with_subject(input),
                    );
                }
                names
            }
        }
    };
    let candidates = names
        .into_iter()
        .map(|name| candidate(name, conf))
        .collect::<Result<Vec<_>>>()?;
    Ok(PullPlan {
        candidates,
        ambiguity,
    })
}

/// Mirrors and primary location of one image, or why it is blocked.
fn candidate(name: DockerRef, conf: &RegistriesConf) -> Result<Candidate> {
    let reference = Reference::Docker(name.clone());
    let full = reference.storage_name();
    let Some((registry, matched)) = conf.find_registry(&full) else {
        return Ok(Candidate {
            locations: vec![Location {
                reference: reference.clone(),
                insecure: false,
                mirror: false,
            }],
            reference,
            blocked: None,
        });
    };
    if registry.blocked {
        let blocked = Error::new(
            Status::PolicyRejected,
            format!(
                "registry {:?} is blocked in {}",
                registry.prefix,
                registry.origin.display()
            ),
        )
        .with_subject(reference.to_string());
        return Ok(Candidate {
            reference,
            locations: Vec::new(),
            blocked: Some(blocked),
        });
    }
    let rest = &full[matched..];
    let rewrite = |location: &str| -> Result<Reference> {
        let rewritten = format!("{location}{rest}");
        docker(&rewritten).map(Reference::Docker).map_err(|e| {
            Error::new(
                Status::Config,
                format!(
                    "{full} rewritten by [[registry]] {:?} of {} is {rewritten:?}, not a valid reference: {}",
                    registry.prefix,
                    registry.origin.display(),
                    e.message
                ),
            )
        })
    };
    let by_digest = name.digest.is_some();
    let mut locations = Vec::new();
    for mirror in &registry.mirrors {
        let wanted = match mirror.pull_from_mirror {
            _ if registry.mirror_by_digest_only && !by_digest => false,
            PullFromMirror::All => true,
            PullFromMirror::DigestOnly => by_digest,
            PullFromMirror::TagOnly => !by_digest,
        };
        if wanted {
            locations.push(Location {
                reference: rewrite(&mirror.location)?,
                insecure: mirror.insecure,
                mirror: true,
            });
        }
    }
    locations.push(Location {
        reference: if registry.location.is_empty() {
            reference.clone()
        } else {
            rewrite(&registry.location)?
        },
        insecure: registry.insecure,
        mirror: false,
    });
    Ok(Candidate {
        reference,
        locations,
        blocked: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn conf(text: &str) -> RegistriesConf {
        RegistriesConf::parse(text, Path::new("/t/registries.conf")).unwrap()
    }

    fn names(plan: &PullPlan) -> Vec<String> {
        plan.candidates
            .iter()
            .map(|c| c.reference.storage_name())
            .collect()
    }

    fn locations(c: &Candidate) -> Vec<(String, bool, bool)> {
        c.locations
            .iter()
            .map(|l| (l.reference.storage_name(), l.insecure, l.mirror))
            .collect()
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name("alpine"), Some("alpine"));
        assert_eq!(short_name("alpine:3"), Some("alpine"));
        assert_eq!(short_name(&format!("foo/bar:1@{D}")), Some("foo/bar"));
        assert_eq!(short_name("docker://alpine"), None);
        assert_eq!(short_name("docker.io/alpine"), None);
        assert_eq!(short_name("localhost/x"), None);
        assert_eq!(short_name("127.0.0.1:5000/x:t"), None);
        assert_eq!(short_name("oci:/x"), None);
    }

    #[test]
    fn without_configuration_short_names_mean_docker_hub() {
        let plan = plan("alpine", &RegistriesConf::default()).unwrap();
        assert_eq!(names(&plan), vec!["docker.io/library/alpine:latest"]);
        assert!(plan.ambiguity.is_none());
        let plan = super::plan("127.0.0.1:5000/a/b:t", &RegistriesConf::default()).unwrap();
        assert_eq!(
            locations(&plan.candidates[0]),
            vec![("127.0.0.1:5000/a/b:t".into(), false, false)]
        );
    }

    #[test]
    fn aliases_and_search_registries() {
        let c = conf(
            r#"
unqualified-search-registries = ["a.io", "docker.io"]
[aliases]
"box" = "quay.io/tools/busybox"
"#,
        );
        let p = plan("box:1", &c).unwrap();
        assert_eq!(names(&p), vec!["quay.io/tools/busybox:1"]);
        let p = plan(&format!("x/y@{D}"), &c).unwrap();
        assert_eq!(
            names(&p),
            vec![format!("a.io/x/y@{D}"), format!("docker.io/x/y@{D}")]
        );
        assert!(p.ambiguity.is_none(), "permissive is the default");
        let p = plan("alpine", &c).unwrap();
        assert_eq!(
            names(&p),
            vec!["a.io/alpine:latest", "docker.io/library/alpine:latest"]
        );
        // Transport and qualified names are never searched.
        assert_eq!(
            names(&plan("docker://box", &c).unwrap()),
            vec!["docker.io/library/box:latest"]
        );
    }

    #[test]
    fn enforcing_mode_refuses_ambiguity_naming_the_candidates() {
        let c = conf(
            "unqualified-search-registries = [\"a.io\", \"b.io\"]\nshort-name-mode = \"enforcing\"",
        );
        let p = plan("img", &c).unwrap();
        let e = p.ambiguity.unwrap();
        assert_eq!(e.status, Status::InvalidArgument);
        assert!(
            e.message.contains("a.io/img:latest") && e.message.contains("b.io/img:latest"),
            "{}",
            e.message
        );
        // One search registry is no ambiguity.
        let c = conf("unqualified-search-registries = [\"a.io\"]\nshort-name-mode = \"enforcing\"");
        assert!(plan("img", &c).unwrap().ambiguity.is_none());
        // An empty list leaves nothing to try.
        let c = conf("unqualified-search-registries = []");
        assert_eq!(plan("img", &c).unwrap_err().status, Status::InvalidArgument);
    }

    #[test]
    fn mirrors_rewrites_and_blocks() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com/foo"
location = "internal.example.net/bar"
[[registry.mirror]]
location = "mirror-0.local/mirror-for-foo"
[[registry.mirror]]
location = "mirror-1.local/mirrors/foo"
insecure = true
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "mirror-2.local"
pull-from-mirror = "digest-only"

[[registry]]
location = "primary.io"
insecure = true
mirror-by-digest-only = true
[[registry.mirror]]
location = "cache.local:5000"

[[registry]]
location = "primary.io/secret"
blocked = true

[[registry]]
prefix = "*.wild.io"
insecure = true
"#,
        );
        let p = plan("example.com/foo/image:latest", &c).unwrap();
        assert_eq!(
            locations(&p.candidates[0]),
            vec![
                (
                    "mirror-0.local/mirror-for-foo/image:latest".into(),
                    false,
                    true
                ),
                ("mirror-1.local/mirrors/foo/image:latest".into(), true, true),
                ("internal.example.net/bar/image:latest".into(), false, false),
            ]
        );
        assert_eq!(names(&p), vec!["example.com/foo/image:latest"]);
        let p = plan(&format!("example.com/foo/image@{D}"), &c).unwrap();
        assert_eq!(
            locations(&p.candidates[0]),
            vec![
                (
                    format!("mirror-0.local/mirror-for-foo/image@{D}"),
                    false,
                    true
                ),
                (format!("mirror-2.local/image@{D}"), false, true),
                (format!("internal.example.net/bar/image@{D}"), false, false),
            ]
        );
        // mirror-by-digest-only: tags go to the primary alone.
        let p = plan("primary.io/x/y:t", &c).unwrap();
        assert_eq!(
            locations(&p.candidates[0]),
            vec![("primary.io/x/y:t".into(), true, false)]
        );
        let p = plan(&format!("primary.io/x/y@{D}"), &c).unwrap();
        assert_eq!(
            locations(&p.candidates[0]),
            vec![
                (format!("cache.local:5000/x/y@{D}"), false, true),
                (format!("primary.io/x/y@{D}"), true, false)
            ]
        );
        let p = plan("primary.io/secret/y:t", &c).unwrap();
        let e = p.candidates[0].blocked.clone().unwrap();
        assert_eq!(e.status, Status::PolicyRejected);
        assert!(e.message.contains("/t/registries.conf"), "{}", e.message);
        // A wildcard table without location keeps the name and applies its settings.
        let p = plan("a.b.wild.io/z:t", &c).unwrap();
        assert_eq!(
            locations(&p.candidates[0]),
            vec![("a.b.wild.io/z:t".into(), true, false)]
        );
    }

    #[test]
    fn layouts_have_one_location() {
        let p = plan("oci:/does/not/exist:t", &RegistriesConf::default()).unwrap();
        assert_eq!(p.candidates.len(), 1);
        assert_eq!(p.candidates[0].locations.len(), 1);
    }
}
