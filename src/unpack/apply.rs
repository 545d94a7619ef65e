//! Applying a layer tar onto a directory: the stream loop (headers, tar-split, digests) and
//! the confined file-system side (every change made through descriptors under `dest`).

use super::crc64::Crc64;
use super::fsops::{self, cstr, errno};
use super::limits::{BudgetReader, NameSet};
use super::tarfmt::{self, Header, Stream, Time, BLOCK};
use super::tarsplit::TarSplitWriter;
use super::writers::FileWriters;
use super::{ApplyOptions, LayerStats, WhiteoutMode};
use crate::error::{Error, Result, Status};
use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::fmt::Display;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

/// Read buffer for the layer stream: large reads keep the decompressor and the kernel busy
/// with few calls.
const STREAM_BUFFER: usize = 1 << 20;

/// Most directory descriptors kept for reuse (intermediate levels are dropped first), so
/// that deeply nested layers do not run out of descriptors.
const MAX_CACHED_DIRS: usize = 32;

/// Largest regular file handed to the file writers (its content is copied for them).
const WRITER_MAX_FILE: u64 = 64 << 10;

/// Paths remembered for the file writers' sake (about 34 bytes each); past this many the rest
/// of the layer is written by the stream loop alone and the memory is freed.
const WRITER_MAX_TRACKED: usize = 500_000;

/// File-writer threads: two measured 1.6-1.75x faster than one at creating 50,000 small files
/// on ext4 here, whether in the same directory or not (the directory lock is not the limit).
const WRITERS: usize = 2;

/// Memory for remembered directory times (path bytes) before they are applied early.
const DIR_TIMES_FLUSH: usize = 32 << 20;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

fn unsafe_entry(name: &[u8], why: impl Display) -> Error {
    Error::unsafe_archive(format!("layer entry {:?}: {why}", lossy(name)))
}

fn io_entry(name: &[u8], what: &str, err: std::io::Error) -> Error {
    Error::from(err).context(format!("layer entry {:?}: {what}", lossy(name)))
}

/// A tar entry with its PAX and GNU extensions merged in.
#[derive(Clone)]
struct Entry {
    kind: u8,
    name: Vec<u8>,
    link: Vec<u8>,
    /// Bytes of content that follow the header in the stream.
    data_size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Time,
    mtime: Time,
    dev_major: u64,
    dev_minor: u64,
    /// Only the names a layer may set (user.*, security.capability).
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl Entry {
    fn times(&self) -> [libc::timespec; 2] {
        [
            fsops::timespec(self.atime.sec, self.atime.nsec),
            fsops::timespec(self.mtime.sec, self.mtime.nsec),
        ]
    }
}

fn xattr_allowed(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"security.capability"
}

/// Merges the extended headers into the entry header, as Go's archive/tar does: PAX records
/// first, then GNU long names (which win).
fn merge_entry(
    header: Header,
    pax: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
) -> std::result::Result<Entry, String> {
    let mut name = header.name;
    let mut link = header.link;
    let mut size = header.size;
    let mut uid = header.uid;
    let mut gid = header.gid;
    let mut mtime = header.mtime;
    let mut atime = header.atime;
    let mut xattrs = Vec::new();
    for (key, value) in pax.into_iter().flatten() {
        match key.as_slice() {
            b"path" => name = value,
            b"linkpath" => link = value,
            b"size" => size = tarfmt::parse_pax_int(&value)?,
            b"uid" => uid = tarfmt::parse_pax_int(&value)?,
            b"gid" => gid = tarfmt::parse_pax_int(&value)?,
            b"mtime" => mtime = tarfmt::parse_pax_time(&value)?,
            b"atime" => atime = Some(tarfmt::parse_pax_time(&value)?),
            k if k.starts_with(b"GNU.sparse.") => {
                return Err("GNU sparse files are not supported".into());
            }
            k if k.starts_with(b"SCHILY.xattr.") => {
                let xname = &k[b"SCHILY.xattr.".len()..];
                if xattr_allowed(xname) {
                    let cname = CString::new(xname).map_err(|_| "NUL in xattr name".to_string())?;
                    xattrs.retain(|(n, _): &(CString, Vec<u8>)| n != &cname);
                    xattrs.push((cname, value));
                }
            }
            _ => {}
        }
    }
    if let Some(n) = long_name {
        name = n;
    }
    if let Some(l) = long_link {
        link = l;
    }
    let mut kind = header.kind;
    if kind == tarfmt::TYPE_REG_A {
        kind = if name.ends_with(b"/") {
            tarfmt::TYPE_DIR
        } else {
            tarfmt::TYPE_REG
        };
    } else if kind == tarfmt::TYPE_CONT {
        kind = tarfmt::TYPE_REG;
    }
    if size < 0 {
        return Err("negative size".into());
    }
    let id = |v: i64, what: &str| u32::try_from(v).map_err(|_| format!("{what} {v} out of range"));
    let dev = |v: i64, what: &str| u64::try_from(v).map_err(|_| format!("{what} {v} out of range"));
    // Go: the access time is never before the modification time.
    let atime = match atime {
        Some(a) if (a.sec, a.nsec) >= (mtime.sec, mtime.nsec) => a,
        _ => mtime,
    };
    Ok(Entry {
        kind,
        data_size: if tarfmt::is_header_only(kind) {
            0
        } else {
            size as u64
        },
        name,
        link,
        mode: (header.mode & 0o7777) as u32,
        uid: id(uid, "uid")?,
        gid: id(gid, "gid")?,
        atime,
        mtime,
        dev_major: dev(header.dev_major, "device major")?,
        dev_minor: dev(header.dev_minor, "device minor")?,
        xattrs,
    })
}

/// Splits an entry name into components: leading "./" and repeated slashes are fine;
/// absolute names and ".." are not. Empty result = the layer root.
fn split_name<'a>(name: &'a [u8], what: &str) -> std::result::Result<Vec<&'a [u8]>, String> {
    if name.is_empty() {
        return Err(format!("empty {what}"));
    }
    if name[0] == b'/' {
        return Err(format!("{what} is absolute"));
    }
    let mut comps = Vec::with_capacity(8);
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(format!("{what} contains a \"..\" component")),
            c => comps.push(c),
        }
    }
    Ok(comps)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

/// Go's `path.Base(name)` starts with ".wh." (such entries are not counted in uid/gid sets).
fn base_is_whiteout(name: &[u8]) -> bool {
    let trimmed = match name.iter().rposition(|&b| b != b'/') {
        Some(end) => &name[..=end],
        None => return false,
    };
    let base = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => &trimmed[i + 1..],
        None => trimmed,
    };
    base.starts_with(WHITEOUT_PREFIX)
}

struct CachedDir {
    depth: usize,
    /// Shared with the file writers creating files in it.
    fd: Arc<OwnedFd>,
    /// The gid new objects get in this directory (its gid when setgid, else ours); None
    /// until needed.
    creation_gid: Option<u32>,
}

/// The file-system side of layer application.
struct Applier<'o> {
    opts: &'o ApplyOptions,
    root: Arc<OwnedFd>,
    root_creation_gid: Option<u32>,
    /// Descriptors of the current parent directory and of some of its ancestors; tar
    /// streams list a directory's children together, so most entries reuse the last one.
    cached_path: Vec<Vec<u8>>,
    cached_dirs: Vec<CachedDir>,
    euid: u32,
    egid: u32,
    /// Delete mode: every path this layer created or merged (for opaque directories).
    written: Option<NameSet>,
    dir_times: Vec<(Vec<u8>, [libc::timespec; 2])>,
    /// Bytes of the paths in `dir_times`; past DIR_TIMES_FLUSH they are applied early.
    dir_times_bytes: usize,
    root_times: Option<[libc::timespec; 2]>,
    /// The process umask when new files get exactly the mode they are created with (no default
    /// ACL can apply), so that a regular file whose mode the umask leaves alone is created with
    /// it and needs no fchmod (one system call per file, 5% of a small-files pull on ext4).
    exact_creation_umask: Option<u32>,
    /// Whether small new files may be created by `writers` (overlay layers applied onto an
    /// empty directory, where a path exists only if this layer created it: `written` says).
    offload: bool,
    /// Started on the first file handed over, so from the applying thread (credentials).
    writers: Option<FileWriters>,
}

impl<'o> Applier<'o> {
    fn new(dest: &Path, opts: &'o ApplyOptions) -> Result<Applier<'o>> {
        use std::os::unix::ffi::OsStrExt;
        let path = cstr(dest.as_os_str().as_bytes())?;
        let root = fsops::openat(libc::AT_FDCWD, &path, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| {
                Error::from(e).context(format!("opening layer directory {}", dest.display()))
            })?;
        let offload = opts.whiteouts == WhiteoutMode::Overlay
            && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
            && fsops::read_dir(root.as_raw_fd()).is_ok_and(|names| names.is_empty());
        Ok(Applier {
            opts,
            root: Arc::new(root),
            root_creation_gid: None,
            cached_path: Vec::new(),
            cached_dirs: Vec::new(),
            euid: unsafe { libc::geteuid() },
            egid: unsafe { libc::getegid() },
            written: match opts.whiteouts {
                WhiteoutMode::Delete => Some(NameSet::new()),
                WhiteoutMode::Overlay if offload => Some(NameSet::new()),
                WhiteoutMode::Overlay => None,
            },
            dir_times: Vec::new(),
            dir_times_bytes: 0,
            root_times: None,
            exact_creation_umask: None,
            offload,
            writers: None,
        }
        .with_creation_umask())
    }

    /// Overlay layers start from an empty directory and their entries cannot set ACLs (only
    /// user.* and security.capability xattrs are applied), so a new file's mode there is the
    /// requested one minus the umask, unless the layer directory itself has a default ACL.
    /// (vfs layers start from a copy of their parent, whose directories may carry any ACL.)
    fn with_creation_umask(mut self) -> Self {
        if self.opts.whiteouts != WhiteoutMode::Overlay {
            return self;
        }
        let Ok(dir) = fsops::openat(
            self.root.as_raw_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        ) else {
            return self;
        };
        let acl = fsops::list_xattrs(&fsops::XattrTarget::Fd(dir.as_raw_fd()));
        let has_default_acl = match acl {
            Ok(names) => names
                .iter()
                .any(|(n, _)| n.as_bytes() == b"system.posix_acl_default"),
            Err(_) => true,
        };
        if !has_default_acl {
            self.exact_creation_umask = current_umask();
        }
        self
    }

    /// The mode to create a regular file with, and whether it is final (no fchmod needed).
    fn file_creation_mode(&self, mode: u32) -> (libc::mode_t, bool) {
        match self.exact_creation_umask {
            // Only permission bits: setuid/setgid/sticky are set after the owner (chown clears
            // them) and creation may drop them.
            Some(umask) if mode & !0o777 == 0 && mode & umask == 0 => (mode as libc::mode_t, true),
            _ => (0o600, false),
        }
    }

    /// Records a path this layer wrote, and its ancestors: an opaque directory above keeps
    /// the directories that lead to this layer's files (as the merged overlay view would),
    /// and deletes everything else. Invariant: a recorded path has all ancestors recorded.
    fn note_written(&mut self, path: &[u8]) {
        let Some(set) = self.written.as_mut() else {
            return;
        };
        if !set.insert(path) {
            return;
        }
        let mut end = path.len();
        while let Some(slash) = path[..end].iter().rposition(|&b| b == b'/') {
            if !set.insert(&path[..slash]) {
                break;
            }
            end = slash;
        }
    }

    fn was_written(&self, path: &[u8]) -> bool {
        self.written.as_ref().is_some_and(|set| set.contains(path))
    }

    /// Descriptor of the directory `comps` (relative to dest), never through a symlink.
    /// Missing directories are created 0755 when `create`; otherwise Ok(None).
    fn resolve_dir(
        &mut self,
        comps: &[&[u8]],
        create: bool,
        entry: &[u8],
    ) -> Result<Option<RawFd>> {
        let mut common = 0;
        while common < comps.len()
            && common < self.cached_path.len()
            && self.cached_path[common] == comps[common]
        {
            common += 1;
        }
        while self.cached_dirs.last().is_some_and(|d| d.depth > common) {
            self.cached_dirs.pop();
        }
        let mut depth = self.cached_dirs.last().map_or(0, |d| d.depth);
        self.cached_path.truncate(depth);
        if depth == comps.len() {
            return Ok(Some(self.top_fd()));
        }

        if comps.len() - depth >= 2 {
            // Several components to descend: one openat2 that the kernel confines.
            let rest = cstr(&join(&comps[depth..])).map_err(|e| io_entry(entry, "path", e))?;
            if let Ok(Some(fd)) = fsops::openat2_dir_beneath(self.top_fd(), &rest) {
                self.cached_path
                    .extend(comps[depth..].iter().map(|c| c.to_vec()));
                self.push_cached(CachedDir {
                    depth: comps.len(),
                    fd: Arc::new(fd),
                    creation_gid: None,
                });
                return Ok(Some(self.top_fd()));
            }
            // Missing, a symlink, not a directory, or no openat2: the walk below creates
            // what is missing and says precisely what is wrong.
        }

        let mut waited = false;
        while depth < comps.len() {
            let comp = comps[depth];
            let name = cstr(comp).map_err(|e| io_entry(entry, "path", e))?;
            let parent = self.top_fd();
            let fd = match fsops::open_dir_path(parent, &name) {
                Ok(fd) => fd,
                Err(e) if errno(&e) == libc::ENOENT => {
                    if !create {
                        return Ok(None);
                    }
                    if !waited
                        && self.writers.is_some()
                        && self.was_written(&join(&comps[..=depth]))
                    {
                        // A file writer may be creating this very path: look again once it
                        // is done (then it is a file, and the entry is refused).
                        self.wait_for_writers()?;
                        waited = true;
                        continue;
                    }
                    match fsops::mkdirat(parent, &name, 0o755) {
                        Ok(()) => {
                            // Independent of the umask, as the tar did not say.
                            let _ = fsops::fchmodat(parent, &name, 0o755);
                        }
                        Err(e) if errno(&e) == libc::EEXIST => {}
                        Err(e) => return Err(io_entry(entry, "creating a parent directory", e)),
                    }
                    self.note_written(&join(&comps[..=depth]));
                    fsops::open_dir_path(parent, &name)
                        .map_err(|e| self.component_error(parent, &name, comps, depth, entry, e))?
                }
                Err(e) => return Err(self.component_error(parent, &name, comps, depth, entry, e)),
            };
            self.cached_path.push(comp.to_vec());
            depth += 1;
            self.push_cached(CachedDir {
                depth,
                fd: Arc::new(fd),
                creation_gid: None,
            });
        }
        Ok(Some(self.top_fd()))
    }

    fn component_error(
        &self,
        parent: RawFd,
        name: &CStr,
        comps: &[&[u8]],
        depth: usize,
        entry: &[u8],
        err: std::io::Error,
    ) -> Error {
        let prefix = lossy(&join(&comps[..=depth]));
        match errno(&err) {
            libc::ENOTDIR | libc::ELOOP => match fsops::lstatat(parent, name) {
                Ok(st) if fsops::is_symlink(&st) => unsafe_entry(
                    entry,
                    format!("path component {prefix:?} is a symbolic link; refusing to write through it"),
                ),
                _ => unsafe_entry(entry, format!("path component {prefix:?} is not a directory")),
            },
            _ => io_entry(entry, &format!("opening directory {prefix:?}"), err),
        }
    }

    fn push_cached(&mut self, dir: CachedDir) {
        self.cached_dirs.push(dir);
        if self.cached_dirs.len() > MAX_CACHED_DIRS {
            // Any level but the last may go: a later lookup starts from a shallower one.
            self.cached_dirs.remove(self.cached_dirs.len() - 2);
        }
    }

    /// The directory last resolved, to share with a file writer.
    fn top_dir(&self) -> Arc<OwnedFd> {
        self.cached_dirs
            .last()
            .map_or_else(|| self.root.clone(), |d| d.fd.clone())
    }

    /// Waits for the files handed to the writers; before anything that could see or touch one.
    fn wait_for_writers(&mut self) -> Result<()> {
        match self.writers.as_mut() {
            Some(w) => w.wait_all(),
            None => Ok(()),
        }
    }

    fn top_fd(&self) -> RawFd {
        self.cached_dirs
            .last()
            .map_or(self.root.as_raw_fd(), |d| d.fd.as_raw_fd())
    }

    /// The gid a new object gets in the directory last resolved.
    fn creation_gid(&mut self) -> Result<u32> {
        let egid = self.egid;
        let (fd, slot) = match self.cached_dirs.last_mut() {
            Some(d) => (d.fd.as_raw_fd(), &mut d.creation_gid),
            None => (self.root.as_raw_fd(), &mut self.root_creation_gid),
        };
        if let Some(gid) = *slot {
            return Ok(gid);
        }
        let st = fsops::fstat(fd)?;
        let gid = if st.st_mode & libc::S_ISGID != 0 {
            st.st_gid
        } else {
            egid
        };
        *slot = Some(gid);
        Ok(gid)
    }

    /// Removes whatever is at `name` so that a new object can take its place.
    fn remove_existing(&mut self, parent: RawFd, name: &CStr, entry: &[u8]) -> Result<()> {
        // Only children of the current parent are removed, so no cached descriptor
        // (the parent and its ancestors) can refer to a removed directory.
        fsops::remove_tree_at(parent, name)
            .map_err(|e| io_entry(entry, "replacing an existing file", e))
    }

    /// Runs `create` and, if something is in the way, removes it and tries once more.
    fn create_replacing<T>(
        &mut self,
        parent: RawFd,
        name: &CStr,
        entry: &[u8],
        what: &str,
        mut create: impl FnMut() -> std::io::Result<T>,
    ) -> Result<T> {
        match create() {
            Ok(v) => Ok(v),
            Err(e) if errno(&e) == libc::EEXIST => {
                self.remove_existing(parent, name, entry)?;
                create().map_err(|e| io_entry(entry, what, e))
            }
            Err(e) => Err(io_entry(entry, what, e)),
        }
    }

    fn set_xattrs_at(&self, parent: RawFd, name: &[u8], e: &Entry) -> Result<()> {
        if e.xattrs.is_empty() {
            return Ok(());
        }
        let path =
            fsops::proc_path(parent, name).map_err(|err| io_entry(&e.name, "xattr path", err))?;
        for (xname, value) in &e.xattrs {
            match fsops::lsetxattr(&path, xname, value) {
                Err(err) if errno(&err) != libc::ENOTSUP => {
                    return Err(io_entry(&e.name, &format!("setting xattr {xname:?}"), err));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        e: &Entry,
        comps: &[&[u8]],
        stream: &mut Stream<R>,
        crc: &mut Option<Crc64>,
    ) -> Result<()> {
        let (last, parent_comps) = comps
            .split_last()
            .ok_or_else(|| unsafe_entry(&e.name, "no name"))?;
        let parent = self
            .resolve_dir(parent_comps, true, &e.name)?
            .unwrap_or(self.root.as_raw_fd());
        let gid = self.creation_gid()?;
        let name = cstr(last).map_err(|err| io_entry(&e.name, "name", err))?;
        let (creation_mode, mode_at_creation) = self.file_creation_mode(e.mode);
        let path = join(comps);
        if self.offload
            && self
                .written
                .as_ref()
                .is_some_and(|w| w.len() > WRITER_MAX_TRACKED)
        {
            self.wait_for_writers()?;
            self.offload = false;
            self.written = None; // offload implies overlay, which needs no record of its own
        }
        if self.was_written(&path) {
            // A replacement: whatever this layer put there must be complete first.
            self.wait_for_writers()?;
        } else if self.offload && e.data_size <= WRITER_MAX_FILE && e.xattrs.is_empty() {
            let mut content = Vec::with_capacity(e.data_size as usize);
            copy_content(stream, e.data_size, Some(&mut content), crc, &e.name)?;
            self.note_written(&path);
            let new = NewFile {
                name,
                content,
                owner_now: (self.euid, gid),
                creation_mode,
                mode_set: mode_at_creation,
            };
            return self.hand_over(e, new);
        }
        let fd = self.create_replacing(parent, &name, &e.name, "creating the file", || {
            fsops::openat(
                parent,
                &name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                creation_mode,
            )
        })?;
        let mut file = File::from(fd);
        copy_content(stream, e.data_size, Some(&mut file), crc, &e.name)?;
        finish_fd(
            file.as_raw_fd(),
            e,
            (self.euid, gid),
            true,
            mode_at_creation,
        )?;
        self.note_written(&path);
        Ok(())
    }

    /// Has a file writer create `new` in the directory last resolved, which holds nothing of
    /// its name (the layer started empty and did not write it).
    fn hand_over(&mut self, e: &Entry, new: NewFile) -> Result<()> {
        if self.writers.is_none() {
            self.writers = FileWriters::start(WRITERS);
            if self.writers.is_none() {
                // No thread: create it here, and the next ones too.
                self.offload = false;
                return new.create(self.top_fd(), e);
            }
        }
        let parent = self.top_dir();
        let entry = e.clone();
        let job = Box::new(move || new.create(parent.as_raw_fd(), &entry));
        self.writers.as_mut().expect("started above").submit(job)
    }

    fn directory(&mut self, e: &Entry, comps: &[&[u8]]) -> Result<()> {
        let Some((last, parent_comps)) = comps.split_last() else {
            return self.root_directory(e);
        };
        let path = join(comps);
        let parent = self
            .resolve_dir(parent_comps, true, &e.name)?
            .unwrap_or(self.root.as_raw_fd());
        let name = cstr(last).map_err(|err| io_entry(&e.name, "name", err))?;
        let mut owner_now = (self.euid, self.creation_gid()?);
        match fsops::mkdirat(parent, &name, 0o700) {
            Ok(()) => {}
            Err(err) if errno(&err) == libc::EEXIST => {
                let st =
                    fsops::lstatat(parent, &name).map_err(|err| io_entry(&e.name, "lstat", err))?;
                if fsops::is_dir(&st) {
                    owner_now = (st.st_uid, st.st_gid); // merge: keep contents
                } else {
                    if fsops::is_symlink(&st)
                        && (self.opts.whiteouts == WhiteoutMode::Overlay || self.was_written(&path))
                    {
                        return Err(unsafe_entry(
                            &e.name,
                            "directory entry names a symbolic link this layer created; refusing to apply it through the link",
                        ));
                    }
                    fsops::unlinkat(parent, &name, 0)
                        .map_err(|err| io_entry(&e.name, "replacing a file by a directory", err))?;
                    fsops::mkdirat(parent, &name, 0o700)
                        .map_err(|err| io_entry(&e.name, "creating the directory", err))?;
                }
            }
            Err(err) => return Err(io_entry(&e.name, "creating the directory", err)),
        }
        let fd = fsops::open_dir_read(parent, &name)
            .map_err(|err| io_entry(&e.name, "opening the directory", err))?;
        finish_fd(fd.as_raw_fd(), e, owner_now, false, false)?;
        self.dir_times_bytes += path.len() + 64;
        self.dir_times.push((path.clone(), e.times()));
        if self.dir_times_bytes > DIR_TIMES_FLUSH {
            self.apply_dir_times()?;
        }
        self.note_written(&path);
        // The next entries are most likely this directory's children.
        let creation_gid = if e.mode & libc::S_ISGID != 0 {
            e.gid
        } else {
            self.egid
        };
        self.cached_path.push(last.to_vec());
        self.push_cached(CachedDir {
            depth: comps.len(),
            fd: Arc::new(fd),
            creation_gid: Some(creation_gid),
        });
        Ok(())
    }

    fn root_directory(&mut self, e: &Entry) -> Result<()> {
        // Its owner and mode apply from here on, not to files still being created in it.
        self.wait_for_writers()?;
        let fd = fsops::openat(
            self.root.as_raw_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(|err| io_entry(&e.name, "opening the layer root", err))?;
        let st = fsops::fstat(fd.as_raw_fd())?;
        finish_fd(fd.as_raw_fd(), e, (st.st_uid, st.st_gid), false, false)?;
        self.root_times = Some(e.times());
        self.root_creation_gid = Some(if e.mode & libc::S_ISGID != 0 {
            e.gid
        } else {
            self.egid
        });
        Ok(())
    }

    fn symlink(&mut self, e: &Entry, comps: &[&[u8]]) -> Result<()> {
        let (last, parent_comps) = comps
            .split_last()
            .ok_or_else(|| unsafe_entry(&e.name, "no name"))?;
        let parent = self
            .resolve_dir(parent_comps, true, &e.name)?
            .unwrap_or(self.root.as_raw_fd());
        let gid = self.creation_gid()?;
        let name = cstr(last).map_err(|err| io_entry(&e.name, "name", err))?;
        let target = cstr(&e.link).map_err(|err| io_entry(&e.name, "link target", err))?;
        self.create_replacing(parent, &name, &e.name, "creating the symlink", || {
            fsops::symlinkat(&target, parent, &name)
        })?;
        if (self.euid, gid) != (e.uid, e.gid) {
            fsops::lchownat(parent, &name, e.uid, e.gid)
                .map_err(|err| io_entry(&e.name, "setting the owner", err))?;
        }
        fsops::lutimensat(parent, &name, &e.times())
            .map_err(|err| io_entry(&e.name, "setting times", err))?;
        self.note_written(&join(comps));
        Ok(())
    }

    /// A directory under dest by components without creating anything or using the cache
    /// (hard link targets). Ok(None) when missing.
    fn open_existing_dir(&self, comps: &[&[u8]], entry: &[u8]) -> Result<Option<OwnedFd>> {
        let root = self.root.as_raw_fd();
        if comps.is_empty() {
            return Ok(Some(
                fsops::openat(root, c".", libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| io_entry(entry, "root", e))?,
            ));
        }
        let path = cstr(&join(comps)).map_err(|e| io_entry(entry, "path", e))?;
        if let Ok(Some(fd)) = fsops::openat2_dir_beneath(root, &path) {
            return Ok(Some(fd));
        }
        let mut current: Option<OwnedFd> = None;
        for (depth, comp) in comps.iter().enumerate() {
            let name = cstr(comp).map_err(|e| io_entry(entry, "path", e))?;
            let parent = current.as_ref().map_or(root, |fd| fd.as_raw_fd());
            match fsops::open_dir_path(parent, &name) {
                Ok(fd) => current = Some(fd),
                Err(e) if errno(&e) == libc::ENOENT => return Ok(None),
                Err(e) => return Err(self.component_error(parent, &name, comps, depth, entry, e)),
            }
        }
        Ok(current)
    }

    fn hardlink(&mut self, e: &Entry, comps: &[&[u8]]) -> Result<()> {
        let (last, parent_comps) = comps
            .split_last()
            .ok_or_else(|| unsafe_entry(&e.name, "no name"))?;
        let target =
            split_name(&e.link, "hard link target").map_err(|why| unsafe_entry(&e.name, why))?;
        let Some((target_last, target_parent)) = target.split_last() else {
            return Err(unsafe_entry(&e.name, "hard link to the layer root"));
        };
        if target == comps {
            return Err(unsafe_entry(&e.name, "hard link to itself"));
        }
        let missing = || {
            unsafe_entry(
                &e.name,
                format!(
                    "hard link target {:?} does not exist in the layer",
                    lossy(&e.link)
                ),
            )
        };
        let target_dir = self
            .open_existing_dir(target_parent, &e.name)?
            .ok_or_else(missing)?;
        let target_name = cstr(target_last).map_err(|err| io_entry(&e.name, "link target", err))?;
        let target_st = match fsops::lstatat(target_dir.as_raw_fd(), &target_name) {
            Ok(st) => st,
            Err(err) if errno(&err) == libc::ENOENT => return Err(missing()),
            Err(err) => return Err(io_entry(&e.name, "examining the link target", err)),
        };
        if fsops::is_dir(&target_st) {
            return Err(unsafe_entry(
                &e.name,
                format!("hard link target {:?} is a directory", lossy(&e.link)),
            ));
        }

        let parent = self
            .resolve_dir(parent_comps, true, &e.name)?
            .unwrap_or(self.root.as_raw_fd());
        let name = cstr(last).map_err(|err| io_entry(&e.name, "name", err))?;
        let tfd = target_dir.as_raw_fd();
        self.create_replacing(parent, &name, &e.name, "creating the hard link", || {
            fsops::linkat(tfd, &target_name, parent, &name)
        })?;

        // Like containers/storage: the link's header metadata applies to the shared inode
        // (the same values as the target's header in every tar writer we know of).
        let chowned = (target_st.st_uid, target_st.st_gid) != (e.uid, e.gid);
        if chowned {
            fsops::lchownat(parent, &name, e.uid, e.gid)
                .map_err(|err| io_entry(&e.name, "setting the owner", err))?;
        }
        if !fsops::is_symlink(&target_st) {
            self.set_xattrs_at(parent, last, e)?;
            if chowned || target_st.st_mode & 0o7777 != e.mode {
                fsops::fchmodat(parent, &name, e.mode)
                    .map_err(|err| io_entry(&e.name, "setting the mode", err))?;
            }
            fsops::lutimensat(parent, &name, &e.times())
                .map_err(|err| io_entry(&e.name, "setting times", err))?;
        }
        self.note_written(&join(comps));
        Ok(())
    }

    fn node(&mut self, e: &Entry, comps: &[&[u8]]) -> Result<()> {
        let (last, parent_comps) = comps
            .split_last()
            .ok_or_else(|| unsafe_entry(&e.name, "no name"))?;
        let file_type = match e.kind {
            tarfmt::TYPE_CHAR => libc::S_IFCHR,
            tarfmt::TYPE_BLOCK => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        if file_type != libc::S_IFIFO && self.euid != 0 {
            return Err(Error::new(
                Status::PermissionDenied,
                format!(
                    "layer entry {:?} is a device node; creating it needs root",
                    lossy(&e.name)
                ),
            ));
        }
        let parent = self
            .resolve_dir(parent_comps, true, &e.name)?
            .unwrap_or(self.root.as_raw_fd());
        let gid = self.creation_gid()?;
        let name = cstr(last).map_err(|err| io_entry(&e.name, "name", err))?;
        let dev = if file_type == libc::S_IFIFO {
            0
        } else {
            let (major, minor) = (
                u32::try_from(e.dev_major)
                    .map_err(|_| unsafe_entry(&e.name, "device major out of range"))?,
                u32::try_from(e.dev_minor)
                    .map_err(|_| unsafe_entry(&e.name, "device minor out of range"))?,
            );
            libc::makedev(major, minor)
        };
        let made = self.create_replacing(parent, &name, &e.name, "creating the node", || {
            fsops::mknodat(parent, &name, file_type | 0o600, dev)
        });
        if let Err(err) = made {
            if err.status == Status::PermissionDenied {
                return Err(Error::new(
                    Status::PermissionDenied,
                    format!(
                        "layer entry {:?}: not permitted to create a device node: {}",
                        lossy(&e.name),
                        err.message
                    ),
                ));
            }
            return Err(err);
        }
        if (self.euid, gid) != (e.uid, e.gid) {
            fsops::lchownat(parent, &name, e.uid, e.gid)
                .map_err(|err| io_entry(&e.name, "setting the owner", err))?;
        }
        self.set_xattrs_at(parent, last, e)?;
        fsops::fchmodat(parent, &name, e.mode)
            .map_err(|err| io_entry(&e.name, "setting the mode", err))?;
        fsops::lutimensat(parent, &name, &e.times())
            .map_err(|err| io_entry(&e.name, "setting times", err))?;
        self.note_written(&join(comps));
        Ok(())
    }

    /// `dir/.wh.NAME`: overlay → 0/0 character device; vfs → delete NAME.
    fn whiteout(&mut self, e: &Entry, parent_comps: &[&[u8]], hidden: &[u8]) -> Result<()> {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(unsafe_entry(&e.name, "malformed whiteout name"));
        }
        let name = cstr(hidden).map_err(|err| io_entry(&e.name, "name", err))?;
        self.wait_for_writers()?;
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => {
                let parent = self
                    .resolve_dir(parent_comps, true, &e.name)?
                    .unwrap_or(self.root.as_raw_fd());
                let gid = self.creation_gid()?;
                let made =
                    self.create_replacing(parent, &name, &e.name, "creating the whiteout", || {
                        fsops::mknodat(parent, &name, libc::S_IFCHR, 0)
                    });
                if let Err(err) = made {
                    if err.status == Status::PermissionDenied {
                        return Err(Error::new(
                            Status::PermissionDenied,
                            format!(
                                "layer entry {:?}: not permitted to create an overlay whiteout (0/0 device): {}",
                                lossy(&e.name),
                                err.message
                            ),
                        ));
                    }
                    return Err(err);
                }
                // mknod applies the umask to mode 0, so the permission bits stay 0.
                if (self.euid, gid) != (e.uid, e.gid) {
                    fsops::lchownat(parent, &name, e.uid, e.gid)
                        .map_err(|err| io_entry(&e.name, "setting the whiteout's owner", err))?;
                }
                let mut hidden_path = parent_comps.to_vec();
                hidden_path.push(hidden);
                self.note_written(&join(&hidden_path));
            }
            WhiteoutMode::Delete => {
                if let Some(parent) = self.resolve_dir(parent_comps, false, &e.name)? {
                    fsops::remove_tree_at(parent, &name)
                        .map_err(|err| io_entry(&e.name, "removing the whited-out path", err))?;
                }
            }
        }
        Ok(())
    }

    /// `dir/.wh..wh..opq`: overlay → opaque xattr; vfs → delete what this layer did not write.
    fn opaque(&mut self, e: &Entry, dir_comps: &[&[u8]]) -> Result<()> {
        self.wait_for_writers()?;
        let dir = self
            .resolve_dir(dir_comps, true, &e.name)?
            .unwrap_or(self.root.as_raw_fd());
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => {
                let fd = fsops::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(|err| io_entry(&e.name, "opening the opaque directory", err))?;
                fsops::fsetxattr(fd.as_raw_fd(), OVERLAY_OPAQUE_XATTR, b"y")
                    .map_err(|err| io_entry(&e.name, "marking the directory opaque", err))?;
            }
            WhiteoutMode::Delete => {
                let path = join(dir_comps);
                self.remove_unwritten(dir, &path, &e.name)?;
            }
        }
        Ok(())
    }

    /// Deletes what this layer did not write below `dir` (an opaque directory in Delete
    /// mode), descending into the directories it did write. Iterative: layers nest deeply.
    fn remove_unwritten(&self, dir: RawFd, dir_path: &[u8], entry: &[u8]) -> Result<()> {
        let mut pending: Vec<Vec<u8>> = Vec::new();
        self.remove_unwritten_children(dir, dir_path, entry, &mut pending)?;
        while let Some(path) = pending.pop() {
            let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            if let Some(sub) = self.open_existing_dir(&comps, entry)? {
                self.remove_unwritten_children(sub.as_raw_fd(), &path, entry, &mut pending)?;
            }
        }
        Ok(())
    }

    fn remove_unwritten_children(
        &self,
        dir: RawFd,
        dir_path: &[u8],
        entry: &[u8],
        written_subdirs: &mut Vec<Vec<u8>>,
    ) -> Result<()> {
        let children = fsops::read_dir(dir)
            .map_err(|err| io_entry(entry, "listing the opaque directory", err))?;
        for (child, kind) in children {
            let mut path = dir_path.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(child.to_bytes());
            if self.was_written(&path) {
                let is_dir = match kind {
                    libc::DT_DIR => true,
                    libc::DT_UNKNOWN => fsops::lstatat(dir, &child)
                        .map(|st| fsops::is_dir(&st))
                        .unwrap_or(false),
                    _ => false,
                };
                if is_dir {
                    written_subdirs.push(path);
                }
            } else {
                fsops::remove_tree_at(dir, &child).map_err(|err| {
                    io_entry(
                        entry,
                        "removing a lower-layer file from the opaque directory",
                        err,
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Directory times, set last because creating children changes them.
    fn finish(&mut self) -> Result<()> {
        self.wait_for_writers()?;
        // Files were created with their final modes on the strength of the umask read at the
        // start: a caller's thread that changed it since (umask is process-wide) would leave
        // some of them with other modes, which must not pass as a good layer.
        if let Some(umask) = self.exact_creation_umask {
            if current_umask() != Some(umask) {
                return Err(Error::new(
                    Status::Io,
                    "the process umask changed while the layer was extracted; pull again",
                ));
            }
        }
        self.apply_dir_times()?;
        if let Some(times) = self.root_times {
            let fd = fsops::openat(
                self.root.as_raw_fd(),
                c".",
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )?;
            fsops::futimens(fd.as_raw_fd(), &times)
                .map_err(|err| io_entry(b".", "setting the root's times", err))?;
        }
        Ok(())
    }

    /// Sets the recorded directory times now. At the end of the layer; earlier only for
    /// layers with so many directories that remembering them all would cost too much memory
    /// (then a directory that gets children later keeps a newer mtime: harmless).
    fn apply_dir_times(&mut self) -> Result<()> {
        self.dir_times_bytes = 0;
        let dir_times = std::mem::take(&mut self.dir_times);
        for (path, times) in &dir_times {
            let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
            let Some((last, parent_comps)) = comps.split_last() else {
                continue;
            };
            // A later entry may have replaced or removed the directory; then nothing to do.
            let Ok(Some(parent)) = self.resolve_dir(parent_comps, false, path) else {
                continue;
            };
            let name = cstr(last)?;
            match fsops::lutimensat(parent, &name, times) {
                Err(err) if errno(&err) != libc::ENOENT => {
                    return Err(io_entry(path, "setting directory times", err));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A small regular file for a file writer (or for the stream loop when none could start).
struct NewFile {
    name: CString,
    content: Vec<u8>,
    /// Owner it gets at creation; `creation_mode` is final when `mode_set`.
    owner_now: (u32, u32),
    creation_mode: libc::mode_t,
    mode_set: bool,
}

impl NewFile {
    /// Creates it in `parent` (where nothing of its name exists), then content, owner, mode
    /// and times.
    fn create(&self, parent: RawFd, e: &Entry) -> Result<()> {
        let fd = fsops::openat(
            parent,
            &self.name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            self.creation_mode,
        )
        .map_err(|err| io_entry(&e.name, "creating the file", err))?;
        let mut file = File::from(fd);
        file.write_all(&self.content)
            .map_err(|err| io_entry(&e.name, "writing the file", err))?;
        finish_fd(file.as_raw_fd(), e, self.owner_now, true, self.mode_set)
    }
}

/// Owner, xattrs, mode (after chown, which clears setuid bits and capabilities), times.
/// `mode_set`: the object was created with its final mode already.
fn finish_fd(
    fd: RawFd,
    e: &Entry,
    owner_now: (u32, u32),
    times: bool,
    mode_set: bool,
) -> Result<()> {
    if owner_now != (e.uid, e.gid) {
        fsops::fchown(fd, e.uid, e.gid)
            .map_err(|err| io_entry(&e.name, "setting the owner", err))?;
    }
    set_xattrs_fd(fd, e)?;
    if !mode_set {
        fsops::fchmod(fd, e.mode).map_err(|err| io_entry(&e.name, "setting the mode", err))?;
    }
    if times {
        fsops::futimens(fd, &e.times()).map_err(|err| io_entry(&e.name, "setting times", err))?;
    }
    Ok(())
}

fn set_xattrs_fd(fd: RawFd, e: &Entry) -> Result<()> {
    for (name, value) in &e.xattrs {
        match fsops::fsetxattr(fd, name, value) {
            Err(err) if errno(&err) != libc::ENOTSUP => {
                return Err(io_entry(&e.name, &format!("setting xattr {name:?}"), err));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The process umask, from /proc (reading it with umask(2) would change it for a moment, for
/// every thread of the caller's process). None when /proc does not say.
fn current_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

/// Moves `size` content bytes from the stream into `sink` (if any), updating the CRC.
fn copy_content<R: Read>(
    stream: &mut Stream<R>,
    mut size: u64,
    mut sink: Option<&mut dyn Write>,
    crc: &mut Option<Crc64>,
    name: &[u8],
) -> Result<()> {
    while size > 0 {
        let chunk = stream.peek()?;
        if chunk.is_empty() {
            return Err(unsafe_entry(
                name,
                "the layer stream ends inside this entry's content",
            ));
        }
        let n = usize::try_from(size).map_or(chunk.len(), |s| s.min(chunk.len()));
        let part = &chunk[..n];
        if let Some(c) = crc.as_mut() {
            c.update(part);
        }
        if let Some(file) = sink.as_mut() {
            file.write_all(part)
                .map_err(|err| io_entry(name, "writing the file", err))?;
        }
        stream.consume(n);
        size -= n as u64;
    }
    Ok(())
}

/// Reads a PAX or GNU long-name payload (bounded) and keeps it as raw bytes.
fn read_special<R: Read>(
    stream: &mut Stream<R>,
    header: &Header,
    raw: Option<&mut Vec<u8>>,
) -> Result<Vec<u8>> {
    let size = header.size as u64;
    if size > tarfmt::MAX_SPECIAL_FILE {
        return Err(unsafe_entry(
            &header.name,
            format!("extended header of {size} bytes is too large"),
        ));
    }
    let mut data = vec![0u8; size as usize];
    let got = stream.read_full(&mut data)?;
    if let Some(raw) = raw {
        raw.extend_from_slice(&data[..got]);
    }
    if got < data.len() {
        return Err(unsafe_entry(
            &header.name,
            "the layer stream ends inside an extended header",
        ));
    }
    Ok(data)
}

pub(super) fn apply_layer<R: Read>(
    tar: R,
    dest: &Path,
    opts: &ApplyOptions,
    tar_split: Option<&mut dyn Write>,
) -> Result<LayerStats> {
    let mut applier = Applier::new(dest, opts)?;
    let tar = BudgetReader::new(tar, opts.size_budget.clone());
    let mut stream = Stream::new(tar, STREAM_BUFFER);
    let mut split = tar_split.map(TarSplitWriter::new);
    // Raw (non-content) bytes not yet written as a tar-split segment.
    let mut raw: Vec<u8> = Vec::new();
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();
    let mut entries: u64 = 0;
    let mut pending_padding: u64 = 0;
    let mut pax: Option<Vec<(Vec<u8>, Vec<u8>)>> = None;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut block = [0u8; BLOCK];
    let truncated = || Error::unsafe_archive("the layer stream ends inside a tar header");

    'archive: loop {
        if pending_padding > 0 {
            let pad = pending_padding as usize;
            let got = stream.read_full(&mut block[..pad])?;
            if split.is_some() {
                raw.extend_from_slice(&block[..got]);
            }
            if got == 0 {
                break 'archive; // No padding and no end marker: Go accepts this.
            }
            if got < pad {
                return Err(Error::unsafe_archive(
                    "the layer stream ends inside the padding of an entry",
                ));
            }
        }

        let got = stream.read_full(&mut block)?;
        if split.is_some() {
            raw.extend_from_slice(&block[..got]);
        }
        if got == 0 {
            break 'archive;
        }
        if got < BLOCK {
            return Err(truncated());
        }
        if tarfmt::is_zero_block(&block) {
            let got = stream.read_full(&mut block)?;
            if split.is_some() {
                raw.extend_from_slice(&block[..got]);
            }
            if got == 0 {
                break 'archive;
            }
            if got < BLOCK {
                return Err(truncated());
            }
            if tarfmt::is_zero_block(&block) {
                break 'archive;
            }
            return Err(Error::unsafe_archive(
                "malformed tar: a zero block followed by a header",
            ));
        }

        let header = tarfmt::parse_header(&block).map_err(|why| {
            let name = tarfmt::c_string(&block[..100]).to_vec();
            unsafe_entry(&name, why)
        })?;
        let raw_sink = if split.is_some() {
            Some(&mut raw)
        } else {
            None
        };
        match header.kind {
            tarfmt::TYPE_PAX | tarfmt::TYPE_PAX_GLOBAL => {
                let data = read_special(&mut stream, &header, raw_sink)?;
                pending_padding = tarfmt::padding(header.size as u64);
                let records =
                    tarfmt::parse_pax(&data).map_err(|why| unsafe_entry(&header.name, why))?;
                if header.kind == tarfmt::TYPE_PAX {
                    pax = Some(records);
                    continue;
                }
                // Go's reader returns a global header as an entry of its own (uid/gid 0,
                // no content), and tar-split records it; nothing is written to disk.
                entries += 1;
                if entries > opts.max_entries {
                    return Err(too_many(opts));
                }
                if let Some(w) = split.as_mut() {
                    if !w.note_name(&header.name) {
                        return Err(unsafe_entry(&header.name, "duplicate path in the layer"));
                    }
                    w.segment(&raw)?;
                    raw.clear();
                    w.file(&header.name, 0, None)?;
                }
                if !base_is_whiteout(&header.name) {
                    uids.insert(0);
                    gids.insert(0);
                }
                continue;
            }
            tarfmt::TYPE_GNU_LONGNAME | tarfmt::TYPE_GNU_LONGLINK => {
                let data = read_special(&mut stream, &header, raw_sink)?;
                pending_padding = tarfmt::padding(header.size as u64);
                let value = tarfmt::c_string(&data).to_vec();
                if header.kind == tarfmt::TYPE_GNU_LONGNAME {
                    long_name = Some(value);
                } else {
                    long_link = Some(value);
                }
                continue;
            }
            _ => {}
        }

        let raw_name = header.name.clone();
        let entry =
            merge_entry(header, pax.take(), long_name.take(), long_link.take()).map_err(|why| {
                if why.contains("sparse") {
                    Error::new(
                        Status::Unsupported,
                        format!("layer entry {:?}: {why}", lossy(&raw_name)),
                    )
                } else {
                    unsafe_entry(&raw_name, why)
                }
            })?;
        entries += 1;
        if entries > opts.max_entries {
            return Err(too_many(opts));
        }
        if entry.name.len() > opts.max_path_len {
            return Err(unsafe_entry(
                &entry.name[..opts.max_path_len.min(entry.name.len()).min(200)],
                format!(
                    "name of {} bytes is longer than the limit of {}",
                    entry.name.len(),
                    opts.max_path_len
                ),
            ));
        }
        if entry.link.len() > opts.max_path_len {
            return Err(unsafe_entry(
                &entry.name,
                format!(
                    "link target of {} bytes is longer than the limit of {}",
                    entry.link.len(),
                    opts.max_path_len
                ),
            ));
        }
        if let Some(w) = split.as_mut() {
            if !w.note_name(&entry.name) {
                return Err(unsafe_entry(&entry.name, "duplicate path in the layer"));
            }
            w.segment(&raw)?;
            raw.clear();
        }
        if !base_is_whiteout(&entry.name) {
            uids.insert(entry.uid);
            gids.insert(entry.gid);
        }

        let mut crc = if split.is_some() && entry.data_size > 0 {
            Some(Crc64::new())
        } else {
            None
        };
        apply_entry(&mut applier, &entry, &mut stream, &mut crc)?;
        if let Some(w) = split.as_mut() {
            w.file(&entry.name, entry.data_size, crc.map(|c| c.to_be_bytes()))?;
        }
        pending_padding = tarfmt::padding(entry.data_size);
    }

    // End of the archive: its last raw bytes, then whatever follows the end marker.
    if let Some(w) = split.as_mut() {
        w.segment(&raw)?;
    }
    loop {
        let rest = stream.peek()?;
        if rest.is_empty() {
            break;
        }
        if let Some(w) = split.as_mut() {
            w.segment(rest)?;
        }
        let n = rest.len();
        stream.consume(n);
    }

    applier.finish()?;
    if let Some(w) = split {
        w.finish()
            .map_err(|e| Error::from(e).context("writing the tar-split"))?;
    }
    let diff_size = stream.hasher.len;
    Ok(LayerStats {
        diff_digest: stream.hasher.clone().finish(),
        diff_size,
        uids: uids.into_iter().collect(),
        gids: gids.into_iter().collect(),
        entries,
    })
}

fn too_many(opts: &ApplyOptions) -> Error {
    Error::unsafe_archive(format!("layer has more than {} entries", opts.max_entries))
}

/// Applies one entry (its content, if any, is consumed from the stream here).
fn apply_entry<R: Read>(
    applier: &mut Applier,
    e: &Entry,
    stream: &mut Stream<R>,
    crc: &mut Option<Crc64>,
) -> Result<()> {
    match e.kind {
        tarfmt::TYPE_REG
        | tarfmt::TYPE_DIR
        | tarfmt::TYPE_SYMLINK
        | tarfmt::TYPE_LINK
        | tarfmt::TYPE_CHAR
        | tarfmt::TYPE_BLOCK
        | tarfmt::TYPE_FIFO => {}
        tarfmt::TYPE_GNU_SPARSE => {
            return Err(Error::new(
                Status::Unsupported,
                format!(
                    "layer entry {:?}: GNU sparse files are not supported",
                    lossy(&e.name)
                ),
            ));
        }
        other => {
            return Err(unsafe_entry(
                &e.name,
                format!("unsupported entry type {:?}", other as char),
            ));
        }
    }
    let comps = split_name(&e.name, "name").map_err(|why| unsafe_entry(&e.name, why))?;
    // A file writer only creates paths this layer had not written. A new directory, symlink or
    // node elsewhere cannot meet one; a hard link (to a file maybe still being written) or an
    // entry replacing a written path waits for the writers. (Regular files and whiteouts see
    // to it themselves, as do opaque markers and the layer root.)
    if applier.writers.is_some()
        && e.kind != tarfmt::TYPE_REG
        && (e.kind == tarfmt::TYPE_LINK || applier.was_written(&join(&comps)))
    {
        applier.wait_for_writers()?;
    }

    // What the entry means: AUFS metadata (ignored), a whiteout, or a file-system object.
    if let Some((last, parent)) = comps.split_last() {
        let meta_inside = parent.iter().any(|c| c.starts_with(WHITEOUT_META_PREFIX));
        if *last == WHITEOUT_OPAQUE && !meta_inside {
            copy_content(stream, e.data_size, None, crc, &e.name)?;
            return applier.opaque(e, parent);
        }
        if meta_inside || last.starts_with(WHITEOUT_META_PREFIX) {
            return copy_content(stream, e.data_size, None, crc, &e.name);
        }
        if let Some(hidden) = last.strip_prefix(WHITEOUT_PREFIX) {
            copy_content(stream, e.data_size, None, crc, &e.name)?;
            return applier.whiteout(e, parent, hidden);
        }
    }

    match e.kind {
        tarfmt::TYPE_DIR => applier.directory(e, &comps),
        _ if comps.is_empty() => Err(unsafe_entry(
            &e.name,
            "the layer root can only be a directory",
        )),
        tarfmt::TYPE_REG => applier.regular(e, &comps, stream, crc),
        tarfmt::TYPE_SYMLINK => applier.symlink(e, &comps),
        tarfmt::TYPE_LINK => applier.hardlink(e, &comps),
        _ => applier.node(e, &comps),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_and_refused() {
        assert_eq!(
            split_name(b"./etc/x", "name").unwrap(),
            vec![&b"etc"[..], b"x"]
        );
        assert_eq!(
            split_name(b"etc//x/./", "name").unwrap(),
            vec![&b"etc"[..], b"x"]
        );
        assert!(split_name(b"./", "name").unwrap().is_empty());
        assert!(split_name(b".", "name").unwrap().is_empty());
        assert!(split_name(b"/etc", "name").is_err());
        assert!(split_name(b"a/../b", "name").is_err());
        assert!(split_name(b"..", "name").is_err());
        assert!(split_name(b"", "name").is_err());
    }

    #[test]
    fn whiteout_base_like_go_path_base() {
        assert!(base_is_whiteout(b"a/.wh.b"));
        assert!(base_is_whiteout(b".wh..wh..opq"));
        assert!(base_is_whiteout(b".wh..wh.plnk/"));
        assert!(!base_is_whiteout(b".wh..wh.plnk/123"));
        assert!(!base_is_whiteout(b"a/b"));
        assert!(!base_is_whiteout(b"/"));
    }
}
