//! Installing like a C library: `make install DESTDIR=<tmp> PREFIX=/usr` puts the versioned shared
//! library with its SONAME link and dev link, the static library, the header and cimage.pc in place;
//! a C program builds with nothing but `pkg-config --cflags --libs cimage` (with
//! PKG_CONFIG_SYSROOT_DIR) and runs against the installed library; statically too, with
//! `pkg-config --static`; `readelf -d` shows the SONAME; every exported symbol has the cimage_
//! prefix; the Go package builds against it with `-tags cimage_pkgconfig`; `make uninstall`
//! removes it all.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const PROGRAM: &str = r#"
#include <cimage.h>
#include <stdio.h>
#include <string.h>

/* Prints which libcimage the loader mapped, so the test can tell it is the installed one. */
static void print_loaded_library(void) {
    char line[4096];
    FILE *maps = fopen("/proc/self/maps", "r");
    while (maps != NULL && fgets(line, sizeof line, maps) != NULL) {
        char *path = strchr(line, '/');
        if (path != NULL && strstr(path, "libcimage") != NULL) {
            printf("loaded %s", path);
            break;
        }
    }
    if (maps != NULL)
        fclose(maps);
}

int main(int argc, char **argv) {
    cimage_store_options *options = cimage_store_options_new();
    cimage_store *store = NULL;
    cimage_image *image = NULL;
    cimage_error *err = NULL;
    cimage_status status;
    char root[4096], run_root[4096];

    if (argc != 2)
        return 2;
    if (cimage_version_number() != CIMAGE_VERSION_NUMBER || strcmp(cimage_version(), CIMAGE_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", CIMAGE_VERSION_STRING, cimage_version());
        return 1;
    }
    snprintf(root, sizeof root, "%s/root", argv[1]);
    snprintf(run_root, sizeof run_root, "%s/run", argv[1]);
    if (cimage_store_options_set_graph_root(options, root, NULL) != CIMAGE_STATUS_OK ||
        cimage_store_options_set_run_root(options, run_root, NULL) != CIMAGE_STATUS_OK ||
        cimage_store_options_set_driver(options, "vfs", NULL) != CIMAGE_STATUS_OK ||
        cimage_store_open(options, &store, &err) != CIMAGE_STATUS_OK) {
        fprintf(stderr, "open: %s\n", cimage_error_message(err));
        return 1;
    }
    status = cimage_store_image_lookup(store, "no-such-image", &image, &err);
    printf("version %s, lookup: %s\n", cimage_version(), cimage_status_name(status));
    print_loaded_library();
    cimage_error_free(err);
    cimage_store_free(store);
    cimage_store_options_free(options);
    return status == CIMAGE_STATUS_NOT_FOUND && image == NULL ? 0 : 1;
}
"#;

fn read_link(path: &Path) -> String {
    fs::read_link(path)
        .unwrap_or_else(|e| panic!("{} is not a symlink: {e}", path.display()))
        .display()
        .to_string()
}

#[test]
fn make_install_gives_a_c_library_with_pkg_config() {
    if !ensure_tools_or_skip(&["make", "cc", "pkg-config", "readelf", "nm"]) {
        return;
    }
    let version = env!("CARGO_PKG_VERSION");
    let (major, minor) = (
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
    );
    let soname = if major == "0" {
        format!("libcimage.so.0.{minor}")
    } else {
        format!("libcimage.so.{major}")
    };
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // CI builds with --locked (as tests/common's cimagectl() does).
    let locked = std::env::var_os("CI").is_some();
    let make = |target: &str| {
        // The debug build: the other tests have built it already (only the static library is new).
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(repo_dir())
            .arg(target)
            .arg(format!("DESTDIR={}", dest.display()))
            .args(["PREFIX=/usr", "PROFILE=debug"])
            .arg(format!("CARGO={cargo}"));
        if locked {
            cmd.arg("CARGOFLAGS=--locked");
        }
        run_ok(&mut cmd)
    };
    make("install");

    let lib = dest.join("usr/lib");
    let real = lib.join(format!("libcimage.so.{version}"));
    assert!(real.is_file(), "{} missing", real.display());
    assert_eq!(
        read_link(&lib.join(&soname)),
        format!("libcimage.so.{version}")
    );
    assert_eq!(read_link(&lib.join("libcimage.so")), soname);
    let archive = fs::read(lib.join("libcimage.a")).expect("libcimage.a installed");
    assert!(
        archive.starts_with(b"!<arch>\n"),
        "libcimage.a is not an ar archive"
    );
    assert_eq!(
        fs::read(dest.join("usr/include/cimage.h")).expect("cimage.h installed"),
        fs::read(repo_dir().join("include/cimage.h")).unwrap(),
        "the installed header is not include/cimage.h"
    );
    let header = fs::read_to_string(repo_dir().join("include/cimage.h")).unwrap();
    assert!(
        header.contains(&format!("#define CIMAGE_VERSION_STRING \"{version}\"")),
        "the header's version macros do not come from Cargo.toml's {version}"
    );

    // readelf: the SONAME; nm: every exported symbol carries the prefix
    let dynamic = run_ok(Command::new("readelf").arg("-d").arg(&real)).stdout;
    assert!(
        dynamic.contains(&format!("Library soname: [{soname}]")),
        "SONAME is not {soname}:\n{dynamic}"
    );
    let symbols = run_ok(Command::new("nm").args(["-D", "--defined-only"]).arg(&real)).stdout;
    let names: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(
        names.len() >= 50,
        "only {} exported symbols:\n{symbols}",
        names.len()
    );
    let foreign: Vec<&&str> = names.iter().filter(|n| !n.starts_with("cimage_")).collect();
    assert!(
        foreign.is_empty(),
        "exported symbols without the cimage_ prefix: {foreign:?}"
    );

    // pkg-config, through the installed cimage.pc only
    let pkg_config = |args: &[&str]| -> String {
        run_ok(
            Command::new("pkg-config")
                .args(args)
                .arg("cimage")
                .env("PKG_CONFIG_PATH", lib.join("pkgconfig"))
                .env("PKG_CONFIG_SYSROOT_DIR", &dest)
                .env_remove("PKG_CONFIG_LIBDIR"),
        )
        .stdout
        .trim()
        .to_string()
    };
    assert_eq!(pkg_config(&["--modversion"]), version);
    let flags = pkg_config(&["--cflags", "--libs"]);
    let source = scratch.path().join("prog.c");
    fs::write(&source, PROGRAM).unwrap();
    let program = scratch.path().join("prog");
    let compiled = run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(&source)
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&program));
    assert!(
        compiled.ok() && compiled.stderr.is_empty(),
        "cc prog.c {flags} failed:\n{}",
        compiled.stderr
    );
    let needed = run_ok(Command::new("readelf").arg("-d").arg(&program)).stdout;
    assert!(
        needed.contains(&format!("Shared library: [{soname}]")),
        "the program does not ask for {soname}:\n{needed}"
    );
    let store_dir = scratch.path().join("store");
    let ran = run_ok(
        Command::new(&program)
            .arg(&store_dir)
            .env("LD_LIBRARY_PATH", &lib),
    );
    assert!(ran.stdout.contains("lookup: NOT_FOUND"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains(&format!("loaded {}", real.display())),
        "the program did not load the installed library:\n{}",
        ran.stdout
    );

    // Static: Libs.private names what Rust's std needs; -l:libcimage.a picks the archive.
    let static_flags =
        pkg_config(&["--cflags", "--libs", "--static"]).replace("-lcimage", "-l:libcimage.a");
    let static_program = scratch.path().join("prog-static");
    let compiled = run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(&source)
        .args(static_flags.split_whitespace())
        .arg("-o")
        .arg(&static_program));
    assert!(
        compiled.ok(),
        "cc prog.c {static_flags} failed:\n{}",
        compiled.stderr
    );
    let needed = run_ok(Command::new("readelf").arg("-d").arg(&static_program)).stdout;
    assert!(
        !needed.contains("libcimage"),
        "the static program still needs libcimage:\n{needed}"
    );
    let ran = run_ok(Command::new(&static_program).arg(scratch.path().join("store-static")));
    assert!(ran.stdout.contains("lookup: NOT_FOUND"), "{}", ran.stdout);

    // The Go package against the installed library, its flags from pkg-config (the build tag).
    if have_tool("go") {
        let goimagego = scratch.path().join("goimagego");
        run_ok(
            Command::new("go")
                .current_dir(repo_dir().join("c-examples/go"))
                .args(["build", "-tags", "cimage_pkgconfig", "-o"])
                .arg(&goimagego)
                .arg("./cmd/goimagego")
                .env("PKG_CONFIG_PATH", lib.join("pkgconfig"))
                .env("PKG_CONFIG_SYSROOT_DIR", &dest)
                .env_remove("PKG_CONFIG_LIBDIR")
                // Go's build cache keys a cgo package on its cgo flags but not on what pkg-config
                // answers (Go 1.19): without a flag naming this DESTDIR, a package cached by an
                // earlier run would link with that run's -L. The define changes nothing else.
                .env(
                    "CGO_CFLAGS",
                    format!("-DCIMAGE_INSTALL_TEST={}", dest.display()),
                )
                .env_remove("CGO_LDFLAGS")
                .env("GOPROXY", "off"),
        );
        let needed = run_ok(Command::new("readelf").arg("-d").arg(&goimagego)).stdout;
        assert!(
            needed.contains(&format!("Shared library: [{soname}]")),
            "goimagego does not ask for {soname}:\n{needed}"
        );
        let go_store = scratch.path().join("go-store");
        let listed = run_ok(
            Command::new(&goimagego)
                .args(["-d", "vfs", "-r"])
                .arg(go_store.join("root"))
                .arg("-R")
                .arg(go_store.join("run"))
                .args(["--json", "images"])
                .env("LD_LIBRARY_PATH", &lib),
        );
        assert_eq!(listed.stdout, "[]\n");
    } else {
        skip("go is missing: the cimage_pkgconfig build of the Go package is not checked");
    }

    make("uninstall");
    for file in [
        real.clone(),
        lib.join(&soname),
        lib.join("libcimage.so"),
        lib.join("libcimage.a"),
        lib.join("pkgconfig/cimage.pc"),
        dest.join("usr/include/cimage.h"),
    ] {
        assert!(
            fs::symlink_metadata(&file).is_err(),
            "{} is still there after make uninstall",
            file.display()
        );
    }
}
