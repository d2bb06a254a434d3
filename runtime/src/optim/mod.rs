//! Optimizers that update parameters in place, outside the tape, and
//! learning-rate schedulers.
