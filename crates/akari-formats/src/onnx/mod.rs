//! ONNX decoder exports → [`ModelSource`].
//!
//! A transformers.js-style repository: `config.json`, the tokenizer files and
//! `onnx/model*.onnx` (optimum's `text-generation-with-past` export and its quantised
//! variants), or a path to one `.onnx` file inside such a repository; also an
//! onnxruntime-genai folder (`genai_config.json`, `model.onnx` + `model.onnx.data`, tokenizer
//! files).
//!
//! We do not run the graph. [`decoder`] recognises the decoder by its node names (the module
//! paths the exporters write, `/model/layers.0/self_attn/q_proj/MatMul`), follows each
//! projection to its weight and turns that into a canonical matrix; the hyper-parameters come
//! from `config.json` (or `genai_config.json` and the graph) and are checked against the
//! weights' shapes. [`proto`] decodes the
//! protobuf with tensor data left in the memory map; external data files
//! (`model.onnx_data`, `model.onnx_data_1`, `model.onnx.data`, …) are mapped once each.
//!
//! File choice in a directory follows transformers.js's `dtype` names: `fp32` →
//! `model.onnx`, `fp16` → `model_fp16.onnx`, `q8` → `model_quantized.onnx`, `q4` →
//! `model_q4.onnx`, `q4f16` → `model_q4f16.onnx`, `int8` → `model_int8.onnx`, `uint8` →
//! `model_uint8.onnx`, `bnb4` → `model_bnb4.onnx`; `auto` takes q4, else quantized, else fp32.

pub mod decoder;
pub mod proto;

use crate::files::{is_plain_relative, FileData, MemoryFiles, RepoFiles};
use crate::gguf::load::ConvertTo;
use crate::{hf, map_file, ModelSource};
use akari_core::weights::Bytes;
use akari_core::{Dtype, Error, Result};
use proto::{Tensor, TensorData};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// onnxruntime-genai's model description, read when there is no `config.json`.
pub const GENAI_CONFIG: &str = "genai_config.json";

/// The folder of ONNX files in a transformers.js repository.
pub const ONNX_DIR: &str = "onnx";

/// The file transformers.js loads for `dtype` (for `auto`, its first choice).
pub fn file_for(dtype: Dtype) -> &'static str {
    candidates(dtype)[0]
}

/// The files transformers.js would load for `dtype`, in order of preference: one file, except
/// for `auto` (q4, else quantized, else fp32). Downloads pick from a repository listing with it.
pub fn candidates(dtype: Dtype) -> &'static [&'static str] {
    match dtype {
        Dtype::Auto => &["model_q4.onnx", "model_quantized.onnx", "model.onnx"],
        Dtype::Fp32 => &["model.onnx"],
        Dtype::Fp16 => &["model_fp16.onnx"],
        Dtype::Q8 => &["model_quantized.onnx"],
        Dtype::Q4 => &["model_q4.onnx"],
        Dtype::Q4f16 => &["model_q4f16.onnx"],
        Dtype::Int8 => &["model_int8.onnx"],
        Dtype::Uint8 => &["model_uint8.onnx"],
        Dtype::Bnb4 => &["model_bnb4.onnx"],
    }
}

/// Where a directory keeps its `.onnx` files (`dir/onnx/`, else `dir` itself), when it has any.
pub fn onnx_folder(dir: &Path) -> Option<PathBuf> {
    let has_onnx = |d: &Path| {
        std::fs::read_dir(d).ok().is_some_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "onnx"))
        })
    };
    let sub = dir.join(ONNX_DIR);
    if sub.is_dir() && has_onnx(&sub) {
        Some(sub)
    } else if has_onnx(dir) {
        Some(dir.to_path_buf())
    } else {
        None
    }
}

/// Picks the `.onnx` file of a repository directory for `dtype`, the transformers.js way.
pub fn choose_file(dir: &Path, dtype: Dtype) -> Result<PathBuf> {
    let folder = onnx_folder(dir).ok_or_else(|| {
        Error::format(dir.display().to_string(), "no .onnx files here or in onnx/")
    })?;
    let wanted = candidates(dtype);
    if let Some(p) = wanted.iter().map(|f| folder.join(f)).find(|p| p.is_file()) {
        return Ok(p);
    }
    let mut present: Vec<String> = std::fs::read_dir(&folder)
        .map_err(|e| Error::io(&folder, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "onnx"))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    if dtype == Dtype::Auto && present.len() == 1 {
        return Ok(folder.join(&present[0]));
    }
    Err(Error::format(
        folder.display().to_string(),
        format!(
            "no {} for --dtype {dtype} (present: {}); pick another dtype, or pass the .onnx \
             file itself to convert its weights",
            wanted.join(" / "),
            present.join(", ")
        ),
    ))
}

/// The repository directory a model file belongs to: its folder, or the folder above
/// `onnx/`; the one holding `config.json`.
fn repo_dir(file: &Path) -> Result<PathBuf> {
    let parent = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let parent = if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent
    };
    if parent.join(hf::CONFIG).is_file() || parent.join(GENAI_CONFIG).is_file() {
        return Ok(parent);
    }
    if let Some(up) = parent.parent() {
        let up = if up.as_os_str().is_empty() {
            Path::new("..")
        } else {
            up
        };
        if up.join(hf::CONFIG).is_file() {
            return Ok(up.to_path_buf());
        }
    }
    Err(Error::format(
        file.display().to_string(),
        "no config.json (or genai_config.json) next to this ONNX file or in the folder above \
         it: akari reads ONNX models as transformers.js repositories (config.json, tokenizer \
         files, onnx/*.onnx) or onnxruntime-genai folders",
    ))
}

/// Opens a model directory. A transformers.js repository's file is chosen for `dtype` and
/// its weights kept as stored (`target` is not applied: the file is the dtype). An
/// onnxruntime-genai folder (`genai_config.json`, one model) has no per-dtype files: its
/// `decoder.filename` is opened and converted by `target`, as a file path would be.
pub fn open_dir(dir: &Path, dtype: Dtype, target: &ConvertTo) -> Result<ModelSource> {
    let genai = dir.join(GENAI_CONFIG);
    if genai.is_file() && !dir.join(hf::CONFIG).is_file() {
        let json = hf::read_json(&genai)?;
        let name = json
            .pointer("/model/decoder/filename")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("model.onnx");
        let plain = Path::new(name)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            return Err(Error::format(
                genai.display().to_string(),
                format!("`model.decoder.filename` = `{name}` is not a file in this folder"),
            ));
        }
        return open_file(&dir.join(name), target);
    }
    let file = choose_file(dir, dtype)?;
    open_file(&file, &|default| default)
}

/// Opens one `.onnx` file of a repository.
pub fn open_file(file: &Path, target: &ConvertTo) -> Result<ModelSource> {
    let repo = repo_dir(file)?;
    let bytes = map_file(file)?;
    let file_name = file.display().to_string();
    let model = proto::decode_model(&bytes, &file_name)?;
    let mut data = DataSource::new(file, bytes);
    if let Ok(rel) = file.strip_prefix(&repo) {
        data.rel = rel.display().to_string();
    }
    decoder::read(&model, &Arc::new(data), &RepoFiles::Dir(repo), target)
}

/// Opens an ONNX repository held in memory (the files of a transformers.js repository or an
/// onnxruntime-genai folder), choosing the `.onnx` file for `dtype` as [`open_dir`] does.
pub fn open_memory(files: &MemoryFiles, dtype: Dtype) -> Result<ModelSource> {
    let repo = RepoFiles::Memory(files.clone());
    let rel = if repo.is_file(GENAI_CONFIG) && !repo.is_file(hf::CONFIG) {
        let json = repo.read_json(GENAI_CONFIG)?;
        let name = json
            .pointer("/model/decoder/filename")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("model.onnx");
        if !is_plain_relative(name) {
            return Err(Error::format(
                repo.display(GENAI_CONFIG),
                format!("`model.decoder.filename` = `{name}` is not a file in this folder"),
            ));
        }
        name.to_string()
    } else {
        choose_memory_file(files, dtype)?
    };
    let bytes = repo.read(&rel)?;
    let data = Arc::new(DataSource::in_memory(files, &rel, bytes.clone()));
    let model = proto::decode_model(&bytes, &data.file_name)?;
    decoder::read(&model, &data, &repo, &|default| default)
}

/// [`choose_file`] for files in memory.
fn choose_memory_file(files: &MemoryFiles, dtype: Dtype) -> Result<String> {
    let onnx: Vec<&str> = files.paths().filter(|p| p.ends_with(".onnx")).collect();
    let in_sub = onnx.iter().any(|p| p.starts_with("onnx/"));
    let folder = if in_sub { "onnx/" } else { "" };
    let present: Vec<&str> = onnx
        .iter()
        .copied()
        .filter(|p| p.strip_prefix(folder).is_some_and(|f| !f.contains('/')))
        .collect();
    if present.is_empty() {
        return Err(Error::format(
            files.name(),
            "no .onnx files at the top or in onnx/",
        ));
    }
    let wanted: &[&str] = match dtype {
        Dtype::Auto => &["model_q4.onnx", "model_quantized.onnx", "model.onnx"],
        d => &[file_for(d)][..],
    };
    if let Some(p) = wanted
        .iter()
        .map(|f| format!("{folder}{f}"))
        .find(|p| present.contains(&p.as_str()))
    {
        return Ok(p);
    }
    if dtype == Dtype::Auto && present.len() == 1 {
        return Ok(present[0].to_string());
    }
    Err(Error::format(
        files.name(),
        format!(
            "no {} for dtype {dtype} (present: {}); pick another dtype",
            wanted.join(" / "),
            present.join(", ")
        ),
    ))
}

/// Where a tensor's values are: in memory, or a range of an external data file.
enum Place {
    Bytes(Bytes),
    /// `len` bytes at `offset` (u64: a source may be larger than wasm32's address space).
    Range {
        file: FileData,
        offset: u64,
        len: usize,
    },
}

/// Tensor values: from the model file, or from external data files next to it.
pub struct DataSource {
    /// The model file, for messages.
    pub file_name: String,
    /// The model file's path inside its repository, for model info.
    pub rel: String,
    /// Where external data files live: `ext_root` joined with `ext_prefix` (the model file's
    /// folder).
    ext_root: RepoFiles,
    ext_prefix: String,
    /// External files opened so far, by `location`.
    external: Mutex<HashMap<String, FileData>>,
    _model: Bytes,
}

impl DataSource {
    /// The model file at `file` on disk.
    pub fn new(file: &Path, model: Bytes) -> DataSource {
        let folder = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        DataSource {
            file_name: file.display().to_string(),
            rel: file.display().to_string(),
            ext_root: RepoFiles::Dir(folder),
            ext_prefix: String::new(),
            external: Mutex::new(HashMap::new()),
            _model: model,
        }
    }

    /// The model file `rel` of files held in memory.
    pub fn in_memory(files: &MemoryFiles, rel: &str, model: Bytes) -> DataSource {
        let repo = RepoFiles::Memory(files.clone());
        let ext_prefix = match rel.rfind('/') {
            Some(i) => rel[..=i].to_string(),
            None => String::new(),
        };
        DataSource {
            file_name: repo.display(rel),
            rel: rel.to_string(),
            ext_root: repo,
            ext_prefix,
            external: Mutex::new(HashMap::new()),
            _model: model,
        }
    }

    fn err(&self, msg: String) -> Error {
        Error::format(&self.file_name, msg)
    }

    /// Whether external data files are read a range at a time ([`FileData::Source`]): then
    /// the decoder defers each matrix until it is taken.
    pub fn is_streamed(&self) -> bool {
        match &self.ext_root {
            RepoFiles::Dir(_) => false,
            RepoFiles::Memory(m) => m
                .paths()
                .filter(|p| p.starts_with(&self.ext_prefix) && !p.ends_with(".onnx"))
                .any(|p| matches!(m.get(p), Some(FileData::Source(_)))),
        }
    }

    /// The external file `location`, opened (mapped, for a folder) once.
    fn external_file(&self, location: &str, tensor: &str) -> Result<FileData> {
        // A poisoned lock only means another read panicked; the map is still whole.
        let mut external = self.external.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = external.get(location) {
            return Ok(b.clone());
        }
        // Locations are file names relative to the model's folder; nothing may leave it.
        if !is_plain_relative(location) {
            return Err(self.err(format!(
                "tensor `{tensor}`: external data location `{location}` is not a relative path \
                 inside the model's folder"
            )));
        }
        let rel = format!("{}{location}", self.ext_prefix);
        if !self.ext_root.is_file(&rel) {
            return Err(self.err(format!(
                "tensor `{tensor}`: external data file `{}` is missing",
                self.ext_root.display(&rel)
            )));
        }
        let data = self.ext_root.data(&rel)?;
        external.insert(location.to_string(), data.clone());
        Ok(data)
    }

    /// A tensor's values as little-endian element bytes, exactly `n_elements × size` long.
    pub fn bytes(&self, t: &Tensor) -> Result<Bytes> {
        let (want, place) = self.locate(t)?;
        let got = match place {
            Place::Bytes(b) => b,
            Place::Range {
                file: FileData::Bytes(file),
                offset,
                len,
            } => usize::try_from(offset)
                .ok()
                .and_then(|o| file.slice(o..o.checked_add(len)?))
                .ok_or_else(|| self.err(format!("tensor `{}`: external range invalid", t.name)))?,
            Place::Range {
                file: FileData::Source(s),
                offset,
                len,
            } => Bytes::from_vec(s.read_at(offset, len)?),
        };
        if got.len() != want {
            return Err(self.wrong_length(t, got.len(), want));
        }
        Ok(got)
    }

    fn wrong_length(&self, t: &Tensor, got: usize, want: usize) -> Error {
        self.err(format!(
            "tensor `{}`: {got} bytes of data for {:?} {} (expected {want}): truncated or damaged",
            t.name,
            t.dims,
            proto::dtype::name(t.data_type)
        ))
    }

    /// Checks that [`DataSource::bytes`] can read `t` (external data inside its file, of the
    /// right length) without reading it.
    pub fn check(&self, t: &Tensor) -> Result<()> {
        match self.locate(t)? {
            (want, Place::Range { len, .. }) if len != want => Err(self.wrong_length(t, len, want)),
            _ => Ok(()),
        }
    }

    /// Where `t`'s values are, and how many bytes they must take.
    fn locate(&self, t: &Tensor) -> Result<(usize, Place)> {
        let size = proto::dtype::size(t.data_type).ok_or_else(|| {
            self.err(format!(
                "tensor `{}` has element type {}, which akari does not read",
                t.name,
                proto::dtype::name(t.data_type)
            ))
        })?;
        let n = t
            .n_elements()
            .ok_or_else(|| self.err(format!("tensor `{}`: bad dimensions {:?}", t.name, t.dims)))?;
        let want = n
            .checked_mul(size)
            .ok_or_else(|| self.err(format!("tensor `{}`: size overflows", t.name)))?;
        let place = match &t.data {
            TensorData::Raw(b) => Place::Bytes(b.clone()),
            TensorData::External {
                location,
                offset,
                length,
            } => {
                let file = self.external_file(location, &t.name)?;
                let len = length.unwrap_or(want as u64);
                let fits = offset.checked_add(len).is_some_and(|end| end <= file.len());
                match usize::try_from(len).ok().filter(|_| fits) {
                    Some(len) => Place::Range {
                        file,
                        offset: *offset,
                        len,
                    },
                    None => {
                        return Err(self.err(format!(
                            "tensor `{}`: external data at {offset}..+{len} runs past the end \
                             of `{location}` ({} bytes): truncated file?",
                            t.name,
                            file.len()
                        )))
                    }
                }
            }
            TensorData::Ints(v) => {
                if v.len() != n {
                    return Err(self.err(format!(
                        "tensor `{}`: {} values for {n} elements",
                        t.name,
                        v.len()
                    )));
                }
                let mut out = Vec::with_capacity(want);
                for &x in v {
                    out.extend_from_slice(&x.to_le_bytes()[..size]);
                }
                Place::Bytes(Bytes::from_vec(out))
            }
            TensorData::None => Place::Bytes(Bytes::from_vec(Vec::new())),
        };
        Ok((want, place))
    }
}
