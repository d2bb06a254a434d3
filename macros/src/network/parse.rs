//! `network!` input -> AST: the two definition forms, and the forward body as
//! a small expression tree (everything else is rejected here, at its span).

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, parenthesized, Attribute, Generics, Ident, Token, Visibility};

use crate::errors::Errors;

/// Every definition in one `network! { ... }`.
pub struct Input {
    pub defs: Vec<NetworkDef>,
}

/// `#[attrs] vis struct Name<const ...> = ... ;` or `... struct Name { ... } fn forward(..) { .. }`.
pub struct NetworkDef {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub generics: Generics,
    pub body: DefBody,
}

/// The two forms.
pub enum DefBody {
    /// `= Layer -> Layer -> ... ;`
    Sequential { layers: Vec<Layer> },
    /// `{ field: Layer, ... }` and the forward function (absent: an error
    /// reported by the caller).
    Class {
        fields: Vec<FieldDef>,
        forward: Option<ForwardFn>,
    },
}

/// A layer constructor: `Linear(784, 256)`, `ReLU`, `nn::Dropout(0.5)`, `Block<8>`.
pub struct Layer {
    pub path: syn::Path,
    pub args: Option<Punctuated<syn::Expr, Token![,]>>,
}

/// `#[doc] name: Layer` in the class form.
pub struct FieldDef {
    pub attrs: Vec<Attribute>,
    pub name: Ident,
    pub layer: Layer,
}

/// `fn forward(x, y) { body }`.
pub struct ForwardFn {
    pub name: Ident,
    pub inputs: Vec<Ident>,
    pub block: syn::Block,
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut defs = Vec::new();
        while !input.is_empty() {
            defs.push(input.parse()?);
        }
        Ok(Input { defs })
    }
}

impl Parse for NetworkDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let _: Token![struct] = input.parse()?;
        let name: Ident = input.parse()?;
        let generics: Generics = input.parse()?;
        let body = if input.peek(Token![=]) {
            let _: Token![=] = input.parse()?;
            let mut layers = vec![input.parse::<Layer>()?];
            while input.peek(Token![->]) {
                let _: Token![->] = input.parse()?;
                layers.push(input.parse()?);
            }
            if !input.peek(Token![;]) {
                return Err(
                    input.error("expected `->` and the next layer, or `;` to end the network")
                );
            }
            let _: Token![;] = input.parse()?;
            DefBody::Sequential { layers }
        } else if input.peek(syn::token::Brace) {
            let content;
            braced!(content in input);
            let fields = Punctuated::<FieldDef, Token![,]>::parse_terminated(&content)?;
            let forward = if input.peek(Token![fn]) {
                Some(input.parse::<ForwardFn>()?)
            } else {
                None
            };
            if input.peek(Token![;]) {
                let _: Token![;] = input.parse()?;
            }
            DefBody::Class {
                fields: fields.into_iter().collect(),
                forward,
            }
        } else {
            return Err(input.error(
                "expected `= Layer -> Layer ...;` (the sequential form, e.g. \
                 `struct Mlp = Linear(2, 16) -> ReLU -> Linear(16, 1);`) or `{ fields }` \
                 followed by `fn forward(x) { ... }` (the class form)",
            ));
        };
        Ok(NetworkDef {
            attrs,
            vis,
            name,
            generics,
            body,
        })
    }
}

impl Parse for Layer {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let path: syn::Path = input.parse()?;
        let args = if input.peek(syn::token::Paren) {
            let content;
            parenthesized!(content in input);
            Some(Punctuated::parse_terminated(&content)?)
        } else {
            None
        };
        Ok(Layer { path, args })
    }
}

impl Layer {
    /// The constructor's arguments (none for a bare name).
    pub fn args(&self) -> Vec<&syn::Expr> {
        self.args.iter().flat_map(|a| a.iter()).collect()
    }

    /// How the user wrote it, for messages: `Linear(784, 256)`.
    pub fn shown(&self) -> String {
        let path = tidy(&self.path.to_token_stream().to_string());
        match &self.args {
            None => path,
            Some(args) => {
                let args: Vec<String> = args.iter().map(shown_expr).collect();
                format!("{path}({})", args.join(", "))
            }
        }
    }
}

/// Tokens as the user would write them.
pub fn tidy_tokens(t: &TokenStream) -> String {
    tidy(&t.to_string())
}

/// An expression as the user would write it (token printing adds spaces).
pub fn shown_expr(e: &syn::Expr) -> String {
    tidy(&e.to_token_stream().to_string())
}

fn tidy(s: &str) -> String {
    s.replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" < ", "<")
        .replace(" >", ">")
        .replace("< ", "<")
        .replace(" ,", ",")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace("[ ", "[")
        .replace(" ]", "]")
        .replace("- ", "-")
}

impl Parse for FieldDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        // Every field is public; accept (and ignore) a written `pub`.
        let _: Visibility = input.parse()?;
        let name: Ident = input.parse()?;
        let _: Token![:] = input.parse()?;
        let layer: Layer = input.parse()?;
        Ok(FieldDef { attrs, name, layer })
    }
}

impl Parse for ForwardFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let _: Token![fn] = input.parse()?;
        let name: Ident = input.parse()?;
        let content;
        parenthesized!(content in input);
        let inputs = Punctuated::<Ident, Token![,]>::parse_terminated(&content)?;
        let block: syn::Block = input.parse()?;
        Ok(ForwardFn {
            name,
            inputs: inputs.into_iter().collect(),
            block,
        })
    }
}

// ---------------------------------------------------------------- the body

/// The forward body: `let` bindings, then the output.
pub struct Body {
    pub lets: Vec<Let>,
    pub output: Option<Expr>,
}

/// `let name = expr;`
pub struct Let {
    pub name: Ident,
    pub expr: Expr,
}

/// An expression, with the user's tokens for error spans and constant arguments.
pub struct Expr {
    pub kind: Kind,
    pub tokens: TokenStream,
}

/// The expressions a body may contain.
pub enum Kind {
    /// A variable, constant or (wrongly) a field name.
    Var(Ident),
    /// An integer or float literal.
    Num(syn::Lit),
    /// `true` / `false` (only as a constant argument).
    Bool,
    /// A string (only as a constant argument: `gelu(x, "tanh")`).
    Str,
    /// `[a, b]` (only as a constant argument).
    Array(Vec<Expr>),
    /// `f(args)`: a field or a built-in function.
    Call { func: Ident, args: Vec<Expr> },
    /// `recv.method(args)`.
    Method {
        recv: Box<Expr>,
        method: Ident,
        args: Vec<Expr>,
    },
    /// `a op b`.
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `-a`.
    Neg(Box<Expr>),
    /// Already reported.
    Invalid,
}

/// The four arithmetic operators.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// What every "not supported" message ends with.
pub const SUPPORTED: &str = "a network body is straight-line code: `let` bindings, calls of \
     fields (`fc1(x)`) and built-in functions (`relu(x)`), tensor methods (`.sum()`), + - * / \
     and unary minus, ending with the output expression";

/// Converts the forward block, reporting each unsupported piece at its span.
pub fn body(block: &syn::Block, errs: &mut Errors) -> Body {
    let mut lets = Vec::new();
    let mut output = None;
    let n = block.stmts.len();
    for (i, stmt) in block.stmts.iter().enumerate() {
        let last = i + 1 == n;
        match stmt {
            syn::Stmt::Local(local) => {
                if let Some(l) = let_binding(local, errs) {
                    lets.push(l);
                }
                if last {
                    errs.at(
                        block.brace_token.span.close(),
                        "the body of `forward` must end with an expression, the network's \
                         output (e.g. `fc2(h)`, without a trailing `;`)",
                    );
                }
            }
            syn::Stmt::Expr(e, None) => {
                let before = errs.len();
                let converted = expr(e, errs);
                if last {
                    output = Some(converted);
                } else if errs.len() == before {
                    errs.spanned(
                        e,
                        format!("expected `;` after this expression; {SUPPORTED}"),
                    );
                }
            }
            syn::Stmt::Expr(e, Some(semi)) => {
                let before = errs.len();
                let _ = expr(e, errs);
                if errs.len() == before {
                    if last {
                        errs.spanned(
                            semi,
                            "remove this `;`: the last expression of `forward` is the \
                             network's output",
                        );
                    } else {
                        errs.spanned(
                            e,
                            "this expression's value is unused: bind it with \
                             `let name = ...;`, or make it the last expression (the output)",
                        );
                    }
                }
            }
            syn::Stmt::Macro(m) => {
                errs.spanned(
                    m,
                    format!("macro calls are not supported in a `network!` body; {SUPPORTED}"),
                );
            }
            syn::Stmt::Item(item) => {
                errs.spanned(item, format!("items (fn, use, struct, ...) are not supported in a `network!` body; {SUPPORTED}"));
            }
        }
    }
    if n == 0 {
        errs.at(
            block.brace_token.span.join(),
            "the body of `forward` is empty: it must end with an expression, the network's output",
        );
    }
    Body { lets, output }
}

fn let_binding(local: &syn::Local, errs: &mut Errors) -> Option<Let> {
    let name = match &local.pat {
        syn::Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
            if let Some(m) = &p.mutability {
                errs.spanned(
                    m,
                    "bindings are never mutated in a network body: drop `mut` and bind a new \
                     name (or shadow this one) instead",
                );
            }
            p.ident.clone()
        }
        syn::Pat::Type(t) => {
            errs.spanned(
                &t.ty,
                "type annotations are not needed in a network body: every value is a Tensor",
            );
            return None;
        }
        other => {
            errs.spanned(
                other,
                "only `let name = ...;` is supported (no patterns or tuples)",
            );
            return None;
        }
    };
    let Some(init) = &local.init else {
        errs.spanned(local, "`let` needs a value: `let name = expression;`");
        return None;
    };
    if let Some((else_token, _)) = &init.diverge {
        errs.spanned(
            else_token,
            format!("`let ... else` is not supported; {SUPPORTED}"),
        );
    }
    Some(Let {
        name,
        expr: expr(&init.expr, errs),
    })
}

/// "`for` loops are not supported ..."; `what` includes the verb, `note`
/// (if any) explains.
fn unsupported_note(errs: &mut Errors, tokens: impl ToTokens, what: &str, note: &str) -> Kind {
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(" ({note})")
    };
    errs.spanned(
        tokens,
        format!("{what} not supported in a `network!` body{note}; {SUPPORTED}"),
    );
    Kind::Invalid
}

fn unsupported(errs: &mut Errors, tokens: impl ToTokens, what: &str) -> Kind {
    unsupported_note(errs, tokens, what, "")
}

fn is_self(e: &syn::Expr) -> bool {
    matches!(e, syn::Expr::Path(p) if p.qself.is_none() && p.path.is_ident("self"))
}

/// One expression.
pub fn expr(e: &syn::Expr, errs: &mut Errors) -> Expr {
    use syn::Expr as E;
    let kind = match e {
        E::Path(p) => {
            if p.qself.is_some() {
                unsupported(errs, p, "qualified paths are")
            } else if p.path.is_ident("self") {
                errs.spanned(
                    p,
                    "`self` is not needed in a network body: refer to fields by name and call \
                     them, as in `fc1(x)`",
                );
                Kind::Invalid
            } else if let Some(id) = p.path.get_ident() {
                Kind::Var(id.clone())
            } else {
                unsupported(errs, p, "paths (`a::b`) are")
            }
        }
        E::Lit(l) => match &l.lit {
            syn::Lit::Int(_) | syn::Lit::Float(_) => Kind::Num(l.lit.clone()),
            syn::Lit::Bool(_) => Kind::Bool,
            syn::Lit::Str(_) => Kind::Str,
            other => unsupported(
                errs,
                other,
                "literals other than numbers, booleans and strings are",
            ),
        },
        E::Paren(p) => return with_tokens(expr(&p.expr, errs), e),
        E::Group(g) => return with_tokens(expr(&g.expr, errs), e),
        E::Array(a) => Kind::Array(a.elems.iter().map(|x| expr(x, errs)).collect()),
        E::Call(c) => {
            let args: Vec<Expr> = c.args.iter().map(|a| expr(a, errs)).collect();
            match &*c.func {
                E::Path(p) if p.qself.is_none() && p.path.get_ident().is_some() => {
                    match p.path.get_ident() {
                        Some(func) => Kind::Call {
                            func: func.clone(),
                            args,
                        },
                        None => Kind::Invalid,
                    }
                }
                E::Field(f) if is_self(&f.base) => {
                    errs.spanned(
                        &c.func,
                        format!(
                            "call fields by name: write `{}(...)` instead of `(self.{})(...)`",
                            f.member.to_token_stream(),
                            f.member.to_token_stream()
                        ),
                    );
                    Kind::Invalid
                }
                other => {
                    // Report what the callee is (a closure, a path...) when
                    // that is unsupported in itself.
                    let before = errs.len();
                    let _ = expr(other, errs);
                    if errs.len() == before {
                        unsupported(
                            errs,
                            other,
                            "calls of anything but a field or a built-in function (by its \
                             plain name) are",
                        )
                    } else {
                        Kind::Invalid
                    }
                }
            }
        }
        E::MethodCall(m) => {
            if is_self(&m.receiver) {
                errs.spanned(
                    e,
                    format!(
                        "call fields by name: write `{}(...)` instead of `self.{}(...)`",
                        m.method, m.method
                    ),
                );
                Kind::Invalid
            } else if let Some(t) = &m.turbofish {
                unsupported(errs, t, "turbofish generic arguments (`::<>`) are")
            } else {
                Kind::Method {
                    recv: Box::new(expr(&m.receiver, errs)),
                    method: m.method.clone(),
                    args: m.args.iter().map(|a| expr(a, errs)).collect(),
                }
            }
        }
        E::Binary(b) => {
            let op = match b.op {
                syn::BinOp::Add(_) => Some(BinOp::Add),
                syn::BinOp::Sub(_) => Some(BinOp::Sub),
                syn::BinOp::Mul(_) => Some(BinOp::Mul),
                syn::BinOp::Div(_) => Some(BinOp::Div),
                _ => None,
            };
            match op {
                Some(op) => Kind::Binary {
                    op,
                    lhs: Box::new(expr(&b.left, errs)),
                    rhs: Box::new(expr(&b.right, errs)),
                },
                None => {
                    let shown = b.op.to_token_stream().to_string();
                    if shown.ends_with('=') && !matches!(shown.as_str(), "==" | "!=" | "<=" | ">=")
                    {
                        unsupported(errs, b, "compound assignments (`+=`, ...) are")
                    } else {
                        errs.spanned(
                            b.op,
                            format!(
                                "the `{shown}` operator is not supported in a `network!` body: \
                                 the operators are + - * / and unary -"
                            ),
                        );
                        Kind::Invalid
                    }
                }
            }
        }
        E::Unary(u) => match u.op {
            syn::UnOp::Neg(_) => Kind::Neg(Box::new(expr(&u.expr, errs))),
            _ => {
                errs.spanned(
                    u.op,
                    format!(
                        "the `{}` operator is not supported in a `network!` body: the operators \
                         are + - * / and unary -",
                        u.op.to_token_stream()
                    ),
                );
                Kind::Invalid
            }
        },
        E::ForLoop(f) => unsupported(errs, f.for_token, "`for` loops are"),
        E::While(w) => unsupported(errs, w.while_token, "`while` loops are"),
        E::Loop(l) => unsupported(errs, l.loop_token, "`loop`s are"),
        E::If(i) => unsupported_note(
            errs,
            i.if_token,
            "`if` expressions are",
            "there is no control flow: every operation runs on every forward pass",
        ),
        E::Match(m) => unsupported(errs, m.match_token, "`match` expressions are"),
        E::Closure(c) => unsupported(errs, c, "closures are"),
        E::Return(r) => unsupported_note(
            errs,
            r.return_token,
            "`return` is",
            "the output is the body's last expression",
        ),
        E::Break(b) => unsupported(errs, b, "`break` is"),
        E::Continue(c) => unsupported(errs, c, "`continue` is"),
        E::Macro(m) => unsupported(errs, m, "macro calls are"),
        E::Try(t) => unsupported(errs, t.question_token, "the `?` operator is"),
        E::Assign(a) => {
            if matches!(&*a.left, E::Field(_)) {
                unsupported_note(
                    errs,
                    a,
                    "assignments to fields are",
                    "a forward pass does not change the model",
                )
            } else {
                unsupported_note(
                    errs,
                    a,
                    "assignments are",
                    "bind a new name with `let` instead",
                )
            }
        }
        E::Field(f) => {
            if is_self(&f.base) {
                errs.spanned(
                    f,
                    format!(
                        "fields are used by calling them by name: write `{}(x)`",
                        f.member.to_token_stream()
                    ),
                );
                Kind::Invalid
            } else {
                unsupported(errs, f, "field accesses are")
            }
        }
        E::Index(i) => unsupported(errs, i, "indexing is"),
        E::Reference(r) => unsupported_note(
            errs,
            r.and_token,
            "references (`&`) are",
            "values are passed as they are",
        ),
        E::Cast(c) => unsupported(errs, c.as_token, "casts (`as`) are"),
        E::Block(b) => unsupported(errs, b, "blocks are"),
        E::Unsafe(u) => unsupported(errs, u.unsafe_token, "`unsafe` blocks are"),
        E::Tuple(t) => unsupported(errs, t, "tuples are"),
        E::Struct(s) => unsupported(errs, s, "struct literals are"),
        E::Range(r) => unsupported(errs, r, "ranges are"),
        E::Async(a) => unsupported(errs, a.async_token, "`async` blocks are"),
        E::Await(a) => unsupported(errs, a, "`.await` is"),
        E::Let(l) => unsupported(errs, l, "`let` expressions are"),
        E::Repeat(r) => unsupported(errs, r, "array repeat expressions are"),
        other => unsupported(errs, other, "this expression is"),
    };
    Expr {
        kind,
        tokens: e.to_token_stream(),
    }
}

fn with_tokens(mut inner: Expr, outer: &syn::Expr) -> Expr {
    inner.tokens = outer.to_token_stream();
    inner
}
