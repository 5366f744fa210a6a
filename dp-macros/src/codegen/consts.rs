//! The associated constants of `DpModel`: the parameter table, the groups, the plan table, the loss.

use super::cpu::emit::lit;
use crate::parse::ast::{LossKind, ModelDef};
use crate::plan::Plan;
use dp_spec::NormStrategy;
use proc_macro2::{Literal, TokenStream};
use quote::quote;

fn shape(dims: &[usize]) -> TokenStream {
    let dims = dims.iter().map(|&d| lit(d));
    quote!(&[#(#dims),*])
}

/// Every associated constant of the `DpModel` impl.
pub fn constants(model: &ModelDef, plan: &Plan) -> TokenStream {
    let name = model.ident.to_string();
    let input: Vec<usize> = model.input.iter().map(|d| d.value).collect();
    let input_shape = shape(&input);
    let loss = match model.loss.kind {
        LossKind::CrossEntropy { classes } => {
            let k = lit(classes.value);
            quote!(::dp::__private::runtime::Loss::CrossEntropy { classes: #k })
        }
        LossKind::BinaryCrossEntropy => quote!(::dp::__private::runtime::Loss::BinaryCrossEntropy),
        LossKind::MeanSquaredError => {
            let k = lit(plan.output_len);
            quote!(::dp::__private::runtime::Loss::MeanSquaredError { outputs: #k })
        }
    };
    // In buffer order: the trained tensors, then the frozen ones (with no group).
    let mut in_buffer_order: Vec<_> = plan.params.iter().collect();
    in_buffer_order.sort_by_key(|p| p.offset);
    let params = in_buffer_order.into_iter().map(|p| {
        let (pname, pshape, offset, len) = (&p.name, shape(&p.shape), lit(p.offset), lit(p.len));
        let group = match p.trained {
            true => {
                let g = lit(p.group);
                quote!(#g)
            }
            false => quote!(::dp::__private::runtime::FROZEN_GROUP),
        };
        quote! {
            ::dp::__private::runtime::ParamSpec {
                name: #pname, shape: #pshape, offset: #offset, len: #len, group: #group,
            }
        }
    });
    let layers = plan.layers.iter().map(|l| {
        let (lname, op, ins, outs, nparams) =
            (&l.field, &l.op, shape(&l.input_shape), shape(&l.output_shape), lit(l.params));
        let strategy = match l.strategy {
            Some(NormStrategy::Ghost) => {
                quote!(::core::option::Option::Some(::dp::__private::runtime::NormStrategy::Ghost))
            }
            Some(NormStrategy::Direct) => {
                quote!(::core::option::Option::Some(::dp::__private::runtime::NormStrategy::Direct))
            }
            Some(NormStrategy::TokenGrouped) => {
                quote!(::core::option::Option::Some(::dp::__private::runtime::NormStrategy::TokenGrouped))
            }
            None => quote!(::core::option::Option::None),
        };
        let (flops, bytes) =
            (Literal::u64_unsuffixed(l.flops_per_example), Literal::u64_unsuffixed(l.bytes_per_example));
        let kept = l.kept_gradients;
        quote! {
            ::dp::__private::runtime::LayerInfo {
                name: #lname, op: #op, input_shape: #ins, output_shape: #outs, params: #nparams,
                strategy: #strategy, kept_gradients: #kept, flops_per_example: #flops,
                bytes_per_example: #bytes,
            }
        }
    });
    // Only a model with LoRA layers states them (the contract's default is none).
    let lora_layers: Vec<TokenStream> = plan
        .steps
        .iter()
        .filter_map(|step| match step {
            crate::ops::Step::LoraSum(s) => Some(s),
            _ => None,
        })
        .map(|s| {
            let (w, a, b) = (
                format!("{}.weight", s.layer),
                format!("{}.lora_A.weight", s.layer),
                format!("{}.lora_B.weight", s.layer),
            );
            let scale = Literal::f32_suffixed(s.scale);
            quote!(::dp::__private::runtime::LoraSpec { weight: #w, lora_a: #a, lora_b: #b, scale: #scale })
        })
        .collect();
    let lora = (!lora_layers.is_empty())
        .then(|| quote!(const LORA: &'static [::dp::__private::runtime::LoraSpec] = &[#(#lora_layers),*];));
    let groups = &plan.groups;
    let (param_count, per_example) = (lit(plan.param_count), lit(plan.workspace_per_example));
    let trained_param_count = lit(plan.trained_param_count);
    let per_task = lit(plan.scratch.patches_per_task);
    let input_ty = super::input_type(model);
    let vocab = lit(model.input_kind.vocab().unwrap_or(0));
    quote! {
        type Input = #input_ty;
        const NAME: &'static str = #name;
        const INPUT_SHAPE: &'static [usize] = #input_shape;
        const VOCAB: usize = #vocab;
        const LOSS: ::dp::__private::runtime::Loss = #loss;
        const PARAMS: &'static [::dp::__private::runtime::ParamSpec] = &[#(#params),*];
        const PARAM_COUNT: usize = #param_count;
        const TRAINED_PARAM_COUNT: usize = #trained_param_count;
        const GROUPS: &'static [&'static str] = &[#(#groups),*];
        const LAYERS: &'static [::dp::__private::runtime::LayerInfo] = &[#(#layers),*];
        const WORKSPACE_PER_EXAMPLE: usize = #per_example;
        const WORKSPACE_FIXED: usize = 0;
        const WORKSPACE_PER_TASK: usize = #per_task;
        #lora
    }
}
