//! Layer blob compression, recognised by magic bytes (as containers/storage does, rather than
//! trusting the media type).

use crate::error::{Error, Result, Status};
use std::io::{self, Cursor, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The value of layers.json "compression" (containers/storage `archive.Compression`).
    pub fn storage_code(&self) -> i64 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 2,
            Compression::Zstd => 4,
        }
    }
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const ZSTD_MAX_WINDOW_LOG: u32 = 27;
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// A decoder whose complaints about its input (corrupt, truncated, a window too large) are
/// UNSAFE_ARCHIVE errors, whichever thread reads it.
struct Malformed<R>(R);

impl<R: Read> Read for Malformed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(super::limits::malformed_stream)
    }
}

/// Sniffs the first bytes of `r` and returns a reader of the uncompressed stream.
/// Gzip members are all decoded (MultiGzDecoder); bzip2 and xz are refused.
pub fn decompress<'a, R: Read + 'a>(mut r: R) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        match r.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from(e).context("reading the layer's first bytes")),
        }
    }
    let head = magic[..got].to_vec();
    let whole = Cursor::new(head.clone()).chain(r);
    if head.starts_with(GZIP_MAGIC) {
        Ok((
            Compression::Gzip,
            Box::new(Malformed(flate2::read::MultiGzDecoder::new(whole))),
        ))
    } else if head.starts_with(ZSTD_MAGIC) {
        let mut decoder = zstd::stream::read::Decoder::new(whole)
            .map_err(|e| Error::from(e).context("starting zstd decompression"))?;
        // The window is memory the decoder allocates as a frame header asks: keep libzstd's
        // default ceiling (128 MiB, enough for `zstd --long`) explicit, whatever the build.
        decoder
            .window_log_max(ZSTD_MAX_WINDOW_LOG)
            .map_err(|e| Error::from(e).context("configuring zstd decompression"))?;
        Ok((Compression::Zstd, Box::new(Malformed(decoder))))
    } else if head.starts_with(BZIP2_MAGIC) {
        Err(Error::new(
            Status::Unsupported,
            "bzip2-compressed layers are not supported",
        ))
    } else if head.starts_with(XZ_MAGIC) {
        Err(Error::new(
            Status::Unsupported,
            "xz-compressed layers are not supported",
        ))
    } else {
        Ok((Compression::None, Box::new(whole)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(mut r: Box<dyn Read + '_>) -> Vec<u8> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn detects_gzip_zstd_and_plain() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data[..50_000]).unwrap();
        let mut two_members = gz.finish().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data[50_000..]).unwrap();
        two_members.extend(gz.finish().unwrap());
        let (kind, r) = decompress(&two_members[..]).unwrap();
        assert_eq!(kind, Compression::Gzip);
        assert_eq!(kind.storage_code(), 2);
        assert_eq!(read_all(r), data, "both gzip members decoded");

        let zst = zstd::encode_all(&data[..], 3).unwrap();
        let (kind, r) = decompress(&zst[..]).unwrap();
        assert_eq!(kind, Compression::Zstd);
        assert_eq!(kind.storage_code(), 4);
        assert_eq!(read_all(r), data);

        let (kind, r) = decompress(&data[..]).unwrap();
        assert_eq!(kind, Compression::None);
        assert_eq!(kind.storage_code(), 0);
        assert_eq!(read_all(r), data);

        let (kind, r) = decompress(&b"ab"[..]).unwrap();
        assert_eq!(kind, Compression::None);
        assert_eq!(read_all(r), b"ab");
    }

    #[test]
    fn refuses_bzip2_and_xz() {
        let err = decompress(&b"BZh91AY&SY"[..]).err().unwrap();
        assert_eq!(err.status, Status::Unsupported);
        let err = decompress(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0, 4][..])
            .err()
            .unwrap();
        assert_eq!(err.status, Status::Unsupported);
    }
}
