//! What a simulated vendor checks once the faults let a send through: the rules of its
//! protocol ([`crate::rules`]) applied to the message as the real vendor would see it.

use std::sync::Arc;
use std::time::Duration;

use sms_core::{OutboundSms, PhoneNumber, Receipt, Templates, VendorError, VendorId};

use super::SimulationSettings;
use crate::ConfigError;
use crate::rules::{
    Approvals, Outgoing, PerNumberLimits, Protocol, Refusal, TemplateArgs, billed_for, vendor_text,
};

/// The rules one simulated vendor applies, rebuilt when its settings or templates change.
#[derive(Debug)]
pub(super) struct VendorRules {
    pub(super) protocol: Protocol,
    /// The vendor's default signature; empty for none.
    pub(super) sign_name: String,
    approvals: Approvals,
    /// Kept across rebuilds for the same protocol, so changing other settings does not
    /// forget what the numbers were sent.
    limits: Arc<PerNumberLimits>,
}

/// What the checks let through.
#[derive(Debug)]
pub(super) struct Screened {
    /// The recipients the vendor sends to: all of them, or for Tencent, which answers
    /// per number, those within their limits.
    pub(super) accepted: Vec<PhoneNumber>,
    /// When Tencent refused some numbers and accepted others, the refusal with the
    /// longest wait (the first of equal ones), as the HTTP adapter reports them.
    pub(super) refused: Option<Refusal>,
    /// Segments billed for the accepted numbers, counted from the signed text as
    /// [`OutboundSms::billed_segments`] does: one per number when the text is unknown.
    pub(super) billed_messages: u64,
    /// The segments the vendor reports billing for the accepted numbers (Tencent's
    /// `Fee`, summed); `None` for the vendors that report none.
    pub(super) reported_billed: Option<u64>,
}

impl VendorRules {
    /// The rules of `protocol` for the vendor named `vendor`, approving what `catalogue`
    /// maps for it; `previous` lends its per-number history when the protocol is the same.
    pub(super) fn new(
        protocol: Protocol,
        sign_name: Option<&str>,
        catalogue: &Templates,
        vendor: &VendorId,
        previous: Option<&VendorRules>,
    ) -> Self {
        let sign_name = sign_name.unwrap_or_default().to_owned();
        let limits = match previous {
            Some(p) if p.protocol == protocol => Arc::clone(&p.limits),
            _ => Arc::new(PerNumberLimits::new(protocol)),
        };
        Self {
            approvals: Approvals::from_catalogue(protocol, catalogue, vendor, &sign_name),
            protocol,
            sign_name,
            limits,
        }
    }

    /// Checks `sms` the way the vendor does: approvals first, then (when
    /// `per_number_limits`) each number's windows, counting what is accepted.
    pub(super) fn screen(
        &self,
        sms: &OutboundSms,
        per_number_limits: bool,
    ) -> Result<Screened, VendorError> {
        let signature = sms.signature(&self.sign_name);
        let template_id = sms.template.id.as_str();
        let args = sms.request.args();
        let named;
        let template_args = match self.protocol {
            Protocol::Aliyun => {
                named = aliyun_variables(sms);
                TemplateArgs::Named(&named)
            }
            Protocol::Tencent | Protocol::Cloopen => TemplateArgs::Positional(args),
        };
        let approved = self
            .approvals
            .check(template_id, signature, template_args)?;
        let recipients = sms.request.recipients();
        let outgoing = || -> Vec<Outgoing<'_>> {
            recipients
                .iter()
                .map(|number| Outgoing {
                    number: number.as_str(),
                    signature,
                    template_id,
                    args,
                })
                .collect()
        };
        let mut refused = None;
        let accepted: Vec<PhoneNumber> = if !per_number_limits {
            recipients.to_vec()
        } else if self.protocol == Protocol::Tencent {
            // Tencent answers each number on its own.
            let mut accepted = Vec::with_capacity(recipients.len());
            for (number, message) in recipients.iter().zip(outgoing()) {
                match self.limits.admit(&message) {
                    Ok(()) => accepted.push(number.clone()),
                    Err(refusal) => {
                        if refused
                            .as_ref()
                            .is_none_or(|kept| wait(&refusal) > wait(kept))
                        {
                            refused = Some(refusal);
                        }
                    }
                }
            }
            accepted
        } else {
            // Aliyun and Cloopen answer one code for the request: all numbers or none.
            self.limits.admit_all(&outgoing())?;
            recipients.to_vec()
        };
        if accepted.is_empty() {
            // Only a refusal empties the list: a request has at least one recipient.
            if let Some(refusal) = refused {
                return Err(refusal.into());
            }
        }
        let billed_messages = match &sms.text {
            Some(body) => accepted
                .iter()
                .map(|n| billed_for(signature, body, n))
                .sum(),
            None => accepted.len() as u64,
        };
        let reported_billed = (self.protocol == Protocol::Tencent).then(|| {
            let text = vendor_text(approved, args);
            accepted
                .iter()
                .map(|n| billed_for(signature, &text, n))
                .sum()
        });
        Ok(Screened {
            accepted,
            refused,
            billed_messages,
            reported_billed,
        })
    }
}

fn wait(refusal: &Refusal) -> Duration {
    match refusal {
        Refusal::RecipientLimited { retry_after, .. } => *retry_after,
        Refusal::Misconfigured { .. } => Duration::ZERO,
    }
}

/// Aliyun's `TemplateParam` for the message: its variable names with the arguments in
/// order, or positional names `p1`, `p2`, … when the catalogue names none.
fn aliyun_variables(sms: &OutboundSms) -> Vec<(String, String)> {
    let params = &sms.template.params;
    sms.request
        .args()
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let name = params
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("p{}", i + 1));
            (name, value.clone())
        })
        .collect()
}

/// What the HTTP adapter answers when a vendor accepted some recipients and refused the
/// rest: the accepted ones and their receipt, with the refusal as the others' error, so
/// the gateway bills what went and retries only the others.
pub(super) fn partial_send(
    screened: Screened,
    vendor_message_id: String,
    refusal: Refusal,
) -> VendorError {
    VendorError::PartlySent {
        sent: screened.accepted,
        receipt: Receipt {
            vendor_message_id,
            billed_messages: screened.billed_messages,
            reported_billed: screened.reported_billed,
            recipient_ids: Vec::new(),
        },
        error: Box::new(refusal.into()),
    }
}

/// `settings` with its protocol filled in: as set, else `current` (the vendor keeps the
/// one it speaks), else the vendor's name's. Checks the rest of the settings too.
pub(super) fn resolve(
    id: &VendorId,
    mut settings: SimulationSettings,
    current: Option<Protocol>,
) -> Result<SimulationSettings, ConfigError> {
    settings.validate()?;
    let protocol = settings
        .protocol
        .or(current)
        .or_else(|| Protocol::by_name(id.as_str()))
        .ok_or_else(|| ConfigError::Simulation {
            field: "protocol".into(),
            problem: format!(
                "required for a vendor named {:?}: expected \"aliyun\", \"tencent\" or \"cloopen\"",
                id.as_str()
            ),
        })?;
    settings.protocol = Some(protocol);
    Ok(settings)
}

/// The rules for `settings` (protocol resolved) and `templates`.
pub(super) fn rules_for(
    id: &VendorId,
    settings: &SimulationSettings,
    templates: &Templates,
    previous: Option<&VendorRules>,
) -> VendorRules {
    let protocol = settings
        .protocol
        .expect("resolve fills in the protocol before the rules are built");
    VendorRules::new(
        protocol,
        settings.sign_name.as_deref(),
        templates,
        id,
        previous,
    )
}
