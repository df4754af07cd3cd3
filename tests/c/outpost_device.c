/*
 * outpost_device: a device app in C with Outpost linked statically (liboutpost.a) into a program
 * that carries its own SQLite (the amalgamation), as an iOS or Android app does where
 * sqlite3_load_extension is not allowed. Built and run by tests/tests/c_embed.rs.
 *
 *     outpost_device DB CODE TAG ROWS
 *
 * Registers sqlite3_outpost_init with sqlite3_auto_extension, opens DB, creates and tracks the
 * `visits` table, enrolls with CODE (skipped when CODE is "-": already enrolled), inserts ROWS
 * visits named TAG-1..TAG-ROWS, calls outpost_sync(), and prints what it did, one line each:
 *
 *     version <outpost_version()>
 *     enrolled <outpost_enroll's JSON>
 *     synced <outpost_sync's JSON>
 *     visit <patient>|<note>        (every row of `visits`, by patient)
 *
 * Any SQLite error is printed to stderr with the step that failed, and the exit status is 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"
#include "outpost.h"

static sqlite3 *db;

static void fail(const char *step, int rc) {
    fprintf(stderr, "outpost_device: %s: %s (%d)\n", step, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
    exit(1);
}

/* Runs SQL (with up to one text parameter); prints each result row's columns as
 * "<label> a|b|..." when label is not NULL. */
static void run(const char *label, const char *sql, const char *param) {
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) fail(sql, rc);
    if (param && (rc = sqlite3_bind_text(stmt, 1, param, -1, SQLITE_TRANSIENT)) != SQLITE_OK) fail(sql, rc);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (!label) continue;
        printf("%s ", label);
        for (int i = 0; i < sqlite3_column_count(stmt); i++) {
            const unsigned char *text = sqlite3_column_text(stmt, i);
            printf("%s%s", i ? "|" : "", text ? (const char *)text : "NULL");
        }
        printf("\n");
    }
    if (rc != SQLITE_DONE) fail(sql, rc);
    sqlite3_finalize(stmt);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: outpost_device DB CODE|- TAG ROWS\n");
        return 2;
    }
    const char *path = argv[1], *code = argv[2], *tag = argv[3];
    int rows = atoi(argv[4]);

    /* Before the first open: every connection opened from now on gets Outpost's functions. */
    int rc = sqlite3_auto_extension((void (*)(void))sqlite3_outpost_init);
    if (rc != SQLITE_OK) fail("sqlite3_auto_extension", rc);
    rc = sqlite3_open(path, &db);
    if (rc != SQLITE_OK) fail("sqlite3_open", rc);
    sqlite3_busy_timeout(db, 10000);

    run("version", "SELECT outpost_version()", NULL);
    run(NULL, "CREATE TABLE IF NOT EXISTS visits("
              "id TEXT PRIMARY KEY DEFAULT (outpost_uuid()), patient TEXT NOT NULL, note TEXT)", NULL);
    run(NULL, "SELECT outpost_track('visits')", NULL);
    if (strcmp(code, "-") != 0) run("enrolled", "SELECT outpost_enroll(?1)", code);

    run(NULL, "BEGIN", NULL);
    for (int i = 1; i <= rows; i++) {
        char patient[128];
        snprintf(patient, sizeof patient, "%s-%d", tag, i);
        run(NULL, "INSERT INTO visits(patient, note) VALUES (?1, 'written in C')", patient);
    }
    run(NULL, "COMMIT", NULL);

    run("synced", "SELECT outpost_sync()", NULL);
    run("visit", "SELECT patient, note FROM visits ORDER BY patient", NULL);

    if (sqlite3_close(db) != SQLITE_OK) fail("sqlite3_close", SQLITE_BUSY);
    return 0;
}
