//! Typed configuration at boot: `client.load::<AppConfig>(&["secret/myapp", ...])`,
//! with per-field fallbacks to environment variables and `*_FILE` paths, and
//! `vault:MOUNT/PATH#FIELD` references.
