//! HTTP server for the web app: the static bundle, and local model files in the Hub's URL
//! layout so the browser downloads them exactly as it would from the Hub.
//!
//! - `GET/HEAD /{owner}/{name}/resolve/{rev}/{*path}` serves `models/{owner}/{name}/{path}`
//!   (any revision) with ranges, `ETag` / `X-Linked-Etag` (the file's sha256, computed once
//!   per file version) and `X-Linked-Size`.
//! - `GET /api/models/{owner}/{name}[/revision/{rev}]` lists the files (`siblings`).
//! - Everything else comes from the bundle folder (the web build's output).
//!
//! Every answer carries `Cross-Origin-Opener-Policy: same-origin` and
//! `Cross-Origin-Embedder-Policy: require-corp`: the page is then cross-origin isolated, which
//! `SharedArrayBuffer`, and so wasm threads, require.
#![cfg(not(target_arch = "wasm32"))]

mod models;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Model files, laid out as `{owner}/{name}/{path}` (symlinks allowed).
    pub models: Option<PathBuf>,
    /// The web app's built files.
    pub bundle: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the server runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the server stopped: {0}")]
    Serve(#[source] std::io::Error),
}

pub(crate) struct AppState {
    pub(crate) config: ServeConfig,
    pub(crate) hashes: models::HashCache,
    bundle: ServeDir,
}

/// The page `/` shows when there is no web build yet.
const NO_BUNDLE_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>akari</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>akari</h1>
<p>The web app is not built yet: there is no <code>index.html</code> in <code>BUNDLE</code>.</p>
<p>Build it (see README.md, "Web app"), then reload this page, or start the server with
<code>--bundle DIR</code> pointing at a built bundle.</p>
<p>Model files are served meanwhile: <code>/{owner}/{name}/resolve/main/{file}</code>.</p>
</body></html>
"#;

/// The whole application: model routes, the bundle, and the isolation headers on everything.
pub fn router(config: ServeConfig) -> Router {
    let state = Arc::new(AppState {
        bundle: ServeDir::new(&config.bundle).append_index_html_on_directories(true),
        config,
        hashes: models::HashCache::default(),
    });
    let header = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::overriding(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    Router::new()
        .route("/api/models/{owner}/{name}", get(models::listing))
        .route(
            "/api/models/{owner}/{name}/revision/{rev}",
            get(models::listing_at),
        )
        .route(
            "/{owner}/{name}/resolve/{rev}/{*path}",
            get(models::resolve),
        )
        .fallback(static_file)
        .with_state(state)
        .layer(axum::middleware::map_response(script_types))
        .layer(header("cross-origin-opener-policy", "same-origin"))
        .layer(header("cross-origin-embedder-policy", "require-corp"))
        .layer(header("cross-origin-resource-policy", "same-origin"))
}

/// ES modules by their `.mjs` name are JavaScript too (the MIME table says
/// `application/javascript`, which browsers accept but the HTML spec no longer names).
async fn script_types(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    if h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/javascript")
    {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript"),
        );
    }
    resp
}

async fn static_file(State(st): State<Arc<AppState>>, req: Request) -> Response {
    if req.uri().path() == "/" && !st.config.bundle.join("index.html").is_file() {
        let page = NO_BUNDLE_PAGE.replace("BUNDLE", &st.config.bundle.display().to_string());
        return Html(page).into_response();
    }
    match st.bundle.clone().oneshot(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Listens on `addr`, calls `ready` with the bound address, and serves until Ctrl-C.
pub fn run_until_ctrl_c(
    addr: SocketAddr,
    config: ServeConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        // The handler is registered before `ready` announces the address, so a Ctrl-C sent
        // right after the announcement is not lost (`ctrl_c()` registers only when polled).
        #[cfg(unix)]
        let mut interrupts =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        ready(bound);
        let ctrl_c = async move {
            #[cfg(unix)]
            let got = match interrupts.as_mut() {
                Some(s) => s.recv().await.is_some(),
                None => false,
            };
            #[cfg(not(unix))]
            let got = tokio::signal::ctrl_c().await.is_ok();
            // Without a signal handler the server runs until killed, which is fine too.
            if !got {
                std::future::pending::<()>().await;
            }
            // Open downloads finish first; a second Ctrl-C does not wait for them.
            eprintln!("stopping (Ctrl-C again to quit at once)");
            tokio::spawn(async move {
                #[cfg(unix)]
                let again = match interrupts.as_mut() {
                    Some(s) => s.recv().await.is_some(),
                    None => false,
                };
                #[cfg(not(unix))]
                let again = tokio::signal::ctrl_c().await.is_ok();
                if again {
                    std::process::exit(130);
                }
            });
        };
        serve(listener, router(config), ctrl_c)
            .await
            .map_err(ServeError::Serve)
    })
}
