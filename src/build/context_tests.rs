//! The context as sent (tar read back with `tar::Archive`) and its digest.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};

use futures_util::StreamExt;

use super::*;

/// Writes `files` (path → content) below `dir`, creating parents.
fn put(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    content: String,
}

/// The tar's entries in order: (path, kind/mode/owner/content or link target).
fn read_tar(bytes: &[u8]) -> Vec<(String, Got)> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Regular => 'f',
                tar::EntryType::Symlink => 'l',
                other => panic!("unexpected entry type {other:?}"),
            };
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut content = String::new();
            if kind == 'l' {
                content = e
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
            } else {
                e.read_to_string(&mut content).unwrap();
            }
            let got = Got {
                kind,
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                content,
            };
            (path, got)
        })
        .collect()
}

fn tar_of(spec: &ContextSpec) -> (String, Vec<(String, Got)>) {
    let mut out = Vec::new();
    let name = write_tar(spec, &mut out).unwrap();
    (name, read_tar(&out))
}

fn names(entries: &[(String, Got)]) -> Vec<&str> {
    entries.iter().map(|(p, _)| p.as_str()).collect()
}

#[test]
fn tar_holds_exactly_the_entries_sent_in_walk_order() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        &[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "*.log\nsecret/\n**/node_modules\n"),
            ("app/main.py", "print(1)\n"),
            ("app/data/x.txt", "x"),
            ("app/node_modules/dep/index.js", "dep"),
            ("build.log", "noise"),
            ("app/keep.log", "nested logs are not matched by `*.log`"),
            ("secret/key", "k"),
            ("run.sh", "#!/bin/sh\n"),
        ],
    );
    fs::set_permissions(d.path().join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        d.path().join("app/main.py"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    symlink("app/main.py", d.path().join("link")).unwrap();

    let (name, entries) = tar_of(&ContextSpec::new(d.path()));
    assert_eq!(name, "Dockerfile");
    assert_eq!(
        names(&entries),
        [
            ".dockerignore",
            "Dockerfile",
            "app/",
            "app/data/",
            "app/data/x.txt",
            "app/keep.log",
            "app/main.py",
            "link",
            "run.sh",
        ]
    );
    let by_name: BTreeMap<_, _> = entries.into_iter().collect();
    for g in by_name.values() {
        assert_eq!((g.uid, g.gid), (0, 0));
    }
    assert_eq!(by_name["run.sh"].mode, 0o755);
    assert_eq!(by_name["app/main.py"].mode, 0o640);
    assert_eq!(by_name["app/main.py"].content, "print(1)\n");
    assert_eq!(by_name["app/"].kind, 'd');
    // The symlink is stored as a symlink, not followed.
    assert_eq!(by_name["link"].kind, 'l');
    assert_eq!(by_name["link"].content, "app/main.py");
}

#[test]
fn symlink_pointing_outside_is_not_followed() {
    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    put(outside.path(), &[("big/file", "outside")]);
    put(d.path(), &[("Dockerfile", "FROM scratch\n")]);
    symlink(outside.path().join("big"), d.path().join("big")).unwrap();
    let (_, entries) = tar_of(&ContextSpec::new(d.path()));
    assert_eq!(names(&entries), ["Dockerfile", "big"]);
    assert_eq!(entries[1].1.kind, 'l');
}

#[test]
fn ignored_dockerfile_and_dockerignore_are_still_sent() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        &[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "Dockerfile\n.dockerignore\nother\n"),
            ("other", "o"),
            ("kept", "k"),
        ],
    );
    let (_, entries) = tar_of(&ContextSpec::new(d.path()));
    assert_eq!(names(&entries), [".dockerignore", "Dockerfile", "kept"]);
}

#[test]
fn dockerfile_inside_an_excluded_directory_is_sent_without_its_siblings() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        &[
            ("docker/dev/Dockerfile.dev", "FROM scratch\n"),
            ("docker/dev/notes", "n"),
            ("docker/other", "o"),
            (".dockerignore", "docker\n"),
            ("src/a", "a"),
        ],
    );
    let spec = ContextSpec {
        dockerfile: "docker/dev/Dockerfile.dev".into(),
        ..ContextSpec::new(d.path())
    };
    let (name, entries) = tar_of(&spec);
    assert_eq!(name, "docker/dev/Dockerfile.dev");
    // As with Docker, the excluded directories themselves get no entries.
    assert_eq!(
        names(&entries),
        [
            ".dockerignore",
            "docker/dev/Dockerfile.dev",
            "src/",
            "src/a"
        ]
    );
}

#[test]
fn exceptions_below_excluded_directories_follow_dockers_walk() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        &[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "docs\nother\n!docs/README.md\n!*/keep\n"),
            ("docs/README.md", "r"),
            ("docs/guide.md", "g"),
            ("other/keep", "k"),
        ],
    );
    let (_, entries) = tar_of(&ContextSpec::new(d.path()));
    // `docs` is walked for its literal exception; `other` is skipped as Docker skips it, even
    // though `!*/keep` would match `other/keep`.
    assert_eq!(
        names(&entries),
        [".dockerignore", "Dockerfile", "docs/README.md"]
    );
}

#[test]
fn dockerfile_specific_ignore_file_wins() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        &[
            ("Dockerfile.dev", "FROM scratch\n"),
            ("Dockerfile.dev.dockerignore", "a\n"),
            (".dockerignore", "b\n"),
            ("a", "a"),
            ("b", "b"),
        ],
    );
    let spec = ContextSpec {
        dockerfile: "Dockerfile.dev".into(),
        ..ContextSpec::new(d.path())
    };
    let (_, entries) = tar_of(&spec);
    assert_eq!(
        names(&entries),
        [
            ".dockerignore",
            "Dockerfile.dev",
            "Dockerfile.dev.dockerignore",
            "b"
        ]
    );
    // Without it, `.dockerignore` applies.
    let (_, entries) = tar_of(&ContextSpec::new(d.path()).with_dockerfile("a"));
    assert!(names(&entries).contains(&"a"));
    assert!(!names(&entries).contains(&"b"));
}

impl ContextSpec {
    fn with_dockerfile(mut self, f: &str) -> Self {
        self.dockerfile = f.into();
        self
    }
}

#[test]
fn inline_dockerfile_is_added_and_named_in_dockerignore() {
    let d = tempfile::tempdir().unwrap();
    put(d.path(), &[("app.txt", "a")]);
    let spec = ContextSpec {
        dockerfile_inline: Some("FROM scratch\nCOPY app.txt /\n".into()),
        ..ContextSpec::new(d.path())
    };
    let (name, entries) = tar_of(&spec);
    assert!(
        name.starts_with(".dockerfile.") && name.len() == 32,
        "{name}"
    );
    assert_eq!(names(&entries), ["app.txt", ".dockerignore", name.as_str()]);
    assert_eq!(entries[1].1.content, format!("\n{name}\n"));
    assert_eq!(entries[2].1.content, "FROM scratch\nCOPY app.txt /\n");

    // An existing .dockerignore gets the name appended, in place.
    put(d.path(), &[(".dockerignore", "*.tmp")]);
    let (name2, entries) = tar_of(&spec);
    assert_eq!(name2, name);
    assert_eq!(names(&entries), [".dockerignore", "app.txt", name.as_str()]);
    assert_eq!(entries[0].1.content, format!("*.tmp\n{name}\n"));
}

#[test]
fn dockerfile_outside_the_context_is_generated() {
    let d = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    put(d.path(), &[("a", "a")]);
    put(elsewhere.path(), &[("Dockerfile", "FROM scratch\n")]);
    let spec = ContextSpec::new(d.path())
        .with_dockerfile(elsewhere.path().join("Dockerfile").to_str().unwrap());
    let (name, entries) = tar_of(&spec);
    assert!(name.starts_with(".dockerfile."));
    assert_eq!(entries.last().unwrap().1.content, "FROM scratch\n");
    // Relative to the context and escaping it: also outside.
    let rel = format!(
        "../{}/Dockerfile",
        elsewhere.path().file_name().unwrap().to_str().unwrap()
    );
    let (name_rel, _) = tar_of(&ContextSpec::new(d.path()).with_dockerfile(&rel));
    assert_eq!(name_rel, name);
}

#[test]
fn long_paths_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let long_dir = "d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    put(
        d.path(),
        &[("Dockerfile", "FROM scratch\n"), (&long_file, "long")],
    );
    let target = "t".repeat(130);
    symlink(&target, d.path().join("l")).unwrap();
    let (_, entries) = tar_of(&ContextSpec::new(d.path()));
    let by_name: BTreeMap<_, _> = entries.into_iter().collect();
    assert_eq!(by_name[long_file.as_str()].content, "long");
    assert!(by_name.contains_key(format!("{long_dir}/").as_str()));
    assert_eq!(by_name["l"].content, target);
}

#[test]
fn names_that_are_not_utf8_keep_their_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let d = tempfile::tempdir().unwrap();
    put(d.path(), &[("Dockerfile", "FROM scratch\n")]);
    let name = OsStr::from_bytes(b"caf\xe9");
    fs::write(d.path().join(name), "x").unwrap();
    let mut out = Vec::new();
    write_tar(&ContextSpec::new(d.path()), &mut out).unwrap();
    let paths: Vec<Vec<u8>> = tar::Archive::new(out.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    assert_eq!(paths, [b"Dockerfile".to_vec(), b"caf\xe9".to_vec()]);
    // Two names that read the same lossily still hash differently.
    let before = digest(&ContextSpec::new(d.path())).unwrap();
    fs::rename(
        d.path().join(name),
        d.path().join(OsStr::from_bytes(b"caf\xe8")),
    )
    .unwrap();
    assert_ne!(digest(&ContextSpec::new(d.path())).unwrap(), before);
}

#[test]
fn errors_name_the_path() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope");
    match digest(&ContextSpec::new(&missing)) {
        Err(ContextError::ContextMissing { dir }) => assert_eq!(dir, missing),
        other => panic!("{other:?}"),
    }
    put(d.path(), &[("file", "x")]);
    assert!(matches!(
        digest(&ContextSpec::new(d.path().join("file"))),
        Err(ContextError::NotADirectory { .. })
    ));
    match digest(&ContextSpec::new(d.path()).with_dockerfile("Dockerfile.missing")) {
        Err(ContextError::DockerfileMissing { path }) => {
            assert_eq!(path, d.path().join("Dockerfile.missing"))
        }
        other => panic!("{other:?}"),
    }
    put(
        d.path(),
        &[
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "ok\n\n[z-a]\n"),
        ],
    );
    match tar_stream(&ContextSpec::new(d.path())) {
        Err(ContextError::BadPattern(e)) => {
            assert_eq!(e.line, 3);
            assert!(e.to_string().contains(".dockerignore:3:"), "{e}");
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a bad pattern was accepted"),
    }
}

#[test]
fn lowercase_dockerfile_is_found_for_the_default_name() {
    let d = tempfile::tempdir().unwrap();
    put(d.path(), &[("dockerfile", "FROM scratch\n")]);
    let (name, _) = tar_of(&ContextSpec::new(d.path()));
    assert_eq!(name, "dockerfile");
}

fn context_for_digest() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        &[
            ("Dockerfile", "FROM scratch\nCOPY . /app\n"),
            (".dockerignore", "*.log\n"),
            ("src/main.py", "print(1)\n"),
            ("debug.log", "noise"),
        ],
    );
    d
}

#[test]
fn digest_ignores_mtimes() {
    let d = context_for_digest();
    let spec = ContextSpec::new(d.path());
    let before = digest(&spec).unwrap();
    let file = d.path().join("src/main.py");
    filetime::set_file_mtime(&file, filetime::FileTime::from_unix_time(1_000_000, 0)).unwrap();
    filetime::set_file_mtime(
        d.path().join("src"),
        filetime::FileTime::from_unix_time(5, 0),
    )
    .unwrap();
    assert_eq!(digest(&spec).unwrap(), before);
    // The tar does carry the mtime.
    let (_, entries) = tar_of(&spec);
    let mut a = Vec::new();
    write_tar(&spec, &mut a).unwrap();
    let mtime = tar::Archive::new(a.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("src/main.py"))
        .map(|e| e.header().mtime().unwrap());
    assert_eq!(mtime, Some(1_000_000));
    assert_eq!(entries.len(), 4);
}

#[test]
fn digest_changes_with_sent_content_and_not_with_ignored_files() {
    let d = context_for_digest();
    let spec = ContextSpec::new(d.path());
    let base = digest(&spec).unwrap();
    assert!(base.hash.starts_with("blake3:") && base.hash.len() == 7 + 64);
    assert_eq!(base.files, 4); // .dockerignore, Dockerfile, src/, src/main.py
    assert_eq!(base.bytes, 6 + 25 + 9);

    // An ignored file changes, appears, disappears: same digest.
    put(d.path(), &[("debug.log", "other noise"), ("more.log", "x")]);
    assert_eq!(digest(&spec).unwrap(), base);

    // A sent file's content changes (same size): new digest.
    put(d.path(), &[("src/main.py", "print(2)\n")]);
    let edited = digest(&spec).unwrap();
    assert_ne!(edited.hash, base.hash);
    put(d.path(), &[("src/main.py", "print(1)\n")]);
    assert_eq!(digest(&spec).unwrap(), base);

    // Mode, a new file, an empty directory, the Dockerfile: new digests, all distinct.
    let mut seen = vec![base.hash.clone(), edited.hash];
    let mut expect_new = |what: &str| {
        let h = digest(&spec).unwrap().hash;
        assert!(!seen.contains(&h), "{what} did not change the digest");
        seen.push(h);
    };
    fs::set_permissions(
        d.path().join("src/main.py"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    expect_new("mode");
    put(d.path(), &[("src/new.py", "")]);
    expect_new("new empty file");
    fs::create_dir(d.path().join("empty")).unwrap();
    expect_new("empty directory");
    put(d.path(), &[("Dockerfile", "FROM scratch\n")]);
    expect_new("Dockerfile");
    put(d.path(), &[(".dockerignore", "*.log\nsrc/new.py\n")]);
    expect_new(".dockerignore (and the file it now excludes)");
}

#[test]
fn digest_covers_inline_text_and_dockerfile_choice() {
    let d = context_for_digest();
    put(
        d.path(),
        &[("Dockerfile.other", "FROM scratch\nCOPY . /app\n")],
    );
    let base = digest(&ContextSpec::new(d.path())).unwrap().hash;
    let other = digest(&ContextSpec::new(d.path()).with_dockerfile("Dockerfile.other"))
        .unwrap()
        .hash;
    assert_ne!(base, other);
    let inline = |text: &str| {
        digest(&ContextSpec {
            dockerfile_inline: Some(text.into()),
            ..ContextSpec::new(d.path())
        })
        .unwrap()
        .hash
    };
    assert_eq!(inline("FROM a"), inline("FROM a"));
    assert_ne!(inline("FROM a"), inline("FROM b"));
}

#[test]
fn digest_with_args_and_target() {
    let c = ContextDigest {
        hash: "blake3:00".into(),
        files: 1,
        bytes: 0,
    };
    let a = digest_with(&c, &[("A", "1"), ("B", "2")], None);
    assert_eq!(a, digest_with(&c, &[("B", "2"), ("A", "1")], None));
    assert_ne!(a, digest_with(&c, &[("A", "1"), ("B", "3")], None));
    assert_ne!(a, digest_with(&c, &[("A", "1")], None));
    assert_ne!(a, digest_with(&c, &[("A", "1"), ("B", "2")], Some("dev")));
    // Name/value boundaries are not ambiguous.
    assert_ne!(
        digest_with(&c, &[("AB", "")], None),
        digest_with(&c, &[("A", "B")], None)
    );
    let other = ContextDigest {
        hash: "blake3:01".into(),
        ..c.clone()
    };
    assert_ne!(a, digest_with(&other, &[("A", "1"), ("B", "2")], None));
}

#[tokio::test]
async fn tar_stream_delivers_the_same_bytes_in_bounded_chunks() {
    let d = tempfile::tempdir().unwrap();
    put(d.path(), &[("Dockerfile", "FROM scratch\n")]);
    // Enough content for several chunks.
    let big = "0123456789abcdef".repeat(20_000);
    put(d.path(), &[("big.bin", &big), ("small", "s")]);
    let spec = ContextSpec::new(d.path());
    let (name, mut stream) = tar_stream(&spec).unwrap();
    assert_eq!(name, "Dockerfile");
    let mut streamed = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.len() <= CHUNK);
        streamed.extend_from_slice(&chunk);
        chunks += 1;
    }
    assert!(chunks > 4, "{chunks} chunks");
    let mut direct = Vec::new();
    write_tar(&spec, &mut direct).unwrap();
    assert_eq!(streamed, direct);
    assert_eq!(
        names(&read_tar(&streamed)),
        ["Dockerfile", "big.bin", "small"]
    );
}

#[tokio::test]
async fn tar_stream_reports_walk_errors_as_an_item() {
    let d = tempfile::tempdir().unwrap();
    put(
        d.path(),
        &[("Dockerfile", "FROM scratch\n"), ("sub/file", "x")],
    );
    let plan = Plan::new(&ContextSpec::new(d.path())).unwrap();
    // The context disappears between the checks and the walk.
    let root = plan.root.clone();
    fs::remove_dir_all(&root).unwrap();
    let (mut stream, _) = spawn_producer(plan).unwrap();
    let err = stream.next().await.unwrap().unwrap_err();
    match err.get_ref().and_then(|e| e.downcast_ref::<ContextError>()) {
        Some(ContextError::Read { path, .. }) => assert_eq!(path, &root),
        other => panic!("{other:?} from {err}"),
    }
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn dropping_the_stream_stops_the_producer() {
    let d = tempfile::tempdir().unwrap();
    put(d.path(), &[("Dockerfile", "FROM scratch\n")]);
    // Far more than the channel holds: the producer blocks until the consumer goes away.
    let chunk = "x".repeat(100_000);
    for i in 0..40 {
        put(d.path(), &[(&format!("f{i:02}"), &chunk)]);
    }
    let plan = Plan::new(&ContextSpec::new(d.path())).unwrap();
    let (mut stream, producer) = spawn_producer(plan).unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    drop(stream);
    // Joins (instead of hanging) only because the producer gave up on the closed channel.
    tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
}
