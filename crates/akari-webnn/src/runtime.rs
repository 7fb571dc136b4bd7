//! The browser half: a context from `navigator.ml`, the traced graphs built with
//! `MLGraphBuilder`, weights and KV cache in `MLTensor`s, one dispatch per chunk or token.

use crate::graph::{Binary, DataType, Graph, Op, Unary};
use crate::layout::Support;
use crate::prepare::{plan, prepare, Prepared};
use crate::sys::{MLContext, MLGraph, MLGraphBuilder, MLOperand, MLTensor, ML};
use crate::{inputs, layout::HostTensor};
use akari_core::backend::RopeTables;
use akari_core::model::{LanguageModel, LocalFuture};
use akari_core::weights::ModelWeights;
use akari_core::{Error, ModelConfig, Result};
use js_sys::{Array, Float32Array, Int32Array, Object, Reflect, Uint8Array};
use std::collections::HashMap;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// A JavaScript exception as text.
fn describe(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        let name = String::from(err.name());
        let msg = String::from(err.message());
        return if name.is_empty() {
            msg
        } else {
            format!("{name}: {msg}")
        };
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

fn js(what: &str) -> impl Fn(JsValue) -> Error + '_ {
    move |e| Error::Backend {
        backend: "webnn",
        msg: format!("{what}: {}", describe(&e)),
    }
}

fn set(o: &Object, key: &str, v: impl Into<JsValue>) {
    // Setting a property on a plain object we just made cannot fail.
    let _ = Reflect::set(o, &JsValue::from_str(key), &v.into());
}

fn get(o: &JsValue, key: &str) -> JsValue {
    Reflect::get(o, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn dims(shape: &[usize]) -> Array {
    shape.iter().map(|&d| JsValue::from(d as u32)).collect()
}

fn descriptor(dt: DataType, shape: &[usize]) -> Object {
    let o = Object::new();
    set(&o, "dataType", dt.name());
    set(&o, "shape", dims(shape));
    o
}

/// `navigator.ml`, or the error that says the browser has none.
fn navigator_ml() -> Result<ML> {
    let nav = get(&js_sys::global(), "navigator");
    let ml = get(&nav, "ml");
    if ml.is_undefined() || ml.is_null() {
        return Err(Error::Unsupported {
            backend: "webnn",
            what: "models in this browser: it has no WebNN (navigator.ml); use the wasm or \
                   webgpu device"
                .into(),
        });
    }
    Ok(ml.unchecked_into())
}

/// Whether `limits[op][operand].dataTypes` lists `dt`.
fn allows(limits: &JsValue, op: &str, operand: &str, dt: &str) -> bool {
    let types = get(&get(&get(limits, op), operand), "dataTypes");
    Array::is_array(&types) && Array::from(&types).includes(&JsValue::from_str(dt), 0)
}

/// What the context supports, from `opSupportLimits()`.
fn support(ctx: &MLContext) -> Result<Support> {
    let l = ctx
        .op_support_limits()
        .map_err(js("opSupportLimits() failed"))?;
    // Graph inputs: `input` limits are `{dataTypes, rankRange}` directly under the key.
    let quant = |dt: &str| {
        let types = get(&get(&l, "input"), "dataTypes");
        Array::is_array(&types) && Array::from(&types).includes(&JsValue::from_str(dt), 0)
    };
    let dq = |dt: &str| {
        quant(dt)
            && allows(&l, "dequantizeLinear", "input", dt)
            && allows(&l, "dequantizeLinear", "zeroPoint", dt)
            && allows(&l, "dequantizeLinear", "scale", "float32")
            && allows(&l, "gather", "input", dt)
    };
    Ok(Support {
        dequantize_int8: dq("int8"),
        dequantize_uint4: dq("uint4"),
        float16: quant("float16") && allows(&l, "cast", "input", "float16"),
    })
}

async fn create_tensor(
    ctx: &MLContext,
    dt: DataType,
    shape: &[usize],
    readable: bool,
) -> Result<MLTensor> {
    let d = descriptor(dt, shape);
    set(&d, "readable", readable);
    set(&d, "writable", true);
    let p = ctx.create_tensor(&d).map_err(js("createTensor failed"))?;
    let t = JsFuture::from(p).await.map_err(js("createTensor failed"))?;
    Ok(t.unchecked_into())
}

fn write(ctx: &MLContext, t: &MLTensor, data: &JsValue) -> Result<()> {
    ctx.write_tensor(t, data).map_err(js("writeTensor failed"))
}

/// Builds `g` with a builder of its own (one `build()` per builder, as the spec says).
async fn build(ctx: &MLContext, g: &Graph) -> Result<MLGraph> {
    let b = MLGraphBuilder::new(ctx).map_err(js("MLGraphBuilder failed"))?;
    let mut ops: Vec<MLOperand> = Vec::with_capacity(g.nodes.len());
    for node in &g.nodes {
        let o = |i: usize| &ops[i];
        let e = js("building the graph failed");
        let r = match &node.op {
            Op::Input { name } => b.input(name, &descriptor(node.data_type, &node.shape)),
            Op::Scalar { value } => b.constant(
                &descriptor(DataType::Float32, &[]),
                &Float32Array::from(&[*value][..]).into(),
            ),
            Op::Binary { kind, a, b: y } => match kind {
                Binary::Add => b.add(o(*a), o(*y)),
                Binary::Sub => b.sub(o(*a), o(*y)),
                Binary::Mul => b.mul(o(*a), o(*y)),
                Binary::Div => b.div(o(*a), o(*y)),
            },
            Op::Unary { kind, x } => match kind {
                Unary::Sigmoid => b.sigmoid(o(*x)),
                Unary::Sqrt => b.sqrt(o(*x)),
            },
            Op::Matmul { a, b: y } => b.matmul(o(*a), o(*y)),
            Op::Reshape { x, new_shape } => b.reshape(o(*x), &dims(new_shape)),
            Op::Transpose { x, permutation } => {
                let opts = Object::new();
                set(&opts, "permutation", dims(permutation));
                b.transpose(o(*x), &opts)
            }
            Op::Slice { x, starts, sizes } => b.slice(o(*x), &dims(starts), &dims(sizes)),
            Op::Concat { xs, axis } => {
                let list: Array = xs.iter().map(|&i| JsValue::from(o(i).clone())).collect();
                b.concat(&list, *axis as u32)
            }
            Op::Gather { x, indices, axis } => {
                let opts = Object::new();
                set(&opts, "axis", *axis as u32);
                b.gather(o(*x), o(*indices), &opts)
            }
            Op::Softmax { x, axis } => b.softmax(o(*x), *axis as u32),
            Op::ReduceMean { x, axes } => {
                let opts = Object::new();
                set(&opts, "axes", dims(axes));
                set(&opts, "keepDimensions", true);
                b.reduce_mean(o(*x), &opts)
            }
            Op::Cast { x, to } => b.cast(o(*x), to.name()),
            Op::DequantizeLinear {
                x,
                scale,
                zero_point,
            } => b.dequantize_linear(o(*x), o(*scale), o(*zero_point)),
        };
        ops.push(r.map_err(e)?);
    }
    let outputs = Object::new();
    for (name, id) in &g.outputs {
        set(&outputs, name, ops[*id].clone());
    }
    let p = b.build(&outputs).map_err(js("build() failed"))?;
    let graph = JsFuture::from(p).await.map_err(js("build() failed"))?;
    Ok(graph.unchecked_into())
}

/// A built graph and the tensors of its per-call inputs and its logits.
struct Compiled {
    graph: MLGraph,
    rows: usize,
    inputs: Vec<String>,
    per_call: HashMap<String, MLTensor>,
    logits: MLTensor,
}

const PER_CALL: [&str; 7] = ["ids", "cos", "sin", "mask", "write", "keep", "last"];

async fn compile(ctx: &MLContext, g: &Graph, rows: usize) -> Result<Compiled> {
    let graph = build(ctx, g).await?;
    let mut per_call = HashMap::new();
    let mut names = Vec::new();
    for (name, dt, shape) in g.inputs() {
        names.push(name.to_string());
        if PER_CALL.contains(&name) {
            per_call.insert(
                name.to_string(),
                create_tensor(ctx, dt, shape, false).await?,
            );
        }
    }
    let logits_shape = g
        .outputs
        .iter()
        .find(|(n, _)| n == "logits")
        .map(|(_, id)| g.shape(*id).to_vec())
        .ok_or_else(|| Error::InvalidArgument("the graph has no logits".into()))?;
    let logits = create_tensor(ctx, DataType::Float32, &logits_shape, true).await?;
    Ok(Compiled {
        graph,
        rows,
        inputs: names,
        per_call,
        logits,
    })
}

/// What the load chose, for the model info and the UI.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// e.g. `webnn (gpu)`.
    pub backend: String,
    /// Quantised matrices dequantised at load, and to what.
    pub dequantized: Option<String>,
}

/// A model running on a WebNN context.
pub struct WebNnModel {
    cfg: ModelConfig,
    context: usize,
    pos: usize,
    ctx: MLContext,
    decode: Compiled,
    prefill: Option<Compiled>,
    stored: HashMap<String, MLTensor>,
    /// Per layer and k/v: the tensor read this step and the one written, swapped after each
    /// dispatch (a dispatch may not read and write one tensor).
    cache: HashMap<String, [MLTensor; 2]>,
    rope_short: RopeTables,
    rope_long: Option<(RopeTables, usize)>,
}

// SAFETY: JavaScript objects live on the thread that made them. This module is compiled
// only for wasm32 without the atomics feature, where the program has exactly one thread, so
// the model can never be sent or shared across threads; the bounds exist because the engine's
// `LanguageModel` is `Send` for the native backends.
unsafe impl Send for WebNnModel {}

/// Progress callback: stage, done, total.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Makes a context for `device_type` (`None`: the browser's default; else `gpu`, `cpu` or
/// `npu`), traces and builds the graphs, and uploads the weights.
pub async fn load(
    cfg: ModelConfig,
    weights: ModelWeights,
    context: usize,
    device_type: Option<&str>,
    progress: Progress<'_>,
) -> Result<(WebNnModel, LoadReport)> {
    let ml = navigator_ml()?;
    let opts = Object::new();
    if let Some(d) = device_type {
        set(&opts, "deviceType", d);
    }
    let label = format!("webnn ({})", device_type.unwrap_or("default device"));
    let cant = |e: JsValue| Error::Backend {
        backend: "webnn",
        msg: format!(
            "could not create a WebNN context for {label}: {}; use another device (wasm, \
             webgpu, or another webnn device)",
            describe(&e)
        ),
    };
    let p = ml.create_context(&opts).map_err(cant)?;
    let ctx: MLContext = JsFuture::from(p).await.map_err(cant)?.unchecked_into();
    let support = support(&ctx)?;

    progress("building WebNN graphs", 0, 1);
    let Prepared {
        config,
        context,
        decode,
        prefill,
        prefill_rows,
        stored,
        rope_short,
        rope_long,
        dequantized,
    } = prepare(cfg, weights, context, support)?;

    let total = stored.len() as u64;
    let mut tensors = HashMap::new();
    for (i, t) in stored.into_iter().enumerate() {
        progress("uploading weights", i as u64, total);
        let HostTensor {
            name,
            data_type,
            shape,
            bytes,
        } = t;
        let tensor = create_tensor(&ctx, data_type, &shape, false).await?;
        write(&ctx, &tensor, &Uint8Array::from(&bytes[..]).into())?;
        tensors.insert(name, tensor);
    }

    let kvd = config.kv_dim();
    let zeros = Float32Array::new_with_length((context * kvd) as u32);
    let mut cache = HashMap::new();
    for l in 0..config.num_layers {
        for w in ["k", "v"] {
            let a = create_tensor(&ctx, DataType::Float32, &[context, kvd], false).await?;
            let b = create_tensor(&ctx, DataType::Float32, &[context, kvd], false).await?;
            // Masked positions still meet a zero weight in the softmax product; zeros keep
            // them from being NaN.
            write(&ctx, &a, &zeros)?;
            write(&ctx, &b, &zeros)?;
            cache.insert(format!("{w}{l}"), [a, b]);
        }
    }

    progress("compiling WebNN graphs", 0, 1);
    let decode = compile(&ctx, &decode, 1).await?;
    let prefill = match &prefill {
        Some(g) => Some(compile(&ctx, g, prefill_rows).await?),
        None => None,
    };
    let report = LoadReport {
        backend: label,
        dequantized: (dequantized > 0).then(|| {
            format!(
                "{dequantized} quantised matrices dequantised to {} at load (this WebNN context's \
                 dequantizeLinear does not take their data type)",
                if support.float16 { "fp16" } else { "fp32" }
            )
        }),
    };
    Ok((
        WebNnModel {
            cfg: config,
            context,
            pos: 0,
            ctx,
            decode,
            prefill,
            stored: tensors,
            cache,
            rope_short,
            rope_long,
        },
        report,
    ))
}

impl WebNnModel {
    fn check(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::InvalidArgument(
                "forward needs at least one token".into(),
            ));
        }
        if self.pos + tokens.len() > self.context {
            return Err(Error::ContextOverflow {
                prompt: self.pos + tokens.len(),
                context: self.context,
                reserve: 0,
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Dispatches every chunk; returns the tensor holding the last logits.
    fn dispatch_all(&mut self, tokens: &[u32]) -> Result<MLTensor> {
        self.check(tokens)?;
        let switch = self.rope_long.as_ref().map(|(_, s)| *s);
        let prefill_rows = self.prefill.as_ref().map(|c| c.rows);
        let mut last = None;
        for d in plan(tokens.len(), self.pos, prefill_rows, switch) {
            let c = match (&self.prefill, d.prefill) {
                (Some(p), true) => p,
                _ => &self.decode,
            };
            let rope = match &self.rope_long {
                Some((t, _)) if d.long_rope => t,
                _ => &self.rope_short,
            };
            let s = inputs::step_inputs(
                &tokens[d.tokens.clone()],
                self.pos,
                c.rows,
                self.context,
                rope,
            )?;
            let values: [(&str, JsValue); 7] = [
                ("ids", Int32Array::from(&s.ids[..]).into()),
                ("cos", Float32Array::from(&s.cos[..]).into()),
                ("sin", Float32Array::from(&s.sin[..]).into()),
                ("mask", Float32Array::from(&s.mask[..]).into()),
                ("write", Float32Array::from(&s.write[..]).into()),
                ("keep", Float32Array::from(&s.keep[..]).into()),
                ("last", Int32Array::from(&[s.last][..]).into()),
            ];
            for (name, v) in &values {
                if let Some(t) = c.per_call.get(*name) {
                    write(&self.ctx, t, v)?;
                }
            }
            let ins = Object::new();
            for name in &c.inputs {
                let t = if let Some(t) = c.per_call.get(name) {
                    t
                } else if let Some(key) = name.strip_prefix("past.") {
                    self.cache
                        .get(key)
                        .map(|p| &p[0])
                        .ok_or_else(|| missing(name))?
                } else {
                    self.stored.get(name).ok_or_else(|| missing(name))?
                };
                set(&ins, name, t.clone());
            }
            let outs = Object::new();
            set(&outs, "logits", c.logits.clone());
            for (key, pair) in &self.cache {
                set(&outs, &format!("present.{key}"), pair[1].clone());
            }
            self.ctx
                .dispatch(&c.graph, &ins, &outs)
                .map_err(js("dispatch failed"))?;
            for pair in self.cache.values_mut() {
                pair.swap(0, 1);
            }
            self.pos += d.tokens.len();
            last = Some(c.logits.clone());
        }
        last.ok_or_else(|| Error::InvalidArgument("forward needs at least one token".into()))
    }
}

impl Drop for WebNnModel {
    fn drop(&mut self) {
        // The weights and cache may live in device memory that the garbage collector does not
        // see; give it back now.
        self.ctx.destroy();
    }
}

fn missing(name: &str) -> Error {
    Error::Backend {
        backend: "webnn",
        msg: format!("no tensor for graph input `{name}`"),
    }
}

impl LanguageModel for WebNnModel {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn backend_name(&self) -> &'static str {
        "webnn"
    }

    fn max_seq(&self) -> usize {
        self.context
    }

    fn position(&self) -> usize {
        self.pos
    }

    fn forward(&mut self, _tokens: &[u32]) -> Result<Vec<f32>> {
        Err(Error::Unsupported {
            backend: "webnn",
            what: "blocking steps (results arrive through the event loop; use the async step)"
                .into(),
        })
    }

    fn forward_async<'a>(&'a mut self, tokens: &'a [u32]) -> LocalFuture<'a, Result<Vec<f32>>> {
        Box::pin(async move {
            let logits = self.dispatch_all(tokens)?;
            let p = self
                .ctx
                .read_tensor(&logits)
                .map_err(js("readTensor failed"))?;
            let buf = JsFuture::from(p).await.map_err(js("readTensor failed"))?;
            Ok(Float32Array::new(&buf).to_vec())
        })
    }

    fn truncate(&mut self, pos: usize) {
        // The cache keeps stale rows past `pos`; the mask hides them and the next writes
        // replace them.
        self.pos = self.pos.min(pos);
    }
}
