//! What one REST token may read and write (docs/rest-api.md, "Which tables", "Scopes"): the
//! tenant's table directions (`up` tables are collected, never served; `down` tables are written
//! on the cloud only) narrowed by the token's own table rights (`--tables t1:rw,t2:r`: only the
//! tables it names, each read-only or read-write), and the rows of scoped tables narrowed by the
//! token's scopes (`row_scope.rs`).

use super::InvalidPush;
use crate::control::{Right, TableRights};
use crate::tables::declared_direction;
use outpost_protocol::batch::Direction;
use outpost_protocol::scope::Scopes;
use std::collections::BTreeMap;

/// The tables and rows a REST call may touch.
#[derive(Clone, Debug)]
pub struct Access {
    /// The tenant's declared directions, keyed by ASCII-lowercase name (tables not named travel
    /// both ways).
    pub declared: BTreeMap<String, Direction>,
    /// The token's rights, when it has its own (`None`: every table, by its direction).
    pub rights: Option<TableRights>,
    /// The token's scopes: the rows of scoped tables it reads and writes (unscoped tables are
    /// every token's).
    pub scopes: Scopes,
}

/// Every table by its direction, every scope: a token with no grant of its own.
impl Default for Access {
    fn default() -> Self {
        Access {
            declared: BTreeMap::new(),
            rights: None,
            scopes: Scopes::All,
        }
    }
}

impl Access {
    /// Whether pulls serve `table`.
    pub fn readable(&self, table: &str) -> bool {
        declared_direction(&self.declared, table) != Direction::Up
            && self.rights.as_ref().is_none_or(|r| r.0.contains_key(table))
    }

    /// Why a push may not write `table`, if it may not.
    pub fn refuse_write(&self, table: &str) -> Option<InvalidPush> {
        if declared_direction(&self.declared, table) == Direction::Down {
            return Some(InvalidPush::DownTable {
                table: table.to_string(),
            });
        }
        match self.rights.as_ref().map(|r| r.0.get(table)) {
            Some(None) | Some(Some(Right::Read)) => Some(InvalidPush::NotWritable {
                table: table.to_string(),
            }),
            None | Some(Some(Right::ReadWrite)) => None,
        }
    }
}
