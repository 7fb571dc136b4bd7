//! `akari serve` as a process, and the other commands downloading from it by Hub id.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(models: &Path, bundle: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_akari"))
        .args(["serve", "--port", "0", "--models"])
        .arg(models)
        .arg("--bundle")
        .arg(bundle)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("akari serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("akari serve prints its address");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    Served { child, url }
}

fn akari_in(cache: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_akari"))
        .args(args)
        .env("AKARI_CACHE", cache)
        .env_remove("AKARI_HUB_HOST")
        .env("AKARI_LOG", "error")
        .output()
        .expect("the akari binary runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn commands_take_hub_ids_and_the_cache_lists_them() {
    let tmp = std::env::temp_dir().join(format!("akari-cli-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let repo = tmp.join("models/akari-fixtures/tiny-llama-GGUF");
    std::fs::create_dir_all(&repo).expect("models dir");
    for (name, fixture_dir) in [
        ("tiny-llama.Q4_0.gguf", "tiny/llama-q4_0"),
        ("tiny-llama.F32.gguf", "tiny/llama-f32"),
    ] {
        std::os::unix::fs::symlink(
            fixture(fixture_dir)
                .join("model.gguf")
                .canonicalize()
                .expect("fixture"),
            repo.join(name),
        )
        .expect("link");
    }
    let server = serve(&tmp.join("models"), &tmp.join("no-bundle"));
    let cache = tmp.join("cache");
    let tokens = "274,32,113,117,105,99,107";

    let from_hub = akari_in(
        &cache,
        &[
            "logits",
            "akari-fixtures/tiny-llama-GGUF",
            "--hub-host",
            &server.url,
            "--device",
            "cpu",
            "--tokens",
            tokens,
            "--steps",
            "2",
        ],
    );
    let local = akari_in(
        &cache,
        &[
            "logits",
            fixture("tiny/llama-q4_0/model.gguf")
                .to_str()
                .expect("utf-8"),
            "--device",
            "cpu",
            "--tokens",
            tokens,
            "--steps",
            "2",
        ],
    );
    assert_eq!(from_hub.json(), local.json());

    // --file picks another file; --dtype fp32 would pick it too.
    let f32 = akari_in(
        &cache,
        &[
            "info",
            "akari-fixtures/tiny-llama-GGUF",
            "--hub-host",
            &server.url,
            "--file",
            "tiny-llama.F32.gguf",
            "--device",
            "cpu",
            "--json",
        ],
    );
    assert!(f32.json()["file_type"]
        .as_str()
        .expect("file_type")
        .contains("F32"));

    // With the server gone the cached model still loads.
    drop(server);
    let offline = akari_in(
        &cache,
        &[
            "logits",
            "akari-fixtures/tiny-llama-GGUF",
            "--hub-host",
            "http://127.0.0.1:9",
            "--device",
            "cpu",
            "--tokens",
            tokens,
            "--steps",
            "2",
        ],
    );
    assert_eq!(offline.json(), local.json());

    let list = akari_in(&cache, &["cache", "list"]);
    assert!(list.ok, "{}", list.stderr);
    assert!(
        list.stdout.contains("akari-fixtures/tiny-llama-GGUF"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("tiny-llama.Q4_0.gguf"),
        "{}",
        list.stdout
    );
    assert!(
        list.stdout.contains("tiny-llama.F32.gguf"),
        "{}",
        list.stdout
    );
    let rm = akari_in(&cache, &["cache", "rm", "akari-fixtures/tiny-llama-GGUF"]);
    assert!(rm.ok && rm.stdout.contains("deleted"), "{}", rm.stderr);
    let list = akari_in(&cache, &["cache", "list"]);
    assert!(!list.stdout.contains("tiny-llama"), "{}", list.stdout);
    let rm = akari_in(&cache, &["cache", "rm", "akari-fixtures/tiny-llama-GGUF"]);
    assert!(
        !rm.ok && rm.stderr.contains("not in the cache"),
        "{}",
        rm.stderr
    );

    // Not reachable and not cached: the error names the host.
    let err = akari_in(
        &cache,
        &[
            "info",
            "akari-fixtures/tiny-llama-GGUF",
            "--hub-host",
            "http://127.0.0.1:9",
        ],
    );
    assert!(!err.ok);
    assert!(err.stderr.contains("http://127.0.0.1:9"), "{}", err.stderr);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn serve_stops_on_ctrl_c() {
    let tmp = std::env::temp_dir().join(format!("akari-cli-serve-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let mut server = serve(&tmp, &tmp.join("no-bundle"));
    let status = Command::new("kill")
        .args(["-INT", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let start = std::time::Instant::now();
    loop {
        if let Some(s) = server.child.try_wait().expect("wait") {
            assert!(s.success(), "{s:?}");
            break;
        }
        assert!(start.elapsed().as_secs() < 10, "still running after SIGINT");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
