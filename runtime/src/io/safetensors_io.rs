//! The safetensors format: an 8-byte little-endian header length, a JSON
//! header (name -> dtype, shape, byte offsets; plus string metadata), and the
//! raw little-endian data. Parsing and validation are the `safetensors`
//! crate's; this file converts between its views and our tensors.

use std::borrow::Cow;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView, View};

use super::{write_atomic, Metadata, StateDict};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// One tensor's bytes, ready for the writer.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_bytes(t: &Tensor) -> Bytes {
    let (dtype, data) = match t.dtype() {
        DType::F32 => (
            Dtype::F32,
            t.to_vec::<f32>()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        DType::F64 => (
            Dtype::F64,
            t.to_vec::<f64>()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        DType::I64 => (
            Dtype::I64,
            t.to_vec::<i64>()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
        DType::Bool => (
            Dtype::BOOL,
            t.to_vec::<bool>().iter().map(|&b| b as u8).collect(),
        ),
    };
    Bytes {
        dtype,
        shape: t.shape().to_vec(),
        data,
    }
}

/// The safetensors bytes of `tensors`, with optional string `metadata`.
pub fn serialize(tensors: &StateDict, metadata: Option<&Metadata>) -> Result<Vec<u8>> {
    let bytes: Vec<(String, Bytes)> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), to_bytes(t)))
        .collect();
    safetensors::tensor::serialize(
        bytes.iter().map(|(n, b)| (n.as_str(), b)),
        metadata.cloned(),
    )
    .map_err(|e| Error::Format {
        path: "<memory>".into(),
        msg: format!("cannot serialize: {e}"),
    })
}

/// Reads safetensors `bytes` (from `origin`, for messages) into tensors on
/// the CPU, in the order of their data in the file, and the metadata.
///
/// F32, F64, I64 and BOOL load as such; F16 and BF16 widen to f32, and the
/// other integer types (I8..I32, U8..U32) widen to i64. Any inconsistency
/// (short file, offsets out of range, bad JSON, a length that does not match
/// the shape) is an `Err`.
pub fn deserialize(bytes: &[u8]) -> Result<(StateDict, Metadata)> {
    deserialize_from(bytes, Path::new("<memory>"))
}

fn deserialize_from(bytes: &[u8], origin: &Path) -> Result<(StateDict, Metadata)> {
    let corrupt = |e: safetensors::SafeTensorError| {
        Error::format(
            origin,
            format!("not a valid safetensors file ({e}); was it truncated or overwritten?"),
        )
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
    if let Some(name) = duplicate_name(bytes) {
        return Err(Error::format(
            origin,
            format!(
                "not a valid safetensors file: its header names {name:?} twice (a file holds \
                 each name once; the second entry would silently replace the first); was it \
                 written by hand?"
            ),
        ));
    }
    let st = SafeTensors::deserialize(bytes).map_err(corrupt)?;
    let mut views = st.tensors();
    // The order the data is laid out in: deterministic, unlike the header's map.
    views.sort_by_key(|(n, _)| header.info(n).map(|i| i.data_offsets.0).unwrap_or(0));
    let mut out = StateDict::new();
    for (name, view) in views {
        let t =
            from_view(&view).map_err(|msg| Error::format(origin, format!("{name:?}: {msg}")))?;
        out.insert(name, t);
    }
    Ok((out, header.metadata().clone().unwrap_or_default()))
}

/// The first key that the JSON header of the safetensors `bytes` (already
/// validated by the crate) names twice. The `safetensors` crate reads the
/// header into a map, where a second entry silently replaces the first.
fn duplicate_name(bytes: &[u8]) -> Option<String> {
    use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

    struct FirstDuplicate(Option<String>);
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = FirstDuplicate;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<FirstDuplicate, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut first = None;
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if seen.contains(&key) {
                    first = first.or(Some(key));
                } else {
                    seen.insert(key);
                }
            }
            Ok(FirstDuplicate(first))
        }
    }
    impl<'de> Deserialize<'de> for FirstDuplicate {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            d.deserialize_map(Keys)
        }
    }
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    serde_json::from_slice::<FirstDuplicate>(header).ok()?.0
}

fn from_view(v: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    let shape = v.shape().to_vec();
    // The crate checks the element count against the data; `try_from_vec`
    // checks the sizes' product (a shape like [0, 2^40, 2^40] overflows it).
    let data = v.data();
    fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        data.chunks_exact(N)
            .map(|c| c.try_into().expect("chunks_exact yields N bytes"))
    }
    let t = match v.dtype() {
        Dtype::F32 => {
            Tensor::try_from_vec(chunks::<4>(data).map(f32::from_le_bytes).collect(), &shape)
        }
        Dtype::F64 => {
            Tensor::try_from_vec(chunks::<8>(data).map(f64::from_le_bytes).collect(), &shape)
        }
        Dtype::I64 => {
            Tensor::try_from_vec(chunks::<8>(data).map(i64::from_le_bytes).collect(), &shape)
        }
        Dtype::BOOL => {
            Tensor::try_from_vec(data.iter().map(|&b| b != 0).collect::<Vec<bool>>(), &shape)
        }
        Dtype::F16 => Tensor::try_from_vec(
            chunks::<2>(data)
                .map(|b| f16_to_f32(u16::from_le_bytes(b)))
                .collect(),
            &shape,
        ),
        Dtype::BF16 => Tensor::try_from_vec(
            chunks::<2>(data)
                .map(|b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16))
                .collect(),
            &shape,
        ),
        Dtype::I32 => Tensor::try_from_vec(
            chunks::<4>(data)
                .map(|b| i32::from_le_bytes(b) as i64)
                .collect(),
            &shape,
        ),
        Dtype::U32 => Tensor::try_from_vec(
            chunks::<4>(data)
                .map(|b| u32::from_le_bytes(b) as i64)
                .collect(),
            &shape,
        ),
        Dtype::I16 => Tensor::try_from_vec(
            chunks::<2>(data)
                .map(|b| i16::from_le_bytes(b) as i64)
                .collect(),
            &shape,
        ),
        Dtype::U16 => Tensor::try_from_vec(
            chunks::<2>(data)
                .map(|b| u16::from_le_bytes(b) as i64)
                .collect(),
            &shape,
        ),
        Dtype::I8 => Tensor::try_from_vec(data.iter().map(|&b| b as i8 as i64).collect(), &shape),
        Dtype::U8 => Tensor::try_from_vec(data.iter().map(|&b| b as i64).collect(), &shape),
        other => {
            return Err(format!(
                "dtype {other:?} is not supported (convert it to F32 first)"
            ));
        }
    };
    t.map_err(|e| e.to_string())
}

/// IEEE half to single precision, exactly (every f16 is an f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        // Subnormal: value = frac · 2^-24, exact in f32.
        (0, _) => {
            // 2^-24 as a constant: `powi`'s precision is unspecified.
            let v = frac as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, _) => sign | 0x7fc0_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Writes `tensors` to `path` in safetensors format (PyTorch's
/// `safetensors.torch.save_file`), atomically: a crash mid-write leaves the
/// previous file in place.
pub fn save_file(tensors: &StateDict, path: impl AsRef<Path>) -> Result<()> {
    save_file_with_metadata(tensors, &Metadata::new(), path)
}

/// [`save_file`] with string metadata in the header (`__metadata__`).
pub fn save_file_with_metadata(
    tensors: &StateDict,
    metadata: &Metadata,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = serialize(tensors, (!metadata.is_empty()).then_some(metadata))
        .map_err(|e| Error::format(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Reads a safetensors file into CPU tensors (PyTorch's
/// `safetensors.torch.load_file`).
pub fn load_file(path: impl AsRef<Path>) -> Result<StateDict> {
    load_file_with_metadata(path).map(|(t, _)| t)
}

/// [`load_file`], also returning the header's string metadata.
pub fn load_file_with_metadata(path: impl AsRef<Path>) -> Result<(StateDict, Metadata)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, &e))?;
    deserialize_from(&bytes, path)
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_precision_widens_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
