//! The one CSV line splitter of the importers (device registry, failure and maintenance
//! history). Pure text work, no I/O.

/// Splits one CSV line into fields (RFC 4180 quotes; `""` is a quote inside quotes).
/// Fields cannot span lines: an unclosed quote is an error.
pub fn split_line(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err("a quoted field is not closed (fields cannot span lines)".into());
    }
    out.push(field);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::split_line;

    #[test]
    fn quoted_fields_keep_commas_and_quotes() {
        assert_eq!(
            split_line("a,\"b, c\",\"say \"\"hi\"\"\",\"\"").expect("fields"),
            vec!["a", "b, c", r#"say "hi""#, ""]
        );
        assert_eq!(
            split_line(r#"OC5-1,"1 Main St, Apt ""B""",north"#).expect("valid"),
            ["OC5-1", r#"1 Main St, Apt "B""#, "north"]
        );
        assert!(split_line(r#"a,"open"#).is_err());
    }
}
