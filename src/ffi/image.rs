//! Images: snapshots, lists, look-up, manifest and config, deletion.

use super::error::owned_string;
use super::store::cimage_store;
use super::{
    boundary, cimage_error, cstring, getter, handle, opt_cstring, opt_ptr, out_ptr, str_arg,
};
use crate::error::Status;
use crate::store::ImageInfo;
use std::ffi::{c_char, CString};

/// An image as it was when the handle was made (an immutable snapshot; safe on any thread).
/// Owned handles are freed with `cimage_image_free`; handles from a list are borrowed from it.
pub struct cimage_image {
    id: CString,
    digest: Option<CString>,
    names: Vec<CString>,
    size: i64,
    created: Option<CString>,
    top_layer: Option<CString>,
}

impl From<&ImageInfo> for cimage_image {
    fn from(i: &ImageInfo) -> Self {
        cimage_image {
            id: cstring(i.id.clone()),
            digest: opt_cstring(i.digest.as_deref()),
            names: i.names.iter().map(|n| cstring(n.clone())).collect(),
            size: i.size,
            created: opt_cstring(i.created.as_deref()),
            top_layer: opt_cstring(i.top_layer.as_deref()),
        }
    }
}

pub(crate) fn image_handle(i: &ImageInfo) -> *mut cimage_image {
    Box::into_raw(Box::new(cimage_image::from(i)))
}

/// A list of images (snapshot). Freed with `cimage_image_list_free`.
pub struct cimage_image_list {
    items: Vec<cimage_image>,
}

/// Lists the store's images. `*list_out` receives a list to free with `cimage_image_list_free`.
/// Errors: NULL_ARGUMENT, IO, INTERNAL (corrupt store file).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_images(
    store: *mut cimage_store,
    list_out: *mut *mut cimage_image_list,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(list_out, "list_out") }?;
        let images = unsafe { handle(store, "store") }?.store.images()?;
        *out = Box::into_raw(Box::new(cimage_image_list {
            items: images.iter().map(cimage_image::from).collect(),
        }));
        Ok(())
    })
}

/// Number of images in the list; 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_list_len(list: *const cimage_image_list) -> usize {
    getter(0, || {
        unsafe { list.as_ref() }.map(|l| l.items.len()).unwrap_or(0)
    })
}

/// Image `i` of the list, borrowed from the list (do not free it); NULL when out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_list_get(
    list: *const cimage_image_list,
    i: usize,
) -> *const cimage_image {
    getter(std::ptr::null(), || {
        unsafe { list.as_ref() }
            .and_then(|l| l.items.get(i))
            .map(|x| x as *const _)
            .unwrap_or(std::ptr::null())
    })
}

/// Frees a list and the images borrowed from it. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_list_free(list: *mut cimage_image_list) {
    getter((), || unsafe { super::free_box(list) })
}

/// Finds an image by full ID, name ("alpine" finds docker.io/library/alpine:latest), manifest
/// digest, or unique ID prefix. `*image_out` receives a handle to free with `cimage_image_free`.
/// Errors: NULL_ARGUMENT, NOT_FOUND, INVALID_ARGUMENT (ambiguous prefix).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_image_lookup(
    store: *mut cimage_store,
    name_or_id: *const c_char,
    image_out: *mut *mut cimage_image,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(image_out, "image_out") }?;
        let key = unsafe { str_arg(name_or_id, "image name or ID") }?;
        *out = image_handle(&unsafe { handle(store, "store") }?.store.image(key)?);
        Ok(())
    })
}

/// Frees an image handle. NULL is ignored. Never free an image borrowed from a list.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_free(image: *mut cimage_image) {
    getter((), || unsafe { super::free_box(image) })
}

/// The image ID (64 hex: the config digest). Borrowed; NULL for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_id(image: *const cimage_image) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { image.as_ref() }
            .map(|i| i.id.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// The manifest digest ("sha256:…"), or NULL. Borrowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_digest(image: *const cimage_image) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { image.as_ref() }
            .map(|i| opt_ptr(&i.digest))
            .unwrap_or(std::ptr::null())
    })
}

/// Number of names (e.g. "docker.io/library/alpine:latest"); 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_names_len(image: *const cimage_image) -> usize {
    getter(0, || {
        unsafe { image.as_ref() }
            .map(|i| i.names.len())
            .unwrap_or(0)
    })
}

/// Name `n`, borrowed; NULL when out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_name(image: *const cimage_image, n: usize) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { image.as_ref() }
            .and_then(|i| i.names.get(n))
            .map(|s| s.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// Uncompressed size of all its layers in bytes; -1 if unknown or for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_size(image: *const cimage_image) -> i64 {
    getter(-1, || {
        unsafe { image.as_ref() }.map(|i| i.size).unwrap_or(-1)
    })
}

/// Creation time (RFC 3339), or NULL. Borrowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_created(image: *const cimage_image) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { image.as_ref() }
            .map(|i| opt_ptr(&i.created))
            .unwrap_or(std::ptr::null())
    })
}

/// ID of the image's top layer, or NULL (an image without layers). Borrowed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_image_top_layer(image: *const cimage_image) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { image.as_ref() }
            .map(|i| opt_ptr(&i.top_layer))
            .unwrap_or(std::ptr::null())
    })
}

/// The image's manifest as JSON (exactly the bytes pulled). `*json_out` receives a string to
/// free with `cimage_string_free`. Errors: NULL_ARGUMENT, NOT_FOUND.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_image_manifest(
    store: *mut cimage_store,
    image: *const c_char,
    json_out: *mut *mut c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(json_out, "json_out") }?;
        let data = unsafe { handle(store, "store") }?
            .store
            .image_manifest(unsafe { str_arg(image, "image") }?)?;
        *out = owned_string(data);
        Ok(())
    })
}

/// The image's config as JSON (Env, Cmd, Entrypoint, WorkingDir, User, Labels under "config").
/// `*json_out` receives a string to free with `cimage_string_free`. Errors: NULL_ARGUMENT, NOT_FOUND.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_image_config(
    store: *mut cimage_store,
    image: *const c_char,
    json_out: *mut *mut c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(json_out, "json_out") }?;
        let data = unsafe { handle(store, "store") }?
            .store
            .image_config(unsafe { str_arg(image, "image") }?)?;
        *out = owned_string(data);
        Ok(())
    })
}

/// Deletes an image and the layers no other image or container uses.
/// Errors: NULL_ARGUMENT, NOT_FOUND, IN_USE (a container uses it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_image_delete(
    store: *mut cimage_store,
    image: *const c_char,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        unsafe { handle(store, "store") }?
            .store
            .delete_image(unsafe { str_arg(image, "image") }?)
    })
}
