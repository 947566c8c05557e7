//! The dispatch side's vocabulary: order transitions and their outcome, the order
//! history, API tokens and roles, the audit log, and the [`Dispatch`] trait the store
//! implements for them.
//!
//! The lifecycle is `open → acknowledged → assigned → in_progress → completed`, with
//! `cancelled` reachable from every active state and `assigned → assigned` meaning a
//! re-assignment. [`OrderStatus::allowed_next`] is the single source of that graph.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::AlarmCode;
use crate::device::{Criticality, LifecycleStatus, string_enum};
use crate::order::{Order, OrderStatus};
use crate::serial::Serial;
use crate::store::{Page, StoreError};

impl OrderStatus {
    /// The states an order in this state may move to.
    pub fn allowed_next(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            Open => &[Acknowledged, Cancelled],
            Acknowledged => &[Assigned, Cancelled],
            Assigned => &[Assigned, InProgress, Cancelled],
            InProgress => &[Completed, Cancelled],
            Completed | Cancelled => &[],
        }
    }
}

/// A part used on site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsedPart {
    /// Part number as the spare-parts system knows it (1 to 64 characters).
    pub number: String,
    /// How many (at least 1).
    pub qty: u32,
}

/// What the engineer reports when the work is done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionOutcome {
    /// The device had failed: creates a failure event at the device's current runtime hours.
    pub failure_confirmed: bool,
    /// The fault code the engineer confirmed (e.g. `E101`).
    #[serde(default)]
    pub fault_code: Option<AlarmCode>,
    #[serde(default)]
    pub parts_replaced: Vec<UsedPart>,
    /// Catalog consumable ids replaced (e.g. `filter`): resets each one's life baseline.
    #[serde(default)]
    pub consumables_replaced: Vec<String>,
    #[serde(default)]
    pub labour_minutes: Option<u32>,
    #[serde(default)]
    pub notes: Option<String>,
    /// Reference of the customer's signature in the field-service system.
    #[serde(default)]
    pub signature_ref: Option<String>,
    /// The device's lifecycle status after the visit (e.g. `in_repair` when taken to the
    /// workshop); unchanged when absent.
    #[serde(default)]
    pub device_status: Option<LifecycleStatus>,
}

/// One step of the lifecycle, with what it carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum OrderAction {
    Acknowledge,
    Assign {
        engineer: String,
        planned_visit_at: Option<DateTime<Utc>>,
    },
    Start,
    Complete(CompletionOutcome),
    Cancel {
        reason: String,
    },
}

impl OrderAction {
    /// The state the action leads to.
    pub fn target(&self) -> OrderStatus {
        match self {
            OrderAction::Acknowledge => OrderStatus::Acknowledged,
            OrderAction::Assign { .. } => OrderStatus::Assigned,
            OrderAction::Start => OrderStatus::InProgress,
            OrderAction::Complete(_) => OrderStatus::Completed,
            OrderAction::Cancel { .. } => OrderStatus::Cancelled,
        }
    }

    /// The history event name: `acknowledged`, `assigned`, `started`, `completed`, `cancelled`.
    pub fn event_kind(&self) -> &'static str {
        match self {
            OrderAction::Acknowledge => "acknowledged",
            OrderAction::Assign { .. } => "assigned",
            OrderAction::Start => "started",
            OrderAction::Complete(_) => "completed",
            OrderAction::Cancel { .. } => "cancelled",
        }
    }
}

/// Who made a change: `rules`, `cli`, or `token:<id>:<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor(pub String);

impl Actor {
    pub fn rules() -> Self {
        Actor("rules".into())
    }
    pub fn token(id: i64, name: &str) -> Self {
        Actor(format!("token:{id}:{name}"))
    }
}

/// Why a transition was refused.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("order {0} does not exist")]
    NotFound(i64),
    #[error("order {id} is {current} and cannot become {wanted}")]
    Illegal {
        id: i64,
        current: OrderStatus,
        wanted: OrderStatus,
        allowed: Vec<OrderStatus>,
    },
    #[error("order {id} is at version {current}, not {expected}: someone changed it meanwhile")]
    VersionMismatch {
        id: i64,
        expected: u32,
        current: u32,
    },
    #[error("{0}")]
    Invalid(String),
    /// The step would put the device at a customer, and it has no address (see
    /// [`LifecycleStatus::allows_address`](crate::LifecycleStatus::allows_address)).
    #[error("device {serial} has no address: a device at a customer needs an address")]
    AddressRequired { serial: crate::Serial },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One entry of an order's history (and of the order event stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderEvent {
    /// Position in the global order event sequence (SSE id, webhook order).
    pub id: i64,
    pub order_id: i64,
    pub serial: Serial,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// `created`, `escalated`, `updated`, `task_added`, `acknowledged`, `assigned`,
    /// `started`, `completed`, `cancelled`, `sla_breached`, `condition_cleared`,
    /// `condition_returned` (actor `system`, policy `[resolution]`).
    pub kind: String,
    pub from_status: Option<OrderStatus>,
    pub to_status: OrderStatus,
    /// The order's version after the change.
    pub version: u32,
    pub data: serde_json::Value,
}

/// A confirmed failure of a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureEvent {
    pub id: i64,
    pub serial: Serial,
    pub at: DateTime<Utc>,
    /// The device's runtime-hour meter at the failure (its age), when known.
    pub runtime_hours: Option<f64>,
    /// `repair_order`, `import` or `alarm`.
    pub source: String,
    pub order_id: Option<i64>,
    pub fault_code: Option<String>,
    /// The failed component of the device's model (catalog id), when known.
    pub component: Option<String>,
    /// The failure mode (catalog id), when known.
    pub failure_mode: Option<String>,
    pub notes: Option<String>,
}

string_enum!(
    /// What an API token may do.
    Role {
        Dispatcher => "dispatcher",
        Planner => "planner",
        Quality => "quality",
        Admin => "admin",
        DeviceAdmin => "device-admin",
    }
);

/// A stored API token (never the secret: only its digest is kept).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One audit log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// An audit entry to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAudit {
    pub actor: Actor,
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuditQuery {
    pub target: Option<String>,
    pub actor: Option<String>,
    pub after: Option<i64>,
    pub limit: usize,
}

/// A device status change requested through the API.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusChange {
    pub status: LifecycleStatus,
    pub criticality: Option<Criticality>,
    pub region: Option<String>,
    pub address: Option<String>,
    pub reason: Option<String>,
}

/// A device status history entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusHistoryEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub from_status: Option<LifecycleStatus>,
    pub to_status: LifecycleStatus,
    pub reason: Option<String>,
}

/// What the dispatch API needs from the store beyond [`crate::store::Store`]. Every
/// change is written together with its history and audit entries in one transaction.
#[async_trait::async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// Applies one lifecycle step if the order is at `expected_version` and the step is
    /// allowed from its state; records the history event and the audit entry, and for a
    /// completion applies the outcome to the device (failure event, consumable
    /// baselines, lifecycle status). Returns the order after the change.
    async fn transition(
        &self,
        id: i64,
        expected_version: u32,
        action: OrderAction,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Order, TransitionError>;

    /// Creates an order by hand, or updates the active order for the same (serial, cause)
    /// exactly as a repeated rule trigger would. `true` when a new order was created.
    async fn create_manual_order(
        &self,
        intent: crate::order::OrderIntent,
        actor: Actor,
    ) -> Result<(Order, bool), StoreError>;

    /// The order's history, oldest first.
    async fn order_history(&self, id: i64) -> Result<Vec<OrderEvent>, StoreError>;

    /// Order events with id greater than `after`, in id order (stream and webhooks).
    async fn order_events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<OrderEvent>, StoreError>;

    /// Id of the newest order event (0 when there is none): where a new stream starts.
    async fn last_order_event_id(&self) -> Result<i64, StoreError>;

    /// Records an `sla_breached` order event (actor `sla`) for each deadline that passed
    /// before `now` and was not escalated yet. Returns how many.
    async fn escalate_sla_breaches(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Cancels every active order whose pending cancel (`cancel_at`, policy
    /// `[resolution]`: an alarm that needs no visit stayed clear for
    /// `cancel_cleared_alarm_after`) is at or before `now`, each with a `cancelled` event
    /// (actor `system`, `data.resolved_by_device`, the reading that cleared it as
    /// evidence). Returns how many. Meant for the same periodic task as
    /// [`Self::escalate_sla_breaches`].
    async fn cancel_cleared_orders(&self, now: DateTime<Utc>) -> Result<usize, StoreError>;

    /// SLA attainment per priority of the orders created in `[from, to)`, at `now`:
    /// for respond, arrive (work started on site) and complete, how many deadlines were
    /// met and missed, and the share met.
    async fn sla_attainment(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<serde_json::Value, StoreError>;

    /// Confirmed failures of one device, oldest first.
    async fn failure_events(&self, serial: &Serial) -> Result<Vec<FailureEvent>, StoreError>;

    /// Changes a device's lifecycle status (and where it is), with history and audit.
    async fn change_device_status(
        &self,
        serial: &Serial,
        change: StatusChange,
        actor: Actor,
    ) -> Result<crate::store::Device, StoreError>;

    /// A device's lifecycle status changes, oldest first.
    async fn device_status_history(
        &self,
        serial: &Serial,
    ) -> Result<Vec<StatusHistoryEntry>, StoreError>;

    /// Stores a new token's digest; audited.
    async fn create_api_token(
        &self,
        name: &str,
        role: Role,
        digest: [u8; 32],
        actor: Actor,
    ) -> Result<ApiToken, StoreError>;

    /// The live (not revoked) token with this digest.
    async fn api_token_by_digest(&self, digest: [u8; 32]) -> Result<Option<ApiToken>, StoreError>;

    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;

    /// Revokes a token; `NotFound` if it does not exist. Audited.
    async fn revoke_api_token(&self, id: i64, actor: Actor) -> Result<ApiToken, StoreError>;

    /// Appends an audit entry on its own.
    async fn append_audit(&self, entry: NewAudit) -> Result<(), StoreError>;

    /// The audit log, oldest first, keyset-paginated by id.
    async fn audit_log(&self, query: AuditQuery) -> Result<Page<AuditEntry>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_graph_is_the_documented_one() {
        assert_eq!(
            OrderStatus::Open.allowed_next(),
            &[OrderStatus::Acknowledged, OrderStatus::Cancelled]
        );
        assert!(OrderStatus::Completed.allowed_next().is_empty());
        for s in OrderStatus::ALL {
            assert_eq!(
                s.is_active(),
                s.allowed_next().contains(&OrderStatus::Cancelled),
                "{s}"
            );
        }
        assert_eq!("device-admin".parse::<Role>().ok(), Some(Role::DeviceAdmin));
    }
}
