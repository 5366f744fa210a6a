//! Every compile error of `#[dp_model]`, each pinned with its message and span (`tests/ui/*.stderr`).
//! The cases are models written against the `dp` facade, as a user writes them.

#[test]
fn compile_errors_point_at_the_offending_token() {
    // trybuild passes on an empty glob: make a moved or emptied folder fail instead.
    let cases = std::fs::read_dir("tests/ui")
        .expect("the compile-fail cases are in dp-macros/tests/ui")
        .filter(|entry| entry.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "rs")))
        .count();
    assert!(cases >= 50, "only {cases} compile-fail cases in tests/ui");
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
