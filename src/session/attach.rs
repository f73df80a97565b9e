//! Pumping an attached session: local stdin → the process, its output → local stdout/stderr, the
//! terminal in raw mode and resized with the window when a TTY is attached.

use std::io::{Read, Write};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::tty;
use crate::engine::{Attached, Engine, OutputKind};

/// What to resize when the local window changes.
#[derive(Debug, Clone, Copy)]
pub enum ResizeTarget<'a> {
    Exec(&'a str),
    Container(&'a str),
}

/// How to run the pump.
#[derive(Debug, Clone, Copy)]
pub struct PumpOptions {
    /// A TTY is attached remotely: the local terminal goes into raw mode.
    pub tty: bool,
    /// Forward local stdin (closing the process' stdin at its end).
    pub stdin: bool,
}

/// Reads local stdin on a plain thread (a blocked read never holds up the runtime's shutdown)
/// and hands the chunks over; an empty chunk means end of input.
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(Vec::new());
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

async fn resize(engine: &dyn Engine, target: ResizeTarget<'_>) {
    let Some((rows, cols)) = tty::size() else {
        return;
    };
    let r = match target {
        ResizeTarget::Exec(id) => engine.resize_exec(id, rows, cols).await,
        ResizeTarget::Container(id) => engine.resize_container(id, rows, cols).await,
    };
    if let Err(e) = r {
        tracing::debug!("resizing the remote TTY: {e}");
    }
}

/// Runs the session until the process' output ends. Output chunks go to stdout (stdout and TTY
/// output) or stderr; a closed local stdout (e.g. `| head`) ends the session quietly.
pub async fn pump(
    engine: &dyn Engine,
    attached: Attached,
    target: ResizeTarget<'_>,
    opts: PumpOptions,
) -> anyhow::Result<()> {
    let Attached {
        output: mut out_stream,
        mut input,
        ..
    } = attached;
    let _raw = if opts.tty {
        resize(engine, target).await;
        tty::RawMode::enable()?
    } else {
        None
    };
    let mut winch = if opts.tty {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };

    // stdin → the process, in its own task so a slow reader never blocks the output.
    let feeder = if opts.stdin {
        let mut rx = stdin_reader();
        Some(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if chunk.is_empty() {
                    break;
                }
                if input.write_all(&chunk).await.is_err() || input.flush().await.is_err() {
                    return;
                }
            }
            // End of local input: close the process' stdin.
            let _ = input.shutdown().await;
        }))
    } else {
        drop(input);
        None
    };

    let result = loop {
        let item = tokio::select! {
            item = out_stream.next() => item,
            Some(()) = async {
                match winch.as_mut() {
                    Some(w) => w.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                resize(engine, target).await;
                continue;
            }
        };
        let Some(item) = item else { break Ok(()) };
        let chunk = match item {
            Ok(c) => c,
            Err(e) => break Err(e.into()),
        };
        let written = match chunk.kind {
            OutputKind::Stdout | OutputKind::Console => {
                let mut o = std::io::stdout().lock();
                o.write_all(&chunk.bytes).and_then(|()| o.flush())
            }
            OutputKind::Stderr => {
                let mut o = std::io::stderr().lock();
                o.write_all(&chunk.bytes).and_then(|()| o.flush())
            }
        };
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break Ok(());
            }
            break Err(e.into());
        }
    };
    if let Some(f) = feeder {
        f.abort();
    }
    result
}
