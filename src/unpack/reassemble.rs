//! Rebuilding a layer's tar from its tar-split file and the files in its directory, byte for
//! byte as it was pulled (vbatts/tar-split's "asm" output). The consistency check hashes the
//! result against the layer's diff digest, as containers/storage's check does.
//!
//! Everything here is untrusted in the sense that the store may be damaged: lines are bounded,
//! names are confined to the layer directory (no "..", no absolute names, no symlinks on the
//! way), and every file must have the size and CRC-64 the tar-split recorded.

use super::crc64::Crc64;
use super::fsops::{self, cstr, errno};
use crate::error::{Error, Status};
use base64::Engine as _;
use serde::Deserialize;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Longest tar-split line accepted. Our writer's longest line is a 1 MiB segment in base64
/// (1.4 MiB); Go's writer uses smaller reads.
const MAX_LINE: u64 = 32 << 20;

/// Why a reassembly failed: the tar-split itself is unusable, or the layer's files do not
/// match what it recorded (the layer is damaged).
#[derive(Debug, Clone)]
pub enum ReassembleError {
    /// The tar-split file is unreadable or malformed.
    TarSplit(String),
    /// A file is missing, has another size, or other content than recorded.
    Content(String),
    /// Writing the output failed.
    Output(Error),
}

impl ReassembleError {
    pub fn message(&self) -> String {
        match self {
            ReassembleError::TarSplit(m) => format!("tar-split: {m}"),
            ReassembleError::Content(m) => m.clone(),
            ReassembleError::Output(e) => e.message.clone(),
        }
    }
}

impl From<ReassembleError> for Error {
    fn from(e: ReassembleError) -> Error {
        match e {
            ReassembleError::TarSplit(m) => {
                Error::new(Status::Internal, format!("corrupt tar-split: {m}"))
            }
            ReassembleError::Content(m) => Error::new(Status::DigestMismatch, m),
            ReassembleError::Output(e) => e,
        }
    }
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    payload: Option<String>,
}

fn base64_decode(s: &str, what: &str) -> std::result::Result<Vec<u8>, ReassembleError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ReassembleError::TarSplit(format!("bad base64 in {what}: {e}")))
}

/// Writes the layer's original tar stream to `out`. `tar_split` is the gzip-compressed
/// tar-split file; `layer_dir` holds the layer's files (overlay: its diff directory).
pub fn reassemble_layer<R: Read>(
    tar_split: R,
    layer_dir: &Path,
    out: &mut dyn Write,
) -> std::result::Result<(), ReassembleError> {
    let root = fsops::openat(
        libc::AT_FDCWD,
        &cstr(layer_dir.as_os_str().as_bytes())
            .map_err(|e| ReassembleError::Output(Error::from(e)))?,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| {
        ReassembleError::Content(format!(
            "cannot open the layer directory {}: {e}",
            layer_dir.display()
        ))
    })?;
    let mut lines = BufReader::new(flate2::read::MultiGzDecoder::new(tar_split));
    let mut line = Vec::new();
    let mut copy_buf = vec![0u8; 128 << 10];
    let mut number = 0u64;
    loop {
        line.clear();
        let n = (&mut lines)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| ReassembleError::TarSplit(format!("reading: {e}")))?;
        if n == 0 {
            break;
        }
        number += 1;
        if n as u64 > MAX_LINE {
            return Err(ReassembleError::TarSplit(format!(
                "line {number} is longer than {MAX_LINE} bytes"
            )));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry: Line = serde_json::from_slice(&line)
            .map_err(|e| ReassembleError::TarSplit(format!("line {number}: {e}")))?;
        match entry.kind {
            2 => {
                let raw = base64_decode(entry.payload.as_deref().unwrap_or(""), "a segment")?;
                out.write_all(&raw)
                    .map_err(|e| ReassembleError::Output(Error::from(e)))?;
            }
            1 => {
                if entry.size <= 0 {
                    continue; // no content: the header was in the previous segment
                }
                let name = match (&entry.name, &entry.name_raw) {
                    (_, Some(raw)) => base64_decode(raw, "a name")?,
                    (Some(n), None) => n.clone().into_bytes(),
                    (None, None) => {
                        return Err(ReassembleError::TarSplit(format!(
                            "line {number}: file entry without a name"
                        )))
                    }
                };
                let crc = match entry.payload.as_deref() {
                    Some(p) => Some(base64_decode(p, "a checksum")?),
                    None => None,
                };
                copy_file(
                    &root,
                    &name,
                    entry.size as u64,
                    crc.as_deref(),
                    out,
                    &mut copy_buf,
                )?;
            }
            other => {
                return Err(ReassembleError::TarSplit(format!(
                    "line {number}: unknown entry type {other}"
                )))
            }
        }
    }
    Ok(())
}

/// Opens `name` for reading under `root`, never leaving it and never through a symlink.
fn open_confined(root: &OwnedFd, name: &[u8]) -> std::result::Result<File, ReassembleError> {
    let shown = String::from_utf8_lossy(name).into_owned();
    let mut comps = Vec::new();
    if name.first() == Some(&b'/') {
        return Err(ReassembleError::TarSplit(format!(
            "absolute file name {shown:?}"
        )));
    }
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(ReassembleError::TarSplit(format!(
                    "file name {shown:?} leaves the layer"
                )))
            }
            c => comps.push(c),
        }
    }
    let Some((last, parents)) = comps.split_last() else {
        return Err(ReassembleError::TarSplit(format!(
            "file entry {shown:?} names the layer root"
        )));
    };
    let content = |why: String| ReassembleError::Content(format!("file {shown:?}: {why}"));
    let bad_name = |e: std::io::Error| ReassembleError::TarSplit(format!("{shown:?}: {e}"));
    let mut dir: Option<OwnedFd> = None;
    if !parents.is_empty() {
        let path = cstr(&parents.join(&b'/')).map_err(bad_name)?;
        if let Ok(Some(fd)) = fsops::openat2_dir_beneath(root.as_raw_fd(), &path) {
            dir = Some(fd);
        } else {
            for comp in parents {
                let parent = dir.as_ref().unwrap_or(root).as_raw_fd();
                let c = cstr(comp).map_err(bad_name)?;
                dir = Some(fsops::open_dir_path(parent, &c).map_err(|e| {
                    content(format!(
                        "directory {:?}: {e}",
                        String::from_utf8_lossy(comp)
                    ))
                })?);
            }
        }
    }
    let parent = dir.as_ref().unwrap_or(root).as_raw_fd();
    let c = cstr(last).map_err(bad_name)?;
    let fd = fsops::openat(
        parent,
        &c,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOATIME,
        0,
    )
    .or_else(|e| {
        // O_NOATIME needs ownership of the file (or CAP_FOWNER).
        if errno(&e) == libc::EPERM {
            fsops::openat(parent, &c, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
        } else {
            Err(e)
        }
    })
    .map_err(|e| match errno(&e) {
        libc::ENOENT => content("missing from the layer".into()),
        libc::ELOOP => content("is a symbolic link, not the recorded file".into()),
        _ => content(e.to_string()),
    })?;
    let st = fsops::fstat(fd.as_raw_fd()).map_err(|e| content(e.to_string()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(content("is not a regular file".into()));
    }
    Ok(File::from(fd))
}

fn copy_file(
    root: &OwnedFd,
    name: &[u8],
    size: u64,
    crc: Option<&[u8]>,
    out: &mut dyn Write,
    buf: &mut [u8],
) -> std::result::Result<(), ReassembleError> {
    let shown = String::from_utf8_lossy(name).into_owned();
    let content = |why: String| ReassembleError::Content(format!("file {shown:?}: {why}"));
    let mut file = open_confined(root, name)?;
    let mut left = size;
    let mut sum = Crc64::new();
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let got = match file.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(content(format!(
                    "has {} bytes, the layer recorded {size}",
                    size - left
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(content(e.to_string())),
        };
        sum.update(&buf[..got]);
        out.write_all(&buf[..got])
            .map_err(|e| ReassembleError::Output(Error::from(e)))?;
        left -= got as u64;
    }
    let mut extra = [0u8; 1];
    if matches!(file.read(&mut extra), Ok(n) if n > 0) {
        return Err(content(format!(
            "is longer than the {size} bytes the layer recorded"
        )));
    }
    if let Some(expected) = crc {
        if expected != sum.to_be_bytes() {
            return Err(content(
                "content differs from what the layer recorded (CRC-64 mismatch)".into(),
            ));
        }
    }
    Ok(())
}
