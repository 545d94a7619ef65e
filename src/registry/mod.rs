//! TEMPORARY stub; replaced by the registry branch.
use crate::Result;
pub struct Reference;
impl Reference {
    pub fn storage_name(&self) -> String {
        String::new()
    }
}
pub fn parse_reference(_s: &str) -> Result<Reference> {
    Err(crate::Error::invalid("stub"))
}
