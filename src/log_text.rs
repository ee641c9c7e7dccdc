//! The text log format's field writer and clock, for logs that are not a
//! terminal's.
//!
//! tracing-subscriber's own field writer sends every field name and `=`
//! through its colour layer even with colours off, and its clock works out
//! the whole date for every line: about 15 000 instructions per access-log
//! line, more than porteiro spends proxying the request. These write the
//! same text, character for character (the tests compare them), directly:
//! a string field as its quoted `Debug` form, numbers and flags as digits,
//! the date worked out once a second per thread. Anything else (the
//! message, errors, raw identifiers, and everything when colours are on)
//! goes to tracing-subscriber's own writer.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;

/// The field writer: `name=value`, separated by spaces.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields;

impl<'a> MakeVisitor<Writer<'a>> for Fields {
    type Visitor = Visitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Visitor<'a> {
        Visitor { writer, pending: SPARE.take(), is_empty: true, result: Ok(()) }
    }
}

/// The largest buffer a thread keeps between lines.
const SPARE_BYTES: usize = 4 * 1024;

thread_local! {
    /// The buffer of the last visitor on this thread, for the next one.
    static SPARE: Cell<String> = const { Cell::new(String::new()) };
}

/// Writes one event's or span's fields.
pub struct Visitor<'a> {
    writer: Writer<'a>,
    /// Plain fields not yet handed to the writer, which takes them in one
    /// call (each of its calls goes through `dyn fmt::Write`; a field was
    /// half a dozen of them).
    pending: String,
    is_empty: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    /// Starts a plain `name=` field, or says the field is not plain (styled
    /// output, the message, a raw identifier, `log.` metadata).
    fn plain(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.writer.has_ansi_escapes() || name == "message" || name.starts_with("r#") || name.starts_with("log.") {
            return false;
        }
        if !self.is_empty {
            self.pending.push(' ');
        }
        self.is_empty = false;
        self.pending.push_str(name);
        self.pending.push('=');
        true
    }

    /// Hands the pending fields to the writer.
    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.result = self.result.and(self.writer.write_str(&self.pending));
            self.pending.clear();
        }
    }

    /// tracing-subscriber's writer, for this one field.
    fn delegate(&mut self, visit: impl FnOnce(&mut DefaultVisitor<'_>)) {
        self.flush();
        let mut inner = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        visit(&mut inner);
        self.result = self.result.and(inner.finish());
        // It wrote the field (log metadata aside, which it skips).
        self.is_empty = false;
    }
}

/// A string as `{:?}` writes it: quoted, with `"`, `\` and anything but
/// printable ASCII escaped (the fast path takes strings with none of them).
fn quoted(w: &mut String, s: &str) -> fmt::Result {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        w.push('"');
        w.push_str(s);
        w.push('"');
        Ok(())
    } else {
        write!(w, "{s:?}")
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() && self.plain(field) {
            self.result = self.result.and(quoted(&mut self.pending, value));
        } else if self.result.is_ok() {
            self.delegate(|v| v.record_str(field, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.result.is_ok() && self.plain(field) {
            self.pending.push_str(itoa::Buffer::new().format(value));
        } else if self.result.is_ok() {
            self.delegate(|v| v.record_u64(field, value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.result.is_ok() && self.plain(field) {
            self.pending.push_str(itoa::Buffer::new().format(value));
        } else if self.result.is_ok() {
            self.delegate(|v| v.record_i64(field, value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_ok() && self.plain(field) {
            self.pending.push_str(if value { "true" } else { "false" });
        } else if self.result.is_ok() {
            self.delegate(|v| v.record_bool(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_ok() {
            self.delegate(|v| v.record_error(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() && self.plain(field) {
            self.result = self.result.and(write!(self.pending, "{value:?}"));
        } else if self.result.is_ok() {
            self.delegate(|v| v.record_debug(field, value));
        }
    }
}

impl VisitOutput<fmt::Result> for Visitor<'_> {
    fn finish(mut self) -> fmt::Result {
        self.flush();
        self.result
    }
}

impl VisitFmt for Visitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.flush();
        &mut self.writer
    }
}

impl Drop for Visitor<'_> {
    fn drop(&mut self) {
        // Unfinished (nothing of tracing-subscriber's does that): the
        // fields still go out.
        self.flush();
        // Kept for the next line unless a very long field grew it.
        if self.pending.capacity() <= SPARE_BYTES {
            SPARE.set(std::mem::take(&mut self.pending));
        }
    }
}

/// The clock: UTC as RFC 3339 with microseconds,
/// `2026-12-03T22:58:00.123456Z`, as tracing-subscriber's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock;

thread_local! {
    /// The last second formatted on this thread, and its text up to the
    /// seconds (`2026-12-03T22:58:00`).
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(t) => write_time(w, t.as_secs(), t.subsec_micros()),
            // Before 1970: not worth a fast path.
            Err(_) => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

fn write_time(w: &mut Writer<'_>, secs: u64, micros: u32) -> fmt::Result {
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let date = i64::try_from(secs).ok().and_then(|s| chrono::DateTime::from_timestamp(s, 0));
        let Some(date) = date.filter(|d| chrono::Datelike::year(d) <= 9999) else {
            // Past year 9999 the text is longer; tracing-subscriber's then.
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let formatted = date.format("%Y-%m-%dT%H:%M:%S").to_string();
        if formatted.len() != text.len() {
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        }
        text.copy_from_slice(formatted.as_bytes());
        SECOND.set((secs, text));
    }
    // The cache only ever holds the ASCII text written above.
    w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    let mut frac = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    let mut rest = micros.min(999_999);
    for slot in frac[1..7].iter_mut().rev() {
        // A digit: `rest % 10` is below 10.
        *slot = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        rest /= 10;
    }
    w.write_str(std::str::from_utf8(&frac).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing::{error, info, info_span};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Failed;

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("upstream \x1b[31mclosed")
        }
    }

    impl std::error::Error for Failed {}

    /// Every kind of field porteiro logs, and the awkward ones.
    fn events() {
        let span = info_span!("request", id = "0af3", n = 7u64);
        let _in = span.enter();
        info!(
            target: "porteiro::access",
            request_id = "9f86d081884c7d65",
            client = %std::net::IpAddr::from([203, 0, 113, 9]),
            method = %http::Method::GET,
            host = "app.test",
            path = "/a b/\"quoted\"/back\\slash/ção/\u{7f}\t",
            status = 200u16,
            route = "-",
            upstream_ms = %format_args!("{:.3}", 1.25),
            bytes = -1i64,
            ok = true,
            list = ?["a", "b"],
        );
        info!(r#type = "raw", "message with \x1b[2J an escape and {}", 42);
        error!(error = &Failed as &(dyn std::error::Error + 'static), "upstream failed");
        info!("");
        info!(empty = "", "only a message field before");
    }

    fn captured(plain: bool, ansi: bool) -> String {
        let buffer = Buffer::default();
        let builder = tracing_subscriber::fmt().with_writer(buffer.clone()).with_ansi(ansi).without_time();
        if plain {
            tracing::subscriber::with_default(builder.fmt_fields(Fields).finish(), events);
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_are_tracing_subscribers_own() {
        let (ours, theirs) = (captured(true, false), captured(false, false));
        assert_eq!(ours, theirs);
        assert!(ours.contains(r#"path="/a b/\"quoted\"/back\\slash/ção/\u{7f}\t""#), "{ours}");
        assert!(ours.contains("request{id=\"0af3\" n=7}: porteiro::access: request_id="), "{ours}");
        assert!(!ours.contains('\x1b'), "escapes in a message are written escaped: {ours}");
        // With colours, tracing-subscriber writes everything.
        assert_eq!(captured(true, true), captured(false, true));
    }

    #[test]
    fn times_are_rfc3339_with_microseconds() {
        for (secs, micros) in [(0, 0), (1_796_335_080, 123_456), (1_796_335_080, 999_999), (253_402_300_799, 7)] {
            let mut out = String::new();
            write_time(&mut Writer::new(&mut out), secs, micros).unwrap();
            let expected = chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap(), micros * 1000)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(out, expected);
            // Again, from this thread's cached second.
            let mut again = String::new();
            write_time(&mut Writer::new(&mut again), secs, micros).unwrap();
            assert_eq!(again, expected);
        }
    }
}
