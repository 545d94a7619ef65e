//! The registry request path over reqwest: one client per registry and TLS settings for the
//! whole process, the registry probed once per process (which scheme it speaks, which auth
//! challenge it sends), bearer tokens fetched (GET with basic credentials, or the OAuth2 POST for
//! identity tokens) and cached per credentials and scope, client certificates presented, and
//! every body that is held in memory read as a stream that stops at its limit.
//!
//! Why not oci-client: it cannot present client certificates, POST for tokens, hand over
//! Retry-After or bound a body while reading it, and it pings the registry and builds its
//! clients again for every pull (most of a warm pull's time).

use super::connect::Connection;
use super::retry::{parse_retry_after, Failure};
use crate::config::auth::{Credential, Found};
use crate::digest;
use crate::error::{Error, Result, Status};
use once_cell::sync::Lazy;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// containers/image's limits for token answers and error bodies.
pub const MAX_TOKEN_BODY: usize = 1 << 20;
pub const MAX_ERROR_BODY: usize = 1 << 20;
/// containers/image's dial timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("cimage/", env!("CARGO_PKG_VERSION"));
/// A token said to live less than this is kept this long (as containers/image does).
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are renewed this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
/// The `client_id` of the OAuth2 refresh-token exchange.
const OAUTH_CLIENT_ID: &str = "cimage";

/// What a request was for; decides what a 404 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Ping,
    Manifest,
    Blob,
}

/// How the registry asks to be authenticated (from its 401's WWW-Authenticate).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    /// /v2/ answered 200: no authentication asked for (yet).
    None,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct Token {
    value: String,
    renew_at: Instant,
}

/// One registry reached with one set of TLS settings: its client (connection pool), what the
/// probe learned, and the tokens fetched. Shared by every pull of the process.
pub(super) struct Endpoint {
    /// `host[:port]` in URLs.
    host: String,
    insecure: bool,
    client: reqwest::Client,
    /// "https" or "http", found by the first successful probe.
    scheme: tokio::sync::OnceCell<&'static str>,
    challenge: Mutex<Challenge>,
    /// (credentials' fingerprint, realm, service, scope) → token.
    tokens: Mutex<HashMap<String, Token>>,
}

static ENDPOINTS: Lazy<Mutex<HashMap<String, Arc<Endpoint>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

/// The host that serves `registry` (Docker Hub's API lives on registry-1.docker.io).
fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (whole inserts only).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The client certificate and key of `connection`, read now (so that a changed file makes a new
/// client), as one PEM buffer.
fn client_identity(connection: &Connection) -> Result<Option<Vec<u8>>> {
    let Some((cert, key)) = connection.client_certificates.first() else {
        return Ok(None);
    };
    if connection.client_certificates.len() > 1 {
        crate::log::warn(format!(
            "several client certificates for one registry; presenting {} only",
            cert.display()
        ));
    }
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            Error::new(Status::Config, format!("{}: cannot read: {e}", p.display()))
                .with_subject(p.display().to_string())
        })
    };
    let mut pem = read(cert)?;
    pem.push(b'\n');
    pem.extend_from_slice(&read(key)?);
    Ok(Some(pem))
}

/// The process's endpoint for `registry` reached as `connection` says, made on first use.
pub(super) fn endpoint(registry: &str, connection: &Connection) -> Result<Arc<Endpoint>> {
    let host = api_host(registry);
    let identity = client_identity(connection)?;
    let mut fingerprint = digest::Hasher::new();
    if !connection.insecure {
        for ca in &connection.ca_certificates {
            fingerprint.update(&(ca.len() as u64).to_le_bytes());
            fingerprint.update(ca);
        }
    }
    fingerprint.update(b"|");
    if let Some(id) = &identity {
        fingerprint.update(id);
    }
    let key = format!("{host}|{}|{}", connection.insecure, fingerprint.finish());
    if let Some(found) = lock(&ENDPOINTS).get(&key) {
        return Ok(found.clone());
    }
    let client = build_client(connection, identity.as_deref())?;
    let made = Arc::new(Endpoint {
        host: host.to_string(),
        insecure: connection.insecure,
        client,
        scheme: tokio::sync::OnceCell::new(),
        challenge: Mutex::new(Challenge::None),
        tokens: Mutex::new(HashMap::new()),
    });
    // Two pulls racing here build two clients; the first one stored wins.
    Ok(lock(&ENDPOINTS).entry(key).or_insert(made).clone())
}

fn build_client(connection: &Connection, identity: Option<&[u8]>) -> Result<reqwest::Client> {
    let tls = tls_config(connection, identity)?;
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        // Blob redirects go to object storage; reqwest drops Authorization across hosts.
        .redirect(reqwest::redirect::Policy::limited(10))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| {
            Error::new(
                Status::Config,
                format!("creating the registry client: {}", error_chain(&e)),
            )
        })
}

/// rustls with the ring provider: its random numbers come straight from getrandom, where
/// aws-lc-rs (reqwest's default) first seeds a jitter-entropy pool in every process, which
/// was about two thirds of a warm `cimagectl pull`'s CPU (bench: see the README).
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: Lazy<Arc<rustls::crypto::CryptoProvider>> =
        Lazy::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

/// The system's CA certificates, read once per process and only when a verified connection
/// is first set up: `$SSL_CERT_FILE`, else the first bundle that exists of the usual
/// distribution paths, plus the files of `$SSL_CERT_DIR` (as OpenSSL and rustls-native-certs
/// look for them).
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: Lazy<Arc<rustls::RootCertStore>> = Lazy::new(|| {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        const BUNDLES: [&str; 5] = [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/ca-bundle.pem",
            "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
            "/etc/ssl/cert.pem",
        ];
        let mut files: Vec<std::path::PathBuf> = Vec::new();
        match std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
            Some(f) => files.push(f.into()),
            None => files.extend(
                BUNDLES
                    .iter()
                    .map(std::path::PathBuf::from)
                    .find(|p| p.is_file()),
            ),
        }
        if let Some(dir) = std::env::var_os("SSL_CERT_DIR").filter(|d| !d.is_empty()) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                // Only OpenSSL's hashed names (`5ad8a5d6.0`): Debian's /etc/ssl/certs also holds
                // every certificate under its own name and the whole bundle once more.
                files.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| is_hashed_cert_name(p) && p.is_file()),
                );
            }
        }
        let mut store = rustls::RootCertStore::empty();
        for file in &files {
            let Ok(pem) = std::fs::read(file) else {
                continue;
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .filter_map(|c| c.ok())
                .collect();
            // Certificates webpki cannot use are skipped, as rustls-platform-verifier does.
            store.add_parsable_certificates(certs);
        }
        crate::log::debug(format!(
            "{} system CA certificates from {files:?}",
            store.len()
        ));
        Arc::new(store)
    });
    ROOTS.clone()
}

/// `XXXXXXXX.N`: eight hex digits, a dot, a decimal suffix.
fn is_hashed_cert_name(path: &std::path::Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    match name.split_once('.') {
        Some((hash, n)) => {
            hash.len() == 8
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn tls_config(connection: &Connection, identity: Option<&[u8]>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = crypto_provider();
    let config_error = |what: String| Error::new(Status::Config, what);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS versions: {e}")))?;
    let builder = if connection.insecure {
        // No verification: no root certificates to load either.
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = (*system_roots()).clone();
        for pem in &connection.ca_certificates {
            let mut any = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| config_error(format!("a CA certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| config_error(format!("a CA certificate cannot be used: {e}")))?;
                any = true;
            }
            if !any {
                return Err(config_error("a CA file holds no certificate".into()));
            }
        }
        if roots.is_empty() {
            return Err(config_error(
                "no CA certificates: none found on the system (set SSL_CERT_FILE) and none in certs.d"
                    .into(),
            ));
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let what = connection
                .client_certificates
                .first()
                .map(|(c, k)| format!("{} and {}", c.display(), k.display()))
                .unwrap_or_default();
            let bad = |m: String| config_error(format!("the client certificate {what}: {m}"));
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if chain.is_empty() {
                return Err(bad("no certificate in the .cert file".into()));
            }
            let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(e.to_string()))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `--tls-verify=false`: any certificate is accepted (containers/image's InsecureSkipVerify);
/// the handshake's own signatures are still checked, so the session is with the key holder.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One repository of an endpoint, with the credentials presented to it.
#[derive(Clone)]
pub(super) struct Session {
    endpoint: Arc<Endpoint>,
    repository: String,
    credential: Option<Found>,
    /// Distinguishes cached tokens of different credentials (a hash, not the secret).
    credential_key: String,
}

impl Session {
    pub(super) fn new(
        endpoint: Arc<Endpoint>,
        repository: &str,
        credential: Option<Found>,
    ) -> Session {
        let credential_key = match credential.as_ref().map(|f| &f.credential) {
            None => "anonymous".to_string(),
            Some(Credential::Basic { username, password }) => {
                digest::sha256_digest(format!("basic\0{username}\0{password}").as_bytes())
            }
            Some(Credential::IdentityToken { username, token }) => {
                digest::sha256_digest(format!("identity\0{username}\0{token}").as_bytes())
            }
            Some(Credential::RegistryToken(t)) => {
                digest::sha256_digest(format!("registry\0{t}").as_bytes())
            }
        };
        Session {
            endpoint,
            repository: repository.to_string(),
            credential,
            credential_key,
        }
    }

    fn scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    /// The scheme the registry speaks: probed once per process (HTTPS; plain HTTP too when
    /// insecure and HTTPS cannot be spoken, as containers/image does), learning its challenge.
    pub(super) async fn scheme(&self) -> Result<&'static str, Failure> {
        let endpoint = &self.endpoint;
        endpoint
            .scheme
            .get_or_try_init(|| async {
                match self.probe("https").await {
                    Ok(()) => Ok("https"),
                    Err(f) if endpoint.insecure && f.error.http_status == 0 => {
                        crate::log::debug(format!(
                            "{}: HTTPS failed ({}), trying plain HTTP",
                            endpoint.host, f.error.message
                        ));
                        self.probe("http").await.map(|()| "http")
                    }
                    Err(f) => Err(f),
                }
            })
            .await
            .copied()
    }

    /// GET /v2/: 200 or 401 (with its challenge) tell that a registry answers.
    async fn probe(&self, scheme: &str) -> Result<(), Failure> {
        let url = format!("{scheme}://{}/v2/", self.endpoint.host);
        let response = self
            .endpoint
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| Failure::from(map_reqwest(&e)))?;
        match response.status() {
            StatusCode::OK => {
                *lock(&self.endpoint.challenge) = Challenge::None;
                Ok(())
            }
            StatusCode::UNAUTHORIZED => {
                *lock(&self.endpoint.challenge) = parse_challenges(response.headers());
                Ok(())
            }
            // Worth another try (the request policy retries these).
            code if code.is_server_error()
                || code == StatusCode::TOO_MANY_REQUESTS
                || code == StatusCode::REQUEST_TIMEOUT =>
            {
                Err(status_failure(response, Op::Ping).await)
            }
            // Some proxies and mirrors answer /v2/ itself with 403 or 404 but serve the
            // repositories: the scheme works; the requests that follow tell the rest.
            code => {
                crate::log::debug(format!(
                    "{url}: HTTP {} to the probe; going on without a challenge",
                    code.as_u16()
                ));
                *lock(&self.endpoint.challenge) = Challenge::None;
                Ok(())
            }
        }
    }

    /// Checks the credentials now, where that is possible (a token service): a refused
    /// password is then AUTH_FAILED at open, not a bare 401 later.
    pub(super) async fn check_credentials(&self) -> Result<(), Failure> {
        self.scheme().await?;
        let challenge = lock(&self.endpoint.challenge).clone();
        match (&self.credential, challenge) {
            (Some(found), Challenge::Bearer { realm, service })
                if !matches!(found.credential, Credential::RegistryToken(_)) =>
            {
                self.token(&realm, service.as_deref(), false)
                    .await
                    .map(drop)
            }
            _ => Ok(()),
        }
    }

    /// Sends `method path` (a path below the registry root, with its query), authenticated as
    /// the registry's challenge asks, and returns a success response; any other status is a
    /// Failure with the registry's message and Retry-After.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        op: Op,
    ) -> Result<Response, Failure> {
        let scheme = self.scheme().await?;
        let url = format!("{scheme}://{}{path}", self.endpoint.host);
        let mut fresh_token = false;
        for attempt in 0..2 {
            let challenge = lock(&self.endpoint.challenge).clone();
            let mut request = self
                .endpoint
                .client
                .request(method.clone(), &url)
                .headers(headers.clone());
            let (authorized, used_cached) =
                self.authorize(request, &challenge, fresh_token).await?;
            request = authorized;
            let response = request
                .send()
                .await
                .map_err(|e| Failure::from(map_reqwest(&e)))?;
            if response.status().is_success() {
                return Ok(response);
            }
            if response.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                // A challenge we had not seen (a registry whose /v2/ is open but whose
                // repositories are not), or a cached token the registry no longer takes: once more.
                let asked = parse_challenges(response.headers());
                let changed = asked != Challenge::None && asked != challenge;
                if changed || used_cached {
                    if changed {
                        *lock(&self.endpoint.challenge) = asked;
                    }
                    fresh_token = true;
                    continue;
                }
            }
            return Err(status_failure(response, op).await);
        }
        Err(Failure::from(Error::internal("unreachable request loop")))
    }

    /// Adds the Authorization the challenge asks for; also says whether a cached token was used.
    async fn authorize(
        &self,
        request: RequestBuilder,
        challenge: &Challenge,
        fresh: bool,
    ) -> Result<(RequestBuilder, bool), Failure> {
        match (challenge, self.credential.as_ref().map(|f| &f.credential)) {
            (Challenge::None, _) => Ok((request, false)),
            (Challenge::Basic, Some(Credential::Basic { username, password })) => {
                Ok((request.basic_auth(username, Some(password)), false))
            }
            (Challenge::Basic, _) => Ok((request, false)),
            (Challenge::Bearer { .. }, Some(Credential::RegistryToken(t))) => {
                Ok((request.bearer_auth(t), false))
            }
            (Challenge::Bearer { realm, service }, _) => {
                let (token, cached) = self.token(realm, service.as_deref(), fresh).await?;
                Ok((request.bearer_auth(token), cached))
            }
        }
    }

    /// A token for this repository's pull scope: cached unless `fresh`; else fetched with GET
    /// (basic credentials or anonymous) or, for an identity token, the OAuth2 POST.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        fresh: bool,
    ) -> Result<(String, bool), Failure> {
        let scope = self.scope();
        let key = format!(
            "{}|{realm}|{}|{scope}",
            self.credential_key,
            service.unwrap_or("")
        );
        if !fresh {
            if let Some(t) = lock(&self.endpoint.tokens).get(&key) {
                if Instant::now() < t.renew_at {
                    return Ok((t.value.clone(), true));
                }
            }
        }
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            Failure::from(Error::new(
                Status::Registry,
                format!("the registry's token realm {realm:?} is not a URL: {e}"),
            ))
        })?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(Failure::from(Error::new(
                Status::Registry,
                format!("the registry's token realm {realm:?} is not an HTTP(S) URL"),
            )));
        }
        let client = &self.endpoint.client;
        let request = match self.credential.as_ref().map(|f| &f.credential) {
            Some(Credential::IdentityToken { token, .. }) => {
                let mut form = reqwest::Url::parse("http://form/")
                    .map_err(|e| Failure::from(Error::internal(format!("form encoder: {e}"))))?;
                {
                    let mut pairs = form.query_pairs_mut();
                    if let Some(s) = service.filter(|s| !s.is_empty()) {
                        pairs.append_pair("service", s);
                    }
                    pairs
                        .append_pair("scope", &scope)
                        .append_pair("grant_type", "refresh_token")
                        .append_pair("refresh_token", token)
                        .append_pair("client_id", OAUTH_CLIENT_ID);
                }
                let body = form.query().unwrap_or_default().to_string();
                client
                    .post(url)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
            credential => {
                {
                    let mut pairs = url.query_pairs_mut();
                    if let Some(Credential::Basic { username, .. }) = credential {
                        if !username.is_empty() {
                            pairs.append_pair("account", username);
                        }
                    }
                    if let Some(s) = service.filter(|s| !s.is_empty()) {
                        pairs.append_pair("service", s);
                    }
                    pairs.append_pair("scope", &scope);
                }
                let request = client.get(url);
                match credential {
                    Some(Credential::Basic { username, password }) => {
                        request.basic_auth(username, Some(password))
                    }
                    _ => request,
                }
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| Failure::from(map_reqwest(&e).context("requesting a token")))?;
        let status = response.status();
        if !status.is_success() {
            let mut failure = status_failure(response, Op::Ping).await;
            if matches!(status.as_u16(), 400 | 401 | 403) {
                failure.error.status = if self.credential.is_some() {
                    Status::AuthFailed
                } else {
                    Status::AuthRequired
                };
                failure.error.message = format!(
                    "the registry's token service refused: {}",
                    failure.error.message
                );
            } else {
                failure.error = failure.error.context("requesting a token");
            }
            return Err(failure);
        }
        let body = read_limited(response, MAX_TOKEN_BODY, "token answer").await?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            Failure::from(Error::new(
                Status::Registry,
                format!("the token service's answer is not a token: {e}"),
            ))
        })?;
        let value = [answer.token, answer.access_token]
            .into_iter()
            .flatten()
            .find(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::from(Error::new(
                    Status::Registry,
                    "the token service's answer holds no token",
                ))
            })?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(0)).max(MIN_TOKEN_LIFETIME);
        lock(&self.endpoint.tokens).insert(
            key,
            Token {
                value: value.clone(),
                renew_at: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN),
            },
        );
        Ok((value, false))
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// The most capable challenge among the WWW-Authenticate headers (Bearer, then Basic).
fn parse_challenges(headers: &HeaderMap) -> Challenge {
    let mut best = Challenge::None;
    for value in headers.get_all(header::WWW_AUTHENTICATE) {
        let Ok(text) = value.to_str() else { continue };
        match parse_challenge(text) {
            Some(c @ Challenge::Bearer { .. }) => return c,
            Some(Challenge::Basic) => best = Challenge::Basic,
            _ => {}
        }
    }
    best
}

/// `Bearer realm="https://auth.io/token",service="registry.io",scope="…"` or `Basic realm=…`.
fn parse_challenge(text: &str) -> Option<Challenge> {
    let text = text.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let realm = params.get("realm")?.clone();
    Some(Challenge::Bearer {
        realm,
        service: params.get("service").cloned(),
    })
}

/// `key="quoted \"value\"", key2=token` → map with lower-case keys.
fn parse_params(mut rest: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',', '\t']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.insert(key, value);
    }
    out
}

/// The body, read as it arrives and refused as soon as it passes `limit` bytes (a
/// Content-Length above it is refused before reading anything).
pub(super) async fn read_limited(
    mut response: Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, Failure> {
    let too_big = |size: String| {
        Failure::from(Error::new(
            Status::Registry,
            format!("the {what} is {size}, more than the {limit}-byte limit"),
        ))
    };
    if let Some(length) = response.content_length() {
        if length > limit as u64 {
            return Err(too_big(format!("{length} bytes")));
        }
    }
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Failure::from(map_reqwest(&e).context(format!("reading the {what}"))))?
    {
        if body.len() + chunk.len() > limit {
            // Dropping the response closes the connection: nothing more is read.
            return Err(too_big(format!(
                "over {} bytes (reading stopped there)",
                body.len() + chunk.len()
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A non-success response as an error: the status, the registry's error codes and messages
/// (from a body read up to 1 MiB), and its Retry-After for 429 and 503.
pub(super) async fn status_failure(response: Response, op: Op) -> Failure {
    let code = response.status().as_u16();
    let retry_after = if matches!(code, 429 | 503) {
        response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
    } else {
        None
    };
    let detail = match read_limited(response, MAX_ERROR_BODY, "error body").await {
        Ok(body) => error_detail(&body),
        Err(f) => f.error.message,
    };
    Failure {
        error: http_error(code, &detail, op),
        retry_after,
    }
}

/// `CODE: message; …` from a distribution-spec error body, else its text, shortened.
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(body) {
        let parts: Vec<String> = envelope
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

pub(super) fn http_error(code: u16, detail: &str, op: Op) -> Error {
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

/// A transport error: TIMEOUT or NETWORK, with the whole cause chain and the errno.
pub(super) fn map_reqwest(e: &reqwest::Error) -> Error {
    if let Some(code) = e.status() {
        return http_error(code.as_u16(), &error_chain(e), Op::Ping);
    }
    let status = if e.is_timeout() {
        Status::Timeout
    } else {
        Status::Network
    };
    let mut error = Error::new(status, error_chain(e));
    error.os_errno = os_errno(e);
    error
}

/// The error and its causes, joined: reqwest's own message alone says little.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
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

/// `Accept` for manifests.
pub(super) fn accept(types: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&types.join(", ")) {
        headers.insert(header::ACCEPT, v);
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.io/token",service="reg \"x\"",scope="repository:a:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.io/token".into(),
                service: Some("reg \"x\"".into())
            })
        );
        assert_eq!(
            parse_challenge("bearer realm=http://t/token, service=s"),
            Some(Challenge::Bearer {
                realm: "http://t/token".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="r""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=s"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        let mut headers = HeaderMap::new();
        headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=x"),
        );
        headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="http://t/""#),
        );
        assert!(matches!(
            parse_challenges(&headers),
            Challenge::Bearer { .. }
        ));
        assert_eq!(parse_challenges(&HeaderMap::new()), Challenge::None);
    }

    #[test]
    fn error_bodies_become_messages_and_statuses() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        let e = http_error(404, &error_detail(body), Op::Manifest);
        assert_eq!((e.status, e.http_status), (Status::ManifestUnknown, 404));
        assert!(
            e.message.contains("MANIFEST_UNKNOWN: manifest unknown"),
            "{}",
            e.message
        );
        assert_eq!(http_error(404, "", Op::Blob).status, Status::Registry);
        assert_eq!(http_error(401, "", Op::Blob).status, Status::AuthRequired);
        assert_eq!(http_error(403, "", Op::Blob).status, Status::AuthFailed);
        let e = http_error(
            502,
            &error_detail(b"<html>bad gateway</html>"),
            Op::Manifest,
        );
        assert_eq!((e.status, e.http_status), (Status::Registry, 502));
        assert!(e.message.contains("bad gateway"));
        let long = vec![b'x'; 5000];
        assert!(error_detail(&long).chars().count() < 400);
    }

    #[test]
    fn only_hashed_names_are_read_from_ssl_cert_dir() {
        let ok = |n: &str| is_hashed_cert_name(std::path::Path::new(n));
        assert!(ok("/etc/ssl/certs/5ad8a5d6.0"));
        assert!(ok("a1B2c3D4.12"));
        assert!(!ok("/etc/ssl/certs/ca-certificates.crt"));
        assert!(!ok("ISRG_Root_X1.pem"));
        assert!(!ok("5ad8a5d6.r0"));
        assert!(!ok("5ad8a5d6."));
    }

    #[test]
    fn system_roots_are_found() {
        // Debian's ca-certificates; a machine without any bundle has nothing to test here.
        if !std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
            eprintln!("skipped: no /etc/ssl/certs/ca-certificates.crt");
            return;
        }
        assert!(system_roots().len() > 50);
    }

    #[test]
    fn docker_hub_is_reached_on_its_api_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("quay.io"), "quay.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
