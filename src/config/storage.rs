//! storage.conf (store-format.md §8): where the store is and which driver it uses.
//!
//! Order, as containers/storage 1.43: $CONTAINERS_STORAGE_CONF, else /etc/containers/storage.conf,
//! else /usr/share/containers/storage.conf, else built-in defaults. $STORAGE_DRIVER overrides the
//! driver. Explicit options of the caller override everything.

use crate::error::{Error, Result, Status};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_GRAPH_ROOT: &str = "/var/lib/containers/storage";
pub const DEFAULT_RUN_ROOT: &str = "/run/containers/storage";

/// Which storage driver a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    Overlay,
    Vfs,
}

impl DriverKind {
    pub fn parse(name: &str) -> Result<DriverKind> {
        match name {
            "overlay" | "overlay2" => Ok(DriverKind::Overlay),
            "vfs" => Ok(DriverKind::Vfs),
            other => Err(Error::invalid(format!(
                "unknown storage driver {other:?} (supported: overlay, vfs)"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Overlay => "overlay",
            DriverKind::Vfs => "vfs",
        }
    }
}

/// The settings a store is opened with, after files and overrides are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub graph_root: PathBuf,
    pub run_root: PathBuf,
    /// None: choose (a driver directory already in the graph root, else overlay if the kernel
    /// has it, else vfs).
    pub driver: Option<DriverKind>,
    /// Options appended to overlay mounts (`mountopt`, e.g. "nodev").
    pub mount_options: Vec<String>,
    /// A mount program (fuse-overlayfs) is configured: not supported by this version.
    pub mount_program: Option<String>,
    /// Whether metadata writes are fsynced (durable against power loss).
    pub sync: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            graph_root: DEFAULT_GRAPH_ROOT.into(),
            run_root: DEFAULT_RUN_ROOT.into(),
            driver: None,
            mount_options: Vec::new(),
            mount_program: None,
            sync: true,
        }
    }
}

#[derive(Deserialize, Default)]
struct File {
    #[serde(default)]
    storage: Section,
}

#[derive(Deserialize, Default)]
struct Section {
    driver: Option<String>,
    graphroot: Option<String>,
    runroot: Option<String>,
    #[serde(default)]
    options: Options,
}

#[derive(Deserialize, Default)]
struct Options {
    mountopt: Option<String>,
    mount_program: Option<String>,
    #[serde(default)]
    overlay: OverlayOptions,
}

#[derive(Deserialize, Default)]
struct OverlayOptions {
    mountopt: Option<String>,
    mount_program: Option<String>,
}

/// The storage.conf that applies, if any.
pub fn config_file_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CONTAINERS_STORAGE_CONF") {
        return Some(PathBuf::from(p));
    }
    [
        "/etc/containers/storage.conf",
        "/usr/share/containers/storage.conf",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

impl StorageConfig {
    /// Defaults from the system's storage.conf (or `file` when given) and the environment.
    pub fn load(file: Option<&Path>) -> Result<StorageConfig> {
        let path = file.map(Path::to_path_buf).or_else(config_file_path);
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    Error::new(Status::Config, format!("reading {}: {e}", p.display()))
                })?;
                StorageConfig::parse(&text).map_err(|e| e.context(p.display()))?
            }
            None => StorageConfig::default(),
        };
        if let Ok(d) = std::env::var("STORAGE_DRIVER") {
            if !d.is_empty() {
                cfg.driver =
                    Some(DriverKind::parse(&d).map_err(|e| Error::new(Status::Config, e.message))?);
            }
        }
        Ok(cfg)
    }

    /// Parses the text of a storage.conf.
    pub fn parse(text: &str) -> Result<StorageConfig> {
        let f: File = toml::from_str(text)
            .map_err(|e| Error::new(Status::Config, format!("malformed storage.conf: {e}")))?;
        let mut cfg = StorageConfig::default();
        let s = f.storage;
        if let Some(d) = s.driver.filter(|d| !d.is_empty()) {
            cfg.driver =
                Some(DriverKind::parse(&d).map_err(|e| Error::new(Status::Config, e.message))?);
        }
        if let Some(g) = s.graphroot.filter(|g| !g.is_empty()) {
            cfg.graph_root = g.into();
        }
        if let Some(r) = s.runroot.filter(|r| !r.is_empty()) {
            cfg.run_root = r.into();
        }
        let mountopt = s
            .options
            .overlay
            .mountopt
            .or(s.options.mountopt)
            .unwrap_or_default();
        cfg.mount_options = mountopt
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(String::from)
            .collect();
        cfg.mount_program = s
            .options
            .overlay
            .mount_program
            .or(s.options.mount_program)
            .filter(|p| !p.is_empty());
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_default_file() {
        let text = r#"
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
[storage.options]
additionalimagestores = []
pull_options = {enable_partial_images = "false", use_hard_links = "false", ostree_repos=""}
[storage.options.overlay]
mountopt = "nodev"
"#;
        let c = StorageConfig::parse(text).unwrap();
        assert_eq!(c.driver, Some(DriverKind::Overlay));
        assert_eq!(c.graph_root, PathBuf::from(DEFAULT_GRAPH_ROOT));
        assert_eq!(c.mount_options, vec!["nodev".to_string()]);
        assert_eq!(c.mount_program, None);
    }

    #[test]
    fn bad_files_are_config_errors() {
        assert_eq!(
            StorageConfig::parse("[storage]\ndriver = \"zfs\"")
                .unwrap_err()
                .status,
            Status::Config
        );
        assert_eq!(
            StorageConfig::parse("[storage\n").unwrap_err().status,
            Status::Config
        );
        assert_eq!(StorageConfig::parse("").unwrap(), StorageConfig::default());
    }
}
