//! The second front end: a model that is not a chain, written as Rust the macro reads.
//!
//! ```text
//! #[dp_model(input = [3, 32, 32], loss = cross_entropy(classes = 10))]
//! mod residual {
//!     pub struct Net {
//!         #[layer(conv2d(out = 16, kernel = 3, padding = 1))] stem: Conv2d,
//!         ...
//!     }
//!     impl Net {
//!         fn forward(&self, x: Input) -> Output {
//!             let h = self.stem(x);
//!             let r = self.block_b(self.block_a(h));
//!             self.head((h + r).relu())
//!         }
//!     }
//! }
//! ```
//!
//! `forward` may use `let` bindings, field calls `self.field(value)` (the field's whole op chain),
//! `+` of two values of one shape, and the activation methods (`.relu()`, `.tanh()`, ..., one per
//! activation function).
//! Every field is called exactly once (a second call would share its parameters, which is not
//! supported) and every binding is used. It lowers to the same [`Graph`] as a sequential model.

use super::ast::{LossDef, ModelDef};
use crate::ctxt::Ctxt;
use crate::ir::lower::lower_op;
use crate::ir::{Graph, Node, ValueId};
use crate::ops::activation::function::Act;
use crate::ops::activation::Activation;
use crate::ops::add::Add;
use crate::ops::Op;
use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use std::collections::HashMap;
use syn::spanned::Spanned;
use syn::{Expr, ImplItem, Item, ItemMod, Pat, Stmt};

/// The parsed module: the model, its forward graph, and the module's other items to keep.
pub struct GraphModel {
    pub model: ModelDef,
    pub graph: Graph,
    /// `#[attrs] vis mod name` and the items the macro leaves alone.
    pub module: ItemMod,
}

/// Parses an inline module holding the model struct and its `forward`; `None` after reporting errors.
pub fn parse_graph_model(cx: &mut Ctxt, args: TokenStream, mut module: ItemMod) -> Option<GraphModel> {
    let Some((_, items)) = module.content.take() else {
        cx.error(
            module.ident.span(),
            "#[dp_model] on a module needs its body inline: `mod name { struct ...; impl ... }`",
        );
        return None;
    };
    let structs: Vec<&syn::ItemStruct> =
        items.iter().filter_map(|i| if let Item::Struct(s) = i { Some(s) } else { None }).collect();
    let [strukt] = structs.as_slice() else {
        cx.error(
            module.ident.span(),
            "a #[dp_model] module holds exactly one struct: the model, with a `#[layer(...)]` per field",
        );
        return None;
    };
    let name = strukt.ident.clone();
    let model = super::parse_model(cx, args, strukt.to_token_stream());
    let mut forward = None;
    let mut kept = Vec::new();
    for item in items {
        match item {
            Item::Struct(_) => {}
            Item::Impl(mut imp) if is_impl_of(&imp, &name) => {
                let at =
                    imp.items.iter().position(|i| matches!(i, ImplItem::Fn(f) if f.sig.ident == "forward"));
                if let Some(at) = at {
                    let ImplItem::Fn(f) = imp.items.remove(at) else { unreachable!() };
                    forward = Some(f);
                }
                if !imp.items.is_empty() {
                    kept.push(Item::Impl(imp));
                }
            }
            other => kept.push(other),
        }
    }
    let Some(forward) = forward else {
        cx.error(name.span(), format!("a #[dp_model] module needs `impl {name} {{ fn forward(&self, x: Input) -> Output {{ ... }} }}`"));
        return None;
    };
    let model = model?;
    let graph = lower(cx, &model, &forward)?;
    module.content = Some((Default::default(), kept));
    Some(GraphModel { model, graph, module })
}

fn is_impl_of(imp: &syn::ItemImpl, name: &syn::Ident) -> bool {
    imp.trait_.is_none() && matches!(&*imp.self_ty, syn::Type::Path(p) if p.path.is_ident(name))
}

struct Lowering<'m> {
    model: &'m ModelDef,
    nodes: Vec<Node>,
    fields: Vec<String>,
    input: syn::Ident,
    /// Bindings: name → (value, span of the name, uses).
    bindings: HashMap<String, (ValueId, Span, usize)>,
    /// Span of the call of each field, once called.
    called: Vec<Option<Span>>,
}

impl Lowering<'_> {
    fn value(&self) -> ValueId {
        ValueId(self.nodes.len() + 1)
    }

    /// A node outside any field (`+`, an activation method), named after its binding or its op.
    fn pseudo_field(&mut self, name: String) -> usize {
        self.fields.push(name);
        self.fields.len() - 1
    }

    fn expr(&mut self, cx: &mut Ctxt, e: &Expr, name: &str) -> Option<ValueId> {
        match e {
            Expr::Paren(p) => self.expr(cx, &p.expr, name),
            Expr::Path(p) if p.path.get_ident().is_some() => {
                let ident = p.path.get_ident().expect("checked");
                if *ident == self.input {
                    return Some(ValueId(0));
                }
                match self.bindings.get_mut(&ident.to_string()) {
                    Some((v, _, uses)) => {
                        *uses += 1;
                        Some(*v)
                    }
                    None => {
                        cx.error(
                            ident.span(),
                            format!("unknown value `{ident}` in `forward`: bind it with `let` first"),
                        );
                        None
                    }
                }
            }
            Expr::Binary(b) if matches!(b.op, syn::BinOp::Add(_)) => {
                let (l, r) = (self.expr(cx, &b.left, name), self.expr(cx, &b.right, name));
                let (l, r) = (l?, r?);
                let field =
                    self.pseudo_field(if name.is_empty() { "add".to_string() } else { name.to_string() });
                let output = self.value();
                self.nodes.push(Node {
                    op: Op::Add(Add),
                    inputs: vec![l, r],
                    output,
                    field,
                    span: b.op.span(),
                    text: "+".into(),
                    frozen: false,
                });
                Some(output)
            }
            Expr::MethodCall(m) if is_self(&m.receiver) => {
                let field = m.method.to_string();
                let Some(index) = self.model.fields.iter().position(|f| f.name == field) else {
                    let known: Vec<String> =
                        self.model.fields.iter().map(|f| format!("`{}`", f.name)).collect();
                    cx.error(
                        m.method.span(),
                        format!(
                            "`{}` has no field `{field}`; its fields are {}",
                            self.model.ident,
                            known.join(", ")
                        ),
                    );
                    return None;
                };
                if m.args.len() != 1 {
                    cx.error(m.method.span(), format!("`self.{field}(...)` takes one value"));
                    return None;
                }
                let arg = self.expr(cx, &m.args[0], "")?;
                if self.called[index].is_some() {
                    cx.error(
                        m.method.span(),
                        format!(
                            "field `{field}` is called twice: both calls would share its parameters, which is not \
                             supported; declare a second field with the same layer"
                        ),
                    );
                    return None;
                }
                self.called[index] = Some(m.method.span());
                let mut current = arg;
                let def = &self.model.fields[index];
                for op in &def.ops {
                    current =
                        lower_op(&mut self.nodes, &mut self.fields, index, def.frozen.is_some(), op, current);
                }
                Some(current)
            }
            Expr::MethodCall(m) => {
                let method = m.method.to_string();
                let Some(act) = Act::from_name(&method) else {
                    cx.error(
                        m.method.span(),
                        format!(
                            "unknown method `.{method}()` in `forward`: the activation methods are {}",
                            activation_methods()
                        ),
                    );
                    return None;
                };
                if !m.args.is_empty() {
                    cx.error(m.method.span(), format!("`.{}()` takes no arguments", m.method));
                    return None;
                }
                let x = self.expr(cx, &m.receiver, "")?;
                let field =
                    self.pseudo_field(if name.is_empty() { method.clone() } else { name.to_string() });
                let output = self.value();
                self.nodes.push(Node {
                    op: Op::Activation(Activation(act)),
                    inputs: vec![x],
                    output,
                    field,
                    span: m.method.span(),
                    text: method,
                    frozen: false,
                });
                Some(output)
            }
            other => {
                cx.error(
                    other.span(),
                    format!(
                        "`forward` may only use `let` bindings, `self.field(value)`, `+` and the activation methods {}",
                        activation_methods()
                    ),
                );
                None
            }
        }
    }
}

/// `.relu()`, `.tanh()`, ... as an error message lists them.
fn activation_methods() -> String {
    Act::NAMES.iter().map(|name| format!("`.{name}()`")).collect::<Vec<_>>().join(", ")
}

fn is_self(e: &Expr) -> bool {
    matches!(e, Expr::Path(p) if p.path.is_ident("self"))
}

/// Lowers `forward` to a graph: nodes in evaluation order (a topological order).
fn lower(cx: &mut Ctxt, model: &ModelDef, f: &syn::ImplItemFn) -> Option<Graph> {
    let input = match (f.sig.inputs.len(), f.sig.inputs.iter().nth(1)) {
        (2, Some(syn::FnArg::Typed(t))) => match &*t.pat {
            Pat::Ident(p) => Some(p.ident.clone()),
            _ => None,
        },
        _ => None,
    };
    let Some(input) = input else {
        cx.error(
            f.sig.span(),
            "`forward` takes `&self` and one input: `fn forward(&self, x: Input) -> Output`",
        );
        return None;
    };
    let mut lw = Lowering {
        model,
        nodes: Vec::new(),
        fields: model.fields.iter().map(|f| f.name.to_string()).collect(),
        input,
        bindings: HashMap::new(),
        called: vec![None; model.fields.len()],
    };
    let stmts = &f.block.stmts;
    let mut output = None;
    for (k, stmt) in stmts.iter().enumerate() {
        match stmt {
            Stmt::Local(local) => {
                let (Pat::Ident(p), Some(init)) = (&local.pat, &local.init) else {
                    cx.error(local.span(), "write bindings as `let name = expression;`");
                    return None;
                };
                let name = p.ident.to_string();
                let v = lw.expr(cx, &init.expr, &name)?;
                if let Some((_, span, 0)) = lw.bindings.insert(name.clone(), (v, p.ident.span(), 0)) {
                    cx.error(span, format!("`{name}` is computed but never used in `forward`"));
                }
            }
            Stmt::Expr(e, None) if k + 1 == stmts.len() => output = Some(lw.expr(cx, e, "")?),
            other => {
                cx.error(
                    other.span(),
                    "`forward` is `let` bindings followed by the output expression (no `;` after it)",
                );
                return None;
            }
        }
    }
    let Some(output) = output else {
        cx.error(f.block.span(), "`forward` must end with the model's output expression");
        return None;
    };
    let mut ok = true;
    let mut bindings: Vec<_> = lw.bindings.iter().collect();
    bindings.sort_by_key(|(name, _)| name.as_str());
    for (name, (_, span, uses)) in bindings {
        if *uses == 0 {
            cx.error(*span, format!("`{name}` is computed but never used in `forward`"));
            ok = false;
        }
    }
    for (field, called) in model.fields.iter().zip(&lw.called) {
        if called.is_none() {
            cx.error(field.name.span(), format!("field `{}` is never called in `forward`", field.name));
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(Graph {
        fields: lw.fields,
        value_count: lw.nodes.len() + 1,
        nodes: lw.nodes,
        input: ValueId(0),
        output,
        loss: LossDef { kind: model.loss.kind, span: model.loss.span },
    })
}
