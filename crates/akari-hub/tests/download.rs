//! Downloads over real HTTP from an in-process Hub: resume after drops and restarts, size and
//! hash checks, clear errors, and a cache that needs no network.

mod common;

use akari_core::Dtype;
use akari_hub::{FileProgress, HubError, RepoId};
use common::{fixtures, link, TestHub};
use std::sync::atomic::{AtomicBool, Ordering};

const REPO: &str = "akari-fixtures/tiny-llama-GGUF";
const FILE: &str = "tiny-llama.Q4_0.gguf";

/// A models folder with one GGUF repository (two quantisations) and an unrelated file.
fn setup() -> (tempfile::TempDir, TestHub, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let q4 = fixtures().join("tiny/llama-q4_0/model.gguf");
    link(&models, REPO, FILE, &q4);
    link(
        &models,
        REPO,
        "tiny-llama.Q8_0.gguf",
        &fixtures().join("tiny/llama-q8_0/model.gguf"),
    );
    link(&models, REPO, "README.md", &fixtures().join("README.md"));
    let hub = TestHub::start(&models);
    (tmp, hub, std::fs::read(q4).unwrap())
}

fn no_progress() -> impl FnMut(&FileProgress<'_>) {
    |_| {}
}

#[test]
fn dropped_connection_resumes_with_range() {
    let (tmp, server, bytes) = setup();
    *server.faults.drop_after.lock().unwrap() = Some((FILE.into(), 20_000));
    server.faults.drops.store(2, Ordering::SeqCst);
    let hub = server.client(&tmp.path().join("cache"));
    let repo = RepoId::parse(REPO).unwrap();
    let mut seen_retry = false;
    let path = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut |p| seen_retry |= matches!(p.stage, akari_hub::Stage::Retrying { .. }),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(seen_retry);
    // First GET from 0, then two resumes: after the first cut at 20,000 bytes, and after the
    // second cut 20,000 bytes further.
    assert_eq!(
        server.faults.ranges(),
        [
            None,
            Some("bytes=20000-".to_string()),
            Some("bytes=40000-".to_string())
        ]
    );
    assert!(!path.with_file_name(format!("{FILE}.part")).exists());
}

#[test]
fn resumes_a_part_file_left_by_an_earlier_run() {
    let (tmp, server, bytes) = setup();
    let cache = tmp.path().join("cache");
    let hub = server.client(&cache);
    let repo = RepoId::parse(REPO).unwrap();
    let dir = hub.revision_dir(&repo, "main").unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{FILE}.part")), &bytes[..12_345]).unwrap();
    let path = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert_eq!(server.faults.ranges(), [Some("bytes=12345-".to_string())]);
}

#[test]
fn cancel_keeps_the_part_and_resumes_later() {
    let (tmp, server, bytes) = setup();
    // Cut the first answer short so the cancel lands mid-file.
    *server.faults.drop_after.lock().unwrap() = Some((FILE.into(), 30_000));
    server.faults.drops.store(1, Ordering::SeqCst);
    let hub = server.client(&tmp.path().join("cache"));
    let repo = RepoId::parse(REPO).unwrap();
    let cancel = AtomicBool::new(false);
    let err = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut |p| {
                if p.done > 0 {
                    cancel.store(true, Ordering::SeqCst);
                }
            },
            &cancel,
        )
        .unwrap_err();
    assert!(matches!(err, HubError::Cancelled { .. }), "{err}");
    let dir = hub.revision_dir(&repo, "main").unwrap();
    assert!(!dir.join(FILE).exists());
    let kept = std::fs::metadata(dir.join(format!("{FILE}.part")))
        .unwrap()
        .len();
    assert!(kept > 0 && kept < bytes.len() as u64, "{kept}");
    let path = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    assert_eq!(
        server.faults.ranges().last().unwrap().as_deref(),
        Some(format!("bytes={kept}-").as_str())
    );
}

#[test]
fn wrong_size_is_refused_and_nothing_stays() {
    let (tmp, server, _) = setup();
    *server.faults.wrong_size.lock().unwrap() = Some(FILE.into());
    let hub = server.client(&tmp.path().join("cache"));
    let repo = RepoId::parse(REPO).unwrap();
    let err = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
    assert!(matches!(err, HubError::SizeMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(FILE) && msg.contains("61953"), "{msg}");
    let dir = hub.revision_dir(&repo, "main").unwrap();
    assert!(!dir.join(FILE).exists());
    assert!(!dir.join(format!("{FILE}.part")).exists());
}

#[test]
fn wrong_hash_is_refused_and_nothing_stays() {
    let (tmp, server, _) = setup();
    *server.faults.wrong_hash.lock().unwrap() = Some(FILE.into());
    let hub = server.client(&tmp.path().join("cache"));
    let repo = RepoId::parse(REPO).unwrap();
    let err = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
    assert!(matches!(err, HubError::HashMismatch { .. }), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    let dir = hub.revision_dir(&repo, "main").unwrap();
    assert!(!dir.join(FILE).exists());
    assert!(!dir.join(format!("{FILE}.part")).exists());
}

#[test]
fn not_found_names_host_and_path() {
    let (tmp, server, _) = setup();
    let hub = server.client(&tmp.path().join("cache"));
    let missing = RepoId::parse("nobody/nothing").unwrap();
    let err = hub
        .fetch_model(
            &missing,
            "main",
            Dtype::Auto,
            None,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains(&server.host()) && msg.contains("nobody/nothing"),
        "{msg}"
    );
    let repo = RepoId::parse(REPO).unwrap();
    let err = hub
        .download(
            &repo,
            "main",
            "nope.gguf",
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("model or file not found on ") && msg.contains(&server.host()),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{REPO}/resolve/main/nope.gguf")),
        "{msg}"
    );
    assert!(!hub
        .revision_dir(&repo, "main")
        .unwrap()
        .join("nope.gguf")
        .exists());
}

#[test]
fn unreachable_host_gives_up_after_retries() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let hub = akari_hub::Hub::new(akari_hub::HubOptions {
        host: format!("http://127.0.0.1:{port}"),
        cache_dir: tmp.path().to_path_buf(),
        retries: 2,
        backoff: std::time::Duration::from_millis(5),
        token: None,
        read_timeout: std::time::Duration::from_secs(5),
    });
    let repo = RepoId::parse(REPO).unwrap();
    let err = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
    assert!(
        matches!(err, HubError::Network { attempts: 3, .. }),
        "{err}"
    );
}

#[test]
fn cached_model_needs_no_request() {
    let (tmp, server, bytes) = setup();
    let cache = tmp.path().join("cache");
    let hub = server.client(&cache);
    let repo = RepoId::parse(REPO).unwrap();
    let first = hub
        .fetch_model(
            &repo,
            "main",
            Dtype::Auto,
            None,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(first.files, [FILE]);
    assert_eq!(std::fs::read(&first.path).unwrap(), bytes);
    // Listing, HEAD and GET.
    assert_eq!(server.faults.requests(), 3);

    let mut stages = Vec::new();
    let again = hub
        .fetch_model(
            &repo,
            "main",
            Dtype::Auto,
            None,
            &mut |p| stages.push(p.stage),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(again.path, first.path);
    assert_eq!(
        server.faults.requests(),
        3,
        "the cached model asked the server"
    );
    assert_eq!(stages, [akari_hub::Stage::Cached]);

    // Another quantisation of the same repository needs its file only (HEAD + GET).
    let q8 = hub
        .fetch_model(
            &repo,
            "main",
            Dtype::Q8,
            None,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert!(q8.path.ends_with("tiny-llama.Q8_0.gguf"));
    assert_eq!(server.faults.requests(), 5);

    let listed = akari_hub::cache::list(&cache).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].repo, REPO);
    let files: Vec<&str> = listed[0].revisions[0]
        .files
        .iter()
        .map(|(f, _)| f.as_str())
        .collect();
    assert_eq!(files, ["tiny-llama.Q4_0.gguf", "tiny-llama.Q8_0.gguf"]);
    let size = listed[0].bytes();
    assert_eq!(
        size,
        bytes.len() as u64 + std::fs::metadata(&q8.path).unwrap().len()
    );
    assert_eq!(akari_hub::cache::remove(&cache, &repo).unwrap(), Some(size));
    assert!(akari_hub::cache::list(&cache).unwrap().is_empty());
    assert!(!first.path.exists());
    assert_eq!(akari_hub::cache::remove(&cache, &repo).unwrap(), None);
}

#[test]
fn leftover_part_files_are_checked_not_trusted() {
    let (tmp, server, bytes) = setup();
    let hub = server.client(&tmp.path().join("cache"));
    let repo = RepoId::parse(REPO).unwrap();
    let dir = hub.revision_dir(&repo, "main").unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let part = dir.join(format!("{FILE}.part"));

    // Complete already: only its size and hash are asked for.
    std::fs::write(&part, &bytes).unwrap();
    let path = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(
        server.faults.ranges().is_empty(),
        "{:?}",
        server.faults.ranges()
    );
    std::fs::remove_file(&path).unwrap();

    // Right size, wrong bytes: refused by the hash, and deleted.
    let mut wrong = bytes.clone();
    wrong[100] ^= 1;
    std::fs::write(&part, &wrong).unwrap();
    let err = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
    assert!(matches!(err, HubError::HashMismatch { .. }), "{err}");
    assert!(!part.exists() && !path.exists());

    // Longer than the file: not a prefix of it, so the download starts over.
    let mut long = bytes.clone();
    long.extend_from_slice(b"tail");
    std::fs::write(&part, &long).unwrap();
    let path = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(server.faults.ranges(), [None]);
}

#[test]
fn follows_the_hubs_redirect_to_storage_and_keeps_the_token_home() {
    let (tmp, server, bytes) = setup();
    // The same files on a second server standing in for the Hub's storage.
    let storage = TestHub::start(&tmp.path().join("models"));
    storage.faults.storage.store(true, Ordering::SeqCst);
    *server.faults.redirect.lock().unwrap() = Some((FILE.into(), storage.host()));
    let hub = akari_hub::Hub::new(akari_hub::HubOptions {
        token: Some("secret".into()),
        ..server_options(&server, &tmp.path().join("cache"))
    });
    let repo = RepoId::parse(REPO).unwrap();
    let path = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    // The HEAD went to the Hub, the bytes came from storage.
    assert_eq!(server.faults.requests(), 1);
    assert_eq!(server.faults.authorized.load(Ordering::SeqCst), 1);
    assert_eq!(storage.faults.ranges(), [None]);
    assert_eq!(storage.faults.authorized.load(Ordering::SeqCst), 0);

    // The hash checked is the Hub's X-Linked-Etag, not storage's ETag.
    std::fs::remove_dir_all(tmp.path().join("cache")).unwrap();
    *server.faults.wrong_hash.lock().unwrap() = Some(FILE.into());
    let err = hub
        .download(
            &repo,
            "main",
            FILE,
            &mut no_progress(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
    assert!(matches!(err, HubError::HashMismatch { .. }), "{err}");
}

fn server_options(server: &TestHub, cache: &std::path::Path) -> akari_hub::HubOptions {
    akari_hub::HubOptions {
        host: server.host(),
        cache_dir: cache.to_path_buf(),
        retries: 3,
        backoff: std::time::Duration::from_millis(10),
        token: None,
        read_timeout: std::time::Duration::from_secs(10),
    }
}
