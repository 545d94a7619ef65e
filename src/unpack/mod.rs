//! TEMPORARY stub; replaced by the unpack branch.
use crate::Result;
use std::path::Path;
pub enum WhiteoutMode {
    Overlay,
    Delete,
}
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    pub max_entries: u64,
    pub max_path_len: usize,
}
impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Overlay,
            max_entries: 5_000_000,
            max_path_len: 4096,
        }
    }
}
pub struct LayerStats {
    pub diff_digest: String,
    pub diff_size: u64,
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    pub entries: u64,
}
pub fn apply_layer<R: std::io::Read>(
    _tar: R,
    _dest: &Path,
    _opts: &ApplyOptions,
    _tar_split: Option<&mut dyn std::io::Write>,
) -> Result<LayerStats> {
    unimplemented!()
}
pub mod compression {
    pub enum Compression {
        None,
        Gzip,
        Zstd,
    }
    impl Compression {
        pub fn storage_code(&self) -> i64 {
            0
        }
    }
    pub fn decompress<'a, R: std::io::Read + 'a>(
        r: R,
    ) -> crate::Result<(Compression, Box<dyn std::io::Read + 'a>)> {
        Ok((Compression::None, Box::new(r)))
    }
}
pub fn copy_tree(_src: &Path, _dst: &Path) -> Result<()> {
    unimplemented!()
}
pub fn remove_tree(path: &Path) -> Result<()> {
    std::fs::remove_dir_all(path).map_err(Into::into)
}
