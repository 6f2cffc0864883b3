//! The `waymark` binary: parse, run, map to an exit code. All else is library.

mod alloc;

// Per-thread caches: `waymark load` allocates per iteration on every worker,
// and glibc's arenas made those threads wait on each other's locks.
#[global_allocator]
static ALLOC: alloc::Allocator = alloc::Allocator::new();

fn main() -> std::process::ExitCode {
    waymark::cli::main()
}
