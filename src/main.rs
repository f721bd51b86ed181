//! The `thryve-bridge` binary; everything it does lives in the library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    thryve_bridge::cli::main().await
}
