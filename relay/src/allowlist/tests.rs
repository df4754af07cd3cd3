use super::*;

const NOW: u64 = 1_800_000_000;

fn open() -> (tempfile::TempDir, Allowlist) {
    let dir = tempfile::tempdir().unwrap();
    let a = Allowlist::open(dir.path().join("allowlist.db")).unwrap();
    (dir, a)
}

/// Device `n`'s public key.
fn public(n: u8) -> PublicKey {
    *outpost_protocol::handshake::Keypair::from_secret(&[n; 32])
        .unwrap()
        .public()
}

/// Its bytes, as lookups take them.
fn key(n: u8) -> Vec<u8> {
    public(n).as_bytes().to_vec()
}

#[test]
fn a_token_admits_one_device_once() {
    let (_dir, mut a) = open();
    let t = a
        .issue_token(NOW, DEFAULT_TOKEN_TTL_SECS, Role::Device)
        .unwrap();
    assert_eq!(t.expires_at, NOW + 900);
    let d = a
        .admit(&token_id(&t.secret), &public(1), SiteId([1; 16]), NOW + 5)
        .unwrap();
    assert_eq!((d.site, d.enrolled_at), (SiteId([1; 16]), NOW + 5));
    assert!(matches!(
        a.admit(&token_id(&t.secret), &public(2), SiteId([2; 16]), NOW + 6),
        Err(AllowlistError::TokenUsed)
    ));
    // The second device was not admitted.
    assert!(matches!(
        a.authorize(&key(2)),
        Err(AllowlistError::NotEnrolled)
    ));
    assert_eq!(a.authorize(&key(1)).unwrap().site, SiteId([1; 16]));
    assert_eq!(a.devices().unwrap().len(), 1);
}

#[test]
fn an_expired_token_admits_nobody_and_stays_unused() {
    let (_dir, mut a) = open();
    let t = a.issue_token(NOW, 60, Role::Device).unwrap();
    let err = a
        .admit(&token_id(&t.secret), &public(1), SiteId([1; 16]), NOW + 60)
        .unwrap_err();
    assert!(matches!(err, AllowlistError::TokenExpired { expired_at } if expired_at == NOW + 60));
    assert!(err.to_string().contains("expired"));
    assert!(a.devices().unwrap().is_empty());
    // Still usable a second before expiry in another test of the boundary:
    let t2 = a.issue_token(NOW, 60, Role::Device).unwrap();
    a.admit(&token_id(&t2.secret), &public(1), SiteId([1; 16]), NOW + 59)
        .unwrap();
}

#[test]
fn an_unknown_token_is_refused() {
    let (_dir, mut a) = open();
    a.issue_token(NOW, 60, Role::Device).unwrap();
    assert!(matches!(
        a.admit(&[9; 16], &public(1), SiteId([1; 16]), NOW),
        Err(AllowlistError::UnknownToken)
    ));
    assert!(a.devices().unwrap().is_empty());
}

#[test]
fn a_copied_database_presenting_a_known_site_with_another_key_is_refused() {
    let (_dir, mut a) = open();
    let t1 = a.issue_token(NOW, 60, Role::Device).unwrap();
    a.admit(&token_id(&t1.secret), &public(1), SiteId([1; 16]), NOW)
        .unwrap();
    let t2 = a.issue_token(NOW, 60, Role::Device).unwrap();
    let err = a
        .admit(&token_id(&t2.secret), &public(2), SiteId([1; 16]), NOW)
        .unwrap_err();
    assert!(matches!(err, AllowlistError::SiteBoundToOtherKey { .. }));
    assert!(err.to_string().contains("re-enroll"));
    // The refused attempt did not burn the token.
    assert_eq!(
        a.usable_token(&token_id(&t2.secret), NOW).unwrap(),
        t2.secret
    );
}

#[test]
fn a_revoked_device_is_refused_and_cannot_re_enroll() {
    let (_dir, mut a) = open();
    let t = a.issue_token(NOW, 60, Role::Device).unwrap();
    let d = a
        .admit(&token_id(&t.secret), &public(1), SiteId([0xab; 16]), NOW)
        .unwrap();
    let r = a.revoke(&d.site.to_string()[..8], NOW + 10).unwrap();
    assert_eq!(r.revoked_at, Some(NOW + 10));
    assert!(matches!(a.authorize(&key(1)), Err(AllowlistError::Revoked)));
    let t2 = a.issue_token(NOW, 60, Role::Device).unwrap();
    assert!(matches!(
        a.admit(
            &token_id(&t2.secret),
            &public(1),
            SiteId([0xab; 16]),
            NOW + 20
        ),
        Err(AllowlistError::Revoked)
    ));
    assert!(matches!(
        a.revoke("ffff", NOW),
        Err(AllowlistError::NoSuchDevice { .. })
    ));
    assert!(matches!(
        a.revoke("ab", NOW),
        Err(AllowlistError::NoSuchDevice { .. })
    ));
}

#[test]
fn revoke_refuses_an_ambiguous_prefix() {
    let (_dir, mut a) = open();
    for n in 1..=2u8 {
        let t = a.issue_token(NOW, 60, Role::Device).unwrap();
        let mut site = [0xcd; 16];
        site[15] = n;
        a.admit(&token_id(&t.secret), &public(n), SiteId(site), NOW)
            .unwrap();
    }
    assert!(matches!(
        a.revoke("cdcd", NOW),
        Err(AllowlistError::AmbiguousDevice { matches: 2, .. })
    ));
    assert!(a.devices().unwrap().iter().all(|d| d.revoked_at.is_none()));
}

#[test]
fn handshake_counters_must_strictly_increase_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.db");
    {
        let mut a = Allowlist::open(&path).unwrap();
        a.record_counter(&key(1), 5).unwrap();
        a.record_counter(&key(1), 6).unwrap();
        a.record_counter(&key(2), 1).unwrap();
    }
    let mut a = Allowlist::open(&path).unwrap();
    assert!(matches!(
        a.record_counter(&key(1), 6),
        Err(AllowlistError::CounterReplay { got: 6, last: 6 })
    ));
    assert!(matches!(
        a.record_counter(&key(1), 2),
        Err(AllowlistError::CounterReplay { .. })
    ));
    a.record_counter(&key(1), 100).unwrap();
    assert_eq!(a.last_counter(&key(1)).unwrap(), Some(100));
    assert_eq!(a.last_counter(&key(3)).unwrap(), None);
}

#[test]
fn token_ids_match_the_protocols_definition() {
    // SHA-256("outpost-enroll-token" ‖ 32 × 0x00), first 16 bytes (computed with sha256sum).
    let id = token_id(&[0u8; 32]);
    assert_eq!(hex(&id), EXPECTED_ZERO_TOKEN_ID);
    assert_eq!(id, TokenId::of(&[0u8; 32]).0);
}

#[test]
fn a_peers_vector_is_recorded_and_a_damaged_one_is_refused() {
    let (_dir, a) = open();
    let site = SiteId([5; 16]);
    assert_eq!(a.peer_vector(&site).unwrap(), None);
    let mut v = VersionVector::new();
    v.set((SiteId([1; 16])).into(), 4);
    a.record_vector(&site, &v).unwrap();
    assert_eq!(a.peer_vector(&site).unwrap(), Some(v));
    a.set_setting(&format!("vector:{site}"), "junk").unwrap();
    let err = a.peer_vector(&site).unwrap_err();
    assert!(
        matches!(err, AllowlistError::DamagedVector { site: s, .. } if s == site),
        "{err}"
    );
    assert!(err.to_string().contains("allowlist.db"), "{err}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn sessions_are_authorized_only_for_the_enrolled_site() {
    let (_dir, mut a) = open();
    let t = a.issue_token(NOW, 60, Role::Device).unwrap();
    a.admit(&token_id(&t.secret), &public(1), SiteId([1; 16]), NOW)
        .unwrap();
    a.authorize_site(&key(1), SiteId([1; 16])).unwrap();
    // Another key presenting the enrolled site: a copied database.
    assert!(matches!(
        a.authorize_site(&key(2), SiteId([1; 16])),
        Err(AllowlistError::SiteBoundToOtherKey { .. })
    ));
    // The enrolled key with a database that never enrolled.
    assert!(matches!(
        a.authorize_site(&key(1), SiteId([2; 16])),
        Err(AllowlistError::NotEnrolled)
    ));
    assert!(matches!(
        a.authorize_site(&key(3), SiteId([3; 16])),
        Err(AllowlistError::NotEnrolled)
    ));
    a.revoke("0101", NOW).unwrap();
    assert!(matches!(
        a.authorize_site(&key(1), SiteId([1; 16])),
        Err(AllowlistError::Revoked)
    ));
}

#[test]
fn consumption_is_seen_by_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.db");
    let mut a = Allowlist::open(&path).unwrap();
    let mut b = Allowlist::open(&path).unwrap();
    let t = a.issue_token(NOW, 60, Role::Device).unwrap();
    b.admit(&token_id(&t.secret), &public(1), SiteId([1; 16]), NOW)
        .unwrap();
    assert!(matches!(
        a.admit(&token_id(&t.secret), &public(2), SiteId([2; 16]), NOW),
        Err(AllowlistError::TokenUsed)
    ));
}

const EXPECTED_ZERO_TOKEN_ID: &str = "b8f28c5c7dde5eb2991cb4d47bd98fb1";

/// Codes carry a grant, which the admitted peer keeps; `set_grant` replaces it.
#[test]
fn a_codes_grant_is_the_admitted_peers_until_replaced() {
    let (_dir, mut a) = open();
    let grant = PeerGrant {
        scopes: Scopes::parse(["moshi", "arusha"]).unwrap(),
        enroll: true,
    };
    let t = a
        .issue_granted_token(NOW, DEFAULT_TOKEN_TTL_SECS, Role::Device, &grant)
        .unwrap();
    let d = a
        .admit(&token_id(&t.secret), &public(1), SiteId([1; 16]), NOW + 5)
        .unwrap();
    assert_eq!(d.grant, grant);
    let tanga = PeerGrant {
        scopes: Scopes::parse(["tanga"]).unwrap(),
        enroll: false,
    };
    assert_eq!(a.set_grant("0101", &tanga).unwrap().grant, tanga);
    assert_eq!(a.devices().unwrap()[0].grant, tanga);
}

/// A file of the schema before grants (version 2) is widened in place: its peers and unused
/// codes grant every scope, and nothing it held is lost.
#[test]
fn a_version_2_allowlist_is_widened_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE devices(key BLOB PRIMARY KEY, site BLOB NOT NULL UNIQUE,
               role TEXT NOT NULL, enrolled_at INTEGER NOT NULL, last_seen INTEGER,
               revoked_at INTEGER);
             CREATE TABLE tokens(id BLOB PRIMARY KEY, token BLOB NOT NULL UNIQUE,
               role TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
               used_at INTEGER, used_by BLOB);
             CREATE TABLE handshake_counters(key BLOB PRIMARY KEY, last INTEGER NOT NULL);
             CREATE TABLE settings(name TEXT PRIMARY KEY, value TEXT NOT NULL);
             PRAGMA user_version = 2;",
        )
        .unwrap();
        c.execute(
            "INSERT INTO devices VALUES (?1, ?2, 'device', ?3, NULL, NULL)",
            rusqlite::params![key(1), [1u8; 16], NOW as i64],
        )
        .unwrap();
    }
    let a = Allowlist::open(&path).unwrap();
    let devices = a.devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].grant, PeerGrant::default());
    assert_eq!(devices[0].site, SiteId([1; 16]));
    drop(a);
    // Opened again, it is at the current version and changes nothing.
    let a = Allowlist::open(&path).unwrap();
    assert_eq!(a.devices().unwrap().len(), 1);
}
