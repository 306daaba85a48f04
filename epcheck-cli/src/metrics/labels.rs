//! The label sets of epcheck's metric families, and the label values that are not strings.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// Labels `{service}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The service key of the config.
    pub service: Arc<str>,
}

/// Labels `{service, target}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// The service key of the config.
    pub service: Arc<str>,
    /// The target's name within the service.
    pub target: Arc<str>,
}

/// Labels `{service, result}` (probe results and Endpoints writes).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The service key of the config.
    pub service: Arc<str>,
    /// `up` or a failure kind for probes; `updated`, `created` or `failed` for writes.
    pub result: &'static str,
}

/// Labels `{service, target, to}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The service key of the config.
    pub service: Arc<str>,
    /// The target's name within the service.
    pub target: Arc<str>,
    /// The state entered: `up` or `down`.
    pub to: &'static str,
}

/// Labels `{verb, code}` of ApiServer requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method.
    pub verb: Cow<'static, str>,
    /// The HTTP status, or `error` when no response arrived.
    pub code: StatusCode,
}

/// Labels `{verb}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// The HTTP method.
    pub verb: Cow<'static, str>,
}

/// Labels `{state}` of `epcheck_consensus_views`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewStateLabels {
    /// `fresh`, `abstaining` or `stale`.
    pub state: &'static str,
}

/// Labels `{version}` of `epcheck_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    /// The crate version.
    pub version: &'static str,
}

/// Labels `{channel, result}` of notifications.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// Where the notification went.
    pub channel: Channel,
    /// How it ended.
    pub result: Delivery,
}

/// An ApiServer response code as a label value: the number, or `error` for `None`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct StatusCode(pub Option<u16>);

impl EncodeLabelValue for StatusCode {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self.0 {
            Some(code) => write!(encoder, "{code}"),
            None => encoder.write_str("error"),
        }
    }
}

/// A notification channel (SPEC §8.2).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Channel {
    /// `notify.script`.
    Script,
    /// `notify.webhooks` (JSON or DingTalk).
    Webhook,
}

/// How a notification ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered (the script exited 0, the webhook answered 2xx), retries included.
    Sent,
    /// Given up on after its retries.
    Failed,
    /// Never attempted because the queue was full.
    Dropped,
}

impl EncodeLabelValue for Channel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Channel::Script => "script",
            Channel::Webhook => "webhook",
        })
    }
}

impl EncodeLabelValue for Delivery {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
            Delivery::Dropped => "dropped",
        })
    }
}
