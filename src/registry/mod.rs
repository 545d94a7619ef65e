//! TEMPORARY stub; replaced by the registry branch.
use crate::Result;
use std::path::PathBuf;
#[derive(Debug, Clone)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}
impl Platform {
    pub fn host() -> Platform {
        unimplemented!()
    }
    pub fn parse(_s: &str) -> Result<Platform> {
        unimplemented!()
    }
}
pub struct DockerRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}
pub struct LayoutRef {
    pub dir: PathBuf,
    pub tag: Option<String>,
}
pub enum Reference {
    Docker(DockerRef),
    Layout(LayoutRef),
}
impl Reference {
    pub fn storage_name(&self) -> String {
        String::new()
    }
}
impl std::fmt::Display for Reference {
    fn fmt(&self, _f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Ok(())
    }
}
pub fn parse_reference(_s: &str) -> Result<Reference> {
    Err(crate::Error::invalid("stub"))
}
pub struct SourceOptions {
    pub tls_verify: bool,
    pub platform: Platform,
}
#[derive(Debug, Clone)]
pub struct BlobDesc {
    pub digest: String,
    pub size: i64,
    pub media_type: String,
}
pub struct ResolvedImage {
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub index: Option<(Vec<u8>, String)>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<BlobDesc>,
    pub diff_ids: Vec<String>,
    pub created: Option<String>,
}
pub type BlobStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes>> + Send>>;
pub enum Source {
    X,
}
impl Source {
    pub async fn open(_r: &Reference, _o: &SourceOptions) -> Result<Source> {
        unimplemented!()
    }
    pub async fn top_digest(&self) -> Result<String> {
        unimplemented!()
    }
    pub async fn resolve(&self) -> Result<ResolvedImage> {
        unimplemented!()
    }
    pub async fn blob(&self, _d: &BlobDesc) -> Result<BlobStream> {
        unimplemented!()
    }
}
