//! Helpers for the chart tests: a small well-formedness check of the produced SVG and
//! attribute extraction, so tests can assert on positions and counts.

/// Panics unless `svg` is a single well-formed element tree with a `<title>` and a
/// `<desc>`, `role="img"`, a `viewBox`, `width="100%"`, and no `NaN`/`inf`.
#[track_caller]
pub fn assert_valid(svg: &str) {
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.ends_with("</svg>"));
    for needle in [
        "role=\"img\"",
        "viewBox=\"0 0 ",
        "width=\"100%\"",
        "<title>",
        "<desc>",
    ] {
        assert!(svg.contains(needle), "missing {needle}");
    }
    assert!(!svg.contains("NaN"), "NaN in output");
    assert!(!svg.contains("inf"), "inf in output");
    assert!(!svg.contains("<script"), "script in output");
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    let mut roots = 0;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        assert!(!text.contains('>'), "stray '>' in text: {text}");
        let after = &rest[i + 1..];
        let end = after.find('>').expect("unclosed tag");
        let tag = &after[..end];
        assert!(!tag.contains('<'), "'<' inside tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().expect("closing tag without opening");
            assert_eq!(open, name, "mismatched </{name}>");
        } else {
            let name = tag.split([' ', '/']).next().expect("tag name");
            assert!(!name.is_empty(), "empty tag name");
            if stack.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
            // attributes: quotes balanced
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
        }
        rest = &after[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert_eq!(roots, 1, "more than one root element");
}

/// The start tags (text between `<` and `>`) that begin with `prefix` (e.g.
/// `circle class="point failure"`).
pub fn tags<'a>(svg: &'a str, prefix: &str) -> Vec<&'a str> {
    let pat = format!("<{prefix}");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = svg[from..].find(&pat) {
        let start = from + i + 1;
        let end = start + svg[start..].find('>').expect("tag end");
        out.push(&svg[start..end]);
        from = end;
    }
    out
}

/// The value of attribute `name` in a start tag.
pub fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let i = tag.find(&pat)? + pat.len();
    let j = tag[i..].find('"')?;
    Some(&tag[i..i + j])
}

/// The attribute `name` of a start tag, as a number.
#[track_caller]
pub fn num(tag: &str, name: &str) -> f64 {
    attr(tag, name)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name} in {tag}: {e}"))
}

/// The texts of `<text …>…</text>` elements (escaped as in the SVG).
pub fn texts(svg: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = svg[from..].find("<text") {
        let start = from + i;
        let open_end = start + svg[start..].find('>').expect("tag end") + 1;
        let close = open_end + svg[open_end..].find("</text>").expect("text end");
        out.push(&svg[open_end..close]);
        from = close;
    }
    out
}

/// The points of a path's `d` attribute as (x, y) pairs, subpaths concatenated
/// (`M`/`L` pairs; the `h0` of single-point subpaths and `Z` are skipped).
pub fn path_points(d: &str) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut cmd = ' ';
    let mut pending: Vec<f64> = Vec::new();
    let mut token = String::new();
    let flush =
        |token: &mut String, cmd: char, pending: &mut Vec<f64>, out: &mut Vec<(f64, f64)>| {
            if token.is_empty() {
                return;
            }
            let v: f64 = token.parse().expect("number in path");
            token.clear();
            if cmd == 'h' {
                return;
            }
            pending.push(v);
            if pending.len() == 2 {
                out.push((pending[0], pending[1]));
                pending.clear();
            }
        };
    for c in d.chars() {
        if c.is_ascii_alphabetic() {
            flush(&mut token, cmd, &mut pending, &mut out);
            cmd = c;
        } else if c == ' ' || c == ',' {
            flush(&mut token, cmd, &mut pending, &mut out);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, cmd, &mut pending, &mut out);
    out
}
