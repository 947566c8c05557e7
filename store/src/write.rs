//! Everything that writes: the batch commit, registration, retention.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use fleetpulse_domain::alarm::AlarmCode;
use fleetpulse_domain::catalog::ModelSpec;
use fleetpulse_domain::device::{ConnectionState, Criticality, LifecycleStatus};
use fleetpulse_domain::order::{OrderIntent, OrderStatus};
use fleetpulse_domain::rules::{DeviceContext, LatestState, StateChange};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::{
    CommitReport, DEAD_LETTER_REPEAT_WINDOW, Device, IngestBatch, NewDeadLetter, NewDevice,
    OrderChange, StoreError, UnknownDevicePolicy,
};
use fleetpulse_domain::telemetry::{Reading, RejectReason, StatusUpdate, telemetry_topic};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::StoreOptions;
use crate::cache::{CachedDevice, DeviceCache, DeviceRow, LAST_SEEN_RESOLUTION_MS};
use crate::convert::{hour_of, json_err, ms, sql_err};
use crate::read;
use crate::spool::SpoolBuffer;

/// What a commit learnt about one device, for the cache once it committed.
type CacheUpdates = Vec<(Serial, Option<CachedDevice>)>;

pub(crate) fn commit_batch(
    conn: &mut Connection,
    cache: &mut DeviceCache,
    opts: &StoreOptions,
    batch: &IngestBatch,
    now: DateTime<Utc>,
) -> Result<CommitReport, StoreError> {
    cache.check_external_writes(conn)?;
    // A status message changes the row behind the cache: those devices are read again.
    let mut updates: CacheUpdates = Vec::new();
    if !batch.statuses.is_empty() || !batch.connection_ends.is_empty() {
        cache.apply(
            batch
                .statuses
                .iter()
                .map(|s| s.serial.clone())
                .chain(batch.connection_ends.iter().map(|e| e.serial.clone()))
                .map(|serial| (serial, None))
                .collect(),
        );
    }
    let tx = conn.transaction().map_err(sql_err)?;
    let mut report = CommitReport::default();
    let mut dead = batch.dead_letters.clone();
    let mut spool = opts.sink_spool.then(SpoolBuffer::default);

    for status in &batch.statuses {
        apply_status(&tx, opts, status, now, &mut report, &mut dead)?;
    }

    let mut by_device: BTreeMap<&Serial, Vec<&Reading>> = BTreeMap::new();
    for r in &batch.readings {
        by_device.entry(&r.serial).or_default().push(r);
    }
    for (serial, mut readings) in by_device {
        readings.sort_by_key(|r| r.seq);
        let model_hint = readings.iter().find_map(|r| r.model.as_deref());
        let known = cache
            .get(serial)
            .filter(|c| c.row.model.is_some() || model_hint.is_none())
            .cloned();
        let from_cache = known.is_some();
        let device = match known {
            Some(cached) => Some(cached),
            None => ensure_device(&tx, opts, serial, model_hint, now, &mut report)?,
        };
        let Some(device) = device else {
            refuse(
                &mut dead,
                readings,
                RejectReason::UnknownDevice,
                "the serial is not registered and ingest refuses unknown devices (registry.unknown_device = \"reject\")",
            )?;
            continue;
        };
        if device.row.status == LifecycleStatus::Retired {
            refuse(
                &mut dead,
                readings,
                RejectReason::RetiredDevice,
                "the serial is registered as retired; re-register it before it reports again",
            )?;
            continue;
        }
        let entry = apply_readings(
            &tx,
            opts,
            serial,
            device,
            from_cache,
            readings,
            now,
            &mut report,
            spool.as_mut(),
        )?;
        updates.push((serial.clone(), Some(entry)));
    }
    // after the readings: a device's last readings and its goodbye in one batch leave it
    // offline; the cache forgets these devices (their row changed behind it)
    for end in &batch.connection_ends {
        tx.prepare_cached(
            "UPDATE devices SET connection = 'offline', disconnected_at = ?2, disconnect_graceful = ?3 \
             WHERE serial = ?1",
        )
        .and_then(|mut s| s.execute(params![end.serial.as_str(), ms(end.at), end.graceful]))
        .map_err(sql_err)?;
        updates.push((end.serial.clone(), None));
    }
    if let Some(spool) = &spool {
        crate::spool::append(&tx, spool, now)?;
        report.spooled = spool.readings;
        report.spooled_bytes = spool.body.len();
    }

    report.dead_lettered = dead.len();
    for d in &dead {
        *report.dead_letter_reasons.entry(d.reason).or_default() += 1;
    }
    report.dead_letter_repeats = record_dead_letters(&tx, &dead)?;
    if let Some(through) = batch.journal_through {
        let through = i64::try_from(through)
            .map_err(|_| StoreError::Invalid(format!("journal record {through} is too large")))?;
        tx.prepare_cached(
            "INSERT INTO ingest_journal (id, applied_through) VALUES (1, ?1) \
             ON CONFLICT (id) DO UPDATE SET applied_through = excluded.applied_through",
        )
        .and_then(|mut s| s.execute([through]))
        .map_err(sql_err)?;
    }
    tx.commit().map_err(sql_err)?;
    cache.apply(updates);
    if report.registered > 0 {
        // one line per commit, not one per device: a fleet's first connects would
        // otherwise fill the log
        tracing::info!(
            devices = report.registered,
            "unknown devices auto-registered as unassigned (GET /api/v1/devices?status=unassigned)"
        );
    }
    Ok(report)
}

fn refuse(
    dead: &mut Vec<NewDeadLetter>,
    readings: Vec<&Reading>,
    reason: RejectReason,
    detail: &str,
) -> Result<(), StoreError> {
    for r in readings {
        dead.push(NewDeadLetter {
            received_at: r.received_at,
            topic: telemetry_topic(&r.serial),
            client_id: r.serial.to_string(),
            reason,
            detail: format!("{detail} (serial {}, seq {})", r.serial, r.seq),
            payload: r.refused_payload(),
        });
    }
    Ok(())
}

fn apply_status(
    tx: &Transaction<'_>,
    opts: &StoreOptions,
    status: &StatusUpdate,
    now: DateTime<Utc>,
    report: &mut CommitReport,
    dead: &mut Vec<NewDeadLetter>,
) -> Result<(), StoreError> {
    if ensure_device(
        tx,
        opts,
        &status.serial,
        status.model.as_deref(),
        now,
        report,
    )?
    .is_none()
    {
        dead.push(NewDeadLetter {
            received_at: status.at,
            topic: fleetpulse_domain::telemetry::status_topic(&status.serial),
            client_id: status.serial.to_string(),
            reason: RejectReason::UnknownDevice,
            detail: format!(
                "status of unregistered serial {} refused (registry.unknown_device = \"reject\")",
                status.serial
            ),
            payload: status.state.as_str().as_bytes().to_vec(),
        });
        return Ok(());
    }
    // A bare `offline` is recorded as a lost connection (a will and a goodbye look alike
    // here); a graceful connection end in the same batch, applied later, corrects it.
    let offline = status.state == ConnectionState::Offline;
    tx.prepare_cached(
        "UPDATE devices SET connection = ?2, firmware = COALESCE(?3, firmware), \
         last_seen_at = MAX(COALESCE(last_seen_at, 0), ?4), \
         disconnected_at = CASE WHEN ?5 THEN ?4 ELSE disconnected_at END, \
         disconnect_graceful = CASE WHEN ?5 THEN 0 ELSE disconnect_graceful END WHERE serial = ?1",
    )
    .and_then(|mut s| {
        s.execute(params![
            status.serial.as_str(),
            status.state.as_str(),
            status.firmware,
            ms(status.at),
            offline
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

/// Looks the device up; registers it under the auto-register policy. `None`: refused.
/// The returned entry has no latest state yet (`apply_readings` reads it).
fn ensure_device(
    tx: &Transaction<'_>,
    opts: &StoreOptions,
    serial: &Serial,
    model_hint: Option<&str>,
    now: DateTime<Utc>,
    report: &mut CommitReport,
) -> Result<Option<CachedDevice>, StoreError> {
    let found = tx
        .prepare_cached(
            "SELECT model, status, criticality, connection, firmware, last_seen_at \
             FROM devices WHERE serial = ?1",
        )
        .and_then(|mut s| {
            s.query_row([serial.as_str()], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })
            .optional()
        })
        .map_err(sql_err)?;
    if let Some((mut model, status, criticality, connection, firmware, last_seen)) = found {
        // A device first seen without a model (its birth status message carries none)
        // learns it from the first reading that names a catalog model.
        if model.is_none()
            && let Some(spec) = model_hint.and_then(|m| opts.catalog.model(m))
        {
            tx.prepare_cached(
                "UPDATE devices SET model = ?2, kind = ?3 WHERE serial = ?1 AND model IS NULL",
            )
            .and_then(|mut s| {
                s.execute(params![
                    serial.as_str(),
                    spec.id.as_str(),
                    spec.kind.as_str()
                ])
            })
            .map_err(sql_err)?;
            tracing::info!(serial = %serial, model = %spec.id, "device model learnt from its telemetry");
            model = Some(spec.id.to_string());
        }
        return Ok(Some(CachedDevice {
            row: DeviceRow {
                model,
                status: crate::convert::parse_col("devices.status", &status)?,
                criticality: crate::convert::parse_col("devices.criticality", &criticality)?,
            },
            online: connection == ConnectionState::Online.as_str(),
            firmware,
            last_seen_ms: last_seen.unwrap_or(i64::MIN),
            latest: None,
        }));
    }
    if opts.unknown_device == UnknownDevicePolicy::Reject {
        return Ok(None);
    }
    let spec = model_hint.and_then(|m| opts.catalog.model(m));
    let criticality = spec.map_or(Criticality::Standard, |m| m.default_criticality);
    tx.prepare_cached(
        "INSERT INTO devices (serial, model, kind, status, criticality, connection, registered_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'unknown', ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            serial.as_str(),
            spec.map(|m| m.id.as_str()),
            spec.map(|m| m.kind.as_str()),
            LifecycleStatus::Unassigned.as_str(),
            criticality.as_str(),
            ms(now)
        ])
    })
    .map_err(sql_err)?;
    report.registered += 1;
    tracing::debug!(serial = %serial, model = ?spec.map(|m| m.id.as_str()), "unknown device auto-registered as unassigned");
    Ok(Some(CachedDevice {
        row: DeviceRow {
            model: spec.map(|m| m.id.to_string()),
            status: LifecycleStatus::Unassigned,
            criticality,
        },
        online: false,
        firmware: None,
        last_seen_ms: i64::MIN,
        latest: None,
    }))
}

/// Running aggregate of one field in one hour.
struct Acc {
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    last_seq: u64,
}

#[allow(clippy::too_many_arguments)] // one commit's context; a struct would only rename it
fn apply_readings(
    tx: &Transaction<'_>,
    opts: &StoreOptions,
    serial: &Serial,
    mut device: CachedDevice,
    from_cache: bool,
    readings: Vec<&Reading>,
    now: DateTime<Utc>,
    report: &mut CommitReport,
    mut spool: Option<&mut SpoolBuffer>,
) -> Result<CachedDevice, StoreError> {
    let before = if from_cache {
        device.latest.take()
    } else {
        read::latest_state(tx, serial)?
    };
    let mut after = before.clone().unwrap_or_default();
    let model: Option<&ModelSpec> = device
        .row
        .model
        .as_deref()
        .and_then(|m| opts.catalog.model(m));
    let mut advanced = false;
    let mut new_readings = 0usize;
    let ctx = DeviceContext {
        serial,
        model,
        criticality: device.row.criticality,
        status: device.row.status,
    };
    let mut rollups: HashMap<(i64, &str), Acc> = HashMap::new();
    let mut last_seen = i64::MIN;

    let mut insert = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO readings (serial, seq, ts, received_at, vals, alarms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql_err)?;
    for &r in &readings {
        let seq = i64::try_from(r.seq)
            .map_err(|_| StoreError::Invalid(format!("seq {} is too large", r.seq)))?;
        let vals = serde_json::to_string(&r.values).map_err(json_err)?;
        let alarms = r
            .alarms
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(json_err)?;
        let inserted = insert
            .execute(params![
                serial.as_str(),
                seq,
                ms(r.ts),
                ms(r.received_at),
                vals,
                alarms
            ])
            .map_err(sql_err)?;
        if inserted == 0 {
            report.duplicates += 1;
            continue;
        }
        new_readings += 1;
        if let Some(spool) = spool.as_deref_mut() {
            fleetpulse_domain::line_protocol::write_reading(
                &mut spool.body,
                r,
                device.row.model.as_deref(),
                model.map(|m| m.kind.as_str()),
            );
            spool.readings += 1;
        }
        last_seen = last_seen.max(ms(r.received_at));
        let hour = hour_of(ms(r.ts));
        for (field, &v) in &r.values {
            let acc = rollups.entry((hour, field.as_str())).or_insert(Acc {
                count: 0,
                sum: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                last: v,
                last_seq: r.seq,
            });
            acc.count += 1;
            acc.sum += v;
            acc.min = acc.min.min(v);
            acc.max = acc.max.max(v);
            if r.seq >= acc.last_seq {
                acc.last = v;
                acc.last_seq = r.seq;
            }
        }
        let is_newer = before.is_none() && !advanced || r.seq > after.seq;
        if is_newer {
            // Rules see each step of the latest state, so what they count (an order's
            // triggers) does not depend on how readings happened to be batched.
            let prev = if advanced {
                Some(after.clone())
            } else {
                before.clone()
            };
            advanced = true;
            let mut opened = Vec::new();
            advance_state(tx, serial, model, &mut after, r, &mut opened)?;
            let change = StateChange {
                before: prev.as_ref(),
                after: &after,
                reading: r,
                opened_alarms: &opened,
            };
            for intent in opts.rules.evaluate(&ctx, &change, now) {
                report
                    .orders
                    .push(crate::orders::upsert_recorded(tx, &intent, now, "rules")?);
            }
            for gone_or_back in opts.rules.resolve(&ctx, &change) {
                if let Some(c) = crate::resolution::apply(tx, serial, &gone_or_back, now)? {
                    report.orders.push(c);
                }
            }
        }
    }
    drop(insert);
    report.stored += new_readings;
    device.latest = if advanced { Some(after) } else { before };
    if new_readings == 0 {
        return Ok(device);
    }
    crate::exposure::mark_dirty(tx, serial, rollups.keys())?;
    write_rollups(tx, serial, rollups)?;
    if advanced && let Some(latest) = &device.latest {
        write_latest(tx, serial, latest)?;
    }
    let firmware = device
        .latest
        .as_ref()
        .and_then(|l| l.firmware.clone())
        .or_else(|| device.firmware.clone());
    // An unchanged row is not rewritten: with thousands of devices per batch that is a
    // page per few dozen devices saved. `last_seen_at` moves in steps of a minute.
    let changed = !device.online
        || firmware != device.firmware
        || last_seen >= device.last_seen_ms.saturating_add(LAST_SEEN_RESOLUTION_MS);
    if changed {
        tx.prepare_cached(
            "UPDATE devices SET connection = 'online', firmware = COALESCE(?2, firmware), \
             last_seen_at = MAX(COALESCE(last_seen_at, 0), ?3) WHERE serial = ?1",
        )
        .and_then(|mut s| s.execute(params![serial.as_str(), firmware, last_seen]))
        .map_err(sql_err)?;
        device.online = true;
        device.firmware = firmware;
        device.last_seen_ms = device.last_seen_ms.max(last_seen);
    }
    Ok(device)
}

/// Moves the latest state forward to reading `r`, opening and closing alarm episodes.
fn advance_state(
    tx: &Transaction<'_>,
    serial: &Serial,
    model: Option<&ModelSpec>,
    state: &mut LatestState,
    r: &Reading,
    opened: &mut Vec<AlarmCode>,
) -> Result<(), StoreError> {
    state.seq = r.seq;
    state.ts = Some(r.ts);
    state.received_at = Some(r.received_at);
    for (k, v) in &r.values {
        state.values.insert(k.clone(), *v);
    }
    if r.firmware.is_some() {
        state.firmware.clone_from(&r.firmware);
    }
    let Some(active) = &r.alarms else {
        return Ok(());
    };
    let seq = i64::try_from(r.seq).unwrap_or(i64::MAX);
    for code in active.iter().filter(|c| !state.alarms.contains(c)) {
        let severity = model
            .and_then(|m| m.alarm(code))
            .map(|a| a.severity.as_str());
        tx.prepare_cached(
            "INSERT INTO alarm_episodes (serial, code, severity, started_at, started_seq, runtime_hours_at_start) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| {
            s.execute(params![serial.as_str(), code.as_str(), severity, ms(r.ts), seq, state.values.get("runtime_hours")])
        })
        .map_err(sql_err)?;
        let (id, age) = (
            tx.last_insert_rowid(),
            state.values.get("runtime_hours").copied(),
        );
        crate::reliability::episode_opened(tx, serial, model, code, id, ms(r.ts), age)?;
        opened.push(code.clone());
    }
    for code in state.alarms.iter().filter(|c| !active.contains(c)) {
        tx.prepare_cached(
            "UPDATE alarm_episodes SET ended_at = ?3, ended_seq = ?4, \
             duration_s = MAX(0, (?3 - started_at) / 1000.0) \
             WHERE serial = ?1 AND code = ?2 AND ended_at IS NULL",
        )
        .and_then(|mut s| s.execute(params![serial.as_str(), code.as_str(), ms(r.ts), seq]))
        .map_err(sql_err)?;
    }
    state.alarms.clone_from(active);
    Ok(())
}

fn write_rollups(
    tx: &Transaction<'_>,
    serial: &Serial,
    rollups: HashMap<(i64, &str), Acc>,
) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO rollups (serial, hour, field, count, sum, min, max, last, last_seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (serial, hour, field) DO UPDATE SET \
               count = count + excluded.count, sum = sum + excluded.sum, \
               min = MIN(min, excluded.min), max = MAX(max, excluded.max), \
               last = CASE WHEN excluded.last_seq >= last_seq THEN excluded.last ELSE last END, \
               last_seq = MAX(last_seq, excluded.last_seq) \
             RETURNING sum",
        )
        .map_err(sql_err)?;
    for ((hour, field), a) in rollups {
        let last_seq = i64::try_from(a.last_seq).unwrap_or(i64::MAX);
        let sum: Option<f64> = stmt
            .query_row(
                params![
                    serial.as_str(),
                    hour,
                    field,
                    a.count,
                    a.sum,
                    a.min,
                    a.max,
                    a.last,
                    last_seq
                ],
                |r| r.get(0),
            )
            .map_err(sql_err)?;
        // Telemetry validation bounds every value so that this cannot happen; a sum
        // that overflows anyway is refused (the batch rolls back) rather than served as
        // null or left to fail a later commit.
        if !sum.is_some_and(f64::is_finite) {
            return Err(StoreError::Invalid(format!(
                "the {field} rollup of {serial} for the hour at {hour} ms would not be finite \
                 (a value beyond what an hour can sum)"
            )));
        }
    }
    Ok(())
}

fn write_latest(tx: &Transaction<'_>, serial: &Serial, s: &LatestState) -> Result<(), StoreError> {
    let seq = i64::try_from(s.seq).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "INSERT INTO latest_state (serial, seq, ts, received_at, vals, alarms, firmware) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (serial) DO UPDATE SET seq = excluded.seq, ts = excluded.ts, received_at = excluded.received_at, \
         vals = excluded.vals, alarms = excluded.alarms, firmware = excluded.firmware",
    )
    .and_then(|mut st| {
        st.execute(params![
            serial.as_str(),
            seq,
            s.ts.map(ms),
            s.received_at.map(ms),
            serde_json::to_string(&s.values).unwrap_or_else(|_| "{}".into()),
            serde_json::to_string(&s.alarms).unwrap_or_else(|_| "[]".into()),
            s.firmware
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

/// What [`upsert_order`] did: the order change and, for an active order, each field a
/// dispatcher acts on that the trigger changed (`{"before": …, "after": …}`); empty when
/// the trigger changed nothing (then the version stayed).
pub(crate) struct OrderUpsert {
    pub(crate) change: OrderChange,
    pub(crate) changes: serde_json::Map<String, serde_json::Value>,
    /// The active order was marked with its condition cleared (policy `[resolution]`):
    /// this trigger shows it back.
    pub(crate) was_cleared: bool,
}

/// The fields of an active order a repeat trigger may change.
struct ActiveOrder {
    id: i64,
    priority: String,
    respond_by: i64,
    arrive_by: i64,
    complete_by: i64,
    title: String,
    solution: String,
    skills: String,
    parts: String,
    labour_minutes: u32,
    trigger_count: u32,
    /// The order is marked with its condition cleared (`condition_cleared_at`).
    cleared: bool,
}

fn active_order(tx: &Transaction<'_>, o: &OrderIntent) -> Result<Option<ActiveOrder>, StoreError> {
    tx.prepare_cached(
        "SELECT id, priority, respond_by, arrive_by, complete_by, title, solution, skills, parts, \
         labour_minutes, trigger_count, condition_cleared_at IS NOT NULL FROM orders \
         WHERE serial = ?1 AND cause = ?2 AND status IN ('open', 'acknowledged', 'assigned', 'in_progress')",
    )
    .and_then(|mut s| {
        s.query_row(params![o.serial.as_str(), o.cause.as_str()], |r| {
            Ok(ActiveOrder {
                id: r.get(0)?,
                priority: r.get(1)?,
                respond_by: r.get(2)?,
                arrive_by: r.get(3)?,
                complete_by: r.get(4)?,
                title: r.get(5)?,
                solution: r.get(6)?,
                skills: r.get(7)?,
                parts: r.get(8)?,
                labour_minutes: r.get(9)?,
                trigger_count: r.get(10)?,
                cleared: r.get(11)?,
            })
        })
        .optional()
    })
    .map_err(sql_err)
}

/// Records `field` in `changes` when `after` differs from `before`; returns `after`.
fn note<T: PartialEq + serde::Serialize>(
    changes: &mut serde_json::Map<String, serde_json::Value>,
    field: &str,
    before: T,
    after: T,
) -> T {
    if before != after {
        changes.insert(
            field.to_owned(),
            serde_json::json!({"before": before, "after": after}),
        );
    }
    after
}

/// The active order with `o`'s (serial, cause) as `o` leaves it: a trigger may only make
/// it more urgent (the more urgent priority, the earlier deadlines) and set the work it
/// asks for (skills, parts, labour); only a trigger that starts an episode counts and
/// replaces title, solution, evidence and `last_triggered_at`. Within an episode those
/// stay as the episode's first trigger left them, so that the representation (and with it
/// the version, the `ETag`) changes only when something a dispatcher acts on changes.
fn retrigger(
    a: &ActiveOrder,
    o: &OrderIntent,
) -> Result<(ActiveOrder, serde_json::Map<String, serde_json::Value>), StoreError> {
    let mut c = serde_json::Map::new();
    let urgent = a.priority.as_str().min(o.priority.as_str()).to_owned();
    let priority = note(&mut c, "priority", a.priority.clone(), urgent);
    let respond_by = note(
        &mut c,
        "respond_by",
        crate::convert::from_ms(a.respond_by),
        crate::convert::from_ms(a.respond_by.min(ms(o.sla.respond_by))),
    );
    let arrive_by = note(
        &mut c,
        "arrive_by",
        crate::convert::from_ms(a.arrive_by),
        crate::convert::from_ms(a.arrive_by.min(ms(o.sla.arrive_by))),
    );
    let complete_by = note(
        &mut c,
        "complete_by",
        crate::convert::from_ms(a.complete_by),
        crate::convert::from_ms(a.complete_by.min(ms(o.sla.complete_by))),
    );
    let skills_before: serde_json::Value = serde_json::from_str(&a.skills).map_err(json_err)?;
    let skills = note(&mut c, "skills", skills_before, serde_json::json!(o.skills));
    let parts_before: serde_json::Value = serde_json::from_str(&a.parts).map_err(json_err)?;
    let parts = note(&mut c, "parts", parts_before, serde_json::json!(o.parts));
    let labour_minutes = note(&mut c, "labour_minutes", a.labour_minutes, o.labour_minutes);
    let (title, solution, trigger_count) = if o.new_episode {
        (
            note(&mut c, "title", a.title.clone(), o.title.clone()),
            note(&mut c, "solution", a.solution.clone(), o.solution.clone()),
            note(
                &mut c,
                "trigger_count",
                a.trigger_count,
                a.trigger_count.saturating_add(1),
            ),
        )
    } else {
        (a.title.clone(), a.solution.clone(), a.trigger_count)
    };
    let next = ActiveOrder {
        id: a.id,
        priority,
        respond_by: ms(respond_by),
        arrive_by: ms(arrive_by),
        complete_by: ms(complete_by),
        title,
        solution,
        skills: skills.to_string(),
        parts: parts.to_string(),
        labour_minutes,
        trigger_count,
        cleared: a.cleared,
    };
    Ok((next, c))
}

/// Creates the order, or applies a repeat trigger to the active one for the same
/// (serial, cause) (see [`retrigger`]); the version moves only when a field changed.
pub(crate) fn upsert_order(
    tx: &Transaction<'_>,
    o: &OrderIntent,
    now: DateTime<Utc>,
) -> Result<OrderUpsert, StoreError> {
    let skills = serde_json::to_string(&o.skills).map_err(json_err)?;
    let parts = serde_json::to_string(&o.parts).map_err(json_err)?;
    let evidence = serde_json::to_string(&o.evidence).map_err(json_err)?;
    if let Some(active) = active_order(tx, o)? {
        let (next, changes) = retrigger(&active, o)?;
        if !changes.is_empty() {
            tx.prepare_cached(
                "UPDATE orders SET priority = ?2, respond_by = ?3, arrive_by = ?4, complete_by = ?5, \
                 title = ?6, solution = ?7, skills = ?8, parts = ?9, labour_minutes = ?10, trigger_count = ?11, \
                 last_triggered_at = CASE WHEN ?12 THEN ?13 ELSE last_triggered_at END, \
                 evidence = CASE WHEN ?12 THEN ?14 ELSE evidence END, \
                 updated_at = ?15, version = version + 1 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    next.id,
                    next.priority,
                    next.respond_by,
                    next.arrive_by,
                    next.complete_by,
                    next.title,
                    next.solution,
                    next.skills,
                    next.parts,
                    next.labour_minutes,
                    next.trigger_count,
                    o.new_episode,
                    ms(o.triggered_at),
                    evidence,
                    ms(now)
                ])
            })
            .map_err(sql_err)?;
        }
        return Ok(OrderUpsert {
            change: OrderChange {
                order_id: active.id,
                serial: o.serial.clone(),
                cause: o.cause.clone(),
                created: false,
            },
            changes,
            was_cleared: active.cleared,
        });
    }
    tx.prepare_cached(
        "INSERT INTO orders (serial, cause, kind, priority, status, title, solution, skills, parts, labour_minutes, \
         evidence, respond_by, arrive_by, complete_by, created_at, updated_at, trigger_count, last_triggered_at, version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, 1, ?16, 1)",
    )
    .and_then(|mut s| {
        s.execute(params![
            o.serial.as_str(),
            o.cause.as_str(),
            o.kind.as_str(),
            o.priority.as_str(),
            OrderStatus::Open.as_str(),
            o.title,
            o.solution,
            skills,
            parts,
            o.labour_minutes,
            evidence,
            ms(o.sla.respond_by),
            ms(o.sla.arrive_by),
            ms(o.sla.complete_by),
            ms(now),
            ms(o.triggered_at)
        ])
    })
    .map_err(sql_err)?;
    let id = tx.last_insert_rowid();
    tracing::info!(order_id = id, serial = %o.serial, cause = %o.cause, priority = %o.priority, "order raised");
    Ok(OrderUpsert {
        change: OrderChange {
            order_id: id,
            serial: o.serial.clone(),
            cause: o.cause.clone(),
            created: true,
        },
        changes: serde_json::Map::new(),
        was_cleared: false,
    })
}

/// Writes each dead letter, or counts it on the row of the same message refused within
/// [`DEAD_LETTER_REPEAT_WINDOW`] of that row's first receipt (a resend after a lost
/// acknowledgement, a broker's redelivery, the same message twice in one batch). Returns
/// how many were counted on an existing row.
fn record_dead_letters(tx: &Transaction<'_>, dead: &[NewDeadLetter]) -> Result<usize, StoreError> {
    if dead.is_empty() {
        return Ok(0);
    }
    let mut find = tx
        .prepare_cached(
            "SELECT id FROM dead_letters WHERE fingerprint = ?1 AND received_at >= ?2 \
             AND client_id = ?3 AND topic = ?4 AND reason = ?5 AND payload = ?6 \
             AND (?7 IS NULL OR detail = ?7) ORDER BY id DESC LIMIT 1",
        )
        .map_err(sql_err)?;
    let mut repeat = tx
        .prepare_cached(
            "UPDATE dead_letters SET repeats = repeats + 1, last_seen_at = MAX(last_seen_at, ?2) \
             WHERE id = ?1",
        )
        .map_err(sql_err)?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO dead_letters \
             (received_at, topic, client_id, reason, detail, payload, repeats, last_seen_at, fingerprint) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?1, ?7)",
        )
        .map_err(sql_err)?;
    let mut repeats = 0;
    for d in dead {
        let key = DeadLetterKey::of(d);
        let at = ms(d.received_at);
        let earlier: Option<i64> = find
            .query_row(
                params![
                    key.fingerprint,
                    ms(d.received_at - DEAD_LETTER_REPEAT_WINDOW),
                    d.client_id,
                    d.topic,
                    d.reason.as_str(),
                    d.payload,
                    key.detail,
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err)?;
        match earlier {
            Some(id) => {
                repeat.execute(params![id, at]).map_err(sql_err)?;
                repeats += 1;
            }
            None => {
                insert
                    .execute(params![
                        at,
                        d.topic,
                        d.client_id,
                        d.reason.as_str(),
                        d.detail,
                        d.payload,
                        key.fingerprint
                    ])
                    .map_err(sql_err)?;
            }
        }
    }
    Ok(repeats)
}

/// What makes two dead letters the same message.
struct DeadLetterKey<'a> {
    /// 64-bit FNV-1a of the key's parts (each length-prefixed), as SQLite stores it.
    fingerprint: i64,
    /// The detail takes part only for `payload_too_large`: its payload is cut to the
    /// first bytes, and the detail names the full sizes.
    detail: Option<&'a str>,
}

impl<'a> DeadLetterKey<'a> {
    fn of(d: &'a NewDeadLetter) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let detail = (d.reason == RejectReason::PayloadTooLarge).then_some(d.detail.as_str());
        let parts: [&[u8]; 5] = [
            d.client_id.as_bytes(),
            d.topic.as_bytes(),
            d.reason.as_str().as_bytes(),
            &d.payload,
            detail.unwrap_or_default().as_bytes(),
        ];
        let mut hash = OFFSET;
        for part in parts {
            let len = u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes();
            for byte in len.iter().chain(part) {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(PRIME);
            }
        }
        Self {
            fingerprint: i64::from_le_bytes(hash.to_le_bytes()),
            detail,
        }
    }
}

pub(crate) fn register_device(
    conn: &mut Connection,
    opts: &StoreOptions,
    d: NewDevice,
    now: DateTime<Utc>,
) -> Result<Device, StoreError> {
    let tx = conn.transaction().map_err(sql_err)?;
    let device = register_in(&tx, &opts.catalog, d, now)?;
    tx.commit().map_err(sql_err)?;
    Ok(device)
}

/// Registers `d` inside `tx` (the device import registers many in one transaction).
/// `Conflict` when the serial is registered already (other than `unassigned`).
pub(crate) fn register_in(
    tx: &rusqlite::Transaction<'_>,
    catalog: &fleetpulse_domain::catalog::Catalog,
    d: NewDevice,
    now: DateTime<Utc>,
) -> Result<Device, StoreError> {
    let spec = catalog
        .model(d.model.as_str())
        .ok_or_else(|| StoreError::Invalid(format!("model {} is not in the catalog", d.model)))?;
    d.check_history(now).map_err(StoreError::Invalid)?;
    let status = d.status.unwrap_or(LifecycleStatus::InStock);
    let criticality = d.criticality.unwrap_or(spec.default_criticality);
    let existing: Option<String> = tx
        .query_row(
            "SELECT status FROM devices WHERE serial = ?1",
            [d.serial.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err)?;
    let (commissioned, at_registration, observed) = (
        d.commissioned_at.map(ms),
        d.runtime_hours_at_registration,
        d.observed_from.map(ms),
    );
    match existing.as_deref() {
        Some(s) if s != LifecycleStatus::Unassigned.as_str() => {
            return Err(StoreError::Conflict(format!(
                "device {} is already registered (status {s})",
                d.serial
            )));
        }
        Some(_) => {
            tx.execute(
                "UPDATE devices SET model = ?2, kind = ?3, status = ?4, criticality = ?5, region = ?6, address = ?7, \
                 commissioned_at = ?8, runtime_hours_at_registration = ?9, observed_from = ?10 WHERE serial = ?1",
                params![d.serial.as_str(), spec.id.as_str(), spec.kind.as_str(), status.as_str(), criticality.as_str(), d.region, d.address,
                        commissioned, at_registration, observed],
            )
            .map_err(sql_err)?;
        }
        None => {
            tx.execute(
                "INSERT INTO devices (serial, model, kind, status, criticality, region, address, connection, registered_at, \
                 commissioned_at, runtime_hours_at_registration, observed_from) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    d.serial.as_str(),
                    spec.id.as_str(),
                    spec.kind.as_str(),
                    status.as_str(),
                    criticality.as_str(),
                    d.region,
                    d.address,
                    ConnectionState::Unknown.as_str(),
                    ms(now),
                    commissioned,
                    at_registration,
                    observed
                ],
            )
            .map_err(sql_err)?;
        }
    }
    read::device_row(tx, &d.serial)?.ok_or_else(|| {
        StoreError::Internal("registered device vanished inside its transaction".into())
    })
}

pub(crate) fn delete_readings_before(
    conn: &mut Connection,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let n = conn
        .execute("DELETE FROM readings WHERE ts < ?1", [ms(before)])
        .map_err(sql_err)?;
    Ok(n as u64)
}

pub(crate) fn mark_all_offline(conn: &mut Connection) -> Result<u64, StoreError> {
    let n = conn
        .execute(
            "UPDATE devices SET connection = 'offline' WHERE connection <> 'offline'",
            [],
        )
        .map_err(sql_err)?;
    Ok(n as u64)
}
