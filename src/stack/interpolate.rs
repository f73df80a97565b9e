//! `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`, `${VAR:+alt}`,
//! `${VAR+alt}`, `$VAR` and `$$` as compose does.
//!
//! Only string scalars are interpolated, never mapping keys. An unset variable without a default
//! becomes the empty string (as in compose) and is reported in [`Interpolator::unset`] so the
//! caller can warn. Defaults and alternatives may themselves contain `${...}`.

use serde_yaml::Value;

use super::Env;

/// Interpolates strings against an environment, remembering the unset variables it met.
#[derive(Debug)]
pub struct Interpolator<'a> {
    env: &'a Env,
    /// Variables that were referenced without a default while unset (in first-seen order).
    pub unset: Vec<String>,
}

/// An interpolation failure inside a document: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    /// Dotted document path, e.g. `services.db.environment.POSTGRES_PASSWORD`.
    pub path: String,
    pub message: String,
}

impl<'a> Interpolator<'a> {
    pub fn new(env: &'a Env) -> Self {
        Interpolator {
            env,
            unset: Vec::new(),
        }
    }

    fn lookup(&self, name: &str) -> Option<&'a str> {
        self.env.get(name).map(String::as_str)
    }

    fn note_unset(&mut self, name: &str) {
        if !self.unset.iter().any(|n| n == name) {
            self.unset.push(name.to_string());
        }
    }

    /// Interpolates one string.
    pub fn interpolate_str(&mut self, input: &str) -> Result<String, String> {
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let mut chars = after.chars();
            match chars.next() {
                Some('$') => {
                    out.push('$');
                    rest = &after[1..];
                }
                Some('{') => {
                    let body_start = &after[1..];
                    let end = matching_brace(body_start).ok_or_else(|| {
                        format!("invalid interpolation format in {input:?}: unclosed `${{` (write `$$` for a literal `$`)")
                    })?;
                    let body = &body_start[..end];
                    let value = self.expand_braced(body, input)?;
                    out.push_str(&value);
                    rest = &body_start[end + 1..];
                }
                Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                    let len = after
                        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                        .unwrap_or(after.len());
                    let name = &after[..len];
                    match self.lookup(name) {
                        Some(v) => out.push_str(v),
                        None => self.note_unset(name),
                    }
                    rest = &after[len..];
                }
                _ => {
                    return Err(format!(
                        "invalid interpolation format in {input:?}: `$` must be followed by a variable name or `{{`; write `$$` for a literal `$`"
                    ))
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `NAME`, `NAME:-word`, `NAME-word`, `NAME:?msg`, `NAME?msg`, `NAME:+word`, `NAME+word`.
    fn expand_braced(&mut self, body: &str, input: &str) -> Result<String, String> {
        let name_len = body
            .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
            .unwrap_or(body.len());
        let name = &body[..name_len];
        let starts_ok = name
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_alphabetic());
        if !starts_ok {
            return Err(format!(
                "invalid interpolation format in {input:?}: `${{{body}}}` does not start with a variable name"
            ));
        }
        let op_and_word = &body[name_len..];
        let value = self.lookup(name);
        if op_and_word.is_empty() {
            return Ok(match value {
                Some(v) => v.to_string(),
                None => {
                    self.note_unset(name);
                    String::new()
                }
            });
        }
        let (op, word) = if let Some(w) = op_and_word.strip_prefix(":-") {
            (":-", w)
        } else if let Some(w) = op_and_word.strip_prefix(":?") {
            (":?", w)
        } else if let Some(w) = op_and_word.strip_prefix(":+") {
            (":+", w)
        } else if let Some(w) = op_and_word.strip_prefix('-') {
            ("-", w)
        } else if let Some(w) = op_and_word.strip_prefix('?') {
            ("?", w)
        } else if let Some(w) = op_and_word.strip_prefix('+') {
            ("+", w)
        } else {
            return Err(format!(
                "invalid interpolation format in {input:?}: unknown operator in `${{{body}}}` (use :-, -, :?, ?, :+ or +)"
            ));
        };
        let set = value.is_some();
        let non_empty = value.is_some_and(|v| !v.is_empty());
        match op {
            ":-" | "-" => {
                let use_default = if op == ":-" { !non_empty } else { !set };
                if use_default {
                    self.interpolate_str(word)
                } else {
                    Ok(value.unwrap_or_default().to_string())
                }
            }
            ":?" | "?" => {
                let missing = if op == ":?" { !non_empty } else { !set };
                if missing {
                    let msg = self.interpolate_str(word)?;
                    let what = if op == ":?" && set {
                        "is empty"
                    } else {
                        "is not set"
                    };
                    if msg.is_empty() {
                        Err(format!("required variable {name} {what}"))
                    } else {
                        Err(format!("required variable {name} {what}: {msg}"))
                    }
                } else {
                    Ok(value.unwrap_or_default().to_string())
                }
            }
            _ => {
                // ":+" | "+"
                let use_alt = if op == ":+" { non_empty } else { set };
                if use_alt {
                    self.interpolate_str(word)
                } else {
                    Ok(String::new())
                }
            }
        }
    }

    /// Interpolates every string scalar in `value` (mapping keys are left alone). `path` is the
    /// dotted path of `value` in its document, used in errors.
    pub fn interpolate_value(
        &mut self,
        value: &mut Value,
        path: &str,
    ) -> Result<(), InterpolationError> {
        match value {
            Value::String(s) => {
                if s.contains('$') {
                    *s = self
                        .interpolate_str(s)
                        .map_err(|message| InterpolationError {
                            path: path.to_string(),
                            message,
                        })?;
                }
                Ok(())
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.interpolate_value(item, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            Value::Mapping(map) => {
                for (k, v) in map.iter_mut() {
                    let key = key_display(k);
                    let child = if path.is_empty() {
                        key
                    } else {
                        format!("{path}.{key}")
                    };
                    self.interpolate_value(v, &child)?;
                }
                Ok(())
            }
            Value::Tagged(t) => self.interpolate_value(&mut t.value, path),
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        }
    }
}

/// A mapping key as shown in document paths.
pub fn key_display(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".to_string(),
        other => format!("{other:?}"),
    }
}

/// Index of the `}` closing a `${` whose body starts at `s[0]`, honouring nested `${...}`.
fn matching_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Escapes `$` as `$$` so that compose reads the string back literally.
pub fn escape(s: &str) -> String {
    s.replace('$', "$$")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn interp(s: &str, e: &Env) -> Result<String, String> {
        Interpolator::new(e).interpolate_str(s)
    }

    #[test]
    fn plain_and_braced() {
        let e = env(&[("USER", "ada"), ("EMPTY", "")]);
        assert_eq!(interp("hello $USER!", &e).unwrap(), "hello ada!");
        assert_eq!(interp("${USER}_x", &e).unwrap(), "ada_x");
        assert_eq!(interp("$USER_x", &e).unwrap(), "");
        assert_eq!(interp("no vars", &e).unwrap(), "no vars");
        assert_eq!(interp("a${EMPTY}b", &e).unwrap(), "ab");
    }

    #[test]
    fn unset_becomes_empty_and_is_reported() {
        let e = env(&[]);
        let mut i = Interpolator::new(&e);
        assert_eq!(i.interpolate_str("x${NOPE}y$ALSO_NOT").unwrap(), "xy");
        assert_eq!(i.interpolate_str("$NOPE").unwrap(), "");
        assert_eq!(i.unset, vec!["NOPE".to_string(), "ALSO_NOT".to_string()]);
    }

    #[test]
    fn default_operators() {
        let e = env(&[("SET", "v"), ("EMPTY", "")]);
        assert_eq!(interp("${SET:-d}", &e).unwrap(), "v");
        assert_eq!(interp("${EMPTY:-d}", &e).unwrap(), "d");
        assert_eq!(interp("${UNSET:-d}", &e).unwrap(), "d");
        assert_eq!(interp("${SET-d}", &e).unwrap(), "v");
        assert_eq!(interp("${EMPTY-d}", &e).unwrap(), "");
        assert_eq!(interp("${UNSET-d}", &e).unwrap(), "d");
        assert_eq!(interp("${UNSET:-}", &e).unwrap(), "");
        assert_eq!(interp("${UNSET:-a b:c/d}", &e).unwrap(), "a b:c/d");
    }

    #[test]
    fn nested_defaults() {
        let e = env(&[("INNER", "in")]);
        assert_eq!(interp("${OUTER:-${INNER}}", &e).unwrap(), "in");
        assert_eq!(interp("${OUTER:-${NOPE:-deep}}-x", &e).unwrap(), "deep-x");
        assert_eq!(interp("${OUTER:-$$literal}", &e).unwrap(), "$literal");
    }

    #[test]
    fn required_operators() {
        let e = env(&[("SET", "v"), ("EMPTY", "")]);
        assert_eq!(interp("${SET:?boom}", &e).unwrap(), "v");
        assert_eq!(interp("${SET?boom}", &e).unwrap(), "v");
        assert_eq!(interp("${EMPTY?boom}", &e).unwrap(), "");
        let err = interp("${EMPTY:?please set it}", &e).unwrap_err();
        assert!(err.contains("EMPTY is empty: please set it"), "{err}");
        let err = interp("${UNSET?need it}", &e).unwrap_err();
        assert!(err.contains("UNSET is not set: need it"), "{err}");
        let err = interp("${UNSET:?}", &e).unwrap_err();
        assert_eq!(err, "required variable UNSET is not set");
    }

    #[test]
    fn alternative_operators() {
        let e = env(&[("SET", "v"), ("EMPTY", "")]);
        assert_eq!(interp("${SET:+alt}", &e).unwrap(), "alt");
        assert_eq!(interp("${EMPTY:+alt}", &e).unwrap(), "");
        assert_eq!(interp("${UNSET:+alt}", &e).unwrap(), "");
        assert_eq!(interp("${SET+alt}", &e).unwrap(), "alt");
        assert_eq!(interp("${EMPTY+alt}", &e).unwrap(), "alt");
        assert_eq!(interp("${UNSET+alt}", &e).unwrap(), "");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        let e = env(&[("X", "1")]);
        assert_eq!(interp("$$X", &e).unwrap(), "$X");
        assert_eq!(interp("$${X}", &e).unwrap(), "${X}");
        assert_eq!(interp("a$$$X", &e).unwrap(), "a$1");
        assert_eq!(
            interp("pg_isready -U \"$${POSTGRES_USER:-postgres}\"", &e).unwrap(),
            "pg_isready -U \"${POSTGRES_USER:-postgres}\""
        );
        assert_eq!(escape("${A:-$B}"), "$${A:-$$B}");
    }

    #[test]
    fn malformed() {
        let e = env(&[]);
        assert!(interp("${UNCLOSED", &e).unwrap_err().contains("unclosed"));
        assert!(interp("cost: 5$", &e).unwrap_err().contains("$$"));
        assert!(interp("$-x", &e).is_err());
        assert!(interp("${}", &e).is_err());
        assert!(interp("${1A}", &e).is_err());
        assert!(interp("${A%%x}", &e)
            .unwrap_err()
            .contains("unknown operator"));
        // multi-byte characters around a `$` do not panic
        assert!(interp("é$é", &e).is_err());
        assert_eq!(interp("é${X:-ü}é", &e).unwrap(), "éüé");
    }

    #[test]
    fn values_not_keys() {
        let e = env(&[("V", "val"), ("K", "key")]);
        let mut doc: Value =
            serde_yaml::from_str("a:\n  $K: $V\n  list: [x$V, 3, true]\n").unwrap();
        let mut i = Interpolator::new(&e);
        i.interpolate_value(&mut doc, "").unwrap();
        assert_eq!(doc["a"]["$K"], Value::String("val".into()));
        assert_eq!(doc["a"]["list"][0], Value::String("xval".into()));
        assert_eq!(doc["a"]["list"][1], Value::Number(3.into()));
    }

    #[test]
    fn error_names_the_document_path() {
        let e = env(&[]);
        let mut doc: Value =
            serde_yaml::from_str("services:\n  db:\n    environment:\n      - PW=${PW:?set PW}\n")
                .unwrap();
        let err = Interpolator::new(&e)
            .interpolate_value(&mut doc, "")
            .unwrap_err();
        assert_eq!(err.path, "services.db.environment[0]");
        assert!(err.message.contains("PW is not set: set PW"));
    }
}
