//! This database's own streams (docs/design.md section 10, "Scopes"): each own change belongs to
//! one stream, the scope of its row (`""` for unscoped tables), and each stream numbers its
//! changes 1, 2, 3... without gaps.
//!
//! The local seq (`_outpost_log.seq`) stays the internal order of every own change: row state,
//! re-stamps and pending rows keep using it. `_outpost_runs` maps it to (stream, stream seq) in
//! runs: a run says that local seqs `lseq .. lseq + n` are stream seqs `sseq .. sseq + n` of
//! `stream`. Runs cover the local seqs from 1 without holes: a local seq that carries no change
//! (a write fold skips, an entry dropped by untracking) still belongs to a stream, so that a
//! database whose writes all go to one stream has one run, and its stream seqs are its local
//! seqs: an unscoped database numbers its stream `""` exactly as it numbered its changes before
//! streams existed.
//!
//! Seqs are assigned to streams when the log is folded (`fold.rs`, which finds each write's
//! stream in `row_scope.rs`), never in the triggers, so writing costs what it did. A local seq
//! allocated outside the log's fold (a row re-created by the apply, `apply/restore.rs`) is
//! assigned at once. Stream seqs are never reused.
//!
//! **Grant versions.** Each run also records the version of this device's grant under which its
//! seqs were assigned (0: no grant known), and a new run starts where it changes, so every batch
//! can name the version it was written under (`BatchMeta::grant_version`; docs/design.md section
//! 10, "One decision everywhere"): relays judge a batch by that version, and a device regranted
//! out of a scope still pushes what it wrote there before (the scope drains). The log is folded
//! before a change of this device's own grant is admitted (`sync/store.rs`), so the writes made
//! under the old grant are numbered under it.

use crate::error::Error;
use crate::ffi::Conn;
use std::collections::HashMap;

/// The bookkeeping of own streams: the runs, and per scoped stream the marks `acked.rs` and
/// `restamp.rs` keep (stream `""` keeps its marks in `_outpost_meta`, where they were before
/// streams existed).
pub(crate) const TABLES: &str = "
CREATE TABLE IF NOT EXISTS _outpost_runs(lseq INTEGER PRIMARY KEY, stream TEXT NOT NULL, sseq INTEGER NOT NULL,
  n INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS _outpost_runs_stream ON _outpost_runs(stream, lseq);
CREATE TABLE IF NOT EXISTS _outpost_stream_marks(stream TEXT NOT NULL, k TEXT NOT NULL, v INTEGER NOT NULL,
  PRIMARY KEY(stream, k)) WITHOUT ROWID;
";

/// Adds the grant version of each run to a database whose runs were made before runs had one:
/// its runs were all written before this device's grant had versions here, version 0 (judged by
/// the grant the pusher holds at the relay, as before).
pub(crate) fn upgrade(conn: Conn) -> Result<(), Error> {
    let old = conn.query_i64(
        "SELECT 1 FROM sqlite_master WHERE name = '_outpost_runs' \
         AND NOT EXISTS (SELECT 1 FROM pragma_table_info('_outpost_runs') WHERE name = 'version')",
        &[],
    )?;
    if old.is_none() {
        return Ok(());
    }
    conn.exec("ALTER TABLE _outpost_runs ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
}

/// One run of local seqs in one stream, written under one grant version.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Run {
    lseq: u64,
    stream: usize,
    sseq: u64,
    n: u64,
    version: u64,
}

/// The runs, read once for an export, a re-stamp or a pending snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct Runs {
    runs: Vec<Run>,
    streams: Vec<String>,
    /// Per stream (index into `streams`), its runs (indexes into `runs`), in order.
    by_stream: Vec<Vec<usize>>,
}

impl Runs {
    /// Reads every run.
    pub(crate) fn load(conn: Conn) -> Result<Runs, Error> {
        let mut r = Runs::default();
        let mut s =
            conn.prepare("SELECT lseq, stream, sseq, n, version FROM _outpost_runs ORDER BY lseq")?;
        let mut index: HashMap<String, usize> = HashMap::new();
        while s.step()? {
            let name = s.text(1);
            let stream = match index.get(&name) {
                Some(&i) => i,
                None => {
                    r.streams.push(name.clone());
                    r.by_stream.push(Vec::new());
                    index.insert(name, r.streams.len() - 1);
                    r.streams.len() - 1
                }
            };
            r.by_stream[stream].push(r.runs.len());
            r.runs.push(Run {
                lseq: s.i64(0) as u64,
                stream,
                sseq: s.i64(2) as u64,
                n: s.i64(3) as u64,
                version: s.i64(4).max(0) as u64,
            });
        }
        Ok(r)
    }

    /// The streams that hold any seq, in the order they first appeared.
    pub(crate) fn streams(&self) -> &[String] {
        &self.streams
    }

    fn index(&self, stream: &str) -> Option<usize> {
        self.streams.iter().position(|s| s == stream)
    }

    /// The stream and stream seq of local seq `lseq` (`None`: not assigned yet).
    pub(crate) fn stream_of(&self, lseq: u64) -> Option<(&str, u64)> {
        let i = self
            .runs
            .partition_point(|r| r.lseq <= lseq)
            .checked_sub(1)?;
        let r = &self.runs[i];
        (lseq < r.lseq + r.n).then(|| (self.streams[r.stream].as_str(), r.sseq + (lseq - r.lseq)))
    }

    /// The local seq of `stream`'s seq `sseq`.
    pub(crate) fn local_of(&self, stream: &str, sseq: u64) -> Option<u64> {
        let runs = &self.by_stream[self.index(stream)?];
        let i = runs
            .partition_point(|&r| self.runs[r].sseq <= sseq)
            .checked_sub(1)?;
        let r = &self.runs[runs[i]];
        (sseq < r.sseq + r.n).then(|| r.lseq + (sseq - r.sseq))
    }

    /// The grant version `stream`'s seq `sseq` was written under, and the last seq of the
    /// stretch of the stream's seqs from `sseq` on written under that same version (`None`:
    /// `sseq` is not assigned). A batch names one version, so an export stops there.
    pub(crate) fn stretch(&self, stream: &str, sseq: u64) -> Option<(u64, u64)> {
        let runs = &self.by_stream[self.index(stream)?];
        let i = runs
            .partition_point(|&r| self.runs[r].sseq <= sseq)
            .checked_sub(1)?;
        let first = &self.runs[runs[i]];
        if sseq >= first.sseq + first.n {
            return None;
        }
        let last = runs[i..]
            .iter()
            .map(|&r| &self.runs[r])
            .take_while(|r| r.version == first.version)
            .last()
            .unwrap_or(first);
        Some((first.version, last.sseq + last.n - 1))
    }

    /// The stream's seqs as (grant version, last seq) stretches, in seq order: seqs
    /// `1..=first.1` under `first.0`, then up to the next one's last seq, and so on.
    pub(crate) fn stretches(&self, stream: &str) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let Some(i) = self.index(stream) else {
            return out;
        };
        for &r in &self.by_stream[i] {
            let r = &self.runs[r];
            let last = r.sseq + r.n - 1;
            match out.last_mut() {
                Some((v, to)) if *v == r.version => *to = last,
                _ => out.push((r.version, last)),
            }
        }
        out
    }

    /// The highest seq of `stream` (0: none).
    pub(crate) fn top(&self, stream: &str) -> u64 {
        self.index(stream)
            .and_then(|i| self.by_stream[i].last())
            .map_or(0, |&r| self.runs[r].sseq + self.runs[r].n - 1)
    }

    /// The highest local seq assigned (0: none).
    pub(crate) fn last_local(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.lseq + r.n - 1)
    }

    /// The smallest local seq whose stream seq is above its stream's entry in `marks` (a stream
    /// missing there counts from 0), minus one: every local seq at or below it is covered.
    pub(crate) fn floor(&self, marks: &HashMap<String, u64>) -> u64 {
        let mut floor = self.last_local();
        for name in &self.streams {
            let mark = marks.get(name).copied().unwrap_or(0);
            if let Some(l) = self.local_of(name, mark + 1) {
                floor = floor.min(l - 1);
            }
        }
        floor
    }

    /// Whether local seq `lseq` is at or below its stream's mark in `marks`. A seq not assigned
    /// yet is not.
    pub(crate) fn covered(&self, marks: &HashMap<String, u64>, lseq: u64) -> bool {
        self.stream_of(lseq)
            .is_some_and(|(s, sseq)| sseq <= marks.get(s).copied().unwrap_or(0))
    }
}

/// The highest local seq assigned to a stream (0: none).
pub(crate) fn last_local(conn: Conn) -> Result<u64, Error> {
    Ok(conn
        .query_i64(
            "SELECT coalesce(max(lseq + n - 1), 0) FROM _outpost_runs",
            &[],
        )?
        .unwrap_or(0)
        .max(0) as u64)
}

/// The highest seq of every own stream, the log's entries not folded yet included (read only:
/// `outpost_db_version` and the vector do not fold), in stream order.
pub(crate) fn tops(conn: Conn) -> Result<std::collections::BTreeMap<String, u64>, Error> {
    let runs = Runs::load(conn)?;
    let mut tops: std::collections::BTreeMap<String, u64> = runs
        .streams()
        .iter()
        .map(|s| (s.clone(), runs.top(s)))
        .collect();
    let mut from = runs.last_local();
    let tables = crate::schema::load_tracked(conn)?;
    for (to, stream) in crate::row_scope::of_log(conn, &tables, from)? {
        *tops.entry(stream).or_default() += to - from;
        from = to;
    }
    Ok(tops)
}

/// Assigns local seqs up to `to` (those above the last assigned one) to `stream`, written
/// under grant version `version`: extends the last run when it is `stream`'s under that
/// version, else starts a run at the stream's next seq.
pub(crate) fn assign(conn: Conn, to: u64, stream: &str, version: u64) -> Result<(), Error> {
    Assigner::new(conn, version)?.assign(to, stream)
}

/// Assigns seqs run after run with statements prepared once (a fold may start thousands of
/// runs: writes alternating between scopes), all under one grant version.
pub(crate) struct Assigner {
    /// The last run: (first local seq, stream, first stream seq, count, version); `None`
    /// before any.
    last: Option<(u64, String, u64, u64, u64)>,
    /// The grant version the seqs are assigned under.
    version: u64,
    /// The next seq of the streams met so far.
    next: HashMap<String, u64>,
    extend: crate::ffi::Stmt,
    insert: crate::ffi::Stmt,
    next_of: crate::ffi::Stmt,
}

impl Assigner {
    pub(crate) fn new(conn: Conn, version: u64) -> Result<Assigner, Error> {
        let mut s = conn.prepare(
            "SELECT lseq, stream, sseq, n, version FROM _outpost_runs ORDER BY lseq DESC LIMIT 1",
        )?;
        let last = if s.step()? {
            Some((
                s.i64(0) as u64,
                s.text(1),
                s.i64(2) as u64,
                s.i64(3) as u64,
                s.i64(4).max(0) as u64,
            ))
        } else {
            None
        };
        Ok(Assigner {
            last,
            version,
            next: HashMap::new(),
            extend: conn.prepare("UPDATE _outpost_runs SET n = ?2 WHERE lseq = ?1")?,
            insert: conn.prepare(
                "INSERT INTO _outpost_runs(lseq, stream, sseq, n, version) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            next_of: conn.prepare(
                "SELECT sseq + n FROM _outpost_runs WHERE stream = ?1 ORDER BY lseq DESC LIMIT 1",
            )?,
        })
    }

    /// See [`assign`].
    pub(crate) fn assign(&mut self, to: u64, stream: &str) -> Result<(), Error> {
        let from = match &self.last {
            Some((lseq, _, _, n, _)) if to < lseq + n => return Ok(()),
            Some((lseq, _, _, n, _)) => lseq + n,
            None => 1,
        };
        if let Some((lseq, s, sseq, n, version)) = &mut self.last {
            if s == stream && *version == self.version {
                *n = to - *lseq + 1;
                self.extend.bind_i64(1, *lseq as i64)?;
                self.extend.bind_i64(2, *n as i64)?;
                self.extend.run()?;
                self.next.insert(stream.to_string(), *sseq + *n);
                return Ok(());
            }
        }
        let sseq = match self.next.get(stream) {
            Some(&next) => next,
            None => {
                self.next_of.bind_text(1, stream)?;
                let next = if self.next_of.step()? {
                    self.next_of.i64(0) as u64
                } else {
                    1
                };
                self.next_of.reset();
                next
            }
        };
        let n = to - from + 1;
        self.insert.bind_i64(1, from as i64)?;
        self.insert.bind_text(2, stream)?;
        self.insert.bind_i64(3, sseq as i64)?;
        self.insert.bind_i64(4, n as i64)?;
        self.insert
            .bind_i64(5, i64::try_from(self.version).unwrap_or(i64::MAX))?;
        self.insert.run()?;
        self.next.insert(stream.to_string(), sseq + n);
        self.last = Some((from, stream.to_string(), sseq, n, self.version));
        Ok(())
    }
}

/// A mark of a scoped stream (`k`: what it marks), 0 when never set.
pub(crate) fn mark(conn: Conn, stream: &str, k: &str) -> Result<Option<u64>, Error> {
    let mut s = conn.prepare("SELECT v FROM _outpost_stream_marks WHERE stream = ?1 AND k = ?2")?;
    s.bind_text(1, stream)?;
    s.bind_text(2, k)?;
    Ok(if s.step()? {
        Some(s.i64(0).max(0) as u64)
    } else {
        None
    })
}

/// Every scoped stream's mark `k`.
pub(crate) fn marks(conn: Conn, k: &str) -> Result<HashMap<String, u64>, Error> {
    let mut s = conn.prepare("SELECT stream, v FROM _outpost_stream_marks WHERE k = ?1")?;
    s.bind_text(1, k)?;
    let mut out = HashMap::new();
    while s.step()? {
        out.insert(s.text(0), s.i64(1).max(0) as u64);
    }
    Ok(out)
}

/// Sets a scoped stream's mark `k` to `v`; `raise`: never lowers it.
pub(crate) fn set_mark(
    conn: Conn,
    stream: &str,
    k: &str,
    v: u64,
    raise: bool,
) -> Result<(), Error> {
    let sql = if raise {
        "INSERT INTO _outpost_stream_marks(stream, k, v) VALUES (?1, ?2, ?3) \
         ON CONFLICT(stream, k) DO UPDATE SET v = max(v, excluded.v)"
    } else {
        "INSERT INTO _outpost_stream_marks(stream, k, v) VALUES (?1, ?2, ?3) \
         ON CONFLICT(stream, k) DO UPDATE SET v = excluded.v"
    };
    let mut s = conn.prepare(sql)?;
    s.bind_text(1, stream)?;
    s.bind_text(2, k)?;
    s.bind_i64(3, i64::try_from(v).unwrap_or(i64::MAX))?;
    s.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(list: &[(u64, &str, u64, u64)]) -> Runs {
        let list: Vec<_> = list.iter().map(|&(l, s, q, n)| (l, s, q, n, 0)).collect();
        versioned(&list)
    }

    fn versioned(list: &[(u64, &str, u64, u64, u64)]) -> Runs {
        let mut r = Runs::default();
        for &(lseq, name, sseq, n, version) in list {
            let stream = match r.index(name) {
                Some(i) => i,
                None => {
                    r.streams.push(name.into());
                    r.by_stream.push(Vec::new());
                    r.streams.len() - 1
                }
            };
            r.by_stream[stream].push(r.runs.len());
            r.runs.push(Run {
                lseq,
                stream,
                sseq,
                n,
                version,
            });
        }
        r
    }

    #[test]
    fn a_stream_splits_into_stretches_where_its_grant_version_changes() {
        // moshi 1-3 under version 1, "" 1 under 1, moshi 4 under 1, moshi 5-6 under 2.
        let r = versioned(&[
            (1, "moshi", 1, 3, 1),
            (4, "", 1, 1, 1),
            (5, "moshi", 4, 1, 1),
            (6, "moshi", 5, 2, 2),
        ]);
        assert_eq!(r.stretches("moshi"), [(1, 4), (2, 6)]);
        assert_eq!(
            r.stretch("moshi", 2),
            Some((1, 4)),
            "across the unscoped run"
        );
        assert_eq!(r.stretch("moshi", 5), Some((2, 6)));
        assert_eq!(r.stretch("moshi", 7), None);
        assert_eq!(r.stretch("tanga", 1), None);
        assert_eq!(r.stretches(""), [(1, 1)]);
    }

    #[test]
    fn local_and_stream_seqs_map_both_ways_through_runs() {
        // Local 1-3 moshi 1-3, 4-5 "" 1-2, 6 moshi 4, 7-9 tanga 1-3.
        let r = runs(&[
            (1, "moshi", 1, 3),
            (4, "", 1, 2),
            (6, "moshi", 4, 1),
            (7, "tanga", 1, 3),
        ]);
        assert_eq!(r.stream_of(2), Some(("moshi", 2)));
        assert_eq!(r.stream_of(5), Some(("", 2)));
        assert_eq!(r.stream_of(6), Some(("moshi", 4)));
        assert_eq!(r.stream_of(10), None);
        assert_eq!(r.local_of("moshi", 4), Some(6));
        assert_eq!(r.local_of("moshi", 5), None);
        assert_eq!(r.local_of("tanga", 1), Some(7));
        assert_eq!((r.top("moshi"), r.top(""), r.top("x")), (4, 2, 0));
        let marks: HashMap<String, u64> = [("moshi".to_string(), 3), ("".to_string(), 2)].into();
        assert_eq!(
            r.floor(&marks),
            5,
            "moshi 4 (local 6) is the first not covered"
        );
        assert!(r.covered(&marks, 5) && !r.covered(&marks, 6) && !r.covered(&marks, 7));
    }
}
