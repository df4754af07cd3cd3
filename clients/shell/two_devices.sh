#!/bin/sh
# Two devices through a hub with the sqlite3 shell: device A tracks a table, enrolls, writes and
# syncs; device B enrolls and syncs, and must see A's rows.
#
# usage: two_devices.sh EXTENSION DB_A DB_B CODE_A CODE_B
#   EXTENSION  path to liboutpost.so (the shell's .load takes it with or without the suffix)
#   CODE_A/B   one-time enrollment codes from `outpost-hub enroll-code` (one per device)
set -eu
ext=$1 a=$2 b=$3 code_a=$4 code_b=$5

# -bail: stop at the first error, so a failed enroll or sync fails the script.
sqlite3 -bail "$a" <<SQL
.load $ext sqlite3_outpost_init
CREATE TABLE visits(id TEXT PRIMARY KEY DEFAULT (outpost_uuid()), patient TEXT NOT NULL, note TEXT);
SELECT outpost_track('visits');
SELECT outpost_enroll('$code_a');
INSERT INTO visits(patient, note) VALUES ('amina', 'fever'), ('bruno', 'follow-up'), ('chen', 'vaccination');
SELECT outpost_sync();
SQL

sqlite3 -bail "$b" <<SQL
.load $ext sqlite3_outpost_init
CREATE TABLE visits(id TEXT PRIMARY KEY DEFAULT (outpost_uuid()), patient TEXT NOT NULL, note TEXT);
SELECT outpost_track('visits');
SELECT outpost_enroll('$code_b');
SELECT outpost_sync();
SQL

rows=$(sqlite3 -bail "$b" ".load $ext sqlite3_outpost_init" "SELECT group_concat(patient, ',') FROM (SELECT patient FROM visits ORDER BY patient);")
if [ "$rows" != "amina,bruno,chen" ]; then
    echo "device B sees [$rows], expected [amina,bruno,chen]" >&2
    exit 1
fi
echo "ok: device B sees $rows"
