//! `#[derive(Skill)]`: binds a struct to the skillgen runtime and its MojoMax target mixin.
//!
//! ```
//! #[derive(Debug, skillgen_runtime::Skill)]
//! #[skill(
//!     model_type = "bert",
//!     family = encoder,
//!     modalities(text),                 // optional: defaults from the family
//!     config_class = "BertConfig",      // optional
//!     hf_module = "bert",               // optional
//!     tasks(base_model("BertModel"), masked_lm("BertForMaskedLM"), sequence_classification),
//!     candle = "bert",                  // optional
//!     max("bert"),                      // optional MAX architecture names
//!     sub_config_of("clip"),            // optional parent model types
//!     deprecated,                       // optional flag
//! )]
//! pub struct Bert {
//!     state: skillgen_runtime::SkillState,   // the only field, or the one marked #[skill(state)]
//! }
//!
//! assert_eq!(Bert::INFO.model_type, "bert");
//! assert_eq!(Bert::INFO.max, &["bert"]);
//! ```
//!
//! Like serde and thiserror: parse the attributes, validate them against the shared vocabulary,
//! then expand. Every attribute error is collected and reported at the offending tokens; the
//! expansion still emits the impls (with what could be parsed) so one mistake does not cascade.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Derive `Skill`, `MojoMaxTarget`, `INFO`, `load` and the typed capability methods.
#[proc_macro_derive(Skill, attributes(skill))]
pub fn derive_skill(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
