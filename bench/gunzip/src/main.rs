//! Gunzips (all members) and hashes each file given, as a layer pull does, and prints the best
//! of N runs: decompression alone, sha256 of the compressed and of the uncompressed bytes.
//!
//!     cimage-bench-gunzip [-n RUNS] FILE...
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::time::Instant;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 5;
    if args.first().map(String::as_str) == Some("-n") && args.len() > 1 {
        runs = args[1].parse().expect("-n takes a number");
        args.drain(..2);
    }
    let blobs: Vec<Vec<u8>> = args
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect();
    let compressed: usize = blobs.iter().map(Vec::len).sum();
    let mut buf = vec![0u8; 1 << 20];
    let (mut gunzip, mut sha_c, mut sha_u) = (f64::MAX, f64::MAX, f64::MAX);
    let mut uncompressed = 0usize;
    for _ in 0..runs {
        let t = Instant::now();
        uncompressed = 0;
        for b in &blobs {
            let mut d = MultiGzDecoder::new(&b[..]);
            loop {
                let n = d.read(&mut buf).expect("gunzip");
                if n == 0 {
                    break;
                }
                uncompressed += n;
            }
        }
        gunzip = gunzip.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for b in &blobs {
            std::hint::black_box(Sha256::digest(b));
        }
        sha_c = sha_c.min(t.elapsed().as_secs_f64());
        // sha256 of the uncompressed stream, as the diff digest needs, on a second pass
        let t = Instant::now();
        for b in &blobs {
            let mut d = MultiGzDecoder::new(&b[..]);
            let mut h = Sha256::new();
            loop {
                let n = d.read(&mut buf).expect("gunzip");
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            std::hint::black_box(h.finalize());
        }
        sha_u = sha_u.min(t.elapsed().as_secs_f64());
    }
    let mib = |n: usize| n as f64 / (1 << 20) as f64;
    println!(
        "gunzip {:.3} s ({:.0} MiB/s out) | sha256 compressed {:.3} s | gunzip+sha256 uncompressed {:.3} s | {:.1} -> {:.1} MiB",
        gunzip,
        mib(uncompressed) / gunzip,
        sha_c,
        sha_u,
        mib(compressed),
        mib(uncompressed)
    );
}
