//! Layers: snapshots, lists, look-up, deletion.

use super::store::cimage_store;
use super::{
    boundary, cimage_error, cstring, getter, handle, opt_cstring, opt_ptr, out_ptr, str_arg,
};
use crate::error::Status;
use crate::store::LayerInfo;
use std::ffi::{c_char, CString};

/// A layer as it was when the handle was made (immutable snapshot; safe on any thread).
pub struct cimage_layer {
    id: CString,
    parent: Option<CString>,
    diff_digest: Option<CString>,
    compressed_digest: Option<CString>,
    diff_size: i64,
    compressed_size: i64,
    created: Option<CString>,
}

impl From<&LayerInfo> for cimage_layer {
    fn from(l: &LayerInfo) -> Self {
        cimage_layer {
            id: cstring(l.id.clone()),
            parent: opt_cstring(l.parent.as_deref()),
            diff_digest: opt_cstring(l.diff_digest.as_deref()),
            compressed_digest: opt_cstring(l.compressed_digest.as_deref()),
            diff_size: l.diff_size,
            compressed_size: l.compressed_size,
            created: opt_cstring(l.created.as_deref()),
        }
    }
}

/// A list of layers (snapshot). Freed with `cimage_layer_list_free`.
pub struct cimage_layer_list {
    items: Vec<cimage_layer>,
}

/// Lists the store's layers (image layers and containers' writable layers).
/// `*list_out` receives a list to free with `cimage_layer_list_free`. Errors: NULL_ARGUMENT, IO.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_layers(
    store: *mut cimage_store,
    list_out: *mut *mut cimage_layer_list,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(list_out, "list_out") }?;
        let layers = unsafe { handle(store, "store") }?.store.layers()?;
        *out = Box::into_raw(Box::new(cimage_layer_list {
            items: layers.iter().map(cimage_layer::from).collect(),
        }));
        Ok(())
    })
}

/// Number of layers in the list; 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_list_len(list: *const cimage_layer_list) -> usize {
    getter(0, || {
        unsafe { list.as_ref() }.map(|l| l.items.len()).unwrap_or(0)
    })
}

/// Layer `i`, borrowed from the list; NULL when out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_list_get(
    list: *const cimage_layer_list,
    i: usize,
) -> *const cimage_layer {
    getter(std::ptr::null(), || {
        unsafe { list.as_ref() }
            .and_then(|l| l.items.get(i))
            .map(|x| x as *const _)
            .unwrap_or(std::ptr::null())
    })
}

/// Frees a list and the layers borrowed from it. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_list_free(list: *mut cimage_layer_list) {
    getter((), || unsafe { super::free_box(list) })
}

/// Finds a layer by full ID, name or unique ID prefix. `*layer_out` receives a handle to free with
/// `cimage_layer_free`. Errors: NULL_ARGUMENT, NOT_FOUND, INVALID_ARGUMENT (ambiguous prefix).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_layer_lookup(
    store: *mut cimage_store,
    name_or_id: *const c_char,
    layer_out: *mut *mut cimage_layer,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(layer_out, "layer_out") }?;
        let l = unsafe { handle(store, "store") }?
            .store
            .layer(unsafe { str_arg(name_or_id, "layer name or ID") }?)?;
        *out = Box::into_raw(Box::new(cimage_layer::from(&l)));
        Ok(())
    })
}

/// Frees a layer handle. NULL is ignored. Never free a layer borrowed from a list.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_free(layer: *mut cimage_layer) {
    getter((), || unsafe { super::free_box(layer) })
}

/// The layer ID. Borrowed; NULL for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_id(layer: *const cimage_layer) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { layer.as_ref() }
            .map(|l| l.id.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// The parent layer's ID, or NULL for a base layer. Borrowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_parent(layer: *const cimage_layer) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { layer.as_ref() }
            .map(|l| opt_ptr(&l.parent))
            .unwrap_or(std::ptr::null())
    })
}

/// Digest of the uncompressed layer tar (the DiffID), or NULL (containers' layers). Borrowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_diff_digest(layer: *const cimage_layer) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { layer.as_ref() }
            .map(|l| opt_ptr(&l.diff_digest))
            .unwrap_or(std::ptr::null())
    })
}

/// Digest of the blob as pulled (compressed), or NULL. Borrowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_compressed_digest(
    layer: *const cimage_layer,
) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { layer.as_ref() }
            .map(|l| opt_ptr(&l.compressed_digest))
            .unwrap_or(std::ptr::null())
    })
}

/// Size of the uncompressed layer tar in bytes; -1 if unknown or for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_diff_size(layer: *const cimage_layer) -> i64 {
    getter(-1, || {
        unsafe { layer.as_ref() }.map(|l| l.diff_size).unwrap_or(-1)
    })
}

/// Size of the blob as pulled; 0 if unknown or for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_compressed_size(layer: *const cimage_layer) -> i64 {
    getter(0, || {
        unsafe { layer.as_ref() }
            .map(|l| l.compressed_size)
            .unwrap_or(0)
    })
}

/// Creation time of the record (RFC 3339), or NULL. Borrowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_layer_created(layer: *const cimage_layer) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { layer.as_ref() }
            .map(|l| opt_ptr(&l.created))
            .unwrap_or(std::ptr::null())
    })
}

/// Deletes a layer. Errors: NULL_ARGUMENT, NOT_FOUND, IN_USE (an image, container or child layer
/// uses it, or it is mounted).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_layer_delete(
    store: *mut cimage_store,
    layer: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        unsafe { handle(store, "store") }?
            .store
            .delete_layer(unsafe { str_arg(layer, "layer") }?)
    })
}
