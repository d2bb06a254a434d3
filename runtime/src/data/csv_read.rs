//! Reading numeric CSV files into tensors.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// How [`read_csv`] and [`read_csv_xy`] read a file.
///
/// The default is a comma-separated file with a header line, read as `f32`.
/// A default-options read refuses a first line made only of numbers (it
/// looks like data, and dropping it as a header would lose a sample without
/// a word): say which it is with [`has_header`](Self::has_header).
///
/// ```
/// use deriv_runtime::data::CsvOptions;
/// use deriv_runtime::DType;
/// let opts = CsvOptions::default()
///     .has_header(false)
///     .delimiter(b';')
///     .dtype(DType::F64)
///     .skip_rows(2)
///     .column_dtype("price", DType::F64);
/// assert_eq!(opts.has_header, Some(false));
/// assert_eq!((opts.delimiter, opts.skip_rows), (b';', 2));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// Whether the first line (after [`skip_rows`](Self::skip_rows)) names
    /// the columns; the names appear in error messages and can pick columns.
    /// `None` (the default): a header is expected, and a first line whose
    /// fields all parse as numbers is an error that asks for `Some(true)`
    /// (these numbers are the column names) or `Some(false)` (no header: the
    /// line is data). pandas would take such a line as the header silently.
    pub has_header: Option<bool>,
    /// The byte between fields (default `b','`; `b'\t'` for TSV).
    pub delimiter: u8,
    /// The element type of the values (or of the features in
    /// [`read_csv_xy`]): `F32` (default), `F64` or `I64`.
    pub dtype: DType,
    /// Lines starting with this byte are skipped (default `None`).
    pub comment: Option<u8>,
    /// How many lines to skip at the start, before the header (default 0;
    /// pandas' `skiprows=n`). Line numbers in errors still count them.
    pub skip_rows: usize,
    /// Per-column element types, by index or header name: in
    /// [`read_csv_xy`] the target column's type (default `I64`, class
    /// labels; `F32`/`F64` for regression targets). The features share one
    /// tensor and so one dtype ([`dtype`](Self::dtype)): a feature column
    /// set to another dtype is an error that says so.
    pub column_dtypes: Vec<(Column, DType)>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            has_header: None,
            delimiter: b',',
            dtype: DType::F32,
            comment: None,
            skip_rows: 0,
            column_dtypes: Vec::new(),
        }
    }
}

impl CsvOptions {
    /// The defaults: a comma-separated file with a header, read as `f32`.
    pub fn new() -> Self {
        Self::default()
    }
    /// Says whether the first line is a header (see
    /// [`has_header`](Self::has_header)); `false` reads it as data.
    pub fn has_header(mut self, has_header: bool) -> Self {
        self.has_header = Some(has_header);
        self
    }
    /// Sets [`delimiter`](Self::delimiter).
    pub fn delimiter(mut self, delimiter: u8) -> Self {
        self.delimiter = delimiter;
        self
    }
    /// Sets [`dtype`](Self::dtype).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Sets [`comment`](Self::comment).
    pub fn comment(mut self, comment: Option<u8>) -> Self {
        self.comment = comment;
        self
    }
    /// Skips the first `n` lines (a title or notes above the header).
    pub fn skip_rows(mut self, n: usize) -> Self {
        self.skip_rows = n;
        self
    }
    /// Reads `column` (an index, negative from the end, or a header name)
    /// as `dtype`; see [`column_dtypes`](Self::column_dtypes).
    ///
    /// ```
    /// use deriv_runtime::data::{read_csv_xy_from, CsvOptions};
    /// use deriv_runtime::DType;
    /// let csv = "rooms,area,price\n3,70.5,250.5\n4,95,310\n";
    /// let opts = CsvOptions::new().column_dtype("price", DType::F32);
    /// let (x, y) = read_csv_xy_from(csv.as_bytes(), &opts, "price").unwrap();
    /// assert_eq!(y.dtype(), DType::F32);
    /// assert_eq!(y.to_vec::<f32>(), vec![250.5, 310.]);
    /// assert_eq!(x.to_vec::<f32>(), vec![3., 70.5, 4., 95.]);
    /// ```
    pub fn column_dtype(mut self, column: impl Into<Column>, dtype: DType) -> Self {
        self.column_dtypes.push((column.into(), dtype));
        self
    }
}

/// A column of a CSV file, by position (0-based; negative counts from the
/// end, so `-1` is the last column) or by header name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    /// The column at this position (negative: from the end).
    Index(isize),
    /// The column with this header name (needs `has_header`).
    Name(String),
}

impl From<isize> for Column {
    fn from(i: isize) -> Self {
        Column::Index(i)
    }
}
impl From<i32> for Column {
    fn from(i: i32) -> Self {
        Column::Index(i as isize)
    }
}
impl From<usize> for Column {
    fn from(i: usize) -> Self {
        Column::Index(i as isize)
    }
}
impl From<&str> for Column {
    fn from(name: &str) -> Self {
        Column::Name(name.to_string())
    }
}
impl From<String> for Column {
    fn from(name: String) -> Self {
        Column::Name(name)
    }
}

/// Reads a CSV file of numbers into a 2-D tensor `[rows, columns]` of
/// `opts.dtype`.
///
/// Every row must have the same number of fields (the header's, when there
/// is one). Any problem is an `Err` naming the file, the line (1-based), the
/// column (1-based, with its header name) and the offending text; a file
/// that cannot be opened is an `Err` naming the path.
///
/// ```
/// use deriv_runtime::data::{read_csv, CsvOptions};
/// let path = std::env::temp_dir().join("deriv_read_csv_doc.csv");
/// std::fs::write(&path, "a,b\n1,2\n3,4.5\n").unwrap();
/// let t = read_csv(&path, &CsvOptions::default()).unwrap();
/// assert_eq!(t.shape(), &[2, 2]);
/// assert_eq!(t.to_vec::<f32>(), vec![1., 2., 3., 4.5]);
///
/// std::fs::write(&path, "a,b\n1,2\n3,x\n").unwrap();
/// let err = read_csv(&path, &CsvOptions::default()).unwrap_err().to_string();
/// assert!(err.contains("line 3, column 2 (\"b\")"), "{err}");
/// ```
pub fn read_csv(path: impl AsRef<Path>, opts: &CsvOptions) -> Result<Tensor> {
    let path = path.as_ref();
    let source = path.display().to_string();
    Ok(parse(&read(path)?, &source, opts, None)?.features)
}

/// Reads a CSV file of features and a target per row: the features as a
/// 2-D tensor `[rows, columns - 1]` of `opts.dtype` (`f32` by default) and
/// the target, taken from `label_column` (an index, negative from the end,
/// or a header name), as a 1-D tensor: `i64` class labels by default, or
/// the type [`CsvOptions::column_dtype`] gives that column (`F32` for a
/// regression target).
///
/// Errors as [`read_csv`]; an `i64` label that is not a whole number is an
/// error too.
///
/// ```
/// use deriv_runtime::data::{read_csv_xy, CsvOptions};
/// let path = std::env::temp_dir().join("deriv_read_csv_xy_doc.csv");
/// std::fs::write(&path, "x1,x2,species\n5.1,3.5,0\n6.2,2.9,2\n").unwrap();
/// let (x, y) = read_csv_xy(&path, &CsvOptions::default(), "species").unwrap();
/// assert_eq!(x.to_vec::<f32>(), vec![5.1, 3.5, 6.2, 2.9]);
/// assert_eq!(y.to_vec::<i64>(), vec![0, 2]);
/// let (_, y) = read_csv_xy(&path, &CsvOptions::default(), -1).unwrap();
/// assert_eq!(y.to_vec::<i64>(), vec![0, 2]);
/// ```
pub fn read_csv_xy(
    path: impl AsRef<Path>,
    opts: &CsvOptions,
    label_column: impl Into<Column>,
) -> Result<(Tensor, Tensor)> {
    let path = path.as_ref();
    let source = path.display().to_string();
    let label = label_column.into();
    let t = parse(&read(path)?, &source, opts, Some(&label))?;
    Ok((t.features, t.labels.expect("a label column was asked for")))
}

/// [`read_csv`] from any reader: an open file, a network stream, or text in
/// memory (`text.as_bytes()`). Errors name the source `<reader>`.
///
/// ```
/// use deriv_runtime::data::{read_csv_from, CsvOptions};
/// let t = read_csv_from("0.5,1\n2,3\n".as_bytes(), &CsvOptions::new().has_header(false)).unwrap();
/// assert_eq!(t.to_vec::<f32>(), vec![0.5, 1., 2., 3.]);
/// ```
pub fn read_csv_from(reader: impl Read, opts: &CsvOptions) -> Result<Tensor> {
    Ok(parse(&read_all(reader)?, READER, opts, None)?.features)
}

/// [`read_csv_xy`] from any reader (see [`read_csv_from`]).
///
/// ```
/// use deriv_runtime::data::{read_csv_xy_from, CsvOptions};
/// let (x, y) = read_csv_xy_from("a,b,label\n1,2,1\n3,4,0\n".as_bytes(), &CsvOptions::new(), "label").unwrap();
/// assert_eq!((x.shape(), y.to_vec::<i64>()), (&[2, 2][..], vec![1, 0]));
/// ```
pub fn read_csv_xy_from(
    reader: impl Read,
    opts: &CsvOptions,
    label_column: impl Into<Column>,
) -> Result<(Tensor, Tensor)> {
    let label = label_column.into();
    let t = parse(&read_all(reader)?, READER, opts, Some(&label))?;
    Ok((t.features, t.labels.expect("a label column was asked for")))
}

/// How errors name a source that is not a file.
const READER: &str = "<reader>";

fn read_all(mut reader: impl Read) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    reader.read_to_end(&mut data).map_err(|e| Error::Io {
        path: READER.to_string(),
        msg: format!("read_csv: cannot read: {e}"),
    })?;
    Ok(data)
}

/// [`read_csv`] on the contents of a file already in memory (messages name
/// the source `<memory>`).
///
/// ```
/// use deriv_runtime::data::{read_csv_bytes, CsvOptions};
/// let t = read_csv_bytes(b"a,b\n1,2\n", &CsvOptions::default()).unwrap();
/// assert_eq!(t.to_vec::<f32>(), vec![1., 2.]);
/// ```
pub fn read_csv_bytes(bytes: &[u8], opts: &CsvOptions) -> Result<Tensor> {
    Ok(parse(bytes, "<memory>", opts, None)?.features)
}

/// [`read_csv_xy`] on the contents of a file already in memory.
pub fn read_csv_xy_bytes(
    bytes: &[u8],
    opts: &CsvOptions,
    label_column: impl Into<Column>,
) -> Result<(Tensor, Tensor)> {
    let t = parse(bytes, "<memory>", opts, Some(&label_column.into()))?;
    Ok((t.features, t.labels.expect("a label column was asked for")))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        msg: format!("read_csv: cannot read the file: {e}"),
    })
}

/// Turns the csv crate's record offsets into the 1-based line numbers an
/// editor shows (its own line count leaves out blank lines). Offsets must
/// come in increasing order.
struct Lines<'a> {
    data: &'a [u8],
    comment: Option<u8>,
    /// A position already counted, and the line it is on.
    pos: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(data: &'a [u8], comment: Option<u8>) -> Self {
        Lines {
            data,
            comment,
            pos: 0,
            line: 1,
        }
    }

    /// The line of the record the reader reports at `offset`: the offset may
    /// point at the end of the previous record, so line ends, blank lines and
    /// comment lines are stepped over first.
    fn of_record(&mut self, offset: u64) -> u64 {
        let d = self.data;
        let mut i = (offset as usize).min(d.len());
        loop {
            while i < d.len() && (d[i] == b'\n' || d[i] == b'\r') {
                i += 1;
            }
            let at_line_start = i == 0 || d[i - 1] == b'\n';
            match self.comment {
                Some(c) if at_line_start && i < d.len() && d[i] == c => {
                    while i < d.len() && d[i] != b'\n' {
                        i += 1;
                    }
                }
                _ => break,
            }
        }
        if i < self.pos {
            // Not expected; count from the start rather than guess.
            self.pos = 0;
            self.line = 1;
        }
        self.line += d[self.pos..i].iter().filter(|&&b| b == b'\n').count() as u64;
        self.pos = i;
        self.line
    }
}

/// What [`parse`] read.
pub(crate) struct Parsed {
    /// `[rows, columns]` of the options' dtype (the label column left out).
    pub(crate) features: Tensor,
    /// The label column as i64, when one was asked for.
    pub(crate) labels: Option<Tensor>,
}

/// Values of one dtype, filled row by row.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

impl Values {
    /// An empty buffer for `dtype` (`None` for bool, which CSV reading refuses).
    fn new(dtype: DType) -> Option<Values> {
        match dtype {
            DType::F32 => Some(Values::F32(Vec::new())),
            DType::F64 => Some(Values::F64(Vec::new())),
            DType::I64 => Some(Values::I64(Vec::new())),
            DType::Bool => None,
        }
    }

    /// Parses `field` into the buffer; `label`: the field is the label
    /// column, whose integers are class labels (not negative).
    fn push(&mut self, place: &Place, field: &[u8], col: usize, label: bool) -> Result<()> {
        match self {
            Values::F32(v) => v.push(place.float(field, col, DType::F32)? as f32),
            Values::F64(v) => v.push(place.float(field, col, DType::F64)?),
            Values::I64(v) if label => v.push(place.label(field, col)?),
            Values::I64(v) => v.push(place.whole(field, col, "an integer")?),
        }
        Ok(())
    }

    fn into_tensor(self, shape: &[usize]) -> Tensor {
        match self {
            Values::F32(v) => Tensor::from_vec(v, shape),
            Values::F64(v) => Tensor::from_vec(v, shape),
            Values::I64(v) => Tensor::from_vec(v, shape),
        }
    }
}

/// Where a field sits, for error messages.
struct Place<'a> {
    source: &'a str,
    header: Option<&'a [String]>,
    line: u64,
}

impl Place<'_> {
    fn column(&self, col: usize) -> String {
        match self.header.and_then(|h| h.get(col)) {
            Some(name) => format!("column {} ({name:?})", col + 1),
            None => format!("column {}", col + 1),
        }
    }

    fn error(&self, col: usize, what: &str) -> Error {
        Error::Format {
            path: self.source.to_string(),
            msg: format!("read_csv: line {}, {}: {what}", self.line, self.column(col)),
        }
    }

    fn text<'b>(&self, field: &'b [u8], col: usize) -> Result<&'b str> {
        std::str::from_utf8(field).map_err(|_| {
            self.error(
                col,
                &format!(
                    "{:?} is not valid UTF-8 text",
                    String::from_utf8_lossy(field)
                ),
            )
        })
    }

    /// A float of `dtype` (F32 or F64): a finite number too large for it
    /// is an error (it would silently become infinity); `inf` and `nan`
    /// written out are read as such.
    fn float(&self, field: &[u8], col: usize, dtype: DType) -> Result<f64> {
        let text = self.text(field, col)?;
        if text.is_empty() {
            return Err(self.error(col, "empty field; every value must be a number"));
        }
        let v = text
            .parse::<f64>()
            .map_err(|_| self.error(col, &format!("cannot parse {text:?} as a number")))?;
        let written_inf = || {
            let t = text.trim_start_matches(['+', '-']).to_ascii_lowercase();
            t == "inf" || t == "infinity"
        };
        let overflows = match dtype {
            DType::F32 => (v as f32).is_infinite(),
            _ => v.is_infinite(),
        };
        if overflows && !written_inf() {
            let fix = if dtype == DType::F32 && v.is_finite() {
                "read the file with CsvOptions::new().dtype(DType::F64)".to_string()
            } else {
                "f64 is the widest dtype: rescale the column, or write inf if infinity is meant"
                    .to_string()
            };
            return Err(self.error(
                col,
                &format!(
                    "{text:?} is too large for {dtype} (its largest value is {:e}) and would \
                     become infinity; {fix}",
                    if dtype == DType::F32 {
                        f32::MAX as f64
                    } else {
                        f64::MAX
                    }
                ),
            ));
        }
        Ok(v)
    }

    fn whole(&self, field: &[u8], col: usize, what: &str) -> Result<i64> {
        let text = self.text(field, col)?;
        if let Ok(v) = text.parse::<i64>() {
            return Ok(v);
        }
        let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.error(
                col,
                &format!(
                    "cannot parse {text:?} as {what}: it is too large for i64 (whose range is \
                     {} to {}); read the column as a float with CsvOptions::dtype(DType::F64)",
                    i64::MIN,
                    i64::MAX
                ),
            ));
        }
        match text.parse::<f64>() {
            // "2.0" is the label 2; beyond 2^53 a float no longer names one integer.
            Ok(v) if v.fract() == 0.0 && v.abs() <= 9_007_199_254_740_992.0 => Ok(v as i64),
            Ok(v) if v.is_finite() && v.fract() == 0.0 => Err(self.error(
                col,
                &format!(
                    "cannot parse {text:?} as {what}: a float beyond 2^53 no longer names one \
                     whole number; write it out in digits"
                ),
            )),
            _ => Err(self.error(
                col,
                &format!("cannot parse {text:?} as {what}: it is not a whole number"),
            )),
        }
    }

    /// A class label: a whole number, not negative.
    fn label(&self, field: &[u8], col: usize) -> Result<i64> {
        let v = self.whole(field, col, "a class label")?;
        if v < 0 {
            return Err(self.error(
                col,
                &format!(
                    "the class label {v} is negative, but class labels must be 0, 1, ..., \
                     num_classes - 1; relabel the classes in the file (for -1/+1 labels, write \
                     0 for -1 and 1 for +1)"
                ),
            ));
        }
        Ok(v)
    }
}

/// Where a quoted field that is never closed opens, scanning `data` from
/// `start` (the start of a record) as the reader does: a quote opens a field
/// only as its first byte, and inside one `""` is a quote. None when every
/// quoted field is closed.
/// Returns the quote's offset and the field's index in the record.
fn unterminated_quote(data: &[u8], start: usize, delimiter: u8) -> Option<(usize, usize)> {
    let mut i = start;
    let mut field_start = true;
    let mut field = 0;
    while i < data.len() {
        let b = data[i];
        if field_start && b == b'"' {
            let open = i;
            i += 1;
            loop {
                match data.get(i) {
                    None => return Some((open, field)),
                    Some(b'"') if data.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            field_start = false;
        } else {
            field_start = b == delimiter || b == b'\n' || b == b'\r';
            if b == delimiter {
                field += 1;
            } else if field_start {
                field = 0;
            }
        }
        i += 1;
    }
    None
}

/// The position `col` names in rows of `width` fields; `what` names the
/// column's role in messages (`label column`).
fn resolve(
    col: &Column,
    what: &str,
    width: usize,
    header: Option<&[String]>,
    source: &str,
) -> Result<usize> {
    match col {
        Column::Index(i) => {
            let w = width as isize;
            let j = if *i < 0 { i + w } else { *i };
            if j < 0 || j >= w {
                return Err(Error::Invalid(format!(
                    "read_csv: {source}: {what} {i} is out of range for rows of {w} fields; \
                     use 0..{w}, or -1 for the last"
                )));
            }
            Ok(j as usize)
        }
        Column::Name(name) => {
            let Some(header) = header else {
                return Err(Error::Invalid(format!(
                    "read_csv: {source}: {what} {name:?} is a name, but the options say the \
                     file has no header; set has_header, or pass the column's index"
                )));
            };
            header.iter().position(|h| h == name).ok_or_else(|| {
                Error::Invalid(format!(
                    "read_csv: {source}: {what} {name:?}: no column is named {name:?}; the \
                     header is {header:?}"
                ))
            })
        }
    }
}

/// Whether every field of a record reads as a number: such a first line
/// is data, not a header (see [`CsvOptions::has_header`]).
fn all_numbers(record: &::csv::ByteRecord) -> bool {
    record
        .iter()
        .all(|f| std::str::from_utf8(f).is_ok_and(|t| !t.is_empty() && t.parse::<f64>().is_ok()))
}

/// The byte offset after the first `n` lines.
fn after_lines(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    data.iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(n - 1)
        .map_or(data.len(), |(i, _)| i + 1)
}

/// Parses a CSV source (`source` names it in messages), with `label` taken
/// out as a separate 1-D tensor when given.
pub(crate) fn parse(
    data: &[u8],
    source: &str,
    opts: &CsvOptions,
    label: Option<&Column>,
) -> Result<Parsed> {
    let bool_refused = |what: &str| {
        Error::Invalid(format!(
            "read_csv: {source}: dtype bool is not supported{what}; read the values as \
             DType::I64 (or a float type) and compare them"
        ))
    };
    let mut values = Values::new(opts.dtype).ok_or_else(|| bool_refused(""))?;
    let base = after_lines(data, opts.skip_rows);
    let body = &data[base..];
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(opts.delimiter)
        .comment(opts.comment)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(body);
    let mut record = ::csv::ByteRecord::new();
    let mut line_of = Lines::new(data, opts.comment);
    let mut header: Option<Vec<String>> = None;
    // The row width, the line that set it, and the label's position.
    let mut shape: Option<(usize, u64, Option<usize>)> = None;
    let mut labels: Option<Values> = None;
    let mut rows = 0usize;
    loop {
        match rdr.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let at = e
                    .position()
                    .map(|p| format!(" at line {}", line_of.of_record(base as u64 + p.byte())))
                    .unwrap_or_default();
                return Err(Error::Format {
                    path: source.to_string(),
                    msg: format!("read_csv: cannot read the file{at}: {e}"),
                });
            }
        }
        let start = base + record.position().map_or(0, |p| p.byte() as usize);
        let line = record
            .position()
            .map_or(0, |p| line_of.of_record(base as u64 + p.byte()));
        // A quote never closed swallows the rest of the file into the last
        // record: say so, rather than what that does to the record.
        if base + rdr.position().byte() as usize >= data.len()
            && let Some((open, col)) = unterminated_quote(data, start, opts.delimiter)
        {
            let place = Place {
                source,
                header: header.as_deref(),
                line: line_of.of_record(open as u64),
            };
            return Err(place.error(
                col,
                "an unterminated quote: the quoted field that opens here is never \
                     closed, so the rest of the file would be read as this one field; close \
                     the quote (\") or remove it",
            ));
        }
        let is_header = shape.is_none()
            && match opts.has_header {
                Some(h) => h,
                None if all_numbers(&record) => {
                    let text: Vec<String> = record
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect();
                    return Err(Error::Format {
                        path: source.to_string(),
                        msg: format!(
                            "read_csv: line {line} ({:?}) holds only numbers, so it looks like \
                             data, but the options expect a header line (the default); reading \
                             it as one would drop a row. If the file has no header, use \
                             CsvOptions::new().has_header(false); if these numbers are the \
                             column names, use .has_header(true)",
                            text.join(&(opts.delimiter as char).to_string())
                        ),
                    });
                }
                None => true,
            };
        if is_header {
            header = Some(
                record
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect(),
            );
        }
        let (width, first, label_col) = match shape {
            Some(s) => s,
            None => {
                let w = record.len();
                let h = header.as_deref();
                let l = match label {
                    Some(c) => Some(resolve(c, "label column", w, h, source)?),
                    None => None,
                };
                let mut label_dtype = DType::I64;
                for (c, dt) in &opts.column_dtypes {
                    let j = resolve(c, "column", w, h, source)?;
                    if Some(j) == l {
                        label_dtype = *dt;
                    } else if *dt != opts.dtype {
                        let name = h
                            .and_then(|h| h.get(j))
                            .map_or(String::new(), |n| format!(" ({n:?})"));
                        return Err(Error::Invalid(format!(
                            "read_csv: {source}: column {}{name} is set to {dt}, but the \
                             features are read into one {} tensor, and a tensor has one dtype; \
                             read that column as the target with read_csv_xy(.., {}), or set \
                             .dtype(DType::{dt:?}) for all the features",
                            j + 1,
                            opts.dtype,
                            j
                        )));
                    }
                }
                if l.is_some() {
                    labels = Some(
                        Values::new(label_dtype).ok_or_else(|| bool_refused(" for the label"))?,
                    );
                }
                *shape.insert((w, line, l))
            }
        };
        if is_header {
            continue;
        }
        let place = Place {
            source,
            header: header.as_deref(),
            line,
        };
        if record.len() != width {
            let n = record.len();
            let origin = if header.is_some() {
                format!("the header (line {first}) has {width}")
            } else {
                format!("the first row (line {first}) has {width}")
            };
            let what = if n < width {
                format!("{} is missing", place.column(n))
            } else {
                format!(
                    "{} is extra (it holds {:?})",
                    place.column(width),
                    String::from_utf8_lossy(&record[width])
                )
            };
            return Err(Error::Format {
                path: source.to_string(),
                msg: format!(
                    "read_csv: line {line}: {what}: this row has {n} fields but {origin}; \
                     every row needs the same number of fields"
                ),
            });
        }
        for (col, field) in record.iter().enumerate() {
            match labels.as_mut() {
                Some(l) if Some(col) == label_col => l.push(&place, field, col, true)?,
                _ => values.push(&place, field, col, false)?,
            }
        }
        rows += 1;
    }
    if rows == 0 {
        let only = if header.is_some() {
            " (only a header line)"
        } else {
            ""
        };
        return Err(Error::Invalid(format!(
            "read_csv: {source} has no data rows{only}"
        )));
    }
    let (width, _, label_col) = shape.expect("a row was read");
    let cols = width - usize::from(label_col.is_some());
    Ok(Parsed {
        features: values.into_tensor(&[rows, cols]),
        labels: labels.map(|l| l.into_tensor(&[rows])),
    })
}
