// Two devices through a hub from Node with better-sqlite3 (npm install better-sqlite3).
// Device A tracks a table, enrolls, writes and syncs; device B enrolls and syncs, and must see
// A's rows.
//
// usage: node two_devices.js EXTENSION DB_A DB_B CODE_A CODE_B
'use strict';
const Database = require('better-sqlite3');

function openDevice(ext, path) {
  const db = new Database(path);
  // better-sqlite3 enables extension loading for this call only; the entry point is named
  // because the file is liboutpost.so, not outpost.so.
  db.loadExtension(ext, 'sqlite3_outpost_init');
  db.exec(`CREATE TABLE IF NOT EXISTS visits(
    id TEXT PRIMARY KEY DEFAULT (outpost_uuid()), patient TEXT NOT NULL, note TEXT)`);
  db.prepare("SELECT outpost_track('visits')").pluck().get();
  return db;
}

function main() {
  const [ext, dbA, dbB, codeA, codeB] = process.argv.slice(2);
  const a = openDevice(ext, dbA);
  const peer = JSON.parse(a.prepare('SELECT outpost_enroll(?)').pluck().get(codeA));
  console.log('A enrolled with', peer.role, peer.site.slice(0, 12));
  const insert = a.prepare('INSERT INTO visits(patient, note) VALUES (?, ?)');
  a.transaction((rows) => rows.forEach(([p, n]) => insert.run(p, n)))([
    ['amina', 'fever'], ['bruno', 'follow-up'], ['chen', 'vaccination'],
  ]);
  // outpost_sync must run outside a transaction.
  console.log('A synced:', a.prepare('SELECT outpost_sync()').pluck().get());
  const status = JSON.parse(a.prepare('SELECT outpost_status()').pluck().get());
  if (status.pending_changes !== 0) throw new Error(`A still has pending changes: ${JSON.stringify(status)}`);

  const b = openDevice(ext, dbB);
  b.prepare('SELECT outpost_enroll(?)').pluck().get(codeB);
  console.log('B synced:', b.prepare('SELECT outpost_sync()').pluck().get());
  const rows = b.prepare('SELECT patient FROM visits ORDER BY patient').pluck().all();
  if (rows.join(',') !== 'amina,bruno,chen') {
    console.error('device B sees', rows);
    process.exit(1);
  }
  console.log('ok: device B sees', rows.join(','));
}

main();
