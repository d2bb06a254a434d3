//! Layers applied in order: the forward, forward_train and backward bodies
//! shared by `network!`'s sequential form and `#[derive(Module)]`'s
//! `#[module(sequential)]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::Ident;

/// The generated pieces for a chain of layers `self.<member>` (at least one).
pub struct Chain {
    /// `let h1 = forward(&self.m0, x); ...; hN`: the inference body.
    pub forward: TokenStream,
    /// `let (h1, s0) = forward_train(&self.m0, x); ...` (no result expression).
    pub forward_train_lets: TokenStream,
    /// The last layer's output, `hN`.
    pub last: Ident,
    /// Each layer's saved value, `s0`, `s1`, ...
    pub saved: Vec<Ident>,
    /// The reverse sweep: `let d_h{N-1} = backward(&self.m{N-1}, s{N-1}, grad_out, true); ...`,
    /// ending in the first layer's `Option<Tensor>` (it gets the caller's `input_grad`).
    pub backward_steps: TokenStream,
    /// The body of `TrainStep::forward_train_ws` (the workspace `ws` is the
    /// tuple of the layers' workspaces).
    pub forward_ws: TokenStream,
    /// The body of `TrainStep::backward_ws`.
    pub backward_ws: TokenStream,
}

/// Builds the chain over `members`, the tokens after `self.` (`0`, `fc1`).
pub fn chain<M: ToTokens>(members: &[M]) -> Chain {
    let n = members.len();
    let hs: Vec<Ident> = (0..n).map(|i| format_ident!("h{}", i + 1)).collect();
    let ss: Vec<Ident> = (0..n).map(|i| format_ident!("s{}", i)).collect();
    // Layer i reads x (i = 0) or the previous output.
    let ins: Vec<TokenStream> = (0..n)
        .map(|i| match i {
            0 => quote!(x),
            _ => {
                let h = &hs[i - 1];
                quote!(&#h)
            }
        })
        .collect();
    let last = hs.last().cloned().unwrap_or_else(|| format_ident!("x"));
    let forward = quote! {
        #(let #hs = ::deriv::nn::Forward::forward(&self.#members, #ins);)*
        #last
    };
    let forward_train_lets = quote! {
        #(let (#hs, #ss) = ::deriv::nn::Differentiable::forward_train(&self.#members, #ins);)*
    };
    // The adjoint of h_i is d_h{i}; layer i maps d_h{i+1} to d_h{i}.
    let mut backward_steps = TokenStream::new();
    for i in (0..n).rev() {
        let m = &members[i];
        let s = &ss[i];
        let flag = if i == 0 {
            quote!(input_grad)
        } else {
            quote!(true)
        };
        let step = if i + 1 == n {
            quote!(::deriv::nn::Differentiable::backward(&self.#m, #s, grad_out, #flag))
        } else {
            let d = format_ident!("d_h{}", i + 1);
            quote!(#d.and_then(|#d| ::deriv::nn::Differentiable::backward(&self.#m, #s, &#d, #flag)))
        };
        if i == 0 {
            backward_steps.extend(step);
        } else {
            let d = format_ident!("d_h{}", i);
            backward_steps.extend(quote!(let #d = #step;));
        }
    }
    // The buffer-reusing pass: each layer's workspace is one element of the
    // tuple `ws`; outputs and gradients are references into them.
    let ws: Vec<Ident> = (0..n).map(|i| format_ident!("ws{}", i)).collect();
    let forward_ws = quote! {
        let (#(#ws,)*) = ws;
        #(let #hs = ::deriv::nn::TrainStep::forward_train_ws(&self.#members, #ins, #ws);)*
        #last
    };
    let mut backward_ws = quote!(let (#(#ws,)*) = ws;);
    for i in (0..n).rev() {
        let m = &members[i];
        let w = &ws[i];
        let flag = if i == 0 {
            quote!(input_grad)
        } else {
            quote!(true)
        };
        let step = if i + 1 == n {
            quote!(::deriv::nn::TrainStep::backward_ws(&self.#m, #w, grad_out, #flag))
        } else {
            let d = format_ident!("d_h{}", i + 1);
            quote!(#d.and_then(|#d| ::deriv::nn::TrainStep::backward_ws(&self.#m, #w, #d, #flag)))
        };
        if i == 0 {
            backward_ws.extend(step);
        } else {
            let d = format_ident!("d_h{}", i);
            backward_ws.extend(quote!(let #d = #step;));
        }
    }
    Chain {
        forward,
        forward_train_lets,
        last,
        saved: ss,
        backward_steps,
        forward_ws,
        backward_ws,
    }
}
