//! Generates include/cimage.h from src/ffi with cbindgen (c-api-style.md R8) and sets the SONAME.
//! The header is committed: it is rewritten only when its content changes, and with
//! CIMAGE_HEADER_CHECK=1 a stale header fails the build instead.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=include/cimage.h");
    println!("cargo:rerun-if-env-changed=CIMAGE_HEADER_CHECK");
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap();
    let major: u32 = std::env::var("CARGO_PKG_VERSION_MAJOR")
        .unwrap()
        .parse()
        .unwrap();
    let minor: u32 = std::env::var("CARGO_PKG_VERSION_MINOR")
        .unwrap()
        .parse()
        .unwrap();
    let patch: u32 = std::env::var("CARGO_PKG_VERSION_PATCH")
        .unwrap()
        .parse()
        .unwrap();

    generate_header(&crate_dir, &version, major, minor, patch);

    // SONAME as cargo-c would set it: libcimage.so.0.<minor> on 0.x, libcimage.so.<major> after.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var_os("CARGO_FEATURE_CAPI").is_none()
    {
        let sover = if major == 0 {
            format!("0.{minor}")
        } else {
            major.to_string()
        };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcimage.so.{sover}");
        link_soname_in_target_dir(&format!("libcimage.so.{sover}"));
    }
}

/// Programs linked with -lcimage ask the loader for the SONAME: give target/<profile>/ a
/// `libcimage.so.0.N -> libcimage.so` link so they run straight from the build tree.
fn link_soname_in_target_dir(soname: &str) {
    // OUT_DIR is target/<profile>/build/cimage-<hash>/out.
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let link = profile_dir.join(soname);
    if std::fs::read_link(&link).is_err() {
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink("libcimage.so", &link) {
            println!("cargo:warning=could not create {}: {e}", link.display());
        }
    }
}

fn generate_header(crate_dir: &std::path::Path, version: &str, major: u32, minor: u32, patch: u32) {
    let after = format!(
        r#"
#define CIMAGE_VERSION_MAJOR {major}
#define CIMAGE_VERSION_MINOR {minor}
#define CIMAGE_VERSION_PATCH {patch}
#define CIMAGE_VERSION_NUMBER {number}
#define CIMAGE_VERSION_STRING "{version}"

#if defined(__GNUC__) || defined(__clang__)
#define CIMAGE_MUST_USE __attribute__((warn_unused_result))
#define CIMAGE_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#define CIMAGE_MUST_USE
#define CIMAGE_DEPRECATED(msg)
#endif
"#,
        number = major * 1_000_000 + minor * 1_000 + patch
    );
    let mut config = cbindgen::Config {
        language: cbindgen::Language::C,
        include_guard: Some("CIMAGE_H".into()),
        cpp_compat: true,
        style: cbindgen::Style::Both,
        usize_is_size_t: true,
        documentation: true,
        documentation_style: cbindgen::DocumentationStyle::Doxy,
        after_includes: Some(after),
        header: Some(HEADER.into()),
        sys_includes: vec!["stdbool.h".into(), "stddef.h".into(), "stdint.h".into()],
        no_includes: true,
        ..Default::default()
    };
    config.enumeration.prefix_with_name = true;
    config.enumeration.rename_variants = cbindgen::RenameRule::ScreamingSnakeCase;
    config.function.must_use = Some("CIMAGE_MUST_USE".into());
    config.function.deprecated_with_note = Some("CIMAGE_DEPRECATED({})".into());
    config
        .export
        .rename
        .insert("Status".into(), "cimage_status".into());
    config.export.include.push("cimage_progress".into());
    let header = crate_dir.join("include").join("cimage.h");
    let bindings = match cbindgen::Builder::new()
        // Only the C layer and the status enum: constants of the core must not reach the header
        // (tests/header_fresh.rs checks that every macro carries the CIMAGE_ prefix).
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_src(crate_dir.join("src/error.rs"))
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(cbindgen::Error::ParseSyntaxError { .. }) => {
            println!("cargo:warning=cbindgen could not parse the crate; header not regenerated");
            return;
        }
        Err(e) => panic!("cbindgen failed: {e}"),
    };
    if std::env::var("CIMAGE_HEADER_CHECK").as_deref() == Ok("1") {
        let mut fresh = Vec::new();
        bindings.write(&mut fresh);
        let committed = std::fs::read(&header).unwrap_or_default();
        if fresh != committed {
            panic!("include/cimage.h is stale: build without CIMAGE_HEADER_CHECK=1 and commit the regenerated header");
        }
        return;
    }
    if bindings.write_to_file(&header) {
        println!("cargo:warning=include/cimage.h regenerated; commit it");
    }
}

const HEADER: &str = "/*
 * cimage: pull container images, keep them in a containers/storage store shared with podman,
 * create containers and mount them. Generated by build.rs with cbindgen from src/ffi: do not edit.
 *
 * Conventions
 * - Every fallible function returns a cimage_status (0 = CIMAGE_STATUS_OK; codes are never
 *   renumbered; treat unknown codes as failure) and takes `cimage_error **err` last. When err is
 *   not NULL, *err is set to NULL on success and to a new error (free with cimage_error_free) on
 *   failure. There is no thread-local \"last error\".
 * - Ownership: handles returned through `**out` are the caller's, freed once with their _free
 *   (NULL-safe). `const char *` and `const cimage_x *` returned by getters are borrowed from their
 *   handle and valid until it is freed. Owned `char *` (JSON, paths) are freed with
 *   cimage_string_free, never free(). Input strings are NUL-terminated UTF-8, borrowed for the call.
 *   On failure pointer out-params are set to NULL. Handles may be freed in any order.
 * - Threads: every function may be called from any thread; no initialisation call is needed.
 *   cimage_store and cimage_cancel_token are fully thread-safe; image, layer, container handles and
 *   errors are immutable snapshots; options must not be changed while another thread uses them.
 *   Never free a handle another call is using. Not fork-safe: do not use the library in a child
 *   after fork() without exec.
 * - Callbacks: progress callbacks run only on the thread that made the call, never after it
 *   returns; the log callback may run on any thread.
 * - No panic crosses this boundary: an internal bug returns CIMAGE_STATUS_PANIC.
 */";
