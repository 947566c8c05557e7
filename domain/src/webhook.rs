//! Webhook subscriptions and deliveries: the store side of push delivery to the
//! dispatch side. The delivery worker lives in the API crate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::dispatch::{Actor, OrderEvent};
use crate::store::StoreError;

/// A registered receiver. The secret is shown once, at creation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Deliveries waiting (including those backing off).
    pub pending: u64,
    /// Deliveries that gave up after the configured number of attempts.
    pub dead: u64,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

/// One event for one webhook: the delivery log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event_id: i64,
    pub order_id: i64,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt (`None`: no answer, e.g. a timeout).
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery due now, with what to send and the key to sign it with.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub url: String,
    pub secret: String,
    pub event: OrderEvent,
}

/// The result of one attempt.
#[derive(Clone, Debug)]
pub enum AttemptResult {
    /// The receiver answered 2xx (this status).
    Delivered { status: u16 },
    /// Failed; retry at `retry_at`, or give up (`dead`) when attempts are exhausted.
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

/// Webhook storage.
#[async_trait::async_trait]
pub trait Webhooks: Send + Sync + 'static {
    /// Registers a receiver; it gets every order event committed from now on. Audited.
    async fn create_webhook(
        &self,
        name: &str,
        url: &str,
        secret: &str,
        actor: Actor,
    ) -> Result<Webhook, StoreError>;

    async fn list_webhooks(&self) -> Result<Vec<Webhook>, StoreError>;

    /// Stops deliveries to a receiver (pending ones stay in the log). Audited.
    async fn disable_webhook(&self, id: i64, actor: Actor) -> Result<Webhook, StoreError>;

    /// The delivery log of one webhook, newest first, keyset-paginated: `after` is the
    /// `next` of the previous page (the id of its last, oldest delivery).
    async fn deliveries(
        &self,
        webhook_id: i64,
        state: Option<DeliveryState>,
        after: Option<i64>,
        limit: usize,
    ) -> Result<crate::store::Page<Delivery>, StoreError>;

    /// Fans the order events committed since each active webhook's cursor out into
    /// pending deliveries (at most `limit` events per webhook). Returns how many.
    async fn fan_out(&self, limit: usize, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Per active webhook and order, the oldest pending delivery if it is due at `now`:
    /// a later event of the same order waits until the earlier one is delivered or dead,
    /// so each order's events arrive in order.
    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError>;

    /// Records an attempt.
    async fn record_attempt(
        &self,
        delivery_id: i64,
        result: AttemptResult,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}
