//! Which images to build: services grouped by the image their `build:` produces, and the
//! needs-a-build decision. Pure.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stack::build::{self, BuildSpec, PullPolicy};
use crate::stack::ComposeFile;

use super::BuildError;

/// `up --build` / `up --no-build` / neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Build when the image is missing or its recorded hash differs (the default).
    #[default]
    Auto,
    /// Build every image (`--build`, `nodus build`).
    Force,
    /// Never build: a missing image is an error (`--no-build`).
    Never,
}

/// One image to build, for one or more services.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The tag of the result.
    pub image: String,
    /// Services that have this `build:` (in stack order).
    pub services: Vec<String>,
    pub spec: BuildSpec,
    /// Build args with bare `KEY` entries resolved from the environment.
    pub args: BTreeMap<String, String>,
    /// The first service's `pull_policy:`.
    pub pull_policy: Option<PullPolicy>,
}

/// The build jobs for `services` (every service with `build:` among them), one per image. Two
/// services producing the same image from different `build:` sections is an error.
pub fn jobs(
    project: &str,
    compose: &ComposeFile,
    services: &[String],
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Job>, BuildError> {
    let mut out: Vec<Job> = Vec::new();
    for (name, svc) in &compose.services {
        if !services.contains(name) {
            continue;
        }
        let invalid = |message: String| BuildError::Invalid {
            service: name.clone(),
            message,
        };
        let Some(spec) = build::build_spec(svc).map_err(invalid)? else {
            continue;
        };
        if spec.is_remote() {
            return Err(invalid(format!(
                "build context `{}` is a URL; nodus builds local contexts only (build it with docker compose -f .nodus/compose.yaml build {name})",
                spec.context
            )));
        }
        let pull_policy = build::pull_policy(svc).map_err(invalid)?;
        let image =
            build::image_name(project, name, svc).expect("a service with build: has an image name");
        let args: BTreeMap<String, String> = spec.resolved_args(lookup_env).into_iter().collect();
        match out.iter_mut().find(|j| j.image == image) {
            Some(j) if j.spec == spec && j.args == args => j.services.push(name.clone()),
            Some(j) => {
                return Err(invalid(format!(
                    "builds image {image} like service {} does, from a different `build:` section; give one of them another `image:`",
                    j.services[0]
                )))
            }
            None => out.push(Job {
                image,
                services: vec![name.clone()],
                spec,
                args,
                pull_policy,
            }),
        }
    }
    Ok(out)
}

/// Why an image is (not) built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Not present locally.
    Missing,
    /// Present, built from another context/Dockerfile/args (or not by nodus).
    Changed,
    /// `--build`, `nodus build`, `pull_policy: build|always`.
    Forced,
    /// Present and up to date (or `pull_policy: missing` and present): not built.
    UpToDate,
    /// Present, not checked: `--no-build` or `pull_policy: never`.
    Kept,
    /// Not present and building is not allowed: an error for `up`.
    MissingNotAllowed,
}

impl Decision {
    pub fn builds(self) -> bool {
        matches!(
            self,
            Decision::Missing | Decision::Changed | Decision::Forced
        )
    }

    /// For people: "context changed", "image missing"...
    pub fn describe(self) -> &'static str {
        match self {
            Decision::Missing => "image missing",
            Decision::Changed => "context, Dockerfile or args changed",
            Decision::Forced => "build requested",
            Decision::UpToDate => "up to date",
            Decision::Kept => "present (not checked)",
            Decision::MissingNotAllowed => "image missing, building not allowed",
        }
    }
}

/// Decides for one job. `present_hash`: None = image missing; Some(label) = present with its
/// hash label (empty when it has none).
pub fn decide(
    policy: Policy,
    pull_policy: Option<PullPolicy>,
    present_hash: Option<&str>,
    hash: &str,
) -> Decision {
    let present = present_hash.is_some();
    if policy == Policy::Never {
        return if present {
            Decision::Kept
        } else {
            Decision::MissingNotAllowed
        };
    }
    if policy == Policy::Force {
        return Decision::Forced;
    }
    match (pull_policy, present_hash) {
        (Some(PullPolicy::Build | PullPolicy::Always), _) => Decision::Forced,
        (Some(PullPolicy::Never), Some(_)) => Decision::Kept,
        (Some(PullPolicy::Never), None) => Decision::MissingNotAllowed,
        (Some(PullPolicy::Missing), Some(_)) => Decision::UpToDate,
        (_, None) => Decision::Missing,
        (_, Some(h)) if h == hash => Decision::UpToDate,
        (_, Some(_)) => Decision::Changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(yaml: &str) -> ComposeFile {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn all(c: &ComposeFile) -> Vec<String> {
        c.services.keys().cloned().collect()
    }

    #[test]
    fn shared_build_is_one_job() {
        let c = compose(concat!(
            "services:\n",
            "  api: {image: app:dev, build: {context: /c, args: [TOKEN]}}\n",
            "  worker: {image: app:dev, build: {context: /c, args: [TOKEN]}}\n",
            "  web: {build: /w}\n",
            "  db: {image: postgres:16}\n",
        ));
        let jobs = jobs("p", &c, &all(&c), &|k| (k == "TOKEN").then(|| "t".into())).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].image, "app:dev");
        assert_eq!(jobs[0].services, vec!["api", "worker"]);
        assert_eq!(jobs[0].args["TOKEN"], "t");
        assert_eq!(jobs[1].image, "p-web");
        // Only the selected services.
        let some = jobs_for(&c, &["db"]);
        assert!(some.is_empty());
    }

    fn jobs_for(c: &ComposeFile, names: &[&str]) -> Vec<Job> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        jobs("p", c, &names, &|_| None).unwrap()
    }

    #[test]
    fn same_image_different_builds_is_an_error() {
        let c = compose("services:\n  a: {image: x, build: /a}\n  b: {image: x, build: /b}\n");
        let e = jobs("p", &c, &all(&c), &|_| None).unwrap_err();
        assert!(e.to_string().contains("like service a"), "{e}");
        let c = compose("services:\n  a: {build: 'https://github.com/x/y.git'}\n");
        let e = jobs("p", &c, &all(&c), &|_| None).unwrap_err();
        assert!(e.to_string().contains("is a URL"), "{e}");
    }

    #[test]
    fn decisions() {
        use Decision::*;
        let d = |p, pp, present: Option<&str>| decide(p, pp, present, "h1");
        assert_eq!(d(Policy::Auto, None, None), Missing);
        assert_eq!(d(Policy::Auto, None, Some("h1")), UpToDate);
        assert_eq!(d(Policy::Auto, None, Some("h0")), Changed);
        assert_eq!(d(Policy::Auto, None, Some("")), Changed);
        assert_eq!(d(Policy::Force, None, Some("h1")), Forced);
        assert_eq!(d(Policy::Never, None, Some("h0")), Kept);
        assert_eq!(d(Policy::Never, None, None), MissingNotAllowed);
        assert_eq!(
            d(Policy::Never, Some(PullPolicy::Build), None),
            MissingNotAllowed
        );
        assert_eq!(d(Policy::Auto, Some(PullPolicy::Build), Some("h1")), Forced);
        assert_eq!(
            d(Policy::Auto, Some(PullPolicy::Never), None),
            MissingNotAllowed
        );
        assert_eq!(d(Policy::Auto, Some(PullPolicy::Never), Some("h0")), Kept);
        assert_eq!(
            d(Policy::Auto, Some(PullPolicy::Missing), Some("h0")),
            UpToDate
        );
        assert_eq!(d(Policy::Auto, Some(PullPolicy::Missing), None), Missing);
        assert!(Missing.builds() && Changed.builds() && Forced.builds());
        assert!(!UpToDate.builds() && !Kept.builds() && !MissingNotAllowed.builds());
    }
}
