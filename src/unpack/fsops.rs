//! Thin, descriptor-relative wrappers over the system calls layer application needs.
//! Every call takes a directory descriptor and a single path component and never follows a
//! symbolic link in that component.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a path"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(0)
}

pub fn openat(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    loop {
        let fd = unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if errno(&err) != libc::EINTR {
            return Err(err);
        }
    }
}

/// A directory (O_PATH) by one component, never following a symlink.
pub fn open_dir_path(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

/// A directory for reading/metadata changes by one component, never following a symlink.
pub fn open_dir_read(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

#[cfg(test)]
thread_local! {
    /// Lets a test run the component-by-component fallback on this thread only.
    pub static TEST_WITHOUT_OPENAT2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) of a directory path
/// under `dir`, as O_PATH. `Ok(None)` when the kernel (or a seccomp filter) lacks openat2.
pub fn openat2_dir_beneath(dir: RawFd, path: &CStr) -> io::Result<Option<OwnedFd>> {
    if OPENAT2_MISSING.load(Ordering::Relaxed) {
        return Ok(None);
    }
    #[cfg(test)]
    if TEST_WITHOUT_OPENAT2.with(|c| c.get()) {
        return Ok(None);
    }
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    loop {
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }));
        }
        let err = io::Error::last_os_error();
        match errno(&err) {
            libc::EINTR | libc::EAGAIN => continue,
            libc::ENOSYS | libc::EPERM => {
                // ENOSYS: kernel before 5.6; EPERM: seccomp profiles that refuse unknown
                // system calls that way (an O_PATH open cannot otherwise fail with EPERM).
                OPENAT2_MISSING.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            _ => return Err(err),
        }
    }
}

pub fn mkdirat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    check(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(dir: RawFd, name: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    check(unsafe { libc::mknodat(dir, name.as_ptr(), mode, dev) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    check(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }).map(drop)
}

/// A hard link; flags 0 means a symlink target is linked itself, not followed.
pub fn linkat(old_dir: RawFd, old: &CStr, new_dir: RawFd, new: &CStr) -> io::Result<()> {
    check(unsafe { libc::linkat(old_dir, old.as_ptr(), new_dir, new.as_ptr(), 0) }).map(drop)
}

pub fn unlinkat(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    check(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
}

/// lstat relative to `dir`.
pub fn lstatat(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    check(unsafe { libc::fchown(fd, uid, gid) }).map(drop)
}

pub fn lchownat(dir: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    check(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

pub fn fchmod(fd: RawFd, mode: libc::mode_t) -> io::Result<()> {
    check(unsafe { libc::fchmod(fd, mode) }).map(drop)
}

/// chmod of a component the caller knows is not a symlink (fchmodat cannot refuse to
/// follow one on older kernels).
pub fn fchmodat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    check(unsafe { libc::fchmodat(dir, name.as_ptr(), mode, 0) }).map(drop)
}

pub fn timespec(sec: i64, nsec: u32) -> libc::timespec {
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    }
}

pub fn futimens(fd: RawFd, times: &[libc::timespec; 2]) -> io::Result<()> {
    check(unsafe { libc::futimens(fd, times.as_ptr()) }).map(drop)
}

pub fn lutimensat(dir: RawFd, name: &CStr, times: &[libc::timespec; 2]) -> io::Result<()> {
    check(unsafe {
        libc::utimensat(
            dir,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn fsetxattr(fd: RawFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    check(unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .map(drop)
}

/// The /proc path of a component under a directory descriptor: lets xattr calls reach
/// devices, FIFOs and symlinks (which cannot be opened for fsetxattr) without any
/// resolution outside the descriptor; the `l*xattr` calls do not follow the last component.
pub fn proc_path(dir: RawFd, name: &[u8]) -> io::Result<CString> {
    let mut path = format!("/proc/self/fd/{dir}/").into_bytes();
    path.extend_from_slice(name);
    cstr(&path)
}

pub fn lsetxattr(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// Either a descriptor or a /proc path, for listing and reading xattrs.
pub enum XattrTarget<'a> {
    Fd(RawFd),
    Path(&'a CStr),
}

fn list_xattr_raw(target: &XattrTarget, buf: &mut [u8]) -> isize {
    match target {
        XattrTarget::Fd(fd) => unsafe { libc::flistxattr(*fd, buf.as_mut_ptr().cast(), buf.len()) },
        XattrTarget::Path(p) => unsafe {
            libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        },
    }
}

fn get_xattr_raw(target: &XattrTarget, name: &CStr, buf: &mut [u8]) -> isize {
    match target {
        XattrTarget::Fd(fd) => unsafe {
            libc::fgetxattr(*fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        },
        XattrTarget::Path(p) => unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        },
    }
}

/// All xattrs of an object as (name, value). A file system without xattr support has none.
pub fn list_xattrs(target: &XattrTarget) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let mut names = Vec::new();
    loop {
        let size = list_xattr_raw(target, &mut []);
        if size < 0 {
            let err = io::Error::last_os_error();
            return if errno(&err) == libc::ENOTSUP {
                Ok(Vec::new())
            } else {
                Err(err)
            };
        }
        names.resize(size as usize, 0);
        let got = list_xattr_raw(target, &mut names);
        if got < 0 {
            let err = io::Error::last_os_error();
            if errno(&err) == libc::ERANGE {
                continue; // Grew in between.
            }
            return Err(err);
        }
        names.truncate(got as usize);
        break;
    }
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = cstr(name)?;
        let mut value = Vec::new();
        loop {
            let size = get_xattr_raw(target, &cname, &mut []);
            if size < 0 {
                let err = io::Error::last_os_error();
                if errno(&err) == libc::ENODATA {
                    break; // Removed in between.
                }
                return Err(err);
            }
            value.resize(size as usize, 0);
            let got = get_xattr_raw(target, &cname, &mut value);
            if got < 0 {
                let err = io::Error::last_os_error();
                if errno(&err) == libc::ERANGE {
                    continue;
                }
                return Err(err);
            }
            value.truncate(got as usize);
            out.push((cname, value));
            break;
        }
    }
    Ok(out)
}

pub fn readlinkat(dir: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if (n as usize) < buf.len() {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        buf.resize(buf.len() * 2, 0);
    }
}

/// Names in a directory (without "." and ".."), with the d_type hint.
pub fn read_dir(dir: RawFd) -> io::Result<Vec<(CString, u8)>> {
    // fdopendir takes ownership of the descriptor it is given, so give it a duplicate
    // opened for reading (`dir` may be an O_PATH descriptor).
    let own = openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let raw = own.as_raw_fd();
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(own); // now owned by the DIR stream
    let mut out = Vec::new();
    let result = loop {
        unsafe { *libc::__errno_location() = 0 };
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            let e = unsafe { *libc::__errno_location() };
            break if e == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(e))
            };
        }
        let (name, kind) = unsafe {
            let e = &*entry;
            (CStr::from_ptr(e.d_name.as_ptr()), e.d_type)
        };
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            out.push((name.to_owned(), kind));
        }
    };
    unsafe { libc::closedir(stream) };
    result.map(|()| out)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// Directory levels that keep their descriptors open while a subdirectory is processed;
/// deeper levels drop theirs and reopen them through ".." afterwards, so that trees of any
/// depth (a layer may nest thousands of levels) need a bounded number of descriptors.
/// Tree walks are iterative for the same reason (no stack overflow).
pub const HELD_LEVELS: usize = 32;

/// Reopens the parent of the directory open as `child` and checks it is still the
/// directory (`identity` = device, inode) that was left.
pub fn reopen_parent(child: RawFd, identity: (u64, u64)) -> io::Result<OwnedFd> {
    let parent = openat(child, c"..", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let st = fstat(parent.as_raw_fd())?;
    if (st.st_dev, st.st_ino) != identity {
        return Err(io::Error::other(
            "a directory was moved while its tree was being processed",
        ));
    }
    Ok(parent)
}

/// rm -rf of one component under `dir`: never follows symlinks, makes directories it
/// cannot enter or modify writable first (for a non-root caller facing 0555 trees).
/// A missing entry is not an error.
pub fn remove_tree_at(dir: RawFd, name: &CStr) -> io::Result<()> {
    let st = match lstatat(dir, name) {
        Ok(st) => st,
        Err(e) if errno(&e) == libc::ENOENT => return Ok(()),
        Err(e) => return Err(e),
    };
    if !is_dir(&st) {
        return ignore_missing(unlinkat(dir, name, 0));
    }
    empty_dir(open_dir_for_removal(dir, name, st.st_mode)?, &st)?;
    ignore_missing(unlinkat(dir, name, libc::AT_REMOVEDIR))
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if errno(&e) != libc::ENOENT => Err(e),
        _ => Ok(()),
    }
}

fn open_dir_for_removal(parent: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<OwnedFd> {
    if mode & 0o700 != 0o700 {
        // Needed by a non-root owner to list and unlink; harmless (and ignored) otherwise.
        let _ = fchmodat(parent, name, (mode & 0o7777) | 0o700);
    }
    open_dir_read(parent, name)
}

/// One directory being emptied.
struct RemovalFrame {
    /// None while a deep subdirectory is processed (reopened through ".." afterwards).
    fd: Option<OwnedFd>,
    identity: (u64, u64),
    children: std::vec::IntoIter<(CString, u8)>,
    /// The subdirectory being emptied, removed once it is.
    pending: Option<CString>,
}

impl RemovalFrame {
    fn new(fd: OwnedFd, st: &libc::stat) -> io::Result<RemovalFrame> {
        let children = read_dir(fd.as_raw_fd())?.into_iter();
        Ok(RemovalFrame {
            fd: Some(fd),
            identity: (st.st_dev, st.st_ino),
            children,
            pending: None,
        })
    }
}

/// Removes everything inside the directory open as `top` (whose stat is `st`).
fn empty_dir(top: OwnedFd, st: &libc::stat) -> io::Result<()> {
    let mut stack = vec![RemovalFrame::new(top, st)?];
    loop {
        let depth = stack.len();
        let Some(frame) = stack.last_mut() else {
            return Ok(());
        };
        let Some(dir) = frame.fd.as_ref().map(|fd| fd.as_raw_fd()) else {
            return Err(io::Error::other("internal: directory descriptor missing"));
        };
        if let Some((child, kind)) = frame.children.next() {
            let mut subdir = None;
            if kind == libc::DT_DIR || kind == libc::DT_UNKNOWN {
                match lstatat(dir, &child) {
                    Ok(st) if is_dir(&st) => subdir = Some(st),
                    Ok(_) => {}
                    Err(e) if errno(&e) == libc::ENOENT => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some(st) = subdir else {
                match unlinkat(dir, &child, 0) {
                    // The d_type hint was wrong: it is a directory after all.
                    Err(e) if errno(&e) == libc::EISDIR => remove_tree_at(dir, &child)?,
                    other => ignore_missing(other)?,
                }
                continue;
            };
            let sub = open_dir_for_removal(dir, &child, st.st_mode)?;
            frame.pending = Some(child);
            if depth >= HELD_LEVELS {
                frame.fd = None;
            }
            stack.push(RemovalFrame::new(sub, &st)?);
            continue;
        }
        // This directory is empty now; back to its parent, which removes it.
        let Some(done) = stack.pop() else {
            return Ok(());
        };
        let Some(parent) = stack.last_mut() else {
            return Ok(());
        };
        if parent.fd.is_none() {
            let child_fd = done.fd.as_ref().map(|fd| fd.as_raw_fd()).unwrap_or(-1);
            parent.fd = Some(reopen_parent(child_fd, parent.identity)?);
        }
        drop(done);
        if let (Some(fd), Some(name)) = (parent.fd.as_ref(), parent.pending.take()) {
            ignore_missing(unlinkat(fd.as_raw_fd(), &name, libc::AT_REMOVEDIR))?;
        }
    }
}
