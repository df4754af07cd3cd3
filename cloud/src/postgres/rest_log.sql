-- The REST change log of a PostgreSQL tenant (rest_log.rs): the facts the SQLite tenant keeps in
-- _cloud_rest_log (changelog.rs), kept by triggers on every REST table whoever writes (devices'
-- applies under outpost.applying, REST pushes, the back office), in the writer's transaction.
-- Idempotent: run in every transaction that installs a table's log triggers, after capture.sql
-- (the clock row outpost.clock exists).

SET LOCAL client_min_messages = warning;

-- Per REST row: when it was created and last changed (ms of the REST clock below), whether it
-- is gone, and when its scope last moved. The id is the row's `id` as text.
CREATE TABLE IF NOT EXISTS outpost.rest_log(
  tbl text NOT NULL,
  id text NOT NULL,
  created_at bigint NOT NULL,
  changed_at bigint NOT NULL,
  deleted boolean NOT NULL DEFAULT false,
  moved_at bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tbl, id));
CREATE INDEX IF NOT EXISTS rest_log_changed ON outpost.rest_log(tbl, changed_at);
-- A deleted row of a scoped table: the scope cell (or `via` key) it had, as text, set by the
-- table's `outpost_rest_log_d_scope` trigger (rest_log.rs), so a pull can tell which tokens'
-- scopes held it (watermelon/row_scope.rs, `gone`).
ALTER TABLE outpost.rest_log ADD COLUMN IF NOT EXISTS scope_value text;

-- The REST clock: the time of the last transaction that logged. Every logging transaction locks
-- this row (FOR UPDATE) from its first logged write to its end and advances it once, so times
-- are issued one transaction at a time, in commit order: a transaction waiting for the row gets
-- it only once the holder's commit is visible to new snapshots, and takes a time above the
-- holder's. A pull's snapshot that saw time T therefore saw every transaction with a time up to
-- T, and every later commit gets a time above T.
CREATE TABLE IF NOT EXISTS outpost.rest_clock(
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  at bigint NOT NULL);
INSERT INTO outpost.rest_clock(one, at) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- The time of this transaction's REST writes: max(wall-clock ms, last + 1), the same for all of
-- them. The first call of a transaction locks capture's clock row first (every capturing
-- transaction takes it first: one lock order, no deadlock between the two), then the REST clock;
-- the time is kept in the transaction-local setting outpost.rest_at (rolled back with a
-- savepoint, as the row's update and lock are). A REPEATABLE READ writer whose snapshot predates
-- the last holder's commit fails on the lock (serialization failure) rather than go backwards.
CREATE OR REPLACE FUNCTION outpost.rest_now() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  t bigint := nullif(current_setting('outpost.rest_at', true), '')::bigint;
  last bigint;
BEGIN
  IF t IS NOT NULL THEN
    RETURN t;
  END IF;
  PERFORM 1 FROM outpost.clock c WHERE c.one FOR UPDATE;
  SELECT r.at INTO last FROM outpost.rest_clock r WHERE r.one FOR UPDATE;
  t := greatest(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint, last + 1);
  UPDATE outpost.rest_clock SET at = t WHERE one;
  PERFORM set_config('outpost.rest_at', t::text, true);
  RETURN t;
END
$$;

-- Statement triggers with transition tables: one upsert per statement, however many rows (a
-- device's batch inserts its rows with one statement per group; a back-office UPDATE of 10k
-- rows logs them at once). A statement that writes no row takes no lock.
--
-- An INSERT's rows are new rows, whose ids the log most often lacks (it holds one only for a
-- row deleted before, or a table's rows logged when its log was installed): a statement of many
-- rows appends them with a plain INSERT, half the cost of the upsert's speculative insertion
-- (one index descent per id instead of two; the log was a third of an apply's server time,
-- docs/performance.md), and only when an id is there already does the unique index refuse it
-- and the statement's rows go again as the upsert. The plain INSERT runs in a subtransaction
-- (the EXCEPTION block): one per statement of at least 100 rows, so a transaction of many small
-- statements (a back office's, or a careful apply's row by row) takes none and never fills the
-- backend's cache of subtransactions; the clock is taken before it, outside.
CREATE OR REPLACE FUNCTION outpost.rest_log_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  t bigint;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM rest_new) THEN
    RETURN NULL;
  END IF;
  t := outpost.rest_now();
  IF (SELECT count(*) FROM (SELECT 1 FROM rest_new LIMIT 100) few) >= 100 THEN
    BEGIN
      INSERT INTO outpost.rest_log (tbl, id, created_at, changed_at, deleted)
        SELECT TG_TABLE_NAME, n.id::text, t, t, false FROM rest_new n;
      RETURN NULL;
    EXCEPTION WHEN unique_violation THEN
      -- An id logged already: the upsert below.
    END;
  END IF;
  INSERT INTO outpost.rest_log AS l (tbl, id, created_at, changed_at, deleted)
    SELECT TG_TABLE_NAME, n.id::text, t, t, false FROM rest_new n
    ON CONFLICT (tbl, id) DO UPDATE SET changed_at = excluded.changed_at,
      created_at = CASE WHEN l.deleted THEN excluded.created_at ELSE l.created_at END,
      deleted = false;
  RETURN NULL;
END
$$;

-- An UPDATE: rows whose values changed (an UPDATE writing the same values, such as a merge that
-- lost, logs nothing), a new id logged like an insert and the old one as deleted.
CREATE OR REPLACE FUNCTION outpost.rest_log_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  t bigint;
BEGIN
  IF NOT EXISTS (
       SELECT 1 FROM rest_new n LEFT JOIN rest_old o ON o.id = n.id
       WHERE o.id IS NULL OR ROW(o.*) IS DISTINCT FROM ROW(n.*))
     AND NOT EXISTS (
       SELECT 1 FROM rest_old o WHERE NOT EXISTS (SELECT 1 FROM rest_new n WHERE n.id = o.id)) THEN
    RETURN NULL;
  END IF;
  t := outpost.rest_now();
  INSERT INTO outpost.rest_log AS l (tbl, id, created_at, changed_at, deleted)
    SELECT TG_TABLE_NAME, n.id::text, t, t, false
    FROM rest_new n LEFT JOIN rest_old o ON o.id = n.id
    WHERE o.id IS NULL OR ROW(o.*) IS DISTINCT FROM ROW(n.*)
    ON CONFLICT (tbl, id) DO UPDATE SET changed_at = excluded.changed_at,
      created_at = CASE WHEN l.deleted THEN excluded.created_at ELSE l.created_at END,
      deleted = false;
  UPDATE outpost.rest_log l SET changed_at = t, deleted = true
    FROM rest_old o
    WHERE l.tbl = TG_TABLE_NAME AND l.id = o.id::text
      AND NOT EXISTS (SELECT 1 FROM rest_new n WHERE n.id = o.id);
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION outpost.rest_log_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  t bigint;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM rest_old) THEN
    RETURN NULL;
  END IF;
  t := outpost.rest_now();
  INSERT INTO outpost.rest_log AS l (tbl, id, created_at, changed_at, deleted)
    SELECT TG_TABLE_NAME, o.id::text, t, t, true FROM rest_old o
    ON CONFLICT (tbl, id) DO UPDATE SET changed_at = excluded.changed_at, deleted = true;
  RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION outpost.rest_now() FROM PUBLIC;
