//! Neural-network building blocks: the [`Module`] trait, layers, and their
//! functional forms in [`functional`].
//!
//! Every layer works on both paths: [`Forward::forward`] runs recorded ops (so
//! `loss.backward()` reaches the parameters through the tape), and
//! [`Differentiable`] gives the compile-time path a forward that saves only what
//! backward needs and a backward that adds into the parameters' `.grad()`.

mod activation;
mod attention;
mod conv;
#[doc(hidden)]
pub mod dsl;
mod embedding;
pub mod functional;
pub mod init;
mod linear;
mod loss;
mod module;
mod norm;
mod recurrent;
mod sequential;
mod transformer;

pub use crate::ops::{
    Conv1dOptions, Conv2dOptions, ConvTranspose2dOptions, EmbeddingOptions, Padding, Pair,
};
pub use activation::{
    AdaptiveAvgPool2d, AvgPool2d, Dropout, Flatten, Hardtanh, Identity, LeakyReLU, LogSigmoid,
    LogSoftmax, MaxPool2d, Mish, OpWorkspace, ReLU, SiLU, Sigmoid, Softmax, Softplus, Tanh, ELU,
    GELU,
};
pub use attention::{
    AttendOptions, MultiheadAttention, MultiheadAttentionOptions, MultiheadAttentionSaved,
    MultiheadAttentionWorkspace,
};
pub use conv::{
    Conv1d, Conv1dWorkspace, Conv2d, Conv2dWorkspace, ConvTranspose2d, ConvTranspose2dWorkspace,
};
pub use embedding::{Embedding, EmbeddingWorkspace};
pub use linear::{LayerWorkspace, Linear, LinearWorkspace, ParamOpWorkspace};
pub use loss::{
    BCELoss, BCEWithLogitsLoss, BceWithLogitsOptions, CrossEntropyLoss, CrossEntropyOptions,
    HuberLoss, KLDivLoss, KlDivOptions, KlDivReduction, L1Loss, Loss, MSELoss, NLLLoss,
    NllLossOptions, Reduction, SmoothL1Loss,
};
pub use module::{
    accumulate_grad, grad_accumulated, join_name, Differentiable, Fallback, Forward,
    IncompatibleKeys, Module, TrainStep,
};
pub use norm::{
    BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, BatchNormOptions, BatchNormWorkspace,
    GroupNorm, GroupNormOptions, GroupNormWorkspace, LayerNorm, LayerNormOptions,
    LayerNormWorkspace, NormalizedShape,
};
pub use recurrent::{
    GRUCell, GruKind, LSTMCell, LayerSaved, LstmKind, Nonlinearity, RNNCell, Recurrent,
    RecurrentCellLayer, RecurrentOptions, RecurrentSaved, RecurrentState, RecurrentWorkspace,
    RnnKind, GRU, LSTM, RNN,
};
pub use sequential::Sequential;
pub use transformer::{
    Activation, ActivationKind, ActivationSaved, EncoderMasks, TransformerEncoderLayer,
    TransformerEncoderLayerOptions, TransformerEncoderLayerSaved, TransformerEncoderLayerWorkspace,
};
