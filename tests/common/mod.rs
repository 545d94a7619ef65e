//! Shared harness of the integration tests that drive cimagectl, podman, skopeo, umoci and the
//! containers-storage CLI against real stores and a real loopback registry.
//!
//! Per test process (one per tests/*.rs file), built once on first use:
//! * `fixtures()`: the OCI layouts of tests/support/mkimage.py in a private work directory;
//! * `registry()`: Debian's docker-registry on a free loopback port with every fixture pushed;
//! * `cimagectl()`: the library (`$CARGO build --lib`) and c-examples/cimagectl.c compiled
//!   against it.
//!
//! The registry dies with the test process (PR_SET_PDEATHSIG) and the work directory is removed
//! at exit.
//!
//! Tests that need root or a missing tool print `SKIP: …` on stderr and return. With `CI=true`
//! (as .ci/run runs) or `CIMAGE_TEST_STRICT=1` a skip is a failure instead: CI installs every
//! tool and runs as root, so a skip there means the setup is broken, not that the test passed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const TAG: &str = "t";
pub const REPO_PREFIX: &str = "cimage-test";

// ------------------------------------------------------------------------------------------
// skipping

/// True when skipping is not allowed (CI): a missing prerequisite fails the test instead.
pub fn strict() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
        || std::env::var("CIMAGE_TEST_STRICT")
            .map(|v| v == "1")
            .unwrap_or(false)
}

/// Report a skip loudly (or fail in strict mode). Returns false so callers can `return`.
pub fn skip(why: &str) -> bool {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    if strict() {
        panic!("{test}: cannot run: {why} (CI=true / CIMAGE_TEST_STRICT=1 forbid skipping)");
    }
    eprintln!("SKIP: {test}: {why}");
    false
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `if !ensure_root_or_skip("mounts overlay") { return; }`
pub fn ensure_root_or_skip(why: &str) -> bool {
    if is_root() {
        true
    } else {
        skip(&format!("needs root: {why}"))
    }
}

pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                fs::metadata(dir.join(name))
                    .map(|m| m.is_file() && m.mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// `if !ensure_tools_or_skip(&["podman", "skopeo"]) { return; }`
pub fn ensure_tools_or_skip(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    if missing.is_empty() {
        true
    } else {
        skip(&format!(
            "missing tools: {} (see .ci/run for the Debian packages)",
            missing.join(", ")
        ))
    }
}

// ------------------------------------------------------------------------------------------
// paths and the per-process work directory

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn support(script: &str) -> PathBuf {
    repo_dir().join("tests/support").join(script)
}

pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => repo_dir().join(dir),
        None => repo_dir().join("target"),
    }
}

static WORK_DIR: OnceLock<PathBuf> = OnceLock::new();
static CLEANUP_PIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

extern "C" fn cleanup_at_exit() {
    if let Ok(pids) = CLEANUP_PIDS.lock() {
        for &pid in pids.iter() {
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    if let Some(dir) = WORK_DIR.get() {
        unmount_all_under(dir);
        let _ = fs::remove_dir_all(dir);
    }
}

/// A private directory for this test process, removed at exit.
pub fn work_dir() -> &'static Path {
    WORK_DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("cimage-tests-")
            .tempdir()
            .expect("create the work directory")
            .keep();
        unsafe { libc::atexit(cleanup_at_exit) };
        dir
    })
}

// ------------------------------------------------------------------------------------------
// running commands

/// Exit code (or 128+signal), stdout and stderr of a finished command.
#[derive(Debug, Clone)]
pub struct Ran {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn from_output(out: Output) -> Ran {
        use std::os::unix::process::ExitStatusExt;
        let status = out
            .status
            .code()
            .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        Ran {
            status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

pub fn run(cmd: &mut Command) -> Ran {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)));
    Ran::from_output(out)
}

/// Runs the command and panics with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Ran {
    let r = run(cmd);
    assert!(
        r.ok(),
        "`{}` failed with {}\nstdout:\n{}\nstderr:\n{}",
        describe(cmd),
        r.status,
        r.stdout,
        r.stderr
    );
    r
}

// ------------------------------------------------------------------------------------------
// fixtures

/// The images of tests/support/mkimage.py, as OCI layouts plus their description.
pub struct Fixtures {
    pub dir: PathBuf,
    pub meta: Value,
}

impl Fixtures {
    pub fn image(&self, name: &str) -> &Value {
        let v = &self.meta["images"][name];
        assert!(!v.is_null(), "mkimage.py built no image {name:?}");
        v
    }

    pub fn has(&self, name: &str) -> bool {
        !self.meta["images"][name].is_null()
    }

    pub fn layout_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `oci:DIR:t`
    pub fn oci_ref(&self, name: &str) -> String {
        format!("oci:{}:{TAG}", self.layout_dir(name).display())
    }

    pub fn sentinel(&self) -> PathBuf {
        PathBuf::from(self.meta["sentinel"].as_str().expect("sentinel"))
    }

    pub fn sentinel_target(&self) -> PathBuf {
        PathBuf::from(
            self.meta["sentinel_target"]
                .as_str()
                .expect("sentinel_target"),
        )
    }

    /// Image ID (config digest hex) of a single-manifest image.
    pub fn id(&self, name: &str) -> String {
        str_of(&self.image(name)["id"])
    }

    pub fn manifest_digest(&self, name: &str) -> String {
        str_of(&self.image(name)["manifest_digest"])
    }

    pub fn diff_ids(&self, name: &str) -> Vec<String> {
        strings(&self.image(name)["diff_ids"])
    }

    /// Manifest layer descriptors' digests (the compressed blobs).
    pub fn blob_digests(&self, name: &str) -> Vec<String> {
        self.image(name)["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| str_of(&l["digest"]))
            .collect()
    }

    pub fn diff_sizes(&self, name: &str) -> Vec<i64> {
        self.image(name)["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["diff_size"].as_i64().expect("diff_size"))
            .collect()
    }

    pub fn config_digest(&self, name: &str) -> String {
        str_of(&self.image(name)["config_digest"])
    }

    /// Layer IDs of the image as containers/storage computes them (store-format.md §3.2).
    pub fn layer_ids(&self, name: &str) -> Vec<String> {
        layer_ids(&self.diff_ids(name))
    }
}

pub fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_string()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(str_of)
        .collect()
}

pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// id(1) = hex(DiffID 1); id(n) = hex(sha256(id(n-1) + "+" + hex(DiffID n))).
pub fn layer_ids(diff_ids: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for d in diff_ids {
        let hex = hex_of(d).to_string();
        let id = match ids.last() {
            None => hex,
            Some(parent) => sha256_hex(format!("{parent}+{hex}").as_bytes()),
        };
        ids.push(id);
    }
    ids
}

static FIXTURES: OnceLock<Option<Fixtures>> = OnceLock::new();

/// The fixture images (built once per process), or None after a loud skip.
pub fn fixtures() -> Option<&'static Fixtures> {
    FIXTURES
        .get_or_init(|| {
            if !ensure_tools_or_skip(&["python3"]) {
                return None;
            }
            let dir = work_dir().join("images");
            run_ok(
                Command::new("python3")
                    .arg(support("mkimage.py"))
                    .arg(&dir)
                    .arg("--sentinel")
                    .arg(work_dir().join("sentinel")),
            );
            let meta: Value = serde_json::from_slice(
                &fs::read(dir.join("images.json")).expect("read images.json"),
            )
            .expect("parse images.json");
            Some(Fixtures { dir, meta })
        })
        .as_ref()
}

// ------------------------------------------------------------------------------------------
// registry

pub struct Registry {
    port: u16,
    pub dir: PathBuf,
    pub pid: i32,
}

impl Registry {
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT/cimage-test/NAME:t` (the bare-name form)
    pub fn name(&self, name: &str) -> String {
        format!("{}/{REPO_PREFIX}/{name}:{TAG}", self.host_port())
    }

    /// `docker://127.0.0.1:PORT/cimage-test/NAME:t`
    pub fn image_ref(&self, name: &str) -> String {
        format!("docker://{}", self.name(name))
    }

    pub fn layout_dir(&self, name: &str) -> PathBuf {
        fixtures().expect("fixtures").layout_dir(name)
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}

/// True when `GET /v2/` on the port answers 200.
pub fn registry_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") && &buf[9..12] == b"200"
}

/// Spawns a command from a thread that never exits, with PR_SET_PDEATHSIG: the child dies with
/// this process (pdeathsig fires when the spawning *thread* exits, so not from a test thread).
pub fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<std::process::Child> {
    let (tx, rx) = std::sync::mpsc::channel();
    let cmd_desc = describe(&cmd);
    std::thread::Builder::new()
        .name(format!("keeper: {cmd_desc}"))
        .spawn(move || {
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        })?;
    rx.recv().expect("keeper thread answered")
}

static REGISTRY: OnceLock<Option<Registry>> = OnceLock::new();

/// One registry per test process with every fixture published, or None after a loud skip.
pub fn registry() -> Option<&'static Registry> {
    REGISTRY
        .get_or_init(|| {
            if !ensure_tools_or_skip(&["docker-registry", "skopeo", "bash"]) {
                return None;
            }
            let fx = fixtures()?;
            let dir = work_dir().join("registry");
            fs::create_dir_all(&dir).expect("registry dir");
            // A port can be taken between probing and binding: try a few.
            for _attempt in 0..5 {
                let port = free_port();
                let log = fs::File::create(dir.join("registry.log")).expect("registry log");
                let mut cmd = Command::new("bash");
                cmd.arg(support("registry.sh"))
                    .arg("run")
                    .arg(&dir)
                    .arg(port.to_string())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().expect("dup log"))
                    .stderr(log);
                let mut child = spawn_tied_to_process(cmd).expect("start docker-registry");
                let pid = child.id() as i32;
                CLEANUP_PIDS.lock().unwrap().push(pid);
                let deadline = Instant::now() + Duration::from_secs(15);
                let mut up = false;
                while Instant::now() < deadline {
                    if registry_answers(port) {
                        up = true;
                        break;
                    }
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                if !up {
                    let _ = child.kill();
                    let _ = child.wait();
                    eprintln!(
                        "registry on port {port} did not come up; log:\n{}",
                        fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
                    );
                    continue;
                }
                std::mem::forget(child);
                run_ok(
                    Command::new("bash")
                        .arg(support("publish.sh"))
                        .arg(&fx.dir)
                        .arg(port.to_string())
                        .arg(&dir),
                );
                return Some(Registry { port, dir, pid });
            }
            panic!("could not start docker-registry on a loopback port");
        })
        .as_ref()
}

/// Fixtures and registry, or None (skipped).
pub fn fixtures_and_registry() -> Option<(&'static Fixtures, &'static Registry)> {
    let fx = fixtures()?;
    let reg = registry()?;
    Some((fx, reg))
}

// ------------------------------------------------------------------------------------------
// a TCP proxy in front of the registry: counts bytes, can be slowed down or cut off

pub struct Proxy {
    port: u16,
    /// Bytes sent from the registry to clients.
    pub downstream: Arc<AtomicU64>,
    /// Request lines seen from clients (`GET /v2/… HTTP/1.1`).
    log: Arc<Mutex<Vec<String>>>,
    /// Bytes per second from the registry to each client connection (0 = unlimited).
    pub rate: Arc<AtomicU64>,
    /// When set, new connections are closed at once and open ones are cut.
    down: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target_port: u16, bytes_per_second: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            downstream: Arc::new(AtomicU64::new(0)),
            log: Arc::new(Mutex::new(Vec::new())),
            rate: Arc::new(AtomicU64::new(bytes_per_second)),
            down: Arc::new(AtomicBool::new(false)),
        };
        let (d, log, r, dn) = (
            proxy.downstream.clone(),
            proxy.log.clone(),
            proxy.rate.clone(),
            proxy.down.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if dn.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let up = Direction::Upstream(log.clone());
                let down = Direction::Downstream(d.clone(), r.clone());
                let (dn2, dn3) = (dn.clone(), dn.clone());
                std::thread::spawn(move || pump(client, server, up, dn2));
                std::thread::spawn(move || pump(s2, c2, down, dn3));
            }
        });
        proxy
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn image_ref(&self, name: &str) -> String {
        format!("docker://{}/{REPO_PREFIX}/{name}:{TAG}", self.host_port())
    }

    pub fn name(&self, name: &str) -> String {
        format!("{}/{REPO_PREFIX}/{name}:{TAG}", self.host_port())
    }

    /// Request lines seen so far.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// GET requests for a blob (`/blobs/<digest>`).
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with("GET ") && r.contains(&format!("/blobs/{digest}")))
            .count()
    }

    pub fn reset_counters(&self) {
        self.downstream.store(0, Ordering::SeqCst);
        self.log.lock().unwrap().clear();
    }

    pub fn set_rate(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Cut every connection and refuse new ones (true), or serve again (false).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

enum Direction {
    /// client → registry: record request lines
    Upstream(Arc<Mutex<Vec<String>>>),
    /// registry → client: count bytes, throttle to the rate
    Downstream(Arc<AtomicU64>, Arc<AtomicU64>),
}

fn pump(mut from: TcpStream, mut to: TcpStream, dir: Direction, down: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending_line: Vec<u8> = Vec::new();
    let started = Instant::now();
    let mut sent: u64 = 0;
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    loop {
        if down.load(Ordering::SeqCst) {
            break;
        }
        let limit = match &dir {
            Direction::Downstream(_, rate) => rate.load(Ordering::SeqCst),
            Direction::Upstream(_) => 0,
        };
        // Small chunks when throttled, so the rate is smooth.
        let chunk = if limit > 0 {
            buf.len().min((limit / 20).max(512) as usize)
        } else {
            buf.len()
        };
        let n = match from.read(&mut buf[..chunk]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => break,
        };
        if let Direction::Upstream(log) = &dir {
            pending_line.extend_from_slice(&buf[..n]);
            while let Some(pos) = pending_line.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&pending_line[..pos]).into_owned();
                pending_line.drain(..pos + 2);
                let is_request = ["GET ", "HEAD ", "POST ", "PUT ", "PATCH ", "DELETE "]
                    .iter()
                    .any(|m| line.starts_with(m));
                if is_request {
                    log.lock().unwrap().push(line);
                }
            }
            if pending_line.len() > 64 * 1024 {
                pending_line.clear();
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Direction::Downstream(counter, _) = &dir {
            counter.fetch_add(n as u64, Ordering::SeqCst);
        }
        sent += n as u64;
        if limit > 0 {
            let due = Duration::from_secs_f64(sent as f64 / limit as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

// ------------------------------------------------------------------------------------------
// cimagectl

static CIMAGECTL: OnceLock<PathBuf> = OnceLock::new();

/// Builds the library and c-examples/cimagectl.c once per process; returns the binary.
/// A missing source or a failing build is a test failure, not a skip.
pub fn cimagectl() -> &'static Path {
    CIMAGECTL.get_or_init(|| {
        let repo = repo_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(&cargo);
        build.current_dir(&repo).args(["build", "--lib"]);
        if std::env::args().any(|a| a == "--locked") || std::env::var_os("CI").is_some() {
            build.arg("--locked");
        }
        run_ok(&mut build);
        let source = repo.join("c-examples/cimagectl.c");
        assert!(source.is_file(), "{} is missing", source.display());
        let header = repo.join("include/cimage.h");
        assert!(header.is_file(), "{} is missing", header.display());
        let lib_dir = target_dir().join("debug");
        assert!(
            lib_dir.join("libcimage.so").is_file(),
            "{}/libcimage.so missing after cargo build --lib",
            lib_dir.display()
        );
        let out = work_dir().join("cimagectl");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let mut compile = Command::new(cc);
        compile
            .current_dir(&repo)
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
            .arg(format!("-I{}", repo.join("include").display()))
            .arg("c-examples/cimagectl.c")
            .arg(format!("-L{}", lib_dir.display()))
            .arg("-lcimage")
            .arg(format!("-Wl,-rpath,{}", lib_dir.display()));
        // The library may carry a SONAME (libcimage.so.0.1) that cargo does not create in
        // target/debug: the loader would not find it there. Provide that name in a private
        // directory, searched after target/debug.
        if let Some(soname) = soname(&lib_dir.join("libcimage.so")) {
            if !lib_dir.join(&soname).exists() {
                let private = work_dir().join("lib");
                fs::create_dir_all(&private).expect("private lib dir");
                let link = private.join(&soname);
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(lib_dir.join("libcimage.so"), &link)
                    .expect("SONAME symlink");
                eprintln!(
                    "note: {} has SONAME {soname}, absent from {}: linked it from {}",
                    lib_dir.join("libcimage.so").display(),
                    lib_dir.display(),
                    private.display()
                );
                compile.arg(format!("-Wl,-rpath,{}", private.display()));
            }
        }
        run_ok(compile.arg("-o").arg(&out));
        out
    })
}

/// The DT_SONAME of a shared library (readelf, else a scan of its bytes for "libcimage.so.").
pub fn soname(lib: &Path) -> Option<String> {
    if let Ok(out) = Command::new("readelf").arg("-d").arg(lib).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = text.lines().find(|l| l.contains("(SONAME)")) {
            let start = line.find('[')? + 1;
            let end = line.rfind(']')?;
            return Some(line[start..end].to_string());
        }
        if out.status.success() {
            return None;
        }
    }
    let bytes = fs::read(lib).ok()?;
    let needle = b"libcimage.so.";
    let pos = bytes.windows(needle.len()).position(|w| w == needle)?;
    let end = bytes[pos..].iter().position(|b| *b == 0)? + pos;
    Some(String::from_utf8_lossy(&bytes[pos..end]).into_owned())
}

// ------------------------------------------------------------------------------------------
// stores

/// A throw-away store (graph root + run root) driven by cimagectl and the other tools.
pub struct Store {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub run_root: PathBuf,
    pub driver: String,
}

impl Store {
    pub fn new(driver: &str) -> Store {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cimage-store-{driver}-"))
            .tempdir()
            .expect("store temp dir")
            .keep();
        let store = Store {
            root: dir.join("root"),
            run_root: dir.join("run"),
            driver: driver.to_string(),
            dir,
        };
        fs::create_dir_all(store.dir.join("podtmp")).expect("podman tmpdir");
        store
    }

    /// `D-layers`, `D-images`, … metadata directory of this store.
    pub fn meta_dir(&self, kind: &str) -> PathBuf {
        self.root.join(format!("{}-{kind}", self.driver))
    }

    pub fn base_args(&self) -> Vec<String> {
        vec![
            "-d".into(),
            self.driver.clone(),
            "-r".into(),
            self.root.display().to_string(),
            "-R".into(),
            self.run_root.display().to_string(),
        ]
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(cimagectl());
        cmd.args(self.base_args()).args(args);
        cmd
    }

    /// Runs `cimagectl -d D -r R -R RR ARGS…`.
    pub fn cmd(&self, args: &[&str]) -> Ran {
        run(&mut self.command(args))
    }

    /// Like `cmd`, asserting exit 0.
    pub fn ok(&self, args: &[&str]) -> Ran {
        run_ok(&mut self.command(args))
    }

    /// `cimagectl … --json ARGS…`, asserting exit 0, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let r = self.ok(&full);
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "cimagectl {args:?}: stdout is not one JSON document ({e}):\n{}",
                r.stdout
            )
        })
    }

    /// Asserts exit status 1 and the error line `cimagectl: STATUS: message` for one of the
    /// given status names; returns the run.
    pub fn fails(&self, args: &[&str], statuses: &[&str]) -> Ran {
        let r = self.cmd(args);
        assert_error_line(&r, statuses, &format!("cimagectl {args:?}"));
        r
    }

    pub fn images(&self) -> Vec<Value> {
        self.json(&["images"])
            .as_array()
            .expect("images array")
            .clone()
    }

    pub fn layers(&self) -> Vec<Value> {
        self.json(&["layers"])
            .as_array()
            .expect("layers array")
            .clone()
    }

    pub fn containers(&self) -> Vec<Value> {
        self.json(&["containers"])
            .as_array()
            .expect("containers array")
            .clone()
    }

    /// Reads a metadata JSON file (`layers.json` etc.): missing or empty = [].
    pub fn read_list(&self, path: &Path) -> Vec<Value> {
        match fs::read(path) {
            Ok(bytes) if bytes.is_empty() => Vec::new(),
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
                .as_array()
                .unwrap_or_else(|| panic!("{} is not an array", path.display()))
                .clone(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }

    pub fn layers_json(&self) -> Vec<Value> {
        self.read_list(&self.meta_dir("layers").join("layers.json"))
    }

    pub fn images_json(&self) -> Vec<Value> {
        self.read_list(&self.meta_dir("images").join("images.json"))
    }

    pub fn containers_json(&self) -> Vec<Value> {
        self.read_list(&self.meta_dir("containers").join("containers.json"))
    }

    pub fn mountpoints_json(&self) -> Vec<Value> {
        self.read_list(
            &self
                .run_root
                .join(format!("{}-layers", self.driver))
                .join("mountpoints.json"),
        )
    }

    /// Mount count recorded in mountpoints.json for a layer (0 when absent).
    pub fn mount_count(&self, layer: &str) -> i64 {
        self.mountpoints_json()
            .iter()
            .find(|m| m["id"] == layer)
            .map(|m| m["count"].as_i64().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The four lock files whose 64-byte tokens change on writes.
    pub fn lock_files(&self) -> BTreeMap<&'static str, PathBuf> {
        let d = &self.driver;
        BTreeMap::from([
            (
                "layers.lock",
                self.root.join(format!("{d}-layers/layers.lock")),
            ),
            (
                "images.lock",
                self.root.join(format!("{d}-images/images.lock")),
            ),
            (
                "containers.lock",
                self.root.join(format!("{d}-containers/containers.lock")),
            ),
            (
                "mountpoints.lock",
                self.run_root.join(format!("{d}-layers/mountpoints.lock")),
            ),
        ])
    }

    pub fn lock_tokens(&self) -> BTreeMap<&'static str, Vec<u8>> {
        self.lock_files()
            .into_iter()
            .map(|(k, p)| (k, fs::read(p).unwrap_or_default()))
            .collect()
    }

    /// Where a layer's files live: overlay R/overlay/<id>/diff, vfs R/vfs/dir/<id>.
    pub fn layer_data_dir(&self, layer: &str) -> PathBuf {
        if self.driver == "overlay" {
            self.root.join("overlay").join(layer).join("diff")
        } else {
            self.root.join("vfs/dir").join(layer)
        }
    }

    /// The mount point containers/storage uses for a layer.
    pub fn expected_mount_point(&self, layer: &str) -> PathBuf {
        if self.driver == "overlay" {
            self.root.join("overlay").join(layer).join("merged")
        } else {
            self.root.join("vfs/dir").join(layer)
        }
    }

    // --- other tools on the same store (store-format.md §9 notation)

    /// `podman --root R --runroot RR --storage-driver D --tmpdir T --events-backend none
    /// --cgroup-manager cgroupfs`
    pub fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        let tmp = self.dir.join("podtmp");
        cmd.env("TMPDIR", &tmp)
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.run_root)
            .arg("--storage-driver")
            .arg(&self.driver)
            .arg("--tmpdir")
            .arg(&tmp)
            .args(["--events-backend", "none", "--cgroup-manager", "cgroupfs"]);
        cmd
    }

    /// `containers-storage --storage-driver D --graph R --run RR`
    pub fn containers_storage(&self) -> Command {
        let mut cmd = Command::new("containers-storage");
        cmd.arg("--storage-driver")
            .arg(&self.driver)
            .arg("--graph")
            .arg(&self.root)
            .arg("--run")
            .arg(&self.run_root);
        cmd
    }

    /// `containers-storage:[D@R+RR]NAME`, for skopeo.
    pub fn cs_ref(&self, name: &str) -> String {
        format!(
            "containers-storage:[{}@{}+{}]{}",
            self.driver,
            self.root.display(),
            self.run_root.display(),
            name
        )
    }

    pub fn podman_ok(&self, args: &[&str]) -> Ran {
        run_ok(self.podman().args(args))
    }

    pub fn cs_ok(&self, args: &[&str]) -> Ran {
        run_ok(self.containers_storage().args(args))
    }

    /// Mounts currently under this store's directory (from /proc/self/mountinfo).
    pub fn mounts(&self) -> Vec<MountInfo> {
        mounts_under(&self.dir)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        unmount_all_under(&self.dir);
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// `skopeo --insecure-policy`
pub fn skopeo() -> Command {
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy");
    cmd
}

/// Asserts exit status 1 and exactly one stderr line `cimagectl: STATUS: message` (STATUS one
/// of `statuses`; any status name when empty), after any progress lines.
pub fn assert_error_line(r: &Ran, statuses: &[&str], what: &str) {
    assert_eq!(
        r.status, 1,
        "{what}: expected exit status 1, got {}\nstdout:\n{}\nstderr:\n{}",
        r.status, r.stdout, r.stderr
    );
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("cimagectl: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{what}: expected one `cimagectl: STATUS: message` line on stderr, got:\n{}",
        r.stderr
    );
    let rest = &errors[0]["cimagectl: ".len()..];
    let (status, message) = rest
        .split_once(": ")
        .unwrap_or_else(|| panic!("{what}: malformed error line {:?}", errors[0]));
    assert!(
        !status.is_empty() && status.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
        "{what}: status name {status:?} is not a STATUS_NAME in {:?}",
        errors[0]
    );
    assert!(
        !message.trim().is_empty(),
        "{what}: empty message in {:?}",
        errors[0]
    );
    assert!(
        !["PANIC", "INTERNAL"].contains(&status),
        "{what}: internal failure reported: {:?}",
        errors[0]
    );
    if !statuses.is_empty() {
        assert!(
            statuses.contains(&status),
            "{what}: expected status {statuses:?}, got {:?}",
            errors[0]
        );
    }
}

// ------------------------------------------------------------------------------------------
// mounts

#[derive(Debug, Clone)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub options: String,
    pub super_options: String,
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn all_mounts() -> Vec<MountInfo> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountInfo {
                mount_point: PathBuf::from(unescape_mountinfo(l.get(4)?)),
                options: l.get(5)?.to_string(),
                fs_type: r.first()?.to_string(),
                super_options: r.get(2).map(|s| unescape_mountinfo(s)).unwrap_or_default(),
            })
        })
        .collect()
}

pub fn mounts_under(dir: &Path) -> Vec<MountInfo> {
    all_mounts()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect()
}

pub fn mount_at(path: &Path) -> Option<MountInfo> {
    all_mounts()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
}

/// Lazily unmounts everything mounted under `dir`, deepest first (repeated for stacked mounts).
pub fn unmount_all_under(dir: &Path) {
    for _round in 0..10 {
        let mut mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
        for m in mounts {
            if let Ok(c) = CString::new(m.mount_point.as_os_str().as_bytes()) {
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// file trees

/// One entry of a walked tree: everything the comparisons look at except times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: char, // f d l p c b s
    pub mode: u32,  // permission bits incl. setuid/setgid/sticky
    pub uid: u32,
    pub gid: u32,
    pub size: u64,           // regular files only (0 otherwise)
    pub content: String,     // sha256 of a regular file, symlink target, "maj:min" of devices
    pub xattrs: Vec<String>, // "name=sha256-prefix", overlay/selinux internals left out
    pub mtime: i64,          // regular files only (0 otherwise)
    pub inode: (u64, u64),
    pub nlink: u64,
}

pub fn list_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    let mut names = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr() as *mut _, names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let mut value = vec![0u8; 65536];
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr() as *mut _,
                value.len(),
            )
        };
        if len >= 0 {
            value.truncate(len as usize);
            out.push((String::from_utf8_lossy(name).into_owned(), value));
        }
    }
    out.sort();
    out
}

fn file_sha256(path: &Path) -> String {
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Walks `root` (not following symlinks) into relative path → Entry; the root itself is "".
pub fn walk_tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let md =
            fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("lstat {}: {e}", full.display()));
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_fifo() {
            'p'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else {
            's'
        };
        let content = match kind {
            'f' => file_sha256(&full),
            'l' => fs::read_link(&full)
                .map(|t| t.display().to_string())
                .unwrap_or_default(),
            'c' | 'b' => format!("{}:{}", libc::major(md.rdev()), libc::minor(md.rdev())),
            _ => String::new(),
        };
        let xattrs = list_xattrs(&full)
            .into_iter()
            .filter(|(n, _)| {
                !n.starts_with("trusted.overlay.")
                    && !n.starts_with("user.overlay.")
                    && !n.starts_with("security.")
            })
            .map(|(n, v)| format!("{n}={}", &sha256_hex(&v)[..16]))
            .collect();
        out.insert(
            rel.display().to_string(),
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == 'f' { md.size() } else { 0 },
                content,
                xattrs,
                mtime: if kind == 'f' { md.mtime() } else { 0 },
                inode: (md.dev(), md.ino()),
                nlink: md.nlink(),
            },
        );
        if kind == 'd' {
            let mut names: Vec<_> = fs::read_dir(&full)
                .unwrap_or_else(|e| panic!("readdir {}: {e}", full.display()))
                .map(|e| e.expect("dir entry").file_name())
                .collect();
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(rel.join(n));
            }
        }
    }
    out
}

/// Groups of paths that share an inode (hard links), sorted.
pub fn hardlink_groups(tree: &BTreeMap<String, Entry>) -> Vec<Vec<String>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for (p, e) in tree {
        if e.kind == 'f' {
            by_inode.entry(e.inode).or_default().push(p.clone());
        }
    }
    let mut groups: Vec<Vec<String>> = by_inode.into_values().filter(|g| g.len() > 1).collect();
    for g in &mut groups {
        g.sort();
    }
    groups.sort();
    groups
}

/// Line-per-difference comparison of two walked trees, ignoring the root entry's mode and the
/// mtimes of everything but regular files. Empty = equal.
pub fn tree_differences(
    a_name: &str,
    a: &BTreeMap<String, Entry>,
    b_name: &str,
    b: &BTreeMap<String, Entry>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (Some(x), None) => diffs.push(format!("{k:?}: only in {a_name} ({x:?})")),
            (None, Some(y)) => diffs.push(format!("{k:?}: only in {b_name} ({y:?})")),
            (Some(x), Some(y)) => {
                let mut fields = Vec::new();
                if x.kind != y.kind {
                    fields.push(format!("type {} vs {}", x.kind, y.kind));
                }
                if !k.is_empty() && x.mode != y.mode {
                    fields.push(format!("mode {:o} vs {:o}", x.mode, y.mode));
                }
                if (x.uid, x.gid) != (y.uid, y.gid) {
                    fields.push(format!("owner {}:{} vs {}:{}", x.uid, x.gid, y.uid, y.gid));
                }
                if x.size != y.size {
                    fields.push(format!("size {} vs {}", x.size, y.size));
                }
                if x.content != y.content {
                    fields.push(format!("content/target {:?} vs {:?}", x.content, y.content));
                }
                if x.xattrs != y.xattrs {
                    fields.push(format!("xattrs {:?} vs {:?}", x.xattrs, y.xattrs));
                }
                if x.mtime != y.mtime {
                    fields.push(format!("mtime {} vs {}", x.mtime, y.mtime));
                }
                if !fields.is_empty() {
                    diffs.push(format!(
                        "{k:?}: {} ({a_name} vs {b_name})",
                        fields.join(", ")
                    ));
                }
            }
            (None, None) => {}
        }
    }
    let (ga, gb) = (hardlink_groups(a), hardlink_groups(b));
    if ga != gb {
        diffs.push(format!(
            "hard-link groups: {a_name} {ga:?} vs {b_name} {gb:?}"
        ));
    }
    diffs
}

/// Asserts the fixture's expected shape (present/absent paths, opaque dir) on a root tree.
pub fn assert_fixture_shape(fx: &Fixtures, root: &Path) {
    let exp = &fx.image("fixture")["expected"];
    for (path, kind) in exp["present"].as_object().expect("present") {
        let p = root.join(path);
        let md = fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("{} should exist in the rootfs: {e}", p.display()));
        let ft = md.file_type();
        let actual = if ft.is_dir() {
            "d"
        } else if ft.is_file() {
            "f"
        } else if ft.is_symlink() {
            "l"
        } else if ft.is_fifo() {
            "p"
        } else {
            "?"
        };
        assert_eq!(actual, kind.as_str().unwrap(), "type of {}", p.display());
    }
    for path in strings(&exp["absent"]) {
        let p = root.join(&path);
        assert!(
            fs::symlink_metadata(&p).is_err(),
            "{} should not exist (whiteout / opaque dir / replaced)",
            p.display()
        );
    }
    let mut names: Vec<String> = fs::read_dir(root.join(str_of(&exp["opaque_dir"])))
        .expect("read the opaque dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        strings(&exp["opaque_dir_entries"]),
        "opaque dir entries"
    );
    let b = fs::metadata(root.join("data/b.txt")).expect("data/b.txt");
    let h = fs::metadata(root.join("data/hard.txt")).expect("data/hard.txt");
    assert_eq!(
        b.ino(),
        h.ino(),
        "data/hard.txt is a hard link of data/b.txt"
    );
}

// ------------------------------------------------------------------------------------------
// store consistency (store-format.md §9 step 7 invariants)

fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks the structural invariants of a store and returns what is wrong (empty = consistent):
/// all JSON parses; containers' layers and images exist; images' top layers exist; parents
/// exist; no incomplete flags; no .tmp-* files; overlay: every R/overlay/<dir> except l/ has a
/// record and vice versa, l/ links resolve to the right diff and match `link` files, `lower`
/// files list the ancestors; vfs: R/vfs/dir/<id> ↔ records; tar-split files only for recorded
/// layers and present for every layer with a diff digest; mountpoints only for known layers.
pub fn store_problems(store: &Store) -> Vec<String> {
    store_problems_with(store, false)
}

/// `store_problems`, optionally tolerating `.tmp-*` files: a crash may leave them behind and
/// store-format.md §6.1 lets them stay (never read; removable under the lock).
pub fn store_problems_with(store: &Store, allow_tmp_files: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let layers = store.layers_json();
    let images = store.images_json();
    let containers = store.containers_json();
    let mounts = store.mountpoints_json();
    let layer_ids: std::collections::BTreeSet<String> =
        layers.iter().map(|l| str_of(&l["id"])).collect();
    let image_ids: std::collections::BTreeSet<String> =
        images.iter().map(|i| str_of(&i["id"])).collect();
    let by_id: BTreeMap<String, &Value> = layers.iter().map(|l| (str_of(&l["id"]), l)).collect();

    for l in &layers {
        let id = str_of(&l["id"]);
        if !is_id(&id) {
            problems.push(format!("layer id {id:?} is not 64 hex"));
        }
        if let Some(p) = l["parent"].as_str() {
            if !layer_ids.contains(p) {
                problems.push(format!("layer {id}: parent {p} missing"));
            }
        }
        if l["flags"]["incomplete"] == Value::Bool(true) {
            problems.push(format!("layer {id} is flagged incomplete"));
        }
        if l["created"].as_str().map(|s| s.is_empty()).unwrap_or(true) {
            problems.push(format!("layer {id}: no created time"));
        }
        let tar_split = store.meta_dir("layers").join(format!("{id}.tar-split.gz"));
        if l["diff-digest"].as_str().is_some() && !tar_split.is_file() {
            problems.push(format!(
                "layer {id}: has a diff-digest but no tar-split file"
            ));
        }
    }
    for i in &images {
        let id = str_of(&i["id"]);
        if let Some(top) = i["layer"].as_str() {
            if !layer_ids.contains(top) {
                problems.push(format!("image {id}: top layer {top} missing"));
            }
        }
        if !store.meta_dir("images").join(&id).is_dir() {
            problems.push(format!("image {id}: no big-data directory"));
        }
    }
    for c in &containers {
        let id = str_of(&c["id"]);
        let layer = str_of(&c["layer"]);
        if !layer_ids.contains(&layer) {
            problems.push(format!("container {id}: layer {layer} missing"));
        }
        if let Some(img) = c["image"].as_str() {
            if !img.is_empty() && !image_ids.contains(img) {
                problems.push(format!("container {id}: image {img} missing"));
            }
        }
    }
    for m in &mounts {
        let id = str_of(&m["id"]);
        if !layer_ids.contains(&id) {
            problems.push(format!("mountpoints.json: unknown layer {id}"));
        }
    }
    // stray tar-split files and temporary files
    for kind in ["layers", "images", "containers"] {
        let dir = store.meta_dir(kind);
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp-") {
                    if allow_tmp_files {
                        eprintln!("note: crash leftover {}", e.path().display());
                    } else {
                        problems.push(format!("temporary file {}", e.path().display()));
                    }
                }
                if let Some(id) = name.strip_suffix(".tar-split.gz") {
                    if !layer_ids.contains(id) {
                        problems.push(format!("stray tar-split file {name}"));
                    }
                }
            }
        }
    }
    if store.driver == "overlay" {
        let home = store.root.join("overlay");
        let mut dirs = std::collections::BTreeSet::new();
        if let Ok(rd) = fs::read_dir(&home) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // l/ holds the short links; staging/ and tempdirs/ are scratch directories
                // newer containers/storage versions know (store-format.md §1.4 [newest]).
                if ["l", "staging", "tempdirs"].contains(&name.as_str()) || !e.path().is_dir() {
                    continue;
                }
                if !layer_ids.contains(&name) {
                    let entries: Vec<String> = fs::read_dir(e.path())
                        .map(|rd| {
                            rd.flatten()
                                .map(|x| x.file_name().to_string_lossy().into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    problems.push(format!(
                        "orphan directory {} (holding {entries:?})",
                        e.path().display()
                    ));
                }
                dirs.insert(name);
            }
        }
        let mut links_seen: BTreeMap<String, String> = BTreeMap::new();
        if let Ok(rd) = fs::read_dir(home.join("l")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                match fs::read_link(e.path()) {
                    Ok(t) => {
                        let t = t.display().to_string();
                        let id = t
                            .strip_prefix("../")
                            .and_then(|r| r.strip_suffix("/diff"))
                            .unwrap_or("")
                            .to_string();
                        if !layer_ids.contains(&id) || !home.join(&id).join("diff").is_dir() {
                            problems
                                .push(format!("l/{name} -> {t} does not lead to a layer's diff"));
                        }
                        links_seen.insert(id, name);
                    }
                    Err(_) => problems.push(format!("l/{name} is not a symlink")),
                }
            }
        }
        for id in &layer_ids {
            let ldir = home.join(id);
            if !dirs.contains(id) {
                problems.push(format!("layer {id}: no directory {}", ldir.display()));
                continue;
            }
            let link = fs::read_to_string(ldir.join("link")).unwrap_or_default();
            if link.len() != 26 {
                problems.push(format!(
                    "layer {id}: link file {link:?} is not 26 characters"
                ));
            } else if links_seen.get(id) != Some(&link) {
                problems.push(format!("layer {id}: no l/{link} symlink to it"));
            }
            // lower = parent's link, then the parent's lower
            let expected_lower = by_id[id]["parent"].as_str().map(|p| {
                let plink = fs::read_to_string(home.join(p).join("link")).unwrap_or_default();
                let plower = fs::read_to_string(home.join(p).join("lower")).unwrap_or_default();
                if plower.is_empty() {
                    format!("l/{plink}")
                } else {
                    format!("l/{plink}:{plower}")
                }
            });
            let lower = fs::read_to_string(ldir.join("lower")).ok();
            if lower != expected_lower {
                problems.push(format!(
                    "layer {id}: lower {lower:?}, expected {expected_lower:?}"
                ));
            }
        }
    } else {
        let home = store.root.join("vfs/dir");
        if let Ok(rd) = fs::read_dir(&home) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !layer_ids.contains(&name) {
                    problems.push(format!("orphan directory {}", e.path().display()));
                }
            }
        }
        for id in &layer_ids {
            if !home.join(id).is_dir() {
                problems.push(format!(
                    "layer {id}: no directory {}",
                    home.join(id).display()
                ));
            }
        }
    }
    problems
}

pub fn assert_store_consistent(store: &Store, when: &str) {
    let problems = store_problems(store);
    assert!(
        problems.is_empty(),
        "store inconsistent {when}:\n  {}",
        problems.join("\n  ")
    );
}

/// Waits until `cond` holds (polling every 10 ms) or the timeout passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
