-- Capture of back-office writes: the objects every tracked table's triggers share (capture.rs
-- installs them, then one trigger function per table). Idempotent: run in every transaction that
-- installs a table's capture. `{ROLE}` is replaced by the cloud's role (a string literal), the
-- only session allowed to write with capture skipped.

SET LOCAL client_min_messages = warning;

-- The cloud's one clock (docs/design.md section 11): the last clock a transaction that captured
-- committed. Locked (FOR UPDATE, no new row version) by the first capture of a transaction and
-- held until it ends; the clocks issued inside it are kept in the transaction-local setting
-- outpost.capture_hlc and written back once per statement (outpost.capture_flush), because
-- updating one row per captured row costs quadratic time in a large statement.
--
-- The clock row is also what orders back-office writes and devices' applies: a capturing
-- transaction holds it from its first statement on a tracked table (outpost.capture_hold, a
-- BEFORE ... FOR EACH STATEMENT trigger) and an apply from its start (store.rs), so an apply
-- reads the merge state with every back-office write committed before it folded in, and no
-- back-office write changes a row while an apply decides about it.
--
-- `wall_shift_ms` is a test hook, as the engine's `test_wall_shift_ms` (sqlite-ext/src/clock.rs):
-- the wall clock read moved by that many milliseconds. Only the cloud's role writes this table.
CREATE TABLE IF NOT EXISTS outpost.clock(
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  hlc bigint NOT NULL);
INSERT INTO outpost.clock(one, hlc) VALUES (true, 0) ON CONFLICT DO NOTHING;
ALTER TABLE outpost.clock ADD COLUMN IF NOT EXISTS wall_shift_ms bigint NOT NULL DEFAULT 0;

-- One row per stream of the cloud's origin: its lock (taken by the first capture of a
-- transaction in that stream, so seqs are issued one transaction at a time) and the floor of
-- its seqs (what pruning the outbox keeps). A stream's top is max(floor, the outbox's seqs).
CREATE TABLE IF NOT EXISTS outpost.streams(
  stream text PRIMARY KEY,
  seq bigint NOT NULL DEFAULT 0);

-- The tables whose writes are captured: the definition a batch header carries for each
-- (TableSchema as JSON, named as the table is here), by a small id the outbox uses.
CREATE TABLE IF NOT EXISTS outpost.captured(
  id serial PRIMARY KEY,
  name text NOT NULL UNIQUE,
  def jsonb NOT NULL);

-- Per row of a tracked table: its causal length (odd alive, even deleted) and the cloud's own
-- counter contributions and review clocks in that epoch. A row without one is alive at 1 with
-- nothing of the cloud's. The apply core keeps `exist` current for the rows it applies.
-- `key` is the row's key as the outbox's jsonb prints it (`["p1"]`, `[5, "a"]`: one text, which
-- the apply's store makes the same way, pg_value.rs `key_json`), compared bytewise: a jsonb key
-- is parsed and compared as a document, which made reading and writing row state the largest
-- part of an apply's time.
CREATE TABLE IF NOT EXISTS outpost.capture_rows(
  tbl integer NOT NULL,
  key text COLLATE "C" NOT NULL,
  exist bigint NOT NULL,
  counters jsonb,
  reviews jsonb,
  PRIMARY KEY (tbl, key));
DO $$
BEGIN
  IF (SELECT atttypid = 'jsonb'::regtype FROM pg_attribute
      WHERE attrelid = 'outpost.capture_rows'::regclass AND attname = 'key') THEN
    ALTER TABLE outpost.capture_rows ALTER COLUMN key TYPE text COLLATE "C" USING key::text;
  END IF;
END
$$;

-- The captured changes: one per row written, numbered per stream without gaps. `cells` holds
-- the value columns written (by value-column number: the new value, a counter's own total in the
-- epoch); `extra` a counter's delta ("d"), a review write's superseded own clock ("c") and the
-- other writes it supersedes ("s": (site, clock) pairs, outpost.review_context).
-- op: 1 insert, 2 update, 3 delete.
CREATE TABLE IF NOT EXISTS outpost.outbox(
  stream text NOT NULL,
  seq bigint NOT NULL,
  hlc bigint NOT NULL,
  tbl integer NOT NULL,
  key jsonb NOT NULL,
  exist bigint NOT NULL,
  op smallint NOT NULL,
  cells jsonb,
  extra jsonb,
  PRIMARY KEY (stream, seq));

-- A scope cell's stream: the value when it is a scope name, else the unscoped stream (as on
-- devices: row_scope.rs).
CREATE OR REPLACE FUNCTION outpost.stream_of(v text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN v ~ '^[A-Za-z0-9_.-]{1,64}$' THEN v ELSE '' END
$$;

-- The contract with the apply core: a transaction applying devices' changes says so with
-- SET LOCAL outpost.applying = 'on', and its writes are not captured. Any role can set a
-- custom setting, so only the cloud's own session may: another is refused, not skipped.
CREATE OR REPLACE FUNCTION outpost.capture_skipped() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(current_setting('outpost.applying', true), '') <> 'on' THEN
    RETURN false;
  END IF;
  IF session_user::text <> {ROLE} THEN
    RAISE EXCEPTION 'outpost.applying is set by role %, but only the cloud''s role % applies devices'' changes: this write would not reach devices', session_user, {ROLE}
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN true;
END
$$;

-- Holds the clock row until the transaction ends (FOR UPDATE, no new row version), once per
-- transaction: its clock goes to outpost.capture_hlc and its test shift to outpost.capture_shift
-- (both set only while the lock is held: they end with a rolled-back savepoint, as the lock does).
CREATE OR REPLACE FUNCTION outpost.clock_hold() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  last bigint := nullif(current_setting('outpost.capture_hlc', true), '')::bigint;
  shift bigint;
BEGIN
  IF last IS NULL THEN
    SELECT c.hlc, c.wall_shift_ms INTO last, shift FROM outpost.clock c WHERE c.one FOR UPDATE;
    PERFORM set_config('outpost.capture_hlc', last::text, true);
    PERFORM set_config('outpost.capture_shift', shift::text, true);
  END IF;
  RETURN last;
END
$$;

-- The next clock of the cloud's origin: max(wall, last + 1) (protocol/src/hlc.rs), the wall
-- clock adopted up to PG_CEILING_MILLIS (below). The first tick of a transaction holds the clock
-- row (outpost.clock_hold) unless its statement trigger did already.
CREATE OR REPLACE FUNCTION outpost.tick() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  last bigint := coalesce(nullif(current_setting('outpost.capture_hlc', true), '')::bigint,
                          outpost.clock_hold());
  shift bigint := coalesce(nullif(current_setting('outpost.capture_shift', true), '')::bigint, 0);
  wall bigint;
  h bigint;
BEGIN
  wall := least(greatest(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + shift, 0),
                140737471578111) << 16;
  h := greatest(wall, last + 1);
  PERFORM set_config('outpost.capture_hlc', h::text, true);
  RETURN h;
END
$$;

-- Takes note of a clock received from a peer (the apply core), so later captured writes order
-- after it: protocol/src/hlc.rs's observe. A clock is a bigint here, so the ceiling is
-- protocol/src/hlc.rs's headroom below the largest clock a bigint holds (2^47 - 1 - 2^24
-- milliseconds, year 6429), not CEILING_MILLIS: shifted, that one is past 2^63 and wraps negative,
-- which made every observed clock lose to it.
CREATE OR REPLACE FUNCTION outpost.clock_observe(remote bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  last bigint := outpost.clock_hold();
BEGIN
  remote := least(remote, 140737471578111::bigint << 16);
  IF remote > last THEN
    PERFORM set_config('outpost.capture_hlc', remote::text, true);
    PERFORM outpost.clock_flush();
  END IF;
END
$$;

-- Writes the clocks a statement issued back to the clock row (an AFTER ... FOR EACH STATEMENT
-- trigger of every tracked table; the apply core calls it after ticking).
CREATE OR REPLACE FUNCTION outpost.clock_flush() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  h bigint := nullif(current_setting('outpost.capture_hlc', true), '')::bigint;
BEGIN
  IF h IS NOT NULL THEN
    UPDATE outpost.clock SET hlc = h WHERE one AND hlc < h;
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION outpost.capture_flush() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  PERFORM outpost.clock_flush();
  RETURN NULL;
END
$$;

-- The next seq of `s`, gap-free: the stream's row is locked until the transaction ends, and
-- the seq is one above the outbox's (which holds this transaction's own rows; a rolled-back
-- write takes its row, and so its seq, with it). The stream and seq last issued in the
-- transaction are kept in outpost.capture_stream and outpost.capture_seq (set only while the
-- stream's lock is held, and rolled back with a savepoint as the outbox rows are): a statement
-- writing many rows of one stream looks nothing up after its first.
CREATE OR REPLACE FUNCTION outpost.next_seq(s text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  floor_seq bigint;
  n bigint;
BEGIN
  IF current_setting('outpost.capture_stream', true) = s THEN
    n := nullif(current_setting('outpost.capture_seq', true), '')::bigint;
  END IF;
  IF n IS NULL THEN
    SELECT st.seq INTO floor_seq FROM outpost.streams st WHERE st.stream = s FOR UPDATE;
    IF NOT FOUND THEN
      INSERT INTO outpost.streams(stream, seq) VALUES (s, 0) ON CONFLICT DO NOTHING;
      SELECT st.seq INTO floor_seq FROM outpost.streams st WHERE st.stream = s FOR UPDATE;
    END IF;
    n := greatest(floor_seq, coalesce((SELECT max(o.seq) FROM outpost.outbox o WHERE o.stream = s), 0));
  END IF;
  n := n + 1;
  PERFORM set_config('outpost.capture_stream', s, true);
  PERFORM set_config('outpost.capture_seq', n::text, true);
  RETURN n;
END
$$;

-- Records one captured write of row `k` of table `t`: the clock, the seq, the row's causal
-- length, counters' totals and review contexts, the outbox row, and the notification.
CREATE OR REPLACE FUNCTION outpost.capture(
  t integer, op smallint, s text, k jsonb, cells jsonb, deltas jsonb, review_cols text[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  -- Notified once per stream and run of writes to it: PostgreSQL delivers one notification per
  -- channel and payload per transaction anyway, and skipping the call saves its lookup.
  notify boolean := current_setting('outpost.capture_stream', true) IS DISTINCT FROM s;
  h bigint := outpost.tick();
  n bigint := outpost.next_seq(s);
  st outpost.capture_rows%ROWTYPE;
  e bigint;
  totals jsonb;
  reviews jsonb;
  ctx jsonb := '{}';
  seen jsonb := '{}';
  sibs jsonb;
  extra jsonb := '{}';
  c text;
BEGIN
  SELECT * INTO st FROM outpost.capture_rows r WHERE r.tbl = t AND r.key = k::text;
  IF op = 1 THEN
    -- An insert starts a new epoch (its counters count from 0, its reviews have no siblings).
    e := coalesce(st.exist, 0);
    IF e % 2 = 0 THEN e := e + 1; END IF;
    totals := coalesce(deltas, '{}');
    reviews := '{}';
  ELSIF op = 3 THEN
    e := coalesce(st.exist, 1);
    IF e % 2 = 1 THEN e := e + 1; END IF;
    cells := NULL;
    deltas := NULL;
  ELSE
    e := coalesce(st.exist, 1);
    IF e % 2 = 0 THEN
      -- An update of a row the state holds deleted: the row is here, so it lives again.
      e := e + 1;
      totals := '{}';
      reviews := '{}';
    ELSE
      totals := coalesce(st.counters, '{}');
      reviews := coalesce(st.reviews, '{}');
    END IF;
    IF deltas IS NOT NULL THEN
      FOR c IN SELECT jsonb_object_keys(deltas) LOOP
        totals := totals || jsonb_build_object(c, coalesce((totals->>c)::bigint, 0) + (deltas->>c)::bigint);
      END LOOP;
    END IF;
  END IF;
  IF deltas IS NOT NULL THEN
    FOR c IN SELECT jsonb_object_keys(deltas) LOOP
      cells := cells || jsonb_build_object(c, totals->c);
    END LOOP;
    extra := extra || jsonb_build_object('d', deltas);
  END IF;
  IF op <> 3 AND review_cols IS NOT NULL THEN
    FOREACH c IN ARRAY review_cols LOOP
      IF cells ? c THEN
        IF reviews ? c THEN
          ctx := ctx || jsonb_build_object(c, reviews->c);
        END IF;
        -- A person's write supersedes every sibling they saw (the merge state's: devices' ones).
        sibs := outpost.review_context(t, k, c::integer);
        IF sibs IS NOT NULL THEN
          seen := seen || jsonb_build_object(c, sibs);
        END IF;
        reviews := reviews || jsonb_build_object(c, h);
      END IF;
    END LOOP;
    IF ctx <> '{}' THEN
      extra := extra || jsonb_build_object('c', ctx);
    END IF;
    IF seen <> '{}' THEN
      extra := extra || jsonb_build_object('s', seen);
    END IF;
  END IF;
  -- A row alive at 1 with neither counters nor reviews needs no state row (that is what its
  -- absence means): most back-office inserts and updates write no second row.
  IF coalesce(st.exist, 1) <> e OR totals IS DISTINCT FROM coalesce(st.counters, '{}')
     OR reviews IS DISTINCT FROM coalesce(st.reviews, '{}') THEN
    INSERT INTO outpost.capture_rows AS r(tbl, key, exist, counters, reviews)
      VALUES (t, k::text, e, totals, reviews)
      ON CONFLICT (tbl, key) DO UPDATE
        SET exist = excluded.exist, counters = excluded.counters, reviews = excluded.reviews;
  END IF;
  INSERT INTO outpost.outbox(stream, seq, hlc, tbl, key, exist, op, cells, extra)
    VALUES (s, n, h, t, k, e, op, cells, nullif(extra, '{}'));
  IF notify THEN
    PERFORM pg_notify('outpost_changes', s);
  END IF;
END
$$;

-- Rows the cloud transferred into a stream of its origin (DESIGN section 10, "Moves"; apply-core's
-- transfer.rs): a row whose scope moves again is transferred into each of them too, so replicas
-- there learn where it went. `key` as outpost.capture_rows keeps it.
CREATE TABLE IF NOT EXISTS outpost.transferred(
  tbl integer NOT NULL,
  key text COLLATE "C" NOT NULL,
  stream text NOT NULL,
  PRIMARY KEY (tbl, key, stream));

-- Queues a transfer of row `k` of table `t` into stream `s`: the stream's next seq holds an
-- outbox row of op 4 without clock or cells (its batch reads the row's whole merge state when it
-- is made: transfer.rs), the row is noted as transferred there, and live devices are woken.
CREATE OR REPLACE FUNCTION outpost.transfer(t integer, k jsonb, s text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  n bigint := outpost.next_seq(s);
BEGIN
  INSERT INTO outpost.outbox(stream, seq, hlc, tbl, key, exist, op, cells, extra)
    VALUES (s, n, 0, t, k, 0, 4, NULL, NULL);
  INSERT INTO outpost.transferred(tbl, key, stream) VALUES (t, k::text, s) ON CONFLICT DO NOTHING;
  PERFORM pg_notify('outpost_changes', s);
END
$$;

-- A back-office write moved row `k` of table `t` from stream `src` to stream `dest` (its scope
-- cell changed, or a `via` reference to a parent in another scope): the write itself went in
-- `src` (so replicas there see the row leave); the row goes whole into `dest` and into every
-- stream it was transferred to before (the engine's transfer.rs, queue_own_moves).
CREATE OR REPLACE FUNCTION outpost.moved(t integer, k jsonb, src text, dest text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  s text;
BEGIN
  IF dest = '' OR dest = src THEN
    RETURN;
  END IF;
  PERFORM outpost.transfer(t, k, dest);
  FOR s IN SELECT x.stream FROM outpost.transferred x
           WHERE x.tbl = t AND x.key = k::text AND x.stream <> dest AND x.stream <> src LOOP
    PERFORM outpost.transfer(t, k, s);
  END LOOP;
END
$$;

-- A BEFORE ... FOR EACH STATEMENT trigger of every tracked table: a back-office statement holds
-- the clock row before it locks any row of the table, so it waits for an apply in progress
-- instead of deadlocking with it (an apply writes app rows while holding the clock row).
CREATE OR REPLACE FUNCTION outpost.capture_hold() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF NOT outpost.capture_skipped() THEN
    PERFORM outpost.clock_hold();
  END IF;
  RETURN NULL;
END
$$;

-- TRUNCATE removes rows without a row trigger: devices would keep them forever.
CREATE OR REPLACE FUNCTION outpost.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'TRUNCATE of table %.% is refused: it is tracked by Outpost and a TRUNCATE is not captured (devices would keep its rows); DELETE the rows instead', TG_TABLE_SCHEMA, TG_TABLE_NAME
    USING ERRCODE = 'feature_not_supported';
END
$$;

REVOKE ALL ON FUNCTION outpost.capture(integer, smallint, text, jsonb, jsonb, jsonb, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION outpost.tick() FROM PUBLIC;
REVOKE ALL ON FUNCTION outpost.clock_hold() FROM PUBLIC;
REVOKE ALL ON FUNCTION outpost.next_seq(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION outpost.transfer(integer, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION outpost.moved(integer, jsonb, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION outpost.clock_flush() FROM PUBLIC;
REVOKE ALL ON FUNCTION outpost.clock_observe(bigint) FROM PUBLIC;
