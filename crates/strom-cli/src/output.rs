//! How commands print: aligned tables for people, JSON for scripts.
//!
//! Output goes through one buffered stdout writer; a closed pipe
//! (`strom topic consume | head`) ends the command quietly.

use std::io::{self, Write};

use anyhow::{bail, Result};

/// The global `--format` choice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    /// A `topic consume` template (`%k %v %h %p %o %t %T`).
    Template(String),
}

impl Format {
    pub fn parse(v: Option<&str>, json: bool) -> Format {
        if json {
            return Format::Json;
        }
        match v {
            None | Some("table") | Some("text") => Format::Table,
            Some("json") => Format::Json,
            Some(t) => Format::Template(t.to_string()),
        }
    }

    pub fn is_json(&self) -> bool {
        *self == Format::Json
    }

    /// Rejects a template where only `json|table` make sense.
    pub fn check_no_template(&self) -> Result<()> {
        if let Format::Template(t) = self {
            bail!("--format must be json or table here (templates are for `topic consume`), got {t:?}");
        }
        Ok(())
    }
}

/// Whether an error is a closed stdout pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().map(|e| e.kind()).or_else(|| {
            c.downcast_ref::<serde_json::Error>()
                .and_then(|e| e.io_error_kind())
        }) == Some(io::ErrorKind::BrokenPipe)
    })
}

/// Prints a value as pretty JSON.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// A left-aligned text table.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: ToString>(header: &[S]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut s = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(cols) {
                if i + 1 == cols {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  ", w = width[i]));
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }

    pub fn print(&self) -> Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(self.render().as_bytes())?;
        Ok(())
    }
}

/// Joins ids as `1,2,3`.
pub fn ids(v: &[i32]) -> String {
    v.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["NAME", "PARTITIONS"]);
        t.row(vec!["a-long-name".into(), "3".into()]);
        t.row(vec!["b".into(), "12".into()]);
        assert_eq!(
            t.render(),
            "NAME         PARTITIONS\na-long-name  3\nb            12\n"
        );
    }

    #[test]
    fn format_parsing() {
        assert_eq!(Format::parse(None, false), Format::Table);
        assert_eq!(Format::parse(Some("table"), true), Format::Json);
        assert_eq!(
            Format::parse(Some("%k:%v"), false),
            Format::Template("%k:%v".into())
        );
        assert!(Format::parse(Some("%v"), false)
            .check_no_template()
            .is_err());
    }
}
