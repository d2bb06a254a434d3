//! Datasets, the DataLoader, CSV loading and the bundled data sets.

pub mod datasets {
    //! The bundled data sets.
}
