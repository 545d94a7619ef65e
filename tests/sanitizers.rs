//! The C examples under AddressSanitizer and UndefinedBehaviorSanitizer: cimagectl and
//! bad_input are compiled with -fsanitize=address,undefined (any finding aborts the run) and
//! driven through a full flow — pulls, lists in both output forms, containers, mounts, check
//! and repair, deletions, failing calls — and bad_input's wrong-input checks.
//!
//! Only the C side is instrumented: the Rust library is not (that would need a nightly
//! toolchain and -Zsanitizer). ASan still sees every allocation the library hands to C and
//! takes back (it intercepts malloc/free), so a double free, a use after cimage_*_free or a
//! string freed with free() instead of cimage_string_free is caught. LeakSanitizer checks
//! what the C code leaks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const ASAN_EXIT: i32 = 96;
const UBSAN_EXIT: i32 = 95;

/// Compiles c-examples/NAME.c with ASan and UBSan, or None (with a skip) when the compiler
/// cannot.
fn compile_sanitized(name: &str) -> Option<PathBuf> {
    cimagectl(); // builds the library
    let repo = repo_dir();
    let lib_dir = target_dir().join("debug");
    let out = work_dir().join(format!("{name}-asan-ubsan"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(cc);
    cmd.current_dir(&repo)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-g",
            "-O1",
            "-fno-omit-frame-pointer",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
        ])
        .arg(format!("-I{}", repo.join("include").display()))
        .arg(format!("c-examples/{name}.c"))
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lcimage")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()));
    // The SONAME link cimagectl() may have made (see common::cimagectl).
    let private = work_dir().join("lib");
    if private.is_dir() {
        cmd.arg(format!("-Wl,-rpath,{}", private.display()));
    }
    let r = run(cmd.arg("-o").arg(&out));
    if !r.ok() {
        if r.stderr.contains("asan") || r.stderr.contains("ubsan") || r.stderr.contains("sanitize")
        {
            skip(&format!(
                "the C compiler cannot build with sanitizers (libasan/libubsan missing?):\n{}",
                r.stderr
            ));
            return None;
        }
        panic!(
            "c-examples/{name}.c does not compile with sanitizers:\n{}",
            r.stderr
        );
    }
    Some(out)
}

fn sanitized(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env(
        "ASAN_OPTIONS",
        format!("exitcode={ASAN_EXIT}:detect_leaks=1:detect_stack_use_after_return=1"),
    )
    .env(
        "UBSAN_OPTIONS",
        format!("exitcode={UBSAN_EXIT}:print_stacktrace=1:halt_on_error=1"),
    );
    cmd
}

fn assert_no_findings(r: &Ran, what: &str) {
    assert!(
        r.status != ASAN_EXIT
            && r.status != UBSAN_EXIT
            && !r.stderr.contains("ERROR: AddressSanitizer")
            && !r.stderr.contains("ERROR: LeakSanitizer")
            && !r.stderr.contains("runtime error:"),
        "{what}: sanitizer finding (exit {}):\n{}",
        r.status,
        r.stderr
    );
}

#[test]
fn cimagectl_flow_under_asan_and_ubsan() {
    if !ensure_root_or_skip("overlay mounts") {
        return;
    }
    let Some((fx, reg)) = fixtures_and_registry() else {
        return;
    };
    let Some(bin) = compile_sanitized("cimagectl") else {
        return;
    };
    let store = Store::new("overlay");
    let name = reg.name("fixture");
    let step = |args: &[&str], want_ok: bool| -> Ran {
        let r = run(sanitized(&bin).args(store.base_args()).args(args));
        assert_no_findings(&r, &format!("cimagectl {args:?}"));
        if want_ok {
            assert!(
                r.ok(),
                "cimagectl {args:?} failed ({}):\n{}",
                r.status,
                r.stderr
            );
        } else {
            assert_eq!(r.status, 1, "cimagectl {args:?} should fail:\n{}", r.stderr);
        }
        r
    };
    step(&["store"], true);
    step(&["--json", "store"], true);
    step(
        &["pull", "--tls-verify=false", &reg.image_ref("fixture")],
        true,
    );
    step(
        &["pull", "--tls-verify=false", &reg.image_ref("fixture")],
        true,
    );
    step(
        &["pull", "--tls-verify=false", &reg.image_ref("multi")],
        true,
    );
    step(&["pull", &fx.oci_ref("sibling")], true);
    for list in ["images", "layers", "containers"] {
        step(&[list], true);
        step(&["--json", list], true);
    }
    step(&["container", "--name", "san", &name], true);
    step(&["containers"], true);
    step(&["--json", "containers"], true);
    let mount = step(&["mount", "san"], true).stdout.trim().to_string();
    std::fs::write(Path::new(&mount).join("asan.txt"), b"x").unwrap();
    step(&["--json", "mount", "san"], true);
    step(&["unmount", "san"], true);
    step(&["unmount", "san"], true);
    step(&["check"], true);
    step(&["--json", "check", "--no-content"], true);
    // Damage something so that the report has findings to print and repair.
    std::fs::create_dir_all(store.root.join("overlay").join("b".repeat(64)).join("diff")).unwrap();
    let r = run(sanitized(&bin).args(store.base_args()).arg("check"));
    assert_no_findings(&r, "check of a damaged store");
    assert_eq!(r.status, 3, "check of a damaged store: {}", r.stdout);
    step(&["check", "--repair"], true);
    step(
        &["--json", "check", "--repair", "--unreferenced-any-age"],
        true,
    );
    // Failures free their errors too.
    step(&["mount", "no-such-container"], false);
    step(
        &["pull", "--tls-verify=false", "docker://Bad Reference"],
        false,
    );
    step(&["delete", &name], false); // in use
    step(
        &["pull", "--max-unpacked-size", "1K", &fx.oci_ref("zstd")],
        false,
    );
    let r = run(sanitized(&bin).args(store.base_args()).args([
        "pull",
        "--max-unpacked-size",
        "x",
        "y",
    ]));
    assert_no_findings(&r, "bad --max-unpacked-size");
    step(&["delete", "san"], true);
    step(&["delete", &name], true);
    step(&["wipe"], true);
}

/// The instrumentation is really there: reading a borrowed string after freeing its owner (the
/// library allocated and freed it; the C side reads it) is reported, and so is a signed
/// overflow.
#[test]
fn sanitizers_catch_a_planted_bug() {
    cimagectl();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("canary.c");
    std::fs::write(
        &source,
        r#"#include "cimage.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "uaf") == 0) {
        cimage_store_options *o = cimage_store_options_new();
        cimage_error *err = NULL;
        cimage_store_options_set_driver(o, "nonsense", &err);
        const char *message = cimage_error_message(err); /* borrowed from err */
        cimage_error_free(err);
        volatile char first = message[0]; /* use after free */
        printf("%d\n", first);
        cimage_store_options_free(o);
    } else {
        int x = INT_MAX - 1 + argc; /* argc == 2 here: overflow */
        printf("%d\n", x);
    }
    return 0;
}
"#,
    )
    .unwrap();
    let repo = repo_dir();
    let lib_dir = target_dir().join("debug");
    let out = dir.path().join("canary");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(cc);
    cmd.args([
        "-std=c11",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
    ])
    .arg(format!("-I{}", repo.join("include").display()))
    .arg(&source)
    .arg(format!("-L{}", lib_dir.display()))
    .arg("-lcimage")
    .arg(format!("-Wl,-rpath,{}", lib_dir.display()));
    let private = work_dir().join("lib");
    if private.is_dir() {
        cmd.arg(format!("-Wl,-rpath,{}", private.display()));
    }
    let r = run(cmd.arg("-o").arg(&out));
    if !r.ok() && r.stderr.contains("lib") && r.stderr.contains("san") {
        skip(&format!("cannot build with sanitizers:\n{}", r.stderr));
        return;
    }
    assert!(r.ok(), "the canary does not compile:\n{}", r.stderr);
    let r = run(sanitized(&out).arg("uaf"));
    assert_eq!(
        r.status, ASAN_EXIT,
        "ASan missed a use after free:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("heap-use-after-free"), "{}", r.stderr);
    let r = run(sanitized(&out).arg("overflow"));
    assert_eq!(
        r.status, UBSAN_EXIT,
        "UBSan missed an overflow:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("signed integer overflow"), "{}", r.stderr);
}

#[test]
fn bad_input_under_asan_and_ubsan() {
    if !ensure_root_or_skip("bad_input mounts overlay containers") {
        return;
    }
    let Some(bin) = compile_sanitized("bad_input") else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let r = run(sanitized(&bin).arg(scratch.path()));
    assert_no_findings(&r, "bad_input");
    assert!(
        r.ok(),
        "bad_input failed under sanitizers ({}):\n{}\n{}",
        r.status,
        r.stdout,
        r.stderr
    );
    let checks = r.stdout.lines().filter(|l| l.starts_with("ok")).count();
    assert!(checks >= 100, "only {checks} checks ran");
    unmount_all_under(scratch.path());
}
