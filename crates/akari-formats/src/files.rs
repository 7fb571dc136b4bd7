//! Where a model repository's files come from: a folder on disk (memory-mapped), or files
//! already in memory (what a browser hands over after a download or a file picker).

use akari_core::weights::Bytes;
use akari_core::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Files held in memory, keyed by their path in the repository (`config.json`,
/// `onnx/model_q4.onnx`). Cloning shares the bytes.
#[derive(Clone, Debug, Default)]
pub struct MemoryFiles {
    name: String,
    files: Arc<BTreeMap<String, Bytes>>,
}

impl MemoryFiles {
    /// `name` names the repository in messages and model info. Paths are relative, with `/`
    /// separators; a leading `./` or `/` is dropped.
    pub fn new(name: impl Into<String>, files: impl IntoIterator<Item = (String, Bytes)>) -> Self {
        let files = files.into_iter().map(|(p, b)| (normalise(&p), b)).collect();
        MemoryFiles {
            name: name.into(),
            files: Arc::new(files),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn get(&self, path: &str) -> Option<&Bytes> {
        self.files.get(&normalise(path))
    }

    /// Every path, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn normalise(path: &str) -> String {
    let p = path.replace('\\', "/");
    let p = p.trim_start_matches("./").trim_start_matches('/');
    p.to_string()
}

/// A repository: a directory, or files in memory.
#[derive(Clone, Debug)]
pub enum RepoFiles {
    Dir(PathBuf),
    Memory(MemoryFiles),
}

impl RepoFiles {
    /// How `rel` is named in messages.
    pub fn display(&self, rel: &str) -> String {
        match self {
            RepoFiles::Dir(d) => d.join(rel).display().to_string(),
            RepoFiles::Memory(m) if m.name.is_empty() => rel.to_string(),
            RepoFiles::Memory(m) => format!("{}/{rel}", m.name),
        }
    }

    pub fn is_file(&self, rel: &str) -> bool {
        match self {
            RepoFiles::Dir(d) => d.join(rel).is_file(),
            RepoFiles::Memory(m) => m.get(rel).is_some(),
        }
    }

    /// The bytes of `rel` (memory-mapped from a directory).
    pub fn read(&self, rel: &str) -> Result<Bytes> {
        match self {
            RepoFiles::Dir(d) => crate::map_file(&d.join(rel)),
            RepoFiles::Memory(m) => m
                .get(rel)
                .cloned()
                .ok_or_else(|| Error::format(self.display(rel), "file is missing")),
        }
    }

    /// `rel` parsed as JSON, or `None` when there is no such file.
    pub fn read_optional_json(&self, rel: &str) -> Result<Option<serde_json::Value>> {
        if !self.is_file(rel) {
            return Ok(None);
        }
        self.read_json(rel).map(Some)
    }

    pub fn read_json(&self, rel: &str) -> Result<serde_json::Value> {
        let bytes = match self {
            // Small files; reading beats mapping (an empty file cannot be mapped).
            RepoFiles::Dir(d) => {
                let p = d.join(rel);
                Bytes::from_vec(std::fs::read(&p).map_err(|e| Error::io(&p, e))?)
            }
            RepoFiles::Memory(_) => self.read(rel)?,
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(self.display(rel), format!("invalid JSON: {e}")))
    }

    pub fn read_string(&self, rel: &str) -> Result<String> {
        let bytes = self.read(rel)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::format(self.display(rel), "not UTF-8 text"))
    }

    /// The repository's name, for model info.
    pub fn name(&self) -> Option<String> {
        match self {
            RepoFiles::Dir(d) => d
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
            RepoFiles::Memory(m) => (!m.name.is_empty()).then(|| m.name.clone()),
        }
    }
}

/// Whether `rel` is a plain relative path that stays inside its folder.
pub fn is_plain_relative(rel: &str) -> bool {
    !rel.is_empty()
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_paths_are_normalised_and_missing_files_are_named() {
        let m = MemoryFiles::new(
            "repo",
            [
                ("./config.json".to_string(), Bytes::from_vec(b"{}".to_vec())),
                ("onnx\\model.onnx".to_string(), Bytes::from_vec(vec![1])),
            ],
        );
        assert_eq!(
            m.paths().collect::<Vec<_>>(),
            ["config.json", "onnx/model.onnx"]
        );
        let r = RepoFiles::Memory(m);
        assert!(r.is_file("/config.json"));
        assert_eq!(r.read_json("config.json").unwrap(), serde_json::json!({}));
        let err = r.read("tokenizer.json").unwrap_err().to_string();
        assert_eq!(err, "repo/tokenizer.json: file is missing");
        assert!(r.read_optional_json("nope.json").unwrap().is_none());
        assert!(!is_plain_relative("../x") && is_plain_relative("a/b.onnx"));
    }
}
