//! Pulling: options, progress events, cancellation, and the blocking pull call.

use super::image::{cimage_image, image_handle};
use super::store::cimage_store;
use super::{boundary, cimage_error, getter, handle, str_arg};
use crate::error::{Error, Status};
use crate::pull::{Progress, ProgressSink, PullOptions, PullPolicy};
use crate::registry::Platform;
use crate::runtime::{run_blocking, CancelFlag};
use std::ffi::{c_char, c_void, CString};

/// Pull policy: ask the registry, fetch what is missing (default).
pub const CIMAGE_PULL_POLICY_ALWAYS: i32 = 0;
/// Pull policy: no network at all when the store has an image of that name.
pub const CIMAGE_PULL_POLICY_MISSING: i32 = 1;
/// Pull policy: never touch the network; NOT_FOUND if the image is not in the store.
pub const CIMAGE_PULL_POLICY_NEVER: i32 = 2;

/// Progress: resolving the reference (`message` = reference).
pub const CIMAGE_PROGRESS_RESOLVING: i32 = 0;
/// Progress: a layer blob is downloading (`digest`, `bytes_done`, `bytes_total`).
pub const CIMAGE_PROGRESS_DOWNLOADING: i32 = 1;
/// Progress: a layer's content is being checked against its digests.
pub const CIMAGE_PROGRESS_VERIFYING: i32 = 2;
/// Progress: a layer is being extracted (happens while it downloads).
pub const CIMAGE_PROGRESS_EXTRACTING: i32 = 3;
/// Progress: a layer is in the store (`digest`).
pub const CIMAGE_PROGRESS_DONE: i32 = 4;
/// Progress: a layer was already in the store and was not fetched (`digest`).
pub const CIMAGE_PROGRESS_SKIPPED: i32 = 5;
/// Progress: a request is retried (`message` says why).
pub const CIMAGE_PROGRESS_RETRYING: i32 = 6;
/// Progress: a layer failed (`message` says why); the pull will fail.
pub const CIMAGE_PROGRESS_FAILED: i32 = 7;
/// Progress: the config blob was fetched and verified (`digest`).
pub const CIMAGE_PROGRESS_CONFIG: i32 = 8;
/// Progress: the image record and manifest are being written (`message` = reference).
pub const CIMAGE_PROGRESS_COMMITTING: i32 = 9;

/// A progress event. Valid only during the callback, strings included. Fields are only ever added
/// at the end: check `struct_size` before reading a field newer than your header.
#[repr(C)]
pub struct cimage_progress {
    /// sizeof(cimage_progress) of the library that made the event.
    pub struct_size: u32,
    /// One of the CIMAGE_PROGRESS_* values; treat unknown values as informational.
    pub kind: i32,
    /// The blob's digest ("sha256:…"), or NULL.
    pub digest: *const c_char,
    /// A human-readable detail, or NULL.
    pub message: *const c_char,
    /// Bytes downloaded so far (DOWNLOADING).
    pub bytes_done: u64,
    /// The blob's size, 0 if unknown.
    pub bytes_total: u64,
}

/// Called with progress events on the thread that called `cimage_store_pull`, one at a time, never
/// after the call returned. Return 0 to go on; anything else cancels the pull (it then returns
/// CIMAGE_STATUS_CANCELLED). The callback may call other cimage functions.
pub type cimage_progress_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, event: *const cimage_progress) -> i32>;

/// A cancellation token: `cimage_cancel_token_cancel` from any thread stops the pulls that were
/// given it. Fully thread-safe. Free with `cimage_cancel_token_free` once no call uses it.
pub struct cimage_cancel_token {
    flag: CancelFlag,
}

/// Options for `cimage_store_pull`. Not thread-safe while being changed; may be shared read-only by
/// concurrent pulls (then they share the callback and the token too).
pub struct cimage_pull_options {
    opts: PullOptions,
    progress: cimage_progress_cb,
    user_data: *mut c_void,
    cancel: Option<CancelFlag>,
}

/// New pull options: TLS verified, host platform, policy ALWAYS, no callback. Never NULL; free with
/// `cimage_pull_options_free`.
#[unsafe(no_mangle)]
pub extern "C" fn cimage_pull_options_new() -> *mut cimage_pull_options {
    Box::into_raw(Box::new(cimage_pull_options {
        opts: PullOptions::default(),
        progress: None,
        user_data: std::ptr::null_mut(),
        cancel: None,
    }))
}

/// Frees pull options. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_free(opts: *mut cimage_pull_options) {
    getter((), || unsafe { super::free_box(opts) })
}

unsafe fn opts_mut<'a>(
    opts: *mut cimage_pull_options,
) -> crate::Result<&'a mut cimage_pull_options> {
    unsafe { opts.as_mut() }.ok_or_else(|| Error::new(Status::NullArgument, "options is NULL"))
}

/// Whether to verify TLS (default true). With false the registry is reached over plain HTTP.
/// Errors: NULL_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_tls_verify(
    opts: *mut cimage_pull_options,
    verify: bool,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        unsafe { opts_mut(opts) }?.opts.tls_verify = verify;
        Ok(())
    })
}

/// The platform to pick from a multi-platform image, "os/arch[/variant]" such as "linux/arm64/v8"
/// (default: the host's). Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_platform(
    opts: *mut cimage_pull_options,
    platform: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.opts.platform = Some(Platform::parse(unsafe { str_arg(platform, "platform") }?)?);
        Ok(())
    })
}

/// The pull policy, one of CIMAGE_PULL_POLICY_*. Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_policy(
    opts: *mut cimage_pull_options,
    policy: i32,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.opts.policy = match policy {
            CIMAGE_PULL_POLICY_ALWAYS => PullPolicy::Always,
            CIMAGE_PULL_POLICY_MISSING => PullPolicy::Missing,
            CIMAGE_PULL_POLICY_NEVER => PullPolicy::Never,
            other => return Err(Error::invalid(format!("unknown pull policy {other}"))),
        };
        Ok(())
    })
}

/// Caps what the image may unpack to: the sum of its layers' uncompressed tar streams, in bytes
/// (default 64 GiB). A pull that would pass it stops with UNSAFE_ARCHIVE and leaves the store as
/// it was; this is what stops a decompression bomb. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_max_unpacked_size(
    opts: *mut cimage_pull_options,
    bytes: u64,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        if bytes == 0 {
            return Err(Error::invalid("the maximum unpacked size must be above 0"));
        }
        o.opts.max_unpacked_size = bytes;
        Ok(())
    })
}

/// Sets (or, with a NULL `cb`, clears) the progress callback and its `user_data`.
/// Errors: NULL_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_progress(
    opts: *mut cimage_pull_options,
    cb: cimage_progress_cb,
    user_data: *mut c_void,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.progress = cb;
        o.user_data = user_data;
        Ok(())
    })
}

/// Makes pulls with these options stop when `token` is cancelled (NULL clears). The options keep
/// their own reference: the token may be freed before them. Errors: NULL_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_cancel_token(
    opts: *mut cimage_pull_options,
    token: *const cimage_cancel_token,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.cancel = unsafe { token.as_ref() }.map(|t| t.flag.clone());
        Ok(())
    })
}

/// A new, uncancelled token. Never NULL; free with `cimage_cancel_token_free`.
#[unsafe(no_mangle)]
pub extern "C" fn cimage_cancel_token_new() -> *mut cimage_cancel_token {
    Box::into_raw(Box::new(cimage_cancel_token {
        flag: CancelFlag::new(),
    }))
}

/// Cancels: pulls using the token stop soon and return CIMAGE_STATUS_CANCELLED, leaving the store
/// as it was. Safe from any thread, any number of times. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_cancel_token_cancel(token: *const cimage_cancel_token) {
    getter((), || {
        if let Some(t) = unsafe { token.as_ref() } {
            t.flag.cancel()
        }
    })
}

/// Frees a token. NULL is ignored. Options that were given the token keep working.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_cancel_token_free(token: *mut cimage_cancel_token) {
    getter((), || unsafe { super::free_box(token) })
}

fn event_parts(p: &Progress) -> (i32, Option<&str>, Option<&str>, u64, u64) {
    match p {
        Progress::Resolving { reference } => {
            (CIMAGE_PROGRESS_RESOLVING, None, Some(reference), 0, 0)
        }
        Progress::Downloading {
            digest,
            done,
            total,
        } => (
            CIMAGE_PROGRESS_DOWNLOADING,
            Some(digest),
            None,
            *done,
            *total,
        ),
        Progress::Verifying { digest } => (CIMAGE_PROGRESS_VERIFYING, Some(digest), None, 0, 0),
        Progress::Extracting { digest } => (CIMAGE_PROGRESS_EXTRACTING, Some(digest), None, 0, 0),
        Progress::Done { digest } => (CIMAGE_PROGRESS_DONE, Some(digest), None, 0, 0),
        Progress::Skipped { digest } => (CIMAGE_PROGRESS_SKIPPED, Some(digest), None, 0, 0),
        Progress::Retrying { digest, message } => {
            (CIMAGE_PROGRESS_RETRYING, Some(digest), Some(message), 0, 0)
        }
        Progress::Failed { digest, message } => {
            (CIMAGE_PROGRESS_FAILED, Some(digest), Some(message), 0, 0)
        }
        Progress::Config { digest } => (CIMAGE_PROGRESS_CONFIG, Some(digest), None, 0, 0),
        Progress::Committing { reference } => {
            (CIMAGE_PROGRESS_COMMITTING, None, Some(reference), 0, 0)
        }
    }
}

/// Pulls an image into the store: `docker://REF`, `oci:DIR[:TAG]`, or a bare name (`alpine` means
/// docker.io/library/alpine:latest). Blocks until done; progress callbacks run on this thread.
/// `opts` may be NULL (defaults). If `image_out` is not NULL it receives the image, to free with
/// `cimage_image_free`.
///
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (malformed reference), NOT_FOUND (platform, or policy
/// NEVER), MANIFEST_UNKNOWN, NETWORK, AUTH_REQUIRED, AUTH_FAILED, REGISTRY, DIGEST_MISMATCH,
/// UNSAFE_ARCHIVE (hostile layer: nothing is registered), UNSUPPORTED, NO_SPACE, CANCELLED, IO.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_pull(
    store: *mut cimage_store,
    reference: *const c_char,
    opts: *const cimage_pull_options,
    image_out: *mut *mut cimage_image,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        if !image_out.is_null() {
            unsafe { *image_out = std::ptr::null_mut() };
        }
        let s = unsafe { handle(store, "store") }?.store.clone();
        let reference = unsafe { str_arg(reference, "reference") }?.to_string();
        let o = unsafe { opts.as_ref() };
        let pull_opts = o.map(|o| o.opts.clone()).unwrap_or_default();
        let cancel = o.and_then(|o| o.cancel.clone()).unwrap_or_default().child();
        let (cb, user_data) = o
            .map(|o| (o.progress, o.user_data))
            .unwrap_or((None, std::ptr::null_mut()));
        let c2 = cancel.clone();
        let r = reference.clone();
        let image = run_blocking(
            &cancel,
            move |tx| async move {
                crate::pull::pull(s, &r, &pull_opts, ProgressSink::new(tx), c2).await
            },
            |ev: &Progress| {
                let Some(f) = cb else { return true };
                let (kind, digest, message, done, total) = event_parts(ev);
                let digest = digest.map(|d| CString::new(d).unwrap_or_default());
                let message =
                    message.map(|m| CString::new(m.replace('\0', " ")).unwrap_or_default());
                let event = cimage_progress {
                    struct_size: std::mem::size_of::<cimage_progress>() as u32,
                    kind,
                    digest: digest
                        .as_ref()
                        .map(|c| c.as_ptr())
                        .unwrap_or(std::ptr::null()),
                    message: message
                        .as_ref()
                        .map(|c| c.as_ptr())
                        .unwrap_or(std::ptr::null()),
                    bytes_done: done,
                    bytes_total: total,
                };
                // SAFETY: the caller's callback with the caller's user_data, on the caller's thread.
                unsafe { f(user_data, &event) == 0 }
            },
        )
        .map_err(|e| {
            if e.subject.is_none() {
                e.with_subject(reference.clone())
            } else {
                e
            }
        })?;
        if !image_out.is_null() {
            unsafe { *image_out = image_handle(&image) };
        }
        Ok(())
    })
}
