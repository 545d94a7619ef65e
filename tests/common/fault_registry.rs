//! A registry written for the tests: it serves images built in memory over plain HTTP on
//! loopback, speaks enough of the distribution API for a pull (`/v2/`, manifests, blobs with
//! Range, tag lists with pagination), logs every request, and misbehaves on request: error
//! statuses (with Retry-After), bodies cut off or stalled after N bytes, corrupted bytes,
//! redirects to another server, throttled bodies, a huge manifest streamed without being held
//! in memory.
//!
//! Used with `#[path = "common/fault_registry.rs"] mod fault_registry;`. One thread per
//! connection; every response closes its connection, so a fault never leaks into the next
//! request.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Deterministic incompressible bytes (xorshift), so a gzip layer is about as large as its file.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An image: its manifest, config and layer blobs.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    /// (digest, gzip bytes) per layer, bottom first.
    pub layers: Vec<(String, Vec<u8>)>,
    pub diff_ids: Vec<String>,
}

impl TestImage {
    /// One gzip layer per entry of `layers`, each a list of (path, content) regular files.
    pub fn build(layers: &[Vec<(&str, Vec<u8>)>]) -> TestImage {
        let mut blobs = Vec::new();
        let mut diff_ids = Vec::new();
        for files in layers {
            let mut tar = tar::Builder::new(Vec::new());
            for (path, data) in files {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(1_600_000_000);
                header.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut header, path, data.as_slice())
                    .expect("tar entry");
            }
            let raw = tar.into_inner().expect("tar");
            diff_ids.push(sha256(&raw));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&raw).expect("gzip");
            let gz = gz.finish().expect("gzip");
            blobs.push((sha256(&gz), gz));
        }
        let config = serde_json::json!({
            "architecture": host_arch(), "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/bin"], "Labels": {"test": "fault-registry"}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes();
        let config_digest = sha256(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": blobs.iter().map(|(d, b)| serde_json::json!(
                {"mediaType": GZIP_LAYER, "digest": d, "size": b.len()})).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        TestImage {
            manifest_digest: sha256(&manifest),
            manifest,
            config,
            config_digest,
            layers: blobs,
            diff_ids,
        }
    }

    /// Two layers: a small one, and one with `big` bytes of noise (for cuts and stalls).
    pub fn with_big_layer(big: usize, seed: u64) -> TestImage {
        TestImage::build(&[
            vec![("etc/hello", b"hello\n".to_vec())],
            vec![("data/big.bin", noise(big, seed))],
        ])
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|(d, _)| d.clone()).collect()
    }
}

/// The GOARCH name of this machine, as image configs spell it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// What to do instead of (or to) the normal response.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and a distribution-spec error body (and Retry-After seconds).
    Status { code: u16, retry_after: Option<u64> },
    /// Answer with this status and Retry-After as an HTTP date this long after the response.
    StatusUntil { code: u16, after: Duration },
    /// Send the headers (full Content-Length) and this many body bytes, then close.
    Truncate { after: u64 },
    /// Stop sending at this offset of the whole blob (a Range request for bytes after it gets
    /// the headers and nothing), keeping the connection open and silent for a minute.
    Stall { at: u64 },
    /// Flip one byte in the middle of the body (same length: a lying digest).
    Corrupt,
    /// 307 to the same path on another server (`http://127.0.0.1:PORT`).
    Redirect { to: String },
    /// Send the body at this many bytes per second.
    Throttle { bytes_per_second: u64 },
}

struct Rule {
    method: Option<String>,
    path_contains: String,
    fault: Fault,
    /// How many more requests it applies to.
    remaining: usize,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

/// repository → tag or digest → (media type, manifest)
type Manifests = HashMap<String, HashMap<String, (String, Vec<u8>)>>;

/// repository → tag → size of a huge manifest streamed on the fly, and how it is framed
type HugeManifests = HashMap<String, HashMap<String, (u64, Framing)>>;

#[derive(Default)]
struct State {
    manifests: Mutex<Manifests>,
    /// repository → tags, sorted
    tags: Mutex<HashMap<String, Vec<String>>>,
    blobs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    huge: Mutex<HugeManifests>,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Request>>,
    /// false: a Range header is ignored (200 with the whole body), as some servers do.
    honour_range: AtomicBool,
    /// Body bytes sent in all.
    sent: AtomicU64,
}

pub struct FaultRegistry {
    port: u16,
    state: Arc<State>,
}

impl FaultRegistry {
    pub fn start() -> FaultRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault registry");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(State::default());
        state.honour_range.store(true, Ordering::SeqCst);
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        FaultRegistry { port, state }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `docker://127.0.0.1:PORT/REPO:TAG`
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("docker://{}/{repo}:{tag}", self.host_port())
    }

    pub fn add_blob(&self, data: Vec<u8>) -> String {
        let digest = sha256(&data);
        self.state
            .blobs
            .lock()
            .unwrap()
            .insert(digest.clone(), Arc::new(data));
        digest
    }

    /// Publishes the manifest under `tag` and its digest, without its blobs.
    pub fn add_manifest(&self, repo: &str, tag: &str, media_type: &str, manifest: &[u8]) {
        let mut all = self.state.manifests.lock().unwrap();
        let entry = all.entry(repo.to_string()).or_default();
        let value = (media_type.to_string(), manifest.to_vec());
        entry.insert(sha256(manifest), value.clone());
        entry.insert(tag.to_string(), value);
        let mut tags = self.state.tags.lock().unwrap();
        let list = tags.entry(repo.to_string()).or_default();
        if !list.iter().any(|t| t == tag) {
            list.push(tag.to_string());
            list.sort();
        }
    }

    /// Publishes the image (manifest, config, layers) as REPO:TAG.
    pub fn add_image(&self, repo: &str, tag: &str, image: &TestImage) {
        self.add_blob(image.config.clone());
        for (_, data) in &image.layers {
            self.add_blob(data.clone());
        }
        self.add_manifest(repo, tag, OCI_MANIFEST, &image.manifest);
    }

    /// REPO:TAG answers with a manifest of `size` bytes (spaces), made while sending.
    pub fn add_huge_manifest(&self, repo: &str, tag: &str, size: u64) {
        self.add_huge_manifest_framed(repo, tag, size, Framing::Length);
    }

    /// As `add_huge_manifest`, sent chunked (no length announced) or under a Content-Length
    /// that lies.
    pub fn add_huge_manifest_framed(&self, repo: &str, tag: &str, size: u64, framing: Framing) {
        self.state
            .huge
            .lock()
            .unwrap()
            .entry(repo.to_string())
            .or_default()
            .insert(tag.to_string(), (size, framing));
    }

    /// The next `times` requests whose path contains `path_contains` (and whose method is
    /// `method`, if given) get `fault`.
    pub fn fault(&self, method: Option<&str>, path_contains: &str, fault: Fault, times: usize) {
        self.state.rules.lock().unwrap().push(Rule {
            method: method.map(String::from),
            path_contains: path_contains.to_string(),
            fault,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    pub fn set_honour_range(&self, honour: bool) {
        self.state.honour_range.store(honour, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests with this method whose path contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    pub fn body_bytes_sent(&self) -> u64 {
        self.state.sent.load(Ordering::SeqCst)
    }
}

/// How a body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A true Content-Length.
    Length,
    /// Transfer-Encoding: chunked, no length announced.
    Chunked,
    /// This Content-Length, whatever the body's size (the whole body is sent all the same).
    LyingLength(u64),
}

/// A response before faults: status, headers, body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    /// Where the body starts in the whole blob (a Range response).
    offset: u64,
    framing: Framing,
}

enum Body {
    Bytes(Arc<Vec<u8>>),
    /// `n` spaces, generated while sending.
    Spaces(u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Spaces(n) => *n,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn error_response(status: u16, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: Body::Bytes(Arc::new(body.into_bytes())),
        offset: 0,
        framing: Framing::Length,
    }
}

fn serve(conn: TcpStream, state: &State) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let range = headers.get("range").cloned();
    state.log.lock().unwrap().push(Request {
        method: method.clone(),
        path: path.clone(),
        range: range.clone(),
    });
    let fault = {
        let mut rules = state.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| {
                r.remaining > 0
                    && path.contains(&r.path_contains)
                    && r.method.as_deref().map(|m| m == method).unwrap_or(true)
            })
            .map(|r| {
                r.remaining -= 1;
                r.fault.clone()
            })
    };
    let mut response = route(state, &method, &path, &query, range.as_deref());
    match &fault {
        Some(Fault::Status { code, retry_after }) => {
            // What registries send: 429 carries TOOMANYREQUESTS (the status a client sees
            // through an error envelope), 5xx whatever.
            let error_code = if *code == 429 {
                "TOOMANYREQUESTS"
            } else {
                "UNKNOWN"
            };
            response = error_response(*code, error_code, "injected failure");
            if let Some(s) = retry_after {
                response.headers.push(("Retry-After".into(), s.to_string()));
            }
        }
        Some(Fault::StatusUntil { code, after }) => {
            response = error_response(*code, "TOOMANYREQUESTS", "injected failure");
            let at = std::time::SystemTime::now() + *after;
            response.headers.push(("Retry-After".into(), http_date(at)));
        }
        Some(Fault::Redirect { to }) => {
            let location = if query.is_empty() {
                format!("{to}{path}")
            } else {
                format!("{to}{path}?{query}")
            };
            response = Response {
                status: 307,
                headers: vec![("Location".into(), location)],
                body: Body::Bytes(Arc::new(Vec::new())),
                offset: 0,
                framing: Framing::Length,
            };
        }
        Some(Fault::Corrupt) => {
            if let Body::Bytes(b) = &response.body {
                let mut copy = b.as_ref().clone();
                if !copy.is_empty() {
                    let mid = copy.len() / 2;
                    copy[mid] ^= 0xff;
                }
                response.body = Body::Bytes(Arc::new(copy));
            }
        }
        _ => {}
    }
    let _ = write_response(conn, state, &method, response, fault.as_ref());
}

fn route(state: &State, method: &str, path: &str, query: &str, range: Option<&str>) -> Response {
    if path == "/v2/" || path == "/v2" {
        return Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Bytes(Arc::new(b"{}".to_vec())),
            offset: 0,
            framing: Framing::Length,
        };
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return error_response(404, "NOT_FOUND", "no such path");
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        if let Some((size, framing)) = state
            .huge
            .lock()
            .unwrap()
            .get(repo)
            .and_then(|m| m.get(reference))
            .copied()
        {
            return Response {
                status: 200,
                // No digest header for GET (the client would compare it first and never get to
                // the size); HEAD announces a digest that names nothing.
                headers: if method == "HEAD" {
                    vec![
                        ("Content-Type".into(), OCI_MANIFEST.into()),
                        ("Docker-Content-Digest".into(), sha256(b"huge")),
                    ]
                } else {
                    vec![("Content-Type".into(), OCI_MANIFEST.into())]
                },
                body: Body::Spaces(size),
                offset: 0,
                framing,
            };
        }
        let found = state
            .manifests
            .lock()
            .unwrap()
            .get(repo)
            .and_then(|m| m.get(reference))
            .cloned();
        return match found {
            Some((media_type, data)) => Response {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), media_type),
                    ("Docker-Content-Digest".into(), sha256(&data)),
                ],
                body: Body::Bytes(Arc::new(data)),
                offset: 0,
                framing: Framing::Length,
            },
            None => error_response(404, "MANIFEST_UNKNOWN", "manifest unknown"),
        };
    }
    if let Some((_repo, digest)) = rest.rsplit_once("/blobs/") {
        let Some(data) = state.blobs.lock().unwrap().get(digest).cloned() else {
            return error_response(404, "BLOB_UNKNOWN", "blob unknown");
        };
        let mut headers = vec![
            ("Content-Type".into(), "application/octet-stream".into()),
            ("Docker-Content-Digest".into(), digest.to_string()),
            ("Accept-Ranges".into(), "bytes".into()),
        ];
        let start = range
            .filter(|_| state.honour_range.load(Ordering::SeqCst))
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.parse::<usize>().ok());
        if let Some(start) = start {
            if start >= data.len() {
                return error_response(416, "RANGE_INVALID", "range not satisfiable");
            }
            headers.push((
                "Content-Range".into(),
                format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
            ));
            return Response {
                status: 206,
                headers,
                body: Body::Bytes(Arc::new(data[start..].to_vec())),
                offset: start as u64,
                framing: Framing::Length,
            };
        }
        return Response {
            status: 200,
            headers,
            body: Body::Bytes(data),
            offset: 0,
            framing: Framing::Length,
        };
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        let all = state
            .tags
            .lock()
            .unwrap()
            .get(repo)
            .cloned()
            .unwrap_or_default();
        let param = |key: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .map(String::from)
        };
        let n: usize = param("n")
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        let last = param("last");
        let page: Vec<&String> = all
            .iter()
            .filter(|t| last.as_ref().map(|l| *t > l).unwrap_or(true))
            .take(n)
            .collect();
        let body = serde_json::json!({"name": repo, "tags": page}).to_string();
        return Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Bytes(Arc::new(body.into_bytes())),
            offset: 0,
            framing: Framing::Length,
        };
    }
    error_response(404, "NOT_FOUND", "no such path")
}

fn write_response(
    mut conn: TcpStream,
    state: &State,
    method: &str,
    response: Response,
    fault: Option<&Fault>,
) -> std::io::Result<()> {
    let length = match response.framing {
        Framing::Length => format!("Content-Length: {}\r\n", response.body.len()),
        Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_string(),
        Framing::LyingLength(n) => format!("Content-Length: {n}\r\n"),
    };
    let chunked = response.framing == Framing::Chunked && method != "HEAD";
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n{length}Connection: close\r\n",
        response.status,
        reason(response.status),
    );
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return Ok(());
    }
    let limit = match fault {
        Some(Fault::Truncate { after }) => *after,
        Some(Fault::Stall { at }) => at.saturating_sub(response.offset),
        _ => u64::MAX,
    };
    let rate = match fault {
        Some(Fault::Throttle { bytes_per_second }) => *bytes_per_second,
        _ => 0,
    };
    let total = response.body.len().min(limit);
    let chunk = if rate > 0 {
        (rate / 20).clamp(256, 64 * 1024)
    } else {
        64 * 1024
    };
    let spaces = vec![b' '; chunk as usize];
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(chunk) as usize;
        let frame = if chunked {
            conn.write_all(format!("{n:x}\r\n").as_bytes())
        } else {
            Ok(())
        };
        let result = frame.and_then(|()| match &response.body {
            Body::Bytes(b) => conn.write_all(&b[sent as usize..sent as usize + n]),
            Body::Spaces(_) => conn.write_all(&spaces[..n]),
        });
        let result = result.and_then(|()| {
            if chunked {
                conn.write_all(b"\r\n")
            } else {
                Ok(())
            }
        });
        if result.is_err() {
            // The client gave up (a refused manifest, a cancelled pull): stop generating.
            return Ok(());
        }
        sent += n as u64;
        state.sent.fetch_add(n as u64, Ordering::SeqCst);
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    if chunked {
        conn.write_all(b"0\r\n\r\n")?;
    }
    conn.flush()?;
    match fault {
        Some(Fault::Stall { .. }) => {
            // Keep the connection open and silent; notice when the client hangs up.
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = [0u8; 1];
            for _ in 0..300 {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        }
        Some(Fault::Truncate { .. }) => {
            let _ = conn.shutdown(Shutdown::Both);
        }
        _ => {}
    }
    Ok(())
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate) for `at`.
pub fn http_date(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
