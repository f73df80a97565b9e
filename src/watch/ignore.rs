//! What `nodus watch` never reacts to: `.git`, the state dir, `target`, `node_modules`, editor
//! temporaries, and what `.gitignore` / `.dockerignore` files ignore (gitignore semantics, through
//! the `ignore` crate).

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Always ignored, wherever they are.
pub const ALWAYS: &[&str] = &[
    ".git/",
    "node_modules/",
    "target/",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "4913",
    "*.tmp",
];

/// The files read beside the stack and in a rule's directory.
pub const IGNORE_FILES: &[&str] = &[".gitignore", ".dockerignore"];

/// Gitignore-style patterns rooted at one directory.
#[derive(Debug, Clone)]
pub struct IgnoreSet {
    root: PathBuf,
    matcher: Gitignore,
}

impl IgnoreSet {
    /// `patterns` (gitignore lines) plus the [`IGNORE_FILES`] found in `root`. Returns the
    /// problems found in those files as warnings (a bad line is skipped, the rest applies).
    pub fn new(root: &Path, patterns: &[String], warnings: &mut Vec<String>) -> IgnoreSet {
        let mut b = GitignoreBuilder::new(root);
        for p in patterns {
            if let Err(e) = b.add_line(None, p) {
                warnings.push(format!("ignore pattern {p:?}: {e}"));
            }
        }
        for f in IGNORE_FILES {
            let path = root.join(f);
            if path.is_file() {
                if let Some(e) = b.add(&path) {
                    warnings.push(format!("{}: {e}", path.display()));
                }
            }
        }
        let matcher = b.build().unwrap_or_else(|e| {
            warnings.push(format!("ignore rules under {}: {e}", root.display()));
            Gitignore::empty()
        });
        IgnoreSet {
            root: root.to_path_buf(),
            matcher,
        }
    }

    /// The always-ignored patterns, matched anywhere below `root`.
    pub fn always(root: &Path) -> IgnoreSet {
        let patterns: Vec<String> = ALWAYS.iter().map(|s| s.to_string()).collect();
        let mut b = GitignoreBuilder::new(root);
        for p in &patterns {
            let _ = b.add_line(None, p);
        }
        IgnoreSet {
            root: root.to_path_buf(),
            matcher: b.build().unwrap_or_else(|_| Gitignore::empty()),
        }
    }

    /// Whether `path` (absolute) or one of its parents below the root is ignored. Paths outside
    /// the root are not.
    pub fn ignores(&self, path: &Path, is_dir: bool) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        if rel.as_os_str().is_empty() {
            return false;
        }
        self.matcher
            .matched_path_or_any_parents(rel, is_dir)
            .is_ignore()
    }
}

/// Whether a file name alone marks an editor temporary or a tool directory (for paths outside
/// every root, e.g. a rule path elsewhere on disk).
pub fn always_ignored_anywhere(path: &Path) -> bool {
    path.components().any(|c| {
        let s = c.as_os_str().to_string_lossy();
        matches!(s.as_ref(), ".git" | "node_modules" | "target" | "4913")
            || s.ends_with(".swp")
            || s.ends_with(".swx")
            || s.ends_with('~')
            || s.starts_with(".#")
            || s.ends_with(".tmp")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_patterns_match_anywhere_below_the_root() {
        let root = Path::new("/stack");
        let a = IgnoreSet::always(root);
        for p in [
            "/stack/.git/index",
            "/stack/app/node_modules/x/index.js",
            "/stack/target/debug/nodus",
            "/stack/app/main.py.swp",
            "/stack/app/.main.py.swx",
            "/stack/app/main.py~",
            "/stack/app/.#main.py",
            "/stack/app/4913",
            "/stack/conf/x.tmp",
        ] {
            assert!(a.ignores(Path::new(p), false), "{p} should be ignored");
        }
        for p in [
            "/stack/app/main.py",
            "/stack/conf/nginx.conf",
            "/elsewhere/.git/x",
        ] {
            assert!(!a.ignores(Path::new(p), false), "{p} should not be ignored");
        }
    }

    #[test]
    fn gitignore_and_dockerignore_beside_the_root_apply_with_gitignore_semantics() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".gitignore"), "*.log\n/build/\n!keep.log\n").unwrap();
        std::fs::write(d.path().join(".dockerignore"), "secrets\n").unwrap();
        let mut w = Vec::new();
        let s = IgnoreSet::new(d.path(), &["generated/**".into()], &mut w);
        assert!(w.is_empty(), "{w:?}");
        let r = d.path();
        assert!(s.ignores(&r.join("app/x.log"), false));
        assert!(!s.ignores(&r.join("app/keep.log"), false));
        assert!(s.ignores(&r.join("build/out.js"), false));
        // Anchored: `/build/` only at the root.
        assert!(!s.ignores(&r.join("src/build/out.js"), false));
        assert!(s.ignores(&r.join("secrets/key"), false));
        assert!(s.ignores(&r.join("generated/a/b.rs"), false));
        assert!(!s.ignores(&r.join("src/main.rs"), false));
    }

    #[test]
    fn file_name_checks_outside_roots() {
        assert!(always_ignored_anywhere(Path::new("/x/node_modules/a")));
        assert!(always_ignored_anywhere(Path::new("/x/a.swp")));
        assert!(!always_ignored_anywhere(Path::new("/x/a.sql")));
    }
}
