use clap::Parser;

fn main() {
    // glibc gives every thread its own malloc arena; with many I/O threads that fragments
    // memory and inflates RSS far beyond what the cache budget allows. Two arenas suffice.
    // SAFETY: mallopt is called before any other thread exists.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = bsmount::cli::Cli::parse();
    std::process::exit(bsmount::cli::run(cli));
}
