//! Running builds: hash each context, decide, build what is needed with progress output.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use super::context::{self, ContextSpec};
use super::mask::Masker;
use super::plan::{self, Decision, Job};
use super::{BuildError, Options, Outcome, FAILED_TAIL, HASH_LABEL};
use crate::engine::{BuildEvent, BuildOptions, Engine, EngineError};
use crate::labels;
use crate::output::Ui;
use crate::stack::{ComposeFile, Env};

/// Builds the images of a stack's `build:` services.
pub struct Builder<'a> {
    pub engine: &'a dyn Engine,
    pub project: &'a str,
    pub compose: &'a ComposeFile,
    /// The project's environment (bare `KEY` build args), over the process environment.
    pub env: &'a Env,
    pub ui: &'a Ui,
}

impl<'a> Builder<'a> {
    fn lookup(&self, k: &str) -> Option<String> {
        self.env.get(k).cloned().or_else(|| std::env::var(k).ok())
    }

    /// The build jobs of `services`.
    pub fn jobs(&self, services: &[String]) -> Result<Vec<Job>, BuildError> {
        plan::jobs(self.project, self.compose, services, &|k| self.lookup(k))
    }

    /// Hashes every context and decides, without building (`--dry-run`, and the first half of
    /// [`Builder::run`]).
    pub async fn plan(
        &self,
        services: &[String],
        opts: Options,
    ) -> Result<Vec<(Job, Outcome)>, BuildError> {
        let mut out = Vec::new();
        for job in self.jobs(services)? {
            let spec = context_spec(&job);
            let started = Instant::now();
            // `--no-build` never reads the context (it may not even be there).
            let (digest, hash) = if opts.policy == plan::Policy::Never {
                let none = context::ContextDigest {
                    hash: String::new(),
                    files: 0,
                    bytes: 0,
                };
                (none, String::new())
            } else {
                let digest = tokio::task::spawn_blocking(move || context::digest(&spec))
                    .await
                    .map_err(|e| BuildError::Invalid {
                        service: job.services[0].clone(),
                        message: format!("hashing the build context failed: {e}"),
                    })?
                    .map_err(|source| BuildError::Context {
                        service: job.services[0].clone(),
                        source,
                    })?;
                let hash = build_hash(&job, &digest);
                (digest, hash)
            };
            let hash_secs = started.elapsed().as_secs_f64();
            let present = self.engine.inspect_image(&job.image).await?;
            let present_hash = present
                .as_ref()
                .map(|i| i.labels.get(HASH_LABEL).cloned().unwrap_or_default());
            let decision =
                plan::decide(opts.policy, job.pull_policy, present_hash.as_deref(), &hash);
            let outcome = Outcome {
                image: job.image.clone(),
                services: job.services.clone(),
                context: job.spec.context.clone(),
                dockerfile: if job.spec.dockerfile_inline.is_some() {
                    "(dockerfile_inline)".into()
                } else {
                    job.spec.dockerfile_name().to_string()
                },
                files: digest.files,
                bytes: digest.bytes,
                hash,
                decision,
                needed: decision.builds(),
                built: false,
                image_id: present.map(|i| i.id),
                hash_secs,
                build_secs: 0.0,
            };
            out.push((job, outcome));
        }
        Ok(out)
    }

    /// Builds what needs building among `services`' images. Every check (contexts readable,
    /// images allowed to be missing) happens before the first build.
    pub async fn run(
        &self,
        services: &[String],
        opts: Options,
    ) -> Result<Vec<Outcome>, BuildError> {
        let planned = self.plan(services, opts).await?;
        if let Some((job, _)) = planned
            .iter()
            .find(|(_, o)| o.decision == Decision::MissingNotAllowed)
        {
            return Err(BuildError::MissingNotAllowed {
                service: job.services[0].clone(),
                image: job.image.clone(),
                why: if opts.policy == plan::Policy::Never {
                    "--no-build"
                } else {
                    "`pull_policy: never`"
                },
            });
        }
        let mut out = Vec::new();
        for (job, mut outcome) in planned {
            if outcome.needed {
                let started = Instant::now();
                let id = self.build_one(&job, &outcome, opts).await?;
                outcome.image_id = Some(id);
                outcome.built = true;
                outcome.build_secs = started.elapsed().as_secs_f64();
            } else {
                self.ui.detail(format!(
                    "image {} ({}): {}",
                    job.image,
                    job.services.join(", "),
                    outcome.decision.describe()
                ));
            }
            out.push(outcome);
        }
        Ok(out)
    }

    async fn build_one(
        &self,
        job: &Job,
        outcome: &Outcome,
        opts: Options,
    ) -> Result<String, BuildError> {
        let ui = self.ui;
        let spec = context_spec(job);
        let (dockerfile, stream) =
            context::tar_stream(&spec).map_err(|source| BuildError::Context {
                service: job.services[0].clone(),
                source,
            })?;
        let mut labels = labels::base(self.project);
        labels.extend(job.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert(HASH_LABEL.into(), outcome.hash.clone());
        if job.spec.extra_hosts.len() > 1 {
            ui.warn(format!(
                "service {}: only the first of build.extra_hosts ({}) is applied by nodus' builder",
                job.services[0], job.spec.extra_hosts[0]
            ));
        }
        let bo = BuildOptions {
            tag: job.image.clone(),
            dockerfile,
            args: job.args.clone(),
            target: job.spec.target.clone(),
            labels,
            network: job.spec.network.clone(),
            extra_hosts: job.spec.extra_hosts.clone(),
            shm_size: job.spec.shm_size,
            cache_from: job.spec.cache_from.clone(),
            no_cache: job.spec.no_cache || opts.no_cache,
            pull: job.spec.pull || opts.pull,
        };
        let masker = Masker::for_args(job.args.iter());
        let services = job.services.join(", ");
        ui.status(format!(
            "building image {} for {services} ({})",
            job.image,
            outcome.decision.describe()
        ));
        let pb = ui.spinner(format!("building {}", job.image));
        let state = Mutex::new(Progress::default());
        let tty = ui.stderr_tty && !ui.quiet && !ui.json;
        let verbose = ui.verbose > 0 && !ui.quiet;
        let image = job.image.clone();
        let on_event = |ev: BuildEvent| {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            match ev {
                BuildEvent::Step(s) => {
                    let s = masker.mask(&s);
                    st.lines.clear();
                    if is_own_label_step(&s) {
                        // The classic builder's steps for the `labels` we pass: not the user's.
                    } else if tty {
                        pb.set_message(format!("{image}: {s}"));
                        if verbose {
                            pb.println(&s);
                        }
                    } else {
                        ui.status(format!("  {s}"));
                    }
                    st.step = Some(s);
                }
                BuildEvent::Output(l) => {
                    let l = masker.mask(&l);
                    if verbose {
                        if tty {
                            pb.println(format!("    {l}"));
                        } else {
                            ui.detail(format!("    {l}"));
                        }
                    }
                    if st.lines.len() == FAILED_TAIL {
                        st.lines.pop_front();
                    }
                    st.lines.push_back(l);
                }
            }
        };
        let started = Instant::now();
        let result = self
            .engine
            .build_image(&bo, Box::pin(stream), &on_event)
            .await;
        pb.finish_and_clear();
        let st = state.into_inner().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(id) => {
                ui.success(format!(
                    "built image {} for {services} ({:.1}s)",
                    job.image,
                    started.elapsed().as_secs_f64()
                ));
                Ok(id)
            }
            Err(EngineError::BuildFailed { message, .. }) => Err(BuildError::Failed {
                image: job.image.clone(),
                services: job.services.clone(),
                step: st
                    .step
                    .as_deref()
                    .map(describe_step)
                    .unwrap_or_else(|| "the start of the build".into()),
                message: masker.mask(message.trim()),
                last_lines: st
                    .lines
                    .into_iter()
                    .filter(|l| !is_bookkeeping(l))
                    .collect(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

#[derive(Default)]
struct Progress {
    step: Option<String>,
    lines: VecDeque<String>,
}

/// "Step 3/4 : RUN make" → "step 3/4 `RUN make`".
fn describe_step(s: &str) -> String {
    match s.strip_prefix("Step ").and_then(|r| r.split_once(" : ")) {
        Some((n, instr)) => format!("step {n} `{instr}`"),
        None => s.to_string(),
    }
}

/// The classic builder's own lines (" ---> Running in abc"), not the step's output.
fn is_bookkeeping(l: &str) -> bool {
    l.trim_start().starts_with("--->") || l.starts_with("Removing intermediate container")
}

/// "Step 9/10 : LABEL io.nodus.build.hash=…": a step the builder adds for our own labels.
fn is_own_label_step(s: &str) -> bool {
    s.split_once(" : LABEL ")
        .is_some_and(|(_, l)| l.starts_with("io.nodus.") || l.starts_with("com.docker.compose."))
}

fn context_spec(job: &Job) -> ContextSpec {
    let mut spec = ContextSpec::new(&job.spec.context);
    if let Some(d) = &job.spec.dockerfile {
        spec.dockerfile = d.clone();
    }
    spec.dockerfile_inline = job.spec.dockerfile_inline.clone();
    spec
}

/// The build hash: context as sent + Dockerfile (in the digest), args, target, and the build
/// labels (as pseudo-args no real `ARG` name can collide with).
fn build_hash(job: &Job, digest: &context::ContextDigest) -> String {
    let mut pairs: Vec<(String, String)> = job
        .args
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.extend(
        job.spec
            .labels
            .iter()
            .map(|(k, v)| (format!("\u{0}label:{k}"), v.clone())),
    );
    context::digest_with(digest, &pairs, job.spec.target.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_described() {
        assert_eq!(
            describe_step("Step 3/4 : RUN false"),
            "step 3/4 `RUN false`"
        );
        assert!(is_bookkeeping(" ---> Running in 1234"));
        assert!(is_own_label_step(
            "Step 9/10 : LABEL io.nodus.build.hash=blake3:00"
        ));
        assert!(!is_own_label_step("Step 2/10 : LABEL maintainer=me"));
        assert!(!is_bookkeeping("make: *** [all] Error 1"));
    }
}
