//! Log lines on stderr (stdout carries only results): text, coloured only on a terminal, or
//! JSON objects one a line with the fields of the event and of its spans at the top level
//! (`backup_id`, `lsn`, `timeline`, ...), for journald, Loki or Elasticsearch.

use std::fmt;
use std::io::IsTerminal as _;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

pub fn init(level: &str, format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::progress::LogWriter::new);
    match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .init(),
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .init(),
    }
}

/// Colour only on a terminal, and not when NO_COLOR is set (no-color.org).
pub fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The error that ends the command: a JSON log line in JSON mode, else `pgstream: error: ...`
/// (and `pgstream: hint: ...`).
pub fn final_error(message: &str, hint: Option<String>, exit_code: u8) {
    if FORMAT.get() == Some(&LogFormat::Json) {
        match &hint {
            Some(h) => tracing::error!(exit_code, hint = %h, "{message}"),
            None => tracing::error!(exit_code, "{message}"),
        }
        return;
    }
    eprintln!("pgstream: error: {message}");
    if let Some(h) = hint {
        eprintln!("pgstream: hint: {h}");
    }
}

/// A note or warning written straight to stderr for people (`note: ...`, `warning: ...`): as
/// is in text mode, a log line in JSON mode so that stderr stays all JSON.
pub fn notice(prefix: &str, text: &str) {
    if FORMAT.get() == Some(&LogFormat::Json) {
        match prefix {
            "warning" => tracing::warn!("{text}"),
            _ => tracing::info!("{text}"),
        }
        return;
    }
    eprintln!("{prefix}: {text}");
}

/// One JSON object per event: timestamp, level, message, then the fields of the spans it is
/// in (outermost first) and its own.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut obj = Map::new();
        obj.insert(
            "timestamp".into(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        obj.insert(
            "level".into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                spans.push(Value::from(span.name()));
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(fields.as_str()) {
                        obj.extend(m);
                    }
                }
            }
        }
        if !spans.is_empty() {
            obj.insert("spans".into(), Value::Array(spans));
        }
        event.record(&mut Fields(&mut obj));
        writeln!(writer, "{}", Value::Object(obj))
    }
}

/// Collects an event's fields as JSON values.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_colour_when_not_a_terminal() {
        assert!(!colour(false));
    }
}
