//! Positions in stack file texts for errors found after parsing: where a key path
//! (`services.db.environment.PW`, `x-nodus.services.db.roles.1.pasword`) is written, and where a
//! YAML syntax error really starts (the opening quote of an unclosed string, a tab used for
//! indentation).
//!
//! The locator reads block-style YAML by indentation; inside flow collections (`{a: 1}`) it
//! stops at the deepest key it found. Lines and columns are 1-based.

/// One logical line: its 1-based number, the indentation of its content, and the content.
/// `- key: v` yields a sequence-item entry at the dash and a content entry two columns right.
struct Entry<'a> {
    line: usize,
    indent: usize,
    text: &'a str,
    item: bool,
}

fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start_matches(' ');
        if trimmed.is_empty()
            || trimmed.starts_with('#')
            || trimmed.trim_end().is_empty()
            || trimmed.starts_with("---")
            || trimmed.starts_with("...")
        {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut rest = trimmed;
        // `- - x` nests sequences; `- key: v` opens a mapping inside the item.
        while rest == "-" || rest.starts_with("- ") {
            out.push(Entry {
                line: i + 1,
                indent,
                text: rest,
                item: true,
            });
            let after = rest[1..].trim_start_matches(' ');
            indent += rest.len() - after.len();
            rest = after;
            if rest.is_empty() || rest.starts_with('#') {
                break;
            }
        }
        if !(rest.is_empty() || rest.starts_with('#') || rest == "-" || rest.starts_with("- ")) {
            out.push(Entry {
                line: i + 1,
                indent,
                text: rest,
                item: false,
            });
        }
    }
    out
}

/// Whether `text` (a line's content) is the mapping key `key`.
fn is_key(text: &str, key: &str) -> bool {
    let candidates = [key.to_string(), format!("\"{key}\""), format!("'{key}'")];
    candidates.iter().any(|k| {
        text.strip_prefix(k.as_str())
            .map(|r| r.trim_start_matches(' '))
            .is_some_and(|r| r == ":" || r.starts_with(": ") || r.starts_with(":\t"))
    })
}

/// Where the key (or sequence item) at `path` is written in `text`: (line, column), 1-based.
/// Falls back to the deepest ancestor found; None when not even the first segment is found.
pub fn key_position(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let es = entries(text);
    let (mut lo, mut hi) = (0usize, es.len());
    let mut parent_indent: Option<usize> = None;
    let mut found: Option<(usize, usize)> = None;
    for seg in path {
        // Children: entries in [lo, hi) indented deeper than the parent.
        let deeper = |e: &Entry| parent_indent.is_none_or(|p| e.indent > p);
        let Some(first) = es[lo..hi].iter().position(deeper).map(|p| p + lo) else {
            break;
        };
        let level = es[first].indent;
        let siblings: Vec<usize> = (first..hi).filter(|&i| es[i].indent == level).collect();
        let hit = match seg.parse::<usize>() {
            Ok(n) if es[first].item => siblings.iter().copied().filter(|&i| es[i].item).nth(n),
            _ => siblings
                .iter()
                .copied()
                .find(|&i| !es[i].item && is_key(es[i].text, seg)),
        };
        let Some(i) = hit else { break };
        found = Some((es[i].line, es[i].indent + 1));
        // The child block ends at the next entry at this level or shallower.
        let end = (i + 1..hi).find(|&j| es[j].indent <= level).unwrap_or(hi);
        // An item's own content shares its line (`- name: x`) and is the next entry.
        lo = i + 1;
        hi = end;
        parent_indent = Some(level);
    }
    found
}

/// 1-based (line, column) of byte offset `offset` in `text`.
fn position_of(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// The opening quote of the string that is still open at the end of `text` (YAML flow scalars:
/// `"..."` with backslash escapes, `'...'` with `''` for a quote), ignoring comments and quotes
/// inside plain scalars (`it's`).
pub fn unclosed_quote(text: &str) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut prev: u8 = b'\n';
    while i < b.len() {
        let c = b[i];
        match c {
            b'#' if prev == b' ' || prev == b'\t' || prev == b'\n' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                prev = b'\n';
                continue;
            }
            b'"' | b'\'' if starts_scalar(prev) => {
                let open = i;
                i += 1;
                let mut closed = false;
                while i < b.len() {
                    if c == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == c {
                        if c == b'\'' && b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        closed = true;
                        break;
                    }
                    i += 1;
                }
                if !closed {
                    return Some(position_of(text, open));
                }
                prev = c;
                i += 1;
                continue;
            }
            _ => {}
        }
        prev = c;
        i += 1;
    }
    None
}

/// A quote after one of these starts a quoted scalar; after anything else it is part of a plain
/// scalar (`it's`, `a"b`).
fn starts_scalar(prev: u8) -> bool {
    matches!(
        prev,
        b' ' | b'\t' | b'\n' | b'[' | b'{' | b',' | b':' | b'-' | b'?'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "services:\n  db:\n    image: x\n    environment:\n      PW: ${PW:?set}\n      - not: really\nx-nodus:\n  services:\n    db:\n      roles:\n        - name: a\n          password_env: A\n        - name: b\n          pasword: B\n  snapshots:\n    keep: {last: 3}\n";

    #[test]
    fn keys_and_items_are_found() {
        assert_eq!(
            key_position(DOC, &["services", "db", "environment", "PW"]),
            Some((5, 7))
        );
        assert_eq!(
            key_position(DOC, &["x-nodus", "services", "db", "roles", "1", "pasword"]),
            Some((14, 11))
        );
        assert_eq!(
            key_position(DOC, &["x-nodus", "services", "db", "roles", "0"]),
            Some((11, 9))
        );
        // Inside a flow mapping: the deepest key found.
        assert_eq!(
            key_position(DOC, &["x-nodus", "snapshots", "keep", "last"]),
            Some((16, 5))
        );
        assert_eq!(key_position(DOC, &["nope"]), None);
        // A key with the same name deeper down is not taken for a top-level one.
        assert_eq!(key_position(DOC, &["x-nodus", "db"]), Some((7, 1)));
    }

    #[test]
    fn the_opening_quote_is_found() {
        assert_eq!(
            unclosed_quote("a: 1\nb: \"open\nc: 2\nd: 3\n"),
            Some((2, 4))
        );
        assert_eq!(unclosed_quote("a: 'x''y\nb: 1\n"), Some((1, 4)));
        assert_eq!(unclosed_quote("a: it's fine # don't\nb: \"ok\"\n"), None);
        assert_eq!(unclosed_quote("a: [\"x\", 'y']\n"), None);
        assert_eq!(unclosed_quote("a: \"esc \\\" still open\n"), Some((1, 4)));
    }
}
