//! The image-source layer against Debian's real `docker-registry` (distribution 2.8), with
//! images built here as OCI layouts and pushed by skopeo, plus the same layouts read
//! directly. Skips (loudly) when docker-registry or skopeo is missing.

use cimage::digest::sha256_digest;
use cimage::registry::{
    parse_reference, BlobDesc, BlobStream, Platform, ResolvedImage, Source, SourceOptions,
};
use cimage::{Error, Status};
use futures_util::StreamExt;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A docker-registry process on 127.0.0.1, killed when dropped.
struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP status line's code of GET /v2/, if anything answers.
fn ping(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1)?.parse().ok()
}

fn start_registry(work: &Path) -> Registry {
    let port = free_port();
    let storage = work.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let config = work.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: cimage-test-not-a-secret\n\
             health:\n  storagedriver:\n    enabled: false\n",
            storage.display()
        ),
    )
    .unwrap();
    let log = work.join("registry.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("starting docker-registry");
    let mut registry = Registry { child, port, log };
    let deadline = Instant::now() + Duration::from_secs(15);
    while ping(port) != Some(200) {
        if let Ok(Some(status)) = registry.child.try_wait() {
            panic!(
                "docker-registry exited ({status}): {}",
                std::fs::read_to_string(&registry.log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "docker-registry did not answer on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    registry
}

/// One image written into a layout's blobs directory.
#[derive(Clone)]
struct TestImage {
    manifest: Vec<u8>,
    manifest_digest: String,
    config_digest: String,
    layer: BlobDesc,
    diff_id: String,
    file_content: String,
}

fn write_blob(layout: &Path, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(digest.trim_start_matches("sha256:")), data).unwrap();
    digest
}

fn make_image(layout: &Path, arch: &str, variant: Option<&str>) -> TestImage {
    let file_content = format!(
        "hello from {arch}{}\n",
        variant.map(|v| format!("/{v}")).unwrap_or_default()
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(file_content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    tar.append_data(&mut header, "etc/hello.txt", file_content.as_bytes())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = sha256_digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let layer_bytes = gz.finish().unwrap();
    let layer_digest = write_blob(layout, &layer_bytes);

    let mut config = json!({
        "created": "2024-01-02T03:04:05Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    if let Some(v) = variant {
        config["variant"] = v.into();
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = write_blob(layout, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": GZIP_LAYER, "digest": layer_digest, "size": layer_bytes.len()}],
    }))
    .unwrap();
    let manifest_digest = write_blob(layout, &manifest);
    TestImage {
        manifest,
        manifest_digest,
        config_digest,
        layer: BlobDesc {
            digest: layer_digest,
            size: layer_bytes.len() as i64,
            media_type: GZIP_LAYER.into(),
        },
        diff_id,
        file_content,
    }
}

fn write_index_json(layout: &Path, media_type: &str, digest: &str, size: usize, tag: &str) {
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": media_type, "digest": digest, "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

/// A layout tagged "t" whose index.json points at an image index of three platforms.
fn make_multi_layout(layout: &Path) -> (Vec<TestImage>, String) {
    let platforms = [("amd64", None), ("arm64", Some("v8")), ("arm", Some("v7"))];
    let images: Vec<TestImage> = platforms
        .iter()
        .map(|(a, v)| make_image(layout, a, *v))
        .collect();
    let entries: Vec<serde_json::Value> = images
        .iter()
        .zip(platforms)
        .map(|(img, (arch, variant))| {
            let mut platform = json!({"os": "linux", "architecture": arch});
            if let Some(v) = variant {
                platform["variant"] = v.into();
            }
            json!({"mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": img.manifest.len(), "platform": platform})
        })
        .collect();
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}),
    )
    .unwrap();
    let index_digest = write_blob(layout, &index);
    write_index_json(layout, OCI_INDEX, &index_digest, index.len(), "t");
    (images, index_digest)
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// sha256 of what skopeo reads as the raw manifest (`skopeo inspect --raw … | sha256sum`).
fn skopeo_raw_digest(reference: &str) -> String {
    sha256_digest(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        reference,
    ]))
}

fn options(tls_verify: bool, platform: &str) -> SourceOptions {
    SourceOptions {
        tls_verify,
        platform: Platform::parse(platform).unwrap(),
    }
}

async fn open(reference: &str, opts: &SourceOptions) -> Result<Source, Error> {
    Source::open(&parse_reference(reference).unwrap(), opts).await
}

/// Opens and resolves; whichever step fails gives the error.
async fn resolve(reference: &str, opts: &SourceOptions) -> Result<ResolvedImage, Error> {
    open(reference, opts).await?.resolve().await
}

/// Every item of a blob stream: the bytes, and the error if the stream ended with one
/// (which must then be its last item).
async fn drain(stream: BlobStream) -> (Vec<u8>, Option<Error>) {
    let items: Vec<Result<bytes::Bytes, Error>> = stream.collect().await;
    let mut data = Vec::new();
    let count = items.len();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(e) => {
                assert_eq!(i, count - 1, "error {e:?} is not the last item");
                return (data, Some(e));
            }
        }
    }
    (data, None)
}

/// The file a test layer carries, read back from the gzip tar.
fn hello_txt(layer: &[u8]) -> String {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let mut entry = archive
        .entries()
        .unwrap()
        .next()
        .expect("one entry")
        .unwrap();
    assert_eq!(entry.path().unwrap().to_str(), Some("etc/hello.txt"));
    let mut text = String::new();
    entry.read_to_string(&mut text).unwrap();
    text
}

fn assert_image(resolved: &ResolvedImage, expected: &TestImage) {
    assert_eq!(resolved.manifest_digest, expected.manifest_digest);
    assert_eq!(sha256_digest(&resolved.manifest), resolved.manifest_digest);
    assert_eq!(resolved.manifest_media_type, OCI_MANIFEST);
    assert_eq!(resolved.config_digest, expected.config_digest);
    assert_eq!(sha256_digest(&resolved.config), resolved.config_digest);
    assert_eq!(resolved.layers, vec![expected.layer.clone()]);
    assert_eq!(resolved.diff_ids, vec![expected.diff_id.clone()]);
    assert_eq!(resolved.created.as_deref(), Some("2024-01-02T03:04:05Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_and_layout_sources() {
    for tool in ["docker-registry", "skopeo"] {
        if find_tool(tool).is_none() {
            eprintln!("SKIPPED registry_and_layout_sources: `{tool}` is not installed (apt install docker-registry skopeo)");
            return;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let registry = start_registry(&work.path().join("registry"));
    let host = format!("127.0.0.1:{}", registry.port);

    // A single-image layout and a three-platform one, pushed as they are.
    let single_dir = work.path().join("single");
    let single = make_image(&single_dir, "amd64", None);
    write_index_json(
        &single_dir,
        OCI_MANIFEST,
        &single.manifest_digest,
        single.manifest.len(),
        "t",
    );
    let multi_dir = work.path().join("multi");
    let (multi, multi_index_digest) = make_multi_layout(&multi_dir);
    let img_ref = format!("docker://{host}/test/img:t");
    let multi_ref = format!("docker://{host}/test/multi:t");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:t", single_dir.display()),
        &img_ref,
    ]);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:t", multi_dir.display()),
        &multi_ref,
    ]);

    let amd64 = options(false, "linux/amd64");

    // By tag: the warm-pull digest is what skopeo sees, and resolve gives our image.
    let source = open(&img_ref, &amd64).await.unwrap();
    let top = source.top_digest().await.unwrap();
    assert_eq!(top, skopeo_raw_digest(&img_ref));
    assert_eq!(
        top, single.manifest_digest,
        "skopeo pushed the manifest unchanged"
    );
    let resolved = source.resolve().await.unwrap();
    assert_image(&resolved, &single);
    assert!(resolved.index.is_none());
    // The platform only matters for indexes.
    assert_image(
        &resolve(&img_ref, &options(false, "linux/s390x"))
            .await
            .unwrap(),
        &single,
    );

    // The layer streams and verifies.
    let (layer, error) = drain(source.blob(&single.layer).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(sha256_digest(&layer), single.layer.digest);
    assert_eq!(hello_txt(&layer), single.file_content);

    // A descriptor that lies about the size: cut at the declared size, then an error.
    let mut short = single.layer.clone();
    short.size -= 1;
    // (Refused up front when the response's Content-Length already says so.)
    let error = match source.blob(&short).await {
        Err(e) => e,
        Ok(stream) => {
            let (data, error) = drain(stream).await;
            assert!(data.len() as i64 <= short.size);
            error.expect("declared size too small is reported")
        }
    };
    assert_eq!(error.status, Status::DigestMismatch, "{}", error.message);
    assert_eq!(error.subject.as_deref(), Some(img_ref.as_str()));
    let mut long = single.layer.clone();
    long.size += 1;
    let (_, error) = drain(source.blob(&long).await.unwrap()).await;
    let error = error.expect("short body is reported");
    assert!(
        matches!(error.status, Status::Io | Status::Network),
        "{error:?}"
    );
    assert_eq!(error.subject.as_deref(), Some(img_ref.as_str()));
    // A blob the registry does not have.
    let missing = BlobDesc {
        digest: sha256_digest(b"nothing"),
        size: 7,
        media_type: GZIP_LAYER.into(),
    };
    let error = source.blob(&missing).await.err().expect("unknown blob");
    assert_eq!(
        (error.status, error.http_status),
        (Status::Registry, 404),
        "{}",
        error.message
    );
    // A digest that is no digest never reaches a URL.
    let bad = BlobDesc {
        digest: "sha256:../../v2/_catalog".into(),
        size: 7,
        media_type: GZIP_LAYER.into(),
    };
    assert_eq!(
        source.blob(&bad).await.err().unwrap().status,
        Status::InvalidArgument
    );

    // By digest.
    let by_digest = format!("docker://{host}/test/img@{}", single.manifest_digest);
    let source = open(&by_digest, &amd64).await.unwrap();
    assert_eq!(source.top_digest().await.unwrap(), single.manifest_digest);
    assert_image(&source.resolve().await.unwrap(), &single);
    // A digest the registry does not know.
    let unknown = format!(
        "docker://{host}/test/img@{}",
        sha256_digest(b"no such manifest")
    );
    assert_eq!(
        resolve(&unknown, &amd64).await.unwrap_err().status,
        Status::ManifestUnknown
    );

    // Missing tag and missing repository.
    let missing_tag = format!("docker://{host}/test/img:nope");
    let source = open(&missing_tag, &amd64).await.unwrap();
    let error = source.resolve().await.unwrap_err();
    assert_eq!(error.status, Status::ManifestUnknown, "{}", error.message);
    assert_eq!(error.subject.as_deref(), Some(missing_tag.as_str()));
    assert!(error.message.contains(&missing_tag), "{}", error.message);
    let error = source.top_digest().await.unwrap_err();
    assert_eq!(
        (error.status, error.http_status),
        (Status::ManifestUnknown, 404),
        "{}",
        error.message
    );
    let error = resolve(&format!("docker://{host}/no/such/repo:t"), &amd64)
        .await
        .unwrap_err();
    assert_eq!(error.status, Status::ManifestUnknown, "{}", error.message);

    // The registry speaks plain HTTP: with TLS verification on, that is a network error.
    let error = resolve(&img_ref, &options(true, "linux/amd64"))
        .await
        .unwrap_err();
    assert_eq!(error.status, Status::Network, "{}", error.message);

    // The multi-platform index: the platform decides.
    let source = open(&multi_ref, &options(false, "linux/arm64"))
        .await
        .unwrap();
    let top = source.top_digest().await.unwrap();
    assert_eq!(top, skopeo_raw_digest(&multi_ref));
    assert_eq!(top, multi_index_digest);
    let resolved = source.resolve().await.unwrap();
    assert_image(&resolved, &multi[1]);
    let (index_bytes, index_digest) = resolved.index.clone().expect("came through the index");
    assert_eq!(index_digest, multi_index_digest);
    assert_eq!(sha256_digest(&index_bytes), index_digest);
    let (layer, error) = drain(source.blob(&resolved.layers[0]).await.unwrap()).await;
    assert!(error.is_none());
    assert_eq!(hello_txt(&layer), "hello from arm64/v8\n");
    assert_image(&resolve(&multi_ref, &amd64).await.unwrap(), &multi[0]);
    assert_image(
        &resolve(&multi_ref, &options(false, "linux/arm/v7"))
            .await
            .unwrap(),
        &multi[2],
    );
    let pinned = format!("docker://{host}/test/multi@{multi_index_digest}");
    assert_image(
        &resolve(&pinned, &options(false, "linux/arm"))
            .await
            .unwrap(),
        &multi[2],
    );
    let error = resolve(&multi_ref, &options(false, "linux/s390x"))
        .await
        .unwrap_err();
    assert_eq!(error.status, Status::NotFound);
    assert!(
        error
            .message
            .contains("linux/amd64, linux/arm64/v8, linux/arm/v7"),
        "available platforms listed: {}",
        error.message
    );

    // The same layouts read directly.
    let layout_ref = format!("oci:{}:t", single_dir.display());
    let source = open(&layout_ref, &amd64).await.unwrap();
    assert_eq!(source.top_digest().await.unwrap(), single.manifest_digest);
    assert_image(&source.resolve().await.unwrap(), &single);
    let (layer, error) = drain(source.blob(&single.layer).await.unwrap()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(hello_txt(&layer), single.file_content);
    let multi_layout = format!("oci:{}:t", multi_dir.display());
    let source = open(&multi_layout, &options(true, "linux/arm64/v8"))
        .await
        .unwrap();
    assert_eq!(source.top_digest().await.unwrap(), multi_index_digest);
    let resolved = source.resolve().await.unwrap();
    assert_image(&resolved, &multi[1]);
    assert_eq!(
        resolved.index.map(|i| i.1),
        Some(multi_index_digest.clone())
    );
    let error = resolve(&format!("oci:{}:other", multi_dir.display()), &amd64)
        .await
        .unwrap_err();
    assert_eq!(error.status, Status::ManifestUnknown);

    // skopeo reading back what it pushed agrees with the layout (a round trip).
    let pulled = work.path().join("pulled");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &img_ref,
        &format!("oci:{}:back", pulled.display()),
    ]);
    let back = resolve(&format!("oci:{}:back", pulled.display()), &amd64)
        .await
        .unwrap();
    assert_image(&back, &single);

    drop(registry);
}

#[tokio::test]
async fn a_closed_port_is_a_network_error() {
    let port = free_port(); // bound and released: nothing listens there now
    let reference = format!("docker://127.0.0.1:{port}/test/img:t");
    for tls_verify in [false, true] {
        let error = resolve(&reference, &options(tls_verify, "linux/amd64"))
            .await
            .unwrap_err();
        assert_eq!(
            error.status,
            Status::Network,
            "tls_verify={tls_verify}: {}",
            error.message
        );
        assert_eq!(error.subject.as_deref(), Some(reference.as_str()));
        assert!(error.message.contains(&reference), "{}", error.message);
        assert!(
            error.message.to_lowercase().contains("refused"),
            "cause kept: {}",
            error.message
        );
    }
}
