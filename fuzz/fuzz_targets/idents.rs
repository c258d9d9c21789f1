//! Identifier sanitising: every model type the validator accepts becomes a Rust identifier
//! (module and struct) that `syn` parses as a plain identifier, and `rust_str` round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skillgen::idents::{module_ident, rust_str, struct_ident};
use skillgen::validate::model_type_problem;

fuzz_target!(|s: &str| {
    let lit: syn::LitStr = syn::parse_str(&rust_str(s)).expect("rust_str gives one string literal");
    assert_eq!(lit.value(), s);
    if model_type_problem(s).is_some() {
        return;
    }
    for ident in [module_ident(s), struct_ident(s)] {
        let parsed: syn::Ident = syn::parse_str(&ident)
            .unwrap_or_else(|e| panic!("`{s}` → `{ident}` is not an identifier: {e}"));
        assert_eq!(parsed, ident.as_str());
    }
});
