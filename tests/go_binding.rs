//! The Go binding (c-examples/go): `go vet`, then one `go test -race` run and one `go test -asan`
//! run, both with cgocheck=2, against the test registry (pull, lists, create, mount, unmount, delete, cancellation through a context
//! over a throttled proxy, errors.Is on not-found); and goimagego, the seed demo ported onto the
//! package, through the seed flow with its --json output compared with cimagectl's byte for byte.
//!
//! In-tree builds take the library from target/debug through CGO_CFLAGS/CGO_LDFLAGS (the package's
//! default cgo directives only add -lcimage). goimagego is built with -race too, so that both builds
//! share one race-instrumented standard library in the Go build cache.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use serde_json::Value;

fn go_dir() -> PathBuf {
    repo_dir().join("c-examples/go")
}

/// `go ARGS` in c-examples/go with the in-tree cgo flags, no network, and cgocheck=2.
fn go(args: &[&str]) -> Command {
    let lib_dir = target_dir().join("debug");
    // cimagectl() may have put the SONAME link in a private directory; search it too.
    let private = work_dir().join("lib");
    let mut cmd = Command::new("go");
    cmd.current_dir(go_dir())
        .args(args)
        .env(
            "CGO_CFLAGS",
            format!("-I{}", repo_dir().join("include").display()),
        )
        .env(
            "CGO_LDFLAGS",
            format!(
                "-L{lib} -Wl,-rpath,{lib} -Wl,-rpath,{private}",
                lib = lib_dir.display(),
                private = private.display()
            ),
        )
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local");
    // The strictest cgo pointer checks: a GOEXPERIMENT from Go 1.21, a GODEBUG setting before.
    if go_minor_version() >= 21 {
        cmd.env("GOEXPERIMENT", "cgocheck2");
    } else {
        cmd.env("GODEBUG", "cgocheck=2");
    }
    cmd
}

/// The minor version of the installed Go (19 for go1.19.8).
fn go_minor_version() -> u32 {
    static MINOR: OnceLock<u32> = OnceLock::new();
    *MINOR.get_or_init(|| {
        let r = run_ok(Command::new("go").args(["env", "GOVERSION"]));
        r.stdout
            .trim()
            .strip_prefix("go1.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|minor| minor.parse().ok())
            .unwrap_or_else(|| panic!("unexpected Go version {:?}", r.stdout))
    })
}

/// Containers' overlay mounts under a directory (the overlay driver's own bind mount of its home
/// stays while the store exists, as containers/storage's does).
fn overlay_mounts(dir: &Path) -> Vec<PathBuf> {
    mounts_under(dir)
        .into_iter()
        .filter(|m| m.fs_type == "overlay")
        .map(|m| m.mount_point)
        .collect()
}

fn prerequisites() -> Option<(&'static Fixtures, &'static Registry)> {
    if !ensure_root_or_skip("the Go tests mount overlay containers") {
        return None;
    }
    if !ensure_tools_or_skip(&["go", "cc"]) {
        return None;
    }
    let found = fixtures_and_registry()?;
    cimagectl(); // builds the library
    Some(found)
}

/// Runs the package's tests once with `sanitizer` ("-race" or "-asan") against the test registry;
/// checks every test passed and left nothing mounted. Returns go test's output.
fn run_package_tests(fx: &Fixtures, reg: &Registry, sanitizer: &str) -> String {
    // 24 MiB at 512 KiB/s: a pull that would take ~48 s, which the test cancels.
    let proxy = Proxy::start(reg.port(), 512 * 1024);
    let stores = Store::new("overlay"); // its directory holds the Go test's stores; dropped = cleaned
    let go_stores = stores.dir.join("go");
    std::fs::create_dir_all(&go_stores).unwrap();
    let r = run(
        go(&["test", sanitizer, "-count=1", "-timeout=8m", "-v", "."])
            .env("CIMAGE_TEST_REF", reg.image_ref("fixture"))
            .env("CIMAGE_TEST_IMAGE_ID", fx.id("fixture"))
            .env("CIMAGE_TEST_SLOW_REF", proxy.image_ref("big"))
            .env("CIMAGE_TEST_DIR", &go_stores)
            .env("CIMAGE_TEST_DRIVER", "overlay"),
    );
    assert!(
        r.ok(),
        "go test {sanitizer} failed ({}):\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    for line in r.stdout.lines().filter(|l| l.contains("cancelled after")) {
        eprintln!("go test {sanitizer}: {}", line.trim());
    }
    for test in [
        "TestVersion",
        "TestStatusNames",
        "TestFlow",
        "TestNotFound",
        "TestPullCancelledByContext",
        "TestProgressPanic",
    ] {
        assert!(
            r.stdout.contains(&format!("--- PASS: {test} ")),
            "{test} did not pass under {sanitizer} (skipped?):\n{}",
            r.stdout
        );
    }
    assert_eq!(
        overlay_mounts(&go_stores),
        Vec::<PathBuf>::new(),
        "the Go tests left containers mounted ({sanitizer})"
    );
    format!("{}\n{}", r.stdout, r.stderr)
}

#[test]
fn go_package_passes_vet_and_race_tests() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    run_ok(&mut go(&["vet", "./..."]));
    let out = run_package_tests(fx, reg, "-race");
    assert!(
        !out.contains("WARNING: DATA RACE"),
        "the race detector reported:\n{out}"
    );
}

/// The same tests with `-asan` (Go 1.18+ on amd64/arm64 with GCC 7+ or clang 9+): the cgo glue is
/// built with AddressSanitizer and every malloc/free, the library's included, goes through its
/// allocator, so a double free, a use after free or an overflow of a buffer the binding hands
/// to C stops the run.
#[test]
fn go_package_passes_tests_under_asan() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    if go_minor_version() < 18 || !["x86_64", "aarch64"].contains(&std::env::consts::ARCH) {
        skip(&format!(
            "go test -asan needs Go 1.18+ on amd64 or arm64 (have go1.{} on {})",
            go_minor_version(),
            std::env::consts::ARCH
        ));
        return;
    }
    let out = run_package_tests(fx, reg, "-asan");
    assert!(
        !out.contains("ERROR: AddressSanitizer") && !out.contains("ERROR: LeakSanitizer"),
        "AddressSanitizer reported:\n{out}"
    );
}

/// Builds cmd/goimagego and examples/quickstart (once per process) into one directory.
fn go_binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = work_dir().join("go-bin");
        std::fs::create_dir_all(&dir).unwrap();
        let out = format!("{}/", dir.display());
        run_ok(&mut go(&[
            "build",
            "-race",
            "-o",
            &out,
            "./cmd/goimagego",
            "./examples/quickstart",
        ]));
        dir
    })
}

fn goimagego() -> PathBuf {
    go_binaries().join("goimagego")
}

/// `goimagego -d D -r R -R RR ARGS…`
fn port(store: &Store, args: &[&str]) -> Ran {
    run(Command::new(goimagego()).args(store.base_args()).args(args))
}

fn port_ok(store: &Store, args: &[&str]) -> Ran {
    let r = port(store, args);
    assert!(
        r.ok(),
        "goimagego {args:?} failed ({}):\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    r
}

/// `goimagego --json ARGS…` and `cimagectl --json ARGS…` print the same bytes; returns the document.
fn same_json(store: &Store, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let ours = port_ok(store, &full);
    let theirs = store.ok(&full);
    assert_eq!(
        ours.stdout, theirs.stdout,
        "goimagego and cimagectl differ on {args:?}"
    );
    serde_json::from_str(ours.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "goimagego {args:?}: not one JSON document ({e}):\n{}",
            ours.stdout
        )
    })
}

fn short(digest: &str) -> &str {
    &hex_of(digest)[..12]
}

#[test]
fn goimagego_runs_the_seed_flow() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new("overlay");
    let reference = reg.image_ref("fixture");
    let name = reg.name("fixture");
    let id = fx.id("fixture");

    let info = same_json(&store, &["store"]);
    assert_eq!(info["driver"], "overlay", "{info}");
    assert_eq!(info["root"], store.root.display().to_string(), "{info}");

    // pull: skopeo-like progress on stderr, the image as JSON on stdout
    let pulled = port_ok(
        &store,
        &["--json", "pull", "--tls-verify=false", &reference],
    );
    let doc: Value = serde_json::from_str(pulled.stdout.trim()).expect("pull prints JSON");
    assert_eq!(doc["id"], id.as_str(), "{doc}");
    assert_eq!(
        doc["digest"],
        fx.manifest_digest("fixture").as_str(),
        "{doc}"
    );
    assert_eq!(doc["names"], serde_json::json!([name]), "{doc}");
    for blob in fx.blob_digests("fixture") {
        let line = format!("Copying blob {} done", short(&blob));
        assert!(
            pulled.stderr.contains(&line),
            "no {line:?} in:\n{}",
            pulled.stderr
        );
    }
    let config_line = format!(
        "Copying config {} done",
        short(&fx.config_digest("fixture"))
    );
    assert!(pulled.stderr.contains(&config_line), "{}", pulled.stderr);
    assert!(
        pulled
            .stderr
            .contains("Writing manifest to image destination"),
        "{}",
        pulled.stderr
    );
    let again = port_ok(&store, &["pull", "--tls-verify=false", &reference]);
    assert_eq!(again.stdout.trim(), id, "a plain pull prints the image ID");
    let c_again = store.ok(&["pull", "--tls-verify=false", &reference]);
    let sorted_lines = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    assert_eq!(
        sorted_lines(&again.stderr),
        sorted_lines(&c_again.stderr),
        "the progress lines of a pull with nothing to fetch differ"
    );
    assert!(
        again.stderr.contains("skipped: already exists"),
        "{}",
        again.stderr
    );

    let images = same_json(&store, &["images"]);
    assert_eq!(images[0]["id"], id.as_str(), "{images}");
    let layers = same_json(&store, &["layers"]);
    assert_eq!(layers.as_array().map(Vec::len), Some(3), "{layers}");
    // The image table's ages come from the image (2024): stable between the two runs.
    assert_eq!(
        port_ok(&store, &["images"]).stdout,
        store.ok(&["images"]).stdout,
        "the images tables differ"
    );

    let created = port_ok(&store, &["--json", "container", "--name", "demo", &name]);
    let container: Value = serde_json::from_str(created.stdout.trim()).expect("container JSON");
    let container_id = container["id"].as_str().expect("container id").to_string();
    let layer = container["layer"]
        .as_str()
        .expect("container layer")
        .to_string();
    let listed = same_json(&store, &["containers"]);
    assert_eq!(listed[0]["id"], container_id.as_str(), "{listed}");
    assert_eq!(listed[0]["names"], serde_json::json!(["demo"]), "{listed}");
    assert_eq!(listed[0]["mount_point"], Value::Null, "{listed}");

    let mounted = port_ok(&store, &["--json", "mount", "demo"]);
    let path = serde_json::from_str::<Value>(mounted.stdout.trim()).expect("mount JSON")["path"]
        .as_str()
        .expect("path")
        .to_string();
    assert!(
        Path::new(&path).join("etc/hostname").is_file(),
        "{path} is not the image's root file system"
    );
    std::fs::write(Path::new(&path).join("from-goimagego.txt"), "hello\n").unwrap();
    let listed = same_json(&store, &["containers"]);
    assert_eq!(listed[0]["mount_point"], path.as_str(), "{listed}");
    let containers_table = port_ok(&store, &["containers"]).stdout;
    assert!(
        containers_table.contains(&name) && containers_table.contains("yes"),
        "{containers_table}"
    );

    assert_eq!(
        port_ok(&store, &["--json", "unmount", "demo"]).stdout,
        "{}\n"
    );
    assert_eq!(
        overlay_mounts(&store.dir),
        Vec::<PathBuf>::new(),
        "still mounted after unmount"
    );
    assert!(
        store
            .layer_data_dir(&layer)
            .join("from-goimagego.txt")
            .is_file(),
        "the file written through the mount is not in the container's layer"
    );

    // errors: one line, cimagectl's format with goimagego's name; usage errors exit 2
    let missing = port(&store, &["delete", "no-such-thing"]);
    assert_eq!(missing.status, 1, "{missing:?}");
    assert_eq!(
        missing.stderr,
        "goimagego: NOT_FOUND: no container, image or layer matches \"no-such-thing\"\n"
    );
    let c_missing = store.cmd(&["delete", "no-such-thing"]);
    assert_eq!(
        missing.stderr.replacen("goimagego", "cimagectl", 1),
        c_missing.stderr
    );
    let in_use = port(&store, &["delete", &id]);
    assert_eq!(in_use.status, 1, "{in_use:?}");
    assert!(
        in_use.stderr.starts_with("goimagego: IN_USE: "),
        "{}",
        in_use.stderr
    );
    let bad_policy = port(&store, &["pull", "--policy=sometimes", &reference]);
    assert_eq!(bad_policy.status, 1, "{bad_policy:?}");
    assert!(
        bad_policy
            .stderr
            .starts_with("goimagego: INVALID_ARGUMENT: "),
        "{}",
        bad_policy.stderr
    );
    let usage = port(&store, &["frobnicate"]);
    assert_eq!(usage.status, 2, "{usage:?}");
    assert!(
        usage.stderr.contains("Usage: goimagego"),
        "{}",
        usage.stderr
    );

    assert_eq!(
        port_ok(&store, &["--json", "delete", "demo"]).stdout,
        "{}\n"
    );
    assert_eq!(port_ok(&store, &["--json", "delete", &name]).stdout, "{}\n");
    assert_eq!(same_json(&store, &["images"]), serde_json::json!([]));
    assert_store_consistent(&store, "after goimagego's flow");
    // wipe: pull once more and clear everything
    port_ok(&store, &["pull", "--tls-verify=false", &reference]);
    assert_eq!(port_ok(&store, &["--json", "wipe"]).stdout, "{}\n");
    assert_eq!(same_json(&store, &["layers"]), serde_json::json!([]));
}

#[test]
fn go_quickstart_runs_and_is_the_readmes() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let source = std::fs::read_to_string(go_dir().join("examples/quickstart/main.go")).unwrap();
    let readme = std::fs::read_to_string(repo_dir().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```go\n{source}```")),
        "README.md's Go quick start is not c-examples/go/examples/quickstart/main.go"
    );
    let store = Store::new("overlay");
    let r = run_ok(
        Command::new(go_binaries().join("quickstart"))
            .arg(reg.image_ref("fixture"))
            .arg(&store.root)
            .arg(&store.run_root),
    );
    assert!(
        r.stdout.contains(&format!("pulled {}", fx.id("fixture")))
            && r.stdout.contains("container deleted: true"),
        "{}",
        r.stdout
    );
    assert_eq!(store.containers(), Vec::<Value>::new());
    assert_eq!(store.images().len(), 1, "the image stays");
}
