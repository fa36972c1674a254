//! Compile-time behaviour of `#[derive(Saga)]`: every error it can give, exactly as the user
//! reads it, and sagas that must compile.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
