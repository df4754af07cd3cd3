//! Hands the tests the directory of the SQLite amalgamation (`sqlite3.c`, `sqlite3.h`) that
//! `libsqlite3-sys` ships and exports to its dependents' build scripts (`links = "sqlite3"`):
//! `tests/c_embed.rs` compiles it into a C program with the system C compiler, as an app that
//! carries its own SQLite does. No network, no second copy of SQLite in the tree.

fn main() {
    let dir = std::env::var("DEP_SQLITE3_INCLUDE")
        .expect("libsqlite3-sys (feature bundled) exports DEP_SQLITE3_INCLUDE");
    println!("cargo:rustc-env=OUTPOST_SQLITE_AMALGAMATION={dir}");
    println!("cargo:rerun-if-changed=build.rs");
}
