//! The reverse sweep over the SSA graph: activity analysis (which values need
//! an adjoint, statically or when the caller asks for input gradients), what
//! the generated `Saved` struct holds, and the body of `backward`, where
//! adjoints of values that fan out are summed with `::deriv::nn::dsl::acc`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use super::ir::{Graph, Op, ValueId};
use super::rules::{self, Adjoint, Ctx, Save};

/// Whether a value needs an adjoint.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Need {
    /// Never (it does not reach the output).
    Never,
    /// Only when `backward` is called with `input_grad = true` (it depends
    /// on the inputs alone).
    IfInput,
    /// Always (it depends on a sub-module's output, hence on parameters).
    Always,
}

/// One field of the generated `Saved` struct.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// A value's tensor.
    Tensor(ValueId),
    /// A value's shape (when its tensor is not saved anyway).
    Shape(ValueId),
    /// A module call's own `Saved`.
    Module(ValueId),
}

/// The result of the analysis.
pub struct Plan {
    /// Per node.
    pub need: Vec<Need>,
    /// The `Saved` struct's fields, in forward order.
    pub saved: Vec<Saved>,
    /// Per node: whether its tensor is saved.
    tensor_saved: Vec<bool>,
}

/// Activity analysis and the contents of `Saved`.
pub fn plan(g: &Graph) -> Plan {
    let n = g.nodes.len();
    let mut varied = vec![Need::Never; n];
    for (id, node) in g.nodes.iter().enumerate() {
        varied[id] = match node.op {
            Op::Input => Need::IfInput,
            Op::Module(_) => Need::Always,
            _ => node
                .args
                .iter()
                .map(|&a| varied[a])
                .max()
                .unwrap_or(Need::Never),
        };
    }
    let need: Vec<Need> = (0..n)
        .map(|i| if g.live[i] { varied[i] } else { Need::Never })
        .collect();
    let mut tensor_saved = vec![false; n];
    let mut shape_saved = vec![false; n];
    let mut module_saved = vec![false; n];
    for (id, node) in g.nodes.iter().enumerate() {
        if need[id] == Need::Never {
            continue;
        }
        if let Op::Module(_) = node.op {
            module_saved[id] = true;
        }
        let needed: Vec<bool> = node.args.iter().map(|&a| need[a] != Need::Never).collect();
        for s in rules::saves(&node.op, &needed) {
            match s {
                Save::Arg(i) => tensor_saved[node.args[i]] = true,
                Save::Out => tensor_saved[id] = true,
                Save::ArgShape(i) => shape_saved[node.args[i]] = true,
            }
        }
    }
    let mut saved = Vec::new();
    for id in 0..n {
        if module_saved[id] {
            saved.push(Saved::Module(id));
        }
        if tensor_saved[id] {
            saved.push(Saved::Tensor(id));
        } else if shape_saved[id] {
            saved.push(Saved::Shape(id));
        }
    }
    Plan {
        need,
        saved,
        tensor_saved,
    }
}

/// The name of a `Saved` field.
pub fn field_name(g: &Graph, item: Saved) -> Ident {
    match item {
        Saved::Tensor(v) => g.nodes[v].name.clone(),
        Saved::Shape(v) => format_ident!("{}_shape", g.nodes[v].name),
        Saved::Module(v) => format_ident!("{}_saved", g.nodes[v].name),
    }
}

/// The adjoint slot of a value: `d_h`.
pub fn adjoint_name(g: &Graph, v: ValueId) -> Ident {
    format_ident!("d_{}", g.nodes[v].name)
}

/// The statements of `backward` (run under `no_grad`): destructure `saved`,
/// sweep the graph in reverse, return the inputs' adjoints.
pub fn backward_body(g: &Graph, plan: &Plan, saved_ty: &Ident) -> TokenStream {
    let fields: Vec<Ident> = plan.saved.iter().map(|&s| field_name(g, s)).collect();
    // Short names for readable expansions; explicit imports shadow anything
    // of the same name around the macro call.
    let mut out = quote! {
        use ::core::option::Option::{self, None, Some};
        use ::deriv::nn::dsl::acc;
        use ::deriv::nn::Differentiable;
        use ::deriv::{vjp, Tensor};
        let #saved_ty { #(#fields),* } = saved;
    };
    let need = &plan.need;
    // Adjoint slots, in forward order.
    for (id, node) in g.nodes.iter().enumerate() {
        if need[id] == Need::Never {
            continue;
        }
        let d = adjoint_name(g, id);
        if id == g.output {
            let init = if need[id] == Need::Always {
                quote!(Some(grad_out.clone()))
            } else {
                quote!(input_grad.then(|| grad_out.clone()))
            };
            // Nothing downstream of the output is live: this slot only gets read.
            out.extend(quote! { let #d: Option<Tensor> = #init; });
        } else {
            let _ = node;
            out.extend(quote! { let mut #d: Option<Tensor> = None; });
        }
    }
    // The reverse sweep.
    for id in (0..g.nodes.len()).rev() {
        let node = &g.nodes[id];
        if need[id] == Need::Never || matches!(node.op, Op::Input) {
            continue;
        }
        let d = adjoint_name(g, id);
        let ctx = Ctx {
            g: quote!(&#d),
            g_owned: quote!(#d),
            out: {
                let name = &node.name;
                quote!(&#name)
            },
            args: node
                .args
                .iter()
                .map(|&a| {
                    let name = &g.nodes[a].name;
                    quote!(&#name)
                })
                .collect(),
            shapes: node
                .args
                .iter()
                .map(|&a| {
                    let name = &g.nodes[a].name;
                    if plan.tensor_saved[a] {
                        quote!(#name.shape())
                    } else {
                        let s = format_ident!("{}_shape", name);
                        quote!(&#s)
                    }
                })
                .collect(),
            need: node.args.iter().map(|&a| flag(need[a], need[id])).collect(),
            module: match &node.op {
                Op::Module(field) => {
                    let s = format_ident!("{}_saved", node.name);
                    Some((quote!(&self.#field), quote!(#s)))
                }
                _ => None,
            },
        };
        let acc = quote!(acc);
        let mut stmts = TokenStream::new();
        match rules::adjoint(&node.op, &ctx) {
            Adjoint::Each(exprs) => {
                for (&a, e) in node.args.iter().zip(exprs) {
                    if need[a] == Need::Never {
                        continue;
                    }
                    let da = adjoint_name(g, a);
                    let wrapped = wrap(need[a], need[id], e);
                    stmts.extend(quote! { #acc(&mut #da, #wrapped); });
                }
            }
            Adjoint::Pair(call) => {
                let mut binds = Vec::new();
                let mut accs = TokenStream::new();
                for (i, &a) in node.args.iter().enumerate() {
                    if need[a] == Need::Never {
                        binds.push(quote!(_));
                    } else {
                        let t = format_ident!("grad_{}", i);
                        let da = adjoint_name(g, a);
                        accs.extend(quote! { #acc(&mut #da, #t); });
                        binds.push(quote!(#t));
                    }
                }
                stmts.extend(quote! { let (#(#binds),*) = #call; #accs });
            }
            Adjoint::Single(call) => match node.args.first() {
                Some(&a) if need[a] != Need::Never => {
                    let da = adjoint_name(g, a);
                    stmts.extend(quote! { #acc(&mut #da, #call); });
                }
                _ => stmts.extend(quote! { let _ = #call; }),
            },
        }
        out.extend(quote! {
            if let Some(#d) = #d {
                #stmts
            }
        });
    }
    let results: Vec<TokenStream> = g
        .inputs
        .iter()
        .map(|&i| {
            if need[i] == Need::Never {
                quote!(None)
            } else {
                let d = adjoint_name(g, i);
                quote!(#d)
            }
        })
        .collect();
    if results.len() == 1 {
        out.extend(quote!(#(#results)*));
    } else {
        out.extend(quote!((#(#results),*)));
    }
    out
}

/// Whether an argument's adjoint is wanted, as a `bool` expression, inside
/// the reverse step of a node that has an adjoint.
pub fn flag(arg: Need, node: Need) -> TokenStream {
    match (arg, node) {
        (Need::Never, _) => quote!(false),
        (Need::IfInput, Need::Always) => quote!(input_grad),
        _ => quote!(true),
    }
}

/// An argument's adjoint contribution as an `Option<Tensor>`.
fn wrap(arg: Need, node: Need, e: TokenStream) -> TokenStream {
    match (arg, node) {
        (Need::IfInput, Need::Always) => quote!(input_grad.then(|| #e)),
        _ => quote!(Some(#e)),
    }
}
