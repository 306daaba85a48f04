//! What the view boards of multi-vantage consensus (SPEC §9.1) hand back, whatever the store.

/// Most replicas read in one go; more than this are cut (and said so by the count).
pub const MAX_REPLICAS: usize = 256;

/// One replica that published a view, and the view if it has not expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedView {
    /// The replica's identity.
    pub replica: String,
    /// The view's text; `None` once its TTL ran out.
    pub text: Option<String>,
}
