//! CSV in one place: one line of RFC 4180 cells (quotes, `""` for a quote, no embedded
//! newline), for every CSV the project reads (hourly intensities, PUE/WUE series,
//! CodeCarbon and nvidia-smi imports).

/// Splits one CSV line (RFC 4180 quoting within a line: `"a,b"`, `""` for a quote).
pub fn split_line(line: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.trim().is_empty() => {
                cell.clear();
                in_quotes = true;
            }
            (false, ',') => cells.push(std::mem::take(&mut cell)),
            (false, c) => cell.push(c),
        }
    }
    if in_quotes {
        return Err("a quoted cell is not closed; end it with '\"' on the same line".to_owned());
    }
    cells.push(cell);
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(
            split_line(r#"a,"b,c","d ""q""",e"#),
            Ok(vec![
                "a".to_owned(),
                "b,c".to_owned(),
                r#"d "q""#.to_owned(),
                "e".to_owned()
            ])
        );
        assert!(split_line(r#"a,"b"#).is_err());
        assert_eq!(split_line(""), Ok(vec![String::new()]));
    }
}
