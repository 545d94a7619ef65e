//! Pulling: options, progress events, cancellation, and the blocking pull call.

use super::image::{cimage_image, image_handle};
use super::store::cimage_store;
use super::{boundary, cimage_error, getter, handle, str_arg};
use crate::config::auth::Credential;
use crate::error::{Error, Status};
use crate::pull::{Progress, ProgressSink, PullOptions, PullPolicy};
use crate::registry::Platform;
use crate::runtime::{run_blocking, CancelFlag, NextEvent, Operation};
use crate::store::ImageInfo;
use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::time::Duration;

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

/// Options for `cimage_store_pull`, `cimage_store_pull_start`, `cimage_inspect` and
/// `cimage_list_tags`. Not thread-safe while being changed; may be shared read-only by concurrent
/// calls (then they share the callback and the token too).
pub struct cimage_pull_options {
    pub(crate) opts: PullOptions,
    progress: cimage_progress_cb,
    user_data: *mut c_void,
    pub(crate) cancel: Option<CancelFlag>,
}

/// New pull options: host platform, policy ALWAYS, no callback; TLS, credentials, registries and
/// signature policy as the configuration files say (README, "Registry configuration"). Never
/// NULL; free with `cimage_pull_options_free`.
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

/// Whether to verify TLS for every registry of the pull. Not calling it: verified, except for
/// registries that registries.conf marks `insecure = true`. false: certificates are not checked
/// and plain HTTP is used when HTTPS cannot be spoken; true: verified even where
/// registries.conf says insecure. Errors: NULL_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_tls_verify(
    opts: *mut cimage_pull_options,
    verify: bool,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        unsafe { opts_mut(opts) }?.opts.access.tls_verify = Some(verify);
        Ok(())
    })
}

/// An optional path argument: NULL → None (the default), "" → INVALID_ARGUMENT.
unsafe fn path_arg(p: *const c_char, what: &str) -> crate::Result<Option<PathBuf>> {
    if p.is_null() {
        return Ok(None);
    }
    let s = unsafe { str_arg(p, what) }?;
    if s.is_empty() {
        return Err(Error::invalid(format!(
            "{what} is empty (pass NULL for the default)"
        )));
    }
    Ok(Some(PathBuf::from(s)))
}

/// Username and password for every registry of the pull (as skopeo's `--creds`); no auth file
/// or credential helper is consulted then. The registry's token service receives them when it
/// asks for a bearer token; a refused password fails the pull with AUTH_FAILED. A NULL
/// `username` clears them. Errors: NULL_ARGUMENT (`opts`, or `password` with a username),
/// INVALID_ARGUMENT (empty username).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_credentials(
    opts: *mut cimage_pull_options,
    username: *const c_char,
    password: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        if username.is_null() {
            o.opts.access.credentials = None;
            return Ok(());
        }
        let username = unsafe { str_arg(username, "username") }?;
        let password = unsafe { str_arg(password, "password") }?;
        if username.is_empty() {
            return Err(Error::invalid("username is empty"));
        }
        o.opts.access.credentials = Some(Credential::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
        Ok(())
    })
}

/// The auth file (containers-auth.json(5) format) to read credentials from, instead of
/// $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json, ~/.config/containers/auth.json,
/// ~/.docker/config.json and ~/.dockercfg. It must exist. NULL restores the default.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_auth_file(
    opts: *mut cimage_pull_options,
    path: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.opts.access.auth_file = unsafe { path_arg(path, "auth file path") }?;
        Ok(())
    })
}

/// The registries.conf to read, instead of $CONTAINERS_REGISTRIES_CONF,
/// ~/.config/containers/registries.conf or /etc/containers/registries.conf. It must exist.
/// Drop-in directories are still read unless `cimage_pull_options_set_registries_conf_dir`
/// names one. NULL restores the default. Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_registries_conf(
    opts: *mut cimage_pull_options,
    path: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.opts.access.registries_conf = unsafe { path_arg(path, "registries.conf path") }?;
        Ok(())
    })
}

/// The only registries.conf.d drop-in directory to read (its `*.conf` files, in name order),
/// instead of /etc/containers/registries.conf.d and ~/.config/containers/registries.conf.d.
/// A missing directory has no drop-ins. NULL restores the default.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_registries_conf_dir(
    opts: *mut cimage_pull_options,
    dir: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.opts.access.registries_conf_dir = unsafe { path_arg(dir, "drop-in directory") }?;
        Ok(())
    })
}

/// The signature policy (containers-policy.json(5)) to apply, instead of
/// ~/.config/containers/policy.json or /etc/containers/policy.json. It must exist. A policy
/// that rejects the image, or requires signatures (which this version cannot verify), fails the
/// pull with POLICY_REJECTED. NULL restores the default. Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_policy_file(
    opts: *mut cimage_pull_options,
    path: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.opts.access.signature_policy = unsafe { path_arg(path, "policy path") }?;
        Ok(())
    })
}

/// A directory of TLS files for every registry of the pull (as skopeo's `--cert-dir`): `*.crt`
/// CA certificates trusted besides the system roots, `*.cert`/`*.key` client pairs (not presented
/// by this version: a warning is logged). Replaces the certs.d lookup. NULL restores the default.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_cert_dir(
    opts: *mut cimage_pull_options,
    dir: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.opts.access.cert_dir = unsafe { path_arg(dir, "certificate directory") }?;
        Ok(())
    })
}

/// A certs.d root: the TLS files of registry HOST[:PORT] are read from `dir/HOST[:PORT]/`
/// instead of ~/.config/containers/certs.d, /etc/containers/certs.d and /etc/docker/certs.d.
/// NULL restores the default. Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_certs_d(
    opts: *mut cimage_pull_options,
    dir: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts_mut(opts) }?;
        o.opts.access.certs_d = unsafe { path_arg(dir, "certs.d directory") }?;
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

/// No byte from the registry for `ms` milliseconds ends a request with CIMAGE_STATUS_TIMEOUT
/// (a blob that was arriving is first resumed once more with a Range request). Default 30000;
/// 0 means no stall limit. Errors: NULL_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_stall_timeout_ms(
    opts: *mut cimage_pull_options,
    ms: u64,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        unsafe { opts_mut(opts) }?.opts.stall_timeout = if ms == 0 {
            NO_LIMIT
        } else {
            Duration::from_millis(ms)
        };
        Ok(())
    })
}

/// The whole call must end within `ms` milliseconds, else it stops, cleans up like a cancel and
/// returns CIMAGE_STATUS_TIMEOUT. Default and 0: no deadline. Errors: NULL_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_deadline_ms(
    opts: *mut cimage_pull_options,
    ms: u64,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        unsafe { opts_mut(opts) }?.opts.deadline = (ms != 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// How many times a request that failed transiently (connection error, HTTP 5xx, 429) or a blob
/// body that broke off without progress is retried, with exponential backoff from 200 ms.
/// Default 4; 0 disables retries. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (over 100).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_options_set_max_retries(
    opts: *mut cimage_pull_options,
    retries: u32,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        if retries > 100 {
            return Err(Error::invalid(format!(
                "{retries} retries is too many (at most 100)"
            )));
        }
        unsafe { opts_mut(opts) }?.opts.retry.max_retries = retries;
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

/// "No limit" for the stall timeout: a century.
const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

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

pub(crate) fn event_parts(p: &Progress) -> (i32, Option<&str>, Option<&str>, u64, u64) {
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
        Progress::Retrying { digest, message } => (
            CIMAGE_PROGRESS_RETRYING,
            // A retried request for a tag or the API root has no digest.
            Some(digest.as_str()).filter(|d| !d.is_empty()),
            Some(message),
            0,
            0,
        ),
        Progress::Failed { digest, message } => {
            (CIMAGE_PROGRESS_FAILED, Some(digest), Some(message), 0, 0)
        }
        Progress::Config { digest } => (CIMAGE_PROGRESS_CONFIG, Some(digest), None, 0, 0),
        Progress::Committing { reference } => {
            (CIMAGE_PROGRESS_COMMITTING, None, Some(reference), 0, 0)
        }
    }
}

/// A progress event and the strings it points to, kept alive together.
pub(crate) struct OwnedEvent {
    _digest: Option<CString>,
    _message: Option<CString>,
    pub(crate) event: cimage_progress,
}

impl OwnedEvent {
    pub(crate) fn new(p: &Progress) -> Box<OwnedEvent> {
        let (kind, digest, message, done, total) = event_parts(p);
        let digest = digest.map(|d| CString::new(d).unwrap_or_default());
        let message = message.map(|m| CString::new(m.replace('\0', " ")).unwrap_or_default());
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
        // The CStrings' heap buffers do not move when they are moved into the box.
        Box::new(OwnedEvent {
            _digest: digest,
            _message: message,
            event,
        })
    }
}

/// What a C call that runs registry work needs from its options: a copy of the settings, the
/// cancel flag for this call (a child of the options' token) and the callback.
pub(crate) struct CallSettings {
    pub(crate) opts: PullOptions,
    pub(crate) cancel: CancelFlag,
    pub(crate) progress: cimage_progress_cb,
    pub(crate) user_data: *mut c_void,
}

impl CallSettings {
    pub(crate) fn from(opts: *const cimage_pull_options) -> CallSettings {
        let o = unsafe { opts.as_ref() };
        CallSettings {
            opts: o.map(|o| o.opts.clone()).unwrap_or_default(),
            cancel: o.and_then(|o| o.cancel.clone()).unwrap_or_default().child(),
            progress: o.and_then(|o| o.progress),
            user_data: o.map(|o| o.user_data).unwrap_or(std::ptr::null_mut()),
        }
    }

    /// Runs registry work on the runtime, handing its events to the callback on this thread.
    pub(crate) fn run_blocking<T, Fut>(
        self,
        work: impl FnOnce(PullOptions, ProgressSink, CancelFlag) -> Fut,
    ) -> crate::Result<T>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = crate::Result<T>> + Send + 'static,
    {
        let CallSettings {
            opts,
            cancel,
            progress,
            user_data,
        } = self;
        let c2 = cancel.clone();
        run_blocking(
            &cancel,
            move |tx| work(opts, ProgressSink::new(tx), c2),
            |ev: &Progress| {
                let Some(f) = progress else { return true };
                let owned = OwnedEvent::new(ev);
                // SAFETY: the caller's callback with the caller's user_data, on the caller's thread.
                unsafe { f(user_data, &owned.event) == 0 }
            },
        )
    }
}

/// Starts a pull as an operation on the runtime: the one code path of the blocking and the
/// non-blocking pull.
pub(crate) fn start_pull(
    store: *mut cimage_store,
    reference: *const c_char,
    opts: *const cimage_pull_options,
) -> crate::Result<(Operation<ImageInfo, Progress>, String, CallSettings)> {
    let s = unsafe { handle(store, "store") }?.store.clone();
    let reference = unsafe { str_arg(reference, "reference") }?.to_string();
    let settings = CallSettings::from(opts);
    let (pull_opts, cancel) = (settings.opts.clone(), settings.cancel.clone());
    let r = reference.clone();
    let op = Operation::start(settings.cancel.clone(), move |tx| async move {
        crate::pull::pull(s, &r, &pull_opts, ProgressSink::new(tx), cancel).await
    })?;
    Ok((op, reference, settings))
}

/// Names the reference as the error's subject when nothing more precise was set.
pub(crate) fn with_reference(e: Error, reference: &str) -> Error {
    if e.subject.is_none() {
        e.with_subject(reference.to_string())
    } else {
        e
    }
}

/// Pulls an image into the store: `docker://REF`, `oci:DIR[:TAG]`, or a bare name (`alpine` means
/// docker.io/library/alpine:latest). Blocks until done; progress callbacks run on this thread.
/// `opts` may be NULL (defaults). If `image_out` is not NULL it receives the image, to free with
/// `cimage_image_free`. Built on the same operation as `cimage_store_pull_start`.
///
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (malformed reference), NOT_FOUND (platform, or policy
/// NEVER), MANIFEST_UNKNOWN, NETWORK, TIMEOUT (stall limit or deadline), AUTH_REQUIRED,
/// AUTH_FAILED, REGISTRY, DIGEST_MISMATCH, UNSAFE_ARCHIVE (hostile layer: nothing is registered),
/// UNSUPPORTED, NO_SPACE, CANCELLED, IO, POLICY_REJECTED (the signature policy refuses the image,
/// or registries.conf blocks its registry), CONFIG (a malformed registries.conf, policy.json, auth
/// file or certs.d directory). A failed, cancelled or timed-out pull leaves no partial layer, no
/// staging directory and no held lock.
///
/// A bare name without registry is resolved through registries.conf: an alias, else each
/// unqualified-search registry in order (docker.io when none is configured); an ambiguous name in
/// short-name-mode "enforcing" fails with INVALID_ARGUMENT naming the candidates. Mirrors are
/// tried before the primary location; the image keeps the name the caller asked for.
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
        let (mut op, reference, settings) = start_pull(store, reference, opts)?;
        loop {
            match op.next_event(None) {
                NextEvent::Event(ev) => {
                    let Some(f) = settings.progress else { continue };
                    let owned = OwnedEvent::new(&ev);
                    // SAFETY: the caller's callback and user_data, on the caller's thread.
                    if unsafe { f(settings.user_data, &owned.event) } != 0 {
                        settings.cancel.cancel();
                    }
                }
                NextEvent::Timeout => {}
                NextEvent::Done => break,
            }
        }
        let image = op.finish().map_err(|e| with_reference(e, &reference))?;
        if !image_out.is_null() {
            unsafe { *image_out = image_handle(&image) };
        }
        Ok(())
    })
}
