//! What a mailbox file must hold after any fault: it checks (`Mailbox::check`), and the batches
//! it would serve from scratch chain per origin, each seq once, up to exactly its coverage.

use outpost_mailbox::Mailbox;
use outpost_protocol::scope::Scopes;
use outpost_protocol::VersionVector;
use std::path::Path;

/// Checks the mailbox at `path` as above; returns its vector.
pub fn check_mailbox(path: &Path) -> VersionVector {
    let m = Mailbox::open(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    m.check().unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let v = m.vector().unwrap();
    let mut next = VersionVector::new();
    for b in m
        .batches_for(&VersionVector::new(), None, &Scopes::All)
        .unwrap()
    {
        let b = b.unwrap();
        assert_eq!(
            b.range.lo,
            next.get(&b.stream_id()) + 1,
            "{path:?}: stream {} served from {} after {} (a gap or a seq twice)",
            b.stream_id(),
            b.range.lo,
            next.get(&b.stream_id())
        );
        next.set(b.stream_id(), b.range.hi);
    }
    assert_eq!(next, v, "{path:?}: served ranges = coverage");
    v
}
