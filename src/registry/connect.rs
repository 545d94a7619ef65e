//! Connecting to one registry location: which TLS to speak (system roots plus the location's
//! certs.d CAs and client certificate, or no verification with a plain-HTTP fallback when
//! insecure), and which credentials to present (basic, a registry token, or an identity token
//! exchanged through the OAuth2 refresh-token grant; bearer tokens are fetched and cached per
//! registry, credentials and scope by `http`).

use super::http::{self, Session};
use crate::config::auth::Found;
use crate::error::{Error, Result, Status};
use std::path::PathBuf;

/// How to reach one registry location.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Unverified HTTPS, falling back to plain HTTP when HTTPS cannot be spoken (as
    /// containers/image does for `--tls-verify=false` and `insecure = true`).
    pub insecure: bool,
    /// CA certificates (one PEM each) trusted besides the system roots.
    pub ca_certificates: Vec<Vec<u8>>,
    /// Where the TLS files came from.
    pub cert_dir: Option<PathBuf>,
    /// Client certificate/key pairs found there; the first is presented.
    pub client_certificates: Vec<(PathBuf, PathBuf)>,
    /// None: anonymous.
    pub credential: Option<Found>,
}

impl Connection {
    /// Anonymous, system roots only.
    pub fn anonymous(tls_verify: bool) -> Connection {
        Connection {
            insecure: !tls_verify,
            ..Default::default()
        }
    }
}

/// A session for `registry`/`repository`: the process's client for the registry and TLS
/// settings, the registry probed (once per process), and the credentials checked where a token
/// service can tell (a refused password is AUTH_FAILED here, not a bare 401 later).
pub(super) async fn connect(
    registry: &str,
    repository: &str,
    connection: &Connection,
) -> Result<Session> {
    let endpoint = http::endpoint(registry, connection)?;
    let session = Session::new(endpoint, repository, connection.credential.clone());
    session.check_credentials().await.map_err(|f| {
        let e = name_refused_credentials(f.error, connection);
        explain_tls_failure(
            e,
            connection.cert_dir.as_deref(),
            connection
                .client_certificates
                .first()
                .map(|p| p.0.as_path()),
        )
    })?;
    Ok(session)
}

/// The token service's refusal names the credentials' source (its own reason is often empty).
fn name_refused_credentials(error: Error, connection: &Connection) -> Error {
    match &connection.credential {
        Some(found) if error.status == Status::AuthFailed => {
            let mut e = error;
            e.message = format!(
                "{} (the credentials from {} were refused)",
                e.message.trim_end_matches([':', ' ']),
                found.source
            );
            e
        }
        _ => error,
    }
}

/// A TLS failure says which certificate files were (or could have been) used.
pub(super) fn explain_tls_failure(
    error: Error,
    cert_dir: Option<&std::path::Path>,
    client_certificate: Option<&std::path::Path>,
) -> Error {
    if error.status != Status::Network {
        return error;
    }
    let lower = error.message.to_lowercase();
    let about_tls = ["certificate", "tls", "handshake", "corrupt message"]
        .iter()
        .any(|w| lower.contains(w));
    if !about_tls {
        return error;
    }
    let mut hint = match cert_dir {
        Some(dir) => format!(
            " (TLS: CA certificates from {} and the system)",
            dir.display()
        ),
        None => " (TLS: system CA certificates only; no certs.d directory for this registry, \
                 see the README for where CA files are read, or allow insecure access)"
            .to_string(),
    };
    if let Some(cert) = client_certificate {
        hint.push_str(&format!(
            "; client certificate {} presented",
            cert.display()
        ));
    }
    let mut e = error;
    e.message.push_str(&hint);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_name_the_files() {
        let e = explain_tls_failure(
            Error::new(Status::Network, "invalid peer certificate: UnknownIssuer"),
            Some(std::path::Path::new("/etc/containers/certs.d/r.io")),
            Some(std::path::Path::new("/etc/containers/certs.d/r.io/c.cert")),
        );
        assert!(
            e.message.contains("certs.d/r.io and the system"),
            "{}",
            e.message
        );
        assert!(e.message.contains("c.cert presented"), "{}", e.message);
        let e = explain_tls_failure(
            Error::new(Status::Network, "connection refused"),
            None,
            None,
        );
        assert_eq!(e.message, "connection refused");
    }

    #[test]
    fn malformed_ca_certificates_fail_the_client() {
        let connection = Connection {
            ca_certificates: vec![
                b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec(),
            ],
            ..Default::default()
        };
        let e = http::endpoint("malformed-ca.invalid", &connection)
            .err()
            .unwrap();
        assert_eq!(e.status, Status::Config, "{}", e.message);
    }
}
