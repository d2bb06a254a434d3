//! The reverse sweep over the SSA graph: activity analysis (which values need
//! an adjoint, statically or when the caller asks for input gradients), what
//! the generated `Saved` struct holds (each op's and sub-module's own saved
//! state), and the body of `backward`, which calls each op's
//! `deriv::ops::Op::backward` with gradient slots over the adjoints. The
//! macro knows no gradient rule: they are the ops' own.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use super::ir::{Graph, Op, ValueId};

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

/// The result of the analysis.
pub struct Plan {
    /// Per node.
    pub need: Vec<Need>,
    /// The nodes whose op or sub-module state goes into `Saved`, in forward order.
    pub saved: Vec<ValueId>,
}

/// Activity analysis and the contents of `Saved`.
pub fn plan(g: &Graph) -> Plan {
    let n = g.nodes.len();
    let mut varied = vec![Need::Never; n];
    for (id, node) in g.nodes.iter().enumerate() {
        varied[id] = match node.op {
            Op::Input => Need::IfInput,
            Op::Module(_) => Need::Always,
            Op::Call { .. } => node
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
    let saved = (0..n)
        .filter(|&id| need[id] != Need::Never && !matches!(g.nodes[id].op, Op::Input))
        .collect();
    Plan { need, saved }
}

/// The `Saved` field of a node: `h_saved`.
pub fn field_name(g: &Graph, v: ValueId) -> Ident {
    format_ident!("{}_saved", g.nodes[v].name)
}

/// The adjoint slot of a value: `d_h`.
pub fn adjoint_name(g: &Graph, v: ValueId) -> Ident {
    format_ident!("d_{}", g.nodes[v].name)
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

/// Whether each argument of an op will want its gradient, as known when the
/// forward pass saves: inputs that need one only on request are saved for.
pub fn forward_needs(g: &Graph, plan: &Plan, v: ValueId) -> Vec<TokenStream> {
    g.nodes[v]
        .args
        .iter()
        .map(|&a| {
            if plan.need[a] == Need::Never {
                quote!(false)
            } else {
                quote!(true)
            }
        })
        .collect()
}

/// How a reverse step reaches its arguments' adjoints.
pub struct Slots<'a> {
    /// `GradSlot` constructor tokens, given the adjoint (`&mut d_a`), its
    /// sum buffer (`&mut __ws.d_a`, on the buffer-reusing path) and the flag.
    pub make: &'a dyn Fn(TokenStream, Option<TokenStream>, TokenStream) -> TokenStream,
    /// Adds a computed `Option<Tensor>` contribution to an adjoint.
    pub acc: &'a dyn Fn(ValueId, TokenStream) -> TokenStream,
    /// Whether adjoints have sum buffers (`__ws.d_a`).
    pub buffers: bool,
}

/// The statements of one op's reverse step: `Op::backward(&op, saved, &d_v,
/// &mut [slots])`, with a temporary slot for an argument that appears twice
/// (`x * x`), added in afterwards.
pub fn op_step(
    g: &Graph,
    plan: &Plan,
    v: ValueId,
    saved: TokenStream,
    slots: &Slots<'_>,
) -> TokenStream {
    let node = &g.nodes[v];
    let Op::Call { ctor, .. } = &node.op else {
        unreachable!("op_step on an op node")
    };
    let d = adjoint_name(g, v);
    let mut decls = TokenStream::new();
    let mut after = TokenStream::new();
    let mut made = Vec::new();
    for (i, &a) in node.args.iter().enumerate() {
        let f = flag(plan.need[a], plan.need[v]);
        let repeated = node.args[..i].contains(&a);
        if plan.need[a] == Need::Never || repeated {
            let t = format_ident!("__slot{}", i);
            decls.extend(quote!(let mut #t: Option<Tensor> = None;));
            made.push((slots.make)(quote!(&mut #t), None, f));
            if plan.need[a] != Need::Never {
                after.extend((slots.acc)(a, quote!(#t)));
            }
        } else {
            let da = adjoint_name(g, a);
            let buf = slots.buffers.then(|| quote!(&mut __ws.#da));
            made.push((slots.make)(quote!(&mut #da), buf, f));
        }
    }
    quote! {
        #decls
        ::deriv::ops::Op::backward(&#ctor, #saved, &#d, &mut [#(#made),*]);
        #after
    }
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
        use ::deriv::ops::GradSlot;
        use ::deriv::Tensor;
        let #saved_ty { #(#fields),* } = saved;
    };
    let need = &plan.need;
    for (id, &n) in need.iter().enumerate() {
        if n == Need::Never {
            continue;
        }
        let d = adjoint_name(g, id);
        if id == g.output {
            let init = if n == Need::Always {
                quote!(Some(grad_out.clone()))
            } else {
                quote!(input_grad.then(|| grad_out.clone()))
            };
            out.extend(quote! { let #d: Option<Tensor> = #init; });
        } else {
            out.extend(quote! { let mut #d: Option<Tensor> = None; });
        }
    }
    let make = |sum: TokenStream, _buf: Option<TokenStream>, f: TokenStream| quote!(GradSlot::new(#sum, #f));
    let acc_fn = |a: ValueId, t: TokenStream| {
        let da = adjoint_name(g, a);
        quote!(acc(&mut #da, #t);)
    };
    let slots = Slots {
        make: &make,
        acc: &acc_fn,
        buffers: false,
    };
    for id in (0..g.nodes.len()).rev() {
        let node = &g.nodes[id];
        if need[id] == Need::Never || matches!(node.op, Op::Input) {
            continue;
        }
        let d = adjoint_name(g, id);
        let s = field_name(g, id);
        let step = match &node.op {
            Op::Module(field) => {
                let a = node.args[0];
                let f = flag(need[a], need[id]);
                let call = quote!(Differentiable::backward(&self.#field, #s, &#d, #f));
                if need[a] == Need::Never {
                    quote!(let _ = #call;)
                } else {
                    let da = adjoint_name(g, a);
                    quote!(acc(&mut #da, #call);)
                }
            }
            Op::Call { .. } => op_step(g, plan, id, quote!(&#s), &slots),
            Op::Input => unreachable!(),
        };
        out.extend(quote! {
            if let Some(#d) = #d {
                #step
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
