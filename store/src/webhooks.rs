//! [`Webhooks`] on SQLite (migration 0005). `order_events` is the transactional outbox;
//! `fan_out` copies new events into one delivery row per active webhook and moves the
//! webhook's cursor in the same transaction, so an event is queued for each receiver
//! exactly once even across crashes.

use chrono::{DateTime, Utc};
use fleetpulse_domain::dispatch::Actor;
use fleetpulse_domain::store::{Page, StoreError};
use fleetpulse_domain::webhook::{
    AttemptResult, Delivery, DeliveryState, DueDelivery, Webhook, Webhooks,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::SqliteStore;
use crate::audit::insert_audit;
use crate::convert::{from_ms, json_err, ms, sql_err};
use crate::orders::{EVENT_COLS, event_from};

/// Most deliveries one page of the log returns (the API's `limit` maximum).
const MAX_DELIVERY_PAGE: usize = 1000;

const WEBHOOK_COLS: &str = "w.id, w.name, w.url, w.created_at, w.disabled_at, \
     (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.state = 'pending'), \
     (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.state = 'dead')";

fn webhook_from(row: &Row<'_>) -> Result<Webhook, StoreError> {
    Ok(Webhook {
        id: row.get(0).map_err(sql_err)?,
        name: row.get(1).map_err(sql_err)?,
        url: row.get(2).map_err(sql_err)?,
        created_at: from_ms(row.get(3).map_err(sql_err)?),
        disabled_at: row.get::<_, Option<i64>>(4).map_err(sql_err)?.map(from_ms),
        pending: row.get::<_, i64>(5).map_err(sql_err)?.max(0) as u64,
        dead: row.get::<_, i64>(6).map_err(sql_err)?.max(0) as u64,
    })
}

fn webhook(conn: &Connection, id: i64) -> Result<Option<Webhook>, StoreError> {
    conn.query_row(
        &format!("SELECT {WEBHOOK_COLS} FROM webhooks w WHERE w.id = ?1"),
        [id],
        |r| Ok(webhook_from(r)),
    )
    .optional()
    .map_err(sql_err)?
    .transpose()
}

const DELIVERY_COLS: &str = "id, webhook_id, event_id, order_id, state, attempts, next_attempt_at, \
     last_attempt_at, last_status, last_error, delivered_at";

fn state_from(text: &str) -> Result<DeliveryState, StoreError> {
    match text {
        "pending" => Ok(DeliveryState::Pending),
        "delivered" => Ok(DeliveryState::Delivered),
        "dead" => Ok(DeliveryState::Dead),
        other => Err(StoreError::Internal(format!(
            "webhook_deliveries.state holds {other:?}"
        ))),
    }
}

fn state_text(s: DeliveryState) -> &'static str {
    match s {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Dead => "dead",
    }
}

fn delivery_from(row: &Row<'_>, at: usize) -> Result<Delivery, StoreError> {
    let state: String = row.get(at + 4).map_err(sql_err)?;
    Ok(Delivery {
        id: row.get(at).map_err(sql_err)?,
        webhook_id: row.get(at + 1).map_err(sql_err)?,
        event_id: row.get(at + 2).map_err(sql_err)?,
        order_id: row.get(at + 3).map_err(sql_err)?,
        state: state_from(&state)?,
        attempts: row.get(at + 5).map_err(sql_err)?,
        next_attempt_at: from_ms(row.get(at + 6).map_err(sql_err)?),
        last_attempt_at: row
            .get::<_, Option<i64>>(at + 7)
            .map_err(sql_err)?
            .map(from_ms),
        last_status: row.get(at + 8).map_err(sql_err)?,
        last_error: row.get(at + 9).map_err(sql_err)?,
        delivered_at: row
            .get::<_, Option<i64>>(at + 10)
            .map_err(sql_err)?
            .map(from_ms),
    })
}

#[async_trait::async_trait]
impl Webhooks for SqliteStore {
    async fn create_webhook(
        &self,
        name: &str,
        url: &str,
        secret: &str,
        actor: Actor,
    ) -> Result<Webhook, StoreError> {
        let (name, url, secret) = (name.to_owned(), url.to_owned(), secret.to_owned());
        self.write(move |conn, opts, _| {
            let now = opts.clock.now();
            let tx = conn.transaction().map_err(sql_err)?;
            // a new receiver starts with the next event, not the whole history
            let cursor: i64 = tx
                .query_row("SELECT COALESCE(MAX(id), 0) FROM order_events", [], |r| r.get(0))
                .map_err(sql_err)?;
            tx.execute(
                "INSERT INTO webhooks (name, url, secret, created_at, cursor) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, url, secret, ms(now), cursor],
            )
            .map_err(sql_err)?;
            let id = tx.last_insert_rowid();
            let w = webhook(&tx, id)?.ok_or_else(|| StoreError::Internal("webhook vanished".into()))?;
            insert_audit(&tx, now, &actor.0, "webhook.create", &format!("webhook:{id}"), None,
                Some(&serde_json::to_value(&w).map_err(json_err)?))?;
            tx.commit().map_err(sql_err)?;
            Ok(w)
        })
        .await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.read(|conn, _| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {WEBHOOK_COLS} FROM webhooks w ORDER BY w.id"
                ))
                .map_err(sql_err)?;
            let mut rows = stmt.query([]).map_err(sql_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(sql_err)? {
                out.push(webhook_from(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn disable_webhook(&self, id: i64, actor: Actor) -> Result<Webhook, StoreError> {
        self.write(move |conn, opts, _| {
            let now = opts.clock.now();
            let tx = conn.transaction().map_err(sql_err)?;
            let before =
                webhook(&tx, id)?.ok_or_else(|| StoreError::NotFound(format!("webhook {id}")))?;
            tx.execute(
                "UPDATE webhooks SET disabled_at = COALESCE(disabled_at, ?2) WHERE id = ?1",
                params![id, ms(now)],
            )
            .map_err(sql_err)?;
            let after =
                webhook(&tx, id)?.ok_or_else(|| StoreError::Internal("webhook vanished".into()))?;
            insert_audit(
                &tx,
                now,
                &actor.0,
                "webhook.disable",
                &format!("webhook:{id}"),
                Some(&serde_json::to_value(&before).map_err(json_err)?),
                Some(&serde_json::to_value(&after).map_err(json_err)?),
            )?;
            tx.commit().map_err(sql_err)?;
            Ok(after)
        })
        .await
    }

    async fn deliveries(
        &self,
        webhook_id: i64,
        state: Option<DeliveryState>,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Page<Delivery>, StoreError> {
        let limit = limit.clamp(1, MAX_DELIVERY_PAGE);
        self.read(move |conn, _| {
            if webhook(conn, webhook_id)?.is_none() {
                return Err(StoreError::NotFound(format!("webhook {webhook_id}")));
            }
            // newest first: the next page holds the ids below the last one of this page
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE webhook_id = ?1 \
                     AND (?2 IS NULL OR state = ?2) AND id < ?3 ORDER BY id DESC LIMIT ?4"
                ))
                .map_err(sql_err)?;
            let mut rows = stmt
                .query(params![
                    webhook_id,
                    state.map(state_text),
                    after.unwrap_or(i64::MAX),
                    limit as i64
                ])
                .map_err(sql_err)?;
            let mut items = Vec::new();
            while let Some(row) = rows.next().map_err(sql_err)? {
                items.push(delivery_from(row, 0)?);
            }
            let next = (items.len() == limit)
                .then(|| items.last().map(|d: &Delivery| d.id.to_string()))
                .flatten();
            Ok(Page { items, next })
        })
        .await
    }

    async fn fan_out(&self, limit: usize, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.write_keeping_cache(move |conn, _, _| {
            let tx = conn.transaction().map_err(sql_err)?;
            let hooks: Vec<(i64, i64)> = {
                let mut stmt = tx
                    .prepare_cached("SELECT id, cursor FROM webhooks WHERE disabled_at IS NULL")
                    .map_err(sql_err)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(sql_err)?;
                rows.collect::<Result<_, _>>().map_err(sql_err)?
            };
            let mut queued = 0;
            for (id, cursor) in hooks {
                let n = tx
                    .execute(
                        "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, event_id, order_id, state, next_attempt_at) \
                         SELECT ?1, e.id, e.order_id, 'pending', ?2 FROM order_events e \
                         WHERE e.id > ?3 ORDER BY e.id LIMIT ?4",
                        params![id, ms(now), cursor, limit as i64],
                    )
                    .map_err(sql_err)?;
                if n > 0 {
                    tx.execute(
                        "UPDATE webhooks SET cursor = (SELECT MAX(event_id) FROM webhook_deliveries WHERE webhook_id = ?1) \
                         WHERE id = ?1",
                        [id],
                    )
                    .map_err(sql_err)?;
                }
                queued += n;
            }
            tx.commit().map_err(sql_err)?;
            Ok(queued)
        })
        .await
    }

    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.read(move |conn, _| {
            let cols: Vec<String> = DELIVERY_COLS
                .split(", ")
                .map(|c| format!("d.{}", c.trim()))
                .collect();
            let ecols: Vec<String> = EVENT_COLS
                .split(", ")
                .map(|c| format!("e.{}", c.trim()))
                .collect();
            // the oldest pending delivery of each (webhook, order), if due
            let sql = format!(
                "SELECT {}, w.url, w.secret, {} FROM webhook_deliveries d \
                 JOIN webhooks w ON w.id = d.webhook_id AND w.disabled_at IS NULL \
                 JOIN order_events e ON e.id = d.event_id \
                 WHERE d.state = 'pending' AND d.id IN ( \
                     SELECT MIN(p.id) FROM webhook_deliveries p WHERE p.state = 'pending' \
                     GROUP BY p.webhook_id, p.order_id) \
                 AND d.next_attempt_at <= ?1 ORDER BY d.id LIMIT ?2",
                cols.join(", "),
                ecols.join(", ")
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
            let mut rows = stmt
                .query(params![ms(now), limit as i64])
                .map_err(sql_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(sql_err)? {
                let delivery = delivery_from(row, 0)?;
                let url: String = row.get(11).map_err(sql_err)?;
                let secret: String = row.get(12).map_err(sql_err)?;
                let event = event_from_offset(row, 13)?;
                out.push(DueDelivery {
                    delivery,
                    url,
                    secret,
                    event,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn record_attempt(
        &self,
        delivery_id: i64,
        result: AttemptResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write_keeping_cache(move |conn, _, _| {
            let t = ms(now);
            match result {
                AttemptResult::Delivered { status } => conn.execute(
                    "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1, \
                     last_attempt_at = ?2, delivered_at = ?2, last_status = ?3, last_error = NULL WHERE id = ?1",
                    params![delivery_id, t, status],
                ),
                AttemptResult::Failed { status, error, retry_at } => conn.execute(
                    "UPDATE webhook_deliveries SET state = ?3, attempts = attempts + 1, last_attempt_at = ?2, \
                     last_status = ?4, last_error = ?5, next_attempt_at = ?6 WHERE id = ?1",
                    params![
                        delivery_id,
                        t,
                        if retry_at.is_some() { "pending" } else { "dead" },
                        status,
                        error,
                        retry_at.map(ms).unwrap_or(t)
                    ],
                ),
            }
            .map_err(sql_err)?;
            Ok(())
        })
        .await
    }
}

/// An order event whose columns start at `at` in a joined row.
fn event_from_offset(
    row: &Row<'_>,
    at: usize,
) -> Result<fleetpulse_domain::dispatch::OrderEvent, StoreError> {
    if at == 0 {
        return event_from(row);
    }
    use fleetpulse_domain::serial::Serial;
    let serial: String = row.get(at + 2).map_err(sql_err)?;
    let from: Option<String> = row.get(at + 6).map_err(sql_err)?;
    let to: String = row.get(at + 7).map_err(sql_err)?;
    let data: String = row.get(at + 9).map_err(sql_err)?;
    Ok(fleetpulse_domain::dispatch::OrderEvent {
        id: row.get(at).map_err(sql_err)?,
        order_id: row.get(at + 1).map_err(sql_err)?,
        serial: Serial::parse(&serial)
            .map_err(|e| StoreError::Internal(format!("order_events.serial: {e}")))?,
        at: from_ms(row.get(at + 3).map_err(sql_err)?),
        actor: row.get(at + 4).map_err(sql_err)?,
        kind: row.get(at + 5).map_err(sql_err)?,
        from_status: from
            .map(|f| crate::convert::parse_col("order_events.from_status", &f))
            .transpose()?,
        to_status: crate::convert::parse_col("order_events.to_status", &to)?,
        version: row.get(at + 8).map_err(sql_err)?,
        data: serde_json::from_str(&data).map_err(json_err)?,
    })
}
