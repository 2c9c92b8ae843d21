//! A minimal JSON value and writer for `--json` output (the tool keeps no dependencies beyond
//! the engine: it `exec`s the user's command in `accel run`).

use std::fmt::Write as _;

#[derive(Clone, Debug, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    S(String),
    A(Vec<J>),
    O(Vec<(String, J)>),
}

impl J {
    /// An object from (key, value) pairs.
    pub fn obj<K: Into<String>>(pairs: impl IntoIterator<Item = (K, J)>) -> J {
        J::O(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn s(v: impl Into<String>) -> J {
        J::S(v.into())
    }

    pub fn opt_s(v: Option<impl Into<String>>) -> J {
        v.map_or(J::Null, |v| J::S(v.into()))
    }

    /// Compact text (one line).
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, None, 0);
        out
    }

    /// Indented text.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, Some(2), 0);
        out
    }

    fn write(&self, out: &mut String, indent: Option<usize>, level: usize) {
        let nl = |out: &mut String, level: usize| {
            if let Some(n) = indent {
                out.push('\n');
                out.extend(std::iter::repeat_n(' ', n * level));
            }
        };
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::U(n) => {
                let _ = write!(out, "{n}");
            }
            J::I(n) => {
                let _ = write!(out, "{n}");
            }
            J::F(x) if x.is_finite() => {
                let _ = write!(out, "{x}");
            }
            J::F(_) => out.push_str("null"),
            J::S(s) => escape(out, s),
            J::A(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    nl(out, level + 1);
                    v.write(out, indent, level + 1);
                }
                if !items.is_empty() {
                    nl(out, level);
                }
                out.push(']');
            }
            J::O(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    nl(out, level + 1);
                    escape(out, k);
                    out.push(':');
                    if indent.is_some() {
                        out.push(' ');
                    }
                    v.write(out, indent, level + 1);
                }
                if !pairs.is_empty() {
                    nl(out, level);
                }
                out.push('}');
            }
        }
    }
}

fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json() {
        let v = J::obj([
            ("a", J::U(1)),
            ("b", J::s("x\"y\n\u{1}")),
            ("c", J::A(vec![J::Bool(true), J::Null, J::F(0.5), J::I(-3)])),
            ("d", J::O(vec![])),
        ]);
        assert_eq!(v.text(), r#"{"a":1,"b":"x\"y\n\u0001","c":[true,null,0.5,-3],"d":{}}"#);
        assert!(v.pretty().contains("\n  \"a\": 1,"));
        assert_eq!(J::F(f64::NAN).text(), "null");
    }
}
