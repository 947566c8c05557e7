//! [`Dispatch`] on SQLite: the order lifecycle ([`crate::orders`]), tokens and the audit
//! log ([`crate::audit`]). Writes go through the one write connection, reads through the
//! pool, like everything else in the store.

use chrono::{DateTime, Utc};
use fleetpulse_domain::dispatch::{
    Actor, ApiToken, AuditEntry, AuditQuery, Dispatch, FailureEvent, NewAudit, OrderAction,
    OrderEvent, Role, StatusChange, StatusHistoryEntry, TransitionError,
};
use fleetpulse_domain::order::{Order, OrderIntent};
use fleetpulse_domain::serial::Serial;
use fleetpulse_domain::store::{Device, Page, StoreError};

use crate::{SqliteStore, audit, orders};

#[async_trait::async_trait]
impl Dispatch for SqliteStore {
    async fn transition(
        &self,
        id: i64,
        expected_version: u32,
        action: OrderAction,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Order, TransitionError> {
        let result = self
            .write(move |conn, opts, _| {
                Ok(orders::transition(
                    conn,
                    opts,
                    id,
                    expected_version,
                    action,
                    &actor,
                    now,
                ))
            })
            .await;
        result?
    }

    async fn create_manual_order(
        &self,
        intent: OrderIntent,
        actor: Actor,
    ) -> Result<(Order, bool), StoreError> {
        self.write(move |conn, opts, _| {
            orders::create_manual_order(conn, intent, &actor, opts.clock.now())
        })
        .await
    }

    async fn order_history(&self, id: i64) -> Result<Vec<OrderEvent>, StoreError> {
        self.read(move |conn, _| orders::order_history(conn, id))
            .await
    }

    async fn order_events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        self.read(move |conn, _| orders::order_events_after(conn, after, limit))
            .await
    }

    async fn last_order_event_id(&self) -> Result<i64, StoreError> {
        self.read(move |conn, _| {
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM order_events", [], |r| {
                r.get(0)
            })
            .map_err(crate::convert::sql_err)
        })
        .await
    }

    async fn escalate_sla_breaches(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.write_keeping_cache(move |conn, _, _| crate::sla::escalate(conn, now).map(|v| v.len()))
            .await
    }

    async fn cancel_cleared_orders(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        // orders only: the device cache stays
        self.write_keeping_cache(move |conn, _, _| {
            crate::resolution::cancel_due(conn, now).map(|v| v.len())
        })
        .await
    }

    async fn sla_attainment(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<serde_json::Value, StoreError> {
        self.read(move |conn, _| crate::sla::attainment(conn, from, to, now))
            .await
    }

    async fn failure_events(&self, serial: &Serial) -> Result<Vec<FailureEvent>, StoreError> {
        let serial = serial.clone();
        self.read(move |conn, opts| orders::failure_events(conn, &opts.catalog, &serial))
            .await
    }

    async fn change_device_status(
        &self,
        serial: &Serial,
        change: StatusChange,
        actor: Actor,
    ) -> Result<Device, StoreError> {
        let serial = serial.clone();
        self.write(move |conn, opts, _| {
            orders::change_device_status(conn, &serial, change, &actor, opts.clock.now())
        })
        .await
    }

    async fn device_status_history(
        &self,
        serial: &Serial,
    ) -> Result<Vec<StatusHistoryEntry>, StoreError> {
        let serial = serial.clone();
        self.read(move |conn, _| orders::device_status_history(conn, &serial))
            .await
    }

    async fn create_api_token(
        &self,
        name: &str,
        role: Role,
        digest: [u8; 32],
        actor: Actor,
    ) -> Result<ApiToken, StoreError> {
        let name = name.to_owned();
        self.write(move |conn, opts, _| {
            audit::create_token(conn, &name, role, digest, &actor, opts.clock.now())
        })
        .await
    }

    async fn api_token_by_digest(&self, digest: [u8; 32]) -> Result<Option<ApiToken>, StoreError> {
        self.read(move |conn, _| audit::token_by_digest(conn, digest))
            .await
    }

    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.read(move |conn, _| audit::list_tokens(conn)).await
    }

    async fn revoke_api_token(&self, id: i64, actor: Actor) -> Result<ApiToken, StoreError> {
        self.write(move |conn, opts, _| audit::revoke_token(conn, id, &actor, opts.clock.now()))
            .await
    }

    async fn append_audit(&self, entry: NewAudit) -> Result<(), StoreError> {
        self.write_keeping_cache(move |conn, opts, _| audit::append(conn, &entry, opts.clock.now()))
            .await
    }

    async fn audit_log(&self, query: AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        self.read(move |conn, _| audit::audit_log(conn, &query))
            .await
    }
}
