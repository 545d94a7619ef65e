//! The store: containers/storage's on-disk format (store-format.md), shared with podman, skopeo,
//! buildah and CRI-O. Every metadata file is read only under its lock after a token check, and
//! written only under its exclusive lock with a fresh token (§5). Locks are taken in the order
//! storage → layers → (mountpoints, a leaf) → images → containers and held briefly.

pub mod blob_locks;
pub mod check;
pub mod files;
pub mod lock;
pub mod records;

use crate::config::storage::{DriverKind, StorageConfig};
use crate::digest;
use crate::drivers::{self, Driver, LayerContent};
use crate::error::{Error, Result, ResultExt, Status};
use files::{read_or_empty, write_atomic};
use lock::{create_dir_all_mode, LockFile, LockGuard};
use records::*;
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// How to open a store. Unset fields come from storage.conf (or the built-in defaults).
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub graph_root: Option<PathBuf>,
    pub run_root: Option<PathBuf>,
    pub driver: Option<DriverKind>,
    /// A storage.conf to read instead of the system's.
    pub config_file: Option<PathBuf>,
    /// Whether writes are made durable (metadata fdatasync'ed, a pull's layer data flushed by a
    /// syncfs before its record). None: the configured value (on by default).
    pub sync: Option<bool>,
}

/// A JSON metadata file, its lock, and what we last loaded from it.
struct JsonFile<T> {
    path: PathBuf,
    lock: LockFile,
    token: Option<Vec<u8>>,
    /// layers.json is also reloaded when its mtime changes (hand edits), as containers/storage does.
    check_mtime: bool,
    mtime: Option<SystemTime>,
    records: Vec<T>,
}

impl<T: Serialize + DeserializeOwned> JsonFile<T> {
    fn new(path: PathBuf, lock: PathBuf, check_mtime: bool) -> Self {
        JsonFile {
            path,
            lock: LockFile::new(lock),
            token: None,
            check_mtime,
            mtime: None,
            records: Vec::new(),
        }
    }

    fn mtime(&self) -> Option<SystemTime> {
        if self.check_mtime {
            std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok()
        } else {
            None
        }
    }

    fn lock(&mut self, exclusive: bool) -> Result<LockGuard> {
        let g = if exclusive {
            self.lock.lock_exclusive()?
        } else {
            self.lock.lock_shared()?
        };
        self.refresh(&g)?;
        Ok(g)
    }

    /// Reloads if another process wrote since we last looked.
    fn refresh(&mut self, guard: &LockGuard) -> Result<()> {
        let token = guard.read_token()?;
        let mtime = self.mtime();
        if self.token.as_ref() == Some(&token) && mtime == self.mtime {
            return Ok(());
        }
        let data = read_or_empty(&self.path)?;
        self.records = if data.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            serde_json::from_slice(&data).map_err(|e| {
                Error::new(
                    Status::Internal,
                    format!("store file {} is corrupt: {e}", self.path.display()),
                )
            })?
        };
        self.token = Some(token);
        self.mtime = mtime;
        Ok(())
    }

    /// Token first, then the file (the newest containers/storage order, §5.4).
    fn save(&mut self, guard: &LockGuard, sync: bool) -> Result<()> {
        let pending = self.prepare_save(guard, sync)?;
        self.finish_save(pending)
    }

    /// A save in two halves: the token and the temporary file now, the rename in `finish_save`
    /// (so that several files can be flushed together in between: `files::flush_files`, or a
    /// syncfs).
    fn prepare_save(&mut self, guard: &LockGuard, sync: bool) -> Result<PendingSave> {
        let token = guard.write_token()?;
        let data = to_go_json(&self.records)
            .map_err(|e| Error::internal(format!("encoding {}: {e}", self.path.display())))?;
        let write = files::prepare_atomic(&self.path, &data, 0o600, sync)?;
        Ok(PendingSave { token, write })
    }

    fn finish_save(&mut self, pending: PendingSave) -> Result<()> {
        pending.write.commit()?;
        self.token = Some(pending.token);
        self.mtime = self.mtime();
        Ok(())
    }
}

/// A metadata file written but not yet renamed into place, and the token written for it.
struct PendingSave {
    token: Vec<u8>,
    write: files::PreparedWrite,
}

impl PendingSave {
    fn temp_path(&self) -> &Path {
        self.write.temp_path()
    }
}

struct State {
    layers: JsonFile<LayerRecord>,
    mounts: JsonFile<MountRecord>,
    images: JsonFile<ImageRecord>,
    containers: JsonFile<ContainerRecord>,
}

/// An open store. Thread-safe: operations of one process are serialised by an internal mutex,
/// processes by the containers/storage lock files.
pub struct Store {
    graph_root: PathBuf,
    run_root: PathBuf,
    driver: Driver,
    config: StorageConfig,
    storage_lock: LockFile,
    state: Mutex<State>,
}

/// An image as listed by queries.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    pub names: Vec<String>,
    pub digest: Option<String>,
    /// Sum of the uncompressed sizes of its layers; -1 if one is unknown.
    pub size: i64,
    pub created: Option<String>,
    pub top_layer: Option<String>,
}

/// A layer as listed by queries.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    pub id: String,
    pub names: Vec<String>,
    pub parent: Option<String>,
    pub diff_digest: Option<String>,
    pub compressed_digest: Option<String>,
    pub diff_size: i64,
    pub compressed_size: i64,
    pub created: Option<String>,
}

/// A container as listed by queries.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    pub layer: String,
    pub mount_point: Option<String>,
    pub created: Option<String>,
}

/// A layer extracted into a staging directory, ready to be committed.
pub struct NewLayer {
    pub id: String,
    pub parent: Option<String>,
    pub compressed_digest: String,
    pub compressed_size: i64,
    pub diff_digest: String,
    pub diff_size: i64,
    /// containers/storage's code: 0 none, 2 gzip, 4 zstd.
    pub compression: i64,
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

/// An image to record once its layers are in the store.
pub struct NewImage {
    pub id: String,
    pub top_layer: Option<String>,
    pub digest: String,
    pub names: Vec<String>,
    pub created: Option<String>,
    /// Items in the order containers/image writes them.
    pub big_data: Vec<BigData>,
    pub metadata: String,
}

/// One big-data item of an image (§2.2).
pub struct BigData {
    pub key: String,
    pub data: Vec<u8>,
    /// For manifest keys the manifest's digest; otherwise sha256 of `data`.
    pub digest: String,
}

/// A scratch directory under R/tmp for one layer's extraction, guarded by a lock file so that a
/// store opened later can tell a dead process's leftovers from live work. Removed on drop.
pub struct StagingDir {
    dir: PathBuf,
    lock_path: PathBuf,
    _guard: LockGuard,
}

impl StagingDir {
    /// The tree the layer is extracted into.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }
    /// The tar-split file written during extraction.
    pub fn tar_split(&self) -> PathBuf {
        self.dir.join("tar-split.gz")
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = crate::unpack::remove_tree(&self.dir);
        let _ = std::fs::remove_file(&self.lock_path);
        // The staging root is not part of the containers/storage layout: leave none behind.
        // (Fails harmlessly while another pull still stages there.)
        if let Some(root) = self
            .dir
            .parent()
            .filter(|r| r.ends_with(OVERLAY_STAGING_ROOT))
        {
            let _ = std::fs::remove_dir(root);
        }
    }
}

const STAGING_PREFIX: &str = "cimage-staging-";
/// mountpoints.json lives in the run root, which is volatile (a tmpfs, emptied at boot): it is
/// never synced.
const RUN_ROOT_SYNC: bool = false;
/// The overlay driver's staging root, inside the driver home (see `Store::staging_root`).
const OVERLAY_STAGING_ROOT: &str = "cimage-staging";

/// containers/storage's ID for a pulled layer (§3.2): not the OCI ChainID.
pub fn layer_id_for(parent: Option<&str>, diff_id: &str) -> String {
    let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
    match parent {
        None => hex.to_string(),
        Some(p) => digest::sha256_hex(format!("{p}+{hex}").as_bytes()),
    }
}

fn opt(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

impl Store {
    /// Opens (creating if needed) the store, and cleans up what an interrupted writer left.
    pub fn open(opts: &StoreOptions) -> Result<Store> {
        let mut config = StorageConfig::load(opts.config_file.as_deref())?;
        if let Some(g) = &opts.graph_root {
            config.graph_root = g.clone();
        }
        if let Some(r) = &opts.run_root {
            config.run_root = r.clone();
        }
        if let Some(d) = opts.driver {
            config.driver = Some(d);
        }
        if let Some(sync) = opts.sync {
            config.sync = sync;
        }
        if config.graph_root.as_os_str().is_empty() || config.run_root.as_os_str().is_empty() {
            return Err(Error::invalid("graph root and run root must not be empty"));
        }
        for (what, p) in [
            ("graph root", &config.graph_root),
            ("run root", &config.run_root),
        ] {
            if !p.is_absolute() {
                return Err(Error::invalid(format!(
                    "{what} {} must be an absolute path",
                    p.display()
                )));
            }
            match std::fs::metadata(p) {
                Ok(m) if !m.is_dir() => {
                    return Err(Error::invalid(format!(
                        "{what} {} exists and is not a directory",
                        p.display()
                    ))
                    .with_subject(p.display().to_string()))
                }
                _ => {}
            }
        }
        create_dir_all_mode(&config.graph_root, 0o700)?;
        create_dir_all_mode(&config.run_root, 0o700)?;
        // Without symlinks in them: mount points are recognised by comparing with the kernel's
        // mount table, which has resolved paths (a graph root under a symlink would make every
        // mount look unmounted, and unmounting then removing a layer fail with EBUSY).
        for root in [&mut config.graph_root, &mut config.run_root] {
            *root = std::fs::canonicalize(&*root).ctx(format!("resolving {}", root.display()))?;
        }
        let graph_root = config.graph_root.clone();
        let run_root = config.run_root.clone();
        let kind = match config.driver {
            Some(k) => k,
            None => Self::detect_driver(&graph_root),
        };
        if kind == DriverKind::Overlay && config.mount_program.is_some() {
            return Err(Error::new(Status::Unsupported, "storage.conf configures a mount_program (fuse-overlayfs); cimage supports native overlay and vfs only"));
        }
        if kind == DriverKind::Overlay && !drivers::overlay::kernel_supports_overlay() {
            return Err(Error::new(
                Status::Unsupported,
                "the kernel has no overlay file system; use the vfs driver",
            ));
        }
        let d = kind.name();
        for dir in [
            "mounts",
            "tmp",
            &format!("{d}-layers"),
            &format!("{d}-images"),
            &format!("{d}-containers"),
        ] {
            create_dir_all_mode(&graph_root.join(dir), 0o700)?;
        }
        create_dir_all_mode(&run_root.join(format!("{d}-layers")), 0o700)?;
        create_dir_all_mode(&run_root.join(format!("{d}-containers")), 0o700)?;
        let storage_lock = LockFile::new(graph_root.join("storage.lock"));
        storage_lock.ensure_exists()?;
        LockFile::new(graph_root.join("userns.lock")).ensure_exists()?;
        let driver = {
            let _g = storage_lock.lock_exclusive()?;
            Driver::init(kind, &graph_root, &config.mount_options)?
        };
        let layers_dir = graph_root.join(format!("{d}-layers"));
        let images_dir = graph_root.join(format!("{d}-images"));
        let containers_dir = graph_root.join(format!("{d}-containers"));
        let mounts_dir = run_root.join(format!("{d}-layers"));
        let state = State {
            layers: JsonFile::new(
                layers_dir.join("layers.json"),
                layers_dir.join("layers.lock"),
                true,
            ),
            mounts: JsonFile::new(
                mounts_dir.join("mountpoints.json"),
                mounts_dir.join("mountpoints.lock"),
                false,
            ),
            images: JsonFile::new(
                images_dir.join("images.json"),
                images_dir.join("images.lock"),
                false,
            ),
            containers: JsonFile::new(
                containers_dir.join("containers.json"),
                containers_dir.join("containers.lock"),
                false,
            ),
        };
        let store = Store {
            graph_root,
            run_root,
            driver,
            config,
            storage_lock,
            state: Mutex::new(state),
        };
        store.recover()?;
        crate::log::debug(format!(
            "opened store {} (run root {}, driver {})",
            store.graph_root.display(),
            store.run_root.display(),
            kind.name()
        ));
        Ok(store)
    }

    /// A driver already used in the graph root wins; else overlay when the kernel has it.
    fn detect_driver(graph_root: &Path) -> DriverKind {
        if graph_root.join("overlay-layers").is_dir() || graph_root.join("overlay").is_dir() {
            DriverKind::Overlay
        } else if graph_root.join("vfs-layers").is_dir() {
            DriverKind::Vfs
        } else if drivers::overlay::kernel_supports_overlay() && nix::unistd::geteuid().is_root() {
            DriverKind::Overlay
        } else {
            DriverKind::Vfs
        }
    }

    pub fn graph_root(&self) -> &Path {
        &self.graph_root
    }
    pub fn run_root(&self) -> &Path {
        &self.run_root
    }
    pub fn driver_kind(&self) -> DriverKind {
        self.driver.kind()
    }
    pub fn driver(&self) -> &Driver {
        &self.driver
    }
    pub fn driver_status(&self) -> Vec<(String, String)> {
        self.driver.status()
    }
    pub fn sync_writes(&self) -> bool {
        self.config.sync
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::internal("store state lock poisoned by an earlier panic"))
    }

    fn layers_dir(&self) -> PathBuf {
        self.graph_root
            .join(format!("{}-layers", self.driver.kind().name()))
    }
    fn images_dir(&self) -> PathBuf {
        self.graph_root
            .join(format!("{}-images", self.driver.kind().name()))
    }
    fn containers_dir(&self) -> PathBuf {
        self.graph_root
            .join(format!("{}-containers", self.driver.kind().name()))
    }
    fn tar_split_path(&self, layer_id: &str) -> PathBuf {
        self.layers_dir().join(format!("{layer_id}.tar-split.gz"))
    }

    /// What an interrupted operation left: incomplete layers (§6.2) and staging directories of
    /// dead processes.
    fn recover(&self) -> Result<()> {
        let mut st = self.state()?;
        let g = st.layers.lock(true)?;
        let incomplete: Vec<String> = st
            .layers
            .records
            .iter()
            .filter(|l| l.is_incomplete())
            .map(|l| l.id.clone())
            .collect();
        if !incomplete.is_empty() {
            for id in &incomplete {
                crate::log::info(format!(
                    "removing incomplete layer {id} left by an interrupted writer"
                ));
                self.driver.remove_layer(id)?;
                let _ = std::fs::remove_file(self.tar_split_path(id));
                let _ = std::fs::remove_dir_all(self.layers_dir().join(id));
            }
            st.layers.records.retain(|l| !l.is_incomplete());
            st.layers.save(&g, self.config.sync)?;
        }
        // Temporary files of interrupted atomic writes (§6.1): removable under the lock.
        remove_temp_files(&self.layers_dir());
        self.recover_mounts(&mut st)?;
        drop(g);
        // Image and container directories without a record: an image commit that died before
        // saving its record, a deletion that died after saving. Under the exclusive lock no
        // writer is half-way (records are saved before their directories are used, and
        // deletions remove directories after the record, under the same lock).
        {
            let _ig = st.images.lock(true)?;
            remove_temp_files(&self.images_dir());
            for image in &st.images.records {
                remove_temp_files(&self.images_dir().join(&image.id));
            }
            let known: Vec<&str> = st.images.records.iter().map(|i| i.id.as_str()).collect();
            remove_unrecorded_dirs(&self.images_dir(), &known, "image")?;
        }
        {
            let _cg = st.containers.lock(true)?;
            remove_temp_files(&self.containers_dir());
            // Newer containers/storage may also keep container records in volatile or
            // transient (run-root) files this version does not manage: their directories are
            // theirs. When such a file cannot be read, nothing is removed.
            if let Some(foreign) = self.foreign_record_ids("containers") {
                let mut known: Vec<&str> = st
                    .containers
                    .records
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect();
                known.extend(foreign.iter().map(String::as_str));
                remove_unrecorded_dirs(&self.containers_dir(), &known, "container")?;
                remove_unrecorded_dirs(
                    &self
                        .run_root
                        .join(format!("{}-containers", self.driver.kind().name())),
                    &known,
                    "container",
                )?;
            }
        }
        drop(st);
        let tmp = self.staging_root();
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(base) = name
                    .strip_prefix(STAGING_PREFIX)
                    .and_then(|n| n.strip_suffix(".lock"))
                {
                    let lf = LockFile::new(e.path());
                    if let Some(_g) = lf.try_lock_exclusive()? {
                        let dir = tmp.join(format!("{STAGING_PREFIX}{base}"));
                        crate::log::info(format!(
                            "removing stale staging directory {}",
                            dir.display()
                        ));
                        if dir.exists() {
                            crate::unpack::remove_tree(&dir)?;
                        }
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        if self.driver.kind() == DriverKind::Overlay {
            let _ = std::fs::remove_dir(&tmp); // only when empty: live pulls keep theirs
        }
        Ok(())
    }

    /// IDs of the records of `kind` ("layers" or "containers") kept in files this version does
    /// not manage (store-format.md §2.5): `volatile-<kind>.json` in the graph-root and run-root
    /// directories, and a run-root `<kind>.json` (transient store). None when one of them is
    /// unreadable, so that callers do not take a record's directory for debris.
    pub(crate) fn foreign_record_ids(&self, kind: &str) -> Option<Vec<String>> {
        Some(
            self.foreign_records(kind)?
                .iter()
                .filter_map(|r| r.get("id").and_then(|i| i.as_str()).map(String::from))
                .collect(),
        )
    }

    /// The records behind `foreign_record_ids`, as JSON objects.
    pub(crate) fn foreign_records(&self, kind: &str) -> Option<Vec<serde_json::Value>> {
        let d = self.driver.kind().name();
        let graph_dir = self.graph_root.join(format!("{d}-{kind}"));
        let run_dir = self.run_root.join(format!("{d}-{kind}"));
        let files = [
            graph_dir.join(format!("volatile-{kind}.json")),
            run_dir.join(format!("volatile-{kind}.json")),
            run_dir.join(format!("{kind}.json")),
        ];
        let mut all = Vec::new();
        for f in files {
            let data = match std::fs::read(&f) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => return None,
            };
            if data.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let records: Vec<serde_json::Value> = serde_json::from_slice(&data).ok()?;
            all.extend(records);
        }
        Some(all)
    }

    /// Drops mount counts that no longer describe a mount (the caller holds layers.lock
    /// exclusively, so no mount or unmount is half-way): counts of layers that are gone, counts
    /// of zero or less, and — overlay only, where the kernel says what is mounted — counts whose
    /// mount point is not mounted any more (a process killed between unmounting and saving the
    /// count, a mount namespace that died, a persistent run root after a reboot). Without this a
    /// stale count keeps a container "mounted" and undeletable forever.
    fn recover_mounts(&self, st: &mut State) -> Result<()> {
        let mg = st.mounts.lock(true)?;
        remove_temp_files(st.mounts.path.parent().unwrap_or(Path::new("/")));
        let overlay = self.driver.kind() == DriverKind::Overlay;
        let layers = &st.layers.records;
        // Layers of volatile/transient records count as known; if their files are unreadable,
        // no count is dropped for an unknown layer.
        let foreign = self.foreign_record_ids("layers");
        let before = st.mounts.records.len();
        st.mounts.records.retain(|m| {
            let known = layers.iter().any(|l| l.id == m.id)
                || foreign.as_ref().is_none_or(|f| f.contains(&m.id));
            let live = m.count > 0 && (!overlay || self.driver.is_mounted(&m.id));
            if !(known && live) {
                crate::log::info(format!(
                    "dropping stale mount count {} of layer {} ({})",
                    m.count,
                    m.id,
                    if known {
                        "not mounted"
                    } else {
                        "no such layer"
                    }
                ));
            }
            known && live
        });
        if st.mounts.records.len() != before {
            st.mounts.save(&mg, self.config.sync)?;
        }
        Ok(())
    }

    /// Where layers are extracted before they are committed. It must be on the same mount as
    /// the layer directories so that the commit is a rename: the overlay home is bind-mounted
    /// onto itself (by us or podman), so for overlay it lives inside the home, under a name that
    /// is not a layer ID (containers/storage's garbage collection only touches 64-hex names, and
    /// 1.43 wipes only `staging/`).
    fn staging_root(&self) -> PathBuf {
        match self.driver.kind() {
            DriverKind::Overlay => self.graph_root.join("overlay").join(OVERLAY_STAGING_ROOT),
            DriverKind::Vfs => self.graph_root.join("tmp"),
        }
    }

    /// A fresh staging directory for one layer (same mount as the driver's layer directories).
    pub fn new_staging_dir(&self) -> Result<StagingDir> {
        let base = digest::hex(&files::random_bytes::<8>());
        let tmp = self.staging_root();
        let lock_path = tmp.join(format!("{STAGING_PREFIX}{base}.lock"));
        let dir = tmp.join(format!("{STAGING_PREFIX}{base}"));
        // Another pull's drop may remove the (empty) staging root between our steps: retry.
        for _ in 0..3 {
            create_dir_all_mode(&tmp, 0o700)?;
            let guard = LockFile::new(&lock_path).lock_exclusive()?;
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    return Ok(StagingDir {
                        dir,
                        lock_path,
                        _guard: guard,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(e, format!("creating {}", dir.display()))),
            }
        }
        Err(Error::internal(format!(
            "could not create a staging directory in {}",
            tmp.display()
        )))
    }

    // ---- queries -------------------------------------------------------------------------

    fn layer_info(l: &LayerRecord) -> LayerInfo {
        LayerInfo {
            id: l.id.clone(),
            names: l.names.clone(),
            parent: opt(&l.parent),
            diff_digest: opt(&l.diff_digest),
            compressed_digest: opt(&l.compressed_diff_digest),
            diff_size: if l.diff_digest.is_empty() {
                -1
            } else {
                l.diff_size
            },
            compressed_size: l.compressed_size,
            created: opt(&l.created),
        }
    }

    fn image_info(img: &ImageRecord, layers: &[LayerRecord]) -> ImageInfo {
        let mut size = 0i64;
        let mut next = opt(&img.layer);
        let mut depth = 0;
        while let Some(id) = next {
            depth += 1;
            match layers.iter().find(|l| l.id == id) {
                Some(l) if !l.diff_digest.is_empty() && l.diff_size >= 0 && depth <= 10_000 => {
                    size += l.diff_size;
                    next = opt(&l.parent);
                }
                _ => {
                    size = -1;
                    break;
                }
            }
        }
        ImageInfo {
            id: img.id.clone(),
            names: img.names.clone(),
            digest: opt(&img.digest),
            size,
            created: opt(&img.created),
            top_layer: opt(&img.layer),
        }
    }

    fn container_info(c: &ContainerRecord, mounts: &[MountRecord]) -> ContainerInfo {
        let mount_point = mounts
            .iter()
            .find(|m| m.id == c.layer && m.count > 0 && !m.path.is_empty())
            .map(|m| m.path.clone());
        ContainerInfo {
            id: c.id.clone(),
            names: c.names.clone(),
            image: c.image.clone(),
            layer: c.layer.clone(),
            mount_point,
            created: opt(&c.created),
        }
    }

    pub fn layers(&self) -> Result<Vec<LayerInfo>> {
        let mut st = self.state()?;
        let _g = st.layers.lock(false)?;
        Ok(st
            .layers
            .records
            .iter()
            .filter(|l| !l.is_incomplete())
            .map(Self::layer_info)
            .collect())
    }

    pub fn images(&self) -> Result<Vec<ImageInfo>> {
        let mut st = self.state()?;
        let _lg = st.layers.lock(false)?;
        let _ig = st.images.lock(false)?;
        Ok(st
            .images
            .records
            .iter()
            .map(|i| Self::image_info(i, &st.layers.records))
            .collect())
    }

    pub fn containers(&self) -> Result<Vec<ContainerInfo>> {
        let mut st = self.state()?;
        let _lg = st.layers.lock(false)?;
        {
            let _mg = st.mounts.lock(false)?;
        }
        let _cg = st.containers.lock(false)?;
        Ok(st
            .containers
            .records
            .iter()
            .map(|c| Self::container_info(c, &st.mounts.records))
            .collect())
    }

    pub fn image(&self, key: &str) -> Result<ImageInfo> {
        let mut st = self.state()?;
        let _lg = st.layers.lock(false)?;
        let _ig = st.images.lock(false)?;
        let img = find_image(&st.images.records, key)?;
        Ok(Self::image_info(img, &st.layers.records))
    }

    pub fn layer(&self, key: &str) -> Result<LayerInfo> {
        let mut st = self.state()?;
        let _g = st.layers.lock(false)?;
        find_layer(&st.layers.records, key).map(Self::layer_info)
    }

    pub fn container(&self, key: &str) -> Result<ContainerInfo> {
        let mut st = self.state()?;
        let _lg = st.layers.lock(false)?;
        {
            let _mg = st.mounts.lock(false)?;
        }
        let _cg = st.containers.lock(false)?;
        find_container(&st.containers.records, key)
            .map(|c| Self::container_info(c, &st.mounts.records))
    }

    /// An image's big-data item (e.g. "manifest", or the config under its digest).
    pub fn image_big_data(&self, key: &str, item: &str) -> Result<Vec<u8>> {
        let mut st = self.state()?;
        let _ig = st.images.lock(false)?;
        let img = find_image(&st.images.records, key)?;
        if !img.big_data_names.iter().any(|n| n == item) {
            return Err(Error::not_found(format!(
                "image {} has no {item:?} item",
                img.id
            )));
        }
        let p = self
            .images_dir()
            .join(&img.id)
            .join(files::big_data_file_name(item));
        std::fs::read(&p).ctx(format!("reading {}", p.display()))
    }

    pub fn image_manifest(&self, key: &str) -> Result<Vec<u8>> {
        self.image_big_data(key, "manifest")
    }

    pub fn image_config(&self, key: &str) -> Result<Vec<u8>> {
        let id = self.image(key)?.id;
        self.image_big_data(&id, &format!("sha256:{id}"))
    }

    /// Whether a complete layer with this ID exists.
    pub fn has_layer(&self, id: &str) -> Result<bool> {
        let mut st = self.state()?;
        let _g = st.layers.lock(false)?;
        Ok(st
            .layers
            .records
            .iter()
            .any(|l| l.id == id && !l.is_incomplete()))
    }

    /// The uncompressed tar of a layer, rebuilt from its tar-split file and its files.
    pub fn tar_split_file(&self, layer_id: &str) -> PathBuf {
        self.tar_split_path(layer_id)
    }

    // ---- writes --------------------------------------------------------------------------

    /// Moves extracted layers into the store (§5.6 rule 4), parents first, as one batch: under
    /// layers.lock the records are saved as incomplete before the driver directories exist, and
    /// completed after, so layers.json is written twice per batch rather than twice per layer.
    /// With `sync`, one syncfs puts every layer's files and tar-split on disk before the record
    /// that makes them visible. If one layer cannot be moved, none of the batch is committed.
    pub fn commit_layers(&self, batch: Vec<(NewLayer, StagingDir)>) -> Result<()> {
        let mut st = self.state()?;
        let g = st.layers.lock(true)?;
        let complete = |records: &[LayerRecord], id: &str| {
            records.iter().any(|l| l.id == id && !l.is_incomplete())
        };
        let mut todo: Vec<(NewLayer, StagingDir)> = Vec::new();
        for (new, staging) in batch {
            if complete(&st.layers.records, &new.id) {
                continue; // another puller committed it meanwhile
            }
            if let Some(p) = &new.parent {
                if !complete(&st.layers.records, p) && !todo.iter().any(|(t, _)| &t.id == p) {
                    return Err(Error::internal(format!(
                        "parent layer {p} of {} is missing",
                        new.id
                    )));
                }
            }
            todo.push((new, staging));
        }
        if todo.is_empty() {
            return Ok(());
        }
        let created = now_rfc3339();
        for (new, _) in &todo {
            let mut rec = LayerRecord {
                id: new.id.clone(),
                parent: new.parent.clone().unwrap_or_default(),
                created: created.clone(),
                ..Default::default()
            };
            rec.set_incomplete(true);
            st.layers.records.push(rec);
        }
        st.layers.save(&g, self.config.sync)?;
        let mut moved = Vec::new();
        let result = (|| -> Result<()> {
            for (new, staging) in &todo {
                moved.push(new.id.clone());
                self.driver.create_layer(
                    &new.id,
                    new.parent.as_deref(),
                    LayerContent::Staged(&staging.tree()),
                )?;
                // A copy, not a rename: the staging directory may be on another mount (overlay
                // home). Not synced here: the syncfs below covers it.
                let tar_split =
                    std::fs::read(staging.tar_split()).ctx("reading the staged tar-split file")?;
                write_atomic(&self.tar_split_path(&new.id), &tar_split, 0o600, false)?;
            }
            if self.config.sync {
                // Layer data must be on disk before the record that makes it visible.
                self.sync_fs(&self.driver.layer_dir(&todo[0].0.id))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            for id in &moved {
                let _ = self.driver.remove_layer(id);
                let _ = std::fs::remove_file(self.tar_split_path(id));
            }
            st.layers
                .records
                .retain(|l| !todo.iter().any(|(t, _)| t.id == l.id));
            let _ = st.layers.save(&g, self.config.sync);
            return Err(e);
        }
        for (new, _) in todo {
            let rec = st
                .layers
                .records
                .iter_mut()
                .find(|l| l.id == new.id)
                .expect("added above");
            rec.compressed_diff_digest = new.compressed_digest;
            rec.compressed_size = new.compressed_size;
            rec.diff_digest = new.diff_digest;
            rec.diff_size = new.diff_size;
            rec.compression = new.compression;
            rec.uidset = new.uids;
            rec.gidset = new.gids;
            rec.set_incomplete(false);
        }
        st.layers.save(&g, self.config.sync)
    }

    /// Flushes the file system that holds `path` (data, metadata and renames: one call for
    /// everything a commit wrote, instead of an fsync per file and per directory).
    fn sync_fs(&self, path: &Path) -> Result<()> {
        let f = std::fs::File::open(path).ctx(format!("opening {}", path.display()))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)).map_err(|e| {
            Error::io(
                e.into(),
                format!("syncing the file system of {}", path.display()),
            )
        })
    }

    /// Records an image (or adds names to an existing one with the same ID, §3.1).
    pub fn commit_image(&self, new: NewImage) -> Result<ImageInfo> {
        let mut st = self.state()?;
        let _lg = st.layers.lock(false)?;
        if let Some(top) = &new.top_layer {
            if !st
                .layers
                .records
                .iter()
                .any(|l| &l.id == top && !l.is_incomplete())
            {
                return Err(Error::internal(format!(
                    "top layer {top} of image {} is missing",
                    new.id
                )));
            }
        }
        let ig = st.images.lock(true)?;
        let dir = self.images_dir().join(&new.id);
        let existing = st.images.records.iter().position(|i| i.id == new.id);
        if let Some(pos) = existing {
            if opt(&st.images.records[pos].layer) != new.top_layer {
                return Err(Error::new(
                    Status::AlreadyExists,
                    format!("image {} exists with a different top layer", new.id),
                ));
            }
        }
        create_dir_all_mode(&dir, 0o700)?;
        let mut rec = match existing {
            Some(pos) => st.images.records[pos].clone(),
            None => ImageRecord {
                id: new.id.clone(),
                digest: new.digest.clone(),
                layer: new.top_layer.clone().unwrap_or_default(),
                metadata: new.metadata.clone(),
                created: new.created.clone().unwrap_or_else(now_rfc3339),
                ..Default::default()
            },
        };
        let mut written = Vec::new();
        for item in &new.big_data {
            if rec.big_data_names.contains(&item.key) {
                continue;
            }
            // Not synced one by one: flushed together below, before the record that names them.
            let path = dir.join(files::big_data_file_name(&item.key));
            write_atomic(&path, &item.data, 0o600, false)?;
            written.push(path);
            rec.big_data_names.push(item.key.clone());
            rec.big_data_sizes
                .insert(item.key.clone(), item.data.len() as i64);
            rec.big_data_digests
                .insert(item.key.clone(), item.digest.clone());
        }
        for name in &new.names {
            for other in st.images.records.iter_mut().filter(|i| i.id != new.id) {
                other.names.retain(|n| n != name);
            }
            if !rec.names.contains(name) {
                rec.names.push(name.clone());
            }
            rec.names_history.retain(|n| n != name);
            rec.names_history.insert(0, name.clone());
        }
        // Just these files, not a syncfs: an image whose layers are all present (a new tag, a
        // second manifest for the same layers) would otherwise wait for every unrelated dirty
        // page on the file system.
        if self.config.sync {
            files::flush_files(&written)?;
        }
        match existing {
            Some(pos) => st.images.records[pos] = rec.clone(),
            None => st.images.records.push(rec.clone()),
        }
        st.images.save(&ig, self.config.sync)?;
        Ok(Self::image_info(&rec, &st.layers.records))
    }

    /// Creates a container: a new empty writable layer over the image's top layer, then the record.
    pub fn create_container(
        &self,
        image_key: &str,
        name: Option<&str>,
        metadata: Option<&str>,
    ) -> Result<ContainerInfo> {
        if let Some(n) = name {
            if n.is_empty() || n.len() > 253 || n.chars().any(|c| c.is_control() || c == '/') {
                return Err(Error::invalid(format!("invalid container name {n:?}")));
            }
        }
        let mut st = self.state()?;
        let lg = st.layers.lock(true)?;
        let ig = st.images.lock(false)?;
        let image = find_image(&st.images.records, image_key)?.clone();
        drop(ig);
        {
            let _cg = st.containers.lock(false)?;
            if let Some(n) = name {
                if st
                    .containers
                    .records
                    .iter()
                    .any(|c| c.names.iter().any(|x| x == n))
                {
                    return Err(Error::new(
                        Status::AlreadyExists,
                        format!("the container name {n:?} is already in use"),
                    )
                    .with_subject(n));
                }
            }
        }
        let parent = opt(&image.layer);
        let layer_id = files::random_id();
        let mut rec = LayerRecord {
            id: layer_id.clone(),
            parent: parent.clone().unwrap_or_default(),
            created: now_rfc3339(),
            ..Default::default()
        };
        rec.set_incomplete(true);
        st.layers.records.push(rec);
        st.layers.save(&lg, self.config.sync)?;
        if let Err(e) = self
            .driver
            .create_layer(&layer_id, parent.as_deref(), LayerContent::Empty)
        {
            st.layers.records.retain(|l| l.id != layer_id);
            let _ = st.layers.save(&lg, self.config.sync);
            return Err(e.context("creating the container's layer"));
        }
        let cg = st.containers.lock(true)?;
        if let Some(n) = name {
            if st
                .containers
                .records
                .iter()
                .any(|c| c.names.iter().any(|x| x == n))
            {
                drop(cg);
                self.delete_layer_locked(&mut st, &lg, &layer_id)?;
                return Err(Error::new(
                    Status::AlreadyExists,
                    format!("the container name {n:?} is already in use"),
                )
                .with_subject(n));
            }
        }
        let mut flags = serde_json::Map::new();
        flags.insert("MountLabel".into(), "".into());
        flags.insert("ProcessLabel".into(), "".into());
        let c = ContainerRecord {
            id: files::random_id(),
            names: name.map(|n| vec![n.to_string()]).unwrap_or_default(),
            image: image.id.clone(),
            layer: layer_id.clone(),
            metadata: metadata.unwrap_or_default().to_string(),
            created: now_rfc3339(),
            flags,
            ..Default::default()
        };
        if let Some(l) = st.layers.records.iter_mut().find(|l| l.id == layer_id) {
            l.set_incomplete(false);
        }
        st.containers.records.push(c.clone());
        // The layer's files and both records are written first, then made durable together
        // before either record is renamed into place: the layer is complete on disk before its
        // record says so, and the record before the container that names it (one journal
        // commit where an fdatasync per file took three).
        let saved = (|| -> Result<()> {
            let layers = st.layers.prepare_save(&lg, false)?;
            let containers = st.containers.prepare_save(&cg, false)?;
            if self.config.sync {
                match self.driver.empty_layer_files(&layer_id) {
                    Some(mut paths) => {
                        paths.push(layers.temp_path().to_path_buf());
                        paths.push(containers.temp_path().to_path_buf());
                        files::flush_files(&paths)?;
                    }
                    None => self.sync_file_systems(&[
                        &self.driver.layer_dir(&layer_id),
                        &self.layers_dir(),
                        &self.containers_dir(),
                    ])?,
                }
            }
            st.layers.finish_save(layers)?;
            st.containers.finish_save(containers)
        })();
        if let Err(e) = saved {
            st.containers.records.retain(|x| x.id != c.id);
            drop(cg);
            let _ = self.delete_layer_locked(&mut st, &lg, &layer_id);
            return Err(e);
        }
        Ok(Self::container_info(&c, &[]))
    }

    /// With sync on, one syncfs per file system holding one of `paths` (they usually share one).
    fn sync_file_systems(&self, paths: &[&Path]) -> Result<()> {
        if !self.config.sync {
            return Ok(());
        }
        let mut done = Vec::new();
        for path in paths {
            let dev = std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
            if let Ok(dev) = dev {
                if done.contains(&dev) {
                    continue;
                }
                done.push(dev);
            }
            self.sync_fs(path)?;
        }
        Ok(())
    }

    /// Mounts a container's root file system (§7) and returns the mount point.
    pub fn mount_container(&self, key: &str) -> Result<PathBuf> {
        let (layer, options) = {
            let mut st = self.state()?;
            let _cg = st.containers.lock(false)?;
            let c = find_container(&st.containers.records, key)?;
            let options: Vec<String> = c
                .flags
                .get("MountOpts")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            (c.layer.clone(), options)
        };
        self.mount_layer(&layer, &options)
    }

    fn mount_layer(&self, layer_id: &str, options: &[String]) -> Result<PathBuf> {
        let mut st = self.state()?;
        // storage.lock is held for the whole mount, as containers/storage does.
        let _sg = self.storage_lock.lock_exclusive()?;
        let lg = st.layers.lock(true)?;
        if !st
            .layers
            .records
            .iter()
            .any(|l| l.id == layer_id && !l.is_incomplete())
        {
            return Err(
                Error::not_found(format!("layer {layer_id} not known")).with_subject(layer_id)
            );
        }
        let mg = st.mounts.lock(true)?;
        let pos = st.mounts.records.iter().position(|m| m.id == layer_id);
        if let Some(p) = pos {
            let m = &st.mounts.records[p];
            if m.count > 0 && !m.path.is_empty() && self.driver.is_mounted(layer_id) {
                st.mounts.records[p].count += 1;
                let path = PathBuf::from(&st.mounts.records[p].path);
                st.mounts.save(&mg, RUN_ROOT_SYNC)?;
                return Ok(path);
            }
        } else if self.driver.kind() == DriverKind::Overlay && self.driver.is_mounted(layer_id) {
            // Mounted but not counted: a process died between mounting and saving the count.
            // Count the mount instead of stacking a second one on it.
            let path = self.driver.layer_dir(layer_id).with_file_name("merged");
            st.mounts.records.push(MountRecord {
                id: layer_id.to_string(),
                path: path.display().to_string(),
                count: 1,
            });
            st.mounts.save(&mg, self.config.sync)?;
            return Ok(path);
        }
        let path = self.driver.mount(layer_id, options)?;
        let saved = match pos {
            Some(p) => {
                let m = &mut st.mounts.records[p];
                m.count = m.count.max(0) + 1;
                m.path = path.display().to_string();
                st.mounts.save(&mg, RUN_ROOT_SYNC)
            }
            None => {
                st.mounts.records.push(MountRecord {
                    id: layer_id.to_string(),
                    path: path.display().to_string(),
                    count: 1,
                });
                st.mounts.save(&mg, RUN_ROOT_SYNC)
            }
        };
        if let Err(e) = saved {
            let _ = self.driver.unmount(layer_id);
            return Err(e);
        }
        drop(lg);
        crate::log::debug(format!("mounted layer {layer_id} at {}", path.display()));
        Ok(path)
    }

    /// Unmounts a container. With `force` the mount goes away whatever the count; otherwise the
    /// count drops by one and the real unmount happens at zero. Returns true if still mounted.
    pub fn unmount_container(&self, key: &str, force: bool) -> Result<bool> {
        let layer = {
            let mut st = self.state()?;
            let _cg = st.containers.lock(false)?;
            find_container(&st.containers.records, key)?.layer.clone()
        };
        let mut st = self.state()?;
        let _lg = st.layers.lock(true)?;
        let mg = st.mounts.lock(true)?;
        self.unmount_layer_locked(&mut st, &mg, &layer, force)
    }

    fn unmount_layer_locked(
        &self,
        st: &mut State,
        mg: &LockGuard,
        layer: &str,
        force: bool,
    ) -> Result<bool> {
        let pos = st.mounts.records.iter().position(|m| m.id == layer);
        let count = pos.map(|p| st.mounts.records[p].count).unwrap_or(0);
        if !force && count > 1 {
            st.mounts.records[pos.unwrap()].count -= 1;
            st.mounts.save(mg, RUN_ROOT_SYNC)?;
            return Ok(true);
        }
        self.driver.unmount(layer)?;
        if let Some(p) = pos {
            st.mounts.records.remove(p);
            st.mounts.save(mg, RUN_ROOT_SYNC)?;
        }
        Ok(false)
    }

    /// Removes a layer's data and record. The caller holds layers.lock exclusively.
    fn delete_layer_locked(&self, st: &mut State, lg: &LockGuard, id: &str) -> Result<()> {
        let Some(rec) = st.layers.records.iter_mut().find(|l| l.id == id) else {
            return Ok(());
        };
        rec.set_incomplete(true);
        st.layers.save(lg, self.config.sync)?;
        self.remove_layer_marked_incomplete(st, lg, id)
    }

    /// The rest of a layer deletion, once its record marked incomplete is saved.
    fn remove_layer_marked_incomplete(
        &self,
        st: &mut State,
        lg: &LockGuard,
        id: &str,
    ) -> Result<()> {
        self.driver.remove_layer(id)?;
        let _ = std::fs::remove_file(self.tar_split_path(id));
        let _ = std::fs::remove_dir_all(self.layers_dir().join(id));
        st.layers.records.retain(|l| l.id != id);
        st.layers.save(lg, self.config.sync)
    }

    fn layer_mount_count(st: &State, id: &str) -> i64 {
        st.mounts
            .records
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.count)
            .unwrap_or(0)
    }

    /// Deletes a container and its layer; refused (IN_USE) while it is mounted.
    pub fn delete_container(&self, key: &str) -> Result<()> {
        let mut st = self.state()?;
        let lg = st.layers.lock(true)?;
        {
            let _mg = st.mounts.lock(false)?;
        }
        let cg = st.containers.lock(true)?;
        let c = find_container(&st.containers.records, key)?.clone();
        if Self::layer_mount_count(&st, &c.layer) > 0 {
            return Err(Error::new(
                Status::InUse,
                format!("container {} is mounted; unmount it first", c.id),
            )
            .with_subject(c.id));
        }
        st.containers.records.retain(|x| x.id != c.id);
        // The container record goes, and its layer is marked incomplete, in one flush: both
        // files are written, flushed together, then renamed in that order (a crash in between
        // leaves an unreferenced layer, as the two saves in a row did). Not a syncfs: that
        // would also write back everything the container wrote, just before it is deleted.
        let layer_known = match st.layers.records.iter_mut().find(|l| l.id == c.layer) {
            Some(rec) => {
                rec.set_incomplete(true);
                true
            }
            None => false,
        };
        let containers = st.containers.prepare_save(&cg, false)?;
        let layers = if layer_known {
            Some(st.layers.prepare_save(&lg, false)?)
        } else {
            None
        };
        if self.config.sync {
            let mut paths = vec![containers.temp_path()];
            paths.extend(layers.as_ref().map(PendingSave::temp_path));
            files::flush_files(&paths)?;
        }
        st.containers.finish_save(containers)?;
        drop(cg);
        if let Some(layers) = layers {
            st.layers.finish_save(layers)?;
        }
        self.remove_container_dirs(&c.id)?;
        if layer_known {
            self.remove_layer_marked_incomplete(&mut st, &lg, &c.layer)?;
        }
        Ok(())
    }
    /// Removes a container's big-data directory and its run-root directory (podman's userdata).
    fn remove_container_dirs(&self, id: &str) -> Result<()> {
        let run_dir = self
            .run_root
            .join(format!("{}-containers", self.driver.kind().name()));
        for dir in [self.containers_dir().join(id), run_dir.join(id)] {
            if dir.exists() {
                crate::unpack::remove_tree(&dir)?;
            }
        }
        Ok(())
    }

    /// Deletes an image and the layers only it used; refused (IN_USE) while a container uses it.
    pub fn delete_image(&self, key: &str) -> Result<()> {
        let mut st = self.state()?;
        let lg = st.layers.lock(true)?;
        {
            let _mg = st.mounts.lock(false)?;
        }
        let ig = st.images.lock(true)?;
        let img = find_image(&st.images.records, key)?.clone();
        {
            let _cg = st.containers.lock(false)?;
            if let Some(c) = st.containers.records.iter().find(|c| c.image == img.id) {
                return Err(Error::new(
                    Status::InUse,
                    format!("image {} is used by container {}", img.id, c.id),
                )
                .with_subject(img.id));
            }
        }
        st.images.records.retain(|i| i.id != img.id);
        st.images.save(&ig, self.config.sync)?;
        drop(ig);
        let dir = self.images_dir().join(&img.id);
        if dir.exists() {
            crate::unpack::remove_tree(&dir)?;
        }
        // Walk down from the top layer while nothing else uses the layer.
        let mut next = opt(&img.layer);
        let mut candidates = img.mapped_layers.clone();
        while let Some(id) = next.take() {
            candidates.push(id.clone());
            next = st
                .layers
                .records
                .iter()
                .find(|l| l.id == id)
                .and_then(|l| opt(&l.parent));
        }
        for id in candidates {
            let used = st.layers.records.iter().any(|l| l.parent == id)
                || st
                    .images
                    .records
                    .iter()
                    .any(|i| i.layer == id || i.mapped_layers.contains(&id))
                || st.containers.records.iter().any(|c| c.layer == id)
                || Self::layer_mount_count(&st, &id) > 0;
            if used {
                break;
            }
            self.delete_layer_locked(&mut st, &lg, &id)?;
        }
        Ok(())
    }

    /// Deletes one layer; refused (IN_USE) if an image, container or child layer uses it, or it is mounted.
    pub fn delete_layer(&self, key: &str) -> Result<()> {
        let mut st = self.state()?;
        let lg = st.layers.lock(true)?;
        {
            let _mg = st.mounts.lock(false)?;
        }
        let id = find_layer(&st.layers.records, key)?.id.clone();
        let _ig = st.images.lock(false)?;
        let _cg = st.containers.lock(false)?;
        let in_use = |why: String| {
            Err(Error::new(Status::InUse, format!("layer {id} is {why}")).with_subject(id.clone()))
        };
        if let Some(l) = st.layers.records.iter().find(|l| l.parent == id) {
            return in_use(format!("the parent of layer {}", l.id));
        }
        if let Some(i) = st
            .images
            .records
            .iter()
            .find(|i| i.layer == id || i.mapped_layers.contains(&id))
        {
            return in_use(format!("used by image {}", i.id));
        }
        if let Some(c) = st.containers.records.iter().find(|c| c.layer == id) {
            return in_use(format!("used by container {}", c.id));
        }
        if Self::layer_mount_count(&st, &id) > 0 {
            return in_use("mounted".into());
        }
        self.delete_layer_locked(&mut st, &lg, &id)
    }

    /// Removes every container, image and layer (mounted layers are unmounted first).
    pub fn wipe(&self) -> Result<()> {
        let mut st = self.state()?;
        let lg = st.layers.lock(true)?;
        let mg = st.mounts.lock(true)?;
        let mounted: Vec<String> = st.mounts.records.iter().map(|m| m.id.clone()).collect();
        for id in mounted {
            self.unmount_layer_locked(&mut st, &mg, &id, true)?;
        }
        drop(mg);
        let ig = st.images.lock(true)?;
        let cg = st.containers.lock(true)?;
        // Records go first, then their directories: a crash in between leaves directories no
        // record names (removed at the next open), never records naming missing data.
        let containers = std::mem::take(&mut st.containers.records);
        st.containers.save(&cg, self.config.sync)?;
        for c in containers {
            self.remove_container_dirs(&c.id)?;
        }
        let images = std::mem::take(&mut st.images.records);
        st.images.save(&ig, self.config.sync)?;
        for i in images {
            let dir = self.images_dir().join(&i.id);
            if dir.exists() {
                crate::unpack::remove_tree(&dir)?;
            }
        }
        drop(cg);
        drop(ig);
        // Children before parents, so a crash midway never leaves a child without its parent.
        while !st.layers.records.is_empty() {
            let leaf = st
                .layers
                .records
                .iter()
                .rev()
                .find(|l| !st.layers.records.iter().any(|c| c.parent == l.id))
                .map(|l| l.id.clone())
                .ok_or_else(|| Error::internal("layer parents form a cycle"))?;
            self.delete_layer_locked(&mut st, &lg, &leaf)?;
        }
        Ok(())
    }
}

/// Removes the 64-hex directories of `dir` that no record names (crash debris).
fn remove_unrecorded_dirs(dir: &Path, known: &[&str], what: &str) -> Result<()> {
    for id in drivers::hex_dirs(dir)? {
        if !known.contains(&id.as_str()) {
            let path = dir.join(&id);
            crate::log::info(format!(
                "removing {} left by an interrupted {what} write",
                path.display()
            ));
            crate::unpack::remove_tree(&path)?;
        }
    }
    Ok(())
}

/// Removes `.tmp-*` files that an interrupted atomic write left in `dir`.
fn remove_temp_files(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().as_encoded_bytes().starts_with(b".tmp-") {
                crate::log::info(format!("removing {}", e.path().display()));
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

fn ambiguous(kind: &str, key: &str) -> Error {
    Error::invalid(format!("{kind} ID prefix {key:?} is ambiguous")).with_subject(key)
}

/// Finds by full ID, name, then unique ID prefix.
fn find_by<'a, T>(
    items: &'a [T],
    key: &str,
    kind: &str,
    id: impl Fn(&T) -> &str,
    has_name: impl Fn(&T, &str) -> bool,
) -> Result<&'a T> {
    if key.is_empty() {
        return Err(Error::invalid(format!("empty {kind} name or ID")));
    }
    if let Some(x) = items.iter().find(|x| id(x) == key) {
        return Ok(x);
    }
    if let Some(x) = items.iter().find(|x| has_name(x, key)) {
        return Ok(x);
    }
    if key.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut m = items.iter().filter(|x| id(x).starts_with(key));
        if let Some(first) = m.next() {
            if m.next().is_some() {
                return Err(ambiguous(kind, key));
            }
            return Ok(first);
        }
    }
    Err(Error::not_found(format!("{kind} {key:?} not known")).with_subject(key))
}

fn find_image<'a>(images: &'a [ImageRecord], key: &str) -> Result<&'a ImageRecord> {
    let key = key
        .strip_prefix("sha256:")
        .filter(|h| digest::is_hex64(h) && images.iter().any(|i| i.id == *h))
        .unwrap_or(key);
    let normalized = normalize_image_name(key);
    find_by(
        images,
        key,
        "image",
        |i| &i.id,
        |i, k| {
            i.names
                .iter()
                .any(|n| n == k || Some(n) == normalized.as_ref())
                || i.digest == k
                || i.big_data_digests
                    .iter()
                    .any(|(name, d)| name.starts_with("manifest") && d == k)
        },
    )
}

fn find_layer<'a>(layers: &'a [LayerRecord], key: &str) -> Result<&'a LayerRecord> {
    let visible: Vec<&LayerRecord> = layers.iter().filter(|l| !l.is_incomplete()).collect();
    find_by(
        &visible,
        key,
        "layer",
        |l| &l.id,
        |l, k| l.names.iter().any(|n| n == k),
    )
    .copied()
}

fn find_container<'a>(containers: &'a [ContainerRecord], key: &str) -> Result<&'a ContainerRecord> {
    find_by(
        containers,
        key,
        "container",
        |c| &c.id,
        |c, k| c.names.iter().any(|n| n == k),
    )
}

/// The name a short or bare reference is stored under ("alpine" → docker.io/library/alpine:latest).
fn normalize_image_name(key: &str) -> Option<String> {
    crate::registry::parse_reference(key)
        .ok()
        .map(|r| r.storage_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_follow_containers_storage() {
        // store-format.md §3.2 — the example's layer 2: sha256("<id1>+<diffid2 hex>").
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let id1 = layer_id_for(None, &d1);
        assert_eq!(id1, "1".repeat(64));
        let id2 = layer_id_for(Some(&id1), &d2);
        assert_eq!(
            id2,
            digest::sha256_hex(format!("{}+{}", "1".repeat(64), "2".repeat(64)).as_bytes())
        );
    }

    #[test]
    fn sync_follows_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("storage.conf");
        std::fs::write(&conf, "").unwrap();
        let open = |sync| {
            Store::open(&StoreOptions {
                graph_root: Some(dir.path().join("root")),
                run_root: Some(dir.path().join("run")),
                driver: Some(DriverKind::Vfs),
                config_file: Some(conf.clone()),
                sync,
            })
            .unwrap()
            .sync_writes()
        };
        assert!(open(None), "durable by default");
        assert!(!open(Some(false)));
        assert!(open(Some(true)));
    }

    #[test]
    fn lookups_by_id_name_and_prefix() {
        let imgs = vec![
            ImageRecord {
                id: "abc".repeat(21) + "d",
                names: vec!["localhost/x:t".into()],
                ..Default::default()
            },
            ImageRecord {
                id: "abd".repeat(21) + "d",
                ..Default::default()
            },
        ];
        assert_eq!(find_image(&imgs, "localhost/x:t").unwrap().id, imgs[0].id);
        assert_eq!(find_image(&imgs, "abca").unwrap().id, imgs[0].id);
        assert_eq!(
            find_image(&imgs, "ab").unwrap_err().status,
            Status::InvalidArgument
        );
        assert_eq!(
            find_image(&imgs, "ffff").unwrap_err().status,
            Status::NotFound
        );
        assert_eq!(
            find_image(&imgs, "").unwrap_err().status,
            Status::InvalidArgument
        );
    }
}
