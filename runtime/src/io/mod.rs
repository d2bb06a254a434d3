//! Saving and loading tensors in the [safetensors] format (the one PyTorch's
//! and Hugging Face's `safetensors` packages read and write), state dicts,
//! and training checkpoints.
//!
//! Every write goes to a temporary file in the target's folder, is flushed to
//! disk, and is then renamed over the target: a crash mid-write leaves the
//! previous file intact. Every read validates the whole file before building
//! a tensor: a truncated or corrupt file is an [`Error::Format`], never a
//! panic or an out-of-bounds read.
//!
//! ```
//! use deriv_runtime::{io, tensor, Tensor};
//! let dir = std::env::temp_dir().join(format!("deriv-io-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("weights.safetensors");
//!
//! let mut sd = io::StateDict::new();
//! sd.insert("fc.weight", tensor![[1., 2.], [3., 4.]]);
//! sd.insert("step", Tensor::scalar(7i64));
//! io::save_file(&sd, &path).unwrap();
//!
//! let back = io::load_file(&path).unwrap();
//! assert_eq!(back["fc.weight"].to_vec::<f32>(), vec![1., 2., 3., 4.]);
//! assert_eq!(back["step"].item(), 7.0);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

mod checkpoint;
mod safetensors_io;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

pub use checkpoint::Checkpoint;
pub use safetensors_io::{
    deserialize, load_file, load_file_with_metadata, save_file, save_file_with_metadata, serialize,
};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Named tensors in insertion order: what [`Module::state_dict`] returns and
/// [`save_file`] writes (PyTorch's `OrderedDict[str, Tensor]`).
///
/// Index it by name like a dict: `sd["fc1.weight"]`.
///
/// [`Module::state_dict`]: crate::nn::Module::state_dict
#[derive(Clone, Default)]
pub struct StateDict {
    entries: Vec<(String, Tensor)>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> Self {
        StateDict::default()
    }

    /// Adds `tensor` under `name`, replacing an entry of that name.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = tensor,
            None => self.entries.push((name, tensor)),
        }
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Removes and returns the tensor named `name`.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        let i = self.entries.iter().position(|(n, _)| n == name)?;
        Some(self.entries.remove(i).1)
    }

    /// Whether an entry is named `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, tensor)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries whose names start with `prefix.`, with the prefix removed
    /// (`sd.sub("model")` of a checkpoint is the model's state dict).
    pub fn sub(&self, prefix: &str) -> StateDict {
        let p = format!("{prefix}.");
        StateDict {
            entries: self
                .entries
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(&p).map(|rest| (rest.to_string(), t.clone())))
                .collect(),
        }
    }

    /// Adds every entry of `other` under `prefix.` (the inverse of [`sub`](Self::sub)).
    pub fn extend_prefixed(&mut self, prefix: &str, other: &StateDict) {
        for (n, t) in other.iter() {
            self.insert(format!("{prefix}.{n}"), t.clone());
        }
    }
}

impl std::ops::Index<&str> for StateDict {
    type Output = Tensor;
    #[track_caller]
    fn index(&self, name: &str) -> &Tensor {
        match self.get(name) {
            Some(t) => t,
            None => panic!(
                "StateDict has no tensor named {name:?}; it holds: {}",
                self.keys().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

impl From<Vec<(String, Tensor)>> for StateDict {
    fn from(entries: Vec<(String, Tensor)>) -> Self {
        let mut sd = StateDict::new();
        for (n, t) in entries {
            sd.insert(n, t);
        }
        sd
    }
}

impl IntoIterator for StateDict {
    type Item = (String, Tensor);
    type IntoIter = std::vec::IntoIter<(String, Tensor)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl std::fmt::Debug for StateDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(n, t)| (n, format!("{:?} {:?}", t.dtype(), t.shape()))),
            )
            .finish()
    }
}

/// Metadata stored beside the tensors (string to string, as the format allows).
pub type Metadata = HashMap<String, String>;

/// Writes `bytes` to `path` so that a crash never leaves a half-written file
/// there: a temporary file in the same folder, flushed and synced, then renamed
/// over `path` (atomic on POSIX file systems).
///
/// Each write has its own temporary file, `.NAME.tmp-PID-N` (the process id
/// and a per-process counter), so threads and processes saving to one path
/// at once each rename a whole file over it (the last one wins) and none
/// trips over another's. After a successful write, the temporary files of the
/// same target that a killed writer left behind are removed; those of writers
/// still at work are not.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::format(path, "not a file path (it has no file name)"))?;
    let prefix = format!(".{}.tmp-", file_name.to_string_lossy());
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp_name = format!("{prefix}{}-{n}", std::process::id());
    let tmp = dir.join(&tmp_name);
    // Registered before the file exists, so no cleaner in this process takes it for stale.
    in_flight().push(tmp_name.clone());
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // Persist the rename itself; not every platform can open a folder.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    in_flight().retain(|t| *t != tmp_name);
    match result {
        Ok(()) => {
            remove_stale_temps(&dir, &prefix);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(Error::io(path, &e))
        }
    }
}

/// Numbers this process's temporary files (with the process id, unique).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The names of this process's temporary files being written now.
fn in_flight() -> MutexGuard<'static, Vec<String>> {
    static IN_FLIGHT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the files `dir/{prefix}PID[-N]` whose writer is gone: from this
/// process, those not being written now; from another, those whose process
/// no longer runs (where that cannot be told, those older than a day).
/// Best effort: a file that cannot be removed stays.
fn remove_stale_temps(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Ok(pid) = rest.split('-').next().unwrap_or("").parse::<u32>() else {
            continue;
        };
        if pid == me {
            // Decided and removed under the lock, so a file registered by a
            // writer of this process is never taken.
            let flying = in_flight();
            if !flying.contains(&name) {
                let _ = fs::remove_file(entry.path());
            }
        } else if !process_running(pid, &entry) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` may still be writing `file`.
fn process_running(pid: u32, file: &fs::DirEntry) -> bool {
    if cfg!(target_os = "linux") && Path::new("/proc/self").exists() {
        return Path::new("/proc").join(pid.to_string()).exists();
    }
    // No process table to ask: only a file untouched for a day counts as stale.
    let age = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    age.is_none_or(|a| a <= std::time::Duration::from_secs(24 * 3600))
}
