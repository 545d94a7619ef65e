//! Registry access through oci-client: manifests as raw bytes, blobs as streams, anonymous
//! (bearer-token challenges included), and oci-client errors mapped to our statuses.

use super::connect::Connection;
use super::manifest::ACCEPTED_MANIFEST_TYPES;
use super::reference::DockerRef;
use super::BlobStream;
use crate::digest;
use crate::error::{Error, Result, Status};
use futures_util::StreamExt;
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
    pub async fn top_digest(&self) -> Result<String> {
        if let Some(d) = self.image.digest() {
            return Ok(d.to_string());
        }
        let d = self
            .client
            .fetch_manifest_digest(&self.image, &RegistryAuth::Anonymous)
            .await
            .map_err(|e| map_error(e, Op::Manifest))?;
        digest::validate(&d).map_err(|e| e.context("registry's Docker-Content-Digest"))?;
        Ok(d)
    }

    /// The raw manifest or index the reference points at (`digest` None) or the one with
    /// that digest. The caller verifies it.
    pub async fn manifest(&self, digest: Option<&str>) -> Result<Vec<u8>> {
        let image = match digest {
            Some(d) => {
                digest::validate(d)?;
                self.image.clone_with_digest(d.to_string())
            }
            None => self.image.clone(),
        };
        let (bytes, _digest) = self
            .client
            .pull_manifest_raw(&image, &RegistryAuth::Anonymous, ACCEPTED_MANIFEST_TYPES)
            .await
            .map_err(|e| map_error(e, Op::Manifest))?;
        Ok(bytes.to_vec())
    }

    /// The blob's body, unverified (the caller wraps it in a VerifiedStream).
    pub async fn blob(&self, digest: &str, size: u64, media_type: &str) -> Result<BlobStream> {
        digest::validate(digest)?;
        let descriptor = OciDescriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: size as i64,
            ..Default::default()
        };
        let sized = self
            .client
            .pull_blob_stream(&self.image, &descriptor)
            .await
            .map_err(|e| map_error(e, Op::Blob))?;
        if let Some(length) = sized.content_length {
            if length > size {
                return Err(Error::new(
                    Status::DigestMismatch,
                    format!("blob {digest} is {length} bytes long, its descriptor says {size}"),
                ));
            }
        }
        Ok(Box::pin(
            sized.stream.map(|item| item.map_err(map_body_error)),
        ))
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
