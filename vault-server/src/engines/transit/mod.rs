//! Transit: encryption as a service, Vault's `transit` engine on the same
//! paths and with the same request and response shapes
//! (<https://developer.hashicorp.com/vault/api-docs/secret/transit>).
//!
//! - `crypto.rs`: the primitives (vetted crates only) per key type.
//! - `key.rs`: a named key's settings and versions, and its stored form.
//! - `store.rs`: keys in storage and in memory (decrypted while unsealed).
//! - `ops.rs`: the operations (encrypt, decrypt, sign, ...), batch included.
//! - `fields.rs`: encrypt and decrypt chosen fields of JSON documents.
//! - `index.rs`: blind indexes (keyed hashes for equality search).
//! - `subjects.rs`: subject keys (crypto-shredding per data subject).
//! - `manage.rs`: key management (create, read, config, rotate, trim,
//!   export, backup, restore, delete).
//! - `stream.rs`: streamed encryption of uploads of any size.
//!
//! What goes beyond Vault is listed in `docs/transit.md`.

pub mod bench;
mod crypto;
mod fields;
mod index;
mod key;
mod manage;
mod ops;
mod store;
mod stream;
mod subjects;

pub use stream::{StreamSettings, defaults as stream_defaults};

use std::sync::Arc;

use crate::auth::Authorized;
use crate::barrier::Unsealed;
use crate::barrier::view::View;
use crate::logical::kit::{Clock, EngineContext};
use crate::logical::{Backend, BoxFuture, Field, FieldKind, LogicalError, Operation, PathSpec, Request, Response};

/// The transit engine of one mount.
#[derive(Debug)]
pub(crate) struct Transit {
    view: View,
    clock: Clock,
    keys: store::Keys,
    subjects: subjects::Cache,
    /// Limits on streams (server-wide slots).
    streams: StreamSettings,
    /// Scheduled rotations are counted here (the request hook counts the API's).
    metrics: Arc<crate::metrics::Metrics>,
}

/// The transit factory for the catalog.
pub(crate) fn factory(ctx: EngineContext) -> Result<Arc<dyn Backend>, LogicalError> {
    ctx.refuse_version()?;
    Ok(Arc::new(Transit {
        view: ctx.view,
        clock: ctx.clock,
        keys: store::Keys::default(),
        subjects: Default::default(),
        streams: ctx.settings.streams,
        metrics: ctx.settings.metrics,
    }))
}

/// A key name: what Vault accepts in practice, and nothing that could be
/// read as a path.
pub(super) fn check_name(name: &str) -> Result<(), LogicalError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(LogicalError::InvalidRequest("invalid key name: use 1 to 128 letters, digits, '-', '_' or '.'".into()))
    }
}

const BATCH: Field = Field::new("batch_input", FieldKind::Any);
/// Beyond Vault: the data subject a ciphertext belongs to (`subjects.rs`).
const SUBJECT: Field = Field::new("subject", FieldKind::String);

static PATHS: &[PathSpec] = {
    use Operation::*;
    &[
        PathSpec::new("keys", &[List]),
        PathSpec::new("keys/{name}", &[Read, Update, Delete]).existence_check().fields(&[
            Field::new("type", FieldKind::String),
            Field::new("derived", FieldKind::Bool),
            Field::new("convergent_encryption", FieldKind::Bool),
            Field::new("exportable", FieldKind::Bool),
            Field::new("allow_plaintext_backup", FieldKind::Bool),
            Field::new("auto_rotate_period", FieldKind::Duration),
            Field::new("key_size", FieldKind::Count),
        ]),
        PathSpec::new("keys/{name}/config", &[Update]).fields(&[
            Field::new("min_decryption_version", FieldKind::Int),
            Field::new("min_encryption_version", FieldKind::Int),
            Field::new("deletion_allowed", FieldKind::Bool),
            Field::new("exportable", FieldKind::Bool),
            Field::new("allow_plaintext_backup", FieldKind::Bool),
            Field::new("auto_rotate_period", FieldKind::Duration),
        ]),
        PathSpec::new("keys/{name}/rotate", &[Update]),
        PathSpec::new("keys/{name}/trim", &[Update]).fields(&[Field::new("min_available_version", FieldKind::Int)]),
        PathSpec::new("encrypt/{name}", &[Update]).existence_check().fields(&[
            Field::new("plaintext", FieldKind::String),
            Field::new("context", FieldKind::String),
            Field::new("nonce", FieldKind::String),
            Field::new("associated_data", FieldKind::String),
            Field::new("key_version", FieldKind::Count),
            Field::new("type", FieldKind::String),
            Field::new("convergent_encryption", FieldKind::Bool),
            Field::new("partial_failure_response_code", FieldKind::Count),
            SUBJECT,
            BATCH,
        ]),
        PathSpec::new("decrypt/{name}", &[Update]).fields(&[
            Field::new("ciphertext", FieldKind::String),
            Field::new("context", FieldKind::String),
            Field::new("nonce", FieldKind::String),
            Field::new("associated_data", FieldKind::String),
            Field::new("partial_failure_response_code", FieldKind::Count),
            SUBJECT,
            BATCH,
        ]),
        PathSpec::new("encrypt-fields/{name}", &[Update]).fields(DOCUMENT_FIELDS),
        PathSpec::new("decrypt-fields/{name}", &[Update]).fields(DOCUMENT_FIELDS),
        PathSpec::new("subjects/{name}", &[List]),
        PathSpec::new("subjects/{name}/{subject}", &[Read, Delete]).personal(&["subject"]),
        PathSpec::new("blind-index/{name}", &[Update]).fields(&[
            Field::new("input", FieldKind::String),
            Field::new("field", FieldKind::String),
            Field::new("normalize", FieldKind::Any),
            Field::new("bits", FieldKind::Any),
            Field::new("partial_failure_response_code", FieldKind::Count),
            BATCH,
        ]),
        PathSpec::new("rewrap/{name}", &[Update]).fields(&[
            Field::new("ciphertext", FieldKind::String),
            Field::new("context", FieldKind::String),
            Field::new("nonce", FieldKind::String),
            Field::new("associated_data", FieldKind::String),
            Field::new("key_version", FieldKind::Count),
            Field::new("partial_failure_response_code", FieldKind::Count),
            SUBJECT,
            BATCH,
        ]),
        PathSpec::new("datakey/{plaintext}/{name}", &[Update]).fields(&[
            Field::new("context", FieldKind::String),
            Field::new("nonce", FieldKind::String),
            Field::new("bits", FieldKind::Count),
            Field::new("key_version", FieldKind::Count),
            Field::new("associated_data", FieldKind::String),
            SUBJECT,
        ]),
        PathSpec::new("stream/encrypt/{name}", &[Update]).stream().fields(STREAM_FIELDS),
        PathSpec::new("stream/decrypt/{name}", &[Update]).stream().fields(STREAM_FIELDS),
        PathSpec::new("random", &[Update]).fields(&[
            Field::new("bytes", FieldKind::Count),
            Field::new("format", FieldKind::String),
            Field::new("source", FieldKind::String),
        ]),
        PathSpec::new("random/{a}", &[Update])
            .fields(&[Field::new("bytes", FieldKind::Count), Field::new("format", FieldKind::String)]),
        PathSpec::new("random/{source}/{bytes}", &[Update]).fields(&[Field::new("format", FieldKind::String)]),
        PathSpec::new("hash", &[Update]).fields(&[
            Field::new("input", FieldKind::String),
            Field::new("algorithm", FieldKind::String),
            Field::new("format", FieldKind::String),
        ]),
        PathSpec::new("hash/{algorithm}", &[Update])
            .fields(&[Field::new("input", FieldKind::String), Field::new("format", FieldKind::String)]),
        PathSpec::new("hmac/{name}", &[Update]).fields(&[
            Field::new("input", FieldKind::String),
            Field::new("key_version", FieldKind::Count),
            Field::new("algorithm", FieldKind::String),
            BATCH,
        ]),
        PathSpec::new("hmac/{name}/{algorithm}", &[Update]).fields(&[
            Field::new("input", FieldKind::String),
            Field::new("key_version", FieldKind::Count),
            BATCH,
        ]),
        PathSpec::new("sign/{name}", &[Update]).fields(SIGN_FIELDS),
        PathSpec::new("sign/{name}/{algorithm}", &[Update]).fields(SIGN_FIELDS),
        PathSpec::new("verify/{name}", &[Update]).fields(VERIFY_FIELDS),
        PathSpec::new("verify/{name}/{algorithm}", &[Update]).fields(VERIFY_FIELDS),
        PathSpec::new("export/{type}/{name}", &[Read]),
        PathSpec::new("export/{type}/{name}/{version}", &[Read]),
        PathSpec::new("backup/{name}", &[Read]),
        PathSpec::new("restore", &[Update])
            .fields(&[Field::new("backup", FieldKind::String), Field::new("force", FieldKind::Bool)]),
        PathSpec::new("restore/{name}", &[Update])
            .fields(&[Field::new("backup", FieldKind::String), Field::new("force", FieldKind::Bool)]),
    ]
};

/// Query parameters of the stream paths (`stream.rs`).
const STREAM_FIELDS: &[Field] = &[
    Field::new("associated_data", FieldKind::String),
    Field::new("context", FieldKind::String),
    Field::new("segment_size", FieldKind::Count),
    Field::new("algorithm", FieldKind::String),
    Field::new("key_version", FieldKind::Count),
    SUBJECT,
];

const DOCUMENT_FIELDS: &[Field] = &[
    Field::new("document", FieldKind::Any),
    Field::new("fields", FieldKind::Any),
    Field::new("context", FieldKind::String),
    Field::new("associated_data", FieldKind::String),
    Field::new("key_version", FieldKind::Count),
    Field::new("index_fields", FieldKind::Any),
    Field::new("normalize", FieldKind::Any),
    Field::new("bits", FieldKind::Any),
    Field::new("partial_failure_response_code", FieldKind::Count),
    SUBJECT,
    BATCH,
];

const SIGN_FIELDS: &[Field] = &[
    Field::new("input", FieldKind::String),
    Field::new("key_version", FieldKind::Count),
    Field::new("hash_algorithm", FieldKind::String),
    Field::new("algorithm", FieldKind::String),
    Field::new("context", FieldKind::String),
    Field::new("prehashed", FieldKind::Bool),
    Field::new("marshaling_algorithm", FieldKind::String),
    Field::new("signature_algorithm", FieldKind::String),
    BATCH,
];

const VERIFY_FIELDS: &[Field] = &[
    Field::new("input", FieldKind::String),
    Field::new("signature", FieldKind::String),
    Field::new("hmac", FieldKind::String),
    Field::new("hash_algorithm", FieldKind::String),
    Field::new("algorithm", FieldKind::String),
    Field::new("context", FieldKind::String),
    Field::new("prehashed", FieldKind::Bool),
    Field::new("marshaling_algorithm", FieldKind::String),
    Field::new("signature_algorithm", FieldKind::String),
    BATCH,
];

impl Backend for Transit {
    fn paths(&self) -> &'static [PathSpec] {
        PATHS
    }

    fn handle<'a>(&'a self, auth: &'a Authorized, req: Request) -> BoxFuture<'a, Result<Response, LogicalError>> {
        Box::pin(async move {
            let req = crate::logical::paths::ensure_routed(PATHS, req)?;
            let u = auth.unsealed();
            let name = req.param("name").to_string();
            if !name.is_empty() {
                check_name(&name)?;
            }
            // Each arm's future is boxed: inlined, the largest would size the
            // whole future, which is copied whole when boxed (measured: tens
            // of KB per request).
            match (req.pattern(), req.op) {
                ("keys", Operation::List) => Box::pin(self.list(u)).await,
                ("keys/{name}", Operation::Read) => Box::pin(self.read_with(u, &name, &req.data)).await,
                ("keys/{name}", Operation::Create | Operation::Update) => {
                    Box::pin(self.create(u, &name, &req.data)).await
                }
                ("keys/{name}", Operation::Delete) => Box::pin(self.delete(u, &name)).await,
                ("keys/{name}/config", _) => Box::pin(self.config(u, &name, &req.data)).await,
                ("keys/{name}/rotate", _) => Box::pin(self.rotate(u, &name)).await,
                ("keys/{name}/trim", _) => Box::pin(self.trim(u, &name, &req.data)).await,
                ("encrypt/{name}", op) => Box::pin(self.encrypt(u, &name, op == Operation::Create, &req.data)).await,
                ("decrypt/{name}", _) => Box::pin(self.decrypt(u, &name, &req.data)).await,
                ("rewrap/{name}", _) => Box::pin(self.rewrap(u, &name, &req.data)).await,
                ("encrypt-fields/{name}", _) => Box::pin(self.encrypt_fields(u, &name, &req.data)).await,
                ("decrypt-fields/{name}", _) => Box::pin(self.decrypt_fields(u, &name, &req.data)).await,
                ("subjects/{name}", _) => Box::pin(self.list_subjects(u, &name)).await,
                ("subjects/{name}/{subject}", Operation::Delete) => {
                    Box::pin(self.destroy_subject(u, &name, req.param("subject"))).await
                }
                ("subjects/{name}/{subject}", _) => Box::pin(self.read_subject(u, &name, req.param("subject"))).await,
                ("blind-index/{name}", _) => Box::pin(self.blind_index(u, &name, &req.data)).await,
                ("datakey/{plaintext}/{name}", _) => {
                    Box::pin(self.datakey(u, &name, req.param("plaintext"), &req.data)).await
                }
                ("stream/encrypt/{name}", _) => Box::pin(self.stream_encrypt(u, &name, req)).await,
                ("stream/decrypt/{name}", _) => Box::pin(self.stream_decrypt(u, &name, req)).await,
                ("random", _) => ops::random(None, None, &req.data),
                ("random/{a}", _) => {
                    // `random/{bytes}` or `random/{source}`, as Vault reads it.
                    let a = req.param("a");
                    if a.bytes().all(|b| b.is_ascii_digit()) {
                        ops::random(None, Some(a), &req.data)
                    } else {
                        ops::random(Some(a), None, &req.data)
                    }
                }
                ("random/{source}/{bytes}", _) => {
                    ops::random(Some(req.param("source")), Some(req.param("bytes")), &req.data)
                }
                ("hash", _) => ops::hash(None, &req.data),
                ("hash/{algorithm}", _) => ops::hash(Some(req.param("algorithm")), &req.data),
                ("hmac/{name}" | "hmac/{name}/{algorithm}", _) => {
                    Box::pin(self.hmac(u, &name, opt(req.param("algorithm")), &req.data)).await
                }
                ("sign/{name}" | "sign/{name}/{algorithm}", _) => {
                    Box::pin(self.sign(u, &name, opt(req.param("algorithm")), &req.data)).await
                }
                ("verify/{name}" | "verify/{name}/{algorithm}", _) => {
                    Box::pin(self.verify(u, &name, opt(req.param("algorithm")), &req.data)).await
                }
                ("export/{type}/{name}" | "export/{type}/{name}/{version}", _) => {
                    Box::pin(self.export(u, &name, req.param("type"), opt(req.param("version")))).await
                }
                ("backup/{name}", _) => Box::pin(self.backup(u, &name)).await,
                ("restore" | "restore/{name}", _) => Box::pin(self.restore(auth, opt(&name), &req.data)).await,
                _ => Err(LogicalError::UnsupportedOperation),
            }
        })
    }

    fn exists<'a>(&'a self, u: &'a Unsealed, path: &'a str) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        self.exists_routed(u, path, None)
    }

    fn exists_routed<'a>(
        &'a self,
        u: &'a Unsealed,
        path: &'a str,
        route: Option<&'a crate::logical::paths::Route>,
    ) -> BoxFuture<'a, Result<Option<bool>, LogicalError>> {
        Box::pin(async move {
            let found;
            let route = match route {
                Some(r) => r,
                None => match crate::logical::paths::find(PATHS, path) {
                    Some(r) => {
                        found = r;
                        &found
                    }
                    None => return Ok(None),
                },
            };
            let name = route.get("name");
            if check_name(name).is_err() {
                return Ok(None);
            }
            match route.pattern() {
                "keys/{name}" | "encrypt/{name}" => Ok(Some(self.keys.get(&self.view, u, name).await?.is_some())),
                _ => Ok(None),
            }
        })
    }

    fn invalidate(&self, path: Option<&str>) {
        let Some(path) = path else {
            self.keys.invalidate_all();
            self.subjects.clear();
            return;
        };
        if let Some(name) = path.strip_prefix(store::POLICY_PREFIX) {
            self.keys.invalidate(name);
        } else if let Some((name, id)) = subjects::parse_path(path) {
            self.subjects.invalidate(name, &id);
        } else if let Some(id) = subjects::parse_erased_path(path) {
            self.subjects.invalidate_id(&id);
        }
    }

    fn periodic<'a>(&'a self, u: &'a Unsealed) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.maintain(u).await {
                tracing::warn!(error = %e, mount = self.view.prefix(), "transit key maintenance failed; will retry");
            }
        })
    }

    fn stream_limit(&self) -> u64 {
        self.streams.max_bytes
    }

    fn shutdown(&self) {
        self.keys.clear();
        self.subjects.clear();
    }
}

fn opt(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}
