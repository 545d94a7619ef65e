//! The hostile corpus (tests/support/mkimage.py --corpus): escapes through names, symlinks,
//! hard links and whiteouts, device nodes, tar/gzip/zstd bombs, truncated and trailing data,
//! long and non-UTF-8 names, duplicates, xattrs, wrong digests and sizes, bogus digest
//! algorithms, huge, deep and self-referencing documents, too many layers.
//!
//! Generated here as well: zstd frames declaring 2 GiB and 3.75 TiB windows, one whose
//! 128 MiB window is really used, and a layer of 20000 entries; with CIMAGE_CRASH_TRIALS set to
//! 100 or more (the crash harness's long run) that layer has 2000001 entries, one over the
//! applier's limit, and may take 40 minutes (`--release` recommended).
//!
//! A registry of its own serves every case's OCI layout verbatim over HTTP (docker-registry
//! checks digests and manifests on upload, so it cannot hold most of these). For each case and
//! driver, `cimagectl pull` must:
//! * end with one of the case's expected statuses, within 60 s (the long run's many-entry case:
//!   40 minutes);
//! * peak below 256 MiB of RSS (wait4's ru_maxrss);
//! * leave nothing outside the store: the sentinel directory stays empty, its target file and
//!   /etc/passwd keep content, mode and link count;
//! * leave the store consistent: `cimagectl check` clean, no layer or image added by a failed
//!   pull, no request whose path holds a bogus digest.
//!
//! Cases expected to succeed are checked for what they promise (devices inside the layer,
//! non-UTF-8 names kept, only user.* xattrs applied).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const MAX_RSS_KIB: i64 = 256 * 1024;
const MAX_SECONDS: u64 = 60;

// ------------------------------------------------------------------------------------------
// A registry that serves OCI layouts as they are, wrong digests included.

struct CorpusRegistry {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

fn respond(stream: &mut TcpStream, code: u16, headers: &[(&str, String)], body: &[u8], head: bool) {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    let _ = stream.write_all(out.as_bytes());
    if !head {
        let _ = stream.write_all(body);
    }
}

fn not_found(stream: &mut TcpStream, code: &str, head: bool) {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"not found"}}]}}"#);
    respond(
        stream,
        404,
        &[("Content-Type", "application/json".into())],
        body.as_bytes(),
        head,
    );
}

/// Serves /v2/corpus/<case>/{manifests,blobs}/<ref> from <root>/<case>.
fn serve(mut stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    log.lock().unwrap().push(format!("{method} {path}"));
    let head = method == "HEAD";
    if path == "/v2/" || path == "/v2" {
        return respond(&mut stream, 200, &[], b"{}", head);
    }
    let Some(rest) = path.strip_prefix("/v2/corpus/") else {
        return not_found(&mut stream, "NAME_UNKNOWN", head);
    };
    let segs: Vec<&str> = rest.splitn(3, '/').collect();
    if segs.len() != 3 || segs[0].contains("..") {
        return not_found(&mut stream, "NAME_UNKNOWN", head);
    }
    let (case, kind, reference) = (segs[0], segs[1], segs[2]);
    let layout = root.join(case);
    let blob_path = |digest: &str| -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| layout.join("blobs/sha256").join(hex))
    };
    let (file, media_type, digest) = match kind {
        "manifests" if !reference.starts_with("sha256:") => {
            let index: Value = match fs::read(layout.join("index.json")) {
                Ok(b) => serde_json::from_slice(&b).unwrap(),
                Err(_) => return not_found(&mut stream, "NAME_UNKNOWN", head),
            };
            let desc = index["manifests"][0].clone();
            let digest = str_of(&desc["digest"]);
            (
                blob_path(&digest),
                desc["mediaType"].as_str().unwrap_or("").to_string(),
                digest,
            )
        }
        "manifests" => {
            let media_type = blob_path(reference)
                .and_then(|p| fs::read(p).ok())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["mediaType"].as_str().map(String::from))
                .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
            (blob_path(reference), media_type, reference.to_string())
        }
        "blobs" => (
            blob_path(reference),
            "application/octet-stream".into(),
            reference.to_string(),
        ),
        _ => return not_found(&mut stream, "UNSUPPORTED", head),
    };
    match file.and_then(|p| fs::read(p).ok()) {
        Some(body) => respond(
            &mut stream,
            200,
            &[
                ("Content-Type", media_type),
                ("Docker-Content-Digest", digest),
            ],
            &body,
            head,
        ),
        None => not_found(
            &mut stream,
            if kind == "blobs" {
                "BLOB_UNKNOWN"
            } else {
                "MANIFEST_UNKNOWN"
            },
            head,
        ),
    }
}

impl CorpusRegistry {
    fn start(root: PathBuf) -> CorpusRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (root, log) = (root.clone(), log.clone());
                std::thread::spawn(move || serve(s, &root, &log));
            }
        });
        CorpusRegistry { port, requests }
    }

    fn reference(&self, case: &str) -> String {
        format!("docker://127.0.0.1:{}/corpus/{case}:t", self.port)
    }
}

// ------------------------------------------------------------------------------------------
// Running cimagectl with a time limit and its peak memory.

struct Outcome {
    status: String,
    stderr: String,
    max_rss_kib: i64,
    elapsed: Duration,
}

/// Runs the command, killing it after `limit`; collects wait4's peak RSS.
fn run_measured(mut cmd: Command, limit: Duration) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn cimagectl");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if started.elapsed() > limit {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::mem::forget(child); // reaped above
    let elapsed = started.elapsed();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    let exit = std::process::ExitStatus::from_raw(status);
    let status = if exit.success() {
        "OK".to_string()
    } else if exit.signal().is_some() {
        format!("SIGNAL {:?}", exit.signal())
    } else {
        stderr
            .lines()
            .filter_map(|l| l.strip_prefix("cimagectl: "))
            .filter_map(|l| l.split(':').next())
            .next_back()
            .unwrap_or("?")
            .to_string()
    };
    Outcome {
        status,
        stderr,
        max_rss_kib: usage.ru_maxrss,
        elapsed,
    }
}

// ------------------------------------------------------------------------------------------
// What must not change outside the store.

#[derive(Debug, PartialEq)]
struct FileState {
    content: Vec<u8>,
    mode: u32,
    nlink: u64,
}

fn file_state(p: &Path) -> FileState {
    let m = fs::symlink_metadata(p).unwrap();
    FileState {
        content: fs::read(p).unwrap(),
        mode: m.mode(),
        nlink: m.nlink(),
    }
}

fn host_files(meta: &Value) -> Vec<(PathBuf, FileState)> {
    [
        PathBuf::from("/etc/passwd"),
        PathBuf::from(str_of(&meta["sentinel_target"])),
    ]
    .into_iter()
    .map(|p| {
        let s = file_state(&p);
        (p, s)
    })
    .collect()
}

fn get_xattrs(path: &Path) -> Vec<String> {
    list_xattrs(path).into_iter().map(|(k, _)| k).collect()
}

fn find_in_store(store: &Store, name: &str) -> Option<PathBuf> {
    let mut stack = vec![store.root.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy() == name {
                return Some(p);
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    None
}

/// Runs every case against one store of `driver`; returns (case, status, rss KiB, time) rows.
fn run_corpus(
    driver: &str,
    meta: &Value,
    registry: &CorpusRegistry,
    all_cases: bool,
) -> Vec<(String, String, i64, Duration)> {
    let store = Store::new(driver);
    store.ok(&["store"]);
    let sentinel = PathBuf::from(str_of(&meta["sentinel"]));
    let before = host_files(meta);
    let cases: Vec<(&String, &Value)> = meta["cases"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, case)| all_cases || case["fs"] == true || *name == "control")
        .collect();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (name, case) in cases.iter().copied() {
        let expect: Vec<String> = strings(&case["expect"]);
        let expect: Vec<String> = if case["root_only_ok"] == true && !is_root() {
            vec!["PERMISSION_DENIED".into()]
        } else {
            expect
        };
        let layers_before = store.json(&["layers"]).as_array().unwrap().len();
        let images_before = store.json(&["images"]).as_array().unwrap().len();
        let mut cmd = store.command(&["pull", "--tls-verify=false"]);
        for a in case["pull_args"].as_array().into_iter().flatten() {
            cmd.arg(str_of(a));
        }
        cmd.arg(registry.reference(name));
        // A few generated cases are allowed longer (and say so in the corpus).
        let limit = Duration::from_secs(case["max_seconds"].as_u64().unwrap_or(MAX_SECONDS));
        let out = run_measured(cmd, limit);
        let what = format!("{driver} {name} ({})", str_of(&case["attack"]));
        eprintln!(
            "  {driver} {name:28} {:18} {:>6} KiB {:>8.1?}",
            out.status, out.max_rss_kib, out.elapsed
        );
        rows.push((
            name.clone(),
            out.status.clone(),
            out.max_rss_kib,
            out.elapsed,
        ));
        let mut problems = Vec::new();
        if !expect.contains(&out.status) {
            problems.push(format!(
                "status {} (expected one of {expect:?}); stderr: {}",
                out.status,
                out.stderr.trim()
            ));
        }
        if out.status != "OK" && !out.stderr.lines().any(|l| l.starts_with("cimagectl: ")) {
            problems.push("no error line".into());
        }
        if out.max_rss_kib > MAX_RSS_KIB {
            problems.push(format!("peak RSS {} KiB", out.max_rss_kib));
        }
        if out.elapsed > limit {
            problems.push(format!("took {:?}", out.elapsed));
        }
        let escaped: Vec<String> = fs::read_dir(&sentinel)
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .collect();
        if !escaped.is_empty() {
            problems.push(format!("created outside the store: {escaped:?}"));
        }
        for p in ["/escape", "/abs-escape", "/evil-dev", "/pwned"] {
            if fs::symlink_metadata(p).is_ok() {
                problems.push(format!("{p} was created"));
            }
        }
        for (path, state) in &before {
            if file_state(path) != *state {
                problems.push(format!("{} changed", path.display()));
            }
        }
        // Layer contents are rebuilt after the pulls that added layers.
        let check = if out.status == "OK" {
            store.cmd(&["--json", "check"])
        } else {
            store.cmd(&["--json", "check", "--no-content"])
        };
        if check.status != 0 {
            problems.push(format!("store check not clean: {}", check.stdout));
        }
        let problems_found = store_problems(&store);
        if !problems_found.is_empty() {
            problems.push(format!("store problems: {problems_found:?}"));
        }
        let layers_after = store.json(&["layers"]).as_array().unwrap().len();
        let images_after = store.json(&["images"]).as_array().unwrap().len();
        if out.status != "OK" && (layers_after, images_after) != (layers_before, images_before) {
            problems.push(format!(
                "a failed pull changed the store: layers {layers_before} -> {layers_after}, \
                 images {images_before} -> {images_after}"
            ));
        }
        if out.status == "OK" {
            problems.extend(check_success_case(&store, name, case));
            // Keep the store small: the next cases' checks rebuild every layer.
            if name != "control" {
                let image = format!("127.0.0.1:{}/corpus/{name}:t", registry.port);
                store.ok(&["delete", &image]);
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{what}:\n    {}", problems.join("\n    ")));
        }
    }
    // Bogus digests never reached a URL: every reference asked for is the tag or a sha256.
    for r in registry.requests.lock().unwrap().iter() {
        let reference = r
            .rsplit_once("/manifests/")
            .or_else(|| r.rsplit_once("/blobs/"))
            .map(|(_, x)| x);
        if let Some(x) = reference {
            let hex = x.strip_prefix("sha256:").unwrap_or("");
            let valid = x == "t"
                || (hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            if !valid {
                failures.push(format!(
                    "request with a bogus reference reached the registry: {r}"
                ));
            }
        }
    }
    // The store still works: the control image makes a container that mounts.
    let control = format!("127.0.0.1:{}/corpus/control:t", registry.port);
    let container = store.json(&["container", &control]);
    let id = str_of(&container["id"]);
    let mount = store.ok(&["mount", &id]).stdout.trim().to_string();
    assert_eq!(
        fs::read(Path::new(&mount).join("etc/hello")).unwrap(),
        b"hello\n"
    );
    store.ok(&["unmount", &id]);
    let check = store.cmd(&["--json", "check"]);
    if check.status != 0 {
        failures.push(format!("final store check not clean: {}", check.stdout));
    }
    store.ok(&["wipe"]);
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases misbehaved on {driver}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    rows
}

/// What a case that is allowed to succeed promises.
fn check_success_case(store: &Store, name: &str, case: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    match name {
        "devices-inside" => {
            for (dev, want_char) in [("null", true), ("sda", false)] {
                match find_in_store(store, dev) {
                    Some(p) => {
                        let t = fs::symlink_metadata(&p).unwrap().file_type();
                        if (want_char && !t.is_char_device())
                            || (!want_char && !t.is_block_device())
                        {
                            problems.push(format!("{} is not the device node", p.display()));
                        }
                        if !p.starts_with(&store.root) {
                            problems.push(format!("{} outside the store", p.display()));
                        }
                    }
                    None => problems.push(format!("device {dev} missing from the layer")),
                }
            }
        }
        "non-utf8-names" => {
            use std::os::unix::ffi::OsStrExt;
            let mut exact = false;
            let mut stack = vec![store.root.clone()];
            while let Some(d) = stack.pop() {
                for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_name().as_bytes() == b"na\xefve" {
                        exact = true;
                    }
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
            if !exact {
                problems.push("the non-UTF-8 name was not kept byte for byte".into());
            }
        }
        "xattrs" => {
            let file = str_of(&case["xattrs_file"]);
            match find_in_store(store, &file) {
                Some(p) => {
                    let mut got = get_xattrs(&p);
                    got.sort();
                    if got != strings(&case["xattrs_allowed"]) {
                        problems.push(format!("xattrs on the extracted file: {got:?}"));
                    }
                }
                None => problems.push("xattr file missing".into()),
            }
        }
        "hardlink-to-symlink-chmod" => {} // the target's mode is checked with the host files
        _ => {}
    }
    problems
}

// ------------------------------------------------------------------------------------------
// Cases generated here (mkimage.py makes the rest): zstd frames whose window is too large or
// fully used, and a layer with more entries than the limit. Made by a Python script of their
// own, in a child process: blobs of a gigabyte are made fast there (C zlib, the zstd CLI),
// and this process's memory, which its children's RSS figures inherit until they exec, stays
// small.

/// The applier's entry limit (src/unpack/mod.rs ApplyOptions::default).
const ENTRY_LIMIT: u64 = 2_000_000;

/// Whether the long cases run: the crash harness's long-run variable is set (to 100 or more).
fn long_run() -> bool {
    std::env::var("CIMAGE_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n >= 100)
}

const GENERATOR: &str = r#"
import hashlib, json, os, shutil, subprocess, sys, zlib
root, links, long_limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
cases = {}

def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()

class Layout:
    def __init__(self, name):
        self.dir = os.path.join(root, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(os.path.join(self.dir, "blobs", "sha256"))
    def put(self, data, mt):
        d = sha(data)
        with open(os.path.join(self.dir, "blobs", "sha256", d[7:]), "wb") as f:
            f.write(data)
        return {"mediaType": mt, "digest": d, "size": len(data)}
    def finish(self, layers, diff_ids):
        config = {"created": "2023-11-14T22:13:20Z", "architecture": ARCH, "os": "linux",
                  "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        cdesc = self.put(json.dumps(config).encode(), MT_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": cdesc,
                    "layers": layers}
        desc = self.put(json.dumps(manifest).encode(), MT_MANIFEST)
        with open(os.path.join(self.dir, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": [desc]}, f)

def case(name, layout, attack, expect, **extra):
    info = {"layout": layout.dir, "attack": attack, "expect": expect, "fs": True}
    info.update(extra)
    cases[name] = info

def header(name, size=0, link=b""):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % 1700000000
    h[148:156] = b" " * 8
    h[156:157] = b"1" if link else b"0"
    h[157:157 + len(link)] = link
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)

# zstd frames declaring windows above the decoder's 128 MiB ceiling, data in raw blocks.
small = header(b"hello", 6) + b"hello\n" + bytes(506) + bytes(1024)
def raw_frame(window_descriptor, content):
    out = bytearray(b"\x28\xb5\x2f\xfd\x00" + bytes([window_descriptor]))
    chunks = [content[i:i + 65536] for i in range(0, len(content), 65536)]
    for i, c in enumerate(chunks):
        out += ((1 if i == len(chunks) - 1 else 0) | (len(c) << 3)).to_bytes(3, "little")
        out += c
    return bytes(out)
for name, descriptor, what in (("zstd-window-2g", 21 << 3, "2 GiB (window log 31)"),
                               ("zstd-window-max", 0xFF, "3.75 TiB (the largest a frame can declare)")):
    lay = Layout(name)
    lay.finish([lay.put(raw_frame(descriptor, small), MT_ZSTD)], [sha(small)])
    case(name, lay, "a zstd frame declaring a window of " + what, ["UNSAFE_ARCHIVE"])

# A frame at the ceiling whose window is really used: 160 MiB of output through a 128 MiB
# window (stdin has no known size, so the frame keeps the window it was made with).
zstd = shutil.which("zstd")
if zstd:
    size = 160 << 20
    proc = subprocess.Popen([zstd, "-q", "-c", "-1", "--long=27", "--no-progress"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    import threading
    result = {}
    reader = threading.Thread(target=lambda: result.update(out=proc.stdout.read()))
    reader.start()
    diff = hashlib.sha256()
    def feed(b):
        diff.update(b)
        proc.stdin.write(b)
    feed(header(b"zeros", size))
    zeros = bytes(1 << 20)
    for _ in range(size >> 20):
        feed(zeros)
    feed(bytes(1024))
    proc.stdin.close()
    reader.join()
    proc.wait()
    lay = Layout("zstd-window-128m-used")
    desc = lay.put(result["out"], MT_ZSTD)
    lay.finish([desc], ["sha256:" + diff.hexdigest()])
    case("zstd-window-128m-used", lay, "a zstd frame with a 128 MiB window (the ceiling) "
         "filled by 160 MiB of output, in %d bytes" % desc["size"], ["OK"])
else:
    print("no zstd CLI: zstd-window-128m-used not generated", file=sys.stderr)

# Many entries: empty files, each hard-linked 99 times (far below any link limit), in
# directories of 1000 entries. Over the limit: refused when the limit is reached.
name = "entries-over-limit" if long_limit else "entries-%dk" % (links // 1000)
comp = zlib.compressobj(6, zlib.DEFLATED, 31)
diff = hashlib.sha256()
out = []
batch = []
def emit_batch():
    data = b"".join(batch)
    diff.update(data)
    out.append(comp.compress(data))
    batch.clear()
for i in range(links):
    d = b"d%04d/" % (i // 1000)
    if i % 100 == 0:
        target = d + b"f%03d" % (i % 1000)
        batch.append(header(target))
    else:
        batch.append(header(d + b"l%03d" % (i % 1000), link=target))
    if len(batch) >= 4096:
        emit_batch()
batch.append(bytes(1024))
emit_batch()
out.append(comp.flush())
lay = Layout(name)
desc = lay.put(b"".join(out), MT_GZ)
lay.finish([desc], ["sha256:" + diff.hexdigest()])
case(name, lay, "%d entries (empty files and hard links to them) in %d bytes of gzip"
     % (links, desc["size"]), ["UNSAFE_ARCHIVE"] if long_limit else ["OK"],
     max_seconds=2400 if long_limit else 60)
json.dump(cases, sys.stdout)
"#;

fn add_generated_cases(meta: &mut Value) {
    let root = PathBuf::from(str_of(&meta["cases"]["control"]["layout"]))
        .parent()
        .unwrap()
        .to_path_buf();
    // Over the limit by one in the long run; well below it (and accepted) by default.
    let (links, over) = if long_run() {
        (ENTRY_LIMIT + 1, 1)
    } else {
        (20_000, 0)
    };
    let started = Instant::now();
    let out = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(GENERATOR)
            .arg(&root)
            .arg(links.to_string())
            .arg(over.to_string()),
    );
    let cases: Value = serde_json::from_str(out.stdout.trim()).expect("generator output");
    eprintln!(
        "generated {:?} in {:.1?}",
        cases.as_object().unwrap().keys().collect::<Vec<_>>(),
        started.elapsed()
    );
    for (name, case) in cases.as_object().unwrap() {
        meta["cases"][name] = case.clone();
    }
}

fn corpus() -> Option<Value> {
    if !ensure_tools_or_skip(&["python3"]) {
        return None;
    }
    static META: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Some(
        META.get_or_init(|| {
            let out = work_dir().join("corpus-images");
            run_ok(
                Command::new("python3")
                    .arg(support("mkimage.py"))
                    .arg(&out)
                    .arg("--sentinel")
                    .arg(work_dir().join("corpus-sentinel"))
                    .arg("--corpus"),
            );
            let mut meta: Value =
                serde_json::from_slice(&fs::read(out.join("corpus.json")).unwrap()).unwrap();
            add_generated_cases(&mut meta);
            meta
        })
        .clone(),
    )
}

fn report(driver: &str, rows: &[(String, String, i64, Duration)]) {
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s, _, _) in rows {
        *by_status.entry(s.as_str()).or_insert(0) += 1;
    }
    let (worst_rss, worst_case) = rows
        .iter()
        .map(|(n, _, r, _)| (*r, n.as_str()))
        .max()
        .unwrap_or((0, ""));
    let (slowest, slow_case) = rows
        .iter()
        .map(|(n, _, _, t)| (*t, n.as_str()))
        .max()
        .unwrap_or_default();
    eprintln!(
        "hostile corpus on {driver}: {} cases, all within bounds; statuses {by_status:?}; \
         peak RSS {} MiB ({worst_case}); slowest {slowest:.1?} ({slow_case})",
        rows.len(),
        worst_rss / 1024
    );
}

#[test]
fn hostile_corpus_overlay() {
    if !ensure_root_or_skip("overlay layers and device nodes") {
        return;
    }
    let Some(meta) = corpus() else { return };
    let registry = CorpusRegistry::start(
        PathBuf::from(str_of(&meta["cases"]["control"]["layout"]))
            .parent()
            .unwrap()
            .to_path_buf(),
    );
    let rows = run_corpus("overlay", &meta, &registry, true);
    report("overlay", &rows);
}

#[test]
fn hostile_corpus_vfs() {
    let Some(meta) = corpus() else { return };
    let registry = CorpusRegistry::start(
        PathBuf::from(str_of(&meta["cases"]["control"]["layout"]))
            .parent()
            .unwrap()
            .to_path_buf(),
    );
    // Documents never reach the driver: vfs runs the cases about the file system.
    let rows = run_corpus("vfs", &meta, &registry, false);
    report("vfs", &rows);
}
