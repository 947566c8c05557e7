//! Register maps: which Modbus registers of a model become which telemetry fields and
//! alarm codes, how they are decoded, and how they are read in as few requests as the map
//! allows.
//!
//! A map is a TOML file per model (`config/registers/OC-5A.toml`); see `docs/bridge.md`
//! for the format. [`RegisterMap::load`] validates it against the catalog and the v1
//! telemetry contract and names the file, line and reason of the first mistake.
//! [`RegisterMap::decode`] turns the words of one poll into measurements and the active
//! alarm set; [`RegisterMap::encode`] is its inverse (the simulated Modbus devices use it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use fleetpulse_domain::alarm::AlarmCode;
use fleetpulse_domain::{Catalog, telemetry};
use serde::Deserialize;
use toml::Spanned;

/// Which Modbus table a value lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Holding registers, read with function code 0x03.
    Holding,
    /// Input registers, read with function code 0x04.
    Input,
    /// Coils, read with function code 0x01.
    Coil,
    /// Discrete inputs, read with function code 0x02.
    Discrete,
}

impl Function {
    /// Coils and discrete inputs hold bits, the others 16-bit words.
    pub const fn is_bits(self) -> bool {
        matches!(self, Function::Coil | Function::Discrete)
    }

    /// The most items one read request may ask for (Modbus application protocol 1.1b3).
    pub const fn max_per_read(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Function::Holding => "holding",
            Function::Input => "input",
            Function::Coil => "coil",
            Function::Discrete => "discrete",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the bits of registers are read as a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// One bit: a coil, a discrete input, or bit `bit` (0 = least significant) of a
    /// register; published as 0 or 1.
    Bool,
}

impl DataType {
    /// Registers the value occupies (a bool occupies one register, or one coil).
    pub const fn words(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }
}

/// Word and byte order of a multi-register value, named by where the bytes of the
/// big-endian value `A B C D` end up: `ABCD` big-endian (Modbus default), `CDAB` words
/// swapped, `BADC` bytes swapped within each word, `DCBA` little-endian. For 64-bit
/// values "words swapped" means the four words in reverse order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum WordOrder {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl WordOrder {
    const fn swaps_words(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }
    const fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }

    /// Words on the wire ↔ words of the big-endian value (the transform is its own inverse).
    fn arrange(self, words: &[u16]) -> Vec<u16> {
        let mut out: Vec<u16> = words
            .iter()
            .map(|w| {
                if self.swaps_bytes() {
                    w.swap_bytes()
                } else {
                    *w
                }
            })
            .collect();
        if self.swaps_words() {
            out.reverse();
        }
        out
    }
}

// ---- the file format ------------------------------------------------------------------

const fn default_max_gap() -> u16 {
    0
}
const fn default_scale() -> f64 {
    1.0
}
const fn default_offset() -> f64 {
    0.0
}

/// A register map file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    /// Catalog model id this map describes (e.g. `OC-5A`).
    model: Spanned<String>,
    /// Unmapped registers a single read may span to save a request (0: only adjacent
    /// registers are read together; some devices answer an exception for unmapped ones).
    #[serde(default = "default_max_gap")]
    max_gap: u16,
    /// Measurements.
    #[serde(default)]
    field: Vec<Spanned<FieldFile>>,
    /// Alarm bits.
    #[serde(default)]
    alarm: Vec<Spanned<AlarmFile>>,
}

/// One `[[field]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    /// Telemetry field it becomes (contract v1 name: `[a-z][a-z0-9_]{0,63}`).
    name: String,
    /// Modbus table: `holding`, `input`, `coil`, `discrete`.
    function: Function,
    /// First register (0-based protocol address).
    address: u16,
    /// `u16`, `i16`, `u32`, `i32`, `u64`, `i64`, `f32`, `f64`, `bool`.
    #[serde(rename = "type")]
    data_type: DataType,
    /// Word and byte order: `ABCD` (default), `CDAB`, `BADC`, `DCBA`.
    #[serde(default)]
    order: WordOrder,
    /// For `bool` in a register: the bit (0 = least significant).
    #[serde(default)]
    bit: Option<u8>,
    /// Published value = raw × scale + offset.
    #[serde(default = "default_scale")]
    scale: f64,
    #[serde(default = "default_offset")]
    offset: f64,
    /// Unit of the published value (documentation; checked against the contract's unit
    /// for known fields).
    #[serde(default)]
    unit: Option<String>,
}

/// One `[[alarm]]`: the alarm code is active while its bit is 1.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmFile {
    /// Catalog alarm code of the model.
    code: String,
    function: Function,
    address: u16,
    /// Bit of the register (0 = least significant); not used for coils and discrete inputs.
    #[serde(default)]
    bit: Option<u8>,
}

// ---- the validated map ---------------------------------------------------------------

/// Where a value sits in the answers of one poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    block: usize,
    offset: usize,
}

/// One measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSpec {
    pub name: String,
    pub function: Function,
    pub address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    pub bit: Option<u8>,
    pub scale: f64,
    pub offset: f64,
    pub unit: Option<String>,
    slot: Slot,
}

/// One alarm code and its bit.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmBit {
    pub code: AlarmCode,
    pub function: Function,
    pub address: u16,
    pub bit: Option<u8>,
    slot: Slot,
}

/// One read request of a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadBlock {
    pub function: Function,
    pub address: u16,
    pub count: u16,
}

/// The answer to one [`ReadBlock`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockData {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// A validated register map.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterMap {
    pub model: String,
    /// The file it came from.
    pub source: PathBuf,
    pub fields: Vec<FieldSpec>,
    pub alarms: Vec<AlarmBit>,
    /// The read requests of one poll, in order.
    pub reads: Vec<ReadBlock>,
}

/// A register map that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `message` starts with the line number.
    #[error("{path}:{message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}:{line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// What one poll's answers decode to.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// Published measurements, by field name.
    pub values: BTreeMap<String, f64>,
    /// Alarm codes whose bit is set.
    pub alarms: BTreeSet<AlarmCode>,
}

/// The answers could not be decoded (the device sent garbage).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("read {index} returned {got} items, {expected} expected")]
    WrongLength {
        index: usize,
        expected: usize,
        got: usize,
    },
    #[error("read {index} returned the wrong kind of data")]
    WrongKind { index: usize },
    #[error("{field}: not a finite number")]
    NotFinite { field: String },
}

/// A value the simulator cannot place in the registers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value} does not fit a {data_type:?} register value")]
pub struct EncodeError {
    pub field: String,
    pub value: String,
    pub data_type: DataType,
}

/// 1-based line of byte `offset` in `text` (for "file:line: reason" errors).
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// A TOML syntax error as `"LINE: message"` (or `" message"` when it has no position),
/// the form both the bridge configuration and the register maps print after the path.
pub(crate) fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => format!("{}: {}", line_of(text, span.start), e.message()),
        None => format!(" {}", e.message()),
    }
}

impl RegisterMap {
    /// Reads, parses and validates a map file; `catalog` must know its model and every
    /// alarm code it names.
    pub fn load(path: &Path, catalog: &Catalog) -> Result<Self, MapError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, catalog)
    }

    /// Parses and validates map text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path, catalog: &Catalog) -> Result<Self, MapError> {
        let file: MapFile = toml::from_str(text).map_err(|e| MapError::Syntax {
            path: path.to_owned(),
            message: syntax_message(text, &e),
        })?;
        let invalid = |span: std::ops::Range<usize>, reason: String| MapError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            reason,
        };

        let model_span = file.model.span();
        let model_id = file.model.into_inner();
        let Some(model) = catalog.model(&model_id) else {
            return Err(invalid(
                model_span,
                format!("model {model_id:?} is not in the catalog"),
            ));
        };
        let known_codes: BTreeSet<&str> = model.alarms.iter().map(|a| a.code.as_str()).collect();

        let mut occupancy = Occupancy::default();
        let mut names = BTreeMap::<String, usize>::new();
        let mut fields = Vec::new();
        for spanned in file.field {
            let span = spanned.span();
            let line = line_of(text, span.start);
            let f = spanned.into_inner();
            check_field(&f).map_err(|r| invalid(span.clone(), r))?;
            if let Some(first) = names.insert(f.name.clone(), line) {
                return Err(invalid(
                    span,
                    format!("field {:?} is already mapped on line {first}", f.name),
                ));
            }
            occupancy
                .claim(
                    f.function,
                    f.address,
                    f.data_type.words(),
                    f.bit,
                    &f.name,
                    line,
                )
                .map_err(|r| invalid(span.clone(), r))?;
            fields.push((f, line));
        }

        let mut codes = BTreeMap::<String, usize>::new();
        let mut alarms = Vec::new();
        for spanned in file.alarm {
            let span = spanned.span();
            let line = line_of(text, span.start);
            let a = spanned.into_inner();
            let code = AlarmCode::parse(&a.code)
                .map_err(|e| invalid(span.clone(), format!("alarm code: {e}")))?;
            if !known_codes.contains(code.as_str()) {
                return Err(invalid(
                    span,
                    format!(
                        "alarm {:?} is not a code of model {model_id} in the catalog",
                        code.as_str()
                    ),
                ));
            }
            if let Some(first) = codes.insert(code.as_str().to_owned(), line) {
                return Err(invalid(
                    span,
                    format!(
                        "alarm {:?} is already mapped on line {first}",
                        code.as_str()
                    ),
                ));
            }
            check_bit(a.function, a.bit).map_err(|r| invalid(span.clone(), r))?;
            occupancy
                .claim(
                    a.function,
                    a.address,
                    1,
                    a.bit,
                    &format!("alarm {}", code.as_str()),
                    line,
                )
                .map_err(|r| invalid(span.clone(), r))?;
            alarms.push((code, a));
        }
        if fields.is_empty() && alarms.is_empty() {
            return Err(MapError::Invalid {
                path: path.to_owned(),
                line: 1,
                reason: "the map has no [[field]] and no [[alarm]]".into(),
            });
        }

        let spans: Vec<(Function, u16, u16)> = fields
            .iter()
            .map(|(f, _)| (f.function, f.address, f.data_type.words()))
            .chain(alarms.iter().map(|(_, a)| (a.function, a.address, 1)))
            .collect();
        let reads = plan_reads(&spans, file.max_gap);
        let fields = fields
            .into_iter()
            .map(|(f, _)| FieldSpec {
                slot: locate(&reads, f.function, f.address),
                name: f.name,
                function: f.function,
                address: f.address,
                data_type: f.data_type,
                order: f.order,
                bit: f.bit,
                scale: f.scale,
                offset: f.offset,
                unit: f.unit,
            })
            .collect();
        let alarms = alarms
            .into_iter()
            .map(|(code, a)| AlarmBit {
                slot: locate(&reads, a.function, a.address),
                code,
                function: a.function,
                address: a.address,
                bit: a.bit,
            })
            .collect();
        Ok(RegisterMap {
            model: model_id,
            source: path.to_owned(),
            fields,
            alarms,
            reads,
        })
    }

    /// Decodes the answers of one poll (one [`BlockData`] per [`ReadBlock`], in order).
    pub fn decode(&self, data: &[BlockData]) -> Result<Decoded, DecodeError> {
        for (index, (block, answer)) in self.reads.iter().zip(data).enumerate() {
            let got = match (block.function.is_bits(), answer) {
                (false, BlockData::Words(w)) => w.len(),
                (true, BlockData::Bits(b)) => b.len(),
                _ => return Err(DecodeError::WrongKind { index }),
            };
            // a bit read is padded to whole bytes on the wire
            let short = got < usize::from(block.count);
            let long = !block.function.is_bits() && got != usize::from(block.count);
            if short || long {
                return Err(DecodeError::WrongLength {
                    index,
                    expected: usize::from(block.count),
                    got,
                });
            }
        }
        if data.len() != self.reads.len() {
            return Err(DecodeError::WrongLength {
                index: data.len().min(self.reads.len()),
                expected: self.reads.len(),
                got: data.len(),
            });
        }
        let mut values = BTreeMap::new();
        for f in &self.fields {
            let raw = raw_value(f, &data[f.slot.block], f.slot.offset);
            if !raw.is_finite() {
                return Err(DecodeError::NotFinite {
                    field: f.name.clone(),
                });
            }
            let value = if f.scale == 1.0 && f.offset == 0.0 {
                raw
            } else {
                round_decimals(raw * f.scale + f.offset, 10)
            };
            if !value.is_finite() {
                return Err(DecodeError::NotFinite {
                    field: f.name.clone(),
                });
            }
            values.insert(f.name.clone(), value);
        }
        let mut alarms = BTreeSet::new();
        for a in &self.alarms {
            if bit_at(&data[a.slot.block], a.slot.offset, a.bit) {
                alarms.insert(a.code.clone());
            }
        }
        Ok(Decoded { values, alarms })
    }

    /// The inverse of [`RegisterMap::decode`]: places `values` (published units) and the
    /// active `alarms` into register images, one per [`ReadBlock`]. Fields missing from
    /// `values` read 0.
    pub fn encode(
        &self,
        values: &BTreeMap<String, f64>,
        alarms: &BTreeSet<AlarmCode>,
    ) -> Result<Vec<BlockData>, EncodeError> {
        let mut out: Vec<BlockData> = self
            .reads
            .iter()
            .map(|b| {
                if b.function.is_bits() {
                    BlockData::Bits(vec![false; usize::from(b.count)])
                } else {
                    BlockData::Words(vec![0; usize::from(b.count)])
                }
            })
            .collect();
        for f in &self.fields {
            let value = values.get(&f.name).copied().unwrap_or(0.0);
            let raw = (value - f.offset) / f.scale;
            let block = &mut out[f.slot.block];
            match (block, f.data_type) {
                (BlockData::Bits(bits), _) => bits[f.slot.offset] = raw != 0.0,
                (BlockData::Words(words), DataType::Bool) => {
                    set_bit(&mut words[f.slot.offset], f.bit.unwrap_or(0), raw != 0.0);
                }
                (BlockData::Words(words), ty) => {
                    let encoded = encode_words(raw, ty, f.order).ok_or_else(|| EncodeError {
                        field: f.name.clone(),
                        value: value.to_string(),
                        data_type: ty,
                    })?;
                    words[f.slot.offset..f.slot.offset + encoded.len()].copy_from_slice(&encoded);
                }
            }
        }
        for a in &self.alarms {
            let on = alarms.contains(&a.code);
            match &mut out[a.slot.block] {
                BlockData::Bits(bits) => bits[a.slot.offset] = on,
                BlockData::Words(words) => {
                    set_bit(&mut words[a.slot.offset], a.bit.unwrap_or(0), on);
                }
            }
        }
        Ok(out)
    }
}

/// The register maps shipped in `config/registers/`, built into the binary: `(model, text)`.
pub const BUILT_IN_MAPS: &[(&str, &str)] = &[
    ("OC-5A", include_str!("../../config/registers/OC-5A.toml")),
    ("OC-10", include_str!("../../config/registers/OC-10.toml")),
    ("HV-200", include_str!("../../config/registers/HV-200.toml")),
    ("HV-150", include_str!("../../config/registers/HV-150.toml")),
];

/// Parses the [`BUILT_IN_MAPS`], by model.
pub fn built_in_maps(
    catalog: &Catalog,
) -> Result<BTreeMap<String, std::sync::Arc<RegisterMap>>, MapError> {
    BUILT_IN_MAPS
        .iter()
        .map(|(model, text)| {
            let path = PathBuf::from(format!("config/registers/{model}.toml (built in)"));
            RegisterMap::parse(text, &path, catalog)
                .map(|m| (m.model.clone(), std::sync::Arc::new(m)))
        })
        .collect()
}

fn check_field(f: &FieldFile) -> Result<(), String> {
    let name_ok = {
        let mut chars = f.name.chars();
        f.name.len() <= 64
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !name_ok {
        return Err(format!(
            "field name {:?} is outside the telemetry contract ([a-z][a-z0-9_]{{0,63}})",
            f.name
        ));
    }
    if ["seq", "ts", "serial", "model", "fw", "alarms"].contains(&f.name.as_str()) {
        return Err(format!(
            "field name {:?} is reserved by the telemetry contract",
            f.name
        ));
    }
    if !f.scale.is_finite() || f.scale == 0.0 {
        return Err(format!(
            "{}: scale must be a finite, non-zero number",
            f.name
        ));
    }
    if !f.offset.is_finite() {
        return Err(format!("{}: offset must be a finite number", f.name));
    }
    if f.function.is_bits() && f.data_type != DataType::Bool {
        return Err(format!(
            "{}: a {} holds single bits; its type must be bool",
            f.name, f.function
        ));
    }
    if f.data_type == DataType::Bool {
        check_bit(f.function, f.bit).map_err(|r| format!("{}: {r}", f.name))?;
    } else if f.bit.is_some() {
        return Err(format!(
            "{}: `bit` is only for bool values in registers",
            f.name
        ));
    }
    if f.data_type.words() == 1 && matches!(f.order, WordOrder::CDAB | WordOrder::DCBA) {
        return Err(format!(
            "{}: a one-register value has no word order; use ABCD or BADC",
            f.name
        ));
    }
    if u32::from(f.address) + u32::from(f.data_type.words()) > 65_536 {
        return Err(format!("{}: runs past register 65535", f.name));
    }
    if let (Some(known), Some(unit)) = (telemetry::known_field(&f.name), &f.unit)
        && known.unit != unit
    {
        return Err(format!(
            "{}: unit {unit:?} differs from the contract's {:?}",
            f.name, known.unit
        ));
    }
    Ok(())
}

fn check_bit(function: Function, bit: Option<u8>) -> Result<(), String> {
    match (function.is_bits(), bit) {
        (true, None) => Ok(()),
        (true, Some(_)) => Err(format!("a {function} is a single bit: drop `bit`")),
        (false, Some(b)) if b < 16 => Ok(()),
        (false, Some(b)) => Err(format!("bit {b} does not exist in a 16-bit register")),
        (false, None) => Err(format!(
            "a bit in a {function} register needs `bit` (0 = least significant)"
        )),
    }
}

/// Which registers are taken, to reject overlaps that make no sense. Bits of one register
/// may be shared between bool fields and alarms, each bit once; a whole register belongs
/// to one value.
#[derive(Default)]
struct Occupancy {
    whole: BTreeMap<(Function, u16), (String, usize)>,
    bits: BTreeMap<(Function, u16), BTreeMap<u8, (String, usize)>>,
}

impl Occupancy {
    fn claim(
        &mut self,
        function: Function,
        address: u16,
        words: u16,
        bit: Option<u8>,
        what: &str,
        line: usize,
    ) -> Result<(), String> {
        let clash = |(other, other_line): &(String, usize), register: u16| {
            format!("{what} overlaps {other} (line {other_line}) at {function} register {register}")
        };
        match bit {
            Some(b) if !function.is_bits() => {
                let key = (function, address);
                if let Some(owner) = self.whole.get(&key) {
                    return Err(clash(owner, address));
                }
                let bits = self.bits.entry(key).or_default();
                if let Some((other, other_line)) = bits.get(&b) {
                    return Err(format!(
                        "{what} uses bit {b} of {function} register {address}, already used by {other} (line {other_line})"
                    ));
                }
                bits.insert(b, (what.to_owned(), line));
            }
            _ => {
                for register in address..address + words {
                    let key = (function, register);
                    if let Some(owner) = self.whole.get(&key) {
                        return Err(clash(owner, register));
                    }
                    if let Some((_, owner)) = self.bits.get(&key).and_then(|b| b.iter().next()) {
                        return Err(clash(owner, register));
                    }
                }
                for register in address..address + words {
                    self.whole
                        .insert((function, register), (what.to_owned(), line));
                }
            }
        }
        Ok(())
    }
}

/// Groups spans `(function, address, count)` into as few reads as the 125-register
/// (2000-bit) limit and `max_gap` allow.
fn plan_reads(spans: &[(Function, u16, u16)], max_gap: u16) -> Vec<ReadBlock> {
    let mut sorted: Vec<(Function, u16, u16)> = spans.to_vec();
    sorted.sort_unstable();
    let mut reads: Vec<ReadBlock> = Vec::new();
    for (function, address, count) in sorted {
        let end = u32::from(address) + u32::from(count);
        if let Some(last) = reads.last_mut()
            && last.function == function
        {
            let last_end = u32::from(last.address) + u32::from(last.count);
            let gap = u32::from(address).saturating_sub(last_end);
            let merged = end.max(last_end) - u32::from(last.address);
            if gap <= u32::from(max_gap) && merged <= u32::from(function.max_per_read()) {
                last.count = merged as u16;
                continue;
            }
        }
        reads.push(ReadBlock {
            function,
            address,
            count,
        });
    }
    reads
}

fn locate(reads: &[ReadBlock], function: Function, address: u16) -> Slot {
    reads
        .iter()
        .enumerate()
        .find(|(_, b)| {
            b.function == function
                && address >= b.address
                && u32::from(address) < u32::from(b.address) + u32::from(b.count)
        })
        .map(|(block, b)| Slot {
            block,
            offset: usize::from(address - b.address),
        })
        .expect("plan_reads covers every span it was given")
}

fn bit_at(data: &BlockData, offset: usize, bit: Option<u8>) -> bool {
    match data {
        BlockData::Bits(bits) => bits[offset],
        BlockData::Words(words) => words[offset] >> bit.unwrap_or(0) & 1 == 1,
    }
}

fn set_bit(word: &mut u16, bit: u8, on: bool) {
    if on {
        *word |= 1 << bit;
    } else {
        *word &= !(1 << bit);
    }
}

fn raw_value(f: &FieldSpec, data: &BlockData, offset: usize) -> f64 {
    let BlockData::Words(words) = data else {
        return if bit_at(data, offset, None) { 1.0 } else { 0.0 };
    };
    if f.data_type == DataType::Bool {
        return if bit_at(data, offset, f.bit) {
            1.0
        } else {
            0.0
        };
    }
    let n = usize::from(f.data_type.words());
    let be: Vec<u8> = f
        .order
        .arrange(&words[offset..offset + n])
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    let b2 = || [be[0], be[1]];
    let b4 = || [be[0], be[1], be[2], be[3]];
    let b8 = || [be[0], be[1], be[2], be[3], be[4], be[5], be[6], be[7]];
    match f.data_type {
        DataType::U16 => f64::from(u16::from_be_bytes(b2())),
        DataType::I16 => f64::from(i16::from_be_bytes(b2())),
        DataType::U32 => f64::from(u32::from_be_bytes(b4())),
        DataType::I32 => f64::from(i32::from_be_bytes(b4())),
        DataType::U64 => u64::from_be_bytes(b8()) as f64,
        DataType::I64 => i64::from_be_bytes(b8()) as f64,
        // the shortest decimal that reads back as this f32: 93.4, not 93.40000152587891
        DataType::F32 => {
            let v = f32::from_be_bytes(b4());
            if v.is_finite() {
                v.to_string().parse().unwrap_or(f64::NAN)
            } else {
                f64::NAN
            }
        }
        DataType::F64 => f64::from_be_bytes(b8()),
        DataType::Bool => unreachable!("handled above"),
    }
}

fn encode_words(raw: f64, ty: DataType, order: WordOrder) -> Option<Vec<u16>> {
    let int = |lo: f64, hi: f64| {
        let r = raw.round();
        (r.is_finite() && r >= lo && r <= hi).then_some(r)
    };
    let be: Vec<u8> = match ty {
        DataType::U16 => (int(0.0, f64::from(u16::MAX))? as u16)
            .to_be_bytes()
            .to_vec(),
        DataType::I16 => (int(f64::from(i16::MIN), f64::from(i16::MAX))? as i16)
            .to_be_bytes()
            .to_vec(),
        DataType::U32 => (int(0.0, f64::from(u32::MAX))? as u32)
            .to_be_bytes()
            .to_vec(),
        DataType::I32 => (int(f64::from(i32::MIN), f64::from(i32::MAX))? as i32)
            .to_be_bytes()
            .to_vec(),
        DataType::U64 => (int(0.0, 1.8e19)? as u64).to_be_bytes().to_vec(),
        DataType::I64 => (int(-9.2e18, 9.2e18)? as i64).to_be_bytes().to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        DataType::F64 => raw.to_be_bytes().to_vec(),
        DataType::Bool => return None,
    };
    let words: Vec<u16> = be
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Some(order.arrange(&words))
}

fn round_decimals(v: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    let r = (v * m).round() / m;
    if r.is_finite() { r } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::from_toml_str(include_str!("../../config/catalog.toml")).expect("catalog")
    }

    fn parse(text: &str) -> Result<RegisterMap, MapError> {
        RegisterMap::parse(text, Path::new("OC-5A.toml"), &catalog())
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("invalid map").to_string()
    }

    #[test]
    fn the_four_orders_decode_the_same_f32_and_u32() {
        let mut text = String::from("model = \"OC-5A\"\n");
        for (i, order) in ["ABCD", "CDAB", "BADC", "DCBA"].iter().enumerate() {
            text += &format!(
                "[[field]]\nname = \"f_{i}\"\nfunction = \"holding\"\naddress = {}\ntype = \"f32\"\norder = \"{order}\"\n",
                i * 4
            );
            text += &format!(
                "[[field]]\nname = \"u_{i}\"\nfunction = \"holding\"\naddress = {}\ntype = \"u32\"\norder = \"{order}\"\n",
                i * 4 + 2
            );
        }
        let map = parse(&text).expect("valid");
        assert_eq!(
            map.reads,
            [ReadBlock {
                function: Function::Holding,
                address: 0,
                count: 16
            }]
        );
        // 93.4f32 = 0x42BACCCD; 305419896 = 0x12345678
        let words = vec![
            0x42BA, 0xCCCD, 0x1234, 0x5678, // ABCD
            0xCCCD, 0x42BA, 0x5678, 0x1234, // CDAB
            0xBA42, 0xCDCC, 0x3412, 0x7856, // BADC
            0xCDCC, 0xBA42, 0x7856, 0x3412, // DCBA
        ];
        let d = map
            .decode(&[BlockData::Words(words.clone())])
            .expect("decodes");
        for i in 0..4 {
            assert_eq!(d.values[&format!("f_{i}")], 93.4, "order {i}");
            assert_eq!(d.values[&format!("u_{i}")], 305_419_896.0, "order {i}");
        }
        let back = map.encode(&d.values, &d.alarms).expect("encodes");
        assert_eq!(back, [BlockData::Words(words)]);
    }

    #[test]
    fn scale_offset_signed_u64_bits_and_alarms() {
        let map = parse(
            r#"
model = "OC-5A"
max_gap = 2
[[field]]
name = "o2_purity_pct"
function = "input"
address = 10
type = "u16"
scale = 0.1
unit = "%"
[[field]]
name = "temperature_c"
function = "input"
address = 11
type = "i16"
scale = 0.1
offset = -10
[[field]]
name = "runtime_hours"
function = "input"
address = 14
type = "u64"
scale = 0.01
[[field]]
name = "vendor_door_open"
function = "discrete"
address = 3
type = "bool"
[[alarm]]
code = "E101"
function = "holding"
address = 100
bit = 0
[[alarm]]
code = "W202"
function = "holding"
address = 100
bit = 15
"#,
        )
        .expect("valid");
        assert_eq!(map.reads.len(), 3, "{:?}", map.reads);
        let input = vec![931, (-125i16) as u16, 0, 0, 0, 0, 0x000B, 0xC614];
        let d = map
            .decode(&[
                BlockData::Words(vec![0x8001]),
                BlockData::Words(input),
                BlockData::Bits(vec![true, false, false, false, false, false, false, false]),
            ])
            .expect("decodes");
        assert_eq!(d.values["o2_purity_pct"], 93.1);
        assert_eq!(d.values["temperature_c"], -22.5);
        assert_eq!(d.values["runtime_hours"], 7716.04);
        assert_eq!(d.values["vendor_door_open"], 1.0);
        let codes: Vec<&str> = d.alarms.iter().map(AlarmCode::as_str).collect();
        assert_eq!(codes, ["E101", "W202"]);
    }

    #[test]
    fn reads_respect_the_125_register_limit() {
        let mut text = String::from("model = \"OC-5A\"\n");
        for i in 0..70 {
            text += &format!(
                "[[field]]\nname = \"v_{i}\"\nfunction = \"holding\"\naddress = {}\ntype = \"u32\"\n",
                i * 2
            );
        }
        let map = parse(&text).expect("valid");
        let counts: Vec<u16> = map.reads.iter().map(|r| r.count).collect();
        assert_eq!(counts, [124, 16]);
    }

    #[test]
    fn mistakes_are_named_with_file_line_and_reason() {
        let e = err(
            "model = \"OC-5A\"\n[[field]]\nname = \"a\"\nfunction = \"holding\"\naddress = 0\ntype = \"u32\"\n[[field]]\nname = \"b\"\nfunction = \"holding\"\naddress = 1\ntype = \"u16\"\n",
        );
        assert!(
            e.starts_with("OC-5A.toml:7:") && e.contains("overlaps a (line 2)"),
            "{e}"
        );
        let e = err(
            "model = \"OC-5A\"\n[[field]]\nname = \"a\"\nfunction = \"holding\"\naddress = 0\ntype = \"u24\"\n",
        );
        assert!(e.starts_with("OC-5A.toml:6: unknown variant `u24`"), "{e}");
        let e = err(
            "model = \"OC-5A\"\n[[field]]\nname = \"Bad-Name\"\nfunction = \"holding\"\naddress = 0\ntype = \"u16\"\n",
        );
        assert!(
            e.starts_with("OC-5A.toml:2:") && e.contains("outside the telemetry contract"),
            "{e}"
        );
        let e = err(
            "model = \"OC-5A\"\n[[alarm]]\ncode = \"V101\"\nfunction = \"holding\"\naddress = 0\nbit = 1\n",
        );
        assert!(e.contains("not a code of model OC-5A"), "{e}");
        let e = err("model = \"XX-1\"\n");
        assert!(e.starts_with("OC-5A.toml:1:"), "{e}");
        let e = err(
            "model = \"OC-5A\"\n[[field]]\nname = \"a\"\nfunction = \"holding\"\naddress = 0\ntype = \"u16\"\ncolour = 1\n",
        );
        assert!(e.contains("colour"), "{e}");
        let e = err(
            "model = \"OC-5A\"\n[[alarm]]\ncode = \"E101\"\nfunction = \"holding\"\naddress = 0\nbit = 1\n[[alarm]]\ncode = \"E102\"\nfunction = \"holding\"\naddress = 0\nbit = 1\n",
        );
        assert!(e.starts_with("OC-5A.toml:7:") && e.contains("bit 1"), "{e}");
    }

    #[test]
    fn the_shipped_maps_are_valid_and_round_trip() {
        let maps = built_in_maps(&catalog()).expect("shipped maps are valid");
        assert_eq!(maps.len(), 4);
        for map in maps.values() {
            let values: BTreeMap<String, f64> =
                map.fields.iter().map(|f| (f.name.clone(), 42.5)).collect();
            let alarms: BTreeSet<AlarmCode> = map.alarms.iter().map(|a| a.code.clone()).collect();
            let image = map.encode(&values, &alarms).expect("encodes");
            let d = map.decode(&image).expect("decodes");
            for (name, v) in &d.values {
                assert!((v - 42.5).abs() <= 0.5, "{} {name} = {v}", map.model);
            }
            assert_eq!(d.alarms, alarms, "{}", map.model);
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let map = parse(
            "model = \"OC-5A\"\n[[field]]\nname = \"a\"\nfunction = \"holding\"\naddress = 0\ntype = \"f32\"\n",
        )
        .expect("valid");
        assert_eq!(
            map.decode(&[BlockData::Words(vec![0x7FC0, 0])]),
            Err(DecodeError::NotFinite { field: "a".into() })
        );
        assert!(matches!(
            map.decode(&[BlockData::Words(vec![1])]),
            Err(DecodeError::WrongLength { .. })
        ));
    }
}
