//! One full flow of cimagectl under valgrind (memcheck): no memory errors and no definite or
//! indirect leaks in any command, including failing ones. The library keeps a process-wide
//! runtime whose threads are never joined, so "possibly lost" and "still reachable" blocks are
//! not counted (they are the runtime's, alive until exit).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

const VALGRIND_ERROR: i32 = 97;

fn under_valgrind(store: &Store, args: &[&str]) -> Ran {
    let log = store
        .dir
        .join(format!("valgrind-{}.log", args.join("_").replace('/', "_")));
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--quiet",
        "--error-exitcode=97",
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect",
        "--errors-for-leak-kinds=definite,indirect",
        "--num-callers=30",
    ])
    .arg(format!(
        "--suppressions={}",
        support("valgrind.supp").display()
    ))
    .arg(format!("--log-file={}", log.display()))
    .arg(cimagectl())
    .args(store.base_args())
    .args(args);
    let r = run(&mut cmd);
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    assert_ne!(
        r.status, VALGRIND_ERROR,
        "valgrind found errors or leaks in cimagectl {args:?}:\n{report}\nstderr:\n{}",
        r.stderr
    );
    assert!(
        !report.contains("Invalid read")
            && !report.contains("Invalid write")
            && !report.contains("uninitialised"),
        "valgrind report for {args:?}:\n{report}"
    );
    r
}

fn ok(store: &Store, args: &[&str]) -> Ran {
    let r = under_valgrind(store, args);
    assert!(
        r.ok(),
        "cimagectl {args:?} under valgrind failed ({}):\n{}",
        r.status,
        r.stderr
    );
    r
}

#[test]
fn full_flow_under_valgrind() {
    if !ensure_root_or_skip("overlay mounts need root") {
        return;
    }
    if !ensure_tools_or_skip(&["valgrind"]) {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let store = Store::new("overlay");
    let reference = reg.image_ref("fixture");
    let name = reg.name("fixture");

    ok(&store, &["store"]);
    ok(&store, &["--json", "store"]);
    let pulled = ok(&store, &["pull", "--tls-verify=false", &reference]);
    assert_eq!(pulled.stdout.trim(), fx.id("fixture"));
    ok(&store, &["pull", "--tls-verify=false", &reference]);
    ok(&store, &["images"]);
    ok(&store, &["--json", "images"]);
    ok(&store, &["layers"]);
    ok(&store, &["--json", "layers"]);
    let cid = ok(&store, &["container", "--name", "vg", &name])
        .stdout
        .trim()
        .to_string();
    assert_eq!(cid.len(), 64);
    ok(&store, &["containers"]);
    ok(&store, &["--json", "containers"]);
    let path = PathBuf::from(ok(&store, &["mount", "vg"]).stdout.trim());
    std::fs::write(
        path.join("valgrind.txt"),
        b"written during the valgrind flow\n",
    )
    .unwrap();
    ok(&store, &["--json", "mount", "vg"]);
    ok(&store, &["unmount", "vg"]);
    ok(&store, &["unmount", "vg"]);
    assert!(store
        .layer_data_dir(str_of(&store.containers()[0]["layer"]).as_str())
        .join("valgrind.txt")
        .is_file());
    // failures free their errors too
    let r = under_valgrind(&store, &["mount", "no-such-container"]);
    assert_error_line(
        &r,
        &["NOT_FOUND"],
        "mount of an unknown container under valgrind",
    );
    let r = under_valgrind(
        &store,
        &["pull", "--tls-verify=false", "docker://Bad Reference"],
    );
    assert_error_line(
        &r,
        &["INVALID_ARGUMENT"],
        "malformed reference under valgrind",
    );
    let r = under_valgrind(&store, &["delete", &name]);
    assert_error_line(&r, &["IN_USE"], "delete of an image in use under valgrind");
    ok(&store, &["delete", "vg"]);
    ok(&store, &["delete", &name]);
    ok(
        &store,
        &["pull", "--tls-verify=false", &fx.oci_ref("fixture")],
    );
    ok(&store, &["wipe"]);
    assert!(store.images().is_empty());
}
