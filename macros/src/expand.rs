//! Expansion: a plain const `SkillInfo` literal and thin impls delegating to the runtime.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use skillgen_vocab::{Capability, Family};
use syn::{Data, DeriveInput, Fields, Ident};

use crate::attr::{Errors, SkillAttrs, default_modalities, field_is_state, skill_attr};

fn opt_str(v: &Option<String>) -> TokenStream {
    match v {
        Some(s) => quote!(__sg::Some(#s)),
        None => quote!(__sg::None),
    }
}

/// The state field: the one marked `#[skill(state)]`, or the only field.
fn state_field(input: &DeriveInput, errors: &mut Errors) -> Option<(Ident, Vec<Ident>)> {
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named,
            Fields::Unnamed(f) => {
                errors.spanned(
                    f,
                    "#[derive(Skill)] needs named fields: `struct Name { state: SkillState }`",
                );
                return None;
            }
            Fields::Unit => {
                errors.spanned(
                    &input.ident,
                    "#[derive(Skill)] needs a struct with a SkillState field: `struct Name { state: SkillState }`",
                );
                return None;
            }
        },
        Data::Enum(e) => {
            errors.spanned(
                e.enum_token,
                "#[derive(Skill)] only supports structs, not enums",
            );
            return None;
        }
        Data::Union(u) => {
            errors.spanned(
                u.union_token,
                "#[derive(Skill)] only supports structs, not unions",
            );
            return None;
        }
    };
    let mut marked = Vec::new();
    for f in &fields.named {
        if field_is_state(&f.attrs, errors) {
            marked.push(f);
        }
    }
    let state = match (marked.as_slice(), fields.named.len()) {
        ([one], _) => *one,
        ([], 1) => fields.named.first()?,
        ([], 0) => {
            errors.spanned(
                fields,
                "#[derive(Skill)] needs a SkillState field: `state: ::skillgen_runtime::SkillState`",
            );
            return None;
        }
        ([], _) => {
            errors.spanned(
                fields,
                "several fields: mark the SkillState field with #[skill(state)]",
            );
            return None;
        }
        ([_, second, ..], _) => {
            errors.spanned(&second.ident, "only one field can be #[skill(state)]");
            return None;
        }
    };
    let others = fields
        .named
        .iter()
        .filter(|f| !std::ptr::eq(*f, state))
        .filter_map(|f| f.ident.clone())
        .collect();
    Some((state.ident.clone()?, others))
}

/// Derive `Skill` for `input`.
pub fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let attrs = SkillAttrs::parse(&input.attrs, &mut errors);
    match skill_attr(&input.attrs) {
        Some(a) => attrs.validate(a, &mut errors),
        None => attrs.validate(&input.ident, &mut errors),
    }
    let state = state_field(input, &mut errors);
    let body = expand(input, &attrs, state.as_ref());
    let errors = errors.into_compile_error();
    quote! {
        #errors
        #body
    }
}

fn expand(input: &DeriveInput, a: &SkillAttrs, state: Option<&(Ident, Vec<Ident>)>) -> TokenStream {
    let name = &input.ident;
    let struct_name = name.to_string();
    let (impl_g, ty_g, where_c) = input.generics.split_for_impl();

    // With errors, fall back to whatever parsed so the impls exist and nothing cascades.
    let model_type = a.model_type.clone().unwrap_or_default();
    let family = a.family.unwrap_or(Family::Encoder);
    let family_variant = Ident::new(family.variant_name(), Span::call_site());
    let modalities = a
        .modalities
        .clone()
        .unwrap_or_else(|| default_modalities(family).to_vec());
    let modality_variants = modalities
        .iter()
        .map(|m| Ident::new(m.variant_name(), Span::call_site()));
    let tasks = a.tasks.as_deref().unwrap_or_default();
    let task_infos = tasks.iter().map(|t| {
        let v = Ident::new(t.task.variant_name(), Span::call_site());
        let classes = &t.classes;
        quote!(__sg::TaskInfo { task: __sg::Task::#v, hf_classes: &[#(#classes),*] })
    });
    let config_class = opt_str(&a.config_class);
    let hf_module = opt_str(&a.hf_module);
    let candle = opt_str(&a.candle);
    let sub_config_of = a.sub_config_of.as_deref().unwrap_or_default();
    let max = a.max.as_deref().unwrap_or_default();
    let deprecated = a.deprecated;
    let native = a
        .native
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|(task, _, imp)| {
            let t = Ident::new(task.variant_name(), Span::call_site());
            let i = Ident::new(imp.variant_name(), Span::call_site());
            quote!((__sg::Task::#t, __sg::NativeImpl::#i))
        });
    let refused = a
        .refused
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|(b, why)| {
            let b = Ident::new(b.variant_name(), Span::call_site());
            quote!((__sg::Backend::#b, #why))
        });
    let backends = match &a.backends {
        Some(path) => quote!(#path()),
        None => quote!(__sg::Backends::none()),
    };

    let task_list: Vec<_> = tasks.iter().map(|t| t.task).collect();
    let methods = Capability::all_for(family, &task_list).into_iter().map(|(c, _)| {
        // The capability table (`skillgen_vocab::for_each_capability!`), written once.
        let sig = c.signature();
        let doc = sig.doc;
        let m = format_ident!("{}", sig.method);
        let req = format_ident!("{}", sig.request);
        let out = format_ident!("{}", sig.output);
        let call = match state {
            Some((field, _)) => quote!(self.#field.#m(request)),
            None => quote!(::core::unreachable!()),
        };
        quote! {
            #[doc = #doc]
            pub fn #m(&self, request: impl ::core::convert::Into<__sg::#req>) -> __sg::Result<__sg::Response<__sg::#out>, __sg::SkillError> {
                #call
            }
        }
    });

    let (state_fn, from_state_fn) = match state {
        Some((field, others)) => (
            quote!(&self.#field),
            quote!(Self { #field: state, #(#others: ::core::default::Default::default(),)* }),
        ),
        None => (
            quote!(::core::unreachable!()),
            quote!(::core::unreachable!()),
        ),
    };
    let load_doc =
        format!("Load a `{model_type}` model from a directory with `config.json`, for `target`.");

    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            use ::skillgen_runtime::__private as __sg;

            #[automatically_derived]
            impl #impl_g __sg::Skill for #name #ty_g #where_c {
                const INFO: &'static __sg::SkillInfo = &__sg::SkillInfo {
                    model_type: #model_type,
                    struct_name: #struct_name,
                    family: __sg::Family::#family_variant,
                    modalities: &[#(__sg::Modality::#modality_variants),*],
                    config_class: #config_class,
                    hf_module: #hf_module,
                    tasks: &[#(#task_infos),*],
                    candle: #candle,
                    max: &[#(#max),*],
                    native: &[#(#native),*],
                    refused: &[#(#refused),*],
                    sub_config_of: &[#(#sub_config_of),*],
                    deprecated: #deprecated,
                };
                fn backends() -> &'static __sg::Backends {
                    #backends
                }
                fn state(&self) -> &__sg::SkillState {
                    #state_fn
                }
                fn from_state(state: __sg::SkillState) -> Self {
                    #from_state_fn
                }
            }

            #[automatically_derived]
            impl #impl_g __sg::MojoMaxTarget for #name #ty_g #where_c {}

            #[automatically_derived]
            impl #impl_g #name #ty_g #where_c {
                /// The static description of this model type.
                pub const INFO: &'static __sg::SkillInfo = <Self as __sg::Skill>::INFO;

                #[doc = #load_doc]
                pub fn load(
                    dir: impl ::core::convert::AsRef<__sg::Path>,
                    target: impl ::core::convert::Into<__sg::TargetSpec>,
                ) -> __sg::Result<Self, __sg::SkillError> {
                    __sg::load(dir.as_ref(), target.into())
                }

                #(#methods)*
            }
        };
    }
}
