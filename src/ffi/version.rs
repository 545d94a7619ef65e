//! Library version at run time (the header has CIMAGE_VERSION_* macros from build time).

use std::ffi::c_char;

/// The library version, e.g. "0.1.0". Static string.
#[unsafe(no_mangle)]
pub extern "C" fn cimage_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// The library version as MAJOR*1000000 + MINOR*1000 + PATCH; compare with CIMAGE_VERSION_NUMBER
/// to check that the header and the library match.
#[unsafe(no_mangle)]
pub extern "C" fn cimage_version_number() -> u32 {
    let p = |s: &str| s.parse::<u32>().unwrap_or(0);
    p(env!("CARGO_PKG_VERSION_MAJOR")) * 1_000_000
        + p(env!("CARGO_PKG_VERSION_MINOR")) * 1_000
        + p(env!("CARGO_PKG_VERSION_PATCH"))
}
