//! Store options, opening and closing a store, and what it reports about itself.

use super::{boundary, cimage_error, cstring, getter, handle, out_ptr, str_arg};
use crate::config::storage::DriverKind;
use crate::error::{Error, Status};
use crate::store::{Store, StoreOptions};
use std::ffi::{c_char, CString};
use std::sync::Arc;

/// Options for `cimage_store_open`. Not thread-safe: do not change it while another thread uses
/// it. May be freed as soon as the call that used it returns.
pub struct cimage_store_options {
    pub(crate) opts: StoreOptions,
}

/// An open store. Fully thread-safe: any thread may use it at once; other processes (podman,
/// skopeo, CRI-O, other cimage users) are coordinated through containers/storage's lock files.
/// Freed with `cimage_store_free`; image, layer and container handles do not depend on it.
pub struct cimage_store {
    pub(crate) store: Arc<Store>,
    graph_root: CString,
    run_root: CString,
    driver: CString,
    status: Vec<(CString, CString)>,
}

/// New store options, all unset (= storage.conf, then the built-in defaults). Free with
/// `cimage_store_options_free`. Never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn cimage_store_options_new() -> *mut cimage_store_options {
    Box::into_raw(Box::new(cimage_store_options {
        opts: StoreOptions::default(),
    }))
}

/// Frees store options. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_options_free(opts: *mut cimage_store_options) {
    getter((), || unsafe { super::free_box(opts) })
}

unsafe fn set_path(
    opts: *mut cimage_store_options,
    path: *const c_char,
    what: &str,
    err: *mut *mut cimage_error,
    set: impl FnOnce(&mut StoreOptions, std::path::PathBuf),
) -> Status {
    boundary(err, || {
        let o = unsafe { opts.as_mut() }
            .ok_or_else(|| Error::new(Status::NullArgument, "options is NULL"))?;
        let p = unsafe { str_arg(path, what) }?;
        if p.is_empty() || !p.starts_with('/') {
            return Err(Error::invalid(format!(
                "{what} must be an absolute path, not {p:?}"
            )));
        }
        set(&mut o.opts, p.into());
        Ok(())
    })
}

/// Sets the graph root (persistent store directory, absolute path).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (relative or empty path).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_options_set_graph_root(
    opts: *mut cimage_store_options,
    path: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    unsafe { set_path(opts, path, "graph root", err, |o, p| o.graph_root = Some(p)) }
}

/// Sets the run root (volatile state such as mount counts, absolute path; normally on tmpfs).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_options_set_run_root(
    opts: *mut cimage_store_options,
    path: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    unsafe { set_path(opts, path, "run root", err, |o, p| o.run_root = Some(p)) }
}

/// Sets the storage.conf file to read instead of the system's.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_options_set_config_file(
    opts: *mut cimage_store_options,
    path: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    unsafe {
        set_path(opts, path, "storage.conf path", err, |o, p| {
            o.config_file = Some(p)
        })
    }
}

/// Sets the driver: "overlay" or "vfs".
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown driver).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_options_set_driver(
    opts: *mut cimage_store_options,
    driver: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts.as_mut() }
            .ok_or_else(|| Error::new(Status::NullArgument, "options is NULL"))?;
        o.opts.driver = Some(DriverKind::parse(unsafe { str_arg(driver, "driver") }?)?);
        Ok(())
    })
}

/// Sets whether the store's writes are durable (default true). With `sync` true, metadata files
/// are flushed before they replace the old ones (as containers/storage does), and the files a
/// record names are flushed before the record is saved (a pull's layers by one syncfs; a new
/// container's layer and an image's manifest and config file by file, so that these do not
/// wait for unrelated writes pending on the same file system): after a power loss the store comes back as it was before or after each operation. With
/// false nothing is flushed (the kernel writes back in its own time): faster on disks (about
/// 0.2-0.6 s per cold pull and a few ms per container create/delete on ext4, nothing on
/// tmpfs), but a power loss may leave truncated metadata or layers. A process crash is safe
/// either way. storage.conf has no equivalent key.
/// Errors: NULL_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_options_set_sync(
    opts: *mut cimage_store_options,
    sync: bool,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts.as_mut() }
            .ok_or_else(|| Error::new(Status::NullArgument, "options is NULL"))?;
        o.opts.sync = Some(sync);
        Ok(())
    })
}

/// Opens the store (creating its directories if needed) and cleans up what interrupted writers
/// left behind. `opts` may be NULL for the defaults. On success `*store_out` receives a store to
/// free with `cimage_store_free`.
///
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a root that is a file), CONFIG (bad storage.conf),
/// UNSUPPORTED (no overlay in the kernel, fuse-overlayfs stores), PERMISSION_DENIED, IO.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_open(
    opts: *const cimage_store_options,
    store_out: *mut *mut cimage_store,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(store_out, "store_out") }?;
        let defaults = StoreOptions::default();
        let o = unsafe { opts.as_ref() }
            .map(|o| &o.opts)
            .unwrap_or(&defaults);
        let store = Store::open(o)?;
        let handle = cimage_store {
            graph_root: cstring(store.graph_root().display().to_string()),
            run_root: cstring(store.run_root().display().to_string()),
            driver: cstring(store.driver_kind().name()),
            status: store
                .driver_status()
                .into_iter()
                .map(|(k, v)| (cstring(k), cstring(v)))
                .collect(),
            store: Arc::new(store),
        };
        *out = Box::into_raw(Box::new(handle));
        Ok(())
    })
}

/// Closes the store handle. NULL is ignored. Do not free a store while another thread uses it.
/// Mounts stay mounted (they belong to the store on disk, not to the handle).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_free(store: *mut cimage_store) {
    getter((), || unsafe { super::free_box(store) })
}

/// The graph root. Borrowed from the store. NULL for a NULL store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_graph_root(store: *const cimage_store) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { store.as_ref() }
            .map(|s| s.graph_root.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// The run root. Borrowed from the store. NULL for a NULL store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_run_root(store: *const cimage_store) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { store.as_ref() }
            .map(|s| s.run_root.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// The driver name, "overlay" or "vfs". Borrowed from the store. NULL for a NULL store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_driver_name(store: *const cimage_store) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { store.as_ref() }
            .map(|s| s.driver.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// Number of driver status fields (overlay: "Backing Filesystem", "Supports d_type",
/// "Native Overlay Diff", "Using metacopy"; vfs: none). 0 for a NULL store.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_driver_status_len(store: *const cimage_store) -> usize {
    getter(0, || {
        unsafe { store.as_ref() }
            .map(|s| s.status.len())
            .unwrap_or(0)
    })
}

/// Key of driver status field `i`. Borrowed from the store; NULL when out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_driver_status_key(
    store: *const cimage_store,
    i: usize,
) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { store.as_ref() }
            .and_then(|s| s.status.get(i))
            .map(|(k, _)| k.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// Value of driver status field `i`. Borrowed from the store; NULL when out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_driver_status_value(
    store: *const cimage_store,
    i: usize,
) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { store.as_ref() }
            .and_then(|s| s.status.get(i))
            .map(|(_, v)| v.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// Removes every container, image and layer of the store; mounted containers are unmounted first.
/// Errors: NULL_ARGUMENT, IO, PERMISSION_DENIED.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_wipe(
    store: *mut cimage_store,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || unsafe { handle(store, "store") }?.store.wipe())
}
