use clap::Parser;

fn main() {
    // Keep RSS close to what the cache budget allows. glibc gives every thread its own malloc
    // arena (two suffice), and raises its mmap threshold each time a large buffer is freed,
    // after which 1 MiB blocks come from fragmentable heap arenas instead of mmap and are not
    // returned on free. A fixed threshold keeps block-sized buffers mmapped.
    // SAFETY: mallopt is called before any other thread exists.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
    let cli = bsmount::cli::Cli::parse();
    std::process::exit(bsmount::cli::run(cli));
}
