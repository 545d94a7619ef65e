//! Looking at an image or a repository without pulling: the manifest, config and digests of a
//! reference, and a repository's tags. Same sources, retries, stall limit, deadline and
//! cancellation as a pull; nothing touches a store.

use crate::error::Result;
use crate::pull::{open_source, with_deadline, ProgressSink, PullOptions};
use crate::registry::{self, Reference};
use crate::runtime::CancelFlag;
use serde_json::{json, Value};

/// What `cimagectl inspect` prints: digests, platform, labels and layers, plus the manifest
/// and config documents themselves.
pub async fn inspect(
    reference: &str,
    opts: &PullOptions,
    progress: ProgressSink,
    cancel: CancelFlag,
) -> Result<Value> {
    let parsed = registry::parse_reference(reference)?;
    with_deadline(
        opts.deadline,
        &cancel,
        "the inspection",
        |cancel| async move {
            let source = open_source(&parsed, opts, &progress, &cancel).await?;
            let image = tokio::select! {
                r = source.resolve() => r?,
                _ = cancel.cancelled() => return Err(crate::Error::cancelled()),
            };
            // Both were verified and parsed by resolve(); a document that is not JSON cannot
            // get here, so Null is only a fallback.
            let manifest_doc: Value =
                serde_json::from_slice(&image.manifest).unwrap_or(Value::Null);
            let config: Value = serde_json::from_slice(&image.config).unwrap_or(Value::Null);
            let layers: Vec<Value> = image
                .layers
                .iter()
                .map(|l| json!({"digest": l.digest, "size": l.size, "media_type": l.media_type}))
                .collect();
            let field = |name: &str| config.get(name).cloned().unwrap_or(Value::Null);
            let inner = |name: &str| {
                config
                    .get("config")
                    .and_then(|c| c.get(name))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            Ok(json!({
                "reference": parsed.to_string(),
                "name": repository_name(&parsed),
                "digest": image.manifest_digest,
                "media_type": image.manifest_media_type,
                "index_digest": image.index.as_ref().map(|(_, d)| d.clone()),
                "config_digest": image.config_digest,
                "created": image.created,
                "os": field("os"),
                "architecture": field("architecture"),
                "variant": field("variant"),
                "labels": inner("Labels"),
                "env": inner("Env"),
                "layers": layers,
                "manifest": manifest_doc,
                "config": config,
            }))
        },
    )
    .await
}

/// `{"name": REPO, "tags": [...]}`; for an OCI layout, its image names.
pub async fn list_tags(
    reference: &str,
    opts: &PullOptions,
    progress: ProgressSink,
    cancel: CancelFlag,
) -> Result<Value> {
    let parsed = registry::parse_reference(reference)?;
    with_deadline(
        opts.deadline,
        &cancel,
        "listing tags",
        |cancel| async move {
            let source = open_source(&parsed, opts, &progress, &cancel).await?;
            let tags = tokio::select! {
                r = source.tags() => r?,
                _ = cancel.cancelled() => return Err(crate::Error::cancelled()),
            };
            Ok(json!({"name": repository_name(&parsed), "tags": tags}))
        },
    )
    .await
}

/// `registry/repository` for the registry, the directory for a layout.
fn repository_name(reference: &Reference) -> String {
    match reference {
        Reference::Docker(r) => format!("{}/{}", r.registry, r.repository),
        Reference::Layout(l) => l.dir.display().to_string(),
    }
}
