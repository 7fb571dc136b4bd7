//! The HTTP side: file listings and resumable, checked downloads.

use crate::cache;
use crate::error::{HubError, Result};
use crate::repo::{check_file_path, revision_dir, RepoId};
use crate::select::{select, Kind};
use akari_core::Dtype;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use ureq::http::{header, HeaderMap, StatusCode};

/// Characters kept as they are in a URL path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where the file list of a cached revision is kept, so a cached model opens offline.
const LISTING_FILE: &str = ".akari-files.json";

#[derive(Clone, Debug)]
pub struct HubOptions {
    /// `https://huggingface.co` or a server with the same URL layout.
    pub host: String,
    /// The akari cache root; files go to `<cache>/hub/{repo}/{revision}/`.
    pub cache_dir: PathBuf,
    /// Attempts after a failure that made no progress, before giving up.
    pub retries: u32,
    /// The first pause between attempts; it doubles each time (at most 30 s).
    pub backoff: Duration,
    /// Sent as a bearer token to `host` (not to the storage it redirects to).
    pub token: Option<String>,
    /// A connection that sends nothing for this long counts as dropped.
    pub read_timeout: Duration,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            host: crate::host_from(None),
            cache_dir: cache::default_root(),
            retries: 5,
            backoff: Duration::from_millis(250),
            token: std::env::var("HF_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty()),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// One file's download state, reported to the progress callback.
#[derive(Clone, Copy, Debug)]
pub struct FileProgress<'a> {
    /// The path inside the repository.
    pub path: &'a str,
    /// Bytes on disk (including what an earlier attempt left).
    pub done: u64,
    /// The file's size, when the server said.
    pub total: Option<u64>,
    /// Average speed of this attempt.
    pub bytes_per_sec: f64,
    pub stage: Stage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Already complete in the cache; nothing is fetched.
    Cached,
    Downloading,
    /// The connection failed; another attempt follows.
    Retrying {
        attempt: u32,
    },
    /// Complete, checked and in place.
    Done,
}

/// A model ready on disk.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub repo: RepoId,
    pub revision: String,
    /// The revision's folder in the cache.
    pub dir: PathBuf,
    /// The repository paths that were fetched (or found cached).
    pub files: Vec<String>,
    /// What to open: a file (GGUF, or a chosen ONNX file) or `dir`.
    pub path: PathBuf,
    /// The dtype to open `path` with (see [`crate::select::Selection::load_dtype`]).
    pub dtype: Dtype,
    pub kind: Kind,
}

pub struct Hub {
    opts: HubOptions,
    agent: ureq::Agent,
}

/// What the server announced about a file before its bytes.
struct FileMeta {
    /// Where the bytes are (after the Hub's redirect to storage, if any).
    url: String,
    size: Option<u64>,
    sha256: Option<String>,
}

/// Why one attempt failed: worth another try (network) or not.
enum Failure {
    Retry {
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    Fatal(HubError),
}

impl From<HubError> for Failure {
    fn from(e: HubError) -> Self {
        Failure::Fatal(e)
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A sha256 in an ETag: 64 hex digits, maybe quoted or weak.
fn sha_from_etag(v: &str) -> Option<String> {
    let v = v.trim().trim_start_matches("W/").trim_matches('"');
    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_ascii_lowercase())
}

/// `scheme://authority` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// The start and total of a `Content-Range: bytes start-end/total` answer.
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let v = header_str(headers, header::CONTENT_RANGE.as_str())?;
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse().ok();
    let start = match range.split_once('-') {
        Some((s, _)) => s.trim().parse().ok()?,
        // `bytes */total` (416): no range, only the size.
        None => return Some((u64::MAX, total)),
    };
    Some((start, total))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse().ok())
}

fn sha256_of(path: &Path) -> Result<(Sha256, u64)> {
    let mut f = File::open(path).map_err(|e| HubError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).map_err(|e| HubError::io(path, e))?;
        if r == 0 {
            return Ok((h, n));
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("cannot delete {}: {e}", path.display());
        }
    }
}

impl Hub {
    pub fn new(opts: HubOptions) -> Hub {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(opts.read_timeout))
            .user_agent(concat!("akari/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Hub { opts, agent }
    }

    pub fn host(&self) -> &str {
        &self.opts.host
    }

    /// The folder a revision's files are cached in.
    pub fn revision_dir(&self, repo: &RepoId, revision: &str) -> Result<PathBuf> {
        Ok(repo
            .dir_in(&cache::hub_dir(&self.opts.cache_dir))
            .join(revision_dir(revision)?))
    }

    /// `{host}/{repo}/resolve/{revision}/{path}`.
    pub fn file_url(&self, repo: &RepoId, revision: &str, path: &str) -> String {
        let path: Vec<String> = path
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        format!(
            "{}/{}/{}/resolve/{}/{}",
            self.opts.host,
            utf8_percent_encode(repo.owner(), SEGMENT),
            utf8_percent_encode(repo.name(), SEGMENT),
            utf8_percent_encode(revision, SEGMENT),
            path.join("/")
        )
    }

    fn listing_url(&self, repo: &RepoId, revision: &str) -> String {
        format!(
            "{}/api/models/{}/{}/revision/{}",
            self.opts.host,
            utf8_percent_encode(repo.owner(), SEGMENT),
            utf8_percent_encode(repo.name(), SEGMENT),
            utf8_percent_encode(revision, SEGMENT)
        )
    }

    fn with_token<B>(&self, req: ureq::RequestBuilder<B>, url: &str) -> ureq::RequestBuilder<B> {
        match &self.opts.token {
            Some(t) if origin(url) == origin(&self.opts.host) => {
                req.header(header::AUTHORIZATION, format!("Bearer {t}"))
            }
            _ => req,
        }
    }

    /// Maps a non-success status to an error naming what was asked for.
    fn status_error(&self, url: &str, what: &str, status: StatusCode) -> HubError {
        match status.as_u16() {
            404 => HubError::NotFound {
                host: self.opts.host.clone(),
                path: what.to_string(),
            },
            s @ (401 | 403) => HubError::Unauthorized {
                host: self.opts.host.clone(),
                path: what.to_string(),
                status: s,
            },
            s => HubError::Http {
                url: url.to_string(),
                status: s,
            },
        }
    }

    /// Calls `f` until it succeeds, a fatal error comes, or `retries` attempts in a row fail
    /// without progress; pauses grow between attempts. `f` says whether it made progress and
    /// is told how many failures came before it.
    fn retrying<T>(
        &self,
        url: &str,
        cancel: &AtomicBool,
        mut f: impl FnMut(&mut bool, u32) -> std::result::Result<T, Failure>,
        cancelled: impl Fn() -> HubError,
    ) -> Result<T> {
        let mut failures = 0u32;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let mut progressed = false;
            match f(&mut progressed, failures) {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry { error }) => {
                    if progressed {
                        failures = 0;
                    }
                    failures += 1;
                    if failures > self.opts.retries {
                        return Err(HubError::Network {
                            url: url.to_string(),
                            attempts: failures,
                            source: error,
                        });
                    }
                    tracing::warn!(
                        "{url}: {error}; trying again ({failures} of {})",
                        self.opts.retries
                    );
                    let pause = self
                        .opts
                        .backoff
                        .saturating_mul(1 << (failures - 1).min(10))
                        .min(Duration::from_secs(30));
                    let until = Instant::now() + pause;
                    while Instant::now() < until {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(cancelled());
                        }
                        std::thread::sleep(Duration::from_millis(20).min(pause));
                    }
                }
            }
        }
    }

    /// The repository's file list at `revision`: from the cache when this revision was listed
    /// before, else from `{host}/api/models/{repo}/revision/{revision}` (then cached).
    pub fn list_files(&self, repo: &RepoId, revision: &str) -> Result<Vec<String>> {
        let dir = self.revision_dir(repo, revision)?;
        let cached = dir.join(LISTING_FILE);
        if let Ok(text) = fs::read_to_string(&cached) {
            if let Ok(files) = serde_json::from_str::<Vec<String>>(&text) {
                return Ok(files);
            }
        }
        let files = self.fetch_listing(repo, revision)?;
        fs::create_dir_all(&dir).map_err(|e| HubError::io(&dir, e))?;
        let json = serde_json::to_string(&files).unwrap_or_default();
        fs::write(&cached, json).map_err(|e| HubError::io(&cached, e))?;
        Ok(files)
    }

    fn fetch_listing(&self, repo: &RepoId, revision: &str) -> Result<Vec<String>> {
        let url = self.listing_url(repo, revision);
        let what = format!("{repo} (revision {revision})");
        let never = AtomicBool::new(false);
        let text = self.retrying(
            &url,
            &never,
            |_, _| {
                let resp = self
                    .with_token(self.agent.get(&url), &url)
                    .call()
                    .map_err(|e| Failure::Retry { error: e.into() })?;
                let status = resp.status();
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    return Err(Failure::Retry {
                        error: format!("HTTP {status}").into(),
                    });
                }
                if !status.is_success() {
                    return Err(self.status_error(&url, &what, status).into());
                }
                resp.into_body()
                    .read_to_string()
                    .map_err(|e| Failure::Retry { error: e.into() })
            },
            || HubError::Cancelled { path: url.clone() },
        )?;
        let bad = |reason: String| HubError::BadAnswer {
            url: url.clone(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
        let siblings = json
            .get("siblings")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no `siblings` list".into()))?;
        let mut files = Vec::with_capacity(siblings.len());
        for s in siblings {
            let name = s
                .get("rfilename")
                .and_then(|n| n.as_str())
                .ok_or_else(|| bad("a sibling without `rfilename`".into()))?;
            // A listed path must stay inside the repository's cache folder.
            if !check_file_path(name) {
                return Err(bad(format!("unsafe file path `{name}`")));
            }
            files.push(name.to_string());
        }
        Ok(files)
    }

    /// Lists the repository, picks the files for `dtype` (or `file`), and makes sure each is
    /// in the cache, downloading what is missing. A model whose files are all cached needs no
    /// network at all.
    pub fn fetch_model(
        &self,
        repo: &RepoId,
        revision: &str,
        dtype: Dtype,
        file: Option<&str>,
        progress: &mut dyn FnMut(&FileProgress<'_>),
        cancel: &AtomicBool,
    ) -> Result<Resolved> {
        let listing = self.list_files(repo, revision)?;
        let sel = select(&repo.to_string(), &listing, dtype, file)?;
        let dir = self.revision_dir(repo, revision)?;
        for f in &sel.files {
            self.download(repo, revision, f, progress, cancel)?;
        }
        let path = match &sel.entry {
            Some(e) => dir.join(e),
            None => dir.clone(),
        };
        Ok(Resolved {
            repo: repo.clone(),
            revision: revision.to_string(),
            dir,
            files: sel.files,
            path,
            dtype: sel.load_dtype,
            kind: sel.kind,
        })
    }

    /// Makes sure one repository file is complete in the cache and returns its path.
    pub fn download(
        &self,
        repo: &RepoId,
        revision: &str,
        path: &str,
        progress: &mut dyn FnMut(&FileProgress<'_>),
        cancel: &AtomicBool,
    ) -> Result<PathBuf> {
        if !check_file_path(path) {
            return Err(HubError::NotFound {
                host: self.opts.host.clone(),
                path: format!("{repo}/{path} (not a plain relative path)"),
            });
        }
        let dest = self.revision_dir(repo, revision)?.join(path);
        // Only complete, checked files ever get the final name.
        if let Ok(meta) = fs::metadata(&dest) {
            if meta.is_file() {
                progress(&FileProgress {
                    path,
                    done: meta.len(),
                    total: Some(meta.len()),
                    bytes_per_sec: 0.0,
                    stage: Stage::Cached,
                });
                return Ok(dest);
            }
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        let url = self.file_url(repo, revision, path);
        let what = format!("{repo}/resolve/{revision}/{path}");
        let part = part_path(&dest);
        let cancelled = || HubError::Cancelled { path: what.clone() };
        let meta = self.retrying(&url, cancel, |_, _| self.head(&url, &what), cancelled)?;

        let mut hasher = Sha256::new();
        let mut hashed = 0u64;
        let total = self.retrying(
            &url,
            cancel,
            |progressed, attempt_no| {
                self.attempt(
                    &meta,
                    &what,
                    &part,
                    path,
                    (&mut hasher, &mut hashed),
                    progressed,
                    progress,
                    cancel,
                    attempt_no,
                )
            },
            cancelled,
        );
        let total = match total {
            Ok(t) => t,
            Err(e @ (HubError::SizeMismatch { .. } | HubError::HashMismatch { .. })) => {
                remove_quietly(&part);
                return Err(e);
            }
            Err(e) => return Err(e),
        };

        let got = fs::metadata(&part)
            .map_err(|e| HubError::io(&part, e))?
            .len();
        if let Some(expected) = meta.size.or(total) {
            if got != expected {
                remove_quietly(&part);
                return Err(HubError::SizeMismatch {
                    path: what,
                    expected,
                    got,
                });
            }
        }
        if let Some(expected) = &meta.sha256 {
            if hashed != got {
                // The leftover was complete already, or a restart left bytes unhashed.
                hasher = sha256_of(&part)?.0;
            }
            let digest = hex(&hasher.finalize());
            if &digest != expected {
                remove_quietly(&part);
                return Err(HubError::HashMismatch {
                    path: what,
                    expected: expected.clone(),
                    got: digest,
                });
            }
        }
        fs::rename(&part, &dest).map_err(|e| HubError::io(&dest, e))?;
        progress(&FileProgress {
            path,
            done: got,
            total: Some(got),
            bytes_per_sec: 0.0,
            stage: Stage::Done,
        });
        Ok(dest)
    }

    /// Asks for a file's size and hash without its bytes. The Hub answers LFS files with a
    /// redirect to storage that carries `X-Linked-Size` and `X-Linked-Etag` (the sha256);
    /// redirects within the host are followed, one to another host is where the bytes are.
    fn head(&self, url: &str, what: &str) -> std::result::Result<FileMeta, Failure> {
        let mut current = url.to_string();
        let mut size = None;
        let mut sha = None;
        for _ in 0..5 {
            let resp = self
                .with_token(self.agent.head(&current), &current)
                .header(header::ACCEPT_ENCODING, "identity")
                .config()
                .max_redirects(0)
                .build()
                .call()
                .map_err(|e| Failure::Retry { error: e.into() })?;
            let status = resp.status();
            let h = resp.headers();
            size =
                size.or_else(|| header_str(h, "x-linked-size").and_then(|v| v.trim().parse().ok()));
            sha = sha.or_else(|| header_str(h, "x-linked-etag").and_then(sha_from_etag));
            if status.is_redirection() {
                let location = header_str(h, header::LOCATION.as_str()).ok_or_else(|| {
                    HubError::BadAnswer {
                        url: current.clone(),
                        reason: format!("HTTP {status} without a Location"),
                    }
                })?;
                if location.starts_with("http://") || location.starts_with("https://") {
                    if origin(location) != origin(&current) {
                        return Ok(FileMeta {
                            url: location.to_string(),
                            size,
                            sha256: sha,
                        });
                    }
                    current = location.to_string();
                } else if location.starts_with('/') {
                    current = format!("{}{location}", origin(&current));
                } else {
                    return Err(HubError::BadAnswer {
                        url: current,
                        reason: format!("unsupported redirect to `{location}`"),
                    }
                    .into());
                }
                continue;
            }
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                return Err(Failure::Retry {
                    error: format!("HTTP {status}").into(),
                });
            }
            if !status.is_success() {
                return Err(self.status_error(&current, what, status).into());
            }
            let size = size.or_else(|| content_length(h));
            let sha = sha.or_else(|| header_str(h, header::ETAG.as_str()).and_then(sha_from_etag));
            return Ok(FileMeta {
                url: current,
                size,
                sha256: sha,
            });
        }
        Err(HubError::BadAnswer {
            url: url.to_string(),
            reason: "too many redirects".into(),
        }
        .into())
    }

    /// One GET of the rest of the file, appended to `part`. Returns the total size the server
    /// gave, if any.
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        meta: &FileMeta,
        what: &str,
        part: &Path,
        path: &str,
        (hasher, hashed): (&mut Sha256, &mut u64),
        progressed: &mut bool,
        progress: &mut dyn FnMut(&FileProgress<'_>),
        cancel: &AtomicBool,
        attempt_no: u32,
    ) -> std::result::Result<Option<u64>, Failure> {
        let mut have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if let Some(size) = meta.size {
            if have > size {
                // Not a prefix of this file: an old or foreign leftover.
                remove_quietly(part);
                have = 0;
            } else if have == size {
                return Ok(Some(size));
            }
        }
        let mut req = self
            .with_token(self.agent.get(&meta.url), &meta.url)
            .header(header::ACCEPT_ENCODING, "identity");
        if have > 0 {
            req = req.header(header::RANGE, format!("bytes={have}-"));
        }
        let resp = req.call().map_err(|e| Failure::Retry { error: e.into() })?;
        let status = resp.status();
        let h = resp.headers().clone();
        let total = match status {
            StatusCode::PARTIAL_CONTENT => match content_range(&h) {
                Some((start, total)) if start == have => total,
                _ => {
                    // A range we did not ask for: start over.
                    remove_quietly(part);
                    return Err(Failure::Retry {
                        error: "the server answered a different range; starting over".into(),
                    });
                }
            },
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let real = content_range(&h).and_then(|(_, t)| t);
                if real == Some(have) {
                    // The leftover is the whole file: it is checked below.
                    return Ok(Some(have));
                }
                remove_quietly(part);
                return Err(Failure::Retry {
                    error: "the partial download does not fit the file; starting over".into(),
                });
            }
            s if s.is_success() => {
                if have > 0 {
                    // The server ignored the range and sends everything.
                    have = 0;
                }
                content_length(&h)
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Err(Failure::Retry {
                    error: format!("HTTP {s}").into(),
                })
            }
            s => return Err(self.status_error(&meta.url, what, s).into()),
        };
        if let (Some(expected), Some(total)) = (meta.size, total) {
            if expected != total {
                return Err(HubError::SizeMismatch {
                    path: what.to_string(),
                    expected,
                    got: total,
                }
                .into());
            }
        }
        let total = meta.size.or(total);

        let mut out = OpenOptions::new()
            .create(true)
            .append(have > 0)
            .write(true)
            .truncate(have == 0)
            .open(part)
            .map_err(|e| HubError::io(part, e))?;
        if have == 0 {
            *hasher = Sha256::new();
            *hashed = 0;
        } else if *hashed != have {
            // Bytes an earlier run left: hash them before appending.
            (*hasher, *hashed) = sha256_of(part)?;
        }

        let start = Instant::now();
        let mut received = 0u64;
        let mut last_report = Instant::now();
        let stage = if attempt_no == 0 {
            Stage::Downloading
        } else {
            Stage::Retrying {
                attempt: attempt_no,
            }
        };
        progress(&FileProgress {
            path,
            done: have,
            total,
            bytes_per_sec: 0.0,
            stage,
        });
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(HubError::Cancelled {
                    path: what.to_string(),
                }
                .into());
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    return Err(Failure::Retry {
                        error: format!("connection lost after {} bytes: {e}", have).into(),
                    })
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| HubError::io(part, e))?;
            hasher.update(&buf[..n]);
            have += n as u64;
            *hashed = have;
            received += n as u64;
            *progressed = true;
            // The first bytes show at once; then a few reports a second are plenty.
            if received == n as u64 || last_report.elapsed() >= Duration::from_millis(100) {
                last_report = Instant::now();
                progress(&FileProgress {
                    path,
                    done: have,
                    total,
                    bytes_per_sec: received as f64 / start.elapsed().as_secs_f64().max(1e-3),
                    stage,
                });
            }
        }
        out.flush().map_err(|e| HubError::io(part, e))?;
        if let Some(t) = total {
            if have < t {
                return Err(Failure::Retry {
                    error: format!("connection closed after {have} of {t} bytes").into(),
                });
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_ranges() {
        let sha = "a".repeat(64);
        assert_eq!(sha_from_etag(&format!("\"{sha}\"")), Some(sha.clone()));
        assert_eq!(
            sha_from_etag(&format!("W/\"{}\"", sha.to_uppercase())),
            Some(sha)
        );
        assert_eq!(sha_from_etag("\"abc\""), None);
        assert_eq!(origin("https://h.co:8080/a/b"), "https://h.co:8080");
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range(&h), Some((100, Some(200))));
        h.insert(header::CONTENT_RANGE, "bytes */200".parse().unwrap());
        assert_eq!(content_range(&h), Some((u64::MAX, Some(200))));
    }

    #[test]
    fn urls() {
        let hub = Hub::new(HubOptions {
            host: "http://127.0.0.1:9".into(),
            ..Default::default()
        });
        let repo = RepoId::parse("o/n").unwrap();
        assert_eq!(
            hub.file_url(&repo, "refs/pr/1", "onnx/model q4.onnx"),
            "http://127.0.0.1:9/o/n/resolve/refs%2Fpr%2F1/onnx/model%20q4.onnx"
        );
        assert_eq!(
            hub.listing_url(&repo, "main"),
            "http://127.0.0.1:9/api/models/o/n/revision/main"
        );
    }
}
