//! The one-line JSON of `stunedge probe --json`, written by serde_json from `#[derive(Serialize)]`
//! types: `{"key": value, "key": value}`, with a space after each `:` and `,` (scripts and tests
//! match `"key": ` literally), and every float with three decimals (the probe's seconds and
//! milliseconds). Strings are escaped as JSON requires.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

/// `value` as one line of JSON.
pub(crate) fn line<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    value
        .serialize(&mut serde_json::Serializer::with_formatter(&mut out, OneLine))
        .expect("probe output is plain structs, strings and numbers");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// serde_json's compact format with `", "` and `": "` separators and `{:.3}` floats.
struct OneLine;

impl Formatter for OneLine {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        write!(w, "{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sample {
        text: &'static str,
        ms: f64,
        none: Option<u32>,
        list: Vec<u8>,
        empty: Vec<u8>,
    }

    #[test]
    fn one_line_with_spaces_and_three_decimals() {
        let sample = Sample { text: "say \"hi\"\n", ms: 1.5, none: None, list: vec![1, 2], empty: Vec::new() };
        assert_eq!(
            line(&sample),
            r#"{"text": "say \"hi\"\n", "ms": 1.500, "none": null, "list": [1, 2], "empty": []}"#
        );
    }
}
