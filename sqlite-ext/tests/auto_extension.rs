//! The statically linked path, as an app that links SQLite and Outpost into one program would
//! (docs/client-mobile.md): the rlib linked into the program, its entry point registered with
//! `sqlite3_auto_extension` in rusqlite's bundled SQLite. Every connection opened afterwards has
//! the functions, with no library loading.

use rusqlite::Connection;

#[test]
fn statically_linked_entry_point_registers_through_auto_extension() {
    type Init = unsafe extern "C" fn(
        *mut rusqlite::ffi::sqlite3,
        *mut *mut std::ffi::c_char,
        *const rusqlite::ffi::sqlite3_api_routines,
    ) -> std::ffi::c_int;
    let init: Init = {
        let f: unsafe extern "C" fn(
            *mut _,
            *mut *mut std::ffi::c_char,
            *const std::ffi::c_void,
        ) -> std::ffi::c_int = outpost::sqlite3_outpost_init;
        // SAFETY: same ABI; the pointer types differ only by which crate declared them.
        unsafe { std::mem::transmute::<_, Init>(f) }
    };
    // SAFETY: registering a valid entry point; SQLite calls it for each new connection.
    let rc = unsafe { rusqlite::ffi::sqlite3_auto_extension(Some(init)) };
    assert_eq!(rc, rusqlite::ffi::SQLITE_OK);

    let dir = tempfile::tempdir().unwrap();
    let a = Connection::open(dir.path().join("a.db")).unwrap();
    let b = Connection::open(dir.path().join("b.db")).unwrap();
    for c in [&a, &b] {
        c.execute_batch(
            "CREATE TABLE notes(id TEXT PRIMARY KEY, body TEXT); SELECT outpost_track('notes');",
        )
        .unwrap();
    }
    a.execute_batch("INSERT INTO notes VALUES ('n1', 'hello')")
        .unwrap();
    let batch: Vec<u8> = a
        .query_row("SELECT outpost_changes(0)", [], |r| r.get(0))
        .unwrap();
    let out: String = b
        .query_row("SELECT outpost_apply(?1)", [batch], |r| r.get(0))
        .unwrap();
    assert!(out.contains("\"applied\""), "{out}");
    let body: String = b
        .query_row("SELECT body FROM notes WHERE id='n1'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(body, "hello");
}
