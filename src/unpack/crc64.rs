//! CRC-64 with the ISO polynomial, as Go's `hash/crc64` computes it with `MakeTable(crc64.ISO)`
//! (reflected, initial value and final XOR all ones). tar-split stores it big-endian per file.
//!
//! The checksum runs over every byte of every layer: on x86_64 CPUs with PCLMULQDQ (detected at
//! run time) carry-less multiplication folds 64 bytes per step; elsewhere, and for short
//! inputs, slicing-by-8 tables.

/// The ISO 3309 polynomial, bit-reversed (Go's `crc64.ISO`).
const ISO_REVERSED: u64 = 0xD800_0000_0000_0000;

const fn make_tables() -> [[u64; 256]; 8] {
    let mut tables = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ ISO_REVERSED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

static TABLES: [[u64; 256]; 8] = make_tables();

/// A running CRC-64/ISO.
#[derive(Clone, Copy, Debug)]
pub struct Crc64 {
    // Kept inverted between updates, like Go's implementation.
    state: u64,
}

impl Default for Crc64 {
    fn default() -> Self {
        Crc64::new()
    }
}

impl Crc64 {
    pub fn new() -> Crc64 {
        Crc64 { state: !0 }
    }

    pub fn update(&mut self, data: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if data.len() >= clmul::MIN_LEN && clmul::available() {
            // SAFETY: the CPU has PCLMULQDQ (and SSE2, part of x86_64), checked just above.
            self.state = unsafe { clmul::update(self.state, data) };
            return;
        }
        self.state = update_tables(self.state, data);
    }

    pub fn value(&self) -> u64 {
        !self.state
    }

    /// The 8 bytes Go's `Sum(nil)` returns (big-endian).
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.value().to_be_bytes()
    }
}

/// Slicing-by-8 over `data` from the (inverted) register `crc`: the portable path, and the
/// last bytes of the folding one.
fn update_tables(mut crc: u64, data: &[u8]) -> u64 {
    let t = &TABLES;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        crc ^= u64::from_le_bytes(word);
        crc = t[7][(crc & 0xff) as usize]
            ^ t[6][((crc >> 8) & 0xff) as usize]
            ^ t[5][((crc >> 16) & 0xff) as usize]
            ^ t[4][((crc >> 24) & 0xff) as usize]
            ^ t[3][((crc >> 32) & 0xff) as usize]
            ^ t[2][((crc >> 40) & 0xff) as usize]
            ^ t[1][((crc >> 48) & 0xff) as usize]
            ^ t[0][(crc >> 56) as usize];
    }
    for &b in chunks.remainder() {
        crc = t[0][((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// x^n mod P for the ISO polynomial P = x^64 + x^4 + x^3 + x + 1, as a 64-bit value with bit i
/// the coefficient of x^i.
const fn x_pow_mod(n: u32) -> u64 {
    let mut r: u64 = 1;
    let mut i = 0;
    while i < n {
        let carry = r >> 63;
        r <<= 1;
        if carry == 1 {
            r ^= 0x1b;
        }
        i += 1;
    }
    r
}

/// Carry-less multiplication folding (Intel's "Fast CRC Computation for Generic Polynomials
/// Using PCLMULQDQ"): 16-byte blocks are folded forward onto later ones, which keeps the
/// remainder modulo P, down to one block; that block and the tail go through the tables.
///
/// In the reflected bit order of this CRC, a 16-byte block loaded little-endian holds its
/// first 8 bytes (L, the higher-degree half) in the low lane and the next 8 (H) in the high
/// lane. Folding the block by D bits replaces it with L·(x^(D+64) mod P) + H·(x^D mod P),
/// added to the block D bits later. A reflected carry-less product is the true product times
/// x, hence constants for x^(D+63) and x^(D-1), bit-reversed.
#[cfg(target_arch = "x86_64")]
mod clmul {
    use super::x_pow_mod;
    use std::arch::x86_64::*;

    /// Shorter inputs go through the tables (folding needs at least four blocks to pay).
    pub const MIN_LEN: usize = 128;

    /// (low lane, high lane) constants to fold a block forward by `bits`.
    const fn fold_constants(bits: u32) -> (u64, u64) {
        (
            x_pow_mod(bits + 63).reverse_bits(),
            x_pow_mod(bits - 1).reverse_bits(),
        )
    }
    const FOLD_128: (u64, u64) = fold_constants(128);
    const FOLD_512: (u64, u64) = fold_constants(512);

    pub fn available() -> bool {
        // The standard library caches the detection: this is one load after the first call.
        is_x86_feature_detected!("pclmulqdq")
    }

    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    unsafe fn fold(block: __m128i, k: __m128i, next: __m128i) -> __m128i {
        let low = _mm_clmulepi64_si128(block, k, 0x00);
        let high = _mm_clmulepi64_si128(block, k, 0x11);
        _mm_xor_si128(_mm_xor_si128(low, high), next)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    unsafe fn load(bytes: &[u8]) -> __m128i {
        debug_assert!(bytes.len() >= 16);
        _mm_loadu_si128(bytes.as_ptr().cast())
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    unsafe fn constants(k: (u64, u64)) -> __m128i {
        _mm_set_epi64x(k.1 as i64, k.0 as i64)
    }

    /// The register after `data` (at least MIN_LEN bytes), from the register `crc`.
    ///
    /// # Safety
    /// The CPU must support PCLMULQDQ and SSE2.
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub unsafe fn update(crc: u64, data: &[u8]) -> u64 {
        debug_assert!(data.len() >= MIN_LEN);
        let k512 = constants(FOLD_512);
        let k128 = constants(FOLD_128);
        // The register enters as an XOR into the first 8 bytes (what the tables do too).
        let mut x = [
            _mm_xor_si128(load(&data[0..]), _mm_set_epi64x(0, crc as i64)),
            load(&data[16..]),
            load(&data[32..]),
            load(&data[48..]),
        ];
        let mut at = 64;
        while data.len() - at >= 64 {
            for (i, acc) in x.iter_mut().enumerate() {
                *acc = fold(*acc, k512, load(&data[at + 16 * i..]));
            }
            at += 64;
        }
        let mut acc = fold(x[0], k128, x[1]);
        acc = fold(acc, k128, x[2]);
        acc = fold(acc, k128, x[3]);
        while data.len() - at >= 16 {
            acc = fold(acc, k128, load(&data[at..]));
            at += 16;
        }
        // The remaining block is a message of 16 bytes congruent to everything so far, to be
        // run through a register that starts at zero.
        let mut block = [0u8; 16];
        _mm_storeu_si128(block.as_mut_ptr().cast(), acc);
        let crc = super::update_tables(0, &block);
        super::update_tables(crc, &data[at..])
    }
}

/// CRC-64/ISO of a whole buffer.
#[cfg(test)]
pub fn checksum(data: &[u8]) -> u64 {
    let mut c = Crc64::new();
    c.update(data);
    c.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytewise(data: &[u8]) -> u64 {
        let mut crc = !0u64;
        for &b in data {
            crc = TABLES[0][((crc ^ b as u64) & 0xff) as usize] ^ (crc >> 8);
        }
        !crc
    }

    #[test]
    fn check_value_matches_go_crc64_iso() {
        // The catalogue check value of CRC-64/GO-ISO for "123456789".
        assert_eq!(checksum(b"123456789"), 0xb909_56c7_75a4_1001);
        assert_eq!(checksum(b""), 0);
    }

    #[test]
    fn folding_equals_bytewise_on_random_inputs_and_lengths() {
        // xorshift: deterministic, so a failure can be reproduced.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let data: Vec<u8> = (0..70_000).map(|_| next() as u8).collect();
        let mut lengths: Vec<usize> = (0..300).collect();
        lengths.extend([511, 512, 513, 1023, 4096, 65_536, 69_999, 70_000]);
        lengths.extend((0..200).map(|_| (next() % 70_000) as usize));
        for len in lengths {
            let start = (next() % 16) as usize; // unaligned starts too
            let end = (start + len).min(data.len());
            let part = &data[start..end];
            let expected = bytewise(part);
            assert_eq!(checksum(part), expected, "length {}", part.len());
            assert_eq!(
                !update_tables(!0, part),
                expected,
                "tables, length {}",
                part.len()
            );
            // Split anywhere: the register carries over between the two paths.
            let split = (next() as usize) % (part.len() + 1);
            let mut c = Crc64::new();
            c.update(&part[..split]);
            c.update(&part[split..]);
            assert_eq!(
                c.value(),
                expected,
                "length {} split at {split}",
                part.len()
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn folding_path_runs_here() {
        if !clmul::available() {
            eprintln!("skipped: this CPU lacks PCLMULQDQ; only the table path was tested");
            return;
        }
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
        let folded = unsafe { clmul::update(!0, &data) };
        assert_eq!(!folded, bytewise(&data));
    }

    /// `cargo test --release --lib crc64_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn crc64_throughput() {
        let data = vec![0x5au8; 64 << 20];
        for (what, f) in [
            (
                "tables",
                (|d: &[u8]| !update_tables(!0, d)) as fn(&[u8]) -> u64,
            ),
            ("update", checksum as fn(&[u8]) -> u64),
        ] {
            let t = std::time::Instant::now();
            let mut sum = 0;
            for _ in 0..4 {
                sum ^= std::hint::black_box(f(&data));
            }
            let secs = t.elapsed().as_secs_f64();
            eprintln!("{what}: {:.0} MiB/s ({sum:x})", 256.0 / secs);
        }
    }

    #[test]
    fn slicing_equals_bytewise_for_every_split() {
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let whole = bytewise(&data);
        assert_eq!(checksum(&data), whole);
        for split in [0, 1, 7, 8, 9, 63, 500, 999, 1000] {
            let mut c = Crc64::new();
            c.update(&data[..split]);
            c.update(&data[split..]);
            assert_eq!(c.value(), whole, "split at {split}");
        }
    }
}
