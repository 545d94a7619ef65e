//! Per-digest lock files in the run root, `RR/<driver>-locks/<digest>` (store-format.md §1.2,
//! §5.1): a process that is about to download and extract a blob holds the blob's lock until
//! the layer is committed, so a second process pulling the same blob waits and then finds the
//! layer in the store instead of downloading it again.
//!
//! The files are created on demand and never removed: removing a lock file races with a process
//! that has just opened it (it would lock an unlinked inode while a third process locks a new
//! file), and they are empty and few. The run root is normally a tmpfs, cleared at boot.

use super::lock::{LockFile, LockGuard};
use super::Store;
use crate::digest;
use crate::error::Result;
use std::path::PathBuf;

impl Store {
    /// The lock file of one blob.
    pub fn blob_lock_path(&self, blob_digest: &str) -> Result<PathBuf> {
        // Validated first: a digest becomes a file name.
        digest::validate(blob_digest)?;
        Ok(self
            .run_root()
            .join(format!("{}-locks", self.driver_kind().name()))
            .join(blob_digest))
    }

    /// Takes the blob's lock if it is free; None while another process (or another pull of
    /// this process) holds it. Polling keeps the wait cancellable.
    pub fn try_lock_blob(&self, blob_digest: &str) -> Result<Option<LockGuard>> {
        LockFile::new(self.blob_lock_path(blob_digest)?).try_lock_exclusive()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::storage::DriverKind;
    use crate::store::{Store, StoreOptions};

    #[test]
    fn a_blob_lock_excludes_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("storage.conf");
        std::fs::write(&conf, "[storage]\ndriver = \"vfs\"\n").unwrap();
        let store = match Store::open(&StoreOptions {
            graph_root: Some(dir.path().join("root")),
            run_root: Some(dir.path().join("run")),
            driver: Some(DriverKind::Vfs),
            config_file: Some(conf),
            ..Default::default()
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("SKIP: cannot open a vfs store here: {}", e.message);
                return;
            }
        };
        let d = crate::digest::sha256_digest(b"blob");
        let path = store.blob_lock_path(&d).unwrap();
        assert_eq!(path, dir.path().join("run/vfs-locks").join(&d));
        let held = store.try_lock_blob(&d).unwrap().expect("free at first");
        assert!(store.try_lock_blob(&d).unwrap().is_none(), "held twice");
        drop(held);
        assert!(store.try_lock_blob(&d).unwrap().is_some(), "not released");
        assert!(store.blob_lock_path("sha256:../../etc").is_err());
    }
}
