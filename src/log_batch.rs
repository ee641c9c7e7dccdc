//! Log lines handed to the log's writer thread in batches.
//!
//! tracing-appender's writer thread takes one message at a time and writes
//! it with one `write`; a line per message costs a wake-up of that thread,
//! and, with porteiro's worker on the same core (the usual sidecar), a
//! context switch and a `sched_yield` of its channel per access-log line:
//! more than the line itself. So a runtime worker gathers the access-log
//! lines it writes while it runs tasks and hands them over as one message
//! when it parks (it has nothing to do: the lines are a few microseconds
//! old) or when [`BATCH_BYTES`] have gathered. Every other line (warnings,
//! errors: what an operator needs now, also from a worker that never
//! parks under load), and every line of any other thread, goes at once.
//!
//! What a batch has not yet handed over is lost if the process aborts;
//! a worker that stops, and [`on_park`] at the end of `main`, hand it over.

use std::cell::{Cell, RefCell};
use std::io;

use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::fmt::MakeWriter;

/// A batch is handed over once it holds this much.
pub const BATCH_BYTES: usize = 8 * 1024;

/// The target of the lines that are gathered: the access log's (one per
/// request; `gateway::access` logs under it).
pub const ACCESS_TARGET: &str = "porteiro::access";

thread_local! {
    /// Between a worker's unpark and its next park: gather lines.
    static GATHERING: Cell<bool> = const { Cell::new(false) };
    /// This thread's gathered lines, and where they go.
    static PENDING: RefCell<Pending> = const { RefCell::new(Pending { lines: Vec::new(), to: None }) };
}

struct Pending {
    lines: Vec<u8>,
    to: Option<NonBlocking>,
}

impl Pending {
    fn hand_over(&mut self) {
        if let (false, Some(to)) = (self.lines.is_empty(), self.to.as_mut()) {
            // The writer drops what its queue has no room for rather than
            // wait: a log never holds up a request.
            let _ = io::Write::write_all(to, &self.lines);
        }
        self.lines.clear();
        // A very long line grew the buffer: not kept at that size.
        self.lines.shrink_to(2 * BATCH_BYTES);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.hand_over();
    }
}

/// tracing-subscriber's writer: access-log lines in batches on runtime
/// workers, everything else line by line.
#[derive(Clone)]
pub struct Batched(NonBlocking);

impl Batched {
    pub fn new(to: NonBlocking) -> Batched {
        Batched(to)
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { to: &self.0, gather: false }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line<'a> {
        Line { to: &self.0, gather: meta.target() == ACCESS_TARGET }
    }
}

/// One line's writer.
pub struct Line<'a> {
    to: &'a NonBlocking,
    gather: bool,
}

impl io::Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Gathered on a worker, unless its batch is out of reach (the
        // thread's teardown): then at once, as on any other thread.
        let gathered = self.gather
            && GATHERING.get()
            && PENDING
                .try_with(|p| {
                    let Ok(mut p) = p.try_borrow_mut() else { return false };
                    if p.to.is_none() {
                        p.to = Some(self.to.clone());
                    }
                    p.lines.extend_from_slice(buf);
                    if p.lines.len() >= BATCH_BYTES {
                        p.hand_over();
                    }
                    true
                })
                .unwrap_or(false);
        if gathered { Ok(buf.len()) } else { self.to.clone().write(buf) }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runtime hook (`on_thread_unpark`): the worker runs tasks; its lines are
/// gathered.
pub fn on_unpark() {
    GATHERING.set(true);
}

/// Runtime hook (`on_thread_park`, `on_thread_stop`, and at the end of
/// `main`): the worker has nothing to do, or no more; what it gathered
/// goes to the writer.
pub fn on_park() {
    GATHERING.set(false);
    flush();
}

/// Hands over this thread's gathered lines.
pub fn flush() {
    // Not during the thread's own teardown (the batch's destructor does it).
    let _ = PENDING.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.hand_over();
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn written(sink: &Sink) -> String {
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    /// Waits for tracing-appender's thread to write what it was handed.
    fn eventually_written(sink: &Sink, expected: &str) {
        for _ in 0..200 {
            if written(sink) == expected {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(written(sink), expected);
    }

    #[test]
    fn access_lines_wait_while_the_worker_runs_and_go_when_it_parks() {
        let sink = Sink::default();
        let (to, _guard) = tracing_appender::non_blocking(sink.clone());
        let subscriber =
            tracing_subscriber::fmt().with_writer(Batched::new(to)).without_time().with_ansi(false).finish();
        let access = |n: &str| tracing::info!(target: "porteiro::access", n);
        let line = |n: &str| format!(" INFO porteiro::access: n=\"{n}\"\n");
        tracing::subscriber::with_default(subscriber, || {
            // Not a runtime worker: each line at once.
            access("one");
            eventually_written(&sink, &line("one"));
            // A worker running tasks: gathered until it parks; a warning
            // goes at once, ahead of them.
            on_unpark();
            access("two");
            access("three");
            tracing::warn!("upstream failed");
            let warned = " WARN porteiro::log_batch::tests: upstream failed\n";
            eventually_written(&sink, &format!("{}{warned}", line("one")));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(written(&sink), format!("{}{warned}", line("one")), "handed over before the worker parked");
            on_park();
            let mut expected = format!("{}{warned}{}{}", line("one"), line("two"), line("three"));
            eventually_written(&sink, &expected);
            // A full batch goes without waiting for the park.
            on_unpark();
            let long = "x".repeat(100);
            let lines = BATCH_BYTES / line(&long).len() + 1;
            for _ in 0..lines {
                access(&long);
            }
            expected.push_str(&line(&long).repeat(lines));
            eventually_written(&sink, &expected);
            // The end of main hands over what is left.
            access("last");
            on_park();
            expected.push_str(&line("last"));
            eventually_written(&sink, &expected);
        });
    }
}
