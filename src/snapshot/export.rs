//! The standalone export format of one snapshot (`snapshot export` / `snapshot import`).
//!
//! An export is a zstd-compressed tar (`.tar.zst`), optionally encrypted with age to one or more
//! X25519 recipients (`.tar.zst.age`), holding in this order:
//!
//! ```text
//! nodus-export.json   format version, nodus version, snapshot id, size and time of the export
//! manifest.json       the snapshot's manifest, byte for byte as the store holds it
//! data.tar            the volume's tar stream (what the archive endpoint produced), uncompressed
//! data.tar.sha256     SHA-256 of data.tar, as a sha256sum line
//! ```
//!
//! Beside it, `FILE.sha256` holds a `sha256sum`-compatible line for the whole file.
//!
//! Writing streams (no whole file or archive in memory): tar → zstd → [age] → SHA-256 → a
//! temporary file beside the target (0600), fsynced, then linked into place without replacing an
//! existing file (or renamed over it with `force`). Reading is done twice by import: a first
//! pass ([`scan`]) checks everything — the sidecar, the age MAC, the zstd frame checksum, the
//! entry order and data.tar's SHA-256 — before anything is written; the second pass
//! ([`read_data`]) hands data.tar to the writer through a reader that fails instead of ending
//! if the bytes differ from what the first pass saw.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::Manifest;
use super::pipeline::{HashingReader, HashingWriter, CHUNK};
use super::store::create_private_file;
use super::{Result, SnapshotError};

/// Export format version.
pub const EXPORT_FORMAT: u32 = 1;
pub const HEADER_ENTRY: &str = "nodus-export.json";
pub const MANIFEST_ENTRY: &str = "manifest.json";
pub const DATA_ENTRY: &str = "data.tar";
pub const DATA_SUM_ENTRY: &str = "data.tar.sha256";
/// What an age file starts with.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";
const AGE_ARMOR: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
/// Metadata entries larger than this are refused (a manifest is a few KiB).
const MAX_META: u64 = 64 << 20;
/// zstd level of exports (they are written once and copied off the machine: a bit tighter than
/// the snapshot path's level 1 on small machines).
pub const EXPORT_ZSTD_LEVEL: i32 = 3;

/// The first entry of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: u32,
    pub nodus_version: String,
    pub snapshot: String,
    /// RFC 3339, UTC.
    pub exported_at: String,
    /// Bytes of data.tar.
    pub data_bytes: u64,
}

/// Parses `age1…` X25519 recipients given on the command line and in recipients files (one per
/// line; blank lines and `#` comments ignored).
pub fn parse_recipients(keys: &[String], files: &[PathBuf]) -> Result<Vec<age::x25519::Recipient>> {
    let parse = |s: &str, from: &str| {
        age::x25519::Recipient::from_str(s.trim()).map_err(|e| {
            SnapshotError::Other(format!(
                "{from}: {s:?} is not an age X25519 recipient (age1…): {e}"
            ))
        })
    };
    let mut out = Vec::new();
    for k in keys {
        out.push(parse(k, "--age-recipient")?);
    }
    for f in files {
        let text = fs::read_to_string(f).map_err(|e| SnapshotError::io(f, e))?;
        let before = out.len();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(parse(line, &f.display().to_string())?);
        }
        if out.len() == before {
            return Err(SnapshotError::Other(format!(
                "{} holds no recipients",
                f.display()
            )));
        }
    }
    Ok(out)
}

/// Reads the identities of an age identity file (`AGE-SECRET-KEY-1…` lines, as `age-keygen`
/// writes them). The keys are never printed.
pub fn load_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
    let bad = |reason: String| {
        SnapshotError::Other(format!(
            "{} is not a usable age identity file: {reason}",
            path.display()
        ))
    };
    let file = age::IdentityFile::from_file(path.display().to_string()).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::PermissionDenied {
            SnapshotError::io(path, e)
        } else {
            bad(e.to_string())
        }
    })?;
    let ids = file.into_identities().map_err(|e| bad(e.to_string()))?;
    if ids.is_empty() {
        return Err(bad("it holds no identities".into()));
    }
    Ok(ids)
}

/// The file names an export to `out` ends up with: `.age` is appended for an encrypted export
/// whose name does not end with it already. A directory gets `<id>.tar.zst[.age]` inside.
pub fn output_path(out: &Path, id: &str, encrypted: bool) -> PathBuf {
    let mut p = if out.is_dir() {
        out.join(format!("{id}.tar.zst"))
    } else {
        out.to_path_buf()
    };
    if encrypted && p.extension().is_none_or(|e| e != "age") {
        let mut s = p.into_os_string();
        s.push(".age");
        p = PathBuf::from(s);
    }
    p
}

/// `FILE.sha256`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// What [`write_export`] wrote (still under its temporary name until [`PendingExport::commit`]).
#[derive(Debug)]
pub struct PendingExport {
    tmp: PathBuf,
    pub path: PathBuf,
    /// SHA-256 of the whole file.
    pub sha256: String,
    pub bytes: u64,
    /// SHA-256 of data.tar.
    pub data_sha256: String,
    pub data_bytes: u64,
    pub encrypted: bool,
    committed: bool,
}

impl PendingExport {
    /// Puts the file and its `.sha256` into place. Without `force` an existing file is never
    /// replaced (the link fails instead, so a file created meanwhile is not clobbered either).
    pub fn commit(mut self, force: bool) -> Result<()> {
        let sidecar = sidecar_path(&self.path);
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let line = format!("{}  {name}\n", self.sha256);
        let dir = parent_dir(&self.path);
        let sum_tmp = temp_name(&sidecar);
        super::store::write_new_file(&sum_tmp, line.as_bytes())
            .map_err(|e| SnapshotError::io(&sum_tmp, e))?;
        // The data file first: a sidecar never names a file that is not there. Should placing the
        // sidecar fail (one appeared meanwhile), the error says so and the data file stays.
        let placed =
            place(&self.tmp, &self.path, force).and_then(|()| place(&sum_tmp, &sidecar, force));
        let _ = fs::remove_file(&sum_tmp);
        placed?;
        crate::state::atomic::sync_dir(&dir).map_err(|e| SnapshotError::io(&dir, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingExport {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_name(p: &Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(p).join(format!(
        ".{name}.tmp-{}",
        super::manifest::short_random_hex()
    ))
}

/// Moves `tmp` to `dest`: a hard link (fails if `dest` exists) unless `force`, then a rename.
fn place(tmp: &Path, dest: &Path, force: bool) -> Result<()> {
    if force {
        return fs::rename(tmp, dest).map_err(|e| SnapshotError::io(dest, e));
    }
    match fs::hard_link(tmp, dest) {
        Ok(()) => {
            let _ = fs::remove_file(tmp);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists(dest)),
        Err(e) => Err(SnapshotError::io(dest, e)),
    }
}

fn exists(p: &Path) -> SnapshotError {
    SnapshotError::Other(format!(
        "{} already exists; nodus does not overwrite it (pass --force to replace it)",
        p.display()
    ))
}

/// Refuses early when the target or its sidecar exists and `force` is off.
pub fn check_target(path: &Path, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for p in [path.to_path_buf(), sidecar_path(path)] {
        if p.symlink_metadata().is_ok() {
            return Err(exists(&p));
        }
    }
    Ok(())
}

/// Reads exactly `len` bytes from `inner`, hashing them; fails if it holds fewer or more.
struct Exact<R> {
    inner: R,
    remaining: u64,
    hasher: Sha256,
    progress: Option<ProgressBar>,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the snapshot's tar stream is longer than its manifest says",
                )),
            };
        }
        read_hashed(
            &mut self.inner,
            buf,
            &mut self.remaining,
            &mut self.hasher,
            self.progress.as_ref(),
            |left| {
                format!(
                    "the snapshot's tar stream ended {left} bytes short of the size its manifest says"
                )
            },
        )
    }
}

/// One read of at most `remaining` bytes from `inner` (an early end is an error saying
/// `short(remaining)`), hashed and counted into `progress`.
fn read_hashed(
    inner: &mut dyn Read,
    buf: &mut [u8],
    remaining: &mut u64,
    hasher: &mut Sha256,
    progress: Option<&ProgressBar>,
    short: impl FnOnce(u64) -> String,
) -> io::Result<usize> {
    let want = buf
        .len()
        .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
    let n = inner.read(&mut buf[..want])?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            short(*remaining),
        ));
    }
    hasher.update(&buf[..n]);
    *remaining -= n as u64;
    if let Some(pb) = progress {
        pb.inc(n as u64);
    }
    Ok(n)
}

fn gnu_header(path: &str, size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    h.set_cksum();
    Ok(h)
}

/// Writes the tar of an export into `w` (compressed), returns `w` and data.tar's SHA-256.
fn write_body<W: Write>(
    w: W,
    manifest_json: &[u8],
    header: &ExportHeader,
    data: &mut dyn Read,
    progress: Option<ProgressBar>,
) -> io::Result<(W, String)> {
    let mut enc = zstd::stream::write::Encoder::new(w, EXPORT_ZSTD_LEVEL)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    if threads > 1 {
        enc.multithread(threads)?;
    }
    enc.include_checksum(true)?;
    let mut b = tar::Builder::new(enc);
    let mut hj = serde_json::to_vec_pretty(header).expect("header serialises");
    hj.push(b'\n');
    b.append(&gnu_header(HEADER_ENTRY, hj.len() as u64)?, &hj[..])?;
    b.append(
        &gnu_header(MANIFEST_ENTRY, manifest_json.len() as u64)?,
        manifest_json,
    )?;
    let mut exact = Exact {
        inner: data,
        remaining: header.data_bytes,
        hasher: Sha256::new(),
        progress,
    };
    b.append(&gnu_header(DATA_ENTRY, header.data_bytes)?, &mut exact)?;
    let sha = hex::encode(exact.hasher.finalize());
    let line = format!("{sha}  {DATA_ENTRY}\n");
    b.append(
        &gnu_header(DATA_SUM_ENTRY, line.len() as u64)?,
        line.as_bytes(),
    )?;
    let enc = b.into_inner()?;
    Ok((enc.finish()?, sha))
}

/// Writes an export of the snapshot whose manifest is `manifest_json` and whose tar stream
/// (`data_bytes` long) `data` reads, to a temporary file beside `path`; encrypted to
/// `recipients` when there are any. Blocking. The caller checks its source (e.g. the snapshot's
/// checksum) and then calls [`PendingExport::commit`]; dropping the result removes the file.
pub fn write_export(
    path: &Path,
    manifest_json: &[u8],
    snapshot_id: &str,
    data_bytes: u64,
    data: &mut dyn Read,
    recipients: &[age::x25519::Recipient],
    progress: Option<ProgressBar>,
) -> Result<PendingExport> {
    let tmp = temp_name(path);
    let file = create_private_file(&tmp).map_err(|e| SnapshotError::io(&tmp, e))?;
    let mut pending = PendingExport {
        tmp: tmp.clone(),
        path: path.to_path_buf(),
        sha256: String::new(),
        bytes: 0,
        data_sha256: String::new(),
        data_bytes,
        encrypted: !recipients.is_empty(),
        committed: false,
    };
    let header = ExportHeader {
        format: EXPORT_FORMAT,
        nodus_version: env!("CARGO_PKG_VERSION").into(),
        snapshot: snapshot_id.to_string(),
        exported_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        data_bytes,
    };
    let io_err = |e: io::Error| SnapshotError::io(&tmp, e);
    let out = HashingWriter::new(BufWriter::with_capacity(CHUNK, file));
    let (out, data_sha) = if recipients.is_empty() {
        write_body(out, manifest_json, &header, data, progress).map_err(io_err)?
    } else {
        let enc =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| SnapshotError::Other(format!("age: {e}")))?;
        let sw = enc.wrap_output(out).map_err(io_err)?;
        let (sw, sha) = write_body(sw, manifest_json, &header, data, progress).map_err(io_err)?;
        (sw.finish().map_err(io_err)?, sha)
    };
    let (buffered, sha, bytes) = out.finish();
    let file = buffered.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    pending.sha256 = sha;
    pending.bytes = bytes;
    pending.data_sha256 = data_sha;
    Ok(pending)
}

// ---------------------------------------------------------------------------------------------
// reading

/// What the first pass over an export found; everything in it was checked.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    pub header: ExportHeader,
    /// manifest.json, byte for byte.
    pub manifest_json: Vec<u8>,
    pub manifest: Manifest,
    pub data_bytes: u64,
    pub data_sha256: String,
    pub encrypted: bool,
    /// SHA-256 of the file; `sidecar_checked` says whether a `.sha256` beside it confirmed it.
    pub sha256: String,
    pub sidecar_checked: bool,
}

/// Why an export cannot be read.
fn bad(path: &Path, reason: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Other(format!(
        "{} is not a usable nodus export: {reason}",
        path.display()
    ))
}

/// The expected SHA-256 from `FILE.sha256`, if there is one.
fn read_sidecar(path: &Path) -> Result<Option<String>> {
    let side = sidecar_path(path);
    let text = match fs::read_to_string(&side) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::io(&side, e)),
    };
    let hash = text
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad(&side, "no SHA-256 in it"))?;
    Ok(Some(hash.to_ascii_lowercase()))
}

/// Opens the decompressed tar of an export: decrypts with `identities` when it is age-encrypted.
fn open_plain<'a, R: BufRead + 'a>(
    path: &Path,
    mut input: R,
    identities: Option<&[Box<dyn age::Identity + Send + Sync>]>,
) -> Result<(Box<dyn Read + 'a>, bool)> {
    let head = input
        .fill_buf()
        .map_err(|e| SnapshotError::io(path, e))?
        .to_vec();
    let encrypted = head.starts_with(AGE_MAGIC);
    if head.starts_with(AGE_ARMOR) {
        return Err(bad(
            path,
            "it is ASCII-armored age; dearmor it first (`age -d` to a file, or re-export)",
        ));
    }
    let plain: Box<dyn Read + 'a> = if encrypted {
        let ids = identities.ok_or_else(|| {
            SnapshotError::Other(format!(
                "{} is encrypted; pass --identity FILE (the age identity it was encrypted to)",
                path.display()
            ))
        })?;
        let dec = age::Decryptor::new_buffered(input).map_err(|e| bad(path, e))?;
        let reader = dec
            .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => SnapshotError::Other(format!(
                    "{}: none of the identities given can decrypt it (it was encrypted to other recipients)",
                    path.display()
                )),
                e => bad(path, e),
            })?;
        Box::new(reader)
    } else {
        Box::new(input)
    };
    let dec = zstd::stream::read::Decoder::new(plain).map_err(|e| SnapshotError::io(path, e))?;
    Ok((Box::new(dec), encrypted))
}

fn read_small(entry: &mut impl Read, name: &str, size: u64) -> io::Result<Vec<u8>> {
    if size > MAX_META {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is {size} bytes, too large"),
        ));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut v)?;
    Ok(v)
}

/// Walks the tar of an export: checks entry order and names, parses the metadata, hashes
/// data.tar (feeding it to `data` when given). Returns (header, manifest bytes, data bytes,
/// data sha, recorded data sha).
type Walked = (ExportHeader, Vec<u8>, u64, String, String);
/// Where [`walk`] hands data.tar.
type DataSink<'a> = &'a mut dyn FnMut(&mut dyn Read) -> Result<()>;

fn walk(
    plain: &mut dyn Read,
    mut data: Option<DataSink<'_>>,
) -> std::result::Result<Walked, String> {
    let mut archive = tar::Archive::new(plain);
    let mut entries = archive.entries().map_err(|e| format!("tar: {e}"))?;
    let mut next = |want: &str| -> std::result::Result<tar::Entry<'_, &mut dyn Read>, String> {
        let e = entries
            .next()
            .ok_or_else(|| format!("it ends before {want}"))?
            .map_err(|e| format!("tar: {e}"))?;
        let p = e
            .path()
            .map_err(|e| format!("tar: {e}"))?
            .to_string_lossy()
            .into_owned();
        if p != want {
            return Err(format!("expected {want} here, found {p:?}"));
        }
        Ok(e)
    };
    let mut e = next(HEADER_ENTRY)?;
    let size = e.size();
    let hb = read_small(&mut e, HEADER_ENTRY, size).map_err(|e| e.to_string())?;
    drop(e);
    let header: ExportHeader =
        serde_json::from_slice(&hb).map_err(|e| format!("{HEADER_ENTRY}: {e}"))?;
    if header.format > EXPORT_FORMAT {
        return Err(format!(
            "export format {} is newer than this nodus reads ({EXPORT_FORMAT}); upgrade nodus",
            header.format
        ));
    }
    let mut e = next(MANIFEST_ENTRY)?;
    let size = e.size();
    let mb = read_small(&mut e, MANIFEST_ENTRY, size).map_err(|e| e.to_string())?;
    drop(e);
    let e = next(DATA_ENTRY)?;
    let data_bytes = e.size();
    if data_bytes != header.data_bytes {
        return Err(format!(
            "{DATA_ENTRY} holds {data_bytes} bytes, {HEADER_ENTRY} says {}",
            header.data_bytes
        ));
    }
    let mut hashing = HashingReader::new(e, None);
    match data.as_mut() {
        Some(f) => f(&mut hashing).map_err(|e| e.to_string())?,
        None => {
            io::copy(&mut hashing, &mut io::sink()).map_err(|e| format!("{DATA_ENTRY}: {e}"))?;
        }
    }
    let (data_sha, n) = hashing.finish().map_err(|e| format!("{DATA_ENTRY}: {e}"))?;
    if n != data_bytes {
        return Err(format!("{DATA_ENTRY}: read {n} of {data_bytes} bytes"));
    }
    let mut e = next(DATA_SUM_ENTRY)?;
    let size = e.size();
    let sb = read_small(&mut e, DATA_SUM_ENTRY, size).map_err(|e| e.to_string())?;
    drop(e);
    let recorded = String::from_utf8_lossy(&sb)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if let Some(extra) = entries.next() {
        let p = extra
            .ok()
            .and_then(|e| e.path().ok().map(|p| p.display().to_string()))
            .unwrap_or_default();
        return Err(format!("unexpected entry {p:?} after {DATA_SUM_ENTRY}"));
    }
    // Past the end-of-archive marker: drain so the zstd frame checksum and the age MAC of the
    // last chunk are checked.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| format!("after the tar: {e}"))?;
    Ok((header, mb, data_bytes, data_sha, recorded))
}

/// First pass: reads the whole export and checks it (see the module docs). Nothing is written.
pub fn scan(
    path: &Path,
    identities: Option<&[Box<dyn age::Identity + Send + Sync>]>,
    progress: Option<ProgressBar>,
) -> Result<ExportInfo> {
    let expected = read_sidecar(path)?;
    let file = File::open(path).map_err(|e| SnapshotError::io(path, e))?;
    let mut hashing = HashingReader::new(BufReader::with_capacity(CHUNK, file), progress);
    let walked = {
        let buffered = BufReader::with_capacity(CHUNK, &mut hashing);
        match open_plain(path, buffered, identities) {
            Ok((mut plain, enc)) => Ok((walk(&mut plain, None), enc)),
            Err(e) => Err(e),
        }
    };
    let (sha, _) = hashing.finish().map_err(|e| SnapshotError::io(path, e))?;
    // A file that does not match its sidecar: say that first (the clearest diagnosis).
    if let Some(exp) = &expected {
        if *exp != sha {
            return Err(SnapshotError::Other(format!(
                "{} does not match {}: the sidecar says sha256 {exp}, the file has {sha} — it is damaged or incomplete; nothing was imported",
                path.display(),
                sidecar_path(path).display()
            )));
        }
    }
    let (walked, encrypted) = walked?;
    let (header, manifest_json, data_bytes, data_sha256, recorded) =
        walked.map_err(|r| bad(path, r))?;
    if recorded != data_sha256 {
        return Err(bad(
            path,
            format!("{DATA_ENTRY} has sha256 {data_sha256}, the export recorded {recorded}"),
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&manifest_json)
        .map_err(|e| bad(path, format!("{MANIFEST_ENTRY}: {e}")))?;
    if manifest.id != header.snapshot {
        return Err(bad(
            path,
            format!(
                "{MANIFEST_ENTRY} is snapshot {}, {HEADER_ENTRY} names {}",
                manifest.id, header.snapshot
            ),
        ));
    }
    Ok(ExportInfo {
        header,
        manifest_json,
        manifest,
        data_bytes,
        data_sha256,
        encrypted,
        sha256: sha,
        sidecar_checked: expected.is_some(),
    })
}

/// Second pass: hands data.tar to `f` through a reader that returns an error instead of its
/// end when the bytes differ from what [`scan`] checked (so a writer that commits at a clean
/// end never commits them).
pub fn read_data<T>(
    path: &Path,
    identities: Option<&[Box<dyn age::Identity + Send + Sync>]>,
    info: &ExportInfo,
    progress: Option<ProgressBar>,
    f: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let file = File::open(path).map_err(|e| SnapshotError::io(path, e))?;
    let (mut plain, _) = open_plain(path, BufReader::with_capacity(CHUNK, file), identities)?;
    let mut f = Some(f);
    let mut out = None;
    let mut call = |r: &mut dyn Read| -> Result<()> {
        let mut checked = Checked {
            inner: r,
            remaining: info.data_bytes,
            hasher: Sha256::new(),
            expected: info.data_sha256.clone(),
            progress: progress.clone(),
        };
        let f = f.take().expect("called once");
        out = Some(f(&mut checked)?);
        Ok(())
    };
    let (_, _, _, sha, _) = walk(&mut plain, Some(&mut call)).map_err(|r| bad(path, r))?;
    if sha != info.data_sha256 {
        return Err(bad(path, "it changed since it was checked"));
    }
    out.ok_or_else(|| bad(path, "no data"))
}

/// Yields `remaining` bytes, then (instead of a clean end) an error unless their SHA-256 is
/// `expected`.
struct Checked<'a> {
    inner: &'a mut dyn Read,
    remaining: u64,
    hasher: Sha256,
    expected: String,
    progress: Option<ProgressBar>,
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let got = hex::encode(self.hasher.clone().finalize());
            if got != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the export's data changed since it was checked",
                ));
            }
            return Ok(0);
        }
        read_hashed(
            self.inner,
            buf,
            &mut self.remaining,
            &mut self.hasher,
            self.progress.as_ref(),
            |_| "the export's data ended early".into(),
        )
    }
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
