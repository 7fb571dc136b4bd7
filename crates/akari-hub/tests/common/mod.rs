//! An in-process Hub: `akari serve`'s router on 127.0.0.1:0, behind a layer that counts
//! requests and, when told to, drops connections mid-file or announces a wrong size or hash.

#![allow(dead_code)]

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Faults {
    /// Every request that reached the server.
    pub requests: AtomicUsize,
    /// `(method, path, Range header)` of each request.
    pub log: Mutex<Vec<(String, String, Option<String>)>>,
    /// GETs of paths ending so: send this many body bytes, then cut the connection; as many
    /// times as `drops` says.
    pub drop_after: Mutex<Option<(String, usize)>>,
    pub drops: AtomicUsize,
    /// Paths ending so get `X-Linked-Size` one byte too large.
    pub wrong_size: Mutex<Option<String>>,
    /// Paths ending so get the sha256 of something else as `ETag` / `X-Linked-Etag`.
    pub wrong_hash: Mutex<Option<String>>,
    /// Answer as the Hub does for large files: paths ending so get a `302` to the same path
    /// on this other server (`http://host:port`), with the size and hash in `X-Linked-*`.
    pub redirect: Mutex<Option<(String, String)>>,
    /// Answer as a storage server: no `X-Linked-*`, and an `ETag` that is not a sha256.
    pub storage: std::sync::atomic::AtomicBool,
    /// Requests that carried an `Authorization` header.
    pub authorized: AtomicUsize,
}

impl Faults {
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn ranges(&self) -> Vec<Option<String>> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, _, _)| m == "GET")
            .map(|(_, _, r)| r.clone())
            .collect()
    }
}

fn matches(rule: &Mutex<Option<String>>, path: &str) -> bool {
    rule.lock()
        .unwrap()
        .as_ref()
        .is_some_and(|s| path.ends_with(s.as_str()))
}

async fn inject(State(f): State<Arc<Faults>>, req: Request, next: Next) -> Response {
    f.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let method = req.method().to_string();
    let range = req
        .headers()
        .get("range")
        .map(|v| v.to_str().unwrap().to_string());
    f.log
        .lock()
        .unwrap()
        .push((method.clone(), path.clone(), range));
    if req.headers().contains_key("authorization") {
        f.authorized.fetch_add(1, Ordering::SeqCst);
    }
    let redirect = f
        .redirect
        .lock()
        .unwrap()
        .clone()
        .filter(|(p, _)| path.ends_with(p.as_str()));
    let mut resp = next.run(req).await;
    if f.storage.load(Ordering::SeqCst) {
        let h = resp.headers_mut();
        h.remove("x-linked-size");
        h.remove("x-linked-etag");
        h.insert("etag", HeaderValue::from_static("\"5d41402abc4b2a76-2\""));
    }
    if matches(&f.wrong_size, &path) {
        let size: u64 = resp.headers()["x-linked-size"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        resp.headers_mut()
            .insert("x-linked-size", HeaderValue::from(size + 1));
    }
    if matches(&f.wrong_hash, &path) {
        let other = format!("\"{}\"", "0123456789abcdef".repeat(4));
        let v = HeaderValue::from_str(&other).unwrap();
        resp.headers_mut().insert("etag", v.clone());
        resp.headers_mut().insert("x-linked-etag", v);
    }
    if let Some((_, target)) = redirect {
        let mut moved = Response::new(Body::empty());
        *moved.status_mut() = axum::http::StatusCode::FOUND;
        let h = moved.headers_mut();
        h.insert(
            "location",
            HeaderValue::from_str(&format!("{target}{path}")).unwrap(),
        );
        for k in ["x-linked-size", "x-linked-etag"] {
            h.insert(k, resp.headers()[k].clone());
        }
        return moved;
    }
    let cut = f
        .drop_after
        .lock()
        .unwrap()
        .clone()
        .filter(|(p, _)| method == "GET" && path.ends_with(p.as_str()));
    if let Some((_, keep)) = cut {
        if f.drops.load(Ordering::SeqCst) > 0 {
            f.drops.fetch_sub(1, Ordering::SeqCst);
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let head = bytes.slice(..keep.min(bytes.len()));
            // The headers still promise the whole body; the stream fails after `keep`
            // bytes, and the server then closes the connection.
            // (The pause lets the server flush the first bytes before the error aborts.)
            let stream =
                futures_util::stream::iter([Ok(head)]).chain(futures_util::stream::once(async {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Err(std::io::Error::other("connection dropped on purpose"))
                }));
            return Response::from_parts(parts, Body::from_stream(stream));
        }
    }
    resp
}

pub struct TestHub {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    _rt: tokio::runtime::Runtime,
}

impl TestHub {
    pub fn start(models: &Path) -> TestHub {
        let faults = Arc::new(Faults::default());
        let app = akari_serve::router(akari_serve::ServeConfig {
            models: Some(models.to_path_buf()),
            bundle: models.join("no-bundle"),
        })
        .layer(axum::middleware::from_fn_with_state(faults.clone(), inject));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(akari_serve::serve(listener, app, std::future::pending()));
        TestHub {
            addr,
            faults,
            _rt: rt,
        }
    }

    pub fn host(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client for this server with its own cache folder and short pauses between retries.
    pub fn client(&self, cache: &Path) -> akari_hub::Hub {
        akari_hub::Hub::new(akari_hub::HubOptions {
            host: self.host(),
            cache_dir: cache.to_path_buf(),
            retries: 3,
            backoff: std::time::Duration::from_millis(10),
            token: None,
            read_timeout: std::time::Duration::from_secs(10),
        })
    }
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// Links `target` at `models/{repo}/{path}`.
pub fn link(models: &Path, repo: &str, path: &str, target: &Path) {
    let at = models.join(repo).join(path);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target.canonicalize().unwrap(), at).unwrap();
}
