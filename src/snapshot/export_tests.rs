use super::*;
use crate::snapshot::manifest::tests::sample;

/// A small tar stream like the archive endpoint's (top entry `data`, with PG_VERSION).
pub(crate) fn sample_tar() -> Vec<u8> {
    let mut raw = Vec::new();
    {
        let mut b = tar::Builder::new(&mut raw);
        let mut add = |path: &str, body: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_path(path).unwrap();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_uid(999);
            h.set_gid(999);
            h.set_cksum();
            b.append(&h, body).unwrap();
        };
        add("data/PG_VERSION", b"16\n");
        let mut big = Vec::new();
        for i in 0..30_000u32 {
            big.extend_from_slice(format!("row {i} {}\n", i.wrapping_mul(2654435761)).as_bytes());
        }
        add("data/base/1/1259", &big);
        b.finish().unwrap();
    }
    raw
}

fn manifest_json(id: &str, raw: &[u8]) -> Vec<u8> {
    let mut m = sample(id);
    m.archive.raw_bytes = raw.len() as u64;
    m.to_json()
}

const ID: &str = "20250101T000000Z-db-abcdef";

fn export(dir: &Path, raw: &[u8], recipients: &[age::x25519::Recipient]) -> PathBuf {
    let path = output_path(&dir.join("out.tar.zst"), ID, !recipients.is_empty());
    let p = write_export(
        &path,
        &manifest_json(ID, raw),
        ID,
        raw.len() as u64,
        &mut &raw[..],
        recipients,
        None,
    )
    .unwrap();
    p.commit(false).unwrap();
    path
}

fn read_all(
    path: &Path,
    ids: Option<&[Box<dyn age::Identity + Send + Sync>]>,
    info: &ExportInfo,
) -> Result<Vec<u8>> {
    read_data(path, ids, info, None, |r| {
        let mut v = Vec::new();
        r.read_to_end(&mut v)
            .map_err(|e| SnapshotError::Other(e.to_string()))?;
        Ok(v)
    })
}

#[test]
fn round_trip_gives_back_the_same_manifest_and_tar_bytes() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample_tar();
    let path = export(d.path(), &raw, &[]);
    use std::os::unix::fs::PermissionsExt;
    for p in [path.clone(), sidecar_path(&path)] {
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
    // The sidecar is a sha256sum line for the file's name.
    let side = fs::read_to_string(sidecar_path(&path)).unwrap();
    let (sha, _) = crate::snapshot::pipeline::sha256_file(&path, None).unwrap();
    assert_eq!(side, format!("{sha}  out.tar.zst\n"));
    // No temporary file is left beside it.
    let names: Vec<_> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let info = scan(&path, None, None).unwrap();
    assert!(info.sidecar_checked);
    assert!(!info.encrypted);
    assert_eq!(info.manifest_json, manifest_json(ID, &raw));
    assert_eq!(info.manifest.id, ID);
    assert_eq!(info.data_bytes, raw.len() as u64);
    assert_eq!(info.header.snapshot, ID);
    assert_eq!(read_all(&path, None, &info).unwrap(), raw);
    // It is a compressed file, not the tar itself.
    assert!(fs::metadata(&path).unwrap().len() < raw.len() as u64 / 2);
}

#[test]
fn a_file_that_does_not_match_its_sidecar_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample_tar();
    let path = export(d.path(), &raw, &[]);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let err = scan(&path, None, None).unwrap_err().to_string();
    assert!(err.contains("does not match"), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    // Without the sidecar the damage is still caught (zstd frame checksum / tar / data sha).
    fs::remove_file(sidecar_path(&path)).unwrap();
    let err = scan(&path, None, None).unwrap_err().to_string();
    assert!(err.contains("not a usable nodus export"), "{err}");
}

#[test]
fn a_damaged_sidecar_or_truncated_file_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample_tar();
    let path = export(d.path(), &raw, &[]);
    fs::write(
        sidecar_path(&path),
        format!("{}  out.tar.zst\n", "0".repeat(64)),
    )
    .unwrap();
    assert!(scan(&path, None, None).is_err());
    fs::remove_file(sidecar_path(&path)).unwrap();
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
    assert!(scan(&path, None, None).is_err());
}

#[test]
fn encrypted_export_needs_the_identity() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample_tar();
    let id = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    let path = export(d.path(), &raw, &[id.to_public()]);
    assert!(path.to_string_lossy().ends_with(".tar.zst.age"));
    let bytes = fs::read(&path).unwrap();
    assert!(bytes.starts_with(AGE_MAGIC));
    // Neither the manifest nor the data is readable in the file.
    let hay = String::from_utf8_lossy(&bytes);
    assert!(!hay.contains("demo_pgdata") && !hay.contains("PG_VERSION"));

    let err = scan(&path, None, None).unwrap_err().to_string();
    assert!(err.contains("encrypted; pass --identity"), "{err}");
    let wrong: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(other)];
    let err = scan(&path, Some(&wrong), None).unwrap_err().to_string();
    assert!(err.contains("none of the identities"), "{err}");

    // The identity file as age-keygen writes it.
    let key_file = d.path().join("key.txt");
    use age::secrecy::ExposeSecret;
    fs::write(
        &key_file,
        format!(
            "# created: now\n# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        ),
    )
    .unwrap();
    let ids = load_identities(&key_file).unwrap();
    let info = scan(&path, Some(&ids), None).unwrap();
    assert!(info.encrypted);
    assert_eq!(info.manifest_json, manifest_json(ID, &raw));
    assert_eq!(read_all(&path, Some(&ids), &info).unwrap(), raw);
}

#[test]
fn existing_files_are_not_overwritten_without_force() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample_tar();
    let path = export(d.path(), &raw, &[]);
    assert!(check_target(&path, false).is_err());
    assert!(check_target(&path, true).is_ok());
    let before = fs::read(&path).unwrap();
    let again = write_export(
        &path,
        &manifest_json(ID, &raw),
        ID,
        raw.len() as u64,
        &mut &raw[..],
        &[],
        None,
    )
    .unwrap();
    let err = again.commit(false).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
    let forced = write_export(
        &path,
        &manifest_json(ID, &raw),
        ID,
        raw.len() as u64,
        &mut &raw[..],
        &[],
        None,
    )
    .unwrap();
    forced.commit(true).unwrap();
    assert!(scan(&path, None, None).is_ok(), "sidecar replaced too");
    let n = fs::read_dir(d.path()).unwrap().count();
    assert_eq!(n, 2, "no temporary files left");
}

#[test]
fn a_stream_of_the_wrong_length_is_not_exported() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample_tar();
    let path = d.path().join("x.tar.zst");
    for len in [raw.len() as u64 + 1, raw.len() as u64 - 1] {
        let err = write_export(&path, b"{}", ID, len, &mut &raw[..], &[], None).unwrap_err();
        assert!(err.to_string().contains("manifest says"), "{err}");
    }
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0, "temp removed");
}

#[test]
fn data_changed_after_the_scan_fails_the_reader_instead_of_ending() {
    let d = tempfile::tempdir().unwrap();
    let raw = sample_tar();
    let path = export(d.path(), &raw, &[]);
    let mut info = scan(&path, None, None).unwrap();
    info.data_sha256 = "0".repeat(64);
    let err = read_all(&path, None, &info).unwrap_err().to_string();
    assert!(err.contains("changed since it was checked"), "{err}");
}

#[test]
fn recipients_from_flags_and_files() {
    let d = tempfile::tempdir().unwrap();
    let a = age::x25519::Identity::generate().to_public().to_string();
    let b = age::x25519::Identity::generate().to_public().to_string();
    let f = d.path().join("recipients.txt");
    fs::write(&f, format!("# team\n{b}\n\n")).unwrap();
    let r = parse_recipients(std::slice::from_ref(&a), &[f]).unwrap();
    assert_eq!(r.len(), 2);
    let err = parse_recipients(&["ssh-ed25519 AAAA".into()], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an age X25519 recipient"), "{err}");
    let empty = d.path().join("empty.txt");
    fs::write(&empty, "# nothing\n").unwrap();
    assert!(parse_recipients(&[], &[empty]).is_err());
}

#[test]
fn output_names() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(
        output_path(Path::new("/x/a.tar.zst"), ID, true),
        Path::new("/x/a.tar.zst.age")
    );
    assert_eq!(
        output_path(Path::new("/x/a.tar.zst.age"), ID, true),
        Path::new("/x/a.tar.zst.age")
    );
    assert_eq!(
        output_path(Path::new("/x/a.tar.zst"), ID, false),
        Path::new("/x/a.tar.zst")
    );
    assert_eq!(
        output_path(d.path(), ID, false),
        d.path().join(format!("{ID}.tar.zst"))
    );
}
