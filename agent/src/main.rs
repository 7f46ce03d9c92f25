//! The `tend` binary: everything lives in the library; this only hands over.

fn main() -> std::process::ExitCode {
    tend_agent::cli::main()
}
