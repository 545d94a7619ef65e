//! Per-registry TLS files (containers-certs.d(5)): CA certificates (`*.crt`) trusted in
//! addition to the system roots, and client certificate pairs (`*.cert` + `*.key`).
//!
//! One directory applies to a registry `HOST[:PORT]`: the caller's certificate directory
//! (holding the files themselves, as skopeo's --cert-dir), else `CERTS_D/HOST[:PORT]` for the
//! caller's certs.d root, else the first that exists of
//! `$HOME/.config/containers/certs.d/HOST[:PORT]`, `/etc/containers/certs.d/HOST[:PORT]` and
//! `/etc/docker/certs.d/HOST[:PORT]`.

use crate::error::{Error, Result, Status};
use std::path::{Path, PathBuf};

const SYSTEM_CERTS_D: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];
/// A *.crt file larger than this is not a certificate bundle.
const MAX_CERT_FILE: u64 = 4 << 20;

/// The TLS files for one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The directory they came from, if one exists.
    pub dir: Option<PathBuf>,
    /// One PEM block per CA certificate.
    pub ca_certificates: Vec<Vec<u8>>,
    /// (certificate, key) pairs.
    pub client_pairs: Vec<(PathBuf, PathBuf)>,
}

/// Where the caller points the lookup (None: the defaults above).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertPaths {
    /// A directory with the files themselves, for every registry of the call.
    pub cert_dir: Option<PathBuf>,
    /// A certs.d root with one `HOST[:PORT]` directory per registry.
    pub certs_d: Option<PathBuf>,
}

fn config_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::new(Status::Config, format!("{}: {message}", path.display()))
        .with_subject(path.display().to_string())
}

/// The directory that applies to `host_port`, if any exists.
pub fn cert_dir_for(host_port: &str, paths: &CertPaths) -> Option<PathBuf> {
    if let Some(dir) = &paths.cert_dir {
        return Some(dir.clone());
    }
    // A registry name never contains '/', but this joins it to a path: be sure.
    if host_port.is_empty() || host_port.contains('/') || host_port.starts_with('.') {
        return None;
    }
    let roots: Vec<PathBuf> = match &paths.certs_d {
        Some(root) => vec![root.clone()],
        None => super::registries::home_dir()
            .map(|h| h.join(".config/containers/certs.d"))
            .into_iter()
            .chain(SYSTEM_CERTS_D.iter().map(PathBuf::from))
            .collect(),
    };
    roots
        .into_iter()
        .map(|root| root.join(host_port))
        .find(|dir| dir.is_dir())
}

/// Reads the files for `host_port`. A directory with a `.cert` lacking its `.key` (or the
/// reverse), or a `.crt` with no PEM certificate, is a CONFIG error.
pub fn lookup(host_port: &str, paths: &CertPaths) -> Result<TlsFiles> {
    let Some(dir) = cert_dir_for(host_port, paths) else {
        return Ok(TlsFiles::default());
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        // The caller's directory must exist; a certs.d entry was just seen to.
        Err(e) => {
            return Err(config_error(
                &dir,
                format!("cannot read the certificate directory: {e}"),
            ))
        }
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    names.sort();
    let mut files = TlsFiles {
        dir: Some(dir.clone()),
        ..Default::default()
    };
    for path in &names {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => {
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                if size > MAX_CERT_FILE {
                    return Err(config_error(
                        path,
                        format!("{size} bytes is too large for a CA certificate file"),
                    ));
                }
                let text = std::fs::read(path)
                    .map_err(|e| config_error(path, format!("cannot read: {e}")))?;
                let blocks = pem_certificates(&text);
                if blocks.is_empty() {
                    return Err(config_error(
                        path,
                        "no PEM \"CERTIFICATE\" block in this CA file",
                    ));
                }
                files.ca_certificates.extend(blocks);
            }
            Some("cert") => {
                let key = path.with_extension("key");
                if !names.contains(&key) {
                    return Err(config_error(
                        path,
                        format!(
                            "client certificate without its key {} (CA certificates use the extension .crt)",
                            key.display()
                        ),
                    ));
                }
                files.client_pairs.push((path.clone(), key));
            }
            Some("key") => {
                let cert = path.with_extension("cert");
                if !names.contains(&cert) {
                    return Err(config_error(
                        path,
                        format!("client key without its certificate {}", cert.display()),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(files)
}

/// Each `-----BEGIN CERTIFICATE-----` … `-----END CERTIFICATE-----` block, as its own PEM.
pub fn pem_certificates(text: &[u8]) -> Vec<Vec<u8>> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, BEGIN) {
        let Some(len) = find(&rest[start..], END) else {
            break;
        };
        let end = start + len + END.len();
        let mut block = rest[start..end].to_vec();
        block.push(b'\n');
        out.push(block);
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn per_host_directories() {
        let root = tempfile::tempdir().unwrap();
        let host = root.path().join("127.0.0.1:5000");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("ca.crt"), format!("junk\n{CERT}{CERT}")).unwrap();
        std::fs::write(host.join("client.cert"), CERT).unwrap();
        std::fs::write(host.join("client.key"), "key").unwrap();
        std::fs::write(host.join("README"), "ignored").unwrap();
        let paths = CertPaths {
            cert_dir: None,
            certs_d: Some(root.path().to_path_buf()),
        };
        let files = lookup("127.0.0.1:5000", &paths).unwrap();
        assert_eq!(files.dir.as_deref(), Some(host.as_path()));
        assert_eq!(files.ca_certificates.len(), 2);
        assert_eq!(files.ca_certificates[0], CERT.as_bytes());
        assert_eq!(
            files.client_pairs,
            vec![(host.join("client.cert"), host.join("client.key"))]
        );
        // Another port is another directory.
        assert_eq!(
            lookup("127.0.0.1:5001", &paths).unwrap(),
            TlsFiles::default()
        );
        assert_eq!(lookup("../x", &paths).unwrap(), TlsFiles::default());

        // The caller's cert dir holds the files itself.
        let files = lookup(
            "any.io",
            &CertPaths {
                cert_dir: Some(host.clone()),
                certs_d: None,
            },
        )
        .unwrap();
        assert_eq!(files.ca_certificates.len(), 2);
    }

    #[test]
    fn broken_directories_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths {
            cert_dir: Some(dir.path().to_path_buf()),
            certs_d: None,
        };
        std::fs::write(dir.path().join("a.cert"), CERT).unwrap();
        let e = lookup("x", &paths).unwrap_err();
        assert_eq!(e.status, Status::Config);
        assert!(e.message.contains("a.key"), "{}", e.message);
        std::fs::remove_file(dir.path().join("a.cert")).unwrap();
        std::fs::write(dir.path().join("b.key"), "k").unwrap();
        assert!(lookup("x", &paths).unwrap_err().message.contains("b.cert"));
        std::fs::remove_file(dir.path().join("b.key")).unwrap();
        std::fs::write(dir.path().join("ca.crt"), "not a certificate").unwrap();
        assert!(lookup("x", &paths).unwrap_err().message.contains("ca.crt"));
        let missing = CertPaths {
            cert_dir: Some(dir.path().join("missing")),
            certs_d: None,
        };
        assert_eq!(lookup("x", &missing).unwrap_err().status, Status::Config);
    }
}
