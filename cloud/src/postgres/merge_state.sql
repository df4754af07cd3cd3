-- The apply core's merge state (store.rs), beside capture's (capture.sql, installed first: it
-- makes outpost.capture_rows). Idempotent: run by every apply's first transaction on a database.

SET LOCAL client_min_messages = warning;

-- A row's causal length is capture's `exist`; the apply core adds its per-cell versions
-- (apply-core's RowState encoding: per value column, the (epoch, hlc, site) of the write held).
-- NULL: none (a row only back-office writes touched).
ALTER TABLE outpost.capture_rows ADD COLUMN IF NOT EXISTS versions bytea;

-- Per origin's stream: every seq up to `covered` is held (the tenant's version vector).
CREATE TABLE IF NOT EXISTS outpost.vector(
  origin bytea NOT NULL,
  stream text NOT NULL,
  covered bigint NOT NULL,
  PRIMARY KEY (origin, stream));

-- `counter` and `review` cells: protocol's CounterCell / ReviewCell as JSON, by value column
-- (the number apply-core's Table gives it: stable while columns are appended).
CREATE TABLE IF NOT EXISTS outpost.merge_cells(
  tbl integer NOT NULL,
  key jsonb NOT NULL,
  col integer NOT NULL,
  state jsonb NOT NULL,
  PRIMARY KEY (tbl, key, col));

-- Review cells with more than one sibling, for a person (the engine's outpost_conflicts:
-- table, key and column as it shows them, the siblings' values, clocks and sites).
CREATE TABLE IF NOT EXISTS outpost.conflicts(
  tbl integer NOT NULL,
  key jsonb NOT NULL,
  col integer NOT NULL,
  "table" text NOT NULL,
  pk text NOT NULL,
  col_name text NOT NULL,
  siblings jsonb NOT NULL,
  PRIMARY KEY (tbl, key, col));

-- Changes that could not be applied, kept with why (DESIGN I5); `change` is the engine's
-- quarantine JSON (origin, the batch's table, key, causal length, cells), one entry per change.
CREATE TABLE IF NOT EXISTS outpost.quarantine(
  id bigserial PRIMARY KEY,
  "table" text NOT NULL,
  pk text NOT NULL,
  reason text NOT NULL,
  change text NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS quarantine_change ON outpost.quarantine (md5(change));

-- Rows not in their app table whose values the apply core keeps (apply-core's unique.rs,
-- cascade.rs, restore.rs): a row held aside by a UNIQUE collision or with a parent held aside
-- (`held`: alive for sync, out of its table until its values are free and its parents back), or
-- a deleted row's last values (every table's, as the engine keeps them). `key_values` and `vals` are protocol Values as JSON.
CREATE TABLE IF NOT EXISTS outpost.tombstones(
  tbl integer NOT NULL,
  key jsonb NOT NULL,
  key_values text NOT NULL,
  vals text NOT NULL,
  held boolean NOT NULL,
  PRIMARY KEY (tbl, key));
-- Rows held aside, found without reading the deleted rows' tombstones (every table keeps them).
CREATE INDEX IF NOT EXISTS tombstones_held ON outpost.tombstones (tbl, key) WHERE held;

-- Per stream of the cloud's origin, the seq up to which its captured writes are merge state
-- (store/fold.rs): the back office's writes become the cloud's cell versions, counter
-- contributions and review siblings at the next apply's start, as the engine folds its log.
ALTER TABLE outpost.streams ADD COLUMN IF NOT EXISTS folded bigint NOT NULL DEFAULT 0;

-- The writes a back-office write to review cell (t, k, c) supersedes besides the cloud's own:
-- every sibling the merge state holds and every write their contexts cover, as (site, clock)
-- pairs (protocol's ReviewCell::context, not yet folded to one per site: outbox.rs does). NULL
-- when the cell has none. capture.sql records it with the write (`extra` "s"), so devices drop
-- the siblings the back office saw, as the cloud's merge state does (store/fold.rs).
CREATE OR REPLACE FUNCTION outpost.review_context(t integer, k jsonb, c integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT jsonb_agg(d)
  FROM outpost.merge_cells m,
       LATERAL jsonb_array_elements(m.state->'siblings') s,
       LATERAL (SELECT jsonb_build_array(s->'version'->'stamp'->'site', s->'version'->'stamp'->'hlc') AS d
                UNION ALL SELECT jsonb_array_elements(s->'context')) dots
  WHERE m.tbl = t AND m.key = k AND m.col = c
$$;
REVOKE ALL ON FUNCTION outpost.review_context(integer, jsonb, integer) FROM PUBLIC;
