//! Property test ("fuzz") of the configuration loader: the shipped example with lines
//! dropped, repeated or replaced, and arbitrary text, never make [`Config::load`] panic
//! and every refusal says "invalid configuration"; a key the loader does not know, in
//! any section, is an error that names it (never a silent default).
//!
//! Cases: `PROPTEST_CASES` (small default for `scripts/test`); see `docs/fuzzing.md`.
//! Failing inputs are kept in `fleetpulse/proptest-regressions/config_fuzz.txt`.

use std::io::Write;

use proptest::prelude::*;

use crate::config::{Config, Overrides};

const EXAMPLE: &str = include_str!("../../config/fleetpulse.example.toml");

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load(text: &str) -> anyhow::Result<Config> {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    Config::load(Some(file.path()), &Overrides::default())
}

/// `key = ` of every line of the example, and the section headers.
fn example_keys() -> Vec<String> {
    EXAMPLE
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_owned()))
        .filter(|k| !k.is_empty() && !k.contains(' '))
        .collect()
}

fn sections() -> Vec<String> {
    EXAMPLE
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter(|l| l.starts_with('[') && l.ends_with(']'))
        .map(str::to_owned)
        .collect()
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..70000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        prop::sample::select(vec![
            "0",
            "-1",
            "true",
            "false",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "18446744073709551616",
            "\"\"",
            "\"127.0.0.1:0\"",
            "\"[::1]:8080\"",
            "\"mqtt://localhost:1883\"",
            "\"mqtts://b:8883\"",
            "\"http://x\"",
            "\"full\"",
            "\"normal\"",
            "\"auto_register\"",
            "\"json\"",
            "\"text\"",
            "\"info\"",
            "\"data\"",
            "[]",
            "{}",
            "{ a = 1 }",
            "1979-05-27T07:32:00Z",
            "\"\\u0000\"",
        ])
        .prop_map(str::to_owned),
        "\"[^\"\\\\\n]{0,20}\"",
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop::sample::select(example_keys()), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => prop::sample::select(sections()),
        1 => prop::sample::select(vec!["[broker]", "[sink]", "[broker.tls]", "[http.tls]", "[[http]]", "["])
            .prop_map(str::to_owned),
        1 => "\\PC{0,30}",
    ]
}

/// The example with some lines dropped, repeated, replaced or uncommented.
fn mutated_example() -> impl Strategy<Value = String> {
    prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, line()), 1..8).prop_map(|edits| {
        let mut lines: Vec<String> = EXAMPLE.lines().map(str::to_owned).collect();
        for (at, op, new) in edits {
            let i = at.index(lines.len());
            match op {
                0 => {
                    lines.remove(i);
                }
                1 => lines.insert(i, lines[i].clone()),
                2 => lines[i] = lines[i].trim_start_matches('#').trim_start().to_owned(),
                _ => lines.insert(i, new),
            }
        }
        lines.join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn the_loader_never_panics_and_refuses_plainly(
        text in prop_oneof![4 => mutated_example(), 1 => "\\PC{0,200}"],
    ) {
        match load(&text) {
            Ok(cfg) => {
                // the checks `serve` runs next must not panic either
                let _ = cfg.http.streams.check();
                let _ = cfg.http.check_transport();
                let _ = cfg.analytics.check();
                let _ = cfg.webhooks.settings();
            }
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(message.starts_with("invalid configuration"), "{}", message);
            }
        }
    }

    #[test]
    fn an_unknown_key_in_any_section_is_an_error_naming_it(
        at in any::<prop::sample::Index>(),
        name in "zz_[a-z0-9_]{1,10}",
        v in value(),
    ) {
        // after a section header (or at the top): the key lands in that section
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        let headers: Vec<usize> = std::iter::once(0)
            .chain(
                lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.starts_with('['))
                    .map(|(i, _)| i + 1),
            )
            .collect();
        let i = headers[at.index(headers.len())];
        let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        edited.insert(i, format!("{name} = {v}"));
        let text = edited.join("\n");
        match load(&text) {
            Ok(_) => prop_assert!(false, "unknown key {} at line {} was accepted", name, i + 1),
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(
                    message.contains(&name) || message.contains("TOML parse error"),
                    "{}",
                    message
                );
            }
        }
    }
}
