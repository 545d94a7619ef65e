//! cimage: pull container images, keep them in a containers/storage-compatible store,
//! create containers from them and mount them, as a plain Rust library with a C ABI.
//!
//! Layering (dependencies only point down):
//!   ffi → (store, registry, pull, runtime) → (drivers, unpack, mount, config)

pub mod digest;
pub mod error;
pub mod registry;
pub mod unpack;

pub use error::{Error, Result, Status};
