//! Why a batch could not be applied at all (the store then rolls the batch back).

use outpost_protocol::vector::VectorGap;
use outpost_protocol::SiteId;
use std::fmt;

/// A batch refused whole, or a store failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApplyError<E> {
    /// The store failed.
    Store(E),
    /// The batch starts past what this store covers of its stream: the changes between are
    /// missing, and applying it would record knowledge of them.
    Gap(VectorGap),
    /// The batch is this store's own (its origin is the store's site).
    OwnOrigin(SiteId),
    /// The batch contradicts itself (a body naming a table or column its header lacks).
    BadSchema(String),
    /// The store refused a row it held a moment before (a claim's holders put back when the
    /// claiming write was refused, `unique.rs`): a fault of the store, the batch rolled back
    /// rather than the row lost.
    Refused(String),
}

impl<E: fmt::Display> fmt::Display for ApplyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Store(e) => e.fmt(f),
            ApplyError::Gap(g) => write!(f, "batch does not follow what is held: {g}"),
            ApplyError::OwnOrigin(site) => write!(
                f,
                "batch of origin {site} is this database's own: it never applies its own changes"
            ),
            ApplyError::BadSchema(why) => write!(f, "batch is inconsistent: {why}"),
            ApplyError::Refused(why) => write!(f, "the store refused a row it held: {why}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ApplyError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApplyError::Store(e) => Some(e),
            _ => None,
        }
    }
}
