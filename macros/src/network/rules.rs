//! The rule table: for each op, what backward needs saved from the forward
//! pass, and the tokens computing each input's adjoint from the output's.
//! The rules call `::deriv::vjp::*`, the functions the tape's nodes use, so
//! the two ways to differentiate agree by construction.

use proc_macro2::TokenStream;
use quote::quote;

use super::ir::Op;

/// Something a rule reads in backward.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Save {
    /// The `i`-th argument tensor.
    Arg(usize),
    /// The op's output tensor.
    Out,
    /// The `i`-th argument's shape.
    ArgShape(usize),
}

/// What the op's rule reads, given which arguments need an adjoint.
/// (A module call saves its own `Saved`; the caller handles that.)
pub fn saves(op: &Op, needed: &[bool]) -> Vec<Save> {
    let need = |i: usize| needed.get(i).copied().unwrap_or(false);
    match op {
        Op::Input | Op::Module(_) => vec![],
        Op::Add | Op::Sub => (0..2).filter(|&i| need(i)).map(Save::ArgShape).collect(),
        Op::Mul | Op::Div | Op::Matmul => vec![Save::Arg(0), Save::Arg(1)],
        Op::AddScalar(_)
        | Op::SubScalar(_)
        | Op::RSubScalar(_)
        | Op::MulScalar(_)
        | Op::DivScalar(_)
        | Op::Neg
        | Op::T
        | Op::Transpose(..) => vec![],
        Op::RDivScalar(_) | Op::Log | Op::Square | Op::Pow(_) => vec![Save::Arg(0)],
        Op::Relu
        | Op::Sigmoid
        | Op::Tanh
        | Op::Exp
        | Op::Sqrt
        | Op::Softmax(_)
        | Op::LogSoftmax(_) => vec![Save::Out],
        Op::Reshape(_)
        | Op::View(_)
        | Op::Flatten(..)
        | Op::Sum
        | Op::SumDim(..)
        | Op::Mean
        | Op::MeanDim(..) => vec![Save::ArgShape(0)],
    }
}

/// The names a rule's tokens refer to. The tokens use the short names
/// `backward` imports: `vjp`, `Differentiable`.
pub struct Ctx {
    /// The output's adjoint, by reference (`&d_h`).
    pub g: TokenStream,
    /// The output's adjoint, by value (`d_h`), for rules that pass it through.
    pub g_owned: TokenStream,
    /// The saved output (`&h`).
    pub out: TokenStream,
    /// The saved arguments (`&a`).
    pub args: Vec<TokenStream>,
    /// The arguments' shapes, as `&[usize]` expressions.
    pub shapes: Vec<TokenStream>,
    /// Per argument, whether its adjoint is wanted (a `bool` expression).
    pub need: Vec<TokenStream>,
    /// For a module call: the field and its saved state.
    pub module: Option<(TokenStream, TokenStream)>,
}

/// How a rule delivers the arguments' adjoints.
pub enum Adjoint {
    /// One `Tensor` expression per argument.
    Each(Vec<TokenStream>),
    /// An expression of type `(Option<Tensor>, Option<Tensor>)`, honouring `need`.
    Pair(TokenStream),
    /// An expression of type `Option<Tensor>` for the only argument (a module's backward).
    Single(TokenStream),
}

/// The adjoint tokens of `op`.
pub fn adjoint(op: &Op, c: &Ctx) -> Adjoint {
    let g = &c.g;
    let gv = &c.g_owned;
    let y = &c.out;
    let a = c.args.first().cloned().unwrap_or_default();
    let b = c.args.get(1).cloned().unwrap_or_default();
    let sa = c.shapes.first().cloned().unwrap_or_default();
    let sb = c.shapes.get(1).cloned().unwrap_or_default();
    let na = c.need.first().cloned().unwrap_or_else(|| quote!(false));
    let nb = c.need.get(1).cloned().unwrap_or_else(|| quote!(false));
    let vjp = quote!(vjp);
    let one = |t: TokenStream| Adjoint::Each(vec![t]);
    match op {
        Op::Input => Adjoint::Each(vec![]),
        Op::Module(_) => {
            let (field, saved) = c.module.clone().unwrap_or_default();
            Adjoint::Single(quote!(
                Differentiable::backward(#field, #saved, #g, #na)
            ))
        }
        Op::Add => Adjoint::Each(vec![
            quote!(#vjp::sum_to(#g, #sa)),
            quote!(#vjp::sum_to(#g, #sb)),
        ]),
        Op::Sub => Adjoint::Each(vec![
            quote!(#vjp::sum_to(#g, #sa)),
            quote!(#vjp::neg(&#vjp::sum_to(#g, #sb))),
        ]),
        Op::Mul => Adjoint::Pair(quote!(#vjp::mul(#g, #a, #b, [#na, #nb]))),
        Op::Div => Adjoint::Pair(quote!(#vjp::div(#g, #a, #b, [#na, #nb]))),
        Op::Matmul => Adjoint::Pair(quote!(#vjp::matmul(#g, #a, #b, [#na, #nb]))),
        Op::AddScalar(_) | Op::SubScalar(_) => one(quote!(#gv)),
        Op::RSubScalar(_) | Op::Neg => one(quote!(#vjp::neg(#g))),
        Op::MulScalar(k) => one(quote!(#g * #k)),
        Op::DivScalar(k) => one(quote!(#g / #k)),
        // y = k / x: dx = -g·k / x².
        Op::RDivScalar(k) => one(quote!(-(#g * #k) / (#a * #a))),
        Op::Relu => one(quote!(#vjp::relu(#y, #g))),
        Op::Sigmoid => one(quote!(#vjp::sigmoid(#y, #g))),
        Op::Tanh => one(quote!(#vjp::tanh(#y, #g))),
        Op::Exp => one(quote!(#vjp::exp(#y, #g))),
        Op::Sqrt => one(quote!(#vjp::sqrt(#y, #g))),
        Op::Log => one(quote!(#vjp::log(#a, #g))),
        Op::Square => one(quote!(#vjp::pow_scalar(#a, 2.0, #g))),
        Op::Pow(p) => one(quote!(#vjp::pow_scalar(#a, #p, #g))),
        Op::Softmax(d) => one(quote!(#vjp::softmax(#y, #g, #d))),
        Op::LogSoftmax(d) => one(quote!(#vjp::log_softmax(#y, #g, #d))),
        Op::T => one(quote!(#gv.t())),
        Op::Transpose(d0, d1) => one(quote!(#vjp::transpose(#g, #d0, #d1))),
        Op::Reshape(_) | Op::View(_) | Op::Flatten(..) => one(quote!(#vjp::reshape(#g, #sa))),
        Op::Sum => one(quote!(#vjp::sum(#g, #sa, &[], false))),
        Op::Mean => one(quote!(#vjp::mean(#g, #sa, &[], false))),
        Op::SumDim(d, k) => one(quote!(
            #vjp::sum(#g, #sa, &::deriv::Dims::to_dims(&#d), #k)
        )),
        Op::MeanDim(d, k) => one(quote!(
            #vjp::mean(#g, #sa, &::deriv::Dims::to_dims(&#d), #k)
        )),
    }
}
