use clap::Parser;

fn main() {
    let cli = bsmount::cli::Cli::parse();
    std::process::exit(bsmount::cli::run(cli));
}
