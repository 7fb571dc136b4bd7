//! A minimal GGUF writer, for tests and tools that need small model files (akari's own tests
//! build tiny models with it). It writes what [`GgufFile`](super::GgufFile) reads: version 3
//! (or 2), little-endian, tensor data aligned to `general.alignment`.

use super::{Value, ValueType};
use crate::ggml::GgmlType;

struct Tensor {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    data: Vec<u8>,
    offset: Option<u64>,
}

pub struct GgufWriter {
    version: u32,
    alignment: usize,
    metadata: Vec<(String, Value)>,
    tensors: Vec<Tensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter {
            version: 3,
            alignment: super::keys::DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// The version number written to the header (any number, so tests can write bad ones).
    pub fn version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Aligns tensor data to `alignment` and records it as `general.alignment`.
    pub fn alignment(&mut self, alignment: u32) -> &mut Self {
        self.alignment = alignment.max(1) as usize;
        self.metadata
            .retain(|(k, _)| k != super::keys::GENERAL_ALIGNMENT);
        self.kv(super::keys::GENERAL_ALIGNMENT, Value::U32(alignment))
    }

    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        self.kv(key, Value::String(value.to_string()))
    }

    pub fn u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.kv(key, Value::U32(value))
    }

    pub fn f32(&mut self, key: &str, value: f32) -> &mut Self {
        self.kv(key, Value::F32(value))
    }

    pub fn strings(&mut self, key: &str, values: &[&str]) -> &mut Self {
        let v = values
            .iter()
            .map(|s| Value::String(s.to_string()))
            .collect();
        self.kv(key, Value::Array(ValueType::String, v))
    }

    /// A tensor of ggml type `ty`; `dims` in ggml order (row length first), `data` its bytes.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> &mut Self {
        self.raw_tensor(name, dims, ty.id(), data, None)
    }

    /// An f32 tensor.
    pub fn f32_tensor(&mut self, name: &str, dims: &[u64], values: &[f32]) -> &mut Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, dims, GgmlType::F32, data)
    }

    /// A tensor with any type id, and optionally an explicit data offset (else the next
    /// aligned one).
    pub fn raw_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        type_id: u32,
        data: Vec<u8>,
        offset: Option<u64>,
    ) -> &mut Self {
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            type_id,
            data,
            offset,
        });
        self
    }

    /// The file. Tensor data follow each other, each padded to the alignment except the
    /// last, so the file ends where the last tensor does.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(super::MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut out, v);
        }
        let align = |n: usize| n.div_ceil(self.alignment) * self.alignment;
        let mut next = 0usize;
        let mut placed = Vec::new();
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            let offset = t.offset.unwrap_or(next as u64);
            out.extend_from_slice(&offset.to_le_bytes());
            placed.push(next);
            next = align(next + t.data.len());
        }
        let data_start = align(out.len());
        out.resize(data_start, 0);
        for (t, at) in self.tensors.iter().zip(placed) {
            out.resize(data_start + at, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(t, items) => {
            out.extend_from_slice(&t.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
    }
}
