//! Writers for the genomics formats the demo account serves: BGZF, BAM with its BAI index,
//! bgzipped VCF with its tabix index, and gzipped FASTQ. Written straight from the SAM/BAM
//! and tabix specifications (small and dependency-free); `samtools` and `tabix` read them in
//! the mount tests.

use std::io::Write;

use flate2::write::{DeflateEncoder, GzEncoder};
use flate2::{Compression, Crc};

/// Largest uncompressed payload per BGZF block (htslib's choice, leaves room for overhead).
const BGZF_BLOCK: usize = 0xff00;
/// The 28-byte empty block that marks the end of a BGZF file.
pub const BGZF_EOF: [u8; 28] = [
    0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 0x06, 0, 0x42, 0x43, 0x02, 0, 0x1b, 0, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// BGZF writer that reports virtual offsets and never splits a record across blocks.
#[derive(Default)]
pub struct Bgzf {
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl Bgzf {
    /// Virtual offset of the next byte written.
    pub fn voffset(&self) -> u64 {
        ((self.out.len() as u64) << 16) | self.buf.len() as u64
    }

    /// Writes `data`, starting a new block first if it would not fit in the current one.
    pub fn write_record(&mut self, data: &[u8]) {
        if !self.buf.is_empty() && self.buf.len() + data.len() > BGZF_BLOCK {
            self.flush_block();
        }
        if data.len() > BGZF_BLOCK {
            for c in data.chunks(BGZF_BLOCK) {
                self.buf.extend_from_slice(c);
                self.flush_block();
            }
        } else {
            self.buf.extend_from_slice(data);
        }
    }

    fn flush_block(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut enc = DeflateEncoder::new(Vec::new(), Compression::new(6));
        enc.write_all(&self.buf).expect("in-memory write");
        let cdata = enc.finish().expect("in-memory write");
        let mut crc = Crc::new();
        crc.update(&self.buf);
        let bsize = (18 + cdata.len() + 8 - 1) as u16;
        self.out.extend_from_slice(&[
            0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 0x06, 0, 0x42, 0x43, 0x02, 0,
        ]);
        self.out.extend_from_slice(&bsize.to_le_bytes());
        self.out.extend_from_slice(&cdata);
        self.out.extend_from_slice(&crc.sum().to_le_bytes());
        self.out.extend_from_slice(&(self.buf.len() as u32).to_le_bytes());
        self.buf.clear();
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.flush_block();
        self.out.extend_from_slice(&BGZF_EOF);
        self.out
    }
}

/// UCSC binning scheme (SAM spec §5.3): smallest bin containing `[beg, end)`.
pub fn reg2bin(beg: u64, end: u64) -> u32 {
    let end = end - 1;
    for (shift, off) in [(14, 4681), (17, 585), (20, 73), (23, 9), (26, 1)] {
        if beg >> shift == end >> shift {
            return (off + (beg >> shift)) as u32;
        }
    }
    0
}

/// Builds the per-reference binning + linear index shared by BAI and TBI.
#[derive(Default, Clone)]
pub struct RefIndex {
    bins: std::collections::BTreeMap<u32, Vec<(u64, u64)>>,
    linear: Vec<u64>,
    first: Option<u64>,
    last: u64,
    n_mapped: u64,
}

impl RefIndex {
    /// Records one item covering `[beg, end)` stored at virtual offsets `[vbeg, vend)`.
    pub fn add(&mut self, beg: u64, end: u64, vbeg: u64, vend: u64) {
        let bin = reg2bin(beg, end.max(beg + 1));
        let chunks = self.bins.entry(bin).or_default();
        match chunks.last_mut() {
            Some(last) if last.1 == vbeg => last.1 = vend,
            _ => chunks.push((vbeg, vend)),
        }
        let (w0, w1) = ((beg >> 14) as usize, ((end.max(beg + 1) - 1) >> 14) as usize);
        if self.linear.len() <= w1 {
            self.linear.resize(w1 + 1, 0);
        }
        for w in w0..=w1 {
            if self.linear[w] == 0 {
                self.linear[w] = vbeg;
            }
        }
        self.first.get_or_insert(vbeg);
        self.last = vend;
        self.n_mapped += 1;
    }

    fn write(&self, out: &mut Vec<u8>, with_meta: bool) {
        let n_bin = self.bins.len() + usize::from(with_meta && self.first.is_some());
        out.extend_from_slice(&(n_bin as i32).to_le_bytes());
        for (bin, chunks) in &self.bins {
            out.extend_from_slice(&bin.to_le_bytes());
            out.extend_from_slice(&(chunks.len() as i32).to_le_bytes());
            for (a, b) in chunks {
                out.extend_from_slice(&a.to_le_bytes());
                out.extend_from_slice(&b.to_le_bytes());
            }
        }
        if with_meta {
            if let Some(first) = self.first {
                // htslib's pseudo-bin: file span and mapped/unmapped counts.
                out.extend_from_slice(&37450u32.to_le_bytes());
                out.extend_from_slice(&2i32.to_le_bytes());
                for v in [first, self.last, self.n_mapped, 0] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        // Empty windows take the previous window's offset: never past the true first hit.
        let mut lin = self.linear.clone();
        let mut prev = self.first.unwrap_or(0);
        for v in lin.iter_mut() {
            if *v == 0 {
                *v = prev;
            } else {
                prev = *v;
            }
        }
        out.extend_from_slice(&(lin.len() as i32).to_le_bytes());
        for v in lin {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// One aligned read for [`write_bam`].
pub struct BamRead {
    pub ref_id: usize,
    /// 0-based leftmost position.
    pub pos: u64,
    pub name: String,
    pub seq: Vec<u8>,
    pub qual: Vec<u8>,
    pub reverse: bool,
}

/// Writes a coordinate-sorted BAM (reads must be sorted) and its BAI index.
pub fn write_bam(refs: &[(&str, u64)], header_extra: &str, reads: &[BamRead]) -> (Vec<u8>, Vec<u8>) {
    let mut text = String::from("@HD\tVN:1.6\tSO:coordinate\n");
    for (n, l) in refs {
        text.push_str(&format!("@SQ\tSN:{n}\tLN:{l}\n"));
    }
    text.push_str(header_extra);
    let mut head = Vec::new();
    head.extend_from_slice(b"BAM\x01");
    head.extend_from_slice(&(text.len() as i32).to_le_bytes());
    head.extend_from_slice(text.as_bytes());
    head.extend_from_slice(&(refs.len() as i32).to_le_bytes());
    for (n, l) in refs {
        head.extend_from_slice(&((n.len() + 1) as i32).to_le_bytes());
        head.extend_from_slice(n.as_bytes());
        head.push(0);
        head.extend_from_slice(&(*l as i32).to_le_bytes());
    }
    let mut bgzf = Bgzf::default();
    bgzf.write_record(&head);
    // Header in its own block, so the first read starts a block (like samtools does).
    bgzf.flush_block();
    let mut idx = vec![RefIndex::default(); refs.len()];
    let mut rec = Vec::with_capacity(512);
    for r in reads {
        let len = r.seq.len() as u64;
        let end = r.pos + len;
        rec.clear();
        rec.extend_from_slice(&[0; 4]); // block_size, patched below
        rec.extend_from_slice(&(r.ref_id as i32).to_le_bytes());
        rec.extend_from_slice(&(r.pos as i32).to_le_bytes());
        rec.push((r.name.len() + 1) as u8);
        rec.push(60); // mapq
        rec.extend_from_slice(&(reg2bin(r.pos, end) as u16).to_le_bytes());
        rec.extend_from_slice(&1u16.to_le_bytes()); // one CIGAR op
        rec.extend_from_slice(&(if r.reverse { 16u16 } else { 0 }).to_le_bytes());
        rec.extend_from_slice(&(len as i32).to_le_bytes());
        rec.extend_from_slice(&(-1i32).to_le_bytes());
        rec.extend_from_slice(&(-1i32).to_le_bytes());
        rec.extend_from_slice(&0i32.to_le_bytes());
        rec.extend_from_slice(r.name.as_bytes());
        rec.push(0);
        rec.extend_from_slice(&((len as u32) << 4).to_le_bytes()); // lenM
        for pair in r.seq.chunks(2) {
            let code = |b: u8| match b {
                b'A' => 1u8,
                b'C' => 2,
                b'G' => 4,
                b'T' => 8,
                _ => 15,
            };
            rec.push(code(pair[0]) << 4 | pair.get(1).map_or(0, |b| code(*b)));
        }
        rec.extend(r.qual.iter().map(|q| q.saturating_sub(33)));
        rec.extend_from_slice(b"RGZdemo\0");
        let bs = (rec.len() - 4) as i32;
        rec[..4].copy_from_slice(&bs.to_le_bytes());
        let vbeg = bgzf.voffset();
        bgzf.write_record(&rec);
        idx[r.ref_id].add(r.pos, end, vbeg, bgzf.voffset());
    }
    let bam = bgzf.finish();
    let mut bai = Vec::new();
    bai.extend_from_slice(b"BAI\x01");
    bai.extend_from_slice(&(refs.len() as i32).to_le_bytes());
    for r in &idx {
        r.write(&mut bai, true);
    }
    bai.extend_from_slice(&0u64.to_le_bytes()); // n_no_coor
    (bam, bai)
}

/// One VCF data line for [`write_vcf`]: (contig index, 1-based POS, full line without newline).
pub struct VcfLine {
    pub ref_id: usize,
    pub pos: u64,
    pub ref_len: u64,
    pub line: String,
}

/// Writes a bgzipped VCF (lines sorted) and its tabix index (itself BGZF-compressed).
pub fn write_vcf(contigs: &[(&str, u64)], header: &str, lines: &[VcfLine]) -> (Vec<u8>, Vec<u8>) {
    let mut bgzf = Bgzf::default();
    bgzf.write_record(header.as_bytes());
    let mut idx = vec![RefIndex::default(); contigs.len()];
    for l in lines {
        let vbeg = bgzf.voffset();
        bgzf.write_record(format!("{}\n", l.line).as_bytes());
        let beg = l.pos - 1;
        idx[l.ref_id].add(beg, beg + l.ref_len.max(1), vbeg, bgzf.voffset());
    }
    let vcf = bgzf.finish();
    let mut tbi = Vec::new();
    tbi.extend_from_slice(b"TBI\x01");
    tbi.extend_from_slice(&(contigs.len() as i32).to_le_bytes());
    for v in [2i32, 1, 2, 0, b'#' as i32, 0] {
        tbi.extend_from_slice(&v.to_le_bytes()); // format=VCF, seq col, beg col, end col, meta char, skip
    }
    let names: Vec<u8> = contigs
        .iter()
        .flat_map(|(n, _)| n.bytes().chain(std::iter::once(0)))
        .collect();
    tbi.extend_from_slice(&(names.len() as i32).to_le_bytes());
    tbi.extend_from_slice(&names);
    for r in &idx {
        r.write(&mut tbi, true);
    }
    tbi.extend_from_slice(&0u64.to_le_bytes());
    let mut z = Bgzf::default();
    z.write_record(&tbi);
    (vcf, z.finish())
}

/// Plain gzip (one member).
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
    fn reg2bin_matches_spec_examples() {
        assert_eq!(reg2bin(0, 1), 4681);
        assert_eq!(reg2bin(0, 1 << 14), 4681);
        assert_eq!(reg2bin(0, (1 << 14) + 1), 585);
        assert_eq!(reg2bin(0, 1 << 29), 0);
    }

    #[test]
    fn bgzf_round_trips_through_multigz_decoder() {
        let mut w = Bgzf::default();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(1000) {
            w.write_record(c);
        }
        let out = w.finish();
        let mut dec = flate2::read::MultiGzDecoder::new(&out[..]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut dec, &mut back).unwrap();
        assert_eq!(back, data);
    }
}
