// The fuzz targets' bodies, shared by the cargo-fuzz targets (fuzz/fuzz_targets/*.rs, built
// with nightly and libFuzzer) and by tests/fuzz_smoke.rs (plain `cargo test`: seeds plus a
// simple mutator for a few seconds). Included with `include!`, so only `cimage`'s public API is
// used. A body panics only when the library misbehaves: every input must give Ok or a cimage
// error, never a panic, and the layer target also checks that what was applied reassembles to
// the exact input.

/// A fuzz target: its name and the function fed each input.
pub type Target = (&'static str, fn(&[u8]));

/// All the targets, by name.
#[allow(dead_code)]
pub const TARGETS: &[Target] = &[
    ("reference", fuzz_reference),
    ("manifest", fuzz_manifest),
    ("storage_conf", fuzz_storage_conf),
    ("layer", fuzz_layer),
    ("tar_split", fuzz_tar_split),
];

/// Reference parsing: a parsed reference prints as something that parses to the same.
pub fn fuzz_reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = cimage::registry::parse_reference(text) {
        let printed = r.to_string();
        let again = cimage::registry::parse_reference(&printed).unwrap_or_else(|e| {
            panic!("{text:?} printed as {printed:?}, which does not parse: {e}")
        });
        assert_eq!(
            again.to_string(),
            printed,
            "reference {text:?} does not round-trip"
        );
        let _ = r.storage_name();
    }
}

/// Manifests, indexes and configs: detection, parsing, platform choice, document checks.
pub fn fuzz_manifest(data: &[u8]) {
    use cimage::registry::manifest;
    use cimage::Status;
    let malformed = Status::ManifestUnknown;
    if let Ok(kind) = manifest::detect_kind(data, malformed) {
        let _ = kind;
    }
    if let Ok(entries) = manifest::parse_index(data, malformed) {
        let _ = manifest::choose_from_index(&entries, &cimage::registry::Platform::host());
        for e in &entries {
            let _ = e.checked("entry", malformed);
            let _ = e.ref_name();
        }
    }
    if let Ok(m) = manifest::parse_manifest(data, malformed) {
        for l in &m.layers {
            let (digest, _) = l
                .checked("layer", malformed)
                .expect("parse_manifest validated it");
            cimage::digest::validate(digest).expect("a validated digest validates");
        }
    }
    if let Ok(c) = manifest::parse_config(data, malformed) {
        for d in &c.diff_ids {
            cimage::digest::validate(d).expect("parse_config validated the diff IDs");
        }
    }
    let _ = manifest::verify_document(data, None, "document");
}

/// storage.conf parsing.
pub fn fuzz_storage_conf(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cimage::config::storage::StorageConfig::parse(text);
    }
}

thread_local! {
    static SCRATCH: tempfile::TempDir = tempfile::tempdir().expect("a scratch directory");
}

/// Recomputes the checksum of every block that has a ustar magic, so that mutated headers get
/// past the checksum test and reach the code behind it. None when nothing changed.
pub fn fix_tar_checksums(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = data.to_vec();
    let mut changed = false;
    for block in out.chunks_exact_mut(512) {
        if &block[257..262] != b"ustar" {
            continue;
        }
        let sum: u32 = block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u32
                }
            })
            .sum();
        let field = format!("{sum:06o}\0 ");
        if &block[148..156] != field.as_bytes() {
            block[148..156].copy_from_slice(field.as_bytes());
            changed = true;
        }
    }
    changed.then_some(out)
}

/// Layer application (decompression sniffing included) into a scratch directory, in both
/// whiteout modes, of the input and of the input with its tar checksums repaired. When it
/// succeeds the tar-split and the files must rebuild the input exactly, with the digest and
/// size reported.
pub fn fuzz_layer(data: &[u8]) {
    apply_one(data);
    if let Some(fixed) = fix_tar_checksums(data) {
        apply_one(&fixed);
    }
}

fn apply_one(data: &[u8]) {
    use cimage::unpack::{self, compression, ApplyOptions, WhiteoutMode};
    SCRATCH.with(|scratch| {
        for mode in [WhiteoutMode::Overlay, WhiteoutMode::Delete] {
            let dest = scratch.path().join("layer");
            let _ = unpack::remove_tree(&dest);
            std::fs::create_dir(&dest).unwrap();
            let Ok((kind, decoded)) = compression::decompress(data) else {
                continue;
            };
            let opts = ApplyOptions {
                whiteouts: mode,
                max_entries: 10_000,
                size_budget: unpack::SizeBudget::new(64 << 20),
                ..ApplyOptions::default()
            };
            let mut split = Vec::new();
            let result = unpack::apply_layer(decoded, &dest, &opts, Some(&mut split));
            if let (Ok(stats), compression::Compression::None, WhiteoutMode::Overlay) =
                (&result, kind, mode)
            {
                let mut rebuilt = Vec::new();
                if let Err(e) = unpack::reassemble_layer(&split[..], &dest, &mut rebuilt) {
                    // Files a layer names but does not keep (whiteouts with content, AUFS
                    // metadata) cannot be read back, as in containers/storage.
                    assert!(
                        matches!(e, unpack::ReassembleError::Content(_)),
                        "tar-split we wrote is unreadable: {}",
                        e.message()
                    );
                    continue;
                }
                assert_eq!(rebuilt.len() as u64, stats.diff_size, "rebuilt size");
                assert_eq!(
                    rebuilt, data,
                    "the applied layer does not rebuild the input"
                );
                assert_eq!(cimage::digest::sha256_digest(&rebuilt), stats.diff_digest);
            }
            let _ = unpack::remove_tree(&dest);
        }
    });
}

/// The reassembler on arbitrary (gzip-compressed) tar-split input against a small tree.
pub fn fuzz_tar_split(data: &[u8]) {
    SCRATCH.with(|scratch| {
        let dir = scratch.path().join("tree");
        if !dir.exists() {
            std::fs::create_dir_all(dir.join("etc")).unwrap();
            std::fs::write(dir.join("etc/hello"), b"hello\n").unwrap();
            std::os::unix::fs::symlink("/etc/passwd", dir.join("escape")).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, data).unwrap();
        let compressed = gz.finish().unwrap();
        let mut out = Vec::new();
        let _ = cimage::unpack::reassemble_layer(&compressed[..], &dir, &mut out);
        let _ = cimage::unpack::reassemble_layer(data, &dir, &mut out);
        // Whatever it read, it never read outside the tree: /etc/passwd is not in the output.
        let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
        if passwd.len() > 16 {
            assert!(
                !out.windows(passwd.len()).any(|w| w == passwd.as_slice()),
                "the reassembler followed a symlink out of the layer"
            );
        }
    });
}
