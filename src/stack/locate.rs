//! Where a key is written in the stack files (file:line), for evidence that points at the file.
//!
//! The merged model forgets positions, so this reads the source texts again: it walks block
//! mappings by indentation (`services:` → `db:` → `environment:`) and, within the block found,
//! looks for a needle (`PGDATA`, `fsync=off`, a mount target). The last file defining the key
//! wins, as in compose's override order. Flow-style mappings are found through the needle on the
//! key's own line. Pure: no I/O.

use super::SourceFile;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: String,
    /// 1-based.
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The position of `path` (mapping keys from the top) in the last file that defines it; with a
/// `needle`, the first line of that key's block containing it (case-sensitive).
pub fn locate(sources: &[SourceFile], path: &[&str], needle: Option<&str>) -> Option<Location> {
    sources.iter().rev().find_map(|src| {
        let line = locate_in(&src.text, path, needle)?;
        Some(Location {
            file: src.path.display().to_string(),
            line,
        })
    })
}

/// [`locate`] within one text; returns the 1-based line.
pub fn locate_in(text: &str, path: &[&str], needle: Option<&str>) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // (first line index of the block's content, end exclusive, indent of the owning key or -1)
    let mut start = 0usize;
    let mut end = lines.len();
    let mut owner: Option<usize> = None;
    let mut parent_indent: isize = -1;
    for key in path {
        let mut found = None;
        // Keys of this block sit at the indentation of its first line.
        let child = (start..end).find_map(|i| content_of(lines[i]).map(|(ind, _)| ind))?;
        for (i, raw) in lines.iter().enumerate().take(end).skip(start) {
            let Some((indent, content)) = content_of(raw) else {
                continue;
            };
            if (indent as isize) <= parent_indent || indent != child {
                continue;
            }
            let content = content.strip_prefix("- ").unwrap_or(content);
            if key_matches(content, key) {
                found = Some((i, indent));
                break;
            }
        }
        let (i, indent) = found?;
        owner = Some(i);
        parent_indent = indent as isize;
        start = i + 1;
        end = block_end(&lines, i + 1, indent);
    }
    match needle {
        None => owner.map(|i| i + 1),
        Some(n) => {
            let from = owner.unwrap_or(0);
            (from..end)
                .find(|&i| {
                    let l = lines[i];
                    let code = l.split(" #").next().unwrap_or(l);
                    !l.trim_start().starts_with('#') && code.contains(n)
                })
                .map(|i| i + 1)
        }
    }
}

/// Indentation and content of a line that holds YAML (not blank, not a comment).
fn content_of(raw: &str) -> Option<(usize, &str)> {
    let trimmed = raw.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
        return None;
    }
    Some((raw.len() - trimmed.len(), trimmed.trim_end()))
}

fn key_matches(content: &str, key: &str) -> bool {
    for quoted in [key.to_string(), format!("\"{key}\""), format!("'{key}'")] {
        if let Some(rest) = content.strip_prefix(&quoted) {
            let rest = rest.trim_start();
            if rest.starts_with(':') {
                return true;
            }
        }
    }
    false
}

/// The first line after `from` indented at or below `indent` (end of the key's block).
fn block_end(lines: &[&str], from: usize, indent: usize) -> usize {
    (from..lines.len())
        .find(|&i| match content_of(lines[i]) {
            // `key:` followed by `- item` lines at the key's own indentation is still its block
            Some((ind, c)) => ind < indent || (ind == indent && !c.starts_with("- ")),
            None => false,
        })
        .unwrap_or(lines.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "services:
  web:
    image: app
    environment:
      PGDATA: /nope
  db:
    image: postgres:15
    # PGDATA: commented
    environment:
      - POSTGRES_DB=app
      - PGDATA=/var/lib/postgresql/data/pgdata
    volumes:
      - /var/lib/postgresql/data
    command: [\"postgres\", \"-c\", \"fsync=off\"]
volumes:
  data: {}
";

    #[test]
    fn finds_keys_and_needles_in_blocks() {
        assert_eq!(locate_in(TEXT, &["services", "db"], None), Some(6));
        assert_eq!(locate_in(TEXT, &["services", "db", "image"], None), Some(7));
        assert_eq!(
            locate_in(TEXT, &["services", "db", "environment"], Some("PGDATA")),
            Some(11)
        );
        assert_eq!(
            locate_in(TEXT, &["services", "web", "environment"], Some("PGDATA")),
            Some(5)
        );
        assert_eq!(
            locate_in(TEXT, &["services", "db", "command"], Some("fsync=off")),
            Some(14)
        );
        assert_eq!(locate_in(TEXT, &["volumes", "data"], None), Some(16));
        assert_eq!(locate_in(TEXT, &["services", "cache"], None), None);
        assert_eq!(
            locate_in(TEXT, &["services", "web", "volumes"], None),
            None,
            "the db's volumes are not the web's"
        );
    }

    #[test]
    fn last_file_wins() {
        let a = SourceFile {
            path: "a.yaml".into(),
            text: TEXT.into(),
        };
        let b = SourceFile {
            path: "b.yaml".into(),
            text: "services:\n  db:\n    stop_signal: SIGKILL\n".into(),
        };
        let srcs = [a, b];
        let l = locate(&srcs, &["services", "db", "stop_signal"], None).unwrap();
        assert_eq!(l.to_string(), "b.yaml:3");
        let l = locate(&srcs, &["services", "db", "image"], None).unwrap();
        assert_eq!(l.to_string(), "a.yaml:7");
    }
}
