//! Follows the structure of a tar stream as it passes, without buffering it: where each large
//! regular file's content starts in the stream, with its path, size and modification time. The
//! store uses it to take an unchanged file's chunks from the previous snapshot (see
//! [`super::reuse`]).
//!
//! Only what can be trusted is reported: every header must carry a valid checksum, and anything
//! unexpected (a bad checksum, a sparse file, unparsable PAX records) stops the scan for the rest
//! of the stream: later files are then simply chunked and hashed, never reused.

use serde::{Deserialize, Serialize};

/// Files smaller than this are not reported (no chunk fits inside them: nothing to reuse).
pub const MIN_FILE: u64 = 256 * 1024;

/// A regular file's content in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpan {
    pub path: String,
    pub size: u64,
    /// Modification time, seconds since the epoch (the engine writes whole seconds).
    pub mtime: i64,
    /// Stream offset of the first content byte.
    pub offset: u64,
}

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header.
    Header { buf: Box<[u8; 512]>, have: usize },
    /// The content of a PAX extended header or a GNU long name: collected, then parsed.
    Meta {
        kind: MetaKind,
        data: Vec<u8>,
        remaining: u64,
        pad: u64,
    },
    /// File content (and the padding to the next 512-byte boundary) passing by.
    Data { remaining: u64, pad: u64 },
    /// The end-of-archive marker, or something the scan does not trust: nothing more is reported.
    Stopped,
}

#[derive(Debug, Clone, Copy)]
enum MetaKind {
    Pax,
    LongName,
    Ignored,
}

/// The scanner. Feed it every byte of the stream in order ([`TarScan::feed`]), or account for
/// bytes of file content that were skipped ([`TarScan::skip`]).
#[derive(Debug)]
pub struct TarScan {
    state: State,
    offset: u64,
    /// Overrides for the next header (PAX `path`/`size`/`mtime`, GNU long name).
    next_path: Option<String>,
    next_size: Option<u64>,
    next_mtime: Option<i64>,
    pub spans: Vec<FileSpan>,
}

impl Default for TarScan {
    fn default() -> Self {
        Self::new()
    }
}

impl TarScan {
    pub fn new() -> TarScan {
        TarScan {
            state: State::Header {
                buf: Box::new([0u8; 512]),
                have: 0,
            },
            offset: 0,
            next_path: None,
            next_size: None,
            next_mtime: None,
            spans: Vec::new(),
        }
    }

    /// Whether the scan stopped trusting the stream (or reached its end marker).
    pub fn stopped(&self) -> bool {
        matches!(self.state, State::Stopped)
    }

    /// Bytes of the stream seen (fed or skipped).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many bytes from here are file content that may be skipped.
    pub fn content_left(&self) -> u64 {
        match self.state {
            State::Data { remaining, .. } => remaining,
            _ => 0,
        }
    }

    /// Accounts for `n` bytes of file content that were not fed. Fails (and the caller must
    /// fail the snapshot) when they are not all content of the current file.
    pub fn skip(&mut self, n: u64) -> Result<(), String> {
        match &mut self.state {
            State::Data { remaining, .. } if *remaining >= n => {
                *remaining -= n;
                self.offset += n;
                if *remaining == 0 {
                    self.after_content();
                }
                Ok(())
            }
            _ => Err(format!(
                "cannot skip {n} bytes at stream offset {}: not inside a file's content",
                self.offset
            )),
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Stopped => {
                    self.offset += data.len() as u64;
                    return;
                }
                State::Data { remaining, pad } => {
                    if *remaining > 0 {
                        let n = (*remaining).min(data.len() as u64);
                        *remaining -= n;
                        self.offset += n;
                        data = &data[n as usize..];
                        if *remaining == 0 {
                            self.after_content();
                        }
                    } else {
                        let n = (*pad).min(data.len() as u64);
                        *pad -= n;
                        self.offset += n;
                        data = &data[n as usize..];
                        if *pad == 0 {
                            self.state = header_state();
                        }
                    }
                }
                State::Meta {
                    data: buf,
                    remaining,
                    pad,
                    ..
                } => {
                    if *remaining > 0 {
                        let n = (*remaining).min(data.len() as u64);
                        buf.extend_from_slice(&data[..n as usize]);
                        *remaining -= n;
                        self.offset += n;
                        data = &data[n as usize..];
                    } else {
                        let n = (*pad).min(data.len() as u64);
                        *pad -= n;
                        self.offset += n;
                        data = &data[n as usize..];
                    }
                    self.meta_if_complete();
                }
                State::Header { buf, have } => {
                    let n = (512 - *have).min(data.len());
                    buf[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    self.offset += n as u64;
                    data = &data[n..];
                    if *have == 512 {
                        let h = *buf.clone();
                        self.header_done(&h);
                    }
                }
            }
        }
    }

    /// The current file's content ended: its padding follows (or the next header).
    fn after_content(&mut self) {
        if let State::Data { pad, .. } = self.state {
            if pad == 0 {
                self.state = header_state();
            }
        }
    }

    fn header_done(&mut self, raw: &[u8; 512]) {
        if raw.iter().all(|b| *b == 0) {
            // The end-of-archive marker.
            self.state = State::Stopped;
            return;
        }
        if !checksum_ok(raw) {
            self.state = State::Stopped;
            return;
        }
        let h = tar::Header::from_byte_slice(raw);
        let size = match self.next_size.take() {
            Some(s) => s,
            None => match h.entry_size() {
                Ok(s) => s,
                Err(_) => {
                    self.state = State::Stopped;
                    return;
                }
            },
        };
        let pad = (512 - size % 512) % 512;
        let ty = h.entry_type();
        let meta = |kind| State::Meta {
            kind,
            data: Vec::new(),
            remaining: size,
            pad,
        };
        use tar::EntryType as T;
        self.state = match ty {
            T::XHeader => meta(MetaKind::Pax),
            T::GNULongName => meta(MetaKind::LongName),
            T::XGlobalHeader | T::GNULongLink => meta(MetaKind::Ignored),
            T::GNUSparse => State::Stopped,
            T::Regular | T::Continuous => {
                let path = self
                    .next_path
                    .take()
                    .unwrap_or_else(|| String::from_utf8_lossy(&h.path_bytes()).into_owned());
                let mtime = match self.next_mtime.take() {
                    Some(m) => Some(m),
                    None => h.mtime().ok().and_then(|m| i64::try_from(m).ok()),
                };
                match mtime {
                    Some(mtime) => {
                        if size >= MIN_FILE {
                            self.spans.push(FileSpan {
                                path,
                                size,
                                mtime,
                                offset: self.offset,
                            });
                        }
                        State::Data {
                            remaining: size,
                            pad,
                        }
                    }
                    None => State::Stopped,
                }
            }
            _ => {
                // Directories, links, devices: their content (if any) passes by unreported.
                self.next_path = None;
                self.next_mtime = None;
                State::Data {
                    remaining: size,
                    pad,
                }
            }
        };
        if size == 0 {
            if let State::Data { .. } = self.state {
                self.state = if pad == 0 {
                    header_state()
                } else {
                    State::Data { remaining: 0, pad }
                };
            }
        }
        self.meta_if_complete();
    }

    /// A PAX header or long name whose content (and padding) is all in: parsed, and the next
    /// header expected.
    fn meta_if_complete(&mut self) {
        if let State::Meta {
            remaining: 0,
            pad: 0,
            ..
        } = self.state
        {
            let State::Meta { kind, data: d, .. } =
                std::mem::replace(&mut self.state, header_state())
            else {
                unreachable!()
            };
            self.meta_done(kind, &d);
        }
    }

    fn meta_done(&mut self, kind: MetaKind, data: &[u8]) {
        match kind {
            MetaKind::Ignored => {}
            MetaKind::LongName => {
                let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                self.next_path = Some(String::from_utf8_lossy(&data[..end]).into_owned());
            }
            MetaKind::Pax => match parse_pax(data) {
                Some(records) => {
                    for (k, v) in records {
                        match k.as_str() {
                            "path" => self.next_path = Some(v),
                            "size" => match v.parse::<u64>() {
                                Ok(s) => self.next_size = Some(s),
                                Err(_) => self.state = State::Stopped,
                            },
                            // Whole seconds (a fraction is dropped: the comparison that uses it
                            // only trusts times older than the previous snapshot's start).
                            "mtime" => {
                                match v.split('.').next().and_then(|s| s.parse::<i64>().ok()) {
                                    Some(m) => self.next_mtime = Some(m),
                                    None => self.state = State::Stopped,
                                }
                            }
                            _ => {}
                        }
                    }
                }
                None => self.state = State::Stopped,
            },
        }
    }
}

fn header_state() -> State {
    State::Header {
        buf: Box::new([0u8; 512]),
        have: 0,
    }
}

/// The header checksum: the sum of its bytes with the checksum field taken as spaces.
fn checksum_ok(raw: &[u8; 512]) -> bool {
    let field = &raw[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = raw
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == stored
}

/// PAX records: `"%d %s=%s\n"`, the length counting the whole record.
fn parse_pax(mut data: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let sp = data.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..sp]).ok()?.parse().ok()?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return None;
        }
        let rec = std::str::from_utf8(&data[sp + 1..len - 1]).ok()?;
        let (k, v) = rec.split_once('=')?;
        out.push((k.to_string(), v.to_string()));
        data = &data[len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect()
    }

    /// A tar with a directory, a small file, a long-named large file (GNU), a large file with a
    /// PAX path, and a plain large file.
    fn sample() -> (Vec<u8>, Vec<(String, u64, u64)>) {
        let mut raw = Vec::new();
        let long = format!("data/base/{}/16384", "x".repeat(120));
        {
            let mut b = tar::Builder::new(&mut raw);
            let mut d = tar::Header::new_gnu();
            d.set_entry_type(tar::EntryType::Directory);
            d.set_size(0);
            d.set_mode(0o700);
            d.set_mtime(1000);
            b.append_data(&mut d, "data/", std::io::empty()).unwrap();
            let mut add = |h: &mut tar::Header, name: &str, data: &[u8], mtime: u64| {
                h.set_size(data.len() as u64);
                h.set_mode(0o600);
                h.set_mtime(mtime);
                b.append_data(h, name, data).unwrap();
            };
            add(
                &mut tar::Header::new_gnu(),
                "data/PG_VERSION",
                b"15\n",
                1001,
            );
            add(
                &mut tar::Header::new_gnu(),
                &long,
                &big(300_000, 3),
                1_700_000_000,
            );
            add(
                &mut tar::Header::new_ustar(),
                "data/base/1/2619",
                &big(1 << 20, 5),
                1_700_000_001,
            );
            b.finish().unwrap();
        }
        // Where each large file's content starts, found the slow way.
        let mut expected = Vec::new();
        let mut a = tar::Archive::new(&raw[..]);
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            if e.header().entry_size().unwrap() >= MIN_FILE {
                expected.push((
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.raw_file_position(),
                    e.header().mtime().unwrap(),
                ));
            }
        }
        assert_eq!(expected.len(), 2);
        assert_eq!(expected[0].0, long);
        (raw, expected)
    }

    fn check(scan: &TarScan, expected: &[(String, u64, u64)]) {
        let got: Vec<(String, u64, u64)> = scan
            .spans
            .iter()
            .map(|s| (s.path.clone(), s.offset, s.mtime as u64))
            .collect();
        assert_eq!(got, expected);
        assert!(scan.stopped(), "the end marker was seen");
    }

    #[test]
    fn finds_large_files_fed_in_any_pieces() {
        let (raw, expected) = sample();
        for piece in [1usize, 7, 511, 512, 513, 4096, 65_536, raw.len()] {
            let mut s = TarScan::new();
            for p in raw.chunks(piece) {
                s.feed(p);
            }
            check(&s, &expected);
            assert_eq!(s.offset(), raw.len() as u64);
        }
    }

    #[test]
    fn skipped_content_is_accounted_for() {
        let (raw, expected) = sample();
        let mut s = TarScan::new();
        let mut pos = 0usize;
        for span in &expected {
            s.feed(&raw[pos..span.1 as usize + 100]);
            let left = s.content_left();
            assert!(left > 1000);
            s.skip(left - 10).unwrap();
            pos = span.1 as usize + 100 + (left - 10) as usize;
        }
        s.feed(&raw[pos..]);
        check(&s, &expected);
        // Skipping outside a file's content is refused.
        let mut s = TarScan::new();
        s.feed(&raw[..100]);
        assert!(s.skip(10).is_err());
    }

    #[test]
    fn pax_path_size_and_mtime_are_used() {
        let mut raw = Vec::new();
        {
            let mut b = tar::Builder::new(&mut raw);
            let data = big(400_000, 7);
            b.append_pax_extensions([
                ("path", b"data/pax/long/name".as_slice()),
                ("mtime", b"1700000123.5".as_slice()),
            ])
            .unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mtime(5);
            h.set_mode(0o600);
            b.append_data(&mut h, "data/short", &data[..]).unwrap();
            b.finish().unwrap();
        }
        let mut s = TarScan::new();
        s.feed(&raw);
        assert_eq!(s.spans.len(), 1);
        assert_eq!(s.spans[0].path, "data/pax/long/name");
        assert_eq!(s.spans[0].mtime, 1_700_000_123);
        assert_eq!(s.spans[0].size, 400_000);
    }

    #[test]
    fn a_bad_checksum_stops_the_scan() {
        let (mut raw, expected) = sample();
        // Damage the header of the last large file: it is not reported.
        let h = expected[1].1 as usize - 512;
        raw[h + 10] ^= 1;
        let mut s = TarScan::new();
        s.feed(&raw);
        assert_eq!(s.spans.len(), 1);
        assert!(s.stopped());
    }
}
