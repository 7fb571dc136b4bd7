//! The server over real HTTP on 127.0.0.1:0: isolation headers, MIME types, model files with
//! ranges and hashes, listings, and refused paths.

use akari_serve::{router, ServeConfig};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;

struct Server {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl Server {
    fn start(config: ServeConfig) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(akari_serve::serve(
            listener,
            router(config),
            std::future::pending(),
        ));
        Server { addr, _rt: rt }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request line as is (no client-side path clean-up) and returns the status.
    fn raw_status(&self, target: &str) -> u16 {
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        write!(
            s,
            "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp.split(' ').nth(1).unwrap().parse().unwrap()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

fn header<'a>(r: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

fn assert_isolated(r: &ureq::http::Response<ureq::Body>) {
    assert_eq!(header(r, "cross-origin-opener-policy"), Some("same-origin"));
    assert_eq!(
        header(r, "cross-origin-embedder-policy"),
        Some("require-corp")
    );
    assert_eq!(
        header(r, "cross-origin-resource-policy"),
        Some("same-origin")
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A models folder: `o/n/weights.bin` (pseudo-random bytes), `o/n/onnx/model.onnx`, and
/// `o/n/linked.gguf` → a file outside the folder.
fn models_dir(root: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let models = root.join("models");
    let repo = models.join("o").join("n");
    std::fs::create_dir_all(repo.join("onnx")).unwrap();
    let mut x = 0x2545_f491_u32;
    let data: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(repo.join("weights.bin"), &data).unwrap();
    std::fs::write(repo.join("onnx").join("model.onnx"), b"onnx").unwrap();
    std::fs::write(repo.join(".hidden"), b"x").unwrap();
    std::fs::write(root.join("outside.gguf"), b"GGUF outside").unwrap();
    std::os::unix::fs::symlink(root.join("outside.gguf"), repo.join("linked.gguf")).unwrap();
    std::fs::write(root.join("secret.txt"), b"secret").unwrap();
    (models, data)
}

#[test]
fn no_bundle_page_and_headers_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(ServeConfig {
        models: None,
        bundle: tmp.path().join("missing"),
    });
    let a = agent();
    let mut r = a.get(server.url("/")).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_isolated(&r);
    let body = r.body_mut().read_to_string().unwrap();
    assert!(body.contains("not built"), "{body}");
    let r = a.get(server.url("/nothing.js")).call().unwrap();
    assert_eq!(r.status(), 404);
    assert_isolated(&r);
    let r = a
        .get(server.url("/o/n/resolve/main/x.gguf"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_isolated(&r);
}

#[test]
fn bundle_files_with_script_types() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("web");
    std::fs::create_dir_all(bundle.join("pkg")).unwrap();
    std::fs::write(bundle.join("index.html"), "<!doctype html><p>app</p>").unwrap();
    std::fs::write(bundle.join("pkg/app.js"), "export {}").unwrap();
    std::fs::write(bundle.join("pkg/worker.mjs"), "export {}").unwrap();
    std::fs::write(bundle.join("pkg/app_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let server = Server::start(ServeConfig {
        models: None,
        bundle,
    });
    let a = agent();
    let mut r = a.get(server.url("/")).call().unwrap();
    assert_eq!(r.status(), 200);
    assert_isolated(&r);
    assert_eq!(
        r.body_mut().read_to_string().unwrap(),
        "<!doctype html><p>app</p>"
    );
    for (path, mime) in [
        ("/pkg/app.js", "text/javascript"),
        ("/pkg/worker.mjs", "text/javascript"),
        ("/pkg/app_bg.wasm", "application/wasm"),
    ] {
        let r = a.get(server.url(path)).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_isolated(&r);
        assert_eq!(header(&r, "content-type"), Some(mime), "{path}");
    }
}

#[test]
fn model_files_with_ranges_hashes_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    let (models, data) = models_dir(tmp.path());
    let server = Server::start(ServeConfig {
        models: Some(models),
        bundle: tmp.path().join("missing"),
    });
    let a = agent();
    let sha = sha256_hex(&data);

    let mut r = a
        .get(server.url("/o/n/resolve/main/weights.bin"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_isolated(&r);
    assert_eq!(header(&r, "content-length"), Some("300000"));
    assert_eq!(header(&r, "x-linked-size"), Some("300000"));
    assert_eq!(header(&r, "etag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(
        header(&r, "x-linked-etag"),
        Some(format!("\"{sha}\"").as_str())
    );
    assert!(header(&r, "access-control-expose-headers")
        .unwrap()
        .contains("X-Linked-Etag"));
    assert_eq!(r.body_mut().read_to_vec().unwrap(), data);

    // Any revision name reads the same folder.
    let mut r = a
        .get(server.url("/o/n/resolve/v1.0/weights.bin"))
        .header("Range", "bytes=1000-1999")
        .call()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_isolated(&r);
    assert_eq!(header(&r, "content-range"), Some("bytes 1000-1999/300000"));
    assert_eq!(header(&r, "content-length"), Some("1000"));
    assert_eq!(header(&r, "x-linked-size"), Some("300000"));
    assert_eq!(r.body_mut().read_to_vec().unwrap(), &data[1000..2000]);

    let mut r = a
        .get(server.url("/o/n/resolve/main/weights.bin"))
        .header("Range", "bytes=299990-")
        .call()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.body_mut().read_to_vec().unwrap(), &data[299_990..]);

    let r = a
        .head(server.url("/o/n/resolve/main/weights.bin"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), Some("300000"));
    assert_eq!(
        header(&r, "x-linked-etag"),
        Some(format!("\"{sha}\"").as_str())
    );

    // A symlink to a file outside the folder is served as that file.
    let mut r = a
        .get(server.url("/o/n/resolve/main/linked.gguf"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "x-linked-etag"),
        Some(format!("\"{}\"", sha256_hex(b"GGUF outside")).as_str())
    );
    assert_eq!(r.body_mut().read_to_vec().unwrap(), b"GGUF outside");

    let r = a
        .get(server.url("/o/n/resolve/main/onnx/missing.onnx"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn climbing_out_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (models, _) = models_dir(tmp.path());
    let server = Server::start(ServeConfig {
        models: Some(models),
        bundle: tmp.path().join("missing"),
    });
    // The sanity case first, so a refusal below is not just a broken route.
    assert_eq!(server.raw_status("/o/n/resolve/main/onnx/model.onnx"), 200);
    for target in [
        "/o/n/resolve/main/../../../secret.txt",
        "/o/n/resolve/main/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/o/n/resolve/main/..%2F..%2F..%2Fsecret.txt",
        "/o/../resolve/main/secret.txt",
        "/o/n/resolve/main/.hidden",
        "/api/models/o/..",
    ] {
        let status = server.raw_status(target);
        assert!(status == 400 || status == 404, "{target} answered {status}");
    }
}

#[test]
fn listings_like_the_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let (models, _) = models_dir(tmp.path());
    let server = Server::start(ServeConfig {
        models: Some(models),
        bundle: tmp.path().join("missing"),
    });
    let a = agent();
    for path in ["/api/models/o/n", "/api/models/o/n/revision/main"] {
        let mut r = a.get(server.url(path)).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_isolated(&r);
        let v: serde_json::Value =
            serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(v["id"], "o/n");
        let names: Vec<&str> = v["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["rfilename"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["linked.gguf", "onnx/model.onnx", "weights.bin"]);
    }
    let r = a.get(server.url("/api/models/o/none")).call().unwrap();
    assert_eq!(r.status(), 404);
}
