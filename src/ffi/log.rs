//! Log level and log callback.

use super::{boundary, cimage_error, getter};
use crate::error::{Error, Status};
use std::ffi::{c_char, c_void, CString};

/// Logging off.
pub const CIMAGE_LOG_OFF: i32 = 0;
/// Errors only.
pub const CIMAGE_LOG_ERROR: i32 = 1;
/// Warnings and errors.
pub const CIMAGE_LOG_WARN: i32 = 2;
/// Informational messages (cleanups, decisions).
pub const CIMAGE_LOG_INFO: i32 = 3;
/// Every request, decision and retry.
pub const CIMAGE_LOG_DEBUG: i32 = 4;

/// Receives log lines. Unlike progress callbacks, it may be called from any thread, concurrently;
/// `message` is valid only during the call.
pub type cimage_log_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: i32, message: *const c_char)>;

/// Sets the log level (CIMAGE_LOG_OFF … CIMAGE_LOG_DEBUG). The environment variable
/// `CIMAGE_LOG=debug|info|warn|error` sets the initial level.
///
/// Errors: INVALID_ARGUMENT for an unknown level.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_log_set_level(level: i32, err: *mut *mut cimage_error) -> Status {
    boundary(err, || {
        if !(CIMAGE_LOG_OFF..=CIMAGE_LOG_DEBUG).contains(&level) {
            return Err(Error::invalid(format!("unknown log level {level}")));
        }
        crate::log::set_level(level);
        Ok(())
    })
}

struct UserData(*mut c_void);
// SAFETY: the caller promises (documented) that the callback may be called from any thread.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Sends log lines to `cb` with `user_data` instead of stderr; a NULL `cb` restores stderr.
/// `user_data` must stay valid until the callback is replaced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_log_set_callback(cb: cimage_log_cb, user_data: *mut c_void) {
    getter((), || match cb {
        None => crate::log::set_sink(None),
        Some(f) => {
            let ud = UserData(user_data);
            crate::log::set_sink(Some(Box::new(move |level, msg: &str| {
                let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
                let ud = &ud;
                // SAFETY: a C function pointer given by the caller, with its own user_data.
                unsafe { f(ud.0, level, c.as_ptr()) };
            })));
        }
    })
}
