//! Build args whose name looks secret are never printed: their values are masked in every line of
//! build output and in errors.

/// Name parts that make an arg secret (case-insensitive).
const SECRET_PARTS: &[&str] = &[
    "PASSWORD",
    "PASSWD",
    "PASS",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "CERT",
];

/// True when a build arg's name looks like it holds a secret (`DB_PASSWORD`, `NPM_TOKEN`,
/// `api_key`...).
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_PARTS.iter().any(|p| upper.contains(p))
}

/// Replaces secret values by `****` in text.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so that a value containing another is masked whole.
    values: Vec<String>,
}

impl Masker {
    /// A masker for the values of the secret-looking args among `args`.
    pub fn for_args<'a>(args: impl IntoIterator<Item = (&'a String, &'a String)>) -> Masker {
        let mut values: Vec<String> = args
            .into_iter()
            .filter(|(k, v)| looks_secret(k) && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Masker { values }
    }

    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "****");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for n in [
            "DB_PASSWORD",
            "npm_token",
            "API_KEY",
            "SECRET",
            "GITHUB_AUTH",
        ] {
            assert!(looks_secret(n), "{n}");
        }
        for n in ["VERSION", "NODE_ENV", "TARGET"] {
            assert!(!looks_secret(n), "{n}");
        }
    }

    #[test]
    fn masks_values_of_secret_args_only() {
        let args: Vec<(String, String)> = vec![
            ("DB_PASSWORD".into(), "hunter2".into()),
            ("VERSION".into(), "1.2".into()),
            ("EMPTY_TOKEN".into(), String::new()),
        ];
        let m = Masker::for_args(args.iter().map(|(k, v)| (k, v)));
        assert_eq!(
            m.mask("RUN echo hunter2 version 1.2"),
            "RUN echo **** version 1.2"
        );
    }
}
