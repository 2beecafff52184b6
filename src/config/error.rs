//! Configuration errors: [`ConfigError`] names the place (`file:line` for what the TOML parser
//! finds, the file for what validation finds), the field, the value as written and the reason, on one line, and never echoes a
//! password or secret. [`locate`] turns a parser error's byte span into that field path.

use std::fmt;
use std::ops::Range;

/// A configuration problem: which field, what value, what is wrong. One line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `file:line` for syntax and type errors found while parsing; the file alone for errors
    /// [`Config::validate`](super::Config::validate) finds in a file's configuration; empty for
    /// text that came from no file.
    pub location: String,
    /// Which field: a path (`io.batch_size`, `server.listen[1]`), or a file name.
    pub field: String,
    /// The offending value, as written (empty when not applicable).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.location.is_empty() {
            write!(f, "{}: ", self.location)?;
        }
        if self.value.is_empty() {
            write!(f, "{}: {}", self.field, self.reason)
        } else {
            write!(f, "{} = {}: {}", self.field, self.value, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// An error found after parsing (no location).
pub(super) fn invalid(field: impl Into<String>, value: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError { location: String::new(), field: field.into(), value: value.to_string(), reason: reason.into() }
}

/// A TOML parser error in `text` (read from `origin`) as a [`ConfigError`] with `origin:line`,
/// the field path and the value; for a secret field, without the value.
pub(super) fn parse_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().replace('\n', " ");
    let Some(span) = e.span() else {
        return invalid(origin, "", message);
    };
    let (line, field, value) = locate(text, span);
    let location = format!("{origin}:{line}");
    if is_secret_field(&field) {
        // Never echo a password or secret, not even a mistyped one.
        return ConfigError { location, field, value: String::new(), reason: redact_quoted(&message) };
    }
    ConfigError { location, field, value, reason: message }
}

/// Whether a field path holds passwords or secrets (its values are never echoed in errors).
pub(super) fn is_secret_field(field: &str) -> bool {
    field.starts_with("auth.") && (field.contains("secret") || field.contains("users"))
}

/// `message` with the text of every double-quoted string replaced by `…`.
pub(super) fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('"').enumerate() {
        if i > 0 {
            out.push('"');
        }
        out.push_str(if i % 2 == 1 { "…" } else { part });
    }
    out
}

/// A bracket the scan in [`locate`] is inside.
enum Frame {
    /// An array, at its `n`th element.
    Array(usize),
    /// An inline table: the key being read starts at `key_start`, and is `key` once its `=` is
    /// passed.
    Table { key: Option<String>, key_start: usize },
}

/// The line number, field path and value text of the TOML value at `span`, so that parser errors
/// name the field as validation errors do: `io.batch_size` and `"many"`, `server.listen[1]` and
/// `"nonsense"` (counting the commas before it in its array), `auth.listeners[0].policy`. When
/// the span is a key (an unknown field), the value is the one written after it.
pub(super) fn locate(text: &str, span: Range<usize>) -> (usize, String, String) {
    let at = span.start.min(text.len());
    let line = text[..at].matches('\n').count() + 1;
    let bytes = text.as_bytes();
    let mut section = String::new();
    // The top-level key of the statement being read, once its `=` is passed.
    let mut key: Option<String> = None;
    let mut key_start = 0;
    let mut stack: Vec<Frame> = Vec::new();
    // The `[[name]]` headers passed, in order.
    let mut tables: Vec<String> = Vec::new();
    let mut i = 0;
    while i < at {
        match bytes[i] {
            b'"' | b'\'' => {
                i = string_end(text, i);
                continue;
            }
            b'#' => {
                i = line_end(text, i);
                continue;
            }
            b'\n' if stack.is_empty() => {
                key = None;
                key_start = i + 1;
            }
            b'[' if stack.is_empty() && key.is_none() => {
                // A table header, `[a.b]` or `[[a.b]]`, to the end of its line.
                let end = line_end(text, i);
                if end >= at {
                    return (line, text[i..end].trim().to_string(), String::new());
                }
                let header = text[i..end].trim();
                let name = header.trim_start_matches('[');
                let name = name[..name.find(']').unwrap_or(name.len())].trim();
                section = if header.starts_with("[[") {
                    // An array of tables: the nth `[[name]]` so far is element n.
                    let n = tables.iter().filter(|t| *t == name).count();
                    tables.push(name.to_string());
                    format!("{name}[{n}]")
                } else {
                    name.to_string()
                };
                i = end;
                continue;
            }
            b'[' => stack.push(Frame::Array(0)),
            b'{' => stack.push(Frame::Table { key: None, key_start: i + 1 }),
            b']' | b'}' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(n)) => *n += 1,
                Some(Frame::Table { key, key_start }) => {
                    *key = None;
                    *key_start = i + 1;
                }
                None => {}
            },
            b'=' => match stack.last_mut() {
                None if key.is_none() => key = Some(text[key_start..i].trim().to_string()),
                Some(Frame::Table { key: key @ None, key_start }) => {
                    *key = Some(text[*key_start..i].trim().to_string());
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }

    let mut field = section;
    // The start of a key the span is on, in the innermost statement or inline table.
    let mut on_key = None;
    match &key {
        Some(key) => join(&mut field, key),
        None => on_key = Some(key_start),
    }
    for frame in &stack {
        match frame {
            Frame::Array(n) => join(&mut field, &format!("[{n}]")),
            Frame::Table { key: Some(key), .. } => join(&mut field, key),
            Frame::Table { key: None, key_start } => on_key = Some(*key_start),
        }
    }
    let value = match on_key {
        Some(start) => {
            let end = line_end(text, start);
            match text[start..end].split_once('=') {
                Some((name, _)) => {
                    join(&mut field, name.trim());
                    let value_start = start + name.len() + 1;
                    text[value_start..value_end(text, value_start)].trim().to_string()
                }
                // No key here: a table header or a stray line, named as written.
                None => return (line, text[start..end].trim().to_string(), String::new()),
            }
        }
        None => {
            let end = span.end.clamp(at, text.len());
            text[at..end].lines().next().unwrap_or("").trim().to_string()
        }
    };
    (line, field, value)
}

/// Appends a key (`.key`) or an index (`[n]`) to a field path.
fn join(field: &mut String, part: &str) {
    if !field.is_empty() && !part.starts_with('[') {
        field.push('.');
    }
    field.push_str(part);
}

/// The index just past the string literal that starts at `start` (basic, literal, or either's
/// multi-line form).
fn string_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let quote = bytes[start];
    let triple = if quote == b'"' { "\"\"\"" } else { "'''" };
    // Bytes, not `str` slices: `i` walks bytes and may stand inside a multi-byte character.
    let multi_line = bytes[start..].starts_with(triple.as_bytes());
    let mut i = start + if multi_line { 3 } else { 1 };
    while i < bytes.len() {
        if quote == b'"' && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if multi_line {
            if bytes[i..].starts_with(triple.as_bytes()) {
                return i + 3;
            }
        } else if bytes[i] == quote {
            return i + 1;
        } else if bytes[i] == b'\n' {
            return i; // unterminated: the parser reports that
        }
        i += 1;
    }
    bytes.len()
}

/// The index of the newline ending the line that holds `at` (or the text's end).
fn line_end(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |n| at + n)
}

/// Where the value starting at `start` ends: the first `,`, `]`, `}`, comment or line end
/// outside its own brackets and strings.
fn value_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' => {
                i = string_end(text, i);
                continue;
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth > 0 => depth -= 1,
            b',' | b']' | b'}' | b'#' | b'\n' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, needle: &str) -> (usize, String, String) {
        let start = text.find(needle).unwrap();
        locate(text, start..start + needle.len())
    }

    #[test]
    fn locate_names_section_key_element_and_value() {
        let text = "[server]\nlisten = [\"127.0.0.1:1\", \"nonsense\"]\n";
        assert_eq!(at(text, "\"nonsense\""), (2, "server.listen[1]".into(), "\"nonsense\"".into()));
        let text = "[server]\nlisten = [\n  \"127.0.0.1:1\", # a, b\n  \"x,y\",\n  \"nonsense\",\n]\n";
        assert_eq!(at(text, "\"nonsense\""), (5, "server.listen[2]".into(), "\"nonsense\"".into()));
        let text = "[auth]\nlisteners = [{ listen = \"a\", policy = \"zz\" }]\n";
        assert_eq!(at(text, "\"zz\""), (2, "auth.listeners[0].policy".into(), "\"zz\"".into()));
        let text = "[auth]\nlisteners = [{ listen = \"a\", polic = 3 }]\n";
        assert_eq!(at(text, "polic"), (2, "auth.listeners[0].polic".into(), "3".into()));
        let text = "[io]\nbatch_size = 8\nbach_size = 9\n";
        assert_eq!(at(text, "bach_size"), (3, "io.bach_size".into(), "9".into()));
        let text = "[io]\nbatch_size = \"many\" # comment\n";
        assert_eq!(at(text, "\"many\""), (2, "io.batch_size".into(), "\"many\"".into()));
        let text = "top = 1\n";
        assert_eq!(at(text, "top"), (1, "top".into(), "1".into()));
        let text = "[io]\n[bogus]\n";
        assert_eq!(at(text, "bogus").1, "[bogus]");
        let text = "[auth.long_term_users]\nalice = 7\n";
        assert_eq!(at(text, "7"), (2, "auth.long_term_users.alice".into(), "7".into()));
        let text = "[[auth.listeners]]\npolicy = \"a\"\n[[auth.listeners]]\npolicy = \"zz\"\n";
        assert_eq!(at(text, "\"zz\""), (4, "auth.listeners[1].policy".into(), "\"zz\"".into()));
    }

    #[test]
    fn locate_walks_past_non_ascii_strings() {
        // Strings with multi-byte characters before the error: the scan walks bytes and must
        // never slice inside a character.
        let strings =
            [r#"software = """stunédge""""#, "software = '''pässwörd'''", r#"software = """\é""""#, r#"x = "é\"""#];
        for before in strings {
            let text = format!("[server]\n{before}\n[io]\nbatch_size = \"x\"\n");
            assert_eq!(at(&text, "\"x\""), (4, "io.batch_size".into(), "\"x\"".into()), "{before}");
        }
        let text = "[io]\nbatch_size = \"\"\"ü";
        assert_eq!(at(text, "ü").0, 2, "an unterminated string runs to the end");
    }

    proptest::proptest! {
        /// Whatever the file holds, naming the place of an error never panics (a reload runs
        /// this on the main thread of a running server).
        #[test]
        fn locate_never_panics(text in r#"[a-z\[\]{}=,#"'\\\n é\.ü\[\[0-9]{0,80}"#, start in 0usize..100, len in 0usize..20) {
            let start = (0..=start.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let end = (start..=(start + len).min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(start);
            let (line, _, _) = locate(&text, start..end);
            proptest::prop_assert!(line >= 1);
        }
    }
}
