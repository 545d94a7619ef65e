//! Manifests, indexes and image configs: media-type detection, parsing, digest checks.
//! Only the fields a pull needs are read; documents are kept as the original bytes.

use super::platform::{self, Platform};
use crate::digest;
use crate::error::{Error, Result, Status};
use serde::Deserialize;
use std::collections::HashMap;

/// Manifests, indexes and configs larger than this are refused (containers/image uses 4 MiB
/// for manifests too): they are read into memory whole.
pub const MAX_DOCUMENT_SIZE: usize = 4 << 20;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What we ask registries for (schema1 deliberately absent).
pub const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

/// Layer media types the unpacker can handle (plain, gzip, zstd; Docker and OCI spellings,
/// including the non-distributable variants whose blobs the registry serves all the same).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// The annotation an OCI layout's index.json tags images with.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A manifest-like document, by what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest, with its (possibly guessed) media type.
    Manifest(&'static str),
    /// An image index or manifest list.
    Index(&'static str),
}

/// A descriptor as it appears in indexes and manifests.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PlatformJson {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl PlatformJson {
    fn to_platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone().filter(|v| !v.is_empty()),
        }
    }
}

impl Descriptor {
    /// The validated digest and the size as an unsigned number.
    pub fn checked(&self, what: &str, malformed: Status) -> Result<(&str, u64)> {
        digest::validate(&self.digest).map_err(|e| e.context(format!("{what} descriptor")))?;
        let size = u64::try_from(self.size).map_err(|_| {
            Error::new(
                malformed,
                format!("{what} {} has a negative size {}", self.digest, self.size),
            )
        })?;
        Ok((&self.digest, size))
    }

    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .as_ref()?
            .get(REF_NAME_ANNOTATION)
            .map(String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    config: Option<serde::de::IgnoredAny>,
}

/// Tells manifests from indexes the way containers/image's GuessMIMEType does: by the
/// mediaType field, else by shape. Schema1 and unknown types are Unsupported.
pub fn detect_kind(bytes: &[u8], malformed: Status) -> Result<Kind> {
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(malformed, format!("manifest is not valid JSON: {e}")))?;
    if let Some(media_type) = probe.media_type.as_deref().filter(|m| !m.is_empty()) {
        return match media_type {
            OCI_MANIFEST => Ok(Kind::Manifest(OCI_MANIFEST)),
            DOCKER_MANIFEST => Ok(Kind::Manifest(DOCKER_MANIFEST)),
            OCI_INDEX => Ok(Kind::Index(OCI_INDEX)),
            DOCKER_MANIFEST_LIST => Ok(Kind::Index(DOCKER_MANIFEST_LIST)),
            DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Err(schema1()),
            other => Err(Error::new(
                Status::Unsupported,
                format!("unsupported manifest media type {other:?}"),
            )),
        };
    }
    match probe.schema_version {
        Some(1) => return Err(schema1()),
        Some(2) => {}
        Some(v) => {
            return Err(Error::new(
                Status::Unsupported,
                format!("unsupported manifest schemaVersion {v}"),
            ))
        }
        None => return Err(Error::new(malformed, "manifest has no schemaVersion")),
    }
    if probe.manifests.is_some() {
        Ok(Kind::Index(OCI_INDEX))
    } else if probe.config.is_some() {
        Ok(Kind::Manifest(OCI_MANIFEST))
    } else {
        Err(Error::new(
            malformed,
            "document is neither an image manifest nor an index",
        ))
    }
}

fn schema1() -> Error {
    Error::new(
        Status::Unsupported,
        "Docker schema1 manifests are not supported (the image must be pushed again with a current tool)",
    )
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

pub fn parse_index(bytes: &[u8], malformed: Status) -> Result<Vec<Descriptor>> {
    let doc: IndexDoc = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(malformed, format!("malformed image index: {e}")))?;
    Ok(doc.manifests)
}

/// The index entry for `wanted`; NotFound listing what the index offers.
pub fn choose_from_index<'a>(
    entries: &'a [Descriptor],
    wanted: &Platform,
) -> Result<&'a Descriptor> {
    let platforms: Vec<Option<Platform>> = entries
        .iter()
        .map(|e| e.platform.as_ref().map(PlatformJson::to_platform))
        .collect();
    match platform::choose(wanted, &platforms) {
        Some(i) => Ok(&entries[i]),
        None => {
            // "unknown/unknown" entries are attestations, not images.
            let mut available: Vec<String> = platforms
                .iter()
                .flatten()
                .filter(|p| p.os != "unknown")
                .map(|p| p.to_string())
                .collect();
            available.dedup();
            let available = if available.is_empty() {
                "none".to_string()
            } else {
                available.join(", ")
            };
            Err(Error::not_found(format!(
                "no image for platform {wanted} in the index (available: {available})"
            )))
        }
    }
}

#[derive(Deserialize)]
struct ManifestDoc {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// An image manifest's config and layers, each digest validated.
#[derive(Debug)]
pub struct ParsedManifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

pub fn parse_manifest(bytes: &[u8], malformed: Status) -> Result<ParsedManifest> {
    let doc: ManifestDoc = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(malformed, format!("malformed image manifest: {e}")))?;
    let (_, config_size) = doc.config.checked("config", malformed)?;
    if doc.config.media_type != OCI_CONFIG && doc.config.media_type != DOCKER_CONFIG {
        return Err(Error::new(
            Status::Unsupported,
            format!(
                "config media type {:?} is not a container image config (an OCI artifact?)",
                doc.config.media_type
            ),
        ));
    }
    if config_size > MAX_DOCUMENT_SIZE as u64 {
        return Err(Error::new(
            Status::Unsupported,
            format!(
                "image config of {config_size} bytes exceeds the {MAX_DOCUMENT_SIZE}-byte limit"
            ),
        ));
    }
    for layer in &doc.layers {
        layer.checked("layer", malformed)?;
        if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
            return Err(Error::new(
                Status::Unsupported,
                format!(
                    "layer {} has unsupported media type {:?}",
                    layer.digest, layer.media_type
                ),
            ));
        }
    }
    Ok(ParsedManifest {
        config: doc.config,
        layers: doc.layers,
    })
}

#[derive(Deserialize)]
struct ConfigDoc {
    #[serde(default)]
    created: Option<String>,
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// What a pull needs from the image config.
#[derive(Debug)]
pub struct ParsedConfig {
    pub diff_ids: Vec<String>,
    pub created: Option<String>,
}

pub fn parse_config(bytes: &[u8], malformed: Status) -> Result<ParsedConfig> {
    let doc: ConfigDoc = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(malformed, format!("malformed image config: {e}")))?;
    let rootfs = doc
        .rootfs
        .ok_or_else(|| Error::new(malformed, "image config has no rootfs"))?;
    for diff_id in &rootfs.diff_ids {
        digest::validate(diff_id).map_err(|e| e.context("image config rootfs.diff_ids"))?;
    }
    Ok(ParsedConfig {
        diff_ids: rootfs.diff_ids,
        created: doc.created,
    })
}

/// Checks a whole document against the size limit and, when given, its expected digest;
/// returns its sha256 digest.
pub fn verify_document(bytes: &[u8], expected: Option<&str>, what: &str) -> Result<String> {
    if bytes.len() > MAX_DOCUMENT_SIZE {
        return Err(Error::new(
            Status::Unsupported,
            format!(
                "{what} of {} bytes exceeds the {MAX_DOCUMENT_SIZE}-byte limit",
                bytes.len()
            ),
        ));
    }
    let actual = digest::sha256_digest(bytes);
    if let Some(expected) = expected {
        if actual != expected {
            return Err(Error::new(
                Status::DigestMismatch,
                format!("{what} digest mismatch: expected {expected}, got {actual}"),
            ));
        }
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: Status = Status::Registry;

    fn d(n: u8) -> String {
        digest::sha256_digest(&[n])
    }

    fn index_json() -> String {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d(1), "size": 10,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": d(2), "size": 10,
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
                {"mediaType": OCI_MANIFEST, "digest": d(3), "size": 10,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "digest": d(4), "size": 10,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
            ]
        })
        .to_string()
    }

    #[test]
    fn kinds_are_detected_by_media_type_or_shape() {
        assert_eq!(
            detect_kind(index_json().as_bytes(), BAD).unwrap(),
            Kind::Index(OCI_INDEX)
        );
        let list =
            format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[]}}"#);
        assert_eq!(
            detect_kind(list.as_bytes(), BAD).unwrap(),
            Kind::Index(DOCKER_MANIFEST_LIST)
        );
        let docker =
            format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{}}}}"#);
        assert_eq!(
            detect_kind(docker.as_bytes(), BAD).unwrap(),
            Kind::Manifest(DOCKER_MANIFEST)
        );
        // OCI documents may omit mediaType.
        assert_eq!(
            detect_kind(br#"{"schemaVersion":2,"manifests":[]}"#, BAD).unwrap(),
            Kind::Index(OCI_INDEX)
        );
        assert_eq!(
            detect_kind(br#"{"schemaVersion":2,"config":{},"layers":[]}"#, BAD).unwrap(),
            Kind::Manifest(OCI_MANIFEST)
        );
    }

    #[test]
    fn schema1_and_unknown_documents_are_refused() {
        let e = detect_kind(br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#, BAD).unwrap_err();
        assert_eq!(e.status, Status::Unsupported);
        assert!(e.message.contains("schema1"));
        let signed = format!(r#"{{"schemaVersion":1,"mediaType":"{DOCKER_SCHEMA1_SIGNED}"}}"#);
        assert_eq!(
            detect_kind(signed.as_bytes(), BAD).unwrap_err().status,
            Status::Unsupported
        );
        let helm = br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart"}"#;
        assert_eq!(
            detect_kind(helm, BAD).unwrap_err().status,
            Status::Unsupported
        );
        assert_eq!(detect_kind(b"not json", BAD).unwrap_err().status, BAD);
        assert_eq!(
            detect_kind(b"{}", Status::InvalidArgument)
                .unwrap_err()
                .status,
            Status::InvalidArgument
        );
        assert_eq!(
            detect_kind(br#"{"schemaVersion":2}"#, BAD)
                .unwrap_err()
                .status,
            BAD
        );
    }

    #[test]
    fn platform_is_chosen_from_an_index() {
        let entries = parse_index(index_json().as_bytes(), BAD).unwrap();
        let pick = |s: &str| {
            choose_from_index(&entries, &Platform::parse(s).unwrap()).map(|e| e.digest.clone())
        };
        assert_eq!(pick("linux/amd64").unwrap(), d(1));
        assert_eq!(pick("linux/arm/v7").unwrap(), d(2));
        assert_eq!(pick("linux/arm64").unwrap(), d(3));
        assert_eq!(pick("linux/arm64/v8").unwrap(), d(3));
        let e = pick("linux/s390x").unwrap_err();
        assert_eq!(e.status, Status::NotFound);
        assert!(
            e.message.contains("linux/s390x")
                && e.message
                    .contains("(available: linux/amd64, linux/arm/v7, linux/arm64/v8)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn manifests_are_checked() {
        let layer = |mt: &str, digest: &str, size: i64| serde_json::json!({"mediaType": mt, "digest": digest, "size": size});
        let manifest = |config_type: &str, config_size: i64, layers: Vec<serde_json::Value>| {
            serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": config_type, "digest": d(9), "size": config_size},
                "layers": layers,
            })
            .to_string()
        };
        let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        let ok = manifest(
            OCI_CONFIG,
            100,
            vec![layer(gz, &d(1), 5), layer(gz, &d(2), 0)],
        );
        let parsed = parse_manifest(ok.as_bytes(), BAD).unwrap();
        assert_eq!(parsed.layers.len(), 2);
        assert_eq!(parsed.config.digest, d(9));

        let bad_digest = manifest(OCI_CONFIG, 100, vec![layer(gz, "sha256:../../x", 5)]);
        assert_eq!(
            parse_manifest(bad_digest.as_bytes(), BAD)
                .unwrap_err()
                .status,
            Status::InvalidArgument
        );
        let negative = manifest(OCI_CONFIG, 100, vec![layer(gz, &d(1), -1)]);
        assert_eq!(
            parse_manifest(negative.as_bytes(), BAD).unwrap_err().status,
            BAD
        );
        let artifact = manifest("application/vnd.cncf.helm.config.v1+json", 100, vec![]);
        assert_eq!(
            parse_manifest(artifact.as_bytes(), BAD).unwrap_err().status,
            Status::Unsupported
        );
        let huge_config = manifest(OCI_CONFIG, 5 << 20, vec![]);
        assert_eq!(
            parse_manifest(huge_config.as_bytes(), BAD)
                .unwrap_err()
                .status,
            Status::Unsupported
        );
        let odd_layer = manifest(OCI_CONFIG, 100, vec![layer("application/x-foo", &d(1), 5)]);
        assert_eq!(
            parse_manifest(odd_layer.as_bytes(), BAD)
                .unwrap_err()
                .status,
            Status::Unsupported
        );
    }

    #[test]
    fn configs_are_checked() {
        let config = format!(
            r#"{{"created":"2024-01-01T00:00:00Z","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            d(1),
            d(2)
        );
        let parsed = parse_config(config.as_bytes(), BAD).unwrap();
        assert_eq!(parsed.diff_ids, vec![d(1), d(2)]);
        assert_eq!(parsed.created.as_deref(), Some("2024-01-01T00:00:00Z"));
        let no_created = format!(r#"{{"created":null,"rootfs":{{"diff_ids":["{}"]}}}}"#, d(1));
        assert_eq!(
            parse_config(no_created.as_bytes(), BAD).unwrap().created,
            None
        );
        assert_eq!(parse_config(b"{}", BAD).unwrap_err().status, BAD);
        let bad = r#"{"rootfs":{"diff_ids":["sha256:zz"]}}"#;
        assert_eq!(
            parse_config(bad.as_bytes(), BAD).unwrap_err().status,
            Status::InvalidArgument
        );
    }

    #[test]
    fn document_digests_and_sizes_are_verified() {
        let doc = b"{\"schemaVersion\":2}";
        let digest = digest::sha256_digest(doc);
        assert_eq!(
            verify_document(doc, Some(&digest), "manifest").unwrap(),
            digest
        );
        assert_eq!(verify_document(doc, None, "manifest").unwrap(), digest);
        let e = verify_document(doc, Some(&d(1)), "manifest").unwrap_err();
        assert_eq!(e.status, Status::DigestMismatch);
        assert!(
            e.message.contains(&d(1)) && e.message.contains(&digest),
            "{}",
            e.message
        );
        let big = vec![b' '; MAX_DOCUMENT_SIZE + 1];
        assert_eq!(
            verify_document(&big, None, "manifest").unwrap_err().status,
            Status::Unsupported
        );
    }
}
