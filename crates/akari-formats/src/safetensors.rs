//! safetensors files: an 8-byte little-endian header length, a JSON tensor table, then the
//! tensor data. Tensors stay in the file's memory map; [`SafetensorsFile::data`] hands out
//! slices of it.
//!
//! The header is parsed and validated by the `safetensors` crate (header length within the
//! file, every tensor's offsets contiguous and in order, shape × dtype size = byte length,
//! the data covering the rest of the file exactly). Values are little-endian, row-major, in
//! the same byte layout as ggml's F32/F16/BF16 tensors, so conversions reuse [`crate::ggml`].

use crate::ggml::{self, GgmlType};
use crate::gguf::load::ConvertTo;
use akari_core::weights::{Bytes, Matrix};
use akari_core::{Error, Result};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::ops::Range;

/// Size of the header-length prefix.
const N_LEN: usize = 8;

/// One tensor of the table.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    /// The element type as the file spells it (`F32`, `BF16`, `I64`, …).
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Byte range within the whole file.
    range: Range<usize>,
    ty: Option<GgmlType>,
}

impl TensorEntry {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The ggml type with the same byte layout, for the element types akari reads.
    pub fn ggml_type(&self) -> Option<GgmlType> {
        self.ty
    }
}

/// A parsed safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    /// For error messages.
    pub file_name: String,
    bytes: Bytes,
    /// Tensors in file order.
    pub tensors: Vec<TensorEntry>,
    /// The free-form `__metadata__` entries, sorted by key.
    pub metadata: Vec<(String, String)>,
}

fn ggml_type(d: Dtype) -> Option<GgmlType> {
    match d {
        Dtype::F32 => Some(GgmlType::F32),
        Dtype::F16 => Some(GgmlType::F16),
        Dtype::BF16 => Some(GgmlType::BF16),
        _ => None,
    }
}

impl SafetensorsFile {
    /// Parses the header of a safetensors file held in `bytes`; `file_name` appears in errors.
    pub fn parse(bytes: Bytes, file_name: &str) -> Result<SafetensorsFile> {
        let err = |msg: String| Error::format(file_name, msg);
        let len = bytes.len();
        let header_len = match bytes.get(..N_LEN) {
            Some(b) => {
                let mut a = [0u8; N_LEN];
                a.copy_from_slice(b);
                u64::from_le_bytes(a)
            }
            None => {
                return Err(err(format!(
                    "{len} bytes is too short for a safetensors file"
                )))
            }
        };
        if header_len > (len - N_LEN) as u64 {
            return Err(err(format!(
                "the header claims {header_len} bytes but the file has only {len} bytes: \
                 truncated, or not a safetensors file"
            )));
        }
        let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(describe(e, len)))?;
        let data_start = N_LEN + n;
        let mut tensors = Vec::new();
        for name in meta.offset_keys() {
            let info = meta
                .info(&name)
                .ok_or_else(|| err(format!("tensor `{name}` vanished from its own table")))?;
            let (s, e) = info.data_offsets;
            // `read_metadata` checked that the offsets tile the data exactly; the checked
            // arithmetic only keeps this function panic-free on its own.
            let range = data_start
                .checked_add(s)
                .zip(data_start.checked_add(e))
                .map(|(s, e)| s..e)
                .filter(|r| r.start <= r.end && r.end <= len)
                .ok_or_else(|| err(format!("tensor `{name}`: data offsets out of range")))?;
            tensors.push(TensorEntry {
                name,
                dtype: info.dtype.to_string(),
                shape: info.shape.clone(),
                range,
                ty: ggml_type(info.dtype),
            });
        }
        Ok(SafetensorsFile {
            file_name: file_name.to_string(),
            bytes,
            tensors,
            metadata: user_metadata(&meta),
        })
    }

    /// A tensor's bytes, sharing the file's buffer.
    pub fn data(&self, t: &TensorEntry) -> Result<Bytes> {
        self.bytes.slice(t.range.clone()).ok_or_else(|| {
            Error::format(
                &self.file_name,
                format!("tensor `{}`: data out of range", t.name),
            )
        })
    }

    fn ggml(&self, t: &TensorEntry) -> Result<GgmlType> {
        t.ty.ok_or_else(|| Error::UnsupportedWeightType {
            tensor: t.name.clone(),
            kind: format!("{} (safetensors)", t.dtype),
        })
    }

    /// A 2-D tensor as a `[rows, cols]` matrix stored as `target(default format)`: F32 and
    /// F16 in place when the target matches, BF16 widened to F32, anything else converted.
    pub fn matrix(
        &self,
        t: &TensorEntry,
        rows: usize,
        cols: usize,
        target: &ConvertTo,
    ) -> Result<Matrix> {
        if t.shape != [rows, cols] {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: vec![rows, cols],
                got: t.shape.clone(),
            });
        }
        let ty = self.ggml(t)?;
        ggml::to_matrix_as(&t.name, ty, rows, cols, self.data(t)?, target)
    }

    /// A 1-D tensor of `len` values, as f32.
    pub fn vector(&self, t: &TensorEntry, len: usize) -> Result<Vec<f32>> {
        if t.shape != [len] {
            return Err(Error::ShapeMismatch {
                tensor: t.name.clone(),
                expected: vec![len],
                got: t.shape.clone(),
            });
        }
        let ty = self.ggml(t)?;
        ggml::to_f32(&t.name, ty, len, &self.data(t)?)
    }
}

fn user_metadata(meta: &Metadata) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = meta
        .metadata()
        .iter()
        .flat_map(|m| m.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.sort();
    out
}

/// The crate's errors, said in terms of what is wrong with the file.
fn describe(e: SafeTensorError, len: usize) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => {
            format!("{len} bytes is too short for a safetensors file")
        }
        SafeTensorError::HeaderTooLarge => {
            "the header length is implausibly large: not a safetensors file".into()
        }
        SafeTensorError::InvalidHeaderLength => {
            "the header runs past the end of the file: truncated, or not a safetensors file".into()
        }
        SafeTensorError::InvalidHeader(e) => format!("the header is not UTF-8 ({e})"),
        SafeTensorError::InvalidHeaderDeserialization(e) | SafeTensorError::JsonError(e) => {
            format!("the header is not a valid tensor table ({e})")
        }
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "the tensor table does not account for the file's {len} bytes: \
             the file is truncated or has trailing data"
        ),
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor `{name}`: data offsets are not contiguous and in order")
        }
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte length does not match its shape and element type".into()
        }
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows".into(),
        other => format!("invalid safetensors header: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use akari_core::QuantFormat;

    /// A safetensors file from `(name, dtype, shape, data)` in order.
    pub(crate) fn build(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
        let mut entries = Vec::new();
        let mut offset = 0;
        for (name, dtype, shape, data) in tensors {
            entries.push(format!(
                "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{offset},{}]}}",
                offset + data.len()
            ));
            offset += data.len();
        }
        let header = format!(
            "{{\"__metadata__\":{{\"format\":\"pt\"}},{}}}",
            entries.join(",")
        );
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        for (.., data) in tensors {
            out.extend_from_slice(data);
        }
        out
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn sample() -> Vec<u8> {
        let m: Vec<f32> = (0..8).map(|i| i as f32 * 0.5).collect();
        let bf: Vec<u8> = [1.0f32, -2.0, 0.5, 4.0]
            .iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        build(&[
            ("m", "F32", &[2, 4], f32s(&m)),
            ("b", "BF16", &[4], bf),
            ("i", "I64", &[1], vec![0; 8]),
        ])
    }

    #[test]
    fn reads_tensors_in_place() {
        let bytes = Bytes::from_vec(sample());
        let f = SafetensorsFile::parse(bytes.clone(), "t.safetensors").unwrap();
        let names: Vec<_> = f.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["m", "b", "i"]);
        assert_eq!(f.metadata, [("format".to_string(), "pt".to_string())]);
        let m = f.matrix(&f.tensors[0], 2, 4, &|d| d).unwrap();
        assert_eq!(m.format, QuantFormat::F32);
        // Zero-copy: the matrix points into the file's buffer.
        assert_eq!(m.bytes.as_ptr(), bytes[f.tensors[0].range.clone()].as_ptr());
        let mut row = [0f32; 4];
        m.row_f32(1, &mut row);
        assert_eq!(row, [2.0, 2.5, 3.0, 3.5]);
        let m16 = f
            .matrix(&f.tensors[0], 2, 4, &|_| QuantFormat::F16)
            .unwrap();
        assert_eq!(m16.format, QuantFormat::F16);
        assert_eq!(f.vector(&f.tensors[1], 4).unwrap(), [1.0, -2.0, 0.5, 4.0]);
        assert!(matches!(
            f.matrix(&f.tensors[0], 4, 2, &|d| d),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            f.vector(&f.tensors[2], 1),
            Err(Error::UnsupportedWeightType { .. })
        ));
    }

    #[test]
    fn damaged_files_give_errors() {
        let good = sample();
        let parse = |b: Vec<u8>| SafetensorsFile::parse(Bytes::from_vec(b), "t.safetensors");
        // Truncated anywhere: in the length, the header or the data.
        for cut in [0, 3, 8, 20, good.len() - 1] {
            let e = parse(good[..cut].to_vec()).unwrap_err().to_string();
            assert!(e.starts_with("t.safetensors: "), "{e}");
        }
        let e = parse(good[..good.len() - 4].to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
        // Trailing bytes.
        let mut long = good.clone();
        long.push(0);
        assert!(parse(long).is_err());
        // A header length past the end.
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(huge).unwrap_err().to_string().contains("truncated"));
        // Shape and byte length disagree.
        let bad = build(&[("m", "F32", &[2, 3], vec![0; 8])]);
        assert!(parse(bad).is_err());
        // Unknown dtype.
        let bad = build(&[("m", "F99", &[2], vec![0; 8])]);
        assert!(parse(bad).is_err());
        // Offsets overlapping or out of order.
        let raw = |header: &str, data: usize| {
            let mut out = (header.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(header.as_bytes());
            out.resize(out.len() + data, 0);
            out
        };
        let ok = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert!(parse(raw(ok, 8)).is_ok());
        let overlap = ok.replace("[4,8]", "[0,4]");
        assert!(parse(raw(&overlap, 4)).is_err());
        let gap = ok.replace("[4,8]", "[8,12]");
        assert!(parse(raw(&gap, 12)).is_err());
    }
}
