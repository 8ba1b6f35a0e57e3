//! Set a PostgreSQL role's password through an admin connection, for the
//! `postgresql` rotation generator.
//!
//! The admin connection's settings are themselves a KV secret
//! ([`AdminConnection::from_secret`]). [`set_password`] opens one short-lived
//! connection, changes the role (and optionally expires the previous one) in
//! a single transaction, and closes it.
//!
//! `ALTER ROLE` takes no bind parameters, so the statement text is built
//! here: the role name is validated against a strict pattern *and* quoted as
//! an identifier. The password itself never reaches PostgreSQL: the statement
//! carries a SCRAM-SHA-256 verifier computed here (RFC 5802/7677, with
//! `postgres-protocol`, the rust-postgres project's implementation of what
//! libpq's `PQencryptPasswordConn` does), which PostgreSQL stores as is
//! whatever its `password_encryption`. So neither `log_statement`,
//! `pg_stat_activity` nor a failing statement in the server log shows the
//! password. The verifier is still sent as a standard-conforming string
//! literal after `standard_conforming_strings` is forced on for the
//! transaction (see [`password_literal`]), although it only ever holds
//! base64 characters, `$` and `:`. Neither the password nor the verifier
//! appears in an error, a log line or `Debug` output: sqlx's statement
//! logging is turned off for this connection, and every message taken from
//! the database has any occurrence of a secret cut out.
//!
//! The verifier is secret-derived (4,096 PBKDF2 iterations, random 16-byte
//! salt): like any stored password hash it allows an offline guess, which the
//! generated passwords' length makes hopeless. Missing roles, the likeliest
//! failure, are detected with a parameterised query first, so that case never
//! sends even the verifier in a statement that fails.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _};
use zeroize::{Zeroize as _, Zeroizing};

/// PostgreSQL's default port.
pub const DEFAULT_PORT: u16 = 5432;
/// Database used when the secret names none.
pub const DEFAULT_DBNAME: &str = "postgres";
/// Longest role name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_ROLE_NAME: usize = 63;
/// SQLSTATE `query_canceled`: what `statement_timeout` raises.
const QUERY_CANCELED: &str = "57014";
/// Shown instead of a secret.
const REDACTED: &str = "[redacted]";

/// Why a role's password could not be set. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum PgRoleError {
    /// The connection secret or the arguments are invalid (a 400); nothing
    /// was sent to the database.
    #[error("invalid PostgreSQL connection: {0}")]
    InvalidConnection(String),
    /// The database cannot be reached, or refused the admin's login, or the
    /// connection broke mid-way.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    /// The database refused a statement (e.g. the role does not exist, or the
    /// admin may not alter it). The transaction was rolled back.
    #[error("PostgreSQL refused the change: {0}")]
    Refused(String),
    /// Connecting or a statement took longer than the timeout. Whether the
    /// transaction committed is unknown: re-applying the same password is safe.
    #[error("PostgreSQL did not answer in time")]
    Timeout,
}

/// How the admin connection uses TLS (libpq's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// TLS when the server offers it, plain otherwise.
    Prefer,
    /// TLS or fail. As in libpq, the server's certificate is not verified:
    /// this protects against passive eavesdropping only.
    Require,
}

impl SslMode {
    /// The name used in the connection secret.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
        }
    }

    fn to_sqlx(self) -> PgSslMode {
        match self {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
        }
    }
}

/// An admin connection, as read from a KV secret.
#[derive(Clone)]
pub struct AdminConnection {
    /// Host name or IP address (TCP only; Unix socket paths are refused).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database to connect to.
    pub dbname: String,
    /// Admin role (needs `CREATEROLE`, or superuser for superuser roles).
    pub username: String,
    /// Admin password.
    pub password: Zeroizing<String>,
    /// TLS use.
    pub sslmode: SslMode,
    /// Roles this connection may change; `"*"` allows any.
    pub allowed_roles: Vec<String>,
}

impl std::fmt::Debug for AdminConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConnection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("username", &self.username)
            .field("password", &REDACTED)
            .field("sslmode", &self.sslmode)
            .field("allowed_roles", &self.allowed_roles)
            .finish()
    }
}

impl AdminConnection {
    /// Read a connection from a KV secret's data: `host` (required), `port`
    /// (default 5432; a number or a numeric string), `dbname` (default
    /// `postgres`), `username` (required), `password` (required, may be
    /// empty), `sslmode` (`disable`, `prefer` (default) or `require`) and
    /// `allowed_roles` (required: a comma-separated string or a JSON array of
    /// role names; `"*"` allows any role). Error messages name fields, never
    /// their values.
    pub fn from_secret(data: &Map<String, Value>) -> Result<Self, PgRoleError> {
        let invalid = PgRoleError::InvalidConnection;
        let host = required_string(data, "host")?;
        // A leading '/' would make the driver use a Unix socket on the vault's
        // own host, reachable with the vault's OS identity: only TCP is allowed.
        if host.is_empty()
            || host.len() > 253
            || host.starts_with('/')
            || host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("field \"host\" must be a host name or an IP address".into()));
        }
        let port = match data.get("port") {
            None | Some(Value::Null) => DEFAULT_PORT,
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
            Some(Value::String(s)) => s.trim().parse::<u16>().unwrap_or(0),
            Some(_) => 0,
        };
        if port == 0 {
            return Err(invalid("field \"port\" must be a port number (1-65535)".into()));
        }
        let dbname = match data.get("dbname") {
            None | Some(Value::Null) => DEFAULT_DBNAME.to_string(),
            Some(_) => required_string(data, "dbname")?,
        };
        if dbname.is_empty() {
            return Err(invalid("field \"dbname\" must not be empty".into()));
        }
        let username = required_string(data, "username")?;
        if username.is_empty() {
            return Err(invalid("field \"username\" must not be empty".into()));
        }
        let password = match data.get("password") {
            Some(Value::String(s)) if !s.contains('\0') => Zeroizing::new(s.clone()),
            Some(Value::String(_)) => {
                return Err(invalid("field \"password\" must not contain a NUL character".into()));
            }
            None | Some(Value::Null) => return Err(invalid("field \"password\" is required".into())),
            Some(_) => return Err(invalid("field \"password\" must be a string".into())),
        };
        let sslmode = match data.get("sslmode") {
            None | Some(Value::Null) => SslMode::Prefer,
            Some(Value::String(s)) => match s.as_str() {
                "disable" => SslMode::Disable,
                "prefer" => SslMode::Prefer,
                "require" => SslMode::Require,
                _ => return Err(invalid("field \"sslmode\" must be disable, prefer or require".into())),
            },
            Some(_) => return Err(invalid("field \"sslmode\" must be a string".into())),
        };
        let allowed_roles = parse_allowed_roles(data.get("allowed_roles"))?;
        Ok(AdminConnection { host, port, dbname, username, password, sslmode, allowed_roles })
    }

    /// May this connection change `role`? Names compare exactly (they are
    /// quoted in SQL, so `App` and `app` are different roles).
    pub fn allows(&self, role: &str) -> bool {
        self.allowed_roles.iter().any(|r| r == "*" || r == role)
    }

    fn options(&self) -> PgConnectOptions {
        // `new_without_pgpass`: the secret is the only source of the password.
        PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .database(&self.dbname)
            .username(&self.username)
            .password(&self.password)
            .ssl_mode(self.sslmode.to_sqlx())
            .application_name("vault-server rotation")
            // sqlx would otherwise log statement text, and ours holds a password.
            .disable_statement_logging()
    }
}

/// A required string field (present, not null, a string, no NUL character).
fn required_string(data: &Map<String, Value>, field: &str) -> Result<String, PgRoleError> {
    match data.get(field) {
        Some(Value::String(s)) if s.contains('\0') => {
            Err(PgRoleError::InvalidConnection(format!("field \"{field}\" must not contain a NUL character")))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(PgRoleError::InvalidConnection(format!("field \"{field}\" is required"))),
        Some(_) => Err(PgRoleError::InvalidConnection(format!("field \"{field}\" must be a string"))),
    }
}

/// `allowed_roles`: a comma-separated string or an array of strings, each
/// `*` or a valid role name; at least one.
fn parse_allowed_roles(v: Option<&Value>) -> Result<Vec<String>, PgRoleError> {
    let invalid = PgRoleError::InvalidConnection;
    let items: Vec<String> = match v {
        Some(Value::String(s)) => s.split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|r| r.as_str().map(|r| r.trim().to_string()))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("field \"allowed_roles\" must list role names as strings".into()))?,
        None | Some(Value::Null) => return Err(invalid("field \"allowed_roles\" is required".into())),
        Some(_) => return Err(invalid("field \"allowed_roles\" must be a string or a list of strings".into())),
    };
    if items.is_empty() {
        return Err(invalid("field \"allowed_roles\" must name at least one role, or \"*\"".into()));
    }
    for r in &items {
        if r != "*" {
            validate_role_name(r).map_err(|e| invalid(format!("field \"allowed_roles\": {e}")))?;
        }
    }
    Ok(items)
}

/// Check a role name: 1 to 63 bytes of `[A-Za-z_][A-Za-z0-9_$]*`, not
/// starting with `pg_` (reserved by PostgreSQL for its predefined roles).
/// The strict pattern is a second line of defence behind identifier quoting.
pub fn validate_role_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_ROLE_NAME {
        return Err(format!("role name must be 1 to {MAX_ROLE_NAME} characters long"));
    }
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') {
        return Err(format!(
            "invalid role name \"{}\": letters, digits, '_' and '$' only, not starting with a digit or '$'",
            name.escape_default()
        ));
    }
    if name.len() >= 3 && name[..3].eq_ignore_ascii_case("pg_") {
        return Err(format!("invalid role name \"{name}\": names starting with \"pg_\" are reserved"));
    }
    Ok(())
}

/// `name` as a quoted SQL identifier: in double quotes, any `"` doubled.
/// Quoting also keeps the exact case, and makes keywords (`user`) usable.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Append `value` to `out` as a standard-conforming SQL string literal:
/// in single quotes, any `'` doubled.
///
/// This is exact only while `standard_conforming_strings` is on: with it off,
/// a backslash is an escape and `\'` would end the literal early. It has been
/// on by default since PostgreSQL 9.1, but a server, database or role can
/// still turn it off, so [`set_password`] sets it on for its own transaction,
/// in a separate statement sent before the literal is parsed. NUL cannot be
/// carried by the protocol's C strings and is refused by the caller. No other
/// character is special inside such a literal.
fn password_literal(out: &mut String, value: &str) {
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
}

/// `ALTER ROLE "role" WITH LOGIN PASSWORD '<verifier>' VALID UNTIL 'infinity'`,
/// in a buffer sized up front (no reallocation leaves an unwiped copy behind).
fn alter_password_sql(role: &str, verifier: &str) -> Zeroizing<String> {
    let ident = quote_ident(role);
    let mut sql = Zeroizing::new(String::with_capacity(80 + ident.len() + 2 * verifier.len()));
    sql.push_str("ALTER ROLE ");
    sql.push_str(&ident);
    sql.push_str(" WITH LOGIN PASSWORD ");
    password_literal(&mut sql, verifier);
    sql.push_str(" VALID UNTIL 'infinity'");
    sql
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password`
/// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), with a fresh salt.
fn scram_verifier(password: &str) -> Zeroizing<String> {
    Zeroizing::new(postgres_protocol::password::scram_sha_256(password.as_bytes()))
}

/// `ALTER ROLE "role" VALID UNTIL '<instant>'`.
fn expire_sql(role: &str, instant: &str) -> String {
    format!("ALTER ROLE {} VALID UNTIL '{instant}'", quote_ident(role))
}

/// Unix seconds as a `timestamptz` literal with an explicit UTC offset,
/// `YYYY-MM-DD HH:MM:SS+00`, which PostgreSQL reads the same whatever the
/// session's `DateStyle` and `TimeZone`. Years 1970 to 9999 only.
fn pg_timestamp(unix_seconds: i64) -> Result<String, String> {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]+00");
    let out_of_range = || "expiry instant out of range (years 1970 to 9999)".to_string();
    if !(0..=253_402_300_799).contains(&unix_seconds) {
        return Err(out_of_range());
    }
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .map_err(|_| out_of_range())?
        .format(FORMAT)
        .map_err(|_| out_of_range())
}

/// Cut every occurrence of the secrets out of a message from the driver or
/// the database. Such messages should not contain them (server messages do
/// not echo statement text, except in syntax errors, which quoting rules
/// out); this is the defence in depth.
fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_string();
    // Longest first: a short secret that happens to occur inside a longer one
    // (an admin password inside the verifier) must not break the longer match.
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in &secrets {
        if out.contains(*s) {
            out = out.replace(*s, REDACTED);
        }
    }
    out
}

/// Where a driver error happened: it decides between Connect and Refused.
#[derive(Clone, Copy)]
enum Phase {
    Connect,
    Statement,
}

/// Map a driver error to ours, scrubbing secrets from its text.
fn classify(err: sqlx::Error, phase: Phase, secrets: &[&str]) -> PgRoleError {
    match (&err, phase) {
        (sqlx::Error::Database(db), _) if db.code().as_deref() == Some(QUERY_CANCELED) => PgRoleError::Timeout,
        (sqlx::Error::Database(db), Phase::Statement) => PgRoleError::Refused(scrub(db.message(), secrets)),
        (sqlx::Error::Database(db), Phase::Connect) => PgRoleError::Connect(scrub(db.message(), secrets)),
        // Io, TLS, protocol...: the connection itself failed.
        _ => PgRoleError::Connect(scrub(&err.to_string(), secrets)),
    }
}

/// A statement text shared with the driver (which takes ownership of what it
/// runs) and wiped when the driver has let go of it, also when the future
/// running it is dropped on timeout. Best effort: the driver's own send
/// buffers are not wiped.
struct WipedSql(Arc<String>);

impl Drop for WipedSql {
    fn drop(&mut self) {
        if let Some(s) = Arc::get_mut(&mut self.0) {
            s.zeroize();
        }
    }
}

/// Run one statement through the simple-query protocol (no prepared
/// statement is cached, and no parameters are possible: `ALTER ROLE` takes none).
async fn run(db: &mut PgConnection, sql: &str, secrets: &[&str]) -> Result<(), PgRoleError> {
    let shared = WipedSql(Arc::new(sql.to_string()));
    let result = sqlx::raw_sql(AssertSqlSafe(Arc::clone(&shared.0))).execute(db).await;
    result.map(|_| ()).map_err(|e| classify(e, Phase::Statement, secrets))
}

/// Refuse `role` unless it exists, with a bind parameter: the statement that
/// carries the password is then not the one that fails for a missing role.
/// PostgreSQL 10 is the first to store a SCRAM verifier given in
/// `ALTER ROLE ... PASSWORD` as is; older servers would take it for a
/// plaintext password and hash it again, so the role could not log in.
async fn ensure_scram_aware(db: &mut PgConnection, secrets: &[&str]) -> Result<(), PgRoleError> {
    let v: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .persistent(false)
        .fetch_one(db)
        .await
        .map_err(|e| classify(e, Phase::Statement, secrets))?;
    match v.trim().parse::<u32>() {
        Ok(n) if n >= 100_000 => Ok(()),
        _ => Err(PgRoleError::Refused(format!(
            "PostgreSQL 10 or later is needed to set passwords as SCRAM verifiers (server_version_num {v})"
        ))),
    }
}

async fn ensure_exists(db: &mut PgConnection, role: &str, secrets: &[&str]) -> Result<(), PgRoleError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)")
        .bind(role)
        // Unnamed statement: nothing stays prepared (friendlier to poolers such as PgBouncer).
        .persistent(false)
        .fetch_one(db)
        .await
        .map_err(|e| classify(e, Phase::Statement, secrets))?;
    if exists { Ok(()) } else { Err(PgRoleError::Refused(format!("role \"{role}\" does not exist"))) }
}

/// Set `role`'s password and make it able to log in with no expiry; then,
/// when `expire` is `Some((previous_role, unix_seconds))`, make the previous
/// role's password stop working at that instant. Both in one transaction.
///
/// `timeout` bounds connecting (client side) and every statement
/// (`statement_timeout`, set for the transaction); the statement phase as a
/// whole is also bounded by it on the client side, in case the network
/// stalls. So the call takes at most about twice `timeout`.
///
/// Both roles must be valid names allowed by the connection, and different;
/// the password must not contain NUL. Setting the same password again is
/// harmless, which is what makes a retried rotation safe.
pub async fn set_password(
    conn: &AdminConnection,
    role: &str,
    password: &str,
    expire: Option<(&str, i64)>,
    timeout: Duration,
) -> Result<(), PgRoleError> {
    let invalid = PgRoleError::InvalidConnection;
    // Everything that can be checked is checked before touching the network.
    check_role(conn, role)?;
    if password.contains('\0') {
        return Err(invalid("the password must not contain a NUL character".into()));
    }
    let expire = match expire {
        None => None,
        Some((previous, at)) => {
            check_role(conn, previous)?;
            if previous == role {
                return Err(invalid(format!("role \"{role}\" cannot be both the new and the previous role")));
            }
            Some((previous, pg_timestamp(at).map_err(invalid)?))
        }
    };
    // PBKDF2 over 4,096 rounds takes milliseconds: off the async workers.
    let owned = Zeroizing::new(password.to_owned());
    let verifier = tokio::task::spawn_blocking(move || scram_verifier(&owned))
        .await
        .map_err(|_| PgRoleError::InvalidConnection("computing the SCRAM verifier failed; nothing was sent".into()))?;
    let secrets = [password, conn.password.as_str(), verifier.as_str()];
    let alter = alter_password_sql(role, &verifier);
    let now = tokio::time::Instant::now();
    // An absurdly large timeout must not overflow the clock: then a year is "forever".
    let deadline = now.checked_add(timeout.saturating_mul(2)).unwrap_or(now + Duration::from_secs(365 * 86_400));

    let options = conn.options();
    let mut db = match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
        Err(_) => return Err(PgRoleError::Timeout),
        Ok(Err(e)) => return Err(classify(e, Phase::Connect, &secrets)),
        Ok(Ok(db)) => db,
    };
    let applied = tokio::time::timeout(timeout, async {
        let mut tx = db.begin().await.map_err(|e| classify(e, Phase::Statement, &secrets))?;
        // Milliseconds; PostgreSQL takes 0 as "no timeout", so at least 1.
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
        run(&mut tx, &format!("SET LOCAL statement_timeout = {ms}"), &secrets).await?;
        // Must be its own statement: a multi-statement string is parsed whole
        // before any of it runs, so the setting would come too late.
        run(&mut tx, "SET LOCAL standard_conforming_strings = on", &secrets).await?;
        ensure_scram_aware(&mut tx, &secrets).await?;
        ensure_exists(&mut tx, role, &secrets).await?;
        if let Some((previous, _)) = &expire {
            ensure_exists(&mut tx, previous, &secrets).await?;
        }
        run(&mut tx, &alter, &secrets).await?;
        if let Some((previous, instant)) = &expire {
            run(&mut tx, &expire_sql(previous, instant), &secrets).await?;
        }
        tx.commit().await.map_err(|e| classify(e, Phase::Statement, &secrets))
    })
    .await
    .unwrap_or(Err(PgRoleError::Timeout));
    // A polite close (the server then rolls back anything open), within what
    // is left of the time budget; past it, dropping the socket is enough.
    let _ = tokio::time::timeout_at(deadline, db.close()).await;
    applied
}

/// `role` is a valid name that the connection allows.
fn check_role(conn: &AdminConnection, role: &str) -> Result<(), PgRoleError> {
    validate_role_name(role).map_err(PgRoleError::InvalidConnection)?;
    if !conn.allows(role) {
        return Err(PgRoleError::InvalidConnection(format!(
            "role \"{role}\" is not in the connection's allowed_roles"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn base() -> Map<String, Value> {
        secret(json!({
            "host": "db.internal",
            "username": "vault_admin",
            "password": "s3cr3t-admin-pw",
            "allowed_roles": "app_blue, app_green",
        }))
    }

    fn err_text(r: Result<AdminConnection, PgRoleError>) -> String {
        match r {
            Err(PgRoleError::InvalidConnection(m)) => m,
            Err(e) => panic!("unexpected error {e:?}"),
            Ok(c) => panic!("unexpectedly valid: {c:?}"),
        }
    }

    #[test]
    fn from_secret_defaults() {
        let c = AdminConnection::from_secret(&base()).unwrap();
        assert_eq!(c.host, "db.internal");
        assert_eq!(c.port, 5432);
        assert_eq!(c.dbname, "postgres");
        assert_eq!(c.username, "vault_admin");
        assert_eq!(c.password.as_str(), "s3cr3t-admin-pw");
        assert_eq!(c.sslmode, SslMode::Prefer);
        assert_eq!(c.allowed_roles, vec!["app_blue", "app_green"]);
        assert!(c.allows("app_blue") && c.allows("app_green"));
        assert!(!c.allows("app_red") && !c.allows("App_blue") && !c.allows("*"));
    }

    #[test]
    fn from_secret_all_fields() {
        let mut m = base();
        m.insert("port".into(), json!("6543"));
        m.insert("dbname".into(), json!("app"));
        m.insert("sslmode".into(), json!("require"));
        m.insert("allowed_roles".into(), json!(["*"]));
        let c = AdminConnection::from_secret(&m).unwrap();
        assert_eq!((c.port, c.dbname.as_str(), c.sslmode), (6543, "app", SslMode::Require));
        assert!(c.allows("anything_at_all"));

        m.insert("port".into(), json!(5433));
        m.insert("sslmode".into(), json!("disable"));
        m.insert("allowed_roles".into(), json!("*"));
        let c = AdminConnection::from_secret(&m).unwrap();
        assert_eq!((c.port, c.sslmode), (5433, SslMode::Disable));
        assert!(c.allows("x"));

        m.insert("allowed_roles".into(), json!(["app_a", " app_b "]));
        m.insert("password".into(), json!(""));
        let c = AdminConnection::from_secret(&m).unwrap();
        assert_eq!(c.allowed_roles, vec!["app_a", "app_b"]);
        assert!(c.password.is_empty());
    }

    #[test]
    fn from_secret_missing_and_bad_fields() {
        for field in ["host", "username", "password", "allowed_roles"] {
            let mut m = base();
            m.remove(field);
            assert!(
                err_text(AdminConnection::from_secret(&m)).contains(&format!("\"{field}\" is required")),
                "{field}"
            );
            m.insert(field.into(), json!(42));
            assert!(err_text(AdminConnection::from_secret(&m)).contains(field), "{field}");
        }
        for (field, value, msg) in [
            ("port", json!(0), "port number"),
            ("port", json!(70000), "port number"),
            ("port", json!(-1), "port number"),
            ("port", json!("54x"), "port number"),
            ("port", json!(""), "port number"),
            ("port", json!(5432.5), "port number"),
            ("port", json!(true), "port number"),
            ("host", json!(""), "host name"),
            ("host", json!("/var/run/postgresql"), "host name"),
            ("host", json!("db internal"), "host name"),
            ("dbname", json!(""), "must not be empty"),
            ("username", json!(""), "must not be empty"),
            ("username", json!("a\0b"), "NUL"),
            ("password", json!("a\0b"), "NUL"),
            ("sslmode", json!("verify-full"), "disable, prefer or require"),
            ("sslmode", json!(1), "must be a string"),
            ("allowed_roles", json!(""), "at least one role"),
            ("allowed_roles", json!(" , "), "at least one role"),
            ("allowed_roles", json!([]), "at least one role"),
            ("allowed_roles", json!(["ok", 1]), "as strings"),
            ("allowed_roles", json!({"a": 1}), "string or a list"),
            ("allowed_roles", json!("app, pg_monitor"), "reserved"),
            ("allowed_roles", json!("app, drop table"), "invalid role name"),
        ] {
            let mut m = base();
            m.insert(field.into(), value.clone());
            let e = err_text(AdminConnection::from_secret(&m));
            assert!(e.contains(msg), "{field}={value}: {e}");
        }
    }

    #[test]
    fn errors_never_echo_the_password() {
        let mut m = base();
        m.insert("password".into(), json!(["s3cr3t-admin-pw"]));
        let e = err_text(AdminConnection::from_secret(&m));
        assert!(!e.contains("s3cr3t"), "{e}");
        m.insert("password".into(), json!("s3cr3t\0-admin-pw"));
        let e = err_text(AdminConnection::from_secret(&m));
        assert!(!e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = AdminConnection::from_secret(&base()).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("s3cr3t-admin-pw"), "{d}");
        assert!(d.contains("[redacted]") && d.contains("db.internal") && d.contains("app_green"), "{d}");
        let d = format!("{c:#?}");
        assert!(!d.contains("s3cr3t-admin-pw"));
    }

    #[test]
    fn role_names() {
        for ok in ["a", "app", "App_Blue", "_x", "a$b", "x1", "user", "postgres", &"r".repeat(63)] {
            validate_role_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            &"r".repeat(64),
            "1app",
            "$app",
            "app-blue",
            "app blue",
            "app\"x",
            "app'x",
            "app;drop",
            "pg_monitor",
            "PG_x",
            "pg_",
            "é",
            "a\0",
        ] {
            assert!(validate_role_name(bad).is_err(), "{bad:?} accepted");
        }
        // 'pg' alone and names merely containing pg_ are fine.
        validate_role_name("pg").unwrap();
        validate_role_name("app_pg_x").unwrap();
    }

    #[test]
    fn identifier_quoting() {
        assert_eq!(quote_ident("app"), "\"app\"");
        assert_eq!(quote_ident("App$1"), "\"App$1\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_ident("\"\""), "\"\"\"\"\"\"");
    }

    #[test]
    fn password_literals() {
        let lit = |v: &str| {
            let mut s = String::new();
            password_literal(&mut s, v);
            s
        };
        assert_eq!(lit("plain"), "'plain'");
        assert_eq!(lit(""), "''");
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(lit("''"), "''''''");
        // Backslashes and double quotes are ordinary in a standard-conforming literal.
        assert_eq!(lit(r#"a\'b"c"#), r#"'a\''b"c'"#);
        assert_eq!(lit("ünï"), "'ünï'");
    }

    #[test]
    fn statements() {
        assert_eq!(
            alter_password_sql("app_blue", "p'w").as_str(),
            "ALTER ROLE \"app_blue\" WITH LOGIN PASSWORD 'p''w' VALID UNTIL 'infinity'"
        );
        // The buffer was sized so that it never grew (no stale copy left behind).
        let pw = "'".repeat(300);
        let sql = alter_password_sql("r", &pw);
        assert!(sql.len() <= 80 + quote_ident("r").len() + 2 * pw.len());
        assert_eq!(
            expire_sql("app_green", "2026-11-24 10:00:00+00"),
            "ALTER ROLE \"app_green\" VALID UNTIL '2026-11-24 10:00:00+00'"
        );
    }

    #[test]
    fn scram_verifiers() {
        let pw = "correct horse battery staple";
        let v = scram_verifier(pw);
        // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (PostgreSQL's stored form).
        let rest = v.strip_prefix("SCRAM-SHA-256$4096:").unwrap();
        let (salt, keys) = rest.split_once('$').unwrap();
        let (stored, server) = keys.split_once(':').unwrap();
        assert!([salt, stored, server].iter().all(|p| !p.is_empty()));
        assert!(!v.contains("horse"));
        // Nothing in it needs quoting in a literal.
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || "+/=$:-".contains(c)), "{}", v.as_str());
        // A fresh salt each time.
        assert_ne!(v.as_str(), scram_verifier(pw).as_str());
    }

    #[test]
    fn timestamps() {
        assert_eq!(pg_timestamp(0).unwrap(), "1970-01-01 00:00:00+00");
        assert_eq!(pg_timestamp(1_795_514_400).unwrap(), "2026-11-24 10:00:00+00");
        assert_eq!(pg_timestamp(253_402_300_799).unwrap(), "9999-12-31 23:59:59+00");
        assert!(pg_timestamp(-1).is_err());
        assert!(pg_timestamp(253_402_300_800).is_err());
        assert!(pg_timestamp(i64::MAX).is_err());
    }

    #[test]
    fn scrubbing() {
        assert_eq!(scrub("bad pw hunter2 here", &["hunter2", ""]), "bad pw [redacted] here");
        assert_eq!(scrub("nothing", &["", "x"]), "nothing");
        assert_eq!(scrub("a-b", &["a", "b"]), "[redacted]-[redacted]");
        // A short secret inside a longer one does not leave the rest of the longer one visible.
        assert_eq!(scrub("x SCRAM-SHA-256$4096:salt y", &["4096", "SCRAM-SHA-256$4096:salt"]), "x [redacted] y");
        let e = PgRoleError::Refused(scrub("syntax error at or near \"hunter2\"", &["hunter2"]));
        assert!(!e.to_string().contains("hunter2"));
        assert!(!format!("{e:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn refused_before_connecting() {
        // Port 1 on a reserved address: any attempt to connect would fail
        // differently (Connect), so InvalidConnection proves nothing was tried.
        let mut m = base();
        m.insert("host".into(), json!("192.0.2.1"));
        m.insert("port".into(), json!(1));
        let c = AdminConnection::from_secret(&m).unwrap();
        let t = Duration::from_millis(200);
        let cases = [
            ("app_red", "pw", None, "allowed_roles"),
            ("bad-name", "pw", None, "invalid role name"),
            ("app_blue", "p\0w", None, "NUL"),
            ("app_blue", "pw", Some(("app_red", 0)), "allowed_roles"),
            ("app_blue", "pw", Some(("app_blue", 0)), "both the new and the previous"),
            ("app_blue", "pw", Some(("app_green", -5)), "out of range"),
        ];
        for (role, pw, expire, msg) in cases {
            match set_password(&c, role, pw, expire, t).await {
                Err(PgRoleError::InvalidConnection(m)) => assert!(m.contains(msg), "{role}: {m}"),
                other => panic!("{role}: {other:?}"),
            }
        }
    }
}
