//! Server text made safe to show. A server decides what error messages, names and bodies
//! say; written as they are, a newline would start a log line of its own (a forged
//! `ERROR …` entry) and a raw ESC or CR would rewrite what a terminal shows. Everything the
//! mount logs, and every `.error` file, goes through here: control characters (C0, DEL and
//! C1, but tab) become visible escapes such as `\n`, `\r`, `\x1b`.

use std::borrow::Cow;
use std::io::Write;

/// `s` with its control characters escaped (`s` itself when it has none).
pub fn controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_control(c) => out.push_str(&format!("\\x{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn is_control(c: char) -> bool {
    c != '\t' && (c.is_control())
}

/// [`controls`] for text that ends with one newline of its own (a `.error` file's line):
/// that one is kept.
pub fn line(s: &str) -> String {
    match s.strip_suffix('\n') {
        Some(body) => format!("{}\n", controls(body)),
        None => controls(s).into_owned(),
    }
}

/// A log writer that escapes control characters in each event but the newline ending it,
/// so no field of an event (a server's message, a file name) can start a line of its own.
/// The formatter hands over one whole event per write.
pub struct LogWriter<W>(pub W);

impl<W: Write> Write for LogWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(line(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_and_only_the_final_newline_stays() {
        assert_eq!(controls("plain text\twith tab"), "plain text\twith tab");
        assert_eq!(
            controls("a\n2026-01-01T00:00:00Z ERROR forged\r\x1b[2J\u{85}"),
            "a\\n2026-01-01T00:00:00Z ERROR forged\\r\\x{1b}[2J\\x{85}"
        );
        assert_eq!(line("bad\nthing\n"), "bad\\nthing\n");
        let mut w = LogWriter(Vec::new());
        w.write_all(b"INFO message: evil\nERROR forged\n").unwrap();
        assert_eq!(String::from_utf8(w.0).unwrap(), "INFO message: evil\\nERROR forged\n");
    }
}
