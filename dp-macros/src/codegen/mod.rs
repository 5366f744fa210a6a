//! Code generation: the user's struct becomes a flat parameter buffer with a `DpModel` impl.
//!
//! The emitted code names only the facade (`::dp::DpModel`, `::dp::__private::{kernels, runtime}`).
//! Every dimension is a literal; every buffer is carved from the workspace arena at the plan's
//! offsets, so a step allocates nothing (the workspace grows only for a batch larger than any before).

mod backend;
mod consts;
mod cpu;
pub(crate) mod device;
mod program;

use crate::parse::ast::{InputKind, LossKind, ModelDef};
use crate::plan::memory::Buf;
use crate::plan::params::Init;
use crate::plan::Plan;
use cpu::emit::{carve, lit};
use cpu::{kernels, Cpu};
use proc_macro2::{Literal, TokenStream};
use quote::quote;

/// The whole expansion of a checked, planned model.
pub fn generate(model: &ModelDef, plan: &Plan) -> TokenStream {
    let ModelDef { attrs, vis, ident, .. } = model;
    let name = ident.to_string();
    let constants = consts::constants(model, plan);
    let buffer_lens = plan.buffers.iter().map(|b| lit(b.len));
    let buffer_count = lit(plan.buffers.len());
    let buffer_doc = plan
        .buffers
        .iter()
        .enumerate()
        .map(|(k, b)| format!(" `__b{k}`: {} ({} per example at offset {})", b.purpose, b.len, b.offset));
    let (param_count, input_len, output_len, groups) =
        (lit(plan.param_count), lit(plan.input_len), lit(plan.output_len), lit(plan.groups.len()));
    let trained_count = lit(plan.trained_param_count);
    let label_len = lit(match model.loss.kind {
        LossKind::MeanSquaredError => plan.output_len,
        _ => 1,
    });
    let output = match plan.output {
        Buf::Arena(k) => &plan.buffers[k],
        Buf::Input => unreachable!("checking guarantees a trained layer before the output"),
    };
    let (out_start, out_end) = (lit(output.offset), lit(output.offset + output.len));
    let constants_init = plan.params.iter().filter_map(|p| {
        let (start, end) = (lit(p.offset), lit(p.offset + p.len));
        let Init::Constant(v) = p.init else { return None };
        let v = Literal::f32_suffixed(v);
        Some(quote!(params[#start..#end].fill(#v);))
    });
    let init = plan.params.iter().filter_map(|p| {
        let Init::Uniform { bound } = p.init else { return None };
        let (start, end, bound) = (lit(p.offset), lit(p.offset + p.len), Literal::f32_suffixed(bound));
        Some(quote!((#start, #end, #bound)))
    });
    let input_ty = input_type(model);
    let normal_init = normal_init(plan);
    let dense = kernels::dense();
    let uniform_init = plan.params.iter().any(|p| matches!(p.init, Init::Uniform { .. })).then(|| {
        quote! {
            // PyTorch's defaults: weights kaiming_uniform(a = √5) and biases both U(−1/√fan_in, 1/√fan_in).
            for (start, end, bound) in [#(#init),*] {
                for v in &mut params[start..end] {
                    *v = #dense::uniform_from_bits(
                        ::dp::__private::RngCore::next_u32(rng),
                        bound,
                    );
                }
            }
        }
    });
    let carve_all = carve(plan, quote!(ws.arena()));
    let carve_arena = carve(plan, quote!(arena));
    let forward = program::forward(&Cpu, plan);
    let backward = program::backward(&Cpu, plan, model.loss.kind);
    let gradient_sum = program::gradient_sum(&Cpu, plan);
    let norms = program::norms(&Cpu, plan);
    let clipped_sum = program::clipped_sum(&Cpu, plan);
    let device_program = device_program(model, plan);
    quote! {
        #(#attrs)*
        #vis struct #ident {
            params: ::std::vec::Vec<f32>,
        }

        impl ::core::clone::Clone for #ident {
            fn clone(&self) -> Self {
                #ident { params: ::core::clone::Clone::clone(&self.params) }
            }
        }

        impl ::core::fmt::Debug for #ident {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name).field("parameters", &self.params.len()).finish()
            }
        }

        #[doc(hidden)]
        #[allow(unused_variables, clippy::too_many_arguments)]
        impl #ident {
            /// Per-example lengths of the arena buffers, in arena order (the static memory plan):
            #(#[doc = #buffer_doc])*
            const __DP_BUFFERS: [usize; #buffer_count] = [#(#buffer_lens),*];

            fn __dp_check_batch(batch: &::dp::__private::runtime::Batch<'_, #input_ty>, losses: &[f32]) {
                let n = batch.size;
                assert_eq!(batch.inputs.len(), n * #input_len, "{}: inputs of {} examples", #name, n);
                assert_eq!(batch.labels.len(), n * #label_len, "{}: labels of {} examples", #name, n);
                assert_eq!(losses.len(), n, "{}: losses of {} examples", #name, n);
            }

            fn __dp_forward(
                &self,
                arena: &mut [f32],
                inputs: &[#input_ty],
                n: usize,
                precision: ::dp::__private::runtime::Precision,
            ) {
                #carve_arena
                let p: &[f32] = &self.params;
                #forward
            }

            /// Forward, loss and the one backward pass; leaves every layer's input and δ in the arena.
            fn __dp_forward_backward(
                &self,
                ws: &mut ::dp::__private::runtime::Workspace,
                batch: ::dp::__private::runtime::Batch<'_, #input_ty>,
                losses: &mut [f32],
            ) {
                Self::__dp_check_batch(&batch, losses);
                let (n, inputs, labels) = (batch.size, batch.inputs, batch.labels);
                ws.ensure::<Self>(n);
                let precision = ws.precision();
                self.__dp_forward(ws.arena(), inputs, n, precision);
                #carve_all
                let p: &[f32] = &self.params;
                #backward
            }
        }

        #[allow(unused_variables)]
        impl ::dp::DpModel for #ident {
            #constants

            fn from_params(params: ::std::vec::Vec<f32>) -> Self {
                assert_eq!(params.len(), #param_count, "{} has {} parameters", #name, #param_count);
                #ident { params }
            }

            fn params(&self) -> &[f32] {
                &self.params
            }

            fn params_mut(&mut self) -> &mut [f32] {
                &mut self.params
            }

            fn init(rng: &mut dyn ::dp::__private::RngCore) -> Self {
                let mut params = ::std::vec![0.0f32; #param_count];
                #uniform_init
                #normal_init
                #(#constants_init)*
                #ident { params }
            }

            fn forward(
                &self,
                ws: &mut ::dp::__private::runtime::Workspace,
                inputs: &[#input_ty],
                n: usize,
                outputs: &mut [f32],
            ) {
                assert_eq!(inputs.len(), n * #input_len, "{}: inputs of {} examples", #name, n);
                assert_eq!(outputs.len(), n * #output_len, "{}: outputs of {} examples", #name, n);
                ws.ensure::<Self>(n);
                let precision = ws.precision();
                self.__dp_forward(ws.arena(), inputs, n, precision);
                outputs.copy_from_slice(&ws.arena()[#out_start * n..#out_end * n]);
            }

            fn loss_and_gradient(
                &self,
                ws: &mut ::dp::__private::runtime::Workspace,
                batch: ::dp::__private::runtime::Batch<'_, #input_ty>,
                losses: &mut [f32],
                grad: &mut [f32],
            ) {
                assert_eq!(grad.len(), #trained_count, "{}: gradient length", #name);
                self.__dp_forward_backward(ws, batch, losses);
                let (n, inputs, precision) = (batch.size, batch.inputs, ws.precision());
                #carve_all
                #gradient_sum
            }

            fn per_example_norms(
                &self,
                ws: &mut ::dp::__private::runtime::Workspace,
                batch: ::dp::__private::runtime::Batch<'_, #input_ty>,
                losses: &mut [f32],
                sq_norms: &mut [f32],
            ) {
                assert_eq!(sq_norms.len(), batch.size * #groups, "{}: squared norms of {} examples", #name, batch.size);
                self.__dp_forward_backward(ws, batch, losses);
                let (n, inputs, precision) = (batch.size, batch.inputs, ws.precision());
                #carve_all
                #norms
            }

            fn clipped_sum(
                &self,
                ws: &mut ::dp::__private::runtime::Workspace,
                batch: ::dp::__private::runtime::Batch<'_, #input_ty>,
                factors: &[f32],
                grad: &mut [f32],
            ) {
                let (n, inputs) = (batch.size, batch.inputs);
                assert_eq!(inputs.len(), n * #input_len, "{}: inputs of {} examples", #name, n);
                assert_eq!(factors.len(), n * #groups, "{}: clip factors of {} examples", #name, n);
                assert_eq!(grad.len(), #trained_count, "{}: gradient length", #name);
                assert!(ws.max_batch() >= n, "{}: clipped_sum without per_example_norms on this batch", #name);
                let precision = ws.precision();
                #carve_all
                #clipped_sum
            }

            #device_program
        }
    }
}

/// The device program's items of the `DpModel` impl: the passes through the device backend, or, for a
/// model with a step the device has no primitives for, the reason (the trait's defaults refuse with it).
fn device_program(model: &ModelDef, plan: &Plan) -> TokenStream {
    if let Some(reason) = device::unsupported(plan) {
        return quote!(const DEVICE_UNSUPPORTED: ::core::option::Option<&'static str> = ::core::option::Option::Some(#reason););
    }
    let rt = quote!(::dp::__private::runtime::device);
    let layout = device::Layout::of(plan);
    let (arena, arena_f32, slot) =
        (lit(layout.len()), lit(layout.f32_len()), lit(layout.largest_read_in_f32()));
    let forward = program::forward(&device::Device, plan);
    let backward = program::backward(&device::Device, plan, model.loss.kind);
    let gradient_sum = program::gradient_sum(&device::Device, plan);
    let norms = program::norms(&device::Device, plan);
    let clipped_sum = program::clipped_sum(&device::Device, plan);
    let prelude = device::prelude();
    let pass = |body: TokenStream| {
        quote! {
            #prelude
            let _ = &dev;
            #body
            ::core::result::Result::Ok(())
        }
    };
    let (forward_backward, gradient_sum, norms, clipped_sum) =
        (pass(quote!(#forward #backward)), pass(gradient_sum), pass(norms), pass(clipped_sum));
    let forward = pass(forward);
    let outputs = match plan.output {
        Buf::Arena(k) => device::emit::arena(plan, k),
        Buf::Input => unreachable!("checking guarantees a trained layer before the output"),
    };
    quote! {
        const DEVICE_UNSUPPORTED: ::core::option::Option<&'static str> = ::core::option::Option::None;
        const DEVICE_ARENA_PER_EXAMPLE: usize = #arena;
        const DEVICE_ARENA_F32_PER_EXAMPLE: usize = #arena_f32;
        const DEVICE_CONVERSION_SLOT_PER_EXAMPLE: usize = #slot;

        fn device_forward(dev: &mut dyn #rt::DeviceOps, n: usize) -> ::core::result::Result<(), #rt::DeviceError> {
            #forward
        }

        fn device_outputs(n: usize) -> ::core::result::Result<#rt::Span, #rt::DeviceError> {
            #prelude
            ::core::result::Result::Ok(#outputs)
        }

        fn device_forward_backward(dev: &mut dyn #rt::DeviceOps, n: usize) -> ::core::result::Result<(), #rt::DeviceError> {
            #forward_backward
        }

        fn device_gradient_sum(dev: &mut dyn #rt::DeviceOps, n: usize) -> ::core::result::Result<(), #rt::DeviceError> {
            #gradient_sum
        }

        fn device_norms(dev: &mut dyn #rt::DeviceOps, n: usize) -> ::core::result::Result<(), #rt::DeviceError> {
            #norms
        }

        fn device_clipped_sum(dev: &mut dyn #rt::DeviceOps, n: usize) -> ::core::result::Result<(), #rt::DeviceError> {
            #clipped_sum
        }
    }
}

/// `f32` for dense inputs, `u32` for token ids.
pub fn input_type(model: &ModelDef) -> TokenStream {
    match model.input_kind {
        InputKind::Dense => quote!(f32),
        InputKind::Tokens { .. } => quote!(u32),
    }
}

/// The initialisation of N(0, std²) tensors (embedding tables), if the model has any.
fn normal_init(plan: &Plan) -> Option<TokenStream> {
    let slots: Vec<TokenStream> = plan
        .params
        .iter()
        .filter_map(|p| {
            let Init::Normal { std } = p.init else { return None };
            let (start, end, std) = (lit(p.offset), lit(p.offset + p.len), Literal::f32_suffixed(std));
            Some(quote!((#start, #end, #std)))
        })
        .collect();
    if slots.is_empty() {
        return None;
    }
    let embedding = kernels::embedding();
    Some(quote! {
        // PyTorch's default for embedding tables: N(0, 1).
        for (start, end, std) in [#(#slots),*] {
            for v in &mut params[start..end] {
                *v = std * #embedding::normal_from_bits(
                    ::dp::__private::RngCore::next_u32(rng),
                    ::dp::__private::RngCore::next_u32(rng),
                );
            }
        }
    })
}
