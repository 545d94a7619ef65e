//! Whole-tree copy (vfs layers start as a copy of their parent) and removal.

use super::fsops::{self, cstr, errno, XattrTarget};
use crate::error::{Error, Result, Status};
use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Splits a caller's path into an open parent directory and the last component.
fn open_parent(path: &Path) -> Result<(OwnedFd, Vec<u8>)> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} has no final component", path.display())))?
        .as_bytes()
        .to_vec();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.as_os_str().as_bytes().to_vec(),
        _ => b".".to_vec(),
    };
    let fd = fsops::openat(
        libc::AT_FDCWD,
        &cstr(&parent)?,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| Error::from(e).context(format!("opening {}", String::from_utf8_lossy(&parent))))?;
    Ok((fd, name))
}

/// rm -rf that never follows symlinks (a symlink at `path` itself is removed, not its
/// target) and copes with read-only (0555) directories. A missing path is not an error.
pub fn remove_tree(path: &Path) -> Result<()> {
    let (parent, name) = open_parent(path)?;
    if name == b"." || name == b".." {
        return Err(Error::invalid(format!(
            "refusing to remove {}",
            path.display()
        )));
    }
    fsops::remove_tree_at(parent.as_raw_fd(), &cstr(&name)?)
        .map_err(|e| Error::from(e).context(format!("removing {}", path.display())))
}

/// Copies the tree at `src` to `dst` (which must not exist): types, modes, owners, times,
/// xattrs, symlinks (never followed), devices, FIFOs; files hard-linked to each other
/// inside the tree stay hard-linked in the copy. Sockets are skipped.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let src_fd = fsops::openat(
        libc::AT_FDCWD,
        &cstr(src.as_os_str().as_bytes())?,
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| Error::from(e).context(format!("opening {}", src.display())))?;
    let (dst_parent, dst_name) = open_parent(dst)?;
    let dst_cname = cstr(&dst_name)?;
    match fsops::mkdirat(dst_parent.as_raw_fd(), &dst_cname, 0o700) {
        Ok(()) => {}
        Err(e) if errno(&e) == libc::EEXIST => {
            return Err(Error::new(
                Status::AlreadyExists,
                format!("{} already exists", dst.display()),
            ));
        }
        Err(e) => return Err(Error::from(e).context(format!("creating {}", dst.display()))),
    }
    let dst_fd = fsops::open_dir_read(dst_parent.as_raw_fd(), &dst_cname)
        .map_err(|e| Error::from(e).context(format!("opening {}", dst.display())))?;
    let mut copier = Copier {
        dst_root: dst_fd.as_raw_fd(),
        links: HashMap::new(),
    };
    let result = copier
        .copy_dir_contents(src_fd.as_raw_fd(), dst_fd.as_raw_fd(), &mut Vec::new())
        .and_then(|()| {
            let st = fsops::fstat(src_fd.as_raw_fd())?;
            copy_metadata_fd(src_fd.as_raw_fd(), dst_fd.as_raw_fd(), &st)
        });
    result.map_err(|e| e.context(format!("copying {} to {}", src.display(), dst.display())))
}

struct Copier {
    dst_root: RawFd,
    /// (device, inode) of multiply-linked source files → path of their first copy.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn times_of(st: &libc::stat) -> [libc::timespec; 2] {
    [
        fsops::timespec(st.st_atime, st.st_atime_nsec as u32),
        fsops::timespec(st.st_mtime, st.st_mtime_nsec as u32),
    ]
}

fn set_all_xattrs_fd(fd: RawFd, xattrs: &[(std::ffi::CString, Vec<u8>)]) -> Result<()> {
    for (name, value) in xattrs {
        match fsops::fsetxattr(fd, name, value) {
            Err(e) if errno(&e) != libc::ENOTSUP => {
                return Err(Error::from(e).context(format!("setting xattr {name:?}")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Owner, xattrs, mode, times from `st`/`src` onto an open object.
fn copy_metadata_fd(src: RawFd, dst: RawFd, st: &libc::stat) -> Result<()> {
    let xattrs = fsops::list_xattrs(&XattrTarget::Fd(src))?;
    fsops::fchown(dst, st.st_uid, st.st_gid)?;
    set_all_xattrs_fd(dst, &xattrs)?;
    fsops::fchmod(dst, st.st_mode & 0o7777)?;
    fsops::futimens(dst, &times_of(st))?;
    Ok(())
}

impl Copier {
    fn copy_dir_contents(&mut self, src: RawFd, dst: RawFd, rel: &mut Vec<u8>) -> Result<()> {
        for (name, _) in fsops::read_dir(src)? {
            let rel_len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.to_bytes());
            let result = self.copy_one(src, dst, &name, rel);
            let shown = String::from_utf8_lossy(rel).into_owned();
            rel.truncate(rel_len);
            result.map_err(|e| e.context(shown))?;
        }
        Ok(())
    }

    fn copy_one(&mut self, src: RawFd, dst: RawFd, name: &CStr, rel: &mut Vec<u8>) -> Result<()> {
        let st = match fsops::lstatat(src, name) {
            Ok(st) => st,
            Err(e) if errno(&e) == libc::ENOENT => return Ok(()), // removed meanwhile
            Err(e) => return Err(e.into()),
        };
        let kind = st.st_mode & libc::S_IFMT;
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                fsops::linkat(self.dst_root, &cstr(first)?, dst, name)?;
                return Ok(());
            }
            self.links.insert(key, rel.clone());
        }
        match kind {
            libc::S_IFDIR => {
                fsops::mkdirat(dst, name, 0o700)?;
                let src_dir = fsops::open_dir_read(src, name)?;
                let dst_dir = fsops::open_dir_read(dst, name)?;
                self.copy_dir_contents(src_dir.as_raw_fd(), dst_dir.as_raw_fd(), rel)?;
                copy_metadata_fd(src_dir.as_raw_fd(), dst_dir.as_raw_fd(), &st)?;
            }
            libc::S_IFREG => {
                let src_file = File::from(fsops::openat(
                    src,
                    name,
                    libc::O_RDONLY | libc::O_NOFOLLOW,
                    0,
                )?);
                let mut dst_file = File::from(fsops::openat(
                    dst,
                    name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )?);
                // std uses copy_file_range/sendfile here (and reflinks where the fs can).
                std::io::copy(&mut &src_file, &mut dst_file)?;
                copy_metadata_fd(src_file.as_raw_fd(), dst_file.as_raw_fd(), &st)?;
            }
            libc::S_IFLNK => {
                let target = fsops::readlinkat(src, name)?;
                fsops::symlinkat(&cstr(&target)?, dst, name)?;
                fsops::lchownat(dst, name, st.st_uid, st.st_gid)?;
                fsops::lutimensat(dst, name, &times_of(&st))?;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                fsops::mknodat(dst, name, kind | 0o600, st.st_rdev)?;
                let src_path = fsops::proc_path(src, name.to_bytes())?;
                let dst_path = fsops::proc_path(dst, name.to_bytes())?;
                let xattrs = fsops::list_xattrs(&XattrTarget::Path(&src_path))?;
                fsops::lchownat(dst, name, st.st_uid, st.st_gid)?;
                for (xname, value) in &xattrs {
                    match fsops::lsetxattr(&dst_path, xname, value) {
                        Err(e) if errno(&e) != libc::ENOTSUP => return Err(e.into()),
                        _ => {}
                    }
                }
                fsops::fchmodat(dst, name, st.st_mode & 0o7777)?;
                fsops::lutimensat(dst, name, &times_of(&st))?;
            }
            _ => {} // sockets: not part of an image
        }
        Ok(())
    }
}
