//! Scope ids as peers see them (docs/design.md section 10, "Sealed batches"): in a sealed
//! tenant every scope id that leaves this database or comes from the control stream is the
//! keyed digest of the name (`seal::DigestKey::wire_scope`): batch streams, version vectors,
//! acks, drains, regains, grants, key epochs and voided ranges. This database keeps names
//! where it is the writer (its own streams, runs, drains, regains, exit markers, rows' scope
//! cells) and wire ids where a peer is (other origins' coverage in `_outpost_vector`, which
//! withheld and sealed batches advance alike, and the directory's entries). So a name meets a
//! wire id only where this module translates: its own streams going out, and a name checked
//! against a grant. An unsealed tenant's wire ids are the names.

use crate::error::Error;
use crate::ffi::Conn;
use outpost_protocol::scope::Scopes;
use outpost_protocol::seal::DigestKey;

/// This database's translation: the tenant's digest key once it holds one.
pub(crate) struct WireScopes(Option<DigestKey>);

impl WireScopes {
    /// As this database's keys stand now (`scope_keys.rs`).
    pub(crate) fn load(conn: Conn) -> Result<WireScopes, Error> {
        Ok(WireScopes(crate::scope_keys::digest_key(conn)?))
    }

    /// Whether this database holds a sealed tenant's digest key (ids are digests).
    pub(crate) fn sealed(&self) -> bool {
        self.0.is_some()
    }

    /// The wire id of scope `name` (`""` and `*` unchanged).
    pub(crate) fn of(&self, name: &str) -> String {
        match &self.0 {
            Some(dk) => dk.wire_scope(name),
            None => name.to_string(),
        }
    }

    /// Whether `grant` (as the directory states it: wire ids) holds scope `name`.
    pub(crate) fn holds(&self, grant: &Scopes, name: &str) -> bool {
        match (&self.0, grant) {
            (_, Scopes::All) | (None, _) => grant.contains(name),
            (Some(dk), Scopes::Only(ids)) => ids.contains(&dk.wire_scope(name)),
        }
    }

    /// The name among `names` whose wire id is `wire`, if any (`wire` itself unsealed).
    pub(crate) fn name_of<'n>(
        &self,
        wire: &str,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Option<&'n str> {
        names.into_iter().find(|n| self.of(n) == wire)
    }
}

/// The scope names this database knows: its own streams' and its rows' scope cells (tables
/// whose rule is a column). What status shows by name; a scope named only by its digest (one
/// granted but never written or pulled here yet) shows as its digest.
pub(crate) fn known_names(conn: Conn) -> Result<Vec<String>, Error> {
    let mut names: std::collections::BTreeSet<String> = crate::streams::Runs::load(conn)?
        .streams()
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    for t in crate::schema::load_tracked(conn)? {
        if let Some(crate::schema::ScopeRule::Column(c)) = &t.def.scope {
            let mut s = conn.prepare(&format!(
                "SELECT DISTINCT {} FROM {}",
                crate::schema::quote(c),
                crate::schema::quote(&t.def.name)
            ))?;
            while s.step()? {
                let v = s.text(0);
                if outpost_protocol::scope::check_name(&v).is_ok() {
                    names.insert(v);
                }
            }
        }
    }
    Ok(names.into_iter().collect())
}
