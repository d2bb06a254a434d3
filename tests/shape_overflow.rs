//! Shapes whose element count overflows, and buffers that cannot be
//! allocated (issue 15): every op that builds or changes a shape counts
//! elements with checked arithmetic, so such a shape is an `Error::Shape`
//! from the `try_` forms and a panic naming the op and the shape from the
//! others; an impossible allocation is an `Error::OutOfMemory` or a panic
//! naming the op, the shape and the bytes. Nothing here may crash the
//! process: a segfault or an abort fails the whole test binary.
//!
//! The sizes that must fail are ones that fail on every machine (element
//! counts past `isize::MAX`, byte counts past `isize::MAX`); the one case
//! that depends on the machine's memory (400 GB) runs in a child process
//! under an address-space limit.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use deriv::prelude::*;
use deriv::{Error, Generator};

// ---------------------------------------------------------------- helpers

thread_local! {
    /// Set while a panic is expected on this thread: the hook stays quiet.
    static EXPECTING_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// The panic message of `f`, or its result when it does not panic. The
/// expected panics print nothing; any other panic prints as usual.
fn outcome<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !EXPECTING_PANIC.with(Cell::get) {
                default(info);
            }
        }));
    });
    EXPECTING_PANIC.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    EXPECTING_PANIC.with(|q| q.set(false));
    r.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// The panic message of `f`, which must panic.
#[track_caller]
fn panic_message<R>(f: impl FnOnce() -> R) -> String {
    match outcome(f) {
        Ok(_) => panic!("expected a panic"),
        Err(msg) => msg,
    }
}

/// Asserts `text` contains every one of `parts`.
#[track_caller]
fn contains_all(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "{text:?} does not contain {p:?}");
    }
}

/// The message of a `Shape` error from `op`.
#[track_caller]
fn shape_err<T>(r: Result<T, Error>, op: &str) -> String {
    match r {
        Err(e @ Error::Shape { .. }) => {
            let text = e.to_string();
            assert!(text.starts_with(&format!("{op}: ")), "{text}");
            text
        }
        Err(e) => panic!("expected a Shape error from {op}, got {e:?}"),
        Ok(_) => panic!("expected a Shape error from {op}, got Ok"),
    }
}

/// The message of an `OutOfMemory` error from `op`.
#[track_caller]
fn oom_err<T>(r: Result<T, Error>, op: &str) -> String {
    match r {
        Err(e @ Error::OutOfMemory { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("{op}: cannot allocate ")),
                "{text}"
            );
            text
        }
        Err(e) => panic!("expected an OutOfMemory error from {op}, got {e:?}"),
        Ok(_) => panic!("expected an OutOfMemory error from {op}, got Ok"),
    }
}

// ---------------------------------------------------------------- the cases

#[test]
fn zeros_of_2_pow_32_squared_is_refused() {
    let shape = [1usize << 32, 1 << 32];
    let msg = shape_err(Tensor::try_zeros(shape), "zeros");
    contains_all(
        &msg,
        &[
            "[4294967296, 4294967296]",
            "too many elements",
            "18446744073709551616",
        ],
    );
    let msg = panic_message(|| Tensor::zeros(shape));
    contains_all(
        &msg,
        &["zeros: shape [4294967296, 4294967296] has too many elements"],
    );
    // Every creation function counts the same way.
    for (op, msg) in [
        ("ones", panic_message(|| Tensor::ones(shape))),
        ("full", panic_message(|| Tensor::full(shape, 2.0))),
        ("rand", panic_message(|| Tensor::rand(shape))),
        ("randn", panic_message(|| Tensor::randn(shape))),
        ("randint", panic_message(|| Tensor::randint(0, 9, shape))),
        ("eye", panic_message(|| Tensor::eye(1 << 32))),
    ] {
        assert!(msg.starts_with(&format!("{op}: shape [")), "{msg}");
        assert!(msg.contains("too many elements"), "{msg}");
    }
    // An empty vector cannot fill it either (the wrapped count was 0).
    let msg = shape_err(Tensor::try_from_vec(Vec::<f32>::new(), shape), "from_vec");
    contains_all(&msg, &["[4294967296, 4294967296]", "too many elements"]);
}

#[test]
fn reshape_to_a_count_that_wraps_to_the_input_is_refused() {
    let x = Tensor::arange(0., 4., 1.);
    let spec = [4611686018427387905usize, 4];
    let msg = shape_err(x.try_reshape(spec), "reshape");
    contains_all(
        &msg,
        &[
            "[4611686018427387905, 4]",
            "input of shape [4]",
            "isize::MAX",
        ],
    );
    let msg = panic_message(|| x.view(spec));
    contains_all(&msg, &["view: shape [4611686018427387905, 4]"]);
    let msg = panic_message(|| x.reshape(spec));
    assert!(
        msg.starts_with("reshape: shape [4611686018427387905, 4]"),
        "{msg}"
    );
    // With an inferred size, and with sizes past i64::MAX (not read as -1).
    shape_err(x.try_reshape([-1i64, 4611686018427387905, 4]), "reshape");
    shape_err(x.try_reshape([usize::MAX, 4]), "reshape");
    shape_err(x.try_reshape([usize::MAX]), "reshape");
    // Nor can expand or broadcasting make such a shape from a valid one.
    let msg = shape_err(x.try_expand([4611686018427387905, 4]), "expand");
    contains_all(&msg, &["[4611686018427387905, 4]", "too many elements"]);
    let col = Tensor::ones([1]).expand([1 << 32]).unsqueeze(1);
    let row = Tensor::ones([1]).expand([1 << 32]).unsqueeze(0);
    let msg = shape_err(col.try_add(&row), "add");
    contains_all(&msg, &["[4294967296, 4294967296]", "too many elements"]);
}

#[test]
fn matmul_of_a_wrapped_shape_is_refused_before_any_kernel() {
    // The SIGSEGV: the [(2^62 + 1), 4] operand cannot exist.
    let msg = panic_message(|| Tensor::zeros([(1 << 62) + 1, 4]).matmul(&Tensor::ones([4, 4])));
    contains_all(
        &msg,
        &["zeros: shape [4611686018427387905, 4] has too many elements"],
    );
    // Valid operands whose product overflows: a Shape error from matmul.
    let col = Tensor::ones([1]).expand([1 << 32]).unsqueeze(1); // [2^32, 1]
    let row = Tensor::ones([1]).expand([1 << 32]).unsqueeze(0); // [1, 2^32]
    let msg = shape_err(col.try_matmul(&row), "matmul");
    contains_all(&msg, &["[4294967296, 4294967296]", "too many elements"]);
    // Batched, with the batch dims broadcast.
    let a = Tensor::ones([1, 1, 1]).expand([1 << 30, 1 << 20, 1]);
    let b = Tensor::ones([1, 1 << 20]);
    let msg = shape_err(a.try_matmul(&b), "matmul");
    contains_all(&msg, &["[1073741824, 1048576, 1048576]"]);
    // A count that fits but a buffer that cannot: 2^62 f32 are 2^64 bytes.
    let col = Tensor::ones([1]).expand([1 << 31]).unsqueeze(1);
    let row = Tensor::ones([1]).expand([1 << 31]).unsqueeze(0);
    let msg = oom_err(col.try_matmul(&row), "matmul");
    contains_all(
        &msg,
        &["18446744073709551616 bytes", "[2147483648, 2147483648]"],
    );
    let msg = panic_message(|| col.matmul(&row));
    assert!(
        msg.starts_with("matmul: cannot allocate 18446744073709551616 bytes"),
        "{msg}"
    );
    // An empty product of a huge batch computes nothing and allocates nothing.
    let a = Tensor::ones([1, 0, 2]).expand([1 << 40, 0, 2]);
    let z = a.matmul(&Tensor::ones([2, 3]));
    assert_eq!(z.shape(), &[1 << 40, 0, 3]);
    assert_eq!(z.numel(), 0);
}

#[test]
fn reductions_of_huge_views_fail_at_their_allocation() {
    // The tensors of the issue cannot be made any more...
    assert!(matches!(
        Tensor::try_zeros([(1 << 62) + 1, 4]),
        Err(Error::Shape { op: "zeros", .. })
    ));
    // ...and a huge (expanded) view whose reduction result cannot be held
    // panics naming the op, the shape and the bytes, before any work.
    let x = Tensor::ones([1, 1]).expand([1 << 61, 2]);
    let msg = panic_message(|| x.sum_dim(1, false));
    contains_all(
        &msg,
        &[
            "sum: cannot allocate 9223372036854775808 bytes",
            "[2305843009213693952]",
        ],
    );
    let msg = panic_message(|| x.max_dim(1, true));
    contains_all(&msg, &["max: cannot allocate", "[2305843009213693952]"]);
    let msg = panic_message(|| x.exp());
    contains_all(&msg, &["exp: cannot allocate", "[2305843009213693952, 2]"]);
    let msg = panic_message(|| x.contiguous());
    contains_all(
        &msg,
        &["clone: cannot allocate", "[2305843009213693952, 2]"],
    );
    let msg = oom_err(x.try_add(&x), "add");
    contains_all(
        &msg,
        &["18446744073709551616 bytes", "[2305843009213693952, 2]"],
    );
    // The view itself is fine: its first and last elements are readable.
    assert_eq!(x.numel(), 1 << 62);
    assert_eq!(last_element(&x), 1.0);
}

#[test]
fn an_impossible_allocation_is_a_panic_naming_op_shape_and_bytes() {
    // 2^62 f32 elements: the count fits, 2^64 bytes cannot be allocated
    // anywhere. randn([100000, 1000000]) (400 GB) is the same error where
    // the allocator refuses it: see the child-process test below.
    let shape = [1usize << 31, 1 << 31];
    let msg = panic_message(|| Tensor::randn(shape));
    assert_eq!(
        msg,
        "randn: cannot allocate 18446744073709551616 bytes (16.0 EiB) for a tensor of shape \
         [2147483648, 2147483648]: more than any allocation can hold (isize::MAX bytes); use \
         smaller sizes (a smaller batch), or free tensors you no longer need"
    );
    let msg = oom_err(Tensor::try_zeros(shape), "zeros");
    contains_all(
        &msg,
        &["18446744073709551616 bytes", "[2147483648, 2147483648]"],
    );
    let f64s = TensorOptions::new().dtype(DType::F64);
    let msg = oom_err(Tensor::try_full_opts([1usize << 61, 2], 1.0, &f64s), "full");
    contains_all(&msg, &["36893488147419103232 bytes"]);
    let msg = panic_message(|| Tensor::arange(0., 1e30, 1.));
    contains_all(&msg, &["arange: shape [", "too many elements"]);
    let msg = panic_message(|| Tensor::linspace(0., 1., 1 << 62));
    contains_all(&msg, &["linspace: cannot allocate"]);
    let msg = panic_message(|| Tensor::randperm(1 << 62));
    contains_all(
        &msg,
        &["randperm: cannot allocate 36893488147419103232 bytes"],
    );
    // Joining huge views: the count, then the buffer.
    let big = Tensor::ones([1]).expand([1usize << 62]);
    let msg = shape_err(Tensor::try_cat(&[big.clone(), big.clone()], 0), "cat");
    contains_all(&msg, &["[9223372036854775808]", "too many elements"]);
    let msg = shape_err(Tensor::try_stack(&[big.clone(), big.clone()], 0), "stack");
    contains_all(&msg, &["[2, 4611686018427387904]"]);
    let half = Tensor::ones([1]).expand([1usize << 61]);
    let msg = oom_err(Tensor::try_cat(&[half.clone(), half], 0), "cat");
    contains_all(&msg, &["[4611686018427387904]"]);
    // Indexing past the count: more indices than the dim has.
    let wide = Tensor::ones([1, 1]).expand([1, 1 << 62]);
    let msg = panic_message(|| wide.index_select(0, &Tensor::from_vec(vec![0i64; 4], [4])));
    contains_all(&msg, &["index_select: shape [4, 4611686018427387904]"]);
}

/// The 400 GB `randn` of the issue, in a child process whose address space
/// is limited to 8 GiB, so the allocator refuses it on any machine: the
/// child must catch a panic naming the op, the shape and the bytes, and
/// exit normally (not abort with "memory allocation failed").
#[test]
#[cfg(target_os = "linux")]
fn randn_of_400_gigabytes_is_a_panic_not_an_abort() {
    const CHILD: &str = "DERIV_SHAPE_OVERFLOW_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let msg = panic_message(|| Tensor::randn([100000, 1000000]));
        assert_eq!(
            msg,
            "randn: cannot allocate 400000000000 bytes (372.5 GiB) for a tensor of shape \
             [100000, 1000000]: the allocator refused it; use smaller sizes (a smaller \
             batch), or free tensors you no longer need"
        );
        let msg = panic_message(|| Tensor::zeros([100000, 1000000]));
        assert!(
            msg.starts_with("zeros: cannot allocate 400000000000 bytes"),
            "{msg}"
        );
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 8388608 && exec \"$0\" \"$1\" --exact --test-threads=1")
        .arg(&exe)
        .arg("randn_of_400_gigabytes_is_a_panic_not_an_abort")
        .env(CHILD, "1")
        .output()
        .expect("spawn the child test");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child: {:?}\n{text}", out.status);
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
fn safetensors_headers_with_overflowing_shapes_are_format_errors() {
    fn file(shape: &str) -> Vec<u8> {
        let header =
            format!("{{\"w\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":[0,0]}}}}");
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes
    }
    // A zero size makes the safetensors crate's own count 0, but the other
    // sizes multiply past isize::MAX: our checked count refuses it.
    let e = deriv::io::deserialize(&file("[0,1099511627776,1099511627776]")).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    contains_all(
        &e.to_string(),
        &[
            "\"w\"",
            "[0, 1099511627776, 1099511627776]",
            "too many elements",
        ],
    );
    // A count that overflows outright: refused by the parser.
    let e = deriv::io::deserialize(&file("[4611686018427387905,4]")).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    // The same through a file and a checkpoint.
    let dir = std::env::temp_dir().join(format!("deriv-shape-overflow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.safetensors");
    std::fs::write(&path, file("[0,1099511627776,1099511627776]")).unwrap();
    let e = deriv::io::load_file(&path).unwrap_err();
    assert!(e.to_string().contains("too many elements"), "{e}");
    let e = deriv::io::Checkpoint::load(&path).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn narrow_and_slice_arguments_cannot_overflow_offsets() {
    let x = Tensor::arange(0., 10., 1.);
    let msg = panic_message(|| x.narrow(0, usize::MAX, 2));
    contains_all(
        &msg,
        &["narrow: start (18446744073709551615) + length (2) exceeds"],
    );
    // A step past the dim leaves one element; a slice after it stays empty.
    let one = x.slice_step(0, 3.., usize::MAX);
    assert_eq!(one.to_vec::<f32>(), vec![3.0]);
    assert_eq!(one.slice(0, 1..).numel(), 0);
    // Such a size-1 dim inside a strided walk (the walk adds its stride).
    let m = Tensor::arange(0., 24., 1.).reshape([2, 3, 4]);
    let v = m.slice_step(1, 1.., usize::MAX).slice_step(2, .., 2);
    assert_eq!(v.shape(), &[2, 1, 2]);
    assert!(v.strides()[1] <= isize::MAX as usize, "{:?}", v.strides());
    assert_eq!(v.to_vec::<f32>(), vec![4., 6., 16., 18.]);
    assert_eq!((&v + 1.0).to_vec::<f32>(), vec![5., 7., 17., 19.]);
    assert_eq!(x.slice(0, ..=isize::MAX).numel(), 10);
    assert_eq!(x.slice(0, isize::MAX..).numel(), 0);
}

// ---------------------------------------------------------------- property test

/// The largest count a tensor may have (isize::MAX).
const MAX: u128 = i64::MAX as u128;
/// Results up to this many elements are computed and checked in full.
const SMALL: u128 = 1 << 12;

/// The element count of `shape` by the rule (the product of the non-zero
/// sizes must not exceed isize::MAX), computed independently in u128.
fn expected_count(shape: &[usize]) -> Option<u128> {
    let mut p = 1u128;
    let mut zero = false;
    for &d in shape {
        if d == 0 {
            zero = true;
            continue;
        }
        p = p.checked_mul(d as u128)?;
        if p > MAX {
            return None;
        }
    }
    Some(if zero { 0 } else { p })
}

/// NumPy broadcasting of two shapes, `None` when incompatible.
fn expected_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= n {
            s[i + s.len() - n]
        } else {
            1
        }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

/// What an op making an f32 result of `shape` must do.
#[derive(Debug, PartialEq)]
enum Expect {
    /// The count overflows: a Shape error (or a panic) naming the op and shape.
    Shape,
    /// The count fits but 4 bytes each cannot: OutOfMemory (or a panic).
    Oom,
    /// Small enough to compute and check.
    Ok(usize),
    /// Large but possible: whether it fits depends on the machine; not run.
    Skip,
}

fn expect_f32(shape: &[usize]) -> Expect {
    match expected_count(shape) {
        None => Expect::Shape,
        Some(c) if c * 4 > MAX => Expect::Oom,
        Some(c) if c <= SMALL => Expect::Ok(c as usize),
        Some(_) => Expect::Skip,
    }
}

/// Checks a fallible result against `want`, for op `op` making `shape`.
#[track_caller]
fn check<T>(op: &str, shape: &[usize], want: &Expect, r: Result<T, Error>) -> Option<T> {
    let shape_text = format!("{shape:?}");
    match (want, r) {
        (Expect::Shape, r) => {
            let msg = shape_err(r, op);
            assert!(
                msg.contains("too many elements") || msg.contains("isize::MAX"),
                "{msg}"
            );
            None
        }
        (Expect::Oom, r) => {
            let msg = oom_err(r, op);
            assert!(msg.contains(&shape_text), "{msg} lacks {shape_text}");
            None
        }
        (Expect::Ok(_), Ok(t)) => Some(t),
        (Expect::Ok(_), Err(e)) => panic!("{op} {shape_text}: unexpected error {e}"),
        (Expect::Skip, _) => unreachable!("skipped cases are not run"),
    }
}

/// Checks a panicking op's outcome against `want`: a panic message starting
/// with `op: ` and naming the shape, or a result.
#[track_caller]
fn check_panicking<T>(op: &str, shape: &[usize], want: &Expect, r: Result<T, String>) -> Option<T> {
    let shape_text = format!("{shape:?}");
    match (want, r) {
        (Expect::Shape | Expect::Oom, Err(msg)) => {
            assert!(msg.starts_with(&format!("{op}: ")), "{msg}");
            assert!(msg.contains(&shape_text), "{msg} lacks {shape_text}");
            if *want == Expect::Oom {
                assert!(msg.contains(" bytes"), "{msg}");
            }
            None
        }
        (Expect::Ok(_), Ok(t)) => Some(t),
        (want, Ok(_)) => panic!("{op} {shape_text}: expected {want:?}, got a result"),
        (want, Err(msg)) => panic!("{op} {shape_text}: expected {want:?}, got panic {msg}"),
    }
}

/// The element at the last index of every dim (by views only), so reading it
/// proves the view's extent lies inside its buffer.
fn last_element(t: &Tensor) -> f64 {
    let mut v = t.clone();
    while v.ndim() > 0 {
        v = v.select(0, -1);
    }
    v.item()
}

fn first_element(t: &Tensor) -> f64 {
    let mut v = t.clone();
    while v.ndim() > 0 {
        v = v.select(0, 0);
    }
    v.item()
}

/// Sizes drawn for the random shapes: small ones (often, so that ops
/// succeed), zeros, and huge ones around the overflow points.
const HUGE: [usize; 8] = [
    1 << 20,
    1 << 31,
    1 << 32,
    1 << 33,
    1 << 62,
    (1 << 62) + 1,
    isize::MAX as usize,
    usize::MAX,
];

struct Shapes(Generator);

impl Shapes {
    fn below(&mut self, n: usize) -> usize {
        self.0.int_range(0, n as i64) as usize
    }
    fn dim(&mut self) -> usize {
        match self.below(10) {
            0..=5 => self.below(5),
            6 => 1,
            _ => HUGE[self.below(HUGE.len())],
        }
    }
    fn shape(&mut self, max_rank: usize) -> Vec<usize> {
        let rank = self.below(max_rank + 1);
        (0..rank).map(|_| self.dim()).collect()
    }
    /// A small base (each size 1..=3) and a target it expands to: its
    /// size-1 dims stretched to random sizes, new leading dims in front, and
    /// now and then a size that does not match (an invalid expand).
    fn expansion(&mut self) -> (Vec<usize>, Vec<usize>) {
        let base: Vec<usize> = (0..self.below(3)).map(|_| 1 + self.below(3)).collect();
        let mut target: Vec<usize> = (0..self.below(3)).map(|_| self.dim()).collect();
        for &b in &base {
            target.push(match (b, self.below(8)) {
                (_, 0) => self.dim(),
                (1, _) => self.dim(),
                (b, _) => b,
            });
        }
        (base, target)
    }
}

/// A tensor of `shape` holding `0, 1, 2, ..` (a small shape).
fn counting(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::arange(0., n as f64, 1.).reshape(shape)
}

/// Random shapes with huge and zero sizes, through creation, reshape,
/// expand, broadcasting, matmul and reductions: each call either succeeds
/// with a consistent count (the checked product of its shape, its first and
/// last elements readable) or fails with a Shape / OutOfMemory error or a
/// panic naming the op and the shape. A crash fails the test binary.
#[test]
fn random_shapes_either_work_or_fail_cleanly() {
    let mut g = Shapes(Generator::new(15));
    let mut counts = [0usize; 4]; // ok, shape errors, oom, skipped
    let mut tally = |want: &Expect| {
        counts[match want {
            Expect::Ok(_) => 0,
            Expect::Shape => 1,
            Expect::Oom => 2,
            Expect::Skip => 3,
        }] += 1
    };
    for _ in 0..600 {
        // Creation.
        let shape = g.shape(4);
        let want = expect_f32(&shape);
        tally(&want);
        if want != Expect::Skip {
            if let Some(t) = check("zeros", &shape, &want, Tensor::try_zeros(&shape)) {
                assert_eq!(t.shape(), &shape[..]);
                assert_eq!(t.numel(), expected_count(&shape).unwrap() as usize);
                assert!(t.to_vec::<f32>().iter().all(|&x| x == 0.0));
            }
            let r = outcome(|| Tensor::randn(&shape));
            if let Some(t) = check_panicking("randn", &shape, &want, r) {
                assert_eq!(t.to_vec::<f32>().len(), t.numel());
            }
        }
        let data = vec![1f32; expected_count(&shape).map_or(0, |c| c.min(SMALL) as usize)];
        let r = Tensor::try_from_vec(data.clone(), &shape);
        match expected_count(&shape) {
            None => {
                shape_err(r, "from_vec");
            }
            Some(c) if c == data.len() as u128 => assert_eq!(r.unwrap().numel(), data.len()),
            Some(_) => {
                shape_err(r, "from_vec");
            }
        }

        // Reshape of a small tensor to a random spec (one size maybe -1).
        let base = counting(&[[0, 1, 2, 4, 6, 12][g.below(6)]]);
        let n = base.numel() as u128;
        let mut spec: Vec<i64> = g
            .shape(3)
            .iter()
            .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
            .collect();
        if !spec.is_empty() && g.below(3) == 0 {
            let i = g.below(spec.len());
            spec[i] = -1;
        }
        let sizes: Vec<usize> = spec
            .iter()
            .map(|&d| if d == -1 { 1 } else { d as usize })
            .collect();
        let infer = spec.contains(&-1);
        let want = match expected_count(&sizes) {
            None => Err(true),
            Some(k) if infer && (k == 0 || !n.is_multiple_of(k)) => Err(false),
            Some(k) if infer => Ok(n / k),
            Some(k) if k != n => Err(false),
            Some(_) => Ok(1),
        };
        match (want, base.try_reshape(spec.clone())) {
            (Ok(inferred), Ok(t)) => {
                let mut shape = sizes.clone();
                if let Some(i) = spec.iter().position(|&d| d == -1) {
                    shape[i] = inferred as usize;
                }
                assert_eq!(t.shape(), &shape[..], "{spec:?}");
                assert_eq!(t.to_vec::<f32>(), base.to_vec::<f32>());
            }
            (Err(overflow), r) => {
                let msg = shape_err(r, "reshape");
                assert_eq!(msg.contains("isize::MAX"), overflow, "{msg}");
            }
            (Ok(_), Err(e)) => panic!("reshape {spec:?}: {e}"),
        }

        // Expand, then an elementwise op and a reduction on the view.
        let (bshape, target) = g.expansion();
        let src = counting(&bshape);
        let compatible = bshape
            .iter()
            .zip(&target[target.len() - bshape.len()..])
            .all(|(&b, &t)| b == t || b == 1);
        let r = src.try_expand(&target);
        let view = match (compatible, expected_count(&target)) {
            (false, _) => {
                let msg = shape_err(r, "expand");
                assert!(msg.contains("cannot expand"), "{msg}");
                None
            }
            (true, None) => {
                let msg = shape_err(r, "expand");
                assert!(msg.contains("too many elements"), "{msg}");
                None
            }
            (true, Some(c)) => {
                let v = r.unwrap();
                assert_eq!(v.shape(), &target[..]);
                assert_eq!(v.numel() as u128, c);
                if c > 0 {
                    assert_eq!(first_element(&v), first_element(&src));
                    assert_eq!(last_element(&v), last_element(&src));
                }
                Some(v)
            }
        };
        if let Some(v) = &view {
            let want = expect_f32(&target);
            tally(&want);
            if want != Expect::Skip {
                if let Some(t) = check_panicking("exp", &target, &want, outcome(|| v.exp())) {
                    assert_eq!(t.numel(), v.numel());
                }
            }
            if v.ndim() > 0 {
                let out_shape = &target[1..];
                let work = expected_count(&target).unwrap();
                let want = match expect_f32(out_shape) {
                    Expect::Ok(_) if work > SMALL => Expect::Skip,
                    w => w,
                };
                tally(&want);
                if want != Expect::Skip {
                    let r = outcome(|| v.sum_dim(0, false));
                    if let Some(s) = check_panicking("sum", out_shape, &want, r) {
                        assert_eq!(s.shape(), out_shape);
                        let total: f64 = s.to_vec::<f64>().iter().sum();
                        let want_total: f64 = v.contiguous().to_vec::<f64>().iter().sum();
                        assert_eq!(total, want_total);
                    }
                }
            }
        }

        // Broadcasting two expanded views (ones and twos): every element 3.
        let (sa, ta) = g.expansion();
        let (sb, tb) = g.expansion();
        let a = Tensor::ones(&sa).try_expand(&ta);
        let b = Tensor::full(&sb, 2.0).try_expand(&tb);
        if let (Ok(a), Ok(b)) = (a, b) {
            // Only called where the outcome is known (never the Skip band).
            let r = || a.try_add(&b);
            match expected_broadcast(&ta, &tb) {
                None => {
                    let msg = shape_err(r(), "add");
                    assert!(msg.contains("cannot be broadcast"), "{msg}");
                }
                Some(out) => {
                    let want = expect_f32(&out);
                    tally(&want);
                    if want != Expect::Skip {
                        if let Some(t) = check("add", &out, &want, r()) {
                            assert_eq!(t.shape(), &out[..]);
                            assert!(t.to_vec::<f32>().iter().all(|&x| x == 3.0));
                        }
                    }
                }
            }
        }

        // Matmul of expanded ones: [batch.., m, k] · [batch.., k2, n].
        let dims: Vec<usize> = (0..5).map(|_| g.dim()).collect();
        let k2 = if g.below(4) == 0 { g.dim() } else { dims[1] };
        let (batch_a, batch_b) = (g.shape(2), g.shape(2));
        let mut sa = batch_a.clone();
        sa.extend([dims[0], dims[1]]);
        let mut sb = batch_b.clone();
        sb.extend([k2, dims[2]]);
        let ones = |s: &[usize]| Tensor::ones(vec![1; s.len()]).try_expand(s);
        if let (Ok(a), Ok(b)) = (ones(&sa), ones(&sb)) {
            let r = || a.try_matmul(&b);
            let batch = expected_broadcast(&batch_a, &batch_b);
            match batch {
                _ if dims[1] != k2 => {
                    let msg = shape_err(r(), "matmul");
                    assert!(msg.contains("cannot be multiplied"), "{msg}");
                }
                None => {
                    let msg = shape_err(r(), "matmul");
                    assert!(msg.contains("batch dims"), "{msg}");
                }
                Some(mut out) => {
                    out.extend([dims[0], dims[2]]);
                    let work = expected_count(&out).map(|c| c.saturating_mul(k2 as u128));
                    let want = match expect_f32(&out) {
                        Expect::Ok(c) if c > 0 && work.is_none_or(|w| w > SMALL) => Expect::Skip,
                        w => w,
                    };
                    tally(&want);
                    if want != Expect::Skip {
                        if let Some(t) = check("matmul", &out, &want, r()) {
                            assert_eq!(t.shape(), &out[..]);
                            assert!(t.to_vec::<f32>().iter().all(|&x| x == k2 as f32));
                        }
                    }
                }
            }
        }
    }
    eprintln!("outcomes (ok, shape error, out of memory, skipped): {counts:?}");
    // The generator must reach every kind of outcome, or the test proves little.
    assert!(
        counts.iter().all(|&c| c >= 20),
        "ok/shape/oom/skip: {counts:?}"
    );
}
