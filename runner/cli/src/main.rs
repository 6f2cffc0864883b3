//! The `waymark` binary: parse, run, map to an exit code. All else is library.

fn main() -> std::process::ExitCode {
    waymark::cli::main()
}
