//! Tests of the watch loop's own helpers.

use super::*;

#[test]
fn merged_losses_keep_every_restore_command_and_fix_once() {
    let loss = |s: &str, cmd: Option<&str>, fix: Option<&str>| DataLossDetected {
        summary: s.into(),
        restore_command: cmd.map(Into::into),
        fix: fix.map(Into::into),
    };
    let m = merge_losses(vec![
        loss(
            "db: 2 tables missing",
            Some("nodus snapshot restore db"),
            None,
        ),
        loss("cache: keys gone", None, Some("run with `-p old`")),
        loss(
            "db: 1 table missing",
            Some("nodus snapshot restore db"),
            Some("run with `-p old`"),
        ),
    ]);
    assert_eq!(
        m.summary,
        "db: 2 tables missing; cache: keys gone; db: 1 table missing"
    );
    assert_eq!(
        m.restore_command.as_deref(),
        Some("nodus snapshot restore db")
    );
    assert_eq!(m.fix.as_deref(), Some("run with `-p old`"));
    let none = merge_losses(vec![loss("x", None, None)]);
    assert_eq!((none.restore_command, none.fix), (None, None));
}
