//! Lightning-style training: a model implements [`TrainingModule`] (or is
//! wrapped in a [`Classifier`]), and [`Trainer::fit`] runs the epochs with
//! progress bars, validation, early stopping, checkpoints (resumable) and
//! training curves.

mod classifier;
mod history;
mod module;
mod trainer;

pub use classifier::Classifier;
pub use history::History;
pub use module::{StepOutput, TrainingModule};
pub use trainer::{Batches, EarlyStopping, Mode, Trainer};
