//! The configuration files the containers tools read. Each submodule reads one file format.

pub mod storage;
