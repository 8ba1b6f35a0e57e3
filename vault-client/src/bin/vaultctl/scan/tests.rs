//! Unit tests of `vaultctl scan`: each format, each rule, placeholders,
//! ignores, a realistic tree. Every secret value in them contains CANARY
//! (or is a token-shaped canary) and must never appear in a finding.

use super::parse::Format as F;
use super::*;

/// `(line, key, rule)` of each finding; asserts no finding's Debug holds `secret`.
fn found(format: F, text: &str) -> Vec<(usize, String, &'static str)> {
    let f = scan_text(format, text);
    let dbg = format!("{f:?}");
    assert!(!dbg.contains("CANARY"), "a value leaked into a finding: {dbg}");
    f.into_iter().map(|f| (f.line, f.key, f.rule)).collect()
}

fn keys(format: F, text: &str) -> Vec<String> {
    found(format, text).into_iter().map(|(_, k, _)| k).collect()
}

fn t(line: usize, key: &str, rule: &'static str) -> (usize, String, &'static str) {
    (line, key.to_string(), rule)
}

#[test]
fn dotenv_forms() {
    let text = "\
# comment PASSWORD=CANARY-comment-is-not-an-assignment
DB_PASSWORD=CANARY-1
export API_TOKEN='CANARY-2'
SECRET_KEY = \"CANARY 3 with spaces\"   # trailing comment
EMPTY_PASSWORD=
REF_PASSWORD=vault:secret/app#DB_PASSWORD
INTERP_SECRET=${FROM_ENV}
DOLLAR_TOKEN=$FROM_ENV
ANGLE_PASSWORD=<password>
MASKED_PASSWORD=********
CHANGEME_PASSWORD=changeme
PASSWORD_FILE=/run/secrets/db
TOKEN_TTL=3600
SESSION_TIMEOUT=30m
PWD=/home/app
IGNORED_SECRET=CANARY-4 # vaultctl:ignore
PRIVATE_KEY=\"-----BEGIN RSA PRIVATE KEY-----
MIIBOgIBAAJBAKCANARY
-----END RSA PRIVATE KEY-----\"
AFTER_PEM_TOKEN=CANARY-5
";
    assert_eq!(
        found(F::Dotenv, text),
        vec![
            t(2, "DB_PASSWORD", "password"),
            t(3, "API_TOKEN", "token"),
            t(4, "SECRET_KEY", "secret"),
            t(11, "CHANGEME_PASSWORD", "password"),
            t(17, "PRIVATE_KEY", "private-key"),
            t(20, "AFTER_PEM_TOKEN", "token"),
        ]
    );
}

#[test]
fn dotenv_with_bom_and_crlf() {
    let text = "\u{feff}DB_PASSWORD=CANARY-1\r\nAPI_TOKEN=\"CANARY-2\"\r\n";
    assert_eq!(found(F::Dotenv, text), vec![t(1, "DB_PASSWORD", "password"), t(2, "API_TOKEN", "token")]);
    let e = parse::entries(F::Dotenv, text);
    assert_eq!(value_of(F::Dotenv, text, &e[0]).as_str(), "CANARY-1", "no carriage return in the value");
}

#[test]
fn dockerfile_and_shell() {
    let text = "FROM python:3.12\nENV DB_PASSWORD=CANARY-1\nARG NPM_TOKEN\nRUN echo hi\n";
    assert_eq!(found(F::Shell, text), vec![t(2, "DB_PASSWORD", "password")]);
    let sh = "#!/bin/sh\nexport GITHUB_TOKEN=\"CANARY-2\"\nPGPASSWORD=$DB_PASSWORD psql\n";
    assert_eq!(found(F::Shell, sh), vec![t(2, "GITHUB_TOKEN", "token")]);
}

#[test]
fn json_nested_env_lists_and_labels() {
    let text = r#"{
  "database": {"host": "db", "port": 5432, "password": "CANARY-1"},
  "auth": {"jwtSecret": "CANARY-\"2\"", "issuer": "me", "enabled": true},
  "containerDefinitions": [{"environment": [{"name": "SMTP_PASSWORD", "value": "CANARY-3"},
                                            {"name": "LOG_LEVEL", "value": "debug"}]}],
  "i18n": {"password": "Password", "forgot_password": "Forgot your password?"},
  // a comment
  "tokens": ["CANARY-4"]
}"#;
    assert_eq!(
        found(F::Json, text),
        vec![
            t(2, "password", "password"),
            t(3, "jwtSecret", "secret"),
            t(4, "SMTP_PASSWORD", "password"),
            t(8, "tokens", "token")
        ]
    );
    let entries = parse::entries(F::Json, text);
    let pw = entries.iter().find(|e| e.key == "password").unwrap();
    assert_eq!(pw.path, vec!["database"]);
    let jwt = entries.iter().find(|e| e.key == "jwtSecret").unwrap();
    assert_eq!(value_of(F::Json, text, jwt).as_str(), "CANARY-\"2\"");
}

#[test]
fn yaml_compose_and_kubernetes() {
    let compose = "\
services:
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: CANARY-1   # inline comment
      POSTGRES_DB: app
  web:
    environment:
      - DB_PASSWORD=CANARY-2
      - \"API_TOKEN=CANARY-3\"
      - DB_HOST=db
      - REDIS_PASSWORD=${REDIS_PASSWORD}
    secrets: [db_password]
secrets:
  db_password:
    file: ./db_password.txt
";
    assert_eq!(
        found(F::Yaml, compose),
        vec![t(5, "POSTGRES_PASSWORD", "password"), t(9, "DB_PASSWORD", "password"), t(10, "API_TOKEN", "token")]
    );
    let k8s = "\
apiVersion: v1
kind: Secret
metadata:
  name: app
data:
  db-password: Q0FOQVJZLTQ=
  empty: \"\"
stringData:
  config: CANARY-5
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  template:
    spec:
      containers:
        - name: app
          env:
            - name: DB_PASSWORD
              value: \"CANARY-6\"
            - name: LOG_LEVEL
              value: info
            - name: FROM_SECRET
              valueFrom:
                secretKeyRef: {name: app, key: db-password}
          args:
            - --token=CANARY-7-ghp_CANARYabcdefghijklmnopqrstuvwxyz0123
---
kind: ConfigMap
data:
  tls.key: |
    -----BEGIN EC PRIVATE KEY-----
    MHcCAQEEICANARY
    -----END EC PRIVATE KEY-----
  plain: value
";
    assert_eq!(
        found(F::Yaml, k8s),
        vec![
            t(6, "db-password", "kubernetes-secret"),
            t(9, "config", "kubernetes-secret"),
            t(22, "DB_PASSWORD", "password"),
            t(29, "--token", "github-token"),
            t(34, "-", "private-key"),
        ]
    );
    let e = parse::entries(F::Yaml, k8s);
    assert_eq!(e.iter().find(|e| e.key == "db-password").unwrap().k8s, K8s::Data);
    assert_eq!(e.iter().find(|e| e.key == "config").unwrap().k8s, K8s::StringData);
}

#[test]
fn toml_and_ini() {
    let toml = "\
title = \"app\"
[database]
url = \"postgres://app:CANARY-1@db/app\"
password = 'CANARY-2'
pool = 5
[cache]
redis = { host = \"r\", password = \"CANARY-3\" }
[tls]
key = \"\"\"
-----BEGIN PRIVATE KEY-----
MIIEvQCANARY
-----END PRIVATE KEY-----\"\"\"
after_token = \"CANARY-4\"
";
    assert_eq!(
        found(F::Ini, toml),
        vec![
            t(3, "url", "url-credentials"),
            t(4, "password", "password"),
            t(7, "password", "password"),
            t(9, "key", "private-key"),
            t(13, "after_token", "token")
        ]
    );
    let e = parse::entries(F::Ini, toml);
    assert_eq!(e.iter().find(|e| e.line == 4).unwrap().path, vec!["database"]);
    assert_eq!(e.iter().find(|e| e.line == 7).unwrap().path, vec!["cache", "redis"]);
    let ini = "[client]\nuser = app\npassword = CANARY-5 ; comment\n; password = old\nhost=db\n";
    assert_eq!(found(F::Ini, ini), vec![t(3, "password", "password")]);
    let props = "db.password=CANARY-6\ndb.user=app\n";
    assert_eq!(found(F::Ini, props), vec![t(1, "password", "password")]);
}

#[test]
fn source_assignments() {
    let cases: &[(&str, &str)] = &[
        ("PASSWORD = 'CANARY'", "PASSWORD"),
        ("db_password: str = \"CANARY\"", "db_password"),
        ("self.api_key = \"CANARY\"", "api_key"),
        ("os.environ[\"DB_PASSWORD\"] = \"CANARY\"", "DB_PASSWORD"),
        ("conn = connect(password=\"CANARY\")", "password"),
        ("x = os.getenv('REDIS_PASSWORD', 'CANARY')", "REDIS_PASSWORD"),
        ("const apiKey = 'CANARY';", "apiKey"),
        ("let token: string = `CANARY`;", "token"),
        ("const cfg = { clientSecret: \"CANARY\" };", "clientSecret"),
        ("password := \"CANARY\"", "password"),
        ("var dbPassword string = \"CANARY\"", "dbPassword"),
        ("const API_KEY: &str = \"CANARY\";", "API_KEY"),
        ("pub static AUTH_TOKEN: &'static str = \"CANARY\";", "AUTH_TOKEN"),
        ("private static final String PASSWORD = \"CANARY\";", "PASSWORD"),
        ("val secretKey: String = \"CANARY\"", "secretKey"),
        ("$config['db_password'] = 'CANARY';", "db_password"),
        ("'db_password' => 'CANARY',", "db_password"),
        ("config.access_token = \"CANARY\"", "access_token"),
    ];
    for (line, key) in cases {
        assert_eq!(keys(F::Source(true), line), vec![key.to_string()], "{line}");
    }
    let clean = [
        "password = os.environ['DB_PASSWORD']",
        "password = get_password()",
        "if password == \"CANARY\":",
        "token = ''",
        "PASSWORD_VALIDATORS = []",
        "label = \"Password\"",
        "help_text = 'Enter your password'",
        "password_field = \"password\"",
        "tokenizer = \"CANARY-not-a-secret\"",
        "max_tokens = 1000",
        "public_key = \"CANARY-public\"",
        "TOKEN_URL = \"https://auth.example.com/token\"",
        "let re = 'a';",
        "token = f\"{prefix}-{suffix}\"",
        "token = \"hvs.\" + random_chars(24)",
        "assert_eq!(counter.get(\"secret/\", \"read\", 200), 2);",
        "k.mac(b\"token\", b\"x\")",
        "Table::Secrets => \"logical/\",",
        "const SECRET_ID: &str = \"role/{name}/secret-id\";",
        "url = f\"postgres://{user}:{password}@db/app\"",
        "client = new_client(\"hvs.notarealtoken0000000000000\")",
        "role = {\"token_policies\": \"app,extra\", \"secret_id_bound_cidrs\": \"127.0.0.0/8\"}",
    ];
    for line in clean {
        assert_eq!(found(F::Source(true), line), vec![], "{line}");
    }
}

/// Canary tokens of each known format (not real credentials).
const TOKENS: &[(&str, &str)] = &[
    ("AKIACANARY7ABCDEFGHI", "aws-access-key-id"),
    ("ASIACANARY7ABCDEFGHI", "aws-access-key-id"),
    ("ghp_CANARYabcdefghijklmnopqrstuvwxyz0123", "github-token"),
    ("github_pat_CANARY0123456789_abcdefghijklmnop", "github-token"),
    ("glpat-CANARY-abcdefghijklmn", "gitlab-token"),
    ("xoxb-CANARY-1234567890-abcdef", "slack-token"),
    ("sk_live_CANARYabcdefghijklmnop", "stripe-secret-key"),
    ("AIzaCANARY0123456789abcdefghijklmnopqrs", "google-api-key"),
    ("npm_CANARYabcdefghijklmnopqrstuvwxyz0123", "npm-token"),
    ("hvs.CANARYabcdefghijklmnopqrstuvwxyz", "vault-token"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.CANARYsignature_abc-def", "jwt"),
];

#[test]
fn token_formats() {
    for (token, rule) in TOKENS {
        // Anywhere: a value under an innocent name, or prose.
        assert_eq!(found(F::Dotenv, &format!("VALUE={token}\n")), vec![t(1, "VALUE", rule)], "{token}");
        assert_eq!(found(F::Text, &format!("use {token} to log in\n")), vec![t(1, "-", rule)], "{token}");
    }
    let near_misses = [
        "AKIACANARY7ABCDEFGH",   // too short
        "xAKIACANARY7ABCDEFGHI", // inside a word
        "ghp_short",             // too short
        "sk_live_",              // nothing after
        "eyJhbGciOi.notjwt",     // one part
        "AKIAIOSFODNN7EXAMPLE",  // AWS's documentation key
    ];
    for s in near_misses {
        assert_eq!(found(F::Text, &format!("note {s}\n")), vec![], "{s}");
    }
}

#[test]
fn prose_is_not_code() {
    let md = "\
Limits (`token_num_uses`, `secret_id_num_uses`) are checked.
## Root key (`core/root-key`, `seal/mod.rs`)
A PEM `-----BEGIN ... PRIVATE KEY-----` block; a URL `scheme://user:password@host`.
The answer holds `\"client_token\": \"hvs.c4Vb...\"`.
";
    assert_eq!(found(F::Text, md), vec![]);
    // Rust doc comments: backticks are not strings there either.
    assert_eq!(found(F::Source(false), "/// HMAC(`hmac_key`, `plaintext`) truncated\n"), vec![]);
    // Code in Markdown is still read.
    assert_eq!(found(F::Text, "    DB_PASSWORD=CANARY-md\n"), vec![t(1, "DB_PASSWORD", "password")]);
}

#[test]
fn urls_with_credentials() {
    let yes = [
        "postgres://app:CANARY@db:5432/app",
        "redis://:CANARY@cache:6379/0",
        "amqp://user:CANARY@rabbit/vhost",
        "https://deploy:CANARY@git.example.org/repo.git",
        "mongodb+srv://u:CANARY@cluster0.mongodb.net/db",
    ];
    for u in yes {
        assert_eq!(found(F::Text, &format!("see {u} here\n")), vec![t(1, "-", "url-credentials")], "{u}");
        assert_eq!(found(F::Dotenv, &format!("DSN={u}\n")), vec![t(1, "DSN", "url-credentials")], "{u}");
    }
    let no = [
        "postgres://app@db/app",
        "postgres://app:@db/app",
        "postgres://app:<password>@db/app",
        "postgres://${USER}:${PASSWORD}@db/app",
        "postgres://app:$DB_PASSWORD@db/app",
        "https://example.com/a:b@c",
        "mailto:someone@example.com",
    ];
    for u in no {
        assert_eq!(found(F::Text, &format!("see {u} here\n")), vec![], "{u}");
        assert_eq!(found(F::Dotenv, &format!("DSN={u}\n")), vec![], "{u}");
    }
    assert_eq!(
        found(F::Json, r#"{"ConnectionStrings": {"Main": "Server=db;Database=app;User Id=sa;Password=CANARY;"}}"#),
        vec![t(1, "Main", "connection-string")]
    );
}

#[test]
fn name_rules() {
    let yes = [
        ("DB_PASSWORD", "password"),
        ("dbPassword", "password"),
        ("MYSQL_PWD", "password"),
        ("DB_PASS", "password"),
        ("gpg_passphrase", "password"),
        ("CLIENT_SECRET", "secret"),
        ("secretKeyBase", "secret"),
        ("GITHUB_TOKEN", "token"),
        ("accessToken", "token"),
        ("AWS_CREDENTIALS", "credential"),
        ("API_KEY", "key"),
        ("apikey", "key"),
        ("STRIPE_KEY", "key"),
        ("privateKey", "key"),
        ("encryption-key", "key"),
    ];
    for (n, r) in yes {
        assert_eq!(rules::name_rule(n), Some(r), "{n}");
    }
    let no = [
        "PWD",
        "OLDPWD",
        "PASSWORD_FILE",
        "TOKEN_TTL",
        "SECRET_NAME",
        "token_url",
        "tokenizer",
        "PUBLIC_KEY",
        "primary_key",
        "sort_key",
        "cache_key",
        "KEY",
        "monkey",
        "HOST",
        "USER",
        "passenger",
        "compass_heading",
        "max_tokens",
        "token_type",
        "secret_ref",
        "password_min_length",
    ];
    for n in no {
        assert_eq!(rules::name_rule(n), None, "{n}");
    }
}

#[test]
fn placeholders() {
    let yes = [
        "",
        "  ",
        "${DB_PASSWORD}",
        "$DB_PASSWORD",
        "{{ .Values.password }}",
        "%(password)s",
        "<password>",
        "<your token here>",
        "***",
        "xxxxxxxx",
        "XXXX-XXXX",
        "...",
        "vault:secret/app#password",
        "your-api-key",
        "your_password_here",
        "insert-token-here",
        "REDACTED",
        "[REDACTED]",
        "none",
        "null",
        "example",
        "AKIAIOSFODNN7EXAMPLE",
        "ENC[AES256_GCM,data:abc]",
        "$ANSIBLE_VAULT;1.1;AES256",
        "%DB_PASSWORD%",
        "{password}",
    ];
    for v in yes {
        assert!(rules::is_placeholder(v), "{v:?}");
    }
    // Weak passwords are still hard-coded passwords.
    let no = ["changeme", "password123", "admin", "secret", "hunter2", "s3cr3t!"];
    for v in no {
        assert!(!rules::is_placeholder(v), "{v:?}");
    }
}

#[test]
fn entropy_finds_random_values_not_identifiers() {
    use base64::Engine as _;
    use rand::RngExt as _;
    let mut rng = rand::rng();
    for (len, min_hits) in [(20usize, 85), (24, 90), (32, 93), (44, 95)] {
        let hits = (0..100)
            .filter(|_| {
                let mut b = [0u8; 48];
                rng.fill(&mut b[..]);
                let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
                rules::is_high_entropy(&s[..len])
            })
            .count();
        assert!(hits >= min_hits, "{len}: {hits}/100");
    }
    // Hex digests: a random 40-digit string now and then has too few distinct
    // digits to pass (seen in CI: 1 in a few hundred), as for base64 above.
    let hex_hits = (0..100)
        .filter(|_| {
            let mut b = [0u8; 20];
            rng.fill(&mut b[..]);
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            rules::is_high_entropy(&hex)
        })
        .count();
    assert!(hex_hits >= 95, "hex: {hex_hits}/100");
    let not = [
        "my_application_name_here",
        "ThisIsAVeryLongIdentifierName",
        "eu-west-1.compute.internal",
        "1.2.3-beta.4+build.567890",
        "application/x-www-form-urlencoded",
        "com.example.service.Main",
        "123e4567-e89b-12d3-a456-426614174000",
        "short1A",
        "postgres_user_for_app_01",
        "Hello world this is a sentence",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ];
    for s in not {
        assert!(!rules::is_high_entropy(s), "{s}");
    }
    // Under a neutral name: found; under a digest's name: not.
    let v = "Zx8Kq2mN4pR7tV1wY3bD6fH9jL0cE5gA";
    assert_eq!(found(F::Dotenv, &format!("SIGNING={v}\n")), vec![t(1, "SIGNING", "entropy")]);
    assert_eq!(found(F::Dotenv, &format!("BUILD_SHA={v}\nIMAGE_ID={v}\n")), vec![]);
}

#[test]
fn ignore_globs() {
    let mut ig = Ignore::default();
    for p in ["# comment", "", "*.lock.json", "fixtures/", "docs/**/*.md", "/top.env", "secret?.yaml"] {
        ig.add(p);
    }
    assert!(ig.matches("a.lock.json") && ig.matches("x/y/a.lock.json"));
    assert!(ig.matches("fixtures") && ig.matches("src/fixtures"));
    assert!(ig.matches("docs/a/b/c.md") && ig.matches("docs/c.md") && !ig.matches("docs/c.txt"));
    assert!(ig.matches("top.env") && !ig.matches("sub/top.env"));
    assert!(ig.matches("k8s/secret1.yaml") && !ig.matches("k8s/secret12.yaml"));
    assert!(!ig.matches("app/.env") && !ig.matches("comment"));
}

#[test]
fn glob_matches_like_the_backtracking_reference() {
    // The old recursive matcher: the specification, exponential on purpose.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) if rest.first() == Some(&b'*') => {
                let rest = rest[1..].strip_prefix(b"/").unwrap_or(&rest[1..]);
                (0..=s.len()).any(|i| reference(rest, &s[i..]))
            }
            Some((b'*', rest)) => {
                (0..=s.len()).take_while(|i| *i == 0 || s[i - 1] != b'/').any(|i| reference(rest, &s[i..]))
            }
            Some((b'?', rest)) => s.first().is_some_and(|c| *c != b'/') && reference(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
        }
    }
    let patterns = [
        "",
        "*",
        "**",
        "?",
        "a",
        "a*",
        "*a",
        "a*b",
        "a?b",
        "**/b",
        "a/**",
        "a/**/b",
        "a/*/b",
        "*/*",
        "***",
        "**b",
        "a**/",
        "*.md",
        "docs/**/*.md",
        "?*?",
        "**/**",
        "a/**/**/b",
    ];
    let names =
        ["", "a", "b", "ab", "a/b", "aab", "a/x/b", "a/x/y/b", "x.md", "docs/c.md", "docs/a/b/c.md", "a/", "/b", "axb"];
    for p in patterns {
        for s in names {
            assert_eq!(glob(p.as_bytes(), s.as_bytes()), reference(p.as_bytes(), s.as_bytes()), "{p:?} vs {s:?}");
        }
    }
}

#[test]
fn pathological_ignore_patterns_finish() {
    // Exponential for a backtracking matcher (red-team finding: a one-line
    // ignore file stalled the scan). The guard thread fails the test
    // instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ig = Ignore::default();
        ig.add("*a*a*a*a*a*a*a*b");
        ig.add("**/**/**/**/**/**/**/**/z");
        ig.add(&format!("{}b", "*a".repeat(200)));
        let long_name = "a".repeat(200);
        let deep = format!("x{}/f", "/a".repeat(25));
        let deep_z = format!("x{}/z", "/a".repeat(25));
        let _ = tx.send((ig.matches(&long_name), ig.matches(&deep), ig.matches(&deep_z), ig.matches("aaaaaaab")));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("glob matching took more than 10 s");
    assert_eq!(got, (false, false, true, true));
}

#[test]
fn a_realistic_tree() {
    let dir = tempfile::tempdir().unwrap();
    let files: &[(&str, &[u8])] = &[
        (".env", b"DB_PASSWORD=CANARY-1\nDEBUG=1\n"),
        (".env.example", b"DB_PASSWORD=<your password>\nAPI_KEY=your-api-key-here\n"),
        ("app/settings.py", b"SECRET_KEY = 'CANARY-2'\nDEBUG = True\n"),
        ("docker-compose.yml", b"services:\n  db:\n    environment:\n      POSTGRES_PASSWORD: CANARY-3\n"),
        ("deploy/secret.yaml", b"kind: Secret\ndata:\n  password: Q0FOQVJZ\n"),
        ("config.json", b"{\"smtp\": {\"password\": \"CANARY-4\"}}\n"),
        ("README.md", b"Set `DATABASE_URL=postgres://app:<password>@localhost/app` in .env:\n\n    DB_PASSWORD=<your database password>\n"),
        ("logo.png", b"\x89PNG\r\n\x1a\n\0\0DB_PASSWORD=CANARY-5"),
        ("target/debug/build.env", b"DB_PASSWORD=CANARY-6\n"),
        (".git/config", b"token = \"CANARY-7\"\n"),
        ("package-lock.json", b"{\"integrity\": \"sha512-CANARY8abcdefghijklmnopqrstuvwxyz0123456789\"}\n"),
    ];
    for (name, body) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let mut scan = Scan::default();
    scan.walk_dir(dir.path(), "", &Ignore::default(), 1 << 20);
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    let got: Vec<String> = scan
        .findings
        .iter()
        .map(|f| {
            let rel = Path::new(&f.file).strip_prefix(dir.path()).unwrap().display().to_string();
            format!("{rel}:{}: {} ({})", f.line, f.key, f.rule)
        })
        .collect();
    assert_eq!(
        got,
        [
            ".env:1: DB_PASSWORD (password)",
            "app/settings.py:1: SECRET_KEY (secret)",
            "config.json:1: password (password)",
            "deploy/secret.yaml:3: password (kubernetes-secret)",
            "docker-compose.yml:4: POSTGRES_PASSWORD (password)",
        ]
    );
    assert_eq!((scan.files, scan.skipped), (7, 1), "7 text files read, the PNG skipped");
    assert!(!format!("{:?}", scan.findings).contains("CANARY"));
}

#[test]
fn format_detection() {
    let cases = [
        (".env", F::Dotenv),
        (".env.production", F::Dotenv),
        ("prod.env", F::Dotenv),
        ("config.json", F::Json),
        ("docker-compose.yml", F::Yaml),
        ("deploy.yaml", F::Yaml),
        ("Cargo.toml", F::Ini),
        ("setup.cfg", F::Ini),
        ("app.properties", F::Ini),
        ("settings.py", F::Source(false)),
        ("main.go", F::Source(true)),
        ("lib.rs", F::Source(false)),
        ("Dockerfile", F::Shell),
        ("run.sh", F::Shell),
        ("README.md", F::Text),
        (".pypirc", F::Ini),
        (".aws/credentials", F::Ini),
    ];
    for (name, f) in cases {
        assert_eq!(parse::detect(Path::new(name)), f, "{name}");
    }
}
