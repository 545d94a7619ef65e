//! Layer application: unpacking a layer tar into a layer directory, confined to it, while
//! computing the diff digest and writing the tar-split (store-format §2.6, §4).
//!
//! Confinement: every change goes through descriptors under `dest`. Parent directories are
//! resolved with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) or a
//! component-by-component O_NOFOLLOW walk, final components are created with *at() calls
//! that never follow symlinks, and a name that needs a symlink to be reached is refused.
//!
//! Compatibility with containers/storage (checked against it by the tests when skopeo is
//! installed): the tar-split is the same line for line (the bytes after the end-of-archive
//! blocks are split into segments by Go's read sizes, which no one can reproduce; their
//! content is the same), and so are the extracted tree, diff digest and uid/gid sets.
//! Deliberate differences:
//! * a "./" entry sets the root's mode, owner and times (containers/storage's overlay path
//!   ignores it; its vfs path applies it);
//! * names reached through a symlink, absolute names and absolute hard-link targets are
//!   refused rather than resolved inside a chroot;
//! * in Delete (vfs) mode an opaque directory keeps the directories leading to files of the
//!   same layer, as the merged overlay view does;
//! * repeated names are refused only when a tar-split is written (tar-split cannot describe
//!   them, and containers/storage refuses them the same way).

mod apply;
pub mod compression;
mod crc64;
mod fsops;
mod limits;
mod reassemble;
mod tarfmt;
mod tarsplit;
mod tree;
mod writers;

#[cfg(test)]
mod tests;

use std::io::{Read, Write};
use std::path::Path;

pub use limits::{SizeBudget, DEFAULT_MAX_UNPACKED_SIZE};
pub use reassemble::{reassemble_layer, ReassembleError};
pub use tree::{copy_tree, remove_tree};

/// How whiteouts (`.wh.NAME`, `.wh..wh..opq`) are represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Native overlayfs: 0/0 character devices and the `trusted.overlay.opaque` xattr.
    Overlay,
    /// vfs: `dest` holds a copy of the parent; whiteouts delete from it.
    Delete,
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// More entries than this and the layer is refused.
    pub max_entries: u64,
    /// Longest entry name or link target accepted, in bytes.
    pub max_path_len: usize,
    /// Caps the uncompressed bytes read (a decompression bomb stops here). Clones share the
    /// count, so one budget given to every layer of an image caps the whole image.
    pub size_budget: SizeBudget,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            // The bookkeeping costs ~40 bytes per entry (hashed names): 2 million entries stay
            // under 100 MiB while real layers have a few hundred thousand at most.
            max_entries: 2_000_000,
            max_path_len: 4096,
            size_budget: SizeBudget::new(DEFAULT_MAX_UNPACKED_SIZE),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStats {
    /// `sha256:<hex>` of the whole uncompressed stream (trailing bytes included).
    pub diff_digest: String,
    /// Length of the whole uncompressed stream.
    pub diff_size: u64,
    /// Sorted, distinct owners of the entries, `.wh.*` entries excluded.
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    /// Number of tar entries (PAX/GNU extension headers not counted).
    pub entries: u64,
}

/// Applies an UNCOMPRESSED tar stream onto `dest` (an existing directory). Reads the stream
/// to EOF: trailing bytes after the end-of-archive blocks count in diff_digest/diff_size and
/// go into the tar-split. If `tar_split` is Some, writes the gzip-compressed tar-split of
/// the stream to it.
///
/// Errors: `UnsafeArchive` for anything that would leave `dest` or is malformed (the message
/// names the entry), `Unsupported` for sparse files, `PermissionDenied` for device nodes
/// when not root. On error `dest` holds a partial layer; the caller removes it.
pub fn apply_layer<R: Read>(
    tar: R,
    dest: &Path,
    opts: &ApplyOptions,
    tar_split: Option<&mut dyn Write>,
) -> crate::Result<LayerStats> {
    apply::apply_layer(tar, dest, opts, tar_split)
}
