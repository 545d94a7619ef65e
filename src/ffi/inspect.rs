//! Looking at images and repositories in a registry (or an OCI layout) without pulling.

use super::error::owned_string;
use super::pull::{cimage_pull_options, with_reference, CallSettings};
use super::{boundary, cimage_error, out_ptr, str_arg};
use crate::error::Status;
use std::ffi::c_char;

/// Reads an image's manifest and config from its source without pulling anything, blocking until
/// done. `reference` is any pull reference (`docker://…`, `oci:DIR[:TAG]`, a bare name). `opts`
/// may be NULL; its TLS setting, platform (an index is resolved to that platform's image), stall
/// limit, deadline, retries, cancel token and progress callback (RETRYING events) apply.
///
/// `*json_out` receives a JSON object, to free with `cimage_string_free`:
/// `reference`, `name` (registry/repository), `digest` (the image manifest's), `media_type`,
/// `index_digest` (or null), `config_digest`, `created`, `os`, `architecture`, `variant`,
/// `labels`, `env`, `layers` (`digest`, `size`, `media_type` each), and the documents themselves
/// as `manifest` and `config`.
///
/// Errors: those of `cimage_store_pull` that concern the registry (NULL_ARGUMENT,
/// INVALID_ARGUMENT, NOT_FOUND, MANIFEST_UNKNOWN, NETWORK, TIMEOUT, AUTH_*, REGISTRY,
/// DIGEST_MISMATCH, UNSUPPORTED, CANCELLED).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_inspect(
    reference: *const c_char,
    opts: *const cimage_pull_options,
    json_out: *mut *mut c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(json_out, "json_out") }?;
        let reference = unsafe { str_arg(reference, "reference") }?.to_string();
        let r = reference.clone();
        let doc = CallSettings::from(opts)
            .run_blocking(move |opts, progress, cancel| async move {
                crate::inspect::inspect(&r, &opts, progress, cancel).await
            })
            .map_err(|e| with_reference(e, &reference))?;
        *out = owned_string(doc.to_string());
        Ok(())
    })
}

/// Lists a repository's tags, blocking until done: `repository` is `docker://HOST/REPO` (a tag or
/// digest in it is ignored), or `oci:DIR` for a layout's image names. Pagination is followed.
/// `opts` as for `cimage_inspect`. `*json_out` receives `{"name": "HOST/REPO", "tags": [...]}`,
/// to free with `cimage_string_free`.
///
/// Errors: as `cimage_inspect`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_list_tags(
    repository: *const c_char,
    opts: *const cimage_pull_options,
    json_out: *mut *mut c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(json_out, "json_out") }?;
        let repository = unsafe { str_arg(repository, "repository") }?.to_string();
        let r = repository.clone();
        let doc = CallSettings::from(opts)
            .run_blocking(move |opts, progress, cancel| async move {
                crate::inspect::list_tags(&r, &opts, progress, cancel).await
            })
            .map_err(|e| with_reference(e, &repository))?;
        *out = owned_string(doc.to_string());
        Ok(())
    })
}
