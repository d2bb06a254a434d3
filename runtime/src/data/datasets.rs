//! The bundled data sets, and [`TabularDataset`], the features-and-labels
//! form they come in.
//!
//! Three small classic classification sets ship inside the crate (from the
//! UCI Machine Learning Repository, CC BY 4.0; see `runtime/data/README.md`):
//!
//! | function | samples | features | classes |
//! |---|---|---|---|
//! | [`breast_cancer`] | 569 | 30 | 2 (malignant, benign) |
//! | [`digits`] | 1797 | 64 (8x8 pixels, 0-16) | 10 (`"0"`..`"9"`) |
//! | [`iris`] | 150 | 4 | 3 (setosa, versicolor, virginica) |
//!
//! ```
//! use deriv_runtime::data::DataLoader;
//! use deriv_runtime::datasets;
//! let (train, test) = datasets::iris().standardized_split(0.2, 0);
//! assert_eq!((train.len(), test.len()), (120, 30));
//! let loader = DataLoader::new(train, 16).shuffle(true).seed(0);
//! for (x, y) in &loader {
//!     assert_eq!(x.shape()[1], 4);
//!     assert_eq!(y.dtype(), deriv_runtime::DType::I64);
//! }
//! ```

use std::path::Path;

use super::csv_read::{parse, Column, CsvOptions};
use super::dataset::{check_index, gather_rows, Dataset};
use super::split::{shuffled_indices, stratified_indices};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use crate::Device;

pub use super::scaler::StandardScaler;

/// A classification data set held in memory: `features` `[n, d]` (f32 for
/// the bundled sets), integer class `targets` `[n]` (i64) and the name of
/// each class.
///
/// A sample is `(features[i], targets[i])` (shapes `[d]` and `[]`); a batch
/// is gathered with one `index_select` per tensor.
#[derive(Clone, Debug)]
pub struct TabularDataset {
    /// The features, one row per sample.
    pub features: Tensor,
    /// The class index of each sample (i64).
    pub targets: Tensor,
    /// The name of each class; class `k` is `class_names[k]`.
    pub class_names: Vec<String>,
}

impl TabularDataset {
    /// A data set from `[n, d]` features, `[n]` i64 targets and the class
    /// names (panics when the shapes or dtypes do not fit together).
    #[track_caller]
    pub fn new(features: Tensor, targets: Tensor, class_names: Vec<String>) -> Self {
        assert!(
            features.ndim() == 2,
            "TabularDataset::new: features must be 2-D [samples, features], got shape {:?}",
            features.shape()
        );
        assert!(
            targets.ndim() == 1 && targets.shape()[0] == features.shape()[0],
            "TabularDataset::new: targets must be 1-D with one entry per sample ({}), got \
             shape {:?}",
            features.shape()[0],
            targets.shape()
        );
        assert!(
            targets.dtype() == DType::I64,
            "TabularDataset::new: targets must be i64 class indices, got {}; convert them \
             with .to_dtype(DType::I64)",
            targets.dtype()
        );
        let ds = TabularDataset {
            features,
            targets,
            class_names,
        };
        ds.labels("TabularDataset::new");
        ds
    }

    /// The targets as class indices, checked: a negative one panics with
    /// the sample, the value and the fix (the fields are public, so a data
    /// set built by hand is checked where its labels are used).
    #[track_caller]
    fn labels(&self, op: &str) -> Vec<usize> {
        self.targets
            .to_vec::<i64>()
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                usize::try_from(t).unwrap_or_else(|_| {
                    panic!(
                        "{op}: the target of sample {i} is {t}, but class labels must be 0, 1, \
                         ..., num_classes - 1; relabel the classes (for -1/+1 labels, \
                         `targets.gt_scalar(0.0).to_dtype(DType::I64)` maps them to 0/1)"
                    )
                })
            })
            .collect()
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.features.shape()[0]
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of features per sample (`d`).
    pub fn num_features(&self) -> usize {
        self.features.shape()[1]
    }

    /// The number of classes: the number of class names, or (without names)
    /// one more than the largest target. Panics on a negative target.
    #[track_caller]
    pub fn num_classes(&self) -> usize {
        self.classes_of(&self.labels("num_classes"))
    }

    fn classes_of(&self, labels: &[usize]) -> usize {
        if !self.class_names.is_empty() || self.is_empty() {
            return self.class_names.len();
        }
        labels.iter().max().map_or(0, |m| m + 1)
    }

    /// How many samples each class has (index = class). Panics on a
    /// negative target.
    #[track_caller]
    pub fn class_counts(&self) -> Vec<usize> {
        let labels = self.labels("class_counts");
        let mut counts = vec![0; self.classes_of(&labels)];
        for t in labels {
            if t >= counts.len() {
                counts.resize(t + 1, 0);
            }
            counts[t] += 1;
        }
        counts
    }

    /// The samples at `indices`, in that order (class names kept).
    #[track_caller]
    pub fn select(&self, indices: &[usize]) -> TabularDataset {
        let (features, targets) = gather_rows(
            &(self.features.clone(), self.targets.clone()),
            indices,
            self.len(),
        );
        TabularDataset {
            features,
            targets,
            class_names: self.class_names.clone(),
        }
    }

    /// A copy with both tensors on `device`.
    pub fn to(&self, device: &Device) -> TabularDataset {
        TabularDataset {
            features: self.features.to(device),
            targets: self.targets.to(device),
            class_names: self.class_names.clone(),
        }
    }

    /// Splits into a shuffled train set and test set, like scikit-learn's
    /// `train_test_split(shuffle=True)`: the test set has
    /// `ceil(test_fraction * n)` samples, the train set the rest; the order is
    /// a permutation drawn from a [`Generator`](crate::Generator) seeded with `seed`, the test
    /// set taking its first samples. Panics unless `0 < test_fraction < 1`
    /// leaves both sets non-empty.
    ///
    /// ```
    /// let (train, test) = deriv_runtime::datasets::iris().train_test_split(0.2, 42);
    /// assert_eq!((train.len(), test.len()), (120, 30));
    /// ```
    #[track_caller]
    pub fn train_test_split(
        &self,
        test_fraction: f64,
        seed: u64,
    ) -> (TabularDataset, TabularDataset) {
        self.labels("train_test_split");
        let (train, test) = shuffled_indices("train_test_split", self.len(), test_fraction, seed);
        (self.select(&train), self.select(&test))
    }

    /// Like [`train_test_split`](Self::train_test_split), but each class
    /// keeps (as nearly as whole samples allow) its share in both sets, like
    /// scikit-learn's `train_test_split(stratify=y)`: the train set's count
    /// of each class is `floor(n_train * count / n)` plus one for the classes
    /// with the largest remainders (the earlier class on ties), the test set
    /// gets the rest of each class, and both are shuffled (as
    /// [`data::stratified_split`](super::stratified_split) does for plain
    /// tensors).
    ///
    /// ```
    /// let (train, test) = deriv_runtime::datasets::iris().stratified_split(0.2, 0);
    /// assert_eq!(train.class_counts(), vec![40, 40, 40]);
    /// assert_eq!(test.class_counts(), vec![10, 10, 10]);
    /// ```
    #[track_caller]
    pub fn stratified_split(
        &self,
        test_fraction: f64,
        seed: u64,
    ) -> (TabularDataset, TabularDataset) {
        // A bad label panics here, not in the training it would feed.
        self.labels("stratified_split");
        let labels = self.targets.to_vec::<i64>();
        let (train, test) =
            stratified_indices("stratified_split", &labels, self.len(), test_fraction, seed);
        (self.select(&train), self.select(&test))
    }

    /// [`train_test_split`](Self::train_test_split), then both sets
    /// standardised with a [`StandardScaler`] fitted on the train set only
    /// (so no statistic of the test set leaks into training).
    ///
    /// ```
    /// let (train, _test) = deriv_runtime::datasets::iris().standardized_split(0.2, 42);
    /// let m = train.features.mean_dim(0, false).abs().max().item();
    /// assert!(m < 1e-5);
    /// ```
    #[track_caller]
    pub fn standardized_split(
        &self,
        test_fraction: f64,
        seed: u64,
    ) -> (TabularDataset, TabularDataset) {
        self.labels("standardized_split");
        let (mut train, mut test) = self.train_test_split(test_fraction, seed);
        let scaler = StandardScaler::fit(&train.features);
        train.features = scaler.transform(&train.features);
        test.features = scaler.transform(&test.features);
        (train, test)
    }
}

impl Dataset for TabularDataset {
    type Item = (Tensor, Tensor);
    fn len(&self) -> usize {
        TabularDataset::len(self)
    }
    #[track_caller]
    fn get(&self, index: usize) -> (Tensor, Tensor) {
        check_index("TabularDataset", index, self.len());
        let i = index as isize;
        (self.features.select(0, i), self.targets.select(0, i))
    }
    #[track_caller]
    fn get_batch(&self, indices: &[usize]) -> (Tensor, Tensor) {
        gather_rows(
            &(self.features.clone(), self.targets.clone()),
            indices,
            self.len(),
        )
    }
}

/// Parses the project's tabular format: a first line
/// `N_SAMPLES,N_FEATURES,CLASS_NAME...` (when `class_names` is `None`), then
/// rows of the features and an integer class label.
fn parse_tabular(
    data: &[u8],
    source: &str,
    class_names: Option<Vec<String>>,
) -> Result<TabularDataset> {
    let bad = |msg: String| Error::Format {
        path: source.to_string(),
        msg: format!("TabularDataset::from_csv: {msg}"),
    };
    let opts = CsvOptions::default().has_header(false);
    let (opts, meta) = match class_names {
        Some(names) => (opts, (None, names)),
        None => {
            let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
            let first = String::from_utf8_lossy(first);
            let fields: Vec<&str> = first.trim().split(',').map(str::trim).collect();
            let count = |i: usize| fields.get(i).and_then(|f| f.parse::<usize>().ok());
            let (Some(n), Some(d)) = (count(0), count(1)) else {
                return Err(bad(format!(
                    "line 1 must be N_SAMPLES,N_FEATURES,CLASS_NAME... (e.g. \
                     150,4,setosa,versicolor,virginica), got {:?}; for another layout use \
                     read_csv_xy and TabularDataset::new",
                    first.trim()
                )));
            };
            let names = fields[2..].iter().map(|s| s.to_string()).collect();
            (opts.skip_rows(1), (Some((n, d)), names))
        }
    };
    let parsed = parse(data, source, &opts, Some(&Column::Index(-1)))?;
    let (features, targets) = (
        parsed.features,
        parsed.labels.expect("labels were asked for"),
    );
    let (promised, class_names) = meta;
    if let Some((n, d)) = promised
        && features.shape() != [n, d]
    {
        return Err(bad(format!(
            "line 1 promises {n} samples of {d} features, but the file has {} rows of \
                 {} features (and a label)",
            features.shape()[0],
            features.shape()[1]
        )));
    }
    let c = class_names.len() as i64;
    if let Some((i, &y)) = targets
        .to_vec::<i64>()
        .iter()
        .enumerate()
        .find(|&(_, &y)| y < 0 || (c > 0 && y >= c))
    {
        return Err(bad(format!(
            "sample {i} has class label {y}, but labels must be class indices in 0..{c} \
             (one per class name on line 1: {class_names:?})"
        )));
    }
    Ok(TabularDataset::new(features, targets, class_names))
}

impl TabularDataset {
    /// Reads a file in the format of the bundled data sets: a first line
    /// `N_SAMPLES,N_FEATURES,CLASS_NAME_0,CLASS_NAME_1,...`, then one line
    /// per sample with its `N_FEATURES` values and its class index (0-based).
    /// Features are f32. Any problem is an `Err` naming the file and what is
    /// wrong: a first line of another form, a count that does not match the
    /// rows, a label outside `0..number of class names`, or a bad value (with
    /// its line and column).
    ///
    /// ```
    /// use deriv_runtime::data::TabularDataset;
    /// let path = std::env::temp_dir().join("deriv_from_csv_doc.csv");
    /// std::fs::write(&path, "3,2,cat,dog\n0.5,1.5,0\n2,3,1\n4,5,1\n").unwrap();
    /// let ds = TabularDataset::from_csv(&path)?;
    /// assert_eq!((ds.len(), ds.num_features(), ds.num_classes()), (3, 2, 2));
    /// assert_eq!(ds.class_names, vec!["cat", "dog"]);
    /// assert_eq!(ds.targets.to_vec::<i64>(), vec![0, 1, 1]);
    /// # Ok::<(), deriv_runtime::Error>(())
    /// ```
    pub fn from_csv(path: impl AsRef<Path>) -> Result<TabularDataset> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            msg: format!("TabularDataset::from_csv: cannot read the file: {e}"),
        })?;
        parse_tabular(&data, &path.display().to_string(), None)
    }
}

/// Parses a bundled file (`class_names`: for a file without the first line).
fn bundled(name: &str, text: &str, class_names: Option<Vec<String>>) -> TabularDataset {
    parse_tabular(text.as_bytes(), &format!("{name} (bundled)"), class_names)
        .unwrap_or_else(|e| panic!("bundled data set {name} is corrupt: {e}"))
}

/// Breast Cancer Wisconsin (Diagnostic): 569 samples of 30 features of cell
/// nuclei from a fine-needle aspirate image, classes 0 = `"malignant"`
/// (212 samples), 1 = `"benign"` (357). Features are f32, unscaled (their
/// ranges differ by orders of magnitude, so standardise them, e.g. with
/// [`TabularDataset::standardized_split`]).
///
/// ```
/// let ds = deriv_runtime::datasets::breast_cancer();
/// assert_eq!((ds.len(), ds.num_features(), ds.num_classes()), (569, 30, 2));
/// ```
pub fn breast_cancer() -> TabularDataset {
    bundled(
        "breast_cancer.csv",
        include_str!("../../data/breast_cancer.csv"),
        None,
    )
}

/// Optical Recognition of Handwritten Digits (the UCI test part, as in
/// scikit-learn's `load_digits`): 1797 images of 8x8 pixels, row-major, values
/// 0-16 as f32, classes `"0"`..`"9"`.
///
/// ```
/// let ds = deriv_runtime::datasets::digits();
/// assert_eq!((ds.len(), ds.num_features(), ds.num_classes()), (1797, 64, 10));
/// ```
pub fn digits() -> TabularDataset {
    bundled(
        "digits.csv",
        include_str!("../../data/digits.csv"),
        Some((0..10).map(|d| d.to_string()).collect()),
    )
}

/// Fisher's iris flowers: 150 samples of 4 features (sepal length, sepal
/// width, petal length, petal width, in cm) as f32, 50 of each class
/// `"setosa"`, `"versicolor"`, `"virginica"`.
///
/// ```
/// let ds = deriv_runtime::datasets::iris();
/// assert_eq!((ds.len(), ds.num_features(), ds.num_classes()), (150, 4, 3));
/// ```
pub fn iris() -> TabularDataset {
    bundled("iris.csv", include_str!("../../data/iris.csv"), None)
}
