//! CRC-64 with the ISO polynomial, as Go's `hash/crc64` computes it with `MakeTable(crc64.ISO)`
//! (reflected, initial value and final XOR all ones). tar-split stores it big-endian per file.
//!
//! Slicing-by-8 tables: the checksum runs over every byte of every layer, so the plain
//! byte-at-a-time loop would be the slowest stage of a pull.

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
        let t = &TABLES;
        let mut crc = self.state;
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
        self.state = crc;
    }

    pub fn value(&self) -> u64 {
        !self.state
    }

    /// The 8 bytes Go's `Sum(nil)` returns (big-endian).
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.value().to_be_bytes()
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
