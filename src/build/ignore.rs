//! Docker's `.dockerignore` semantics, as the Docker CLI applies them when it sends a build
//! context: `ignorefile.ReadAll` (reading the file) and `moby/patternmatcher` (matching), which
//! are not gitignore's.
//!
//! Reading (`ReadAll`): a UTF-8 BOM is dropped; a line *starting* with `#` is a comment (an
//! indented `#` is a pattern, as in Docker); lines are trimmed and empty ones skipped; `!` marks an
//! exception; the pattern is cleaned like Go's `filepath.Clean` (`./a` → `a`, `a/` → `a`,
//! `a/../b` → `b`) and a leading `/` dropped, so every pattern is anchored at the context root.
//!
//! Matching (`patternmatcher`): Go `filepath.Match` syntax (`*` and `?` never cross a `/`,
//! `[a-z]`/`[^a-z]` classes, `\` escapes) plus `**`, which matches any number of directories
//! (`**/` may match none). The last matching pattern wins; `!` re-includes. A path is also
//! matched when a pattern matches one of its parent directories (`docs` excludes `docs/a/b`),
//! tracked per pattern while walking (`MatchesUsingParentResults`).
//!
//! Like Docker, patterns compile to regular expressions, with three literal special cases Docker
//! has: a pattern without wildcards compares the whole path; `literal/**` is a prefix test (so
//! `abc/**` does not match `abc` itself); `**literal` is a suffix test (so `**file` matches
//! `dir/myfile`). `globset` cannot express these (its `**` is only valid as a whole path
//! component, while Docker gives `a**/x` the meaning `a(.*/)?x`), so this module builds on the
//! `regex` crate instead, translating each pattern the way patternmatcher does.
//!
//! Deliberate differences (all in patterns Docker itself mishandles): inside `[...]` every
//! character is literal, as `filepath.Match` documents (Docker copies the class into a Go regexp,
//! so `[*]` becomes `[[^/]*]`); `\x` is always the literal `x` (Docker passes `\d`, `\b` … to Go's
//! regexp as digit class, word boundary …); a class range running backwards (`[z-a]`) is an
//! error when the file is read, with its line, where Docker fails later while walking. Go's
//! `filepath.Match` has no `[!...]` negation: `[!a]` is the class of `!` and `a`, in Docker
//! and here; negation is `[^a]` (which, as in Docker, may match `/`).

use std::path::{Path, PathBuf};

use regex::Regex;

/// A pattern that does not compile. `line` is the line in `file` (1-based).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}: bad .dockerignore pattern `{pattern}`: {reason}", file.display())]
pub struct PatternError {
    pub file: PathBuf,
    pub line: usize,
    pub pattern: String,
    pub reason: String,
}

/// A compiled `.dockerignore` (an ordered list of patterns).
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// Per-pattern results for a directory, passed to its children
/// (patternmatcher's `MatchInfo`).
#[derive(Debug, Clone, Default)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern without its `!`.
    cleaned: String,
    exclusion: bool,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// No wildcard: the whole path equals the pattern.
    Exact,
    /// `literal**`: the path starts with the literal.
    Prefix(String),
    /// `**literal`: the path ends with the literal (or is it, without its leading `/`).
    Suffix(String),
    Regex(Regex),
}

impl IgnoreRules {
    /// Reads a `.dockerignore` file's text (`source` names it in errors).
    pub fn parse(text: &str, source: &Path) -> Result<Self, PatternError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = IgnoreRules::default();
        for (n, raw) in text.lines().enumerate() {
            if raw.starts_with('#') {
                continue;
            }
            let Some(pattern) = read_line(raw) else {
                continue;
            };
            rules.push(&pattern).map_err(|reason| PatternError {
                file: source.to_path_buf(),
                line: n + 1,
                pattern: raw.trim().to_string(),
                reason,
            })?;
        }
        Ok(rules)
    }

    /// Patterns as lines of a `.dockerignore` (tests, and the exceptions the CLI appends).
    pub fn from_lines<S: AsRef<str>>(lines: &[S]) -> Result<Self, PatternError> {
        let text: Vec<&str> = lines.iter().map(|s| s.as_ref()).collect();
        Self::parse(&text.join("\n"), Path::new("<patterns>"))
    }

    /// Appends one pattern (already read: `!` prefix allowed).
    fn push(&mut self, pattern: &str) -> Result<(), String> {
        // patternmatcher.New: trim, Clean, split the `!`.
        let p = clean(pattern.trim());
        let (exclusion, p) = match p.strip_prefix('!') {
            Some("") => return Err("a lone `!` excludes nothing".into()),
            Some(rest) => (true, rest.to_string()),
            None => (false, p),
        };
        let matcher = compile(&p)?;
        self.exclusions |= exclusion;
        self.patterns.push(Pattern {
            cleaned: p,
            exclusion,
            matcher,
        });
        Ok(())
    }

    /// The Docker CLI's `TrimBuildFilesFromExcludes`: when `path` (context-relative) is
    /// excluded, an exception `!path` is appended so it is sent anyway (the `.dockerignore`
    /// and the Dockerfile). The CLI tests with patternmatcher's deprecated `Matches`, which
    /// checks fewer parent directories; testing all of them can only add an exception for a
    /// path that is excluded anyway, so the same files are sent.
    pub fn keep(&mut self, path: &str) {
        if self.matches_or_parent_matches(path) {
            let p = format!("!{path}");
            // A path that is a valid file name compiles: its wildcards are escaped.
            if self.push(&escape_pattern(&p)).is_err() {
                tracing::debug!(path, "cannot add a .dockerignore exception");
            }
        }
    }

    /// No pattern at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Some pattern is an exception (`!`).
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    /// Whether `path` (context-relative, `/`-separated) is excluded, checking its parent
    /// directories too (patternmatcher's `MatchesOrParentMatches`). The context root `.` never is.
    pub fn matches_or_parent_matches(&self, path: &str) -> bool {
        let path = clean(path);
        if path == "." {
            return false;
        }
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&path);
            if !m {
                for i in 0..parents.len() {
                    if p.matches(&parents[..=i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether `path` is excluded, given the results for its parent directory (`None` for an
    /// entry at the context root). Returns the results to pass to `path`'s own children.
    /// patternmatcher's `MatchesUsingParentResults`, as Docker's archiver walks a context.
    pub fn matches_using_parent(
        &self,
        path: &str,
        parent: Option<&MatchInfo>,
    ) -> (bool, MatchInfo) {
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        let mut matched = false;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = parent.is_some_and(|pi| pi.parent_matched.get(i) == Some(&true));
            if !m {
                if p.exclusion != matched {
                    continue;
                }
                m = p.matches(path);
                if !m && parent.is_none() {
                    // No parent results: check the parent directories (as the Go code does).
                    if let Some(idx) = path.rfind('/') {
                        let dirs: Vec<&str> = path[..idx].split('/').collect();
                        m = (0..dirs.len()).any(|k| p.matches(&dirs[..=k].join("/")));
                    }
                }
            }
            info.parent_matched[i] = m;
            if m {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }

    /// For an excluded directory: whether some exception pattern, read literally, lies inside
    /// it, so the walk must still descend (Docker's check: `pattern + "/"` starts with
    /// `dir + "/"`). Docker skips the directory otherwise, even when a wildcard exception such
    /// as `!*/keep` could match inside it; so does nodus, to send what Docker sends.
    pub fn dir_has_exception(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.cleaned).starts_with(&dir_slash))
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.cleaned,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Matcher::Regex(re) => re.is_match(path),
        }
    }
}

/// One line of the file as `ReadAll` returns it (`None`: skipped).
fn read_line(raw: &str) -> Option<String> {
    let p = raw.trim();
    if p.is_empty() {
        return None;
    }
    let (invert, p) = match p.strip_prefix('!') {
        Some(rest) => (true, rest.trim()),
        None => (false, p),
    };
    let mut p = if p.is_empty() {
        String::new()
    } else {
        clean(p)
    };
    if p.len() > 1 && p.starts_with('/') {
        p.remove(0);
    }
    Some(if invert { format!("!{p}") } else { p })
}

/// Go's `path.Clean` (lexical): collapses `//`, removes `.`, resolves `..`, drops a trailing
/// `/`; `""` becomes `.`.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            p => out.push(p),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// A path as a pattern matching only itself.
fn escape_pattern(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// patternmatcher's `Pattern.compile`, with `filepath.Match`'s syntax checks.
fn compile(p: &str) -> Result<Matcher, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut step = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                // `**/` is `**`.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if step == 0 {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => {
                let Some(&next) = chars.get(i) else {
                    return Err("trailing `\\` escapes nothing".into());
                };
                i += 1;
                re.push_str(&regex::escape(&next.to_string()));
                kind = Kind::Regex;
            }
            '[' => {
                let (class, next) = class(&chars, i)?;
                re.push_str(&class);
                i = next;
                kind = Kind::Regex;
            }
            ']' => {
                re.push_str("\\]");
                kind = Kind::Regex;
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        step += 1;
    }
    Ok(match kind {
        Kind::Exact => Matcher::Exact,
        Kind::Prefix => Matcher::Prefix(p[..p.len() - 2].to_string()),
        Kind::Suffix => Matcher::Suffix(p[2..].to_string()),
        Kind::Regex => {
            re.push('$');
            Matcher::Regex(Regex::new(&re).map_err(|e| e.to_string())?)
        }
    })
}

/// A `[...]` class starting after its `[` at `chars[start]`, checked as `filepath.Match`
/// checks it; returns the regex class and the index after its `]`.
fn class(chars: &[char], start: usize) -> Result<(String, usize), String> {
    let mut j = start;
    let mut out = String::from("[");
    if chars.get(j) == Some(&'^') {
        out.push('^');
        j += 1;
    }
    let mut ranges = 0;
    loop {
        if chars.get(j) == Some(&']') && ranges > 0 {
            out.push(']');
            return Ok((out, j + 1));
        }
        let (lo, next) = class_char(chars, j)?;
        j = next;
        if chars.get(j) == Some(&'-') {
            let (hi, next) = class_char(chars, j + 1)?;
            j = next;
            if lo > hi {
                return Err(format!("range `{lo}-{hi}` runs backwards"));
            }
            out.push_str(&format!("\\x{{{:x}}}-\\x{{{:x}}}", lo as u32, hi as u32));
        } else {
            out.push_str(&format!("\\x{{{:x}}}", lo as u32));
        }
        ranges += 1;
    }
}

/// Go's `getEsc`: one (possibly escaped) class character; the class must go on after it.
fn class_char(chars: &[char], mut j: usize) -> Result<(char, usize), String> {
    match chars.get(j) {
        None => return Err("unclosed `[`".into()),
        Some('-') => return Err("`-` without a range start in `[...]`".into()),
        Some(']') => return Err("empty `[]` or misplaced `]`".into()),
        Some('\\') => j += 1,
        Some(_) => {}
    }
    let Some(&c) = chars.get(j) else {
        return Err("unclosed `[`".into());
    };
    if j + 1 >= chars.len() {
        return Err("unclosed `[`".into());
    }
    Ok((c, j + 1))
}

#[cfg(test)]
#[path = "ignore_tests.rs"]
mod tests;
