//! build.rs's rewriting of the kernel sources (build_support/kernel_source.rs, included here): every
//! `__shared__` declaration of dp-cuda's kernels poisons its variable, lines stay where they were,
//! and a declaration it cannot rewrite is refused rather than left unpoisoned.

#[path = "../build_support/kernel_source.rs"]
mod kernel_source;

use kernel_source::{poison_shared_declarations, without_comments};

#[test]
fn comments_become_spaces_and_keep_their_line_breaks() {
    let source = "a // b\nc /* d\ne */ f \"/* g */\" '/'\n";
    let code = without_comments(source);
    assert_eq!(code, "a     \nc     \n     f \"/* g */\" '/'\n");
    assert_eq!(code.len(), source.len());
}

#[test]
fn each_shared_declaration_gets_its_poisoning_on_its_own_line() {
    let source = "__device__ float f() {\n    __shared__ float partial[32];  // per warp\n    \
                  __shared__ dp_u64 prefix[W][N + (2)];\n    volatile __shared__ unsigned int *p;\n    \
                  // __shared__ in a comment, x = 1, y;\n    /* __shared__ int q, r; */ return 0;\n}\n";
    let rewritten = poison_shared_declarations(source).unwrap();
    assert_eq!(
        rewritten,
        "__device__ float f() {\n    __shared__ float partial[32]; ::dp_emu::poison_shared(partial);  // per warp\n    \
         __shared__ dp_u64 prefix[W][N + (2)]; ::dp_emu::poison_shared(prefix);\n    \
         volatile __shared__ unsigned int *p; ::dp_emu::poison_shared(p);\n    \
         // __shared__ in a comment, x = 1, y;\n    /* __shared__ int q, r; */ return 0;\n}\n"
    );
}

#[test]
fn declarations_it_cannot_rewrite_are_refused() {
    let cases = [
        ("__shared__ float a[4], b[4];", "more than one variable"),
        ("__shared__ int count = 0;", "an initializer"),
        ("extern __shared__ float dynamic[];", "extern __shared__"),
        ("__shared__ float\n    split[32];", "does not end with `;`"),
        ("__shared__ float a[4]; a[0] = 1;", "more than one statement"),
        ("#define SHARED __shared__", "preprocessor"),
        ("__shared__ partial[32];", "no type"),
        ("__shared__ float a[4]] ;", "unbalanced"),
        ("float x __shared__;", "no variable name"),
    ];
    for (line, why) in cases {
        let source = format!("void k() {{\n{line}\n}}\n");
        let error = poison_shared_declarations(&source).unwrap_err();
        assert!(error.starts_with("line 2: ") && error.contains(why), "{line:?}: {error}");
    }
}

#[test]
fn every_shared_variable_of_the_kernels_is_poisoned_in_the_compiled_copies() {
    let kernels = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels");
    let mut declarations = 0;
    for entry in std::fs::read_dir(kernels).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "cu" || e == "cuh") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let rewritten = poison_shared_declarations(&source).unwrap();
        assert_eq!(rewritten.lines().count(), source.lines().count(), "{}", path.display());
        let shared_lines = without_comments(&source).lines().filter(|l| l.contains("__shared__")).count();
        assert_eq!(rewritten.matches("::dp_emu::poison_shared(").count(), shared_lines, "{}", path.display());
        declarations += shared_lines;
        // What the library was compiled from: this rewriting, after a #line naming the original.
        let copy = std::path::Path::new(env!("OUT_DIR")).join("poisoned").join(path.file_name().unwrap());
        let compiled = std::fs::read_to_string(&copy).unwrap();
        let (line_directive, body) = compiled.split_once('\n').unwrap();
        let original = format!("#line 1 \"{}\"", path.canonicalize().unwrap().display());
        assert_eq!(line_directive, original, "the copy's diagnostics name the original");
        assert_eq!(body, rewritten, "{} is compiled from a stale copy", path.display());
    }
    // noise.cu's three arrays and reduce.cuh's two block sums, at least.
    assert!(declarations >= 5, "{declarations} __shared__ declarations");
}
