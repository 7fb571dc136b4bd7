//! Hugging Face model directories → [`ModelSource`].
//!
//! A directory as `save_pretrained` writes it:
//!
//! - `config.json` (required): hyper-parameters, read by [`ModelConfig::from_hf_json`] (which
//!   also takes transformers 5's `rope_parameters`);
//! - weights (required): `model.safetensors`, or `model.safetensors.index.json` and its
//!   shards, or a single `*.safetensors` file of another name; F32, F16 or BF16;
//! - `tokenizer.json`, `tokenizer_config.json` (`bos_token`, `eos_token`, `add_bos_token`,
//!   `chat_template` as a string or a list of named templates), `chat_template.jinja` (which
//!   newer transformers writes instead, and which wins), `generation_config.json`
//!   (`bos_token_id`, `eos_token_id` as an integer or a list; `config.json`'s are the fallback).
//!
//! Tensor names are transformers' (`model.layers.{i}.self_attn.q_proj.weight`, …); the layout
//! is already canonical, so nothing is permuted. Phi-3's fused `qkv_proj` and `gate_up_proj`
//! are split by rows without copying.

use crate::files::RepoFiles;
use crate::gguf::load::ConvertTo;
use crate::map_file;
use crate::safetensors::{SafetensorsFile, TensorEntry};
use crate::ModelSource;
use akari_core::weights::{Bytes, LayerTensor, Matrix, ModelWeights, TensorKey};
use akari_core::{Arch, Error, ModelConfig, Result};
use serde_json::{Map, Value};
use std::collections::{hash_map::Entry, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const CHAT_TEMPLATE_JINJA: &str = "chat_template.jinja";
pub const CHAT_TEMPLATE_JSON: &str = "chat_template.json";
pub const GENERATION_CONFIG: &str = "generation_config.json";

/// Reads the model directory `dir`, storing each matrix as `target(its default format)`.
pub fn open_dir(dir: &Path, target: &ConvertTo) -> Result<ModelSource> {
    let dir_name = dir.display().to_string();
    let config_path = dir.join(CONFIG);
    if !config_path.is_file() {
        return Err(Error::format(
            dir_name,
            "no config.json: not a Hugging Face model directory (akari reads GGUF files and \
             directories with config.json, safetensors weights and tokenizer.json)",
        ));
    }
    let config_file = config_path.display().to_string();
    let config_json = read_json(&config_path)?;
    let Some(obj) = config_json.as_object() else {
        return Err(Error::format(config_file, "not a JSON object"));
    };
    let config = read_config(obj, &config_file)?;

    let shards = open_weights(dir)?;
    let mut loader = Loader {
        target,
        config: &config,
        weights: ModelWeights::default(),
        names: HashMap::new(),
    };
    for shard in &shards {
        for t in &shard.tensors {
            loader.tensor(shard, t)?;
        }
    }
    let weights = loader.weights;
    check_complete(&weights, &config)?;
    config.validate(&config_file)?;

    let tok = read_tokenizer_files(&RepoFiles::Dir(dir.to_path_buf()), obj, config.vocab_size)?;
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mut metadata: Vec<(String, String)> = obj
        .iter()
        .map(|(k, v)| (format!("config.{k}"), summary(v)))
        .collect();
    for shard in &shards {
        let file = Path::new(&shard.file_name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (k, v) in &shard.metadata {
            metadata.push((format!("{file}.{k}"), v.clone()));
        }
    }
    Ok(ModelSource {
        config,
        weights,
        vocab: None,
        chat_template: tok.chat_template,
        name,
        file_type: file_type(&shards),
        metadata,
        tokenizer_json: tok.tokenizer_json,
        bos_token: tok.bos_token,
        eos_token: tok.eos_token,
        bos_id: tok.bos_id,
        eos_ids: tok.eos_ids,
        add_bos: tok.add_bos,
    })
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::format(path.display().to_string(), format!("invalid JSON: {e}")))
}

/// A JSON value shown in a line.
pub(crate) fn summary(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// `config.json` → [`ModelConfig`].
pub(crate) fn read_config(obj: &Map<String, Value>, file: &str) -> Result<ModelConfig> {
    ModelConfig::from_hf_json(&Value::Object(obj.clone()).to_string(), file)
}

/// The safetensors files holding the weights, parsed.
fn open_weights(dir: &Path) -> Result<Vec<SafetensorsFile>> {
    let parse = |path: &Path| SafetensorsFile::parse(map_file(path)?, &path.display().to_string());
    let single = dir.join(WEIGHTS);
    if single.is_file() {
        return Ok(vec![parse(&single)?]);
    }
    let index = dir.join(WEIGHTS_INDEX);
    if index.is_file() {
        return open_sharded(dir, &index, parse);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    let dir_name = dir.display().to_string();
    match found.len() {
        1 => Ok(vec![parse(&found[0])?]),
        0 => {
            let torch = ["pytorch_model.bin", "pytorch_model.bin.index.json"]
                .iter()
                .any(|f| dir.join(f).is_file());
            Err(Error::format(
                dir_name,
                if torch {
                    "only PyTorch (.bin) weights here; akari reads safetensors \
                     (model.safetensors or model.safetensors.index.json)"
                } else {
                    "no weights: expected model.safetensors or model.safetensors.index.json"
                },
            ))
        }
        n => Err(Error::format(
            dir_name,
            format!(
                "{n} .safetensors files but no model.safetensors.index.json to say which \
                 tensors they hold"
            ),
        )),
    }
}

fn open_sharded(
    dir: &Path,
    index: &Path,
    parse: impl Fn(&Path) -> Result<SafetensorsFile>,
) -> Result<Vec<SafetensorsFile>> {
    let index_name = index.display().to_string();
    let err = |msg: String| Error::format(&index_name, msg);
    let json = read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| err("`weight_map` is missing or not an object".into()))?;
    let mut wanted: HashMap<&str, Vec<&str>> = HashMap::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| err(format!("`weight_map.{tensor}` is not a file name")))?;
        // Shards sit next to the index; a name that leaves the directory is refused.
        let plain = Path::new(file)
            .file_name()
            .is_some_and(|n| n == std::ffi::OsStr::new(file));
        if !plain || file == ".." {
            return Err(err(format!("shard name `{file}` is not a plain file name")));
        }
        wanted.entry(file).or_default().push(tensor);
    }
    if wanted.is_empty() {
        return Err(err("`weight_map` lists no tensors".into()));
    }
    let files: BTreeSet<&str> = wanted.keys().copied().collect();
    let mut shards = Vec::with_capacity(files.len());
    let mut seen: HashMap<String, String> = HashMap::new();
    for file in files {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(err(format!("shard `{file}` is missing")));
        }
        let shard = parse(&path)?;
        for t in &shard.tensors {
            if let Some(other) = seen.insert(t.name.clone(), file.to_string()) {
                return Err(err(format!(
                    "tensor `{}` is in both `{other}` and `{file}`",
                    t.name
                )));
            }
        }
        for tensor in &wanted[file] {
            if !shard.tensors.iter().any(|t| t.name == *tensor) {
                return Err(err(format!(
                    "tensor `{tensor}` is listed in `{file}` but that shard lacks it"
                )));
            }
        }
        shards.push(shard);
    }
    Ok(shards)
}

/// The element type holding most matrix elements (`F32`, `F16`, `BF16`).
fn file_type(shards: &[SafetensorsFile]) -> String {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for t in shards.iter().flat_map(|s| &s.tensors) {
        if t.shape.len() == 2 {
            *count.entry(t.dtype.as_str()).or_default() += t.n_elements();
        }
    }
    count
        .into_iter()
        .max_by_key(|&(ty, n)| (n, std::cmp::Reverse(ty)))
        .map_or_else(|| "unknown".to_string(), |(ty, _)| ty.to_string())
}

/// Where a transformers tensor name goes.
enum Target {
    Layer(usize, Part),
    Embed,
    Output,
    OutputNorm,
    Ignore,
}

enum Part {
    Plain(LayerTensor),
    FusedQkv,
    FusedGateUp,
    /// Part of the decoder, but not something akari's decoder has (o_proj / MLP biases).
    Unsupported,
    Ignore,
}

fn classify(name: &str) -> Target {
    match name {
        "model.embed_tokens.weight" => return Target::Embed,
        "lm_head.weight" => return Target::Output,
        "model.norm.weight" => return Target::OutputNorm,
        _ => {}
    }
    let Some(rest) = name.strip_prefix("model.layers.") else {
        return Target::Ignore;
    };
    let Some((index, part)) = rest.split_once('.') else {
        return Target::Ignore;
    };
    let Ok(layer) = index.parse::<usize>() else {
        return Target::Ignore;
    };
    let plain = |t| Part::Plain(t);
    let part = match part {
        "input_layernorm.weight" => plain(LayerTensor::AttnNorm),
        "post_attention_layernorm.weight" => plain(LayerTensor::FfnNorm),
        "self_attn.q_proj.weight" => plain(LayerTensor::Q),
        "self_attn.k_proj.weight" => plain(LayerTensor::K),
        "self_attn.v_proj.weight" => plain(LayerTensor::V),
        "self_attn.q_proj.bias" => plain(LayerTensor::QBias),
        "self_attn.k_proj.bias" => plain(LayerTensor::KBias),
        "self_attn.v_proj.bias" => plain(LayerTensor::VBias),
        "self_attn.o_proj.weight" => plain(LayerTensor::O),
        "mlp.gate_proj.weight" => plain(LayerTensor::Gate),
        "mlp.up_proj.weight" => plain(LayerTensor::Up),
        "mlp.down_proj.weight" => plain(LayerTensor::Down),
        "self_attn.qkv_proj.weight" => Part::FusedQkv,
        "mlp.gate_up_proj.weight" => Part::FusedGateUp,
        "self_attn.o_proj.bias"
        | "self_attn.qkv_proj.bias"
        | "mlp.gate_proj.bias"
        | "mlp.up_proj.bias"
        | "mlp.down_proj.bias"
        | "mlp.gate_up_proj.bias" => Part::Unsupported,
        _ => Part::Ignore,
    };
    Target::Layer(layer, part)
}

struct Loader<'a> {
    target: &'a ConvertTo,
    config: &'a ModelConfig,
    weights: ModelWeights,
    /// Which file tensor filled each canonical one, to report conflicts.
    names: HashMap<TensorKey, String>,
}

impl Loader<'_> {
    fn claim(&mut self, f: &SafetensorsFile, key: TensorKey, name: &str) -> Result<()> {
        match self.names.entry(key) {
            Entry::Occupied(e) => Err(Error::format(
                &f.file_name,
                format!("tensors `{}` and `{name}` both provide {key}", e.get()),
            )),
            Entry::Vacant(e) => {
                e.insert(name.to_string());
                Ok(())
            }
        }
    }

    fn put_matrix(
        &mut self,
        f: &SafetensorsFile,
        key: TensorKey,
        name: &str,
        m: Matrix,
    ) -> Result<()> {
        self.claim(f, key, name)?;
        self.weights.matrices.insert(key, m);
        Ok(())
    }

    fn put_vector(
        &mut self,
        f: &SafetensorsFile,
        key: TensorKey,
        name: &str,
        v: Vec<f32>,
    ) -> Result<()> {
        self.claim(f, key, name)?;
        self.weights.vectors.insert(key, v);
        Ok(())
    }

    fn tensor(&mut self, f: &SafetensorsFile, t: &TensorEntry) -> Result<()> {
        let c = self.config;
        let (hidden, q_dim, kv_dim, ff) =
            (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let name = t.name.as_str();
        let (layer, part) = match classify(name) {
            Target::Embed => {
                let m = f.matrix(t, c.vocab_size, hidden, self.target)?;
                return self.put_matrix(f, TensorKey::Embed, name, m);
            }
            Target::Output => {
                if c.tie_word_embeddings {
                    tracing::debug!(
                        "{}: `{name}` ignored: config.json ties it to the embedding",
                        f.file_name
                    );
                    return Ok(());
                }
                let m = f.matrix(t, c.vocab_size, hidden, self.target)?;
                return self.put_matrix(f, TensorKey::Output, name, m);
            }
            Target::OutputNorm => {
                let v = f.vector(t, hidden)?;
                return self.put_vector(f, TensorKey::OutputNorm, name, v);
            }
            Target::Ignore => {
                tracing::debug!("{}: ignoring tensor `{name}`", f.file_name);
                return Ok(());
            }
            Target::Layer(layer, part) => (layer, part),
        };
        if layer >= c.num_layers {
            return Err(Error::format(
                &f.file_name,
                format!(
                    "tensor `{name}` belongs to layer {layer}, but config.json says {} layers",
                    c.num_layers
                ),
            ));
        }
        let key = |t: LayerTensor| TensorKey::Layer(layer, t);
        match part {
            Part::Ignore => {
                tracing::debug!("{}: ignoring tensor `{name}`", f.file_name);
            }
            Part::Unsupported => {
                return Err(Error::format(
                    &f.file_name,
                    format!("tensor `{name}`: akari's decoder has no such bias"),
                ));
            }
            Part::Plain(lt) => match lt {
                LayerTensor::AttnNorm | LayerTensor::FfnNorm => {
                    let v = f.vector(t, hidden)?;
                    self.put_vector(f, key(lt), name, v)?;
                }
                LayerTensor::QBias | LayerTensor::KBias | LayerTensor::VBias => {
                    if !c.qkv_bias {
                        tracing::warn!(
                            "{}: `{name}` ignored: config.json says the attention has no bias",
                            f.file_name
                        );
                        return Ok(());
                    }
                    let len = if lt == LayerTensor::QBias {
                        q_dim
                    } else {
                        kv_dim
                    };
                    let v = f.vector(t, len)?;
                    self.put_vector(f, key(lt), name, v)?;
                }
                _ => {
                    let (rows, cols) = match lt {
                        LayerTensor::Q => (q_dim, hidden),
                        LayerTensor::K | LayerTensor::V => (kv_dim, hidden),
                        LayerTensor::O => (hidden, q_dim),
                        LayerTensor::Gate | LayerTensor::Up => (ff, hidden),
                        _ => (hidden, ff), // Down
                    };
                    let m = f.matrix(t, rows, cols, self.target)?;
                    self.put_matrix(f, key(lt), name, m)?;
                }
            },
            Part::FusedQkv => {
                let m = f.matrix(t, q_dim + 2 * kv_dim, hidden, self.target)?;
                let parts = [
                    (LayerTensor::Q, 0..q_dim),
                    (LayerTensor::K, q_dim..q_dim + kv_dim),
                    (LayerTensor::V, q_dim + kv_dim..q_dim + 2 * kv_dim),
                ];
                for (lt, rows) in parts {
                    let part = split(f, &m, rows, name)?;
                    self.put_matrix(f, key(lt), name, part)?;
                }
            }
            Part::FusedGateUp => {
                let m = f.matrix(t, 2 * ff, hidden, self.target)?;
                let gate = split(f, &m, 0..ff, name)?;
                let up = split(f, &m, ff..2 * ff, name)?;
                self.put_matrix(f, key(LayerTensor::Gate), name, gate)?;
                self.put_matrix(f, key(LayerTensor::Up), name, up)?;
            }
        }
        Ok(())
    }
}

fn split(
    f: &SafetensorsFile,
    m: &Matrix,
    rows: std::ops::Range<usize>,
    name: &str,
) -> Result<Matrix> {
    m.rows(rows.clone()).ok_or_else(|| {
        Error::format(
            &f.file_name,
            format!("tensor `{name}`: cannot take rows {rows:?}"),
        )
    })
}

/// Every tensor the decoder needs is there, named as this architecture's files name it.
pub(crate) fn check_complete(w: &ModelWeights, c: &ModelConfig) -> Result<()> {
    let has = |k: TensorKey| w.has_matrix(k) || w.vectors.contains_key(&k);
    for k in [TensorKey::Embed, TensorKey::OutputNorm] {
        if !has(k) {
            return Err(Error::MissingTensor(k.to_string()));
        }
    }
    if !c.tie_word_embeddings && !has(TensorKey::Output) {
        // config.json does not tie it to the embedding, so it must be there.
        return Err(Error::MissingTensor(TensorKey::Output.to_string()));
    }
    let per_layer = LayerTensor::required(c.qkv_bias);
    let phi3 = c.arch == Arch::Phi3;
    for layer in 0..c.num_layers {
        for &t in &per_layer {
            let key = TensorKey::Layer(layer, t);
            if !has(key) {
                let name = match t {
                    LayerTensor::Q | LayerTensor::K | LayerTensor::V if phi3 => {
                        format!("model.layers.{layer}.self_attn.qkv_proj.weight")
                    }
                    LayerTensor::Gate | LayerTensor::Up if phi3 => {
                        format!("model.layers.{layer}.mlp.gate_up_proj.weight")
                    }
                    _ => key.to_string(),
                };
                return Err(Error::MissingTensor(name));
            }
        }
    }
    Ok(())
}

/// What the tokenizer files say.
#[derive(Default)]
pub(crate) struct TokenizerFiles {
    pub(crate) tokenizer_json: Option<Bytes>,
    pub(crate) chat_template: Option<String>,
    pub(crate) bos_token: Option<String>,
    pub(crate) eos_token: Option<String>,
    pub(crate) bos_id: Option<u32>,
    pub(crate) eos_ids: Vec<u32>,
    pub(crate) add_bos: Option<bool>,
}

/// A special token as `tokenizer_config.json` writes it: a string or an `AddedToken` object.
fn token_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// An id or a list of ids; ids outside the vocabulary are dropped with a warning.
fn token_ids(v: Option<&Value>, file: &str, key: &str, vocab: usize) -> Vec<u32> {
    let items: Vec<&Value> = match v {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(other) => vec![other],
    };
    let mut out = Vec::new();
    for item in items {
        match item.as_u64().and_then(|id| u32::try_from(id).ok()) {
            Some(id) if (id as usize) < vocab => out.push(id),
            _ => tracing::warn!("{file}: `{key}` = {item} is not a token id; ignored"),
        }
    }
    out
}

pub(crate) fn read_tokenizer_files(
    repo: &RepoFiles,
    config: &Map<String, Value>,
    vocab: usize,
) -> Result<TokenizerFiles> {
    let mut out = TokenizerFiles::default();
    if repo.is_file(TOKENIZER) {
        out.tokenizer_json = Some(repo.read(TOKENIZER)?);
    }

    let tc_file = repo.display(TOKENIZER_CONFIG);
    if let Some(tc) = repo.read_optional_json(TOKENIZER_CONFIG)? {
        out.bos_token = tc.get("bos_token").and_then(token_string);
        out.eos_token = tc.get("eos_token").and_then(token_string);
        out.add_bos = tc.get("add_bos_token").and_then(Value::as_bool);
        out.chat_template = match tc.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => {
                let named = |want: &str| {
                    list.iter().find_map(|t| {
                        (t.get("name").and_then(Value::as_str) == Some(want))
                            .then(|| t.get("template").and_then(Value::as_str))
                            .flatten()
                    })
                };
                let t = named("default").ok_or_else(|| {
                    Error::format(
                        &tc_file,
                        "`chat_template` is a list without a template named `default`",
                    )
                })?;
                Some(t.to_string())
            }
            Some(_) => {
                return Err(Error::format(
                    &tc_file,
                    "`chat_template` is neither a string nor a list of named templates",
                ))
            }
        };
    }
    // transformers 4.43+ may write the template to its own file; it takes precedence.
    if repo.is_file(CHAT_TEMPLATE_JINJA) {
        out.chat_template = Some(repo.read_string(CHAT_TEMPLATE_JINJA)?);
    } else if out.chat_template.is_none() {
        if let Some(ct) = repo.read_optional_json(CHAT_TEMPLATE_JSON)? {
            out.chat_template = ct
                .get("chat_template")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
    }

    let gen_file = repo.display(GENERATION_CONFIG);
    let gen = repo.read_optional_json(GENERATION_CONFIG)?;
    let pick = |key: &str| -> Vec<u32> {
        let from_gen = gen
            .as_ref()
            .map(|g| token_ids(g.get(key), &gen_file, key, vocab))
            .unwrap_or_default();
        if from_gen.is_empty() {
            token_ids(config.get(key), CONFIG, key, vocab)
        } else {
            from_gen
        }
    };
    out.bos_id = pick("bos_token_id").first().copied();
    out.eos_ids = pick("eos_token_id");
    Ok(out)
}
