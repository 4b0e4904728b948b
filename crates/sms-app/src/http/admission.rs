//! What a request must pass, for who sends it, before it reaches the send path: no
//! recipient on the blocklist, no spend cap reached, and room in the client's own
//! `per_second` and `per_day` limits. Each refusal names what stopped it, and changes
//! nothing: a request refused here is neither counted nor stored.

use chrono::Utc;
use sms_core::{ClientId, ClientQuota, QuotaDecision, SmsRequest};

use super::AppState;
use super::error::ApiError;
use crate::config::clients::Client;

/// Counts a request took from its client's limits, given back when the send path then
/// refuses it.
pub(super) struct Taken(Option<(ClientId, ClientQuota, u32)>);

impl Taken {
    /// Gives the counts back: the request was refused after it was admitted.
    pub(super) async fn give_back(self, state: &AppState) {
        let Some((client, quota, permits)) = self.0 else {
            return;
        };
        if let Err(e) = state
            .client_limiter
            .give_back(&client, quota, permits)
            .await
        {
            tracing::warn!(%client, error = %e, "could not give the client's limit counts back");
        }
    }
}

/// Checks `request` from `client` against the blocklist, the spend caps and the
/// client's limits, in that order, and counts it in those limits.
pub(super) async fn admit(
    state: &AppState,
    client: Option<&Client>,
    request: &SmsRequest,
) -> Result<Taken, ApiError> {
    check_blocklist(state, request).await?;
    let name = client.and_then(|c| c.name.clone());
    if let Err(reached) = state.spend.check(&name, Utc::now()) {
        tracing::warn!(scope = %reached.scope.label(), spent = %reached.spent, cap = %reached.cap, "request refused: spend cap reached");
        let whose = match &reached.scope {
            crate::spend::Scope::Deployment => {
                "the deployment's monthly spend cap (spend.monthly_cap)".to_owned()
            }
            scope => format!(
                "the monthly spend cap of client {} (monthly_spend_cap)",
                scope.label()
            ),
        };
        return Err(ApiError::SpendCapReached(format!(
            "{whose} of {} is reached: {} spent this month; sends resume next month or when \
             the cap is raised",
            reached.cap, reached.spent
        )));
    }
    let (Some(client), Some(name)) = (client, name) else {
        return Ok(Taken(None));
    };
    if client.quota.is_unlimited() {
        return Ok(Taken(None));
    }
    let permits = u32::try_from(request.recipients().len()).unwrap_or(u32::MAX);
    let decision = state
        .client_limiter
        .acquire(&name, client.quota, permits)
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!("the client limits could not be checked: {e}"))
        })?;
    match decision {
        QuotaDecision::Allowed => Ok(Taken(Some((name, client.quota, permits)))),
        QuotaDecision::Limited {
            window,
            limit,
            retry_after,
        } => {
            tracing::warn!(client = %name, limit = window.key(), "request refused: over the client's limit");
            Err(ApiError::ClientLimited {
                message: format!(
                    "client {name} is over its {} limit of {limit} recipients; retry in {} ms",
                    window.key(),
                    retry_after.as_millis()
                ),
                retry_after,
            })
        }
    }
}

/// Refuses a request with a recipient on the blocklist, naming the first one (masked)
/// and why it is blocked. The blocklist answers from its copy in memory, so this needs
/// no database.
async fn check_blocklist(state: &AppState, request: &SmsRequest) -> Result<(), ApiError> {
    let blocked = state.blocklist.blocked_among(request.recipients()).await?;
    let Some(first) = blocked.first() else {
        return Ok(());
    };
    let index = request
        .recipients()
        .iter()
        .position(|r| r == first)
        .unwrap_or_default();
    let why = match state.blocklist.entry(first).await {
        Ok(Some(entry)) => format!(" ({})", entry.reason),
        _ => String::new(),
    };
    tracing::warn!(recipient = %first.masked(), "request refused: a recipient is on the blocklist");
    Err(ApiError::RecipientBlocked {
        field: format!("recipients[{index}]"),
        message: format!(
            "recipient {} is on the blocklist{why}; {} of the recipients are blocked; send \
             without them",
            first.masked(),
            blocked.len()
        ),
    })
}
