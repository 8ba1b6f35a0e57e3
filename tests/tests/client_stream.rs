//! Streaming encryption (`vault_client::stream`, `vaultctl transit
//! encrypt-file / decrypt-file`) against the real server: local round trips
//! at segment-boundary sizes, associated data, subjects, damaged streams
//! (a flipped byte, a cut at a segment boundary, a tampered header) that
//! fail and leave no output file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::json;
use vault_client::Error;
use vault_client::stream::{Algorithm, StreamOptions};
use vault_e2e::{Backend, ServerProc, Store};

/// A fresh server on SQLite, unsealed, `transit/` mounted with the key
/// `files`; the harness client (root) and a library client (root).
async fn vault() -> (Store, ServerProc, vault_e2e::Client, vault_client::Client, String) {
    let store = Store::new(Backend::Sqlite);
    let srv = ServerProc::start(&store, &[]);
    let (_keys, root, rc) = srv.kv2_ready().await;
    let (s, b) = rc.post("sys/mounts/transit", json!({"type": "transit"})).await;
    assert_eq!(s, 204, "mount transit: {b}");
    let client = vault_client::Client::new(srv.url()).unwrap().with_token(&root);
    client.transit("transit").create_key("files", None).await.unwrap();
    (store, srv, rc, client, root)
}

/// Deterministic, incompressible-looking bytes with a canary at the start.
fn data(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678 ^ len as u32;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let canary = b"PLAINTEXT-CANARY";
    let n = canary.len().min(len);
    v[..n].copy_from_slice(&canary[..n]);
    v
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// `dir` holds exactly `names`: no output, no temporary file.
fn only(dir: &Path, names: &[&str]) {
    assert_eq!(entries(dir), names, "left behind in {}", dir.display());
}

/// Error text and `Debug` hold no plaintext.
fn clean(e: &Error) {
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("CANARY"), "{shown}");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Length of the header at the start of `stream`.
fn header_len(stream: &[u8]) -> usize {
    vault_stream::Header::parse(stream).unwrap().unwrap().1
}

#[tokio::test(flavor = "multi_thread")]
async fn local_round_trips_at_segment_boundaries() {
    let (_store, _srv, _rc, client, _root) = vault().await;
    let files = client.transit("transit").stream("files");
    let dir = tempfile::tempdir().unwrap();
    let local = StreamOptions::new().local().associated_data("file-7");
    for len in [0usize, 1, 65535, 65536, 65537, 5 << 20] {
        let plain = data(len);
        let input = write(dir.path(), "in", &plain);
        let (enc, dec) = (dir.path().join("in.vlts"), dir.path().join("out"));
        let stats = files.encrypt_file(&input, &enc, &local).await.unwrap();
        let stream = std::fs::read(&enc).unwrap();
        assert_eq!((stats.bytes_in, stats.bytes_out), (len as u64, stream.len() as u64));
        assert!(stream.starts_with(b"VLTS"), "{len}");
        let (header, used) = vault_stream::Header::parse(&stream).unwrap().unwrap();
        assert_eq!(header.key_name(), "files");
        assert_eq!(header.key_version(), 1);
        assert!(std::str::from_utf8(header.wrapped_key()).unwrap().starts_with("vault:v1:"));
        assert_eq!(
            (stream.len() - used) as u64,
            vault_stream::ciphertext_len(len as u64, 65536).unwrap(),
            "segments of {len} bytes"
        );
        if len >= 16 {
            assert!(!stream.windows(16).any(|w| w == b"PLAINTEXT-CANARY"), "plaintext in the stream");
        }
        let stats = files.decrypt_file(&enc, &dec, &local).await.unwrap();
        assert_eq!(stats.bytes_out, len as u64);
        assert!(std::fs::read(&dec).unwrap() == plain, "round trip of {len} bytes");
        only(dir.path(), &["in", "in.vlts", "out"]);
        std::fs::remove_file(&dec).unwrap();
    }

    // In memory, through the generic reader/writer API, with ChaCha20 and
    // the smallest segments.
    let plain = data(100_000);
    let opts = StreamOptions::new().local().algorithm(Algorithm::ChaCha20Poly1305).segment_size(4096);
    let mut stream = Vec::new();
    files.encrypt(std::io::Cursor::new(plain.clone()), &mut stream, &opts).await.unwrap();
    let header = vault_stream::Header::parse(&stream).unwrap().unwrap().0;
    assert_eq!((header.algorithm(), header.segment_size()), (Algorithm::ChaCha20Poly1305, 4096));
    let mut back = Vec::new();
    files.decrypt(std::io::Cursor::new(stream), &mut back, &StreamOptions::new().local()).await.unwrap();
    assert!(back == plain);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_damage_fails_and_leaves_no_output() {
    let (_store, _srv, _rc, client, _root) = vault().await;
    let transit = client.transit("transit");
    let files = transit.stream("files");
    let dir = tempfile::tempdir().unwrap();
    let opts = StreamOptions::new().local().associated_data("file-7");
    let plain = data(200_000); // 4 segments: 3 full, 1 partial
    let input = write(dir.path(), "in", &plain);
    let enc = dir.path().join("in.vlts");
    files.encrypt_file(&input, &enc, &opts).await.unwrap();
    let stream = std::fs::read(&enc).unwrap();
    let out = dir.path().join("out");

    // Wrong or missing associated data.
    for wrong in [StreamOptions::new().local().associated_data("file-8"), StreamOptions::new().local()] {
        let e = files.decrypt_file(&enc, &out, &wrong).await.unwrap_err();
        assert!(e.is_stream_damaged() && e.to_string().contains("authentication failed"), "{e}");
        clean(&e);
        only(dir.path(), &["in", "in.vlts"]);
    }

    // A flipped byte in every part: header, first segment, last segment.
    let used = header_len(&stream);
    for at in [used - 1, used + 10, stream.len() - 1, stream.len() / 2] {
        let mut bad = stream.clone();
        bad[at] ^= 0x01;
        let damaged = write(dir.path(), "bad.vlts", &bad);
        let e = files.decrypt_file(&damaged, &out, &opts).await.unwrap_err();
        assert!(e.is_stream_damaged(), "byte {at}: {e}");
        clean(&e);
        only(dir.path(), &["bad.vlts", "in", "in.vlts"]);
    }

    // Cut at a segment boundary (after 1, 2 and 3 full segments), inside a
    // segment, inside the header, and nothing at all.
    let full = 65536 + 16;
    for cut in [used + full, used + 2 * full, used + 3 * full, used + 1000, used - 5, 0] {
        let damaged = write(dir.path(), "bad.vlts", &stream[..cut]);
        let e = files.decrypt_file(&damaged, &out, &opts).await.unwrap_err();
        assert!(e.is_stream_damaged(), "cut at {cut}: {e}");
        clean(&e);
        only(dir.path(), &["bad.vlts", "in", "in.vlts"]);
    }
    let damaged = write(dir.path(), "bad.vlts", &stream[..used + 2 * full]);
    let e = files.decrypt_file(&damaged, &out, &opts).await.unwrap_err();
    assert!(matches!(e, Error::Stream(vault_stream::StreamError::Truncated)), "{e:?}");
    assert!(e.to_string().contains("truncated"), "{e}");

    // A header whose key version disagrees with its wrapped key.
    let mut bad = stream.clone();
    bad[10..14].copy_from_slice(&2u32.to_be_bytes());
    let damaged = write(dir.path(), "bad.vlts", &bad);
    let e = files.decrypt_file(&damaged, &out, &opts).await.unwrap_err();
    assert!(e.to_string().contains("tampered header"), "{e}");
    only(dir.path(), &["bad.vlts", "in", "in.vlts"]);

    // Not a stream at all, and a stream of another key.
    let e = files.decrypt_file(&input, &out, &opts).await.unwrap_err();
    assert!(matches!(e, Error::Stream(vault_stream::StreamError::BadMagic)), "{e:?}");
    transit.create_key("other", None).await.unwrap();
    let e = transit.stream("other").decrypt_file(&enc, &out, &opts).await.unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("\"files\"")), "{e:?}");
    only(dir.path(), &["bad.vlts", "in", "in.vlts"]);

    // A missing input names it; nothing is created.
    let e = files.decrypt_file(&dir.path().join("missing"), &out, &opts).await.unwrap_err();
    assert!(matches!(&e, Error::Io { what, .. } if what.contains("missing")), "{e:?}");
    only(dir.path(), &["bad.vlts", "in", "in.vlts"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn local_subjects_versions_and_denied_tokens() {
    let (_store, _srv, rc, client, _root) = vault().await;
    let transit = client.transit("transit");
    let files = transit.stream("files");
    let dir = tempfile::tempdir().unwrap();
    let plain = data(70_000);
    let input = write(dir.path(), "in", &plain);
    let (enc, out) = (dir.path().join("in.vlts"), dir.path().join("out"));

    // A subject's stream: its data key is wrapped under the subject's key
    // (`datakey` takes `subject`), so deleting the subject shreds it.
    let ada = StreamOptions::new().local().subject("ada");
    files.encrypt_file(&input, &enc, &ada).await.unwrap();
    let stream = std::fs::read(&enc).unwrap();
    let header = vault_stream::Header::parse(&stream).unwrap().unwrap().0;
    assert!(std::str::from_utf8(header.wrapped_key()).unwrap().starts_with("vault:v1:s"));
    files.decrypt_file(&enc, &out, &ada).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == plain);
    std::fs::remove_file(&out).unwrap();
    // The server decrypts the client's subject stream too.
    let via_server = StreamOptions::new().subject("ada");
    files.decrypt_file(&enc, &out, &via_server).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == plain);
    std::fs::remove_file(&out).unwrap();
    transit.delete_subject("files", "ada").await.unwrap();
    let e = files.decrypt_file(&enc, &out, &ada).await.unwrap_err();
    clean(&e);
    std::fs::remove_file(&enc).unwrap();
    only(dir.path(), &["in"]);

    // An older key version on request; the header says which.
    transit.rotate_key("files").await.unwrap();
    let v1 = StreamOptions::new().local().key_version(1);
    files.encrypt_file(&input, &enc, &v1).await.unwrap();
    let stream = std::fs::read(&enc).unwrap();
    assert_eq!(vault_stream::Header::parse(&stream).unwrap().unwrap().0.key_version(), 1);
    files.decrypt_file(&enc, &out, &StreamOptions::new().local()).await.unwrap();
    std::fs::remove_file(&out).unwrap();

    // A token whose policy allows no data keys: refused, nothing written.
    let (s, b) = rc
        .call(
            "PUT",
            "sys/policies/acl/keys-only",
            Some(json!({"policy": "path \"transit/keys/*\" { capabilities = [\"read\"] }"})),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    let (s, b) = rc.post("auth/token/create", json!({"policies": ["keys-only"]})).await;
    assert_eq!(s, 200, "{b}");
    let weak = client.clone().with_token(b["auth"]["client_token"].as_str().unwrap());
    let weak_files = weak.transit("transit");
    let weak_files = weak_files.stream("files");
    let e =
        weak_files.encrypt_file(&input, &dir.path().join("new.vlts"), &StreamOptions::new().local()).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    let e = weak_files.decrypt_file(&enc, &out, &StreamOptions::new().local()).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    only(dir.path(), &["in", "in.vlts"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_round_trips_and_interop_with_local() {
    let (_store, _srv, _rc, client, _root) = vault().await;
    let files = client.transit("transit").stream("files");
    let dir = tempfile::tempdir().unwrap();
    let server = StreamOptions::new().associated_data("file-7");
    let local = server.clone().local();
    for len in [0usize, 1, 65535, 65536, 65537, 5 << 20] {
        let plain = data(len);
        let input = write(dir.path(), "in", &plain);
        let (enc, dec) = (dir.path().join("in.vlts"), dir.path().join("out"));

        // Through the server both ways.
        let stats = files.encrypt_file(&input, &enc, &server).await.unwrap();
        let stream = std::fs::read(&enc).unwrap();
        assert_eq!((stats.bytes_in, stats.bytes_out), (len as u64, stream.len() as u64));
        let (header, used) = vault_stream::Header::parse(&stream).unwrap().unwrap();
        assert_eq!((header.key_name(), header.key_version()), ("files", 1));
        assert_eq!((stream.len() - used) as u64, vault_stream::ciphertext_len(len as u64, 65536).unwrap());
        let stats = files.decrypt_file(&enc, &dec, &server).await.unwrap();
        assert_eq!((stats.bytes_in, stats.bytes_out), (stream.len() as u64, len as u64));
        assert!(std::fs::read(&dec).unwrap() == plain, "server round trip of {len} bytes");
        std::fs::remove_file(&dec).unwrap();

        // Server-encrypted, decrypted here.
        files.decrypt_file(&enc, &dec, &local).await.unwrap();
        assert!(std::fs::read(&dec).unwrap() == plain, "server -> local, {len} bytes");
        std::fs::remove_file(&dec).unwrap();

        // Encrypted here, decrypted by the server.
        files.encrypt_file(&input, &enc, &local).await.unwrap();
        files.decrypt_file(&enc, &dec, &server).await.unwrap();
        assert!(std::fs::read(&dec).unwrap() == plain, "local -> server, {len} bytes");
        std::fs::remove_file(&dec).unwrap();
        only(dir.path(), &["in", "in.vlts"]);
    }

    // The server's settings: ChaCha20, small segments, an older key version,
    // read back from the header (and decrypted here).
    let transit = client.transit("transit");
    transit.rotate_key("files").await.unwrap();
    let plain = data(20_000);
    let opts = StreamOptions::new().algorithm(Algorithm::ChaCha20Poly1305).segment_size(4096).key_version(1);
    let mut stream = Vec::new();
    files.encrypt(std::io::Cursor::new(plain.clone()), &mut stream, &opts).await.unwrap();
    let header = vault_stream::Header::parse(&stream).unwrap().unwrap().0;
    assert_eq!(
        (header.algorithm(), header.segment_size(), header.key_version()),
        (Algorithm::ChaCha20Poly1305, 4096, 1)
    );
    let mut back = Vec::new();
    files.decrypt(std::io::Cursor::new(stream), &mut back, &StreamOptions::new().local()).await.unwrap();
    assert!(back == plain);

    // A subject's stream (server-encrypted) opens locally with the subject,
    // and nowhere once the subject is shredded.
    let input = write(dir.path(), "in", &plain);
    let (enc, dec) = (dir.path().join("in.vlts"), dir.path().join("out"));
    let ada = StreamOptions::new().subject("ada");
    files.encrypt_file(&input, &enc, &ada).await.unwrap();
    files.decrypt_file(&enc, &dec, &ada.clone().local()).await.unwrap();
    assert!(std::fs::read(&dec).unwrap() == plain);
    std::fs::remove_file(&dec).unwrap();
    files.decrypt_file(&enc, &dec, &ada).await.unwrap();
    std::fs::remove_file(&dec).unwrap();
    transit.delete_subject("files", "ada").await.unwrap();
    for opts in [ada.clone(), ada.clone().local()] {
        let e = files.decrypt_file(&enc, &dec, &opts).await.unwrap_err();
        clean(&e);
        only(dir.path(), &["in", "in.vlts"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_damage_fails_and_leaves_no_output() {
    let (_store, _srv, rc, client, _root) = vault().await;
    let files = client.transit("transit").stream("files");
    let dir = tempfile::tempdir().unwrap();
    let opts = StreamOptions::new().associated_data("file-7");
    let plain = data(1 << 20); // 16 full segments and a final one
    let input = write(dir.path(), "in", &plain);
    let enc = dir.path().join("in.vlts");
    files.encrypt_file(&input, &enc, &opts).await.unwrap();
    let stream = std::fs::read(&enc).unwrap();
    let out = dir.path().join("out");
    let used = header_len(&stream);
    let full = 65536 + 16;

    // Found before the answer starts (header, first segment, associated
    // data): the server's JSON error.
    for wrong in [StreamOptions::new().associated_data("file-8"), StreamOptions::new()] {
        let e = files.decrypt_file(&enc, &out, &wrong).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        clean(&e);
        only(dir.path(), &["in", "in.vlts"]);
    }
    // Found after the answer started: a flipped byte late in the stream,
    // a cut at a segment boundary, a cut inside a segment. The server
    // aborts its answer; nothing is kept.
    let mut late = stream.clone();
    late[stream.len() - 5000] ^= 0x01;
    let cases: [(&str, Vec<u8>); 3] = [
        ("flipped byte", late),
        ("cut at a segment boundary", stream[..used + 8 * full].to_vec()),
        ("cut inside a segment", stream[..used + 8 * full + 700].to_vec()),
    ];
    for (what, bad) in cases {
        let damaged = write(dir.path(), "bad.vlts", &bad);
        let e = files.decrypt_file(&damaged, &out, &opts).await.unwrap_err();
        assert!(matches!(e, Error::StreamAborted), "{what}: {e:?}");
        assert!(e.is_stream_damaged() && e.to_string().contains("truncated or tampered"), "{e}");
        clean(&e);
        only(dir.path(), &["bad.vlts", "in", "in.vlts"]);
        // Through the generic API the error is the same; what was written
        // before it is a prefix of the plaintext, never all of it.
        let mut partial = Vec::new();
        let e = files.decrypt(std::io::Cursor::new(bad), &mut partial, &opts).await.unwrap_err();
        assert!(matches!(e, Error::StreamAborted), "{what}: {e:?}");
        assert!(partial.len() < plain.len() && plain.starts_with(&partial), "{what}");
    }

    // A token whose policy lacks the stream paths: 403 before any body byte.
    let (s, b) = rc
        .call(
            "PUT",
            "sys/policies/acl/keys-only",
            Some(json!({"policy": "path \"transit/keys/*\" { capabilities = [\"read\"] }"})),
        )
        .await;
    assert!(s == 204 || s == 200, "{b}");
    let (s, b) = rc.post("auth/token/create", json!({"policies": ["keys-only"]})).await;
    assert_eq!(s, 200, "{b}");
    let weak = client.clone().with_token(b["auth"]["client_token"].as_str().unwrap());
    let weak_transit = weak.transit("transit");
    let weak_files = weak_transit.stream("files");
    let e = weak_files.encrypt_file(&input, &dir.path().join("new.vlts"), &opts).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    let e = weak_files.decrypt_file(&enc, &out, &opts).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    // An unknown key, and a stream of another key.
    let e = client.transit("transit").stream("nope").encrypt_file(&input, &out, &opts).await.unwrap_err();
    assert!(e.status().is_some_and(|s| s >= 400), "{e}");
    client.transit("transit").create_key("other", None).await.unwrap();
    // (checked here before anything is sent, as in local mode)
    let e = client.transit("transit").stream("other").decrypt_file(&enc, &out, &opts).await.unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("\"files\"")), "{e:?}");
    only(dir.path(), &["bad.vlts", "in", "in.vlts"]);
}

/// `vaultctl` with the server's address and `token`, its own HOME, and
/// `stdin` piped in when given.
fn vaultctl(addr: &str, token: &str, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(vault_e2e::vaultctl_bin());
    cmd.args(args)
        .env("VAULT_ADDR", addr)
        .env("VAULT_TOKEN", token)
        .env("HOME", home.path())
        .env_remove("VAULT_CACERT")
        .env_remove("VAULT_FORMAT")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn vaultctl");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Fed from a thread: vaultctl writes stdout while it reads stdin.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    child.wait_with_output().unwrap()
}

/// A failed run: exit code 1, one `Error:` line on stderr holding `needle`
/// and no plaintext.
fn failed(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("Error: ") && err.trim_end().lines().count() == 1, "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(!err.contains("CANARY"), "{err}");
}

/// A successful run: exit code 0 and the summary line on stderr.
fn succeeded(out: &std::process::Output, verb: &str, bytes_in: usize) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.starts_with(&format!("{verb} {bytes_in} bytes into ")) && err.contains(" MB/s)"), "{err}");
    assert!(!err.contains("CANARY"), "{err}");
}

/// `vaultctl transit encrypt-file` / `decrypt-file` in `mode_args` (`[]`
/// for server mode, `["--local"]`): round trips through files and through
/// stdin/stdout, failures with exit code 1 and no output file.
async fn cli_round_trips_and_failures(mode_args: &[&str]) {
    let (_store, srv, rc, _client, root) = vault().await;
    let addr = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let plain = data(300_000);
    std::fs::write(d("in"), &plain).unwrap();
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut all = vec!["transit"];
        all.extend_from_slice(args);
        all.extend_from_slice(mode_args);
        vaultctl(&addr, &root, &all, stdin)
    };

    let out = run(&["encrypt-file", &d("in"), &d("in.vlts"), "--key", "files", "-associated-data=doc-1"], None);
    succeeded(&out, "encrypted", plain.len());
    let stream = std::fs::read(d("in.vlts")).unwrap();
    assert!(stream.starts_with(b"VLTS"));
    let out = run(&["decrypt-file", &d("in.vlts"), &d("out"), "-key=files", "-associated-data=doc-1"], None);
    succeeded(&out, "decrypted", stream.len());
    assert!(std::fs::read(d("out")).unwrap() == plain);
    std::fs::remove_file(d("out")).unwrap();

    // stdin to stdout, both ways.
    let out = run(&["encrypt-file", "-", "-", "--key", "files", "--segment-size", "4096"], Some(&plain));
    succeeded(&out, "encrypted", plain.len());
    let piped = out.stdout;
    assert_eq!(vault_stream::Header::parse(&piped).unwrap().unwrap().0.segment_size(), 4096);
    let out = run(&["decrypt-file", "-", "-", "--key", "files"], Some(&piped));
    succeeded(&out, "decrypted", piped.len());
    assert!(out.stdout == plain);

    // Failures: exit 1, one line, and no output file left.
    let out = run(&["decrypt-file", &d("in.vlts"), &d("out"), "-key=files", "-associated-data=doc-2"], None);
    failed(&out, "");
    only(dir.path(), &["in", "in.vlts"]);
    let mut bad = stream.clone();
    let at = stream.len() - 100_000;
    bad[at] ^= 0x80;
    std::fs::write(d("bad.vlts"), &bad).unwrap();
    let out = run(&["decrypt-file", &d("bad.vlts"), &d("out"), "-key=files", "-associated-data=doc-1"], None);
    failed(&out, "tampered");
    only(dir.path(), &["bad.vlts", "in", "in.vlts"]);
    let used = header_len(&stream);
    std::fs::write(d("bad.vlts"), &stream[..used + 2 * (65536 + 16)]).unwrap();
    let out = run(&["decrypt-file", &d("bad.vlts"), &d("out"), "-key=files", "-associated-data=doc-1"], None);
    failed(&out, "truncated");
    only(dir.path(), &["bad.vlts", "in", "in.vlts"]);
    // To stdout: the failure says the output is incomplete.
    let out = run(&["decrypt-file", &d("bad.vlts"), "-", "-key=files", "-associated-data=doc-1"], None);
    failed(&out, "incomplete");
    // An unknown key is a failure (1), not "nothing there" (2).
    let out = run(&["encrypt-file", &d("in"), &d("out"), "-key=nope"], None);
    failed(&out, "");
    let out = run(&["decrypt-file", &d("missing"), &d("out"), "-key=files"], None);
    failed(&out, "missing");
    only(dir.path(), &["bad.vlts", "in", "in.vlts"]);

    // A token without the stream paths (nor data keys): refused, no output.
    let policy = "path \"transit/keys/*\" { capabilities = [\"read\"] }";
    let (s, b) = rc.call("PUT", "sys/policies/acl/keys-only", Some(json!({ "policy": policy }))).await;
    assert!(s == 204 || s == 200, "{b}");
    let (s, b) = rc.post("auth/token/create", json!({"policies": ["keys-only"]})).await;
    assert_eq!(s, 200, "{b}");
    let weak = b["auth"]["client_token"].as_str().unwrap().to_string();
    let (input, target) = (d("in"), d("denied.vlts"));
    let mut args = vec!["transit", "encrypt-file", &input as &str, &target, "--key", "files"];
    args.extend_from_slice(mode_args);
    let out = vaultctl(&addr, &weak, &args, None);
    failed(&out, "403");
    let target = d("denied.out");
    let in_vlts = d("in.vlts");
    let mut args =
        vec!["transit", "decrypt-file", &in_vlts as &str, &target, "--key", "files", "-associated-data=doc-1"];
    args.extend_from_slice(mode_args);
    let out = vaultctl(&addr, &weak, &args, None);
    failed(&out, "403");
    only(dir.path(), &["bad.vlts", "in", "in.vlts"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_local_mode() {
    cli_round_trips_and_failures(&["--local"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_server_mode() {
    cli_round_trips_and_failures(&[]).await;
}
