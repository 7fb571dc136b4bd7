//! Model resolution and download: Hub URLs, local caches, progress.
//!
//! A model is named by a Hub repository id (`owner/name`) and a revision. Its files are listed
//! with the Hub API (`{host}/api/models/{repo}/revision/{rev}` → `siblings`), the ones a dtype
//! needs are picked ([`select`]), and each is downloaded from `{host}/{repo}/resolve/{rev}/{path}`
//! into `${AKARI_CACHE:-~/.cache/akari}/hub/{repo}/{rev}/{path}` ([`cache`]). Downloads stream
//! to `<file>.part`, resume with `Range` after a dropped connection or a restart, and are
//! checked against the size and sha256 the server announces before they take their final name,
//! so a file at its final path is always complete: it is used without asking the network.
//!
//! Native only: in the browser the web app downloads with `fetch` itself.
#![cfg(not(target_arch = "wasm32"))]

pub mod cache;
mod client;
mod error;
mod repo;
pub mod select;

pub use client::{FileProgress, Hub, HubOptions, Resolved, Stage};
pub use error::{HubError, Result};
pub use repo::{looks_like_repo_id, RepoId};

/// The Hub used when neither `--hub-host` nor `AKARI_HUB_HOST` names another.
pub const DEFAULT_HOST: &str = "https://huggingface.co";

/// The environment variable that overrides [`DEFAULT_HOST`].
pub const HOST_ENV: &str = "AKARI_HUB_HOST";

/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// The Hub host: `explicit` if given, else `AKARI_HUB_HOST`, else [`DEFAULT_HOST`]; without a
/// trailing slash.
pub fn host_from(explicit: Option<&str>) -> String {
    let host = match explicit {
        Some(h) => h.to_string(),
        None => std::env::var(HOST_ENV)
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string()),
    };
    host.trim().trim_end_matches('/').to_string()
}
