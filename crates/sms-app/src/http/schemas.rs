//! The schemas of `POST /v1/messages`'s fields in the API document, with the bounds
//! validation enforces.

use sms_core::{IdempotencyKey, MAX_ARG_CHARS, MAX_ARGS, MAX_RECIPIENTS, TemplateId};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};

/// Longest deliver-by window a caller may ask for: a week.
pub(super) const MAX_EXPIRES_IN_S: u64 = 7 * 24 * 3600;

pub(super) fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::new(Type::String))
}

pub(super) fn template_schema() -> Schema {
    Schema::Object(
        string_schema()
            .description(Some("The vendor's template id"))
            .min_length(Some(1))
            .max_length(Some(TemplateId::MAX_LEN))
            .pattern(Some("^[A-Za-z0-9_.-]+$"))
            .build(),
    )
}

pub(super) fn args_schema() -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .description(Some("Template arguments, in order; any text"))
            .items(string_schema().max_length(Some(MAX_ARG_CHARS)))
            .max_items(Some(MAX_ARGS))
            .build(),
    )
}

pub(super) fn recipients_schema() -> Schema {
    Schema::Array(
        ArrayBuilder::new()
            .description(Some(
                "Distinct recipients; common spellings such as +86 138 0013 8000 are accepted",
            ))
            .items(string_schema().description(Some("E.164, e.g. +8613800138000")))
            .min_items(Some(1))
            .max_items(Some(MAX_RECIPIENTS))
            .unique_items(true)
            .build(),
    )
}

pub(super) fn idempotency_key_schema() -> Schema {
    Schema::Object(
        string_schema()
            .description(Some(
                "The same key with the same content is the same message, sent at most once",
            ))
            .min_length(Some(1))
            .max_length(Some(IdempotencyKey::MAX_LEN))
            .build(),
    )
}

pub(super) fn expires_in_s_schema() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Integer))
            .description(Some("Deliver within this many seconds or not at all"))
            .minimum(Some(1))
            .maximum(Some(MAX_EXPIRES_IN_S))
            .build(),
    )
}

pub(super) fn callback_url_schema() -> Schema {
    Schema::Object(
        string_schema()
            .description(Some(
                "Where to POST signed status events about this message (queued, sent, \
                 delivered, undelivered, dead, expired, cancelled); absolute http(s) URL",
            ))
            .format(Some(utoipa::openapi::SchemaFormat::Custom("uri".into())))
            .max_length(Some(sms_core::MAX_CALLBACK_URL))
            .build(),
    )
}

pub(super) fn priority_schema() -> Schema {
    Schema::Object(
        string_schema()
            .description(Some(
                "The message's lane: `high` (login codes) takes the global limit and the \
                 queue first; default: the template's lane, else `normal`",
            ))
            .enum_values(Some(
                sms_core::Priority::ALL.map(sms_core::Priority::as_str),
            ))
            .build(),
    )
}

pub(super) fn send_at_schema() -> Schema {
    Schema::Object(
        string_schema()
            .description(Some(
                "Send at this RFC 3339 time, at most 35 days ahead and before the deliver-by \
                 time; the message is stored and can be cancelled with DELETE until sent",
            ))
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .build(),
    )
}
