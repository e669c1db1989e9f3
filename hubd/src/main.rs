//! The `hubd` binary: everything lives in the library; see `hubd::cli`.

fn main() -> std::process::ExitCode {
    hubd::cli::main()
}
