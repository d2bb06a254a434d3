//! A multi-layer perceptron (`network!`, so its backward is derived at
//! compile time) classifying 8x8 handwritten digits, trained by the
//! Lightning-style `Trainer`: progress per epoch, validation, the training
//! curves as an SVG, and the held-out accuracy.
//!
//! Run: `cargo run --release --example trainer`

use deriv::data::{DataLoader, TabularDataset};
use deriv::prelude::*;
use deriv::train::{Classifier, Trainer};

deriv::network! {
    /// 64 pixels -> 128 -> 64 -> 10 class logits.
    pub struct DigitsMlp {
        fc1: Linear(64, 128),
        fc2: Linear(128, 64),
        out: Linear(64, 10),
    }
    fn forward(x) {
        let h = relu(fc1(x));
        out(relu(fc2(h)))
    }
}

/// Trains for `epochs` epochs; returns the accuracy on the held-out 20%.
pub fn train(epochs: usize, verbose: bool) -> deriv::Result<f64> {
    let (model, test) = fit(epochs, verbose)?;
    Ok(model.accuracy(&test.features, &test.targets))
}

/// Trains for `epochs` epochs on 80% of the digits; returns the model and
/// the held-out 20% (standardised with the train set's statistics).
pub fn fit(epochs: usize, verbose: bool) -> deriv::Result<(Classifier<DigitsMlp>, TabularDataset)> {
    manual_seed(0);
    let (train, test) = deriv::datasets::digits().standardized_split(0.2, 42);
    let train_loader = DataLoader::new(train, 32).shuffle(true).seed(0);
    let val_loader = DataLoader::new(test.clone(), 256);

    let mut model = Classifier::new(DigitsMlp::default()).optimizer(|p| Adam::new(p, 1e-3));
    let mut trainer = Trainer::new().max_epochs(epochs);
    if !verbose {
        trainer = trainer.quiet();
    } else {
        let curves = std::env::temp_dir().join("deriv-digits-curves.svg");
        println!("training curves: {}", curves.display());
        trainer = trainer.plot(curves);
    }
    trainer.fit(&mut model, &train_loader, Some(&val_loader))?;
    Ok((model, test))
}

#[allow(dead_code)]
fn main() -> deriv::Result<()> {
    let acc = train(30, true)?;
    println!("accuracy: {acc:.3}");
    Ok(())
}
