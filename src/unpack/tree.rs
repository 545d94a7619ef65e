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
    copy_dir_tree(src_fd, dst_fd)
        .map_err(|e| e.context(format!("copying {} to {}", src.display(), dst.display())))
}

/// Levels that keep their two descriptors (source and copy) while a subdirectory is
/// copied; see `fsops::HELD_LEVELS`.
const HELD_LEVELS: usize = fsops::HELD_LEVELS / 2;

/// One directory being copied.
struct CopyFrame {
    /// None while a deep subdirectory is copied (reopened through ".." afterwards).
    src: Option<OwnedFd>,
    dst: Option<OwnedFd>,
    src_identity: (u64, u64),
    dst_identity: (u64, u64),
    /// The source directory's stat, applied to the copy once its contents are in.
    st: libc::stat,
    children: std::vec::IntoIter<(std::ffi::CString, u8)>,
    /// Length of this directory's path (relative to the copy's root) in the shared buffer.
    rel_len: usize,
}

impl CopyFrame {
    fn new(
        src: OwnedFd,
        dst: OwnedFd,
        st: libc::stat,
        rel_len: usize,
        deep: bool,
    ) -> Result<CopyFrame> {
        let children = fsops::read_dir(src.as_raw_fd())?.into_iter();
        // Only deep frames may drop their descriptors, so only they need the identity.
        let dst_identity = if deep {
            let d = fsops::fstat(dst.as_raw_fd())?;
            (d.st_dev, d.st_ino)
        } else {
            (0, 0)
        };
        Ok(CopyFrame {
            src: Some(src),
            dst: Some(dst),
            src_identity: (st.st_dev, st.st_ino),
            dst_identity,
            st,
            children,
            rel_len,
        })
    }
}

/// Copies the contents of `src` into the empty directory `dst`, then `src`'s metadata.
/// Iterative, with a bounded number of open descriptors, whatever the depth.
fn copy_dir_tree(src: OwnedFd, dst: OwnedFd) -> Result<()> {
    let root_st = fsops::fstat(src.as_raw_fd())?;
    let dst_root = fsops::openat(dst.as_raw_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let mut copier = Copier {
        dst_root: dst_root.as_raw_fd(),
        links: HashMap::new(),
    };
    let mut rel: Vec<u8> = Vec::new();
    let mut stack = vec![CopyFrame::new(src, dst, root_st, 0, false)?];
    loop {
        let depth = stack.len();
        let Some(frame) = stack.last_mut() else {
            return Ok(());
        };
        let (Some(src_dir), Some(dst_dir)) = (
            frame.src.as_ref().map(|fd| fd.as_raw_fd()),
            frame.dst.as_ref().map(|fd| fd.as_raw_fd()),
        ) else {
            return Err(Error::internal(
                "directory descriptor missing while copying",
            ));
        };
        if let Some((name, _)) = frame.children.next() {
            rel.truncate(frame.rel_len);
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.to_bytes());
            let shown = || String::from_utf8_lossy(&rel).into_owned();
            let st = match fsops::lstatat(src_dir, &name) {
                Ok(st) => st,
                Err(e) if errno(&e) == libc::ENOENT => continue, // removed meanwhile
                Err(e) => return Err(Error::from(e).context(shown())),
            };
            if !fsops::is_dir(&st) {
                copier
                    .copy_non_dir(src_dir, dst_dir, &name, &st, &rel)
                    .map_err(|e| e.context(shown()))?;
                continue;
            }
            let opened = fsops::mkdirat(dst_dir, &name, 0o700).and_then(|()| {
                Ok((
                    fsops::open_dir_read(src_dir, &name)?,
                    fsops::open_dir_read(dst_dir, &name)?,
                ))
            });
            let (sub_src, sub_dst) = opened.map_err(|e| Error::from(e).context(shown()))?;
            // Frames past HELD_LEVELS give up their descriptors while their children are
            // copied; `depth` is the child's index.
            if depth > HELD_LEVELS {
                frame.src = None;
                frame.dst = None;
            }
            let rel_len = rel.len();
            let deep = depth >= HELD_LEVELS;
            stack.push(CopyFrame::new(sub_src, sub_dst, st, rel_len, deep)?);
            continue;
        }
        // Contents done: the directory's own metadata (times last, after its children).
        let Some(done) = stack.pop() else {
            return Ok(());
        };
        let (Some(done_src), Some(done_dst)) = (done.src.as_ref(), done.dst.as_ref()) else {
            return Err(Error::internal(
                "directory descriptor missing while copying",
            ));
        };
        rel.truncate(done.rel_len);
        copy_metadata_fd(done_src.as_raw_fd(), done_dst.as_raw_fd(), &done.st)
            .map_err(|e| e.context(String::from_utf8_lossy(&rel).into_owned()))?;
        if let Some(parent) = stack.last_mut() {
            if parent.src.is_none() {
                parent.src = Some(fsops::reopen_parent(
                    done_src.as_raw_fd(),
                    parent.src_identity,
                )?);
                parent.dst = Some(fsops::reopen_parent(
                    done_dst.as_raw_fd(),
                    parent.dst_identity,
                )?);
            }
        }
    }
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
    /// Copies a non-directory; files hard-linked inside the tree become hard links again.
    fn copy_non_dir(
        &mut self,
        src: RawFd,
        dst: RawFd,
        name: &CStr,
        st: &libc::stat,
        rel: &[u8],
    ) -> Result<()> {
        let kind = st.st_mode & libc::S_IFMT;
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                fsops::linkat(self.dst_root, &cstr(first)?, dst, name)?;
                return Ok(());
            }
            self.links.insert(key, rel.to_vec());
        }
        match kind {
            libc::S_IFREG => {
                // O_NOATIME leaves the source layer's access times alone (owner or root only).
                let read_flags = libc::O_RDONLY | libc::O_NOFOLLOW;
                let src_fd = match fsops::openat(src, name, read_flags | libc::O_NOATIME, 0) {
                    Err(e) if errno(&e) == libc::EPERM => fsops::openat(src, name, read_flags, 0)?,
                    other => other?,
                };
                let src_file = File::from(src_fd);
                let mut dst_file = File::from(fsops::openat(
                    dst,
                    name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )?);
                // std uses copy_file_range/sendfile here (and reflinks where the fs can).
                std::io::copy(&mut &src_file, &mut dst_file)?;
                copy_metadata_fd(src_file.as_raw_fd(), dst_file.as_raw_fd(), st)?;
            }
            libc::S_IFLNK => {
                let target = fsops::readlinkat(src, name)?;
                fsops::symlinkat(&cstr(&target)?, dst, name)?;
                fsops::lchownat(dst, name, st.st_uid, st.st_gid)?;
                fsops::lutimensat(dst, name, &times_of(st))?;
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
                fsops::lutimensat(dst, name, &times_of(st))?;
            }
            _ => {} // sockets: not part of an image
        }
        Ok(())
    }
}
