//! The configuration files the containers tools read. Each submodule reads one file format.

pub mod auth;
pub mod certs;
pub mod policy;
pub mod registries;
pub mod storage;
