//! Store consistency check and repair, and the report they return.

use super::store::cimage_store;
use super::{boundary, cimage_error, cstring, getter, handle, out_ptr};
use crate::error::{Error, Status};
use crate::store::check::{CheckOptions, CheckReport, Finding};
use std::ffi::{c_char, CString};
use std::time::Duration;

/// Check flag: do not rebuild and hash the layers' contents (fast: records, directories and links
/// only). By default every layer's tar is rebuilt from its tar-split and files and compared with
/// its diff digest, which reads all layer data, and the layer's files are compared with the tar's
/// headers (files added, removed, or with another type, mode, owner, size or time), as
/// `podman system check` does without --quick.
pub const CIMAGE_CHECK_NO_CONTENT: u32 = 1;
/// Check flag: every layer that no image or container uses is an error (repair removes it). By
/// default only those older than 24 hours are, as in containers/storage; younger ones are
/// warnings (a pull may be about to use them, or an interrupted one left them).
pub const CIMAGE_CHECK_UNREFERENCED_ANY_AGE: u32 = 2;
/// Repair flag: containers whose image or layers are damaged or missing may be deleted. By
/// default they are kept, together with their image and layers, and stay reported.
pub const CIMAGE_CHECK_REMOVE_CONTAINERS: u32 = 4;

const KNOWN_FLAGS: u32 =
    CIMAGE_CHECK_NO_CONTENT | CIMAGE_CHECK_UNREFERENCED_ANY_AGE | CIMAGE_CHECK_REMOVE_CONTAINERS;

/// Report list: problems (the store is clean when it is empty).
pub const CIMAGE_CHECK_ERRORS: i32 = 0;
/// Report list: remarks that do not make the store unclean (young unreferenced layers, mounts
/// nobody counts).
pub const CIMAGE_CHECK_WARNINGS: i32 = 1;
/// Report list: what a repair did (empty after a check).
pub const CIMAGE_CHECK_REPAIRED: i32 = 2;

struct CFinding {
    kind: CString,
    id: CString,
    message: CString,
}

impl From<&Finding> for CFinding {
    fn from(f: &Finding) -> Self {
        CFinding {
            kind: cstring(f.kind),
            id: cstring(f.id.clone()),
            message: cstring(f.message.clone()),
        }
    }
}

/// The result of `cimage_store_check` or `cimage_store_repair` (immutable; safe on any thread).
/// Freed with `cimage_check_report_free`.
pub struct cimage_check_report {
    clean: bool,
    lists: [Vec<CFinding>; 3],
    json: CString,
}

impl From<&CheckReport> for cimage_check_report {
    fn from(r: &CheckReport) -> Self {
        let convert = |v: &[Finding]| v.iter().map(CFinding::from).collect();
        cimage_check_report {
            clean: r.clean,
            lists: [
                convert(&r.errors),
                convert(&r.warnings),
                convert(&r.repaired),
            ],
            json: cstring(r.to_json()),
        }
    }
}

fn options(flags: u32) -> crate::Result<CheckOptions> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::invalid(format!(
            "unknown check flags 0x{:x}",
            flags & !KNOWN_FLAGS
        )));
    }
    let mut o = CheckOptions {
        content: flags & CIMAGE_CHECK_NO_CONTENT == 0,
        remove_containers: flags & CIMAGE_CHECK_REMOVE_CONTAINERS != 0,
        ..CheckOptions::default()
    };
    if flags & CIMAGE_CHECK_UNREFERENCED_ANY_AGE != 0 {
        o.unreferenced_max_age = Duration::ZERO;
    }
    Ok(o)
}

unsafe fn run(
    store: *mut cimage_store,
    flags: u32,
    report_out: *mut *mut cimage_check_report,
    err: *mut *mut cimage_error,
    repair: bool,
) -> Status {
    boundary(err, || {
        let out = unsafe { out_ptr(report_out, "report_out") }?;
        let store = unsafe { handle(store, "store") }?;
        let opts = options(flags)?;
        let report = if repair {
            store.store.repair(&opts)?
        } else {
            store.store.check(&opts)?
        };
        *out = Box::into_raw(Box::new(cimage_check_report::from(&report)));
        Ok(())
    })
}

/// Checks the store's consistency, as `podman system check` does: layer records against layer
/// directories, overlay short links and `lower` files, tar-split files, layer contents against
/// their diff digests (unless CIMAGE_CHECK_NO_CONTENT), images' and containers' references, mount
/// counts, unreferenced layers. Changes nothing. `flags`: CIMAGE_CHECK_* bits, 0 for the defaults.
/// `*report_out` receives a report to free with `cimage_check_report_free`; the call succeeds
/// whether or not the store is clean (see `cimage_check_report_is_clean`).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown flags), IO.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_check(
    store: *mut cimage_store,
    flags: u32,
    report_out: *mut *mut cimage_check_report,
    err: *mut *mut cimage_error,
) -> Status {
    unsafe { run(store, flags, report_out, err, false) }
}

/// Checks and mends the store: removes damaged layers and the layers and images built on them,
/// containers too with CIMAGE_CHECK_REMOVE_CONTAINERS (otherwise what a container uses is kept
/// and stays reported); removes unaccounted directories, dangling short links, stray tar-split
/// files and stale mount counts; rewrites bad short links and `lower` files. The report lists
/// what was done (CIMAGE_CHECK_REPAIRED) and what is still wrong (CIMAGE_CHECK_ERRORS).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown flags), IO, PERMISSION_DENIED.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_store_repair(
    store: *mut cimage_store,
    flags: u32,
    report_out: *mut *mut cimage_check_report,
    err: *mut *mut cimage_error,
) -> Status {
    unsafe { run(store, flags, report_out, err, true) }
}

/// Frees a report. NULL is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_check_report_free(report: *mut cimage_check_report) {
    getter((), || unsafe { super::free_box(report) })
}

/// Whether the store had no errors (after the repair, for a repair). false for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_check_report_is_clean(report: *const cimage_check_report) -> bool {
    getter(false, || {
        unsafe { report.as_ref() }.is_some_and(|r| r.clean)
    })
}

fn list<'a>(report: *const cimage_check_report, which: i32) -> Option<&'a [CFinding]> {
    // SAFETY: a non-NULL report is a live handle (contract); the slice is borrowed from it.
    let r = unsafe { report.as_ref() }?;
    let i = usize::try_from(which).ok()?;
    r.lists.get(i).map(|v| v.as_slice())
}

/// Number of findings in list `which` (CIMAGE_CHECK_ERRORS, _WARNINGS or _REPAIRED); 0 for NULL or
/// an unknown list.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_check_report_len(
    report: *const cimage_check_report,
    which: i32,
) -> usize {
    getter(0, || list(report, which).map_or(0, |l| l.len()))
}

fn field(
    report: *const cimage_check_report,
    which: i32,
    i: usize,
    pick: fn(&CFinding) -> &CString,
) -> *const c_char {
    getter(std::ptr::null(), || {
        list(report, which)
            .and_then(|l| l.get(i))
            .map_or(std::ptr::null(), |f| pick(f).as_ptr())
    })
}

/// Kind of finding `i` of list `which`: a stable name such as "layer-content-mismatch",
/// "layer-dir-unaccounted", "container-image-missing" or, in the repaired list, "removed-layer".
/// Borrowed from the report; NULL when out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_check_report_kind(
    report: *const cimage_check_report,
    which: i32,
    i: usize,
) -> *const c_char {
    field(report, which, i, |f| &f.kind)
}

/// The layer, image or container ID, or the path, that finding `i` of list `which` concerns.
/// Borrowed from the report; NULL when out of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_check_report_id(
    report: *const cimage_check_report,
    which: i32,
    i: usize,
) -> *const c_char {
    field(report, which, i, |f| &f.id)
}

/// A readable description of finding `i` of list `which`. Borrowed from the report; NULL when out
/// of range.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_check_report_message(
    report: *const cimage_check_report,
    which: i32,
    i: usize,
) -> *const c_char {
    field(report, which, i, |f| &f.message)
}

/// The whole report as one JSON object: {"clean", "errors", "warnings", "repaired" (lists of
/// {"kind","id","message"}), "layers", "images", "containers", "layers_verified"}. Borrowed from
/// the report; NULL for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cimage_check_report_json(
    report: *const cimage_check_report,
) -> *const c_char {
    getter(std::ptr::null(), || {
        unsafe { report.as_ref() }.map_or(std::ptr::null(), |r| r.json.as_ptr())
    })
}
