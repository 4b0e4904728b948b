//! The parts of the API description at `/openapi.json` that no handler carries: title,
//! bearer scheme, and the schemas of bodies whose types live in other crates.
//!
//! Paths, parameters and the other bodies come from the handlers themselves
//! (`#[utoipa::path]` and `ToSchema` in [`crate::http`]), and the router is built from
//! the same attributes, so a route cannot be served without being described. Types of
//! `sms-core` and `sms-providers` cannot derive `ToSchema` here; their schemas are built
//! from the types' own lists of values, or mirrored and checked against what serde
//! writes in this module's tests.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sms_core::{MessageStatus, QueueReason};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr};
use utoipa::{PartialSchema, ToSchema};

/// The name of the bearer-token security scheme.
const BEARER: &str = "bearer";

/// The document before any route is added: title, version, the bearer scheme.
pub fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("sms-gateway")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Multi-vendor SMS gateway with failover, a durable queue and rate limits.",
                )),
        )
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    BEARER,
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
                )
                .build(),
        ))
        .build()
}

/// Marks every operation of `doc` as needing the bearer token. Called on the routes the
/// token check guards, so the description follows the router.
pub fn require_bearer(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        }
    }
}

/// A string schema whose values are `values`.
fn string_enum(values: impl IntoIterator<Item = &'static str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::String))
        .enum_values(Some(values))
}

/// The schema of a [`MessageStatus`], from its list of statuses.
pub fn message_status_schema() -> Schema {
    Schema::Object(
        string_enum(MessageStatus::ALL.map(MessageStatus::as_str))
            .description(Some("Where the message is in its life"))
            .build(),
    )
}

/// The schema of a [`QueueReason`], from its list of reasons.
pub fn queue_reason_schema() -> Schema {
    Schema::Object(
        string_enum(QueueReason::ALL.map(QueueReason::as_str))
            .description(Some("Why the message was queued"))
            .build(),
    )
}

/// The schema of `GET /v1/queue`'s answer: a count per message status
/// ([`sms_core::QueueStats`]), and when the oldest queued message was accepted.
pub struct QueueCounts;

impl PartialSchema for QueueCounts {
    fn schema() -> RefOr<Schema> {
        let counts = MessageStatus::ALL.iter().fold(
            ObjectBuilder::new().schema_type(SchemaType::new(Type::Object)),
            |object, status| {
                object
                    .property(
                        status.as_str(),
                        ObjectBuilder::new()
                            .schema_type(SchemaType::new(Type::Integer))
                            .minimum(Some(0)),
                    )
                    .required(status.as_str())
            },
        );
        let counts = counts.property(
            "oldest_queued_at",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some(
                    "When the oldest message still queued was accepted; null when none is",
                )),
        );
        RefOr::T(Schema::Object(
            counts
                .description(Some(
                    "Messages per status, and when the oldest queued one was accepted",
                ))
                .build(),
        ))
    }
}

impl ToSchema for QueueCounts {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("QueueStats")
    }
}

/// The schema of [`sms_providers::simulated::SimulationSettings`]: a mirror checked
/// field for field against what serde reads and writes (see the tests below).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(
    as = SimulationSettings,
    description = "A simulated vendor's behaviour; every field has a default"
)]
#[allow(dead_code)] // Only its schema is used; the tests deserialize into it.
pub struct SimulationSettingsSchema {
    /// The vendor API it behaves as: `aliyun`, `tencent` or `cloopen` (its codes, its
    /// per-number windows, whether it reports billed segments).
    protocol: Option<String>,
    /// The signature it signs with when a template has none of its own.
    sign_name: Option<String>,
    /// Whether it applies the vendor's default per-number limits.
    per_number_limits: bool,
    /// Base time to answer, in milliseconds.
    latency_ms: u64,
    /// Extra time to answer, drawn uniformly from `0..=jitter_ms` for each send.
    jitter_ms: u64,
    /// Share of sends that fail as if the vendor answered 503 (0 to 1).
    error_rate: f64,
    /// Share of sends the vendor throttles (0 to 1).
    throttle_rate: f64,
    /// Share of sends that hang until the gateway's timeout (0 to 1).
    timeout_rate: f64,
    /// Whether a send that hangs was nevertheless delivered.
    timeout_delivers: bool,
    /// Share of sends refused for good (0 to 1). The four rates add up to at most 1.
    reject_rate: f64,
    /// Every send fails at once, like a vendor that refuses connections.
    outage: bool,
    /// Scripted fault windows, relative to the vendor's start.
    schedule: Vec<ScheduledFaultSchema>,
    /// Share of accepted recipients whose delivery receipt says delivered (0 to 1).
    delivery_rate: f64,
    /// How long after the send a delivery receipt comes, in milliseconds.
    receipt_delay_ms: u64,
    /// Accepted and billed, but never delivered, and no receipt comes.
    silent: bool,
}

/// The schema of [`sms_providers::simulated::ScheduledFault`], mirrored like
/// [`SimulationSettingsSchema`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    as = ScheduledFault,
    description = "A fault that applies between two moments of a simulated vendor's life"
)]
#[allow(dead_code)] // Only its schema is used; the tests deserialize into it.
pub struct ScheduledFaultSchema {
    /// Start of the window, in seconds after the vendor started (inclusive).
    from_s: u64,
    /// End of the window, in seconds after the vendor started (exclusive).
    to_s: u64,
    /// What goes wrong.
    fault: FaultKindSchema,
    /// Share of the sends within the window that the fault hits; 1 (all) by default.
    #[serde(default = "all")]
    rate: f64,
    /// For `slow`: the time to answer during the window, in milliseconds; required for
    /// `slow`, refused for the other kinds.
    #[serde(default)]
    #[schema(nullable = false)]
    latency_ms: Option<u64>,
}

fn all() -> f64 {
    1.0
}

/// The schema of [`sms_providers::simulated::FaultKind`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = FaultKind, description = "The kinds of scripted fault")]
pub enum FaultKindSchema {
    /// Sends fail at once with a transient "outage" error.
    Outage,
    /// Sends are throttled.
    Throttle,
    /// Sends hang.
    Timeout,
    /// Sends are rejected for good.
    Reject,
    /// Sends succeed but take `latency_ms`.
    Slow,
    /// Sends succeed, but the window's `rate` of recipients is not delivered.
    Undelivered,
    /// Sends succeed, but nothing is delivered and no receipt comes.
    Silent,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::{Value, json};
    use sms_core::QueueStats;
    use sms_providers::simulated::{FaultKind, ScheduledFault, SimulationSettings};

    use super::*;

    /// The property names of a schema.
    fn properties<T: PartialSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).expect("schema as JSON");
        schema["properties"]
            .as_object()
            .expect("an object schema")
            .keys()
            .cloned()
            .collect()
    }

    /// The keys of `value`, a JSON object.
    fn keys(value: &Value) -> BTreeSet<String> {
        value
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn queue_counts_describe_every_field_of_queue_stats() {
        let written = serde_json::to_value(QueueStats::default()).expect("JSON");
        // `GET /v1/queue` adds the oldest queued message's time to the counts.
        let mut answered = keys(&written);
        answered.insert("oldest_queued_at".to_owned());
        assert_eq!(properties::<QueueCounts>(), answered);
    }

    #[test]
    fn status_and_reason_names_are_what_serde_writes() {
        for status in MessageStatus::ALL {
            assert_eq!(serde_json::to_value(status).expect("JSON"), status.as_str());
        }
        for reason in QueueReason::ALL {
            assert_eq!(serde_json::to_value(reason).expect("JSON"), reason.as_str());
        }
    }

    #[test]
    fn the_simulation_mirror_has_the_fields_of_the_real_settings() {
        let mut slow = ScheduledFault::new(1, 2, FaultKind::Slow);
        slow.latency_ms = Some(500);
        let settings = SimulationSettings {
            schedule: vec![slow],
            ..SimulationSettings::default()
        };
        let written = serde_json::to_value(&settings).expect("JSON");
        assert_eq!(properties::<SimulationSettingsSchema>(), keys(&written));
        assert_eq!(
            properties::<ScheduledFaultSchema>(),
            keys(&written["schedule"][0])
        );
        // What the real settings write, the mirror reads, and the reverse.
        serde_json::from_value::<SimulationSettingsSchema>(written).expect("mirror reads");
        let kinds = serde_json::to_value(FaultKindSchema::schema()).expect("JSON")["enum"].clone();
        assert_eq!(kinds.as_array().map(Vec::len), Some(7), "{kinds}");
        for kind in kinds.as_array().expect("fault kinds") {
            let fault = json!({ "from_s": 0, "to_s": 1, "fault": kind, "latency_ms": 5 });
            serde_json::from_value::<ScheduledFaultSchema>(fault.clone()).expect("mirror");
            serde_json::from_value::<ScheduledFault>(fault).expect("real");
        }
    }
}
