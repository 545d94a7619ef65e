//! cimage: pull container images, keep them in a containers/storage-compatible store,
//! create containers from them and mount them, as a plain Rust library with a C ABI.
//!
//! Layering (dependencies only point down):
//!   ffi → (store, pull, runtime) → (registry, drivers, unpack, config)

pub mod config;
pub mod digest;
pub mod drivers;
pub mod error;
pub mod ffi;
pub mod inspect;
pub mod log;
pub mod pull;
pub mod registry;
pub mod runtime;
pub mod store;
pub mod unpack;

pub use error::{Error, Result, Status};
pub use store::{Store, StoreOptions};
