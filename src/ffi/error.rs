//! `cimage_error` and its accessors; `cimage_status_name`; `cimage_string_free`.

use super::{cstring, getter, opt_ptr};
use crate::error::{Error, Status};
use std::ffi::{c_char, CString};

/// An error from a failed call: status, message, and detail. Immutable; safe to read from any
/// thread. Owned by the caller, freed with `cimage_error_free`.
pub struct cimage_error {
    status: Status,
    message: CString,
    subject: Option<CString>,
    os_errno: i32,
    http_status: i32,
}

impl From<Error> for cimage_error {
    fn from(e: Error) -> Self {
        cimage_error {
            status: e.status,
            message: cstring(e.message.replace('\0', " ")),
            subject: e.subject.map(|s| cstring(s.replace('\0', " "))),
            os_errno: e.os_errno,
            http_status: e.http_status as i32,
        }
    }
}

/// Frees an error. NULL is ignored; free each error at most once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_error_free(err: *mut cimage_error) {
    getter((), || unsafe { super::free_box(err) })
}

/// The status of the failed call (the same value it returned). `CIMAGE_STATUS_NULL_ARGUMENT`
/// for a NULL error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_error_code(err: *const cimage_error) -> Status {
    getter(Status::Panic, || {
        unsafe { err.as_ref() }
            .map(|e| e.status)
            .unwrap_or(Status::NullArgument)
    })
}

/// The message, UTF-8, with the whole cause chain ("pulling X: fetching layer Y: ..."). Borrowed
/// from the error: valid until it is freed. NULL for a NULL error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_error_message(err: *const cimage_error) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { err.as_ref() }
            .map(|e| e.message.as_ptr())
            .unwrap_or(std::ptr::null())
    })
}

/// The errno of the failing system call, or 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_error_os_errno(err: *const cimage_error) -> i32 {
    getter(0, || {
        unsafe { err.as_ref() }.map(|e| e.os_errno).unwrap_or(0)
    })
}

/// The HTTP status of the failing registry request, or 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_error_http_status(err: *const cimage_error) -> i32 {
    getter(0, || {
        unsafe { err.as_ref() }.map(|e| e.http_status).unwrap_or(0)
    })
}

/// The reference, ID or path the error concerns, or NULL. Borrowed from the error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_error_subject(err: *const cimage_error) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { err.as_ref() }
            .map(|e| opt_ptr(&e.subject))
            .unwrap_or(std::ptr::null())
    })
}

/// The stable name of a status ("NOT_FOUND"); "UNKNOWN" for a value this version does not know.
/// The string is static.
#[unsafe(no_mangle)]
pub extern "C" fn cimage_status_name(status: i32) -> *const c_char {
    getter(c"UNKNOWN".as_ptr(), || {
        const NAMES: [&CStr; 26] = [
            c"OK",
            c"NULL_ARGUMENT",
            c"INVALID_ARGUMENT",
            c"NOT_FOUND",
            c"ALREADY_EXISTS",
            c"IN_USE",
            c"READ_ONLY",
            c"LOCKED",
            c"PERMISSION_DENIED",
            c"NO_SPACE",
            c"IO",
            c"NETWORK",
            c"TIMEOUT",
            c"AUTH_REQUIRED",
            c"AUTH_FAILED",
            c"REGISTRY",
            c"MANIFEST_UNKNOWN",
            c"DIGEST_MISMATCH",
            c"UNSAFE_ARCHIVE",
            c"UNSUPPORTED",
            c"POLICY_REJECTED",
            c"CONFIG",
            c"CANCELLED",
            c"VERSION_MISMATCH",
            c"INTERNAL",
            c"PANIC",
        ];
        usize::try_from(status)
            .ok()
            .and_then(|i| NAMES.get(i))
            .map(|s| s.as_ptr())
            .unwrap_or(c"UNKNOWN".as_ptr())
    })
}

use std::ffi::CStr;

/// Frees a string the library returned as owned `char *` (JSON documents, mount paths).
/// NULL is ignored. Never pass it memory from anywhere else, and never free such a string with free().
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_string_free(s: *mut c_char) {
    getter((), || {
        if !s.is_null() {
            // SAFETY: created by CString::into_raw in this library.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// Hands an owned string to C.
pub(crate) fn owned_string(s: impl Into<Vec<u8>>) -> *mut c_char {
    cstring(s).into_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_the_rust_names() {
        for code in 0..26 {
            let name = unsafe { CStr::from_ptr(cimage_status_name(code)) }
                .to_str()
                .unwrap();
            let status: Status = unsafe { std::mem::transmute::<i32, Status>(code) };
            assert_eq!(name, status.name());
        }
        assert_eq!(
            unsafe { CStr::from_ptr(cimage_status_name(999)) }
                .to_str()
                .unwrap(),
            "UNKNOWN"
        );
        assert_eq!(
            unsafe { CStr::from_ptr(cimage_status_name(-1)) }
                .to_str()
                .unwrap(),
            "UNKNOWN"
        );
    }
}
