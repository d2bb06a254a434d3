//! AST -> SSA: every intermediate value becomes a numbered node `(op, args)`,
//! with the feature (last-dim) size tracked along the data flow so that
//! layers fed the wrong size are reported where they are called.

use std::collections::{HashMap, HashSet};

use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::Ident;

use super::parse::{self, BinOp, Body, Expr, FieldDef, ForwardFn, Kind, Layer};
use crate::errors::{closest, Errors};

/// A value's index in [`Graph::nodes`].
pub type ValueId = usize;

/// What a node computes. Constant operands are the user's tokens (an `f64`
/// expression for scalars, the written argument for dims and shapes).
#[derive(Clone)]
pub enum Op {
    /// A parameter of the forward function.
    Input,
    /// A call of a field (a sub-module).
    Module(Ident),
    Add,
    Sub,
    Mul,
    Div,
    /// `x + c` or `c + x`.
    AddScalar(TokenStream),
    /// `x - c`.
    SubScalar(TokenStream),
    /// `c - x`.
    RSubScalar(TokenStream),
    /// `x * c` or `c * x`.
    MulScalar(TokenStream),
    /// `x / c`.
    DivScalar(TokenStream),
    /// `c / x`.
    RDivScalar(TokenStream),
    Neg,
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Square,
    Pow(TokenStream),
    Softmax(TokenStream),
    LogSoftmax(TokenStream),
    Matmul,
    T,
    Transpose(TokenStream, TokenStream),
    Reshape(TokenStream),
    View(TokenStream),
    Flatten(TokenStream, TokenStream),
    Sum,
    SumDim(TokenStream, TokenStream),
    Mean,
    MeanDim(TokenStream, TokenStream),
}

/// One SSA value.
pub struct Node {
    pub op: Op,
    pub args: Vec<ValueId>,
    /// The preferred name (a `let` name, the field's, or the op's).
    pub pref: String,
    /// The final, unique name (set by [`Graph`] construction).
    pub name: Ident,
    pub size: Size,
}

/// The lowered forward body.
pub struct Graph {
    pub inputs: Vec<ValueId>,
    pub nodes: Vec<Node>,
    pub output: ValueId,
    /// Nodes the output depends on (the others are dropped; an unused input is not live).
    pub live: Vec<bool>,
}

// ---------------------------------------------------------------- sizes

/// The feature (last-dim) size of a value, when the macro can tell.
#[derive(Clone)]
pub enum Size {
    Unknown,
    Known(Feat),
}

/// A known size: a literal integer, or tokens (a const generic) compared as written.
#[derive(Clone)]
pub struct Feat {
    key: String,
    is_int: bool,
    /// As the user wrote it.
    pub shown: String,
    /// Where it comes from, for messages.
    pub origin: String,
}

impl Feat {
    fn of(e: &syn::Expr, origin: String) -> Feat {
        let shown = parse::shown_expr(e);
        if let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) = e
        {
            if let Ok(v) = i.base10_parse::<u128>() {
                return Feat {
                    key: v.to_string(),
                    is_int: true,
                    shown,
                    origin,
                };
            }
        }
        Feat {
            key: format!("tokens: {shown}"),
            is_int: false,
            shown,
            origin,
        }
    }

    fn is_one(&self) -> bool {
        self.is_int && self.key == "1"
    }
}

/// How a layer changes the feature size.
pub enum Effect<'a> {
    /// `Linear(in, out)`: expects `in`, produces `out`.
    Linear {
        input: Feat,
        input_expr: &'a syn::Expr,
        output: Feat,
    },
    /// Elementwise layers: the size goes through.
    Preserve,
    /// Anything else: unknown afterwards.
    Unknown,
}

/// The size effect of a layer constructor, from its name and literal arguments.
pub fn effect<'a>(layer: &'a Layer, origin: &str) -> Effect<'a> {
    let args = layer.args();
    match layer.kind().as_str() {
        "Linear" if args.len() == 2 => Effect::Linear {
            input: Feat::of(args[0], origin.to_string()),
            input_expr: args[0],
            output: Feat::of(args[1], origin.to_string()),
        },
        "ReLU" | "Sigmoid" | "Tanh" | "Dropout" | "Identity" | "Softmax" | "LogSoftmax" => {
            Effect::Preserve
        }
        _ => Effect::Unknown,
    }
}

/// The sequential form's check: each `Linear` takes what the previous layers output.
pub fn check_sequential(layers: &[Layer], errs: &mut Errors) {
    let mut current = Size::Unknown;
    for layer in layers {
        let shown = layer.shown();
        match effect(layer, &format!("`{shown}`")) {
            Effect::Linear {
                input,
                input_expr,
                output,
            } => {
                if let Size::Known(have) = &current {
                    if have.key != input.key {
                        errs.spanned(
                            input_expr,
                            format!(
                                "size mismatch: `{shown}` expects {} input features, but it \
                                 receives {} (the output size of {})",
                                input.shown, have.shown, have.origin
                            ),
                        );
                    }
                }
                current = Size::Known(output);
            }
            Effect::Preserve => {}
            Effect::Unknown => current = Size::Unknown,
        }
    }
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

const FUNCTIONS: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "sqrt",
    "softmax",
    "log_softmax",
    "matmul",
];

const FUNCTIONS_SHOWN: &str = "relu(x), sigmoid(x), tanh(x), exp(x), log(x), sqrt(x), \
     softmax(x, dim), log_softmax(x, dim), matmul(a, b)";

const METHODS: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "exp",
    "log",
    "sqrt",
    "square",
    "pow",
    "t",
    "transpose",
    "reshape",
    "view",
    "flatten",
    "sum",
    "sum_dim",
    "mean",
    "mean_dim",
    "softmax",
    "log_softmax",
    "matmul",
];

const METHODS_SHOWN: &str = ".relu() .sigmoid() .tanh() .exp() .log() .sqrt() .square() \
     .pow(p) .t() .transpose(d0, d1) .reshape([..]) .view([..]) .flatten(start, end) .sum() \
     .sum_dim(dims, keepdim) .mean() .mean_dim(dims, keepdim) .softmax(dim) \
     .log_softmax(dim) .matmul(b)";

const ADD_A_RULE: &str = "to use another operation, give it a gradient rule: implement \
     `deriv::nn::Differentiable` (with `Module` and `Forward`) for a type of yours, make it a \
     field (`op: MyOp`), and call the field (`op(x)`)";

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
        let id = l.push(Op::Input, vec![], input.to_string(), Size::Unknown);
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

    fn push(&mut self, op: Op, args: Vec<ValueId>, pref: String, size: Size) -> ValueId {
        self.nodes.push(Node {
            op,
            args,
            pref,
            name: format_ident!("v"),
            size,
        });
        self.nodes.len() - 1
    }

    fn size(&self, id: ValueId) -> Size {
        self.nodes[id].size.clone()
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
            Kind::Bool => {
                self.error(
                    &e.tokens,
                    "a boolean is only allowed as a constant argument (as `keepdim` in \
                     `.sum_dim(1, true)`)",
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
                Lowered::Value(v) => {
                    let size = self.size(v);
                    Lowered::Value(self.push(Op::Neg, vec![v], "neg".into(), size))
                }
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
            Kind::Num(_) | Kind::Bool => true,
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

    /// A scalar argument (the exponent of `.pow`): an `f64` expression.
    fn scalar(&mut self, e: &Expr, what: &str) -> Option<TokenStream> {
        match self.expr(e) {
            Lowered::Const(c) => Some(c),
            Lowered::Value(_) => {
                self.error(&e.tokens, format!("{what} must be a number, not a tensor"));
                None
            }
            Lowered::Invalid => None,
        }
    }

    fn arity(&mut self, e: &Expr, args: &[Expr], want: usize, shown: &str) -> bool {
        if args.len() == want {
            return true;
        }
        let plural = if want == 1 { "" } else { "s" };
        self.error(
            &e.tokens,
            format!(
                "`{}` takes {want} argument{plural}, as in `{shown}`, but was given {}",
                shown.split('(').next().unwrap_or(shown),
                args.len()
            ),
        );
        // Still look inside, for the errors there.
        for a in args {
            let _ = self.expr(a);
        }
        false
    }

    fn call(&mut self, func: &Ident, args: &[Expr], e: &Expr) -> Lowered {
        let fname = func.to_string();
        if let Some(field) = self.fields.iter().find(|f| f.name == *func) {
            if !self.arity(e, args, 1, &format!("{fname}(x)")) {
                return Lowered::Invalid;
            }
            let Some(x) = self.value(&args[0], &format!("the input of `{fname}`")) else {
                return Lowered::Invalid;
            };
            let shown = field.layer.shown();
            let origin = format!("`{fname}` = `{shown}`");
            let size = match effect(&field.layer, &origin) {
                Effect::Linear { input, output, .. } => {
                    if let Size::Known(have) = self.size(x) {
                        if have.key != input.key {
                            // Not fatal: the code is still generated.
                            self.errs.spanned(
                                &e.tokens,
                                format!(
                                    "size mismatch: `{fname}` is `{shown}`, which expects {} \
                                     input features, but it receives {} here (the output size \
                                     of {})",
                                    input.shown, have.shown, have.origin
                                ),
                            );
                        }
                    }
                    Size::Known(output)
                }
                Effect::Preserve => self.size(x),
                Effect::Unknown => Size::Unknown,
            };
            return Lowered::Value(self.push(Op::Module(func.clone()), vec![x], fname, size));
        }
        let (op, want, shown) = match fname.as_str() {
            "relu" => (Op::Relu, 1, "relu(x)"),
            "sigmoid" => (Op::Sigmoid, 1, "sigmoid(x)"),
            "tanh" => (Op::Tanh, 1, "tanh(x)"),
            "exp" => (Op::Exp, 1, "exp(x)"),
            "log" => (Op::Log, 1, "log(x)"),
            "sqrt" => (Op::Sqrt, 1, "sqrt(x)"),
            "softmax" => (Op::Softmax(TokenStream::new()), 2, "softmax(x, dim)"),
            "log_softmax" => (Op::LogSoftmax(TokenStream::new()), 2, "log_softmax(x, dim)"),
            "matmul" => (Op::Matmul, 2, "matmul(a, b)"),
            _ => {
                self.unknown_function(func, args);
                return Lowered::Invalid;
            }
        };
        if !self.arity(e, args, want, shown) {
            return Lowered::Invalid;
        }
        let what = format!("the first argument of `{fname}`");
        let Some(x) = self.value(&args[0], &what) else {
            return Lowered::Invalid;
        };
        let size = self.size(x);
        let (op, args, size) = match op {
            Op::Softmax(_) | Op::LogSoftmax(_) => {
                let Some(dim) = self.constant(&args[1]) else {
                    return Lowered::Invalid;
                };
                let op = if fname == "softmax" {
                    Op::Softmax(dim)
                } else {
                    Op::LogSoftmax(dim)
                };
                (op, vec![x], size)
            }
            Op::Matmul => {
                let Some(b) = self.value(&args[1], "the second argument of `matmul`") else {
                    return Lowered::Invalid;
                };
                (Op::Matmul, vec![x, b], Size::Unknown)
            }
            op => (op, vec![x], size),
        };
        Lowered::Value(self.push(op, args, fname, size))
    }

    fn unknown_function(&mut self, func: &Ident, args: &[Expr]) {
        for a in args {
            let _ = self.expr(a);
        }
        let name = func.to_string();
        let fields: Vec<String> = self.fields.iter().map(|f| f.name.to_string()).collect();
        let field_list = if fields.is_empty() {
            "this network has no fields".to_string()
        } else {
            format!("the fields are {}", list(&fields))
        };
        if let Some(f) = closest(&name, fields.iter().map(String::as_str)) {
            self.error(
                func,
                format!("no field `{name}`; {field_list} (did you mean `{f}`?)"),
            );
            return;
        }
        let hint = closest(&name, FUNCTIONS.iter().copied())
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        self.error(
            func,
            format!(
                "unknown function `{name}`{hint}: a network body can call its fields \
                 ({field_list}) and the built-in functions {FUNCTIONS_SHOWN}; {ADD_A_RULE}"
            ),
        );
    }

    fn method(&mut self, recv: &Expr, method: &Ident, args: &[Expr], e: &Expr) -> Lowered {
        let name = method.to_string();
        let Some(x) = self.value(recv, &format!("the receiver of `.{name}()`")) else {
            for a in args {
                let _ = self.expr(a);
            }
            return Lowered::Invalid;
        };
        let same = self.size(x);
        let (want, shown) = match name.as_str() {
            "relu" | "sigmoid" | "tanh" | "exp" | "log" | "sqrt" | "square" | "t" | "sum"
            | "mean" => (0, format!(".{name}()")),
            "pow" => (1, ".pow(p)".into()),
            "softmax" | "log_softmax" => (1, format!(".{name}(dim)")),
            "reshape" | "view" => (1, format!(".{name}([..])")),
            "matmul" => (1, ".matmul(b)".into()),
            "transpose" => (2, ".transpose(d0, d1)".into()),
            "flatten" => (2, ".flatten(start, end)".into()),
            "sum_dim" | "mean_dim" => (2, format!(".{name}(dims, keepdim)")),
            _ => {
                for a in args {
                    let _ = self.expr(a);
                }
                let hint = closest(&name, METHODS.iter().copied())
                    .map(|c| format!(" (did you mean `.{c}()`?)"))
                    .unwrap_or_default();
                self.error(
                    method,
                    format!(
                        "unknown method `.{name}()`{hint}: the tensor methods a network body \
                         supports are {METHODS_SHOWN}; {ADD_A_RULE}"
                    ),
                );
                return Lowered::Invalid;
            }
        };
        if args.len() != want {
            let plural = if want == 1 { "" } else { "s" };
            self.error(
                &e.tokens,
                format!(
                    "`.{name}` takes {want} argument{plural}, as in `{shown}`, but was given {}",
                    args.len()
                ),
            );
            return Lowered::Invalid;
        }
        let unknown = Size::Unknown;
        let (op, args, size) = match name.as_str() {
            "relu" => (Op::Relu, vec![x], same),
            "sigmoid" => (Op::Sigmoid, vec![x], same),
            "tanh" => (Op::Tanh, vec![x], same),
            "exp" => (Op::Exp, vec![x], same),
            "log" => (Op::Log, vec![x], same),
            "sqrt" => (Op::Sqrt, vec![x], same),
            "square" => (Op::Square, vec![x], same),
            "t" => (Op::T, vec![x], unknown),
            "sum" => (Op::Sum, vec![x], unknown),
            "mean" => (Op::Mean, vec![x], unknown),
            "pow" => {
                let Some(p) = self.scalar(&args[0], "the exponent of `.pow`") else {
                    return Lowered::Invalid;
                };
                (Op::Pow(p), vec![x], same)
            }
            "matmul" => {
                let Some(b) = self.value(&args[0], "the argument of `.matmul`") else {
                    return Lowered::Invalid;
                };
                (Op::Matmul, vec![x, b], unknown)
            }
            _ => {
                let mut consts = Vec::new();
                for a in args {
                    consts.push(self.constant(a));
                }
                let consts: Option<Vec<TokenStream>> = consts.into_iter().collect();
                let Some(mut c) = consts else {
                    return Lowered::Invalid;
                };
                let second = if c.len() > 1 { c.pop() } else { None };
                let first = c.pop().unwrap_or_default();
                let second = second.unwrap_or_default();
                match name.as_str() {
                    "softmax" => (Op::Softmax(first), vec![x], same),
                    "log_softmax" => (Op::LogSoftmax(first), vec![x], same),
                    "reshape" => (Op::Reshape(first), vec![x], unknown),
                    "view" => (Op::View(first), vec![x], unknown),
                    "transpose" => (Op::Transpose(first, second), vec![x], unknown),
                    "flatten" => (Op::Flatten(first, second), vec![x], unknown),
                    "sum_dim" => (Op::SumDim(first, second), vec![x], unknown),
                    _ => (Op::MeanDim(first, second), vec![x], unknown),
                }
            }
        };
        Lowered::Value(self.push(op, args, name, size))
    }

    fn binary(&mut self, op: BinOp, lhs: &Expr, rhs: &Expr, e: &Expr) -> Lowered {
        let a = self.expr(lhs);
        let b = self.expr(rhs);
        let base = match op {
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
        }
        .to_string();
        match (a, b) {
            (Lowered::Value(a), Lowered::Value(b)) => {
                let size = self.broadcast(a, b, e);
                let op = match op {
                    BinOp::Add => Op::Add,
                    BinOp::Sub => Op::Sub,
                    BinOp::Mul => Op::Mul,
                    BinOp::Div => Op::Div,
                };
                Lowered::Value(self.push(op, vec![a, b], base, size))
            }
            (Lowered::Value(a), Lowered::Const(c)) => {
                let op = match op {
                    BinOp::Add => Op::AddScalar(c),
                    BinOp::Sub => Op::SubScalar(c),
                    BinOp::Mul => Op::MulScalar(c),
                    BinOp::Div => Op::DivScalar(c),
                };
                let size = self.size(a);
                Lowered::Value(self.push(op, vec![a], base, size))
            }
            (Lowered::Const(c), Lowered::Value(b)) => {
                let op = match op {
                    BinOp::Add => Op::AddScalar(c),
                    BinOp::Sub => Op::RSubScalar(c),
                    BinOp::Mul => Op::MulScalar(c),
                    BinOp::Div => Op::RDivScalar(c),
                };
                let size = self.size(b);
                Lowered::Value(self.push(op, vec![b], base, size))
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

    /// The feature size of a broadcasting binary op; reports last dims that
    /// cannot broadcast (two different literal sizes, neither 1).
    fn broadcast(&mut self, a: ValueId, b: ValueId, e: &Expr) -> Size {
        match (self.size(a), self.size(b)) {
            (Size::Known(x), Size::Known(y)) => {
                if x.key == y.key || y.is_one() {
                    Size::Known(x)
                } else if x.is_one() {
                    Size::Known(y)
                } else {
                    if x.is_int && y.is_int {
                        self.errs.spanned(
                            &e.tokens,
                            format!(
                                "size mismatch: the operands have {} and {} features (the \
                                 output sizes of {} and {}), which do not broadcast",
                                x.shown, y.shown, x.origin, y.origin
                            ),
                        );
                    }
                    Size::Unknown
                }
            }
            (Size::Known(x), Size::Unknown) | (Size::Unknown, Size::Known(x)) if !x.is_one() => {
                Size::Known(x)
            }
            _ => Size::Unknown,
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
