//! The Lightning-like Trainer.
