//! A small protobuf wire-format decoder for the parts of `onnx.proto3` a decoder LLM needs.
//!
//! Why not `prost` or `protobuf`: their generated types own every `bytes` field as a
//! `Vec<u8>`, so decoding a model would copy every initializer out of the memory map (and
//! need the whole file in memory twice). Here a tensor's `raw_data` stays a [`Bytes`] slice of
//! the map, as GGUF and safetensors tensors do. The wire format is small (varint, fixed32,
//! fixed64, length-delimited); unknown fields are skipped, and every length is checked
//! against the buffer before it is used, so a damaged file gives an [`Error::Format`] naming
//! the file and never a panic or an allocation sized by an unchecked count.
//!
//! Decoded: `ModelProto` (ir_version 1, graph 7, opset_import 8), `OperatorSetIdProto`
//! (domain 1, version 2), `GraphProto` (node 1, name 2, initializer 5, input 11, output 12),
//! `ValueInfoProto` (name 1), `NodeProto` (input 1, output 2, name 3, op_type 4,
//! attribute 5, domain 7), `AttributeProto` (name 1, f 2, i 3, s 4, t 5, g 6, floats 7, ints 8,
//! type 20), `TensorProto` (dims 1, data_type 2, float_data 4, int32_data 5, int64_data 7,
//! name 8, raw_data 9, double_data 10, uint64_data 11, external_data 13, data_location 14),
//! `StringStringEntryProto` (key 1, value 2).

use akari_core::weights::Bytes;
use akari_core::{Error, Result};
use std::ops::Range;

/// `TensorProto.DataType` values.
pub mod dtype {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const UINT16: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const BOOL: i32 = 9;
    pub const FLOAT16: i32 = 10;
    pub const DOUBLE: i32 = 11;
    pub const UINT32: i32 = 12;
    pub const UINT64: i32 = 13;
    pub const BFLOAT16: i32 = 16;

    /// Bytes per element, for the fixed-size numeric types.
    pub fn size(t: i32) -> Option<usize> {
        match t {
            UINT8 | INT8 | BOOL => Some(1),
            UINT16 | INT16 | FLOAT16 | BFLOAT16 => Some(2),
            FLOAT | INT32 | UINT32 => Some(4),
            INT64 | DOUBLE | UINT64 => Some(8),
            _ => None,
        }
    }

    pub fn name(t: i32) -> String {
        match t {
            FLOAT => "float32".into(),
            UINT8 => "uint8".into(),
            INT8 => "int8".into(),
            UINT16 => "uint16".into(),
            INT16 => "int16".into(),
            INT32 => "int32".into(),
            INT64 => "int64".into(),
            8 => "string".into(),
            BOOL => "bool".into(),
            FLOAT16 => "float16".into(),
            DOUBLE => "float64".into(),
            UINT32 => "uint32".into(),
            UINT64 => "uint64".into(),
            BFLOAT16 => "bfloat16".into(),
            other => format!("data type {other}"),
        }
    }
}

/// A decoded `ModelProto`.
#[derive(Debug, Default)]
pub struct Model {
    pub ir_version: i64,
    /// `(domain, version)`; the default domain is `""`.
    pub opsets: Vec<(String, i64)>,
    pub graph: Graph,
}

#[derive(Debug, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Node {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub attributes: Vec<Attribute>,
}

impl Node {
    pub fn attr(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// An integer attribute.
    pub fn attr_i(&self, name: &str) -> Option<i64> {
        self.attr(name).map(|a| a.i)
    }

    /// The input at `i`, when present and not the empty name (ONNX's "omitted").
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Default)]
pub struct Attribute {
    pub name: String,
    /// `AttributeProto.AttributeType` (1 FLOAT, 2 INT, 3 STRING, 4 TENSOR, 6 FLOATS, 7 INTS…).
    pub kind: i32,
    pub f: f32,
    pub i: i64,
    pub s: Vec<u8>,
    pub t: Option<Box<Tensor>>,
    /// A subgraph (`If` branches).
    pub g: Option<Box<Graph>>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
}

/// Where a tensor's values are.
#[derive(Debug, Clone)]
pub enum TensorData {
    /// Little-endian element bytes (`raw_data`, or packed `float_data`), a slice of the file.
    Raw(Bytes),
    /// `int32_data`, `int64_data` or `uint64_data` values, one per element (for 8- and 16-bit
    /// types, `int32_data` holds each element widened).
    Ints(Vec<i64>),
    /// In another file (`data_location = EXTERNAL`).
    External {
        location: String,
        offset: u64,
        length: Option<u64>,
    },
    /// No values at all (an empty tensor, or one whose values this reader does not decode).
    None,
}

#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i32,
    pub data: TensorData,
}

impl Tensor {
    /// Dimensions as sizes; `None` when one is negative.
    pub fn shape(&self) -> Option<Vec<usize>> {
        self.dims.iter().map(|&d| usize::try_from(d).ok()).collect()
    }

    /// Element count, `None` on a negative dimension or overflow.
    pub fn n_elements(&self) -> Option<usize> {
        self.shape()?
            .into_iter()
            .try_fold(1usize, |a, d| a.checked_mul(d))
    }
}

/// One field of a message: its number and value.
enum Value {
    Varint(u64),
    Fixed64(u64),
    /// A byte range of the reader's buffer.
    Len(Range<usize>),
    Fixed32(u32),
}

/// Reads fields from `buf[range]`. Ranges it hands out are positions in `buf`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    file: &'a str,
    /// What is being decoded, for messages.
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], range: Range<usize>, file: &'a str, what: &'static str) -> Self {
        Reader {
            buf,
            pos: range.start,
            end: range.end,
            file,
            what,
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::format(
            self.file,
            format!(
                "damaged ONNX protobuf ({} at byte {}): {msg}",
                self.what, self.pos
            ),
        )
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            if self.pos >= self.end {
                return Err(self.err("a varint runs past the end of its message"));
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("a varint is longer than 10 bytes"))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.end - self.pos < N {
            return Err(self.err("a fixed-size value runs past the end of its message"));
        }
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(a)
    }

    /// The next field, or `None` at the end of the message.
    fn next(&mut self) -> Result<Option<(u32, Value)>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| self.err("field number out of range"))?;
        let v = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.fixed::<8>()?)),
            2 => {
                let len = self.varint()?;
                let left = (self.end - self.pos) as u64;
                if len > left {
                    return Err(self.err(format!(
                        "field {field} claims {len} bytes but only {left} are left: the file \
                         is truncated or not ONNX"
                    )));
                }
                let start = self.pos;
                self.pos += len as usize;
                Value::Len(start..self.pos)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.fixed::<4>()?)),
            w => {
                return Err(self.err(format!(
                    "field {field} has wire type {w}, which protobuf 3 does not use: not an \
                     ONNX file"
                )))
            }
        };
        Ok(Some((field, v)))
    }

    fn string(&self, v: &Value) -> Result<String> {
        match v {
            Value::Len(r) => Ok(String::from_utf8_lossy(&self.buf[r.clone()]).into_owned()),
            _ => Err(self.err("a string field has the wrong wire type")),
        }
    }

    fn len(&self, v: &Value) -> Result<Range<usize>> {
        match v {
            Value::Len(r) => Ok(r.clone()),
            _ => Err(self.err("a message field has the wrong wire type")),
        }
    }

    fn int(&self, v: &Value) -> Result<i64> {
        match v {
            Value::Varint(x) => Ok(*x as i64),
            _ => Err(self.err("an integer field has the wrong wire type")),
        }
    }

    /// A repeated varint field, packed or not: appends to `out`.
    fn ints(&self, v: &Value, out: &mut Vec<i64>) -> Result<()> {
        match v {
            Value::Varint(x) => out.push(*x as i64),
            Value::Len(r) => {
                let mut sub = Reader::new(self.buf, r.clone(), self.file, self.what);
                while sub.pos < sub.end {
                    out.push(sub.varint()? as i64);
                }
            }
            _ => return Err(self.err("a repeated integer field has the wrong wire type")),
        }
        Ok(())
    }

    fn sub(&self, r: Range<usize>, what: &'static str) -> Reader<'a> {
        Reader::new(self.buf, r, self.file, what)
    }
}

/// Decodes a `ModelProto` held in `bytes`; `file` names it in errors. Tensor data stays in
/// `bytes`.
pub fn decode_model(bytes: &Bytes, file: &str) -> Result<Model> {
    let buf: &[u8] = bytes;
    let mut r = Reader::new(buf, 0..buf.len(), file, "ModelProto");
    let mut m = Model::default();
    let mut graph = None;
    while let Some((field, v)) = r.next()? {
        match field {
            1 => m.ir_version = r.int(&v)?,
            7 => graph = Some(r.len(&v)?),
            8 => {
                let mut s = r.sub(r.len(&v)?, "OperatorSetIdProto");
                let (mut domain, mut version) = (String::new(), 0);
                while let Some((f, v)) = s.next()? {
                    match f {
                        1 => domain = s.string(&v)?,
                        2 => version = s.int(&v)?,
                        _ => {}
                    }
                }
                m.opsets.push((domain, version));
            }
            _ => {}
        }
    }
    let Some(graph) = graph else {
        return Err(Error::format(
            file,
            "no graph: not an ONNX model (or an empty one)",
        ));
    };
    m.graph = decode_graph(&r.sub(graph, "GraphProto"), bytes, 0)?;
    Ok(m)
}

/// How deeply subgraphs (`If` branches, loop bodies) may nest: a hostile file must not
/// overflow the stack. Exporters nest one or two levels.
const MAX_DEPTH: usize = 8;

fn decode_graph(r: &Reader<'_>, bytes: &Bytes, depth: usize) -> Result<Graph> {
    if depth > MAX_DEPTH {
        return Err(r.err(format!("subgraphs nested more than {MAX_DEPTH} deep")));
    }
    let mut r = r.sub(r.pos..r.end, "GraphProto");
    let mut g = Graph::default();
    while let Some((field, v)) = r.next()? {
        match field {
            1 => g
                .nodes
                .push(decode_node(&r.sub(r.len(&v)?, "NodeProto"), bytes, depth)?),
            2 => g.name = r.string(&v)?,
            5 => g
                .initializers
                .push(decode_tensor(&r.sub(r.len(&v)?, "TensorProto"), bytes)?),
            11 | 12 => {
                let mut s = r.sub(r.len(&v)?, "ValueInfoProto");
                let mut name = String::new();
                while let Some((f, v)) = s.next()? {
                    if f == 1 {
                        name = s.string(&v)?;
                    }
                }
                if field == 11 {
                    g.inputs.push(name);
                } else {
                    g.outputs.push(name);
                }
            }
            _ => {}
        }
    }
    Ok(g)
}

fn decode_node(r: &Reader<'_>, bytes: &Bytes, depth: usize) -> Result<Node> {
    let mut r = r.sub(r.pos..r.end, "NodeProto");
    let mut n = Node::default();
    while let Some((field, v)) = r.next()? {
        match field {
            1 => n.inputs.push(r.string(&v)?),
            2 => n.outputs.push(r.string(&v)?),
            3 => n.name = r.string(&v)?,
            4 => n.op_type = r.string(&v)?,
            7 => n.domain = r.string(&v)?,
            5 => n.attributes.push(decode_attribute(
                &r.sub(r.len(&v)?, "AttributeProto"),
                bytes,
                depth,
            )?),
            _ => {}
        }
    }
    Ok(n)
}

fn decode_attribute(r: &Reader<'_>, bytes: &Bytes, depth: usize) -> Result<Attribute> {
    let mut r = r.sub(r.pos..r.end, "AttributeProto");
    let mut a = Attribute::default();
    while let Some((field, v)) = r.next()? {
        match field {
            1 => a.name = r.string(&v)?,
            20 => a.kind = r.int(&v)? as i32,
            2 => match v {
                Value::Fixed32(x) => a.f = f32::from_bits(x),
                _ => return Err(r.err("attribute `f` has the wrong wire type")),
            },
            3 => a.i = r.int(&v)?,
            4 => a.s = r.buf[r.len(&v)?].to_vec(),
            5 => {
                a.t = Some(Box::new(decode_tensor(
                    &r.sub(r.len(&v)?, "TensorProto"),
                    bytes,
                )?))
            }
            7 => match v {
                Value::Fixed32(x) => a.floats.push(f32::from_bits(x)),
                Value::Len(rg) => {
                    if rg.len() % 4 != 0 {
                        return Err(r.err("packed floats are not a multiple of 4 bytes"));
                    }
                    a.floats.extend(
                        r.buf[rg]
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                }
                _ => return Err(r.err("attribute `floats` has the wrong wire type")),
            },
            8 => r.ints(&v, &mut a.ints)?,
            6 => {
                a.g = Some(Box::new(decode_graph(
                    &r.sub(r.len(&v)?, "GraphProto"),
                    bytes,
                    depth + 1,
                )?))
            }
            _ => {}
        }
    }
    Ok(a)
}

fn decode_tensor(r: &Reader<'_>, bytes: &Bytes) -> Result<Tensor> {
    let mut r = r.sub(r.pos..r.end, "TensorProto");
    let mut dims = Vec::new();
    let mut name = String::new();
    let mut data_type = 0;
    let mut raw: Option<Range<usize>> = None;
    // Unpacked float_data / double_data: gathered as little-endian bytes.
    let mut floats: Vec<u8> = Vec::new();
    let mut packed_floats: Option<Range<usize>> = None;
    let mut ints: Vec<i64> = Vec::new();
    let mut external: Vec<(String, String)> = Vec::new();
    let mut location = 0;
    while let Some((field, v)) = r.next()? {
        match field {
            1 => r.ints(&v, &mut dims)?,
            2 => data_type = r.int(&v)? as i32,
            8 => name = r.string(&v)?,
            9 => raw = Some(r.len(&v)?),
            4 | 10 => match v {
                Value::Fixed32(x) => floats.extend_from_slice(&x.to_le_bytes()),
                Value::Fixed64(x) => floats.extend_from_slice(&x.to_le_bytes()),
                Value::Len(rg) => {
                    if packed_floats.is_some() || !floats.is_empty() {
                        // Several packed runs: gather them.
                        if let Some(p) = packed_floats.take() {
                            floats.extend_from_slice(&r.buf[p]);
                        }
                        floats.extend_from_slice(&r.buf[rg]);
                    } else {
                        packed_floats = Some(rg);
                    }
                }
                Value::Varint(_) => return Err(r.err("float data has the wrong wire type")),
            },
            5 | 7 | 11 => r.ints(&v, &mut ints)?,
            13 => {
                let mut s = r.sub(r.len(&v)?, "StringStringEntryProto");
                let (mut key, mut value) = (String::new(), String::new());
                while let Some((f, v)) = s.next()? {
                    match f {
                        1 => key = s.string(&v)?,
                        2 => value = s.string(&v)?,
                        _ => {}
                    }
                }
                external.push((key, value));
            }
            14 => location = r.int(&v)?,
            _ => {}
        }
    }
    let bad = |msg: String| Error::format(r.file, format!("tensor `{name}`: {msg}"));
    let data = if location == 1 {
        let get = |k: &str| {
            external
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let num = |k: &str| -> Result<Option<u64>> {
            get(k)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        bad(format!("external data `{k}` = `{v}` is not a byte count"))
                    })
                })
                .transpose()
        };
        let location = get("location")
            .ok_or_else(|| bad("external data without a `location`".into()))?
            .to_string();
        TensorData::External {
            location,
            offset: num("offset")?.unwrap_or(0),
            length: num("length")?,
        }
    } else if let Some(rg) = raw {
        TensorData::Raw(
            bytes
                .slice(rg)
                .ok_or_else(|| bad("raw data out of range".into()))?,
        )
    } else if let Some(rg) = packed_floats {
        TensorData::Raw(
            bytes
                .slice(rg)
                .ok_or_else(|| bad("float data out of range".into()))?,
        )
    } else if !floats.is_empty() {
        TensorData::Raw(Bytes::from_vec(floats))
    } else if !ints.is_empty() {
        TensorData::Ints(ints)
    } else {
        TensorData::None
    };
    Ok(Tensor {
        name,
        dims,
        data_type,
        data,
    })
}

/// Protobuf encoding, enough to build small ONNX files field by field: for tests here and in
/// other crates (damaged or unusual files are easier to write than to find).
pub mod write {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    pub fn int(out: &mut Vec<u8>, field: u32, v: i64) {
        varint(out, u64::from(field) << 3);
        varint(out, v as u64);
    }

    pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
        varint(out, (u64::from(field) << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }

    pub fn string(out: &mut Vec<u8>, field: u32, s: &str) {
        bytes(out, field, s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::write::*;
    use super::*;

    fn tensor(name: &str, dims: &[i64], dt: i32, raw: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            int(&mut t, 1, d);
        }
        int(&mut t, 2, dt as i64);
        string(&mut t, 8, name);
        bytes(&mut t, 9, raw);
        t
    }

    fn model() -> Vec<u8> {
        let mut node = Vec::new();
        string(&mut node, 1, "x");
        string(&mut node, 1, "w");
        string(&mut node, 2, "y");
        string(&mut node, 3, "/lm_head/MatMul");
        string(&mut node, 4, "MatMul");
        let mut attr = Vec::new();
        string(&mut attr, 1, "perm");
        int(&mut attr, 20, 7);
        let mut packed = Vec::new();
        varint(&mut packed, 1);
        varint(&mut packed, 0);
        bytes(&mut attr, 8, &packed);
        bytes(&mut node, 5, &attr);
        let mut g = Vec::new();
        bytes(&mut g, 1, &node);
        string(&mut g, 2, "main");
        let raw: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes(&mut g, 5, &tensor("w", &[2, 1], dtype::FLOAT, &raw));
        let mut vi = Vec::new();
        string(&mut vi, 1, "x");
        bytes(&mut g, 11, &vi);
        let mut m = Vec::new();
        int(&mut m, 1, 8);
        // An unknown field (producer_name) is skipped.
        string(&mut m, 2, "test");
        bytes(&mut m, 7, &g);
        let mut op = Vec::new();
        int(&mut op, 2, 17);
        bytes(&mut m, 8, &op);
        m
    }

    #[test]
    fn decodes_a_model_without_copying_tensors() {
        let bytes = Bytes::from_vec(model());
        let m = decode_model(&bytes, "t.onnx").unwrap();
        assert_eq!(m.ir_version, 8);
        assert_eq!(m.opsets, [(String::new(), 17)]);
        assert_eq!(m.graph.name, "main");
        assert_eq!(m.graph.inputs, ["x"]);
        let n = &m.graph.nodes[0];
        assert_eq!(
            (n.op_type.as_str(), n.name.as_str()),
            ("MatMul", "/lm_head/MatMul")
        );
        assert_eq!(n.inputs, ["x", "w"]);
        assert_eq!(n.attr("perm").unwrap().ints, [1, 0]);
        let t = &m.graph.initializers[0];
        assert_eq!(t.dims, [2, 1]);
        let TensorData::Raw(raw) = &t.data else {
            panic!("raw data")
        };
        assert_eq!(raw.len(), 8);
        let base = bytes.as_ptr() as usize;
        assert!((raw.as_ptr() as usize) >= base && (raw.as_ptr() as usize) < base + bytes.len());
    }

    #[test]
    fn damaged_input_gives_errors() {
        let good = model();
        for cut in 1..good.len() {
            let b = Bytes::from_vec(good[..cut].to_vec());
            if let Err(e) = decode_model(&b, "t.onnx") {
                assert!(e.to_string().starts_with("t.onnx: "), "{e}");
            }
        }
        // Random bytes never panic.
        let mut s = 12345u32;
        for _ in 0..200 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    s as u8
                })
                .collect();
            let _ = decode_model(&Bytes::from_vec(junk), "t.onnx");
        }
        let e = decode_model(&Bytes::from_vec(vec![0x0a, 0xff, 0xff, 0x03]), "t.onnx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
