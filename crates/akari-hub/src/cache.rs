//! The download cache: `<root>/hub/{owner}/{name}/{revision}/{path}`, where root is
//! `${AKARI_CACHE:-~/.cache/akari}`. Listing and deleting cached models.

use crate::error::{HubError, Result};
use crate::repo::RepoId;
use std::fs;
use std::path::{Path, PathBuf};

/// `${AKARI_CACHE:-~/.cache/akari}`.
pub fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("AKARI_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("akari")
}

/// The Hub downloads under a cache root.
pub fn hub_dir(root: &Path) -> PathBuf {
    root.join("hub")
}

/// One cached revision of a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedRevision {
    /// As given when downloading (`refs/pr/1`, not its folder name).
    pub revision: String,
    pub dir: PathBuf,
    /// Complete files, as repository paths, sorted.
    pub files: Vec<(String, u64)>,
    /// Bytes of unfinished downloads (`.part` files), which resume next time.
    pub partial_bytes: u64,
}

impl CachedRevision {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedModel {
    pub repo: String,
    pub revisions: Vec<CachedRevision>,
}

impl CachedModel {
    /// Everything the model takes on disk, unfinished downloads included.
    pub fn bytes(&self) -> u64 {
        self.revisions
            .iter()
            .map(|r| r.bytes() + r.partial_bytes)
            .sum()
    }
}

fn sorted_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HubError::io(dir, e)),
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    out.sort();
    Ok(out)
}

/// Adds up a revision's files (not following links; the cache holds none of its own).
fn walk(dir: &Path, prefix: &str, rev: &mut CachedRevision) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| HubError::io(dir, e))?;
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            walk(&e.path(), &format!("{prefix}{name}/"), rev)?;
        } else if name.ends_with(".part") {
            rev.partial_bytes += meta.len();
        } else if !name.starts_with(".akari-") {
            rev.files.push((format!("{prefix}{name}"), meta.len()));
        }
    }
    Ok(())
}

/// Every cached model under a cache root, sorted by id.
pub fn list(root: &Path) -> Result<Vec<CachedModel>> {
    let mut models = Vec::new();
    for (owner, owner_dir) in sorted_dirs(&hub_dir(root))? {
        for (name, repo_dir) in sorted_dirs(&owner_dir)? {
            let mut revisions = Vec::new();
            for (rev_dir_name, dir) in sorted_dirs(&repo_dir)? {
                let mut rev = CachedRevision {
                    revision: rev_dir_name.replace("%2F", "/").replace("%25", "%"),
                    dir: dir.clone(),
                    files: Vec::new(),
                    partial_bytes: 0,
                };
                walk(&dir, "", &mut rev)?;
                rev.files.sort();
                revisions.push(rev);
            }
            models.push(CachedModel {
                repo: format!("{owner}/{name}"),
                revisions,
            });
        }
    }
    Ok(models)
}

/// Deletes a cached model (all revisions) and returns the bytes freed; `None` when it was not
/// cached.
pub fn remove(root: &Path, repo: &RepoId) -> Result<Option<u64>> {
    let Some(model) = list(root)?.into_iter().find(|m| m.repo == repo.to_string()) else {
        return Ok(None);
    };
    let hub = hub_dir(root);
    let dir = repo.dir_in(&hub);
    fs::remove_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
    // Drop the owner's folder once its last model is gone (fails harmlessly otherwise).
    let _ = fs::remove_dir(hub.join(repo.owner()));
    Ok(Some(model.bytes()))
}
