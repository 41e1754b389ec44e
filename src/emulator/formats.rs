//! Gzipped FASTQ for the demo account. The BAM, BAI, bgzipped VCF and tabix index are
//! written and indexed by noodles (`demo.rs`); FASTQ is plain gzip, as bcl2fastq writes it.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

pub fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_level(data, 6)
}

/// Gzip at level 1, as bcl2fastq writes FASTQ by default.
pub fn gzip_fast(data: &[u8]) -> Vec<u8> {
    gzip_level(data, 1)
}

fn gzip_level(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::new(level));
    enc.write_all(data).expect("in-memory write");
    enc.finish().expect("in-memory write")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trips() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let out = gzip_fast(&data);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[..]), &mut back).unwrap();
        assert_eq!(back, data);
    }
}
