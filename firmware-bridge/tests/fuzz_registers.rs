//! Property test ("fuzz") of the register-map parser: TOML-ish text built from the
//! keys and values a map uses, the shipped maps with lines dropped, repeated or
//! replaced, and arbitrary text. The parser never panics, every error names the file and
//! a line inside the text, and a map it accepts decodes any answers of the right shape
//! without panicking (a non-finite value is an error, never a published NaN).
//!
//! Cases: `PROPTEST_CASES` (small default for `scripts/test`); see `docs/fuzzing.md`.
//! Failing inputs are kept in `firmware-bridge/proptest-regressions/fuzz_registers.txt`.

use std::path::Path;

use fleetpulse_domain::catalog::Catalog;
use fleetpulse_firmware_bridge::registers::{BlockData, MapError, RegisterMap};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `cases` cases; failures are kept in this crate's `proptest-regressions/` (the
/// default place, beside `src/`, is not found from `tests/`) and replayed first.
fn config(cases_by_default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(cases_by_default),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_registers.txt",
        ))),
        ..ProptestConfig::default()
    }
}

fn catalog() -> Catalog {
    Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("catalog")
}

const SHIPPED: [&str; 4] = [
    include_str!("../../config/registers/OC-5A.toml"),
    include_str!("../../config/registers/OC-10.toml"),
    include_str!("../../config/registers/HV-150.toml"),
    include_str!("../../config/registers/HV-200.toml"),
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..140).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        prop::sample::select(vec![
            "\"holding\"",
            "\"input\"",
            "\"coil\"",
            "\"discrete\"",
            "\"u16\"",
            "\"i16\"",
            "\"u32\"",
            "\"i32\"",
            "\"u64\"",
            "\"i64\"",
            "\"f32\"",
            "\"f64\"",
            "\"bool\"",
            "\"ABCD\"",
            "\"CDAB\"",
            "\"BADC\"",
            "\"DCBA\"",
            "\"OC-5A\"",
            "\"HV-200\"",
            "\"E101\"",
            "\"W202\"",
            "\"flow_lpm\"",
            "\"runtime_hours\"",
            "\"%\"",
            "65535",
            "65536",
            "-1",
            "255",
            "256",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "true",
            "[]",
            "{}",
            "\"\"",
            "'x'",
            "\"\"\"\n\"\"\"",
        ])
        .prop_map(str::to_owned),
    ]
}

/// One line of a map: a table header, a key = value, a comment, or noise.
fn line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "model", "max_gap", "name", "function", "address", "type", "order", "bit", "scale",
        "offset", "unit", "code", "bogus",
    ]);
    prop_oneof![
        6 => (key, value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => prop::sample::select(vec!["[[field]]", "[[alarm]]", "[field]", "[[", "[x]"])
            .prop_map(str::to_owned),
        1 => "# \\PC{0,20}",
        1 => "\\PC{0,30}",
        1 => Just(String::new()),
    ]
}

fn generated_map() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["OC-5A", "OC-10", "HV-150", "HV-200", "ZZ-1"]),
        prop::collection::vec(line(), 0..40),
    )
        .prop_map(|(model, lines)| format!("model = \"{model}\"\n{}\n", lines.join("\n")))
}

/// A shipped map with some lines dropped, repeated or replaced.
fn mutated_map() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SHIPPED.to_vec()),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, line()), 1..6),
    )
        .prop_map(|(text, edits)| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            for (at, op, new) in edits {
                if lines.is_empty() {
                    lines.push(new);
                    continue;
                }
                let i = at.index(lines.len());
                match op {
                    0 => {
                        lines.remove(i);
                    }
                    1 => {
                        let copy = lines[i].clone();
                        lines.insert(i, copy);
                    }
                    _ => lines[i] = new,
                }
            }
            lines.join("\n")
        })
}

fn map_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => generated_map(),
        4 => mutated_map(),
        1 => "\\PC{0,300}",
    ]
}

/// The line an error names, checked to be inside `text`.
fn named_line(error: &MapError, text: &str) -> Result<(), TestCaseError> {
    let message = error.to_string();
    let rest = message
        .strip_prefix("map.toml:")
        .ok_or_else(|| TestCaseError::fail(format!("no file name: {message}")))?;
    let line: usize = rest
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("no line number: {message}")))?;
    let lines = text.lines().count().max(1);
    prop_assert!(
        (1..=lines + 1).contains(&line),
        "line {} outside a {}-line text: {}",
        line,
        lines,
        message
    );
    Ok(())
}

/// Answers of the right shape for every read of `map`, from `seed` words.
fn answers(map: &RegisterMap, seed: &[u16]) -> Vec<BlockData> {
    let mut words = seed.iter().copied().cycle();
    map.reads
        .iter()
        .map(|read| {
            let n = usize::from(read.count);
            if read.function.is_bits() {
                BlockData::Bits((0..n).map(|_| words.next().unwrap_or(0) & 1 == 1).collect())
            } else {
                BlockData::Words((0..n).map(|_| words.next().unwrap_or(0)).collect())
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn the_register_map_parser_never_panics_and_names_a_line(
        text in map_text(),
        seed in prop::collection::vec(any::<u16>(), 1..64),
    ) {
        let catalog = catalog();
        match RegisterMap::parse(&text, Path::new("map.toml"), &catalog) {
            Err(e) => named_line(&e, &text)?,
            Ok(map) => {
                if let Ok(decoded) = map.decode(&answers(&map, &seed)) {
                    for (field, v) in &decoded.values {
                        prop_assert!(v.is_finite(), "{} decoded to {}", field, v);
                    }
                }
            }
        }
    }
}
