//! The data layer: bundled data sets, CSV reading, datasets, DataLoader,
//! random_split, StandardScaler, train/test splits.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use deriv::data::{
    random_split, read_csv, read_csv_xy, Collate, CsvOptions, DataLoader, Dataset, IterableDataset,
    IterableLoader, StandardScaler, TabularDataset, TensorDataset,
};
use deriv::{datasets, DType, Generator, Tensor};

// ----- helpers -----

/// A bundled CSV, parsed here by hand (independently of deriv's reader):
/// the optional `N,D,CLASSES...` line and the rows as (features, label).
/// One row of a bundled CSV: its features and label.
type Row = (Vec<f32>, i64);

fn bundled_csv(name: &str, has_meta: bool) -> (Option<Vec<String>>, Vec<Row>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("runtime/data")
        .join(name);
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let meta = has_meta.then(|| {
        lines
            .next()
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect()
    });
    let rows = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let (x, y) = f.split_at(f.len() - 1);
            (
                x.iter().map(|v| v.parse::<f32>().unwrap()).collect(),
                y[0].parse::<i64>().unwrap(),
            )
        })
        .collect();
    (meta, rows)
}

fn check_against_csv(ds: &TabularDataset, rows: &[Row]) {
    let d = rows[0].0.len();
    assert_eq!(ds.features.shape(), &[rows.len(), d]);
    assert_eq!(ds.features.dtype(), DType::F32);
    assert_eq!(ds.targets.shape(), &[rows.len()]);
    assert_eq!(ds.targets.dtype(), DType::I64);
    let x: Vec<f32> = rows.iter().flat_map(|r| r.0.clone()).collect();
    let y: Vec<i64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(ds.features.to_vec::<f32>(), x);
    assert_eq!(ds.targets.to_vec::<i64>(), y);
}

/// A fresh directory under the system temp dir for this test.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deriv_data_{}_{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn err_of(r: deriv::Result<impl std::fmt::Debug>) -> String {
    r.expect_err("expected an error").to_string()
}

fn assert_contains(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
    }
}

/// Rows 0..n: features `[i, 10 i]` (f32), label `i` (i64).
fn indexed(n: usize) -> TensorDataset<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..n).flat_map(|i| [i as f32, 10.0 * i as f32]).collect();
    let y: Vec<i64> = (0..n as i64).collect();
    TensorDataset::new((Tensor::from_vec(x, [n, 2]), Tensor::from_vec(y, [n])))
}

/// The label lists of one epoch.
fn epoch_labels(it: impl Iterator<Item = (Tensor, Tensor)>) -> Vec<Vec<i64>> {
    it.map(|(x, y)| {
        let ys = y.to_vec::<i64>();
        // Features and labels stay paired.
        let xs = x.to_vec::<f32>();
        for (k, &l) in ys.iter().enumerate() {
            assert_eq!((xs[2 * k], xs[2 * k + 1]), (l as f32, 10.0 * l as f32));
        }
        ys
    })
    .collect()
}

fn labels_of(loader: &DataLoader<TensorDataset<(Tensor, Tensor)>>) -> Vec<Vec<i64>> {
    epoch_labels(loader.iter())
}

/// Runs `f` on another thread and fails (instead of hanging) if it takes
/// more than 60 s.
fn within_a_minute<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the loader hung (or panicked)")
}

/// The message of the panic `f` must raise.
fn panic_of<R>(f: impl FnOnce() -> R) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic"),
        Err(p) => panic_message(p),
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// ----- bundled data sets -----

#[test]
fn iris_matches_its_csv() {
    let (meta, rows) = bundled_csv("iris.csv", true);
    let ds = datasets::iris();
    check_against_csv(&ds, &rows);
    assert_eq!(meta.unwrap()[..2], ["150", "4"]);
    assert_eq!(ds.class_names, ["setosa", "versicolor", "virginica"]);
    assert_eq!((ds.len(), ds.num_features(), ds.num_classes()), (150, 4, 3));
    assert_eq!(ds.class_counts(), vec![50, 50, 50]);
    // First and last rows as printed in the file.
    let (x0, y0) = ds.get(0);
    assert_eq!(
        (x0.to_vec::<f32>(), y0.item()),
        (vec![5.1, 3.5, 1.4, 0.2], 0.0)
    );
    let (x, y) = ds.get(149);
    assert_eq!(
        (x.to_vec::<f32>(), y.item()),
        (vec![5.9, 3.0, 5.1, 1.8], 2.0)
    );
}

#[test]
fn breast_cancer_matches_its_csv() {
    let (meta, rows) = bundled_csv("breast_cancer.csv", true);
    let ds = datasets::breast_cancer();
    check_against_csv(&ds, &rows);
    assert_eq!(meta.unwrap()[..2], ["569", "30"]);
    assert_eq!(ds.class_names, ["malignant", "benign"]);
    assert_eq!(
        (ds.len(), ds.num_features(), ds.num_classes()),
        (569, 30, 2)
    );
    assert_eq!(ds.class_counts(), vec![212, 357]);
    let (x0, y0) = ds.get(0);
    let x0 = x0.to_vec::<f32>();
    assert_eq!(&x0[..4], &[17.99, 10.38, 122.8, 1001.0]);
    assert_eq!(x0[29], 0.1189);
    assert_eq!(y0.item(), 0.0);
}

#[test]
fn digits_matches_its_csv() {
    let (_, rows) = bundled_csv("digits.csv", false);
    let ds = datasets::digits();
    check_against_csv(&ds, &rows);
    assert_eq!(
        (ds.len(), ds.num_features(), ds.num_classes()),
        (1797, 64, 10)
    );
    let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    assert_eq!(ds.class_names, names);
    // Counts as in scikit-learn's load_digits (np.bincount(y)).
    assert_eq!(
        ds.class_counts(),
        vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
    let (x0, y0) = ds.get(0);
    let x0 = x0.to_vec::<f32>();
    assert_eq!(&x0[..8], &[0., 0., 5., 13., 9., 1., 0., 0.]);
    assert_eq!(y0.item(), 0.0);
    let max = ds.features.max().item();
    assert_eq!(max, 16.0);
}

#[test]
fn tabular_dataset_batches_gather_rows() {
    let ds = datasets::iris();
    let (x, y) = ds.get_batch(&[149, 0, 50]);
    assert_eq!(x.shape(), &[3, 4]);
    let mut want = ds.get(149).0.to_vec::<f32>();
    want.extend(ds.get(0).0.to_vec::<f32>());
    want.extend(ds.get(50).0.to_vec::<f32>());
    assert_eq!(x.to_vec::<f32>(), want);
    assert_eq!(y.to_vec::<i64>(), vec![2, 0, 1]);
    // The fast path equals collating the samples.
    let (cx, cy) = <(Tensor, Tensor)>::collate(vec![ds.get(149), ds.get(0), ds.get(50)]);
    assert_eq!(cx.to_vec::<f32>(), x.to_vec::<f32>());
    assert_eq!(cy.to_vec::<i64>(), y.to_vec::<i64>());
}

// ----- CSV -----

#[test]
fn read_csv_reads_good_files() {
    let dir = temp_dir("good");
    let p = write(&dir, "good.csv", "a,b,c\n1,2,3\n4.5,-6,7e1\n");
    let t = read_csv(&p, &CsvOptions::default()).unwrap();
    assert_eq!(t.shape(), &[2, 3]);
    assert_eq!(t.dtype(), DType::F32);
    assert_eq!(t.to_vec::<f32>(), vec![1., 2., 3., 4.5, -6., 70.]);

    // No header, semicolons, spaces around fields, a blank line, f64.
    let p = write(&dir, "semi.csv", "0.1; 0.2\n\n0.3 ;0.4\n");
    let opts = CsvOptions::default()
        .has_header(false)
        .delimiter(b';')
        .dtype(DType::F64);
    let t = read_csv(&p, &opts).unwrap();
    assert_eq!(t.dtype(), DType::F64);
    assert_eq!(t.to_vec::<f64>(), vec![0.1, 0.2, 0.3, 0.4]);

    let p = write(&dir, "ints.csv", "1,2\n3,4\n");
    let t = read_csv(
        &p,
        &CsvOptions::default().has_header(false).dtype(DType::I64),
    )
    .unwrap();
    assert_eq!(
        (t.dtype(), t.to_vec::<i64>()),
        (DType::I64, vec![1, 2, 3, 4])
    );

    let p = write(&dir, "xy.csv", "x1,label,x2\n1,0,2\n3,1,4\n5,2.0,6\n");
    let (x, y) = read_csv_xy(&p, &CsvOptions::default(), "label").unwrap();
    assert_eq!((x.shape(), x.dtype()), (&[3, 2][..], DType::F32));
    assert_eq!(x.to_vec::<f32>(), vec![1., 2., 3., 4., 5., 6.]);
    assert_eq!((y.dtype(), y.to_vec::<i64>()), (DType::I64, vec![0, 1, 2]));
    let (x, y) = read_csv_xy(&p, &CsvOptions::default(), 1).unwrap();
    assert_eq!(x.to_vec::<f32>(), vec![1., 2., 3., 4., 5., 6.]);
    assert_eq!(y.to_vec::<i64>(), vec![0, 1, 2]);
    let (x, y) = read_csv_xy(&p, &CsvOptions::default(), -1).unwrap();
    assert_eq!(x.to_vec::<f32>(), vec![1., 0., 3., 1., 5., 2.]);
    assert_eq!(y.to_vec::<i64>(), vec![2, 4, 6]);

    // Comment lines are skipped (and counted in error messages' line numbers).
    let p = write(&dir, "comments.csv", "# made by hand\nv\n# x\n1\n2\n");
    let opts = CsvOptions::default().comment(Some(b'#'));
    let t = read_csv(&p, &opts).unwrap();
    assert_eq!((t.shape(), t.to_vec::<f32>()), (&[2, 1][..], vec![1., 2.]));
    let p = write(&dir, "comments2.csv", "# made by hand\nv\n# x\n\n1\nz\n");
    let msg = read_csv(&p, &opts).unwrap_err().to_string();
    assert!(msg.contains("line 6, column 1 (\"v\")"), "{msg}");
    // Windows line ends.
    let p = write(&dir, "crlf.csv", "a,b\r\n1,2\r\n3,q\r\n");
    let msg = read_csv(&p, &CsvOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 3, column 2 (\"b\"): cannot parse \"q\""),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn read_csv_errors_name_file_line_column_and_text() {
    let dir = temp_dir("bad");
    let opts = CsvOptions::default();
    let file = |name: &str, text: &str| write(&dir, name, text);

    // A non-numeric value.
    let p = file("word.csv", "a,b,c\n1,2,3\n4,five,6\n");
    let msg = err_of(read_csv(&p, &opts));
    assert_contains(
        &msg,
        &[
            &p.display().to_string(),
            "line 3, column 2 (\"b\")",
            "\"five\"",
        ],
    );

    // Too few fields, then too many.
    let p = file("short.csv", "a,b,c\n1,2,3\n4,5\n");
    let msg = err_of(read_csv(&p, &opts));
    assert_contains(
        &msg,
        &[
            "short.csv",
            "line 3",
            "column 3 (\"c\") is missing",
            "2 fields",
            "header (line 1) has 3",
        ],
    );
    let p = file("long.csv", "1,2\n3,4\n5,6,7\n");
    let msg = err_of(read_csv(&p, &opts.clone().has_header(false)));
    assert_contains(
        &msg,
        &[
            "long.csv",
            "line 3",
            "column 3 is extra",
            "\"7\"",
            "first row (line 1) has 2",
        ],
    );

    // An empty field, found past a blank line (lines count from the file's start).
    let p = file("empty.csv", "a,b\n1,2\n\n3,\n");
    let msg = err_of(read_csv(&p, &opts));
    assert_contains(
        &msg,
        &["empty.csv", "line 4, column 2 (\"b\")", "empty field"],
    );

    // No header: columns by number only.
    let p = file("nohead.csv", "1,2\nx,4\n");
    let msg = err_of(read_csv(&p, &opts.clone().has_header(false)));
    assert_contains(&msg, &["nohead.csv", "line 2, column 1:", "\"x\""]);

    // A fractional or non-numeric label.
    let p = file("label.csv", "x,label\n1.5,0\n2.5,1.5\n");
    let msg = err_of(read_csv_xy(&p, &opts, "label"));
    assert_contains(
        &msg,
        &[
            "label.csv",
            "line 3, column 2 (\"label\")",
            "\"1.5\"",
            "whole number",
        ],
    );
    let p = file("label2.csv", "x,label\n1.5,cat\n");
    let msg = err_of(read_csv_xy(&p, &opts, -1));
    assert_contains(&msg, &["line 2, column 2 (\"label\")", "\"cat\""]);

    // An integer dtype refuses fractions.
    let p = file("frac.csv", "1,2.5\n");
    let msg = err_of(read_csv(
        &p,
        &opts.clone().has_header(false).dtype(DType::I64),
    ));
    assert_contains(&msg, &["frac.csv", "line 1, column 2", "\"2.5\""]);

    // Label columns that do not exist.
    let p = file("cols.csv", "a,b\n1,2\n");
    let msg = err_of(read_csv_xy(&p, &opts, "c"));
    assert_contains(&msg, &["no column is named \"c\"", "[\"a\", \"b\"]"]);
    let msg = err_of(read_csv_xy(&p, &opts, 2));
    assert_contains(&msg, &["label column 2 is out of range", "2 fields"]);
    let msg = err_of(read_csv_xy(&p, &opts, -3));
    assert_contains(&msg, &["label column -3 is out of range"]);
    let msg = err_of(read_csv_xy(&p, &opts.clone().has_header(false), "a"));
    assert_contains(&msg, &["no header"]);

    // Only a header; an empty file; bool dtype.
    let p = file("head.csv", "a,b\n");
    assert_contains(&err_of(read_csv(&p, &opts)), &["head.csv", "no data rows"]);
    let p = file("nothing.csv", "");
    assert_contains(
        &err_of(read_csv(&p, &opts)),
        &["nothing.csv", "no data rows"],
    );
    let p = file("bool.csv", "1\n");
    let msg = err_of(read_csv(&p, &opts.clone().dtype(DType::Bool)));
    assert_contains(&msg, &["bool is not supported"]);

    // A missing file names its path.
    let missing = dir.join("no_such_file.csv");
    let msg = err_of(read_csv(&missing, &opts));
    assert_contains(&msg, &["cannot read", &missing.display().to_string()]);
    let msg = err_of(read_csv_xy(&missing, &opts, -1));
    assert_contains(&msg, &[&missing.display().to_string()]);
    std::fs::remove_dir_all(dir).unwrap();
}

// ----- collate and datasets -----

#[test]
fn collate_stacks_tensors_tuples_vecs_and_numbers() {
    let a = Tensor::from_vec(vec![1.0f32, 2.], [2]);
    let b = Tensor::from_vec(vec![3.0f32, 4.], [2]);
    let t = Tensor::collate(vec![a.clone(), b.clone()]);
    assert_eq!(
        (t.shape(), t.to_vec::<f32>()),
        (&[2, 2][..], vec![1., 2., 3., 4.])
    );

    let items = vec![
        (a.clone(), Tensor::scalar(0i64), Tensor::scalar(0.5f32)),
        (b.clone(), Tensor::scalar(1i64), Tensor::scalar(1.5f32)),
    ];
    let (x, y, w) = <(Tensor, Tensor, Tensor)>::collate(items);
    assert_eq!(x.shape(), &[2, 2]);
    assert_eq!((y.shape(), y.to_vec::<i64>()), (&[2][..], vec![0, 1]));
    assert_eq!(w.to_vec::<f32>(), vec![0.5, 1.5]);

    let (x, y) = <(Tensor, Tensor)>::collate(vec![(a.clone(), b.clone()), (b.clone(), a.clone())]);
    assert_eq!(x.to_vec::<f32>(), vec![1., 2., 3., 4.]);
    assert_eq!(y.to_vec::<f32>(), vec![3., 4., 1., 2.]);

    let v = Vec::<Tensor>::collate(vec![vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]]);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].to_vec::<f32>(), vec![1., 2., 3., 4.]);
    assert_eq!(v[1].to_vec::<f32>(), vec![3., 4., 1., 2.]);

    let (x, y) = <(Tensor, i64)>::collate(vec![(a.clone(), 3), (b.clone(), 7)]);
    assert_eq!(x.shape(), &[2, 2]);
    assert_eq!((y.dtype(), y.to_vec::<i64>()), (DType::I64, vec![3, 7]));

    let msg = panic_of(|| Tensor::collate(vec![a.clone(), Tensor::zeros([3])]));
    assert_contains(&msg, &["collate", "[2]", "[3]"]);
}

#[test]
fn tensor_dataset_get_and_batch() {
    let ds = indexed(5);
    assert_eq!((ds.len(), ds.is_empty()), (5, false));
    let (x, y) = ds.get(3);
    assert_eq!((x.to_vec::<f32>(), y.item()), (vec![3., 30.], 3.0));
    let (x, y) = ds.get_batch(&[4, 1, 1]);
    assert_eq!(x.to_vec::<f32>(), vec![4., 40., 1., 10., 1., 10.]);
    assert_eq!(y.to_vec::<i64>(), vec![4, 1, 1]);
    // A batch is a copy: writing it leaves the dataset alone.
    x.detach().zero_();
    assert_eq!(ds.get(4).0.to_vec::<f32>(), vec![4., 40.]);

    // A single tensor and a Vec of tensors work too.
    let single = TensorDataset::new(Tensor::arange(0i64, 4, 1));
    assert_eq!(single.get_batch(&[2, 3]).to_vec::<i64>(), vec![2, 3]);
    let many = TensorDataset::new(vec![Tensor::zeros([4, 2]), Tensor::ones([4])]);
    let b = many.get_batch(&[0, 1, 2]);
    assert_eq!((b[0].shape(), b[1].shape()), (&[3, 2][..], &[3][..]));
}

#[test]
fn tensor_dataset_refuses_mismatched_sizes() {
    let msg = panic_of(|| TensorDataset::new((Tensor::zeros([5, 3]), Tensor::zeros([4]))));
    assert_contains(
        &msg,
        &[
            "size mismatch",
            "5 samples",
            "[5, 3]",
            "tensor 1 has 4",
            "[4]",
        ],
    );
    assert_contains(
        &panic_of(|| indexed(3).get(3)),
        &["index 3 is out of range", "3 samples"],
    );
}

/// A dataset with the default (collating) get_batch.
struct Plain(usize);
impl Dataset for Plain {
    type Item = (Tensor, Tensor);
    fn len(&self) -> usize {
        self.0
    }
    fn get(&self, i: usize) -> (Tensor, Tensor) {
        let x = Tensor::from_vec(vec![i as f32, 10.0 * i as f32], [2]);
        (x, Tensor::scalar(i as i64))
    }
}

#[test]
fn default_get_batch_equals_tensor_dataset_fast_path() {
    let (fast, plain) = (indexed(7), Plain(7));
    for idx in [&[0usize, 1, 2][..], &[6, 0, 3, 3], &[5]] {
        let (fx, fy) = fast.get_batch(idx);
        let (px, py) = plain.get_batch(idx);
        assert_eq!((fx.shape(), fy.shape()), (px.shape(), py.shape()));
        assert_eq!(fx.to_vec::<f32>(), px.to_vec::<f32>());
        assert_eq!(fy.to_vec::<i64>(), py.to_vec::<i64>());
    }
}

// ----- DataLoader -----

#[test]
fn loader_batch_counts_and_sizes() {
    for (n, bs, drop_last, sizes) in [
        (10, 3, false, vec![3, 3, 3, 1]),
        (10, 3, true, vec![3, 3, 3]),
        (10, 5, false, vec![5, 5]),
        (10, 5, true, vec![5, 5]),
        (2, 5, false, vec![2]),
        (2, 5, true, vec![]),
    ] {
        let loader = DataLoader::new(indexed(n), bs).drop_last(drop_last);
        assert_eq!(
            loader.len(),
            sizes.len(),
            "n={n} bs={bs} drop_last={drop_last}"
        );
        let got: Vec<usize> = loader.iter().map(|(x, _)| x.shape()[0]).collect();
        assert_eq!(got, sizes, "n={n} bs={bs} drop_last={drop_last}");
        assert_eq!(loader.iter().len(), sizes.len());
    }
    // Without shuffling, samples come in order.
    let loader = DataLoader::new(indexed(7), 3);
    assert_eq!(
        labels_of(&loader),
        vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]
    );
    assert_contains(
        &panic_of(|| DataLoader::new(indexed(3), 0)),
        &["batch_size", "positive"],
    );
}

#[test]
fn shuffled_epochs_follow_the_seed_and_epoch() {
    let n = 23;
    let loader = DataLoader::new(indexed(n), 5).shuffle(true).seed(7);
    let e0 = labels_of(&loader);
    let e1 = labels_of(&loader);
    assert_eq!(loader.epoch(), 2);
    assert_ne!(e0, e1, "each epoch draws a new order");
    // Epoch e's order is Generator(seed + e)'s permutation, cut into batches.
    for (e, got) in [(0u64, &e0), (1, &e1)] {
        let perm = Generator::new(7 + e).permutation(n);
        let want: Vec<Vec<i64>> = perm
            .chunks(5)
            .map(|c| c.iter().map(|&i| i as i64).collect())
            .collect();
        assert_eq!(got, &want);
    }
    // Every sample exactly once per epoch.
    for epoch in [&e0, &e1] {
        let mut all: Vec<i64> = epoch.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..n as i64).collect::<Vec<_>>());
    }
    // The same seed gives the same epochs; another seed another order.
    let again = DataLoader::new(indexed(n), 5).shuffle(true).seed(7);
    assert_eq!((labels_of(&again), labels_of(&again)), (e0.clone(), e1));
    let other = DataLoader::new(indexed(n), 5).shuffle(true).seed(8);
    assert_ne!(labels_of(&other), e0);

    // drop_last: full batches only, no sample twice.
    let dl = DataLoader::new(indexed(n), 5)
        .shuffle(true)
        .seed(7)
        .drop_last(true);
    let got = labels_of(&dl);
    assert_eq!(got.len(), 4);
    let seen: HashSet<i64> = got.iter().flatten().copied().collect();
    assert_eq!(seen.len(), 20);
}

#[test]
fn unseeded_shuffle_follows_manual_seed() {
    deriv::manual_seed(3);
    let a = labels_of(&DataLoader::new(indexed(16), 4).shuffle(true));
    deriv::manual_seed(3);
    let b = labels_of(&DataLoader::new(indexed(16), 4).shuffle(true));
    assert_eq!(a, b);
}

#[test]
fn set_epoch_reproduces_an_uninterrupted_run() {
    let make = || DataLoader::new(indexed(30), 4).shuffle(true).seed(123);
    let full = make();
    let epochs: Vec<_> = (0..4).map(|_| labels_of(&full)).collect();
    // A run resumed at epoch 2.
    let resumed = make();
    resumed.set_epoch(2);
    assert_eq!(resumed.epoch(), 2);
    assert_eq!(labels_of(&resumed), epochs[2]);
    assert_eq!(labels_of(&resumed), epochs[3]);
    // Going back works as well.
    resumed.set_epoch(0);
    assert_eq!(labels_of(&resumed), epochs[0]);
}

#[test]
fn workers_give_the_same_batches_as_the_main_thread() {
    let n = 101;
    for (workers, prefetch) in [(1, 1), (2, 2), (3, 1), (4, 5), (50, 2)] {
        let main = DataLoader::new(indexed(n), 7).shuffle(true).seed(5);
        let bg = DataLoader::new(indexed(n), 7)
            .shuffle(true)
            .seed(5)
            .num_workers(workers)
            .prefetch(prefetch);
        for _epoch in 0..3 {
            assert_eq!(labels_of(&bg), labels_of(&main), "workers={workers}");
        }
    }
    // A dataset without the fast path, shared through an Arc, with drop_last.
    let ds = Arc::new(Plain(50));
    let main = DataLoader::new(ds.clone(), 6)
        .shuffle(true)
        .seed(1)
        .drop_last(true);
    let bg = DataLoader::new(ds, 6)
        .shuffle(true)
        .seed(1)
        .drop_last(true)
        .num_workers(3);
    assert_eq!(epoch_labels(bg.iter()), epoch_labels(main.iter()));
}

/// Counts the batches built, slowly.
struct Counting {
    built: Arc<AtomicUsize>,
}
impl Dataset for Counting {
    type Item = Tensor;
    fn len(&self) -> usize {
        100_000
    }
    fn get(&self, i: usize) -> Tensor {
        Tensor::scalar(i as i64)
    }
    fn get_batch(&self, indices: &[usize]) -> Tensor {
        self.built.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1));
        Tensor::from_vec(indices.iter().map(|&i| i as i64).collect(), [indices.len()])
    }
}

#[test]
fn dropping_an_iterator_stops_its_workers() {
    let built = Arc::new(AtomicUsize::new(0));
    let counter = built.clone();
    within_a_minute(move || {
        let loader = DataLoader::new(Counting { built: counter }, 10)
            .num_workers(3)
            .prefetch(2);
        assert_eq!(loader.len(), 10_000);
        let mut it = loader.iter();
        for k in 0..5 {
            assert_eq!(it.next().unwrap().to_vec::<i64>()[0], 10 * k);
        }
        drop(it); // joins the workers
                  // A fresh epoch still works after an abandoned one.
        let first: Vec<Tensor> = loader.iter().take(2).collect();
        assert_eq!(first[1].to_vec::<i64>()[0], 10);
    });
    // Workers only ran ahead by their prefetch (plus the batch in hand),
    // far from the 10 000 batches of a whole epoch.
    let n = built.load(Ordering::SeqCst);
    assert!(n <= 5 + 2 + 3 * 3 * 2, "{n} batches built");
}

/// Panics on sample 13.
struct Faulty;
impl Dataset for Faulty {
    type Item = Tensor;
    fn len(&self) -> usize {
        40
    }
    fn get(&self, i: usize) -> Tensor {
        assert!(i != 13, "sample 13 is corrupt");
        Tensor::scalar(i as f32)
    }
}

#[test]
fn a_worker_panic_reaches_the_caller() {
    let msg = within_a_minute(|| {
        let loader = DataLoader::new(Faulty, 4).num_workers(2);
        let r = catch_unwind(AssertUnwindSafe(|| loader.iter().count()));
        panic_message(r.unwrap_err())
    });
    assert_contains(&msg, &["sample 13 is corrupt"]);
}

// ----- random_split -----

#[test]
fn random_split_sizes_disjointness_and_determinism() {
    let parts = random_split(indexed(10), &[7, 3], 0);
    assert_eq!((parts[0].len(), parts[1].len()), (7, 3));
    // PyTorch's example: fractions [0.3, 0.3, 0.4] of 10 give 3, 3, 4.
    let parts = random_split(indexed(10), &[0.3, 0.3, 0.4], 0);
    let sizes: Vec<usize> = parts.iter().map(Dataset::len).collect();
    assert_eq!(sizes, vec![3, 3, 4]);
    // floor(11 * f) = 5, 3, 2; the one left over goes to the first part.
    let parts = random_split(indexed(11), &[0.5, 0.3, 0.2], 9);
    let sizes: Vec<usize> = parts.iter().map(Dataset::len).collect();
    assert_eq!(sizes, vec![6, 3, 2]);
    // Disjoint, covering everything, and read through the subsets.
    let mut seen = Vec::new();
    for p in &parts {
        let (_, y) = p.get_batch(&(0..p.len()).collect::<Vec<_>>());
        let ys = y.to_vec::<i64>();
        let direct: Vec<i64> = (0..p.len()).map(|i| p.get(i).1.item() as i64).collect();
        assert_eq!(ys, direct);
        assert_eq!(ys, p.indices.iter().map(|&i| i as i64).collect::<Vec<_>>());
        seen.extend(ys);
    }
    seen.sort();
    assert_eq!(seen, (0..11).collect::<Vec<_>>());
    // The split is the seeded permutation, cut in order.
    let perm = Generator::new(9).permutation(11);
    assert_eq!(parts[0].indices, perm[..6]);
    assert_eq!(parts[2].indices, perm[9..]);
    let again = random_split(indexed(11), &[0.5, 0.3, 0.2], 9);
    assert_eq!(again[1].indices, parts[1].indices);
    let other = random_split(indexed(11), &[0.5, 0.3, 0.2], 10);
    assert_ne!(other[0].indices, parts[0].indices);
    // Subsets load like any dataset.
    let loader = DataLoader::new(parts[0].clone(), 4);
    let got: Vec<i64> = labels_of_subset(&loader);
    assert_eq!(got, perm[..6].iter().map(|&i| i as i64).collect::<Vec<_>>());

    assert_contains(
        &panic_of(|| random_split(indexed(10), &[5, 4], 0)),
        &["sum to 9", "10 samples"],
    );
    assert_contains(
        &panic_of(|| random_split(indexed(10), &[0.5, 0.4], 0)),
        &["sum to 0.9", "not 1"],
    );
}

fn labels_of_subset<D: Dataset<Item = (Tensor, Tensor)> + 'static>(
    loader: &DataLoader<D>,
) -> Vec<i64> {
    loader.iter().flat_map(|(_, y)| y.to_vec::<i64>()).collect()
}

// ----- standardisation and splits -----

#[test]
fn standard_scaler_matches_a_hand_computation() {
    let rows = [
        [1.0f64, 10.0, 5.0],
        [2.0, 14.0, 5.0],
        [6.0, 9.0, 5.0],
        [3.0, 3.0, 5.0],
    ];
    let x = Tensor::from_vec(rows.concat(), [4, 3]);
    let scaler = StandardScaler::fit(&x);
    // Population statistics by hand; the constant third column gets scale 1.
    let mut mean = [0.0; 3];
    let mut std = [0.0; 3];
    for c in 0..3 {
        mean[c] = rows.iter().map(|r| r[c]).sum::<f64>() / 4.0;
        let var = rows.iter().map(|r| (r[c] - mean[c]).powi(2)).sum::<f64>() / 4.0;
        std[c] = if var == 0.0 { 1.0 } else { var.sqrt() };
    }
    assert_eq!(scaler.mean.dtype(), DType::F64);
    for c in 0..3 {
        assert!((scaler.mean.to_vec::<f64>()[c] - mean[c]).abs() < 1e-12);
        assert!((scaler.std.to_vec::<f64>()[c] - std[c]).abs() < 1e-12);
    }
    assert_eq!(std[0], (3.5f64).sqrt()); // values 1,2,6,3: mean 3, squares 4+1+9+0
    let new = Tensor::from_vec(vec![4.0f64, 8.0, 7.0], [1, 3]);
    let t = scaler.transform(&new).to_vec::<f64>();
    for c in 0..3 {
        let v = [4.0, 8.0, 7.0][c];
        assert!((t[c] - (v - mean[c]) / std[c]).abs() < 1e-12);
    }
    let back = scaler
        .inverse_transform(&scaler.transform(&x))
        .to_vec::<f64>();
    for (b, v) in back.iter().zip(rows.concat()) {
        assert!((b - v).abs() < 1e-12);
    }
    // Transformed training data: mean 0, population std 1 (0 for a constant).
    let (_, z) = StandardScaler::fit_transform(&x);
    let zm = z.mean_dim(0, false).to_vec::<f64>();
    let zs = z.std_dim(0, 0, false).to_vec::<f64>();
    assert!(zm.iter().all(|m| m.abs() < 1e-12), "{zm:?}");
    assert!((zs[0] - 1.0).abs() < 1e-12 && (zs[1] - 1.0).abs() < 1e-12 && zs[2] == 0.0);

    // f32 in, f32 statistics out.
    let s32 = StandardScaler::fit(&x.to_dtype(DType::F32));
    assert_eq!(s32.std.dtype(), DType::F32);
    assert!((s32.std.to_vec::<f32>()[0] - 3.5f32.sqrt()).abs() < 1e-6);
    assert_contains(
        &panic_of(|| scaler.transform(&Tensor::zeros([2, 4]).to_dtype(DType::F64))),
        &["[3]", "[4]"],
    );
}

/// n samples whose single feature is the sample's own index; targets cycle
/// through `classes`.
fn numbered(n: usize, classes: usize) -> TabularDataset {
    let x = Tensor::from_vec((0..n).map(|i| i as f32).collect(), [n, 1]);
    let y = Tensor::from_vec((0..n).map(|i| (i % classes) as i64).collect(), [n]);
    TabularDataset::new(x, y, (0..classes).map(|c| format!("c{c}")).collect())
}

fn ids(ds: &TabularDataset) -> Vec<usize> {
    ds.features
        .to_vec::<f32>()
        .iter()
        .map(|&v| v as usize)
        .collect()
}

#[test]
fn train_test_split_is_a_seeded_permutation() {
    let ds = numbered(25, 3);
    let (train, test) = ds.train_test_split(0.3, 11);
    // ceil(0.3 * 25) = 8 test samples, as scikit-learn.
    assert_eq!((train.len(), test.len()), (17, 8));
    let perm = Generator::new(11).permutation(25);
    assert_eq!(ids(&test), perm[..8]);
    assert_eq!(ids(&train), perm[8..]);
    // Targets stay with their rows; class names are kept.
    let ty = test.targets.to_vec::<i64>();
    for (id, t) in ids(&test).into_iter().zip(ty) {
        assert_eq!(t, (id % 3) as i64);
    }
    assert_eq!(train.class_names, ds.class_names);
    let (train2, _) = ds.train_test_split(0.3, 11);
    assert_eq!(ids(&train2), ids(&train));
    let (train3, _) = ds.train_test_split(0.3, 12);
    assert_ne!(ids(&train3), ids(&train));

    assert_contains(
        &panic_of(|| ds.train_test_split(1.0, 0)),
        &["test_fraction", "between 0 and 1"],
    );
}

#[test]
fn stratified_split_keeps_class_shares() {
    // 30 of class 0, 20 of class 1, 10 of class 2 (by repeating labels).
    let labels: Vec<i64> = (0..60)
        .map(|i| {
            if i < 30 {
                0
            } else if i < 50 {
                1
            } else {
                2
            }
        })
        .collect();
    let x = Tensor::from_vec((0..60).map(|i| i as f32).collect(), [60, 1]);
    let ds = TabularDataset::new(x, Tensor::from_vec(labels, [60]), vec![]);
    assert_eq!(ds.num_classes(), 3);
    let (train, test) = ds.stratified_split(0.25, 4);
    assert_eq!((train.len(), test.len()), (45, 15));
    // 45 * (30, 20, 10) / 60 = 22.5, 15, 7.5 -> 22, 15, 7 plus the largest
    // remainders (0.5 and 0.5, earlier class first): 23, 15, 7.
    assert_eq!(train.class_counts(), vec![23, 15, 7]);
    assert_eq!(test.class_counts(), vec![7, 5, 3]);
    let mut all = ids(&train);
    all.extend(ids(&test));
    all.sort();
    assert_eq!(all, (0..60).collect::<Vec<_>>());
    let (again, _) = ds.stratified_split(0.25, 4);
    assert_eq!(ids(&again), ids(&train));
}

#[test]
fn standardized_split_uses_train_statistics() {
    let ds = datasets::breast_cancer();
    let (train, test) = ds.standardized_split(0.25, 3);
    let (raw_train, raw_test) = ds.train_test_split(0.25, 3);
    assert_eq!((train.len(), test.len()), (426, 143));
    assert_eq!(
        train.targets.to_vec::<i64>(),
        raw_train.targets.to_vec::<i64>()
    );
    // Statistics of the raw train features, by hand in f64.
    let d = 30;
    let rows = raw_train.features.to_vec::<f32>();
    let n = rows.len() / d;
    let mut mean = vec![0.0f64; d];
    let mut std = vec![0.0f64; d];
    for c in 0..d {
        mean[c] = (0..n).map(|r| rows[r * d + c] as f64).sum::<f64>() / n as f64;
        std[c] = ((0..n)
            .map(|r| (rows[r * d + c] as f64 - mean[c]).powi(2))
            .sum::<f64>()
            / n as f64)
            .sqrt();
    }
    let check = |z: &TabularDataset, raw: &TabularDataset| {
        let (z, raw) = (z.features.to_vec::<f32>(), raw.features.to_vec::<f32>());
        for (i, (&zv, &rv)) in z.iter().zip(&raw).enumerate() {
            let c = i % d;
            let want = (rv as f64 - mean[c]) / std[c];
            assert!(
                (zv as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                "{zv} vs {want}"
            );
        }
    };
    check(&train, &raw_train);
    check(&test, &raw_test);
}

// ----- iterable datasets -----

/// The numbers 0..n (forever when `n` is None), as (x, x²) pairs.
struct Numbers(Option<i64>);
impl IterableDataset for Numbers {
    type Item = (Tensor, Tensor);
    fn iter(&self) -> Box<dyn Iterator<Item = (Tensor, Tensor)> + Send + '_> {
        let pair = |i: i64| (Tensor::scalar(i as f32), Tensor::scalar(i * i));
        match self.0 {
            Some(n) => Box::new((0..n).map(pair)),
            None => Box::new((0..).map(pair)),
        }
    }
}

#[test]
fn iterable_dataset_is_batched() {
    for prefetch in [0, 1, 3] {
        let loader = IterableLoader::new(Numbers(Some(10)), 4).prefetch(prefetch);
        for _pass in 0..2 {
            let batches: Vec<(Vec<f32>, Vec<i64>)> = loader
                .iter()
                .map(|(x, y)| (x.to_vec::<f32>(), y.to_vec::<i64>()))
                .collect();
            assert_eq!(
                batches,
                vec![
                    (vec![0., 1., 2., 3.], vec![0, 1, 4, 9]),
                    (vec![4., 5., 6., 7.], vec![16, 25, 36, 49]),
                    (vec![8., 9.], vec![64, 81]),
                ],
                "prefetch {prefetch}"
            );
        }
        let dropped = IterableLoader::new(Numbers(Some(10)), 4)
            .drop_last(true)
            .prefetch(prefetch);
        assert_eq!((&dropped).into_iter().count(), 2);
    }
}

#[test]
fn an_endless_stream_stops_when_its_iterator_is_dropped() {
    let sums = within_a_minute(|| {
        let loader = IterableLoader::new(Numbers(None), 3).prefetch(2);
        let sums: Vec<i64> = loader
            .iter()
            .take(3)
            .map(|(_, y)| y.sum().item() as i64)
            .collect();
        sums
    });
    assert_eq!(sums, vec![5, 50, 149]);
}

// ----- what a new user trips over: CSV options, the project's format, splits of tensors -----

/// A headerless numeric file is not silently one row short: the default
/// options refuse its first line with the two fixes, and each fix reads it.
#[test]
fn a_numeric_first_line_is_never_dropped_silently() {
    let dir = temp_dir("numeric_header");
    // 442 rows of one target, as in the diabetes file that lost a row.
    let text: String = (0..442).map(|i| format!("{}\n", 25 + i % 300)).collect();
    let p = write(&dir, "target.csv", &text);
    let msg = err_of(read_csv(&p, &CsvOptions::default()));
    assert_contains(
        &msg,
        &[
            "target.csv",
            "line 1 (\"25\") holds only numbers",
            "has_header(false)",
            ".has_header(true)",
        ],
    );
    let t = read_csv(&p, &CsvOptions::default().has_header(false)).unwrap();
    assert_eq!(t.shape(), &[442, 1]);
    assert_eq!(t.to_vec::<f32>()[..2], [25., 26.]);
    // Numbers as column names (pandas writes "0,1" for unnamed columns).
    let p = write(&dir, "named.csv", "0,1\n5,6\n7,8\n");
    let t = read_csv(&p, &CsvOptions::default().has_header(true)).unwrap();
    assert_eq!(t.to_vec::<f32>(), vec![5., 6., 7., 8.]);
    // A header with any non-number field is a header, as before.
    let p = write(&dir, "mixed.csv", "x,1\n5,6\n");
    assert_eq!(
        read_csv(&p, &CsvOptions::default()).unwrap().shape(),
        &[1, 2]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn csv_skip_rows_readers_and_column_dtypes() {
    use deriv::data::{read_csv_from, read_csv_xy_from};
    let dir = temp_dir("csv_options");
    // Two lines of notes above the header; errors still count them.
    let p = write(
        &dir,
        "notes.csv",
        "exported 2026-01-02\nunits: cm\na,b\n1,2\n3,x\n",
    );
    let opts = CsvOptions::default().skip_rows(2);
    assert_contains(
        &err_of(read_csv(&p, &opts)),
        &["line 5, column 2 (\"b\")", "\"x\""],
    );
    let p = write(
        &dir,
        "notes2.csv",
        "exported 2026-01-02\nunits: cm\na,b\n1,2\n3,4\n",
    );
    let t = read_csv(&p, &opts).unwrap();
    assert_eq!(t.to_vec::<f32>(), vec![1., 2., 3., 4.]);
    // More lines skipped than the file has: no data rows.
    assert_contains(
        &err_of(read_csv(&p, &CsvOptions::default().skip_rows(9))),
        &["no data rows"],
    );

    // From a string or any reader.
    let t = read_csv_from(
        "a;b\n1;2.5\n".as_bytes(),
        &CsvOptions::new().delimiter(b';'),
    )
    .unwrap();
    assert_eq!(t.to_vec::<f32>(), vec![1., 2.5]);
    let file = std::fs::File::open(&p).unwrap();
    assert_eq!(
        read_csv_from(file, &opts).unwrap().to_vec::<f32>(),
        vec![1., 2., 3., 4.]
    );
    let msg = err_of(read_csv_from("a,b\n1,q\n".as_bytes(), &CsvOptions::new()));
    assert_contains(&msg, &["<reader>", "line 2, column 2 (\"b\")", "\"q\""]);

    // A regression target: the target column as f32 (default: i64 labels).
    let csv = "rooms,area,price\n3,70.5,250.25\n4,95,310\n";
    let opts = CsvOptions::new().column_dtype("price", DType::F32);
    let (x, y) = read_csv_xy_from(csv.as_bytes(), &opts, "price").unwrap();
    assert_eq!((x.dtype(), y.dtype()), (DType::F32, DType::F32));
    assert_eq!(x.to_vec::<f32>(), vec![3., 70.5, 4., 95.]);
    assert_eq!(y.to_vec::<f32>(), vec![250.25, 310.]);
    let opts = CsvOptions::new().column_dtype(-1, DType::F64);
    let (_, y) = read_csv_xy_from(csv.as_bytes(), &opts, -1).unwrap();
    assert_eq!(y.to_vec::<f64>(), vec![250.25, 310.]);
    // Without the choice a fractional target is refused as a class label.
    let msg = err_of(read_csv_xy_from(
        csv.as_bytes(),
        &CsvOptions::new(),
        "price",
    ));
    assert_contains(&msg, &["line 2, column 3 (\"price\")", "whole number"]);
    // A feature column of another dtype cannot share the features tensor.
    let opts = CsvOptions::new().column_dtype("rooms", DType::I64);
    let msg = err_of(read_csv_xy_from(csv.as_bytes(), &opts, "price"));
    assert_contains(
        &msg,
        &[
            "column 1 (\"rooms\") is set to i64",
            "one f32 tensor",
            "read_csv_xy",
        ],
    );
    let opts = CsvOptions::new().column_dtype("nope", DType::F32);
    let msg = err_of(read_csv_xy_from(csv.as_bytes(), &opts, "price"));
    assert_contains(&msg, &["no column is named \"nope\""]);
    let opts = CsvOptions::new().column_dtype("price", DType::Bool);
    let msg = err_of(read_csv_xy_from(csv.as_bytes(), &opts, "price"));
    assert_contains(&msg, &["bool is not supported for the label"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `TabularDataset::from_csv` reads the bundled sets' own format, and says
/// what is wrong with a file that is not in it.
#[test]
fn tabular_dataset_from_csv_reads_the_project_format() {
    let iris_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/data/iris.csv");
    let ds = TabularDataset::from_csv(&iris_path).unwrap();
    let bundled = datasets::iris();
    assert_eq!(ds.class_names, bundled.class_names);
    assert_eq!(
        ds.features.to_vec::<f32>(),
        bundled.features.to_vec::<f32>()
    );
    assert_eq!(ds.targets.to_vec::<i64>(), bundled.targets.to_vec::<i64>());

    let dir = temp_dir("from_csv");
    let p = write(
        &dir,
        "three.csv",
        "4,2,low,mid,high\n0.5,1,0\n2,3,2\n4,5,1\n6,7,2\n",
    );
    let ds = TabularDataset::from_csv(&p).unwrap();
    assert_eq!(ds.class_names, vec!["low", "mid", "high"]);
    assert_eq!(ds.class_counts(), vec![1, 1, 2]);
    assert_eq!(
        ds.features.to_vec::<f32>(),
        vec![0.5, 1., 2., 3., 4., 5., 6., 7.]
    );

    let bad = |name: &str, text: &str| err_of(TabularDataset::from_csv(write(&dir, name, text)));
    assert_contains(
        &bad("header.csv", "x1,x2,label\n1,2,0\n"),
        &[
            "header.csv",
            "line 1 must be N_SAMPLES,N_FEATURES,CLASS_NAME",
            "\"x1,x2,label\"",
        ],
    );
    assert_contains(
        &bad("count.csv", "3,2,a,b\n1,2,0\n3,4,1\n"),
        &[
            "line 1 promises 3 samples of 2 features",
            "2 rows of 2 features",
        ],
    );
    assert_contains(
        &bad("width.csv", "2,3,a,b\n1,2,0\n3,4,1\n"),
        &["promises 2 samples of 3 features", "2 rows of 2 features"],
    );
    assert_contains(
        &bad("label.csv", "2,1,a,b\n1,0\n3,2\n"),
        &["sample 1 has class label 2", "0..2"],
    );
    assert_contains(
        &bad("value.csv", "2,1,a,b\n1,0\nz,1\n"),
        &["value.csv", "line 3, column 1", "\"z\""],
    );
    let missing = dir.join("missing.csv");
    let err = TabularDataset::from_csv(&missing).unwrap_err();
    assert!(matches!(err, deriv::Error::Io { .. }), "{err}");
    assert_contains(&err.to_string(), &["missing.csv", "cannot read"]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Splits of plain tensors: rows stay paired, the seed decides, and they
/// are the same splits TabularDataset makes of the same data.
#[test]
fn train_test_split_of_any_features_and_targets() {
    use deriv::data::{stratified_split, train_test_split};
    let n = 50;
    let x = Tensor::from_vec((0..2 * n).map(|v| v as f32).collect::<Vec<_>>(), [n, 2]);
    // A regression target: row i's target is 0.5 i.
    let y = Tensor::from_vec((0..n).map(|i| 0.5 * i as f64).collect::<Vec<_>>(), [n]);
    let (x_train, x_test, y_train, y_test) = train_test_split(&x, &y, 0.2, 7);
    assert_eq!(
        (x_train.shape(), x_test.shape()),
        (&[40, 2][..], &[10, 2][..])
    );
    assert_eq!((y_train.shape(), y_test.dtype()), (&[40][..], DType::F64));
    for (xs, ys) in [(&x_train, &y_train), (&x_test, &y_test)] {
        let (xv, yv) = (xs.to_vec::<f32>(), ys.to_vec::<f64>());
        for (r, &t) in yv.iter().enumerate() {
            assert_eq!(xv[2 * r] as f64, 4.0 * t, "row {r} lost its target");
        }
    }
    let mut seen: Vec<f64> = y_train.to_vec::<f64>();
    seen.extend(y_test.to_vec::<f64>());
    seen.sort_by(f64::total_cmp);
    assert_eq!(seen, (0..n).map(|i| 0.5 * i as f64).collect::<Vec<_>>());
    // Same seed, same split; another seed, another.
    let again = train_test_split(&x, &y, 0.2, 7);
    assert_eq!(again.3.to_vec::<f64>(), y_test.to_vec::<f64>());
    assert_ne!(
        train_test_split(&x, &y, 0.2, 8).3.to_vec::<f64>(),
        y_test.to_vec::<f64>()
    );
    // A scaler fits on the results (the targets too, as one feature).
    let scaler = StandardScaler::fit(&y_train);
    let z = scaler.transform(&y_train);
    assert!(z.mean().item().abs() < 1e-12);

    // The same splits as TabularDataset's, for the same data.
    let iris = datasets::iris();
    let (a_train, a_test) = iris.train_test_split(0.3, 3);
    let (xt, xs, yt, ys) = train_test_split(&iris.features, &iris.targets, 0.3, 3);
    assert_eq!(xt.to_vec::<f32>(), a_train.features.to_vec::<f32>());
    assert_eq!(xs.to_vec::<f32>(), a_test.features.to_vec::<f32>());
    assert_eq!(yt.to_vec::<i64>(), a_train.targets.to_vec::<i64>());
    assert_eq!(ys.to_vec::<i64>(), a_test.targets.to_vec::<i64>());
    let (s_train, s_test) = iris.stratified_split(0.2, 5);
    let (_, xs, yt, ys) = stratified_split(&iris.features, &iris.targets, 0.2, 5);
    assert_eq!(yt.to_vec::<i64>(), s_train.targets.to_vec::<i64>());
    assert_eq!(ys.to_vec::<i64>(), s_test.targets.to_vec::<i64>());
    assert_eq!(xs.to_vec::<f32>(), s_test.features.to_vec::<f32>());

    // Stratified with labels that are not 0..C: each class keeps its share
    // (30 train samples: 7.5 of class -3 and 22.5 of class 7; the tie on the
    // remainder goes to the smaller label).
    let labels = Tensor::from_vec(
        (0..40)
            .map(|i| if i % 4 == 0 { -3 } else { 7 })
            .collect::<Vec<i64>>(),
        [40],
    );
    let (_, _, lt, ls) = stratified_split(&Tensor::zeros([40, 1]), &labels, 0.25, 1);
    let count = |t: &Tensor, c: i64| t.to_vec::<i64>().iter().filter(|&&v| v == c).count();
    assert_eq!((count(&lt, -3), count(&lt, 7)), (8, 22));
    assert_eq!((count(&ls, -3), count(&ls, 7)), (2, 8));

    let r = catch_unwind(|| train_test_split(&Tensor::zeros([5, 2]), &Tensor::zeros([4]), 0.2, 0));
    let msg = panic_message(r.unwrap_err());
    assert_contains(&msg, &["same size in dimension 0", "[5, 2]", "[4]"]);
    let r = catch_unwind(|| stratified_split(&Tensor::zeros([4, 1]), &Tensor::zeros([4]), 0.5, 0));
    assert_contains(
        &panic_message(r.unwrap_err()),
        &["1-D i64 tensor of class labels"],
    );
}

// ----- DistributedSampler -----

use deriv::data::{DistributedSampler, Sampler};

#[test]
fn distributed_sampler_covers_the_data_set_once_per_epoch_with_pytorchs_padding() {
    for n in [0usize, 1, 2, 5, 10, 11, 100] {
        for world in 1..=4 {
            for shuffle in [false, true] {
                for drop_last in [false, true] {
                    let shards: Vec<DistributedSampler> = (0..world)
                        .map(|r| {
                            DistributedSampler::new(n, world, r)
                                .shuffle(shuffle)
                                .seed(3)
                                .drop_last(drop_last)
                        })
                        .collect();
                    let case =
                        format!("n {n} world {world} shuffle {shuffle} drop_last {drop_last}");
                    let num = if drop_last {
                        n / world
                    } else {
                        n.div_ceil(world)
                    };
                    for epoch in 0..2 {
                        let parts: Vec<Vec<usize>> =
                            shards.iter().map(|s| s.indices(epoch)).collect();
                        assert!(parts.iter().all(|p| p.len() == num), "{case}: {parts:?}");
                        assert!(shards
                            .iter()
                            .all(|s| s.len() == num && s.total_size() == num * world));
                        // Interleaved back, the ranks' shares are the epoch's order.
                        let order: Vec<usize> = (0..num * world)
                            .map(|i| parts[i % world][i / world])
                            .collect();
                        let seen: HashSet<usize> = order.iter().copied().collect();
                        if drop_last {
                            assert_eq!(seen.len(), num * world, "{case}: repeats");
                        } else {
                            assert_eq!(seen, (0..n).collect(), "{case}: not every sample");
                            // The padding repeats the order from its start.
                            for i in n..order.len() {
                                assert_eq!(order[i], order[i - n], "{case}: padding");
                            }
                        }
                        if !shuffle {
                            assert!(order
                                .iter()
                                .take(n.min(num * world))
                                .copied()
                                .eq(0..n.min(num * world)));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn distributed_sampler_follows_pytorch_on_small_cases() {
    let shard = |n, world, rank, drop_last| {
        DistributedSampler::new(n, world, rank)
            .shuffle(false)
            .drop_last(drop_last)
            .indices(0)
    };
    // torch: DistributedSampler(range(10), 3, r, shuffle=False)
    assert_eq!(shard(10, 3, 0, false), [0, 3, 6, 9]);
    assert_eq!(shard(10, 3, 1, false), [1, 4, 7, 0]);
    assert_eq!(shard(10, 3, 2, false), [2, 5, 8, 1]);
    // ... with drop_last=True: the tail 9 is dropped.
    assert_eq!(shard(10, 3, 0, true), [0, 3, 6]);
    assert_eq!(shard(10, 3, 2, true), [2, 5, 8]);
    // Padding longer than the data set cycles it: [0, 1, 0, 1, 0].
    let all: Vec<Vec<usize>> = (0..5).map(|r| shard(2, 5, r, false)).collect();
    assert_eq!(all, [vec![0], vec![1], vec![0], vec![1], vec![0]]);
}

#[test]
fn distributed_sampler_reshuffles_per_epoch_and_agrees_across_ranks() {
    let a = DistributedSampler::new(50, 2, 0).seed(9);
    let b = DistributedSampler::new(50, 2, 1).seed(9);
    assert_eq!(a.indices(0), a.indices(0), "an epoch's order is fixed");
    assert_ne!(a.indices(0), a.indices(1), "a new epoch reshuffles");
    assert_ne!(
        a.indices(0),
        DistributedSampler::new(50, 2, 0).seed(10).indices(0)
    );
    // The two ranks' shares are disjoint every epoch.
    for e in 0..3 {
        let mine: HashSet<usize> = a.indices(e).into_iter().collect();
        assert!(b.indices(e).iter().all(|i| !mine.contains(i)));
    }
    // PyTorch's set_epoch + iteration.
    a.set_epoch(2);
    assert_eq!(a.epoch(), 2);
    assert_eq!(a.iter().collect::<Vec<_>>(), a.indices(2));
    assert_eq!(a.clone().iter().collect::<Vec<_>>(), a.indices(2));
    assert_eq!((a.rank(), a.num_replicas(), a.num_samples()), (0, 2, 25));
    // One process: every rank-0-of-1 share is the whole permutation.
    let solo = DistributedSampler::for_this_process(7).seed(1);
    let mut s = solo.indices(0);
    s.sort();
    assert_eq!(s, (0..7).collect::<Vec<_>>());
}

#[test]
fn distributed_sampler_refuses_a_bad_rank() {
    let msg = panic_of(|| DistributedSampler::new(10, 2, 2));
    assert!(
        msg.contains("invalid rank 2, rank should be in the interval [0, 1]"),
        "{msg}"
    );
    let msg = panic_of(|| DistributedSampler::new(10, 0, 0));
    assert!(
        msg.contains("num_replicas should be a positive integer"),
        "{msg}"
    );
}

#[test]
fn a_data_loader_takes_its_order_from_a_sampler() {
    let ds = || TensorDataset::new((Tensor::arange(0i64, 11, 1),));
    let loaders: Vec<_> = (0..2)
        .map(|r| DataLoader::new(ds(), 4).sampler(DistributedSampler::new(11, 2, r).seed(5)))
        .collect();
    assert_eq!(loaders[0].len(), 2); // 6 samples per rank: 4 + 2
    for epoch in 0..2 {
        let mut seen = Vec::new();
        for l in &loaders {
            l.set_epoch(epoch);
            let got: Vec<i64> = l.iter().flat_map(|(x,)| x.to_vec::<i64>()).collect();
            let s = DistributedSampler::new(11, 2, seen.len() / 6).seed(5);
            assert_eq!(
                got,
                s.indices(epoch)
                    .iter()
                    .map(|&i| i as i64)
                    .collect::<Vec<_>>()
            );
            seen.extend(got);
        }
        let distinct: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(distinct.len(), 11, "every sample, one padded: {seen:?}");
    }
    // With workers the batches are the same.
    let threaded = DataLoader::new(ds(), 4)
        .sampler(DistributedSampler::new(11, 2, 1).seed(5))
        .num_workers(2);
    let plain = DataLoader::new(ds(), 4).sampler(DistributedSampler::new(11, 2, 1).seed(5));
    let a: Vec<Vec<i64>> = threaded.iter().map(|(x,)| x.to_vec()).collect();
    let b: Vec<Vec<i64>> = plain.iter().map(|(x,)| x.to_vec()).collect();
    assert_eq!(a, b);
    // Refusals: a sampler with shuffle, and a sampler for another data set.
    let msg = panic_of(|| {
        DataLoader::new(ds(), 4)
            .shuffle(true)
            .sampler(DistributedSampler::new(11, 2, 0))
    });
    assert!(msg.contains("mutually exclusive with shuffle"), "{msg}");
    let msg = panic_of(|| {
        DataLoader::new(ds(), 4)
            .sampler(DistributedSampler::new(11, 2, 0))
            .shuffle(true)
    });
    assert!(msg.contains("mutually exclusive with shuffle"), "{msg}");
    let msg = panic_of(|| DataLoader::new(ds(), 4).sampler(DistributedSampler::new(12, 2, 0)));
    assert!(
        msg.contains("the sampler was made for 12 samples but the dataset has 11"),
        "{msg}"
    );
}

// ----- class labels and reading at the edges -----

/// A negative class label (data sets labelled -1/+1) is refused where it is
/// read, naming the line, the column, the value and the fix.
#[test]
fn negative_class_labels_are_refused_when_read() {
    let dir = temp_dir("negative_labels");
    let p = write(&dir, "pm1.csv", "x,y\n0.5,1\n0.25,-1\n");
    let msg = err_of(read_csv_xy(&p, &CsvOptions::default(), "y"));
    assert_contains(
        &msg,
        &[
            "pm1.csv",
            "line 3",
            "column 2 (\"y\")",
            "-1",
            "is negative",
            "0 for -1 and 1 for +1",
        ],
    );
    let msg = err_of(deriv::data::read_csv_xy_bytes(
        b"0.5,-3\n",
        &CsvOptions::default().has_header(false),
        -1,
    ));
    assert_contains(&msg, &["<memory>", "line 1", "column 2", "-3"]);
}

/// A data set built by hand with a negative target: refused by
/// `TabularDataset::new`, and, built as a struct literal (the fields are
/// public), by each method that uses the labels, with the sample and the
/// fix, instead of an index out of bounds.
#[test]
fn negative_targets_are_refused_where_labels_are_used() {
    let x = Tensor::from_vec((0..12).map(|v| v as f32).collect::<Vec<_>>(), [6, 2]);
    let y = Tensor::from_vec(vec![1i64, -1, 1, -1, 1, -1], [6]);
    let msg = panic_of(|| TabularDataset::new(x.clone(), y.clone(), vec![]));
    assert_contains(
        &msg,
        &[
            "TabularDataset::new",
            "sample 1",
            "-1",
            "targets.gt_scalar(0.0).to_dtype(DType::I64)",
        ],
    );
    let ds = TabularDataset {
        features: x,
        targets: y,
        class_names: vec![],
    };
    for (op, msg) in [
        ("class_counts", panic_of(|| ds.class_counts())),
        ("num_classes", panic_of(|| ds.num_classes())),
        ("stratified_split", panic_of(|| ds.stratified_split(0.5, 0))),
        (
            "standardized_split",
            panic_of(|| ds.standardized_split(0.5, 0)),
        ),
        ("train_test_split", panic_of(|| ds.train_test_split(0.5, 0))),
    ] {
        assert_contains(&msg, &[op, "sample 1 is -1", "relabel"]);
    }
    // Every label negative: not "1 class".
    let all_neg = TabularDataset {
        targets: Tensor::from_vec(vec![-1i64; 6], [6]),
        ..ds
    };
    assert_contains(&panic_of(|| all_neg.num_classes()), &["sample 0 is -1"]);
}

/// A value too large for the dtype it is read as is an error naming the
/// line, the column and the dtype to use, not a silent infinity; `inf`
/// written out is read as infinity.
#[test]
fn csv_values_that_overflow_their_dtype_are_errors() {
    let opts = CsvOptions::default();
    let msg = err_of(deriv::data::read_csv_bytes(b"a,b\n1,2\n3,1e39\n", &opts));
    assert_contains(
        &msg,
        &[
            "line 3",
            "column 2 (\"b\")",
            "\"1e39\"",
            "too large for f32",
            "DType::F64",
        ],
    );
    let f64s = opts.clone().dtype(DType::F64);
    let t = deriv::data::read_csv_bytes(b"a,b\n1,2\n3,1e39\n", &f64s).unwrap();
    assert_eq!(t.to_vec::<f64>(), vec![1., 2., 3., 1e39]);
    let msg = err_of(deriv::data::read_csv_bytes(b"a\n-1e400\n", &f64s));
    assert_contains(
        &msg,
        &["line 2", "column 1 (\"a\")", "too large for f64", "rescale"],
    );
    // Infinity written as such is a value, as in numpy and pandas.
    let t = deriv::data::read_csv_bytes(b"a,b\ninf,-Infinity\n", &opts).unwrap();
    assert_eq!(t.to_vec::<f32>(), vec![f32::INFINITY, f32::NEG_INFINITY]);
    // The largest f32 itself reads fine.
    let t = deriv::data::read_csv_bytes(b"a\n3.4028235e38\n", &opts).unwrap();
    assert_eq!(t.to_vec::<f32>(), vec![f32::MAX]);
}

/// An unterminated quote is reported as such (not as a missing column),
/// at the line and column where it opens; an integer beyond i64 says it is
/// too large.
#[test]
fn csv_quote_and_integer_messages_say_what_is_wrong() {
    let opts = CsvOptions::default();
    let msg = err_of(deriv::data::read_csv_bytes(
        b"a,b,c\n1,2,3\n4,\"5,6\n7,8,9\n",
        &opts,
    ));
    assert_contains(
        &msg,
        &[
            "line 3",
            "column 2 (\"b\")",
            "unterminated quote",
            "close the quote",
        ],
    );
    // In the last column of the last line too (the field would read as a number).
    let msg = err_of(deriv::data::read_csv_bytes(b"a,b\n1,\"2", &opts));
    assert_contains(&msg, &["line 2", "column 2", "unterminated quote"]);
    // Closed quotes, and "" inside them, are fine.
    let t = deriv::data::read_csv_bytes(b"\"a \"\"x\"\"\",b\n\"1\",2\n", &opts).unwrap();
    assert_eq!(t.to_vec::<f32>(), vec![1., 2.]);

    let ints = opts.clone().dtype(DType::I64);
    let msg = err_of(deriv::data::read_csv_bytes(
        b"a\n99999999999999999999\n",
        &ints,
    ));
    assert_contains(
        &msg,
        &["line 2", "too large for i64", "9223372036854775807"],
    );
    let msg = err_of(deriv::data::read_csv_xy_bytes(
        b"x,y\n1,-99999999999999999999\n",
        &opts,
        "y",
    ));
    assert_contains(&msg, &["a class label", "too large for i64"]);
    let msg = err_of(deriv::data::read_csv_bytes(b"a\n1.5\n", &ints));
    assert_contains(&msg, &["not a whole number"]);
}
