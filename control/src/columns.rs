//! Plain-text tables for the terminal (`ctl stats`, `ctl experiment`,
//! `switchyard load`): each column as wide as its widest cell, two spaces
//! between columns, no trailing blanks.

use std::fmt::Write as _;

/// Writes `rows` (the header first) under `indent`.
pub fn write_columns<const N: usize>(out: &mut String, indent: &str, rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|row| row[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{indent}{}", line.join("  ").trim_end());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let mut out = String::new();
        let rows = [["A", "BB"], ["ccc", "d"]].map(|r| r.map(str::to_owned));
        super::write_columns(&mut out, "  ", &rows);
        assert_eq!(out, "  A    BB\n  ccc  d\n");
    }
}
