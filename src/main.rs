//! The `thryve-bridge` binary; everything it does lives in the library.

/// mimalloc instead of glibc's allocator: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    thryve_bridge::cli::main().await
}
