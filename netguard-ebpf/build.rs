// Rebuild when the linker changes: building this crate needs `bpf-linker`, which cargo cannot
// express as a dependency.
fn main() {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let linker = dir.join("bpf-linker");
            if linker.exists() {
                println!("cargo:rerun-if-changed={}", linker.display());
                break;
            }
        }
    }
}
