//! OCI image layouts: `DIR/index.json` and `DIR/blobs/<alg>/<hex>`. Paths are only ever
//! built from validated digests.

use super::manifest::{Descriptor, MAX_DOCUMENT_SIZE};
use super::reference::LayoutRef;
use super::BlobStream;
use crate::digest;
use crate::error::{Error, Result, Status};
use bytes::Bytes;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

/// Chunk size for streaming blobs from disk.
const READ_CHUNK: usize = 1 << 20;

pub struct LayoutSource {
    dir: PathBuf,
    tag: Option<String>,
}

impl LayoutSource {
    pub fn open(reference: &LayoutRef) -> Result<LayoutSource> {
        let source = LayoutSource {
            dir: reference.dir.clone(),
            tag: reference.tag.clone(),
        };
        // Fail early on a missing or unreadable layout; the entry is chosen again when used.
        source.top_descriptor()?;
        Ok(source)
    }

    /// The image names (ref.name annotations) of index.json, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let path = self.dir.join("index.json");
        let bytes = read_limited(&path, "index.json")?;
        let entries = super::manifest::parse_index(&bytes, Status::InvalidArgument)
            .map_err(|e| e.context(path.display()))?;
        let mut names: Vec<String> = entries
            .iter()
            .filter_map(Descriptor::ref_name)
            .map(String::from)
            .collect();
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// The index.json entry the reference names: by ref.name annotation when a tag was
    /// given, else the only entry.
    pub fn top_descriptor(&self) -> Result<Descriptor> {
        let path = self.dir.join("index.json");
        let bytes = read_limited(&path, "index.json")?;
        let entries = super::manifest::parse_index(&bytes, Status::InvalidArgument)
            .map_err(|e| e.context(path.display()))?;
        let chosen = match &self.tag {
            Some(tag) => entries
                .iter()
                .find(|e| e.ref_name() == Some(tag.as_str()))
                .ok_or_else(|| {
                    let mut tags: Vec<&str> =
                        entries.iter().filter_map(Descriptor::ref_name).collect();
                    tags.sort_unstable();
                    let tags = if tags.is_empty() {
                        "none".to_string()
                    } else {
                        tags.join(", ")
                    };
                    Error::new(
                        Status::ManifestUnknown,
                        format!("no image named {tag:?} in the layout (names: {tags})"),
                    )
                })?,
            None => match entries.as_slice() {
                [only] => only,
                [] => {
                    return Err(Error::new(
                        Status::ManifestUnknown,
                        "the layout's index.json lists no images",
                    ))
                }
                several => {
                    return Err(Error::invalid(format!(
                        "the layout holds {} images; name one as oci:DIR:NAME",
                        several.len()
                    )))
                }
            },
        };
        chosen.checked("index.json entry", Status::InvalidArgument)?;
        Ok(chosen.clone())
    }

    fn blob_path(&self, digest_str: &str) -> Result<PathBuf> {
        let hex = digest::validate(digest_str)?;
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }

    /// A whole document (manifest, index, config) by digest; the caller verifies it.
    pub fn document(&self, digest_str: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest_str)?;
        read_limited(&path, digest_str)
    }

    /// The blob's bytes, unverified (the caller wraps them in a VerifiedStream).
    pub fn blob(&self, digest_str: &str) -> Result<BlobStream> {
        let path = self.blob_path(digest_str)?;
        let file =
            File::open(&path).map_err(|e| Error::io(e, format!("opening {}", path.display())))?;
        // Reads block: each chunk is read on tokio's blocking pool.
        let stream = futures_util::stream::unfold(Some((file, path)), |state| async move {
            let (mut file, path) = state?;
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; READ_CHUNK];
                let n = file.read(&mut buf);
                (file, buf, n)
            })
            .await;
            match read {
                Ok((file, mut buf, Ok(n))) if n > 0 => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some((file, path))))
                }
                Ok((_, _, Ok(_))) => None,
                Ok((_, _, Err(e))) => Some((
                    Err(Error::io(e, format!("reading {}", path.display()))),
                    None,
                )),
                Err(join) => Some((
                    Err(Error::internal(format!("blob reader task failed: {join}"))),
                    None,
                )),
            }
        });
        Ok(Box::pin(stream))
    }
}

/// Reads a small file whole, refusing anything over the document limit before reading.
fn read_limited(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io(e, format!("opening {}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(e, format!("reading {}", path.display())))?;
    if bytes.len() > MAX_DOCUMENT_SIZE {
        return Err(Error::new(
            Status::Unsupported,
            format!(
                "{what} ({}) exceeds the {MAX_DOCUMENT_SIZE}-byte limit",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}
