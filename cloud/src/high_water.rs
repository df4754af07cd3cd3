//! What this process has seen exported of the cloud's own streams, kept in the data directory's
//! control file: outside the tenant's database, so a restore of the database alone does not take
//! it back. A tenant restored behind what peers may hold would issue their (site, seq) pairs again
//! for other changes, which every peer holding the first ones ignores: a silent divergence. So
//! before anything more of a stream is exported, it is latched behind (mailbox `behind.rs`) when
//! - the tenant has issued fewer seqs of it than this process exported, or
//! - the tenant's change at the highest seq exported is not the one exported (its clock differs):
//!   the database was restored and then written past that seq again (the back office writes
//!   while no cloud process runs) before a round could count the difference. Only a store that
//!   keeps its changes one per seq can tell (the PostgreSQL outbox, `TenantStore::own_stamps`);
//!   the SQLite tenant's engine keeps rows, so there only the count is compared.
//!
//! A peer's hello claim of the cloud's coverage latches nothing (mailbox `behind.rs`).
//!
//! Settings `own_exported:<origin>:<stream wire id>` hold `seq` or `seq@clock`: the highest seq
//! of the stream the mailbox held after an export round of this process, and the clock of the
//! tenant's change at that seq where the store gives one. The seq only grows. (A setting
//! `own_exported:<stream wire id>`, written before origins were named, is the site id's.) The
//! origin is the cloud's site id until a restore made it take another (`new_origin.rs`).
//!
//! The cloud's control stream is restored with the database too; `own_control` holds the
//! highest entry of it this process saw stored, so that nothing is appended to a stream restored
//! behind (its next seq may be one peers hold for another entry) before peers brought the lost
//! entries back (`new_origin.rs` waits for it).

use crate::control::{Control, ControlError};
use outpost_mailbox::{Behind, Mailbox, MailboxError};
use outpost_protocol::SiteId;
use std::collections::BTreeMap;

const PREFIX: &str = "own_exported:";
/// The setting holding the highest entry of the cloud's own control stream seen stored.
pub(crate) const CONTROL: &str = "own_control";

/// What this process recorded exporting of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exported {
    /// The highest seq exported.
    pub seq: u64,
    /// The clock of the tenant's change at `seq` when it was recorded, if the store gave one.
    pub stamp: Option<u64>,
}

impl Exported {
    fn parse(value: &str) -> Option<Exported> {
        let (seq, stamp) = match value.split_once('@') {
            Some((seq, stamp)) => (seq, Some(stamp.parse().ok()?)),
            None => (value, None),
        };
        Some(Exported {
            seq: seq.parse().ok()?,
            stamp,
        })
    }

    fn render(self) -> String {
        match self.stamp {
            Some(stamp) => format!("{}@{stamp}", self.seq),
            None => self.seq.to_string(),
        }
    }
}

/// The records of `origin`'s streams, by wire id (`site` is the cloud's site id, whose records
/// may name no origin; an unreadable one is skipped: it was not written by this code).
pub(crate) fn recorded(
    control: &Control,
    origin: SiteId,
    site: SiteId,
) -> Result<BTreeMap<String, Exported>, HighWaterError> {
    let mut out = BTreeMap::new();
    for (name, value) in control.settings_with_prefix(PREFIX)? {
        let (of, stream) = match name[PREFIX.len()..].split_once(':') {
            Some((of, stream)) => (of.parse::<SiteId>().ok(), stream),
            None => (Some(site), &name[PREFIX.len()..]),
        };
        if of != Some(origin) {
            continue;
        }
        if let Some(e) = Exported::parse(&value) {
            let held: &mut Exported = out.entry(stream.to_string()).or_insert(e);
            if e.seq > held.seq {
                *held = e;
            }
        }
    }
    Ok(out)
}

/// The seq recorded for each stream: where to ask the store for its change's clock.
pub(crate) fn seqs(records: &BTreeMap<String, Exported>) -> BTreeMap<String, u64> {
    records.iter().map(|(s, e)| (s.clone(), e.seq)).collect()
}

/// Latches behind every stream of `origin` the tenant has not issued as this process recorded
/// exporting it (module documentation): `issued` the tenant's tops, `stamps` the clocks of its
/// changes at the recorded seqs (by wire id). Returns how many streams were latched now.
pub(crate) fn check(
    records: &BTreeMap<String, Exported>,
    issued: &BTreeMap<String, u64>,
    stamps: &BTreeMap<String, u64>,
    mailbox: &mut Mailbox,
    origin: SiteId,
) -> Result<usize, HighWaterError> {
    let latched = mailbox.behind()?;
    let mut now = 0;
    for (stream, exported) in records {
        if latched.iter().any(|b| &b.stream == stream) {
            continue;
        }
        let top = issued.get(stream).copied().unwrap_or(0);
        let held = if exported.seq > top {
            top
        } else {
            match (exported.stamp, stamps.get(stream)) {
                (Some(was), Some(&is)) if was != is => {
                    log::error!(
                        "the tenant's change at seq {} of the cloud's stream {stream:?} has clock \
                         {is}, but the one this process exported there had {was}: the database \
                         was restored and written past that seq again",
                        exported.seq
                    );
                    exported.seq - 1
                }
                _ => continue,
            }
        };
        let claim = Behind {
            stream: stream.clone(),
            peer_has: exported.seq,
            held: 0,
            peer: origin,
            seen_at: 0,
        };
        mailbox.latch_behind(&claim, held)?;
        now += 1;
    }
    Ok(now)
}

/// The cloud's own streams (of `origin`) the mailbox now holds more of than `records` say: wire
/// id to the seq held.
pub(crate) fn grown(
    records: &BTreeMap<String, Exported>,
    mailbox: &Mailbox,
    origin: SiteId,
) -> Result<BTreeMap<String, u64>, HighWaterError> {
    Ok(mailbox
        .vector()?
        .iter()
        .filter(|(s, &covered)| {
            s.origin == origin && records.get(&s.scope).is_none_or(|r| r.seq < covered)
        })
        .map(|(s, &covered)| (s.scope.clone(), covered))
        .collect())
}

/// Records `grown` (from [`grown`]) of `origin`'s streams, each with the clock of the tenant's
/// change at that seq where `stamps` has one.
pub(crate) fn record(
    control: &Control,
    origin: SiteId,
    grown: &BTreeMap<String, u64>,
    stamps: &BTreeMap<String, u64>,
) -> Result<(), HighWaterError> {
    for (stream, &seq) in grown {
        let e = Exported {
            seq,
            stamp: stamps.get(stream).copied(),
        };
        control.set_setting(&format!("{PREFIX}{origin}:{stream}"), Some(&e.render()))?;
    }
    Ok(())
}

/// Records the highest entry of the cloud's own control stream (`site`) the mailbox holds,
/// where it grew. Returns the record now.
pub(crate) fn record_control(
    control: &Control,
    mailbox: &mut Mailbox,
    site: SiteId,
) -> Result<u64, HighWaterError> {
    let held = mailbox.control_vector()?.get(&site);
    let recorded = control_recorded(control)?;
    if held > recorded {
        control.set_setting(CONTROL, Some(&held.to_string()))?;
    }
    Ok(held.max(recorded))
}

/// The highest entry of the cloud's own control stream this process saw stored.
pub(crate) fn control_recorded(control: &Control) -> Result<u64, HighWaterError> {
    Ok(control
        .setting(CONTROL)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::Exported;

    #[test]
    fn a_record_reads_back_as_written_and_an_older_one_without_a_clock_too() {
        for e in [
            Exported {
                seq: 7,
                stamp: None,
            },
            Exported {
                seq: 9,
                stamp: Some(u64::MAX),
            },
        ] {
            assert_eq!(Exported::parse(&e.render()), Some(e));
        }
        assert_eq!(Exported::parse("12@x"), None);
        assert_eq!(Exported::parse("-1"), None);
    }
}

/// Why the high-water marks could not be checked or recorded.
#[derive(Debug)]
pub enum HighWaterError {
    /// The control file failed.
    Control(ControlError),
    /// The mailbox failed.
    Mailbox(MailboxError),
}

impl std::fmt::Display for HighWaterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HighWaterError::Control(e) => e.fmt(f),
            HighWaterError::Mailbox(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for HighWaterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HighWaterError::Control(e) => e.source(),
            HighWaterError::Mailbox(e) => e.source(),
        }
    }
}

impl From<ControlError> for HighWaterError {
    fn from(e: ControlError) -> Self {
        HighWaterError::Control(e)
    }
}

impl From<MailboxError> for HighWaterError {
    fn from(e: MailboxError) -> Self {
        HighWaterError::Mailbox(e)
    }
}
