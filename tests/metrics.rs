//! `deriv::metrics` against scikit-learn's numbers: tests/data/make_sklearn_metrics.py
//! printed them (scikit-learn 1.9.1) into tests/data/sklearn_metrics.txt, from the
//! same literals as here.

use deriv::metrics::{
    accuracy, confusion_matrix, f1_score, mean_absolute_error, mean_squared_error, r2_score,
    Average,
};
use deriv::prelude::*;

#[track_caller]
fn close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 * (1.0 + want.abs()),
        "got {got}, scikit-learn {want}"
    );
}

fn labels(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), [v.len()])
}

const Y_TRUE: [i64; 16] = [0, 2, 5, 5, 2, 0, 0, 5, 2, 2, 5, 0, 2, 5, 5, 0];
const Y_PRED: [i64; 16] = [0, 5, 5, 2, 2, 0, 2, 5, 7, 2, 5, 0, 0, 5, 2, 7];

#[test]
fn multiclass_labels_with_gaps_match_scikit_learn() {
    let (t, p) = (labels(&Y_TRUE), labels(&Y_PRED));
    close(accuracy(&t, &p), 0.5625);
    // Rows and columns are the labels present, sorted: 0, 2, 5, 7.
    let m = confusion_matrix(&t, &p);
    assert_eq!(m.shape(), &[4, 4]);
    assert_eq!(m.dtype(), DType::I64);
    assert_eq!(
        m.to_vec::<i64>(),
        vec![3, 1, 0, 1, 1, 2, 1, 1, 0, 2, 4, 0, 0, 0, 0, 0]
    );
    close(f1_score(&t, &p, Average::Micro), 0.5625);
    close(f1_score(&t, &p, Average::Macro), 0.4484848484848485);
    close(f1_score(&t, &p, Average::Weighted), 0.606060606060606);
}

#[test]
fn binary_labels_match_scikit_learn() {
    let t = labels(&[1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]);
    let p = labels(&[1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1]);
    close(accuracy(&t, &p), 0.6666666666666666);
    close(f1_score(&t, &p, Average::Binary), 0.7142857142857143);
    assert_eq!(confusion_matrix(&t, &p).to_vec::<i64>(), vec![3, 2, 2, 5]);
    // Bool predictions and whole-number float labels are labels too.
    let as_bool = p.gt_scalar(0.5);
    close(f1_score(&t, &as_bool, Average::Binary), 0.7142857142857143);
    close(accuracy(&t.to_dtype(DType::F32), &p), 0.6666666666666666);
    // No positive anywhere: 0/0 scores 0.
    let zeros = labels(&[0, 0, 0]);
    assert_eq!(f1_score(&zeros, &zeros, Average::Binary), 0.0);
}

#[test]
fn regression_metrics_match_scikit_learn() {
    let t = tensor![3.0, -0.5, 2.0, 7.0, 4.25, -1.5, 0.0, 2.5; dtype = DType::F64];
    let p = tensor![2.5, 0.0, 2.1, 7.8, 3.0, -1.0, 0.5, 2.5; dtype = DType::F64];
    close(r2_score(&t, &p), 0.9402238697485099);
    close(mean_squared_error(&t, &p), 0.40156249999999993);
    close(mean_absolute_error(&t, &p), 0.51875);
    // [n] against [n, 1] (a model's single output) is the same comparison.
    close(r2_score(&t, &p.unsqueeze(1)), 0.9402238697485099);

    let t2 = tensor![[0.5, 1.0], [-1.0, 1.0], [7.0, -6.0], [2.0, 3.5]; dtype = DType::F64];
    let p2 = tensor![[0.0, 2.0], [-1.0, 2.0], [8.0, -5.0], [1.5, 3.0]; dtype = DType::F64];
    close(r2_score(&t2, &p2), 0.946896031075178);
    close(mean_squared_error(&t2, &p2), 0.59375);
    close(mean_absolute_error(&t2, &p2), 0.6875);

    let c = tensor![2.0, 2.0, 2.0];
    assert_eq!(r2_score(&c, &c), 1.0);
    assert_eq!(r2_score(&c, &tensor![2.0, 2.5, 2.0]), 0.0);
    assert!(r2_score(&tensor![1.0], &tensor![2.0]).is_nan());
}

#[test]
fn metrics_refuse_what_scikit_learn_refuses() {
    let msg = |f: Box<dyn FnOnce() + std::panic::UnwindSafe>| {
        let e = std::panic::catch_unwind(f).expect_err("expected a panic");
        e.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let m = msg(Box::new(|| {
        f1_score(&labels(&Y_TRUE), &labels(&Y_PRED), Average::Binary);
    }));
    assert!(
        m.contains("Average::Binary needs labels 0 and 1") && m.contains("Macro"),
        "{m}"
    );
    let m = msg(Box::new(|| {
        accuracy(&labels(&[0, 1]), &tensor![0.2, 0.9]);
    }));
    assert!(
        m.contains("y_pred holds 0.2") && m.contains("gt_scalar(0.5)"),
        "{m}"
    );
    let m = msg(Box::new(|| {
        r2_score(&tensor![1., 2., 3.], &tensor![1., 2.]);
    }));
    assert!(
        m.contains("r2_score: y_true and y_pred must have one shape"),
        "{m}"
    );
    let m = msg(Box::new(|| {
        accuracy(&labels(&[0, 1, 1]), &labels(&[0, 1]));
    }));
    assert!(m.contains("one label per sample"), "{m}");
}
