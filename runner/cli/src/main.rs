//! The `waymark` binary: parse, run, map to an exit code. All else is library.

// Per-thread caches: `waymark load` allocates per iteration on every worker,
// and glibc's arenas made those threads wait on each other's locks.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    waymark::cli::main()
}
