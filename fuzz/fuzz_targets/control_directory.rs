//! The key directory's one decision everywhere: entries made from the input (writers among a
//! cloud and three hubs, each numbering its own entries, sometimes skipping one; small sets of
//! sites and keys, any role, revoked or not; some entries grants or table settings instead),
//! signed by their writers' keys, give the same bindings, grants, table settings and control
//! vector whatever order a replica admits them in, and admitting never panics. (A writer signing two different entries under one seq, equivocating, is outside
//! this property: replicas that saw different ones disagree until they compare streams.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::batch::Direction;
use outpost_protocol::control::{
    decode_entry, encode_entry, grant_item, key_item, table_item, Directory, Root,
};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::PeerRole;
use outpost_protocol::scope::Scopes;
use outpost_protocol::SiteId;

fn key(n: u8) -> Keypair {
    Keypair::from_secret(&[n.max(1); 32]).expect("a valid scalar")
}

fuzz_target!(|data: &[u8]| {
    // Writers: 0 the cloud (a root), 1-3 hubs (known only if the cloud binds them).
    let writer_site = |w: u8| SiteId([0xc0 + w; 16]);
    let mut entries = Vec::new();
    let mut next = [1u64; 4];
    for chunk in data.chunks_exact(4).take(24) {
        let w = chunk[0] % 4;
        // Mostly the writer's next entry; now and then one is missing (a gap).
        next[w as usize] += u64::from(chunk[1] % 8 == 7);
        let seq = next[w as usize];
        next[w as usize] += 1;
        let site = if chunk[2] & 0x80 != 0 {
            writer_site(chunk[2] % 4)
        } else {
            SiteId([chunk[2] % 8 + 1; 16])
        };
        let role = match chunk[3] % 3 {
            0 => PeerRole::Device,
            1 => PeerRole::Hub,
            _ => PeerRole::Cloud,
        };
        // Hubs' keys are 0xc1..; device keys small numbers; bit 7 of byte 3 revokes.
        let k = if site.0[0] >= 0xc0 {
            site.0[0]
        } else {
            chunk[3] % 5 + 1
        };
        // Bits 5-6 of byte 1 make a grant or a table setting instead of a key.
        let item = match (chunk[1] >> 5) & 3 {
            1 => {
                let names: &[&[&str]] = &[&["*"], &["a"], &["a", "b"], &["b"]];
                let scopes = Scopes::parse(names[usize::from(chunk[3] % 4)].iter().copied())
                    .expect("valid scopes");
                grant_item(
                    site,
                    u64::from(chunk[1] % 3) + 1,
                    scopes,
                    chunk[3] & 0x40 != 0,
                )
            }
            2 => {
                let direction =
                    [Direction::Both, Direction::Up, Direction::Down][usize::from(chunk[3] % 3)];
                let scope = (chunk[3] & 0x10 != 0)
                    .then(|| outpost_protocol::scope::ScopeRule::Column("clinic".into()));
                table_item(["forms", "visits"][usize::from(chunk[2] % 2)], direction, scope)
            }
            _ => key_item(site, key(k).public(), role, chunk[3] & 0x80 != 0),
        };
        let bytes = encode_entry(writer_site(w), seq, &item, &key(0xc0 + w));
        entries.push(decode_entry(&bytes).expect("a fresh entry decodes"));
    }
    let roots = [Root {
        site: writer_site(0),
        key: *key(0xc0).public(),
        role: PeerRole::Cloud,
    }];
    let mut forward = Directory::new(roots);
    forward.admit(entries.clone());
    let mut backward = Directory::new(roots);
    let mut reversed = entries.clone();
    reversed.reverse();
    backward.admit(reversed);
    // One at a time, in input order, as entries trickling in over many sessions.
    let mut trickle = Directory::new(roots);
    for _ in 0..entries.len() {
        for e in &entries {
            trickle.admit(vec![e.clone()]);
        }
    }
    assert_eq!(forward.vector(), backward.vector());
    assert_eq!(forward.vector(), trickle.vector());
    for s in 0..=8u8 {
        for site in [SiteId([s; 16]), writer_site(s % 4)] {
            assert_eq!(forward.binding(&site), backward.binding(&site), "{site}");
            assert_eq!(forward.binding(&site), trickle.binding(&site), "{site}");
            assert_eq!(forward.grant_of(&site), backward.grant_of(&site), "{site}");
            assert_eq!(forward.grant_of(&site), trickle.grant_of(&site), "{site}");
        }
    }
    for table in ["forms", "visits"] {
        assert_eq!(
            forward.table_direction(table),
            backward.table_direction(table)
        );
        assert_eq!(
            forward.table_direction(table),
            trickle.table_direction(table)
        );
        assert_eq!(forward.table_scope(table), backward.table_scope(table));
        assert_eq!(forward.table_scope(table), trickle.table_scope(table));
    }
});
