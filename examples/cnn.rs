//! A small convolutional network (`network!`, so its backward is derived at
//! compile time) classifying the bundled 8x8 handwritten digits as 1x8x8
//! images, trained by the `Trainer`; prints the held-out accuracy last.
//!
//! Run: `cargo run --release --example cnn`

use deriv::data::{DataLoader, TabularDataset};
use deriv::nn::{Conv2d, MaxPool2d};
use deriv::prelude::*;
use deriv::train::{Classifier, Trainer};

deriv::network! {
    /// 1x8x8 -> conv 3x3 (16) -> 16x6x6 -> conv 3x3 (32) -> 32x4x4
    /// -> max pool 2 -> 32x2x2 -> 10 class logits.
    pub struct DigitsCnn {
        conv1: Conv2d(1, 16, 3),
        conv2: Conv2d(16, 32, 3),
        pool: MaxPool2d(2),
        out: Linear(128, 10),
    }
    fn forward(x) {
        let img = x.reshape([-1, 1, 8, 8]);
        let h = relu(conv2(relu(conv1(img))));
        out(pool(h).flatten(1, -1))
    }
}

/// Trains for `epochs` epochs on 80% of the digits; returns the model and
/// the held-out 20% (standardised with the train set's statistics).
pub fn fit(epochs: usize, verbose: bool) -> deriv::Result<(Classifier<DigitsCnn>, TabularDataset)> {
    manual_seed(0);
    let (train, test) = deriv::datasets::digits().standardized_split(0.2, 42);
    let train_loader = DataLoader::new(train, 32).shuffle(true).seed(0);
    let val_loader = DataLoader::new(test.clone(), 256);
    let mut model = Classifier::new(DigitsCnn::default()).optimizer(|p| Adam::new(p, 1e-3));
    let mut trainer = Trainer::new().max_epochs(epochs);
    if !verbose {
        trainer = trainer.quiet();
    }
    trainer.fit(&mut model, &train_loader, Some(&val_loader))?;
    Ok((model, test))
}

/// Trains for `epochs` epochs; returns the accuracy on the held-out 20%.
pub fn train(epochs: usize, verbose: bool) -> deriv::Result<f64> {
    let (model, test) = fit(epochs, verbose)?;
    Ok(model.accuracy(&test.features, &test.targets))
}

#[allow(dead_code)]
fn main() -> deriv::Result<()> {
    let acc = train(15, true)?;
    println!("accuracy: {acc:.3}");
    Ok(())
}
