//! Training checkpoints: the model's parameters, the optimizer's state, the
//! epoch and free-form metadata (the Trainer's history, a scheduler's state)
//! in one safetensors file, written atomically.

use std::path::Path;

use super::{load_file_with_metadata, save_file_with_metadata, Metadata, StateDict};
use crate::error::{Error, Result};
use crate::optim::OptimizerState;

const MARK: &str = "deriv.checkpoint";
const EPOCH: &str = "deriv.epoch";
const SCALAR: &str = "optimizer.scalar.";

/// Everything needed to resume training where it stopped.
///
/// On disk it is one safetensors file: the model's tensors under `model.`,
/// the optimizer's under `optimizer.`, and in the header's metadata the
/// epoch, the optimizer's scalars (exactly: Rust prints an `f64` so it parses
/// back to the same bits) and [`metadata`](Self::metadata).
///
/// ```
/// use deriv_runtime::io::{Checkpoint, StateDict};
/// use deriv_runtime::tensor;
/// let dir = std::env::temp_dir().join(format!("deriv-ckpt-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut model = StateDict::new();
/// model.insert("weight", tensor![1.5, -2.0]);
/// let ckpt = Checkpoint { epoch: 3, model, ..Default::default() };
/// ckpt.save(dir.join("last.safetensors")).unwrap();
/// let back = Checkpoint::load(dir.join("last.safetensors")).unwrap();
/// assert_eq!(back.epoch, 3);
/// assert_eq!(back.model["weight"].to_vec::<f32>(), vec![1.5, -2.0]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// The number of epochs completed.
    pub epoch: usize,
    /// The model's [`state_dict`](crate::nn::Module::state_dict).
    pub model: StateDict,
    /// The optimizer's state, when one was saved.
    pub optimizer: Option<OptimizerState>,
    /// Anything else, as strings (the Trainer keeps its history here).
    pub metadata: Metadata,
}

impl Checkpoint {
    /// Writes the checkpoint to `path`: a temporary file renamed over `path`,
    /// so the previous checkpoint survives a crash mid-write.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut tensors = StateDict::new();
        tensors.extend_prefixed("model", &self.model);
        let mut meta = self.metadata.clone();
        meta.insert(MARK.into(), "1".into());
        meta.insert(EPOCH.into(), self.epoch.to_string());
        if let Some(opt) = &self.optimizer {
            let mut opt_tensors = StateDict::new();
            for (n, t) in &opt.tensors {
                opt_tensors.insert(n.clone(), t.clone());
            }
            tensors.extend_prefixed("optimizer", &opt_tensors);
            meta.insert("optimizer".into(), "1".into());
            for (n, v) in &opt.scalars {
                meta.insert(format!("{SCALAR}{n}"), v.to_string());
            }
        }
        save_file_with_metadata(&tensors, &meta, path)
    }

    /// Reads a checkpoint written by [`save`](Self::save). A file that is not
    /// one (a plain weights file, a corrupt or truncated file) is an `Err`.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let (tensors, meta) = load_file_with_metadata(path)?;
        Checkpoint::from_parts(tensors, meta, path)
    }

    /// Reads a checkpoint from the bytes of a file [`save`](Self::save)
    /// wrote (already in memory); errors as [`load`](Self::load), naming
    /// `<memory>`.
    pub fn deserialize(bytes: &[u8]) -> Result<Checkpoint> {
        let (tensors, meta) = super::deserialize(bytes)?;
        Checkpoint::from_parts(tensors, meta, Path::new("<memory>"))
    }

    fn from_parts(tensors: StateDict, mut meta: Metadata, path: &Path) -> Result<Checkpoint> {
        if meta.remove(MARK).is_none() {
            return Err(Error::format(
                path,
                "a safetensors file, but not a deriv checkpoint (no deriv.checkpoint entry); \
                 load plain weights with Module::load_safetensors",
            ));
        }
        let epoch = meta
            .remove(EPOCH)
            .and_then(|e| e.parse().ok())
            .ok_or_else(|| Error::format(path, "checkpoint without a valid deriv.epoch entry"))?;
        let optimizer = if meta.remove("optimizer").is_some() {
            let mut scalars = Vec::new();
            let keys: Vec<String> = meta
                .keys()
                .filter(|k| k.starts_with(SCALAR))
                .cloned()
                .collect();
            for k in keys {
                let v = meta.remove(&k).unwrap_or_default();
                let x: f64 = v.parse().map_err(|_| {
                    Error::format(
                        path,
                        format!("optimizer scalar {k:?} is not a number: {v:?}"),
                    )
                })?;
                scalars.push((k[SCALAR.len()..].to_string(), x));
            }
            scalars.sort_by(|a, b| a.0.cmp(&b.0));
            let tensors = tensors.sub("optimizer").into_iter().collect();
            Some(OptimizerState { tensors, scalars })
        } else {
            None
        };
        Ok(Checkpoint {
            epoch,
            model: tensors.sub("model"),
            optimizer,
            metadata: meta,
        })
    }
}
