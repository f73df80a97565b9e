//! Logical backups of postgres: `pg_dumpall` run inside the running container through the
//! Engine's exec (no published port needed), gzip-compressed while streaming, with a manifest
//! (`<file>.json`) beside the dump. Restores load the SQL with `psql` inside the container.

use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::pipeline::{self, stream_from_blocking, Codec, HashingReader, CHUNK};
use super::store::write_new_file;
use super::{Result, SnapshotError};
use crate::engine::{ContainerInfo, Engine};
use crate::output::Ui;
use crate::state::ensure_private_dir;

pub const FORMAT: u32 = 1;
const PARTIAL_SUFFIX: &str = ".partial";

/// `<file>.json` beside every dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    /// File name of the dump (relative to the manifest's directory).
    pub file: String,
    pub project: String,
    pub service: String,
    pub container: String,
    pub image: String,
    /// "pg_dumpall"
    pub tool: String,
    /// The role the dump ran as.
    pub user: String,
    /// "gzip"
    pub compression: String,
    /// Bytes of SQL.
    pub raw_bytes: u64,
    pub compressed_bytes: u64,
    /// SHA-256 of the compressed file (hex).
    pub sha256: String,
    /// The guard's census of the service at backup time, when it could be taken.
    #[serde(default)]
    pub census: Option<serde_json::Value>,
    pub nodus_version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub duration_ms: u64,
}

/// Path of the manifest of `file`.
pub fn manifest_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

fn partial_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(PARTIAL_SUFFIX);
    PathBuf::from(s)
}

/// Default location: `<backups_dir>/<UTC yyyymmddThhmmssZ>-<service>.sql.gz`.
pub fn default_path(
    backups_dir: &Path,
    service: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> PathBuf {
    backups_dir.join(format!("{}-{service}.sql.gz", at.format("%Y%m%dT%H%M%SZ")))
}

/// The role and password env to use inside a postgres container.
pub fn pg_credentials(c: &ContainerInfo) -> (String, Vec<String>) {
    let user = c
        .env_var("POSTGRES_USER")
        .filter(|u| !u.is_empty())
        .unwrap_or("postgres")
        .to_string();
    let mut env = Vec::new();
    if let Some(pw) = c.env_var("POSTGRES_PASSWORD").filter(|p| !p.is_empty()) {
        env.push(format!("PGPASSWORD={pw}"));
    }
    (user, env)
}

/// Removes `*.partial` files left in `dir` by an interrupted backup (call with the stack lock).
pub fn clean_partials(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.ends_with(&format!(".sql.gz{PARTIAL_SUFFIX}"))
                || name.ends_with(&format!(".sql.gz.json{PARTIAL_SUFFIX}"));
            if ours && fs::remove_file(e.path()).is_ok() {
                removed.push(name);
            }
        }
    }
    removed
}

/// Waits for an exec to report its exit code (it may lag the end of its output a little).
async fn exit_code(engine: &dyn Engine, exec_id: &str) -> Result<Option<i64>> {
    for _ in 0..100 {
        if let Some(c) = engine.exec_exit_code(exec_id).await? {
            return Ok(Some(c));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(None)
}

/// What `dump` needs.
pub struct DumpRequest<'a> {
    pub project: &'a str,
    pub service: &'a str,
    /// The running postgres container.
    pub container: &'a ContainerInfo,
    pub out: &'a Path,
    pub census: Option<serde_json::Value>,
}

/// Runs `pg_dumpall` in the container and writes `out` (gzip, 0600) and `out.json` atomically:
/// the dump goes to `out.partial` first and is renamed only after pg_dumpall exited 0.
pub async fn dump(engine: &dyn Engine, req: DumpRequest<'_>, ui: &Ui) -> Result<BackupManifest> {
    let out = req.out;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_private_dir(dir).map_err(|e| SnapshotError::io(dir, e))?;
    if out.exists() {
        return Err(SnapshotError::Other(format!(
            "{} already exists; choose another -o",
            out.display()
        )));
    }
    let partial = partial_path(out);
    let _ = fs::remove_file(&partial);
    // Removes the partial dump if this future is dropped (Ctrl-C) or fails before the rename.
    let mut unfinished = Unfinished(Some(partial.clone()));
    let (user, env) = pg_credentials(req.container);
    let cmd = vec!["pg_dumpall".to_string(), "-U".into(), user.clone()];
    let now = chrono::Utc::now();
    let started = Instant::now();
    let pb = ui.bytes_progress(format!("pg_dumpall {}", req.service), None);
    let result: Result<pipeline::WriteStats> = async {
        let (exec_id, stream) = engine.exec_stream(&req.container.id, &cmd, &env, None).await?;
        let stats = pipeline::compress_to_file(stream, partial.clone(), Codec::Gzip { level: 6 }, &pb).await?;
        match exit_code(engine, &exec_id).await? {
            Some(0) => Ok(stats),
            Some(c) => Err(SnapshotError::Other(format!(
                "pg_dumpall in {} exited with code {c} (is {user} a superuser? see `docker logs {}`); no backup was written",
                req.container.name, req.container.name
            ))),
            None => Err(SnapshotError::Other(format!(
                "pg_dumpall in {} did not report an exit code; no backup was written",
                req.container.name
            ))),
        }
    }
    .await;
    pb.finish_and_clear();
    let stats = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    if stats.raw_bytes == 0 {
        let _ = fs::remove_file(&partial);
        return Err(SnapshotError::Other(format!(
            "pg_dumpall in {} produced no output; no backup was written",
            req.container.name
        )));
    }
    let manifest = BackupManifest {
        format: FORMAT,
        file: out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        project: req.project.to_string(),
        service: req.service.to_string(),
        container: req.container.name.clone(),
        image: req.container.image.clone(),
        tool: "pg_dumpall".into(),
        user,
        compression: "gzip".into(),
        raw_bytes: stats.raw_bytes,
        compressed_bytes: stats.compressed_bytes,
        sha256: stats.sha256,
        census: req.census,
        nodus_version: env!("CARGO_PKG_VERSION").into(),
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let mpath = manifest_path(out);
    let commit = (|| -> io::Result<()> {
        // Manifest first under a temp name, then the dump, then the manifest: a dump file never
        // exists without its manifest being at least on its way.
        let mut bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        bytes.push(b'\n');
        let mtmp = partial_path(&mpath);
        let _ = fs::remove_file(&mtmp);
        write_new_file(&mtmp, &bytes)?;
        fs::rename(&partial, out)?;
        fs::rename(&mtmp, &mpath)?;
        crate::state::atomic::sync_dir(dir)
    })();
    if let Err(e) = commit {
        let _ = fs::remove_file(&partial);
        let _ = fs::remove_file(partial_path(&mpath));
        return Err(SnapshotError::io(out, e));
    }
    unfinished.0 = None;
    Ok(manifest)
}

/// A partial dump file, removed when dropped unless disarmed.
struct Unfinished(Option<PathBuf>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if fs::remove_file(&p).is_ok() {
                crate::interrupt::note_removed(format!("backup {}", p.display()));
            }
        }
    }
}

/// A backup file found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct BackupEntry {
    pub path: PathBuf,
    pub size: u64,
    pub manifest: Option<BackupManifest>,
}

/// Backups in `dir` (`*.sql.gz` with their manifests), oldest first.
pub fn list(dir: &Path) -> Result<Vec<BackupEntry>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(SnapshotError::io(dir, e)),
    };
    for e in rd {
        let e = e.map_err(|e| SnapshotError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sql.gz") {
            continue;
        }
        let path = e.path();
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        let manifest = read_manifest(&path).ok().flatten();
        out.push(BackupEntry {
            path,
            size,
            manifest,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The manifest beside `file`, if there is one.
pub fn read_manifest(file: &Path) -> Result<Option<BackupManifest>> {
    let p = manifest_path(file);
    match fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| SnapshotError::Other(format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SnapshotError::io(p, e)),
    }
}

/// Checks the file against its manifest (when there is one) and that it decompresses to the
/// end; returns the SQL size. Blocking.
pub fn verify_file(file: &Path, manifest: Option<&BackupManifest>) -> Result<u64> {
    let f = fs::File::open(file).map_err(|e| SnapshotError::io(file, e))?;
    let mut hashing = HashingReader::new(BufReader::with_capacity(CHUNK, f), None);
    let decoded = {
        let mut dec = flate2::read::MultiGzDecoder::new(&mut hashing);
        io::copy(&mut dec, &mut io::sink())
    };
    let (sha, size) = hashing.finish().map_err(|e| SnapshotError::io(file, e))?;
    let id = file.display().to_string();
    if let Some(m) = manifest {
        if sha != m.sha256 {
            return Err(SnapshotError::ChecksumMismatch {
                id,
                path: file.to_path_buf(),
                expected: m.sha256.clone(),
                actual: sha,
            });
        }
        if size != m.compressed_bytes {
            return Err(SnapshotError::Corrupt {
                id,
                path: file.to_path_buf(),
                reason: format!("{size} bytes, the manifest says {}", m.compressed_bytes),
            });
        }
    }
    let raw = decoded.map_err(|e| SnapshotError::Corrupt {
        id: id.clone(),
        path: file.to_path_buf(),
        reason: format!("gzip: {e}"),
    })?;
    if let Some(m) = manifest {
        if raw != m.raw_bytes {
            return Err(SnapshotError::Corrupt {
                id,
                path: file.to_path_buf(),
                reason: format!("{raw} bytes of SQL, the manifest says {}", m.raw_bytes),
            });
        }
    }
    Ok(raw)
}

/// The databases a `pg_dumpall` file loads into: those it creates (`CREATE DATABASE`) and those
/// it connects to (`\connect`), templates excluded. Blocking (reads the whole dump).
pub fn databases_in_dump(file: &Path) -> Result<std::collections::BTreeSet<String>> {
    use std::io::BufRead;
    let f = fs::File::open(file).map_err(|e| SnapshotError::io(file, e))?;
    let dec = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(CHUNK, f));
    let mut out = std::collections::BTreeSet::new();
    let mut line = Vec::new();
    let mut r = BufReader::with_capacity(CHUNK, dec);
    let mut in_copy = false;
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| SnapshotError::io(file, e))?;
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        // Rows of `COPY ... FROM stdin;` run until `\.`: data, never statements.
        if in_copy {
            in_copy = text != "\\.";
            continue;
        }
        if text.starts_with("COPY ") && text.ends_with("FROM stdin;") {
            in_copy = true;
            continue;
        }
        if let Some(name) = dump_database_of(text) {
            if name != "template0" && name != "template1" {
                out.insert(name);
            }
        }
    }
    Ok(out)
}

/// The database named by a dump line `CREATE DATABASE name ...` or `\connect name` (both forms
/// pg_dump writes: a plain or quoted identifier, or `-reuse-previous=on "dbname='name'"`).
pub fn dump_database_of(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("CREATE DATABASE ")
        .or_else(|| line.strip_prefix("\\connect "))?;
    let rest = rest.trim_start();
    if let Some(conninfo) = rest.strip_prefix("-reuse-previous=on ") {
        let inner = conninfo.trim().trim_matches('"');
        let v = inner.strip_prefix("dbname=")?;
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(v);
        return Some(v.replace("\\'", "'").replace("\\\\", "\\"));
    }
    if let Some(q) = rest.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = q.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    return Some(name);
                }
            } else {
                name.push(c);
            }
        }
        return None;
    }
    let end = rest.find([' ', ';']).unwrap_or(rest.len());
    Some(rest[..end].to_string()).filter(|n| !n.is_empty())
}

/// What `psql` reported while loading a dump.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub sql_bytes: u64,
    /// All `ERROR:` lines.
    pub errors: usize,
    /// Of which "... already exists" (expected: pg_dumpall recreates the superuser role and
    /// databases that exist).
    pub already_exists: usize,
    /// The other error lines (first 20).
    pub other_errors: Vec<String>,
    pub duration_ms: u64,
}

/// Uploads the decompressed SQL into the container's /tmp (a one-file tar built while streaming),
/// runs `psql -v ON_ERROR_STOP=0 -U <user> -d postgres -f <file>`, and removes the file.
/// `sql_bytes` is the decompressed size (from [`verify_file`]).
pub async fn load(
    engine: &dyn Engine,
    container: &ContainerInfo,
    file: &Path,
    sql_bytes: u64,
    ui: &Ui,
) -> Result<LoadReport> {
    let started = Instant::now();
    let name = format!("nodus-restore-{}.sql", super::manifest::short_random_hex());
    let in_container = format!("/tmp/{name}");
    let pb = ui.bytes_progress(format!("upload {}", file.display()), Some(sql_bytes));
    let src = file.to_path_buf();
    let tar_name = name.clone();
    let (stream, producer) = stream_from_blocking(Some(pb.clone()), move |w| {
        let f = fs::File::open(&src).map_err(|e| SnapshotError::io(&src, e))?;
        let dec = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(CHUNK, f));
        let mut limited = dec.take(sql_bytes);
        let mut header = tar::Header::new_gnu();
        header.set_size(sql_bytes);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        header.set_entry_type(tar::EntryType::Regular);
        let mut b = tar::Builder::new(w);
        b.append_data(&mut header, &tar_name, &mut limited)
            .map_err(|e| SnapshotError::io(&src, e))?;
        b.into_inner().map_err(|e| SnapshotError::io(&src, e))?;
        Ok(())
    });
    let uploaded = engine.upload_archive(&container.id, "/tmp", stream).await;
    let produced = producer
        .await
        .map_err(|e| SnapshotError::Other(format!("upload thread failed: {e}")))?;
    pb.finish_and_clear();
    produced?;
    uploaded?;

    let (user, env) = pg_credentials(container);
    let cmd: Vec<String> = [
        "psql",
        "-v",
        "ON_ERROR_STOP=0",
        "-q",
        "-U",
        &user,
        "-d",
        "postgres",
        "-f",
        &in_container,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let sp = ui.spinner(format!("psql -f {in_container} in {}", container.name));
    let out = engine.exec(&container.id, &cmd, &env, None).await;
    sp.finish_and_clear();
    // Always try to remove the SQL (it may hold password hashes).
    let rm = engine
        .exec(
            &container.id,
            &["rm".to_string(), "-f".into(), in_container.clone()],
            &[],
            None,
        )
        .await;
    let out = out?;
    if let Err(e) = rm {
        ui.warn(format!(
            "could not remove {in_container} from {}: {e}",
            container.name
        ));
    }
    let mut report = LoadReport {
        sql_bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        ..Default::default()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| l.contains("ERROR:")) {
        report.errors += 1;
        if line.contains("already exists") {
            report.already_exists += 1;
        } else if report.other_errors.len() < 20 {
            report.other_errors.push(line.trim().to_string());
        }
    }
    if out.exit_code != 0 {
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        return Err(SnapshotError::Other(format!(
            "psql in {} exited with code {}: {}",
            container.name,
            out.exit_code,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_gz(path: &Path, data: &[u8]) -> BackupManifest {
        let mut enc = flate2::write::GzEncoder::new(
            fs::File::create(path).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(data).unwrap();
        enc.finish().unwrap();
        let (sha, size) = pipeline::sha256_file(path, None).unwrap();
        BackupManifest {
            format: FORMAT,
            file: path.file_name().unwrap().to_string_lossy().into(),
            project: "p".into(),
            service: "db".into(),
            container: "p-db-1".into(),
            image: "postgres:16".into(),
            tool: "pg_dumpall".into(),
            user: "postgres".into(),
            compression: "gzip".into(),
            raw_bytes: data.len() as u64,
            compressed_bytes: size,
            sha256: sha,
            census: None,
            nodus_version: "0".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            duration_ms: 1,
        }
    }

    #[test]
    fn verify_detects_flipped_and_truncated_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.sql.gz");
        let sql: Vec<u8> = (0..5000)
            .flat_map(|i| format!("INSERT INTO t VALUES ({i});\n").into_bytes())
            .collect();
        let m = write_gz(&p, &sql);
        assert_eq!(verify_file(&p, Some(&m)).unwrap(), sql.len() as u64);
        assert_eq!(verify_file(&p, None).unwrap(), sql.len() as u64);
        let mut bytes = fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0x10;
        fs::write(&p, &bytes).unwrap();
        assert!(matches!(
            verify_file(&p, Some(&m)),
            Err(SnapshotError::ChecksumMismatch { .. })
        ));
        bytes[n / 2] ^= 0x10;
        fs::write(&p, &bytes[..n / 2]).unwrap();
        assert!(matches!(
            verify_file(&p, None),
            Err(SnapshotError::Corrupt { .. })
        ));
    }

    #[test]
    fn listing_pairs_dumps_with_manifests() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("20250101T000000Z-db.sql.gz");
        let m = write_gz(&a, b"select 1;\n");
        fs::write(manifest_path(&a), serde_json::to_vec(&m).unwrap()).unwrap();
        let b = d.path().join("20250102T000000Z-db.sql.gz");
        write_gz(&b, b"select 2;\n");
        fs::write(d.path().join("20250103T000000Z-db.sql.gz.partial"), b"x").unwrap();
        let l = list(d.path()).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].manifest.as_ref().unwrap(), &m);
        assert!(l[1].manifest.is_none());
        assert_eq!(
            clean_partials(d.path()),
            vec!["20250103T000000Z-db.sql.gz.partial"]
        );
        assert_eq!(
            manifest_path(&a).file_name().unwrap(),
            "20250101T000000Z-db.sql.gz.json"
        );
    }

    #[test]
    fn the_databases_a_dump_loads_into_are_found() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("all.sql.gz");
        let sql = "\\connect template1\n\\connect postgres\nCREATE TABLE t (v text);\nCOPY t (v) FROM stdin;\nCREATE DATABASE fake\n\\.\nCREATE DATABASE app WITH TEMPLATE = template0 ENCODING = 'UTF8';\n\\connect app\nCREATE DATABASE \"Odd \"\"db\"\"\" WITH TEMPLATE = template0;\n\\connect -reuse-previous=on \"dbname='Odd \"\"db\"\"'\"\n";
        write_gz(&p, sql.as_bytes());
        let dbs: Vec<String> = databases_in_dump(&p).unwrap().into_iter().collect();
        assert!(!dbs.contains(&"fake".to_string()), "COPY data: {dbs:?}");
        assert!(dbs.contains(&"app".to_string()), "{dbs:?}");
        assert!(dbs.contains(&"postgres".to_string()), "{dbs:?}");
        assert!(dbs.contains(&"Odd \"db\"".to_string()), "{dbs:?}");
        assert!(!dbs.iter().any(|d| d.starts_with("template")), "{dbs:?}");
        assert_eq!(dump_database_of("CREATE DATABASE x;").as_deref(), Some("x"));
        assert_eq!(dump_database_of("SELECT 1"), None);
    }

    #[test]
    fn credentials_come_from_the_container_env() {
        let c = ContainerInfo {
            id: "x".into(),
            name: "x".into(),
            image: "i".into(),
            labels: Default::default(),
            state: crate::engine::RunState::Running,
            health: crate::engine::Health::None,
            exit_code: None,
            oom_killed: false,
            started_at: None,
            finished_at: None,
            ports: vec![],
            mounts: vec![],
            env: vec![
                "POSTGRES_USER=app".into(),
                "POSTGRES_PASSWORD=s3cret".into(),
            ],
            stop_signal: None,
            stop_timeout_secs: None,
            networks: vec![],
            network_ids: Default::default(),
        };
        let (u, env) = pg_credentials(&c);
        assert_eq!(u, "app");
        assert_eq!(env, vec!["PGPASSWORD=s3cret".to_string()]);
        let mut c2 = c.clone();
        c2.env.clear();
        assert_eq!(pg_credentials(&c2), ("postgres".to_string(), vec![]));
    }
}
