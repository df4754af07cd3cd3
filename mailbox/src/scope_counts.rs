//! Per-scope figures for status pages (docs/design.md section 10; issue 19 item 6): what a box
//! holds of each scope's streams and how many peers it serves them to. Hub and cloud show the
//! same figures from the same computation.

use crate::mailbox::MailboxStatus;
use outpost_protocol::scope::Scopes;
use serde::Serialize;
use std::collections::BTreeMap;

/// One scope's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScopeCount {
    /// The scope (`""`: the unscoped tables, which every peer is served).
    pub scope: String,
    /// Batches held in its streams, all origins.
    pub batches: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Peers granted it (explicitly or by `*`), of `grants`.
    pub peers: u64,
}

/// Per scope, in scope order: every scope the held streams or the `grants` (one per active
/// peer) name.
pub fn scope_counts(status: &MailboxStatus, grants: &[Scopes]) -> Vec<ScopeCount> {
    let blank = |scope: &str| ScopeCount {
        scope: scope.to_owned(),
        batches: 0,
        bytes: 0,
        peers: 0,
    };
    let mut counts: BTreeMap<String, ScopeCount> = BTreeMap::new();
    for o in &status.origins {
        let c = counts
            .entry(o.scope.clone())
            .or_insert_with(|| blank(&o.scope));
        c.batches += o.batches;
        c.bytes += o.bytes;
    }
    for g in grants {
        if let Scopes::Only(names) = g {
            for n in names {
                counts.entry(n.clone()).or_insert_with(|| blank(n));
            }
        }
    }
    for c in counts.values_mut() {
        c.peers = grants.iter().filter(|g| g.contains(&c.scope)).count() as u64;
    }
    counts.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::OriginStatus;
    use outpost_protocol::SiteId;

    #[test]
    fn streams_add_up_per_scope_and_each_peer_counts_where_its_grant_holds() {
        let stream = |scope: &str, batches, bytes| OriginStatus {
            origin: SiteId([1; 16]),
            scope: scope.into(),
            batches,
            bytes,
            covered: 1,
            highest: 1,
        };
        let status = MailboxStatus {
            batches: 4,
            bytes: 35,
            origins: vec![
                stream("", 1, 10),
                stream("moshi", 2, 20),
                stream("moshi", 1, 5),
            ],
            damaged: 0,
        };
        let grants = [
            Scopes::parse(["moshi"]).unwrap(),
            Scopes::parse(["tanga"]).unwrap(),
            Scopes::All,
        ];
        let counts = scope_counts(&status, &grants);
        let got: Vec<(&str, u64, u64, u64)> = counts
            .iter()
            .map(|c| (c.scope.as_str(), c.batches, c.bytes, c.peers))
            .collect();
        assert_eq!(
            got,
            [("", 1, 10, 3), ("moshi", 3, 25, 2), ("tanga", 0, 0, 2)],
            "`*` counts everywhere"
        );
    }
}
