//! Where log lines go: standard error, each line cleaned first. A client chooses some of what a
//! line says (a model name, a path, a header): a newline in it must not forge a second line,
//! and no other control character may reach the terminal or the journal reading the log. Any
//! key the process knows (configured keys, the admin token, client credentials passed
//! through) is replaced by [`crate::secret::REDACTED`], whatever put it in the line.

use std::io::{self, Write};

/// The writer for `tracing_subscriber::fmt().with_writer(...)`: standard error, cleaned.
/// `ansi` keeps the escape character (the formatter's own colours on a terminal).
#[derive(Debug, Clone, Copy)]
pub struct LogWriter {
    /// The formatter colours its output (a terminal).
    pub ansi: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = CleanLine;

    fn make_writer(&'a self) -> CleanLine {
        CleanLine { ansi: self.ansi }
    }
}

/// One event's output (the formatter writes a whole line in one call).
#[derive(Debug)]
pub struct CleanLine {
    ansi: bool,
}

impl Write for CleanLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let line = clean(buf, self.ansi);
        io::stderr().lock().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `buf` as one log line: control characters escaped (`\n` as `\\n`, others as `\\u{..}`)
/// but for its final newline, and known secrets redacted.
pub fn clean(buf: &[u8], ansi: bool) -> String {
    let text = String::from_utf8_lossy(buf);
    let (body, newline) = match text.strip_suffix('\n') {
        Some(b) => (b, "\n"),
        None => (&*text, ""),
    };
    let body = crate::secret::redact(body);
    let mut out = String::with_capacity(body.len() + 1);
    for c in body.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push(' '),
            '\u{1b}' if ansi => out.push(c),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push_str(newline);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_stays_on_its_line() {
        let forged = "WARN request model=claude\n2026-01-01T00:00:00Z INFO admin logged in\r\x07\n";
        let out = clean(forged.as_bytes(), false);
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(out.ends_with('\n'));
        assert!(
            out.contains("claude\\n2026") && out.contains("\\r\\u{7}"),
            "{out:?}"
        );
        let coloured = clean(b"\x1b[33mWARN\x1b[0m x\n", true);
        assert_eq!(
            coloured, "\x1b[33mWARN\x1b[0m x\n",
            "the formatter's colours stay"
        );
        assert!(!clean(b"\x1b[2J\n", false).contains('\x1b'));
    }

    #[test]
    fn a_known_key_never_reaches_a_line() {
        let _k = crate::secret::Secret::new("sk-logline-test-key-987654");
        let out = clean(
            b"upstream said: invalid x-api-key: sk-logline-test-key-987654\n",
            false,
        );
        assert!(!out.contains("987654"), "{out}");
    }
}
