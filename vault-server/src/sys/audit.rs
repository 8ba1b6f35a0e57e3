//! `sys/audit` (list), `sys/audit/{path}` (enable, disable) and
//! `sys/audit-hash/{path}`, as Vault: every one needs `sudo`. The work is
//! the audit broker's (`crate::audit`); this is the API's shape.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::core::Core;
use crate::logical::{Field, FieldKind, LogicalError, Operation, Request, Response, fields};

/// `GET sys/audit`.
pub(super) const LIST: &str = "audit";
/// `PUT/POST/DELETE sys/audit/{path}`.
pub(super) const DEVICE: &str = "audit/{path+}";
/// `POST sys/audit-hash/{path}`.
pub(super) const HASH: &str = "audit-hash/{path+}";

/// What enable takes (hvac sends `type`, `description`, `options`, `local`).
pub(super) const DEVICE_FIELDS: &[Field] = &[
    Field::new("type", FieldKind::String),
    Field::new("description", FieldKind::String),
    Field::new("options", FieldKind::StringMap),
    Field::new("local", FieldKind::Bool),
];

/// What audit-hash takes.
pub(super) const HASH_FIELDS: &[Field] = &[Field::new("input", FieldKind::String)];

/// Serve one of the three patterns above.
pub(super) async fn handle(
    core: &Arc<Core>,
    u: &crate::barrier::Unsealed,
    req: Request,
) -> Result<Response, LogicalError> {
    let audit = core.audit();
    match (req.pattern(), req.op) {
        (LIST, _) => Ok(Response::data(audit.list())),
        (DEVICE, Operation::Delete) => {
            audit.disable(core.barrier(), u, req.param("path")).await?;
            Ok(Response::NoContent)
        }
        (DEVICE, _) => {
            let d = &req.data;
            let kind = fields::string(d, "type")?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| LogicalError::InvalidRequest("audit device type must be specified".into()))?;
            if fields::boolean(d, "local")?.unwrap_or(false) {
                return Err(LogicalError::InvalidRequest(
                    "local audit devices are not supported: every server records requests through the shared table"
                        .into(),
                ));
            }
            let description = fields::string(d, "description")?.unwrap_or_default();
            let options = fields::string_map(d, "options")?.unwrap_or_default();
            audit.enable(core.barrier(), u, req.param("path"), &kind, description, &options).await?;
            Ok(Response::NoContent)
        }
        (HASH, _) => {
            let input = fields::string(&req.data, "input")?
                .ok_or_else(|| LogicalError::InvalidRequest("missing required field 'input'".into()))?;
            let mut data = Map::new();
            data.insert("hash".into(), Value::String(audit.hash(req.param("path"), &input)?));
            Ok(Response::data(data))
        }
        _ => Err(LogicalError::UnsupportedOperation),
    }
}
