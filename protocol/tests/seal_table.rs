//! Sealed table settings (control tag 6, docs/wire-format.md 6.2a): they open under the tenant's
//! digest key to the entry sealed, nowhere else, and every altered byte is refused; a directory
//! holding the key reads them as the tenant's settings, one without (a hub) never does.

use outpost_protocol::batch::Direction;
use outpost_protocol::control::{self, ControlItem, Directory, Root, TableEntry};
use outpost_protocol::handshake::Keypair;
use outpost_protocol::message::{Bytes, PeerRole};
use outpost_protocol::scope::ScopeRule;
use outpost_protocol::seal::table::{open_table, seal_table, TableSealError};
use outpost_protocol::seal::DigestKey;
use outpost_protocol::SiteId;

fn entry() -> TableEntry {
    TableEntry {
        name: "patients".into(),
        direction: Direction::Both,
        scope: Some(ScopeRule::Column("clinic".into())),
    }
}

fn dk() -> DigestKey {
    DigestKey::from_bytes([0x5d; 32])
}

#[test]
fn sealed_settings_open_to_the_entry_under_the_tenants_key_only() {
    let sealed = seal_table(&dk(), &entry(), [3; 12]);
    assert_eq!(open_table(&dk(), &sealed), Ok(entry()));
    for marker in [&b"patients"[..], b"clinic"] {
        assert!(sealed.windows(marker.len()).all(|w| w != marker));
    }
    let other = DigestKey::from_bytes([0x11; 32]);
    assert_eq!(
        open_table(&other, &sealed),
        Err(TableSealError::Unauthentic)
    );
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 1;
        assert_eq!(
            open_table(&dk(), &bad),
            Err(TableSealError::Unauthentic),
            "byte {i}"
        );
    }
    assert_eq!(
        open_table(&dk(), &sealed[..27]),
        Err(TableSealError::BadLength)
    );
}

#[test]
fn a_directory_reads_sealed_settings_only_with_the_digest_key() {
    let cloud = Keypair::from_secret(&[0x0c; 32]).unwrap();
    let site = SiteId([0xc1; 16]);
    let item = ControlItem::SealedTable(Bytes(seal_table(&dk(), &entry(), [4; 12])));
    let bytes = control::encode_entry(site, 1, &item, &cloud);
    let e = control::decode_entry(&bytes).unwrap();
    let root = Root {
        site,
        key: *cloud.public(),
        role: PeerRole::Cloud,
    };
    let mut hub = Directory::new([root]);
    assert!(hub.admit(vec![e.clone()]).is_empty());
    assert_eq!(hub.tables().count(), 0, "a hub never learns the table");
    let mut device = Directory::new([root]);
    assert!(device.admit(vec![e]).is_empty());
    device.set_table_key(&dk());
    assert_eq!(
        device.table_scope("patients"),
        Some(&ScopeRule::Column("clinic".into()))
    );
    // Setting the key on the hub's copy later reads them too: the entries are kept as sent.
    hub.set_table_key(&dk());
    assert_eq!(hub.tables().count(), 1);
}
