//! The C ABI: the only place with `extern "C"`. Thin: it checks pointers, converts strings,
//! runs the body inside the panic boundary and turns errors into `cimage_status` + `cimage_error`.
//! Every type and function here reaches include/cimage.h through cbindgen, docs included.
//!
//! Conventions (c-api-style.md): opaque handles owned by the caller and freed with their `_free`
//! (NULL-safe); getters return borrowed pointers valid until the handle is freed; every fallible
//! function returns a status and, when `err` is not NULL, stores a new error on failure (NULL on
//! success); pointer out-params are set to NULL on failure.
#![deny(missing_docs)]
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

pub mod check;
pub mod container;
pub mod error;
pub mod image;
pub mod inspect;
pub mod layer;
pub mod log;
pub mod pull;
pub mod pull_op;
pub mod store;
pub mod version;

use crate::error::{Error, Result, Status};
pub use error::cimage_error;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs the body of a fallible C function: catches panics, fills `err`, returns the status.
pub(crate) fn boundary(err: *mut *mut cimage_error, body: impl FnOnce() -> Result<()>) -> Status {
    if !err.is_null() {
        // SAFETY: the caller passed a writable `cimage_error **` (documented contract).
        unsafe { *err = std::ptr::null_mut() };
    }
    let result = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(p) => Err(Error::new(
            Status::Panic,
            format!("internal panic: {}", crate::runtime::panic_message(p)),
        )),
    };
    match result {
        Ok(()) => Status::Ok,
        Err(e) => {
            let status = e.status;
            crate::log::debug(format!("call failed: {}: {}", status.name(), e.message));
            if !err.is_null() {
                // SAFETY: as above.
                unsafe { *err = Box::into_raw(Box::new(cimage_error::from(e))) };
            }
            status
        }
    }
}

/// Runs an infallible getter: a panic gives the fallback value.
pub(crate) fn getter<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// A required input string: NULL → NULL_ARGUMENT, invalid UTF-8 → INVALID_ARGUMENT.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::new(Status::NullArgument, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, NUL-terminated by contract.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// A required handle: NULL → NULL_ARGUMENT.
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: a non-NULL handle points to a live object created by this library.
    unsafe { p.as_ref() }.ok_or_else(|| Error::new(Status::NullArgument, format!("{what} is NULL")))
}

/// A required out-parameter: NULL → NULL_ARGUMENT; otherwise it is set to NULL now.
pub(crate) unsafe fn out_ptr<'a, T>(p: *mut *mut T, what: &str) -> Result<&'a mut *mut T> {
    // SAFETY: a non-NULL out-param is writable by contract.
    let out = unsafe { p.as_mut() }
        .ok_or_else(|| Error::new(Status::NullArgument, format!("{what} is NULL")))?;
    *out = std::ptr::null_mut();
    Ok(out)
}

/// A C string for a getter; interior NULs (impossible in our data) become an empty string.
pub(crate) fn cstring(s: impl Into<Vec<u8>>) -> CString {
    CString::new(s).unwrap_or_default()
}

pub(crate) fn opt_cstring(s: Option<&str>) -> Option<CString> {
    s.map(cstring)
}

pub(crate) fn opt_ptr(s: &Option<CString>) -> *const c_char {
    s.as_ref().map(|c| c.as_ptr()).unwrap_or(std::ptr::null())
}

/// Frees a Box made by this library; NULL is ignored.
pub(crate) unsafe fn free_box<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: created by Box::into_raw in this library, freed at most once by contract.
        drop(unsafe { Box::from_raw(p) });
    }
}
