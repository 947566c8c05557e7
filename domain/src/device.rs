//! Devices: kind, lifecycle status, criticality and connection state.

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $text)] $variant),+ }

        // written out: the derive does not see serde renames made inside a macro
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable text form used in JSON, TOML, SQL and URLs.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = crate::device::UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(crate::device::UnknownValue {
                        what: stringify!($name),
                        value: s.to_owned(),
                        allowed: &[$($text),+],
                    }),
                }
            }
        }
    };
}
pub(crate) use string_enum;

/// A text that is not one of an enumeration's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {what}; expected one of {allowed:?}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub allowed: &'static [&'static str],
}

string_enum!(
    /// What a device is.
    DeviceKind {
        OxygenConcentrator => "oxygen_concentrator",
        Ventilator => "ventilator",
        Cpap => "cpap",
        Other => "other",
    }
);

string_enum!(
    /// Where a device is in its life. `unassigned` is a device that announced itself over
    /// telemetry before anyone registered it (the `auto_register` unknown-device policy).
    LifecycleStatus {
        Unassigned => "unassigned",
        InStock => "in_stock",
        InTransit => "in_transit",
        AtCustomer => "at_customer",
        InRepair => "in_repair",
        Retired => "retired",
    }
);

impl LifecycleStatus {
    /// Whether a device may be in this status with `address` as where it is: a device
    /// at a customer needs an address (where the engineer goes); a blank one counts as
    /// none. The one rule every route that can put a device there applies (register,
    /// import, status change, an order's completion with `device_status`).
    pub fn allows_address(self, address: Option<&str>) -> bool {
        self != LifecycleStatus::AtCustomer || address.is_some_and(|a| !a.trim().is_empty())
    }
}

string_enum!(
    /// How much a patient depends on the device; drives order priority.
    Criticality {
        /// Life-supporting (e.g. a home ventilator): the highest priority.
        LifeSupporting => "life_supporting",
        /// Therapy-critical (e.g. an oxygen concentrator without backup).
        High => "high",
        Standard => "standard",
    }
);

string_enum!(
    /// Whether the device is connected right now, as last seen by fleetpulse.
    ConnectionState {
        Online => "online",
        Offline => "offline",
        /// Connected through a gateway (the firmware bridge) that cannot reach the device
        /// itself: timeouts, Modbus exception codes or garbage.
        Unreachable => "unreachable",
        Unknown => "unknown",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for k in DeviceKind::ALL {
            assert_eq!(k.as_str().parse::<DeviceKind>(), Ok(*k));
        }
        for s in LifecycleStatus::ALL {
            assert_eq!(s.as_str().parse::<LifecycleStatus>(), Ok(*s));
        }
        let err = "broken"
            .parse::<LifecycleStatus>()
            .expect_err("not a status");
        assert!(err.to_string().contains("at_customer"), "{err}");
    }

    #[test]
    fn only_a_device_at_a_customer_needs_an_address() {
        use LifecycleStatus::*;
        assert!(!AtCustomer.allows_address(None));
        assert!(!AtCustomer.allows_address(Some("  ")));
        assert!(AtCustomer.allows_address(Some("1 Main St")));
        assert!(InRepair.allows_address(None));
    }
}
