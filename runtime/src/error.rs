//! The error type of fallible (`try_`) operations.

use std::fmt;

/// What went wrong in a fallible tensor operation.
///
/// Panicking forms of the same operations print exactly this message, so a
/// user sees the same words whether they called `a.add(&b)` or `a.try_add(&b)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Shapes that cannot work together: names the op, both shapes and the fix.
    Shape {
        /// The operation that refused its inputs (`add`, `matmul`, ...).
        op: &'static str,
        /// The full explanation, shapes and fix included.
        msg: String,
    },
    /// A dtype the op does not support, or two dtypes that cannot be combined.
    DType {
        /// The operation that refused its inputs.
        op: &'static str,
        /// The full explanation.
        msg: String,
    },
    /// Tensors on different devices used together.
    Device {
        /// The operation that refused its inputs.
        op: &'static str,
        /// The full explanation.
        msg: String,
    },
    /// A tensor's buffer could not be allocated: names the op, the shape and
    /// the bytes asked for (PyTorch's `OutOfMemoryError`). The process goes
    /// on; nothing was allocated.
    OutOfMemory {
        /// The operation whose result could not be allocated.
        op: &'static str,
        /// The full explanation: shape, bytes and the fix.
        msg: String,
    },
    /// An autograd misuse (backward through a freed graph, in-place on a leaf, ...).
    Autograd(String),
    /// Any other invalid argument (out-of-range index, bad step, ...).
    Invalid(String),
    /// Reading or writing a file failed (missing file, permissions, disk full).
    Io {
        /// The file (empty when the error came from a `std::io::Error`
        /// through `?`, which does not know the path).
        path: String,
        /// What the operating system said, and the fix where one is known.
        msg: String,
    },
    /// A file's contents are not what was expected: a truncated or corrupt
    /// safetensors file, a bad CSV row, a missing or mis-shaped tensor.
    Format {
        /// The file (or `<memory>` for bytes that came from no file).
        path: String,
        /// What is wrong and where.
        msg: String,
    },
    /// Distributed training could not start or go on: MPI is not running,
    /// the ranks' models differ, another rank failed.
    Distributed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { op, msg }
            | Error::DType { op, msg }
            | Error::Device { op, msg }
            | Error::OutOfMemory { op, msg } => {
                write!(f, "{op}: {msg}")
            }
            Error::Autograd(msg) | Error::Invalid(msg) | Error::Distributed(msg) => {
                f.write_str(msg)
            }
            // An io::Error converted by `?` carries no path.
            Error::Io { path, msg } if path.is_empty() => f.write_str(msg),
            Error::Io { path, msg } | Error::Format { path, msg } => write!(f, "{path}: {msg}"),
        }
    }
}

impl std::error::Error for Error {}

/// Lets `?` on `std::fs`/`std::io` calls work in a function returning
/// [`Result`] (`fn main() -> deriv::Result<()>`). The error becomes
/// [`Error::Io`] with an empty `path` (the `io::Error` does not know it) and
/// the operating system's message.
///
/// ```
/// fn first_line(path: &str) -> deriv_runtime::Result<String> {
///     let text = std::fs::read_to_string(path)?;
///     Ok(text.lines().next().unwrap_or("").to_string())
/// }
/// let err = first_line("/no/such/file.csv").unwrap_err();
/// assert!(matches!(err, deriv_runtime::Error::Io { .. }));
/// assert!(err.to_string().contains("No such file"), "{err}");
/// ```
impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io {
            path: String::new(),
            msg: err.to_string(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
    pub(crate) fn io(path: &std::path::Path, err: &std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            msg: err.to_string(),
        }
    }
    pub(crate) fn format(path: &std::path::Path, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.display().to_string(),
            msg: msg.into(),
        }
    }
    pub(crate) fn dtype(op: &'static str, msg: impl Into<String>) -> Self {
        Error::DType {
            op,
            msg: msg.into(),
        }
    }
}

/// Unwraps a `try_` result in a panicking op, printing the error's own message.
pub(crate) trait OrPanic<T> {
    fn or_panic(self) -> T;
}

impl<T> OrPanic<T> for Result<T> {
    #[track_caller]
    fn or_panic(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }
}
