//! Unit tests of `vaultctl import`'s offline parts: what moves under which
//! name, the rewrite per format (the result still parses and reads back as
//! the references), the target's syntax, the atomic write.

use std::os::unix::fs::PermissionsExt as _;

use super::*;

/// The moves `import` makes for `text` read as `format` (all findings with a value).
fn moves(format: parse::Format, text: &str) -> Vec<Move> {
    scanner::scan_text(format, text)
        .into_iter()
        .filter_map(|f| f.entry)
        .filter(|e| e.k8s != K8s::Data)
        .map(|e| Move { field: e.key.clone(), value: scanner::value_of(format, text, &e), entry: e, status: "new" })
        .collect()
}

#[test]
fn dotenv_rewrite_keeps_everything_else() {
    let text =
        "# db\nDB_HOST=db\nDB_PASSWORD=CANARY-1 # the password\nexport API_TOKEN='CANARY-2'\nKEY=\"CANARY\\n3\"\n";
    let m = moves(parse::Format::Dotenv, text);
    let names: Vec<&str> = m.iter().map(|m| m.field.as_str()).collect();
    assert_eq!(names, ["DB_PASSWORD", "API_TOKEN"]);
    assert_eq!(m[0].value.as_str(), "CANARY-1");
    let out = rewrite(parse::Format::Dotenv, text, &m, "secret/app");
    assert_eq!(
        out,
        "# db\nDB_HOST=db\nDB_PASSWORD=vault:secret/app#DB_PASSWORD # the password\n\
         export API_TOKEN='vault:secret/app#API_TOKEN'\nKEY=\"CANARY\\n3\"\n"
    );
    // Escapes of double-quoted values are decoded (what python-dotenv hands the app).
    let pem = "TLS_PRIVATE_KEY=\"-----BEGIN PRIVATE KEY-----\\nMIIECANARY\\n-----END PRIVATE KEY-----\"\n";
    let m = moves(parse::Format::Dotenv, pem);
    assert_eq!(m[0].value.as_str(), "-----BEGIN PRIVATE KEY-----\nMIIECANARY\n-----END PRIVATE KEY-----");
    assert_eq!(rewrite(parse::Format::Dotenv, pem, &m, "s/a"), "TLS_PRIVATE_KEY=\"vault:s/a#TLS_PRIVATE_KEY\"\n");
}

#[test]
fn json_rewrite_is_valid_json() {
    let text =
        "{\n  \"db\": {\"password\": \"CANARY-\\\"1\\\"\", \"port\": 5432},\n  \"api\": {\"token\": \"CANARY-2\"}\n}\n";
    let m = moves(parse::Format::Json, text);
    assert_eq!(m[0].value.as_str(), "CANARY-\"1\"");
    let out = rewrite(parse::Format::Json, text, &m, "secret/app");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        json!({"db": {"password": "vault:secret/app#password", "port": 5432}, "api": {"token": "vault:secret/app#token"}})
    );
}

#[test]
fn yaml_rewrite_quotes_plain_scalars() {
    let text = "services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: CANARY-1 # pw\n      USER: app\n  web:\n    environment:\n      - API_TOKEN=CANARY-2\n      - 'DB_PASSWORD=CANARY-3'\n";
    let m = moves(parse::Format::Yaml, text);
    let out = rewrite(parse::Format::Yaml, text, &m, "secret/app");
    assert_eq!(
        out,
        "services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: \"vault:secret/app#POSTGRES_PASSWORD\" # pw\n      USER: app\n  web:\n    environment:\n      - API_TOKEN=vault:secret/app#API_TOKEN\n      - 'DB_PASSWORD=vault:secret/app#DB_PASSWORD'\n"
    );
    assert!(parses(parse::Format::Yaml, &out));
    let v: serde_norway::Value = serde_norway::from_str(&out).unwrap();
    assert_eq!(
        v["services"]["web"]["environment"][0],
        serde_norway::Value::from("API_TOKEN=vault:secret/app#API_TOKEN")
    );
    assert_eq!(
        v["services"]["db"]["environment"]["POSTGRES_PASSWORD"],
        serde_norway::Value::from("vault:secret/app#POSTGRES_PASSWORD")
    );
}

#[test]
fn toml_rewrite() {
    let text = "[db]\npassword = \"CANARY-1\"\n[cache]\ntoken = 'CANARY-2'\n";
    let m = moves(parse::Format::Ini, text);
    assert_eq!(
        rewrite(parse::Format::Ini, text, &m, "kv/app"),
        "[db]\npassword = \"vault:kv/app#password\"\n[cache]\ntoken = 'vault:kv/app#token'\n"
    );
}

#[test]
fn targets_and_names() {
    assert_eq!(split_target("secret/myapp").unwrap(), ("secret".into(), "myapp".into()));
    assert_eq!(split_target("/secret/team/app/").unwrap(), ("secret".into(), "team/app".into()));
    for bad in ["secret", "", "secret//app", "secret/app#KEY"] {
        assert!(split_target(bad).unwrap_err().to_string().contains("MOUNT/PATH"), "{bad}");
    }
    assert_eq!(env_name("database.password"), "DATABASE_PASSWORD");
    assert_eq!(env_name("apiKey"), "APIKEY");
    assert!(!parses(parse::Format::Json, "{\"a\": }"));
    assert!(parses(parse::Format::Yaml, "a: 1\n---\nb: 2\n"));
}

#[test]
fn atomic_write_keeps_the_mode_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(".env");
    std::fs::write(&p, "A=1\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let like = check_rewritable(&p).unwrap();
    write_atomic(&p, "A=2\n", Some(&like)).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "A=2\n");
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(write_atomic(&dir.path().join("missing/dir/x"), "", None).is_err());
}

#[test]
fn wipe_clears_string_values() {
    let mut m = Map::new();
    m.insert("a".into(), json!("CANARY"));
    m.insert("n".into(), json!(1));
    wipe(&mut m);
    assert_eq!(m["a"], json!(""));
    assert_eq!(m["n"], json!(1));
}

#[test]
fn links_are_refused_and_the_owner_is_kept() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.env");
    std::fs::write(&real, "A=CANARY\n").unwrap();
    let link = dir.path().join(".env");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let e = check_rewritable(&link).unwrap_err().to_string();
    assert!(e.contains("symbolic link") && e.contains("real.env") && e.contains("--env-template"), "{e}");
    let hard = dir.path().join("hard.env");
    std::fs::hard_link(&real, &hard).unwrap();
    let e = check_rewritable(&real).unwrap_err().to_string();
    assert!(e.contains("2 hard links") && e.contains("-samefile"), "{e}");
    std::fs::remove_file(&hard).unwrap();
    let like = check_rewritable(&real).unwrap();
    // Swapped for a link after the check: refused at the rename.
    std::fs::remove_file(&real).unwrap();
    std::fs::write(dir.path().join("other"), "A=1\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("other"), &real).unwrap();
    assert!(write_atomic(&real, "A=2\n", Some(&like)).is_err());
    assert_eq!(std::fs::read_to_string(dir.path().join("other")).unwrap(), "A=1\n");
    std::fs::remove_file(&real).unwrap();

    // The owner (as root: another user's file) and mode are kept.
    let owned = dir.path().join("owned.env");
    std::fs::write(&owned, "A=1\n").unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o640)).unwrap();
    let root = rustix::process::geteuid().is_root();
    if root {
        std::os::unix::fs::chown(&owned, Some(65534), Some(65534)).unwrap();
    }
    let before = check_rewritable(&owned).unwrap();
    write_atomic(&owned, "A=2\n", Some(&before)).unwrap();
    let after = std::fs::metadata(&owned).unwrap();
    assert_eq!(std::fs::read_to_string(&owned).unwrap(), "A=2\n");
    assert_eq!((after.uid(), after.gid(), after.mode() & 0o7777), (before.uid(), before.gid(), 0o640));
    if root {
        assert_eq!(after.uid(), 65534);
    }
}
