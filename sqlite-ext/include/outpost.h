/*
 * outpost.h: the Outpost SQLite extension linked statically into a C, C++, Objective-C or JNI
 * program (iOS, Android, anything where `.load` / sqlite3_load_extension is not allowed).
 *
 * Build the static library from the workspace root:
 *
 *     cargo build --release -p outpost          # target/release/liboutpost.a
 *
 * (`--target <triple>` for another platform; docs/client-mobile.md lists what a mobile build
 * needs; no mobile target is built or tested in this repository.)
 *
 * Register the entry point once, before the first sqlite3_open*, with the SQLite that opens the
 * databases (every connection opened afterwards has the outpost_* functions, docs/sql-api.md):
 *
 *     #include <sqlite3.h>
 *     #include "outpost.h"
 *
 *     if (sqlite3_auto_extension((void (*)(void))sqlite3_outpost_init) != SQLITE_OK) ...;
 *     sqlite3_open("clinic.db", &db);   // fails with "automatic extension loading failed: ..."
 *                                       // (and the reason) when Outpost refuses to load
 *
 * What it needs:
 * - SQLite 3.35.0 or later (Outpost's own SQL uses RETURNING; its API routines exist since
 *   3.14; the test links the amalgamation rusqlite bundles, 3.54.1 now; no older one is
 *   tested), linked into the same program, which must be built WITHOUT SQLITE_OMIT_LOAD_EXTENSION:
 *   Outpost calls SQLite only through the routines table SQLite hands to the entry point, and
 *   a SQLite built with that option hands a null table to auto extensions: then every
 *   sqlite3_open fails with "automatic extension loading failed: " and no reason (without the
 *   table Outpost cannot allocate the message SQLite would free).
 *   Apple's system SQLite is built that way: on iOS bundle your own SQLite. Loading extension
 *   files may stay switched off at run time (it is by default); only the compile-time option
 *   matters. The library contains no SQLite of its own, so it never collides with the app's.
 * - Threads: Outpost starts none. outpost_sync() blocks the calling thread on the network (up
 *   to its timeouts), so call it off an app's UI thread; any SQLite threading mode works.
 * - Link flags: liboutpost.a is a Rust static library and contains the Rust standard library;
 *   on Linux (glibc) link it with what `cargo rustc --release -p outpost --crate-type staticlib
 *   -- --print native-static-libs` prints:
 *       liboutpost.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
 *   Other targets print their own list (run the same command with `--target <triple>`).
 * - One liboutpost.a per program: it exports the Rust runtime's symbols, so a second Rust static
 *   library in the same program would collide (combine them into one Rust crate instead).
 *
 * The C test that builds exactly this (tests/tests/c_embed.rs, tests/c/outpost_device.c) links
 * liboutpost.a with the SQLite amalgamation, registers it here, and syncs through a hub.
 */
#ifndef OUTPOST_H
#define OUTPOST_H

#ifdef __cplusplus
extern "C" {
#endif

/* Declared through the struct tags so this header needs no particular sqlite3.h (the app's own,
 * SQLCipher's, ...); they are the types sqlite3.h calls `sqlite3` and `sqlite3_api_routines`. */
struct sqlite3;
struct sqlite3_api_routines;

/*
 * The extension's entry point (also the one `.load liboutpost` finds). SQLite calls it for each
 * new connection with the connection, an error-message out-parameter (set, with sqlite3_malloc'd
 * text, when it returns an error) and its API routines table. Returns SQLITE_OK (0) or
 * SQLITE_ERROR (1). Do not call it yourself: register it with sqlite3_auto_extension.
 */
int sqlite3_outpost_init(struct sqlite3 *db, char **pzErrMsg,
                         const struct sqlite3_api_routines *pApi);

#ifdef __cplusplus
}
#endif

#endif /* OUTPOST_H */
