//! Compiles dp-cuda's kernel files as C++ against the CUDA execution model of
//! kernels/cuda_on_cpu.hpp, together with the fiber scheduler that runs them, into one static
//! library; and generates the registry that finds a kernel by name and unpacks its arguments.
//!
//! The kernel sources are compiled from copies in `OUT_DIR/poisoned`: every `dp-cuda/kernels/*.cu`
//! and `*.cuh`, and the emulator's own kernels/self_test_kernels.cpp, with a call appended to each
//! `__shared__` declaration that fills the variable with 0xff bytes for every block
//! (build_support/kernel_source.rs), and a `#line` that names the original file in diagnostics.
//! A `__shared__` declaration the rewriting does not understand stops the build.
//!
//! For each `kernels/NAME.cu` of dp-cuda, OUT_DIR gets `registry_NAME.cpp`: the execution model, the
//! .cu file itself, and a table of its `extern "C" __global__` kernels, each with a trampoline that
//! unpacks CUDA's `void **kernelParams` into the kernel's parameter types (kernel_registry.hpp). One
//! more generated file, `registry_files.cpp`, lists those tables.

#[path = "build_support/kernel_source.rs"]
mod kernel_source;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda_kernels = manifest.join("../kernels").canonicalize().expect("dp-cuda/kernels exists");
    let own = manifest.join("kernels");
    println!("cargo:rerun-if-changed={}", cuda_kernels.display());
    println!("cargo:rerun-if-changed={}", own.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_support");

    let poisoned = out.join("poisoned");
    fs::create_dir_all(&poisoned).expect("creating OUT_DIR/poisoned");
    let mut kernel_sources: Vec<PathBuf> = fs::read_dir(&cuda_kernels)
        .expect("reading dp-cuda/kernels")
        .map(|entry| entry.expect("reading dp-cuda/kernels").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cu" || ext == "cuh"))
        .collect();
    kernel_sources.push(own.join("self_test_kernels.cpp"));
    for source in &kernel_sources {
        write_poisoned_copy(source, &poisoned);
    }

    let mut cu_files: Vec<PathBuf> = fs::read_dir(&cuda_kernels)
        .expect("reading dp-cuda/kernels")
        .map(|entry| entry.expect("reading dp-cuda/kernels").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cu"))
        .collect();
    cu_files.sort();

    let mut tables = Vec::new();
    let mut generated = Vec::new();
    for cu in &cu_files {
        let stem = cu.file_stem().and_then(|s| s.to_str()).expect("a kernel file named in UTF-8").to_owned();
        let source = fs::read_to_string(cu).unwrap_or_else(|e| panic!("reading {}: {e}", cu.display()));
        let kernels = global_kernel_names(&source);
        let table = format!("dp_emu_kernels_{}", identifier(&stem));
        let path = out.join(format!("registry_{stem}.cpp"));
        let copy = poisoned.join(cu.file_name().expect("a kernel file's name"));
        fs::write(&path, registry_source(cu, &copy, &table, &kernels)).expect("writing a registry file");
        generated.push(path);
        tables.push(table);
    }
    let files = out.join("registry_files.cpp");
    fs::write(&files, files_source(&tables)).expect("writing registry_files.cpp");

    // The kernel files: the NVRTC of dp-cuda runs with fmad=false, so no contraction of a·b + c into
    // an FMA here either, and no fast math: every f32 operation rounds as IEEE says, as on the GPU.
    // Their warnings are shown, not fatal: the kernel files are written for NVRTC, not for g++.
    let mut kernel_build = base_build(&poisoned, &own, &cuda_kernels);
    race_check_kernel(&mut kernel_build);
    kernel_build.flag("-Wno-unknown-pragmas").files(&generated).file(&files);
    // noise.cu compiled as the host's serial reference (no __CUDACC__), for the tests' comparison.
    kernel_build.file(own.join("noise_host_reference.cpp"));
    let kernel_objects = kernel_build.compile_intermediates();

    // The emulator's own test kernels: kernel code, written for g++ (its warnings are errors).
    let mut self_test_build = base_build(&poisoned, &own, &cuda_kernels);
    race_check_kernel(&mut self_test_build);
    self_test_build.flag("-Wextra").flag("-Werror").file(poisoned.join("self_test_kernels.cpp"));
    let self_test_objects = self_test_build.compile_intermediates();

    // The scheduler is never instrumented, even for the race check: its state is the emulated
    // device's, which every fiber reads and writes by design; it tells ThreadSanitizer instead
    // where CUDA orders the threads (block_scheduler.cpp).
    let mut runtime_build = base_build(&poisoned, &own, &cuda_kernels);
    runtime_build.flag("-Wextra").flag("-Werror");
    if race_check() {
        runtime_build.define("DP_EMU_RACE_CHECK", None);
    }
    for name in ["fiber_context.cpp", "block_scheduler.cpp", "kernel_registry.cpp", "launch.cpp"] {
        runtime_build.file(own.join(name));
    }
    runtime_build.objects(&kernel_objects).objects(&self_test_objects).compile("dp_cuda_emulator_kernels");
    if race_check() {
        link_tsan();
    }
}

/// Whether the `race-check` feature is on: kernels under ThreadSanitizer (docs/GPU.md).
fn race_check() -> bool {
    std::env::var_os("CARGO_FEATURE_RACE_CHECK").is_some()
}

/// With the race check, a kernel translation unit is instrumented by ThreadSanitizer.
fn race_check_kernel(build: &mut cc::Build) {
    if race_check() {
        // -g1: the line tables, for the reports' kernel lines.
        build.flag("-fsanitize=thread").flag("-g1").define("DP_EMU_RACE_CHECK", None);
    }
}

/// Links ThreadSanitizer's runtime (GCC's libtsan, where `g++ -print-file-name` finds it), which
/// the instrumented kernels call. It must also be loaded first, before the program starts: the
/// test binaries that link this crate get it as a dependency, a program that loads the emulator
/// with dlopen (cudarc) needs LD_PRELOAD.
fn link_tsan() {
    let compiler = cc::Build::new().cpp(true).get_compiler();
    let output = std::process::Command::new(compiler.path())
        .arg("-print-file-name=libtsan.so")
        .output()
        .expect("running the C++ compiler for libtsan's path");
    let path = PathBuf::from(String::from_utf8(output.stdout).expect("a path in UTF-8").trim());
    assert!(
        path.is_absolute() && path.exists(),
        "the race-check feature needs ThreadSanitizer's runtime, libtsan.so, which {} does not find \
         (on Debian: apt-get install libtsan2)",
        compiler.path().display()
    );
    // The folder of the link libtsan.so itself (GCC's), not of what it points to, which has only
    // the versioned name.
    let folder = path.parent().expect("libtsan.so in a folder");
    println!("cargo:rustc-link-search=native={}", folder.display());
    println!("cargo:rustc-link-lib=dylib=tsan");
}

/// Writes `source` into `folder` with its `__shared__` declarations poisoning their variables, its
/// lines where they were (after a `#line` naming the original); stops the build at a declaration it
/// cannot rewrite.
fn write_poisoned_copy(source: &Path, folder: &Path) {
    let text = fs::read_to_string(source).unwrap_or_else(|e| panic!("reading {}: {e}", source.display()));
    let rewritten = kernel_source::poison_shared_declarations(&text).unwrap_or_else(|why| {
        panic!(
            "{}, {why}\nThe emulator fills every __shared__ variable with 0xff bytes at the start of each \
             block by appending a call to its declaration (dp-cuda/emulator/build.rs), which it can do \
             only for one variable declared alone on its line, inside a function, without an \
             initializer: `__shared__ float partial[32];`. Declare it so.",
            source.display()
        )
    });
    let copy = folder.join(source.file_name().expect("a kernel source's name"));
    fs::write(&copy, format!("#line 1 {}\n{rewritten}", c_string(source)))
        .unwrap_or_else(|e| panic!("writing {}: {e}", copy.display()));
}

/// The compiler settings every translation unit shares: the poisoned copies found before the
/// originals.
fn base_build(poisoned: &Path, own: &Path, cuda_kernels: &Path) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(poisoned)
        .include(own)
        .include(cuda_kernels)
        .opt_level(2)
        .debug(false)
        .flag("-ffp-contract=off")
        .flag("-fno-fast-math")
        .flag("-Wall");
    build
}

/// The names of the `extern "C" __global__ void NAME(` kernels of a .cu file, in order, with any
/// `__launch_bounds__(...)` between `void` and the name and any line breaks in between.
fn global_kernel_names(source: &str) -> Vec<String> {
    let code = kernel_source::without_comments(source);
    let mut names = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("__global__") {
        let before = rest[..at].trim_end();
        rest = &rest[at + "__global__".len()..];
        if !before.ends_with("extern \"C\"") {
            panic!(
                "a __global__ kernel that is not extern \"C\": the registry finds kernels by their C names"
            );
        }
        let mut tail = rest.trim_start();
        tail = tail.strip_prefix("void").expect("a kernel returns void").trim_start();
        if let Some(bounds) = tail.strip_prefix("__launch_bounds__") {
            tail = skip_parenthesised(bounds.trim_start()).trim_start();
        }
        let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        assert!(!name.is_empty(), "a kernel name after __global__ void");
        assert!(tail[name.len()..].trim_start().starts_with('('), "kernel {name}: its parameter list");
        names.push(name);
    }
    names
}

/// `text` past the parenthesised group it starts with.
fn skip_parenthesised(text: &str) -> &str {
    assert!(text.starts_with('('), "__launch_bounds__ followed by its arguments");
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[i + 1..];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses after __launch_bounds__");
}

/// A C identifier made of a file stem.
fn identifier(stem: &str) -> String {
    stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

/// A C string literal of a path.
fn c_string(path: &Path) -> String {
    let text = path.to_str().expect("a kernel path in UTF-8");
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The registry of kernel file `cu`, compiled from its poisoned copy `copy`.
fn registry_source(cu: &Path, copy: &Path, table: &str, kernels: &[String]) -> String {
    let mut s = String::new();
    writeln!(s, "// Generated by dp-cuda/emulator/build.rs from {}: do not edit.", cu.display()).unwrap();
    writeln!(s, "#include \"cuda_on_cpu.hpp\"").unwrap();
    writeln!(s, "#include {}", c_string(copy)).unwrap();
    writeln!(s, "#include \"kernel_registry.hpp\"").unwrap();
    writeln!(s).unwrap();
    if kernels.is_empty() {
        writeln!(s, "extern const dp_emu::KernelTable {table} = {{nullptr, 0}};").unwrap();
        return s;
    }
    writeln!(s, "static const dp_emu::KernelEntry entries[] = {{").unwrap();
    for name in kernels {
        writeln!(s, "    DP_EMU_KERNEL_ENTRY({name}),").unwrap();
    }
    writeln!(s, "}};").unwrap();
    writeln!(
        s,
        "extern const dp_emu::KernelTable {table} = {{entries, sizeof entries / sizeof entries[0]}};"
    )
    .unwrap();
    s
}

fn files_source(tables: &[String]) -> String {
    let mut s = String::new();
    writeln!(s, "// Generated by dp-cuda/emulator/build.rs: the kernel tables of dp-cuda/kernels/*.cu.")
        .unwrap();
    writeln!(s, "#include \"kernel_registry.hpp\"").unwrap();
    writeln!(s).unwrap();
    for table in tables {
        writeln!(s, "extern const dp_emu::KernelTable {table};").unwrap();
    }
    writeln!(s, "namespace dp_emu {{").unwrap();
    writeln!(s, "extern const KernelTable *const kernel_files[] = {{").unwrap();
    for table in tables {
        writeln!(s, "    &{table},").unwrap();
    }
    writeln!(s, "    nullptr,").unwrap();
    writeln!(s, "}};").unwrap();
    writeln!(s, "}}  // namespace dp_emu").unwrap();
    s
}
