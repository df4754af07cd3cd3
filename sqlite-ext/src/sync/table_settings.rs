//! The tenant's table settings against this database's own declarations (docs/design.md section
//! 10): a table's direction is the cloud's to declare, in its control stream
//! (`outpost-cloud table NAME --direction D`). Once the key directory knows a cloud, every
//! tracked table must be tracked with the direction the tenant declares (`both` for a table no
//! entry names): a device tracking `forms` as `both` where the tenant says `down` would write
//! rows no one else accepts, and one tracking `both` where the tenant says `up` would wait for
//! rows that are never served to it. A mismatch is a typed error
//! ([`SyncError::DirectionMismatch`]) that the session driver raises right after the peer's
//! hello and control entries, before anything is pushed (`session.rs`). Without a cloud (a
//! hub-only deployment) the device's own declarations stand.

use crate::error::SyncError;
use crate::ffi::Conn;
use crate::schema;
use outpost_protocol::batch::Direction;
use outpost_protocol::control::Directory;

/// Checks every tracked table's direction against `directory`'s, when it knows a cloud; the
/// first table that differs (by table id) is the error.
pub(crate) fn check(conn: Conn, directory: &Directory) -> Result<(), SyncError> {
    if !directory.has_cloud() {
        return Ok(());
    }
    for t in schema::load_tracked(conn)? {
        let tenant = directory.table_direction(&t.def.name);
        let local = Direction::from(t.def.direction);
        if tenant != local {
            return Err(SyncError::DirectionMismatch {
                table: t.def.name,
                tenant,
                local,
            });
        }
        // The scope rule too, once the tenant states one for the table (its settings made
        // before scopes existed state none: the device's declaration stands then).
        if let Some(tenant) = directory.table_scope(&t.def.name) {
            let local = t.def.scope.as_ref().map(|r| r.to_protocol());
            if local.as_ref() != Some(tenant) {
                return Err(SyncError::ScopeRuleMismatch {
                    table: t.def.name,
                    tenant: tenant.clone(),
                    local,
                });
            }
        }
    }
    Ok(())
}
