//! The `dp` command-line tool: see `dp --help`.

fn main() -> std::process::ExitCode {
    dp::cli::main()
}
