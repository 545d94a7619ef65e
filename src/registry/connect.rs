//! Connecting to one registry location: which TLS to speak (system roots plus the location's
//! certs.d CAs, or no verification with a plain-HTTP fallback when insecure), and which
//! credentials to present (oci-client then runs the bearer-token flow itself: 401 → realm →
//! token for the repository's pull scope, cached per registry and scope).
//!
//! Not possible through oci-client 0.18: presenting a TLS client certificate (its ClientConfig
//! has no client identity) and exchanging an identity token (an OAuth2 refresh token needs a
//! POST to the token service; oci-client only GETs tokens). Both are reported, not ignored:
//! client certificates with a warning (and a hint on a failed connection), identity tokens
//! with UNSUPPORTED.

use super::docker::{map_error, Op};
use crate::config::auth::{Credential, Found};
use crate::error::{Error, Result, Status};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use std::path::PathBuf;
use std::time::Duration;

/// containers/image's dial timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("cimage/", env!("CARGO_PKG_VERSION"));

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
    /// Client certificate/key pairs found there (cannot be presented: see the module doc).
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

fn registry_auth(connection: &Connection) -> Result<RegistryAuth> {
    Ok(match &connection.credential {
        None => RegistryAuth::Anonymous,
        Some(found) => match &found.credential {
            Credential::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credential::RegistryToken(token) => RegistryAuth::Bearer(token.clone()),
            Credential::IdentityToken { .. } => {
                return Err(Error::new(
                    Status::Unsupported,
                    format!(
                        "the credentials from {} are an identity token (OAuth2 refresh token), \
                         which cimage cannot exchange yet; log in with a password instead",
                        found.source
                    ),
                ))
            }
        },
    })
}

/// A client for `image`'s registry with its credentials stored (and, when there are any,
/// already checked: a refused password is AUTH_FAILED here, not a bare 401 later).
pub(super) async fn connect(
    image: &oci_client::Reference,
    connection: &Connection,
) -> Result<Client> {
    let auth = registry_auth(connection)?;
    if !connection.client_certificates.is_empty() {
        crate::log::warn(format!(
            "{}: client certificates are not presented (not supported through oci-client): {:?}",
            image.resolve_registry(),
            connection.client_certificates
        ));
    }
    let result = if connection.insecure {
        connect_insecure(image, &auth).await
    } else {
        connect_verified(image, &auth, connection).await
    };
    result.map_err(|e| {
        let e = name_refused_credentials(e, connection);
        explain_tls_failure(
            e,
            connection.cert_dir.as_deref(),
            !connection.client_certificates.is_empty(),
        )
    })
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

async fn connect_verified(
    image: &oci_client::Reference,
    auth: &RegistryAuth,
    connection: &Connection,
) -> Result<Client> {
    let client =
        build_client(ClientProtocol::Https, false, &connection.ca_certificates).map_err(|e| {
            match &connection.cert_dir {
                Some(dir) => Error::new(
                    Status::Config,
                    format!("the CA certificates of {}: {}", dir.display(), e.message),
                ),
                None => e,
            }
        })?;
    if *auth == RegistryAuth::Anonymous {
        // oci-client only fetches tokens for registries with stored credentials; blob
        // requests do not store them themselves.
        client
            .store_auth_if_needed(image.resolve_registry(), auth)
            .await;
    } else {
        client
            .auth(image, auth, RegistryOperation::Pull)
            .await
            .map_err(|e| map_error(e, Op::Ping))?;
    }
    Ok(client)
}

/// HTTPS without certificate checks first, plain HTTP when HTTPS cannot even be spoken.
/// The ping also fetches the token.
async fn connect_insecure(image: &oci_client::Reference, auth: &RegistryAuth) -> Result<Client> {
    let https = build_client(ClientProtocol::Https, true, &[])?;
    match https.auth(image, auth, RegistryOperation::Pull).await {
        Ok(_) => Ok(https),
        Err(OciDistributionError::RequestError(e)) if e.status().is_none() => {
            let http = build_client(ClientProtocol::Http, false, &[])?;
            http.auth(image, auth, RegistryOperation::Pull)
                .await
                .map_err(|e| map_error(e, Op::Ping))?;
            Ok(http)
        }
        Err(e) => Err(map_error(e, Op::Ping)),
    }
}

fn build_client(
    protocol: ClientProtocol,
    accept_invalid_certificates: bool,
    ca_certificates: &[Vec<u8>],
) -> Result<Client> {
    let config = ClientConfig {
        protocol,
        accept_invalid_certificates,
        extra_root_certificates: ca_certificates
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        // We choose platforms ourselves from the raw index.
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        user_agent: USER_AGENT,
        ..Default::default()
    };
    Client::try_from(config)
        .map_err(|e| map_error(e, Op::Ping).context("creating the registry client"))
}

/// A TLS failure says which certificate files were (or could have been) used.
pub(super) fn explain_tls_failure(
    error: Error,
    cert_dir: Option<&std::path::Path>,
    has_client_certificates: bool,
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
    if has_client_certificates {
        hint.push_str("; client certificates cannot be presented by this version");
    }
    let mut e = error;
    e.message.push_str(&hint);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tokens_are_unsupported_not_ignored() {
        let connection = Connection {
            credential: Some(Found {
                credential: Credential::IdentityToken {
                    username: String::new(),
                    token: "t".into(),
                },
                source: "test".into(),
            }),
            ..Default::default()
        };
        assert_eq!(
            registry_auth(&connection).unwrap_err().status,
            Status::Unsupported
        );
        assert_eq!(
            registry_auth(&Connection::anonymous(true)).unwrap(),
            RegistryAuth::Anonymous
        );
    }

    #[test]
    fn malformed_ca_certificates_fail_the_client() {
        let e = build_client(
            ClientProtocol::Https,
            false,
            &[b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec()],
        );
        assert!(e.is_err());
    }
}
