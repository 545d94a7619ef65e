//! Storage drivers: where a layer's files live and how a container's root file system is
//! assembled from them. `overlay` stacks layer directories with the kernel's overlayfs; `vfs`
//! keeps a full copy of the tree per layer.

pub mod mountinfo;
pub mod overlay;
pub mod vfs;

use crate::config::storage::DriverKind;
use crate::error::Result;
use crate::unpack::WhiteoutMode;
use std::path::{Path, PathBuf};

/// What a new layer starts with.
pub enum LayerContent<'a> {
    /// A tree extracted elsewhere on the same file system, renamed into place.
    Staged(&'a Path),
    /// Empty on top of its parent (a container's writable layer).
    Empty,
}

/// A store's driver.
pub enum Driver {
    Overlay(overlay::Overlay),
    Vfs(vfs::Vfs),
}

impl Driver {
    /// Sets up the driver's home in the graph root.
    pub fn init(kind: DriverKind, graph_root: &Path, mount_options: &[String]) -> Result<Driver> {
        Ok(match kind {
            DriverKind::Overlay => {
                Driver::Overlay(overlay::Overlay::init(graph_root, mount_options)?)
            }
            DriverKind::Vfs => Driver::Vfs(vfs::Vfs::init(graph_root)?),
        })
    }

    pub fn kind(&self) -> DriverKind {
        match self {
            Driver::Overlay(_) => DriverKind::Overlay,
            Driver::Vfs(_) => DriverKind::Vfs,
        }
    }

    /// How OCI whiteouts are written into this driver's layer directories.
    pub fn whiteout_mode(&self) -> WhiteoutMode {
        match self {
            Driver::Overlay(_) => WhiteoutMode::Overlay,
            Driver::Vfs(_) => WhiteoutMode::Delete,
        }
    }

    /// The directory holding the layer's own files (overlay: its diff; vfs: its full tree).
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        match self {
            Driver::Overlay(o) => o.diff_dir(id),
            Driver::Vfs(v) => v.layer_dir(id),
        }
    }

    /// Where a layer's extraction must start: empty for overlay, the parent's tree for vfs.
    /// `staging` does not exist yet; it is created here.
    pub fn prepare_staging(&self, parent: Option<&str>, staging: &Path) -> Result<()> {
        match self {
            Driver::Overlay(_) => overlay::create_diff_dir(staging, 0o555),
            Driver::Vfs(v) => v.prepare_staging(parent, staging),
        }
    }

    pub fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        content: LayerContent<'_>,
    ) -> Result<()> {
        match self {
            Driver::Overlay(o) => o.create_layer(id, parent, content),
            Driver::Vfs(v) => v.create_layer(id, parent, content),
        }
    }

    /// The files an empty layer (a container's) was created with, whose content must be on
    /// disk before its record says it is complete; None when there are too many to flush one
    /// by one (vfs copies the parent's whole tree), and only a syncfs will do.
    pub fn empty_layer_files(&self, id: &str) -> Option<Vec<PathBuf>> {
        match self {
            Driver::Overlay(o) => Some(o.empty_layer_files(id)),
            Driver::Vfs(_) => None,
        }
    }

    /// Removes everything the driver keeps for a layer; a missing layer is not an error.
    pub fn remove_layer(&self, id: &str) -> Result<()> {
        match self {
            Driver::Overlay(o) => o.remove_layer(id),
            Driver::Vfs(v) => v.remove_layer(id),
        }
    }

    /// Makes the layer's root file system available and returns its path.
    pub fn mount(&self, id: &str, options: &[String]) -> Result<PathBuf> {
        match self {
            Driver::Overlay(o) => o.mount(id, options),
            Driver::Vfs(v) => Ok(v.layer_dir(id)),
        }
    }

    pub fn unmount(&self, id: &str) -> Result<()> {
        match self {
            Driver::Overlay(o) => o.unmount(id),
            Driver::Vfs(_) => Ok(()),
        }
    }

    /// Whether the layer's mount point is really mounted now.
    pub fn is_mounted(&self, id: &str) -> bool {
        match self {
            Driver::Overlay(o) => mountinfo::is_mount_point(&o.merged_dir(id)),
            Driver::Vfs(_) => true,
        }
    }

    /// The driver's status fields, as `podman info` shows them.
    pub fn status(&self) -> Vec<(String, String)> {
        match self {
            Driver::Overlay(o) => o.status(),
            Driver::Vfs(_) => Vec::new(),
        }
    }

    /// Names of the layer directories present on disk (for consistency checks and cleanup).
    pub fn layer_dirs_on_disk(&self) -> Result<Vec<String>> {
        match self {
            Driver::Overlay(o) => o.layer_dirs_on_disk(),
            Driver::Vfs(v) => v.layer_dirs_on_disk(),
        }
    }
}

/// Lists 64-hex directory names in `dir`.
pub(crate) fn hex_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(crate::Error::io(e, format!("listing {}", dir.display()))),
    };
    for e in rd.flatten() {
        if let Some(name) = e.file_name().to_str() {
            if crate::digest::is_hex64(name) {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}
