// The proxy allocates and frees per-request buffers; glibc's malloc was a tenth of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    netguard::cli::main()
}
