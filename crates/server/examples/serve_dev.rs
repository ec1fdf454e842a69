// TEMPORARY local harness (not committed): `serve_dev serve ARGS` like `metal-mps serve ARGS`.
use clap::Parser;
#[derive(Parser)]
enum Cli {
    Serve(metal_mps_server::ServeArgs),
}
fn main() -> anyhow::Result<()> {
    let Cli::Serve(args) = Cli::parse();
    metal_mps_server::serve(args)
}
