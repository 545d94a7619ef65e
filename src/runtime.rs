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

/// What `Operation::next_event` found.
#[derive(Debug, PartialEq)]
pub enum NextEvent<E> {
    Event(E),
    /// Nothing arrived within the timeout; the work goes on.
    Timeout,
    /// The work has ended and every event it sent has been handed out.
    Done,
}

/// Async work running on the library's runtime, observed from a plain thread: its events are
/// pulled with `next_event` (so callbacks, if any, run on the caller's thread) and its result
/// with `finish`. Dropping it cancels the work and waits for it, so nothing of it — staging
/// directories, locks — outlives the handle. Both the blocking calls and `cimage_pull_op`
/// are built on this.
pub struct Operation<T, E> {
    events: std::sync::mpsc::Receiver<E>,
    task: Option<tokio::task::JoinHandle<Result<T>>>,
    cancel: CancelFlag,
    events_done: bool,
}

/// How often a wait for events checks whether the work has ended while it still holds senders.
const EVENT_POLL: Duration = Duration::from_millis(50);

impl<T: Send + 'static, E: Send + 'static> Operation<T, E> {
    /// Starts `work` (given the event sender) on the runtime. `cancel` is the flag the work
    /// watches; `cancel()` and dropping the handle set it.
    pub fn start<F, Fut>(cancel: CancelFlag, work: F) -> Result<Operation<T, E>>
    where
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
        let task = RUNTIME.spawn(work(tx));
        Ok(Operation {
            events: rx,
            task: Some(task),
            cancel,
            events_done: false,
        })
    }

    /// The flag that stops the work; safe to set from any thread.
    pub fn cancel_flag(&self) -> &CancelFlag {
        &self.cancel
    }

    /// The next event, waiting at most `timeout` (None: until there is one or the work ends).
    pub fn next_event(&mut self, timeout: Option<Duration>) -> NextEvent<E> {
        if self.events_done {
            return NextEvent::Done;
        }
        let until = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            let slice = match until {
                Some(u) => u
                    .saturating_duration_since(std::time::Instant::now())
                    .min(EVENT_POLL),
                None => EVENT_POLL,
            };
            match self.events.recv_timeout(slice) {
                Ok(ev) => return NextEvent::Event(ev),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    self.events_done = true;
                    return NextEvent::Done;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let ended = self.task.as_ref().map(|t| t.is_finished()).unwrap_or(true);
                    if ended {
                        // Events sent before the end are still queued; a sender that
                        // outlived the work (it should not) does not keep us waiting.
                        return match self.events.try_recv() {
                            Ok(ev) => NextEvent::Event(ev),
                            Err(_) => {
                                self.events_done = true;
                                NextEvent::Done
                            }
                        };
                    }
                    if until.is_some_and(|u| std::time::Instant::now() >= u) {
                        return NextEvent::Timeout;
                    }
                }
            }
        }
    }

    /// Waits for the work to end and returns its result; events not yet taken are dropped.
    pub fn finish(mut self) -> Result<T> {
        let Some(task) = self.task.take() else {
            return Err(Error::internal("operation already finished"));
        };
        self.events_done = true;
        joined(RUNTIME.block_on(task))
    }
}

impl<T, E> Drop for Operation<T, E> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.cancel.cancel();
            if tokio::runtime::Handle::try_current().is_ok() {
                // Cannot block inside the runtime: the cancel flag stops the work soon.
                return;
            }
            let _ = RUNTIME.block_on(task);
        }
    }
}

fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(Error::new(
            Status::Panic,
            format!("internal panic: {}", panic_message(e.into_panic())),
        )),
        Err(e) => Err(Error::internal(format!("task failed: {e}"))),
    }
}

/// Runs `work` on the runtime and waits for it on the calling thread. Events the work sends are
/// handed to `on_event` on this thread, one at a time; `on_event` returning false cancels.
/// No event is delivered after this function returns. Built on `Operation`, like
/// `cimage_pull_op`.
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
    let mut op = Operation::start(cancel.clone(), work)?;
    loop {
        match op.next_event(None) {
            NextEvent::Event(ev) => {
                if !on_event(&ev) {
                    cancel.cancel();
                }
            }
            NextEvent::Timeout => {}
            NextEvent::Done => break,
        }
    }
    op.finish()
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
    fn an_operation_hands_out_events_then_done_and_its_result() {
        let mut op: Operation<u32, u32> = Operation::start(CancelFlag::new(), |tx| async move {
            for i in 0..3u32 {
                let _ = tx.send(i);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok(42)
        })
        .unwrap();
        let mut seen = Vec::new();
        let mut timeouts = 0;
        loop {
            match op.next_event(Some(Duration::from_millis(20))) {
                NextEvent::Event(e) => seen.push(e),
                NextEvent::Timeout => timeouts += 1,
                NextEvent::Done => break,
            }
        }
        assert_eq!(seen, vec![0, 1, 2]);
        assert!(timeouts >= 1, "the sleep should have produced a timeout");
        assert_eq!(op.next_event(Some(Duration::ZERO)), NextEvent::Done);
        assert_eq!(op.finish().unwrap(), 42);
    }

    #[test]
    fn dropping_an_operation_cancels_and_waits() {
        let cancel = CancelFlag::new();
        let ended = Arc::new(AtomicBool::new(false));
        let e2 = ended.clone();
        let c2 = cancel.clone();
        let op: Operation<(), ()> = Operation::start(cancel.clone(), move |_tx| async move {
            c2.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            e2.store(true, Ordering::SeqCst);
            Err(Error::cancelled())
        })
        .unwrap();
        drop(op);
        assert!(cancel.is_cancelled());
        assert!(
            ended.load(Ordering::SeqCst),
            "drop returned before the work ended"
        );
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
