//! A sequence model: an LSTM reads each bundled 8x8 handwritten digit as a
//! sequence of 8 rows of 8 pixels (row-by-row, as sequential MNIST does),
//! averages its outputs over the steps and classifies them; `network!`
//! derives its backward through time at compile time, and the `Trainer`
//! fits it. Prints the held-out accuracy last.
//!
//! Run: `cargo run --release --example lstm`

use deriv::data::{DataLoader, TabularDataset};
use deriv::nn::LSTM;
use deriv::prelude::*;
use deriv::train::{Classifier, Trainer};

deriv::network! {
    /// 8 rows of 8 pixels -> LSTM(8, 64) over the rows -> mean over the
    /// steps -> 10 class logits.
    pub struct RowLstm {
        lstm: LSTM(8, 64),
        out: Linear(64, 10),
    }
    fn forward(x) {
        let rows = x.reshape([-1, 8, 8]).transpose(0, 1);
        out(lstm(rows).mean_dim(0, false))
    }
}

/// Trains for `epochs` epochs on 80% of the digits; returns the model and
/// the held-out 20% (standardised with the train set's statistics).
pub fn fit(epochs: usize, verbose: bool) -> deriv::Result<(Classifier<RowLstm>, TabularDataset)> {
    manual_seed(0);
    let (train, test) = deriv::datasets::digits().standardized_split(0.2, 42);
    let train_loader = DataLoader::new(train, 32).shuffle(true).seed(0);
    let val_loader = DataLoader::new(test.clone(), 256);
    let mut model = Classifier::new(RowLstm::default()).optimizer(|p| Adam::new(p, 1e-2));
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
