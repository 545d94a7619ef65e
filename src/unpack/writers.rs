//! Worker threads that create a layer's small regular files while the stream loop reads on.
//!
//! Creating a file (openat, write, owner, times, close) is most of a small-files layer's
//! work, nearly all of it in the kernel, and the files of a tar need not be created in stream
//! order. The stream loop decides what may run out of order (apply.rs): it hands over only new
//! files in a directory it has resolved, and calls `wait_all` before anything that could see
//! or touch a file still being created.

use crate::error::{Error, Result};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

/// One file to create; it returns the entry's error, if any.
pub(super) type Job = Box<dyn FnOnce() -> Result<()> + Send>;

/// Jobs queued per worker before `submit` blocks (at most 64 KiB of content each).
const QUEUE: usize = 64;

/// Jobs ever submitted in this process, so that a test can tell files went to the writers.
#[cfg(test)]
pub(super) static SUBMITTED: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

pub(super) struct FileWriters {
    queues: Vec<SyncSender<Job>>,
    results: Receiver<Result<()>>,
    workers: Vec<JoinHandle<()>>,
    next: usize,
    in_flight: usize,
}

impl FileWriters {
    /// Starts `count` workers; None when no thread could be started (the caller then creates
    /// its files itself). Workers inherit the calling thread's credentials.
    pub fn start(count: usize) -> Option<FileWriters> {
        let (result_tx, results) = channel();
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for i in 0..count {
            let (tx, rx) = sync_channel::<Job>(QUEUE);
            let done: Sender<Result<()>> = result_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("cimage-writer-{i}"))
                .spawn(move || {
                    for job in rx {
                        if done.send(job()).is_err() {
                            break;
                        }
                    }
                });
            if let Ok(handle) = spawned {
                queues.push(tx);
                workers.push(handle);
            }
        }
        if workers.is_empty() {
            return None;
        }
        Some(FileWriters {
            queues,
            results,
            workers,
            next: 0,
            in_flight: 0,
        })
    }

    /// Queues a job (round robin); first reports the error of any job already finished.
    pub fn submit(&mut self, job: Job) -> Result<()> {
        while let Ok(result) = self.results.try_recv() {
            self.in_flight -= 1;
            result?;
        }
        let queue = &self.queues[self.next % self.queues.len()];
        self.next = self.next.wrapping_add(1);
        queue
            .send(job)
            .map_err(|_| Error::internal("a file-writer thread ended early"))?;
        self.in_flight += 1;
        #[cfg(test)]
        SUBMITTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Waits until every queued job has finished; the first error among them, if any.
    pub fn wait_all(&mut self) -> Result<()> {
        let mut first = Ok(());
        while self.in_flight > 0 {
            let result = self
                .results
                .recv()
                .map_err(|_| Error::internal("a file-writer thread ended early"));
            self.in_flight -= 1;
            if first.is_ok() {
                first = result.and_then(|r| r);
            }
        }
        first
    }
}

impl Drop for FileWriters {
    /// Lets the queued jobs finish (so that nothing writes into the layer directory after the
    /// caller got its result back and maybe removed it), then joins the workers.
    fn drop(&mut self) {
        self.queues.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn every_queued_job_runs_before_wait_all_returns_and_an_error_is_reported_once() {
        let mut writers = FileWriters::start(2).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let (mut queued, mut errors) = (0, 0);
        for i in 0..500 {
            let ran = ran.clone();
            let job: Job = Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
                if i == 250 {
                    Err(Error::new(Status::Io, "job 250 failed"))
                } else {
                    Ok(())
                }
            });
            // An error already finished comes back from submit, which then queues nothing.
            match writers.submit(job) {
                Ok(()) => queued += 1,
                Err(e) => {
                    assert!(e.message.contains("job 250"), "{}", e.message);
                    errors += 1;
                }
            }
        }
        if let Err(e) = writers.wait_all() {
            assert!(e.message.contains("job 250"), "{}", e.message);
            errors += 1;
        }
        assert_eq!(errors, 1);
        assert_eq!(ran.load(Ordering::SeqCst), queued);
        assert_eq!(writers.in_flight, 0);
        writers.submit(Box::new(|| Ok(()))).unwrap();
        writers.wait_all().unwrap();
    }

    #[test]
    fn wait_all_reports_a_failure() {
        let mut writers = FileWriters::start(2).unwrap();
        writers
            .submit(Box::new(|| Err(Error::new(Status::Io, "disk full"))))
            .unwrap();
        let err = writers.wait_all().unwrap_err();
        assert!(err.message.contains("disk full"));
    }
}
