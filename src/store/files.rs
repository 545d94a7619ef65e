//! Small file-system helpers of the store: atomic writes (§6.1), random IDs (§3.3),
//! big-data file names (§2.2).

use crate::digest::hex;
use crate::error::{Error, Result, ResultExt};
use base64::Engine as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Random bytes from the OS.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // getrandom only fails when the OS has no entropy source at all.
    getrandom::getrandom(&mut b).expect("the OS random source failed");
    b
}

/// A random 64-hex ID whose 12-character short form is never all digits (§3.3).
pub fn random_id() -> String {
    loop {
        let id = hex(&random_bytes::<32>());
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

/// Writes `data` to `path` atomically: temp file in the same directory, write, fdatasync (with
/// `sync`), chmod, rename over the target. As containers/storage's atomic writer, the directory
/// is not synced: a crash may lose the rename, never the content, and the journal of ext4 or
/// xfs keeps renames in order, so the store comes back in an earlier consistent state. (Layer
/// data is flushed by one syncfs before the record that makes it visible: `Store::commit_layers`.)
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, sync: bool) -> Result<()> {
    prepare_atomic(path, data, mode, sync)?.commit()
}

/// The first half of an atomic write: the temporary file holds the new content (closed, with
/// its final mode); `commit` renames it over the target. Dropped uncommitted, it is removed.
/// Several files prepared without sync can be made durable together before their commits
/// (`flush_files`, or one syncfs): one journal commit instead of one per file.
#[must_use]
pub struct PreparedWrite {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

impl PreparedWrite {
    /// The temporary file that holds the new content until `commit`.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path).ctx(format!(
            "renaming {} to {}",
            self.tmp.display(),
            self.path.display()
        ))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PreparedWrite {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes the temporary file of an atomic write (fdatasync'ed with `sync`); see PreparedWrite.
pub fn prepare_atomic(path: &Path, data: &[u8], mode: u32, sync: bool) -> Result<PreparedWrite> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::internal(format!("no parent for {}", path.display())))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let (tmp, mut file) = loop {
        let suffix = u32::from_le_bytes(random_bytes::<4>());
        let tmp = dir.join(format!(".tmp-{name}{suffix}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::io(
                    e,
                    format!("creating a temporary file in {}", dir.display()),
                ))
            }
        }
    };
    // From here on, dropping `prepared` on an error removes the temporary file.
    let prepared = PreparedWrite {
        tmp,
        path: path.to_path_buf(),
        committed: false,
    };
    file.write_all(data)
        .ctx(format!("writing {}", prepared.tmp.display()))?;
    if sync {
        file.sync_data()
            .ctx(format!("syncing {}", prepared.tmp.display()))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .ctx(format!("chmod {}", prepared.tmp.display()))?;
    drop(file);
    Ok(prepared)
}

/// Puts the content of a few files on disk without flushing the rest of their file system
/// (a syncfs also writes every unrelated dirty page: with 512 MiB of a running container's
/// writes pending, creating a container took 1.8 s instead of 4 ms). Writeback of all of
/// them starts first, so that on a journaling file system one commit covers them; then each
/// is fdatasync'ed.
pub fn flush_files<P: AsRef<Path>>(paths: &[P]) -> Result<()> {
    let files = paths
        .iter()
        .map(|p| {
            let p = p.as_ref();
            std::fs::File::open(p).ctx(format!("opening {} to flush it", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    for file in &files {
        // Only a head start: an error here shows again in the fdatasync below.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    for (file, path) in files.iter().zip(paths) {
        file.sync_data()
            .ctx(format!("flushing {}", path.as_ref().display()))?;
    }
    Ok(())
}

/// File name of a big-data item (§2.2): keys of [a-z0-9.] as they are, others `=` + base64.
pub fn big_data_file_name(key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.')
    {
        key.to_string()
    } else {
        format!(
            "={}",
            base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
        )
    }
}

/// Reads a whole file; a missing file reads as empty (store files: "missing = empty list").
pub fn read_or_empty(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(e, format!("reading {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_data_names_follow_containers_storage() {
        assert_eq!(big_data_file_name("manifest"), "manifest");
        assert_eq!(big_data_file_name("sha256:3a0e"), "=c2hhMjU2OjNhMGU=");
    }

    #[test]
    fn random_ids_are_hex_and_not_numeric() {
        for _ in 0..100 {
            let id = random_id();
            assert!(crate::digest::is_hex64(&id));
            assert!(!id[..12].bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn flush_files_keeps_content_and_names_what_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let a = prepare_atomic(&dir.path().join("a.json"), b"[1]", 0o600, false).unwrap();
        let b = prepare_atomic(&dir.path().join("b.json"), b"[2]", 0o644, false).unwrap();
        flush_files(&[a.temp_path(), b.temp_path()]).unwrap();
        assert_eq!(std::fs::read(a.temp_path()).unwrap(), b"[1]");
        a.commit().unwrap();
        b.commit().unwrap();
        assert_eq!(std::fs::read(dir.path().join("b.json")).unwrap(), b"[2]");

        let missing = dir.path().join("gone.json");
        let err = flush_files(&[&dir.path().join("a.json"), &missing]).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn prepared_write_commits_or_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, b"old").unwrap();
        let pending = prepare_atomic(&path, b"new", 0o600, false).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"old",
            "not visible before commit"
        );
        pending.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        drop(prepare_atomic(&path, b"dropped", 0o600, false).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("f.json")],
            "no temporary file left"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("layers.json");
        write_atomic(&p, b"[]", 0o600, true).unwrap();
        write_atomic(&p, b"[1]", 0o600, false).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"[1]");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
