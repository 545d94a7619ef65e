//! The vfs driver: every layer is a full copy of its root file system under R/vfs/dir/<id>
//! (store-format.md §1.3). Mounting only returns that directory.

use super::LayerContent;
use crate::error::{Result, ResultExt};
use crate::store::lock::create_dir_all_mode;
use std::path::{Path, PathBuf};

pub struct Vfs {
    dir: PathBuf,
}

impl Vfs {
    pub fn init(graph_root: &Path) -> Result<Vfs> {
        let dir = graph_root.join("vfs").join("dir");
        create_dir_all_mode(&dir, 0o700)?;
        Ok(Vfs { dir })
    }

    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// A layer is extracted onto a copy of its parent, so that whiteouts delete from it.
    pub fn prepare_staging(&self, parent: Option<&str>, staging: &Path) -> Result<()> {
        match parent {
            Some(p) => crate::unpack::copy_tree(&self.layer_dir(p), staging),
            None => super::overlay::create_diff_dir(staging, 0o555),
        }
    }

    pub fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        content: LayerContent<'_>,
    ) -> Result<()> {
        let target = self.layer_dir(id);
        match content {
            LayerContent::Staged(staged) => std::fs::rename(staged, &target).ctx(format!(
                "moving {} to {}",
                staged.display(),
                target.display()
            )),
            LayerContent::Empty => {
                let r = self.prepare_staging(parent, &target);
                if r.is_err() {
                    let _ = self.remove_layer(id);
                }
                r
            }
        }
    }

    pub fn remove_layer(&self, id: &str) -> Result<()> {
        let dir = self.layer_dir(id);
        match std::fs::symlink_metadata(&dir) {
            Ok(_) => crate::unpack::remove_tree(&dir),
            Err(_) => Ok(()),
        }
    }

    pub fn layer_dirs_on_disk(&self) -> Result<Vec<String>> {
        super::hex_dirs(&self.dir)
    }
}
