//! The library's one tokio runtime, and the bridge that runs async work for a blocking C call:
//! the work runs as a task, its progress events come back over a channel, and the calling
//! thread — outside the runtime — runs the caller's callbacks itself (c-api-style.md R5).

use crate::error::{Error, Result, Status};
use once_cell::sync::Lazy;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

static RUNTIME: Lazy<tokio::runtime::Runtime> = Lazy::new(|| {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .max_blocking_threads(64)
        .thread_name("cimage-rt")
        .enable_all()
        .build()
        .expect("cannot start the cimage runtime threads")
});

pub fn runtime() -> &'static tokio::runtime::Runtime {
    &RUNTIME
}

/// A cancellation flag that any thread may set; long work polls it. A child flag is also
/// cancelled by its parent (a pull's internal abort on failure is a child of the caller's cancel).
#[derive(Clone, Default, Debug)]
pub struct CancelFlag(Arc<CancelInner>);

#[derive(Default, Debug)]
pub struct CancelInner {
    flag: AtomicBool,
    parent: Option<CancelFlag>,
}

impl CancelFlag {
    pub fn new() -> CancelFlag {
        CancelFlag::default()
    }
    pub fn child(&self) -> CancelFlag {
        CancelFlag(Arc::new(CancelInner {
            flag: AtomicBool::new(false),
            parent: Some(self.clone()),
        }))
    }
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
            || self
                .0
                .parent
                .as_ref()
                .map(|p| p.is_cancelled())
                .unwrap_or(false)
    }
    /// Err(CANCELLED) once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::cancelled())
        } else {
            Ok(())
        }
    }
    /// Resolves when cancelled (polled every 20 ms; cheap and needs no waker plumbing).
    pub async fn cancelled(&self) {
        while !self.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs `work` on the runtime and waits for it on the calling thread. Events the work sends are
/// handed to `on_event` on this thread, one at a time; `on_event` returning false cancels.
/// No event is delivered after this function returns.
pub fn run_blocking<T, E, F, Fut>(
    cancel: &CancelFlag,
    work: F,
    mut on_event: impl FnMut(&E) -> bool,
) -> Result<T>
where
    T: Send + 'static,
    E: Send + 'static,
    F: FnOnce(std::sync::mpsc::Sender<E>) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::new(
            Status::InvalidArgument,
            "a blocking cimage call was made from inside an async runtime; call it from a plain thread",
        ));
    }
    let (tx, rx) = std::sync::mpsc::channel::<E>();
    let fut = work(tx);
    let handle = RUNTIME.spawn(fut);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(ev) => {
                if !on_event(&ev) {
                    cancel.cancel();
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if handle.is_finished() {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let result = RUNTIME.block_on(handle);
    // Deliver what was sent before the work ended.
    while let Ok(ev) = rx.try_recv() {
        if !on_event(&ev) {
            cancel.cancel();
        }
    }
    match result {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(Error::new(
            Status::Panic,
            format!("internal panic: {}", panic_message(e.into_panic())),
        )),
        Err(e) => Err(Error::internal(format!("task failed: {e}"))),
    }
}

/// The text of a caught panic.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_arrive_on_the_calling_thread_and_false_cancels() {
        let cancel = CancelFlag::new();
        let me = std::thread::current().id();
        let c2 = cancel.clone();
        let mut seen = 0;
        let r: Result<u32> = run_blocking(
            &cancel,
            move |tx| async move {
                for i in 0..100u32 {
                    c2.check()?;
                    let _ = tx.send(i);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok(7)
            },
            |_ev: &u32| {
                assert_eq!(std::thread::current().id(), me);
                seen += 1;
                seen < 3
            },
        );
        assert_eq!(r.unwrap_err().status, Status::Cancelled);
        assert!(seen >= 3);
    }

    #[test]
    fn a_panicking_task_becomes_a_panic_status() {
        let r: Result<()> = run_blocking(
            &CancelFlag::new(),
            |_tx: std::sync::mpsc::Sender<()>| async { panic!("boom") },
            |_| true,
        );
        let e = r.unwrap_err();
        assert_eq!(e.status, Status::Panic);
        assert!(e.message.contains("boom"));
    }
}
