//! Consistency check and repair of a store, looking at what containers/storage's check looks at
//! (store-format.md §6.3): layer records against layer directories, overlay short links and
//! `lower` files, tar-split files, layer content against its diff digest (the tar is rebuilt
//! from tar-split + files and hashed) and the layer's files against the tar's headers (added,
//! removed or changed entries; `layer_tree`), image and container references, and mount counts.
//!
//! Locks: the metadata is looked at under shared locks, held briefly; layer content is read
//! without locks (layers are immutable once complete) and a problem found there is confirmed
//! under the lock before it is reported. Repair takes the locks exclusively, looks again, and
//! removes what is damaged together with everything that depends on it.

use super::records::{ContainerRecord, ImageRecord, LayerRecord, MountRecord};
use super::{remove_temp_files, State, Store};
use crate::config::storage::DriverKind;
use crate::digest::Hasher;
use crate::error::{Error, Result};
use crate::store::lock::LockGuard;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod layer_tree;

/// What to check and how far repair may go.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Rebuild each layer's tar and compare it with its diff digest (reads every layer's data),
    /// and compare the layer's files with the tar's headers (containers/storage's
    /// LayerDigests and LayerContents, both on in `podman system check` without --quick).
    pub content: bool,
    /// Layers no image or container uses that are older than this count as damage (debris of
    /// interrupted pulls and deletions, as containers/storage treats them); younger ones are
    /// only a warning, since a pull may be about to use them. containers/storage: 24 hours.
    pub unreferenced_max_age: Duration,
    /// Repair may delete containers whose layer or image is damaged or missing (otherwise they,
    /// their image and their layers are left alone and stay reported).
    pub remove_containers: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            content: true,
            unreferenced_max_age: Duration::from_secs(24 * 3600),
            remove_containers: false,
        }
    }
}

/// One finding. `kind` is a stable name (see `Kind`), `id` the layer, image or container ID
/// or the path concerned.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub kind: &'static str,
    pub id: String,
    pub message: String,
}

/// The result of a check or a repair.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// No errors (warnings allowed).
    pub clean: bool,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
    /// What repair did (empty for a check).
    pub repaired: Vec<Finding>,
    pub layers: usize,
    pub images: usize,
    pub containers: usize,
    /// Layers whose content was rebuilt and hashed.
    pub layers_verified: usize,
}

impl CheckReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Stable names of findings.
pub mod kind {
    pub const LAYER_INCOMPLETE: &str = "layer-incomplete";
    pub const LAYER_PARENT_MISSING: &str = "layer-parent-missing";
    pub const LAYER_DATA_MISSING: &str = "layer-data-missing";
    pub const LAYER_LINK_MISSING: &str = "layer-link-missing";
    pub const LAYER_SHORT_LINK_BAD: &str = "layer-short-link-bad";
    pub const LAYER_LOWER_BAD: &str = "layer-lower-bad";
    pub const LAYER_TAR_SPLIT_MISSING: &str = "layer-tar-split-missing";
    pub const LAYER_CONTENT_MISMATCH: &str = "layer-content-mismatch";
    pub const LAYER_UNREFERENCED: &str = "layer-unreferenced";
    pub const LAYER_DIR_UNACCOUNTED: &str = "layer-dir-unaccounted";
    pub const SHORT_LINK_DANGLING: &str = "short-link-dangling";
    pub const TAR_SPLIT_UNACCOUNTED: &str = "tar-split-unaccounted";
    pub const IMAGE_LAYER_MISSING: &str = "image-layer-missing";
    pub const IMAGE_BIG_DATA_BAD: &str = "image-big-data-bad";
    pub const IMAGE_DIR_UNACCOUNTED: &str = "image-dir-unaccounted";
    pub const CONTAINER_IMAGE_MISSING: &str = "container-image-missing";
    pub const CONTAINER_LAYER_MISSING: &str = "container-layer-missing";
    pub const CONTAINER_DIR_UNACCOUNTED: &str = "container-dir-unaccounted";
    pub const MOUNT_STALE: &str = "mount-stale";
    pub const MOUNT_UNCOUNTED: &str = "mount-uncounted";
    /// Records in volatile or transient files (newer containers/storage) that cimage does not
    /// manage: what they use is left alone.
    pub const FOREIGN_RECORDS: &str = "foreign-records";
    pub const FOREIGN_RECORDS_UNREADABLE: &str = "foreign-records-unreadable";
    pub const UNVERIFIABLE: &str = "layer-unverifiable";
    /// Repair only: what was removed or fixed, and what was left because a container needs it.
    pub const REMOVED_LAYER: &str = "removed-layer";
    pub const REMOVED_IMAGE: &str = "removed-image";
    pub const REMOVED_CONTAINER: &str = "removed-container";
    pub const REMOVED_PATH: &str = "removed-path";
    pub const FIXED_LINK: &str = "fixed-link";
    pub const FIXED_LOWER: &str = "fixed-lower";
    pub const DROPPED_MOUNT: &str = "dropped-mount";
    pub const KEPT_FOR_CONTAINER: &str = "kept-for-container";
}

fn finding(kind: &'static str, id: impl Into<String>, message: impl Into<String>) -> Finding {
    Finding {
        kind,
        id: id.into(),
        message: message.into(),
    }
}

/// Copies of the records, taken under the locks.
struct Snapshot {
    layers: Vec<LayerRecord>,
    mounts: Vec<MountRecord>,
    images: Vec<ImageRecord>,
    containers: Vec<ContainerRecord>,
}

/// Findings of the metadata pass, by kind of object.
#[derive(Default)]
struct Findings {
    errors: Vec<Finding>,
    warnings: Vec<Finding>,
}

impl Store {
    /// Checks the store and reports what is wrong; changes nothing.
    pub fn check(&self, opts: &CheckOptions) -> Result<CheckReport> {
        let snapshot = {
            let mut st = self.state()?;
            let _lg = st.layers.lock(false)?;
            {
                let _mg = st.mounts.lock(false)?;
            }
            let _ig = st.images.lock(false)?;
            let _cg = st.containers.lock(false)?;
            let snap = snapshot(&st);
            let found = self.inspect(&snap, opts)?;
            (snap, found)
        };
        let (snap, mut found) = snapshot;
        let mut verified = 0;
        if opts.content {
            let (content, warnings, n) = self.verify_contents(&snap.layers);
            verified = n;
            found.warnings.extend(warnings);
            // Confirm under the lock: a layer deleted meanwhile is not damage.
            if !content.is_empty() {
                let mut st = self.state()?;
                let _lg = st.layers.lock(false)?;
                for f in content {
                    let still = st.layers.records.iter().any(|l| l.id == f.id);
                    if still {
                        found.errors.push(f);
                    }
                }
            }
        }
        Ok(report(&snap, found, Vec::new(), verified))
    }

    /// Repairs what the check finds: removes damaged layers with the layers, images (and,
    /// with `remove_containers`, containers) that depend on them; removes unaccounted
    /// directories, dangling short links, stray tar-split files and stale mount counts;
    /// rewrites bad short links and `lower` files. Returns what is still wrong afterwards.
    pub fn repair(&self, opts: &CheckOptions) -> Result<CheckReport> {
        // Content first, without locks; only its verdicts on layers still present are used.
        let content: Vec<Finding> = if opts.content {
            let layers = {
                let mut st = self.state()?;
                let _lg = st.layers.lock(false)?;
                st.layers.records.clone()
            };
            self.verify_contents(&layers).0
        } else {
            Vec::new()
        };
        let mut st = self.state()?;
        let lg = st.layers.lock(true)?;
        let mut repaired = Vec::new();
        {
            let mg = st.mounts.lock(true)?;
            self.repair_mounts(&mut st, &mg, &mut repaired)?;
        }
        let ig = st.images.lock(true)?;
        let cg = st.containers.lock(true)?;
        let snap = snapshot(&st);
        let mut found = self.inspect(&snap, opts)?;
        found.errors.extend(
            content
                .into_iter()
                .filter(|f| snap.layers.iter().any(|l| l.id == f.id)),
        );
        self.repair_locked(&mut st, &lg, &ig, &cg, &snap, &found, opts, &mut repaired)?;
        drop(cg);
        drop(ig);
        drop(lg);
        drop(st);
        // What is left, looked at afresh (content verdicts of layers that survived remain).
        let mut after = self.check(&CheckOptions {
            content: false,
            ..opts.clone()
        })?;
        let mut st = self.state()?;
        let _lg = st.layers.lock(false)?;
        for f in found.errors {
            if f.kind == kind::LAYER_CONTENT_MISMATCH
                && st.layers.records.iter().any(|l| l.id == f.id)
            {
                after.errors.push(f);
            }
        }
        after.errors.sort();
        after.clean = after.errors.is_empty();
        after.repaired = repaired;
        Ok(after)
    }

    /// The metadata pass: records against each other and against the file system.
    fn inspect(&self, snap: &Snapshot, opts: &CheckOptions) -> Result<Findings> {
        let mut f = Findings::default();
        // Volatile and transient records: their layers, containers and directories are not
        // debris, and the layers and images they use are in use.
        let field = |r: &serde_json::Value, k: &str| {
            r.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (foreign_layers, foreign_containers) = match (
            self.foreign_records("layers"),
            self.foreign_records("containers"),
        ) {
            (Some(l), Some(c)) => (l, c),
            _ => {
                f.errors.push(finding(
                    kind::FOREIGN_RECORDS_UNREADABLE,
                    self.graph_root.display().to_string(),
                    "a volatile or transient record file is unreadable; the check cannot tell \
                     what it uses",
                ));
                return Ok(f);
            }
        };
        let foreign_layer_ids: Vec<String> =
            foreign_layers.iter().map(|r| field(r, "id")).collect();
        let foreign_container_ids: Vec<String> =
            foreign_containers.iter().map(|r| field(r, "id")).collect();
        if !foreign_layer_ids.is_empty() || !foreign_container_ids.is_empty() {
            f.warnings.push(finding(
                kind::FOREIGN_RECORDS,
                self.graph_root.display().to_string(),
                format!(
                    "{} layers and {} containers are recorded in volatile or transient files; \
                     they are not checked",
                    foreign_layer_ids.len(),
                    foreign_container_ids.len()
                ),
            ));
        }
        let layer_ids: BTreeSet<&str> = snap
            .layers
            .iter()
            .map(|l| l.id.as_str())
            .chain(foreign_layer_ids.iter().map(String::as_str))
            .collect();
        let by_id: HashMap<&str, &LayerRecord> =
            snap.layers.iter().map(|l| (l.id.as_str(), l)).collect();

        // Layers.
        for l in &snap.layers {
            if l.is_incomplete() {
                f.errors.push(finding(
                    kind::LAYER_INCOMPLETE,
                    &l.id,
                    "layer is marked incomplete (an interrupted write not yet cleaned up)",
                ));
                continue;
            }
            if !l.parent.is_empty() && !layer_ids.contains(l.parent.as_str()) {
                f.errors.push(finding(
                    kind::LAYER_PARENT_MISSING,
                    &l.id,
                    format!("parent layer {} does not exist", l.parent),
                ));
            }
            let data = self.driver.layer_dir(&l.id);
            if !data.is_dir() {
                f.errors.push(finding(
                    kind::LAYER_DATA_MISSING,
                    &l.id,
                    format!("layer directory {} is missing", data.display()),
                ));
                continue;
            }
            if self.driver.kind() == DriverKind::Overlay {
                self.inspect_overlay_links(l, &by_id, &mut f);
            }
            if !l.diff_digest.is_empty() && !self.tar_split_path(&l.id).is_file() {
                f.errors.push(finding(
                    kind::LAYER_TAR_SPLIT_MISSING,
                    &l.id,
                    format!(
                        "tar-split file {} is missing",
                        self.tar_split_path(&l.id).display()
                    ),
                ));
            }
        }

        // Unreferenced layers: not in the parent chain of any image or container layer,
        // not named, not mounted.
        let mut used: BTreeSet<&str> = BTreeSet::new();
        let mut roots: Vec<&str> = Vec::new();
        for i in &snap.images {
            roots.push(&i.layer);
            roots.extend(i.mapped_layers.iter().map(String::as_str));
        }
        roots.extend(snap.containers.iter().map(|c| c.layer.as_str()));
        let foreign_parents: Vec<String> =
            foreign_layers.iter().map(|r| field(r, "parent")).collect();
        roots.extend(foreign_parents.iter().map(String::as_str));
        let foreign_used_images: Vec<String> = foreign_containers
            .iter()
            .map(|r| field(r, "image"))
            .collect();
        for i in snap
            .images
            .iter()
            .filter(|i| foreign_used_images.contains(&i.id))
        {
            roots.push(&i.layer);
        }
        roots.extend(
            snap.mounts
                .iter()
                .filter(|m| m.count > 0)
                .map(|m| m.id.as_str()),
        );
        roots.extend(
            snap.layers
                .iter()
                .filter(|l| !l.names.is_empty())
                .map(|l| l.id.as_str()),
        );
        for root in roots {
            let mut next = Some(root);
            while let Some(id) = next.filter(|id| !id.is_empty()) {
                if !used.insert(id) {
                    break;
                }
                next = by_id.get(id).map(|l| l.parent.as_str());
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        for l in &snap.layers {
            if used.contains(l.id.as_str()) || l.is_incomplete() {
                continue;
            }
            let age = parse_rfc3339(&l.created).map(|t| now - t);
            let old = match age {
                Some(a) => a >= opts.unreferenced_max_age.as_secs() as i64,
                None => true, // no creation time: containers/storage treats it as old
            };
            let what = format!(
                "no image or container uses this layer (created {})",
                if l.created.is_empty() {
                    "at an unknown time"
                } else {
                    &l.created
                }
            );
            if old {
                f.errors
                    .push(finding(kind::LAYER_UNREFERENCED, &l.id, what));
            } else {
                f.warnings
                    .push(finding(kind::LAYER_UNREFERENCED, &l.id, what));
            }
        }

        // Driver directories, short links and tar-split files without a layer.
        for id in self.driver.layer_dirs_on_disk()? {
            if !layer_ids.contains(id.as_str()) {
                f.errors.push(finding(
                    kind::LAYER_DIR_UNACCOUNTED,
                    self.driver_layer_root(&id).display().to_string(),
                    format!("layer directory of {id} has no layer record"),
                ));
            }
        }
        if self.driver.kind() == DriverKind::Overlay {
            let links = self.graph_root.join("overlay").join("l");
            for (name, target) in crate::drivers::overlay::list_short_links(&links) {
                let owner = target
                    .strip_prefix("../")
                    .and_then(|t| t.strip_suffix("/diff"))
                    .filter(|id| layer_ids.contains(id));
                let good = owner.is_some_and(|id| {
                    read_trimmed(&self.graph_root.join("overlay").join(id).join("link")).as_deref()
                        == Some(name.as_str())
                });
                if !good {
                    f.errors.push(finding(
                        kind::SHORT_LINK_DANGLING,
                        links.join(&name).display().to_string(),
                        format!("short link {name} -> {target} belongs to no layer"),
                    ));
                }
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.layers_dir()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".tar-split.gz") {
                    if !layer_ids.contains(id) {
                        f.errors.push(finding(
                            kind::TAR_SPLIT_UNACCOUNTED,
                            e.path().display().to_string(),
                            format!("tar-split file of {id} has no layer record"),
                        ));
                    }
                }
            }
        }

        // Images.
        let image_ids: BTreeSet<&str> = snap.images.iter().map(|i| i.id.as_str()).collect();
        for i in &snap.images {
            for layer in std::iter::once(&i.layer).chain(i.mapped_layers.iter()) {
                if !layer.is_empty() && !layer_ids.contains(layer.as_str()) {
                    f.errors.push(finding(
                        kind::IMAGE_LAYER_MISSING,
                        &i.id,
                        format!("layer {layer} of the image does not exist"),
                    ));
                }
            }
            let dir = self.images_dir().join(&i.id);
            for key in &i.big_data_names {
                let path = dir.join(super::files::big_data_file_name(key));
                let problem = match std::fs::metadata(&path) {
                    Err(e) => Some(format!("big-data item {key:?} is unreadable: {e}")),
                    Ok(m) => match i.big_data_sizes.get(key) {
                        Some(&size) if size != m.len() as i64 => Some(format!(
                            "big-data item {key:?} has {} bytes, the record says {size}",
                            m.len()
                        )),
                        _ => None,
                    },
                };
                if let Some(p) = problem {
                    f.errors.push(finding(kind::IMAGE_BIG_DATA_BAD, &i.id, p));
                }
            }
        }
        for id in crate::drivers::hex_dirs(&self.images_dir())? {
            if !image_ids.contains(id.as_str()) {
                f.errors.push(finding(
                    kind::IMAGE_DIR_UNACCOUNTED,
                    self.images_dir().join(&id).display().to_string(),
                    format!("image directory of {id} has no image record"),
                ));
            }
        }

        // Containers.
        let container_ids: BTreeSet<&str> = snap
            .containers
            .iter()
            .map(|c| c.id.as_str())
            .chain(foreign_container_ids.iter().map(String::as_str))
            .collect();
        for c in &snap.containers {
            if !c.image.is_empty() && !image_ids.contains(c.image.as_str()) {
                f.errors.push(finding(
                    kind::CONTAINER_IMAGE_MISSING,
                    &c.id,
                    format!("image {} of the container does not exist", c.image),
                ));
            }
            if c.layer.is_empty() || !layer_ids.contains(c.layer.as_str()) {
                f.errors.push(finding(
                    kind::CONTAINER_LAYER_MISSING,
                    &c.id,
                    format!("layer {:?} of the container does not exist", c.layer),
                ));
            }
        }
        for dir in self.container_dirs() {
            for id in crate::drivers::hex_dirs(&dir)? {
                if !container_ids.contains(id.as_str()) {
                    f.errors.push(finding(
                        kind::CONTAINER_DIR_UNACCOUNTED,
                        dir.join(&id).display().to_string(),
                        format!("container directory of {id} has no container record"),
                    ));
                }
            }
        }

        // Mount counts, and overlay mounts nobody counts (a process died between mounting and
        // counting: the next mount adopts it; a warning until then).
        for m in &snap.mounts {
            if let Some(why) = self.stale_mount(m, &layer_ids) {
                f.errors.push(finding(kind::MOUNT_STALE, &m.id, why));
            }
        }
        if self.driver.kind() == DriverKind::Overlay {
            let mounted: std::collections::HashSet<PathBuf> =
                crate::drivers::mountinfo::mount_points()
                    .into_iter()
                    .collect();
            let home = self.graph_root.join("overlay");
            for l in &snap.layers {
                let counted = snap.mounts.iter().any(|m| m.id == l.id && m.count > 0);
                if !counted && mounted.contains(&home.join(&l.id).join("merged")) {
                    f.warnings.push(finding(
                        kind::MOUNT_UNCOUNTED,
                        &l.id,
                        "layer is mounted but no mount count records it",
                    ));
                }
            }
        }
        Ok(f)
    }

    /// Why a mount count is stale, if it is.
    fn stale_mount(&self, m: &MountRecord, layer_ids: &BTreeSet<&str>) -> Option<String> {
        if !layer_ids.contains(m.id.as_str()) {
            Some(format!(
                "mount count {} of a layer that does not exist",
                m.count
            ))
        } else if m.count <= 0 {
            Some(format!("mount count {} is not positive", m.count))
        } else if self.driver.kind() == DriverKind::Overlay && !self.driver.is_mounted(&m.id) {
            Some(format!(
                "mount count {} but {} is not mounted",
                m.count, m.path
            ))
        } else {
            None
        }
    }

    fn container_dirs(&self) -> [PathBuf; 2] {
        [
            self.containers_dir(),
            self.run_root
                .join(format!("{}-containers", self.driver.kind().name())),
        ]
    }

    /// The driver's directory for a layer ID (overlay: R/overlay/<id>; vfs: R/vfs/dir/<id>).
    fn driver_layer_root(&self, id: &str) -> PathBuf {
        match self.driver.kind() {
            DriverKind::Overlay => self.graph_root.join("overlay").join(id),
            DriverKind::Vfs => self.driver.layer_dir(id),
        }
    }

    /// The `link` file, the `l/` short link and the `lower` file of an overlay layer.
    fn inspect_overlay_links(
        &self,
        l: &LayerRecord,
        by_id: &HashMap<&str, &LayerRecord>,
        f: &mut Findings,
    ) {
        let home = self.graph_root.join("overlay");
        let dir = home.join(&l.id);
        match read_trimmed(&dir.join("link")) {
            Some(name) if valid_link_name(&name) => {
                let link = home.join("l").join(&name);
                let want = format!("../{}/diff", l.id);
                match std::fs::read_link(&link) {
                    Ok(t) if t == Path::new(&want) => {}
                    Ok(t) => f.errors.push(finding(
                        kind::LAYER_SHORT_LINK_BAD,
                        &l.id,
                        format!("short link l/{name} points to {}, not {want}", t.display()),
                    )),
                    Err(_) => f.errors.push(finding(
                        kind::LAYER_SHORT_LINK_BAD,
                        &l.id,
                        format!("short link l/{name} is missing"),
                    )),
                }
            }
            _ => f.errors.push(finding(
                kind::LAYER_LINK_MISSING,
                &l.id,
                format!("{} is missing or malformed", dir.join("link").display()),
            )),
        }
        if l.parent.is_empty() || !by_id.contains_key(l.parent.as_str()) {
            return;
        }
        if let Some(want) = self.expected_lower(&l.parent) {
            let have = read_trimmed(&dir.join("lower")).unwrap_or_default();
            if have != want {
                f.errors.push(finding(
                    kind::LAYER_LOWER_BAD,
                    &l.id,
                    format!("lower file says {have:?}, the parent chain gives {want:?}"),
                ));
            }
        }
    }

    /// The `lower` content of a child of `parent` (§3.5), from the parent's files.
    fn expected_lower(&self, parent: &str) -> Option<String> {
        let home = self.graph_root.join("overlay");
        let name = read_trimmed(&home.join(parent).join("link")).filter(|n| valid_link_name(n))?;
        let mut lower = format!("l/{name}");
        if let Some(rest) = read_trimmed(&home.join(parent).join("lower")) {
            if !rest.is_empty() {
                lower.push(':');
                lower.push_str(&rest);
            }
        }
        Some(lower)
    }

    /// Rebuilds the tar of every layer with a diff digest and compares it with the digest and
    /// size on record; then compares the layer's files with the tar's headers (see
    /// `layer_tree`). Returns the errors, the warnings (layers that could not be compared) and
    /// how many layers were verified.
    fn verify_contents(&self, layers: &[LayerRecord]) -> (Vec<Finding>, Vec<Finding>, usize) {
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        let mut verified = 0;
        let by_id: HashMap<&str, &LayerRecord> =
            layers.iter().map(|l| (l.id.as_str(), l)).collect();
        // vfs: the expected tree of the last layer compared, which its child (usually the next
        // record) starts from instead of replaying the whole chain.
        let mut last_tree: Option<(String, layer_tree::Tree)> = None;
        for l in layers {
            if l.is_incomplete() || l.diff_digest.is_empty() {
                continue;
            }
            if !l.diff_digest.starts_with("sha256:") {
                continue;
            }
            let Ok(file) = std::fs::File::open(self.tar_split_path(&l.id)) else {
                continue; // reported by the metadata pass
            };
            let dir = self.driver.layer_dir(&l.id);
            if !dir.is_dir() {
                continue;
            }
            let mut hasher = HashingWriter(Hasher::new());
            verified += 1;
            match crate::unpack::reassemble_layer(file, &dir, &mut hasher) {
                Err(e) => out.push(finding(
                    kind::LAYER_CONTENT_MISMATCH,
                    &l.id,
                    format!("cannot rebuild the layer's tar: {}", e.message()),
                )),
                Ok(()) => {
                    let size = hasher.0.len as i64;
                    let digest = hasher.0.finish();
                    if digest != l.diff_digest || (l.diff_size > 0 && size != l.diff_size) {
                        out.push(finding(
                            kind::LAYER_CONTENT_MISMATCH,
                            &l.id,
                            format!(
                                "content rebuilds to {digest} ({size} bytes); the record says {} ({} bytes)",
                                l.diff_digest, l.diff_size
                            ),
                        ));
                    } else {
                        match self.compare_tree(l, &by_id, &dir, &mut last_tree) {
                            Ok(None) => {}
                            Ok(Some(message)) => {
                                out.push(finding(kind::LAYER_CONTENT_MISMATCH, &l.id, message))
                            }
                            Err(why) => warnings.push(finding(
                                kind::UNVERIFIABLE,
                                &l.id,
                                format!("the layer's files were not compared with its tar headers: {why}"),
                            )),
                        }
                    }
                }
            }
        }
        (out, warnings, verified)
    }

    /// The layer's files against its tar headers: Some(description) when they differ.
    /// Err when they cannot be compared. `last` carries a vfs layer's expected tree to the next
    /// call.
    fn compare_tree(
        &self,
        l: &LayerRecord,
        by_id: &HashMap<&str, &LayerRecord>,
        dir: &Path,
        last: &mut Option<(String, layer_tree::Tree)>,
    ) -> std::result::Result<Option<String>, String> {
        // Files of an ID-mapped copy belong to the mapped IDs, not the tar's.
        let mapped = |r: &LayerRecord| {
            ["uidmap", "gidmap"].iter().any(|k| {
                r.other
                    .get(*k)
                    .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
            })
        };
        if mapped(l) {
            return Ok(None);
        }
        let (layout, chain) = match self.driver.kind() {
            DriverKind::Overlay => (layer_tree::Layout::OverlayDiff, vec![l]),
            DriverKind::Vfs => {
                // The whole file system: every layer below must be known, root first.
                let mut chain = vec![l];
                let mut next = l.parent.as_str();
                while !next.is_empty() {
                    let Some(p) = by_id.get(next).copied() else {
                        return Err(format!("parent layer {next} is not recorded"));
                    };
                    if p.diff_digest.is_empty() || chain.len() > 1000 {
                        return Ok(None); // not made from tars: nothing to compare with
                    }
                    chain.push(p);
                    next = p.parent.as_str();
                }
                chain.reverse();
                (layer_tree::Layout::FullTree, chain)
            }
        };
        let (mut tree, todo) = match last.take() {
            Some((id, tree)) if layout == layer_tree::Layout::FullTree && id == l.parent => {
                (tree, &chain[chain.len() - 1..])
            }
            _ => (layer_tree::Tree::default(), &chain[..]),
        };
        for layer in todo {
            let split = std::fs::File::open(self.tar_split_path(&layer.id))
                .map_err(|e| format!("tar-split of {}: {e}", layer.id))?;
            tree.apply_tar_split(split, layout).map_err(|e| e.0)?;
        }
        let diffs = tree
            .compare(dir, layout)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?;
        if layout == layer_tree::Layout::FullTree {
            *last = Some((l.id.clone(), tree));
        }
        Ok((!diffs.is_empty()).then(|| layer_tree::summarize(&diffs)))
    }

    fn repair_mounts(
        &self,
        st: &mut State,
        mg: &LockGuard,
        repaired: &mut Vec<Finding>,
    ) -> Result<()> {
        // Counts of volatile/transient layers are theirs; when those files are unreadable,
        // which layers exist is unknown: change nothing.
        let Some(foreign) = self.foreign_record_ids("layers") else {
            return Ok(());
        };
        let layer_ids: BTreeSet<&str> = st
            .layers
            .records
            .iter()
            .map(|l| l.id.as_str())
            .chain(foreign.iter().map(String::as_str))
            .collect();
        let mut keep = Vec::new();
        let mut changed = false;
        for m in &st.mounts.records {
            match self.stale_mount(m, &layer_ids) {
                Some(why) => {
                    repaired.push(finding(kind::DROPPED_MOUNT, &m.id, why));
                    changed = true;
                }
                None => keep.push(m.clone()),
            }
        }
        if changed {
            st.mounts.records = keep;
            st.mounts.save(mg, self.config.sync)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn repair_locked(
        &self,
        st: &mut State,
        lg: &LockGuard,
        ig: &LockGuard,
        cg: &LockGuard,
        snap: &Snapshot,
        found: &Findings,
        opts: &CheckOptions,
        repaired: &mut Vec<Finding>,
    ) -> Result<()> {
        let sync = self.config.sync;
        // Without knowing what volatile/transient records use, nothing can be removed safely.
        let (Some(foreign_layers), Some(foreign_containers)) = (
            self.foreign_records("layers"),
            self.foreign_records("containers"),
        ) else {
            return Ok(());
        };
        // Layers that cannot be kept: their data or chain is broken.
        let mut bad_layers: BTreeSet<String> = BTreeSet::new();
        let mut bad_images: BTreeSet<String> = BTreeSet::new();
        let mut bad_containers: BTreeSet<String> = BTreeSet::new();
        for e in &found.errors {
            match e.kind {
                kind::LAYER_INCOMPLETE
                | kind::LAYER_PARENT_MISSING
                | kind::LAYER_DATA_MISSING
                | kind::LAYER_LINK_MISSING
                | kind::LAYER_TAR_SPLIT_MISSING
                | kind::LAYER_CONTENT_MISMATCH
                | kind::LAYER_UNREFERENCED => {
                    bad_layers.insert(e.id.clone());
                }
                kind::IMAGE_LAYER_MISSING | kind::IMAGE_BIG_DATA_BAD => {
                    bad_images.insert(e.id.clone());
                }
                kind::CONTAINER_IMAGE_MISSING | kind::CONTAINER_LAYER_MISSING => {
                    bad_containers.insert(e.id.clone());
                }
                _ => {}
            }
        }
        // Descendants of a bad layer lose their lower layers: bad too.
        loop {
            let more: Vec<String> = snap
                .layers
                .iter()
                .filter(|l| !bad_layers.contains(&l.id) && bad_layers.contains(&l.parent))
                .map(|l| l.id.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            bad_layers.extend(more);
        }
        let chain = |top: &str| -> Vec<String> {
            let mut out = Vec::new();
            let mut next = Some(top.to_string()).filter(|s| !s.is_empty());
            while let Some(id) = next {
                if out.contains(&id) {
                    break;
                }
                next = snap
                    .layers
                    .iter()
                    .find(|l| l.id == id)
                    .map(|l| l.parent.clone())
                    .filter(|p| !p.is_empty());
                out.push(id);
            }
            out
        };
        for i in &snap.images {
            let layers: Vec<String> = chain(&i.layer)
                .into_iter()
                .chain(i.mapped_layers.iter().cloned())
                .collect();
            if layers.iter().any(|l| bad_layers.contains(l)) {
                bad_images.insert(i.id.clone());
            }
        }
        for c in &snap.containers {
            if bad_images.contains(&c.image)
                || chain(&c.layer).iter().any(|l| bad_layers.contains(l))
            {
                bad_containers.insert(c.id.clone());
            }
        }
        // Containers stay unless allowed to go; what they use stays with them. Volatile and
        // transient records are not ours to remove: what they use stays too.
        let mut protected_layers: BTreeSet<String> = BTreeSet::new();
        let mut protected_images: BTreeSet<String> = BTreeSet::new();
        let text = |r: &serde_json::Value, k: &str| {
            r.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        for r in &foreign_layers {
            protected_layers.extend(chain(&text(r, "parent")));
        }
        for r in &foreign_containers {
            let image = text(r, "image");
            if let Some(i) = snap.images.iter().find(|i| i.id == image) {
                protected_layers.extend(chain(&i.layer));
            }
            protected_images.insert(image);
        }
        let mut removed_containers: Vec<ContainerRecord> = Vec::new();
        for c in &snap.containers {
            if bad_containers.contains(&c.id) && opts.remove_containers {
                removed_containers.push(c.clone());
                continue;
            }
            protected_images.insert(c.image.clone());
            protected_layers.extend(chain(&c.layer));
            if let Some(i) = snap.images.iter().find(|i| i.id == c.image) {
                protected_layers.extend(chain(&i.layer));
                protected_layers.extend(i.mapped_layers.iter().cloned());
            }
            if bad_containers.contains(&c.id) {
                repaired.push(finding(
                    kind::KEPT_FOR_CONTAINER,
                    &c.id,
                    "container is damaged; left in place (repair with remove_containers deletes it)",
                ));
            }
        }
        for id in bad_layers.intersection(&protected_layers) {
            repaired.push(finding(
                kind::KEPT_FOR_CONTAINER,
                id,
                "damaged layer kept: a container uses it",
            ));
        }
        bad_layers.retain(|l| !protected_layers.contains(l));
        bad_images.retain(|i| !protected_images.contains(i));
        // A removed container's own layer goes with it.
        for c in &removed_containers {
            if !protected_layers.contains(&c.layer) && snap.layers.iter().any(|l| l.id == c.layer) {
                bad_layers.insert(c.layer.clone());
            }
        }
        // Layers only the removed images used (and that are otherwise unreferenced) stay for
        // the unreferenced-layer rule of a later check; removing them here too would need the
        // image-deletion walk, and a second repair does it.

        // Containers.
        if !removed_containers.is_empty() {
            st.containers
                .records
                .retain(|c| !removed_containers.iter().any(|r| r.id == c.id));
            st.containers.save(cg, sync)?;
            for c in &removed_containers {
                for dir in self.container_dirs() {
                    let d = dir.join(&c.id);
                    if d.exists() {
                        crate::unpack::remove_tree(&d)?;
                    }
                }
                repaired.push(finding(
                    kind::REMOVED_CONTAINER,
                    &c.id,
                    "container removed: its image or layer was damaged or missing",
                ));
            }
        }
        // Images.
        if !bad_images.is_empty() {
            st.images.records.retain(|i| !bad_images.contains(&i.id));
            st.images.save(ig, sync)?;
            for id in &bad_images {
                let d = self.images_dir().join(id);
                if d.exists() {
                    crate::unpack::remove_tree(&d)?;
                }
                repaired.push(finding(
                    kind::REMOVED_IMAGE,
                    id,
                    "image removed: a layer or big-data item of it was damaged or missing",
                ));
            }
        }
        // Layers, children first.
        let mut pending: Vec<String> = bad_layers.iter().cloned().collect();
        while !pending.is_empty() {
            let leaf = pending
                .iter()
                .position(|id| !st.layers.records.iter().any(|l| &l.parent == id))
                .unwrap_or(0);
            let id = pending.remove(leaf);
            self.delete_layer_locked(st, lg, &id)?;
            repaired.push(finding(
                kind::REMOVED_LAYER,
                &id,
                "layer removed: damaged, broken chain, or unreferenced",
            ));
        }
        // Links and lower files of the layers that stay.
        if self.driver.kind() == DriverKind::Overlay {
            let home = self.graph_root.join("overlay");
            for e in &found.errors {
                if bad_layers.contains(&e.id) || !st.layers.records.iter().any(|l| l.id == e.id) {
                    continue;
                }
                match e.kind {
                    kind::LAYER_SHORT_LINK_BAD => {
                        if let Some(name) = read_trimmed(&home.join(&e.id).join("link")) {
                            let link = home.join("l").join(&name);
                            let _ = std::fs::remove_file(&link);
                            std::os::unix::fs::symlink(format!("../{}/diff", e.id), &link)
                                .map_err(|err| {
                                    Error::io(err, format!("recreating {}", link.display()))
                                })?;
                            repaired.push(finding(
                                kind::FIXED_LINK,
                                &e.id,
                                format!("short link l/{name} recreated"),
                            ));
                        }
                    }
                    kind::LAYER_LOWER_BAD => {
                        let parent = st
                            .layers
                            .records
                            .iter()
                            .find(|l| l.id == e.id)
                            .map(|l| l.parent.clone())
                            .unwrap_or_default();
                        if let Some(want) = self.expected_lower(&parent) {
                            super::files::write_atomic(
                                &home.join(&e.id).join("lower"),
                                want.as_bytes(),
                                0o644,
                                sync,
                            )?;
                            repaired.push(finding(
                                kind::FIXED_LOWER,
                                &e.id,
                                format!("lower rewritten as {want:?}"),
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
        // Debris: paths nothing refers to (looked at again: deletions above may have made
        // some of them disappear or appear).
        let mut debris = Vec::new();
        for e in &found.errors {
            if matches!(
                e.kind,
                kind::LAYER_DIR_UNACCOUNTED
                    | kind::SHORT_LINK_DANGLING
                    | kind::TAR_SPLIT_UNACCOUNTED
                    | kind::IMAGE_DIR_UNACCOUNTED
                    | kind::CONTAINER_DIR_UNACCOUNTED
            ) {
                debris.push(PathBuf::from(&e.id));
            }
        }
        for path in debris {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if self.driver.kind() == DriverKind::Overlay
                    && path.starts_with(self.graph_root.join("overlay"))
                {
                    if let Some(id) = path.file_name().and_then(|n| n.to_str()) {
                        self.driver.remove_layer(id)?;
                    }
                }
                if path.exists() {
                    crate::unpack::remove_tree(&path)?;
                }
            } else {
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io(e, format!("removing {}", path.display())))?;
            }
            repaired.push(finding(
                kind::REMOVED_PATH,
                path.display().to_string(),
                "nothing in the store refers to it",
            ));
        }
        remove_temp_files(&self.layers_dir());
        Ok(())
    }
}

fn snapshot(st: &State) -> Snapshot {
    Snapshot {
        layers: st.layers.records.clone(),
        mounts: st.mounts.records.clone(),
        images: st.images.records.clone(),
        containers: st.containers.records.clone(),
    }
}

fn report(
    snap: &Snapshot,
    mut found: Findings,
    repaired: Vec<Finding>,
    verified: usize,
) -> CheckReport {
    found.errors.sort();
    found.errors.dedup();
    found.warnings.sort();
    CheckReport {
        clean: found.errors.is_empty(),
        errors: found.errors,
        warnings: found.warnings,
        repaired,
        layers: snap.layers.len(),
        images: snap.images.len(),
        containers: snap.containers.len(),
        layers_verified: verified,
    }
}

struct HashingWriter(Hasher);

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// containers/storage's short names: 26 characters of A-Z and 2-7.
fn valid_link_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// Seconds since the epoch of an RFC 3339 time as Go writes it ("2026-11-23T05:49:05.65Z",
/// or with a "+02:00" offset). None when malformed or Go's zero time.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            let v = oh * 3600 + om * 60;
            if rest.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    if y <= 1 {
        return None; // Go's zero time, 0001-01-01T00:00:00Z
    }
    // Days from civil (Howard Hinnant).
    let (yy, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::format_rfc3339;
    use crate::store::{layer_id_for, BigData, NewImage, NewLayer, StoreOptions};
    use crate::unpack::{apply_layer, ApplyOptions};

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn open(dir: &Path, driver: DriverKind) -> Store {
        Store::open(&StoreOptions {
            graph_root: Some(dir.join("root")),
            run_root: Some(dir.join("run")),
            driver: Some(driver),
            config_file: None,
            ..Default::default()
        })
        .unwrap()
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn add_layer(store: &Store, parent: Option<&str>, files: &[(&str, &[u8])]) -> String {
        let tar = tar_of(files);
        let staging = store.new_staging_dir().unwrap();
        store
            .driver()
            .prepare_staging(parent, &staging.tree())
            .unwrap();
        let mut split = std::fs::File::create(staging.tar_split()).unwrap();
        let opts = ApplyOptions {
            whiteouts: store.driver().whiteout_mode(),
            ..ApplyOptions::default()
        };
        let stats = apply_layer(&tar[..], &staging.tree(), &opts, Some(&mut split)).unwrap();
        drop(split);
        let id = layer_id_for(parent, &stats.diff_digest);
        store
            .commit_layers(vec![(
                NewLayer {
                    id: id.clone(),
                    parent: parent.map(String::from),
                    compressed_digest: stats.diff_digest.clone(),
                    compressed_size: stats.diff_size as i64,
                    diff_digest: stats.diff_digest,
                    diff_size: stats.diff_size as i64,
                    compression: 0,
                    uids: stats.uids,
                    gids: stats.gids,
                },
                staging,
            )])
            .unwrap();
        id
    }

    fn add_image(store: &Store, top: &str, name: &str) -> String {
        let id = crate::digest::sha256_hex(name.as_bytes());
        let manifest = format!("{{\"name\":\"{name}\"}}").into_bytes();
        store
            .commit_image(NewImage {
                id: id.clone(),
                top_layer: Some(top.to_string()),
                digest: crate::digest::sha256_digest(&manifest),
                names: vec![name.to_string()],
                created: None,
                big_data: vec![BigData {
                    key: "manifest".into(),
                    digest: crate::digest::sha256_digest(&manifest),
                    data: manifest,
                }],
                metadata: String::new(),
            })
            .unwrap();
        id
    }

    fn kinds(findings: &[Finding]) -> Vec<(&'static str, String)> {
        findings.iter().map(|f| (f.kind, f.id.clone())).collect()
    }

    fn has(findings: &[Finding], kind: &str, id: &str) -> bool {
        findings.iter().any(|f| f.kind == kind && f.id.contains(id))
    }

    #[test]
    fn damaged_content_is_found_and_repair_respects_containers() {
        if !is_root() {
            eprintln!("SKIP: needs root (overlay driver)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), DriverKind::Overlay);
        let a = add_layer(&store, None, &[("a", b"hello")]);
        let b = add_layer(&store, Some(&a), &[("b", b"world")]);
        add_image(&store, &b, "localhost/x:1");
        let c = store.create_container("localhost/x:1", None, None).unwrap();
        let report = store.check(&CheckOptions::default()).unwrap();
        assert!(report.clean, "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.layers_verified, 2);
        assert_eq!((report.layers, report.images, report.containers), (3, 1, 1));

        std::fs::write(store.driver().layer_dir(&a).join("a"), b"jello").unwrap();
        let report = store.check(&CheckOptions::default()).unwrap();
        assert_eq!(
            kinds(&report.errors),
            vec![(kind::LAYER_CONTENT_MISMATCH, a.clone())]
        );
        assert!(
            report.errors[0].message.contains("CRC"),
            "{:?}",
            report.errors
        );

        // The container keeps what it uses.
        let report = store.repair(&CheckOptions::default()).unwrap();
        assert!(!report.clean);
        assert!(has(&report.repaired, kind::KEPT_FOR_CONTAINER, &c.id));
        assert_eq!(store.layers().unwrap().len(), 3);

        let report = store
            .repair(&CheckOptions {
                remove_containers: true,
                ..CheckOptions::default()
            })
            .unwrap();
        assert!(report.clean, "{:?}", report.errors);
        assert!(has(&report.repaired, kind::REMOVED_CONTAINER, &c.id));
        assert!(has(&report.repaired, kind::REMOVED_LAYER, &a));
        assert!(store.layers().unwrap().is_empty());
        assert!(store.images().unwrap().is_empty());
        assert!(store.containers().unwrap().is_empty());
        assert!(std::fs::read_dir(dir.path().join("root/overlay/l"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn links_lowers_and_debris_are_repaired() {
        if !is_root() {
            eprintln!("SKIP: needs root (overlay driver)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), DriverKind::Overlay);
        let home = dir.path().join("root/overlay");
        let a = add_layer(&store, None, &[("a", b"1")]);
        let b = add_layer(&store, Some(&a), &[("b", b"2")]);
        add_image(&store, &b, "localhost/x:1");
        let link_a = std::fs::read_to_string(home.join(&a).join("link")).unwrap();
        std::fs::remove_file(home.join("l").join(&link_a)).unwrap();
        std::fs::write(home.join(&b).join("lower"), "l/WRONG").unwrap();
        let stray = "f".repeat(64);
        std::fs::create_dir_all(home.join(&stray).join("diff")).unwrap();
        std::os::unix::fs::symlink("../nothing/diff", home.join("l/DANGLING")).unwrap();
        let layers_dir = dir.path().join("root/overlay-layers");
        std::fs::write(layers_dir.join(format!("{stray}.tar-split.gz")), b"").unwrap();
        std::fs::create_dir(dir.path().join("root/overlay-images").join(&stray)).unwrap();

        let report = store.check(&CheckOptions::default()).unwrap();
        for (k, id) in [
            (kind::LAYER_SHORT_LINK_BAD, a.as_str()),
            (kind::LAYER_LOWER_BAD, b.as_str()),
            (kind::LAYER_DIR_UNACCOUNTED, stray.as_str()),
            (kind::SHORT_LINK_DANGLING, "DANGLING"),
            (kind::TAR_SPLIT_UNACCOUNTED, stray.as_str()),
            (kind::IMAGE_DIR_UNACCOUNTED, stray.as_str()),
        ] {
            assert!(has(&report.errors, k, id), "{k} {id}: {:?}", report.errors);
        }
        let report = store.repair(&CheckOptions::default()).unwrap();
        assert!(report.clean, "{:?}", report.errors);
        assert_eq!(store.layers().unwrap().len(), 2);
        assert_eq!(
            std::fs::read_link(home.join("l").join(&link_a)).unwrap(),
            PathBuf::from(format!("../{a}/diff"))
        );
        assert_eq!(
            std::fs::read_to_string(home.join(&b).join("lower")).unwrap(),
            format!("l/{link_a}")
        );
        assert!(!home.join(&stray).exists());
        assert!(!home.join("l/DANGLING").exists());
        // And the fixed layer mounts.
        let c = store.create_container("localhost/x:1", None, None).unwrap();
        let merged = store.mount_container(&c.id).unwrap();
        assert_eq!(std::fs::read(merged.join("a")).unwrap(), b"1");
        assert!(!store.unmount_container(&c.id, false).unwrap());
    }

    #[test]
    fn unreferenced_layers_warn_until_old_and_missing_references_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), DriverKind::Vfs);
        let a = add_layer(&store, None, &[("a", b"1")]);
        let b = add_layer(&store, Some(&a), &[("b", b"2")]);
        let report = store.check(&CheckOptions::default()).unwrap();
        assert!(report.clean);
        assert!(has(&report.warnings, kind::LAYER_UNREFERENCED, &a));
        assert!(has(&report.warnings, kind::LAYER_UNREFERENCED, &b));
        let now = CheckOptions {
            unreferenced_max_age: Duration::ZERO,
            ..CheckOptions::default()
        };
        let report = store.check(&now).unwrap();
        assert!(has(&report.errors, kind::LAYER_UNREFERENCED, &a));
        let report = store.repair(&now).unwrap();
        assert!(report.clean, "{:?}", report.errors);
        assert!(store.layers().unwrap().is_empty());

        // An image whose big data went missing; a container whose image went missing.
        let a = add_layer(&store, None, &[("a", b"1")]);
        let img = add_image(&store, &a, "localhost/y:1");
        let c = store.create_container(&img, None, None).unwrap();
        std::fs::remove_file(
            dir.path()
                .join("root/vfs-images")
                .join(&img)
                .join("manifest"),
        )
        .unwrap();
        let report = store.check(&CheckOptions::default()).unwrap();
        assert_eq!(
            kinds(&report.errors),
            vec![(kind::IMAGE_BIG_DATA_BAD, img.clone())]
        );
        // Without remove_containers the image stays for its container.
        let report = store.repair(&CheckOptions::default()).unwrap();
        assert!(!report.clean);
        assert!(has(&report.repaired, kind::KEPT_FOR_CONTAINER, &c.id));
        assert!(store.container(&c.id).is_ok());
        assert!(store.image(&img).is_ok());
        let report = store
            .repair(&CheckOptions {
                remove_containers: true,
                ..CheckOptions::default()
            })
            .unwrap();
        assert!(report.clean, "{:?}", report.errors);
        assert!(has(&report.repaired, kind::REMOVED_CONTAINER, &c.id));
        assert!(has(&report.repaired, kind::REMOVED_IMAGE, &img));
        assert!(has(&report.repaired, kind::REMOVED_LAYER, &c.layer));
        assert!(store.containers().unwrap().is_empty());
        // Its base layer is now unreferenced: a warning, as it is young.
        let report = store.check(&CheckOptions::default()).unwrap();
        assert!(report.clean, "{:?}", report.errors);
        assert!(has(&report.warnings, kind::LAYER_UNREFERENCED, &a));
    }

    #[test]
    fn volatile_records_of_newer_tools_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), DriverKind::Vfs);
        let a = add_layer(&store, None, &[("a", b"1")]);
        let img = add_image(&store, &a, "localhost/v:1");
        drop(store);
        // A volatile container (newer containers/storage) on our image, with its own layer.
        let (cid, lid) = ("c".repeat(64), "9".repeat(64));
        std::fs::write(
            dir.path()
                .join("root/vfs-containers/volatile-containers.json"),
            format!(r#"[{{"id":"{cid}","image":"{img}","layer":"{lid}"}}]"#),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("root/vfs-layers/volatile-layers.json"),
            format!(r#"[{{"id":"{lid}","parent":"{a}"}}]"#),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("root/vfs-containers").join(&cid)).unwrap();
        std::fs::create_dir_all(dir.path().join("root/vfs/dir").join(&lid)).unwrap();
        let store = open(dir.path(), DriverKind::Vfs);
        assert!(dir.path().join("root/vfs-containers").join(&cid).is_dir());
        let report = store
            .repair(&CheckOptions {
                unreferenced_max_age: Duration::ZERO,
                ..CheckOptions::default()
            })
            .unwrap();
        assert!(report.clean, "{:?}", report.errors);
        assert!(has(&report.warnings, kind::FOREIGN_RECORDS, "root"));
        assert!(report.repaired.is_empty(), "{:?}", report.repaired);
        assert!(dir.path().join("root/vfs/dir").join(&lid).is_dir());
        assert!(store.has_layer(&a).unwrap());
        // An unreadable one: nothing is taken for debris.
        std::fs::write(
            dir.path()
                .join("root/vfs-containers/volatile-containers.json"),
            b"{not json",
        )
        .unwrap();
        let store = open(dir.path(), DriverKind::Vfs);
        assert!(dir.path().join("root/vfs-containers").join(&cid).is_dir());
        let report = store.check(&CheckOptions::default()).unwrap();
        assert_eq!(
            kinds(&report.errors),
            vec![(
                kind::FOREIGN_RECORDS_UNREADABLE,
                dir.path()
                    .join("root")
                    .canonicalize()
                    .unwrap()
                    .display()
                    .to_string()
            )]
        );
    }

    #[test]
    fn opening_drops_stale_mounts_and_unrecorded_directories() {
        let dir = tempfile::tempdir().unwrap();
        let driver = if is_root() {
            DriverKind::Overlay
        } else {
            DriverKind::Vfs
        };
        let name = driver.name();
        let store = open(dir.path(), driver);
        let a = add_layer(&store, None, &[("a", b"1")]);
        drop(store);
        let merged = dir.path().join(format!("root/overlay/{a}/merged"));
        let records = format!(
            r#"[{{"id":"{a}","path":"{}","count":2}},{{"id":"{}","path":"/x","count":1}}]"#,
            merged.display(),
            "e".repeat(64)
        );
        let mounts = dir
            .path()
            .join(format!("run/{name}-layers/mountpoints.json"));
        std::fs::write(&mounts, records).unwrap();
        let stray = "d".repeat(64);
        for d in [
            format!("root/{name}-images/{stray}"),
            format!("root/{name}-containers/{stray}"),
            format!("run/{name}-containers/{stray}/userdata"),
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(
            dir.path()
                .join(format!("root/{name}-images/.tmp-images.json123")),
            b"x",
        )
        .unwrap();
        let store = open(dir.path(), driver);
        let left: Vec<MountRecord> =
            serde_json::from_slice(&std::fs::read(&mounts).unwrap()).unwrap();
        if driver == DriverKind::Overlay {
            assert!(left.is_empty(), "{left:?}");
        } else {
            // vfs cannot tell a stale count: only the unknown layer's goes.
            assert_eq!(left.len(), 1);
        }
        assert!(!dir
            .path()
            .join(format!("root/{name}-images/{stray}"))
            .exists());
        assert!(!dir
            .path()
            .join(format!("root/{name}-containers/{stray}"))
            .exists());
        assert!(!dir
            .path()
            .join(format!("run/{name}-containers/{stray}"))
            .exists());
        assert!(!dir
            .path()
            .join(format!("root/{name}-images/.tmp-images.json123"))
            .exists());
        assert!(store.has_layer(&a).unwrap());
    }

    /// A tar with every kind of entry the tree pass models: directories with their own modes and
    /// owners, an implicit directory, files (one empty, one setuid), a symlink, a hard link, a
    /// fifo, whiteouts and an opaque directory (in the upper layer), a long name (GNU).
    enum Item<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a [u8], u32, u64),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Fifo(&'a str),
    }

    fn rich_tar(items: &[Item]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for item in items {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            match item {
                Item::Dir(name, mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, name, &[][..]).unwrap();
                }
                Item::File(name, data, mode, owner) => {
                    h.set_mode(*mode);
                    h.set_uid(*owner);
                    h.set_gid(*owner);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, name, *data).unwrap();
                }
                Item::Symlink(name, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, name, target).unwrap();
                }
                Item::Hardlink(name, target) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_mode(0o644);
                    h.set_size(0);
                    b.append_link(&mut h, name, target).unwrap();
                }
                Item::Fifo(name) => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_mode(0o640);
                    h.set_size(0);
                    b.append_data(&mut h, name, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn add_tar_layer(store: &Store, parent: Option<&str>, tar: &[u8]) -> String {
        let staging = store.new_staging_dir().unwrap();
        store
            .driver()
            .prepare_staging(parent, &staging.tree())
            .unwrap();
        let mut split = std::fs::File::create(staging.tar_split()).unwrap();
        let opts = ApplyOptions {
            whiteouts: store.driver().whiteout_mode(),
            ..ApplyOptions::default()
        };
        let stats = apply_layer(tar, &staging.tree(), &opts, Some(&mut split)).unwrap();
        drop(split);
        let id = layer_id_for(parent, &stats.diff_digest);
        store
            .commit_layers(vec![(
                NewLayer {
                    id: id.clone(),
                    parent: parent.map(String::from),
                    compressed_digest: stats.diff_digest.clone(),
                    compressed_size: stats.diff_size as i64,
                    diff_digest: stats.diff_digest,
                    diff_size: stats.diff_size as i64,
                    compression: 0,
                    uids: stats.uids,
                    gids: stats.gids,
                },
                staging,
            )])
            .unwrap();
        id
    }

    /// Two layers of everything; returns (lower, upper) layer IDs and the image ID.
    fn rich_image(store: &Store) -> (String, String, String) {
        let long = format!("deep/{}/file", "n".repeat(150));
        let lower = rich_tar(&[
            Item::Dir("etc/", 0o755),
            Item::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644, 0),
            Item::File("etc/empty", b"", 0o600, 0),
            Item::Dir("home/", 0o755),
            Item::Dir("home/user/", 0o700),
            Item::File("home/user/owned.txt", b"mine", 0o640, 1000),
            Item::File("bin/tool", b"#!/bin/sh\n", 0o4755, 0), // implicit bin/, setuid
            Item::Symlink("link", "etc/passwd"),
            Item::Hardlink("etc/passwd.hard", "etc/passwd"),
            Item::Fifo("run.fifo"),
            Item::Dir("opq/", 0o755),
            Item::File("opq/old", b"old", 0o644, 0),
            Item::File(&long, b"long name", 0o644, 0),
        ]);
        let upper = rich_tar(&[
            Item::File("etc/.wh.empty", b"", 0o644, 0),
            Item::File("opq/.wh..wh..opq", b"", 0o644, 0),
            Item::File("opq/new", b"new", 0o644, 0),
            Item::File("etc/added", b"added", 0o600, 0),
            Item::Hardlink("etc/added.hard", "etc/added"),
        ]);
        let a = add_tar_layer(store, None, &lower);
        let b = add_tar_layer(store, Some(&a), &upper);
        let image = add_image(store, &b, "localhost/rich:1");
        (a, b, image)
    }

    /// Every kind of damage to a layer's files is found by the content pass (and only by it),
    /// on both drivers, and a repair removes the damaged layer with what is built on it.
    #[test]
    fn layer_files_altered_added_or_removed_after_the_pull_are_found() {
        if !is_root() {
            eprintln!("SKIP: needs root (file owners, overlay whiteouts)");
            return;
        }
        type Damage = fn(&Path);
        let damages: &[(&str, Damage, &str)] = &[
            (
                "altered content",
                |d| std::fs::write(d.join("etc/passwd"), b"toor:x:0:0::/root:/bin/sh\n").unwrap(),
                "CRC",
            ),
            (
                "changed mode",
                |d| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(
                        d.join("etc/passwd"),
                        std::fs::Permissions::from_mode(0o666),
                    )
                    .unwrap()
                },
                "mode 0666, not 0644",
            ),
            (
                "setuid bit dropped",
                |d| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(
                        d.join("bin/tool"),
                        std::fs::Permissions::from_mode(0o755),
                    )
                    .unwrap()
                },
                "mode 0755, not 4755",
            ),
            (
                "changed owner",
                |d| {
                    std::os::unix::fs::lchown(d.join("home/user/owned.txt"), Some(0), Some(0))
                        .unwrap()
                },
                "owner 0:0, not 1000:1000",
            ),
            (
                "removed file",
                |d| std::fs::remove_file(d.join("home/user/owned.txt")).unwrap(),
                "missing from the layer",
            ),
            (
                "removed empty file",
                |d| std::fs::remove_file(d.join("etc/empty")).unwrap(),
                "-etc/empty",
            ),
            (
                "removed symlink",
                |d| std::fs::remove_file(d.join("link")).unwrap(),
                "-link",
            ),
            (
                "added file",
                |d| std::fs::write(d.join("etc/shadow"), b"x").unwrap(),
                "+etc/shadow",
            ),
            (
                "added directory",
                |d| std::fs::create_dir(d.join("home/intruder")).unwrap(),
                "+home/intruder",
            ),
            (
                "symlink retargeted",
                |d| {
                    std::fs::remove_file(d.join("link")).unwrap();
                    std::os::unix::fs::symlink("/etc/shadow", d.join("link")).unwrap();
                },
                "link (modified at",
            ),
            (
                "file replaced by a symlink",
                |d| {
                    std::fs::remove_file(d.join("etc/empty")).unwrap();
                    std::os::unix::fs::symlink("/etc/shadow", d.join("etc/empty")).unwrap();
                },
                "etc/empty (a symlink, the layer has a file)",
            ),
        ];
        for driver in [DriverKind::Overlay, DriverKind::Vfs] {
            for (what, damage, expect) in damages {
                let dir = tempfile::tempdir().unwrap();
                let store = open(dir.path(), driver);
                let (a, b, _) = rich_image(&store);
                let report = store.check(&CheckOptions::default()).unwrap();
                assert!(report.clean, "{driver:?} undamaged: {:?}", report.errors);
                assert!(
                    report.warnings.is_empty(),
                    "{driver:?}: {:?}",
                    report.warnings
                );
                assert_eq!(report.layers_verified, 2);

                damage(&store.driver().layer_dir(&a));
                let report = store.check(&CheckOptions::default()).unwrap();
                let expected = vec![(kind::LAYER_CONTENT_MISMATCH, a.clone())];
                // vfs: the upper layer's directory is a copy of the lower one, untouched.
                assert_eq!(
                    kinds(&report.errors),
                    expected,
                    "{driver:?} {what}: {:?}",
                    report.errors
                );
                assert!(
                    report.errors[0].message.contains(expect),
                    "{driver:?} {what}: {:?} lacks {expect:?}",
                    report.errors[0].message
                );
                // The metadata-only check does not read layers.
                let quick = store
                    .check(&CheckOptions {
                        content: false,
                        ..CheckOptions::default()
                    })
                    .unwrap();
                assert!(quick.clean, "{driver:?} {what}: {:?}", quick.errors);

                // Repair: the damaged layer, the layer on it and the image go; a new pull
                // (here: the same layers applied again) makes the store whole.
                let report = store.repair(&CheckOptions::default()).unwrap();
                assert!(report.clean, "{driver:?} {what}: {:?}", report.errors);
                assert!(has(&report.repaired, kind::REMOVED_LAYER, &a));
                assert!(has(&report.repaired, kind::REMOVED_LAYER, &b));
                assert!(store.layers().unwrap().is_empty());
                assert!(store.images().unwrap().is_empty());
                let (a2, _, _) = rich_image(&store);
                assert_eq!(a2, a);
                let report = store.check(&CheckOptions::default()).unwrap();
                assert!(
                    report.clean,
                    "{driver:?} {what} re-pulled: {:?}",
                    report.errors
                );
            }
        }
    }

    /// Damage to the upper layer (a whiteout removed, an opaque directory's hidden file
    /// showing again on vfs) is the upper layer's, not the lower one's.
    #[test]
    fn whiteouts_and_opaque_directories_are_compared() {
        if !is_root() {
            eprintln!("SKIP: needs root (overlay whiteouts)");
            return;
        }
        for driver in [DriverKind::Overlay, DriverKind::Vfs] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), driver);
            let (_, b, _) = rich_image(&store);
            let upper = store.driver().layer_dir(&b);
            match driver {
                DriverKind::Overlay => std::fs::remove_file(upper.join("etc/empty")).unwrap(),
                DriverKind::Vfs => std::fs::write(upper.join("opq/old"), b"old").unwrap(),
            }
            let report = store.check(&CheckOptions::default()).unwrap();
            assert_eq!(
                kinds(&report.errors),
                vec![(kind::LAYER_CONTENT_MISMATCH, b.clone())],
                "{driver:?}"
            );
            let shown = match driver {
                DriverKind::Overlay => "-etc/empty (whiteout missing)",
                DriverKind::Vfs => "+opq/old",
            };
            assert!(
                report.errors[0].message.contains(shown),
                "{:?}",
                report.errors
            );
        }
    }

    /// vfs: each layer is compared with its whole chain; siblings and grandchildren too (the
    /// expected tree is carried from a parent to the next record, or rebuilt).
    #[test]
    fn vfs_chains_with_siblings_are_compared_whole() {
        if !is_root() {
            eprintln!("SKIP: needs root (file owners)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), DriverKind::Vfs);
        let (a, b, _) = rich_image(&store);
        let c = add_layer(&store, Some(&b), &[("etc/third", b"3")]);
        let sibling = add_layer(&store, Some(&a), &[("etc/sibling", b"s")]);
        add_image(&store, &c, "localhost/third:1");
        add_image(&store, &sibling, "localhost/sibling:1");
        let report = store.check(&CheckOptions::default()).unwrap();
        assert!(report.clean, "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(report.layers_verified, 4);

        // The sibling sees the lower layer's files, not the upper layer's.
        std::fs::write(
            store.driver().layer_dir(&sibling).join("etc/added"),
            b"added",
        )
        .unwrap();
        std::fs::remove_file(store.driver().layer_dir(&c).join("etc/passwd.hard")).unwrap();
        let report = store.check(&CheckOptions::default()).unwrap();
        let mut want = vec![
            (kind::LAYER_CONTENT_MISMATCH, c.clone()),
            (kind::LAYER_CONTENT_MISMATCH, sibling.clone()),
        ];
        want.sort();
        assert_eq!(kinds(&report.errors), want, "{:?}", report.errors);
        let message = |id: &str| {
            report
                .errors
                .iter()
                .find(|f| f.id == id)
                .map(|f| f.message.clone())
                .unwrap_or_default()
        };
        assert!(
            message(&sibling).contains("+etc/added"),
            "{}",
            message(&sibling)
        );
        assert!(message(&c).contains("-etc/passwd.hard"), "{}", message(&c));
    }

    #[test]
    fn rfc3339_round_trip() {
        for (secs, nanos) in [(0i64, 0u32), (1_795_412_945, 650_009_226), (951_782_400, 5)] {
            assert_eq!(parse_rfc3339(&format_rfc3339(secs, nanos)), Some(secs));
        }
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(parse_rfc3339(""), None);
    }

    #[test]
    fn link_names() {
        assert!(valid_link_name("ABCDEFGHIJKLMNOPQRSTUVWXYZ"));
        assert!(!valid_link_name("../x"));
        assert!(!valid_link_name(""));
    }
}
