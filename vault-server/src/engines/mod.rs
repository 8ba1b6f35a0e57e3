//! Secrets engines and the factory that builds them from mount-table rows.
//! Each engine gets a [`View`] of the barrier limited to its own prefix.

pub mod kv;
pub mod kv2;

use std::sync::Arc;

use crate::barrier::view::View;
use crate::core::MountEntry;
use crate::logical::{Backend, LogicalError};

/// Build the engine for a mount-table row.
pub fn build(entry: &MountEntry, view: View) -> Result<Arc<dyn Backend>, LogicalError> {
    let version = entry.options.as_ref().and_then(|o| o.get("version")).and_then(|v| v.as_str()).unwrap_or("1");
    match entry.kind.as_str() {
        "kv" | "generic" => match version {
            "1" | "" => Ok(Arc::new(kv::KvV1::new(view))),
            "2" => Ok(Arc::new(kv2::KvV2::new(view))),
            other => Err(LogicalError::InvalidRequest(format!("invalid kv version \"{other}\""))),
        },
        other => {
            if entry.options.as_ref().is_some_and(|o| o.contains_key("version")) {
                return Err(LogicalError::InvalidRequest(format!(
                    "secrets engine \"{other}\" does not allow setting a version"
                )));
            }
            Err(LogicalError::InvalidRequest(format!("plugin not found in the catalog: {other}")))
        }
    }
}
