//! Objective values typed on a command line: CBOR diagnostic notation
//! (RFC 8949 §8) or JSON, which is nearly a subset of it.
//!
//! Accepted: integers (`-3`, `18446744073709551615`), floats (`1.5`),
//! `true`, `false`, `null`, text (`"NZD"`, JSON escapes), byte strings
//! (`h'0102'`), arrays (`[1, "two"]`), maps (`{"a": 1, 2: h''}`) and tags
//! (`24(h'8201')`). A bare word that is none of these is taken as text, so
//! `grasp flood EX.news hello` floods the text "hello".

use ciborium::Value as Cbor;
use grasp_engine::wire::Value;

/// Why a value did not parse.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the value {input:?} at character {at}: {why} (write CBOR diagnostic notation or JSON, e.g. 42, \"text\", [\"NZD\", 150], {{\"a\": 1}}, h'0102')")]
pub struct ValueError {
    input: String,
    at: usize,
    why: String,
}

/// Nesting allowed in typed values.
const MAX_DEPTH: usize = 32;

/// Parses `s` into a GRASP objective value.
pub fn parse_value(s: &str) -> Result<Value, ValueError> {
    let c = parse_cbor(s)?;
    Value::from_ciborium(&c).map_err(|e| ValueError {
        input: s.to_string(),
        at: 0,
        why: e.to_string(),
    })
}

/// Parses `s` into a CBOR item.
pub fn parse_cbor(s: &str) -> Result<Cbor, ValueError> {
    let t = s.trim();
    if is_bare_word(t) {
        return Ok(Cbor::Text(t.to_string()));
    }
    let mut p = Parser {
        s: t.as_bytes(),
        pos: 0,
        input: s,
    };
    let v = p.item(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("unexpected text after the value"));
    }
    Ok(v)
}

/// A word with no structure, not a keyword or number: taken as text.
fn is_bare_word(t: &str) -> bool {
    !t.is_empty()
        && !matches!(t, "true" | "false" | "null")
        && t.chars().next().is_some_and(|c| c.is_alphabetic())
        && !t.starts_with("h'")
        && t.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/'))
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    input: &'a str,
}

impl Parser<'_> {
    fn err(&self, why: &str) -> ValueError {
        ValueError {
            input: self.input.to_string(),
            at: self.pos,
            why: why.to_string(),
        }
    }

    fn ws(&mut self) {
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn item(&mut self, depth: usize) -> Result<Cbor, ValueError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.ws();
        match self.peek() {
            None => Err(self.err("a value is missing")),
            Some(b'[') => {
                self.pos += 1;
                let mut v = Vec::new();
                if self.eat(b']') {
                    return Ok(Cbor::Array(v));
                }
                loop {
                    v.push(self.item(depth + 1)?);
                    if self.eat(b']') {
                        return Ok(Cbor::Array(v));
                    }
                    if !self.eat(b',') {
                        return Err(self.err("expected ',' or ']'"));
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut v = Vec::new();
                if self.eat(b'}') {
                    return Ok(Cbor::Map(v));
                }
                loop {
                    let k = self.item(depth + 1)?;
                    if !self.eat(b':') {
                        return Err(self.err("expected ':' after a map key"));
                    }
                    let val = self.item(depth + 1)?;
                    v.push((k, val));
                    if self.eat(b'}') {
                        return Ok(Cbor::Map(v));
                    }
                    if !self.eat(b',') {
                        return Err(self.err("expected ',' or '}'"));
                    }
                }
            }
            Some(b'"') => self.text().map(Cbor::Text),
            Some(b'h') if self.s.get(self.pos + 1) == Some(&b'\'') => self.hex(),
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(depth),
            Some(_) => {
                for (word, v) in [
                    ("true", Cbor::Bool(true)),
                    ("false", Cbor::Bool(false)),
                    ("null", Cbor::Null),
                ] {
                    if self.s[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(v);
                    }
                }
                Err(self.err("not a value (text needs double quotes inside arrays and maps)"))
            }
        }
    }

    fn text(&mut self) -> Result<String, ValueError> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            let rest = std::str::from_utf8(&self.s[self.pos..])
                .map_err(|_| self.err("text is not UTF-8"))?;
            let Some(c) = rest.chars().next() else {
                return Err(self.err("unterminated text"));
            };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let e = self.peek().ok_or_else(|| self.err("unterminated escape"))?;
                    self.pos += 1;
                    out.push(match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'u' => {
                            let hex = self
                                .s
                                .get(self.pos..self.pos + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.err("bad \\u escape"))?;
                            self.pos += 4;
                            char::from_u32(hex).ok_or_else(|| self.err("bad \\u escape"))?
                        }
                        _ => return Err(self.err("unknown escape")),
                    });
                }
                c => out.push(c),
            }
        }
    }

    fn hex(&mut self) -> Result<Cbor, ValueError> {
        self.pos += 2; // h'
        let start = self.pos;
        while self.peek().is_some_and(|c| c != b'\'') {
            self.pos += 1;
        }
        if self.peek() != Some(b'\'') {
            return Err(self.err("unterminated byte string"));
        }
        let digits: Vec<u8> = self.s[start..self.pos]
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        self.pos += 1;
        if !digits.len().is_multiple_of(2) {
            return Err(self.err("odd number of hex digits"));
        }
        let mut out = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks(2) {
            let h = std::str::from_utf8(pair)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| self.err("not a hex digit"))?;
            out.push(h);
        }
        Ok(Cbor::Bytes(out))
    }

    fn number(&mut self, depth: usize) -> Result<Cbor, ValueError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            self.pos += 1;
        }
        let lit = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default();
        // A tag: digits followed by '('.
        if self.peek() == Some(b'(') && lit.bytes().all(|c| c.is_ascii_digit()) {
            let tag: u64 = lit.parse().map_err(|_| self.err("tag number too large"))?;
            self.pos += 1;
            let inner = self.item(depth + 1)?;
            if !self.eat(b')') {
                return Err(self.err("expected ')' after a tagged value"));
            }
            return Ok(Cbor::Tag(tag, Box::new(inner)));
        }
        if lit.contains(['.', 'e', 'E']) {
            return lit
                .parse::<f64>()
                .map(Cbor::Float)
                .map_err(|_| self.err("not a number"));
        }
        let n: i128 = lit.parse().map_err(|_| self.err("not a number"))?;
        ciborium::value::Integer::try_from(n)
            .map(Cbor::Integer)
            .map_err(|_| self.err("integer out of CBOR's range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(s: &str) -> String {
        parse_value(s).unwrap().to_string()
    }

    #[test]
    fn diagnostic_notation_and_json() {
        assert_eq!(diag("42"), "42");
        assert_eq!(diag("-7"), "-7");
        assert_eq!(diag("18446744073709551615"), "18446744073709551615");
        assert_eq!(diag("\"NZD\""), "\"NZD\"");
        assert_eq!(diag("[\"NZD\", 150]"), "[\"NZD\", 150]");
        assert_eq!(
            diag("{\"a\": 1, \"b\": [true, null]}"),
            "{\"a\": 1, \"b\": [true, null]}"
        );
        assert_eq!(diag("h'0102ff'"), "h'0102ff'");
        assert_eq!(diag("24(h'8201')"), "24(h'8201')");
        assert_eq!(diag("[1, \"two\", 3]"), "[1, \"two\", 3]");
        assert_eq!(diag(" \"caf\\u00e9\\n\" "), "\"café\\n\"");
        assert_eq!(diag("1.5"), "1.5");
        // A bare word is text.
        assert_eq!(diag("hello"), "\"hello\"");
        assert_eq!(diag("EST-TLS"), "\"EST-TLS\"");
    }

    #[test]
    fn mistakes_say_where_and_what() {
        for bad in [
            "[1, 2",
            "{\"a\" 1}",
            "h'123'",
            "[x]",
            "\"open",
            "1 2",
            "99999999999999999999999",
        ] {
            let e = parse_value(bad).unwrap_err().to_string();
            assert!(e.contains("cannot read the value"), "{bad}: {e}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse_value(&deep)
            .unwrap_err()
            .to_string()
            .contains("nested too deeply"));
    }
}
