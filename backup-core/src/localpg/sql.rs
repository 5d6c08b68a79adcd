//! Small SQL helpers over [`pgwire_repl::Connection::simple_query`]: rows as text, and quoting.

use pgwire_repl::Connection;

use super::LocalPgError;

/// One row: each column's text, `None` for NULL.
pub type Row = Vec<Option<String>>;

/// Runs `sql` (one statement, or several separated by `;`) and returns the rows of its last
/// result set as text. Server errors keep their SQLSTATE, detail and hint inside
/// [`LocalPgError::Query`].
pub async fn query_rows(conn: &mut Connection, sql: &str) -> Result<Vec<Row>, LocalPgError> {
    let sets = conn
        .simple_query(sql)
        .await
        .map_err(|source| LocalPgError::Query {
            sql: sql.to_string(),
            source,
        })?;
    Ok(sets
        .last()
        .map(|set| {
            set.rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|v| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The first column of the first row of `sql`'s last result set (`None` for no row or NULL).
pub async fn query_value(conn: &mut Connection, sql: &str) -> Result<Option<String>, LocalPgError> {
    Ok(query_rows(conn, sql)
        .await?
        .into_iter()
        .next()
        .and_then(|row| row.into_iter().next().flatten()))
}

/// Quotes an identifier: `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal: `'it''s'` (standard_conforming_strings is on since 9.1).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(quote_ident("t"), "\"t\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
