//! Lock files compatible with containers/storage (store-format.md §5).
//!
//! containers/storage uses POSIX record locks (fcntl F_SETLKW) on the whole file. We use
//! open-file-description locks (F_OFD_SETLKW): on Linux they conflict with podman's POSIX locks,
//! are not dropped when some other descriptor of the file is closed, and — because every guard
//! opens its own descriptor — they also make threads of this process exclude each other.
//! The 64-byte "last write" token is read and written through the guard's own descriptor.

use crate::error::{Error, Result, ResultExt};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of the token containers/storage writes into a lock file.
pub const TOKEN_LEN: usize = 64;

/// A lock file on disk (not held). Cheap to clone; each `lock_*` call opens its own descriptor.
#[derive(Debug, Clone)]
pub struct LockFile {
    path: PathBuf,
}

/// A held lock. Dropping it closes the descriptor, which releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    exclusive: bool,
    path: PathBuf,
}

impl LockFile {
    pub fn new(path: impl Into<PathBuf>) -> LockFile {
        LockFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the file (and missing parents, 0700) if needed, without locking.
    pub fn ensure_exists(&self) -> Result<()> {
        self.open().map(|_| ())
    }

    fn open(&self) -> Result<File> {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o644)
                .custom_flags(libc::O_CLOEXEC)
                .open(&self.path)
        };
        match open() {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = self.path.parent() {
                    create_dir_all_mode(parent, 0o700)?;
                }
                open().ctx(format!("opening lock file {}", self.path.display()))
            }
            Err(e) => Err(Error::io(
                e,
                format!("opening lock file {}", self.path.display()),
            )),
        }
    }

    pub fn lock_exclusive(&self) -> Result<LockGuard> {
        self.lock(true)
    }

    pub fn lock_shared(&self) -> Result<LockGuard> {
        self.lock(false)
    }

    fn lock(&self, exclusive: bool) -> Result<LockGuard> {
        let file = self.open()?;
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = if exclusive {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        } as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = 0;
        fl.l_len = 0;
        loop {
            // SAFETY: valid descriptor and a properly initialised struct flock.
            let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &fl) };
            if rc == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Error::io(err, format!("locking {}", self.path.display())));
        }
        Ok(LockGuard {
            file,
            exclusive,
            path: self.path.clone(),
        })
    }
}

impl LockGuard {
    /// The token currently in the file (empty for a lock file nobody has written yet).
    pub fn read_token(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; TOKEN_LEN];
        let mut n = 0;
        while n < TOKEN_LEN {
            let r = self
                .file
                .read_at(&mut buf[n..], n as u64)
                .ctx(format!("reading {}", self.path.display()))?;
            if r == 0 {
                break;
            }
            n += r;
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// Writes a fresh token (time, counter, pid, random) in place and returns it.
    pub fn write_token(&self) -> Result<Vec<u8>> {
        debug_assert!(self.exclusive, "token written without an exclusive lock");
        let token = new_token();
        self.file
            .write_all_at(&token, 0)
            .ctx(format!("writing token to {}", self.path.display()))?;
        Ok(token.to_vec())
    }

    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

static TOKEN_COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_token() -> [u8; TOKEN_LEN] {
    let mut t = [0u8; TOKEN_LEN];
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t[0..8].copy_from_slice(&nanos.to_le_bytes());
    let counter = TOKEN_COUNTER.fetch_add(1, Ordering::Relaxed);
    t[8..16].copy_from_slice(&counter.to_le_bytes());
    t[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    // Uniqueness comes from time+counter+pid; random bytes as containers/storage does.
    let _ = getrandom::getrandom(&mut t[20..]);
    t
}

/// mkdir -p with a mode for the directories it creates.
pub fn create_dir_all_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .ctx(format!("creating {}", path.display()))
}

impl LockFile {
    /// Takes the lock exclusively if nobody holds it; None if someone does.
    pub fn try_lock_exclusive(&self) -> Result<Option<LockGuard>> {
        let file = self.open()?;
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: valid descriptor and struct flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if rc == 0 {
            return Ok(Some(LockGuard {
                file,
                exclusive: true,
                path: self.path.clone(),
            }));
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(None),
            _ => Err(Error::io(err, format!("locking {}", self.path.display()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn token_changes_and_has_64_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let lf = LockFile::new(dir.path().join("sub/x.lock"));
        let g = lf.lock_exclusive().unwrap();
        assert!(g.read_token().unwrap().is_empty());
        let t1 = g.write_token().unwrap();
        assert_eq!(g.read_token().unwrap(), t1);
        let t2 = g.write_token().unwrap();
        assert_ne!(t1, t2);
        assert_eq!(std::fs::metadata(lf.path()).unwrap().len(), 64);
    }

    #[test]
    fn exclusive_locks_exclude_threads_and_shared_locks_share() {
        let dir = tempfile::tempdir().unwrap();
        let lf = LockFile::new(dir.path().join("x.lock"));
        let s1 = lf.lock_shared().unwrap();
        let s2 = lf.lock_shared().unwrap(); // two readers at once
        let (tx, rx) = mpsc::channel();
        let lf2 = lf.clone();
        let h = std::thread::spawn(move || {
            let _g = lf2.lock_exclusive().unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "writer got in past readers"
        );
        drop(s1);
        drop(s2);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("writer never got the lock");
        h.join().unwrap();
    }

    #[test]
    fn posix_lock_of_another_process_blocks_us() {
        // flock(1) would not conflict with fcntl locks; python's fcntl.lockf takes a POSIX record
        // lock as podman does. Skip if python3 is absent.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.lock");
        std::fs::write(&path, b"").unwrap();
        let script = format!(
            "import fcntl,sys,time\nf=open('{}','r+')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\ntime.sleep(0.6)\n",
            path.display()
        );
        let mut child = match std::process::Command::new("python3")
            .arg("-c")
            .arg(&script)
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(_) => {
                eprintln!("SKIP: python3 not available for the POSIX-lock interop test");
                return;
            }
        };
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        let start = std::time::Instant::now();
        let _g = LockFile::new(&path).lock_exclusive().unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "OFD lock did not wait for the POSIX lock"
        );
        child.wait().unwrap();
    }
}
