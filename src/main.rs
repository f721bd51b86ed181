//! The `thryve-bridge` binary; everything it does lives in the library.

fn main() -> std::process::ExitCode {
    large_allocations_go_back_to_the_system();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
        .block_on(thryve_bridge::cli::main())
}

/// glibc serves a large allocation from mmap and unmaps it when freed, but raises that
/// threshold to the size of each mmapped block freed (up to 32 MiB): after the first 1 MiB
/// body, bodies come from the heap arenas, whose free pages stay in the process. A burst of
/// large bodies then left RSS ~100 MiB higher for good (the limits test saw it). A fixed
/// threshold turns the adjustment off: anything of 64 KiB or more (a large body, a
/// connection's full read buffer) is mapped and unmapped; a typical delivery is ~5 KiB.
fn large_allocations_go_back_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}
