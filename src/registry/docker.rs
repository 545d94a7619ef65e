//! Registry access: manifests as raw bytes (read up to the 4 MiB document limit), blobs as
//! streams resumed across broken connections, tag lists; every request through `http` (one
//! client and probe per registry per process, bearer tokens, client certificates) and retried
//! as the request policy says, Retry-After included.

use super::connect::Connection;
use super::http::{self, Op, Session};
use super::manifest::{self, ACCEPTED_MANIFEST_TYPES, MAX_DOCUMENT_SIZE};
use super::reference::DockerRef;
use super::retry::{stalled, Failure, RequestPolicy, RetryNotice};
use super::BlobStream;
use crate::digest;
use crate::error::{Error, Result, Status};
use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use std::sync::Arc;

/// An image in a registry.
pub struct RegistrySource {
    session: Arc<Session>,
    repository: String,
    /// The tag, or the digest, the reference names.
    reference: String,
    pinned: bool,
}

impl RegistrySource {
    /// Opens the image at `reference`, reached as `connection` says (TLS, credentials): the
    /// registry is probed (once per process) and credentials checked where possible.
    pub async fn open(reference: &DockerRef, connection: &Connection) -> Result<RegistrySource> {
        let (tag_or_digest, pinned) = match &reference.digest {
            Some(d) => {
                digest::validate(d)?;
                (d.clone(), true)
            }
            None => (
                reference
                    .tag
                    .clone()
                    .unwrap_or_else(|| "latest".to_string()),
                false,
            ),
        };
        let session =
            super::connect::connect(&reference.registry, &reference.repository, connection).await?;
        Ok(RegistrySource {
            session: Arc::new(session),
            repository: reference.repository.clone(),
            reference: tag_or_digest,
            pinned,
        })
    }

    fn manifest_path(&self, reference: &str) -> String {
        format!("/v2/{}/manifests/{reference}", self.repository)
    }

    /// The digest the reference points at: the pinned digest, else a HEAD for the tag (a GET,
    /// hashed, when the registry sends no Docker-Content-Digest).
    pub async fn top_digest(&self, policy: &RequestPolicy) -> Result<String> {
        if self.pinned {
            return Ok(self.reference.clone());
        }
        let path = self.manifest_path(&self.reference);
        let announced = policy
            .run_hinted("HEAD manifest", "", || async {
                let response = self
                    .session
                    .send(
                        Method::HEAD,
                        &path,
                        http::accept(ACCEPTED_MANIFEST_TYPES),
                        Op::Manifest,
                    )
                    .await?;
                Ok(content_digest(&response))
            })
            .await?;
        let d = match announced {
            Some(d) => d,
            None => digest::sha256_digest(&self.manifest(None, None, policy).await?),
        };
        digest::validate(&d).map_err(|e| e.context("registry's Docker-Content-Digest"))?;
        Ok(d)
    }

    /// The raw manifest or index the reference points at (`digest` None) or the one with
    /// that digest. The caller verifies it. `expected_size` (from the index entry that
    /// names it) lets an oversized manifest be refused before any request; any other is read
    /// only up to the 4 MiB limit.
    pub async fn manifest(
        &self,
        digest: Option<&str>,
        expected_size: Option<u64>,
        policy: &RequestPolicy,
    ) -> Result<Vec<u8>> {
        let reference = match digest {
            Some(d) => {
                digest::validate(d)?;
                d
            }
            None => self.reference.as_str(),
        };
        if let Some(size) = expected_size {
            check_document_size(size, "manifest")?;
        }
        let path = self.manifest_path(reference);
        policy
            .run_hinted("GET manifest", digest.unwrap_or(""), || async {
                let response = self
                    .session
                    .send(
                        Method::GET,
                        &path,
                        http::accept(ACCEPTED_MANIFEST_TYPES),
                        Op::Manifest,
                    )
                    .await?;
                // A registry that names the digest of what it sends must send those bytes:
                // checked here for a tag (a digest is checked by the caller as well).
                let announced = content_digest(&response);
                let bytes = http::read_limited(response, MAX_DOCUMENT_SIZE, "manifest").await?;
                if let Some(announced) = announced.as_deref().or(digest) {
                    if announced.starts_with("sha256:") {
                        manifest::verify_document(&bytes, Some(announced), "manifest")?;
                    }
                }
                Ok(bytes)
            })
            .await
    }

    /// The repository's tags, following pagination (`n` and `last`) until a page adds nothing.
    pub async fn tags(&self, policy: &RequestPolicy) -> Result<Vec<String>> {
        const PAGE: usize = 1000;
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut last: Option<String> = None;
        // A registry that ignores `last` would loop forever; 10 000 pages is plenty.
        for _ in 0..10_000 {
            let mut query = reqwest::Url::parse("http://q/")
                .map_err(|e| Error::internal(format!("query encoder: {e}")))?;
            query.query_pairs_mut().append_pair("n", &PAGE.to_string());
            if let Some(l) = &last {
                query.query_pairs_mut().append_pair("last", l);
            }
            let path = format!(
                "/v2/{}/tags/list?{}",
                self.repository,
                query.query().unwrap_or_default()
            );
            let body = policy
                .run_hinted("GET tags", "", || async {
                    let response = self
                        .session
                        .send(Method::GET, &path, HeaderMap::new(), Op::Manifest)
                        .await?;
                    http::read_limited(response, MAX_DOCUMENT_SIZE, "tag list").await
                })
                .await?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| {
                Error::new(
                    Status::Registry,
                    format!("the registry's tag list is malformed: {e}"),
                )
            })?;
            let before = tags.len();
            for tag in page.tags.unwrap_or_default() {
                if seen.insert(tag.clone()) {
                    tags.push(tag);
                }
            }
            if tags.len() == before || tags.len() - before < PAGE {
                break;
            }
            last = tags.last().cloned();
        }
        Ok(tags)
    }

    /// The blob's body, unverified (the caller wraps it in a VerifiedStream). Transient
    /// failures are retried; a body that breaks off is resumed with a Range request from
    /// where it stopped (or, from a server that ignores Range, read again from the start with
    /// the bytes already seen skipped), so the caller sees one continuous body. Redirects (to
    /// object storage) are followed, without our credentials.
    pub async fn blob(
        &self,
        digest: &str,
        size: u64,
        _media_type: &str,
        policy: &RequestPolicy,
    ) -> Result<BlobStream> {
        digest::validate(digest)?;
        let mut fetch = BlobFetch {
            session: self.session.clone(),
            path: format!("/v2/{}/blobs/{digest}", self.repository),
            digest: digest.to_string(),
            size,
            policy: policy.clone(),
            received: 0,
            body: None,
            skip: 0,
            got_bytes_since_open: false,
            retries_without_progress: 0,
            resumes: 0,
            finished: false,
        };
        // The first request's failure is the caller's error (nothing was streamed yet).
        fetch.open().await?;
        Ok(Box::pin(futures_util::stream::unfold(
            fetch,
            |mut f| async move { f.next_chunk().await.map(|item| (item, f)) },
        )))
    }
}

/// containers/image's limit for manifests and configs.
fn check_document_size(size: u64, what: &str) -> Result<()> {
    let limit = super::manifest::MAX_DOCUMENT_SIZE as u64;
    if size > limit {
        return Err(Error::new(
            Status::Registry,
            format!("the {what} is {size} bytes, more than the {limit}-byte limit for documents"),
        ));
    }
    Ok(())
}

/// More resumes than this for one blob means the connection is hopeless.
const MAX_RESUMES: u32 = 32;

type Body = futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>;

/// One blob download across however many requests it takes.
struct BlobFetch {
    session: Arc<Session>,
    path: String,
    digest: String,
    size: u64,
    policy: RequestPolicy,
    /// Bytes handed to the caller so far.
    received: u64,
    body: Option<Body>,
    /// Bytes still to drop from the start of the current body (a server that ignored Range).
    skip: u64,
    got_bytes_since_open: bool,
    retries_without_progress: u32,
    resumes: u32,
    finished: bool,
}

impl BlobFetch {
    /// Opens the body at `received` (retrying transient failures).
    async fn open(&mut self) -> Result<()> {
        let offset = self.received;
        let digest = self.digest.clone();
        let what = format!("GET blob {digest}");
        let (size, session, path) = (self.size, self.session.clone(), self.path.clone());
        let (body, skip) = self
            .policy
            .run_hinted(&what, &digest, || {
                let (session, path, digest) = (session.clone(), path.clone(), digest.clone());
                async move {
                    let mut headers = HeaderMap::new();
                    if offset > 0 {
                        if let Ok(v) = HeaderValue::from_str(&format!("bytes={offset}-")) {
                            headers.insert(header::RANGE, v);
                        }
                    }
                    let response = match session.send(Method::GET, &path, headers, Op::Blob).await {
                        Ok(r) => r,
                        // Nothing after `offset`: the blob is shorter than its descriptor.
                        Err(f) if offset > 0 && f.error.http_status == 416 => {
                            return Err(Failure::from(Error::new(
                                Status::Io,
                                format!(
                                    "blob {digest} ended after {offset} of {size} bytes (the registry has nothing after that: HTTP 416)"
                                ),
                            )))
                        }
                        Err(f) => return Err(f),
                    };
                    let length = response.content_length();
                    let partial = response.status() == StatusCode::PARTIAL_CONTENT;
                    if offset > 0 && partial {
                        if let Some(length) = length {
                            if length != size - offset {
                                return Err(Failure::from(Error::new(
                                    Status::Registry,
                                    format!(
                                        "asked for blob {digest} from byte {offset}, got {length} bytes of the {} remaining",
                                        size - offset
                                    ),
                                )));
                            }
                        }
                        return Ok((response.bytes_stream().boxed(), 0));
                    }
                    // 200: the whole blob (also the answer of a server that ignores Range).
                    check_length(length, size, &digest)?;
                    Ok((response.bytes_stream().boxed(), offset))
                }
            })
            .await?;
        self.body = Some(body);
        self.skip = skip;
        self.got_bytes_since_open = false;
        Ok(())
    }

    async fn next_chunk(&mut self) -> Option<Result<bytes::Bytes>> {
        loop {
            if self.finished {
                return None;
            }
            if self.body.is_none() {
                if let Err(e) = self.open().await {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
            let body = self.body.as_mut()?;
            let stall = self.policy.stall;
            let item = tokio::select! {
                r = tokio::time::timeout(stall, body.next()) => r,
                _ = self.policy.cancel.cancelled() => {
                    self.finished = true;
                    return Some(Err(Error::cancelled()));
                }
            };
            let failure = match item {
                Ok(Some(Ok(mut chunk))) => {
                    if self.skip > 0 {
                        let drop = self.skip.min(chunk.len() as u64) as usize;
                        self.skip -= drop as u64;
                        let _ = chunk.split_to(drop);
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    self.received += chunk.len() as u64;
                    self.got_bytes_since_open = true;
                    self.retries_without_progress = 0;
                    return Some(Ok(chunk));
                }
                Ok(Some(Err(e))) => http::map_reqwest(&e).context(format!(
                    "the body of blob {} broke off after {} of {} bytes",
                    self.digest, self.received, self.size
                )),
                Ok(None) if self.received >= self.size => {
                    self.finished = true;
                    return None;
                }
                Ok(None) => Error::new(
                    Status::Network,
                    format!(
                        "the body of blob {} ended after {} of {} bytes",
                        self.digest, self.received, self.size
                    ),
                ),
                Err(_) => {
                    let e = stalled(&format!("reading blob {}", self.digest), stall);
                    if !self.got_bytes_since_open {
                        // Nothing at all since the request: resuming would only wait again.
                        self.finished = true;
                        return Some(Err(e));
                    }
                    e
                }
            };
            self.body = None;
            let resumable = matches!(
                failure.status,
                Status::Network | Status::Io | Status::Timeout
            ) && self.retries_without_progress < self.policy.retry.max_retries
                && self.resumes < MAX_RESUMES;
            if !resumable {
                self.finished = true;
                return Some(Err(failure));
            }
            let delay = self.policy.retry.delay(self.retries_without_progress);
            self.retries_without_progress += 1;
            self.resumes += 1;
            self.policy.notify(&RetryNotice {
                digest: self.digest.clone(),
                retry: self.resumes,
                delay,
                error: failure.context(format!("resuming at byte {}", self.received)),
            });
            if let Err(e) = self.policy.pause(delay).await {
                self.finished = true;
                return Some(Err(e));
            }
        }
    }
}

/// A Content-Length larger than the descriptor's size is refused before reading the body.
fn check_length(content_length: Option<u64>, size: u64, digest: &str) -> Result<()> {
    match content_length {
        Some(length) if length > size => Err(Error::new(
            Status::DigestMismatch,
            format!("blob {digest} is {length} bytes long, its descriptor says {size}"),
        )),
        _ => Ok(()),
    }
}

/// The digest a registry announces for what it sends (Docker-Content-Digest), if any.
fn content_digest(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_documents_and_blobs_are_refused() {
        assert!(check_document_size(4 << 20, "manifest").is_ok());
        let e = check_document_size((4 << 20) + 1, "manifest").unwrap_err();
        assert_eq!(e.status, Status::Registry);
        assert!(e.message.contains("limit"), "{}", e.message);
        assert!(check_length(Some(10), 10, "d").is_ok());
        assert!(check_length(None, 10, "d").is_ok());
        assert_eq!(
            check_length(Some(11), 10, "d").unwrap_err().status,
            Status::DigestMismatch
        );
    }
}
