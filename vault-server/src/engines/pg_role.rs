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
//! logging is turned off for this connection.
//!
//! **Where the vault may connect.** A connection secret names any host and
//! port, and whoever may write it could make the vault a port scanner. So
//! [`set_password`] first checks the host against the server's
//! [`HostAllowList`] (`[rotation] postgres_allowed_hosts`, empty by
//! default), before any name lookup or connection; and every connection
//! failure (refused, unreachable, timeout, name lookup, TLS, login, missing
//! database) is one fixed [`PgRoleError::Connect`], its cause only in the
//! server log. Otherwise the error text would tell closed ports from open
//! ones, and a login failure from a silent service.
//!
//! **Error texts are fixed.** What the caller sees is written here: a fixed
//! message and, for a refused statement, the SQLSTATE code (five checked
//! ASCII characters). The driver's free text goes to the log only, and only
//! when no secret occurs in it at all ([`loggable`]): cutting a secret out of
//! a message instead breaks words at a short secret ("bytes" with password
//! "y" gave "b[redacted]tes") and the gaps spell the secret out.
//!
//! The verifier is secret-derived (4,096 PBKDF2 iterations, random 16-byte
//! salt): like any stored password hash it allows an offline guess, which the
//! generated passwords' length makes hopeless. Missing roles, the likeliest
//! failure, are detected with a parameterised query first, so that case never
//! sends even the verifier in a statement that fails.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _};
use zeroize::{Zeroize as _, Zeroizing};

use crate::auth::cidr::Cidr;

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
/// Logged instead of a driver message in which a secret occurs.
const WITHHELD: &str = "[message withheld: it contains a secret]";
/// What the caller is told of any failure to connect (see the module doc).
pub const CONNECT_FAILED: &str = "could not connect to the PostgreSQL server named by the connection";

/// Why a role's password could not be set. Messages never contain a
/// password, nor text taken from the driver or the database server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgRoleError {
    /// The connection secret or the arguments are invalid (a 400); nothing
    /// was sent to the database.
    #[error("invalid PostgreSQL connection: {0}")]
    InvalidConnection(String),
    /// The connection names a host and port outside the server's
    /// `[rotation] postgres_allowed_hosts` (a 400); no connection was tried.
    #[error("{0}")]
    NotAllowed(String),
    /// No session could be had: refused, unreachable, timed out, name
    /// lookup, TLS, admin login or database refused, or the connection broke
    /// mid-way. One message for all, so that the answer cannot be used to
    /// probe hosts and ports; the cause is in the server log.
    #[error("could not connect to the PostgreSQL server named by the connection")]
    Connect,
    /// The database refused a statement (e.g. the role does not exist, or the
    /// admin may not alter it). The transaction was rolled back. The text is
    /// written here (a fixed message and the SQLSTATE code).
    #[error("PostgreSQL refused the change: {0}")]
    Refused(String),
    /// A statement took longer than the timeout (after the login succeeded).
    /// Whether the transaction committed is unknown: re-applying the same
    /// password is safe.
    #[error("PostgreSQL did not answer in time")]
    Timeout,
}

/// One entry of a [`HostAllowList`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowEntry {
    /// A host name, compared exactly (ASCII case-insensitive, without a
    /// trailing dot). It matches only a connection naming that host: the
    /// name is trusted, as the operator wrote it.
    Name { host: String, port: Option<u16> },
    /// An address or CIDR block. It matches only connections naming an IP
    /// address: a name is never resolved to be checked, since what it
    /// resolves to when checked need not be what the driver connects to
    /// (DNS rebinding).
    Net { net: Cidr, port: Option<u16> },
}

/// Where the vault may open PostgreSQL connections for rotations
/// (`[rotation] postgres_allowed_hosts`). Empty by default: nothing.
///
/// Entries: `host`, `host:port`, `1.2.3.4`, `1.2.3.4:5432`, `::1`,
/// `[::1]:5432`, `10.0.0.0/8`, `10.0.0.0/8:5432`, `fd00::/8`. Without a
/// port, any port of that host is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostAllowList {
    entries: Vec<AllowEntry>,
}

/// The empty list (the default).
static NOTHING: HostAllowList = HostAllowList { entries: Vec::new() };

/// Loopback only, for the ephemeral dev server.
static LOOPBACK: LazyLock<HostAllowList> = LazyLock::new(|| {
    let parse = |s: &str| Cidr::parse(s).map(|net| AllowEntry::Net { net, port: None });
    HostAllowList {
        entries: [parse("127.0.0.0/8"), parse("::1/128")]
            .into_iter()
            .flatten()
            .chain([AllowEntry::Name { host: "localhost".into(), port: None }])
            .collect(),
    }
});

impl HostAllowList {
    /// The empty list: no host is allowed.
    pub fn nothing() -> &'static HostAllowList {
        &NOTHING
    }

    /// Loopback addresses and `localhost`, any port (dev mode only: on a
    /// real server the loopback interface often reaches the most trusted
    /// services, such as a PostgreSQL with `trust` logins).
    pub fn loopback() -> &'static HostAllowList {
        &LOOPBACK
    }

    /// Parse the configured entries; the error names the first bad one.
    pub fn parse(items: &[String]) -> Result<Self, String> {
        let entries = items
            .iter()
            .map(|i| parse_allow_entry(i.trim()).ok_or_else(|| format!("invalid postgres_allowed_hosts entry \"{}\": expected host, host:port, an IP address or a CIDR block (optionally followed by :port)", i.escape_default())))
            .collect::<Result<_, _>>()?;
        Ok(HostAllowList { entries })
    }

    /// No host is allowed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// May the vault connect to `host` (as written in a connection secret) on `port`?
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        match host.parse::<IpAddr>() {
            Ok(ip) => self
                .entries
                .iter()
                .any(|e| matches!(e, AllowEntry::Net { net, port: p } if port_ok(p) && net.contains(ip))),
            Err(_) => {
                let name = normalize_host(host);
                self.entries
                    .iter()
                    .any(|e| matches!(e, AllowEntry::Name { host: h, port: p } if port_ok(p) && *h == name))
            }
        }
    }
}

/// A host name as compared: ASCII lower case, without a trailing dot.
fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn parse_port(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

/// One allowlist entry (see [`HostAllowList`]).
fn parse_allow_entry(s: &str) -> Option<AllowEntry> {
    if s.is_empty() {
        return None;
    }
    // `[v6]` or `[v6]:port`.
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let ip: IpAddr = addr.parse().ok()?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':')?)?),
        };
        return Some(AllowEntry::Net { net: Cidr::parse(&ip.to_string())?, port });
    }
    // A CIDR block, `addr/len` or `addr/len:port`.
    if let Some((addr, rest)) = s.split_once('/') {
        let (len, port) = match rest.split_once(':') {
            Some((len, p)) => (len, Some(parse_port(p)?)),
            None => (rest, None),
        };
        return Some(AllowEntry::Net { net: Cidr::parse(&format!("{addr}/{len}"))?, port });
    }
    // A bare address (an IPv6 one has several colons: no port without brackets).
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(AllowEntry::Net { net: Cidr::parse(&ip.to_string())?, port: None });
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(parse_port(p)?)),
        None => (s, None),
    };
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Some(AllowEntry::Net { net: Cidr::parse(&ip.to_string())?, port });
    }
    let name = normalize_host(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return None;
    }
    Some(AllowEntry::Name { host: name, port })
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

    /// Refuse a host and port outside `allowed`, naming the setting.
    pub fn check_host(&self, allowed: &HostAllowList) -> Result<(), PgRoleError> {
        if allowed.allows(&self.host, self.port) {
            return Ok(());
        }
        Err(PgRoleError::NotAllowed(format!(
            "the connection's host \"{}\" port {} is not in this server's [rotation] postgres_allowed_hosts{}",
            self.host.escape_default(),
            self.port,
            if allowed.is_empty() {
                " (empty: no PostgreSQL rotation is allowed until an operator sets it)"
            } else {
                ""
            }
        )))
    }

    /// What names the PostgreSQL cluster this connection reaches, for "is
    /// this the same role?": the host as compared (lower case, no trailing
    /// dot) and the port. Not the database: roles belong to the whole
    /// cluster. Two names of one server (an address and a host name) are
    /// not recognised as the same.
    ///
    /// Conservative: spellings of one address are one identity (an IP
    /// literal in canonical form, so `::ffff:127.0.0.1` is `127.0.0.1`), and
    /// every loopback spelling (`localhost`, `127.x.y.z`, `::1`) is one
    /// identity too, since one local server usually listens on all of them.
    /// A false match only refuses a second policy; a missed one lets two
    /// policies fight over a role.
    pub fn cluster_identity(&self) -> String {
        let host = normalize_host(&self.host);
        let host = match host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>() {
            Ok(ip) if ip.to_canonical().is_loopback() => "loopback".to_string(),
            Ok(ip) => ip.to_canonical().to_string(),
            Err(_) if host == "localhost" => "loopback".to_string(),
            Err(_) => host,
        };
        format!("{host}\0{}", self.port)
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

/// `message` for the server log, or a fixed text when any secret occurs in
/// it (as a plain substring: no pattern syntax). Nothing is cut out of a
/// message: a short secret occurs inside ordinary words, and what is left
/// around the cuts would spell it out.
fn loggable(message: &str, secrets: &[&str]) -> String {
    if secrets.iter().any(|s| !s.is_empty() && message.contains(s)) {
        return WITHHELD.to_string();
    }
    message.to_string()
}

/// A SQLSTATE code as received, if it is one (five ASCII digits or upper
/// case letters): only then is it echoed.
fn sqlstate(code: Option<&str>) -> Option<&str> {
    code.filter(|c| c.len() == 5 && c.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()))
}

/// The caller's message for a statement PostgreSQL refused: a fixed text
/// per SQLSTATE class we know, the code otherwise.
fn refused_text(code: Option<&str>) -> String {
    let Some(code) = sqlstate(code) else { return "an unexpected error (see the server log)".into() };
    let what = match code {
        "42501" => {
            "the admin role may not change this role (insufficient privilege; a superuser role needs a superuser admin)"
        }
        "42704" => "the role does not exist",
        "25006" => "the server is read-only (a standby?)",
        "40001" | "40P01" => "the change conflicted with a concurrent one; it will be retried",
        "55P03" => "the role is locked by another session",
        "53300" => "too many connections",
        _ => "see the server log",
    };
    format!("{what} (SQLSTATE {code})")
}

/// Where a driver error happened: it decides between Connect and Refused.
#[derive(Clone, Copy)]
enum Phase {
    Connect,
    Statement,
}

/// Map a driver error to ours: a fixed text for the caller, the driver's
/// text for the log (withheld if a secret occurs in it).
fn classify(conn: &AdminConnection, err: sqlx::Error, phase: Phase, secrets: &[&str]) -> PgRoleError {
    let code = match &err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    let out = match (&err, phase) {
        (sqlx::Error::Database(_), Phase::Statement) if code.as_deref() == Some(QUERY_CANCELED) => PgRoleError::Timeout,
        (sqlx::Error::Database(_), Phase::Statement) => PgRoleError::Refused(refused_text(code.as_deref())),
        // Connecting (login, database, TLS, network, name lookup), or the
        // connection broke mid-way: one message.
        _ => PgRoleError::Connect,
    };
    let detail = match &err {
        sqlx::Error::Database(db) => loggable(db.message(), secrets),
        other => loggable(&other.to_string(), secrets),
    };
    let phase = match phase {
        Phase::Connect => "connect",
        Phase::Statement => "statement",
    };
    tracing::warn!(
        host = %conn.host.escape_default(),
        port = conn.port,
        dbname = %conn.dbname.escape_default(),
        phase,
        sqlstate = sqlstate(code.as_deref()).unwrap_or(""),
        detail = %detail,
        "could not connect to PostgreSQL, or it refused a rotation statement"
    );
    out
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
async fn run(conn: &AdminConnection, db: &mut PgConnection, sql: &str, secrets: &[&str]) -> Result<(), PgRoleError> {
    let shared = WipedSql(Arc::new(sql.to_string()));
    let result = sqlx::raw_sql(AssertSqlSafe(Arc::clone(&shared.0))).execute(db).await;
    result.map(|_| ()).map_err(|e| classify(conn, e, Phase::Statement, secrets))
}

/// Refuse `role` unless it exists, with a bind parameter: the statement that
/// carries the password is then not the one that fails for a missing role.
/// PostgreSQL 10 is the first to store a SCRAM verifier given in
/// `ALTER ROLE ... PASSWORD` as is; older servers would take it for a
/// plaintext password and hash it again, so the role could not log in.
async fn ensure_scram_aware(
    conn: &AdminConnection,
    db: &mut PgConnection,
    secrets: &[&str],
) -> Result<(), PgRoleError> {
    let v: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .persistent(false)
        .fetch_one(db)
        .await
        .map_err(|e| classify(conn, e, Phase::Statement, secrets))?;
    match v.trim().parse::<u32>() {
        Ok(n) if n >= 100_000 => Ok(()),
        // Only a number is echoed: the text came from the server.
        Ok(n) => Err(PgRoleError::Refused(format!(
            "PostgreSQL 10 or later is needed to set passwords as SCRAM verifiers (server_version_num {n})"
        ))),
        Err(_) => Err(PgRoleError::Refused(
            "PostgreSQL 10 or later is needed to set passwords as SCRAM verifiers (unknown server version)".into(),
        )),
    }
}

async fn ensure_exists(
    conn: &AdminConnection,
    db: &mut PgConnection,
    role: &str,
    secrets: &[&str],
) -> Result<(), PgRoleError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)")
        .bind(role)
        // Unnamed statement: nothing stays prepared (friendlier to poolers such as PgBouncer).
        .persistent(false)
        .fetch_one(db)
        .await
        .map_err(|e| classify(conn, e, Phase::Statement, secrets))?;
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
/// The connection's host and port must be in `allowed` (checked first,
/// before any name lookup or connection). Both roles must be valid names
/// allowed by the connection, and different; the password must not contain
/// NUL. Setting the same password again is harmless, which is what makes a
/// retried rotation safe.
pub async fn set_password(
    conn: &AdminConnection,
    allowed: &HostAllowList,
    role: &str,
    password: &str,
    expire: Option<(&str, i64)>,
    timeout: Duration,
) -> Result<(), PgRoleError> {
    let invalid = PgRoleError::InvalidConnection;
    // Everything that can be checked is checked before touching the network.
    conn.check_host(allowed)?;
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
        // A silent port must answer like a closed one (module doc).
        Err(_) => {
            tracing::warn!(host = %conn.host.escape_default(), port = conn.port, "could not connect to PostgreSQL: timed out");
            return Err(PgRoleError::Connect);
        }
        Ok(Err(e)) => return Err(classify(conn, e, Phase::Connect, &secrets)),
        Ok(Ok(db)) => db,
    };
    let applied = tokio::time::timeout(timeout, async {
        let mut tx = db.begin().await.map_err(|e| classify(conn, e, Phase::Statement, &secrets))?;
        // Milliseconds; PostgreSQL takes 0 as "no timeout", so at least 1.
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128);
        run(conn, &mut tx, &format!("SET LOCAL statement_timeout = {ms}"), &secrets).await?;
        // Must be its own statement: a multi-statement string is parsed whole
        // before any of it runs, so the setting would come too late.
        run(conn, &mut tx, "SET LOCAL standard_conforming_strings = on", &secrets).await?;
        ensure_scram_aware(conn, &mut tx, &secrets).await?;
        ensure_exists(conn, &mut tx, role, &secrets).await?;
        if let Some((previous, _)) = &expire {
            ensure_exists(conn, &mut tx, previous, &secrets).await?;
        }
        run(conn, &mut tx, &alter, &secrets).await?;
        if let Some((previous, instant)) = &expire {
            run(conn, &mut tx, &expire_sql(previous, instant), &secrets).await?;
        }
        tx.commit().await.map_err(|e| classify(conn, e, Phase::Statement, &secrets))
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
    fn driver_messages_are_logged_whole_or_not_at_all() {
        // No secret in it: logged as is.
        assert_eq!(
            loggable("password authentication failed for user \"x\"", &["hunter2", ""]),
            "password authentication failed for user \"x\""
        );
        assert_eq!(loggable("nothing", &[""]), "nothing");
        // A one-character password occurs in ordinary words: the message is
        // withheld, not cut ("b[redacted]tes" would spell the password out).
        let m = loggable("invalid bytes in the message", &["y"]);
        assert_eq!(m, WITHHELD);
        assert!(!m.contains("b[redacted]tes") && !m.contains("bytes"));
        // A password that is a substring of common words.
        assert_eq!(loggable("password authentication failed", &["pass"]), WITHHELD);
        assert_eq!(loggable("connection refused", &["on"]), WITHHELD);
        // Pattern characters are plain characters: no regex, no format string.
        assert_eq!(loggable("a.*b and $1 and \\d", &[".*"]), WITHHELD);
        assert_eq!(loggable("abc", &[".*"]), "abc");
        assert_eq!(loggable("x (?i)Y", &["(?i)y"]), "x (?i)Y", "case-sensitive, literal");
        assert_eq!(loggable("got {} and %s", &["{}"]), WITHHELD);
        assert_eq!(loggable("verifier SCRAM-SHA-256$4096:salt", &["SCRAM-SHA-256$4096:salt"]), WITHHELD);
        // A secret that is the withheld text itself, or the redaction marker.
        assert_eq!(loggable(WITHHELD, &[WITHHELD]), WITHHELD);
        assert_eq!(loggable("x [redacted] y", &["[redacted]"]), WITHHELD);
        // Non-ASCII.
        assert_eq!(loggable("mot de passe é", &["é"]), WITHHELD);
    }

    #[test]
    fn caller_texts_are_fixed() {
        assert!(refused_text(Some("42501")).contains("42501") && refused_text(Some("42501")).contains("privilege"));
        assert!(refused_text(Some("XX000")).contains("SQLSTATE XX000"));
        // Anything that is not a SQLSTATE code is not echoed.
        for bad in ["hunter2", "4250", "425011", "42 01", "abcde", "ÉÉÉÉÉ"] {
            assert!(!refused_text(Some(bad)).contains(bad), "{bad}");
        }
        assert!(!refused_text(None).is_empty());
        assert_eq!(PgRoleError::Connect.to_string(), CONNECT_FAILED);
    }

    #[test]
    fn every_connection_failure_is_one_message() {
        let c = AdminConnection::from_secret(&base()).unwrap();
        let secrets = ["s3cr3t-admin-pw"];
        for e in [
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "Connection refused (os error 111)",
            )),
            sqlx::Error::Io(std::io::Error::other("failed to lookup address information: Name or service not known")),
            sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "early eof")),
            sqlx::Error::Protocol("expected 0x52 but received 0x48 s3cr3t-admin-pw".into()),
            sqlx::Error::Tls("server does not support TLS".into()),
        ] {
            let err = classify(&c, e, Phase::Connect, &secrets);
            assert!(matches!(err, PgRoleError::Connect), "{err:?}");
            assert_eq!(err.to_string(), CONNECT_FAILED);
        }
        // A connection that breaks once the session is up: the same message.
        let err = classify(&c, sqlx::Error::Protocol("unexpected message".into()), Phase::Statement, &secrets);
        assert!(matches!(err, PgRoleError::Connect), "{err:?}");
    }

    fn list(items: &[&str]) -> HostAllowList {
        HostAllowList::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn host_allowlist() {
        let l = list(&[
            "db.internal:5432",
            "10.0.0.0/8",
            "192.168.1.7",
            "[fd00::1]:6432",
            "fd01::/16:5433",
            "Other.Example.",
        ]);
        assert!(l.allows("db.internal", 5432) && l.allows("DB.Internal.", 5432));
        assert!(!l.allows("db.internal", 5433), "port given: that port only");
        assert!(
            !l.allows("db.internal.evil", 5432) && !l.allows("evil.db.internal", 5432) && !l.allows("internal", 5432)
        );
        assert!(l.allows("10.1.2.3", 1) && l.allows("10.255.255.255", 65535) && !l.allows("11.0.0.1", 5432));
        assert!(l.allows("192.168.1.7", 22) && !l.allows("192.168.1.8", 5432));
        assert!(l.allows("fd00::1", 6432) && !l.allows("fd00::1", 5432) && !l.allows("fd00::2", 6432));
        assert!(l.allows("fd01:abcd::9", 5433) && !l.allows("fd01:abcd::9", 5432));
        assert!(l.allows("other.example", 1) && l.allows("OTHER.EXAMPLE", 2));
        // A name is never resolved to match an address entry, and an address
        // never matches a name entry: other spellings of a host are refused.
        assert!(!l.allows("localhost", 5432) && !l.allows("127.0.0.1", 5432));
        assert!(!l.allows("10.1", 5432) && !l.allows("0x0a000001", 5432) && !l.allows("167772161", 5432));
        // Nothing by default.
        assert!(HostAllowList::nothing().is_empty());
        assert!(
            !HostAllowList::nothing().allows("127.0.0.1", 5432) && !HostAllowList::nothing().allows("localhost", 5432)
        );
        assert_eq!(HostAllowList::default(), *HostAllowList::nothing());
        // Dev: loopback.
        let lo = HostAllowList::loopback();
        assert!(
            lo.allows("127.0.0.1", 5432)
                && lo.allows("127.9.9.9", 1)
                && lo.allows("::1", 5432)
                && lo.allows("localhost", 5432)
        );
        assert!(!lo.allows("10.0.0.1", 5432) && !lo.allows("db.internal", 5432));
        for bad in [
            "",
            " ",
            "db internal",
            "db..internal",
            "-db",
            "host:",
            "host:0",
            "host:70000",
            "host:x",
            "10.0.0.0/33",
            "10.0.0.0/8:",
            "[::1",
            "[::1]x",
            "[nothost]:1",
            "*",
            "db_internal",
            "a/b",
        ] {
            assert!(HostAllowList::parse(&[bad.to_string()]).is_err(), "{bad:?} accepted");
        }
        let e = HostAllowList::parse(&["ok".into(), "bad entry".into()]).unwrap_err();
        assert!(e.contains("bad entry"), "{e}");
    }

    #[tokio::test]
    async fn hosts_outside_the_allowlist_are_refused_before_anything() {
        // 192.0.2.1 (TEST-NET-1) would never answer: a refusal in milliseconds
        // proves nothing was tried.
        let mut m = base();
        m.insert("host".into(), json!("192.0.2.1"));
        let c = AdminConnection::from_secret(&m).unwrap();
        let start = std::time::Instant::now();
        for allowed in [HostAllowList::nothing(), HostAllowList::loopback(), &list(&["192.0.2.1:5433", "192.0.2.2"])] {
            match set_password(&c, allowed, "app_blue", "pw", None, Duration::from_secs(30)).await {
                Err(e @ PgRoleError::NotAllowed(_)) => assert!(e.to_string().contains("postgres_allowed_hosts"), "{e}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(c.check_host(&list(&["192.0.2.0/24"])).is_ok());
    }

    #[test]
    fn one_address_is_one_cluster_whatever_its_spelling() {
        let id = |host: &str| {
            let mut m = base();
            m.insert("host".into(), json!(host));
            AdminConnection::from_secret(&m).unwrap().cluster_identity()
        };
        assert_eq!(id("::ffff:10.1.2.3"), id("10.1.2.3"));
        for lo in ["::1", "localhost", "LOCALHOST.", "127.0.0.2", "::ffff:127.0.0.1"] {
            assert_eq!(id(lo), id("127.0.0.1"), "{lo}");
        }
        assert_ne!(id("10.1.2.3"), id("10.1.2.4"));
    }

    #[test]
    fn cluster_identity_ignores_the_database_and_case() {
        let mut m = base();
        let a = AdminConnection::from_secret(&m).unwrap();
        m.insert("host".into(), json!("DB.Internal."));
        m.insert("dbname".into(), json!("other"));
        m.insert("port".into(), json!("5432"));
        let b = AdminConnection::from_secret(&m).unwrap();
        assert_eq!(a.cluster_identity(), b.cluster_identity());
        m.insert("port".into(), json!(5433));
        assert_ne!(a.cluster_identity(), AdminConnection::from_secret(&m).unwrap().cluster_identity());
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
        let allowed = list(&["192.0.2.1"]);
        let cases = [
            ("app_red", "pw", None, "allowed_roles"),
            ("bad-name", "pw", None, "invalid role name"),
            ("app_blue", "p\0w", None, "NUL"),
            ("app_blue", "pw", Some(("app_red", 0)), "allowed_roles"),
            ("app_blue", "pw", Some(("app_blue", 0)), "both the new and the previous"),
            ("app_blue", "pw", Some(("app_green", -5)), "out of range"),
        ];
        for (role, pw, expire, msg) in cases {
            match set_password(&c, &allowed, role, pw, expire, t).await {
                Err(PgRoleError::InvalidConnection(m)) => assert!(m.contains(msg), "{role}: {m}"),
                other => panic!("{role}: {other:?}"),
            }
        }
    }
}
