//! `outpost_uuid()`: UUIDv7 text keys a device can mint offline.
//!
//! Layout (RFC 9562, section 5.7): 48-bit Unix milliseconds, version `7`, then 74 bits that
//! start random at each new millisecond and count up within one (RFC 9562 section 6.2, method 2:
//! a monotonic random counter). The state is one per process, so ids are strictly increasing
//! across every connection of the process, also when the wall clock steps back (the last
//! millisecond is kept until the clock passes it). Text is the lowercase canonical
//! `8-4-4-4-12` form, which `outpost_pack` stores as 16 bytes.
//!
//! Two devices never coordinate: uniqueness across devices rests on the 74 random bits drawn at
//! each millisecond (getrandom), as for any UUIDv7.

use crate::error::Error;
use crate::functions::{Arg, Call};
use outpost_protocol::Value;
use std::sync::Mutex;

const RANDOM_BITS: u32 = 74;
const RANDOM_MASK: u128 = (1 << RANDOM_BITS) - 1;

/// The last id's millisecond and counter.
static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));

/// A fresh 74-bit counter start; its top bit is clear, so a millisecond has room for at least
/// 2^73 ids before the counter carries into the next millisecond.
fn random_start() -> Result<u128, Error> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|source| Error::NoRandomness {
        what: "outpost_uuid",
        source,
    })?;
    Ok(u128::from_be_bytes(b) & (RANDOM_MASK >> 1))
}

/// The next id as 128 bits after `last`, given the wall clock in Unix milliseconds.
fn next(last: &mut (u64, u128), now_ms: u64) -> Result<u128, Error> {
    let (mut ms, mut counter) = *last;
    if now_ms > ms {
        ms = now_ms;
        counter = random_start()?;
    } else {
        counter += 1;
        if counter > RANDOM_MASK {
            ms += 1;
            counter = random_start()?;
        }
    }
    *last = (ms, counter);
    Ok(assemble(ms, counter))
}

/// Places the millisecond, the version, the variant and the 74 counter bits.
fn assemble(ms: u64, counter: u128) -> u128 {
    let ms = (ms as u128) & ((1 << 48) - 1);
    let rand_a = (counter >> 62) & 0xfff;
    let rand_b = counter & ((1 << 62) - 1);
    (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
}

fn text(id: u128) -> String {
    let h = format!("{id:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `outpost_uuid()`.
pub(crate) fn sql_uuid(_call: &Call, _args: &[Arg]) -> Result<Value, Error> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    Ok(Value::Text(text(next(&mut last, now_ms)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_holds_time_version_variant() {
        let id = assemble(0x0123_4567_89ab, RANDOM_MASK);
        let t = text(id);
        assert_eq!(t, "01234567-89ab-7fff-bfff-ffffffffffff");
        let id = assemble(1, 0);
        assert_eq!(text(id), "00000000-0001-7000-8000-000000000000");
    }

    #[test]
    fn clock_stepping_back_keeps_order() {
        let mut last = (0, 0);
        let a = next(&mut last, 5_000_000_000_000).unwrap();
        let b = next(&mut last, 4_000_000_000_000).unwrap();
        assert!(b > a);
        assert_eq!(b >> 80, 5_000_000_000_000);
    }

    #[test]
    fn counter_overflow_carries_into_the_next_millisecond() {
        let mut last = (7, RANDOM_MASK);
        let c = next(&mut last, 7).unwrap();
        assert_eq!(c >> 80, 8);
    }
}
