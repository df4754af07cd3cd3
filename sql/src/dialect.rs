//! SQLite's statements as PostgreSQL takes them. The stores write one dialect (SQLite's, the
//! subset both engines share); what differs is rewritten here, token by token outside quotes:
//! - `?N` parameters become `$N` (and a bare `?` the next number);
//! - `INSERT OR IGNORE INTO ...` becomes `INSERT INTO ... ON CONFLICT DO NOTHING`;
//! - the column types SQLite names become PostgreSQL's: `INTEGER PRIMARY KEY` (the rowid) an
//!   identity column, `INTEGER` bigint, `BLOB` bytea, `REAL` double precision;
//! - `WITHOUT ROWID` goes.
//!
//! What has no rewrite (`INSERT OR REPLACE`, two-argument `max`/`min`, pragmas) is not written
//! by the stores: they use `ON CONFLICT ... DO UPDATE`, `CASE` and [`crate::Connection::is_sqlite`].

/// One token of a statement.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    /// A word (keyword or identifier).
    Word(&'a str),
    /// `?`, `?N`.
    Param(Option<&'a str>),
    /// Anything else, copied: quoted text, spaces, punctuation.
    Other(&'a str),
}

fn tokens(sql: &str) -> Vec<Token<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c == b'\'' || c == b'"' {
            i += 1;
            while i < b.len() {
                if b[i] == c {
                    // A doubled quote is one quote inside the text.
                    if i + 1 < b.len() && b[i + 1] == c {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            out.push(Token::Other(&sql[start..i]));
        } else if c == b'?' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Token::Param((i > start + 1).then(|| &sql[start + 1..i])));
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Token::Word(&sql[start..i]));
        } else {
            // One character (UTF-8 safe: a multi-byte character is copied whole).
            i += sql[i..].chars().next().map_or(1, char::len_utf8);
            out.push(Token::Other(&sql[start..i]));
        }
    }
    out
}

fn is(t: Option<&Token<'_>>, word: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
}

/// The next word's index at or after `from`, skipping spaces.
fn next_word(ts: &[Token<'_>], from: usize) -> Option<usize> {
    (from..ts.len()).find(|&j| !matches!(ts[j], Token::Other(s) if s.trim().is_empty()))
}

/// `sql` (one statement or several, `;`-separated) as PostgreSQL takes it.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    for statement in split(sql) {
        out.push_str(&statement_to_postgres(statement));
    }
    out
}

/// `sql` cut after each `;` outside quotes (each piece keeps its `;`).
fn split(sql: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for t in tokens(sql) {
        let len = match t {
            Token::Word(s) | Token::Other(s) => s.len(),
            Token::Param(n) => 1 + n.map_or(0, str::len),
        };
        offset += len;
        if t == Token::Other(";") {
            pieces.push(&sql[start..offset]);
            start = offset;
        }
    }
    if start < sql.len() {
        pieces.push(&sql[start..]);
    }
    pieces
}

fn statement_to_postgres(sql: &str) -> String {
    let ts = tokens(sql);
    let mut out = String::with_capacity(sql.len() + 32);
    let mut next_param = 1;
    let mut ignore_conflicts = false;
    let mut i = 0;
    while i < ts.len() {
        match &ts[i] {
            Token::Param(n) => {
                out.push('$');
                match n {
                    Some(n) => out.push_str(n),
                    None => out.push_str(&next_param.to_string()),
                }
                next_param += 1;
            }
            Token::Word(w) if w.eq_ignore_ascii_case("INSERT") => {
                out.push_str(w);
                // INSERT OR IGNORE: the OR IGNORE goes, ON CONFLICT DO NOTHING comes at the end.
                if let Some(j) = next_word(&ts, i + 1) {
                    if is(ts.get(j), "OR") {
                        if let Some(k) = next_word(&ts, j + 1) {
                            if is(ts.get(k), "IGNORE") {
                                ignore_conflicts = true;
                                i = k + 1;
                                continue;
                            }
                        }
                    }
                }
            }
            Token::Word(w) if w.eq_ignore_ascii_case("RETURNING") && ignore_conflicts => {
                out.push_str("ON CONFLICT DO NOTHING ");
                out.push_str(w);
                ignore_conflicts = false;
            }
            Token::Word(w) if w.eq_ignore_ascii_case("INTEGER") => {
                let primary = next_word(&ts, i + 1)
                    .filter(|&j| is(ts.get(j), "PRIMARY"))
                    .and_then(|j| next_word(&ts, j + 1))
                    .filter(|&k| is(ts.get(k), "KEY"));
                match primary {
                    Some(k) => {
                        out.push_str("bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
                        i = k + 1;
                        continue;
                    }
                    None => out.push_str("bigint"),
                }
            }
            Token::Word(w) if w.eq_ignore_ascii_case("BLOB") => out.push_str("bytea"),
            Token::Word(w) if w.eq_ignore_ascii_case("REAL") => out.push_str("double precision"),
            Token::Word(w) if w.eq_ignore_ascii_case("WITHOUT") => {
                match next_word(&ts, i + 1).filter(|&j| is(ts.get(j), "ROWID")) {
                    Some(j) => {
                        i = j + 1;
                        continue;
                    }
                    None => out.push_str(w),
                }
            }
            Token::Other(";") if ignore_conflicts => {
                out.push_str(" ON CONFLICT DO NOTHING;");
                ignore_conflicts = false;
            }
            Token::Word(s) | Token::Other(s) => out.push_str(s),
        }
        i += 1;
    }
    if ignore_conflicts {
        out.push_str(" ON CONFLICT DO NOTHING");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::to_postgres;

    #[test]
    fn parameters_are_numbered_as_postgresql_numbers_them() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = ?2 AND d = '?3'"),
            "SELECT a FROM t WHERE b = $1 AND c = $2 AND d = '?3'"
        );
        assert_eq!(to_postgres("VALUES (?, ?)"), "VALUES ($1, $2)");
    }

    #[test]
    fn insert_or_ignore_becomes_on_conflict_do_nothing() {
        assert_eq!(
            to_postgres("INSERT OR IGNORE INTO t(a) VALUES (?1)"),
            "INSERT INTO t(a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            to_postgres("insert or ignore into t(a) values (?1) returning a"),
            "insert into t(a) values ($1) ON CONFLICT DO NOTHING returning a"
        );
        assert_eq!(
            to_postgres("INSERT OR IGNORE INTO t(a) VALUES (1); SELECT 'or ignore';"),
            "INSERT INTO t(a) VALUES (1) ON CONFLICT DO NOTHING; SELECT 'or ignore';"
        );
    }

    #[test]
    fn sqlite_column_types_become_postgresql_types() {
        assert_eq!(
            to_postgres(
                "CREATE TABLE IF NOT EXISTS b(id INTEGER PRIMARY KEY, o BLOB NOT NULL, \
                 n INTEGER NOT NULL DEFAULT 0, r REAL, t TEXT) WITHOUT ROWID;"
            ),
            "CREATE TABLE IF NOT EXISTS b(id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
             o bytea NOT NULL, n bigint NOT NULL DEFAULT 0, r double precision, t TEXT) ;"
        );
        assert_eq!(
            to_postgres("SELECT CAST(x AS INTEGER), \"INTEGER\", 'BLOB' FROM t"),
            "SELECT CAST(x AS bigint), \"INTEGER\", 'BLOB' FROM t"
        );
    }

    #[test]
    fn text_is_copied_whole() {
        let sql = "SELECT 'it''s ?1 “quoted”', ü FROM t";
        assert_eq!(to_postgres(sql), sql);
    }
}
