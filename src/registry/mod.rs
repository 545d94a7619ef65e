//! Image sources: where a pull reads an image from. Parses references, reads registries
//! (over reqwest, see `http`) and OCI layouts, picks the platform, verifies every document
//! against its digest and streams layer blobs with verification.
//!
//! Flow for a pull: `parse_reference` → `Source::open` → `top_digest` (warm check) →
//! `resolve` (manifest, config, layer list) → `blob` for each layer.

pub mod access;
mod connect;
mod docker;
mod http;
mod layout;
pub mod manifest;
mod platform;
mod reference;
pub mod resolve;
pub mod retry;
mod verify;

pub use access::{AccessContext, AccessOptions};
pub use connect::Connection;
pub use docker::RegistrySource;
pub use layout::LayoutSource;
pub use platform::Platform;
pub use reference::{
    is_valid_repository, is_valid_tag, parse_reference, DockerRef, LayoutRef, Reference,
};
pub use resolve::has_registry;

use crate::digest;
use crate::error::{Error, Result, Status};
use futures_util::StreamExt;
use manifest::Kind;

/// How to reach the source and what to pick from it.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// false: accept any certificate, and fall back to plain HTTP (as containers/image does).
    pub tls_verify: bool,
    /// The platform chosen from an image index.
    pub platform: Platform,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            tls_verify: true,
            platform: Platform::host(),
        }
    }
}

/// A blob as a manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDesc {
    pub digest: String,
    pub size: i64,
    pub media_type: String,
}

/// Everything a pull needs to know before fetching layers; all of it verified.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The image manifest's bytes as served.
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    /// The index or manifest list we came through: (bytes, digest).
    pub index: Option<(Vec<u8>, String)>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<BlobDesc>,
    /// The config's rootfs.diff_ids, one per layer.
    pub diff_ids: Vec<String>,
    /// The config's `created` timestamp.
    pub created: Option<String>,
}

pub type BlobStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes>> + Send>>;

/// An opened image source.
pub enum Source {
    Registry(RegistrySource, SourceContext),
    Layout(LayoutSource, SourceContext),
}

/// What every source keeps about its reference.
pub struct SourceContext {
    /// The transport form of the reference, for messages and error subjects.
    name: String,
    pinned_digest: Option<String>,
    platform: Platform,
    /// Where the credentials presented to the registry came from; None: anonymous.
    credential_source: Option<String>,
    /// Retries, stall limit and cancellation for every request (`set_request_policy`).
    requests: retry::RequestPolicy,
}

impl Source {
    /// Opens `reference`: anonymously, TLS per `opts.tls_verify` with the system roots.
    pub async fn open(reference: &Reference, opts: &SourceOptions) -> Result<Source> {
        Source::open_at(reference, opts, &Connection::anonymous(opts.tls_verify)).await
    }

    /// Opens `reference`, reaching a registry as `connection` says (TLS files, insecure,
    /// credentials); `opts.tls_verify` is then not used.
    pub async fn open_at(
        reference: &Reference,
        opts: &SourceOptions,
        connection: &Connection,
    ) -> Result<Source> {
        let context = SourceContext {
            name: reference.to_string(),
            pinned_digest: match reference {
                Reference::Docker(r) => r.digest.clone(),
                Reference::Layout(_) => None,
            },
            platform: opts.platform.clone(),
            credential_source: connection.credential.as_ref().map(|f| f.source.clone()),
            requests: retry::RequestPolicy::default(),
        };
        let opened = match reference {
            Reference::Docker(r) => RegistrySource::open(r, connection)
                .await
                .map(|s| Source::Registry(s, context)),
            Reference::Layout(r) => LayoutSource::open(r).map(|s| Source::Layout(s, context)),
        };
        opened.map_err(|e| annotate(e, &reference.to_string(), "opening"))
    }

    fn context(&self) -> &SourceContext {
        match self {
            Source::Registry(_, c) | Source::Layout(_, c) => c,
        }
    }

    /// How this source's requests retry, time out and get cancelled (default: 4 retries,
    /// 30 s stall limit, never cancelled).
    pub fn set_request_policy(&mut self, policy: retry::RequestPolicy) {
        match self {
            Source::Registry(_, c) | Source::Layout(_, c) => c.requests = policy,
        }
    }

    /// The repository's tags (registry), or the layout's image names.
    pub async fn tags(&self) -> Result<Vec<String>> {
        let result = match self {
            Source::Registry(s, c) => s.tags(&c.requests).await,
            Source::Layout(s, _) => s.names(),
        };
        result.map_err(|e| annotate(e, self.name(), "listing the tags of"))
    }

    /// The reference in transport form.
    pub fn name(&self) -> &str {
        &self.context().name
    }

    /// Where the credentials presented came from; None: anonymous.
    pub fn credential_source(&self) -> Option<&str> {
        self.context().credential_source.as_deref()
    }

    /// Documents that do not parse are the registry's fault, or the caller's for a layout.
    fn malformed(&self) -> Status {
        match self {
            Source::Registry(..) => Status::Registry,
            Source::Layout(..) => Status::InvalidArgument,
        }
    }

    /// Digest of what the reference points at now (index or manifest); a HEAD request for
    /// registry tags, no request at all for digest references.
    pub async fn top_digest(&self) -> Result<String> {
        let result = match self {
            Source::Registry(s, c) => s.top_digest(&c.requests).await,
            Source::Layout(s, _) => s.top_descriptor().map(|d| d.digest),
        };
        result.map_err(|e| annotate(e, self.name(), "looking up the digest of"))
    }

    /// Manifest (through an index if needed), then config, all verified.
    pub async fn resolve(&self) -> Result<ResolvedImage> {
        self.resolve_unannotated()
            .await
            .map_err(|e| annotate(e, self.name(), "resolving"))
    }

    async fn resolve_unannotated(&self) -> Result<ResolvedImage> {
        let malformed = self.malformed();
        let (top, top_digest) = self.top_document().await?;
        let (manifest, manifest_digest, media_type, index) = match manifest::detect_kind(
            &top, malformed,
        )? {
            Kind::Manifest(media_type) => (top, top_digest, media_type, None),
            Kind::Index(_) => {
                let entries = manifest::parse_index(&top, malformed)?;
                let entry = manifest::choose_from_index(&entries, &self.context().platform)?;
                let (entry_digest, entry_size) = entry.checked("index entry", malformed)?;
                let bytes = self.document(entry_digest, entry_size).await?;
                manifest::verify_document(&bytes, Some(entry_digest), "manifest")?;
                let media_type = match manifest::detect_kind(&bytes, malformed)? {
                    Kind::Manifest(media_type) => media_type,
                    Kind::Index(_) => {
                        return Err(Error::new(
                            Status::Unsupported,
                            format!("index entry {entry_digest} is itself an index (nested indexes are not supported)"),
                        ))
                    }
                };
                (
                    bytes,
                    entry_digest.to_string(),
                    media_type,
                    Some((top, top_digest)),
                )
            }
        };
        let parsed = manifest::parse_manifest(&manifest, malformed)?;

        let config_desc = blob_desc(&parsed.config);
        let config = self
            .read_small_blob(&config_desc)
            .await
            .map_err(|e| e.context("reading the image config"))?;
        let config_info = manifest::parse_config(&config, malformed)?;
        if config_info.diff_ids.len() != parsed.layers.len() {
            return Err(Error::new(
                malformed,
                format!(
                    "the manifest lists {} layers but the config has {} rootfs.diff_ids",
                    parsed.layers.len(),
                    config_info.diff_ids.len()
                ),
            ));
        }
        Ok(ResolvedImage {
            manifest,
            manifest_digest,
            manifest_media_type: media_type.to_string(),
            index,
            config,
            config_digest: parsed.config.digest.clone(),
            layers: parsed.layers.iter().map(blob_desc).collect(),
            diff_ids: config_info.diff_ids,
            created: config_info.created,
        })
    }

    /// The document the reference points at, verified, with its digest.
    async fn top_document(&self) -> Result<(Vec<u8>, String)> {
        match self {
            Source::Registry(s, context) => {
                let bytes = s.manifest(None, None, &context.requests).await?;
                let digest = manifest::verify_document(
                    &bytes,
                    context.pinned_digest.as_deref(),
                    "manifest",
                )?;
                Ok((bytes, digest))
            }
            Source::Layout(s, _) => {
                let descriptor = s.top_descriptor()?;
                let bytes = s.document(&descriptor.digest)?;
                let digest =
                    manifest::verify_document(&bytes, Some(&descriptor.digest), "manifest")?;
                Ok((bytes, digest))
            }
        }
    }

    /// A manifest by digest, unverified; `size` is what the index entry says.
    async fn document(&self, digest_str: &str, size: u64) -> Result<Vec<u8>> {
        match self {
            Source::Registry(s, c) => s.manifest(Some(digest_str), Some(size), &c.requests).await,
            Source::Layout(s, _) => s.document(digest_str),
        }
    }

    async fn read_small_blob(&self, desc: &BlobDesc) -> Result<Vec<u8>> {
        if desc.size > manifest::MAX_DOCUMENT_SIZE as i64 {
            return Err(Error::new(
                Status::Unsupported,
                format!(
                    "blob {} of {} bytes exceeds the {}-byte limit",
                    desc.digest,
                    desc.size,
                    manifest::MAX_DOCUMENT_SIZE
                ),
            ));
        }
        let mut stream = self.blob_unannotated(desc).await?;
        let mut bytes = Vec::with_capacity(desc.size.max(0) as usize);
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    /// A stream of the blob that yields at most `desc.size` bytes and ends with an error
    /// item when size or sha256 do not match (DigestMismatch) or the body is short (Io or
    /// Network).
    pub async fn blob(&self, desc: &BlobDesc) -> Result<BlobStream> {
        self.blob_unannotated(desc).await.map_err(|e| {
            annotate(
                e,
                self.name(),
                &format!("fetching blob {} from", desc.digest),
            )
        })
    }

    async fn blob_unannotated(&self, desc: &BlobDesc) -> Result<BlobStream> {
        digest::validate(&desc.digest)?;
        let size = u64::try_from(desc.size).map_err(|_| {
            Error::invalid(format!(
                "blob {} has a negative size {}",
                desc.digest, desc.size
            ))
        })?;
        let raw = match self {
            Source::Registry(s, c) => {
                s.blob(&desc.digest, size, &desc.media_type, &c.requests)
                    .await?
            }
            Source::Layout(s, _) => s.blob(&desc.digest)?,
        };
        Ok(Box::pin(verify::VerifiedStream::new(
            raw,
            &desc.digest,
            size,
            self.name(),
        )))
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Source::Registry(..) => "Registry",
            Source::Layout(..) => "Layout",
        };
        f.debug_struct("Source")
            .field("kind", &kind)
            .field("name", &self.name())
            .finish()
    }
}

fn blob_desc(d: &manifest::Descriptor) -> BlobDesc {
    BlobDesc {
        digest: d.digest.clone(),
        size: d.size,
        media_type: d.media_type.clone(),
    }
}

/// Names the reference in the message (once, as "<doing> <name>: cause") and as the subject.
fn annotate(error: Error, name: &str, doing: &str) -> Error {
    let error = if error.message.contains(name) {
        error
    } else {
        error.context(format!("{doing} {name}"))
    };
    error.with_subject(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_digest;
    use std::path::Path;

    const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    fn write_blob(dir: &Path, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), data).unwrap();
        digest
    }

    /// A layout with one image per platform behind an index tagged "multi", plus the
    /// amd64 image tagged "single". Returns (manifest digests, index digest).
    fn make_layout(dir: &Path) -> (Vec<String>, String) {
        let mut manifests = Vec::new();
        let mut entries = Vec::new();
        for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
            let layer = format!("layer for {arch}").into_bytes();
            let layer_digest = write_blob(dir, &layer);
            let config = serde_json::json!({
                "architecture": arch, "os": "linux", "created": "2024-05-06T07:08:09Z",
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(b"uncompressed")]},
            })
            .to_string();
            let config_digest = write_blob(dir, config.as_bytes());
            let manifest = serde_json::json!({
                "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
                "config": {"mediaType": manifest::OCI_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": [{"mediaType": GZ, "digest": layer_digest, "size": layer.len()}],
            })
            .to_string();
            let digest = write_blob(dir, manifest.as_bytes());
            let mut platform = serde_json::json!({"os": "linux", "architecture": arch});
            if let Some(v) = variant {
                platform["variant"] = v.into();
            }
            entries.push(serde_json::json!({
                "mediaType": manifest::OCI_MANIFEST, "digest": digest, "size": manifest.len(), "platform": platform,
            }));
            manifests.push((digest, manifest.len()));
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": entries})
            .to_string();
        let index_digest = write_blob(dir, index.as_bytes());
        let top = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": manifest::OCI_INDEX, "digest": index_digest, "size": index.len(),
             "annotations": {"org.opencontainers.image.ref.name": "multi"}},
            {"mediaType": manifest::OCI_MANIFEST, "digest": manifests[0].0, "size": manifests[0].1,
             "annotations": {"org.opencontainers.image.ref.name": "single"}},
        ]});
        std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        (manifests.into_iter().map(|m| m.0).collect(), index_digest)
    }

    async fn open(dir: &Path, tag: &str, platform: &str) -> Result<Source> {
        let reference = parse_reference(&format!("oci:{}:{tag}", dir.display())).unwrap();
        let opts = SourceOptions {
            tls_verify: true,
            platform: Platform::parse(platform).unwrap(),
        };
        Source::open(&reference, &opts).await
    }

    async fn collect(stream: BlobStream) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let items: Vec<Result<bytes::Bytes>> = stream.collect().await;
        for item in items {
            out.extend_from_slice(&item?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn layout_index_is_resolved_per_platform() {
        let tmp = tempfile::tempdir().unwrap();
        let (manifests, index_digest) = make_layout(tmp.path());
        let source = open(tmp.path(), "multi", "linux/arm64").await.unwrap();
        assert_eq!(source.top_digest().await.unwrap(), index_digest);
        let image = source.resolve().await.unwrap();
        assert_eq!(image.manifest_digest, manifests[1]);
        assert_eq!(image.manifest_media_type, manifest::OCI_MANIFEST);
        assert_eq!(
            image.index.as_ref().map(|i| i.1.as_str()),
            Some(index_digest.as_str())
        );
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.diff_ids, vec![sha256_digest(b"uncompressed")]);
        assert_eq!(image.created.as_deref(), Some("2024-05-06T07:08:09Z"));
        assert_eq!(sha256_digest(&image.config), image.config_digest);
        let layer = collect(source.blob(&image.layers[0]).await.unwrap())
            .await
            .unwrap();
        assert_eq!(layer, b"layer for arm64");

        let source = open(tmp.path(), "multi", "linux/s390x").await.unwrap();
        let e = source.resolve().await.unwrap_err();
        assert_eq!(e.status, Status::NotFound);
        assert!(
            e.message.contains("linux/amd64, linux/arm64/v8"),
            "{}",
            e.message
        );
        assert!(e.subject.as_deref().unwrap().starts_with("oci:"));

        let source = open(tmp.path(), "single", "linux/s390x").await.unwrap();
        let image = source.resolve().await.unwrap();
        assert_eq!(image.manifest_digest, manifests[0]);
        assert!(image.index.is_none());
    }

    #[tokio::test]
    async fn layout_tags_are_required_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        make_layout(tmp.path());
        let e = open(tmp.path(), "nope", "linux/amd64").await.unwrap_err();
        assert_eq!(e.status, Status::ManifestUnknown);
        assert!(e.message.contains("multi, single"), "{}", e.message);
        let e = open(tmp.path(), "", "linux/amd64").await.unwrap_err();
        assert_eq!(e.status, Status::InvalidArgument, "{}", e.message);
        let e = open(&tmp.path().join("missing"), "t", "linux/amd64")
            .await
            .unwrap_err();
        assert_eq!(e.status, Status::NotFound, "{}", e.message);
    }

    #[tokio::test]
    async fn corrupted_layout_documents_and_blobs_are_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let (manifests, _) = make_layout(tmp.path());
        let source = open(tmp.path(), "single", "linux/amd64").await.unwrap();
        let image = source.resolve().await.unwrap();

        // A layer blob whose content changed: same length, different bytes.
        let layer = &image.layers[0];
        let layer_path = tmp
            .path()
            .join("blobs/sha256")
            .join(layer.digest.trim_start_matches("sha256:"));
        std::fs::write(&layer_path, b"LAYER FOR amd64").unwrap();
        let e = collect(source.blob(layer).await.unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.status, Status::DigestMismatch, "{}", e.message);
        // Truncated.
        std::fs::write(&layer_path, b"layer").unwrap();
        assert_eq!(
            collect(source.blob(layer).await.unwrap())
                .await
                .unwrap_err()
                .status,
            Status::Io
        );
        // A digest that is no digest never becomes a path.
        let bad = BlobDesc {
            digest: "sha256:../../index.json".into(),
            size: 1,
            media_type: GZ.into(),
        };
        assert_eq!(
            source.blob(&bad).await.err().unwrap().status,
            Status::InvalidArgument
        );

        // The manifest itself changed.
        let manifest_path = tmp
            .path()
            .join("blobs/sha256")
            .join(manifests[0].trim_start_matches("sha256:"));
        let mut bytes = std::fs::read(&manifest_path).unwrap();
        bytes.push(b' ');
        std::fs::write(&manifest_path, bytes).unwrap();
        let e = source.resolve().await.unwrap_err();
        assert_eq!(e.status, Status::DigestMismatch, "{}", e.message);
        assert!(e.message.contains(&manifests[0]), "{}", e.message);
    }

    #[tokio::test]
    async fn layer_and_diff_id_counts_must_agree() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": []}}).to_string();
        let config_digest = write_blob(dir, config.as_bytes());
        let layer_digest = write_blob(dir, b"x");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": manifest::OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": GZ, "digest": layer_digest, "size": 1}],
        })
        .to_string();
        let digest = write_blob(dir, manifest.as_bytes());
        let top = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": manifest::OCI_MANIFEST, "digest": digest, "size": manifest.len()}]});
        std::fs::write(dir.join("index.json"), top.to_string()).unwrap();
        // No tag: the only image.
        let reference = parse_reference(&format!("oci:{}", dir.display())).unwrap();
        let source = Source::open(&reference, &SourceOptions::default())
            .await
            .unwrap();
        let e = source.resolve().await.unwrap_err();
        assert_eq!(e.status, Status::InvalidArgument);
        assert!(
            e.message.contains("1 layers but the config has 0"),
            "{}",
            e.message
        );
    }
}
