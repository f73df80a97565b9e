//! Aligned text tables for listings on stdout.

/// Pads every column to its widest cell (two spaces between columns, no trailing spaces).
pub fn align<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(widths.iter())
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align() {
        let rows = [
            ["A".to_string(), "BB".to_string()],
            ["ccc".to_string(), "d".to_string()],
        ];
        assert_eq!(super::align(&rows), vec!["A    BB", "ccc  d"]);
    }
}
