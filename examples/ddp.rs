//! Data-parallel training on MPI: the digits MLP of `examples/trainer.rs`,
//! trained by every process of an MPI job at once, each on its share of
//! every epoch, gradients averaged over the processes during backward.
//!
//! Run (Open MPI; `--allow-run-as-root` only when running as root):
//!
//! ```sh
//! cargo build --release --features mpi --example ddp
//! mpirun -np 2 cargo run --release --features mpi --example ddp
//! mpirun -np 4 --hostfile hosts target/release/examples/ddp   # several machines
//! ```
//!
//! Only rank 0 prints; its last line is the held-out accuracy.

use deriv::data::DataLoader;
use deriv::distributed;
use deriv::optim::Adam;
use deriv::prelude::*;
use deriv::train::{Classifier, Strategy, Trainer};

/// The single-process example, for its model.
#[path = "trainer.rs"]
mod single;
use single::DigitsMlp;

/// Trains for `epochs` epochs on every rank of the job; returns the
/// accuracy on the held-out 20% (the same on every rank: the replicas stay
/// identical).
pub fn train(epochs: usize, verbose: bool) -> deriv::Result<f64> {
    distributed::init()?;
    let world = distributed::world_size();
    manual_seed(0);
    let (train, test) = deriv::datasets::digits().standardized_split(0.2, 42);
    let (test_x, test_y) = (test.features.clone(), test.targets.clone());
    // 32 samples per step in all, as examples/trainer.rs: 32 / N per rank.
    let per_rank = (32 / world).max(1);
    let train_loader = DataLoader::new(train, per_rank).shuffle(true).seed(0);
    let val_loader = DataLoader::new(test, 256);

    let mut model = Classifier::new(DigitsMlp::default()).optimizer(|p| Adam::new(p, 1e-3));
    let mut trainer = Trainer::new().max_epochs(epochs).strategy(Strategy::Ddp);
    if !verbose {
        trainer = trainer.quiet();
    } else if distributed::rank() == 0 {
        println!("{world} processes, {per_rank} samples per process per step");
    }
    trainer.fit(&mut model, &train_loader, Some(&val_loader))?;
    Ok(model.accuracy(&test_x, &test_y))
}

#[allow(dead_code)]
fn main() -> deriv::Result<()> {
    let acc = train(30, true)?;
    if distributed::rank() == 0 {
        println!("accuracy: {acc:.3}");
    }
    Ok(())
}
