//! AST -> SSA: every intermediate value becomes a numbered node `(op, args)`:
//! an input, a field call, or an op type (`deriv::ops::Op`) found by name.
//! Sizes are checked later, at compile time, by the layers' and ops' own
//! declared rules (`codegen::size_checks`).

use std::collections::{HashMap, HashSet};

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::Ident;

use super::parse::{self, BinOp, Body, Expr, FieldDef, ForwardFn, Kind};
use crate::errors::{closest, Errors};

/// A value's index in [`Graph::nodes`].
pub type ValueId = usize;

/// What a node computes.
#[derive(Clone)]
pub enum Op {
    /// A parameter of the forward function.
    Input,
    /// A call of a field (a sub-module).
    Module(Ident),
    /// An op (`deriv::ops::Op`) applied to the node's arguments: its type and
    /// the expression that builds it (from the user's constant arguments).
    Call {
        /// The op's type: `::deriv::ops::Relu`, or a user's `Swish`.
        ty: TokenStream,
        /// `<Ty as Default>::default()` or `Ty::new(consts..)`, spanned at the call.
        ctor: TokenStream,
        /// How the user wrote the call, for messages (`relu`, `.softmax(1)`).
        shown: String,
    },
}

/// One SSA value.
pub struct Node {
    pub op: Op,
    pub args: Vec<ValueId>,
    /// The preferred name (a `let` name, the field's, or the op's).
    pub pref: String,
    /// The final, unique name (set by [`Graph`] construction).
    pub name: Ident,
    /// Where the user wrote it (for spans of generated checks).
    pub span: proc_macro2::Span,
}

/// The lowered forward body.
pub struct Graph {
    pub inputs: Vec<ValueId>,
    pub nodes: Vec<Node>,
    pub output: ValueId,
    /// Nodes the output depends on (the others are dropped; an unused input is not live).
    pub live: Vec<bool>,
}

// ---------------------------------------------------------------- lowering

/// A lowered expression: a tensor value, a number (an `f64` expression), or
/// nothing (an error was reported).
#[derive(Clone)]
enum Lowered {
    Value(ValueId),
    Const(TokenStream),
    Invalid,
}

/// The ops `deriv::ops` defines, by the name a body calls them with (as a
/// function `relu(x)` or a method `x.relu()`): such a call becomes the op
/// type `::deriv::ops::Relu` (the name in CamelCase). Any other name is a
/// user's op, resolved where the network is defined (`swish(x)` is `Swish`).
/// The macro knows these names only, never their rules.
const BUILTIN: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "sqrt",
    "square",
    "neg",
    "abs",
    "clamp",
    "maximum",
    "minimum",
    "pow",
    "gelu",
    "silu",
    "leaky_relu",
    "elu",
    "softplus",
    "mish",
    "hardtanh",
    "logsigmoid",
    "softmax",
    "log_softmax",
    "logsumexp",
    "cumsum",
    "matmul",
    "t",
    "transpose",
    "permute",
    "reshape",
    "view",
    "flatten",
    "sum",
    "sum_dim",
    "mean",
    "mean_dim",
];

/// `leaky_relu` -> `LeakyRelu`.
fn camel(name: &str) -> String {
    name.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// The op type of a call named `name` (at `span`), and the expression
/// building it from the constant arguments `consts`.
fn op_of(name: &Ident, consts: &[TokenStream]) -> (TokenStream, TokenStream) {
    let span = name.span();
    let raw = name.to_string();
    let ty_ident = Ident::new(&camel(raw.trim_start_matches("r#")), span);
    let ty = if BUILTIN.contains(&raw.as_str()) {
        quote_spanned!(span=> ::deriv::ops::#ty_ident)
    } else {
        quote_spanned!(span=> #ty_ident)
    };
    let ctor = if consts.is_empty() {
        quote_spanned!(span=> <#ty as ::core::default::Default>::default())
    } else {
        quote_spanned!(span=> #ty::new(#(#consts),*))
    };
    (ty, ctor)
}

/// Names a generated body uses for itself.
const RESERVED: &[&str] = &[
    "self",
    "Self",
    "crate",
    "super",
    "saved",
    "grad_out",
    "input_grad",
    "device",
    // Imported by name inside `backward`.
    "acc",
    "vjp",
    "Tensor",
    "Option",
    "Some",
    "None",
    "Differentiable",
];

struct Lowerer<'a> {
    fields: &'a [FieldDef],
    const_params: Vec<Ident>,
    vars: HashMap<String, Lowered>,
    /// Binding names in order, for "unknown variable" messages.
    bound: Vec<String>,
    inputs: Vec<String>,
    nodes: Vec<Node>,
    errs: &'a mut Errors,
    /// A mistake that leaves no graph (size mismatches don't count).
    fatal: bool,
}

/// Lowers the class form's forward function; `None` when it has errors that
/// leave no meaningful graph (they are in `errs`).
pub fn lower(
    fields: &[FieldDef],
    generics: &syn::Generics,
    forward: &ForwardFn,
    body: &Body,
    errs: &mut Errors,
) -> Option<Graph> {
    let mut l = Lowerer {
        fields,
        const_params: generics.const_params().map(|c| c.ident.clone()).collect(),
        vars: HashMap::new(),
        bound: Vec::new(),
        inputs: forward.inputs.iter().map(|i| i.to_string()).collect(),
        nodes: Vec::new(),
        errs,
        fatal: false,
    };
    let mut inputs = Vec::new();
    for input in &forward.inputs {
        if l.vars.contains_key(&input.to_string()) {
            l.error(input, format!("the input `{input}` is declared twice"));
        }
        let id = l.push(Op::Input, vec![], input.to_string(), input.span());
        inputs.push(id);
        l.vars.insert(input.to_string(), Lowered::Value(id));
    }
    if forward.inputs.is_empty() {
        l.error(
            &forward.name,
            "`forward` needs at least one input, as in `fn forward(x) { ... }`",
        );
    }
    for binding in &body.lets {
        let before = l.nodes.len();
        let value = l.expr(&binding.expr);
        if let Lowered::Value(id) = value {
            if id >= before {
                l.nodes[id].pref = binding.name.to_string();
            }
        }
        l.vars.insert(binding.name.to_string(), value);
        l.bound.push(binding.name.to_string());
    }
    let output = match &body.output {
        Some(e) => {
            let before = l.nodes.len();
            match l.expr(e) {
                Lowered::Value(id) => {
                    if id >= before {
                        l.nodes[id].pref = "out".to_string();
                    }
                    Some(id)
                }
                Lowered::Const(_) => {
                    l.error(
                        &e.tokens,
                        "the output of a network must be a tensor, not a number",
                    );
                    None
                }
                Lowered::Invalid => None,
            }
        }
        None => {
            l.fatal = true;
            None
        }
    };
    if l.fatal {
        return None;
    }
    let output = output?;
    Some(finish(inputs, l.nodes, output))
}

/// Liveness and unique, readable names.
fn finish(inputs: Vec<ValueId>, mut nodes: Vec<Node>, output: ValueId) -> Graph {
    let mut live = vec![false; nodes.len()];
    live[output] = true;
    for id in (0..nodes.len()).rev() {
        if live[id] {
            for &a in &nodes[id].args {
                live[a] = true;
            }
        }
    }
    let mut used: HashSet<String> = RESERVED.iter().map(|s| s.to_string()).collect();
    for (id, node) in nodes.iter_mut().enumerate() {
        if !live[id] && !matches!(node.op, Op::Input) {
            continue;
        }
        let mut base = node.pref.clone();
        if let Some(raw) = base.strip_prefix("r#") {
            // `r#type` -> `type_`: adjoints and fields derive names from it.
            base = format!("{raw}_");
        }
        if base.starts_with("d_") {
            base = format!("v_{base}");
        }
        let sep = if base.ends_with(|c: char| c.is_ascii_digit()) {
            "_"
        } else {
            ""
        };
        let mut k = 1;
        let name = loop {
            let candidate = if k == 1 {
                base.clone()
            } else {
                format!("{base}{sep}{k}")
            };
            let derived = [
                candidate.clone(),
                format!("{candidate}_saved"),
                format!("{candidate}_shape"),
                format!("{candidate}_ws"),
                format!("d_{candidate}"),
            ];
            if derived.iter().all(|d| !used.contains(d)) {
                used.extend(derived);
                break candidate;
            }
            k += 1;
        };
        node.name = format_ident!("{}", name);
    }
    Graph {
        inputs,
        nodes,
        output,
        live,
    }
}

impl Lowerer<'_> {
    fn error(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.errs.spanned(tokens, message);
        self.fatal = true;
    }

    fn push(
        &mut self,
        op: Op,
        args: Vec<ValueId>,
        pref: String,
        span: proc_macro2::Span,
    ) -> ValueId {
        self.nodes.push(Node {
            op,
            args,
            pref,
            name: format_ident!("v"),
            span,
        });
        self.nodes.len() - 1
    }

    /// A node applying the op named `name` to `args`, built from `consts`.
    fn call_op(
        &mut self,
        name: &Ident,
        args: Vec<ValueId>,
        consts: &[TokenStream],
        shown: String,
        span: proc_macro2::Span,
    ) -> ValueId {
        let (ty, ctor) = op_of(name, consts);
        let pref = name.to_string().trim_start_matches("r#").to_string();
        self.push(Op::Call { ty, ctor, shown }, args, pref, span)
    }

    /// An operator (`+`, `* c`, `-x`): the op type `::deriv::ops::<ty>`.
    fn operator(
        &mut self,
        ty: &str,
        args: Vec<ValueId>,
        consts: &[TokenStream],
        pref: &str,
        e: &Expr,
    ) -> ValueId {
        let span = e
            .tokens
            .clone()
            .into_iter()
            .next()
            .map_or_else(proc_macro2::Span::call_site, |t| t.span());
        let id = Ident::new(ty, span);
        let path = quote_spanned!(span=> ::deriv::ops::#id);
        let ctor = if consts.is_empty() {
            quote_spanned!(span=> <#path as ::core::default::Default>::default())
        } else {
            quote_spanned!(span=> #path::new(#(#consts),*))
        };
        let shown = parse::tidy_tokens(&e.tokens);
        self.push(
            Op::Call {
                ty: path,
                ctor,
                shown,
            },
            args,
            pref.to_string(),
            span,
        )
    }

    fn expr(&mut self, e: &Expr) -> Lowered {
        match &e.kind {
            Kind::Invalid => {
                self.fatal = true;
                Lowered::Invalid
            }
            Kind::Var(id) => self.var(id),
            Kind::Num(lit) => number(lit, self.errs).map_or_else(
                || {
                    self.fatal = true;
                    Lowered::Invalid
                },
                Lowered::Const,
            ),
            Kind::Bool | Kind::Str => {
                self.error(
                    &e.tokens,
                    "booleans and strings are only allowed as constant arguments (as \
                     `keepdim` in `.sum_dim(1, true)`, or `gelu(x, \"tanh\")`)",
                );
                Lowered::Invalid
            }
            Kind::Array(_) => {
                self.error(
                    &e.tokens,
                    "an array is only allowed as a constant argument (a shape, as in \
                     `.reshape([-1, 4])`, or dims)",
                );
                Lowered::Invalid
            }
            Kind::Call { func, args } => self.call(func, args, e),
            Kind::Method { recv, method, args } => self.method(recv, method, args, e),
            Kind::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs, e),
            Kind::Neg(a) => match self.expr(a) {
                Lowered::Value(v) => Lowered::Value(self.operator("Neg", vec![v], &[], "neg", e)),
                Lowered::Const(c) => Lowered::Const(quote!((-#c))),
                Lowered::Invalid => Lowered::Invalid,
            },
        }
    }

    fn var(&mut self, id: &Ident) -> Lowered {
        let name = id.to_string();
        if let Some(v) = self.vars.get(&name) {
            return v.clone();
        }
        if self.const_params.iter().any(|c| c == id) {
            return Lowered::Const(quote_spanned!(id.span()=> (#id as f64)));
        }
        if self.fields.iter().any(|f| f.name == *id) {
            self.error(
                id,
                format!("`{name}` is a field (a layer): call it on a value, as in `{name}(x)`"),
            );
            return Lowered::Invalid;
        }
        let mut known = format!("the inputs are {}", list(&self.inputs));
        if !self.bound.is_empty() {
            known += &format!(", and the `let` bindings so far are {}", list(&self.bound));
        }
        let hint = closest(
            &name,
            self.inputs.iter().chain(&self.bound).map(String::as_str),
        )
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default();
        self.error(
            id,
            format!("cannot find value `{name}` in this network body: {known}{hint}"),
        );
        Lowered::Invalid
    }

    /// An operand that has to be a tensor.
    fn value(&mut self, e: &Expr, what: &str) -> Option<ValueId> {
        match self.expr(e) {
            Lowered::Value(v) => Some(v),
            Lowered::Const(_) => {
                self.error(&e.tokens, format!("{what} must be a tensor, not a number"));
                None
            }
            Lowered::Invalid => None,
        }
    }

    /// An argument that has to be a constant (dims, shapes, keepdim): the user's tokens.
    fn constant(&mut self, e: &Expr) -> Option<TokenStream> {
        if self.is_constant(e) {
            Some(e.tokens.clone())
        } else {
            None
        }
    }

    fn is_constant(&mut self, e: &Expr) -> bool {
        match &e.kind {
            Kind::Num(_) | Kind::Bool | Kind::Str => true,
            Kind::Neg(a) => self.is_constant(a),
            Kind::Array(items) => items.iter().all(|i| self.is_constant(i)),
            Kind::Binary { lhs, rhs, .. } => self.is_constant(lhs) && self.is_constant(rhs),
            Kind::Var(id) => match self.vars.get(&id.to_string()) {
                Some(Lowered::Value(_)) => {
                    self.error(
                        id,
                        format!(
                            "this argument must be a constant (a number, `true`/`false` or an \
                             array of numbers), but `{id}` is a tensor"
                        ),
                    );
                    false
                }
                Some(Lowered::Const(_)) => {
                    self.error(
                        id,
                        "write the number itself here: constant arguments (dims, shapes) \
                         cannot come from `let` bindings",
                    );
                    false
                }
                Some(Lowered::Invalid) => false,
                // A const generic parameter or a constant in scope.
                None => true,
            },
            Kind::Invalid => {
                self.fatal = true;
                false
            }
            _ => {
                self.error(
                    &e.tokens,
                    "this argument must be a constant: a number, `true`/`false`, or an array \
                     of numbers",
                );
                false
            }
        }
    }

    /// Whether an argument is a constant (a number, bool, string, array of
    /// them, or a name that is not a value of the body): checked without
    /// reporting, to split a call's arguments into tensors and constants.
    fn looks_constant(&self, e: &Expr) -> bool {
        match &e.kind {
            Kind::Num(_) | Kind::Bool | Kind::Str | Kind::Array(_) => true,
            Kind::Neg(a) => self.looks_constant(a),
            Kind::Binary { lhs, rhs, .. } => self.looks_constant(lhs) && self.looks_constant(rhs),
            Kind::Var(id) => {
                let name = id.to_string();
                !self.vars.contains_key(&name)
                    && !self.fields.iter().any(|f| f.name == *id)
                    && !self.inputs.contains(&name)
            }
            _ => false,
        }
    }

    /// A call's arguments: the tensors (lowered), then the constants (the
    /// user's tokens, pasted as written, so an integer dim keeps its type).
    fn split_args(
        &mut self,
        what: &str,
        args: &[Expr],
    ) -> Option<(Vec<ValueId>, Vec<TokenStream>)> {
        let first_const = args
            .iter()
            .position(|a| self.looks_constant(a))
            .unwrap_or(args.len());
        let mut values = Vec::new();
        let mut ok = true;
        for a in &args[..first_const] {
            match self.value(a, &format!("an argument of `{what}`")) {
                Some(v) => values.push(v),
                None => ok = false,
            }
        }
        let mut consts = Vec::new();
        for a in &args[first_const..] {
            if !self.looks_constant(a) {
                let _ = self.expr(a);
                self.error(
                    &a.tokens,
                    format!(
                        "`{what}` takes its tensor arguments first and its constant arguments \
                         (numbers, dims, `true`/`false`, strings) after them"
                    ),
                );
                ok = false;
            } else if let Some(c) = self.constant(a) {
                consts.push(c);
            } else {
                ok = false;
            }
        }
        ok.then_some((values, consts))
    }

    fn call(&mut self, func: &Ident, args: &[Expr], e: &Expr) -> Lowered {
        let fname = func.to_string();
        if self.fields.iter().any(|f| f.name == *func) {
            if args.len() != 1 {
                self.error(
                    &e.tokens,
                    format!(
                        "`{fname}` is a field (a layer): it takes 1 argument, as in \
                         `{fname}(x)`, but was given {}",
                        args.len()
                    ),
                );
                for a in args {
                    let _ = self.expr(a);
                }
                return Lowered::Invalid;
            }
            let Some(x) = self.value(&args[0], &format!("the input of `{fname}`")) else {
                return Lowered::Invalid;
            };
            return Lowered::Value(
                self.push(
                    Op::Module(func.clone()),
                    vec![x],
                    fname,
                    e.tokens
                        .clone()
                        .into_iter()
                        .next()
                        .map_or(func.span(), |t| t.span()),
                ),
            );
        }
        if !BUILTIN.contains(&fname.as_str()) {
            // A misspelt field reads better as that than as an unknown op type.
            let fields: Vec<String> = self.fields.iter().map(|f| f.name.to_string()).collect();
            if let Some(f) = closest(&fname, fields.iter().map(String::as_str)) {
                for a in args {
                    let _ = self.expr(a);
                }
                self.error(
                    func,
                    format!(
                        "no field `{fname}`; the fields are {} (did you mean `{f}`?)",
                        list(&fields)
                    ),
                );
                return Lowered::Invalid;
            }
        }
        let Some((values, consts)) = self.split_args(&fname, args) else {
            return Lowered::Invalid;
        };
        if values.is_empty() {
            self.error(
                &e.tokens,
                format!("`{fname}` needs a tensor argument, as in `{fname}(x)`"),
            );
            return Lowered::Invalid;
        }
        Lowered::Value(self.call_op(func, values, &consts, format!("{fname}(..)"), func.span()))
    }

    fn method(&mut self, recv: &Expr, method: &Ident, args: &[Expr], _e: &Expr) -> Lowered {
        let name = method.to_string();
        let Some(x) = self.value(recv, &format!("the receiver of `.{name}()`")) else {
            for a in args {
                let _ = self.expr(a);
            }
            return Lowered::Invalid;
        };
        let Some((mut values, consts)) = self.split_args(&format!(".{name}()"), args) else {
            return Lowered::Invalid;
        };
        values.insert(0, x);
        Lowered::Value(self.call_op(
            method,
            values,
            &consts,
            format!(".{name}(..)"),
            method.span(),
        ))
    }

    fn binary(&mut self, op: BinOp, lhs: &Expr, rhs: &Expr, e: &Expr) -> Lowered {
        let a = self.expr(lhs);
        let b = self.expr(rhs);
        let base = match op {
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
        };
        match (a, b) {
            (Lowered::Value(a), Lowered::Value(b)) => {
                let ty = match op {
                    BinOp::Add => "Add",
                    BinOp::Sub => "Sub",
                    BinOp::Mul => "Mul",
                    BinOp::Div => "Div",
                };
                Lowered::Value(self.operator(ty, vec![a, b], &[], base, e))
            }
            (Lowered::Value(a), Lowered::Const(c)) => {
                let ty = match op {
                    BinOp::Add => "AddScalar",
                    BinOp::Sub => "SubScalar",
                    BinOp::Mul => "MulScalar",
                    BinOp::Div => "DivScalar",
                };
                Lowered::Value(self.operator(ty, vec![a], &[c], base, e))
            }
            (Lowered::Const(c), Lowered::Value(b)) => {
                let ty = match op {
                    BinOp::Add => "AddScalar",
                    BinOp::Sub => "RSubScalar",
                    BinOp::Mul => "MulScalar",
                    BinOp::Div => "RDivScalar",
                };
                Lowered::Value(self.operator(ty, vec![b], &[c], base, e))
            }
            (Lowered::Const(a), Lowered::Const(b)) => Lowered::Const(match op {
                BinOp::Add => quote!((#a + #b)),
                BinOp::Sub => quote!((#a - #b)),
                BinOp::Mul => quote!((#a * #b)),
                BinOp::Div => quote!((#a / #b)),
            }),
            _ => Lowered::Invalid,
        }
    }
}

/// A numeric literal as an `f64` expression (`2` -> `2.0`).
fn number(lit: &syn::Lit, errs: &mut Errors) -> Option<TokenStream> {
    let value = match lit {
        syn::Lit::Int(i) => i.base10_parse::<f64>(),
        syn::Lit::Float(f) => f.base10_parse::<f64>(),
        _ => return None,
    };
    match value {
        Ok(v) if v.is_finite() => {
            let mut l = Literal::f64_unsuffixed(v);
            l.set_span(lit.span());
            Some(l.into_token_stream())
        }
        _ => {
            errs.spanned(lit, "this number does not fit in an f64");
            None
        }
    }
}

/// `a, b, c` with backticks.
pub fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "(none)".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
