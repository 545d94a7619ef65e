//! The Python binding (c-examples/python/cimage.py, ctypes): example.py runs the whole flow against
//! the test registry, and failing calls raise CimageError carrying the library's status — a lookup
//! of a missing image, a missing repository, bad arguments, a pull cancelled from another thread
//! through a CancelToken, and a progress callback that raises.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn python_dir() -> std::path::PathBuf {
    repo_dir().join("c-examples/python")
}

fn prerequisites() -> Option<(&'static Fixtures, &'static Registry)> {
    if !ensure_root_or_skip("the Python example mounts an overlay container") {
        return None;
    }
    let found = fixtures_and_registry()?; // checks python3 too
    cimagectl(); // builds the library
    Some(found)
}

#[test]
fn python_example_runs_the_whole_flow() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new("overlay");
    let lib = target_dir().join("debug/libcimage.so");
    let r = run(Command::new("python3")
        .arg(python_dir().join("example.py"))
        .args(["--driver", "overlay"])
        .arg(&store.root)
        .arg(&store.run_root)
        .arg(reg.image_ref("fixture"))
        .env("CIMAGE_LIBRARY", &lib));
    assert!(
        r.ok(),
        "example.py failed ({}):\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    for expected in [
        format!("library {} ({})", env!("CARGO_PKG_VERSION"), lib.display()),
        format!("as image {}", fx.id("fixture")),
        format!("mounted at {}", store.root.display()),
        "unmounted".to_string(),
        "looking up the deleted image: NOT_FOUND (status 3)".to_string(),
    ] {
        assert!(
            r.stdout.contains(&expected),
            "no {expected:?} in example.py's output:\n{}",
            r.stdout
        );
    }
    for blob in fx.blob_digests("fixture") {
        let line = format!("Copying blob {} done", &hex_of(&blob)[..12]);
        assert!(r.stderr.contains(&line), "no {line:?} in:\n{}", r.stderr);
    }
    // It deleted what it made, unmounted, and left a consistent store.
    assert_eq!(store.images(), Vec::<Value>::new());
    assert_eq!(store.containers(), Vec::<Value>::new());
    assert!(
        store.mounts().iter().all(|m| m.fs_type != "overlay"),
        "example.py left a container mounted"
    );
    assert_store_consistent(&store, "after example.py");
}

/// Run by python3 with: MODULE_DIR ROOT RUN_ROOT REF MISSING_REF SLOW_REF. Prints one JSON object:
/// for each case, the CimageError's fields (or what else happened).
const FAILING_CALLS: &str = r#"
import json, sys, threading
module_dir, root, run_root, ref, missing_ref, slow_ref = sys.argv[1:7]
sys.path.insert(0, module_dir)
import cimage

def outcome(call):
    try:
        call()
        return {"raised": None}
    except cimage.CimageError as e:
        return {"raised": "CimageError", "status": int(e.status), "status_name": e.status_name,
                "enum": isinstance(e.status, cimage.Status), "message": e.message,
                "subject": e.subject, "str": str(e)}
    except Exception as e:
        return {"raised": type(e).__name__, "str": str(e)}

def boom(event):
    raise RuntimeError("stop here")

out = {"loaded_from": cimage.library_path}
out["relative_root"] = outcome(lambda: cimage.Store(graph_root="relative/root"))
with cimage.Store(graph_root=root, run_root=run_root, driver="vfs") as s:
    out["lookup"] = outcome(lambda: s.image("no-such-image"))
    out["delete"] = outcome(lambda: s.delete_container("no-such-container"))
    out["nul"] = outcome(lambda: s.image("nul\0inside"))
    out["policy"] = outcome(lambda: s.pull(ref, tls_verify=False, policy="sometimes"))
    out["never"] = outcome(lambda: s.pull(ref, tls_verify=False, policy="never"))
    out["missing"] = outcome(lambda: s.pull(missing_ref, tls_verify=False))
    out["callback"] = outcome(lambda: s.pull(ref, tls_verify=False, progress=boom))
    with cimage.CancelToken() as token:
        threading.Timer(0.5, token.cancel).start()
        out["cancelled"] = outcome(lambda: s.pull(slow_ref, tls_verify=False, cancel=token))
    out["left"] = {"images": len(s.images()), "layers": len(s.layers())}
s.close()
out["closed"] = outcome(lambda: s.images())
print(json.dumps(out))
"#;

#[test]
fn python_failing_calls_raise_with_their_status() {
    let Some((_, reg)) = prerequisites() else {
        return;
    };
    let store = Store::new("vfs");
    let proxy = Proxy::start(reg.port(), 512 * 1024); // the 24 MiB image would take ~48 s
    let lib_dir = target_dir().join("debug");
    // No CIMAGE_LIBRARY: the module finds the library by its SONAME on the search path.
    let r = run(Command::new("python3")
        .arg("-c")
        .arg(FAILING_CALLS)
        .arg(python_dir())
        .arg(&store.root)
        .arg(&store.run_root)
        .arg(reg.image_ref("fixture"))
        .arg(reg.image_ref("no-such-repository"))
        .arg(proxy.image_ref("big"))
        .env_remove("CIMAGE_LIBRARY")
        .env("LD_LIBRARY_PATH", &lib_dir));
    assert!(
        r.ok(),
        "the Python script failed ({}):\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    let out: Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", r.stdout, r.stderr));
    assert_eq!(out["loaded_from"], "libcimage.so.0.1", "{out:#}");

    let status_of = |case: &str| -> String {
        let o = &out[case];
        assert_eq!(o["raised"], "CimageError", "{case}: {o:#}");
        assert_eq!(
            o["enum"], true,
            "{case}: status is not a cimage.Status: {o:#}"
        );
        let name = o["status_name"].as_str().expect("status_name").to_string();
        assert!(
            o["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: no message: {o:#}"
        );
        assert_eq!(
            o["str"].as_str().unwrap(),
            format!("{name}: {}", o["message"].as_str().unwrap()),
            "{case}"
        );
        name
    };
    assert_eq!(status_of("relative_root"), "INVALID_ARGUMENT");
    assert_eq!(status_of("lookup"), "NOT_FOUND");
    assert_eq!(out["lookup"]["status"], 3, "{out:#}");
    assert_eq!(status_of("delete"), "NOT_FOUND");
    assert_eq!(status_of("nul"), "INVALID_ARGUMENT");
    assert_eq!(status_of("policy"), "INVALID_ARGUMENT");
    assert_eq!(status_of("never"), "NOT_FOUND");
    let missing = status_of("missing");
    assert!(
        ["MANIFEST_UNKNOWN", "NOT_FOUND"].contains(&missing.as_str()),
        "a missing repository gave {missing}: {out:#}"
    );
    assert_eq!(status_of("cancelled"), "CANCELLED");
    // The callback's own exception comes out of pull, not a CimageError.
    assert_eq!(out["callback"]["raised"], "RuntimeError", "{out:#}");
    assert_eq!(out["callback"]["str"], "stop here", "{out:#}");
    assert_eq!(
        out["left"],
        serde_json::json!({"images": 0, "layers": 0}),
        "cancelled pulls left something behind"
    );
    assert_eq!(out["closed"]["raised"], "ValueError", "{out:#}");
    assert_store_consistent(&store, "after the failing Python calls");
}

#[test]
fn python_quickstart_runs_and_is_the_readmes() {
    let Some((fx, reg)) = prerequisites() else {
        return;
    };
    let source = std::fs::read_to_string(python_dir().join("quickstart.py")).unwrap();
    let readme = std::fs::read_to_string(repo_dir().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```python\n{source}```")),
        "README.md's Python quick start is not c-examples/python/quickstart.py"
    );
    let store = Store::new("overlay");
    let r = run_ok(
        Command::new("python3")
            .arg(python_dir().join("quickstart.py"))
            .arg(reg.image_ref("fixture"))
            .arg(&store.root)
            .arg(&store.run_root)
            .env("CIMAGE_LIBRARY", target_dir().join("debug/libcimage.so")),
    );
    assert!(
        r.stdout.contains(&format!("pulled {}", fx.id("fixture")))
            && r.stdout.contains("container deleted: True"),
        "{}",
        r.stdout
    );
    assert_eq!(store.containers(), Vec::<Value>::new());
}
