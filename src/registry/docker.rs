//! Registry access through oci-client: manifests as raw bytes, blobs as streams, anonymous
//! (bearer-token challenges included), and oci-client errors mapped to our statuses.

use super::connect::Connection;
use super::manifest::ACCEPTED_MANIFEST_TYPES;
use super::reference::DockerRef;
use super::retry::{stalled, RequestPolicy, RetryNotice};
use super::BlobStream;
use crate::digest;
use crate::error::{Error, Result, Status};
use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

/// What a request was for; decides what a 404 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Ping,
    Manifest,
    Blob,
}

/// An image in a registry; one oci-client Client (connection pool, token cache) per source.
pub struct RegistrySource {
    client: Client,
    image: oci_client::Reference,
}

impl RegistrySource {
    /// Opens the image at `reference`, reached as `connection` says (TLS, credentials).
    pub async fn open(reference: &DockerRef, connection: &Connection) -> Result<RegistrySource> {
        let image = match &reference.digest {
            Some(d) => {
                digest::validate(d)?;
                oci_client::Reference::with_digest(
                    reference.registry.clone(),
                    reference.repository.clone(),
                    d.clone(),
                )
            }
            None => oci_client::Reference::with_tag(
                reference.registry.clone(),
                reference.repository.clone(),
                reference
                    .tag
                    .clone()
                    .unwrap_or_else(|| "latest".to_string()),
            ),
        };
        let client = super::connect::connect(&image, connection).await?;
        Ok(RegistrySource { client, image })
    }

    /// The digest the reference points at: the pinned digest, else a HEAD for the tag.
    pub async fn top_digest(&self, policy: &RequestPolicy) -> Result<String> {
        if let Some(d) = self.image.digest() {
            return Ok(d.to_string());
        }
        let d = policy
            .run("HEAD manifest", "", || async {
                self.client
                    .fetch_manifest_digest(&self.image, &RegistryAuth::Anonymous)
                    .await
                    .map_err(|e| map_error(e, Op::Manifest))
            })
            .await?;
        digest::validate(&d).map_err(|e| e.context("registry's Docker-Content-Digest"))?;
        Ok(d)
    }

    /// The raw manifest or index the reference points at (`digest` None) or the one with
    /// that digest. The caller verifies it. `expected_size` (from the index entry that
    /// names it) lets an oversized manifest be refused before any request.
    ///
    /// oci-client reads the whole body before we see it, so for a manifest fetched by tag the
    /// 4 MiB limit is checked after the fact: memory is bounded only when the size is known
    /// from a descriptor (see the README, "Limits").
    pub async fn manifest(
        &self,
        digest: Option<&str>,
        expected_size: Option<u64>,
        policy: &RequestPolicy,
    ) -> Result<Vec<u8>> {
        let image = match digest {
            Some(d) => {
                digest::validate(d)?;
                self.image.clone_with_digest(d.to_string())
            }
            None => self.image.clone(),
        };
        if let Some(size) = expected_size {
            check_document_size(size, "manifest")?;
        }
        let (bytes, _digest) = policy
            .run("GET manifest", digest.unwrap_or(""), || async {
                self.client
                    .pull_manifest_raw(&image, &RegistryAuth::Anonymous, ACCEPTED_MANIFEST_TYPES)
                    .await
                    .map_err(|e| map_error(e, Op::Manifest))
            })
            .await?;
        check_document_size(bytes.len() as u64, "manifest")?;
        Ok(bytes.to_vec())
    }

    /// The repository's tags, following pagination (`n` and `last`) until a page adds nothing.
    pub async fn tags(&self, policy: &RequestPolicy) -> Result<Vec<String>> {
        const PAGE: usize = 1000;
        let mut tags: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut last: Option<String> = None;
        // A registry that ignores `last` would loop forever; 10 000 pages is plenty.
        for _ in 0..10_000 {
            let page = policy
                .run("GET tags", "", || async {
                    self.client
                        .list_tags(
                            &self.image,
                            &RegistryAuth::Anonymous,
                            Some(PAGE),
                            last.as_deref(),
                        )
                        .await
                        .map_err(|e| map_error(e, Op::Manifest))
                })
                .await?;
            let before = tags.len();
            for tag in page.tags {
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
    /// the bytes already seen skipped), so the caller sees one continuous body.
    pub async fn blob(
        &self,
        digest: &str,
        size: u64,
        media_type: &str,
        policy: &RequestPolicy,
    ) -> Result<BlobStream> {
        digest::validate(digest)?;
        let mut fetch = BlobFetch {
            client: self.client.clone(),
            image: self.image.clone(),
            descriptor: OciDescriptor {
                media_type: media_type.to_string(),
                digest: digest.to_string(),
                size: size as i64,
                ..Default::default()
            },
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

type Body = futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;

/// One blob download across however many requests it takes.
struct BlobFetch {
    client: Client,
    image: oci_client::Reference,
    descriptor: OciDescriptor,
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
        let digest = self.descriptor.digest.clone();
        let what = format!("GET blob {digest}");
        let (body, skip) = self
            .policy
            .run(&what, &digest, || async {
                if offset == 0 {
                    let sized = self
                        .client
                        .pull_blob_stream(&self.image, &self.descriptor)
                        .await
                        .map_err(|e| map_error(e, Op::Blob))?;
                    check_length(sized.content_length, self.size, &digest)?;
                    return Ok((sized.stream, 0));
                }
                let response = self
                    .client
                    .pull_blob_stream_partial(&self.image, &self.descriptor, offset, None)
                    .await
                    .map_err(|e| map_error(e, Op::Blob))?;
                match response {
                    BlobResponse::Partial(sized) => {
                        if let Some(length) = sized.content_length {
                            if length != self.size - offset {
                                return Err(Error::new(
                                    Status::Registry,
                                    format!(
                                        "asked for blob {digest} from byte {offset}, got {length} bytes of the {} remaining",
                                        self.size - offset
                                    ),
                                ));
                            }
                        }
                        Ok((sized.stream, 0))
                    }
                    BlobResponse::Full(sized) => {
                        check_length(sized.content_length, self.size, &digest)?;
                        Ok((sized.stream, offset))
                    }
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
                Ok(Some(Err(e))) => {
                    let e = map_body_error(e);
                    if e.status == Status::DigestMismatch && self.received < self.size {
                        // oci-client checks the digest where a cleanly ended body stops: a
                        // short body is a broken transfer, not wrong content.
                        Error::new(
                            Status::Network,
                            format!(
                                "the body of blob {} ended after {} of {} bytes",
                                self.descriptor.digest, self.received, self.size
                            ),
                        )
                    } else {
                        e
                    }
                }
                Ok(None) if self.received >= self.size => {
                    self.finished = true;
                    return None;
                }
                Ok(None) => Error::new(
                    Status::Network,
                    format!(
                        "the body of blob {} ended after {} of {} bytes",
                        self.descriptor.digest, self.received, self.size
                    ),
                ),
                Err(_) => {
                    let e = stalled(&format!("reading blob {}", self.descriptor.digest), stall);
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
                digest: self.descriptor.digest.clone(),
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

/// Errors inside a blob body: oci-client's own digest check, or the connection.
fn map_body_error(err: std::io::Error) -> Error {
    if let Some(inner) = err.get_ref() {
        if let Some(DigestError::VerificationError { expected, actual }) =
            inner.downcast_ref::<DigestError>()
        {
            return Error::new(
                Status::DigestMismatch,
                format!("digest mismatch: expected {expected}, got {actual}"),
            );
        }
    }
    if err.raw_os_error().is_some() || err.kind() == std::io::ErrorKind::UnexpectedEof {
        return Error::from(err);
    }
    Error::new(Status::Network, error_chain(&err))
}

/// The error and its causes, joined: reqwest's own message alone says little.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// The errno of the first OS error among the causes, for `Error::os_errno`.
fn os_errno(err: &(dyn std::error::Error + 'static)) -> i32 {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(errno) = io.raw_os_error() {
                return errno;
            }
        }
        current = e.source();
    }
    0
}

fn http_error(code: u16, detail: &str, op: Op) -> Error {
    let status = match code {
        401 => Status::AuthRequired,
        403 => Status::AuthFailed,
        404 if op == Op::Manifest => Status::ManifestUnknown,
        _ => Status::Registry,
    };
    let what = match status {
        Status::AuthRequired => "authentication required",
        Status::AuthFailed => "access denied",
        Status::ManifestUnknown => "manifest unknown",
        _ => "registry error",
    };
    let detail = detail.trim();
    let message = if detail.is_empty() {
        format!("{what} (HTTP {code})")
    } else {
        format!("{what} (HTTP {code}): {detail}")
    };
    Error::new(status, message).with_http_status(code)
}

/// The HTTP status an error code of the distribution spec is sent with (oci-client keeps
/// the error body but not the status).
fn status_of_code(code: &OciErrorCode) -> u16 {
    match code {
        OciErrorCode::Unauthorized => 401,
        OciErrorCode::Denied => 403,
        OciErrorCode::BlobUnknown
        | OciErrorCode::BlobUploadUnknown
        | OciErrorCode::ManifestUnknown
        | OciErrorCode::NameUnknown
        | OciErrorCode::NotFound => 404,
        OciErrorCode::Unsupported => 405,
        OciErrorCode::Toomanyrequests => 429,
        _ => 400,
    }
}

/// The code as the registry sent it, e.g. `MANIFEST_UNKNOWN`.
fn wire_code(code: &OciErrorCode) -> String {
    serde_json::to_string(code)
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_else(|_| format!("{code:?}"))
}

pub(super) fn map_error(err: OciDistributionError, op: Op) -> Error {
    use OciDistributionError as E;
    match err {
        E::RequestError(e) => {
            if let Some(code) = e.status() {
                return http_error(code.as_u16(), &error_chain(&e), op);
            }
            let status = if e.is_timeout() {
                Status::Timeout
            } else {
                Status::Network
            };
            let mut error = Error::new(status, error_chain(&e));
            error.os_errno = os_errno(&e);
            error
        }
        E::UnauthorizedError { .. } => http_error(401, "", op),
        E::AuthenticationFailure(reason) => Error::new(
            Status::AuthFailed,
            format!("the registry's token service refused: {}", reason.trim()),
        ),
        E::RegistryError { envelope, .. } => {
            let code = envelope
                .errors
                .first()
                .map_or(400, |e| status_of_code(&e.code));
            let detail: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{}: {}", wire_code(&e.code), e.message))
                .collect();
            http_error(code, &detail.join("; "), op)
        }
        E::ServerError { code, message, .. } => http_error(code, &message, op),
        E::DigestError(DigestError::VerificationError { expected, actual }) => Error::new(
            Status::DigestMismatch,
            format!("digest mismatch: expected {expected}, got {actual}"),
        ),
        E::DigestError(DigestError::UnsupportedAlgorithm(alg)) => Error::new(
            Status::Unsupported,
            format!("unsupported digest algorithm {alg:?}"),
        ),
        E::DigestError(other) => Error::new(
            Status::Registry,
            format!("bad digest from the registry: {other}"),
        ),
        E::IoError(e) => Error::from(e),
        e @ (E::UnsupportedMediaTypeError(_) | E::UnsupportedSchemaVersionError(_)) => {
            Error::new(Status::Unsupported, e.to_string())
        }
        other => Error::new(Status::Registry, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    fn envelope(code: OciErrorCode) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: "msg".into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://x/v2/".into(),
        }
    }

    #[test]
    fn registry_errors_map_to_statuses() {
        let e = map_error(envelope(OciErrorCode::ManifestUnknown), Op::Manifest);
        assert_eq!((e.status, e.http_status), (Status::ManifestUnknown, 404));
        assert!(e.message.contains("MANIFEST_UNKNOWN: msg"), "{}", e.message);
        assert_eq!(
            map_error(envelope(OciErrorCode::NameUnknown), Op::Manifest).status,
            Status::ManifestUnknown
        );
        assert_eq!(
            map_error(envelope(OciErrorCode::Unauthorized), Op::Manifest).status,
            Status::AuthRequired
        );
        assert_eq!(
            map_error(envelope(OciErrorCode::Denied), Op::Blob).status,
            Status::AuthFailed
        );
        let e = map_error(envelope(OciErrorCode::BlobUnknown), Op::Blob);
        assert_eq!((e.status, e.http_status), (Status::Registry, 404));
        let e = map_error(envelope(OciErrorCode::Toomanyrequests), Op::Manifest);
        assert_eq!((e.status, e.http_status), (Status::Registry, 429));
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "boom".into(),
        };
        let e = map_error(server(404), Op::Manifest);
        assert_eq!((e.status, e.http_status), (Status::ManifestUnknown, 404));
        assert_eq!(map_error(server(404), Op::Blob).status, Status::Registry);
        assert_eq!(map_error(server(403), Op::Blob).status, Status::AuthFailed);
        let e = map_error(server(502), Op::Manifest);
        assert_eq!((e.status, e.http_status), (Status::Registry, 502));
        assert!(e.message.contains("boom"));
        let e = map_error(
            OciDistributionError::UnauthorizedError { url: "u".into() },
            Op::Manifest,
        );
        assert_eq!((e.status, e.http_status), (Status::AuthRequired, 401));
        let e = map_error(
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected: "sha256:a".into(),
                actual: "sha256:b".into(),
            }),
            Op::Manifest,
        );
        assert_eq!(e.status, Status::DigestMismatch);
    }

    #[test]
    fn body_errors_keep_digest_mismatches() {
        let e = map_body_error(std::io::Error::other(DigestError::VerificationError {
            expected: "sha256:a".into(),
            actual: "sha256:b".into(),
        }));
        assert_eq!(e.status, Status::DigestMismatch);
        let e = map_body_error(std::io::Error::other("connection reset by peer"));
        assert_eq!(e.status, Status::Network);
    }
}
