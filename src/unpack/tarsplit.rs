//! Writer of the vbatts/tar-split "storage" JSON-lines format (store-format §2.6), gzip-compressed.
//!
//! One JSON object per line, fields in Go's struct order (type, name/name_raw, size, payload,
//! position), strings escaped the way Go's `encoding/json` escapes them, so the file is
//! what containers/storage itself would write for the same stream.

use super::limits::NameSet;
use base64::Engine as _;
use flate2::write::GzEncoder;
use std::io::{self, Write};

const SEGMENT_TYPE: u8 = 2;
const FILE_TYPE: u8 = 1;

pub struct TarSplitWriter<'w> {
    out: GzEncoder<&'w mut dyn Write>,
    line: Vec<u8>,
    position: u64,
    /// Cleaned names already recorded: tar-split refuses duplicates (ErrDuplicatePath), since
    /// the reassembler reads each file's content back from disk by name.
    seen: NameSet,
}

impl<'w> TarSplitWriter<'w> {
    pub fn new(out: &'w mut dyn Write) -> TarSplitWriter<'w> {
        TarSplitWriter {
            // Go's containers/storage uses gzip "best speed".
            out: GzEncoder::new(out, flate2::Compression::fast()),
            line: Vec::with_capacity(4096),
            position: 0,
            seen: NameSet::new(),
        }
    }

    /// Records `name` and reports whether it was new. Names are compared after Go's
    /// `filepath.Clean`, as tar-split does.
    pub fn note_name(&mut self, name: &[u8]) -> bool {
        self.seen.insert(&go_clean(name))
    }

    /// Raw bytes of the stream that are not file content. Empty segments are not written.
    pub fn segment(&mut self, raw: &[u8]) -> io::Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":2,\"payload\":\"");
        debug_assert_eq!(SEGMENT_TYPE, 2);
        push_base64(&mut self.line, raw);
        self.line.extend_from_slice(b"\",\"position\":");
        self.finish_line()
    }

    /// An entry; `crc` is Some for entries with content (`size` > 0).
    pub fn file(&mut self, name: &[u8], size: u64, crc: Option<[u8; 8]>) -> io::Result<()> {
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":");
        self.line.push(b'0' + FILE_TYPE);
        if !name.is_empty() {
            match std::str::from_utf8(name) {
                Ok(text) => {
                    self.line.extend_from_slice(b",\"name\":");
                    push_go_json_string(&mut self.line, text);
                }
                Err(_) => {
                    self.line.extend_from_slice(b",\"name_raw\":\"");
                    push_base64(&mut self.line, name);
                    self.line.push(b'"');
                }
            }
        }
        if size != 0 {
            self.line.extend_from_slice(b",\"size\":");
            self.line.extend_from_slice(size.to_string().as_bytes());
        }
        match crc {
            Some(bytes) => {
                self.line.extend_from_slice(b",\"payload\":\"");
                push_base64(&mut self.line, &bytes);
                self.line.push(b'"');
            }
            None => self.line.extend_from_slice(b",\"payload\":null"),
        }
        self.line.extend_from_slice(b",\"position\":");
        self.finish_line()
    }

    fn finish_line(&mut self) -> io::Result<()> {
        self.line
            .extend_from_slice(self.position.to_string().as_bytes());
        self.line.extend_from_slice(b"}\n");
        self.position += 1;
        self.out.write_all(&self.line)
    }

    /// Writes the gzip trailer.
    pub fn finish(self) -> io::Result<()> {
        let inner = self.out.finish()?;
        inner.flush()
    }
}

fn push_base64(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    let encoded_len = data.len().div_ceil(3) * 4;
    out.resize(start + encoded_len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
}

/// A JSON string as Go's `encoding/json` writes it with HTML escaping on (the Encoder default):
/// `<`, `>`, `&`, U+2028 and U+2029 become \u escapes, control characters use the short
/// escapes Go knows (\b \f \n \r \t, Go ≥ 1.22) or \u00XX.
fn push_go_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let v = c as u32;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(v >> 4) as usize & 15]);
                out.push(HEX[v as usize & 15]);
            }
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Go's `path/filepath.Clean` on bytes (lexical: collapses slashes, drops `.`, resolves `..`).
pub fn go_clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if matches!(parts.last(), Some(last) if *last != b"..") {
                    parts.pop();
                } else if !rooted {
                    parts.push(part);
                }
            }
            _ => parts.push(part),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if rooted {
        out.push(b'/');
    }
    out.extend_from_slice(&parts.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn go_clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("./", "."),
            ("./etc/", "etc"),
            ("a//b/./c/", "a/b/c"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("/", "/"),
            ("../../x", "../../x"),
        ] {
            assert_eq!(go_clean(input.as_bytes()), want.as_bytes(), "{input:?}");
        }
    }

    #[test]
    fn lines_have_go_field_order_and_escaping() {
        let mut gz = Vec::new();
        {
            let mut w = TarSplitWriter::new(&mut gz);
            w.segment(b"hdr").unwrap();
            w.file(
                b"etc/a<b>&\"\\\n",
                6,
                Some([0x61, 0x47, 0x72, 0xce, 0xbc, 0x77, 0x40, 0]),
            )
            .unwrap();
            w.file(b"dir/", 0, None).unwrap();
            w.file(b"bad\xff", 0, None).unwrap();
            w.finish().unwrap();
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"type":2,"payload":"aGRy","position":0}"#);
        assert_eq!(
            lines[1],
            r#"{"type":1,"name":"etc/a\u003cb\u003e\u0026\"\\\n","size":6,"payload":"YUdyzrx3QAA=","position":1}"#
        );
        assert_eq!(
            lines[2],
            r#"{"type":1,"name":"dir/","payload":null,"position":2}"#
        );
        assert_eq!(
            lines[3],
            r#"{"type":1,"name_raw":"YmFk/w==","payload":null,"position":3}"#
        );
        // Every line is valid JSON.
        for line in lines {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}
