//! The non-blocking pull: an operation handle that event-loop callers poll for progress events
//! instead of receiving callbacks (c-api-style.md R5). The blocking `cimage_store_pull` runs the
//! very same operation.

use super::image::{cimage_image, image_handle};
use super::pull::{cimage_progress, cimage_pull_options, start_pull, with_reference, OwnedEvent};
use super::store::cimage_store;
use super::{boundary, cimage_error, getter, out_ptr};
use crate::error::{Error, Status};
use crate::pull::Progress;
use crate::runtime::{CancelFlag, NextEvent, Operation};
use crate::store::ImageInfo;
use std::ffi::c_char;
use std::sync::Mutex;
use std::time::Duration;

/// A pull running in the background, started by `cimage_store_pull_start`.
///
/// Threads: one owner calls `_next_event`, `_finish` and `_free`; `cimage_pull_op_cancel` may be
/// called from any thread at any time before `_free`.
pub struct cimage_pull_op {
    /// Separate from the rest so that `_cancel` never touches what the owner is using.
    cancel: CancelFlag,
    state: Mutex<OpState>,
}

struct OpState {
    /// None once finished.
    op: Option<Operation<ImageInfo, Progress>>,
    /// The event handed out by the last `_next_event`, valid until the next call.
    current: Option<Box<OwnedEvent>>,
    reference: String,
}

impl cimage_pull_op {
    fn state(&self) -> crate::Result<std::sync::MutexGuard<'_, OpState>> {
        self.state
            .lock()
            .map_err(|_| Error::internal("pull operation state poisoned by an earlier panic"))
    }
}

unsafe fn op_ref<'a>(op: *const cimage_pull_op) -> crate::Result<&'a cimage_pull_op> {
    // SAFETY: a non-NULL op was made by cimage_store_pull_start and not yet freed (contract).
    unsafe { op.as_ref() }.ok_or_else(|| Error::new(Status::NullArgument, "op is NULL"))
}

/// Starts pulling `reference` into `store` and returns at once. `opts` may be NULL and may be
/// freed as soon as this returns; its cancel token is honoured, its progress callback is not
/// called (events come from `cimage_pull_op_next_event`). On success `*op_out` receives the
/// operation, to end with `cimage_pull_op_free` (after `cimage_pull_op_finish` for the result).
///
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (also when called from inside the library's own
/// runtime). Errors of the pull itself come from `cimage_pull_op_finish`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_pull_start(
    store: *mut cimage_store,
    reference: *const c_char,
    opts: *const cimage_pull_options,
    op_out: *mut *mut cimage_pull_op,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(op_out, "op_out") }?;
        let (op, reference, settings) = start_pull(store, reference, opts)?;
        *out = Box::into_raw(Box::new(cimage_pull_op {
            cancel: settings.cancel.clone(),
            state: Mutex::new(OpState {
                op: Some(op),
                current: None,
                reference,
            }),
        }));
        Ok(())
    })
}

/// Waits up to `timeout_ms` milliseconds (0: just look; negative: as long as it takes) for the
/// next progress event.
///
/// - CIMAGE_STATUS_OK with `*event_out` set: an event, borrowed until the next call on this
///   operation (or its free); events are throttled to a few per second per layer.
/// - CIMAGE_STATUS_OK with `*event_out` NULL: no more events, the pull has ended; call
///   `cimage_pull_op_finish` for its result. Further calls return the same.
/// - CIMAGE_STATUS_TIMEOUT: nothing yet; call again. As with every failure an error object is
///   stored when `err` is not NULL: pass NULL in polling loops to avoid the allocation.
///
/// Errors: NULL_ARGUMENT, TIMEOUT.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_op_next_event(
    op: *mut cimage_pull_op,
    timeout_ms: i32,
    event_out: *mut *const cimage_progress,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        let events = unsafe { event_out.as_mut() }
            .ok_or_else(|| Error::new(Status::NullArgument, "event_out is NULL"))?;
        *events = std::ptr::null();
        let op = unsafe { op_ref(op) }?;
        let mut state = op.state()?;
        state.current = None;
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let Some(operation) = state.op.as_mut() else {
            return Ok(());
        };
        match operation.next_event(timeout) {
            NextEvent::Event(ev) => {
                let owned = OwnedEvent::new(&ev);
                *events = &owned.event;
                state.current = Some(owned);
                Ok(())
            }
            NextEvent::Done => Ok(()),
            NextEvent::Timeout => Err(Error::new(
                Status::Timeout,
                format!("no progress event within {timeout_ms} ms"),
            )),
        }
    })
}

/// Waits for the pull to end and returns its result; events not yet taken are discarded. If
/// `image_out` is not NULL it receives the image (free with `cimage_image_free`). Call it once;
/// the operation must still be freed afterwards.
///
/// Errors: those of `cimage_store_pull` (CANCELLED after `cimage_pull_op_cancel`), plus
/// INVALID_ARGUMENT when called a second time.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_op_finish(
    op: *mut cimage_pull_op,
    image_out: *mut *mut cimage_image,
    err: *mut *mut cimage_error,
) -> Status {
    boundary(err, || {
        if !image_out.is_null() {
            unsafe { *image_out = std::ptr::null_mut() };
        }
        let op = unsafe { op_ref(op) }?;
        let (operation, reference) = {
            let mut state = op.state()?;
            state.current = None;
            let operation = state.op.take().ok_or_else(|| {
                Error::invalid("cimage_pull_op_finish was already called for this operation")
            })?;
            (operation, state.reference.clone())
        };
        let image = operation
            .finish()
            .map_err(|e| with_reference(e, &reference))?;
        if !image_out.is_null() {
            unsafe { *image_out = image_handle(&image) };
        }
        Ok(())
    })
}

/// Asks the pull to stop: it soon ends with CIMAGE_STATUS_CANCELLED, leaving the store as it
/// was. Safe from any thread, any number of times, also after the pull ended. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_op_cancel(op: *const cimage_pull_op) {
    getter((), || {
        if let Ok(op) = unsafe { op_ref(op) } {
            op.cancel.cancel();
        }
    })
}

/// Frees the operation. A pull still running is cancelled and waited for (its clean-up done)
/// before this returns. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_pull_op_free(op: *mut cimage_pull_op) {
    getter((), || unsafe { super::free_box(op) })
}
