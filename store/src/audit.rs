//! The audit log and API tokens on SQLite (migration 0004).
//!
//! `audit_log` is append-only: triggers abort any UPDATE or DELETE, so not even a bug in
//! this crate can rewrite history; nothing in the API writes to it except by making a
//! change. API tokens keep only the SHA-256 digest of their secret.

use chrono::{DateTime, Utc};
use fleetpulse_domain::dispatch::{Actor, ApiToken, AuditEntry, AuditQuery, NewAudit, Role};
use fleetpulse_domain::store::{Page, StoreError};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params, params_from_iter};
use serde_json::Value;

use crate::convert::{from_ms, json_err, ms, parse_col, sql_err};

pub(crate) fn insert_audit(
    tx: &Transaction<'_>,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO audit_log (at, actor, action, target, before, after) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            ms(at),
            actor,
            action,
            target,
            before.map(Value::to_string),
            after.map(Value::to_string)
        ])
    })
    .map_err(sql_err)?;
    Ok(())
}

pub(crate) fn append(
    conn: &mut Connection,
    e: &NewAudit,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(sql_err)?;
    insert_audit(
        &tx,
        now,
        &e.actor.0,
        &e.action,
        &e.target,
        e.before.as_ref(),
        e.after.as_ref(),
    )?;
    tx.commit().map_err(sql_err)
}

fn parse_json(text: Option<String>) -> Result<Option<Value>, StoreError> {
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(json_err)
}

pub(crate) fn audit_log(conn: &Connection, q: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
    let limit = q.limit.clamp(1, 1000);
    let mut sql = "SELECT id, at, actor, action, target, before, after FROM audit_log WHERE id > ?"
        .to_owned();
    let mut args = vec![SqlValue::Integer(q.after.unwrap_or(0))];
    if let Some(t) = &q.target {
        sql.push_str(" AND target = ?");
        args.push(SqlValue::Text(t.clone()));
    }
    if let Some(a) = &q.actor {
        sql.push_str(" AND actor = ?");
        args.push(SqlValue::Text(a.clone()));
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    args.push(SqlValue::Integer(limit as i64));
    let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
    let mut rows = stmt.query(params_from_iter(args)).map_err(sql_err)?;
    let mut items = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        items.push(AuditEntry {
            id: row.get(0).map_err(sql_err)?,
            at: from_ms(row.get(1).map_err(sql_err)?),
            actor: row.get(2).map_err(sql_err)?,
            action: row.get(3).map_err(sql_err)?,
            target: row.get(4).map_err(sql_err)?,
            before: parse_json(row.get(5).map_err(sql_err)?)?,
            after: parse_json(row.get(6).map_err(sql_err)?)?,
        });
    }
    let next = (items.len() == limit)
        .then(|| items.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Page { items, next })
}

const TOKEN_COLS: &str = "id, name, role, created_at, revoked_at";

fn token_from(row: &Row<'_>) -> Result<ApiToken, StoreError> {
    let role: String = row.get(2).map_err(sql_err)?;
    Ok(ApiToken {
        id: row.get(0).map_err(sql_err)?,
        name: row.get(1).map_err(sql_err)?,
        role: parse_col::<Role>("api_tokens.role", &role)?,
        created_at: from_ms(row.get(3).map_err(sql_err)?),
        revoked_at: row.get::<_, Option<i64>>(4).map_err(sql_err)?.map(from_ms),
    })
}

fn token(conn: &Connection, id: i64) -> Result<Option<ApiToken>, StoreError> {
    conn.query_row(
        &format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE id = ?1"),
        [id],
        |r| Ok(token_from(r)),
    )
    .optional()
    .map_err(sql_err)?
    .transpose()
}

pub(crate) fn create_token(
    conn: &mut Connection,
    name: &str,
    role: Role,
    digest: [u8; 32],
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<ApiToken, StoreError> {
    if name.trim().is_empty() || name.chars().count() > 128 {
        return Err(StoreError::Invalid(
            "a token name is 1 to 128 characters".into(),
        ));
    }
    let tx = conn.transaction().map_err(sql_err)?;
    tx.execute(
        "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, role.as_str(), digest.as_slice(), ms(now)],
    )
    .map_err(sql_err)?;
    let id = tx.last_insert_rowid();
    let t = token(&tx, id)?.ok_or_else(|| StoreError::Internal("token vanished".into()))?;
    insert_audit(
        &tx,
        now,
        &actor.0,
        "token.create",
        &format!("token:{id}"),
        None,
        Some(&serde_json::to_value(&t).map_err(json_err)?),
    )?;
    tx.commit().map_err(sql_err)?;
    Ok(t)
}

pub(crate) fn token_by_digest(
    conn: &Connection,
    digest: [u8; 32],
) -> Result<Option<ApiToken>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLS} FROM api_tokens WHERE token_sha256 = ?1 AND revoked_at IS NULL"
    ))
    .and_then(|mut s| {
        s.query_row([digest.as_slice()], |r| Ok(token_from(r)))
            .optional()
    })
    .map_err(sql_err)?
    .transpose()
}

pub(crate) fn list_tokens(conn: &Connection) -> Result<Vec<ApiToken>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {TOKEN_COLS} FROM api_tokens ORDER BY id"))
        .map_err(sql_err)?;
    let mut rows = stmt.query([]).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(token_from(row)?);
    }
    Ok(out)
}

pub(crate) fn revoke_token(
    conn: &mut Connection,
    id: i64,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<ApiToken, StoreError> {
    let tx = conn.transaction().map_err(sql_err)?;
    let before = token(&tx, id)?.ok_or_else(|| StoreError::NotFound(format!("token {id}")))?;
    if before.revoked_at.is_none() {
        tx.execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1",
            params![id, ms(now)],
        )
        .map_err(sql_err)?;
    }
    let after = token(&tx, id)?.ok_or_else(|| StoreError::Internal("token vanished".into()))?;
    insert_audit(
        &tx,
        now,
        &actor.0,
        "token.revoke",
        &format!("token:{id}"),
        Some(&serde_json::to_value(&before).map_err(json_err)?),
        Some(&serde_json::to_value(&after).map_err(json_err)?),
    )?;
    tx.commit().map_err(sql_err)?;
    Ok(after)
}
