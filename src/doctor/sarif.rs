//! SARIF 2.1.0 for code scanning UIs (one run, one rule per finding id).

use std::collections::BTreeMap;

use serde_sarif::sarif;

use super::{ids, Report, Severity};

/// The report as a SARIF 2.1.0 document. Paths are made relative to `base` when below it (code
/// scanning UIs resolve them against the repository root).
pub fn to_sarif(report: &Report, base: &std::path::Path) -> sarif::Sarif {
    let rules: Vec<sarif::ReportingDescriptor> = ids::ALL
        .iter()
        .map(|(id, desc)| {
            sarif::ReportingDescriptor::builder()
                .id(id.to_string())
                .name(id.to_string())
                .short_description(
                    sarif::MultiformatMessageString::builder()
                        .text(desc.to_string())
                        .build(),
                )
                .help_uri(format!(
                    "https://github.com/nodus-dev/nodus/blob/main/README.md#{id}"
                ))
                .build()
        })
        .collect();
    let index: BTreeMap<&str, i64> = ids::ALL
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i as i64))
        .collect();
    let results: Vec<sarif::Result> = report
        .findings
        .iter()
        .map(|f| {
            let level = match f.severity {
                Severity::Error => sarif::ResultLevel::Error,
                Severity::Warning => sarif::ResultLevel::Warning,
                Severity::Info => sarif::ResultLevel::Note,
            };
            let service = if f.service.is_empty() {
                String::new()
            } else {
                format!("{}: ", f.service)
            };
            let message = sarif::Message::builder()
                .text(format!("{service}{} Fix: {}", f.evidence, f.fix))
                .build();
            let locations = match &f.location {
                Some(l) => {
                    let p = std::path::Path::new(&l.file);
                    let rel = p
                        .strip_prefix(base)
                        .map(|r| r.display().to_string())
                        .unwrap_or_else(|_| l.file.clone());
                    vec![sarif::Location::builder()
                        .physical_location(
                            sarif::PhysicalLocation::builder()
                                .artifact_location(
                                    sarif::ArtifactLocation::builder().uri(rel).build(),
                                )
                                .region(sarif::Region::builder().start_line(l.line as i64).build())
                                .build(),
                        )
                        .build()]
                }
                None => vec![],
            };
            sarif::Result::builder()
                .rule_id(f.id.to_string())
                .rule_index(index.get(f.id).copied().unwrap_or(-1))
                .message(message)
                .level(level)
                .locations(locations)
                .build()
        })
        .collect();
    let driver = sarif::ToolComponent::builder()
        .name("nodus doctor")
        .version(env!("CARGO_PKG_VERSION").to_string())
        .information_uri("https://github.com/nodus-dev/nodus".to_string())
        .rules(rules)
        .build();
    let run = sarif::Run::builder()
        .tool(sarif::Tool::builder().driver(driver).build())
        .results(results)
        .build();
    sarif::Sarif::builder()
        .schema("https://json.schemastore.org/sarif-2.1.0.json".to_string())
        .version(sarif::Version::V2_1_0.to_string())
        .runs(vec![run])
        .build()
}
