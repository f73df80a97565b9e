//! `.dockerignore` semantics against Docker's documented cases and moby/patternmatcher's
//! own test tables (patternmatcher_test.go, ignorefile_test.go).

use super::*;

fn rules(lines: &[&str]) -> IgnoreRules {
    IgnoreRules::from_lines(lines).unwrap_or_else(|e| panic!("{lines:?}: {e}"))
}

/// The result of walking to `path` the way Docker's archiver does: each parent directory is
/// matched first and its results handed down (`MatchesUsingParentResults`).
fn walk_match(r: &IgnoreRules, path: &str) -> bool {
    let path = clean(path);
    let parts: Vec<&str> = path.split('/').collect();
    let mut info: Option<MatchInfo> = None;
    for i in 0..parts.len() - 1 {
        let (_, next) = r.matches_using_parent(&parts[..=i].join("/"), info.as_ref());
        info = Some(next);
    }
    r.matches_using_parent(&path, info.as_ref()).0
}

/// Both of Docker's entry points agree, and the result is `want`.
fn check(lines: &[&str], path: &str, want: bool) {
    let r = rules(lines);
    assert_eq!(
        r.matches_or_parent_matches(path),
        want,
        "MatchesOrParentMatches({lines:?}, {path:?})"
    );
    assert_eq!(walk_match(&r, path), want, "walk({lines:?}, {path:?})");
    let (no_ctx, _) = r.matches_using_parent(&clean(path), None);
    assert_eq!(
        no_ctx, want,
        "MatchesUsingParentResults without context ({lines:?}, {path:?})"
    );
}

#[test]
fn docs_example_comment_temp_patterns() {
    // docs.docker.com "dockerignore file": the example file and its table.
    let file = ["# comment", "*/temp*", "*/*/temp*", "temp?"];
    check(&file, "somedir/temporary.txt", true);
    check(&file, "somedir/temp", true);
    check(&file, "somedir/temp/inside", true);
    check(&file, "somedir/subdir/temporary.txt", true);
    check(&file, "tempa", true);
    check(&file, "tempb", true);
    // Not covered: temp at the root, three levels down, `temp?` needs exactly one more char.
    check(&file, "temporary.txt", false);
    check(&file, "temp", false);
    check(&file, "tempab", false);
    check(&file, "a/b/c/temporary.txt", false);
    check(&file, "# comment", false);
}

#[test]
fn docs_double_star_go_files() {
    let file = ["**/*.go"];
    check(&file, "main.go", true);
    check(&file, "cmd/app/main.go", true);
    check(&file, "main.gox", false);
}

#[test]
fn docs_exception_readme() {
    // `*.md` is only the root's markdown files.
    let file = ["*.md", "!README.md"];
    check(&file, "CHANGELOG.md", true);
    check(&file, "README.md", false);
    check(&file, "docs/guide.md", false);
}

#[test]
fn docs_exception_order_later_line_wins() {
    let file = ["*.md", "!README*.md", "README-secret.md"];
    check(&file, "README-secret.md", true);
    check(&file, "README-public.md", false);
    check(&file, "README.md", false);
    check(&file, "other.md", true);

    let file = ["*.md", "README-secret.md", "!README*.md"];
    check(&file, "README-secret.md", false);
    check(&file, "other.md", true);
}

#[test]
fn docs_root_is_both_working_and_root_directory() {
    for file in [["/foo/bar"], ["foo/bar"], ["./foo/bar/"]] {
        check(&file, "foo/bar", true);
        check(&file, "foo/bar/baz", true);
        check(&file, "bar", false);
        check(&file, "x/foo/bar", false);
    }
}

#[test]
fn docs_exclude_all_then_include() {
    let file = ["*", "!src", "!Cargo.toml"];
    check(&file, "target/debug/x", true);
    check(&file, "src/main.rs", false);
    check(&file, "Cargo.toml", false);
    check(&file, "Cargo.lock", true);
}

#[test]
fn trailing_slash_is_cleaned_away() {
    // Unlike gitignore, `dir/` also matches a file named `dir`.
    check(&["build/"], "build", true);
    check(&["build/"], "build/out.o", true);
}

#[test]
fn patternmatcher_single_pattern_table() {
    // moby/patternmatcher TestMatches (single patterns).
    let table: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**", "/", true),
        ("**/", "/", true),
        ("**", "dir/file", true),
        ("**/", "dir/file", true),
        ("**", "dir/file/", true),
        ("**/", "dir/file/", true),
        ("**/**", "dir/file", true),
        ("**/**", "dir/file/", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/file/", true),
        ("dir/**", "dir/dir2/file", true),
        ("dir/**", "dir/dir2/file/", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/*", "dir/dir2/file/", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**/dir2/**", "dir/dir2/dir3/file/", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/file*.txt*", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("a\\\\", "a\\", true),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        ("a\\*b", "a*b", true),
    ];
    for &(pattern, path, want) in table {
        check(&[pattern], path, want);
    }
}

#[test]
fn patternmatcher_multi_pattern_table() {
    check(&["**", "!util/docker/web"], "util/docker/web/foo", false);
    check(
        &["**", "!util/docker/web", "util/docker/web/foo"],
        "util/docker/web/foo",
        true,
    );
    let whl = "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl";
    check(&["**", &format!("!{whl}")], whl, false);
    check(&["**", "!dist/*.whl"], whl, false);
}

#[test]
fn patternmatcher_folder_exceptions() {
    // TestPatternMatchesFolderExclusions & co: an exception below an excluded folder is matched
    // as excluded by the folder (the walk then decides whether to descend).
    for folder in ["docs", "docs/", "docs/*"] {
        let r = rules(&[folder, "!docs/README.md"]);
        assert!(!r.matches_or_parent_matches("docs/README.md"), "{folder}");
        assert!(r.matches_or_parent_matches("docs/other.md"), "{folder}");
    }
    check(&["!fileutils.go", "*.go"], "fileutils.go", true);
    check(&["*.go", "!fileutils.go"], "fileutils.go", false);
    check(&["*"], "fileutils.go", true);
    check(&["*.go"], "fileutils.go", true);
    // The context root is never excluded.
    assert!(!rules(&["*.go"]).matches_or_parent_matches("."));
    assert!(!rules(&["**"]).matches_or_parent_matches("."));
    // No patterns match nothing.
    assert!(!rules(&[]).matches_or_parent_matches("any/path/there"));
}

#[test]
fn go_filepath_match_table() {
    // patternmatcher's copy of Go's filepath.Match tests (TestMatch): (pattern, path, match).
    let ok: &[(&str, &str, bool)] = &[
        ("abc", "abc", true),
        ("*", "abc", true),
        ("*c", "abc", true),
        ("a*", "a", true),
        ("a*", "abc", true),
        ("a*", "ab/c", true),
        ("a*/b", "abc/b", true),
        ("a*/b", "a/c/b", false),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
        ("a*b?c*x", "abxbbxdbxebxczzx", true),
        ("a*b?c*x", "abxbbxdbxebxczzy", false),
        ("ab[c]", "abc", true),
        ("ab[b-d]", "abc", true),
        ("ab[e-g]", "abc", false),
        ("ab[^c]", "abc", false),
        ("ab[^b-d]", "abc", false),
        ("ab[^e-g]", "abc", true),
        ("a\\*b", "a*b", true),
        ("a\\*b", "ab", false),
        ("a?b", "a☺b", true),
        ("a[^a]b", "a☺b", true),
        ("a???b", "a☺b", false),
        ("a[^a][^a][^a]b", "a☺b", false),
        ("[a-ζ]*", "α", true),
        ("*[a-ζ]", "A", false),
        ("a?b", "a/b", false),
        ("a*b", "a/b", false),
        ("[\\]a]", "]", true),
        ("[\\-]", "-", true),
        ("[x\\-]", "x", true),
        ("[x\\-]", "-", true),
        ("[x\\-]", "z", false),
        ("[\\-x]", "x", true),
        ("[\\-x]", "-", true),
        ("[\\-x]", "a", false),
        ("*x", "xxx", true),
    ];
    for &(pattern, path, want) in ok {
        check(&[pattern], path, want);
    }
    let bad = [
        "[]a]",
        "[-]",
        "[x-]",
        "[-x]",
        "\\",
        "[a-b-c]",
        "[",
        "[^",
        "[^bc",
        "a[",
        // Backwards range: Docker fails on it while walking (moby issue 52203).
        "[Local-Only]/",
    ];
    for pattern in bad {
        assert!(
            IgnoreRules::from_lines(&[pattern]).is_err(),
            "{pattern} should not compile"
        );
    }
}

#[test]
fn compiled_match_kinds_follow_patternmatcher() {
    // TestCompile: which patterns are literal tests and which become regexes.
    let kind = |p: &str| match compile(&clean(p)).unwrap() {
        Matcher::Exact => "exact",
        Matcher::Prefix(_) => "prefix",
        Matcher::Suffix(_) => "suffix",
        Matcher::Regex(_) => "regex",
    };
    for (p, want) in [
        ("*", "regex"),
        ("file*", "regex"),
        ("**", "suffix"),
        ("**/**", "regex"),
        ("dir/**", "prefix"),
        ("**/dir", "suffix"),
        ("**/dir2/*", "regex"),
        ("**file", "suffix"),
        ("a[b-d]e", "regex"),
        ("abc.def", "exact"),
        ("**/foo/bar", "suffix"),
        ("a(b)c/def", "exact"),
        ("a.|)$(}+{bc", "exact"),
    ] {
        assert_eq!(kind(p), want, "{p}");
    }
    // Docker's literal special cases: `**literal` is a plain suffix test.
    check(&["**file"], "dir/myfile", true);
}

#[test]
fn read_all_rules() {
    // ignorefile_test.go TestReadAll, plus Docker's comment and BOM handling.
    let lines = [
        "test1",
        "/test2",
        "/a/file/here",
        "",
        "lastfile",
        "# this is a comment",
        "! /inverted/abs/path",
    ];
    let read: Vec<String> = lines
        .iter()
        .filter_map(|l| {
            if l.starts_with('#') {
                None
            } else {
                read_line(l)
            }
        })
        .collect();
    assert_eq!(
        read,
        [
            "test1",
            "test2",
            "a/file/here",
            "lastfile",
            "!inverted/abs/path"
        ]
    );
    assert_eq!(read_line("!").as_deref(), Some("!"));
    assert_eq!(read_line("  ").as_deref(), None);

    let r = IgnoreRules::parse(
        "\u{feff}secret\n  # not a comment\n",
        Path::new(".dockerignore"),
    )
    .unwrap();
    check_rules(&r, "secret", true);
    // An indented `#` is a pattern in Docker, not a comment.
    check_rules(&r, "# not a comment", true);
    assert!(!r.has_exclusions());
}

fn check_rules(r: &IgnoreRules, path: &str, want: bool) {
    assert_eq!(r.matches_or_parent_matches(path), want, "{path}");
}

#[test]
fn bad_pattern_names_file_and_line() {
    let err = IgnoreRules::parse(
        "ok\n# comment\n\nsrc/[a-\n",
        Path::new("/ctx/.dockerignore"),
    )
    .unwrap_err();
    assert_eq!(err.line, 4);
    assert_eq!(err.pattern, "src/[a-");
    let msg = err.to_string();
    assert!(
        msg.starts_with("/ctx/.dockerignore:4: bad .dockerignore pattern `src/[a-`"),
        "{msg}"
    );

    let err = IgnoreRules::parse("a\n!\n", Path::new(".dockerignore")).unwrap_err();
    assert_eq!(err.line, 2);
}

#[test]
fn go_path_clean() {
    for (input, want) in [
        ("", "."),
        (".", "."),
        ("./a", "a"),
        ("a/", "a"),
        ("a//b", "a/b"),
        ("a/./b/", "a/b"),
        ("a/../b", "b"),
        ("../a", "../a"),
        ("/../a", "/a"),
        ("/", "/"),
        ("a/b/../..", "."),
    ] {
        assert_eq!(clean(input), want, "{input:?}");
    }
}

#[test]
fn keep_adds_an_exception_only_when_excluded() {
    let mut r = rules(&["*", "!src"]);
    r.keep("Dockerfile");
    assert!(!r.matches_or_parent_matches("Dockerfile"));
    assert!(r.matches_or_parent_matches("other"));

    let mut r = rules(&["docker"]);
    assert!(!r.has_exclusions());
    r.keep("docker/dev/Dockerfile.dev");
    assert!(r.has_exclusions());
    assert!(!r.matches_or_parent_matches("docker/dev/Dockerfile.dev"));
    assert!(r.matches_or_parent_matches("docker/dev/other"));
    // The walk descends into `docker` for it.
    assert!(r.dir_has_exception("docker"));
    assert!(r.dir_has_exception("docker/dev"));
    assert!(!r.dir_has_exception("dock"));

    // Nothing excluded: no exception appended.
    let mut r = rules(&["target"]);
    r.keep("Dockerfile");
    assert!(!r.has_exclusions());

    // Wildcards in the kept name are literal.
    let mut r = rules(&["*"]);
    r.keep("Docker[file]");
    assert!(!r.matches_or_parent_matches("Docker[file]"));
    assert!(r.matches_or_parent_matches("Dockerf"));
}

#[test]
fn dir_exception_check_is_literal_like_dockers() {
    let r = rules(&["docs", "!docs/README.md", "!*/keep"]);
    assert!(r.dir_has_exception("docs"));
    // `!*/keep` could match `other/keep`, but Docker's check is a literal prefix test.
    assert!(!r.dir_has_exception("other"));
}

#[test]
fn bracket_bang_is_not_negation() {
    // Go's filepath.Match (and Docker) negate with `^` only.
    check(&["[!a]"], "!", true);
    check(&["[!a]"], "a", true);
    check(&["[!a]"], "b", false);
    check(&["[^a]"], "b", true);
}
