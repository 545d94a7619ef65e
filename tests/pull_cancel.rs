//! Cancelling pulls through the C API (called from Rust, exactly as C would): from the progress
//! callback (non-zero return), from another thread with a cancel token, and through the
//! non-blocking `cimage_pull_op` (cancel, free while running). The blob being downloaded is
//! throttled by the test registry so that every cancel lands mid-download. Afterwards the store
//! is consistent, no staging directory and no held blob lock remain, and the next pull succeeds.
//! Also: the pull_op hands out every event and then NULL, callbacks run on the calling thread,
//! and next_event times out while nothing happens.

mod common;
#[path = "common/fault_registry.rs"]
mod fault_registry;

use std::ffi::{c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cimage::ffi::cimage_error;
use cimage::ffi::error::*;
use cimage::ffi::image::*;
use cimage::ffi::inspect::*;
use cimage::ffi::pull::*;
use cimage::ffi::pull_op::*;
use cimage::ffi::store::*;
use cimage::store::lock::LockFile;
use cimage::Status;
use common::*;
use fault_registry::*;

const REPO: &str = "cancel/app";

/// A registry with one image whose big layer arrives at 200 KB/s (3 MB: 15 s if not cancelled).
fn slow_registry(seed: u64) -> (FaultRegistry, TestImage) {
    sized_slow_registry(seed, 3 << 20)
}

fn sized_slow_registry(seed: u64, big: usize) -> (FaultRegistry, TestImage) {
    let reg = FaultRegistry::start();
    let image = TestImage::with_big_layer(big, seed);
    reg.add_image(REPO, "t", &image);
    reg.fault(
        Some("GET"),
        &image.layers[1].0,
        Fault::Throttle {
            bytes_per_second: 200_000,
        },
        1,
    );
    (reg, image)
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// Panics with the error's message unless `status` is OK.
unsafe fn check(what: &str, status: Status, err: *mut cimage_error) {
    if status != Status::Ok {
        let message = unsafe { CStr::from_ptr(cimage_error_message(err)) }
            .to_string_lossy()
            .into_owned();
        unsafe { cimage_error_free(err) };
        panic!("{what}: {}: {message}", status.name());
    }
}

/// The error's status (freeing it).
unsafe fn take_status(err: *mut cimage_error) -> Status {
    let s = unsafe { cimage_error_code(err) };
    unsafe { cimage_error_free(err) };
    s
}

unsafe fn open_store(store: &Store) -> *mut cimage_store {
    unsafe {
        let o = cimage_store_options_new();
        let mut err = ptr::null_mut();
        let root = c(&store.root.display().to_string());
        let run = c(&store.run_root.display().to_string());
        let driver = c(&store.driver);
        check(
            "graph root",
            cimage_store_options_set_graph_root(o, root.as_ptr(), &mut err),
            err,
        );
        check(
            "run root",
            cimage_store_options_set_run_root(o, run.as_ptr(), &mut err),
            err,
        );
        check(
            "driver",
            cimage_store_options_set_driver(o, driver.as_ptr(), &mut err),
            err,
        );
        let mut s = ptr::null_mut();
        check("open", cimage_store_open(o, &mut s, &mut err), err);
        cimage_store_options_free(o);
        s
    }
}

unsafe fn pull_options() -> *mut cimage_pull_options {
    unsafe {
        let o = cimage_pull_options_new();
        let mut err = ptr::null_mut();
        check(
            "tls",
            cimage_pull_options_set_tls_verify(o, false, &mut err),
            err,
        );
        o
    }
}

fn setup() -> Option<Store> {
    if !ensure_root_or_skip("the store keeps file owners") {
        return None;
    }
    let store = Store::new("vfs");
    Some(store)
}

/// Consistent, no staging directory, no held blob lock, nothing of the image registered.
fn assert_clean_after_cancel(store: &Store, image: &TestImage, when: &str) {
    assert_store_consistent(store, when);
    if let Ok(rd) = std::fs::read_dir(store.root.join("tmp")) {
        let left: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("cimage-staging"))
            .collect();
        assert!(left.is_empty(), "{when}: staging left: {left:?}");
    }
    if let Ok(rd) = std::fs::read_dir(store.run_root.join("vfs-locks")) {
        for e in rd.flatten() {
            assert!(
                LockFile::new(e.path())
                    .try_lock_exclusive()
                    .unwrap()
                    .is_some(),
                "{when}: blob lock {} still held",
                e.path().display()
            );
        }
    }
    assert!(
        store.images_json().is_empty(),
        "{when}: an image was registered"
    );
    assert!(
        !store
            .layers_json()
            .iter()
            .any(|l| l["compressed-diff-digest"] == image.layers[1].0.as_str()),
        "{when}: the cancelled layer was registered"
    );
}

/// The next pull (no throttling left) succeeds.
unsafe fn pull_again(store: &Store, s: *mut cimage_store, reg: &FaultRegistry, image: &TestImage) {
    reg.clear_faults();
    unsafe {
        let o = pull_options();
        let reference = c(&reg.reference(REPO, "t"));
        let (mut img, mut err) = (ptr::null_mut(), ptr::null_mut());
        check(
            "pull again",
            cimage_store_pull(s, reference.as_ptr(), o, &mut img, &mut err),
            err,
        );
        let id = CStr::from_ptr(cimage_image_id(img))
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id, hex_of(&image.config_digest));
        cimage_image_free(img);
        cimage_pull_options_free(o);
    }
    assert_store_consistent(store, "after the next pull");
}

struct CallbackState {
    /// The big layer: cancelled while it downloads.
    big: CString,
    thread: std::thread::ThreadId,
    events: usize,
    downloading: usize,
    wrong_thread: bool,
}

unsafe extern "C" fn cancel_on_second_download(
    user_data: *mut c_void,
    ev: *const cimage_progress,
) -> i32 {
    let state = unsafe { &mut *(user_data as *mut CallbackState) };
    let ev = unsafe { &*ev };
    state.events += 1;
    if std::thread::current().id() != state.thread {
        state.wrong_thread = true;
    }
    let is_big =
        !ev.digest.is_null() && unsafe { CStr::from_ptr(ev.digest) } == state.big.as_c_str();
    if ev.kind == CIMAGE_PROGRESS_DOWNLOADING && ev.bytes_done > 0 && is_big {
        state.downloading += 1;
        if state.downloading >= 2 {
            return 1;
        }
    }
    0
}

#[test]
fn cancel_from_the_callback() {
    let Some(store) = setup() else { return };
    let (reg, image) = slow_registry(21);
    unsafe {
        let s = open_store(&store);
        let o = pull_options();
        let mut state = CallbackState {
            big: c(&image.layers[1].0),
            thread: std::thread::current().id(),
            events: 0,
            downloading: 0,
            wrong_thread: false,
        };
        let mut err = ptr::null_mut();
        check(
            "set progress",
            cimage_pull_options_set_progress(
                o,
                Some(cancel_on_second_download),
                &mut state as *mut CallbackState as *mut c_void,
                &mut err,
            ),
            err,
        );
        let reference = c(&reg.reference(REPO, "t"));
        let started = Instant::now();
        let mut img = ptr::null_mut();
        let status = cimage_store_pull(s, reference.as_ptr(), o, &mut img, &mut err);
        assert_eq!(status, Status::Cancelled);
        assert_eq!(take_status(err), Status::Cancelled);
        assert!(img.is_null());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(!state.wrong_thread, "a callback ran on another thread");
        assert!(state.downloading >= 2);
        let events_at_return = state.events;
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            state.events, events_at_return,
            "a callback ran after the call returned"
        );
        cimage_pull_options_free(o);
        assert_clean_after_cancel(&store, &image, "after a callback cancel");
        pull_again(&store, s, &reg, &image);
        cimage_store_free(s);
    }
}

#[test]
fn cancel_with_a_token_from_another_thread() {
    let Some(store) = setup() else { return };
    let (reg, image) = slow_registry(22);
    unsafe {
        let s = open_store(&store);
        let o = pull_options();
        let token = cimage_cancel_token_new();
        let mut err = ptr::null_mut();
        check(
            "token",
            cimage_pull_options_set_cancel_token(o, token, &mut err),
            err,
        );
        let token_addr = token as usize;
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            cimage_cancel_token_cancel(token_addr as *const cimage_cancel_token);
        });
        let reference = c(&reg.reference(REPO, "t"));
        let started = Instant::now();
        let status = cimage_store_pull(s, reference.as_ptr(), o, ptr::null_mut(), ptr::null_mut());
        canceller.join().unwrap();
        assert_eq!(status, Status::Cancelled);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        cimage_pull_options_free(o);
        cimage_cancel_token_free(token);
        assert_clean_after_cancel(&store, &image, "after a token cancel");
        pull_again(&store, s, &reg, &image);
        cimage_store_free(s);
    }
}

/// The next event of the op, waiting up to `timeout_ms`: Some(kind, digest) or None at the end;
/// Err(TIMEOUT) when nothing came.
unsafe fn next(
    op: *mut cimage_pull_op,
    timeout_ms: i32,
) -> Result<Option<(i32, Option<String>, u64)>, Status> {
    unsafe {
        let mut ev: *const cimage_progress = ptr::null();
        let status = cimage_pull_op_next_event(op, timeout_ms, &mut ev, ptr::null_mut());
        if status != Status::Ok {
            assert!(ev.is_null());
            return Err(status);
        }
        if ev.is_null() {
            return Ok(None);
        }
        let e = &*ev;
        assert_eq!(
            e.struct_size as usize,
            std::mem::size_of::<cimage_progress>()
        );
        let digest =
            (!e.digest.is_null()).then(|| CStr::from_ptr(e.digest).to_string_lossy().into_owned());
        Ok(Some((e.kind, digest, e.bytes_done)))
    }
}

#[test]
fn the_pull_op_reports_every_event_then_null_and_times_out_while_idle() {
    let Some(store) = setup() else { return };
    // 600 KB at 200 KB/s: three seconds with gaps between the events.
    let (reg, image) = sized_slow_registry(23, 600_000);
    unsafe {
        let s = open_store(&store);
        let o = pull_options();
        let reference = c(&reg.reference(REPO, "t"));
        let (mut op, mut err) = (ptr::null_mut(), ptr::null_mut());
        check(
            "start",
            cimage_store_pull_start(s, reference.as_ptr(), o, &mut op, &mut err),
            err,
        );
        // The options may go at once.
        cimage_pull_options_free(o);
        let mut kinds = Vec::new();
        let mut done_digests = Vec::new();
        let mut timeouts = 0;
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the pull never ended"
            );
            match next(op, 50) {
                Ok(Some((kind, digest, _))) => {
                    kinds.push(kind);
                    if kind == CIMAGE_PROGRESS_DONE {
                        done_digests.extend(digest);
                    }
                }
                Ok(None) => break,
                Err(Status::Timeout) => timeouts += 1,
                Err(other) => panic!("next_event: {}", other.name()),
            }
        }
        assert!(
            timeouts > 0,
            "a throttled download should leave gaps between events"
        );
        assert_eq!(kinds.first(), Some(&CIMAGE_PROGRESS_RESOLVING));
        assert!(kinds.contains(&CIMAGE_PROGRESS_DOWNLOADING));
        assert!(kinds.contains(&CIMAGE_PROGRESS_EXTRACTING));
        assert!(kinds.contains(&CIMAGE_PROGRESS_VERIFYING));
        assert!(kinds.contains(&CIMAGE_PROGRESS_COMMITTING));
        done_digests.sort();
        let mut layer_digests = image.layer_digests();
        layer_digests.sort();
        assert_eq!(done_digests, layer_digests);
        // After the end: NULL again, at once.
        assert_eq!(next(op, -1), Ok(None));
        let mut img = ptr::null_mut();
        check("finish", cimage_pull_op_finish(op, &mut img, &mut err), err);
        let id = CStr::from_ptr(cimage_image_id(img))
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id, hex_of(&image.config_digest));
        cimage_image_free(img);
        assert_eq!(
            cimage_pull_op_finish(op, ptr::null_mut(), ptr::null_mut()),
            Status::InvalidArgument,
            "a second finish"
        );
        cimage_pull_op_cancel(op); // harmless after the end
        cimage_pull_op_free(op);
        cimage_store_free(s);
    }
    assert_store_consistent(&store, "after a pull_op pull");
}

#[test]
fn cancel_through_the_pull_op_from_another_thread() {
    let Some(store) = setup() else { return };
    let (reg, image) = slow_registry(24);
    unsafe {
        let s = open_store(&store);
        let reference = c(&reg.reference(REPO, "t"));
        let (mut op, mut err) = (ptr::null_mut(), ptr::null_mut());
        let o = pull_options();
        check(
            "start",
            cimage_store_pull_start(s, reference.as_ptr(), o, &mut op, &mut err),
            err,
        );
        cimage_pull_options_free(o);
        let seen_download = AtomicUsize::new(0);
        loop {
            match next(op, 5000) {
                Ok(Some((CIMAGE_PROGRESS_DOWNLOADING, Some(d), done)))
                    if done > 0 && d == image.layers[1].0 =>
                {
                    if seen_download.fetch_add(1, Ordering::SeqCst) == 1 {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                other => panic!("no download seen: {other:?}"),
            }
        }
        let op_addr = op as usize;
        std::thread::spawn(move || cimage_pull_op_cancel(op_addr as *const cimage_pull_op))
            .join()
            .unwrap();
        let started = Instant::now();
        loop {
            match next(op, 1000) {
                Ok(None) => break,
                Ok(Some(_)) | Err(Status::Timeout) => {}
                Err(other) => panic!("next_event: {}", other.name()),
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no end after the cancel"
            );
        }
        let status = cimage_pull_op_finish(op, ptr::null_mut(), &mut err);
        assert_eq!(status, Status::Cancelled);
        assert_eq!(take_status(err), Status::Cancelled);
        cimage_pull_op_free(op);
        assert_clean_after_cancel(&store, &image, "after a pull_op cancel");
        pull_again(&store, s, &reg, &image);
        cimage_store_free(s);
    }
}

#[test]
fn freeing_a_running_pull_op_cancels_it_and_cleans_up() {
    let Some(store) = setup() else { return };
    let (reg, image) = slow_registry(25);
    unsafe {
        let s = open_store(&store);
        let o = pull_options();
        let reference = c(&reg.reference(REPO, "t"));
        let (mut op, mut err) = (ptr::null_mut(), ptr::null_mut());
        check(
            "start",
            cimage_store_pull_start(s, reference.as_ptr(), o, &mut op, &mut err),
            err,
        );
        cimage_pull_options_free(o);
        loop {
            match next(op, 5000) {
                Ok(Some((CIMAGE_PROGRESS_DOWNLOADING, Some(d), done)))
                    if done > 0 && d == image.layers[1].0 =>
                {
                    break
                }
                Ok(Some(_)) => {}
                other => panic!("no download seen: {other:?}"),
            }
        }
        let started = Instant::now();
        cimage_pull_op_free(op);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Everything is cleaned up by the time free returns.
        assert_clean_after_cancel(&store, &image, "right after freeing a running pull_op");
        pull_again(&store, s, &reg, &image);
        cimage_store_free(s);
    }
}

#[test]
fn pull_op_functions_refuse_null_arguments() {
    unsafe {
        let mut op = ptr::null_mut();
        let mut err = ptr::null_mut();
        let reference = c("oci:/nonexistent");
        let status = cimage_store_pull_start(
            ptr::null_mut(),
            reference.as_ptr(),
            ptr::null(),
            &mut op,
            &mut err,
        );
        assert_eq!(status, Status::NullArgument);
        assert!(op.is_null());
        assert_eq!(take_status(err), Status::NullArgument);
        let mut ev: *const cimage_progress = ptr::null();
        assert_eq!(
            cimage_pull_op_next_event(ptr::null_mut(), 0, &mut ev, ptr::null_mut()),
            Status::NullArgument
        );
        assert!(ev.is_null());
        assert_eq!(
            cimage_pull_op_finish(ptr::null_mut(), ptr::null_mut(), ptr::null_mut()),
            Status::NullArgument
        );
        cimage_pull_op_cancel(ptr::null());
        cimage_pull_op_free(ptr::null_mut());
        let mut json = ptr::null_mut();
        assert_eq!(
            cimage_inspect(ptr::null(), ptr::null(), &mut json, ptr::null_mut()),
            Status::NullArgument
        );
        assert_eq!(
            cimage_list_tags(
                reference.as_ptr(),
                ptr::null(),
                ptr::null_mut(),
                ptr::null_mut()
            ),
            Status::NullArgument
        );
        let o = cimage_pull_options_new();
        assert_eq!(
            cimage_pull_options_set_max_retries(o, 101, ptr::null_mut()),
            Status::InvalidArgument
        );
        assert_eq!(
            cimage_pull_options_set_stall_timeout_ms(ptr::null_mut(), 5, ptr::null_mut()),
            Status::NullArgument
        );
        assert_eq!(
            cimage_pull_options_set_deadline_ms(o, 0, ptr::null_mut()),
            Status::Ok
        );
        cimage_pull_options_free(o);
    }
}

#[test]
fn an_oci_layout_is_inspected_and_listed_through_the_c_api() {
    let dir = tempfile::tempdir().unwrap();
    let image = TestImage::with_big_layer(1000, 26);
    let blobs = dir.path().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut all = vec![image.manifest.clone(), image.config.clone()];
    all.extend(image.layers.iter().map(|(_, b)| b.clone()));
    for data in all {
        std::fs::write(blobs.join(&sha256(&data)[7..]), data).unwrap();
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len(),
         "annotations": {"org.opencontainers.image.ref.name": "one"}},
        {"mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len(),
         "annotations": {"org.opencontainers.image.ref.name": "two"}}]});
    std::fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    unsafe {
        let reference = c(&format!("oci:{}:two", dir.path().display()));
        let (mut json, mut err) = (ptr::null_mut(), ptr::null_mut());
        check(
            "inspect",
            cimage_inspect(reference.as_ptr(), ptr::null(), &mut json, &mut err),
            err,
        );
        let doc: serde_json::Value =
            serde_json::from_str(CStr::from_ptr(json).to_str().unwrap()).unwrap();
        cimage_string_free(json);
        assert_eq!(doc["digest"], image.manifest_digest.as_str());
        assert_eq!(doc["env"][0], "PATH=/usr/bin");
        check(
            "tags",
            cimage_list_tags(reference.as_ptr(), ptr::null(), &mut json, &mut err),
            err,
        );
        let doc: serde_json::Value =
            serde_json::from_str(CStr::from_ptr(json).to_str().unwrap()).unwrap();
        cimage_string_free(json);
        assert_eq!(doc["tags"], serde_json::json!(["one", "two"]));
    }
}
