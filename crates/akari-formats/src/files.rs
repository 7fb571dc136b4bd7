//! Where a model repository's files come from: a folder on disk (memory-mapped), or files
//! handed over by a browser after a download or a file picker: in memory, or as a
//! [`ByteSource`] read a range at a time.

use akari_core::weights::Bytes;
use akari_core::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// A file read a range at a time and never held whole: a browser's `Blob` (which may live on
/// disk), or a file on disk ([`FileSource`]). A model larger than the wasm32 heap can still
/// be loaded from one, tensor by tensor, straight into GPU buffers.
pub trait ByteSource: Send + Sync {
    /// The file's length in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes from `offset`; a range past the end is an error.
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
}

/// One file of a [`MemoryFiles`].
#[derive(Clone)]
pub enum FileData {
    Bytes(Bytes),
    Source(Arc<dyn ByteSource>),
}

impl FileData {
    pub fn len(&self) -> u64 {
        match self {
            FileData::Bytes(b) => b.len() as u64,
            FileData::Source(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes from `offset`, copied out of the file.
    pub fn read_at(&self, offset: u64, len: usize, name: &str) -> Result<Vec<u8>> {
        match self {
            FileData::Bytes(b) => usize::try_from(offset)
                .ok()
                .and_then(|s| Some(s..s.checked_add(len)?))
                .and_then(|r| b.get(r))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| {
                    Error::format(name, format!("{len} bytes at {offset}: past the end"))
                }),
            FileData::Source(s) => s.read_at(offset, len),
        }
    }

    /// The whole file in memory (read in full from a source).
    pub fn to_bytes(&self, name: &str) -> Result<Bytes> {
        match self {
            FileData::Bytes(b) => Ok(b.clone()),
            FileData::Source(s) => {
                let len = usize::try_from(s.len())
                    .ok()
                    .filter(|&n| n <= isize::MAX as usize)
                    .ok_or_else(|| too_large(name, s.len()))?;
                let mut v = Vec::new();
                v.try_reserve_exact(len)
                    .map_err(|_| too_large(name, s.len()))?;
                v.extend_from_slice(&s.read_at(0, len)?);
                Ok(Bytes::from_vec(v))
            }
        }
    }
}

fn too_large(name: &str, len: u64) -> Error {
    Error::OutOfMemory(format!(
        "{name}: {len} bytes cannot be held in memory at once; only GGUF files and ONNX \
         external data files are read tensor by tensor"
    ))
}

impl fmt::Debug for FileData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileData::Bytes(b) => write!(f, "{b:?}"),
            FileData::Source(s) => write!(f, "ByteSource({} bytes)", s.len()),
        }
    }
}

impl From<Bytes> for FileData {
    fn from(b: Bytes) -> FileData {
        FileData::Bytes(b)
    }
}

/// A file on disk as a [`ByteSource`]: what the browser's `Blob` reader does, natively, so
/// the path that loads a model tensor by tensor runs in native tests too.
#[cfg(not(target_arch = "wasm32"))]
pub struct FileSource {
    path: PathBuf,
    file: std::sync::Mutex<std::fs::File>,
    len: u64,
}

#[cfg(not(target_arch = "wasm32"))]
impl FileSource {
    pub fn open(path: &Path) -> Result<FileSource> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Ok(FileSource {
            path: path.to_path_buf(),
            file: std::sync::Mutex::new(file),
            len,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        if offset.saturating_add(len as u64) > self.len {
            return Err(Error::format(
                self.path.display().to_string(),
                format!("{len} bytes at {offset}: past the end of the file"),
            ));
        }
        let mut buf = vec![0u8; len];
        // A poisoned lock only means another read panicked; the file handle is still good.
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(buf)
    }
}

/// Files handed over in memory, keyed by their path in the repository (`config.json`,
/// `onnx/model_q4.onnx`). Cloning shares the bytes.
#[derive(Clone, Debug, Default)]
pub struct MemoryFiles {
    name: String,
    files: Arc<BTreeMap<String, FileData>>,
}

impl MemoryFiles {
    /// `name` names the repository in messages and model info. Paths are relative, with `/`
    /// separators; a leading `./` or `/` is dropped.
    pub fn new(name: impl Into<String>, files: impl IntoIterator<Item = (String, Bytes)>) -> Self {
        MemoryFiles::with_data(name, files.into_iter().map(|(p, b)| (p, b.into())))
    }

    /// As [`MemoryFiles::new`], where some files may be [`ByteSource`]s.
    pub fn with_data(
        name: impl Into<String>,
        files: impl IntoIterator<Item = (String, FileData)>,
    ) -> Self {
        let files = files.into_iter().map(|(p, b)| (normalise(&p), b)).collect();
        MemoryFiles {
            name: name.into(),
            files: Arc::new(files),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn get(&self, path: &str) -> Option<&FileData> {
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
                .ok_or_else(|| Error::format(self.display(rel), "file is missing"))?
                .to_bytes(&self.display(rel)),
        }
    }

    /// `rel` as it is held: mapped from a directory, or in memory or a [`ByteSource`].
    pub fn data(&self, rel: &str) -> Result<FileData> {
        match self {
            RepoFiles::Dir(d) => crate::map_file(&d.join(rel)).map(FileData::Bytes),
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
