//! The built-in demo account `bsmount demo` serves: generated at start, deterministic, no
//! download. Two projects with paired FASTQ.gz samples (real FASTQ records), an appresult
//! with a coordinate-sorted BAM + BAI and a bgzipped VCF + TBI, and a sequencing run folder
//! (RunInfo.xml, RunParameters.xml, SampleSheet.csv, InterOp, BaseCalls).

use bytes::Bytes;

use super::account::{splitmix64, Account, AccountBuilder, ContainerRef, Content};
use super::formats::{gzip, gzip_fast};

/// Reference contigs of the demo genome.
pub const CONTIGS: &[(&str, u64)] = &[("chr1", 2_000_000), ("chr2", 1_000_000)];
/// Reads per FASTQ file.
const FASTQ_READS: u64 = 25_000;
/// Reads in the demo BAM.
const BAM_READS: u64 = 120_000;
const READ_LEN: usize = 100;

/// Deterministic pseudo-random stream.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = splitmix64(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The demo genome's base at `pos` of contig `c`, derived from position (no storage).
fn base(c: usize, pos: u64) -> u8 {
    b"ACGT"[(splitmix64((c as u64) << 40 ^ pos) % 4) as usize]
}

/// One read's FASTQ.gz: `run` is `<instrument>:<run number>:<flowcell>` as the read names
/// of that run's demultiplexing carry it, `index` the sample's `i7+i5`.
fn fastq(read: u8, seed: u64, run: &str, index: &str) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = String::with_capacity((FASTQ_READS as usize) * 260);
    for i in 0..FASTQ_READS {
        let (tile, x, y) = (1101 + i / 10_000, 1000 + rng.below(30_000), 1000 + rng.below(30_000));
        out.push_str(&format!("@{run}:1:{tile}:{x}:{y} {read}:N:0:{index}\n"));
        let c = (rng.below(2)) as usize;
        let start = rng.below(CONTIGS[c].1 - READ_LEN as u64);
        for p in 0..READ_LEN as u64 {
            out.push(base(c, start + p) as char);
        }
        out.push_str("\n+\n");
        for _ in 0..READ_LEN {
            out.push((b'!' + 25 + rng.below(15) as u8) as char);
        }
        out.push('\n');
    }
    gzip_fast(out.as_bytes())
}

/// A private scratch directory, removed when dropped (noodles indexes files on disk).
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!(
            "bsmount-demo-{what}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&p).expect("a scratch directory for the demo files");
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo BAM (coordinate-sorted, `SO:coordinate`) and its BAI, written and indexed by
/// noodles: the files samtools and IGV read are made by a well-kept genomics library, not
/// by hand.
fn bam_and_bai(seed: u64) -> (Vec<u8>, Vec<u8>) {
    use noodles::core::Position;
    use noodles::sam::alignment::io::Write as _;
    use noodles::sam::alignment::record::cigar::{op::Kind, Op};
    use noodles::sam::alignment::record::{Flags, MappingQuality};
    use noodles::sam::alignment::record_buf::{Cigar, QualityScores, RecordBuf, Sequence};
    use noodles::{bam, sam};

    let mut text = String::from("@HD\tVN:1.6\tSO:coordinate\n");
    for (n, l) in CONTIGS {
        text.push_str(&format!("@SQ\tSN:{n}\tLN:{l}\n"));
    }
    text.push_str("@RG\tID:demo\tSM:NA12878\tPL:ILLUMINA\n@PG\tID:bsmount-demo\tPN:bsmount\n");
    let header: sam::Header = text.parse().expect("the demo SAM header parses");
    let dir = Scratch::new("bam");
    let path = dir.0.join("demo.bam");
    let mut writer = std::fs::File::create(&path)
        .map(bam::io::Writer::new)
        .expect("demo BAM");
    writer.write_header(&header).expect("demo BAM header");
    let mut rng = Rng(seed);
    let total: u64 = CONTIGS.iter().map(|c| c.1).sum();
    for (c, (_, clen)) in CONTIGS.iter().enumerate() {
        let n = BAM_READS * clen / total;
        let mut pos: Vec<u64> = (0..n).map(|_| rng.below(clen - READ_LEN as u64)).collect();
        pos.sort_unstable();
        for (i, p) in pos.into_iter().enumerate() {
            let seq: Vec<u8> = (0..READ_LEN as u64).map(|k| base(c, p + k)).collect();
            let qual: Vec<u8> = (0..READ_LEN).map(|_| 25 + rng.below(15) as u8).collect();
            let flags = if rng.below(2) == 1 {
                Flags::REVERSE_COMPLEMENTED
            } else {
                Flags::empty()
            };
            let record = RecordBuf::builder()
                .set_name(format!("A01234:42:HDEMOXX:1:{c}:{i}"))
                .set_flags(flags)
                .set_reference_sequence_id(c)
                .set_alignment_start(Position::new(p as usize + 1).expect("1-based"))
                .set_mapping_quality(MappingQuality::new(60).expect("valid"))
                .set_cigar(Cigar::from(vec![Op::new(Kind::Match, READ_LEN)]))
                .set_sequence(Sequence::from(seq))
                .set_quality_scores(QualityScores::from(qual))
                .build();
            writer
                .write_alignment_record(&header, &record)
                .expect("demo BAM record");
        }
    }
    writer.try_finish().expect("demo BAM end");
    drop(writer);
    let bam::Index::Bai(index) = bam::fs::index(&path).expect("noodles indexes the demo BAM") else {
        unreachable!("contigs under 2^29 get a BAI")
    };
    let bai = dir.0.join("demo.bam.bai");
    bam::bai::fs::write(&bai, &index).expect("demo BAI");
    (
        std::fs::read(&path).expect("demo BAM"),
        std::fs::read(&bai).expect("demo BAI"),
    )
}

/// The demo VCF, BGZF-compressed and tabix-indexed by noodles.
fn vcf_and_tbi(seed: u64) -> (Vec<u8>, Vec<u8>) {
    use noodles::{bgzf, tabix, vcf};
    use std::io::Write as _;

    let mut rng = Rng(seed);
    let mut text = String::from("##fileformat=VCFv4.2\n##source=bsmount-demo\n");
    for (n, l) in CONTIGS {
        text.push_str(&format!("##contig=<ID={n},length={l}>\n"));
    }
    text.push_str("##INFO=<ID=DP,Number=1,Type=Integer,Description=\"Total depth\">\n");
    text.push_str("##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">\n");
    text.push_str("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNA12878\n");
    for (c, (name, len)) in CONTIGS.iter().enumerate() {
        let mut pos = 1 + rng.below(500);
        while pos < *len {
            let r = base(c, pos - 1);
            let alt = b"ACGT"
                .iter()
                .copied()
                .find(|b| *b != r && rng.below(2) == 0)
                .unwrap_or(if r == b'A' { b'G' } else { b'A' });
            let gt = ["0/1", "1/1", "0/1"][rng.below(3) as usize];
            text.push_str(&format!(
                "{name}\t{pos}\t.\t{}\t{}\t{}\tPASS\tDP={}\tGT\t{gt}\n",
                r as char,
                alt as char,
                30 + rng.below(70),
                10 + rng.below(60)
            ));
            pos += 200 + rng.below(1800);
        }
    }
    let dir = Scratch::new("vcf");
    let path = dir.0.join("demo.vcf.gz");
    let mut w = std::fs::File::create(&path)
        .map(bgzf::io::Writer::new)
        .expect("demo VCF");
    w.write_all(text.as_bytes()).expect("demo VCF");
    w.try_finish().expect("demo VCF end");
    drop(w);
    let vcf::Index::Tabix(index) = vcf::fs::index(&path).expect("noodles indexes the demo VCF") else {
        unreachable!("contigs under 2^29 get a tabix index")
    };
    let tbi = dir.0.join("demo.vcf.gz.tbi");
    tabix::fs::write(&tbi, &index).expect("demo TBI");
    (
        std::fs::read(&path).expect("demo VCF"),
        std::fs::read(&tbi).expect("demo TBI"),
    )
}

fn mem(b: Vec<u8>) -> (u64, Content) {
    (b.len() as u64, Content::Memory(Bytes::from(b)))
}

fn add(b: &mut AccountBuilder, parent: ContainerRef, path: &str, data: Vec<u8>) {
    let (size, content) = mem(data);
    b.file(parent, path, size, content, None);
}

/// A run folder as its instrument writes it, for the samples `samples` (name, index pair)
/// read for `READ_LEN` cycles: `name` is `YYMMDD_<instrument>_<number>_<flowcell>`.
fn run_folder(b: &mut AccountBuilder, run: ContainerRef, name: &str, experiment: &str, samples: &[(&str, &str, &str)]) {
    let text = |s: String| s.into_bytes();
    let i = crate::emulator::json::instrument(name);
    let (instrument, number, flowcell, kind) = (i.name, i.number, i.flowcell, i.kind);
    let d = &name[..6];
    let lanes = if kind == "MiSeq" { 1 } else { 2 };
    let date = format!(
        "{}/{}/20{} 8:00:00 AM",
        &d[2..4].trim_start_matches('0'),
        &d[4..6].trim_start_matches('0'),
        &d[..2]
    );
    let cycles = READ_LEN;
    add(b, run, "RunInfo.xml", text(format!(
        "<?xml version=\"1.0\"?>\n<RunInfo Version=\"5\">\n  <Run Id=\"{name}\" Number=\"{number}\">\n    <Flowcell>{flowcell}</Flowcell>\n    <Instrument>{instrument}</Instrument>\n    <Date>{date}</Date>\n    <Reads>\n      <Read Number=\"1\" NumCycles=\"{cycles}\" IsIndexedRead=\"N\"/>\n      <Read Number=\"2\" NumCycles=\"8\" IsIndexedRead=\"Y\"/>\n      <Read Number=\"3\" NumCycles=\"8\" IsIndexedRead=\"Y\"/>\n      <Read Number=\"4\" NumCycles=\"{cycles}\" IsIndexedRead=\"N\"/>\n    </Reads>\n    <FlowcellLayout LaneCount=\"{lanes}\" SurfaceCount=\"2\" SwathCount=\"2\" TileCount=\"2\"/>\n  </Run>\n</RunInfo>\n"
    )));
    add(b, run, "RunParameters.xml", text(format!(
        "<?xml version=\"1.0\"?>\n<RunParameters>\n  <RunId>{name}</RunId>\n  <InstrumentType>{kind}</InstrumentType>\n  <ExperimentName>{experiment}</ExperimentName>\n  <RfidsInfo><FlowCellSerialBarcode>{flowcell}</FlowCellSerialBarcode></RfidsInfo>\n</RunParameters>\n"
    )));
    let mut sheet = format!(
        "[Header]\nIEMFileVersion,5\nExperiment Name,{experiment}\nDate,20{}-{}-{}\nWorkflow,GenerateFASTQ\n\n[Reads]\n{cycles}\n{cycles}\n\n[Data]\nSample_ID,Sample_Name,index,index2\n",
        &d[..2], &d[2..4], &d[4..6]
    );
    for (s, i1, i2) in samples {
        sheet.push_str(&format!("{s},{s},{i1},{i2}\n"));
    }
    add(b, run, "SampleSheet.csv", sheet.into_bytes());
    let mut rng = Rng(7);
    for f in [
        "ControlMetricsOut.bin",
        "CorrectedIntMetricsOut.bin",
        "ErrorMetricsOut.bin",
        "ExtractionMetricsOut.bin",
        "QMetricsOut.bin",
        "TileMetricsOut.bin",
    ] {
        let data: Vec<u8> = std::iter::once(6u8)
            .chain((0..4096).map(|_| rng.next() as u8))
            .collect();
        add(b, run, &format!("InterOp/{f}"), data);
    }
    for lane in 1..=lanes {
        for cycle in 1..=4 {
            for tile in [1101, 1102] {
                let data: Vec<u8> = (0..20_000)
                    .map(|_| b"\x00\x41\x82\xc3\x1f"[rng.below(5) as usize])
                    .collect();
                add(
                    b,
                    run,
                    &format!("Data/Intensities/BaseCalls/L{lane:03}/C{cycle}.1/s_{lane}_{tile}.bcl.gz"),
                    gzip(&data),
                );
            }
        }
    }
    add(
        b,
        run,
        "RTAComplete.txt",
        text(format!("RTA 3.4.4 completed on {date}\n")),
    );
    add(
        b,
        run,
        &format!("Logs/{name}_Cycle1_Log.00.log"),
        text(format!(
            "{date}\tInfo\tRun {name} started on {instrument}\n{date}\tInfo\tCycle 1 imaged\n"
        )),
    );
    add(
        b,
        run,
        "Logs/RTAComplete.txt",
        text(format!("RTA 3.4.4 completed on {date}\n")),
    );
}

/// Paired FASTQ.gz of every demo sample (seed, run, index), generated in parallel: (R1, R2)
/// per sample, in order.
fn all_fastqs(samples: &[(u64, &str, String)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    std::thread::scope(|sc| {
        let handles: Vec<_> = samples
            .iter()
            .map(|(seed, run, index)| {
                sc.spawn(move || (fastq(1, seed + 1, run, index), fastq(2, seed + 2, run, index)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fastq generator"))
            .collect()
    })
}

/// Builds the demo account (about 30 MB in memory, a few seconds).
pub fn account() -> Account {
    // Each project's samples were sequenced on its own run: the MiSeq panel on a MiSeq, the
    // trio on a NovaSeq. Runs, samples and the FASTQ generations that made them agree on
    // dates, cycles, indexes, read names and read counts.
    let miseq = "240114_M04074_0101_000000000-DEMO1";
    let novaseq = "240116_A01234_0042_AHDEMOXX";
    // (name, seed, i7, i5)
    let p1_samples = [
        ("Brain-Rep1", 1000, "ATGAGGCC", "GGTTATAA"),
        ("SeraSeq-Rep1", 1010, "CAATTAAC", "AGCGCTAG"),
        ("Brain-Rep1", 1020, "TCCGGAGA", "CCTATCCT"),
    ];
    let p2_samples = [
        ("NA12878", 2000, "ACGTACGT", "TGCATGCA"),
        ("NA12891", 2010, "GGTTAACC", "CCAATTGG"),
        ("NA12892", 2020, "TTGGCCAA", "AACCGGTT"),
    ];
    let read_names = |run: &str| {
        let i = crate::emulator::json::instrument(run);
        format!("{}:{}:{}", i.name, i.number, i.flowcell)
    };
    let (miseq_reads, novaseq_reads) = (read_names(miseq), read_names(novaseq));
    let all: Vec<(u64, &str, String)> = p1_samples
        .iter()
        .map(|s| (s, miseq_reads.as_str()))
        .chain(p2_samples.iter().map(|s| (s, novaseq_reads.as_str())))
        .map(|((_, seed, i7, i5), run)| (*seed, run, format!("{i7}+{i5}")))
        .collect();
    let (mut fastqs, (bam, bai), (vcf, tbi)) = std::thread::scope(|sc| {
        let bam = sc.spawn(|| bam_and_bai(42));
        let vcf = sc.spawn(|| vcf_and_tbi(43));
        let f = all_fastqs(&all);
        (
            f.into_iter(),
            bam.join().expect("bam generator"),
            vcf.join().expect("vcf generator"),
        )
    });
    let mut b = AccountBuilder::new("Demo User");
    let sheet =
        |s: &[(&'static str, u64, &'static str, &'static str)]| -> Vec<(&'static str, &'static str, &'static str)> {
            s.iter().map(|(n, _, i7, i5)| (*n, *i7, *i5)).collect()
        };
    let run1 = b.run(miseq);
    b.experiment(run1, "Myeloid_RNA_Panel");
    run_folder(&mut b, run1, miseq, "Myeloid_RNA_Panel", &sheet(&p1_samples));
    let run2 = b.run(novaseq);
    b.experiment(run2, "Germline_Trio");
    run_folder(&mut b, run2, novaseq, "Germline_Trio", &sheet(&p2_samples));
    let p1 = b.project("MiSeq: Myeloid RNA Panel (Demo)");
    let fq1 = b.appsession(p1, "FASTQ Generation 2024-01-15 10:00:00Z", "FASTQ Generation");
    // Two samples named alike, as happens in real accounts (one sample re-sequenced under
    // the same name): the mount shows "Brain-Rep1 (2)", and scripts must cope.
    for (i, (s, ..)) in p1_samples.iter().enumerate() {
        let sref = b.sample(p1, s, Some(fq1));
        b.demultiplexed_from(sref, run1);
        b.reads(sref, FASTQ_READS, READ_LEN as u32);
        let (r1, r2) = fastqs.next().expect("one pair per sample");
        add(&mut b, sref, &format!("{s}_S{}_L001_R1_001.fastq.gz", i + 1), r1);
        add(&mut b, sref, &format!("{s}_S{}_L001_R2_001.fastq.gz", i + 1), r2);
    }
    let p2 = b.project("NovaSeq: Germline Trio (NA12878, NA12891, NA12892)");
    let fq2 = b.appsession(p2, "FASTQ Generation 2024-01-17 09:30:00Z", "FASTQ Generation");
    for (i, (s, ..)) in p2_samples.iter().enumerate() {
        let sref = b.sample(p2, s, Some(fq2));
        b.demultiplexed_from(sref, run2);
        b.reads(sref, FASTQ_READS, READ_LEN as u32);
        let (r1, r2) = fastqs.next().expect("one pair per sample");
        add(&mut b, sref, &format!("{s}_S{}_L001_R1_001.fastq.gz", i + 1), r1);
        add(&mut b, sref, &format!("{s}_S{}_L001_R2_001.fastq.gz", i + 1), r2);
    }
    let an = b.appsession(p2, "DRAGEN Germline 2024-01-18 12:00:00Z", "DRAGEN Germline");
    let ar = b.appresult(p2, "NA12878 DRAGEN Germline", Some(an));
    add(&mut b, ar, "NA12878.bam", bam);
    add(&mut b, ar, "NA12878.bam.bai", bai);
    add(&mut b, ar, "NA12878.hard-filtered.vcf.gz", vcf);
    add(&mut b, ar, "NA12878.hard-filtered.vcf.gz.tbi", tbi);
    add(
        &mut b,
        ar,
        "metrics/NA12878.mapping_metrics.csv",
        format!("MAPPING/ALIGNING SUMMARY,,Total input reads,{BAM_READS},100.00\n").into_bytes(),
    );
    // A dataset made in API v2 (`bs upload dataset`): only BioSamples/ and Datasets/ show it.
    let up = b.appsession(p2, "BaseSpace CLI 2024-01-19 08:00:00Z", "BaseSpace CLI");
    let ds = b.dataset(p2, "Trio QC summary", Some(up));
    add(
        &mut b,
        ds,
        "trio_qc.csv",
        format!(
            "sample,reads\n{}",
            p2_samples
                .iter()
                .map(|(s, ..)| format!("{s},{BAM_READS}\n"))
                .collect::<String>()
        )
        .into_bytes(),
    );
    b.build()
}
