//! Content writes of regular files on worker threads (issue 5: the tar stream is read in
//! order, the writes of regular files need not be).
//!
//! The stream loop still creates every file itself (openat with O_EXCL|O_NOFOLLOW under the
//! confined parent), so names appear in tar order and every later entry sees them. What moves
//! to a worker is the rest of a small file's life: its content, owner, xattrs, mode and times,
//! through the descriptor the loop opened. Nothing else in a layer touches a file's inode
//! except a hard link to it (whose header metadata applies to the shared inode), so the loop
//! waits for every pending write before a hard link and before finishing the layer. Entries
//! that replace or remove the name (a later file, directory or whiteout) unlink it: the worker
//! then completes an unlinked inode, which changes nothing visible.
//!
//! Errors keep the entry's name and status (a full disk is NO_SPACE). The first error of a
//! worker is reported in place of whatever the loop met afterwards: it belongs to an earlier
//! entry, as a sequential extraction would have reported it.

use super::fsops::{self, errno};
use crate::error::{Error, Result};
use std::ffi::CString;
use std::fmt::Display;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};

/// Larger files are written by the stream loop itself, as they arrive: the queue holds whole
/// contents.
pub(super) const MAX_QUEUED_FILE: u64 = 128 << 10;
/// Jobs go to the workers in batches (one wake-up per batch, not per file) of at most this
/// many files or bytes; at most QUEUE_LEN batches wait. Each job holds an open descriptor:
/// (QUEUE_LEN + workers + 1) × BATCH_FILES descriptors and as many × BATCH_BYTES at most.
const BATCH_FILES: usize = 32;
const BATCH_BYTES: usize = 512 << 10;
const QUEUE_LEN: usize = 2;

/// What a regular file gets once its content is written.
pub(super) struct FileMeta {
    pub name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub times: [libc::timespec; 2],
    pub xattrs: Vec<(CString, Vec<u8>)>,
    /// Owner the file has now (ours, and the directory's group when setgid).
    pub owner_now: (u32, u32),
}

fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

pub(super) fn io_entry(name: &[u8], what: impl Display, err: std::io::Error) -> Error {
    Error::from(err).context(format!("layer entry {:?}: {what}", lossy(name)))
}

/// Owner, xattrs, mode (after chown, which clears setuid bits and capabilities), times.
pub(super) fn finish_file(fd: RawFd, m: &FileMeta) -> Result<()> {
    if m.owner_now != (m.uid, m.gid) {
        fsops::fchown(fd, m.uid, m.gid)
            .map_err(|err| io_entry(&m.name, "setting the owner", err))?;
    }
    for (xname, value) in &m.xattrs {
        match fsops::fsetxattr(fd, xname, value) {
            Err(err) if errno(&err) != libc::ENOTSUP => {
                return Err(io_entry(&m.name, format!("setting xattr {xname:?}"), err));
            }
            _ => {}
        }
    }
    fsops::fchmod(fd, m.mode).map_err(|err| io_entry(&m.name, "setting the mode", err))?;
    fsops::futimens(fd, &m.times).map_err(|err| io_entry(&m.name, "setting times", err))
}

struct Job {
    file: File,
    data: Vec<u8>,
    meta: FileMeta,
}

fn run(job: Job) -> Result<()> {
    let Job {
        mut file,
        data,
        meta,
    } = job;
    file.write_all(&data)
        .map_err(|err| io_entry(&meta.name, "writing the file", err))?;
    finish_file(file.as_raw_fd(), &meta)
    // The descriptor closes here.
}

#[derive(Default)]
struct Progress {
    pending: usize,
    first_error: Option<Error>,
}

/// The workers of one layer. Without workers (one CPU) every job runs in the caller.
pub(super) struct FileWriters {
    jobs: Option<SyncSender<Vec<Job>>>,
    state: Arc<(Mutex<Progress>, Condvar)>,
    /// Jobs not yet sent, and their bytes.
    batch: std::cell::RefCell<(Vec<Job>, usize)>,
}

impl FileWriters {
    /// Starts `workers` threads in `scope` (none: jobs run inline). They end when this is
    /// dropped (after the queued jobs), and the scope joins them.
    pub fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        workers: usize,
    ) -> FileWriters {
        let state = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        if workers == 0 {
            return FileWriters::inline(state);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Job>>(QUEUE_LEN);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers {
            let (worker_rx, worker_state) = (rx.clone(), state.clone());
            let spawned = std::thread::Builder::new()
                .name("cimage-write".into())
                .spawn_scoped(scope, move || worker(&worker_rx, &worker_state));
            if spawned.is_err() {
                // No thread: the jobs run inline, which is as correct.
                return FileWriters::inline(state);
            }
        }
        FileWriters {
            jobs: Some(tx),
            state,
            batch: Default::default(),
        }
    }

    fn inline(state: Arc<(Mutex<Progress>, Condvar)>) -> FileWriters {
        FileWriters {
            jobs: None,
            state,
            batch: Default::default(),
        }
    }

    pub fn is_parallel(&self) -> bool {
        self.jobs.is_some()
    }

    /// Queues the content write and completion of a file just created (waits while the queue
    /// is full). Reports an error a worker already met.
    pub fn submit(&self, file: File, data: Vec<u8>, meta: FileMeta) -> Result<()> {
        let job = Job { file, data, meta };
        if self.jobs.is_none() {
            return run(job);
        }
        let full = {
            let mut batch = self.batch.borrow_mut();
            batch.1 += job.data.len();
            batch.0.push(job);
            batch.0.len() >= BATCH_FILES || batch.1 >= BATCH_BYTES
        };
        if full {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&self) -> Result<()> {
        let jobs = std::mem::take(&mut *self.batch.borrow_mut()).0;
        let Some(tx) = &self.jobs else {
            return jobs.into_iter().try_for_each(run);
        };
        if jobs.is_empty() {
            return Ok(());
        }
        {
            let mut p = self.lock();
            if let Some(e) = &p.first_error {
                return Err(e.clone());
            }
            p.pending += 1;
        }
        if let Err(std::sync::mpsc::SendError(jobs)) = tx.send(jobs) {
            // Workers gone (they only stop when this is dropped): do it here.
            self.lock().pending -= 1;
            return jobs.into_iter().try_for_each(run);
        }
        Ok(())
    }

    /// Waits until every queued write is complete; the first error of a worker, if any.
    pub fn wait_idle(&self) -> Result<()> {
        self.send_batch()?;
        let (lock, cv) = &*self.state;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        while p.pending > 0 {
            p = cv.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        match &p.first_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn worker(rx: &Mutex<Receiver<Vec<Job>>>, state: &(Mutex<Progress>, Condvar)) {
    loop {
        let jobs = {
            let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
            match rx.recv() {
                Ok(jobs) => jobs,
                Err(_) => return, // the sender is gone: the layer is done
            }
        };
        let failed = state
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_error
            .is_some();
        // After a failure the layer is abandoned: remaining jobs only close their descriptors.
        let result = if failed {
            Ok(())
        } else {
            jobs.into_iter().try_for_each(run)
        };
        let (lock, cv) = state;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = result {
            p.first_error.get_or_insert(e);
        }
        p.pending -= 1;
        if p.pending == 0 {
            cv.notify_all();
        }
    }
}

/// Workers for a layer: the CPUs beyond the two a pull already keeps busy (decompression and
/// the stream loop) are not needed, since the workers mostly wait in the kernel; one when the
/// machine has two or more CPUs.
pub(super) fn default_workers() -> usize {
    match std::thread::available_parallelism().map(|n| n.get()) {
        Ok(n) if n >= 2 => 1,
        _ => 0,
    }
}
