//! OpenMetrics text (the format Prometheus scrapes, and node_exporter's textfile collector
//! reads): `receive-wal --metrics-listen` serves receive-wal's counters over HTTP, and
//! `status --format openmetrics` writes the repository's health.
//!
//! Names follow Prometheus's conventions: a `pgstream_` prefix, base units in the name
//! (`_bytes`, `_seconds`, `_timestamp_seconds`), `_total` on counter samples.

pub mod http;
pub mod receive;
pub mod status;

use std::fmt::Write as _;

/// The Content-Type of OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metric family's type.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Type {
    Gauge,
    Counter,
    Info,
}

/// Builds an OpenMetrics exposition, one family at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
    /// The family being written, and its type.
    family: Option<(String, Type)>,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family. `unit` (`bytes`, `seconds`) must end the name, as OpenMetrics requires.
    pub fn family(&mut self, name: &str, kind: Type, unit: Option<&str>, help: &str) -> &mut Self {
        let t = match kind {
            Type::Gauge => "gauge",
            Type::Counter => "counter",
            Type::Info => "info",
        };
        let _ = writeln!(self.text, "# TYPE {name} {t}");
        if let Some(u) = unit {
            debug_assert!(name.ends_with(&format!("_{u}")), "{name} lacks _{u}");
            let _ = writeln!(self.text, "# UNIT {name} {u}");
        }
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        self.family = Some((name.to_string(), kind));
        self
    }

    /// A sample of the current family (`_total` added for a counter, `_info` for info).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        let Some((name, kind)) = &self.family else {
            return self;
        };
        let suffix = match kind {
            Type::Counter => "_total",
            Type::Info => "_info",
            Type::Gauge => "",
        };
        let _ = write!(self.text, "{name}{suffix}");
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = write!(self.text, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    /// The exposition, with its `# EOF` terminator.
    pub fn finish(mut self) -> String {
        self.text.push_str("# EOF\n");
        self.text
    }
}

/// Integers without a fraction, others as Rust prints them (both are valid OpenMetrics).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut e = Exposition::new();
        e.family("pgstream_x_bytes", Type::Gauge, Some("bytes"), "X.")
            .sample(&[("repo", "/a\"b")], 1.0);
        e.family("pgstream_y", Type::Counter, None, "Y.")
            .sample(&[], 2.5);
        assert_eq!(
            e.finish(),
            "# TYPE pgstream_x_bytes gauge\n# UNIT pgstream_x_bytes bytes\n# HELP pgstream_x_bytes X.\n\
             pgstream_x_bytes{repo=\"/a\\\"b\"} 1\n# TYPE pgstream_y counter\n# HELP pgstream_y Y.\n\
             pgstream_y_total 2.5\n# EOF\n"
        );
    }
}
