//! A minimal RFC 4180 writer: CRLF line ends; a field is quoted (with inner quotes
//! doubled) when it holds a comma, a quote, CR or LF, or starts or ends with a space.

/// One CSV document being written row by row.
#[derive(Default)]
pub(crate) struct Csv {
    out: String,
    row_open: bool,
}

impl Csv {
    /// Appends one field to the current row.
    pub(crate) fn field(&mut self, value: &str) {
        if self.row_open {
            self.out.push(',');
        }
        self.row_open = true;
        let needs_quotes = value.contains([',', '"', '\r', '\n'])
            || value.starts_with(' ')
            || value.ends_with(' ');
        if needs_quotes {
            self.out.push('"');
            self.out.push_str(&value.replace('"', "\"\""));
            self.out.push('"');
        } else {
            self.out.push_str(value);
        }
    }

    /// Appends several fields.
    pub(crate) fn fields(&mut self, values: &[&str]) {
        for v in values {
            self.field(v);
        }
    }

    /// Ends the current row.
    pub(crate) fn end_row(&mut self) {
        self.out.push_str("\r\n");
        self.row_open = false;
    }

    /// The document.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::Csv;

    #[test]
    fn quotes_only_what_needs_it() {
        let mut c = Csv::default();
        c.fields(&["a", "b,c", "say \"hi\"", "line\nbreak", ""]);
        c.end_row();
        assert_eq!(
            c.finish(),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"line\nbreak\",\r\n"
        );
    }
}
