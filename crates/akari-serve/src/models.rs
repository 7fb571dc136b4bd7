//! Model files in the Hub's layout: `resolve` downloads and the `api/models` file list.

use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::OnceCell;
use tower::ServiceExt;
use tower_http::services::ServeFile;

/// sha256 of served files, by path, valid while mtime and size stay the same. Hashing a
/// multi-gigabyte model takes seconds, so it runs once per file version, off the async
/// threads; requests that arrive meanwhile wait for the same result.
#[derive(Default)]
pub(crate) struct HashCache {
    map: Mutex<HashMap<PathBuf, HashEntry>>,
}

/// The file version (mtime, size) a hash belongs to, and the hash once known.
type HashEntry = (SystemTime, u64, Arc<OnceCell<String>>);

impl HashCache {
    async fn sha256(&self, path: &FsPath, mtime: SystemTime, size: u64) -> std::io::Result<String> {
        let cell = {
            let mut map = self
                .map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = map
                .entry(path.to_path_buf())
                .or_insert_with(|| (mtime, size, Arc::default()));
            if entry.0 != mtime || entry.1 != size {
                *entry = (mtime, size, Arc::default());
            }
            entry.2.clone()
        };
        let owned = path.to_path_buf();
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || hash_file(&owned))
                .await
                .map_err(std::io::Error::other)?
        })
        .await
        .cloned()
    }
}

fn hash_file(path: &FsPath) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// One path segment from a URL: a plain name, never `.`/`..` or a hidden file.
fn plain(segment: &str) -> bool {
    !segment.is_empty()
        && !segment.starts_with('.')
        && !segment.contains('\\')
        && !segment.contains('\0')
        && !segment.contains('/')
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

/// `models/{owner}/{name}`, after checking the names.
fn repo_dir(st: &AppState, owner: &str, name: &str) -> Result<PathBuf, Box<Response>> {
    let Some(models) = &st.config.models else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "no model folder is served (start the server with --models DIR)",
        )));
    };
    if !plain(owner) || !plain(name) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad repository name",
        )));
    }
    Ok(models.join(owner).join(name))
}

pub(crate) async fn resolve(
    State(st): State<Arc<AppState>>,
    Path((owner, name, _rev, path)): Path<(String, String, String, String)>,
    req: Request,
) -> Response {
    let dir = match repo_dir(&st, &owner, &name) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    // Refuse anything that could climb out of the repository folder.
    if !path.split('/').all(plain) {
        return error(StatusCode::BAD_REQUEST, "bad file path");
    }
    let file = dir.join(&path);
    // metadata() follows symlinks: a linked model file is served as the file it points to.
    let meta = match tokio::fs::metadata(&file).await {
        Ok(m) if m.is_file() => m,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                format!("{owner}/{name}/{path}: not found"),
            )
        }
    };
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let sha = match st.hashes.sha256(&file, mtime, meta.len()).await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut resp = match ServeFile::new(&file).oneshot(req).await {
        Ok(r) => r.map(Body::new),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let h = resp.headers_mut();
    let etag = format!("\"{sha}\"");
    for (k, v) in [
        ("etag", etag.clone()),
        ("x-linked-etag", etag),
        ("x-linked-size", meta.len().to_string()),
        (
            "access-control-expose-headers",
            "Content-Length, Content-Range, Accept-Ranges, ETag, X-Linked-Etag, X-Linked-Size"
                .to_string(),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

/// Files under `dir`, as `/`-separated paths; follows symlinks, skips hidden names.
fn walk(dir: &FsPath, prefix: &str, depth: usize, out: &mut Vec<(String, u64)>) {
    // Symlinked folders could loop; real repositories are shallow.
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, &format!("{prefix}{name}/"), depth + 1, out),
            Ok(m) if m.is_file() => out.push((format!("{prefix}{name}"), m.len())),
            _ => {}
        }
    }
}

async fn list(st: Arc<AppState>, owner: String, name: String, rev: String) -> Response {
    let dir = match repo_dir(&st, &owner, &name) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let listed = tokio::task::spawn_blocking(move || {
        if !dir.is_dir() {
            return None;
        }
        let mut files = Vec::new();
        walk(&dir, "", 0, &mut files);
        files.sort();
        Some(files)
    })
    .await
    .ok()
    .flatten();
    let Some(files) = listed else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{owner}/{name}: no such model"),
        );
    };
    let siblings: Vec<serde_json::Value> = files
        .into_iter()
        .map(|(f, size)| serde_json::json!({ "rfilename": f, "size": size }))
        .collect();
    Json(serde_json::json!({
        "id": format!("{owner}/{name}"),
        "modelId": format!("{owner}/{name}"),
        "sha": rev,
        "siblings": siblings,
    }))
    .into_response()
}

pub(crate) async fn listing(
    State(st): State<Arc<AppState>>,
    Path((owner, name)): Path<(String, String)>,
) -> Response {
    list(st, owner, name, "main".into()).await
}

pub(crate) async fn listing_at(
    State(st): State<Arc<AppState>>,
    Path((owner, name, rev)): Path<(String, String, String)>,
) -> Response {
    list(st, owner, name, rev).await
}
