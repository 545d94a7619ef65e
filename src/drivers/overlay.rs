//! The overlay driver, laid out exactly as containers/storage lays it out (store-format.md §1.1,
//! §3.4, §3.5): R/overlay/<id>/{diff,link,lower,work,merged,empty}, short names in R/overlay/l/.

use super::{mountinfo, LayerContent};
use crate::error::{Error, Result, ResultExt, Status};
use crate::store::files::random_bytes;
use crate::store::lock::create_dir_all_mode;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mount data longer than this must not be passed to mount(2) (one page).
const MAX_MOUNT_DATA: usize = 4095;
/// containers/storage 1.43 refuses deeper chains; so do we, for the same stores.
const MAX_LOWERS: usize = 500;

pub struct Overlay {
    home: PathBuf,
    mount_options: Vec<String>,
}

pub(crate) fn create_diff_dir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .ctx(format!("creating {}", path.display()))?;
    // The umask may have cleared bits of `mode`.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .ctx(format!("chmod {}", path.display()))
}

/// 26 characters of base32 (A-Z2-7) from 17 random bytes, like containers/storage's short links.
fn random_link_name() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes = random_bytes::<17>();
    let mut out = String::with_capacity(28);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    out.truncate(26);
    out
}

/// Whether the running kernel has overlayfs (built in, or loadable).
pub fn kernel_supports_overlay() -> bool {
    let has = || {
        std::fs::read_to_string("/proc/filesystems")
            .map(|t| t.lines().any(|l| l.ends_with("\toverlay")))
            .unwrap_or(false)
    };
    if has() {
        return true;
    }
    let _ = std::process::Command::new("modprobe")
        .arg("overlay")
        .stderr(std::process::Stdio::null())
        .status();
    has()
}

impl Overlay {
    pub fn init(graph_root: &Path, mount_options: &[String]) -> Result<Overlay> {
        let home = graph_root.join("overlay");
        create_dir_all_mode(&home, 0o700)?;
        let l = home.join("l");
        if !l.exists() {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&l)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .ctx(format!("creating {}", l.display()))?;
        }
        let marker = home.join(".has-mount-program");
        match std::fs::read_to_string(&marker) {
            Ok(s) if s.trim() == "true" => {
                return Err(Error::new(
                    Status::Unsupported,
                    format!("{} was set up for a mount program (fuse-overlayfs), which cimage does not support", home.display()),
                ))
            }
            Ok(_) => {}
            Err(_) => crate::store::files::write_atomic(&marker, b"false", 0o600, false)?,
        }
        Ok(Overlay {
            home,
            mount_options: mount_options.to_vec(),
        })
    }

    pub fn layer_home(&self, id: &str) -> PathBuf {
        self.home.join(id)
    }
    pub fn diff_dir(&self, id: &str) -> PathBuf {
        self.home.join(id).join("diff")
    }
    pub fn merged_dir(&self, id: &str) -> PathBuf {
        self.home.join(id).join("merged")
    }

    fn read_link_name(&self, id: &str) -> Result<String> {
        let p = self.home.join(id).join("link");
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .ctx(format!("reading {}", p.display()))
    }

    /// The `lower` content of a layer whose parent is `parent` (§3.5): parent's link, then its lowers.
    fn lower_for_child_of(&self, parent: &str) -> Result<String> {
        let mut lower = format!("l/{}", self.read_link_name(parent)?);
        match std::fs::read_to_string(self.home.join(parent).join("lower")) {
            Ok(s) if !s.trim().is_empty() => {
                lower.push(':');
                lower.push_str(s.trim());
            }
            _ => {}
        }
        Ok(lower)
    }

    pub fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        content: LayerContent<'_>,
    ) -> Result<()> {
        let dir = self.layer_home(id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .ctx(format!("creating {}", dir.display()))?;
        let result = (|| -> Result<()> {
            let lower = parent.map(|p| self.lower_for_child_of(p)).transpose()?;
            match content {
                LayerContent::Staged(staged) => std::fs::rename(staged, dir.join("diff")).ctx(
                    format!("moving {} into {}", staged.display(), dir.display()),
                )?,
                LayerContent::Empty => {
                    // The root of a new diff takes its parent's mode (0555 for a base layer).
                    let mode = parent
                        .and_then(|p| std::fs::metadata(self.diff_dir(p)).ok())
                        .map(|m| m.permissions().mode() & 0o7777)
                        .unwrap_or(0o555);
                    create_diff_dir(&dir.join("diff"), mode)?;
                }
            }
            let name = random_link_name();
            crate::store::files::write_atomic(&dir.join("link"), name.as_bytes(), 0o644, false)?;
            symlink(format!("../{id}/diff"), self.home.join("l").join(&name))
                .ctx("creating the layer's short link")?;
            match lower {
                Some(lower) => crate::store::files::write_atomic(
                    &dir.join("lower"),
                    lower.as_bytes(),
                    0o644,
                    false,
                )?,
                None => std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(dir.join("empty"))
                    .ctx("creating empty dir")?,
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir.join("work"))
                .ctx("creating work dir")?;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir.join("merged"))
                .ctx("creating merged dir")?;
            Ok(())
        })();
        if result.is_err() {
            let _ = self.remove_layer(id);
        }
        result
    }

    /// `link`, and `lower` when the layer has a parent: the files of `create_layer` with
    /// content (its directories are metadata, which the journal keeps in order).
    pub fn empty_layer_files(&self, id: &str) -> Vec<PathBuf> {
        let dir = self.layer_home(id);
        let lower = dir.join("lower");
        let mut files = vec![dir.join("link")];
        if lower.exists() {
            files.push(lower);
        }
        files
    }

    pub fn remove_layer(&self, id: &str) -> Result<()> {
        let dir = self.layer_home(id);
        if mountinfo::is_mount_point(&self.merged_dir(id)) {
            let _ = nix::mount::umount2(&self.merged_dir(id), nix::mount::MntFlags::MNT_DETACH);
        }
        match self.read_link_name(id) {
            Ok(name) if !name.is_empty() && !name.contains('/') => {
                let _ = std::fs::remove_file(self.home.join("l").join(name));
            }
            // containers/storage creates the short link before it writes `link`: a writer killed
            // in between leaves a link that only its target names.
            _ => self.remove_links_to(id),
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(_) => crate::unpack::remove_tree(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(e, format!("removing {}", dir.display()))),
        }
    }

    /// Removes the short links in l/ that point at `id`'s diff (a scan of l/, for the rare layer
    /// whose `link` file is missing).
    fn remove_links_to(&self, id: &str) {
        let links = self.home.join("l");
        let target = format!("../{id}/diff");
        for (name, _) in list_short_links(&links)
            .into_iter()
            .filter(|(_, t)| *t == target)
        {
            let _ = std::fs::remove_file(links.join(name));
        }
    }

    /// Bind-mounts the driver home onto itself and makes it private (§7), once.
    fn ensure_private_home(&self) -> Result<()> {
        use nix::mount::{mount, MsFlags};
        if !mountinfo::is_mount_point(&self.home) {
            mount(
                Some(&self.home),
                &self.home,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| mount_error(e, "bind-mounting the overlay home", &self.home))?;
        }
        mount(
            None::<&str>,
            &self.home,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| mount_error(e, "making the overlay home private", &self.home))
    }

    pub fn mount(&self, id: &str, options: &[String]) -> Result<PathBuf> {
        self.ensure_private_home()?;
        let layer = self.layer_home(id);
        let lower_file = std::fs::read_to_string(layer.join("lower")).unwrap_or_default();
        let mut lowers: Vec<PathBuf> = lower_file
            .trim()
            .split(':')
            .filter(|s| !s.is_empty())
            .map(|s| self.home.join(s))
            .collect();
        if lowers.len() > MAX_LOWERS {
            return Err(Error::new(
                Status::Unsupported,
                format!(
                    "layer {id} has {} lower layers; overlay allows at most {MAX_LOWERS}",
                    lowers.len()
                ),
            ));
        }
        if lowers.is_empty() {
            lowers.push(layer.join("empty"));
        }
        let merged = self.merged_dir(id);
        if !merged.exists() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&merged)
                .ctx(format!("creating {}", merged.display()))?;
        }
        let options: Vec<String> = if options.is_empty() {
            self.mount_options.clone()
        } else {
            options.to_vec()
        };
        let (flags, extra) = split_mount_options(&options);
        let upper = layer.join("diff");
        let work = layer.join("work");
        // A work dir left from a volatile mount would be refused by the kernel (§3.5 rule 6).
        let _ = std::fs::remove_dir_all(work.join("work/incompat/volatile"));
        let lowerdir = lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut data = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        for o in &extra {
            data.push(',');
            data.push_str(o);
        }
        if data.len() <= MAX_MOUNT_DATA {
            nix::mount::mount(
                Some("overlay"),
                &merged,
                Some("overlay"),
                flags,
                Some(data.as_str()),
            )
            .map_err(|e| mount_error(e, "mounting overlay", &merged))?;
        } else {
            new_api::mount_overlay(&lowers, &upper, &work, &extra, flags, &merged)?;
        }
        Ok(merged)
    }

    pub fn unmount(&self, id: &str) -> Result<()> {
        let merged = self.merged_dir(id);
        if mountinfo::is_mount_point(&merged) {
            nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| mount_error(e, "unmounting", &merged))?;
        }
        Ok(())
    }

    pub fn status(&self) -> Vec<(String, String)> {
        vec![
            (
                "Backing Filesystem".into(),
                backing_fs_name(self.home.parent().unwrap_or(&self.home)),
            ),
            ("Supports d_type".into(), "true".into()),
            ("Native Overlay Diff".into(), "true".into()),
            ("Using metacopy".into(), "false".into()),
        ]
    }

    pub fn layer_dirs_on_disk(&self) -> Result<Vec<String>> {
        super::hex_dirs(&self.home)
    }
}

fn mount_error(e: nix::Error, what: &str, path: &Path) -> Error {
    let mut err = Error::from(e).context(format!("{what} at {}", path.display()));
    if e == nix::Error::EPERM && !nix::unistd::geteuid().is_root() {
        err = Error::new(
            Status::PermissionDenied,
            format!("{}: overlay mounts need root (CAP_SYS_ADMIN)", err.message),
        );
    }
    err.with_subject(path.display().to_string())
}

/// Splits mount options into mount(2) flags and filesystem data, as containers/storage does.
fn split_mount_options(options: &[String]) -> (nix::mount::MsFlags, Vec<String>) {
    use nix::mount::MsFlags;
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "nodev" => flags |= MsFlags::MS_NODEV,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dev" | "suid" | "exec" | "rw" | "defaults" | "" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, data)
}

/// The short links in `links` (an overlay home's l/) and their targets, sorted by name; an
/// entry that is not a link has an empty target.
pub fn list_short_links(links: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(links) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let target = std::fs::read_link(e.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, target));
        }
    }
    out.sort();
    out
}

/// Name of the file system type a path is on, as containers/storage reports it.
pub fn backing_fs_name(path: &Path) -> String {
    let magic = match nix::sys::statfs::statfs(path) {
        // i64 on 64-bit Linux, another width elsewhere.
        #[allow(clippy::unnecessary_cast)]
        Ok(s) => s.filesystem_type().0 as i64,
        Err(_) => return "<unknown>".into(),
    };
    match magic {
        0xEF53 => "extfs",
        0x0102_1994 => "tmpfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuseblk",
        _ => return format!("0x{magic:x}"),
    }
    .into()
}

/// The new mount API (fsopen/fsconfig/fsmount/move_mount), used when the lower list does not fit
/// in one page of mount(2) data: each lower is passed on its own with "lowerdir+" (Linux ≥ 6.8).
mod new_api {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

    fn check(rc: libc::c_long, what: &str) -> Result<libc::c_long> {
        if rc < 0 {
            Err(Error::from(std::io::Error::last_os_error()).context(what.to_string()))
        } else {
            Ok(rc)
        }
    }

    fn set(fs: &OwnedFd, key: &str, value: &str) -> Result<()> {
        let k = CString::new(key).map_err(|_| Error::invalid("NUL in mount option"))?;
        let v = CString::new(value).map_err(|_| Error::invalid("NUL in mount option"))?;
        // SAFETY: valid fd and NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        check(rc, &format!("fsconfig {key}={value}")).map(|_| ())
    }

    pub fn mount_overlay(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        extra: &[String],
        flags: nix::mount::MsFlags,
        target: &Path,
    ) -> Result<()> {
        let name = CString::new("overlay").unwrap();
        // SAFETY: plain syscalls with valid arguments; returned fds are owned immediately.
        let fs = unsafe {
            OwnedFd::from_raw_fd(check(
                libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC),
                "fsopen overlay",
            )? as i32)
        };
        for l in lowers {
            set(&fs, "lowerdir+", &l.display().to_string()).map_err(|e| {
                if e.os_errno == libc::EINVAL {
                    Error::new(Status::Unsupported, format!("{}: this kernel cannot take {} lower layers (needs Linux 6.8 for lowerdir+)", e.message, lowers.len()))
                } else {
                    e
                }
            })?;
        }
        set(&fs, "upperdir", &upper.display().to_string())?;
        set(&fs, "workdir", &work.display().to_string())?;
        for o in extra {
            match o.split_once('=') {
                Some((k, v)) => set(&fs, k, v)?,
                None => {
                    let k = CString::new(o.as_str())
                        .map_err(|_| Error::invalid("NUL in mount option"))?;
                    let rc = unsafe {
                        libc::syscall(
                            libc::SYS_fsconfig,
                            fs.as_raw_fd(),
                            0 as libc::c_uint,
                            k.as_ptr(),
                            std::ptr::null::<libc::c_char>(),
                            0,
                        )
                    };
                    check(rc, &format!("fsconfig {o}"))?;
                }
            }
        }
        check(
            unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs.as_raw_fd(),
                    FSCONFIG_CMD_CREATE,
                    0usize,
                    0usize,
                    0,
                )
            },
            "creating the overlay superblock",
        )?;
        let mut attr: libc::c_uint = 0;
        if flags.contains(nix::mount::MsFlags::MS_NODEV) {
            attr |= 0x04;
        }
        if flags.contains(nix::mount::MsFlags::MS_NOSUID) {
            attr |= 0x02;
        }
        if flags.contains(nix::mount::MsFlags::MS_NOEXEC) {
            attr |= 0x08;
        }
        if flags.contains(nix::mount::MsFlags::MS_RDONLY) {
            attr |= 0x01;
        }
        let mnt = unsafe {
            OwnedFd::from_raw_fd(check(
                libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attr),
                "fsmount",
            )? as i32)
        };
        let empty = CString::new("").unwrap();
        let tgt = CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::invalid("NUL in path"))?;
        check(
            unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    mnt.as_raw_fd(),
                    empty.as_ptr(),
                    libc::AT_FDCWD,
                    tgt.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                )
            },
            "move_mount",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_26_base32_chars() {
        let n = random_link_name();
        assert_eq!(n.len(), 26);
        assert!(n
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(n, random_link_name());
    }

    #[test]
    fn mount_options_split_into_flags_and_data() {
        let (flags, data) = split_mount_options(&["nodev".into(), "metacopy=on".into()]);
        assert!(flags.contains(nix::mount::MsFlags::MS_NODEV));
        assert_eq!(data, vec!["metacopy=on".to_string()]);
    }

    #[test]
    fn lower_chain_is_nearest_first() {
        let dir = tempfile::tempdir().unwrap();
        let o = Overlay::init(dir.path(), &[]).unwrap();
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        o.create_layer(&a, None, LayerContent::Empty).unwrap();
        o.create_layer(&b, Some(&a), LayerContent::Empty).unwrap();
        o.create_layer(&c, Some(&b), LayerContent::Empty).unwrap();
        let la = o.read_link_name(&a).unwrap();
        let lb = o.read_link_name(&b).unwrap();
        assert_eq!(
            std::fs::read_to_string(o.layer_home(&c).join("lower")).unwrap(),
            format!("l/{lb}:l/{la}")
        );
        assert!(o.layer_home(&a).join("empty").is_dir());
        assert_eq!(
            std::fs::read_link(o.home.join("l").join(&la)).unwrap(),
            PathBuf::from(format!("../{a}/diff"))
        );
        o.remove_layer(&c).unwrap();
        assert!(!o.layer_home(&c).exists());
        assert_eq!(std::fs::read_dir(o.home.join("l")).unwrap().count(), 2);
    }

    /// containers/storage writes the short link before the `link` file; a layer it left between
    /// the two still loses its link on removal, and no other layer's.
    #[test]
    fn removal_finds_the_short_link_without_a_link_file() {
        let dir = tempfile::tempdir().unwrap();
        let o = Overlay::init(dir.path(), &[]).unwrap();
        let (kept, torn) = ("a".repeat(64), "b".repeat(64));
        o.create_layer(&kept, None, LayerContent::Empty).unwrap();
        std::fs::create_dir_all(o.diff_dir(&torn)).unwrap();
        symlink(format!("../{torn}/diff"), o.home.join("l").join("TORNLINK")).unwrap();
        o.remove_layer(&torn).unwrap();
        assert!(!o.layer_home(&torn).exists());
        let left: Vec<_> = std::fs::read_dir(o.home.join("l"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from(o.read_link_name(&kept).unwrap())]
        );
    }
}
