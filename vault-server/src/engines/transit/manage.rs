//! Key management: create, read, list, config, rotate, trim, delete,
//! export, backup and restore, and the periodic upkeep (usage counts,
//! rotation by age and by usage).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::Transit;
use super::crypto::{self, KeyType};
use super::key::{CONVERGENT_VERSION, Settings, TransitKey};
use super::store::{Change, Extra, POLICY_PREFIX};
use super::subjects;
use crate::barrier::Unsealed;
use crate::keys::{KeyMaterial, KeyVersion, ROTATE_AT, VersionedKey};
use crate::logical::fields;
use crate::logical::{LogicalError, Response};

fn bad(msg: impl Into<String>) -> LogicalError {
    LogicalError::InvalidRequest(msg.into())
}

fn key_error(e: crate::keys::KeyError) -> LogicalError {
    bad(e.to_string())
}

fn crypto_error(e: crypto::CryptoError) -> LogicalError {
    bad(e.to_string())
}

/// Default and bounds of `key_size` for HMAC keys (bytes), as Vault.
const HMAC_DEFAULT: usize = 32;
const HMAC_MIN: usize = 32;
const HMAC_MAX: usize = 512;

/// The shortest `auto_rotate_period` Vault accepts (an hour).
const MIN_AUTO_ROTATE: u64 = 3600;

fn auto_rotate(data: &Map<String, Value>) -> Result<Option<u64>, LogicalError> {
    let p = fields::duration(data, "auto_rotate_period")?;
    if let Some(p) = p
        && p != 0
        && p < MIN_AUTO_ROTATE
    {
        return Err(bad("auto rotate period must be 0 to disable or at least an hour"));
    }
    Ok(p)
}

impl Transit {
    pub(super) async fn list(&self, u: &Unsealed) -> Result<Response, LogicalError> {
        let keys = self.view.list(u, POLICY_PREFIX).await?;
        if keys.is_empty() {
            return Err(LogicalError::NotFound);
        }
        let mut m = Map::new();
        m.insert("keys".into(), keys.into());
        Ok(Response::data(m))
    }

    pub(super) async fn read(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        self.read_with(u, name, &Map::new()).await
    }

    /// A key read; `context` (base64, a query parameter) picks the public
    /// key of a derived ed25519 key.
    pub(super) async fn read_with(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let context = match fields::string(data, "context")? {
            Some(c) => {
                Some(Zeroizing::new(B64.decode(c.as_bytes()).map_err(|_| bad("failed to base64-decode context"))?))
            }
            None => None,
        };
        let key = self.keys.get(&self.view, u, name).await?.ok_or(LogicalError::NotFound)?;
        Ok(Response::json(describe(&key, context.as_deref().map(|c| &c[..]))?))
    }

    pub(super) async fn create(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let settings = new_settings(name, data)?;
        let now = self.clock.now_unix();
        let created = self
            .keys
            .change(&self.view, u, name, |current| match current {
                // Vault answers a create of an existing key with success and
                // changes nothing.
                Some(_) => Ok(Change::Keep(false)),
                None => Ok(Change::Write(generate(&settings, now)?, true)),
            })
            .await?;
        let key = self.keys.get(&self.view, u, name).await?.ok_or(LogicalError::NotFound)?;
        if created {
            tracing::info!(mount = self.view.prefix(), key = name, "transit key created");
        }
        Ok(Response::json(describe(&key, None)?))
    }

    /// Delete a key, and with it every subject key it wrapped.
    pub(super) async fn delete(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let subject_rows: Vec<Extra> =
            self.subject_records(u, name).await?.into_iter().map(|(_, p)| Extra::Delete(p)).collect();
        let had_subjects = !subject_rows.is_empty();
        self.keys
            .change(&self.view, u, name, |current| match current {
                None => Err(bad("could not delete key; not found")),
                Some(k) if !k.settings.deletion_allowed => Err(bad("deletion is not allowed for this key")),
                Some(_) => Ok(Change::DeleteWith(subject_rows.clone(), ())),
            })
            .await?;
        // A subject made by a request that loaded the key before the delete
        // may have committed after the listing: sweep again.
        let late: Vec<String> = self.subject_records(u, name).await?.into_iter().map(|(_, p)| p).collect();
        if !late.is_empty() {
            let mut batch = self.view.batch();
            for p in &late {
                batch.delete(p);
            }
            Box::pin(batch.commit()).await?;
        }
        self.subjects.invalidate_key(name);
        if (had_subjects || !late.is_empty())
            && let Err(e) = Box::pin(self.view.scrub()).await
        {
            tracing::warn!(error = %e, "could not checkpoint storage after deleting subject keys");
        }
        tracing::info!(mount = self.view.prefix(), key = name, "transit key deleted");
        Ok(Response::NoContent)
    }

    pub(super) async fn config(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let min_dec = version_field(data, "min_decryption_version")?;
        let min_enc = version_field(data, "min_encryption_version")?;
        let deletion_allowed = fields::boolean(data, "deletion_allowed")?;
        let exportable = fields::boolean(data, "exportable")?;
        let plaintext_backup = fields::boolean(data, "allow_plaintext_backup")?;
        let period = auto_rotate(data)?;
        self.keys
            .change(&self.view, u, name, |current| {
                let mut k = current.ok_or_else(|| bad("no such key"))?;
                let s = &mut k.settings;
                if let Some(d) = deletion_allowed {
                    s.deletion_allowed = d;
                }
                // Exportability and plaintext backup can be turned on, never
                // off (an exported key cannot be taken back); as in Vault, a
                // `false` for a key that has them is ignored.
                if exportable == Some(true) {
                    s.exportable = true;
                }
                if plaintext_backup == Some(true) {
                    s.allow_plaintext_backup = true;
                }
                if let Some(p) = period {
                    s.auto_rotate_period = p;
                }
                if min_dec.is_some() || min_enc.is_some() {
                    k.ring.set_min_versions(min_dec, min_enc).map_err(key_error)?;
                }
                Ok(Change::Write(k, ()))
            })
            .await?;
        self.read(u, name).await
    }

    pub(super) async fn rotate(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        self.rotate_key(u, name, None).await?;
        self.read(u, name).await
    }

    /// Add a version. `only_if` decides on the stored key whether the
    /// rotation is still due (scheduled rotations: of several servers, the
    /// first one rotates and the others find it no longer due).
    async fn rotate_key(
        &self,
        u: &Unsealed,
        name: &str,
        only_if: Option<&(dyn Fn(&TransitKey) -> bool + Sync)>,
    ) -> Result<bool, LogicalError> {
        let now = self.clock.now_unix();
        let rotated = self
            .keys
            .change(&self.view, u, name, |current| {
                let mut k = current.ok_or_else(|| bad("no such key"))?;
                if only_if.is_some_and(|due| !due(&k)) {
                    return Ok(Change::Keep(false));
                }
                let material = crypto::generate(k.kind, key_size(&k.settings)).map_err(crypto_error)?;
                k.ring.rotate(material, now).map_err(key_error)?;
                Ok(Change::Write(k, true))
            })
            .await?;
        if rotated {
            tracing::info!(mount = self.view.prefix(), key = name, "transit key rotated");
        }
        Ok(rotated)
    }

    pub(super) async fn trim(
        &self,
        u: &Unsealed,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let min = version_field(data, "min_available_version")?.ok_or_else(|| bad("missing min_available_version"))?;
        self.keys
            .change(&self.view, u, name, |current| {
                let mut k = current.ok_or_else(|| bad("no such key"))?;
                k.ring.trim(min).map_err(key_error)?;
                Ok(Change::Write(k, ()))
            })
            .await?;
        self.read(u, name).await
    }

    pub(super) async fn export(
        &self,
        u: &Unsealed,
        name: &str,
        kind: &str,
        version: Option<&str>,
    ) -> Result<Response, LogicalError> {
        let key = self.keys.get(&self.view, u, name).await?.ok_or(LogicalError::NotFound)?;
        if !key.settings.exportable {
            return Err(bad("key is not exportable"));
        }
        let fits = match kind {
            "encryption-key" => key.kind.is_aead(),
            "signing-key" => key.kind.is_signing(),
            "hmac-key" => true,
            _ => return Err(bad(format!("invalid export type: {kind}"))),
        };
        if !fits {
            return Err(bad(format!("{kind} is not available for a key of type {}", key.kind.name())));
        }
        let wanted = match version {
            None => None,
            Some("latest") => Some(key.ring.latest_version()),
            Some(v) => Some(v.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| bad("invalid key version"))?),
        };
        // Versions below min_decryption_version are archived: Vault does not
        // export them.
        let min = key.ring.min_decryption_version();
        if wanted.is_some_and(|w| w < min) {
            return Err(bad("version for export is below minimum decryption version"));
        }
        let mut keys = Map::new();
        for (v, kv) in key.ring.versions().filter(|(v, _)| *v >= min) {
            if wanted.is_some_and(|w| w != v) {
                continue;
            }
            let (secret, hmac_key) =
                crypto::split(key.kind, kv.material().as_bytes()).map_err(LogicalError::internal)?;
            let text: Zeroizing<String> = match kind {
                "hmac-key" => Zeroizing::new(B64.encode(hmac_key)),
                _ => crypto::export_private(key.kind, secret).map_err(LogicalError::internal)?,
            };
            keys.insert(v.to_string(), Value::String(text.as_str().to_string()));
        }
        if keys.is_empty() {
            return Err(bad("version not found"));
        }
        Ok(Response::json(json!({"name": name, "type": key.kind.name(), "keys": keys})))
    }

    /// A backup: the key record, followed by its subjects' records when it
    /// has any (live ones wrapped under the key, tombstones of destroyed
    /// ones; docs/formats.md).
    pub(super) async fn backup(&self, u: &Unsealed, name: &str) -> Result<Response, LogicalError> {
        let key = self.keys.get(&self.view, u, name).await?.ok_or(LogicalError::NotFound)?;
        if !key.settings.exportable || !key.settings.allow_plaintext_backup {
            return Err(bad(
                "exporting is disallowed on the policy: a backup needs exportable and allow_plaintext_backup",
            ));
        }
        let raw = key.encode();
        let records: Vec<subjects::Record> = self.subject_records(u, name).await?.into_iter().map(|(r, _)| r).collect();
        let raw = if records.is_empty() { raw } else { bundle(&raw, &records) };
        let text = Zeroizing::new(B64.encode(&raw[..]));
        Ok(Response::json(json!({"backup": text.as_str()})))
    }

    pub(super) async fn restore(
        &self,
        auth: &crate::auth::Authorized,
        name: Option<&str>,
        data: &Map<String, Value>,
    ) -> Result<Response, LogicalError> {
        let u = auth.unsealed();
        let from_path = name.is_some();
        let text = Zeroizing::new(fields::string(data, "backup")?.ok_or_else(|| bad("'backup' must be supplied"))?);
        let force = fields::boolean(data, "force")?.unwrap_or(false);
        let raw = Zeroizing::new(B64.decode(text.as_bytes()).map_err(|_| bad("invalid backup: not base64"))?);
        let (raw, records) = unbundle(&raw)?;
        let restored = TransitKey::decode(&raw).map_err(|_| bad("invalid backup"))?;
        subjects::check_records(&restored, &records)?;
        let records = self.restorable(u, records).await?;
        let name = name.unwrap_or(&restored.settings.name).to_string();
        super::check_name(&name)?;
        // A nameless restore takes the name from the backup, which the
        // caller wrote: the policy check ran on `restore`, not on the key it
        // names. The caller must also be allowed `restore/{name}`.
        if !from_path && !auth.may(&format!("restore/{name}"), crate::logical::Operation::Update) {
            return Err(LogicalError::PermissionDenied);
        }
        // Subjects: a restore never overwrites what this mount knows of a
        // subject (a newer key, or a tombstone: an erased subject stays
        // erased); it adds the ones it has no record of, and drops live
        // rows that do not open under the restored key (they belonged to
        // the key being replaced).
        let existing = self.subject_records(u, &name).await?;
        let mut extra = Vec::new();
        for (rec, path) in &existing {
            if !subjects::opens_under(&restored, rec) {
                extra.push(Extra::Delete(path.clone()));
            }
        }
        let known: std::collections::HashSet<&str> = existing.iter().map(|(_, p)| p.as_str()).collect();
        for rec in &records {
            let path = rec.path_under(&name).ok_or_else(|| bad("invalid backup"))?;
            if !known.contains(path.as_str()) {
                extra.push(Extra::Put(path, rec.to_bytes(), Some(crate::storage::Expect::Absent)));
            }
        }
        self.keys
            .change(&self.view, u, &name, |current| {
                if current.is_some() && !force {
                    return Err(bad(format!("key \"{name}\" already exists")));
                }
                let mut k = TransitKey::decode(&raw).map_err(|_| bad("invalid backup"))?;
                k.settings.name = name.clone();
                Ok(Change::WriteWith(k, extra.clone(), ()))
            })
            .await?;
        self.subjects.invalidate_key(&name);
        // A subject erased while this restore ran: its restored row is
        // retired now (lookups refuse it either way).
        self.retire_erased(u, &name, &records).await?;
        tracing::info!(mount = self.view.prefix(), key = %name, "transit key restored from a backup");
        Ok(Response::NoContent)
    }

    /// Periodic upkeep: store encryption counts, rotate keys whose latest
    /// version reached the random-nonce safety margin, rotate keys whose
    /// `auto_rotate_period` passed.
    pub(super) async fn maintain(&self, u: &Unsealed) -> Result<(), LogicalError> {
        // One key failing (a conflict storm, a key out of version numbers)
        // must not stop the upkeep of the others: each is logged and skipped.
        for name in self.keys.unflushed() {
            if let Err(e) = self.flush(u, &name).await {
                tracing::warn!(error = %e, mount = self.view.prefix(), key = %name, "transit usage flush failed; will retry");
            }
        }
        self.keys.prune_retired();
        let now = self.clock.now_unix();
        let due = move |k: &TransitKey| {
            let period = i64::try_from(k.settings.auto_rotate_period).unwrap_or(i64::MAX);
            (k.kind.is_aead() && k.ring.needs_rotation(ROTATE_AT))
                || (period > 0 && k.ring.latest().created_unix().saturating_add(period) <= now)
        };
        for name in self.view.list(u, POLICY_PREFIX).await? {
            let key = match self.keys.get(&self.view, u, &name).await {
                Ok(Some(k)) => k,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, mount = self.view.prefix(), key = %name, "transit key unreadable; skipped");
                    continue;
                }
            };
            if !due(&key) {
                continue;
            }
            let outcome = self.rotate_key(u, &name, Some(&due)).await;
            if let Ok(true) | Err(_) = outcome {
                self.metrics.rotation(crate::metrics::RotationKind::Transit, outcome.is_ok());
            }
            match outcome {
                Ok(true) => tracing::info!(mount = self.view.prefix(), key = %name, "scheduled transit key rotation"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, mount = self.view.prefix(), key = %name, "scheduled transit key rotation failed")
                }
            }
        }
        Ok(())
    }

    /// Add this server's unflushed encryption counts of `name` to its record.
    async fn flush(&self, u: &Unsealed, name: &str) -> Result<(), LogicalError> {
        let copies = self.keys.copies(name);
        if copies.is_empty() {
            return Ok(());
        }
        let mut added = Vec::new();
        let stored = self
            .keys
            .change(&self.view, u, name, |current| {
                let Some(mut k) = current else { return Ok(Change::Keep(false)) };
                added = copies.iter().map(|c| k.ring.absorb_usage(&c.ring)).collect();
                Ok(Change::Write(k, true))
            })
            .await?;
        if stored {
            for (c, delta) in copies.iter().zip(&added) {
                c.ring.mark_flushed(delta);
            }
        } else {
            // The key is gone: its counts no longer matter, and the copies
            // holding them (key material included) must not linger.
            self.keys.discard_retired(name);
        }
        Ok(())
    }
}

/// Backups of keys with subjects (docs/formats.md):
/// `"TKS1" | u32 BE length | key record | u32 BE count | (u32 BE length | subject record JSON)*`.
const BUNDLE: &[u8; 4] = b"TKS1";

fn bundle(key: &[u8], records: &[subjects::Record]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(key.len() + 64 * records.len() + 12));
    out.extend_from_slice(BUNDLE);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        let b = r.to_bytes();
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(&b);
    }
    out
}

/// The key record and subject records of a backup (a bare key record has
/// no subjects).
fn unbundle(raw: &[u8]) -> Result<(Zeroizing<Vec<u8>>, Vec<subjects::Record>), LogicalError> {
    let Some(mut rest) = raw.strip_prefix(&BUNDLE[..]) else {
        return Ok((Zeroizing::new(raw.to_vec()), Vec::new()));
    };
    let invalid = || bad("invalid backup");
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, LogicalError> {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(invalid)?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(invalid());
        }
        let (v, tail) = tail.split_at(len);
        *rest = tail;
        Ok(v.to_vec())
    };
    let key = Zeroizing::new(take(&mut rest)?);
    let (count, tail) = rest.split_first_chunk::<4>().ok_or_else(invalid)?;
    rest = tail;
    let count = u32::from_be_bytes(*count) as usize;
    // Each record takes at least its 4-byte length: a count beyond what the
    // bytes can hold is refused before allocating for it.
    if count > rest.len() / 4 {
        return Err(invalid());
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push(subjects::Record::from_bytes(&take(&mut rest)?)?);
    }
    if !rest.is_empty() {
        return Err(invalid());
    }
    Ok((key, records))
}

fn version_field(data: &Map<String, Value>, field: &str) -> Result<Option<u32>, LogicalError> {
    match fields::int(data, field)? {
        None => Ok(None),
        Some(v) => u32::try_from(v).map(Some).map_err(|_| bad(format!("invalid value for '{field}'"))),
    }
}

fn key_size(s: &Settings) -> Option<usize> {
    (s.key_size > 0).then_some(s.key_size)
}

fn new_settings(name: &str, data: &Map<String, Value>) -> Result<Settings, LogicalError> {
    let kind_name = fields::string(data, "type")?.unwrap_or_else(|| "aes256-gcm96".into());
    let kind = KeyType::parse(&kind_name).ok_or_else(|| {
        if kind_name.starts_with("rsa-") {
            bad("RSA keys are not offered: no constant-time RSA implementation is available to this server (see docs/transit.md)")
        } else {
            bad(format!("unknown key type {kind_name}"))
        }
    })?;
    let derived = fields::boolean(data, "derived")?.unwrap_or(false);
    let convergent = fields::boolean(data, "convergent_encryption")?.unwrap_or(false);
    if derived && !kind.supports_derivation() {
        return Err(bad(format!("key derivation is not supported for keys of type {}", kind.name())));
    }
    if convergent && !derived {
        return Err(bad("convergent encryption requires derivation to be enabled, so context is required"));
    }
    if convergent && !kind.is_aead() {
        return Err(bad(format!("convergent encryption is not supported for keys of type {}", kind.name())));
    }
    let key_size = match (kind, fields::count(data, "key_size")?) {
        (KeyType::Hmac, None | Some(0)) => HMAC_DEFAULT,
        (KeyType::Hmac, Some(n)) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if !(HMAC_MIN..=HMAC_MAX).contains(&n) {
                return Err(bad(format!("invalid key_size: must be between {HMAC_MIN} and {HMAC_MAX} bytes")));
            }
            n
        }
        (_, None | Some(0)) => 0,
        (_, Some(_)) => return Err(bad("key_size is only valid for hmac keys")),
    };
    Ok(Settings {
        name: name.to_string(),
        kind: kind.name().to_string(),
        derived,
        convergent_encryption: convergent,
        convergent_version: if convergent { CONVERGENT_VERSION } else { 0 },
        exportable: fields::boolean(data, "exportable")?.unwrap_or(false),
        allow_plaintext_backup: fields::boolean(data, "allow_plaintext_backup")?.unwrap_or(false),
        deletion_allowed: false,
        auto_rotate_period: auto_rotate(data)?.unwrap_or(0),
        key_size,
    })
}

fn generate(settings: &Settings, now: i64) -> Result<TransitKey, LogicalError> {
    let kind = KeyType::parse(&settings.kind).ok_or_else(|| bad("unknown key type"))?;
    let material = crypto::generate(kind, key_size(settings)).map_err(crypto_error)?;
    let index_key = crate::crypto::random::key32().map_err(LogicalError::internal)?;
    Ok(TransitKey {
        settings: settings.clone(),
        kind,
        ring: VersionedKey::new(material, now),
        index_key: Some(index_key),
        ciphers: Default::default(),
        subject_ids: Default::default(),
    })
}

/// Vault's key read shape.
fn describe(key: &TransitKey, context: Option<&[u8]>) -> Result<Value, LogicalError> {
    let s = &key.settings;
    // Vault lists the versions that can still decrypt.
    let mut keys = Map::new();
    for (v, kv) in key.ring.versions().filter(|(v, _)| *v >= key.ring.min_decryption_version()) {
        keys.insert(v.to_string(), version_entry(key, kv, context)?);
    }
    let mut out = json!({
        "name": s.name,
        "type": key.kind.name(),
        "derived": s.derived,
        "exportable": s.exportable,
        "allow_plaintext_backup": s.allow_plaintext_backup,
        "deletion_allowed": s.deletion_allowed,
        "keys": keys,
        "latest_version": key.ring.latest_version(),
        "min_decryption_version": key.ring.min_decryption_version(),
        "min_encryption_version": key.ring.min_encryption_version(),
        "min_available_version": key.ring.min_available_version(),
        "auto_rotate_period": s.auto_rotate_period,
        "imported_key": false,
        "supports_encryption": key.kind.is_aead(),
        "supports_decryption": key.kind.is_aead(),
        "supports_derivation": key.kind.supports_derivation(),
        "supports_signing": key.kind.is_signing(),
    });
    if let Value::Object(m) = &mut out {
        if s.derived {
            m.insert("kdf".into(), "hkdf_sha256".into());
            m.insert("convergent_encryption".into(), s.convergent_encryption.into());
            if s.convergent_encryption {
                // Vault reports -1 ("the latest derivation", version 3 today).
                m.insert("convergent_encryption_version".into(), (-1).into());
            }
        }
        if key.kind == KeyType::Hmac {
            m.insert("key_size".into(), s.key_size.into());
            // Vault shows no versions for HMAC keys.
            m.remove("keys");
        }
    }
    Ok(out)
}

/// A version in a key read: symmetric keys show their creation time (Unix
/// seconds); asymmetric keys also their public key (Vault's shape). A
/// derived ed25519 key shows the public key of `context`, if one is given.
fn version_entry(
    key: &TransitKey,
    kv: &KeyVersion<crate::keys::SecretBytes>,
    context: Option<&[u8]>,
) -> Result<Value, LogicalError> {
    if !key.kind.is_signing() {
        return Ok(kv.created_unix().into());
    }
    let (secret, _) = crypto::split(key.kind, kv.material().as_bytes()).map_err(LogicalError::internal)?;
    let public = match (key.settings.derived, context) {
        (false, _) => crypto::public_key(key.kind, secret).map_err(LogicalError::internal)?,
        (true, Some(c)) if !c.is_empty() => {
            let seed = crypto::derive_ed25519_seed(secret, c).map_err(LogicalError::internal)?;
            crypto::public_key(key.kind, &seed).map_err(LogicalError::internal)?
        }
        (true, _) => String::new(),
    };
    let curve = match key.kind {
        KeyType::EcdsaP256 => "P-256",
        KeyType::EcdsaP384 => "P-384",
        _ => "ed25519",
    };
    Ok(json!({"certificate_chain": "", "creation_time": kv.created_rfc3339(), "name": curve, "public_key": public}))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn malformed_bundles_are_refused_without_panicking() {
        let good = bundle(b"key", &[]);
        assert_eq!(&unbundle(&good).unwrap().0[..], b"key");
        // A bare key record is a bundle without subjects.
        assert!(unbundle(b"TK2...").unwrap().1.is_empty());
        let mut cases: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        cases.push([&good[..], b"x"].concat());
        cases.push([&BUNDLE[..], &u32::MAX.to_be_bytes()[..]].concat());
        cases.push([&BUNDLE[..], &[0, 0, 0, 0], &u32::MAX.to_be_bytes()[..]].concat());
        cases.push([&BUNDLE[..], &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2], b"{}"].concat());
        for c in cases.iter().filter(|c| c.starts_with(BUNDLE)) {
            assert!(unbundle(c).is_err(), "{c:?}");
        }
    }
}
