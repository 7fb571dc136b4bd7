//! A recorded WebNN graph: the `MLGraphBuilder` calls a trace makes, as data.
//!
//! Recording first and emitting the builder calls afterwards (in `runtime`, browser only)
//! keeps the symbolic backend plain Rust, so it is `Send + Sync` without wrapping JavaScript
//! handles, and lets native tests check the graph's shapes. The graph serialises to JSON for
//! the browser tests, which replay it on the WebNN stand-in op by op.
//!
//! Shapes are inferred here with the spec's rules (broadcasting, matmul batching), so a wrong
//! graph fails while it is traced, with the op's name, instead of inside the browser.

use akari_core::{Error, Result};
use serde::Serialize;

/// `MLOperandDataType` values the backend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    Float32,
    Float16,
    Int32,
    Int8,
    Uint4,
}

impl DataType {
    /// The spec's name.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Float32 => "float32",
            DataType::Float16 => "float16",
            DataType::Int32 => "int32",
            DataType::Int8 => "int8",
            DataType::Uint4 => "uint4",
        }
    }

    /// Bytes of `elements` values (4-bit types pack two per byte).
    pub fn byte_len(self, elements: usize) -> usize {
        match self {
            DataType::Float32 | DataType::Int32 => elements * 4,
            DataType::Float16 => elements * 2,
            DataType::Int8 => elements,
            DataType::Uint4 => elements.div_ceil(2),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

impl Binary {
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Unary {
    Sigmoid,
    Sqrt,
}

impl Unary {
    pub fn name(self) -> &'static str {
        match self {
            Unary::Sigmoid => "sigmoid",
            Unary::Sqrt => "sqrt",
        }
    }
}

/// One builder call. Operands are indices of earlier nodes.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Op {
    Input {
        name: String,
    },
    /// A float32 scalar constant.
    Scalar {
        value: f32,
    },
    Binary {
        kind: Binary,
        a: usize,
        b: usize,
    },
    Unary {
        kind: Unary,
        x: usize,
    },
    Matmul {
        a: usize,
        b: usize,
    },
    Reshape {
        x: usize,
        new_shape: Vec<usize>,
    },
    Transpose {
        x: usize,
        permutation: Vec<usize>,
    },
    Slice {
        x: usize,
        starts: Vec<usize>,
        sizes: Vec<usize>,
    },
    Concat {
        xs: Vec<usize>,
        axis: usize,
    },
    Gather {
        x: usize,
        indices: usize,
        axis: usize,
    },
    Softmax {
        x: usize,
        axis: usize,
    },
    ReduceMean {
        x: usize,
        axes: Vec<usize>,
    },
    Cast {
        x: usize,
        to: DataType,
    },
    DequantizeLinear {
        x: usize,
        scale: usize,
        zero_point: usize,
    },
}

/// A node: the call and the operand it makes.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(flatten)]
    pub op: Op,
    pub data_type: DataType,
    pub shape: Vec<usize>,
}

/// A whole graph: nodes in call order and the named outputs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub outputs: Vec<(String, usize)>,
}

fn bad(op: &str, msg: String) -> Error {
    Error::Backend {
        backend: "webnn",
        msg: format!("{op}: {msg}"),
    }
}

/// The spec's bidirectional broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

impl Graph {
    pub fn node(&self, id: usize) -> &Node {
        &self.nodes[id]
    }

    pub fn shape(&self, id: usize) -> &[usize] {
        &self.nodes[id].shape
    }

    /// The graph's inputs: name, data type, shape.
    pub fn inputs(&self) -> impl Iterator<Item = (&str, DataType, &[usize])> {
        self.nodes.iter().filter_map(|n| match &n.op {
            Op::Input { name } => Some((name.as_str(), n.data_type, n.shape.as_slice())),
            _ => None,
        })
    }

    fn push(&mut self, op: Op, data_type: DataType, shape: Vec<usize>) -> usize {
        self.nodes.push(Node {
            op,
            data_type,
            shape,
        });
        self.nodes.len() - 1
    }

    fn dt(&self, id: usize) -> DataType {
        self.nodes[id].data_type
    }

    pub fn input(&mut self, name: &str, data_type: DataType, shape: &[usize]) -> usize {
        self.push(
            Op::Input {
                name: name.to_string(),
            },
            data_type,
            shape.to_vec(),
        )
    }

    pub fn scalar(&mut self, value: f32) -> usize {
        self.push(Op::Scalar { value }, DataType::Float32, Vec::new())
    }

    pub fn binary(&mut self, kind: Binary, a: usize, b: usize) -> Result<usize> {
        if self.dt(a) != self.dt(b) {
            return Err(bad(kind.name(), "operands differ in data type".into()));
        }
        let shape = broadcast(self.shape(a), self.shape(b)).ok_or_else(|| {
            bad(
                kind.name(),
                format!(
                    "shapes {:?} and {:?} do not broadcast",
                    self.shape(a),
                    self.shape(b)
                ),
            )
        })?;
        Ok(self.push(Op::Binary { kind, a, b }, self.dt(a), shape))
    }

    pub fn add(&mut self, a: usize, b: usize) -> Result<usize> {
        self.binary(Binary::Add, a, b)
    }
    pub fn sub(&mut self, a: usize, b: usize) -> Result<usize> {
        self.binary(Binary::Sub, a, b)
    }
    pub fn mul(&mut self, a: usize, b: usize) -> Result<usize> {
        self.binary(Binary::Mul, a, b)
    }
    pub fn div(&mut self, a: usize, b: usize) -> Result<usize> {
        self.binary(Binary::Div, a, b)
    }

    pub fn unary(&mut self, kind: Unary, x: usize) -> usize {
        let (dt, shape) = (self.dt(x), self.shape(x).to_vec());
        self.push(Op::Unary { kind, x }, dt, shape)
    }

    /// `matmul`: the last two dimensions multiply, the others broadcast.
    pub fn matmul(&mut self, a: usize, b: usize) -> Result<usize> {
        let (sa, sb) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        if sa.len() < 2 || sb.len() < 2 || sa[sa.len() - 1] != sb[sb.len() - 2] {
            return Err(bad(
                "matmul",
                format!("shapes {sa:?} and {sb:?} do not chain"),
            ));
        }
        if self.dt(a) != self.dt(b) {
            return Err(bad("matmul", "operands differ in data type".into()));
        }
        let batch = broadcast(&sa[..sa.len() - 2], &sb[..sb.len() - 2])
            .ok_or_else(|| bad("matmul", format!("batch dimensions of {sa:?} and {sb:?}")))?;
        let mut shape = batch;
        shape.push(sa[sa.len() - 2]);
        shape.push(sb[sb.len() - 1]);
        Ok(self.push(Op::Matmul { a, b }, self.dt(a), shape))
    }

    pub fn reshape(&mut self, x: usize, shape: &[usize]) -> Result<usize> {
        let n: usize = self.shape(x).iter().product();
        if shape.iter().product::<usize>() != n {
            return Err(bad(
                "reshape",
                format!("{:?} cannot become {shape:?}", self.shape(x)),
            ));
        }
        let dt = self.dt(x);
        Ok(self.push(
            Op::Reshape {
                x,
                new_shape: shape.to_vec(),
            },
            dt,
            shape.to_vec(),
        ))
    }

    pub fn transpose(&mut self, x: usize, permutation: &[usize]) -> Result<usize> {
        let s = self.shape(x).to_vec();
        let mut seen = vec![false; s.len()];
        if permutation.len() != s.len()
            || permutation
                .iter()
                .any(|&p| p >= s.len() || std::mem::replace(&mut seen[p], true))
        {
            return Err(bad(
                "transpose",
                format!("{permutation:?} is no permutation of {s:?}"),
            ));
        }
        let shape = permutation.iter().map(|&p| s[p]).collect();
        let dt = self.dt(x);
        Ok(self.push(
            Op::Transpose {
                x,
                permutation: permutation.to_vec(),
            },
            dt,
            shape,
        ))
    }

    pub fn slice(&mut self, x: usize, starts: &[usize], sizes: &[usize]) -> Result<usize> {
        let s = self.shape(x);
        if starts.len() != s.len()
            || sizes.len() != s.len()
            || (0..s.len()).any(|i| sizes[i] == 0 || starts[i] + sizes[i] > s[i])
        {
            return Err(bad(
                "slice",
                format!("{starts:?} + {sizes:?} is outside {s:?}"),
            ));
        }
        let dt = self.dt(x);
        Ok(self.push(
            Op::Slice {
                x,
                starts: starts.to_vec(),
                sizes: sizes.to_vec(),
            },
            dt,
            sizes.to_vec(),
        ))
    }

    pub fn concat(&mut self, xs: &[usize], axis: usize) -> Result<usize> {
        let first = self.shape(xs[0]).to_vec();
        let mut shape = first.clone();
        shape[axis] = 0;
        for &x in xs {
            let s = self.shape(x);
            if s.len() != first.len()
                || self.dt(x) != self.dt(xs[0])
                || (0..s.len()).any(|i| i != axis && s[i] != first[i])
            {
                return Err(bad("concat", format!("{s:?} does not join {first:?}")));
            }
            shape[axis] += s[axis];
        }
        let dt = self.dt(xs[0]);
        Ok(self.push(
            Op::Concat {
                xs: xs.to_vec(),
                axis,
            },
            dt,
            shape,
        ))
    }

    /// `gather`: the output shape is the input's with `axis` replaced by the indices' shape.
    pub fn gather(&mut self, x: usize, indices: usize, axis: usize) -> Result<usize> {
        let s = self.shape(x).to_vec();
        if axis >= s.len() || self.dt(indices) != DataType::Int32 {
            return Err(bad("gather", format!("axis {axis} of {s:?}")));
        }
        let mut shape = s[..axis].to_vec();
        shape.extend_from_slice(self.shape(indices));
        shape.extend_from_slice(&s[axis + 1..]);
        let dt = self.dt(x);
        Ok(self.push(Op::Gather { x, indices, axis }, dt, shape))
    }

    pub fn softmax(&mut self, x: usize, axis: usize) -> usize {
        let (dt, shape) = (self.dt(x), self.shape(x).to_vec());
        self.push(Op::Softmax { x, axis }, dt, shape)
    }

    /// `reduceMean` keeping the reduced dimensions (as size 1).
    pub fn reduce_mean(&mut self, x: usize, axes: &[usize]) -> usize {
        let mut shape = self.shape(x).to_vec();
        for &a in axes {
            shape[a] = 1;
        }
        let dt = self.dt(x);
        self.push(
            Op::ReduceMean {
                x,
                axes: axes.to_vec(),
            },
            dt,
            shape,
        )
    }

    pub fn cast(&mut self, x: usize, to: DataType) -> usize {
        if self.dt(x) == to {
            return x;
        }
        let shape = self.shape(x).to_vec();
        self.push(Op::Cast { x, to }, to, shape)
    }

    /// `dequantizeLinear` with block-wise `scale` and `zero_point` (each input dimension a
    /// multiple of theirs), as the spec allows.
    pub fn dequantize_linear(
        &mut self,
        x: usize,
        scale: usize,
        zero_point: usize,
    ) -> Result<usize> {
        let (s, ss, zs) = (
            self.shape(x).to_vec(),
            self.shape(scale).to_vec(),
            self.shape(zero_point).to_vec(),
        );
        if ss != zs
            || ss.len() != s.len()
            || (0..s.len()).any(|i| ss[i] == 0 || s[i] % ss[i] != 0)
            || self.dt(zero_point) != self.dt(x)
        {
            return Err(bad(
                "dequantizeLinear",
                format!("input {s:?}, scale {ss:?}, zero point {zs:?}"),
            ));
        }
        let dt = self.dt(scale);
        Ok(self.push(
            Op::DequantizeLinear {
                x,
                scale,
                zero_point,
            },
            dt,
            s,
        ))
    }

    pub fn output(&mut self, name: &str, id: usize) {
        self.outputs.push((name.to_string(), id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_the_spec() {
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast(&[2, 3], &[4, 3]), None);
    }

    #[test]
    fn shape_errors_name_the_op() {
        let mut g = Graph::default();
        let a = g.input("a", DataType::Float32, &[2, 3]);
        let b = g.input("b", DataType::Float32, &[4, 5]);
        let err = g.matmul(a, b).unwrap_err().to_string();
        assert!(err.contains("matmul"), "{err}");
        let c = g.input("c", DataType::Float32, &[3, 5]);
        let m = g.matmul(a, c).unwrap();
        assert_eq!(g.shape(m), [2, 5]);
        let x = g.input("x", DataType::Int8, &[64, 8]);
        let s = g.input("s", DataType::Float32, &[2, 8]);
        let z = g.input("z", DataType::Int8, &[2, 8]);
        let d = g.dequantize_linear(x, s, z).unwrap();
        assert_eq!(g.node(d).data_type, DataType::Float32);
        let s3 = g.input("s3", DataType::Float32, &[3, 8]);
        let z3 = g.input("z3", DataType::Int8, &[3, 8]);
        assert!(g.dequantize_linear(x, s3, z3).is_err());
    }
}
