//! A pull: resolve the reference, fetch what the store lacks, and record the image.
//!
//! Each missing layer goes through one pass — downloaded, verified, decompressed and extracted
//! as the bytes arrive — into a staging directory of its own, several layers at once. Layers
//! are then committed in order (a layer's record needs its parent's), so a failure or a cancel
//! leaves no partial layer: staging directories are removed when they drop.

use crate::config::storage::DriverKind;
use crate::digest;
use crate::error::{Error, Result, ResultExt, Status};
use crate::registry::access::combine_failures;
use crate::registry::resolve::{Location, PullPlan};
use crate::registry::retry::{human_duration, RequestPolicy, RetryPolicy, DEFAULT_STALL};
use crate::registry::{
    self, AccessContext, AccessOptions, BlobDesc, Platform, Reference, ResolvedImage, Source,
};
use crate::runtime::CancelFlag;
use crate::store::lock::LockGuard;
use crate::store::{layer_id_for, BigData, ImageInfo, NewImage, NewLayer, StagingDir, Store};
use crate::unpack::{self, compression, ApplyOptions};
use futures_util::StreamExt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When to talk to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Ask the registry; fetch what is missing.
    #[default]
    Always,
    /// No network at all when the store already has an image of that name.
    Missing,
    /// Never touch the network: the image must be in the store.
    Never,
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// TLS, credentials and the configuration files to read.
    pub access: AccessOptions,
    /// None: the host's platform.
    pub platform: Option<Platform>,
    pub policy: PullPolicy,
    /// Layers fetched at once.
    pub parallel_layers: usize,
    /// No byte from the registry for this long ends a request with TIMEOUT (a blob that was
    /// arriving is resumed once more first).
    pub stall_timeout: Duration,
    /// The whole pull must end within this, else TIMEOUT. None: no limit.
    pub deadline: Option<Duration>,
    /// Retries of transient request failures.
    pub retry: RetryPolicy,
    /// Most bytes the image's layers may unpack to (uncompressed tar streams, summed).
    pub max_unpacked_size: u64,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            access: AccessOptions::default(),
            platform: None,
            policy: PullPolicy::Always,
            parallel_layers: 3,
            stall_timeout: DEFAULT_STALL,
            deadline: None,
            retry: RetryPolicy::default(),
            max_unpacked_size: unpack::DEFAULT_MAX_UNPACKED_SIZE,
        }
    }
}

/// What a pull reports while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Resolving {
        reference: String,
    },
    Downloading {
        digest: String,
        done: u64,
        total: u64,
    },
    Verifying {
        digest: String,
    },
    Extracting {
        digest: String,
    },
    Done {
        digest: String,
    },
    Skipped {
        digest: String,
    },
    Retrying {
        digest: String,
        message: String,
    },
    Failed {
        digest: String,
        message: String,
    },
    Config {
        digest: String,
    },
    Committing {
        reference: String,
    },
}

/// Where progress goes; sending never blocks and a gone receiver is fine.
#[derive(Clone)]
pub struct ProgressSink(Option<Sender<Progress>>);

impl ProgressSink {
    pub fn new(tx: Sender<Progress>) -> ProgressSink {
        ProgressSink(Some(tx))
    }
    pub fn none() -> ProgressSink {
        ProgressSink(None)
    }
    pub(crate) fn send(&self, p: Progress) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(p);
        }
    }
}

/// Pulls `reference` into `store`. A failed, cancelled or timed-out pull leaves no partial
/// layer, no staging directory and no held lock.
pub async fn pull(
    store: Arc<Store>,
    reference: &str,
    opts: &PullOptions,
    progress: ProgressSink,
    cancel: CancelFlag,
) -> Result<ImageInfo> {
    with_deadline(opts.deadline, &cancel, "the pull", |cancel| {
        pull_now(store, reference, opts, progress, cancel)
    })
    .await
}

/// Runs `work` with a cancel flag that also fires at the deadline. The deadline cancels the way
/// the caller would, so the same clean-up runs; only the status differs (TIMEOUT).
pub(crate) async fn with_deadline<T, Fut>(
    deadline: Option<Duration>,
    cancel: &CancelFlag,
    what: &str,
    work: impl FnOnce(CancelFlag) -> Fut,
) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let Some(limit) = deadline else {
        return work(cancel.clone()).await;
    };
    let inner = cancel.child();
    let expired = Arc::new(AtomicBool::new(false));
    let timer = {
        let (inner, expired) = (inner.clone(), expired.clone());
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            expired.store(true, Ordering::SeqCst);
            inner.cancel();
        })
    };
    let result = work(inner).await;
    timer.abort();
    match result {
        Err(_) if expired.load(Ordering::SeqCst) && !cancel.is_cancelled() => Err(Error::new(
            Status::Timeout,
            format!(
                "{what} did not finish within its deadline of {}",
                human_duration(limit)
            ),
        )),
        other => other,
    }
}

/// Opens the reference's primary location (for inspection: no mirrors, no search list beyond
/// the first candidate), with the configuration files, credentials and request policy.
pub(crate) async fn open_source(
    parsed: &Reference,
    opts: &PullOptions,
    progress: &ProgressSink,
    cancel: &CancelFlag,
) -> Result<Source> {
    let access = AccessContext::load(&opts.access)?;
    let plan = access.plan(&parsed.to_string())?;
    if let Some(ambiguity) = plan.ambiguity {
        return Err(ambiguity);
    }
    let candidate = plan
        .candidates
        .first()
        .ok_or_else(|| Error::not_found(format!("no registry to ask for {parsed}")))?;
    access.admit(candidate)?;
    let location = candidate
        .locations
        .last()
        .ok_or_else(|| Error::not_found(format!("no location for {parsed}")))?;
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    open_location(&access, location, &platform, opts, progress, cancel).await
}

/// Opens one location, retrying a registry that is briefly unreachable, and gives the source the
/// request policy (retries, stall limit, cancellation) for all its requests.
async fn open_location(
    access: &AccessContext,
    location: &Location,
    platform: &Platform,
    opts: &PullOptions,
    progress: &ProgressSink,
    cancel: &CancelFlag,
) -> Result<Source> {
    let requests = request_policy(opts, progress, cancel);
    let mut source = requests
        .run("opening the registry", "", || {
            access.open(location, platform)
        })
        .await?;
    source.set_request_policy(requests);
    Ok(source)
}

async fn pull_now(
    store: Arc<Store>,
    reference: &str,
    opts: &PullOptions,
    progress: ProgressSink,
    cancel: CancelFlag,
) -> Result<ImageInfo> {
    // A malformed reference is the caller's error whatever the configuration files say.
    crate::registry::parse_reference(reference)?;
    let access = AccessContext::load(&opts.access)?;
    let plan = access.plan(reference)?;
    if opts.policy != PullPolicy::Always {
        let names: Vec<String> = plan
            .candidates
            .iter()
            .map(|c| c.reference.storage_name())
            .collect();
        for name in &names {
            let s = store.clone();
            let n = name.clone();
            match blocking(move || s.image(&n)).await {
                Ok(img) => {
                    crate::log::debug(format!(
                        "{name} is in the store; policy {:?}: not contacting the registry",
                        opts.policy
                    ));
                    return Ok(img);
                }
                Err(e) if e.status == Status::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if opts.policy == PullPolicy::Never {
            let name = names.join(" or ");
            return Err(Error::not_found(format!(
                "image {name} is not in the store and the pull policy is never"
            ))
            .with_subject(name));
        }
    }
    if let Some(ambiguity) = plan.ambiguity.clone() {
        return Err(ambiguity);
    }
    if let Some(first) = plan.candidates.first() {
        progress.send(Progress::Resolving {
            reference: first.reference.to_string(),
        });
    }
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let (parsed, source, resolved) = match locate(
        &store, &access, &plan, &platform, opts, &progress, &cancel, reference,
    )
    .await?
    {
        Located::Warm(img) => return Ok(img),
        Located::Resolved(parsed, source, resolved) => (parsed, source, resolved),
    };
    let name = parsed.storage_name();
    crate::log::debug(format!(
        "{name}: manifest {} config {} with {} layers from {}",
        resolved.manifest_digest,
        resolved.config_digest,
        resolved.layers.len(),
        source.name()
    ));
    fetch_layers(&store, &source, &resolved, opts, &progress, &cancel).await?;
    cancel.check()?;
    progress.send(Progress::Config {
        digest: resolved.config_digest.clone(),
    });
    progress.send(Progress::Committing {
        reference: parsed.to_string(),
    });
    let new = new_image(&parsed, &resolved)?;
    let s = store.clone();
    blocking(move || s.commit_image(new)).await
}

/// Where a pull gets its image: already in the store, or resolved at a location.
enum Located {
    Warm(ImageInfo),
    Resolved(Reference, Arc<Source>, Box<ResolvedImage>),
}

/// Tries every place the image may come from, in order — each candidate of a short name, and
/// for each its mirrors then its primary location — and takes the first that serves it.
#[allow(clippy::too_many_arguments)]
async fn locate(
    store: &Arc<Store>,
    access: &AccessContext,
    plan: &PullPlan,
    platform: &Platform,
    opts: &PullOptions,
    progress: &ProgressSink,
    cancel: &CancelFlag,
    reference: &str,
) -> Result<Located> {
    let mut failures = Vec::new();
    for candidate in &plan.candidates {
        if let Err(e) = access.admit(candidate) {
            failures.push(e);
            continue;
        }
        let mut candidate_failures = Vec::new();
        for location in &candidate.locations {
            match try_location(
                store,
                access,
                &candidate.reference,
                location,
                platform,
                opts,
                progress,
                cancel,
            )
            .await
            {
                Ok(located) => return Ok(located),
                Err(e) if e.status == Status::Cancelled => return Err(e),
                Err(e) => {
                    crate::log::debug(format!("{}: {}", location.reference, e.message));
                    candidate_failures.push(e);
                }
            }
        }
        // The primary location's verdict speaks for the candidate; the mirrors' are detail.
        if let Some(primary) = candidate_failures.pop() {
            failures.push(if candidate_failures.is_empty() {
                primary
            } else {
                let mirrors: Vec<String> =
                    candidate_failures.into_iter().map(|e| e.message).collect();
                let mut e = primary;
                e.message = format!("{} (mirrors failed too: {})", e.message, mirrors.join("; "));
                e
            });
        }
    }
    Err(combine_failures(reference, failures))
}

/// Opens one location and resolves the image there (or finds it already stored).
#[allow(clippy::too_many_arguments)]
async fn try_location(
    store: &Arc<Store>,
    access: &AccessContext,
    parsed: &Reference,
    location: &Location,
    platform: &Platform,
    opts: &PullOptions,
    progress: &ProgressSink,
    cancel: &CancelFlag,
) -> Result<Located> {
    let name = parsed.storage_name();
    let source = Arc::new(open_location(access, location, platform, opts, progress, cancel).await?);

    // Warm pull: the reference still points at what we have; only add the name.
    let top = tokio::select! {
        t = source.top_digest() => t,
        _ = cancel.cancelled() => return Err(Error::cancelled()),
    };
    if let Ok(top) = &top {
        let s = store.clone();
        let t = top.clone();
        // Only when the reference names the image's own manifest: a top digest that is an
        // index may select another platform's image than the one stored.
        let found = blocking(move || s.image(&t))
            .await
            .ok()
            .filter(|img| img.digest.as_deref() == Some(top.as_str()));
        if let Some(img) = found {
            crate::log::debug(format!(
                "{name}: {top} is already in the store as image {}",
                img.id
            ));
            report_present_blobs(store, &img.id, progress).await;
            return add_name(store, &img.id, &name).await.map(Located::Warm);
        }
    }

    let resolved = tokio::select! {
        r = source.resolve() => r.map_err(|e| access.explain(e, &source, location))?,
        _ = cancel.cancelled() => return Err(Error::cancelled()),
    };
    Ok(Located::Resolved(
        parsed.clone(),
        source,
        Box::new(resolved),
    ))
}

/// Retries as the options say, every wait bounded by the stall limit and the cancel flag, and
/// each retry reported as a RETRYING event.
fn request_policy(
    opts: &PullOptions,
    progress: &ProgressSink,
    cancel: &CancelFlag,
) -> RequestPolicy {
    let sink = progress.clone();
    RequestPolicy {
        retry: opts.retry,
        stall: opts.stall_timeout,
        cancel: cancel.clone(),
        // Measured from here, a little after the operation's own start: only used to refuse a
        // Retry-After that cannot fit (the cancel flag enforces the real deadline).
        deadline: opts.deadline.map(|d| std::time::Instant::now() + d),
        on_retry: Some(Arc::new(move |n: &registry::retry::RetryNotice| {
            sink.send(Progress::Retrying {
                digest: n.digest.clone(),
                message: format!(
                    "retry {} in {}: {}",
                    n.retry,
                    human_duration(n.delay),
                    n.error.message
                ),
            })
        })),
    }
}

async fn add_name(store: &Arc<Store>, id: &str, name: &str) -> Result<ImageInfo> {
    let s = store.clone();
    let (id, name) = (id.to_string(), name.to_string());
    blocking(move || {
        let img = s.image(&id)?;
        if img.names.contains(&name) {
            return Ok(img);
        }
        s.commit_image(NewImage {
            id: img.id.clone(),
            top_layer: img.top_layer.clone(),
            digest: img.digest.clone().unwrap_or_default(),
            names: vec![name],
            created: None,
            big_data: vec![],
            metadata: String::new(),
        })
    })
    .await
}

/// A warm pull fetches nothing: report every blob of the stored manifest as already present.
async fn report_present_blobs(store: &Arc<Store>, id: &str, progress: &ProgressSink) {
    let s = store.clone();
    let id = id.to_string();
    let Ok(manifest) = blocking(move || s.image_manifest(&id)).await else {
        return;
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&manifest) else {
        return;
    };
    for layer in doc
        .get("layers")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(d) = layer.get("digest").and_then(|d| d.as_str()) {
            progress.send(Progress::Skipped {
                digest: d.to_string(),
            });
        }
    }
    if let Some(d) = doc.pointer("/config/digest").and_then(|d| d.as_str()) {
        progress.send(Progress::Config {
            digest: d.to_string(),
        });
    }
}

/// Runs store work (file locks, fsync) off the async worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    joined(tokio::task::spawn_blocking(f).await)
}

/// A finished task's result; a panic inside it becomes PANIC.
fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => Err(Error::new(
            Status::Panic,
            format!(
                "internal panic: {}",
                crate::runtime::panic_message(e.into_panic())
            ),
        )),
        Err(e) => Err(Error::internal(format!("task failed: {e}"))),
    }
}

/// The image record containers/image would write for this pull (§2.2 big data).
fn new_image(reference: &Reference, r: &ResolvedImage) -> Result<NewImage> {
    let id = digest::validate(&r.config_digest)?.to_string();
    let mhex = digest::validate(&r.manifest_digest)?.to_string();
    let mut big_data = vec![
        BigData {
            key: r.config_digest.clone(),
            data: r.config.clone(),
            digest: r.config_digest.clone(),
        },
        BigData {
            key: format!("manifest-{}", r.manifest_digest),
            data: r.manifest.clone(),
            digest: r.manifest_digest.clone(),
        },
        BigData {
            key: "manifest".into(),
            data: r.manifest.clone(),
            digest: r.manifest_digest.clone(),
        },
    ];
    if let Some((index, index_digest)) = &r.index {
        big_data.push(BigData {
            key: format!("manifest-{index_digest}"),
            data: index.clone(),
            digest: index_digest.clone(),
        });
    }
    big_data.push(BigData {
        key: format!("signature-{mhex}"),
        data: Vec::new(),
        digest: digest::sha256_digest(b""),
    });
    let mut top = None;
    for d in &r.diff_ids {
        top = Some(layer_id_for(top.as_deref(), d));
    }
    Ok(NewImage {
        id,
        top_layer: top,
        digest: r.manifest_digest.clone(),
        names: vec![reference.storage_name()],
        created: r.created.clone(),
        big_data,
        metadata: format!("{{\"signatures-sizes\":{{\"{}\":[]}}}}", r.manifest_digest),
    })
}

/// More layers than any real image has (overlay mounts at most 500): each costs a staging
/// directory, a store lookup and a task.
const MAX_LAYERS: usize = 1000;

struct PlannedLayer {
    id: String,
    parent: Option<String>,
    desc: BlobDesc,
    diff_id: String,
}

async fn fetch_layers(
    store: &Arc<Store>,
    source: &Arc<Source>,
    r: &ResolvedImage,
    opts: &PullOptions,
    progress: &ProgressSink,
    cancel: &CancelFlag,
) -> Result<()> {
    if r.layers.len() != r.diff_ids.len() {
        return Err(Error::new(
            Status::DigestMismatch,
            format!(
                "the manifest lists {} layers but the config {} diff IDs",
                r.layers.len(),
                r.diff_ids.len()
            ),
        ));
    }
    if r.layers.len() > MAX_LAYERS {
        return Err(Error::new(
            Status::Unsupported,
            format!(
                "the image has {} layers; at most {MAX_LAYERS} are accepted",
                r.layers.len()
            ),
        ));
    }
    let mut plan = Vec::new();
    let mut parent: Option<String> = None;
    for (desc, diff_id) in r.layers.iter().zip(&r.diff_ids) {
        digest::validate(diff_id)?;
        let id = layer_id_for(parent.as_deref(), diff_id);
        let s = store.clone();
        let i = id.clone();
        if blocking(move || s.has_layer(&i)).await? {
            progress.send(Progress::Skipped {
                digest: desc.digest.clone(),
            });
        } else {
            plan.push(PlannedLayer {
                id: id.clone(),
                parent: parent.clone(),
                desc: desc.clone(),
                diff_id: diff_id.clone(),
            });
        }
        parent = Some(id);
    }
    if plan.is_empty() {
        return Ok(());
    }
    // vfs extracts each layer onto a copy of its parent, so its layers go one after another.
    let parallel = if store.driver_kind() == DriverKind::Vfs {
        1
    } else {
        opts.parallel_layers.max(1)
    };
    // One failure stops the other layers too.
    let abort = cancel.child();
    // Shared by the layers: the cap is on the whole image.
    let size_budget = unpack::SizeBudget::new(opts.max_unpacked_size);
    // With durable writes, the commit's syncfs would write every extracted byte while the pull
    // waits; flushing along the way lets the disk work while the CPU extracts.
    let _flusher = store
        .sync_writes()
        .then(|| EarlyWriteback::start(store.graph_root()));
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut blob_locks = blob_locks_in_order(store, &plan, &abort).into_iter();
    let mut handles = Vec::new();
    for layer in &plan {
        let blob_lock = blob_locks
            .next()
            .ok_or_else(|| Error::internal("one blob lock per planned layer"))?;
        let task = {
            let (store, source, progress, abort, sem, size_budget) = (
                store.clone(),
                source.clone(),
                progress.clone(),
                abort.clone(),
                sem.clone(),
                size_budget.clone(),
            );
            let (id, parent, desc, diff_id) = (
                layer.id.clone(),
                layer.parent.clone(),
                layer.desc.clone(),
                layer.diff_id.clone(),
            );
            async move {
                let _permit = sem
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::internal("semaphore closed"))?;
                abort.check()?;
                let r = fetch_one(
                    &store,
                    &source,
                    blob_lock,
                    &id,
                    parent.as_deref(),
                    &desc,
                    &diff_id,
                    &progress,
                    &abort,
                    size_budget,
                )
                .await;
                if let Err(e) = &r {
                    // A layer stopped because another one failed is not a failure of its own.
                    if e.status != Status::Cancelled {
                        progress.send(Progress::Failed {
                            digest: desc.digest.clone(),
                            message: e.message.clone(),
                        });
                    }
                    abort.cancel();
                }
                r
            }
        };
        handles.push(tokio::spawn(task));
        if parallel == 1 {
            // vfs: a layer starts from its parent's committed tree, so fetch and commit in order.
            if let Some(h) = handles.pop() {
                let fetched = join(h).await?;
                commit(
                    store,
                    vec![(fetched, layer.desc.digest.clone())],
                    progress,
                    cancel,
                )
                .await?;
            }
        }
    }
    // Overlay layers are committed together once all are extracted: one layers.json write
    // (and one sync) per pull instead of per layer. After a failure the layers fetched below
    // it are still committed, so that a retry does not fetch them again.
    let mut fetched = Vec::new();
    let mut first_err: Option<Error> = None;
    for (h, layer) in handles.into_iter().zip(plan.iter()) {
        match join(h).await {
            Ok(f) if first_err.is_none() => fetched.push((f, layer.desc.digest.clone())),
            // Above a failed layer: dropped; its staging directory goes away, its blob lock is released.
            Ok(_) => {}
            Err(e) => {
                if first_err
                    .as_ref()
                    .map(|f| f.status == Status::Cancelled && e.status != Status::Cancelled)
                    .unwrap_or(true)
                {
                    first_err = Some(e);
                }
            }
        }
    }
    if !fetched.is_empty() && !cancel.is_cancelled() {
        if let Err(e) = commit(store, fetched, progress, cancel).await {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) if cancel.is_cancelled() => Err(if e.status == Status::Cancelled {
            e
        } else {
            Error::cancelled()
        }),
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What fetching one layer produced.
#[allow(clippy::large_enum_variant)] // one per layer, moved a few times
enum Fetched {
    /// Extracted and checked, waiting to be committed; the blob's lock is held until then.
    Staged {
        staging: StagingDir,
        new: NewLayer,
        _blob_lock: LockGuard,
    },
    /// Another process (or pull) committed the layer while we waited for the blob's lock.
    Present,
}

async fn join(h: tokio::task::JoinHandle<Result<Fetched>>) -> Result<Fetched> {
    joined(h.await)
}

async fn commit(
    store: &Arc<Store>,
    layers: Vec<(Fetched, String)>,
    progress: &ProgressSink,
    cancel: &CancelFlag,
) -> Result<()> {
    // Nothing new enters the store once the caller has cancelled.
    cancel.check()?;
    let mut batch = Vec::with_capacity(layers.len());
    let mut blob_locks = Vec::with_capacity(layers.len());
    let mut done = Vec::with_capacity(layers.len());
    for (fetched, digest) in layers {
        match fetched {
            Fetched::Staged {
                staging,
                new,
                _blob_lock,
            } => {
                batch.push((new, staging));
                blob_locks.push(_blob_lock);
                done.push(digest);
            }
            Fetched::Present => progress.send(Progress::Skipped { digest }),
        }
    }
    if !batch.is_empty() {
        let s = store.clone();
        blocking(move || {
            s.commit_layers(batch)?;
            // The locks go only once the layers are in the store: a waiting process then
            // finds them there.
            drop(blob_locks);
            Ok(())
        })
        .await?;
    }
    for digest in done {
        progress.send(Progress::Done { digest });
    }
    Ok(())
}

/// Waits for the blob's per-digest lock (another process may be fetching the same blob),
/// polling so that a cancel or the deadline still ends the wait.
type BlobLockPromise = tokio::sync::oneshot::Receiver<Result<LockGuard>>;

/// The blob lock of each planned layer (in plan order), taken by one task in digest order.
/// Each layer holds its lock until the batched commit, so two pulls sharing two blobs that
/// took them in different orders would wait for each other for ever (seen with two processes
/// pulling images that share layers); one global order makes that impossible. A layer starts
/// as soon as its own lock is taken.
fn blob_locks_in_order(
    store: &Arc<Store>,
    plan: &[PlannedLayer],
    abort: &CancelFlag,
) -> Vec<BlobLockPromise> {
    let mut promises = Vec::with_capacity(plan.len());
    let mut senders = Vec::with_capacity(plan.len());
    for _ in plan {
        let (tx, rx) = tokio::sync::oneshot::channel();
        senders.push(Some(tx));
        promises.push(rx);
    }
    let mut order: Vec<(String, usize)> = plan
        .iter()
        .enumerate()
        .map(|(i, l)| (l.desc.digest.clone(), i))
        .collect();
    order.sort();
    let (store, abort) = (store.clone(), abort.clone());
    tokio::spawn(async move {
        for (digest, i) in order {
            let taken = lock_blob(&store, &digest, &abort).await;
            let failed = taken.is_err();
            // A layer task that is gone (the pull failed) drops the guard with the message.
            if let Some(tx) = senders[i].take() {
                let _ = tx.send(taken);
            }
            if failed {
                // The other layers see their promise broken: cancelled, as the pull is.
                break;
            }
        }
    });
    promises
}

async fn lock_blob(store: &Arc<Store>, digest: &str, abort: &CancelFlag) -> Result<LockGuard> {
    let mut logged = false;
    loop {
        let s = store.clone();
        let d = digest.to_string();
        if let Some(guard) = blocking(move || s.try_lock_blob(&d)).await? {
            return Ok(guard);
        }
        if !logged {
            crate::log::debug(format!(
                "blob {digest} is being fetched by another pull; waiting for it"
            ));
            logged = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = abort.cancelled() => return Err(Error::cancelled()),
        }
    }
}

/// Streams one blob into a staging directory: download → verify → decompress → extract.
#[allow(clippy::too_many_arguments)]
async fn fetch_one(
    store: &Arc<Store>,
    source: &Arc<Source>,
    blob_lock: BlobLockPromise,
    id: &str,
    parent: Option<&str>,
    desc: &BlobDesc,
    diff_id: &str,
    progress: &ProgressSink,
    abort: &CancelFlag,
    size_budget: unpack::SizeBudget,
) -> Result<Fetched> {
    let blob_lock = blob_lock.await.map_err(|_| Error::cancelled())??;
    let s = store.clone();
    let i = id.to_string();
    if blocking(move || s.has_layer(&i)).await? {
        return Ok(Fetched::Present);
    }
    let s = store.clone();
    let parent_owned = parent.map(String::from);
    let staging = blocking(move || {
        let staging = s.new_staging_dir()?;
        s.driver()
            .prepare_staging(parent_owned.as_deref(), &staging.tree())?;
        Ok(staging)
    })
    .await?;
    let mut stream = source.blob(desc).await?;
    // Queued compressed bytes are bounded by a byte budget, not a number of chunks: hyper hands
    // out chunks of up to a few hundred KiB when the registry is faster than the extraction.
    let budget = Arc::new(tokio::sync::Semaphore::new(QUEUED_BYTES));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Chunk>>(64);
    let whiteouts = store.driver().whiteout_mode();
    let tree = staging.tree();
    let tar_split_path = staging.tar_split();
    let abort_x = abort.clone();
    // Decompression has a thread of its own, ahead of the extraction, so that one layer uses
    // two cores: inflating on one; hashing, tar-split and file creation on the other.
    let (plain_tx, plain_rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>>>(PLAIN_QUEUE);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let decompress = tokio::task::spawn_blocking(move || -> Result<i64> {
        let mut reader = ChannelReader {
            rx,
            current: bytes::Bytes::new(),
            _permit: None,
            abort: abort_x,
            done: false,
        };
        let result = (|| -> Result<i64> {
            let (kind, mut decoded) = compression::decompress(&mut reader)?;
            loop {
                let mut buf = recycle_rx
                    .try_recv()
                    .unwrap_or_else(|_| vec![0u8; PLAIN_CHUNK]);
                // Corrupt compressed data is already UNSAFE_ARCHIVE (compression::decompress).
                let n = read_up_to(&mut decoded, &mut buf)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                if plain_tx.send(Ok(buf)).is_err() {
                    // The extractor stopped: its error tells why.
                    return Ok(kind.storage_code());
                }
            }
            drop(decoded);
            // Read to the end of the blob: the stream checks size and digest only there.
            std::io::copy(&mut reader, &mut std::io::sink())?;
            Ok(kind.storage_code())
        })();
        if let Err(e) = &result {
            // The extractor must not take a truncated stream for a complete one.
            let _ = plain_tx.send(Err(e.clone()));
        }
        result
    });
    let extract = tokio::task::spawn_blocking(move || -> Result<unpack::LayerStats> {
        let plain = PlainReader {
            rx: plain_rx,
            recycle: recycle_tx,
            current: Vec::new(),
            at: 0,
        };
        let mut tar_split = std::io::BufWriter::new(
            std::fs::File::create(&tar_split_path).ctx("creating the tar-split file")?,
        );
        let opts = ApplyOptions {
            whiteouts,
            size_budget,
            ..ApplyOptions::default()
        };
        // Reads the uncompressed stream to its end (trailing bytes count in the diff digest).
        let stats = unpack::apply_layer(plain, &tree, &opts, Some(&mut tar_split))?;
        std::io::Write::flush(&mut tar_split).ctx("writing the tar-split file")?;
        Ok(stats)
    });
    // Pump the download into the extractor, reporting progress at most every 100 ms.
    let total = desc.size.max(0) as u64;
    let mut done = 0u64;
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut extractor_quit = false;
    let pump: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            abort.check()?;
            let chunk = chunk?;
            done += chunk.len() as u64;
            if last.elapsed() >= Duration::from_millis(100) {
                last = Instant::now();
                progress.send(Progress::Downloading {
                    digest: desc.digest.clone(),
                    done,
                    total,
                });
            }
            // Waits while the extractor is QUEUED_BYTES behind.
            let permit = budget
                .clone()
                .acquire_many_owned(chunk.len().clamp(1, QUEUED_BYTES) as u32)
                .await
                .map_err(|_| Error::internal("download budget closed"))?;
            if tx.send(Ok((chunk, permit))).await.is_err() {
                extractor_quit = true; // its error tells why
                break;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = &pump {
        let _ = tx.send(Err(e.clone())).await;
    }
    drop(tx);
    progress.send(Progress::Downloading {
        digest: desc.digest.clone(),
        done,
        total,
    });
    progress.send(Progress::Extracting {
        digest: desc.digest.clone(),
    });
    let extracted = joined(extract.await);
    // A decompression failure (bad data, digest mismatch, cancel) is the cause of whatever the
    // extractor then reported.
    let unpacked = joined(decompress.await).and_then(|compression| Ok((extracted?, compression)));
    let (stats, compression) = match (unpacked, pump) {
        (Ok(r), Ok(())) => r,
        // The download failed (digest, network, stall, cancel): the extractor's complaint
        // about the bytes it got (a bad gzip checksum, a short archive) is only a consequence.
        (_, Err(download_error)) => return Err(download_error),
        (Err(e), Ok(())) if extractor_quit && is_content_error(&e) => {
            // Content the extractor refuses may simply not be the blob the manifest names (a
            // corrupt gzip stream fails before its digest could be checked): read the rest to
            // tell the two apart, and report the digest first.
            return Err(digest_error_in_rest(&mut stream, abort).await.unwrap_or(e));
        }
        (Err(e), Ok(())) => return Err(e),
    };
    progress.send(Progress::Verifying {
        digest: desc.digest.clone(),
    });
    if stats.diff_digest != diff_id {
        return Err(Error::new(
            Status::DigestMismatch,
            format!(
                "layer {} unpacks to {} but the config says {diff_id}",
                desc.digest, stats.diff_digest
            ),
        )
        .with_subject(desc.digest.clone()));
    }
    let new = NewLayer {
        id: id.to_string(),
        parent: parent.map(String::from),
        compressed_digest: desc.digest.clone(),
        compressed_size: desc.size,
        diff_digest: stats.diff_digest,
        diff_size: stats.diff_size as i64,
        compression,
        uids: stats.uids,
        gids: stats.gids,
    };
    Ok(Fetched::Staged {
        staging,
        new,
        _blob_lock: blob_lock,
    })
}

/// An extraction error that bad bytes can cause (not a full disk, not a cancel).
fn is_content_error(e: &Error) -> bool {
    match e.status {
        Status::UnsafeArchive | Status::InvalidArgument | Status::Unsupported => true,
        Status::Io => e.os_errno == 0,
        _ => false,
    }
}

/// Reads the rest of a verified blob stream; its DIGEST_MISMATCH, if the blob has one.
async fn digest_error_in_rest(
    stream: &mut crate::registry::BlobStream,
    abort: &CancelFlag,
) -> Option<Error> {
    while let Some(item) = stream.next().await {
        if abort.is_cancelled() {
            return None;
        }
        match item {
            Ok(_) => {}
            Err(e) if e.status == Status::DigestMismatch => return Some(e),
            Err(_) => return None,
        }
    }
    None
}

/// Compressed bytes queued per layer between the download and the extractor: enough to keep
/// both busy, and small enough that parallel layers stay within a few MiB.
const QUEUED_BYTES: usize = 1 << 20;

/// A downloaded chunk and its share of the layer's byte budget, given back once it is read.
type Chunk = (bytes::Bytes, tokio::sync::OwnedSemaphorePermit);

/// Uncompressed buffers handed from the decompressing thread to the extracting one, and how
/// many may wait: at most (PLAIN_QUEUE + 2) × PLAIN_CHUNK bytes per layer.
const PLAIN_CHUNK: usize = 256 << 10;
const PLAIN_QUEUE: usize = 4;

/// Fills `buf` as far as the reader goes; 0 only at the end.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The extractor's end of the decompressed stream; read buffers go back for reuse. An error
/// from the decompressing side surfaces as a read error; a closed channel is the end.
struct PlainReader {
    rx: std::sync::mpsc::Receiver<Result<Vec<u8>>>,
    recycle: std::sync::mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for PlainReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(next)) => {
                    let mut used = std::mem::replace(&mut self.current, next);
                    if used.capacity() >= PLAIN_CHUNK {
                        used.resize(PLAIN_CHUNK, 0);
                        let _ = self.recycle.send(used);
                    }
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads the chunks the download pump sends; errors (digest mismatch, cancel) surface as read errors.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<Chunk>>,
    current: bytes::Bytes,
    /// Held while `current` has unread bytes.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    abort: CancelFlag,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            // Give the budget of the chunk read up back before waiting for the next one.
            self._permit = None;
            if self.done {
                return Ok(0);
            }
            if self.abort.is_cancelled() {
                return Err(Error::cancelled().into());
            }
            match self.rx.blocking_recv() {
                Some(Ok((b, permit))) => {
                    self.current = b;
                    self._permit = Some(permit);
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// Flushes the store's file system every PERIOD while layers are extracted, so that the syncfs
/// of the commit finds little left to write (1.12 → 1.03 s for a Debian image, 3.0 → 2.55 s for
/// 50,000 small files, on ext4). The thread ends as soon as this is dropped.
struct EarlyWriteback {
    _running: std::sync::mpsc::Sender<()>,
}

impl EarlyWriteback {
    const PERIOD: Duration = Duration::from_millis(200);

    fn start(root: &std::path::Path) -> EarlyWriteback {
        let (running, stopped) = std::sync::mpsc::channel::<()>();
        let root = root.to_path_buf();
        // Without the thread the pull is as correct, only slower: a spawn failure is ignored.
        let _ = std::thread::Builder::new()
            .name("cimage-flush".into())
            .spawn(move || {
                let Ok(dir) = std::fs::File::open(&root) else {
                    return;
                };
                // Wakes up early, and ends, when the sender is dropped.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Self::PERIOD)
                {
                    let _ = nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir));
                }
            });
        EarlyWriteback { _running: running }
    }
}
