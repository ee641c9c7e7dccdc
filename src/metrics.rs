//! Metrics: names as constants, handles resolved at config load so the
//! request path only touches atomics, and the Prometheus text exposition.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Metric names, without the `porteiro_` prefix the registry adds.
pub mod names {
    /// Counter: answered requests by `route` and status `class` (`2xx`...).
    pub const REQUESTS: &str = "requests";
    /// Histogram: seconds from sending a request upstream to its response head, by `route`.
    pub const UPSTREAM_DURATION: &str = "upstream_duration_seconds";
    /// Gauge: client connections open now.
    pub const CONNECTIONS_OPEN: &str = "connections_open";
    /// Counter: client connections accepted.
    pub const CONNECTIONS: &str = "connections";
    /// Gauge: HTTP/1.1 connections idle between requests that hold nothing
    /// but their socket (parked).
    pub const CONNECTIONS_PARKED: &str = "connections_parked";
    /// Counter: requests refused before reaching a route or upstream, by
    /// `reason`: the canonical request's (`no_host`, `several_hosts`,
    /// `bad_host`, `host_mismatch`, `bad_path`), the route's (`no_route`,
    /// `encoded_slash`, `semicolon`), `connect`, forward-auth
    /// URLs (`no_original_url`, `bad_original_url`,
    /// `conflicting_original_url`); also `bad_request_body`, a body that
    /// broke HTTP framing on its way upstream.
    pub const REJECTED: &str = "rejected_requests";
    /// Counter: configuration reloads by `result` (`ok`, `error`).
    pub const RELOADS: &str = "config_reloads";
    /// Counter: sessions started, by `provider`.
    pub const LOGINS: &str = "logins";
    /// Counter: refused logins and credentials, by `provider` and `reason`.
    pub const AUTH_FAILURES: &str = "auth_failures";
    /// Counter: API key events by `event` (`minted`, `revoked`, `used`).
    pub const API_KEYS: &str = "api_keys";
    /// Counter: API keys refused, by `reason` (`malformed`, `unknown`,
    /// `revoked`, `wrong_provider`, `unavailable`, `not_allowed`).
    pub const API_KEY_REFUSALS: &str = "api_key_refusals";
    /// Counter: requests refused with `429`, by `bucket` (`login`,
    /// `failed_auth`).
    pub const RATE_LIMITED: &str = "rate_limited";
    /// Counter: actions on the admin API, by `action`.
    pub const ADMIN_ACTIONS: &str = "admin_actions";
    /// Counter: OpenID Connect back-channel logout requests, by `provider`
    /// (`-` when no configured provider matched) and `result`: `ok`, or
    /// why the logout token was refused (`malformed_token`,
    /// `bad_signature`, `unknown_key`, `algorithm_not_allowed`,
    /// `wrong_issuer`, `wrong_audience`, `too_old`, `not_yet_valid`,
    /// `expired`, `replayed`, `missing_claim`, `bad_claim`,
    /// `not_a_logout_token`, `nonce_present`, `no_sid_nor_sub`,
    /// `bad_request`, `idp_unavailable`, `store_unavailable`...).
    pub const BACKCHANNEL_LOGOUTS: &str = "backchannel_logouts";
    /// Counter: OpenID Connect session refreshes (`refresh = true`), by
    /// `provider` and `result`: `renewed` (this replica asked the
    /// provider), `joined` (another request's refresh, here or on another
    /// replica, renewed it), `ended` (the provider refused: `invalid_grant`,
    /// or a changed `sub`), `abandoned` (a refresh started elsewhere never
    /// finished), `unavailable` (provider or store down: `503`).
    pub const SESSION_REFRESHES: &str = "session_refreshes";
}

/// Label used for requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteClass {
    route: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabel {
    provider: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BucketLabel {
    bucket: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderResult {
    provider: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Process-wide metrics; survives config reloads.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteClass, Counter>,
    upstream_duration: Family<RouteLabel, Histogram>,
    rejected: Family<ReasonLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    logins: Family<ProviderLabel, Counter>,
    auth_failures: Family<FailureLabel, Counter>,
    api_keys: Family<EventLabel, Counter>,
    /// `api_keys{event="used"}`, resolved once: it counts on the request path.
    api_key_used: Counter,
    api_key_refusals: Family<ReasonLabel, Counter>,
    admin_actions: Family<ActionLabel, Counter>,
    rate_limited: Family<BucketLabel, Counter>,
    backchannel_logouts: Family<ProviderResult, Counter>,
    session_refreshes: Family<ProviderResult, Counter>,
    pub connections_open: Gauge,
    pub connections: Counter,
    pub connections_parked: Gauge,
}

/// One route's metric handles, looked up once at load.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    upstream_duration: Histogram,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("porteiro");
        let requests = Family::<RouteClass, Counter>::default();
        let upstream_duration = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let rejected = Family::<ReasonLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let logins = Family::<ProviderLabel, Counter>::default();
        let auth_failures = Family::<FailureLabel, Counter>::default();
        let api_keys = Family::<EventLabel, Counter>::default();
        let api_key_used = api_keys.get_or_create(&EventLabel { event: "used" }).clone();
        let api_key_refusals = Family::<ReasonLabel, Counter>::default();
        let admin_actions = Family::<ActionLabel, Counter>::default();
        let rate_limited = Family::<BucketLabel, Counter>::default();
        let backchannel_logouts = Family::<ProviderResult, Counter>::default();
        let session_refreshes = Family::<ProviderResult, Counter>::default();
        let connections_open = Gauge::default();
        let connections = Counter::default();
        let connections_parked = Gauge::default();
        registry.register(names::REQUESTS, "Answered requests by route and status class", requests.clone());
        registry.register(
            names::UPSTREAM_DURATION,
            "Seconds from sending a request upstream to its response head",
            upstream_duration.clone(),
        );
        registry.register(names::CONNECTIONS_OPEN, "Client connections open now", connections_open.clone());
        registry.register(names::CONNECTIONS, "Client connections accepted", connections.clone());
        registry.register(
            names::CONNECTIONS_PARKED,
            "HTTP/1.1 connections idle between requests, holding only their socket",
            connections_parked.clone(),
        );
        registry.register(names::REJECTED, "Requests refused before routing or proxying, by reason", rejected.clone());
        registry.register(names::RELOADS, "Configuration reloads by result", reloads.clone());
        registry.register(names::LOGINS, "Sessions started, by provider", logins.clone());
        registry.register(
            names::AUTH_FAILURES,
            "Refused logins and credentials, by provider and reason",
            auth_failures.clone(),
        );
        registry.register(names::API_KEYS, "API key events: minted, revoked, used", api_keys.clone());
        registry.register(names::API_KEY_REFUSALS, "API keys refused, by reason", api_key_refusals.clone());
        registry.register(names::ADMIN_ACTIONS, "Admin API actions, by action", admin_actions.clone());
        registry.register(names::RATE_LIMITED, "Requests refused with 429, by limit", rate_limited.clone());
        registry.register(
            names::BACKCHANNEL_LOGOUTS,
            "OpenID Connect back-channel logouts, by provider and result",
            backchannel_logouts.clone(),
        );
        registry.register(
            names::SESSION_REFRESHES,
            "OpenID Connect session refreshes, by provider and result",
            session_refreshes.clone(),
        );
        Metrics {
            registry,
            api_keys,
            api_key_used,
            api_key_refusals,
            admin_actions,
            rate_limited,
            backchannel_logouts,
            session_refreshes,
            requests,
            upstream_duration,
            rejected,
            reloads,
            logins,
            auth_failures,
            connections_open,
            connections,
            connections_parked,
        }
    }

    /// Handles for one route (call at load, not per request).
    pub fn route(&self, route: &str) -> RouteMetrics {
        let by_class =
            CLASSES.map(|class| self.requests.get_or_create(&RouteClass { route: route.to_string(), class }).clone());
        let upstream_duration = self.upstream_duration.get_or_create(&RouteLabel { route: route.to_string() }).clone();
        RouteMetrics { by_class, upstream_duration }
    }

    /// Counts a request refused for `reason` (a fixed, documented word).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn login(&self, provider: &str) {
        self.logins.get_or_create(&ProviderLabel { provider: provider.to_string() }).inc();
    }

    /// Counts a refused login or credential; `reason` is a fixed word.
    pub fn auth_failure(&self, provider: &str, reason: &'static str) {
        self.auth_failures.get_or_create(&FailureLabel { provider: provider.to_string(), reason }).inc();
    }

    /// An API key `minted` or `revoked`.
    pub fn api_key(&self, event: &'static str) {
        self.api_keys.get_or_create(&EventLabel { event }).inc();
    }

    pub fn api_key_used(&self) {
        self.api_key_used.inc();
    }

    pub fn api_key_refused(&self, reason: &'static str) {
        self.api_key_refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn rate_limited(&self, bucket: &'static str) {
        self.rate_limited.get_or_create(&BucketLabel { bucket }).inc();
    }

    pub fn admin_action(&self, action: &'static str) {
        self.admin_actions.get_or_create(&ActionLabel { action }).inc();
    }

    /// A back-channel logout: `ok` or the refusal's reason (a fixed word).
    pub fn backchannel_logout(&self, provider: &str, result: &'static str) {
        self.backchannel_logouts.get_or_create(&ProviderResult { provider: provider.to_string(), result }).inc();
    }

    /// A session refresh: `renewed`, `joined`, `ended`, `abandoned` or
    /// `unavailable` (see [`names::SESSION_REFRESHES`]).
    pub fn session_refresh(&self, provider: &str, result: &'static str) {
        self.session_refreshes.get_or_create(&ProviderResult { provider: provider.to_string(), result }).inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl RouteMetrics {
    pub fn answered(&self, status: http::StatusCode) {
        let i = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[i].inc();
    }

    pub fn upstream_duration(&self, seconds: f64) {
        self.upstream_duration.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_route_counters() {
        let m = Metrics::new();
        let r = m.route("kb/");
        r.answered(http::StatusCode::OK);
        r.answered(http::StatusCode::BAD_GATEWAY);
        r.answered(http::StatusCode::BAD_GATEWAY);
        m.rejected("bad_path");
        let text = m.encode();
        assert!(text.contains("porteiro_requests_total{route=\"kb/\",class=\"2xx\"} 1"), "{text}");
        assert!(text.contains("porteiro_requests_total{route=\"kb/\",class=\"5xx\"} 2"), "{text}");
        assert!(text.contains("porteiro_rejected_requests_total{reason=\"bad_path\"} 1"), "{text}");
    }
}
