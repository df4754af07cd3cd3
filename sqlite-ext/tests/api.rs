//! The SQL surface: registered functions match the documented ones.

mod common;
use common::Replica;

#[test]
fn registered_functions_equal_the_documented_headings() {
    let r = Replica::new("a", "");
    let mut registered: Vec<String> = r
        .rows("SELECT DISTINCT name FROM pragma_function_list WHERE name LIKE 'outpost%' ORDER BY name")
        .into_iter()
        .map(|s| s.trim_start_matches("Text(\"").trim_end_matches("\")").to_string())
        .collect();
    registered.sort();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/sql-api.md"))
        .unwrap();
    let mut documented: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|s| s.trim().to_string())
        .collect();
    documented.sort();
    assert_eq!(registered, documented);
    let mut exported: Vec<String> = outpost::function_names()
        .into_iter()
        .map(String::from)
        .collect();
    exported.sort();
    assert_eq!(exported, documented);
}

#[test]
fn site_id_is_sixteen_bytes_and_stable() {
    let r = Replica::new("a", "");
    let id: Vec<u8> = r.one("SELECT outpost_site_id()");
    assert_eq!(id.len(), 16);
    assert_eq!(r.one::<Vec<u8>>("SELECT outpost_site_id()"), id);
    assert_eq!(r.one::<i64>("SELECT outpost_db_version()"), 0);
    assert!(!r.one::<String>("SELECT outpost_version()").is_empty());
}
