//! `engines::pg_role` against a real PostgreSQL (the harness's throwaway
//! cluster; these tests never skip).
//!
//! The cluster trusts every local login, so by default a password is never
//! checked. To check the passwords we set for real, `setup` puts one rule in
//! front of pg_hba.conf: members of the role `rot_scram_checked` must log in
//! with SCRAM-SHA-256. Roles under test join that group, and logging in with
//! the new (or the old, or an expired) password shows what PostgreSQL itself
//! accepts. The catalog (`pg_authid`) is checked as well.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use vault_e2e::PgCluster;
use vault_server::engines::generate::{CharClass, PasswordSpec};
use vault_server::engines::pg_role::{AdminConnection, CONNECT_FAILED, HostAllowList, PgRoleError};

/// Members must authenticate with SCRAM (see `setup`).
const CHECKED: &str = "rot_scram_checked";
/// A member with a known password, used to see when the rule is in force.
const PROBE: &str = "rot_scram_probe";
/// Generous: these calls are expected to succeed or fail on their own.
const T: Duration = Duration::from_secs(20);

static SETUP: Mutex<()> = Mutex::new(());

/// Install the SCRAM rule for `CHECKED` members in this cluster (once; every
/// test calls it, as a cluster may be restarted between tests) and wait until
/// the server applies it.
async fn setup(pg: &PgCluster) {
    {
        let _guard = SETUP.lock().unwrap();
        let hba = pg.psql("postgres", "SHOW hba_file").trim().to_string();
        let text = std::fs::read_to_string(&hba).unwrap();
        let rule = format!("host all +{CHECKED} 127.0.0.1/32 scram-sha-256\n");
        if !text.contains(&rule) {
            pg.psql("postgres", &format!("CREATE ROLE {CHECKED} NOLOGIN"));
            pg.psql("postgres", &format!("CREATE ROLE {PROBE} LOGIN PASSWORD 'probe' IN ROLE {CHECKED}"));
            // Rules are tried in order: ours must come before the catch-all trust lines.
            std::fs::write(&hba, format!("{rule}{text}")).unwrap();
            pg.psql("postgres", "SELECT pg_reload_conf()");
        }
    }
    let start = Instant::now();
    while login(pg, PROBE, "not-the-probe-password").await.is_ok() {
        assert!(start.elapsed() < Duration::from_secs(20), "pg_hba.conf reload not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    login(pg, PROBE, "probe").await.expect("probe logs in with its password");
}

/// Log in as `role` with `password` (to the `postgres` database, no TLS).
async fn login(pg: &PgCluster, role: &str, password: &str) -> Result<(), String> {
    let opts = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(pg.port())
        .database("postgres")
        .username(role)
        .password(password)
        .ssl_mode(PgSslMode::Disable);
    let conn = PgConnection::connect_with(&opts).await.map_err(|e| e.to_string())?;
    conn.close().await.map_err(|e| e.to_string())
}

/// A role name unique to this test run.
fn role(tag: &str) -> String {
    format!("rot_{tag}_{}", std::process::id())
}

/// Create `name` without login and without a password, in the SCRAM group.
fn create_role(pg: &PgCluster, name: &str) {
    pg.psql("postgres", &format!("CREATE ROLE {name} NOLOGIN IN ROLE {CHECKED}"));
}

/// One catalog column of a role, as psql prints it.
fn authid(pg: &PgCluster, name: &str, expr: &str) -> String {
    pg.psql("postgres", &format!("SELECT {expr} FROM pg_authid WHERE rolname = '{name}'")).trim().to_string()
}

/// `can login | SCRAM verifier | valid until infinity`.
fn state(pg: &PgCluster, name: &str) -> String {
    authid(pg, name, "rolcanlogin, rolpassword LIKE 'SCRAM-SHA-256$%', rolvaliduntil = 'infinity'")
}

/// The admin connection (user `postgres`: any password passes, it is trusted).
fn admin(pg: &PgCluster, extra: Value) -> AdminConnection {
    let mut data = json!({
        "host": "127.0.0.1",
        "port": pg.port(),
        "username": "postgres",
        "password": "admin-password-unchecked",
        "allowed_roles": "*",
    });
    for (k, v) in extra.as_object().unwrap() {
        data[k] = v.clone();
    }
    AdminConnection::from_secret(data.as_object().unwrap()).unwrap()
}

/// `set_password` with the test cluster's address allowed.
async fn set_password(
    conn: &AdminConnection,
    role: &str,
    password: &str,
    expire: Option<(&str, i64)>,
    timeout: Duration,
) -> Result<(), PgRoleError> {
    let allowed = HostAllowList::parse(&["127.0.0.1".to_string()]).unwrap();
    vault_server::engines::pg_role::set_password(conn, &allowed, role, password, expire, timeout).await
}

fn now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

fn password() -> String {
    PasswordSpec { length: 32, classes: vec![CharClass::Lower, CharClass::Upper, CharClass::Digit] }
        .generate()
        .to_string()
}

#[tokio::test]
async fn rotation_between_two_roles() {
    let pg = PgCluster::shared();
    setup(&pg).await;
    let (blue, green) = (role("blue"), role("green"));
    create_role(&pg, &blue);
    create_role(&pg, &green);
    assert_eq!(state(&pg, &blue), "f||");
    let conn = admin(&pg, json!({"allowed_roles": [blue, green], "sslmode": "prefer"}));

    // First rotation: blue gets a password, may log in, never expires.
    let pw1 = password();
    set_password(&conn, &blue, &pw1, None, T).await.unwrap();
    assert_eq!(state(&pg, &blue), "t|t|t");
    login(&pg, &blue, &pw1).await.unwrap();
    assert!(login(&pg, &blue, "wrong").await.is_err());
    let blue_verifier = authid(&pg, &blue, "rolpassword");

    // Second: green gets one, blue keeps working until the grace period ends.
    let pw2 = password();
    let grace_end = now() + 3600;
    set_password(&conn, &green, &pw2, Some((&blue, grace_end)), T).await.unwrap();
    assert_eq!(state(&pg, &green), "t|t|t");
    assert_eq!(authid(&pg, &blue, "extract(epoch FROM rolvaliduntil)::bigint"), grace_end.to_string());
    assert_eq!(authid(&pg, &blue, "rolpassword"), blue_verifier, "the previous role's password is kept");
    assert_eq!(authid(&pg, &blue, "rolcanlogin"), "t");
    login(&pg, &green, &pw2).await.unwrap();
    login(&pg, &blue, &pw1).await.unwrap();

    // Third: back to blue with a new password; green's grace is already over.
    let pw3 = password();
    let past = now() - 10;
    set_password(&conn, &blue, &pw3, Some((&green, past)), T).await.unwrap();
    assert_eq!(state(&pg, &blue), "t|t|t");
    assert_ne!(authid(&pg, &blue, "rolpassword"), blue_verifier);
    assert_eq!(authid(&pg, &green, "extract(epoch FROM rolvaliduntil)::bigint"), past.to_string());
    login(&pg, &blue, &pw3).await.unwrap();
    assert!(login(&pg, &blue, &pw1).await.is_err(), "the replaced password no longer works");
    assert!(login(&pg, &green, &pw2).await.is_err(), "an expired role's password no longer works");
}

#[tokio::test]
async fn the_password_never_reaches_the_server() {
    let pg = PgCluster::shared();
    setup(&pg).await;
    // An admin whose every statement the server logs, as an auditing DBA might set it.
    let admin_role = role("logged_admin");
    pg.psql("postgres", &format!("CREATE ROLE {admin_role} LOGIN CREATEROLE"));
    pg.psql("postgres", &format!("ALTER ROLE {admin_role} SET log_statement = 'all'"));
    let target = role("logged_target");
    create_role(&pg, &target);
    let conn = admin(&pg, json!({"username": admin_role, "allowed_roles": target}));

    let pw = password();
    set_password(&conn, &target, &pw, None, T).await.unwrap();
    login(&pg, &target, &pw).await.unwrap();
    assert_eq!(state(&pg, &target), "t|t|t");
    let stored = authid(&pg, &target, "rolpassword");
    let log = pg.log_text();
    let logged: Vec<&str> = log.lines().filter(|l| l.contains(&format!("ALTER ROLE \"{target}\""))).collect();
    assert_eq!(logged.len(), 1, "the statement is in the server log: {log}");
    // What travelled is the verifier PostgreSQL stored, not the password.
    assert!(logged[0].contains(&stored), "{}", logged[0]);
    assert!(!log.contains(&pw), "the password is in the server log");

    // A second rotation sends a new verifier (fresh salt) even for the same password.
    set_password(&conn, &target, &pw, None, T).await.unwrap();
    login(&pg, &target, &pw).await.unwrap();
    assert_ne!(authid(&pg, &target, "rolpassword"), stored);
    assert!(!pg.log_text().contains(&pw));
}

#[tokio::test]
async fn same_password_twice_is_fine() {
    let pg = PgCluster::shared();
    setup(&pg).await;
    let r = role("idem");
    create_role(&pg, &r);
    let conn = admin(&pg, json!({"allowed_roles": r}));
    let pw = password();
    set_password(&conn, &r, &pw, None, T).await.unwrap();
    let first = authid(&pg, &r, "rolpassword");
    // What a roll-forward after a crash does: apply the same value again.
    set_password(&conn, &r, &pw, None, T).await.unwrap();
    assert_eq!(state(&pg, &r), "t|t|t");
    // A new salt each time, so the verifier differs, but the password is the same.
    assert_ne!(authid(&pg, &r, "rolpassword"), first);
    login(&pg, &r, &pw).await.unwrap();
}

#[tokio::test]
async fn hostile_passwords_are_set_exactly() {
    let pg = PgCluster::shared();
    setup(&pg).await;
    let (target, victim) = (role("quoted"), role("victim"));
    create_role(&pg, &target);
    create_role(&pg, &victim);
    // A database whose sessions start with non-standard strings, where a
    // backslash escapes a quote: the worst case for a quoted literal.
    let db = pg.create_database();
    pg.psql("postgres", &format!("ALTER DATABASE {db} SET standard_conforming_strings = off"));
    assert_eq!(pg.psql(&db, "SHOW standard_conforming_strings").trim(), "off");
    let conn = admin(&pg, json!({"dbname": db, "allowed_roles": [target, victim]}));

    // Only the SCRAM verifier of this password reaches the SQL text now (base64,
    // `$`, `:`); the literal's escaping is covered by the `password_literals`
    // unit test. What remains to prove: a password full of quotes, backslashes,
    // dollar quoting and non-ASCII is set exactly (SASLprep and all), on a
    // database where a backslash would be an escape, and touches nothing else.
    let pw = format!(r#"x\'; ALTER ROLE {victim} SUPERUSER; -- "q" $$ é \\ '"#);
    set_password(&conn, &target, &pw, None, T).await.unwrap();
    assert_eq!(authid(&pg, &victim, "rolsuper"), "f");
    assert_eq!(state(&pg, &target), "t|t|t");
    login(&pg, &target, &pw).await.unwrap();
    assert!(login(&pg, &target, "x").await.is_err());
}

#[tokio::test]
async fn missing_roles_are_refused() {
    let pg = PgCluster::shared();
    setup(&pg).await;
    let (real, ghost) = (role("real"), role("ghost"));
    create_role(&pg, &real);
    let conn = admin(&pg, json!({}));
    let pw = password();

    match set_password(&conn, &ghost, &pw, None, T).await {
        Err(PgRoleError::Refused(m)) => {
            assert!(m.contains(&ghost) && m.contains("does not exist"), "{m}");
            assert!(!m.contains(&pw));
        }
        other => panic!("{other:?}"),
    }
    // A missing previous role fails the whole change: the new role is untouched.
    match set_password(&conn, &real, &pw, Some((&ghost, now())), T).await {
        Err(PgRoleError::Refused(m)) => assert!(m.contains(&ghost), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(state(&pg, &real), "f||");
}

#[tokio::test]
async fn a_refused_second_statement_rolls_back_the_first() {
    let pg = PgCluster::shared();
    setup(&pg).await;
    let (admin_role, app, boss) = (role("admin"), role("app"), role("boss"));
    // A non-superuser admin, as in production: it may alter ordinary roles,
    // not superusers.
    pg.psql("postgres", &format!("CREATE ROLE {admin_role} LOGIN CREATEROLE"));
    create_role(&pg, &app);
    pg.psql("postgres", &format!("CREATE ROLE {boss} SUPERUSER NOLOGIN"));
    let conn = admin(&pg, json!({"username": admin_role, "allowed_roles": [app, boss]}));
    let pw = password();

    let err = set_password(&conn, &app, &pw, Some((&boss, now() + 60)), T).await.unwrap_err();
    match &err {
        // A fixed text and the SQLSTATE (insufficient_privilege), not the server's words.
        PgRoleError::Refused(m) => assert!(m.contains("42501") && m.contains("superuser"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains(&pw) && !format!("{err:?}").contains(&pw));
    assert_eq!(state(&pg, &app), "f||", "the first ALTER ROLE was rolled back");
    assert_eq!(authid(&pg, &boss, "rolvaliduntil IS NULL"), "t");

    // Short passwords, one that occurs in ordinary words, and one full of
    // pattern characters: the message is not cut up around them (a cut
    // "sup[redacted]rus[redacted]r" would spell a password "e" out).
    for short in ["e", "r", "per", ".*", "$1", "(?i)E"] {
        let err = set_password(&conn, &app, short, Some((&boss, now() + 60)), T).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PgRoleError::Refused(_)), "{short}: {err:?}");
        assert!(text.contains("42501") && text.contains("superuser"), "{short}: {text}");
        assert!(!text.contains("[redacted]") && !text.contains("withheld"), "{short}: {text}");
    }
    assert_eq!(state(&pg, &app), "f||");

    // The same admin can rotate the ordinary role on its own.
    set_password(&conn, &app, &pw, None, T).await.unwrap();
    login(&pg, &app, &pw).await.unwrap();
}

#[tokio::test]
async fn unreachable_port_is_a_connect_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conn = AdminConnection::from_secret(
        json!({"host": "127.0.0.1", "port": port, "username": "postgres", "password": "pw", "allowed_roles": "app"})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let start = Instant::now();
    match set_password(&conn, "app", "new-secret-pw", None, Duration::from_secs(2)).await {
        Err(e @ PgRoleError::Connect) => assert_eq!(e.to_string(), CONNECT_FAILED),
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[tokio::test]
async fn silent_server_is_a_connect_failure_after_the_timeout() {
    // Accepts TCP connections (the kernel does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let conn = AdminConnection::from_secret(
        json!({"host": "127.0.0.1", "port": port, "username": "postgres", "password": "pw", "allowed_roles": "app", "sslmode": "disable"})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    let start = Instant::now();
    let r = set_password(&conn, "app", "pw2", None, Duration::from_millis(300)).await;
    // Not "did not answer in time": that would tell an open port from a closed one.
    assert!(matches!(r, Err(PgRoleError::Connect)), "{r:?}");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(3), "took {took:?}");
    drop(listener);
}

#[tokio::test]
async fn a_blocked_statement_times_out() {
    let pg = PgCluster::shared();
    setup(&pg).await;
    let r = role("locked");
    create_role(&pg, &r);
    // Another session changes the role and keeps its transaction open: our
    // ALTER ROLE of the same row waits for it, until statement_timeout.
    let mut holder = PgConnection::connect(&pg.url("postgres")).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER ROLE {r} CONNECTION LIMIT 5"))).execute(&mut *tx).await.unwrap();

    let conn = admin(&pg, json!({"allowed_roles": r}));
    let start = Instant::now();
    let res = set_password(&conn, &r, &password(), None, Duration::from_secs(1)).await;
    assert!(matches!(res, Err(PgRoleError::Timeout)), "{res:?}");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "took {took:?}");

    tx.rollback().await.unwrap();
    holder.close().await.unwrap();
    assert_eq!(state(&pg, &r), "f||");
}

#[tokio::test]
async fn admin_login_failures_are_the_same_connect_error() {
    let pg = PgCluster::shared();
    setup(&pg).await;
    // An admin that must really authenticate (it is in the SCRAM group).
    let admin_role = role("scram_admin");
    pg.psql("postgres", &format!("CREATE ROLE {admin_role} LOGIN CREATEROLE PASSWORD 'right-pw' IN ROLE {CHECKED}"));
    let target = role("target");
    create_role(&pg, &target);

    let conn = admin(&pg, json!({"username": admin_role, "password": "wrong-admin-pw", "allowed_roles": target}));
    match set_password(&conn, &target, "new-role-pw", None, T).await {
        // The cause (password authentication failed) is in the server log only.
        Err(e @ PgRoleError::Connect) => assert_eq!(e.to_string(), CONNECT_FAILED),
        other => panic!("{other:?}"),
    }
    let conn = admin(&pg, json!({"username": admin_role, "password": "right-pw", "allowed_roles": target}));
    set_password(&conn, &target, "new-role-pw", None, T).await.unwrap();
    login(&pg, &target, "new-role-pw").await.unwrap();

    let conn = admin(&pg, json!({"dbname": "no_such_database", "allowed_roles": target}));
    match set_password(&conn, &target, "x-pw-x", None, T).await {
        Err(e @ PgRoleError::Connect) => assert_eq!(e.to_string(), CONNECT_FAILED),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn sslmode_require_needs_a_tls_server() {
    // TLS support is built in (sqlx with rustls on ring); the test cluster has
    // ssl off, so `require` must fail to connect rather than fall back to plain.
    let pg = PgCluster::shared();
    setup(&pg).await;
    let r = role("tls");
    create_role(&pg, &r);
    let conn = admin(&pg, json!({"sslmode": "require", "allowed_roles": r}));
    match set_password(&conn, &r, &password(), None, T).await {
        Err(e @ PgRoleError::Connect) => assert_eq!(e.to_string(), CONNECT_FAILED),
        other => panic!("{other:?}"),
    }
    assert_eq!(state(&pg, &r), "f||");
    // `prefer` (and `disable`) connect in plain text to the same server.
    for mode in ["prefer", "disable"] {
        let conn = admin(&pg, json!({"sslmode": mode, "allowed_roles": r}));
        set_password(&conn, &r, &password(), None, T).await.unwrap();
    }
}

#[tokio::test]
async fn only_allowed_hosts_are_connected_to() {
    // Port 1 of the loopback address: nothing listens, but an attempt would
    // be a Connect error; NotAllowed proves none was made.
    let pg = PgCluster::shared();
    let conn = admin(&pg, json!({"allowed_roles": "app"}));
    for list in [
        vec![],
        vec!["10.0.0.0/8".to_string()],
        vec!["localhost".to_string()],
        vec![format!("127.0.0.1:{}", pg.port() + 1)],
    ] {
        let allowed = HostAllowList::parse(&list).unwrap();
        let r = vault_server::engines::pg_role::set_password(&conn, &allowed, "app", "pw", None, T).await;
        assert!(matches!(r, Err(PgRoleError::NotAllowed(_))), "{list:?}: {r:?}");
    }
    // The dev list (loopback) reaches the test cluster.
    setup(&pg).await;
    let r = role("dev");
    create_role(&pg, &r);
    let conn = admin(&pg, json!({"allowed_roles": r}));
    let pw = password();
    vault_server::engines::pg_role::set_password(&conn, HostAllowList::loopback(), &r, &pw, None, T).await.unwrap();
    login(&pg, &r, &pw).await.unwrap();
}
