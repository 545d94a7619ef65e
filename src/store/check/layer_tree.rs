//! The second half of the content pass: a layer's files compared with the tar headers its
//! tar-split recorded (what containers/storage's check does with its "layer contents" option
//! on a mounted layer). Rebuilding the tar and hashing it (the first half) proves the recorded
//! files' bytes; it cannot see a file added to the layer, an empty file or a symlink removed,
//! or a mode, owner or time changed, since the tar headers come from the tar-split. This pass
//! reads no file content: it parses the tar-split's headers and stats the layer's tree.
//!
//! What is compared, per path: presence, type, permission bits (with setuid/setgid/sticky),
//! owner, size of regular files, and the modification time (whole seconds) of everything but
//! directories (a directory's time changes when a later layer, or a vfs copy, adds to it).
//! Directories the tar did not list (made on the way to a file) are only checked for presence.
//! overlay: the diff directory holds this layer alone, whiteouts as 0/0 character devices.
//! vfs: the layer directory holds the whole file system, so the expected tree is the chain of
//! layers applied in order; a layer is compared only when every layer below it has a
//! tar-split.

use base64::Engine as _;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
/// Longest tar-split line accepted (the reassembly's bound).
const MAX_LINE: u64 = 32 << 20;
/// Differences listed in a finding's message; the rest are counted.
const SHOWN_DIFFERENCES: usize = 8;

/// How the layer directory represents whiteouts (as the layer was applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The directory holds this layer only; whiteouts are 0/0 character devices.
    OverlayDiff,
    /// The directory holds the whole tree; whiteouts deleted what they name.
    FullTree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Reg,
    Symlink,
    Char,
    Block,
    Fifo,
    /// overlay whiteout: a 0/0 character device.
    Whiteout,
    /// A hard link whose target was not found: only its presence is checked.
    Unknown,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::Reg => "file",
            Kind::Symlink => "symlink",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Fifo => "fifo",
            Kind::Whiteout => "whiteout",
            Kind::Unknown => "anything",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Attrs {
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    kind: Kind,
    /// Index into `Tree::inodes` (hard links share one).
    inode: usize,
    /// Listed by the tar (its attributes are compared), not made on the way to another entry.
    explicit: bool,
}

/// The tree a layer's headers describe.
#[derive(Default, Clone)]
pub struct Tree {
    nodes: BTreeMap<Vec<u8>, Node>,
    inodes: Vec<Attrs>,
}

/// Why a layer could not be compared (not damage: an unusual tar this pass does not model).
pub struct Unverifiable(pub String);

impl Tree {
    fn remove_subtree(&mut self, path: &[u8]) {
        self.nodes.remove(path);
        let mut prefix = path.to_vec();
        prefix.push(b'/');
        let doomed: Vec<Vec<u8>> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    fn ensure_ancestors(&mut self, comps: &[&[u8]]) {
        for i in 1..comps.len() {
            let path = comps[..i].join(&b'/');
            if !self.nodes.contains_key(&path) {
                self.inodes.push(Attrs {
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    mtime: 0,
                });
                let inode = self.inodes.len() - 1;
                self.nodes.insert(
                    path,
                    Node {
                        kind: Kind::Dir,
                        inode,
                        explicit: false,
                    },
                );
            }
        }
    }

    fn add(&mut self, comps: &[&[u8]], kind: Kind, attrs: Attrs) {
        self.ensure_ancestors(comps);
        let path = comps.join(&b'/');
        if kind == Kind::Dir {
            if let Some(n) = self.nodes.get_mut(&path).filter(|n| n.kind == Kind::Dir) {
                // A directory entry merges with the directory already there.
                n.explicit = true;
                let inode = n.inode;
                self.inodes[inode] = attrs;
                return;
            }
        }
        self.remove_subtree(&path);
        self.inodes.push(attrs);
        let inode = self.inodes.len() - 1;
        self.nodes.insert(
            path,
            Node {
                kind,
                inode,
                explicit: true,
            },
        );
    }

    /// Applies one layer's headers (from its gzip-compressed tar-split) to the tree.
    pub fn apply_tar_split<R: Read>(
        &mut self,
        tar_split: R,
        layout: Layout,
    ) -> Result<(), Unverifiable> {
        let stream = HeaderStream::new(tar_split);
        let mut archive = tar::Archive::new(stream);
        let entries = archive
            .entries()
            .map_err(|e| Unverifiable(format!("reading the tar-split: {e}")))?;
        // vfs: what this layer wrote (and its ancestors) survives its own opaque directories.
        let mut written: BTreeSet<Vec<u8>> = BTreeSet::new();
        for entry in entries {
            let mut entry =
                entry.map_err(|e| Unverifiable(format!("reading the tar-split: {e}")))?;
            let raw_name = entry.path_bytes().into_owned();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            let header = entry.header();
            let mut attrs = Attrs {
                mode: header.mode().unwrap_or(0) & 0o7777,
                uid: header.uid().unwrap_or(0),
                gid: header.gid().unwrap_or(0),
                size: entry.size(),
                mtime: header.mtime().unwrap_or(0) as i64,
            };
            let entry_type = header.entry_type();
            if let Ok(Some(pax)) = entry.pax_extensions() {
                for ext in pax.flatten() {
                    let value = ext.value_bytes();
                    let int = || std::str::from_utf8(value).ok()?.trim().parse::<i64>().ok();
                    match ext.key_bytes() {
                        b"uid" => attrs.uid = int().unwrap_or(0) as u64,
                        b"gid" => attrs.gid = int().unwrap_or(0) as u64,
                        b"mtime" => {
                            attrs.mtime = std::str::from_utf8(value)
                                .ok()
                                .and_then(|v| v.trim().parse::<f64>().ok())
                                .map_or(attrs.mtime, |t| t.floor() as i64)
                        }
                        _ => {}
                    }
                }
            }
            let comps = split(&raw_name)?;
            use tar::EntryType as T;
            let kind = match entry_type {
                T::Regular | T::Continuous if raw_name.ends_with(b"/") => Kind::Dir,
                T::Regular | T::Continuous => Kind::Reg,
                T::Directory => Kind::Dir,
                T::Symlink => Kind::Symlink,
                T::Link => Kind::Unknown,
                T::Char => Kind::Char,
                T::Block => Kind::Block,
                T::Fifo => Kind::Fifo,
                T::XGlobalHeader => continue,
                other => {
                    return Err(Unverifiable(format!(
                        "entry {:?} of type {:?}",
                        String::from_utf8_lossy(&raw_name),
                        other
                    )))
                }
            };
            if kind != Kind::Reg {
                attrs.size = 0;
            }
            let Some((last, parent)) = comps.split_last() else {
                continue; // the layer root: its attributes are not compared
            };
            // Whiteouts and AUFS metadata, as the applier reads them.
            let meta_inside = parent.iter().any(|c| c.starts_with(WHITEOUT_META_PREFIX));
            if *last == WHITEOUT_OPAQUE && !meta_inside {
                match layout {
                    Layout::OverlayDiff => self.ensure_ancestors(&comps),
                    Layout::FullTree => {
                        let dir = parent.join(&b'/');
                        let mut prefix = dir.clone();
                        if !prefix.is_empty() {
                            prefix.push(b'/');
                        }
                        let doomed: Vec<Vec<u8>> = self
                            .nodes
                            .range(prefix.clone()..)
                            .take_while(|(k, _)| k.starts_with(&prefix))
                            .filter(|(k, _)| !written.contains(*k))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in doomed {
                            self.nodes.remove(&k);
                        }
                    }
                }
                continue;
            }
            if meta_inside || last.starts_with(WHITEOUT_META_PREFIX) {
                continue;
            }
            if let Some(hidden) = last.strip_prefix(WHITEOUT_PREFIX) {
                let mut target: Vec<&[u8]> = parent.to_vec();
                target.push(hidden);
                match layout {
                    Layout::OverlayDiff => self.add(&target, Kind::Whiteout, attrs),
                    Layout::FullTree => self.remove_subtree(&target.join(&b'/')),
                }
                continue;
            }
            if kind == Kind::Unknown {
                // A hard link: the target's inode, which takes the link header's metadata.
                let target = link.as_deref().map(split).transpose()?.unwrap_or_default();
                let found = self
                    .nodes
                    .get(&target.join(&b'/'))
                    .copied()
                    .filter(|n| n.kind != Kind::Dir && !target.is_empty());
                self.ensure_ancestors(&comps);
                let path = comps.join(&b'/');
                self.remove_subtree(&path);
                match found {
                    Some(n) => {
                        let shared = &mut self.inodes[n.inode];
                        shared.uid = attrs.uid;
                        shared.gid = attrs.gid;
                        if n.kind != Kind::Symlink {
                            shared.mode = attrs.mode;
                            shared.mtime = attrs.mtime;
                        }
                        self.nodes.insert(path, n);
                    }
                    None => {
                        self.inodes.push(attrs);
                        let inode = self.inodes.len() - 1;
                        self.nodes.insert(
                            path,
                            Node {
                                kind: Kind::Unknown,
                                inode,
                                explicit: false,
                            },
                        );
                    }
                }
            } else {
                self.add(&comps, kind, attrs);
            }
            if layout == Layout::FullTree {
                for i in 1..=comps.len() {
                    written.insert(comps[..i].join(&b'/'));
                }
            }
        }
        Ok(())
    }

    /// Differences between this (expected) tree and the directory, as "+path" (not in the
    /// layer), "-path" (missing) and "path (what differs)"; empty when they agree.
    pub fn compare(&self, dir: &Path, layout: Layout) -> std::io::Result<Vec<String>> {
        let mut actual: BTreeMap<Vec<u8>, std::fs::Metadata> = BTreeMap::new();
        scan(dir, Vec::new(), &mut actual)?;
        let mut diffs = Vec::new();
        let show = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        for (path, node) in &self.nodes {
            let Some(meta) = actual.get(path) else {
                diffs.push(format!("-{} ({} missing)", show(path), node.kind.name()));
                continue;
            };
            let ft = meta.file_type();
            let kind_now = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::Reg
            } else if ft.is_symlink() {
                Kind::Symlink
            } else if ft.is_char_device() {
                if meta.rdev() == 0 && layout == Layout::OverlayDiff {
                    Kind::Whiteout
                } else {
                    Kind::Char
                }
            } else if ft.is_block_device() {
                Kind::Block
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Unknown
            };
            let same_kind = match (node.kind, kind_now) {
                (Kind::Unknown, _) => true,
                // A tar's 0/0 character device is a whiteout to overlay too.
                (Kind::Char, Kind::Whiteout) => true,
                (a, b) => a == b,
            };
            if !same_kind {
                diffs.push(format!(
                    "{} (a {}, the layer has a {})",
                    show(path),
                    kind_now.name(),
                    node.kind.name()
                ));
                continue;
            }
            if !node.explicit {
                continue;
            }
            let want = self.inodes[node.inode];
            let mut what = Vec::new();
            if !matches!(node.kind, Kind::Symlink | Kind::Whiteout)
                && meta.mode() & 0o7777 != want.mode
            {
                what.push(format!(
                    "mode {:04o}, not {:04o}",
                    meta.mode() & 0o7777,
                    want.mode
                ));
            }
            if (meta.uid() as u64, meta.gid() as u64) != (want.uid, want.gid) {
                what.push(format!(
                    "owner {}:{}, not {}:{}",
                    meta.uid(),
                    meta.gid(),
                    want.uid,
                    want.gid
                ));
            }
            if node.kind == Kind::Reg && meta.len() != want.size {
                what.push(format!("{} bytes, not {}", meta.len(), want.size));
            }
            if !matches!(node.kind, Kind::Dir | Kind::Whiteout) && meta.mtime() != want.mtime {
                what.push(format!("modified at {}, not {}", meta.mtime(), want.mtime));
            }
            if !what.is_empty() {
                diffs.push(format!("{} ({})", show(path), what.join(", ")));
            }
        }
        for path in actual.keys() {
            if !self.nodes.contains_key(path) {
                diffs.push(format!("+{} (not in the layer)", show(path)));
            }
        }
        Ok(diffs)
    }
}

/// The differences as a finding's message: the first few, and how many more.
pub fn summarize(diffs: &[String]) -> String {
    let mut text = diffs
        .iter()
        .take(SHOWN_DIFFERENCES)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if diffs.len() > SHOWN_DIFFERENCES {
        text.push_str(&format!("; and {} more", diffs.len() - SHOWN_DIFFERENCES));
    }
    format!("the layer's files differ from its tar headers: {text}")
}

/// Name components: "./", repeated and trailing slashes dropped; ".." or an absolute name
/// cannot come from a layer the applier accepted.
fn split(name: &[u8]) -> Result<Vec<&[u8]>, Unverifiable> {
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Unverifiable(format!(
                    "entry name {:?} has \"..\"",
                    String::from_utf8_lossy(name)
                )))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// lstat of everything below `dir`, keyed by relative path; symlinks are not followed. A
/// work list, not recursion: a damaged layer may be deep.
fn scan(
    dir: &Path,
    prefix: Vec<u8>,
    out: &mut BTreeMap<Vec<u8>, std::fs::Metadata>,
) -> std::io::Result<()> {
    let mut todo = vec![(dir.to_path_buf(), prefix)];
    while let Some((dir, prefix)) = todo.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let meta = e.metadata()?; // DirEntry::metadata does not follow symlinks
            let mut path = prefix.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(e.file_name().as_bytes());
            if meta.is_dir() {
                todo.push((e.path(), path.clone()));
            }
            out.insert(path, meta);
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    payload: Option<String>,
}

/// The layer's tar stream as the tar-split describes it, with zeros for file contents: enough
/// for a tar reader to see every header, without reading the layer's files.
struct HeaderStream<R: Read> {
    lines: BufReader<flate2::read::MultiGzDecoder<R>>,
    pending: Vec<u8>,
    at: usize,
    zeros: u64,
}

impl<R: Read> HeaderStream<R> {
    fn new(tar_split: R) -> Self {
        HeaderStream {
            lines: BufReader::new(flate2::read::MultiGzDecoder::new(tar_split)),
            pending: Vec::new(),
            at: 0,
            zeros: 0,
        }
    }
}

impl<R: Read> Read for HeaderStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        loop {
            if self.at < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.at);
                buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.zeros > 0 {
                let n = buf
                    .len()
                    .min(usize::try_from(self.zeros).unwrap_or(usize::MAX));
                buf[..n].fill(0);
                self.zeros -= n as u64;
                return Ok(n);
            }
            let mut line = Vec::new();
            let n = (&mut self.lines)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(0);
            }
            if n as u64 > MAX_LINE {
                return Err(bad("tar-split line too long".into()));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let entry: Line = serde_json::from_slice(&line).map_err(|e| bad(e.to_string()))?;
            match entry.kind {
                2 => {
                    self.pending = base64::engine::general_purpose::STANDARD
                        .decode(entry.payload.as_deref().unwrap_or(""))
                        .map_err(|e| bad(e.to_string()))?;
                    self.at = 0;
                }
                1 => self.zeros = entry.size.max(0) as u64,
                other => return Err(bad(format!("unknown tar-split entry type {other}"))),
            }
        }
    }
}
