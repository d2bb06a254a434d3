//! The runnable examples, checked: each computes what it says it computes.

#[path = "../../examples/gradient_descent.rs"]
mod gradient_descent;
#[path = "../../examples/jacobian.rs"]
mod jacobian;
#[path = "../../examples/linear_regression.rs"]
mod linear_regression;

pub fn gradient_descent_reaches_the_minimum() {
    seeded(|| {
        let (x1, x2) = gradient_descent::descend(100, 0.1, false);
        assert!((x1 - 3.0).abs() < 1e-3, "x1 = {x1}");
        assert!((x2 + 2.0).abs() < 1e-3, "x2 = {x2}");
        // With lr 0.1 each step shrinks the distance to the minimum by 0.8, so a
        // few steps must still be far from it: the loop really is the descent.
        let (y1, _) = gradient_descent::descend(3, 0.1, false);
        let expected = 3.0 * (1.0 - 0.8f64.powi(3));
        assert!(
            (y1 - expected).abs() < 1e-5,
            "after 3 steps x1 = {y1}, expected {expected}"
        );
    });
}

pub fn linear_regression_recovers_the_true_parameters() {
    seeded(|| {
        let (w, b, w_true, b_true) = linear_regression::fit(false);
        for (l, t) in w.iter().zip(&w_true) {
            assert!((l - t).abs() < 0.01, "learnt {w:?}, true {w_true:?}");
        }
        assert!((b - b_true).abs() < 0.01, "learnt b {b}, true {b_true}");
    });
}

pub fn vector_jacobian_products_match_the_analytic_jacobian() {
    seeded(|| {
        let err = jacobian::max_error(false);
        assert!(err < 1e-12, "max difference {err}");
    });
}

/// Runs one example's test. The examples seed the default generator
/// (`manual_seed(0)`) and draw their models' initial weights from it (or
/// draw from it unseeded); the tests run in parallel threads, each with a
/// default generator of its own (`with_thread_generator`), so each gets
/// the numbers its example prints when run alone, and the long ones share
/// the cores instead of queueing for one process-wide generator.
fn seeded<R>(test: impl FnOnce() -> R) -> R {
    deriv::with_thread_generator(test)
}

#[path = "../../examples/mlp_class.rs"]
mod mlp_class;
#[path = "../../examples/mlp_sequential.rs"]
mod mlp_sequential;

pub fn sequential_network_learns_the_circle() {
    seeded(|| {
        let acc = mlp_sequential::train(false);
        assert!(acc >= 0.95, "held-out accuracy {acc}");
    });
}

pub fn class_network_learns_the_spirals_and_its_two_backward_paths_agree() {
    seeded(|| {
        assert!(mlp_class::paths_difference() < 1e-6);
        let acc = mlp_class::train(false);
        assert!(acc >= 0.95, "held-out accuracy {acc}");
    });
}

#[path = "../../examples/classification.rs"]
mod classification;
#[path = "../../examples/perceptron.rs"]
mod perceptron;
#[path = "../../examples/trainer.rs"]
mod trainer;

pub fn perceptron_by_hand_classifies_breast_tumours() {
    seeded(|| {
        let acc = perceptron::train(false);
        assert!(acc >= 0.95, "held-out accuracy {acc}");
    });
}

pub fn linear_sgd_and_a_data_loader_classify_breast_tumours() {
    seeded(|| {
        let acc = classification::train(false);
        assert!(acc >= 0.95, "held-out accuracy {acc}");
    });
}

pub fn trainer_fits_an_mlp_to_the_digits() {
    seeded(|| {
        let acc = trainer::train(30, false).unwrap();
        assert!(acc >= 0.95, "held-out accuracy {acc}");
    });
}

#[path = "../../examples/cnn.rs"]
mod cnn;

pub fn cnn_classifies_the_digits_as_images() {
    seeded(|| {
        let acc = cnn::train(15, false).unwrap();
        assert!(acc >= 0.98, "held-out accuracy {acc}");
    });
}

#[path = "../../examples/lstm.rs"]
mod lstm;

pub fn lstm_classifies_the_digits_as_row_sequences() {
    seeded(|| {
        // 5 of the example's 15 epochs, in a third of the time: held-out
        // accuracy 0.944 there (0.75 after one epoch, 0.97 at the end).
        let acc = lstm::train(5, false).unwrap();
        assert!(acc >= 0.93, "held-out accuracy {acc}");
    });
}

#[path = "../../examples/transformer.rs"]
mod transformer;

pub fn transformer_learns_to_sort() {
    seeded(|| {
        let share = transformer::train(200, false);
        assert!(share >= 0.95, "held-out sequences sorted exactly: {share}");
    });
}
