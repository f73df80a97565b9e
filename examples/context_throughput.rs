//! Build-context throughput: nodus' context digest and tar stream against `tar -c . | wc -c`
//! on the same directory, warm page cache, medians of a few runs.
//!
//!     cargo run --example context_throughput            # 20 000 small files in a temp dir
//!     cargo run --example context_throughput -- DIR     # an existing context (Dockerfile needed)
//!
//! Env: RUNS=5 (runs of each, alternating; medians), FILES=20000.
//! Prints `key=value` lines (for scripts/bench-build.sh) and a summary on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use futures_util::StreamExt;
use nodus::build::context::{digest, tar_stream, ContextSpec};

fn main() {
    let runs: usize = env_num("RUNS", 5);
    let files: usize = env_num("FILES", 20_000);
    let tmp;
    let dir: PathBuf = match std::env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("temp dir");
            make_context(tmp.path(), files);
            tmp.path().to_path_buf()
        }
    };
    let spec = ContextSpec::new(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // Warm the cache once with each.
    let d = digest(&spec).expect("digest");
    let tar_bytes = rt.block_on(drain(&spec));
    raw_tar(&dir);

    let (mut t_digest, mut t_stream, mut t_raw) = (Vec::new(), Vec::new(), Vec::new());
    let (mut c_digest, mut c_stream, mut c_raw) = (Vec::new(), Vec::new(), Vec::new());
    let mut raw_bytes = 0;
    for _ in 0..runs {
        let (t, c) = (Instant::now(), cpu(libc::RUSAGE_SELF));
        let again = digest(&spec).expect("digest");
        t_digest.push(t.elapsed().as_secs_f64());
        c_digest.push(cpu(libc::RUSAGE_SELF) - c);
        assert_eq!(again, d, "the digest is stable");

        let (t, c) = (Instant::now(), cpu(libc::RUSAGE_SELF));
        let n = rt.block_on(drain(&spec));
        t_stream.push(t.elapsed().as_secs_f64());
        c_stream.push(cpu(libc::RUSAGE_SELF) - c);
        assert_eq!(n, tar_bytes);

        let (t, c) = (Instant::now(), cpu(libc::RUSAGE_CHILDREN));
        raw_bytes = raw_tar(&dir);
        t_raw.push(t.elapsed().as_secs_f64());
        c_raw.push(cpu(libc::RUSAGE_CHILDREN) - c);
    }
    let (md, ms, mr) = (
        median(&mut t_digest),
        median(&mut t_stream),
        median(&mut t_raw),
    );
    let (cd, cs, cr) = (
        median(&mut c_digest),
        median(&mut c_stream),
        median(&mut c_raw),
    );
    let mib = |b: u64, s: f64| b as f64 / 1048576.0 / s.max(1e-9);
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "entries={}", d.files);
    let _ = writeln!(out, "content_bytes={}", d.bytes);
    let _ = writeln!(out, "digest_s={md:.4}");
    let _ = writeln!(out, "stream_s={ms:.4}");
    let _ = writeln!(out, "stream_bytes={tar_bytes}");
    let _ = writeln!(out, "raw_tar_s={mr:.4}");
    let _ = writeln!(out, "raw_tar_bytes={raw_bytes}");
    let _ = writeln!(out, "digest_cpu_s={cd:.4}");
    let _ = writeln!(out, "stream_cpu_s={cs:.4}");
    let _ = writeln!(out, "raw_tar_cpu_s={cr:.4}");
    eprintln!(
        "context: {} entries, {:.1} MiB of content; medians of {runs} warm runs\n  \
         nodus digest:        {:>7.3} s  {:>7.1} MiB/s  {:>8.0} entries/s  cpu {:.3} s\n  \
         nodus tar stream:    {:>7.3} s  {:>7.1} MiB/s  cpu {:.3} s  ({} bytes of tar)\n  \
         tar -c . | wc -c:    {:>7.3} s  {:>7.1} MiB/s  cpu {:.3} s  ({} bytes of tar)\n  \
         wall time / raw tar: digest {:.2}x, stream {:.2}x",
        d.files,
        d.bytes as f64 / 1048576.0,
        md,
        mib(d.bytes, md),
        d.files as f64 / md.max(1e-9),
        cd,
        ms,
        mib(tar_bytes, ms),
        cs,
        tar_bytes,
        mr,
        mib(raw_bytes, mr),
        cr,
        raw_bytes,
        md / mr.max(1e-9),
        ms / mr.max(1e-9),
    );
}

/// Drains the tar stream, counting bytes.
async fn drain(spec: &ContextSpec) -> u64 {
    let (_, mut stream) = tar_stream(spec).expect("tar stream");
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        n += chunk.expect("chunk").len() as u64;
    }
    n
}

/// `tar -c . | wc -c` in `dir`: the byte count.
fn raw_tar(dir: &Path) -> u64 {
    let out = Command::new("sh")
        .args(["-c", "tar -c . | wc -c"])
        .current_dir(dir)
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("wc -c output")
}

/// `files` small files (0.5–2 KiB of varied bytes) in directories of 100, and a Dockerfile.
fn make_context(dir: &Path, files: usize) {
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY . /app\n").unwrap();
    std::fs::write(dir.join(".dockerignore"), "*.log\n").unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..files {
        let sub = dir.join(format!("pkg{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub).unwrap();
        }
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = 512 + (state >> 33) as usize % 1536;
        let body: Vec<u8> = (0..len)
            .map(|k| b"abcdefghijklmnopqrstuvwxyz0123456789 \n"[(k * 7 + (state as usize)) % 38])
            .collect();
        std::fs::write(sub.join(format!("mod{i:05}.py")), body).unwrap();
    }
}

/// User + system CPU seconds of this process (all threads) or of its waited-for children.
fn cpu(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
