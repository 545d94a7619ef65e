//! Bounds on what an untrusted layer may cost: a shared cap on uncompressed bytes, and
//! compact sets of names whose memory does not grow with the length of the names.

use crate::error::Error;
use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Default cap on the uncompressed size of an image: far above real images (the largest
/// common ones unpack to a few tens of GiB) and far below what a gzip or zstd bomb expands to
/// (a 64 MiB gzip blob of zeros is 64 GiB).
pub const DEFAULT_MAX_UNPACKED_SIZE: u64 = 64 << 30;

/// A cap on uncompressed bytes, shared by clones (the layers of one image).
#[derive(Debug, Clone)]
pub struct SizeBudget {
    limit: u64,
    used: Arc<AtomicU64>,
}

impl SizeBudget {
    pub fn new(limit: u64) -> SizeBudget {
        SizeBudget {
            limit,
            used: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes; false once the total is over the limit.
    pub fn charge(&self, n: u64) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        before.saturating_add(n) <= self.limit
    }

    pub fn exceeded_error(&self) -> Error {
        Error::unsafe_archive(format!(
            "the image unpacks to more than the limit of {} bytes (a decompression bomb?); \
             the limit is set with cimage_pull_options_set_max_unpacked_size",
            self.limit
        ))
    }
}

/// Reads through, failing once the budget is spent.
pub struct BudgetReader<R> {
    inner: R,
    budget: SizeBudget,
}

impl<R> BudgetReader<R> {
    pub fn new(inner: R, budget: SizeBudget) -> BudgetReader<R> {
        BudgetReader { inner, budget }
    }
}

impl<R: Read> Read for BudgetReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(malformed_stream)?;
        if !self.budget.charge(n as u64) {
            return Err(self.budget.exceeded_error().into());
        }
        Ok(n)
    }
}

/// Errors of the decompressors (corrupt or truncated gzip/zstd data, bytes after a gzip member)
/// are errors of the archive, not I/O errors: UNSAFE_ARCHIVE. Our own errors (digest mismatch,
/// network, cancel) and system errors pass unchanged.
pub(super) fn malformed_stream(err: io::Error) -> io::Error {
    let ours = err.get_ref().is_some_and(|e| e.is::<Error>());
    if ours || err.raw_os_error().is_some() || err.kind() == io::ErrorKind::Interrupted {
        return err;
    }
    Error::unsafe_archive(format!("the layer's compressed stream is malformed: {err}")).into()
}

/// A set of byte strings that keeps a 128-bit keyed hash of each, not the bytes: 16 bytes
/// per name whatever its length, so a layer of many long names cannot exhaust memory. Two
/// independently keyed SipHashes make an accidental or crafted collision hopeless.
pub struct NameSet {
    keys: (RandomState, RandomState),
    set: HashSet<u128>,
}

impl NameSet {
    pub fn new() -> NameSet {
        NameSet {
            keys: (RandomState::new(), RandomState::new()),
            set: HashSet::new(),
        }
    }

    fn key(&self, name: &[u8]) -> u128 {
        let hi = self.keys.0.hash_one(name) as u128;
        let lo = self.keys.1.hash_one(name) as u128;
        (hi << 64) | lo
    }

    /// True if the name was not in the set.
    pub fn insert(&mut self, name: &[u8]) -> bool {
        let k = self.key(name);
        self.set.insert(k)
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.set.contains(&self.key(name))
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.set.len()
    }
}

impl Default for NameSet {
    fn default() -> Self {
        NameSet::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_shared_by_clones() {
        let b = SizeBudget::new(100);
        let c = b.clone();
        assert!(b.charge(60));
        assert!(c.charge(40));
        assert!(!b.charge(1));
        assert_eq!(c.used(), 101);
    }

    #[test]
    fn budget_reader_stops_at_the_limit() {
        let data = vec![0u8; 1000];
        let mut r = BudgetReader::new(&data[..], SizeBudget::new(999));
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        let err = Error::from(err);
        assert_eq!(err.status, crate::Status::UnsafeArchive);
        assert!(err.message.contains("999"), "{}", err.message);
        let mut r = BudgetReader::new(&data[..], SizeBudget::new(1000));
        assert_eq!(r.read_to_end(&mut Vec::new()).unwrap(), 1000);
    }

    #[test]
    fn decompressor_errors_are_archive_errors() {
        struct Failing(io::Error);
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(self.0.kind(), self.0.to_string()))
            }
        }
        let mut r = BudgetReader::new(
            Failing(io::Error::new(
                io::ErrorKind::InvalidInput,
                "corrupt deflate stream",
            )),
            SizeBudget::new(100),
        );
        let e = Error::from(r.read(&mut [0u8; 8]).unwrap_err());
        assert_eq!(e.status, crate::Status::UnsafeArchive);
        assert!(e.message.contains("corrupt deflate"), "{}", e.message);
        let ours = Error::new(crate::Status::DigestMismatch, "bad digest");
        let e = Error::from(malformed_stream(ours.into()));
        assert_eq!(e.status, crate::Status::DigestMismatch);
        let e = Error::from(malformed_stream(io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(e.status, crate::Status::NoSpace);
    }

    #[test]
    fn name_set_membership() {
        let mut s = NameSet::new();
        assert!(s.insert(b"etc/passwd"));
        assert!(!s.insert(b"etc/passwd"));
        assert!(s.contains(b"etc/passwd"));
        assert!(!s.contains(b"etc/shadow"));
        assert!(s.insert(b""));
    }
}
