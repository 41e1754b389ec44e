use bsmount::dropin::{self, Invocation};

fn main() {
    // Keep RSS close to what the cache budget allows. glibc gives every thread its own malloc
    // arena (two suffice), and raises its mmap threshold each time a large buffer is freed,
    // after which 1 MiB blocks come from fragmentable heap arenas instead of mmap and are not
    // returned on free. A fixed threshold keeps block-sized buffers mmapped (they are recycled
    // by `read::pool`). It sits above the HTTP client's read buffer (hyper grows it to 400 KiB
    // and allocates a new one each time the body chunks cut from the last are still held):
    // mapped afresh, every byte received landed on a page the kernel had to fault in and zero,
    // and was unmapped after (the mount's CPU for a cohort copy 1.9-2.2 -> 1.5-1.7 s per 800 MiB,
    // page faults 88k -> 43-48k); the price is those buffers' memory kept in the arenas.
    // SAFETY: mallopt is called before any other thread exists.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 10);
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Called as `basemount`, `basemount-cmd` or `bm-cmd` (a symlink), it takes BaseMount's
    // command line.
    let how = argv.first().map_or(Invocation::Bsmount, |a| Invocation::of(a));
    if how != Invocation::Bsmount {
        std::process::exit(dropin::run(how, &argv));
    }
    let args = match bsmount::cli::helper_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bsmount: {e}");
            std::process::exit(1);
        }
    };
    std::process::exit(bsmount::cli::run_args(args));
}
