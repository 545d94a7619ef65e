//! What a pull knows about reaching registries: the caller's options, registries.conf, the
//! signature policy, and per location the TLS files and credentials. Loaded once per pull.

use super::connect::Connection;
use super::resolve::{self, Candidate, Location, PullPlan};
use super::{Platform, Reference, Source, SourceOptions};
use crate::config::auth::{AuthLookup, Credential};
use crate::config::certs::{self, CertPaths};
use crate::config::policy::{self, Policy};
use crate::config::registries::{self, RegistriesConf};
use crate::error::{Error, Result, Status};
use std::path::PathBuf;

/// The caller's say over registry access; every field's None means "as the configuration
/// files say" (see the README's list of files).
#[derive(Debug, Clone, Default)]
pub struct AccessOptions {
    /// Some(false): unverified TLS and plain HTTP for every registry of the call; Some(true):
    /// verified TLS even where registries.conf says `insecure`; None: per registries.conf.
    pub tls_verify: Option<bool>,
    /// Used for every registry; no auth file or helper is consulted then.
    pub credentials: Option<Credential>,
    /// Replaces the default auth files.
    pub auth_file: Option<PathBuf>,
    /// Replaces `$CONTAINERS_REGISTRIES_CONF` and the default registries.conf.
    pub registries_conf: Option<PathBuf>,
    /// The only drop-in directory read.
    pub registries_conf_dir: Option<PathBuf>,
    /// Replaces the default policy.json.
    pub signature_policy: Option<PathBuf>,
    /// A directory of TLS files (*.crt, *.cert, *.key) for every registry of the call.
    pub cert_dir: Option<PathBuf>,
    /// A certs.d root with a HOST[:PORT] directory per registry.
    pub certs_d: Option<PathBuf>,
}

/// The loaded configuration of one pull.
pub struct AccessContext {
    options: AccessOptions,
    registries: RegistriesConf,
    policy: Policy,
}

impl AccessContext {
    /// Reads registries.conf and policy.json (CONFIG errors name the file).
    pub fn load(options: &AccessOptions) -> Result<AccessContext> {
        let registries = RegistriesConf::load(&registries::Paths {
            file: options.registries_conf.clone(),
            drop_in_dir: options.registries_conf_dir.clone(),
        })?;
        let policy = Policy::load(options.signature_policy.as_deref())?;
        Ok(AccessContext {
            options: options.clone(),
            registries,
            policy,
        })
    }

    /// The candidates for what the caller wrote, with their locations.
    pub fn plan(&self, reference: &str) -> Result<PullPlan> {
        resolve::plan(reference, &self.registries)
    }

    /// Ok when registries.conf does not block the image and the signature policy accepts it.
    pub fn admit(&self, candidate: &Candidate) -> Result<()> {
        if let Some(blocked) = &candidate.blocked {
            return Err(blocked.clone());
        }
        let subject = match &candidate.reference {
            Reference::Docker(r) => policy::docker_subject(
                &r.registry,
                &r.repository,
                r.tag.as_deref(),
                r.digest.as_deref(),
            ),
            Reference::Layout(r) => policy::oci_subject(&r.dir, r.tag.as_deref()),
        };
        self.policy
            .check(&subject)
            .map_err(|e| e.with_subject(candidate.reference.to_string()))
    }

    /// Opens a location: its TLS files and credentials looked up, then the source opened.
    pub async fn open(&self, location: &Location, platform: &Platform) -> Result<Source> {
        let insecure = self.insecure(location);
        let opts = SourceOptions {
            tls_verify: !insecure,
            platform: platform.clone(),
        };
        let Reference::Docker(r) = &location.reference else {
            return Source::open(&location.reference, &opts).await;
        };
        let mut connection = Connection::anonymous(!insecure);
        let name = location.reference.to_string();
        let tls = certs::lookup(
            &r.registry,
            &CertPaths {
                cert_dir: self.options.cert_dir.clone(),
                certs_d: self.options.certs_d.clone(),
            },
        )
        .map_err(|e| {
            e.context(format!("TLS files for {}", r.registry))
                .with_subject(name.clone())
        })?;
        // An insecure registry is not verified, but a client certificate is still presented
        // (containers/image reads certs.d whatever tls-verify says).
        connection.client_certificates = tls.client_pairs;
        connection.cert_dir = tls.dir;
        if !insecure {
            connection.ca_certificates = tls.ca_certificates;
        }
        let lookup = AuthLookup {
            credentials: self.options.credentials.clone(),
            auth_file: self.options.auth_file.clone(),
            helpers: self.registries.credential_helpers.clone(),
        };
        let (registry, repository) = (r.registry.clone(), r.repository.clone());
        // Reading files and running helper programs blocks.
        connection.credential =
            tokio::task::spawn_blocking(move || lookup.find(&registry, &repository))
                .await
                .map_err(|e| Error::internal(format!("credential lookup task failed: {e}")))?
                .map_err(|e| {
                    e.context(format!("looking up credentials for {}", r.registry))
                        .with_subject(name.clone())
                })?;
        let credential_source = connection.credential.as_ref().map(|f| f.source.clone());
        Source::open_at(&location.reference, &opts, &connection)
            .await
            .map_err(|e| refused(e, credential_source.as_deref()))
    }

    /// Makes an error of `source` at `location` say more: a 401 despite credentials means
    /// they were refused; a TLS failure names the CA files used.
    pub fn explain(&self, error: Error, source: &Source, location: &Location) -> Error {
        let error = refused(error, source.credential_source());
        let Reference::Docker(r) = &location.reference else {
            return error;
        };
        if self.insecure(location) {
            return error;
        }
        let paths = CertPaths {
            cert_dir: self.options.cert_dir.clone(),
            certs_d: self.options.certs_d.clone(),
        };
        let files = certs::lookup(&r.registry, &paths).unwrap_or_default();
        super::connect::explain_tls_failure(
            error,
            files.dir.as_deref(),
            files.client_pairs.first().map(|p| p.0.as_path()),
        )
    }

    /// Whether `location` is reached without TLS verification.
    fn insecure(&self, location: &Location) -> bool {
        match self.options.tls_verify {
            Some(verify) => !verify,
            None => location.insecure,
        }
    }
}

fn refused(error: Error, credential_source: Option<&str>) -> Error {
    match credential_source {
        Some(from) if error.status == Status::AuthRequired => {
            let mut e = error;
            e.status = Status::AuthFailed;
            e.message = format!(
                "{} (the registry refused the credentials from {from})",
                e.message
            );
            e
        }
        _ => error,
    }
}

/// One error for a pull whose every location failed: a single failure as it is; several
/// listed, with the status of the first that is not MANIFEST_UNKNOWN (a real problem
/// outranks "not there").
pub fn combine_failures(reference: &str, failures: Vec<Error>) -> Error {
    if failures.len() == 1 {
        return failures
            .into_iter()
            .next()
            .unwrap_or_else(|| Error::internal("no failure"));
    }
    let Some(first) = failures.first() else {
        return Error::internal(format!("no location to pull {reference} from"));
    };
    let chosen = failures
        .iter()
        .find(|e| e.status != Status::ManifestUnknown)
        .unwrap_or(first);
    let mut error = Error::new(
        chosen.status,
        format!(
            "no location could provide {reference}: {}",
            failures
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    error.http_status = chosen.http_status;
    error.os_errno = chosen.os_errno;
    error.with_subject(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_combine_with_the_most_telling_status() {
        let e = combine_failures(
            "x",
            vec![
                Error::new(Status::ManifestUnknown, "a: manifest unknown"),
                Error::new(Status::AuthRequired, "b: authentication required")
                    .with_http_status(401),
            ],
        );
        assert_eq!((e.status, e.http_status), (Status::AuthRequired, 401));
        assert!(
            e.message.contains("a: manifest unknown; b: authentication"),
            "{}",
            e.message
        );
        assert_eq!(e.subject.as_deref(), Some("x"));
        let single = combine_failures("x", vec![Error::new(Status::Network, "down")]);
        assert_eq!(
            (single.status, single.message.as_str()),
            (Status::Network, "down")
        );
    }

    #[test]
    fn a_401_with_credentials_is_auth_failed() {
        let e = refused(
            Error::new(Status::AuthRequired, "authentication required"),
            Some("auth.json"),
        );
        assert_eq!(e.status, Status::AuthFailed);
        assert!(e.message.contains("auth.json"));
        let e = refused(
            Error::new(Status::AuthRequired, "authentication required"),
            None,
        );
        assert_eq!(e.status, Status::AuthRequired);
    }
}
