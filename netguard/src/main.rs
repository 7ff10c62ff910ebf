fn main() -> std::process::ExitCode {
    netguard::cli::main()
}
