//! Image references: `docker://REF`, `oci:DIR[:TAG]` or a bare Docker name, normalised the
//! way containers/image does it so the names we record match podman's.

use crate::digest;
use crate::error::{Error, Result, Status};
use std::fmt;
use std::path::{Path, PathBuf};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DOCKER_HUB`] (as containers/image does).
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Repositories on Docker Hub without a namespace live under `library/`.
const OFFICIAL_NAMESPACE: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// The distribution spec's limit on `domain/path`.
const MAX_NAME_LEN: usize = 255;
/// Transports containers/image knows but we do not read; named so the error is clear
/// instead of "invalid tag".
const UNSUPPORTED_TRANSPORTS: &[&str] = &[
    "containers-storage",
    "dir",
    "docker-archive",
    "docker-daemon",
    "oci-archive",
    "ostree",
    "sif",
    "tarball",
];

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Docker(DockerRef),
    Layout(LayoutRef),
}

/// An image in a registry speaking the distribution API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRef {
    /// `docker.io`, `quay.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub registry: String,
    /// `library/alpine`.
    pub repository: String,
    /// `latest` when neither tag nor digest was given; None when a digest was given.
    pub tag: Option<String>,
    /// `sha256:<hex>`, validated.
    pub digest: Option<String>,
}

/// An image in an OCI image layout directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRef {
    /// Absolute (symlinks resolved when the directory exists).
    pub dir: PathBuf,
    /// Matched against the `org.opencontainers.image.ref.name` annotation of index.json.
    pub tag: Option<String>,
}

/// Parses `docker://REF`, `oci:DIR[:TAG]`, or a bare Docker name such as `alpine`.
pub fn parse_reference(s: &str) -> Result<Reference> {
    parse(s).map_err(|e| e.with_subject(s))
}

fn parse(s: &str) -> Result<Reference> {
    if s.is_empty() {
        return Err(Error::invalid("empty image reference"));
    }
    if let Some(rest) = s.strip_prefix("docker://") {
        return parse_docker(rest).map(Reference::Docker);
    }
    if let Some(rest) = s.strip_prefix("oci:") {
        return parse_layout(rest).map(Reference::Layout);
    }
    if let Some((transport, _)) = s.split_once(':') {
        if UNSUPPORTED_TRANSPORTS.contains(&transport) {
            return Err(Error::new(
                Status::Unsupported,
                format!(
                    "transport {transport:?} in {s:?} is not supported (use docker://, oci: or a bare name)"
                ),
            ));
        }
    }
    parse_docker(s).map(Reference::Docker)
}

/// Docker reference grammar (distribution/reference) plus containers/image's normalisation.
fn parse_docker(s: &str) -> Result<DockerRef> {
    if s.is_empty() {
        return Err(Error::invalid("empty Docker reference"));
    }
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((name, digest)) => {
            digest::validate(digest)
                .map_err(|e| e.context(format!("invalid digest in reference {s:?}")))?;
            (name, Some(digest.to_string()))
        }
        None => (s, None),
    };
    // A ':' after the last '/' separates the tag; an earlier one belongs to a registry port.
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => {
            let colon = last_slash + i;
            (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
        }
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        if !is_valid_tag(tag) {
            return Err(Error::invalid(format!(
                "invalid tag {tag:?} in reference {s:?} (a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
            )));
        }
    }
    if name.is_empty() {
        return Err(Error::invalid(format!(
            "reference {s:?} has no repository name"
        )));
    }
    if digest::is_hex64(name) {
        return Err(Error::invalid(format!(
            "invalid repository name {name:?}: a 64-character hexadecimal string is an image ID, not a name"
        )));
    }
    let (registry, repository) = split_registry(name);
    if !is_valid_registry(&registry) {
        return Err(Error::invalid(format!(
            "invalid registry {registry:?} in reference {s:?}"
        )));
    }
    if !is_valid_repository(&repository) {
        return Err(Error::invalid(format!(
            "invalid repository name {repository:?} in reference {s:?} (must be lowercase \
             [a-z0-9] components joined by '.', '_', '__', '-' and '/')"
        )));
    }
    if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "repository name in {s:?} is longer than {MAX_NAME_LEN} characters"
        )));
    }
    // podman drops the tag of a "name:tag@digest" reference: the digest decides.
    let tag = match (&digest, tag) {
        (Some(_), _) => None,
        (None, Some(tag)) => Some(tag.to_string()),
        (None, None) => Some(DEFAULT_TAG.to_string()),
    };
    Ok(DockerRef {
        registry,
        repository,
        tag,
        digest,
    })
}

/// containers/image's splitDockerDomain: the first component is a registry when it has a
/// '.' or ':', is "localhost", or has uppercase letters (which a repository cannot have).
fn split_registry(name: &str) -> (String, String) {
    let (registry, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    };
    let registry = if registry == DOCKER_HUB_LEGACY {
        DOCKER_HUB
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !remainder.contains('/') {
        format!("{OFFICIAL_NAMESPACE}{remainder}")
    } else {
        remainder.to_string()
    };
    (registry.to_string(), repository)
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
pub fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// host[:port], host being DNS labels (also covers IPv4) or a bracketed IPv6 address.
fn is_valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if registry.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

/// `component ('/' component)*` with `component := [a-z0-9]+ (separator [a-z0-9]+)*` and
/// `separator := '.' | '_' | '__' | '-'+`.
pub fn is_valid_repository(repository: &str) -> bool {
    !repository.is_empty() && repository.split('/').all(is_valid_path_component)
}

fn is_valid_path_component(component: &str) -> bool {
    let b = component.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn parse_layout(s: &str) -> Result<LayoutRef> {
    // containers/image splits at the first ':' (a directory with ':' cannot be named).
    let (dir, tag) = match s.split_once(':') {
        Some((dir, tag)) => (dir, Some(tag)),
        None => (s, None),
    };
    if dir.is_empty() {
        return Err(Error::invalid(format!(
            "OCI layout reference \"oci:{s}\" has no directory (expected oci:DIR[:TAG])"
        )));
    }
    let tag = match tag {
        None | Some("") => None,
        Some(tag) if is_valid_layout_tag(tag) => Some(tag.to_string()),
        Some(tag) => {
            return Err(Error::invalid(format!(
                "invalid image name {tag:?} in \"oci:{s}\" (allowed: [A-Za-z0-9] joined by \
                 '-', '.', '_', ':', '@', '+' and '/')"
            )))
        }
    };
    Ok(LayoutRef {
        dir: absolute_dir(Path::new(dir))?,
        tag,
    })
}

/// The `org.opencontainers.image.ref.name` grammar: components of alphanumerics joined by
/// separators `-._:@+`, components joined by '/'.
fn is_valid_layout_tag(tag: &str) -> bool {
    tag.split('/').all(|component| {
        let b = component.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"-._:@+".contains(&c))
    })
}

/// containers/image resolves the layout path fully (absolute, symlinks resolved when it
/// exists), which is what its storage name is made from.
fn absolute_dir(dir: &Path) -> Result<PathBuf> {
    if let Ok(real) = std::fs::canonicalize(dir) {
        return Ok(real);
    }
    std::path::absolute(dir).map_err(|e| Error::io(e, format!("resolving {}", dir.display())))
}

impl DockerRef {
    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl Reference {
    /// The name recorded in the store's images.json, as podman records it.
    pub fn storage_name(&self) -> String {
        match self {
            Reference::Docker(r) => match (&r.digest, &r.tag) {
                (Some(digest), _) => format!("{}@{digest}", r.name()),
                (None, Some(tag)) => format!("{}:{tag}", r.name()),
                (None, None) => format!("{}:{DEFAULT_TAG}", r.name()),
            },
            Reference::Layout(r) => {
                let tag = match &r.tag {
                    Some(tag) if is_valid_tag(tag) => tag.as_str(),
                    _ => DEFAULT_TAG,
                };
                format!("localhost/{}:{tag}", repository_from_path(&r.dir))
            }
        }
    }
}

/// The directory's path as a repository name: lowercased, characters outside the grammar
/// replaced by '-', separator runs the grammar does not allow collapsed to '-', and leading or
/// trailing separators dropped, so that the result parses as a name again.
fn repository_from_path(dir: &Path) -> String {
    let path = dir.to_string_lossy().to_lowercase();
    let components: Vec<String> = path
        .split('/')
        .map(sanitize_component)
        .filter(|c| !c.is_empty())
        .collect();
    if components.is_empty() {
        // The root directory: there is no path to name the image after.
        "oci-layout".to_string()
    } else {
        components.join("/")
    }
}

fn sanitize_component(component: &str) -> String {
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mapped: String = component
        .chars()
        .map(|c| {
            if is_alnum(c) || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::with_capacity(mapped.len());
    let mut separator = String::new();
    for c in mapped.chars() {
        if is_alnum(c) {
            if !separator.is_empty() && !out.is_empty() {
                let valid = matches!(separator.as_str(), "." | "_" | "__")
                    || separator.chars().all(|s| s == '-');
                out.push_str(if valid { &separator } else { "-" });
            }
            separator.clear();
            out.push(c);
        } else {
            separator.push(c);
        }
    }
    out
}

impl fmt::Display for Reference {
    /// The transport form: `docker://docker.io/library/alpine:latest`, `oci:/dir:tag`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Docker(r) => {
                write!(f, "docker://{}", r.name())?;
                if let Some(tag) = &r.tag {
                    write!(f, ":{tag}")?;
                }
                if let Some(digest) = &r.digest {
                    write!(f, "@{digest}")?;
                }
                Ok(())
            }
            Reference::Layout(r) => {
                write!(f, "oci:{}", r.dir.display())?;
                if let Some(tag) = &r.tag {
                    write!(f, ":{tag}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn docker(s: &str) -> DockerRef {
        match parse_reference(s) {
            Ok(Reference::Docker(r)) => r,
            other => panic!("{s:?} parsed as {other:?}"),
        }
    }

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = docker(s);
        (r.registry, r.repository, r.tag, r.digest)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn bare_names_are_normalised_like_containers_image() {
        assert_eq!(
            parts("alpine"),
            (
                "docker.io".into(),
                "library/alpine".into(),
                some("latest"),
                None
            )
        );
        assert_eq!(
            parts("alpine:3.19"),
            (
                "docker.io".into(),
                "library/alpine".into(),
                some("3.19"),
                None
            )
        );
        assert_eq!(
            parts("foo/bar"),
            ("docker.io".into(), "foo/bar".into(), some("latest"), None)
        );
        assert_eq!(
            parts("docker.io/alpine"),
            (
                "docker.io".into(),
                "library/alpine".into(),
                some("latest"),
                None
            )
        );
        assert_eq!(
            parts("index.docker.io/library/alpine:edge"),
            (
                "docker.io".into(),
                "library/alpine".into(),
                some("edge"),
                None
            )
        );
        assert_eq!(
            parts("quay.io/a/b/c:v1"),
            ("quay.io".into(), "a/b/c".into(), some("v1"), None)
        );
        assert_eq!(
            parts("localhost/img"),
            ("localhost".into(), "img".into(), some("latest"), None)
        );
        assert_eq!(
            parts("localhost:5000/img:t"),
            ("localhost:5000".into(), "img".into(), some("t"), None)
        );
        assert_eq!(
            parts("127.0.0.1:5000/test/img:t"),
            ("127.0.0.1:5000".into(), "test/img".into(), some("t"), None)
        );
        assert_eq!(
            parts("[::1]:5000/img"),
            ("[::1]:5000".into(), "img".into(), some("latest"), None)
        );
        // "foo" is no registry (no '.', ':', not localhost): it is a Docker Hub namespace.
        // A '.' makes the first component a registry, whose grammar has no '_'.
        assert_eq!(invalid("a__b.c/d").status, Status::InvalidArgument);
        assert_eq!(
            parts("foo/bar/baz"),
            (
                "docker.io".into(),
                "foo/bar/baz".into(),
                some("latest"),
                None
            )
        );
        assert_eq!(
            parts("docker.io/a__b.c-d---e/f_g"),
            (
                "docker.io".into(),
                "a__b.c-d---e/f_g".into(),
                some("latest"),
                None
            )
        );
    }

    #[test]
    fn docker_transport_prefix_and_digests() {
        assert_eq!(parts("docker://alpine"), parts("alpine"));
        assert_eq!(
            parts(&format!("docker://quay.io/a/b@{D}")),
            ("quay.io".into(), "a/b".into(), None, some(D))
        );
        // A tag next to a digest is dropped, as podman does.
        assert_eq!(
            parts(&format!("alpine:3@{D}")),
            ("docker.io".into(), "library/alpine".into(), None, some(D))
        );
        assert_eq!(
            parts(&format!("localhost:5000/x@{D}")),
            ("localhost:5000".into(), "x".into(), None, some(D))
        );
    }

    fn invalid(s: &str) -> Error {
        match parse_reference(s) {
            Err(e) => e,
            Ok(r) => panic!("{s:?} should be rejected, parsed as {r:?}"),
        }
    }

    #[test]
    fn malformed_references_are_rejected_with_clear_messages() {
        for s in [
            "",
            "docker://",
            "Alpine",
            "docker.io/Library/alpine",
            "foo/Bar",
            "alpine:",
            "alpine:-bad",
            "alpine:a/b",
            "alpine@sha256:1234",
            "alpine@sha256:../../etc/passwd",
            "alpine@",
            "/alpine",
            "alpine/",
            "a//b",
            "a..b",
            "_a",
            "a-",
            "a b",
            "reg:port/img",
            "bad_host.io/img",
            "-bad.io/img",
            "oci:",
            "oci::t",
            "oci:/tmp/x:bad tag",
            "oci:/tmp/x:-t",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            let e = invalid(s);
            assert_eq!(e.status, Status::InvalidArgument, "{s:?}: {}", e.message);
            assert_eq!(e.subject.as_deref(), Some(s));
            assert!(!e.message.is_empty());
        }
        assert!(
            invalid("Alpine").message.contains("lowercase"),
            "{}",
            invalid("Alpine").message
        );
        assert!(invalid("oci:").message.contains("no directory"));
        assert_eq!(
            invalid(&format!("alpine@md5:{}", "0".repeat(32))).status,
            Status::Unsupported
        );
        assert_eq!(invalid("dir:/tmp/x").status, Status::Unsupported);
        let long = format!("a/{}", "b".repeat(260));
        assert_eq!(invalid(&long).status, Status::InvalidArgument);
        assert!(invalid(&format!("alpine:{}", "t".repeat(129)))
            .message
            .contains("invalid tag"));
    }

    #[test]
    fn layout_references() {
        let tmp = std::env::temp_dir();
        let real_tmp = std::fs::canonicalize(&tmp).unwrap();
        match parse_reference(&format!("oci:{}:v1", tmp.display())).unwrap() {
            Reference::Layout(r) => {
                assert_eq!(r.dir, real_tmp);
                assert_eq!(r.tag.as_deref(), Some("v1"));
            }
            other => panic!("{other:?}"),
        }
        match parse_reference("oci:/does/not/exist").unwrap() {
            Reference::Layout(r) => {
                assert_eq!(r.dir, PathBuf::from("/does/not/exist"));
                assert_eq!(r.tag, None);
            }
            other => panic!("{other:?}"),
        }
        // A trailing ':' means no tag; tags may be full OCI ref names.
        match parse_reference("oci:/x:").unwrap() {
            Reference::Layout(r) => assert_eq!(r.tag, None),
            other => panic!("{other:?}"),
        }
        match parse_reference("oci:/x:example.com/a/b:1.0").unwrap() {
            Reference::Layout(r) => assert_eq!(r.tag.as_deref(), Some("example.com/a/b:1.0")),
            other => panic!("{other:?}"),
        }
        // Relative directories become absolute.
        match parse_reference("oci:relative/layout:t").unwrap() {
            Reference::Layout(r) => {
                assert!(r.dir.is_absolute());
                assert!(r.dir.ends_with("relative/layout"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn storage_names_match_podman() {
        let name = |s: &str| parse_reference(s).unwrap().storage_name();
        assert_eq!(name("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(
            name("docker://127.0.0.1:5000/a/b:t"),
            "127.0.0.1:5000/a/b:t"
        );
        assert_eq!(
            name(&format!("quay.io/x/y@{D}")),
            format!("quay.io/x/y@{D}")
        );
        assert_eq!(
            name(&format!("quay.io/x/y:t@{D}")),
            format!("quay.io/x/y@{D}")
        );
        assert_eq!(name("oci:/does/not/exist:t"), "localhost/does/not/exist:t");
        assert_eq!(
            name("oci:/does/not/exist"),
            "localhost/does/not/exist:latest"
        );
        assert_eq!(
            name("oci:/Does/Not Here/.x_y:v1.0"),
            "localhost/does/not-here/x_y:v1.0"
        );
        // An OCI ref name that is no valid Docker tag falls back to latest.
        assert_eq!(
            name("oci:/does/not/exist:a/b:1"),
            "localhost/does/not/exist:latest"
        );
        assert_eq!(
            name("oci:/does/we!!rd..dir"),
            "localhost/does/we--rd-dir:latest"
        );
        assert_eq!(name("oci:/:t"), "localhost/oci-layout:t");
        // Every storage name parses again as a Docker reference.
        for s in [
            "oci:/Does/Not Here/.x_y:v1.0",
            "oci:/does/we!!rd..dir",
            "oci:/a/__b__/-c-:t",
        ] {
            let n = name(s);
            assert!(parse_reference(&n).is_ok(), "{s:?} gave {n:?}");
        }
    }

    #[test]
    fn display_is_the_transport_form() {
        let show = |s: &str| parse_reference(s).unwrap().to_string();
        assert_eq!(show("alpine"), "docker://docker.io/library/alpine:latest");
        assert_eq!(show(&format!("x.io/a@{D}")), format!("docker://x.io/a@{D}"));
        assert_eq!(show("oci:/does/not/exist:t"), "oci:/does/not/exist:t");
        assert_eq!(show("oci:/does/not/exist"), "oci:/does/not/exist");
        // Display output parses back to the same reference.
        for s in [
            "alpine",
            "docker://localhost:5000/a/b:c",
            "oci:/does/not/exist:t",
        ] {
            let r = parse_reference(s).unwrap();
            assert_eq!(parse_reference(&r.to_string()).unwrap(), r);
        }
    }
}
