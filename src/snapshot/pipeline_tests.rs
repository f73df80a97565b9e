//! Tests of the archive pipelines (compression, adaptive level, streams to and from blocking
//! threads, zstd frame checks).

use super::*;

fn stream_of(chunks: Vec<std::result::Result<Vec<u8>, EngineError>>) -> ByteStream {
    Box::pin(futures_util::stream::iter(
        chunks.into_iter().map(|c| c.map(bytes::Bytes::from)),
    ))
}

/// zstd at level 3 throughout, on the calling thread.
fn fixed_zstd() -> Codec {
    Codec::Zstd {
        level: 3,
        threads: 0,
        min_level: 3,
    }
}

fn pseudo_random(n: usize) -> Vec<u8> {
    // Half-compressible data: a text-like alphabet driven by an LCG.
    let mut x: u64 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b"abcdefghij klmnop\n"[(x >> 59) as usize % 18]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_round_trip_with_hash_and_counts() {
    let d = tempfile::tempdir().unwrap();
    let data = pseudo_random(3 * CHUNK + 123);
    let chunks = data.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let path = d.path().join("x.zst");
    let pb = ProgressBar::hidden();
    let stats = compress_to_file(
        stream_of(chunks),
        path.clone(),
        Codec::Zstd {
            level: 3,
            threads: 2,
            min_level: 1,
        },
        &pb,
    )
    .await
    .unwrap();
    assert_eq!(stats.raw_bytes, data.len() as u64);
    assert_eq!(pb.position(), data.len() as u64);
    assert_eq!(stats.head, data[..512]);
    let (sha, size) = sha256_file(&path, None).unwrap();
    assert_eq!(sha, stats.sha256);
    assert_eq!(size, stats.compressed_bytes);
    assert!(stats.compressed_bytes < stats.raw_bytes * 3 / 4);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (mut s, h) = zstd_file_stream(path.clone(), stats.sha256.clone(), "t".into(), None);
    let mut back = Vec::new();
    while let Some(c) = s.next().await {
        back.extend(c.unwrap());
    }
    h.await.unwrap().unwrap();
    assert_eq!(back, data);

    // A byte flipped since: the frame checksum (or the block structure) catches it, the
    // stream ends in an error and the handle says why.
    assert!(frame_has_checksum(&path).unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let damaged = d.path().join("damaged.zst");
    std::fs::write(&damaged, &bytes).unwrap();
    let (s, h) = zstd_file_stream(damaged, stats.sha256.clone(), "t".into(), None);
    assert!(drain(s).await.1, "damage must end the stream in an error");
    assert!(matches!(
        h.await.unwrap(),
        Err(SnapshotError::Corrupt { .. })
    ));
}

async fn drain(mut s: ByteStream) -> (Vec<u8>, bool) {
    let mut back = Vec::new();
    let mut saw_err = false;
    while let Some(c) = s.next().await {
        match c {
            Ok(c) => back.extend_from_slice(&c),
            Err(_) => saw_err = true,
        }
    }
    (back, saw_err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_without_checksum_are_checked_by_sha256() {
    let d = tempfile::tempdir().unwrap();
    let data = pseudo_random(CHUNK + 99);
    let path = d.path().join("plain.zst");
    let mut enc = zstd::stream::write::Encoder::new(File::create(&path).unwrap(), 1).unwrap();
    enc.include_checksum(false).unwrap();
    enc.write_all(&data).unwrap();
    enc.finish().unwrap();
    assert!(!frame_has_checksum(&path).unwrap());
    let (sha, _) = sha256_file(&path, None).unwrap();

    let (s, h) = zstd_file_stream(path.clone(), sha, "t".into(), None);
    let (back, err) = drain(s).await;
    h.await.unwrap().unwrap();
    assert!(!err);
    assert_eq!(back, data);

    // Wrong expected hash: the stream ends in an error and the handle says why.
    let (s, h) = zstd_file_stream(path, "00".repeat(32), "t".into(), None);
    assert!(drain(s).await.1);
    assert!(matches!(
        h.await.unwrap(),
        Err(SnapshotError::ChecksumMismatch { .. })
    ));
}

#[test]
fn small_machines_compress_at_the_fast_level() {
    assert!(matches!(
        Codec::snapshot_for_cores(2),
        Codec::Zstd {
            level: 1,
            min_level: 1,
            threads: 2
        }
    ));
    assert!(matches!(
        Codec::snapshot_for_cores(8),
        Codec::Zstd {
            level: 3,
            min_level: 1,
            threads: 8
        }
    ));
}

#[test]
fn adaptive_level_steps_down_when_busy_and_up_when_idle() {
    let mut a = Adapt::new(3, 1);
    let seen: Vec<i32> = (0..4).filter_map(|_| a.decide(0.0)).collect();
    assert_eq!(seen, vec![2, 1], "never below the floor");
    let up: Vec<i32> = (0..4).filter_map(|_| a.decide(0.9)).collect();
    assert_eq!(up, vec![2, 3], "never above the configured level");
    assert_eq!(a.lowest, 1);
    assert!((0..4).all(|_| a.decide(0.15).is_none()), "in between: keep");
    // Decisions come every ADAPT_EVERY chunks.
    let mut b = Adapt::new(3, 1);
    let changes = (0..ADAPT_EVERY * 2).filter_map(|_| b.chunk_done()).count();
    assert_eq!(changes, 2, "no waiting at all: busy, step down twice");
    // Fixed level: never changes.
    let mut c = Adapt::new(3, 3);
    assert!((0..ADAPT_EVERY * 4).all(|_| c.chunk_done().is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_error_is_reported_not_committed() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("x.zst");
    let chunks = vec![
        Ok(vec![1u8; 100]),
        Err(EngineError::api(
            "download archive",
            "c1",
            "connection reset",
        )),
    ];
    let err = compress_to_file(
        stream_of(chunks),
        path,
        fixed_zstd(),
        &ProgressBar::hidden(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SnapshotError::Engine(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let data = pseudo_random(CHUNK + 7);
    let path = d.path().join("x.gz");
    let stats = compress_to_file(
        stream_of(vec![Ok(data.clone())]),
        path.clone(),
        Codec::Gzip { level: 6 },
        &ProgressBar::hidden(),
    )
    .await
    .unwrap();
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(File::open(&path).unwrap())
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, data);
    assert_eq!(sha256_file(&path, None).unwrap().0, stats.sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_file_is_not_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("x.zst");
    std::fs::write(&path, b"keep").unwrap();
    let err = compress_to_file(
        stream_of(vec![Ok(vec![0; 10])]),
        path.clone(),
        fixed_zstd(),
        &ProgressBar::hidden(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("x.zst"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep");
}
