//! Pulling images with one progress bar per image (bytes summed over its layers; only on a TTY).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::engine::{Engine, EngineError, PullProgress};
use crate::output::Ui;

/// Per-layer progress summed into one bar.
#[derive(Default)]
pub struct LayerSum {
    layers: BTreeMap<String, (u64, u64)>,
}

impl LayerSum {
    /// Records one progress message; returns (done bytes, total bytes) over the layers seen.
    pub fn update(&mut self, p: &PullProgress) -> (u64, u64) {
        if let (Some((layer, _)), Some(total)) = (p.status.split_once(": "), p.total) {
            let cur = p.current.unwrap_or(0).min(total);
            let e = self.layers.entry(layer.to_string()).or_default();
            *e = (cur.max(e.0), total);
        } else if let Some((layer, status)) = p.status.split_once(": ") {
            // "Pull complete" / "Already exists": the layer is done.
            if status.contains("complete") || status.contains("exists") {
                if let Some(e) = self.layers.get_mut(layer) {
                    e.0 = e.1;
                }
            }
        }
        self.layers
            .values()
            .fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt))
    }
}

/// Pulls `images` one after the other. A failure stops the pulls unless `keep_going`; returns
/// the images that failed (with `keep_going`).
pub async fn pull_all(
    engine: &dyn Engine,
    images: &[String],
    ui: &Ui,
    keep_going: bool,
) -> anyhow::Result<Vec<String>> {
    let mut failed = Vec::new();
    for image in images {
        let pb = ui.bytes_progress(format!("pulling {image}"), Some(0));
        let sum = Arc::new(Mutex::new(LayerSum::default()));
        let (pb2, sum2) = (pb.clone(), sum.clone());
        let progress = move |p: PullProgress| {
            let (cur, total) = sum2.lock().unwrap_or_else(|e| e.into_inner()).update(&p);
            pb2.set_length(total);
            pb2.set_position(cur);
        };
        let r = engine.pull_image(image, &progress).await;
        pb.finish_and_clear();
        match r {
            Ok(()) => ui.success(format!("pulled {image}")),
            Err(e @ EngineError::Unreachable { .. }) => return Err(e.into()),
            Err(e) if keep_going => {
                ui.warn(format!("{image}: {e}"));
                failed.push(image.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(status: &str, cur: Option<u64>, total: Option<u64>) -> PullProgress {
        PullProgress {
            status: status.into(),
            current: cur,
            total,
        }
    }

    #[test]
    fn layers_add_up_and_complete() {
        let mut s = LayerSum::default();
        assert_eq!(
            s.update(&p("a: Downloading", Some(10), Some(100))),
            (10, 100)
        );
        assert_eq!(s.update(&p("b: Downloading", Some(5), Some(50))), (15, 150));
        assert_eq!(s.update(&p("a: Pull complete", None, None)), (105, 150));
        assert_eq!(s.update(&p("Status: Downloaded", None, None)), (105, 150));
    }
}
