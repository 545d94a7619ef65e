//! Containers: options, creation, snapshots, lists, mount, unmount, deletion.

use super::error::owned_string;
use super::store::cimage_store;
use super::{
    boundary, cimage_error, cstring, getter, handle, opt_cstring, opt_ptr, out_ptr, str_arg,
};
use crate::error::{Error, Status};
use crate::store::ContainerInfo;
use std::ffi::{c_char, CString};

/// Options for `cimage_store_container_create`. Not thread-safe while being changed.
pub struct cimage_container_options {
    name: Option<String>,
    metadata: Option<String>,
}

/// A container as it was when the handle was made (immutable snapshot; safe on any thread).
pub struct cimage_container {
    id: CString,
    names: Vec<CString>,
    image: CString,
    layer: CString,
    mount_point: Option<CString>,
    created: Option<CString>,
}

impl From<&ContainerInfo> for cimage_container {
    fn from(c: &ContainerInfo) -> Self {
        cimage_container {
            id: cstring(c.id.clone()),
            names: c.names.iter().map(|n| cstring(n.clone())).collect(),
            image: cstring(c.image.clone()),
            layer: cstring(c.layer.clone()),
            mount_point: opt_cstring(c.mount_point.as_deref()),
            created: opt_cstring(c.created.as_deref()),
        }
    }
}

/// A list of containers (snapshot). Freed with `cimage_container_list_free`.
pub struct cimage_container_list {
    items: Vec<cimage_container>,
}

/// New container options (no name, no metadata). Never NULL; free with `cimage_container_options_free`.
#[unsafe(no_mangle)]
pub extern "C" fn cimage_container_options_new() -> *mut cimage_container_options {
    Box::into_raw(Box::new(cimage_container_options {
        name: None,
        metadata: None,
    }))
}

/// Frees container options. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_options_free(opts: *mut cimage_container_options) {
    getter((), || unsafe { super::free_box(opts) })
}

/// Sets the container's name (unique among the store's containers). Errors: NULL_ARGUMENT,
/// INVALID_ARGUMENT (empty, contains '/' or control characters).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_options_set_name(
    opts: *mut cimage_container_options,
    name: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts.as_mut() }
            .ok_or_else(|| Error::new(Status::NullArgument, "options is NULL"))?;
        let n = unsafe { str_arg(name, "name") }?;
        if n.is_empty() || n.contains('/') || n.chars().any(char::is_control) {
            return Err(Error::invalid(format!("invalid container name {n:?}")));
        }
        o.name = Some(n.to_string());
        Ok(())
    })
}

/// Sets opaque metadata stored with the container record. Errors: NULL_ARGUMENT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_options_set_metadata(
    opts: *mut cimage_container_options,
    metadata: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let o = unsafe { opts.as_mut() }
            .ok_or_else(|| Error::new(Status::NullArgument, "options is NULL"))?;
        o.metadata = Some(unsafe { str_arg(metadata, "metadata") }?.to_string());
        Ok(())
    })
}

/// Creates a container (a new writable layer over the image's layers) from an image given by ID,
/// ID prefix or name. `opts` may be NULL. `*container_out` (may itself be NULL if not wanted)
/// receives a handle to free with `cimage_container_free`.
/// Errors: NULL_ARGUMENT, NOT_FOUND (image), ALREADY_EXISTS (name taken), IO.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_container_create(
    store: *mut cimage_store,
    image: *const c_char,
    opts: *const cimage_container_options,
    container_out: *mut *mut cimage_container,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        if !container_out.is_null() {
            unsafe { *container_out = std::ptr::null_mut() };
        }
        let s = unsafe { handle(store, "store") }?;
        let image = unsafe { str_arg(image, "image") }?;
        let o = unsafe { opts.as_ref() };
        let c = s.store.create_container(
            image,
            o.and_then(|o| o.name.as_deref()),
            o.and_then(|o| o.metadata.as_deref()),
        )?;
        if !container_out.is_null() {
            unsafe { *container_out = Box::into_raw(Box::new(cimage_container::from(&c))) };
        }
        Ok(())
    })
}

/// Lists the store's containers (also those made by podman or CRI-O).
/// `*list_out` receives a list to free with `cimage_container_list_free`. Errors: NULL_ARGUMENT, IO.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_containers(
    store: *mut cimage_store,
    list_out: *mut *mut cimage_container_list,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(list_out, "list_out") }?;
        let cs = unsafe { handle(store, "store") }?.store.containers()?;
        *out = Box::into_raw(Box::new(cimage_container_list {
            items: cs.iter().map(cimage_container::from).collect(),
        }));
        Ok(())
    })
}

/// Number of containers in the list; 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_list_len(list: *const cimage_container_list) -> usize {
    getter(0, || {
        unsafe { list.as_ref() }.map(|l| l.items.len()).unwrap_or(0)
    })
}

/// Container `i`, borrowed from the list; NULL when out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_list_get(
    list: *const cimage_container_list,
    i: usize,
) -> *const cimage_container {
    getter(std::ptr::null(), || {
        unsafe { list.as_ref() }
            .and_then(|l| l.items.get(i))
            .map(|x| x as *const _)
            .unwrap_or(std::ptr::null())
    })
}

/// Frees a list and the containers borrowed from it. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_list_free(list: *mut cimage_container_list) {
    getter((), || unsafe { super::free_box(list) })
}

/// Finds a container by full ID, name or unique ID prefix. `*container_out` receives a handle to
/// free with `cimage_container_free`. Errors: NULL_ARGUMENT, NOT_FOUND, INVALID_ARGUMENT (ambiguous).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_container_lookup(
    store: *mut cimage_store,
    name_or_id: *const c_char,
    container_out: *mut *mut cimage_container,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(container_out, "container_out") }?;
        let c = unsafe { handle(store, "store") }?
            .store
            .container(unsafe { str_arg(name_or_id, "container name or ID") }?)?;
        *out = Box::into_raw(Box::new(cimage_container::from(&c)));
        Ok(())
    })
}

/// Frees a container handle. NULL is ignored. Never free a container borrowed from a list.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_free(container: *mut cimage_container) {
    getter((), || unsafe { super::free_box(container) })
}

/// The container ID. Borrowed; NULL for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_id(c: *const cimage_container) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { c.as_ref() }
            .map(|c| c.id.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// Number of names; 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_names_len(c: *const cimage_container) -> usize {
    getter(0, || {
        unsafe { c.as_ref() }.map(|c| c.names.len()).unwrap_or(0)
    })
}

/// Name `n`, borrowed; NULL when out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_name(
    c: *const cimage_container,
    n: usize,
) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { c.as_ref() }
            .and_then(|c| c.names.get(n))
            .map(|s| s.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// ID of the image the container was made from. Borrowed; NULL for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_image_id(c: *const cimage_container) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { c.as_ref() }
            .map(|c| c.image.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// ID of the container's writable layer. Borrowed; NULL for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_layer_id(c: *const cimage_container) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { c.as_ref() }
            .map(|c| c.layer.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// Where the container is mounted, or NULL when it was not mounted at snapshot time. Borrowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_mount_point(c: *const cimage_container) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { c.as_ref() }
            .map(|c| opt_ptr(&c.mount_point))
            .unwrap_or(std::ptr::null())
    })
}

/// Creation time (RFC 3339), or NULL. Borrowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_container_created(c: *const cimage_container) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { c.as_ref() }
            .map(|c| opt_ptr(&c.created))
            .unwrap_or(std::ptr::null())
    })
}

/// Mounts a container's root file system (overlay: a merged view of its layers; vfs: its own copy)
/// and counts the mount in the run root, where podman counts its own. Mounting a mounted container
/// only raises the count. `*path_out` receives the mount point, to free with `cimage_string_free`.
/// Errors: NULL_ARGUMENT, NOT_FOUND, PERMISSION_DENIED (overlay needs root), UNSUPPORTED, IO.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_container_mount(
    store: *mut cimage_store,
    container: *const c_char,
    path_out: *mut *mut c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(path_out, "path_out") }?;
        let path = unsafe { handle(store, "store") }?
            .store
            .mount_container(unsafe { str_arg(container, "container") }?)?;
        *out = owned_string(path.display().to_string());
        Ok(())
    })
}

/// Drops one mount of a container; the file system is unmounted when the count reaches zero, or at
/// once with `force`. Unmounting a container that is not mounted succeeds.
/// Errors: NULL_ARGUMENT, NOT_FOUND, IO.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_container_unmount(
    store: *mut cimage_store,
    container: *const c_char,
    force: bool,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        unsafe { handle(store, "store") }?
            .store
            .unmount_container(unsafe { str_arg(container, "container") }?, force)?;
        Ok(())
    })
}

/// Deletes a container and its writable layer. Errors: NULL_ARGUMENT, NOT_FOUND, IN_USE (mounted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_container_delete(
    store: *mut cimage_store,
    container: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        unsafe { handle(store, "store") }?
            .store
            .delete_container(unsafe { str_arg(container, "container") }?)
    })
}
