//! The fuzz targets of fuzz/ (bodies in fuzz/bodies.rs) as a plain test: every seed of
//! fuzz/seeds/<target>/ (and of fuzz/corpus/<target>/, grown by longer cargo-fuzz runs, when
//! present), then inputs made by a small mutator for CIMAGE_FUZZ_SECONDS seconds per target
//! (default 2). A panic fails the test and saves the input under target/fuzz-smoke-failures/.
//! CIMAGE_FUZZ_SEED replays a run (the seed is printed). Long runs: fuzz/run.sh (libFuzzer).

#[allow(dead_code)]
mod bodies {
    include!("../fuzz/bodies.rs");
}

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Tokens worth inserting: path and digest syntax, JSON and TOML punctuation, tar magic.
const DICTIONARY: &[&[u8]] = &[
    b"..",
    b"/",
    b"../",
    b"./",
    b"sha256:",
    b"md5:",
    b"@",
    b":",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b"null",
    b"\\u0000",
    b".wh.",
    b".wh..wh..opq",
    b"ustar\x0000",
    b"ustar  \x00",
    b"\x00",
    b"\xff",
    b"=",
    b"\n",
    b"[storage]",
    b"\"mediaType\":",
    b"\"manifests\":",
    b"\"layers\":",
    b"\"diff_ids\":",
    b"{\"type\":1,\"name\":\"",
    b"{\"type\":2,\"payload\":\"",
    b"SCHILY.xattr.",
    b"GNU.sparse.",
    b"linkpath=",
    b"path=",
];

const MAX_LEN: usize = 256 << 10;

fn mutate(rng: &mut Rng, input: &[u8], pool: &[Vec<u8>]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = [0u8, 0xff, 0x7f, 0x80, b'/', b'.', b'0', b'7', b' '][rng.below(9)];
            }
            2 => {
                let i = rng.below(data.len() + 1);
                let token = DICTIONARY[rng.below(DICTIONARY.len())];
                data.splice(i..i, token.iter().copied());
            }
            3 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(64)).min(data.len());
                data.drain(start..end);
            }
            4 if !data.is_empty() => {
                // Repeat a chunk (many entries, long names, deep nesting).
                let start = rng.below(data.len());
                let end = (start + 1 + rng.below(600)).min(data.len());
                let chunk = data[start..end].to_vec();
                for _ in 0..1 + rng.below(8) {
                    data.splice(start..start, chunk.iter().copied());
                }
            }
            5 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(1024)).min(other.len());
                    let at = rng.below(data.len() + 1);
                    data.splice(at..at, other[start..end].iter().copied());
                }
            }
            6 => data.truncate(rng.below(data.len() + 1)),
            7 if data.len() >= 512 => {
                // Overwrite a numeric tar field with octal digits or base-256.
                let block = rng.below(data.len() / 512) * 512;
                let field = [100usize, 108, 116, 124, 136, 329, 337][rng.below(7)];
                let len = if field == 124 || field == 136 { 12 } else { 8 };
                if block + field + len <= data.len() {
                    for k in 0..len {
                        data[block + field + k] = match rng.below(4) {
                            0 => 0x80 | (rng.next() as u8 & 0x7f),
                            1 => 0xff,
                            _ => b'0' + rng.below(8) as u8,
                        };
                    }
                }
            }
            _ => {
                let i = rng.below(data.len() + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
        }
    }
    data.truncate(MAX_LEN);
    data
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in [
        root.join("seeds").join(target),
        root.join("corpus").join(target),
    ] {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if let Ok(d) = std::fs::read(&f) {
                out.push(d);
            }
        }
    }
    out
}

fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-smoke-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let path = dir.join(format!("{target}-{h:016x}"));
    std::fs::write(&path, input).unwrap();
    path
}

fn run_one(target: &str, body: fn(&[u8]), input: &[u8]) -> Result<(), String> {
    std::panic::catch_unwind(|| body(input)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let path = save_failure(target, input);
        format!(
            "{target}: panic on input saved as {} ({} bytes): {msg}",
            path.display(),
            input.len()
        )
    })
}

#[test]
fn fuzz_targets_survive_seeds_and_mutations() {
    let seconds: f64 = std::env::var("CIMAGE_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let seed: u64 = std::env::var("CIMAGE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("fuzz smoke: {seconds} s per target, CIMAGE_FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    let mut failures = Vec::new();
    for (target, body) in bodies::TARGETS {
        let pool = seeds(target);
        assert!(!pool.is_empty(), "no seeds in fuzz/seeds/{target}");
        for s in &pool {
            if let Err(e) = run_one(target, *body, s) {
                failures.push(e);
            }
        }
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let mut runs = 0usize;
        // Inputs that did not panic become parents too (a crude corpus growth).
        let mut parents = pool.clone();
        while Instant::now() < deadline && failures.len() < 5 {
            let parent = &parents[rng.below(parents.len())];
            let input = mutate(&mut rng, parent, &pool);
            match run_one(target, *body, &input) {
                Ok(()) => {
                    if parents.len() < 256 && rng.below(8) == 0 {
                        parents.push(input);
                    }
                }
                Err(e) => failures.push(e),
            }
            runs += 1;
        }
        eprintln!(
            "fuzz smoke: {target}: {} seeds, {runs} mutated inputs",
            pool.len()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
