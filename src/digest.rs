//! Digests as containers/storage writes them: `sha256:<64 lowercase hex>`.

use crate::error::{Error, Result, Status};
use sha2::{Digest as _, Sha256};

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// Hex of sha256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// True for 64 lowercase hex characters (an ID or a sha256 hex).
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Validates `algorithm:hex` before it reaches a URL or a path, and returns the hex.
/// Only sha256 is accepted (as containers/image does for pulls).
pub fn validate(digest: &str) -> Result<&str> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if is_hex64(hex) => Ok(hex),
        Some((alg, _)) if alg != "sha256" => Err(Error::new(
            Status::Unsupported,
            format!("unsupported digest algorithm {alg:?} in {digest:?}"),
        )),
        _ => Err(Error::invalid(format!("malformed digest {digest:?}"))),
    }
}

/// A streaming sha256 that also counts bytes.
#[derive(Default, Clone)]
pub struct Hasher {
    inner: Sha256,
    pub len: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len += data.len() as u64;
    }
    /// `sha256:<hex>`
    pub fn finish(self) -> String {
        format!("sha256:{}", hex(&self.inner.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = Hasher::new();
        h.update(b"");
        assert_eq!(h.finish(), sha256_digest(b""));
    }

    #[test]
    fn validation_rejects_bad_digests() {
        let good = sha256_digest(b"x");
        assert!(validate(&good).is_ok());
        assert_eq!(
            validate("sha256:../../etc").unwrap_err().status,
            Status::InvalidArgument
        );
        assert_eq!(
            validate("md5:abcd").unwrap_err().status,
            Status::Unsupported
        );
        assert_eq!(
            validate("sha256:ABCDEF").unwrap_err().status,
            Status::InvalidArgument
        );
        assert!(validate("nocolon").is_err());
    }
}
