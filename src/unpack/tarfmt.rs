//! Tar header parsing (ustar, GNU, PAX, star) on raw 512-byte blocks, following Go's
//! `archive/tar` reader rules (which is what tar-split and containers/storage use), and the
//! buffered input stream that hashes everything it reads.

use crate::digest::Hasher;
use std::io::{self, Read};

pub const BLOCK: usize = 512;

/// Largest PAX or GNU long-name payload accepted (Go's `maxSpecialFileSize`).
pub const MAX_SPECIAL_FILE: u64 = 1 << 20;

/// Why a header could not be parsed; the caller adds the entry context.
pub type ParseResult<T> = std::result::Result<T, String>;

// Type flags.
pub const TYPE_REG: u8 = b'0';
pub const TYPE_REG_A: u8 = 0;
pub const TYPE_LINK: u8 = b'1';
pub const TYPE_SYMLINK: u8 = b'2';
pub const TYPE_CHAR: u8 = b'3';
pub const TYPE_BLOCK: u8 = b'4';
pub const TYPE_DIR: u8 = b'5';
pub const TYPE_FIFO: u8 = b'6';
pub const TYPE_CONT: u8 = b'7';
pub const TYPE_PAX: u8 = b'x';
pub const TYPE_PAX_GLOBAL: u8 = b'g';
pub const TYPE_GNU_LONGNAME: u8 = b'L';
pub const TYPE_GNU_LONGLINK: u8 = b'K';
pub const TYPE_GNU_SPARSE: u8 = b'S';

/// Types whose size field does not announce a data section (Go's `isHeaderOnlyType`).
pub fn is_header_only(kind: u8) -> bool {
    matches!(
        kind,
        TYPE_LINK | TYPE_SYMLINK | TYPE_CHAR | TYPE_BLOCK | TYPE_DIR | TYPE_FIFO
    )
}

/// Padding after a data section of `size` bytes.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// One parsed header block, before PAX/GNU extensions are merged.
#[derive(Debug, Clone)]
pub struct Header {
    pub kind: u8,
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub size: i64,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub dev_major: i64,
    pub dev_minor: i64,
}

fn field(block: &[u8; BLOCK], start: usize, len: usize) -> &[u8] {
    &block[start..start + len]
}

/// Bytes up to the first NUL (Go's `parseString`).
pub fn c_string(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// A numeric field: base-256 when the high bit is set, else octal padded with spaces/NULs.
pub fn parse_numeric(b: &[u8]) -> ParseResult<i64> {
    if let Some(&first) = b.first() {
        if first & 0x80 != 0 {
            // Base-256, two's complement; the 0x40 bit of the first byte is the sign.
            let negative = first & 0x40 != 0;
            let inv: u8 = if negative { 0xff } else { 0 };
            let mut value: u64 = 0;
            for (i, &byte) in b.iter().enumerate() {
                let mut c = byte ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if value >> 56 != 0 {
                    return Err("base-256 number overflows".into());
                }
                value = (value << 8) | c as u64;
            }
            if value >> 63 != 0 {
                return Err("base-256 number overflows".into());
            }
            let v = value as i64;
            return Ok(if negative { !v } else { v });
        }
    }
    parse_octal(b)
}

fn parse_octal(b: &[u8]) -> ParseResult<i64> {
    let trimmed = trim(b, |c| c == b' ' || c == 0);
    if trimmed.is_empty() {
        return Ok(0);
    }
    let mut value: i64 = 0;
    for &c in trimmed {
        if !(b'0'..=b'7').contains(&c) {
            return Err(format!(
                "invalid octal number {:?}",
                String::from_utf8_lossy(b)
            ));
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add((c - b'0') as i64))
            .ok_or_else(|| "octal number overflows".to_string())?;
    }
    Ok(value)
}

fn trim(b: &[u8], strip: impl Fn(u8) -> bool) -> &[u8] {
    let start = b.iter().position(|&c| !strip(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| !strip(c))
        .map(|i| i + 1)
        .unwrap_or(start);
    &b[start..end.max(start)]
}

pub fn is_zero_block(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Parses a non-zero header block. Verifies the checksum (Go accepts the signed or the
/// unsigned sum).
pub fn parse_header(block: &[u8; BLOCK]) -> ParseResult<Header> {
    let stored = parse_octal(field(block, 148, 8))?;
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as i64;
        signed += b as i8 as i64;
    }
    if stored != unsigned && stored != signed {
        return Err("header checksum mismatch (not a tar archive, or corrupted)".into());
    }

    let magic = field(block, 257, 6);
    let version = field(block, 263, 2);
    let ustar = magic == b"ustar\0" && version == b"00";
    let gnu = magic == b"ustar " && version == b" \0";
    let star = ustar && &block[508..512] == b"tar\0";

    let mut name = c_string(field(block, 0, 100)).to_vec();
    let kind = block[156];
    let mut header = Header {
        kind,
        name: Vec::new(),
        link: c_string(field(block, 157, 100)).to_vec(),
        mode: parse_numeric(field(block, 100, 8))?,
        uid: parse_numeric(field(block, 108, 8))?,
        gid: parse_numeric(field(block, 116, 8))?,
        size: parse_numeric(field(block, 124, 12))?,
        mtime: Time {
            sec: parse_numeric(field(block, 136, 12))?,
            nsec: 0,
        },
        atime: None,
        dev_major: 0,
        dev_minor: 0,
    };
    if ustar || gnu {
        header.dev_major = parse_numeric(field(block, 329, 8))?;
        header.dev_minor = parse_numeric(field(block, 337, 8))?;
    }
    let prefix: &[u8] = if star {
        let atime = field(block, 476, 12);
        if atime[0] != 0 {
            header.atime = Some(Time {
                sec: parse_numeric(atime)?,
                nsec: 0,
            });
        }
        c_string(field(block, 345, 131))
    } else if ustar {
        c_string(field(block, 345, 155))
    } else {
        if gnu {
            let atime = field(block, 345, 12);
            if atime[0] != 0 {
                header.atime = Some(Time {
                    sec: parse_numeric(atime)?,
                    nsec: 0,
                });
            }
        }
        b""
    };
    if !prefix.is_empty() {
        let mut full = prefix.to_vec();
        full.push(b'/');
        full.append(&mut name);
        name = full;
    }
    header.name = name;
    if header.size < 0 {
        return Err("negative size".into());
    }
    Ok(header)
}

/// PAX records ("%d %s=%s\n"), in order. Go's rules: key non-empty without '=', no NUL in
/// path-like values or in keys.
pub fn parse_pax(mut data: &[u8]) -> ParseResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| "malformed PAX record (no length)".to_string())?;
        let len_text = std::str::from_utf8(&data[..space]).map_err(|_| "malformed PAX length")?;
        let len: usize = len_text
            .parse()
            .map_err(|_| "malformed PAX length".to_string())?;
        if len <= space + 1 || len > data.len() {
            return Err("malformed PAX record length".into());
        }
        let record = &data[space + 1..len];
        data = &data[len..];
        let record = record
            .strip_suffix(b"\n")
            .ok_or_else(|| "PAX record does not end in a newline".to_string())?;
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| "PAX record without '='".to_string())?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err("invalid PAX key".into());
        }
        if matches!(key, b"path" | b"linkpath" | b"uname" | b"gname") && value.contains(&0) {
            return Err("NUL in PAX path".into());
        }
        records.push((key.to_vec(), value.to_vec()));
    }
    Ok(records)
}

/// A PAX decimal integer.
pub fn parse_pax_int(value: &[u8]) -> ParseResult<i64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("invalid PAX number {:?}", String::from_utf8_lossy(value)))
}

/// A PAX time "sec[.frac]" (Go's `parsePAXTime`; sub-nanosecond digits are dropped).
pub fn parse_pax_time(value: &[u8]) -> ParseResult<Time> {
    let bad = || format!("invalid PAX time {:?}", String::from_utf8_lossy(value));
    let (int_part, frac) = match value.iter().position(|&b| b == b'.') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    let sec = parse_pax_int(int_part).map_err(|_| bad())?;
    if !frac.iter().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut nsec: u32 = 0;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map(|d| (d - b'0') as u32).unwrap_or(0);
    }
    let negative = int_part.first() == Some(&b'-');
    if negative && nsec != 0 {
        // "-1.5" is 1.5 s before the epoch: sec -2, nsec 0.5 s.
        return Ok(Time {
            sec: sec - 1,
            nsec: 1_000_000_000 - nsec,
        });
    }
    Ok(Time { sec, nsec })
}

/// The layer stream: large buffered reads, every byte hashed as it is read.
pub struct Stream<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    eof: bool,
    pub hasher: Hasher,
}

impl<R: Read> Stream<R> {
    pub fn new(inner: R, capacity: usize) -> Stream<R> {
        Stream {
            inner,
            buf: vec![0u8; capacity].into_boxed_slice(),
            pos: 0,
            end: 0,
            eof: false,
            hasher: Hasher::new(),
        }
    }

    /// Buffered bytes, refilling when empty; empty only at end of stream.
    pub fn peek(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.end && !self.eof {
            loop {
                match self.inner.read(&mut self.buf) {
                    Ok(0) => {
                        self.eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.hasher.update(&self.buf[..n]);
                        self.pos = 0;
                        self.end = n;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.pos..self.end])
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
    }

    /// Fills `out` as far as the stream allows; returns the count (short only at the end).
    pub fn read_full(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < out.len() {
            let available = self.peek()?;
            if available.is_empty() {
                break;
            }
            let n = available.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&available[..n]);
            self.consume(n);
            filled += n;
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_octal_and_base256() {
        assert_eq!(parse_numeric(b"0000644\0").unwrap(), 0o644);
        assert_eq!(parse_numeric(b"  755 \0").unwrap(), 0o755);
        assert_eq!(parse_numeric(b"\0\0\0\0").unwrap(), 0);
        assert!(parse_numeric(b"12x4").is_err());
        // 8 GiB + 1 in base-256 (12-byte size field).
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 0x02;
        big[11] = 0x01;
        assert_eq!(parse_numeric(&big).unwrap(), (2i64 << 32) + 1);
        // -1 in base-256.
        assert_eq!(parse_numeric(&[0xff; 8]).unwrap(), -1);
    }

    #[test]
    fn pax_records_and_times() {
        let recs = parse_pax(b"16 path=foo/bar\n26 SCHILY.xattr.user.a=\x00b\n").unwrap();
        assert_eq!(recs[0], (b"path".to_vec(), b"foo/bar".to_vec()));
        assert_eq!(
            recs[1],
            (b"SCHILY.xattr.user.a".to_vec(), b"\x00b".to_vec())
        );
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"12 path=a\0b\n").is_err());
        assert_eq!(
            parse_pax_time(b"1700000000.5").unwrap(),
            Time {
                sec: 1700000000,
                nsec: 500_000_000
            }
        );
        assert_eq!(parse_pax_time(b"12").unwrap(), Time { sec: 12, nsec: 0 });
        assert_eq!(
            parse_pax_time(b"-1.5").unwrap(),
            Time {
                sec: -2,
                nsec: 500_000_000
            }
        );
        assert!(parse_pax_time(b"1.x").is_err());
    }
}
