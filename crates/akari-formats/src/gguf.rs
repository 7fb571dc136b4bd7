//! GGUF (versions 2 and 3, little-endian): header parsing and validation.
//!
//! [`GgufFile::parse`] reads the header, metadata and tensor table and checks them the way
//! ggml's `gguf.cpp` does before any tensor data is touched: every count is checked against
//! the bytes left before anything is allocated for it, every length and offset is
//! bounds-checked, and every failure is an [`Error`] naming the file and the problem.
//! Turning a parsed file into a model is [`load`](crate::gguf::load)'s job.

pub mod keys;
pub mod load;
pub mod writer;

use crate::files::{ByteSource, FileData};
use crate::ggml::GgmlType;
use akari_core::weights::Bytes;
use akari_core::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub const MAGIC: &[u8; 4] = b"GGUF";

/// The most dimensions a ggml tensor has.
pub const MAX_DIMS: usize = 4;

/// GGUF metadata value types (`gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

const VALUE_TYPES: &[(u32, ValueType, &str)] = &[
    (0, ValueType::U8, "u8"),
    (1, ValueType::I8, "i8"),
    (2, ValueType::U16, "u16"),
    (3, ValueType::I16, "i16"),
    (4, ValueType::U32, "u32"),
    (5, ValueType::I32, "i32"),
    (6, ValueType::F32, "f32"),
    (7, ValueType::Bool, "bool"),
    (8, ValueType::String, "string"),
    (9, ValueType::Array, "array"),
    (10, ValueType::U64, "u64"),
    (11, ValueType::I64, "i64"),
    (12, ValueType::F64, "f64"),
];

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        VALUE_TYPES
            .iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, t, _)| *t)
    }

    pub fn id(self) -> u32 {
        VALUE_TYPES
            .iter()
            .find(|(_, t, _)| *t == self)
            .map_or(0, |(i, _, _)| *i)
    }

    pub fn name(self) -> &'static str {
        VALUE_TYPES
            .iter()
            .find(|(_, t, _)| *t == self)
            .map_or("?", |(_, _, n)| n)
    }

    /// The fewest bytes a value of this type occupies in the file.
    fn min_size(self) -> usize {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 | ValueType::String => 8,
            // Element type and count.
            ValueType::Array => 12,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value. Arrays hold scalars or strings (GGUF has no nested arrays that ggml
/// accepts, and neither does akari).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type, as i128 (so every stored integer fits).
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A float, or an integer read as one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_int().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, v) => Some(v),
            _ => None,
        }
    }

    /// A short human-readable rendering: long strings cut, arrays summarised.
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) => quote(s, 60),
            Value::Array(t, v) => {
                let shown: Vec<String> = v
                    .iter()
                    .take(4)
                    .map(|e| match e {
                        Value::String(s) => quote(s, 16),
                        other => other.summary(),
                    })
                    .collect();
                let more = if v.len() > shown.len() { ", …" } else { "" };
                format!("[{t}; {}] [{}{more}]", v.len(), shown.join(", "))
            }
            Value::U8(v) => v.to_string(),
            Value::I8(v) => v.to_string(),
            Value::U16(v) => v.to_string(),
            Value::I16(v) => v.to_string(),
            Value::U32(v) => v.to_string(),
            Value::I32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::I64(v) => v.to_string(),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
        }
    }
}

/// `s` in quotes with control characters escaped, cut to `max` characters.
fn quote(s: &str, max: usize) -> String {
    let mut out = String::from('"');
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// One entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension, the row length.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// From the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// `[rows, cols]` when the tensor is a matrix (dimensions past the second are 1).
    pub fn matrix_shape(&self) -> Option<[usize; 2]> {
        let cols = *self.dims.first()?;
        let rows = self.dims.get(1).copied().unwrap_or(1);
        if self.dims.iter().skip(2).any(|&d| d != 1) {
            return None;
        }
        Some([usize::try_from(rows).ok()?, usize::try_from(cols).ok()?])
    }

    /// The dimensions in the usual (outermost first) order, trailing 1s dropped.
    pub fn shape(&self) -> Vec<usize> {
        let mut d: Vec<usize> = self.dims.iter().map(|&d| d as usize).collect();
        while d.len() > 1 && d.last() == Some(&1) {
            d.pop();
        }
        d.reverse();
        d
    }
}

/// A parsed GGUF file: header, typed metadata, tensor table, and the bytes they index.
#[derive(Clone, Debug)]
pub struct GgufFile {
    pub file_name: String,
    pub version: u32,
    /// In file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    /// Where the data section starts, from the start of the file.
    pub data_start: usize,
    data: FileData,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

/// A bounds-checked little-endian cursor over the start of a file of `len` bytes (`buf` may
/// be only the first part of it).
struct Reader<'a> {
    buf: &'a [u8],
    /// u64: a file read from a source may be larger than wasm32's address space.
    len: u64,
    pos: usize,
    file: &'a str,
    /// Set when a read went past `buf` but not past the file: read a longer prefix.
    short: bool,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::format(self.file, msg)
    }

    /// Bytes left in the file (not only in `buf`).
    fn remaining(&self) -> usize {
        usize::try_from(self.len.saturating_sub(self.pos as u64)).unwrap_or(usize::MAX)
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated file: {} needs {n} bytes at offset {}, but only {} remain",
                what(),
                self.pos,
                self.remaining()
            )));
        }
        if n > self.buf.len().saturating_sub(self.pos) {
            self.short = true;
            return Err(self.err(format!(
                "{} lies past the first {} bytes read",
                what(),
                self.buf.len()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length or count, checked to fit in what is left of the file at `min_size` bytes
    /// per item, so nothing is ever allocated for items that cannot be there.
    fn count(&mut self, min_size: usize, what: &dyn Fn() -> String) -> Result<usize> {
        let n = self.u64(what)?;
        let need = n.checked_mul(min_size as u64);
        match need {
            Some(need) if need <= self.remaining() as u64 => Ok(n as usize),
            _ => Err(self.err(format!(
                "{} claims {n} items, more than the {} bytes left in the file can hold",
                what(),
                self.remaining()
            ))),
        }
    }

    fn string_bytes(&mut self, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let n = self.count(1, what)?;
        self.take(n, what)
    }

    /// A UTF-8 string; invalid bytes are an error.
    fn strict_string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let b = self.string_bytes(what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| self.err(format!("{} is not valid UTF-8", what())))
    }

    fn value(&mut self, ty: ValueType, key: &str, in_array: bool) -> Result<Value> {
        let what = || format!("metadata value `{key}`");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(&what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => match self.array::<1>(&what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(self.err(format!(
                        "metadata `{key}`: boolean byte {b} is neither 0 nor 1"
                    )))
                }
            },
            // Token strings are not always valid UTF-8 (byte-fallback pieces); keep them
            // readable rather than refuse the file.
            ValueType::String => {
                Value::String(String::from_utf8_lossy(self.string_bytes(&what)?).into_owned())
            }
            ValueType::Array => {
                if in_array {
                    return Err(
                        self.err(format!("metadata `{key}`: nested arrays are not supported"))
                    );
                }
                let id = self.u32(&|| format!("element type of metadata array `{key}`"))?;
                let et = ValueType::from_id(id).ok_or_else(|| {
                    self.err(format!(
                        "metadata array `{key}` has unknown element type {id}"
                    ))
                })?;
                if et == ValueType::Array {
                    return Err(
                        self.err(format!("metadata `{key}`: nested arrays are not supported"))
                    );
                }
                let n = self.count(et.min_size(), &|| format!("metadata array `{key}`"))?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.value(et, key, true)?);
                }
                Value::Array(et, v)
            }
        })
    }
}

impl GgufFile {
    /// Parses and validates the header of a GGUF file held in `bytes`. `file_name` appears in
    /// every error.
    pub fn parse(bytes: Bytes, file_name: &str) -> Result<GgufFile> {
        let len = bytes.len() as u64;
        GgufFile::parse_prefix(&bytes, len, file_name, FileData::Bytes(bytes.clone()))
            .map_err(|(e, _)| e)
    }

    /// As [`GgufFile::parse`], for a file read a range at a time: only the header is read now,
    /// and [`GgufFile::tensor_data`] reads each tensor when asked.
    pub fn parse_source(source: Arc<dyn ByteSource>, file_name: &str) -> Result<GgufFile> {
        let len = source.len();
        // Most headers (with their vocabulary) fit in a few MiB; read more while they do not.
        let whole = usize::try_from(len).unwrap_or(usize::MAX);
        let mut want = (4usize << 20).min(whole);
        loop {
            let prefix = source.read_at(0, want)?;
            match GgufFile::parse_prefix(&prefix, len, file_name, FileData::Source(source.clone()))
            {
                Ok(f) => return Ok(f),
                Err((_, true)) if want < whole => want = want.saturating_mul(4).min(whole),
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// The header of a `len`-byte file from its first bytes, `buf`; `data` is the whole file.
    /// The flag on an error says whether more of the file would have helped.
    fn parse_prefix(
        buf: &[u8],
        len: u64,
        file_name: &str,
        data: FileData,
    ) -> std::result::Result<GgufFile, (Error, bool)> {
        let mut r = Reader {
            buf,
            len,
            pos: 0,
            file: file_name,
            short: false,
        };
        GgufFile::parse_header(&mut r, data).map_err(|e| (e, r.short))
    }

    fn parse_header(r: &mut Reader<'_>, data: FileData) -> Result<GgufFile> {
        let file_name = r.file;
        let magic = r.array::<4>(&|| "the GGUF magic".into())?;
        if &magic != MAGIC {
            return Err(r.err(format!(
                "not a GGUF file (starts with {:02x?}, expected \"GGUF\")",
                magic
            )));
        }
        let version = r.u32(&|| "the version".into())?;
        match version {
            2 | 3 => {}
            1 => {
                return Err(r.err(
                    "GGUF version 1 is not supported (only 2 and 3); convert the model again with a current llama.cpp",
                ))
            }
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(r.err("big-endian GGUF files are not supported"));
            }
            v => return Err(r.err(format!("unsupported GGUF version {v} (supported: 2 and 3)"))),
        }
        let n_tensors = r.u64(&|| "the tensor count".into())?;
        let n_kv = r.u64(&|| "the metadata count".into())?;
        // A tensor entry takes at least 32 bytes (name length, one dim, type, offset) and a
        // metadata entry 13 (key length, type, one byte).
        let need = n_tensors
            .checked_mul(32)
            .zip(n_kv.checked_mul(13))
            .and_then(|(a, b)| a.checked_add(b));
        if need.is_none_or(|need| need > r.remaining() as u64) {
            return Err(r.err(format!(
                "header claims {n_tensors} tensors and {n_kv} metadata entries, more than the {}-byte file can hold",
                r.len
            )));
        }
        let (n_tensors, n_kv) = (n_tensors as usize, n_kv as usize);

        let mut metadata = Vec::with_capacity(n_kv);
        let mut meta_index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = r.strict_string(&|| format!("metadata key #{i}"))?;
            let id = r.u32(&|| format!("the type of metadata `{key}`"))?;
            let ty = ValueType::from_id(id)
                .ok_or_else(|| r.err(format!("metadata `{key}` has unknown value type {id}")))?;
            let value = r.value(ty, &key, false)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(r.err(format!("duplicate metadata key `{key}`")));
            }
            metadata.push((key, value));
        }

        let alignment = match meta_index
            .get(keys::GENERAL_ALIGNMENT)
            .map(|&i| &metadata[i].1)
        {
            None => keys::DEFAULT_ALIGNMENT,
            Some(v) => match v.as_int() {
                Some(a) if a > 0 && a <= 1 << 30 && (a as u64).is_power_of_two() => a as usize,
                _ => {
                    return Err(r.err(format!(
                        "`{}` is {}, expected a power of two",
                        keys::GENERAL_ALIGNMENT,
                        v.summary()
                    )))
                }
            },
        };

        let mut tensors = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = r.strict_string(&|| format!("tensor name #{i}"))?;
            let t = read_tensor_info(r, name)?;
            if tensor_index.insert(t.name.clone(), tensors.len()).is_some() {
                return Err(r.err(format!("duplicate tensor name `{}`", t.name)));
            }
            tensors.push(t);
        }

        let data_start = r.pos.div_ceil(alignment) * alignment;
        for t in &tensors {
            if t.offset % alignment as u64 != 0 {
                return Err(r.err(format!(
                    "tensor `{}`: offset {} is not a multiple of the alignment {alignment}",
                    t.name, t.offset
                )));
            }
            let end = (data_start as u64)
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes));
            if end.is_none_or(|end| end > r.len) {
                return Err(r.err(format!(
                    "tensor `{}`: tensor offsets past the end of the file ({} bytes at data offset {}, data starts at {data_start}, file is {} bytes)",
                    t.name,
                    t.n_bytes,
                    t.offset,
                    r.len
                )));
            }
        }

        Ok(GgufFile {
            file_name: file_name.to_string(),
            version,
            metadata,
            tensors,
            alignment,
            data_start,
            data,
            meta_index,
            tensor_index,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.meta_index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
    }

    /// The bytes of a tensor of this file: a slice of the file in memory, not a copy, or
    /// read from its [`ByteSource`].
    pub fn tensor_data(&self, t: &TensorInfo) -> Result<Bytes> {
        let past_end = || {
            Error::format(
                &self.file_name,
                format!(
                    "tensor `{}`: tensor offsets past the end of the file",
                    t.name
                ),
            )
        };
        let start = (self.data_start as u64)
            .checked_add(t.offset)
            .ok_or_else(past_end)?;
        let len = usize::try_from(t.n_bytes).map_err(|_| past_end())?;
        match &self.data {
            FileData::Bytes(b) => usize::try_from(start)
                .ok()
                .and_then(|s| b.slice(s..s.checked_add(len)?))
                .ok_or_else(past_end),
            FileData::Source(src) => {
                if start.saturating_add(t.n_bytes) > src.len() {
                    return Err(past_end());
                }
                src.read_at(start, len).map(Bytes::from_vec)
            }
        }
    }

    /// This file without its metadata and tensor table: what [`GgufFile::tensor_data`] needs.
    pub(crate) fn data_only(&self) -> GgufFile {
        GgufFile {
            file_name: self.file_name.clone(),
            version: self.version,
            metadata: Vec::new(),
            tensors: Vec::new(),
            alignment: self.alignment,
            data_start: self.data_start,
            data: self.data.clone(),
            meta_index: HashMap::new(),
            tensor_index: HashMap::new(),
        }
    }

    /// Whether tensors are read from a [`ByteSource`] when asked, not held in memory.
    pub fn is_streamed(&self) -> bool {
        matches!(self.data, FileData::Source(_))
    }

    /// A format error naming this file.
    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::format(&self.file_name, msg)
    }
}

fn read_tensor_info(r: &mut Reader<'_>, name: String) -> Result<TensorInfo> {
    let n_dims = r.u32(&|| format!("the dimension count of tensor `{name}`"))? as usize;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(r.err(format!(
            "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims);
    for _ in 0..n_dims {
        dims.push(r.u64(&|| format!("the dimensions of tensor `{name}`"))?);
    }
    let id = r.u32(&|| format!("the type of tensor `{name}`"))?;
    let offset = r.u64(&|| format!("the offset of tensor `{name}`"))?;
    if dims.contains(&0) || dims.iter().any(|&d| d > i64::MAX as u64) {
        return Err(r.err(format!("tensor `{name}` has invalid dimensions {dims:?}")));
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| {
            r.err(format!(
                "tensor `{name}`: element count of {dims:?} overflows"
            ))
        })?;
    let ggml_type = GgmlType::from_id(id).ok_or_else(|| Error::UnsupportedWeightType {
        tensor: name.clone(),
        kind: format!("unknown ggml type id {id}"),
    })?;
    let bs = ggml_type.block_size() as u64;
    if dims[0] % bs != 0 {
        return Err(r.err(format!(
            "tensor `{name}`: row length {} is not a multiple of the {ggml_type} block size {bs}",
            dims[0]
        )));
    }
    let n_bytes = ggml_type
        .bytes_for(n_elements)
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| {
            r.err(format!(
                "tensor `{name}`: byte size of {dims:?} {ggml_type} overflows"
            ))
        })?;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_elements,
        n_bytes,
    })
}
