//! Lightning-style training: a model implements [`TrainingModule`] (or is
//! wrapped in a [`Classifier`] or a [`Regressor`]), and [`Trainer::fit`] runs the epochs with
//! progress bars, validation, early stopping, checkpoints (resumable) and
//! training curves, on one process or data-parallel over an MPI job
//! ([`Strategy::Ddp`]).

mod classifier;
mod configure;
mod history;
mod module;
mod regressor;
mod strategy;
mod trainer;

pub use classifier::Classifier;
pub use history::History;
pub use module::{StepOutput, TrainingModule};
pub use regressor::Regressor;
pub use strategy::Strategy;
pub use trainer::{Batches, EarlyStopping, Mode, Trainer};
