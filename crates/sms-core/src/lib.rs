//! Domain types and seams of the SMS gateway.
//!
//! This crate does no I/O and depends on no driver: it defines what a message is
//! ([`SmsRequest`], [`PhoneNumber`], [`Money`]), what can go wrong ([`VendorError`],
//! [`SendError`], [`StoreError`]), and the traits the other crates implement:
//! [`Vendor`], [`FeeSchedule`], [`RateLimiter`], [`RecipientLimiter`], [`ClientLimiter`], [`DeferredQueue`],
//! [`UsageLedger`], [`SpendLedger`], [`Blocklist`], [`DeliveryLog`], [`CallbackOutbox`], [`SharedBoard`] and [`Clock`].
//!
//! [`sync`] holds the poison-tolerant lock helpers every crate of the gateway shares.
//!
//! Features: `mocks` adds mockall mocks of every trait (`MockVendor`, `MockDeferredQueue`,
//! …); `testing` adds in-memory fakes (`testing::MemoryQueue`, …) and the contract
//! suites every store and limiter backend runs (`testing::store_contract`,
//! `testing::limiter_contract`).

mod blocklist;
mod board;
mod callback;
mod callback_url;
mod clock;
mod delivery;
mod error;
mod ids;
mod ledger;
mod limit;
mod money;
mod phone;
mod queue;
mod request;
mod segments;
pub mod sync;
mod template;
mod vendor;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use blocklist::{BlockReason, BlockedNumber, Blocklist};
pub use board::{BoardRead, BoardUnavailable, BoardWrite, SharedBoard};
pub use callback::{
    CallbackCounts, CallbackEvent, CallbackOutbox, CallbackOutcome, CallbackStatus,
    ClaimedCallback, SpendWarning, StatusEvent,
};
pub use callback_url::{CallbackUrl, MAX_CALLBACK_URL};
pub use clock::{BillingPeriod, Clock, SystemClock};
pub use delivery::{
    DeliveryLog, DeliveryReport, DeliveryState, PendingDelivery, ReceiptPull, RecipientDelivery,
    ReportApplied, SentDelivery,
};
pub use error::{BoxError, LimitError, SendError, StoreError, ValidationError};
pub use ids::{ClientId, IdempotencyKey, MessageId, TemplateId, VendorId};
pub use ledger::{SpendGate, SpendHold, SpendLedger, UsageLedger};
pub use limit::{
    ClientLimiter, ClientQuota, QuotaDecision, QuotaWindow, RateDecision, RateLimiter,
    RecipientDecision, RecipientLimiter, RecipientWindow,
};
pub use money::{Money, MoneyParseError};
pub use phone::{PhoneNumber, PhoneNumberError};
pub use queue::{
    AttemptFailure, Completion, DeferredQueue, Enqueued, InitialState, Lease, LeaseToken,
    MessageStatus, NewMessage, QueueReason, QueueStats, StoredMessage,
};
pub use request::{
    MAX_ARG_CHARS, MAX_ARGS, MAX_RECIPIENTS, MAX_SCHEDULE_AHEAD, Priority, RawSmsRequest, Resend,
    SmsRequest,
};
pub use segments::{billed_segments, signed_text};
pub use template::{OutboundSms, Template, Templates, VendorTemplate};
pub use vendor::{FeeSchedule, NextTier, Receipt, Vendor, VendorError};

/// mockall mocks of every trait (feature `mocks`).
#[cfg(any(test, feature = "mocks"))]
pub mod mocks {
    pub use crate::blocklist::MockBlocklist;
    pub use crate::board::MockSharedBoard;
    pub use crate::callback::MockCallbackOutbox;
    pub use crate::clock::MockClock;
    pub use crate::delivery::MockDeliveryLog;
    pub use crate::ledger::{MockSpendGate, MockSpendLedger, MockUsageLedger};
    pub use crate::limit::{MockClientLimiter, MockRateLimiter, MockRecipientLimiter};
    pub use crate::queue::MockDeferredQueue;
    pub use crate::vendor::{MockFeeSchedule, MockVendor};
}
