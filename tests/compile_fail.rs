//! Every compile error of `#[dp_model]`, each pinned with its message and span (`tests/ui/*.stderr`).

#[test]
fn compile_errors_point_at_the_offending_token() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
