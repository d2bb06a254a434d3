//! Compile-time size checks for `network!`: each layer and op declares what
//! it does to the size the macro tracks (the last dim of an MLP's features,
//! a convolution's channels) as a [`SizeRule`], and the macro evaluates the
//! chain with these `const fn`s while the crate compiles. A mismatch stops
//! the build with a message at the user's tokens. A user's own layer takes
//! part by setting [`Differentiable::SIZE`](crate::nn::Differentiable::SIZE)
//! (an op: [`Op::SIZE`](crate::ops::Op::SIZE)).
//!
//! ```
//! use deriv_runtime::size::{after, Size, SizeRule};
//! const A: Size = after(SizeRule::Maps { input: 0, output: 1 }, &[Some(784), Some(256)], Size::UNKNOWN, "`fc1`");
//! const B: Size = after(SizeRule::Same, &[], A, "`relu`");
//! assert_eq!(B.value, Some(256));
//! ```

/// What a layer or op does to the tracked size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeRule {
    /// It passes through unchanged (elementwise layers and ops).
    Same,
    /// Unknown afterwards (the default: nothing is checked downstream).
    Unknown,
    /// The constructor's argument number `input` is the size it expects and
    /// number `output` the size it produces (`Linear(in, out)`: 0 and 1).
    Maps {
        /// The index of the argument giving the expected size.
        input: usize,
        /// The index of the argument giving the produced size.
        output: usize,
    },
    /// [`Maps`](Self::Maps) for a size of channels (`Conv2d(in, out, k)`:
    /// 0 and 1), which messages call channels.
    Channels {
        /// The index of the argument giving the expected channels.
        input: usize,
        /// The index of the argument giving the produced channels.
        output: usize,
    },
    /// The constructor's argument number `output` is the size it produces,
    /// whatever it is given (`Embedding(num, dim)`, whose input holds
    /// indices: 1).
    Produces {
        /// The index of the argument giving the produced size.
        output: usize,
    },
}

/// A tracked size: its value when known, and where it came from (for messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// The size, when the macro could tell.
    pub value: Option<u128>,
    /// The layer or op that set it, as the user wrote it.
    pub origin: &'static str,
}

impl Size {
    /// Nothing known.
    pub const UNKNOWN: Size = Size {
        value: None,
        origin: "",
    };
}

/// The size after a layer or op with `rule` and constructor arguments
/// `args` (integer literals, `None` for the rest) is applied to `input`.
pub const fn after(
    rule: SizeRule,
    args: &[Option<u128>],
    input: Size,
    origin: &'static str,
) -> Size {
    match rule {
        SizeRule::Same => input,
        SizeRule::Unknown => Size::UNKNOWN,
        SizeRule::Maps { output, .. }
        | SizeRule::Channels { output, .. }
        | SizeRule::Produces { output } => Size {
            value: arg(args, output),
            origin,
        },
    }
}

/// The size a layer with `rule` and `args` expects, when it says.
pub const fn expected(rule: SizeRule, args: &[Option<u128>]) -> Option<u128> {
    match rule {
        SizeRule::Maps { input, .. } | SizeRule::Channels { input, .. } => arg(args, input),
        _ => None,
    }
}

const fn arg(args: &[Option<u128>], i: usize) -> Option<u128> {
    if i < args.len() {
        args[i]
    } else {
        None
    }
}

/// What the size counts, for messages: `features`, or `channels`.
pub const fn unit(rule: SizeRule) -> &'static str {
    match rule {
        SizeRule::Channels { .. } => "channels",
        _ => "features",
    }
}

/// Fails the build when `input` is known and differs from what a layer with
/// `rule` and `args` expects. `message` may hold `{expected}`, `{got}`,
/// `{origin}` and `{unit}` (see [`unit()`]), filled in here.
pub const fn check(rule: SizeRule, args: &[Option<u128>], input: Size, message: &str) {
    if let (Some(want), Some(got)) = (expected(rule, args), input.value)
        && want != got
    {
        let mut buf = [0u8; 1024];
        let text = fill(&mut buf, message, want, got, input.origin, unit(rule));
        panic!("{}", text);
    }
}

/// The size of `a op b` with broadcasting; fails the build when both are
/// known, differ and neither is 1. `message` may hold `{a}`, `{b}`,
/// `{origin_a}`, `{origin_b}`.
pub const fn broadcast(a: Size, b: Size, message: &str) -> Size {
    match (a.value, b.value) {
        (Some(x), Some(y)) => {
            if x == y || y == 1 {
                a
            } else if x == 1 {
                b
            } else {
                let mut buf = [0u8; 1024];
                let text = fill(&mut buf, message, x, y, a.origin, b.origin);
                panic!("{}", text);
            }
        }
        (Some(x), None) if x != 1 => a,
        (None, Some(y)) if y != 1 => b,
        _ => Size::UNKNOWN,
    }
}

/// `message` with its placeholders replaced: `{expected}`/`{a}` by `x`,
/// `{got}`/`{b}` by `y`, `{origin}`/`{origin_a}` by `o1`, `{origin_b}` and
/// `{unit}` by `o2`.
const fn fill<'b>(
    buf: &'b mut [u8; 1024],
    message: &str,
    x: u128,
    y: u128,
    o1: &str,
    o2: &str,
) -> &'b str {
    let m = message.as_bytes();
    let (mut i, mut j) = (0, 0);
    while i < m.len() {
        if m[i] == b'{' {
            let rest = m.len() - i;
            let mut handled = 0;
            if starts(m, i, b"{expected}") || starts(m, i, b"{a}") {
                j = put_num(buf, j, x);
                handled = if starts(m, i, b"{a}") { 3 } else { 10 };
            } else if starts(m, i, b"{got}") || starts(m, i, b"{b}") {
                j = put_num(buf, j, y);
                handled = if starts(m, i, b"{b}") { 3 } else { 5 };
            } else if starts(m, i, b"{origin_a}") || starts(m, i, b"{origin}") {
                j = put_str(buf, j, o1.as_bytes());
                handled = if starts(m, i, b"{origin}") { 8 } else { 10 };
            } else if starts(m, i, b"{origin_b}") {
                j = put_str(buf, j, o2.as_bytes());
                handled = 10;
            } else if starts(m, i, b"{unit}") {
                j = put_str(buf, j, o2.as_bytes());
                handled = 6;
            }
            if handled > 0 && handled <= rest {
                i += handled;
                continue;
            }
        }
        if j < buf.len() {
            buf[j] = m[i];
            j += 1;
        }
        i += 1;
    }
    let (head, _) = buf.split_at(j);
    match core::str::from_utf8(head) {
        Ok(s) => s,
        Err(_) => "size mismatch",
    }
}

const fn starts(m: &[u8], at: usize, pat: &[u8]) -> bool {
    if at + pat.len() > m.len() {
        return false;
    }
    let mut k = 0;
    while k < pat.len() {
        if m[at + k] != pat[k] {
            return false;
        }
        k += 1;
    }
    true
}

const fn put_num(buf: &mut [u8; 1024], mut j: usize, v: u128) -> usize {
    let mut digits = [0u8; 40];
    let (mut n, mut x) = (0, v);
    if x == 0 {
        digits[0] = b'0';
        n = 1;
    }
    while x > 0 {
        digits[n] = b'0' + (x % 10) as u8;
        x /= 10;
        n += 1;
    }
    while n > 0 && j < buf.len() {
        n -= 1;
        buf[j] = digits[n];
        j += 1;
    }
    j
}

const fn put_str(buf: &mut [u8; 1024], mut j: usize, s: &[u8]) -> usize {
    let mut k = 0;
    while k < s.len() && j < buf.len() {
        buf[j] = s[k];
        j += 1;
        k += 1;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINEAR: SizeRule = SizeRule::Maps {
        input: 0,
        output: 1,
    };

    #[test]
    fn messages_are_filled_in() {
        let mut buf = [0u8; 1024];
        let s = fill(
            &mut buf,
            "expects {expected}, gets {got} from {origin}",
            128,
            256,
            "`fc1`",
            "",
        );
        assert_eq!(s, "expects 128, gets 256 from `fc1`");
        let s = fill(
            &mut buf,
            "{a} vs {b} ({origin_a}, {origin_b})",
            3,
            0,
            "x",
            "y",
        );
        assert_eq!(s, "3 vs 0 (x, y)");
    }

    #[test]
    fn chains_carry_sizes_and_origins() {
        let a = after(LINEAR, &[Some(784), Some(256)], Size::UNKNOWN, "fc1");
        assert_eq!(
            a,
            Size {
                value: Some(256),
                origin: "fc1"
            }
        );
        assert_eq!(after(SizeRule::Same, &[], a, "relu"), a);
        assert_eq!(after(SizeRule::Unknown, &[], a, "t"), Size::UNKNOWN);
        check(LINEAR, &[Some(256), Some(10)], a, "unused");
        let one = Size {
            value: Some(1),
            origin: "s",
        };
        assert_eq!(broadcast(a, one, ""), a);
        assert_eq!(broadcast(one, a, ""), a);
        assert_eq!(broadcast(Size::UNKNOWN, a, ""), a);
    }

    #[test]
    #[should_panic(expected = "wants 128, gets 256 from fc1")]
    fn a_mismatch_fails_with_the_message() {
        let a = after(LINEAR, &[Some(784), Some(256)], Size::UNKNOWN, "fc1");
        check(
            LINEAR,
            &[Some(128), Some(10)],
            a,
            "wants {expected}, gets {got} from {origin}",
        );
    }
}
