//! Golden transcripts of our handshake: fixed static keys, fixed ephemeral randomness, exact
//! bytes. Any change to the patterns, prologue, payload layout, framing or snow's behaviour shows
//! up here; regenerate only for a deliberate protocol change (and bump the version).

use outpost_protocol::channel::Limits;
use outpost_protocol::handshake::{
    Ephemeral, Gatekeeper, Initiator, InitiatorConfig, Keypair, PublicKey, Purpose, Refusal,
    Responder, ResponderConfig, TokenId,
};
use outpost_protocol::{SiteId, PROTOCOL_VERSION};

struct Open;

impl Gatekeeper for Open {
    fn authorize(&mut self, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Ok(())
    }
    fn last_counter(&mut self, _: &PublicKey) -> Result<Option<u64>, Refusal> {
        Ok(Some(6))
    }
    fn record_counter(&mut self, _: &PublicKey, _: u64) -> Result<(), Refusal> {
        Ok(())
    }
    fn enrollment_token(&mut self, id: &TokenId) -> Result<[u8; 32], Refusal> {
        assert_eq!(*id, TokenId::of(&[0x5a; 32]));
        Ok([0x5a; 32])
    }
    fn check_enrollment(&mut self, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Ok(())
    }
    fn admit(&mut self, _: &TokenId, _: &PublicKey, _: &SiteId) -> Result<(), Refusal> {
        Ok(())
    }
}

/// (message 1, message 2, [message 3 +] "hello hub" from the device, "hello device" from the hub)
fn transcript(purpose: Purpose) -> [String; 4] {
    let device = Keypair::from_secret(&[1; 32]).unwrap();
    let hub = Keypair::from_secret(&[2; 32]).unwrap();
    let cfg = InitiatorConfig {
        identity: device,
        site: SiteId([0x11; 16]),
        counter: 7,
        responder_key: *hub.public(),
        responder_site: SiteId([0xaa; 16]),
        purpose,
        version: PROTOCOL_VERSION,
    };
    let mut i =
        Initiator::start(&cfg, Ephemeral::from_seed([3; 32]), Limits::default(), 0).unwrap();
    let m1 = i.take_outgoing();
    let mut r = Responder::new(
        ResponderConfig {
            identity: hub,
            site: SiteId([0xaa; 16]),
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
        },
        Ephemeral::from_seed([4; 32]),
        Limits::default(),
        0,
    );
    let early = r.receive(&mut m1.as_slice(), 0, &mut Open).unwrap();
    let m2 = r.take_outgoing();
    let mut ic = i.receive(&mut m2.as_slice(), 0).unwrap().unwrap();
    ic.send(b"hello hub").unwrap();
    let from_device = ic.take_outgoing();
    let mut rest = from_device.as_slice();
    let mut rc = match early {
        Some(c) => c,
        None => r.receive(&mut rest, 0, &mut Open).unwrap().unwrap(),
    };
    assert_eq!(rc.receive(&mut rest, 0).unwrap().unwrap(), b"hello hub");
    rc.send(b"hello device").unwrap();
    let from_hub = rc.take_outgoing();
    assert_eq!(
        ic.receive(&mut from_hub.as_slice(), 0).unwrap().unwrap(),
        b"hello device"
    );
    [
        hex::encode(m1),
        hex::encode(m2),
        hex::encode(from_device),
        hex::encode(from_hub),
    ]
}

#[test]
fn session_handshake_transcript_is_exact() {
    let t = transcript(Purpose::Session);
    println!("{t:#?}");
    assert_eq!(t, SESSION);
}

#[test]
fn enrollment_handshake_transcript_is_exact() {
    let t = transcript(Purpose::Enroll { token: [0x5a; 32] });
    println!("{t:#?}");
    assert_eq!(t, ENROLL);
}

#[test]
fn identity_keys_have_stable_text_forms() {
    let device = Keypair::from_secret(&[1; 32]).unwrap();
    let text = device.public().to_string();
    println!("{text} {}", device.public().fingerprint());
    assert_eq!(text, DEVICE_KEY_TEXT);
    assert_eq!(text.parse::<PublicKey>().unwrap(), *device.public());
}

const DEVICE_KEY_TEXT: &str = "p256:Am_wO5SSQc4drdQ1GeaWDgqFtBppoFwygQOqK84VlMoW";
const SESSION: [&str; 4] = [
    "00bd00020004ce41ba35350b2609df117faaf4d7f8b1dac859dbd550f778ac42daeb9ab5bde3f3934a700bf1300990a334b7d0ff484728ca9e10c8f0e67956ce2cf5d696dff064a3d658facac801408e80de567fff178247ce5a7288982b762314dfd57dd0c13629b8d4c06131e72935da712bee52d7926022d0eb5e0bf4cb33db6f6100cc941aa8b062225d2b527498d7143ef6b12e6f286660de264a95573d34971b1402ecf5501319c20c7a4d08f2c07f726726395e4555852ab6e4dcff",
    "0052048cdf9cd83211cf09f4d1d7f3b2bee94437f6bae516cbe25b62f43d309ce9050190642f6914df210b7dd7995970bd9f6a6862e7cc852052652d008869c6a72ebcdca84ad56125081e113a703914d045cb2b",
    "001aeefadd6e6bbe6f574c0f37fdd8d33ae3c5989c2bf2ecf868e40e",
    "001d2f311d27d62836c25f43974f626b085011efcabcec4066c4c50d30d1ba",
];
const ENROLL: [&str; 4] = [
    "00cd00020104ce41ba35350b2609df117faaf4d7f8b1dac859dbd550f778ac42daeb9ab5bde3f3934a700bf1300990a334b7d0ff484728ca9e10c8f0e67956ce2cf5d696dff0db362f9ac5c5806b8d24a746872c57d161a2f0d2e9672cceaa1bca30c839a946e7559180be0924e986f01344e7135d3008f37b1585d4b170e48f4e6deae447e8721374fac1730690f94ea265d955ff6facebc681cb019bfda4018d093b838ec821a98d612ece3f7e1c4621283aef454e3e236307ca2163db964be76f14beba043eadf91407c181eb05",
    "0052048cdf9cd83211cf09f4d1d7f3b2bee94437f6bae516cbe25b62f43d309ce9050190642f6914df210b7dd7995970bd9f6a6862e7cc852052652d008869c6a72ebc67b91b5b9ee1d0f08702d38ce70290f363",
    "00186666f34958b4aba833bca85330f2d0ae8c593e258999cf88001a5e519098911951e054554d494729460e723f80badb79ce0081e9",
    "001d6ec1bce26288bcc1ca741b03a17a3e2e1e25d3e16e9edde9d90ce6011b",
];
