//! Result sets of simple queries. Replication commands always answer in text format.

use bytes::Bytes;

use crate::codec::FieldDescription;
use crate::error::Error;

/// One result set: the columns, the rows and the CommandComplete tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<FieldDescription>,
    pub rows: Vec<Vec<Option<Bytes>>>,
    /// The CommandComplete tag (`SELECT`, `IDENTIFY_SYSTEM`, ...).
    pub tag: String,
}

impl ResultSet {
    /// The index of a column, or an error naming the command and the column.
    pub fn column(&self, command: &str, name: &str) -> Result<usize, Error> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| {
                Error::unexpected_result(
                    command,
                    format!(
                        "no column {name:?} (columns: {})",
                        self.columns
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
    }

    /// The only row, or an error.
    pub fn single_row(&self, command: &str) -> Result<&[Option<Bytes>], Error> {
        match self.rows.as_slice() {
            [row] => Ok(row),
            rows => Err(Error::unexpected_result(
                command,
                format!("expected one row, got {}", rows.len()),
            )),
        }
    }

    /// A text value of the only row, `None` for SQL NULL.
    pub fn single_text(&self, command: &str, column: &str) -> Result<Option<String>, Error> {
        let idx = self.column(command, column)?;
        let row = self.single_row(command)?;
        row.get(idx)
            .ok_or_else(|| Error::unexpected_result(command, "row shorter than its description"))?
            .as_ref()
            .map(|b| {
                String::from_utf8(b.to_vec()).map_err(|_| {
                    Error::unexpected_result(command, format!("column {column} is not UTF-8"))
                })
            })
            .transpose()
    }

    /// A non-NULL text value of the only row.
    pub fn required_text(&self, command: &str, column: &str) -> Result<String, Error> {
        self.single_text(command, column)?
            .ok_or_else(|| Error::unexpected_result(command, format!("column {column} is NULL")))
    }
}
