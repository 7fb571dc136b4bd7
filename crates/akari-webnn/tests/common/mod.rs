//! A plain reference evaluator of recorded graphs (f64 arithmetic on every value), and a
//! runner that drives the decode and prefill graphs the way the browser runtime does.

#![allow(dead_code)]

use akari_core::backend::RopeTables;
use akari_webnn::graph::{Binary, DataType, Graph, Op, Unary};
use akari_webnn::layout::HostTensor;
use akari_webnn::{inputs, plan, Prepared};
use half::f16;
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct Value {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Index into `shape` of a broadcast index `idx` (of a possibly longer shape).
fn bcast_index(idx: &[usize], shape: &[usize]) -> usize {
    let off = idx.len() - shape.len();
    let st = strides(shape);
    (0..shape.len())
        .map(|d| {
            if shape[d] == 1 {
                0
            } else {
                idx[d + off] * st[d]
            }
        })
        .sum()
}

pub fn decode(t: &HostTensor) -> Value {
    let n: usize = t.shape.iter().product();
    let b = &t.bytes;
    let data = match t.data_type {
        DataType::Float32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        DataType::Float16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DataType::Int32 => b
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        DataType::Int8 => b.iter().map(|&x| x as i8 as f64).collect(),
        DataType::Uint4 => (0..n)
            .map(|i| ((b[i / 2] >> (4 * (i % 2))) & 15) as f64)
            .collect(),
    };
    Value {
        shape: t.shape.clone(),
        data,
    }
}

pub fn f32_value(shape: &[usize], v: &[f32]) -> Value {
    Value {
        shape: shape.to_vec(),
        data: v.iter().map(|&x| x as f64).collect(),
    }
}

/// Evaluates every node; returns the named outputs.
pub fn eval(g: &Graph, inputs: &HashMap<String, Value>) -> HashMap<String, Value> {
    let mut vals: Vec<Value> = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        let shape = node.shape.clone();
        let n: usize = shape.iter().product();
        let v = |i: usize| &vals[i];
        let data: Vec<f64> = match &node.op {
            Op::Input { name } => {
                let x = inputs
                    .get(name)
                    .unwrap_or_else(|| panic!("no input {name}"));
                assert_eq!(x.shape, shape, "input {name}");
                x.data.clone()
            }
            Op::Scalar { value } => vec![*value as f64],
            Op::Binary { kind, a, b } => (0..n)
                .map(|i| {
                    let idx = unravel(i, &shape);
                    let x = v(*a).data[bcast_index(&idx, &v(*a).shape)];
                    let y = v(*b).data[bcast_index(&idx, &v(*b).shape)];
                    match kind {
                        Binary::Add => x + y,
                        Binary::Sub => x - y,
                        Binary::Mul => x * y,
                        Binary::Div => x / y,
                    }
                })
                .collect(),
            Op::Unary { kind, x } => v(*x)
                .data
                .iter()
                .map(|&x| match kind {
                    Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                    Unary::Sqrt => x.sqrt(),
                })
                .collect(),
            Op::Matmul { a, b } => {
                let (sa, sb) = (&v(*a).shape, &v(*b).shape);
                let (m, k, nn) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
                let batch = &shape[..shape.len() - 2];
                let nb: usize = batch.iter().product();
                let mut out = vec![0.0; n];
                for bi in 0..nb {
                    let bidx = unravel(bi, batch);
                    let a_off = bcast_index(&bidx, &sa[..sa.len() - 2]) * m * k;
                    let b_off = bcast_index(&bidx, &sb[..sb.len() - 2]) * k * nn;
                    for r in 0..m {
                        for c in 0..nn {
                            let mut s = 0.0;
                            for j in 0..k {
                                s += v(*a).data[a_off + r * k + j] * v(*b).data[b_off + j * nn + c];
                            }
                            out[bi * m * nn + r * nn + c] = s;
                        }
                    }
                }
                out
            }
            Op::Reshape { x, .. } | Op::Cast { x, .. } => v(*x).data.clone(),
            Op::Transpose { x, permutation } => {
                let st = strides(&v(*x).shape);
                (0..n)
                    .map(|i| {
                        let idx = unravel(i, &shape);
                        let src: usize = (0..idx.len()).map(|d| idx[d] * st[permutation[d]]).sum();
                        v(*x).data[src]
                    })
                    .collect()
            }
            Op::Slice { x, starts, .. } => {
                let st = strides(&v(*x).shape);
                (0..n)
                    .map(|i| {
                        let idx = unravel(i, &shape);
                        let src: usize = (0..idx.len()).map(|d| (idx[d] + starts[d]) * st[d]).sum();
                        v(*x).data[src]
                    })
                    .collect()
            }
            Op::Concat { xs, axis } => (0..n)
                .map(|i| {
                    let mut idx = unravel(i, &shape);
                    for &x in xs {
                        let s = &v(x).shape;
                        if idx[*axis] < s[*axis] {
                            let st = strides(s);
                            let src: usize = (0..idx.len()).map(|d| idx[d] * st[d]).sum();
                            return v(x).data[src];
                        }
                        idx[*axis] -= s[*axis];
                    }
                    unreachable!()
                })
                .collect(),
            Op::Gather { x, indices, axis } => {
                let xs = &v(*x).shape;
                let is = &v(*indices).shape;
                let st = strides(xs);
                (0..n)
                    .map(|i| {
                        let idx = unravel(i, &shape);
                        let ii = &idx[*axis..*axis + is.len()];
                        let flat: usize = (0..is.len()).map(|d| ii[d] * strides(is)[d]).sum();
                        let at = v(*indices).data[flat] as usize;
                        let mut src = 0;
                        for d in 0..*axis {
                            src += idx[d] * st[d];
                        }
                        src += at * st[*axis];
                        for d in axis + 1..xs.len() {
                            src += idx[d - 1 + is.len()] * st[d];
                        }
                        v(*x).data[src]
                    })
                    .collect()
            }
            Op::Softmax { x, axis } => {
                let st = strides(&shape);
                let len = shape[*axis];
                let mut out = v(*x).data.clone();
                for i in 0..n {
                    if unravel(i, &shape)[*axis] != 0 {
                        continue;
                    }
                    let at = |j: usize| i + j * st[*axis];
                    let m = (0..len).map(|j| out[at(j)]).fold(f64::MIN, f64::max);
                    let s: f64 = (0..len).map(|j| (out[at(j)] - m).exp()).sum();
                    for j in 0..len {
                        out[at(j)] = (out[at(j)] - m).exp() / s;
                    }
                }
                out
            }
            Op::ReduceMean { x, axes } => {
                let xs = &v(*x).shape;
                let mut out = vec![0.0; n];
                let count: usize = axes.iter().map(|&a| xs[a]).product();
                for (i, &val) in v(*x).data.iter().enumerate() {
                    let mut idx = unravel(i, xs);
                    for &a in axes {
                        idx[a] = 0;
                    }
                    out[bcast_index(&idx, &shape)] += val / count as f64;
                }
                out
            }
            Op::DequantizeLinear {
                x,
                scale,
                zero_point,
            } => {
                let ss = &v(*scale).shape;
                let sst = strides(ss);
                (0..n)
                    .map(|i| {
                        let idx = unravel(i, &shape);
                        let b: usize = (0..idx.len())
                            .map(|d| idx[d] / (shape[d] / ss[d]) * sst[d])
                            .sum();
                        (v(*x).data[i] - v(*zero_point).data[b]) * v(*scale).data[b]
                    })
                    .collect()
            }
        };
        assert_eq!(data.len(), n, "{:?}", node.op);
        vals.push(Value { shape, data });
    }
    g.outputs
        .iter()
        .map(|(name, id)| (name.clone(), vals[*id].clone()))
        .collect()
}

/// The decode/prefill loop of the runtime, on the reference evaluator.
pub struct Runner {
    pub p: Prepared,
    stored: HashMap<String, Value>,
    cache: HashMap<String, Value>,
    pub pos: usize,
}

impl Runner {
    pub fn new(p: Prepared) -> Runner {
        let stored = p
            .stored
            .iter()
            .map(|t| (t.name.clone(), decode(t)))
            .collect();
        let kvd = p.config.kv_dim();
        let mut cache = HashMap::new();
        for l in 0..p.config.num_layers {
            for w in ["k", "v"] {
                cache.insert(
                    format!("{w}{l}"),
                    Value {
                        shape: vec![p.context, kvd],
                        data: vec![0.0; p.context * kvd],
                    },
                );
            }
        }
        Runner {
            p,
            stored,
            cache,
            pos: 0,
        }
    }

    pub fn forward(&mut self, tokens: &[u32]) -> Vec<f32> {
        let switch = self.p.rope_long.as_ref().map(|(_, s)| *s);
        let prefill = self.p.prefill.as_ref().map(|_| self.p.prefill_rows);
        let mut logits = Vec::new();
        for d in plan(tokens.len(), self.pos, prefill, switch) {
            let (g, rows) = if d.prefill {
                (self.p.prefill.as_ref().unwrap(), self.p.prefill_rows)
            } else {
                (&self.p.decode, 1)
            };
            let rope: &RopeTables = match &self.p.rope_long {
                Some((t, _)) if d.long_rope => t,
                _ => &self.p.rope_short,
            };
            let s = inputs::step_inputs(
                &tokens[d.tokens.clone()],
                self.pos,
                rows,
                self.p.context,
                rope,
            )
            .unwrap();
            let mut ins = self.stored.clone();
            let half = rope.half;
            let ctx = self.p.context;
            ins.insert(
                "ids".into(),
                Value {
                    shape: vec![rows],
                    data: s.ids.iter().map(|&x| x as f64).collect(),
                },
            );
            ins.insert("cos".into(), f32_value(&[rows, half], &s.cos));
            ins.insert("sin".into(), f32_value(&[rows, half], &s.sin));
            ins.insert("mask".into(), f32_value(&[rows, ctx], &s.mask));
            ins.insert("write".into(), f32_value(&[rows, ctx], &s.write));
            ins.insert("keep".into(), f32_value(&[ctx, 1], &s.keep));
            ins.insert(
                "last".into(),
                Value {
                    shape: vec![1],
                    data: vec![s.last as f64],
                },
            );
            for (k, v) in &self.cache {
                ins.insert(format!("past.{k}"), v.clone());
            }
            let out = eval(g, &ins);
            for (k, v) in out {
                if let Some(name) = k.strip_prefix("present.") {
                    self.cache.insert(name.to_string(), v);
                } else if k == "logits" {
                    logits = v.data.iter().map(|&x| x as f32).collect();
                }
            }
            self.pos += d.tokens.len();
        }
        logits
    }
}
