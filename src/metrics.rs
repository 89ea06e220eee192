//! Prometheus metrics in an explicit registry (no globals). Names and labels follow
//! DESIGN.md; labels are config names and status codes, never client IPs or raw paths.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub const HTTP_REQUESTS: &str = "headland_http_requests_total";
pub const HTTP_DURATION: &str = "headland_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "headland_http_requests_in_flight";
pub const UPSTREAM_UP: &str = "headland_upstream_up";
pub const HEALTH_CHECKS: &str = "headland_upstream_health_checks_total";
pub const HEALTH_CHECK_DURATION: &str = "headland_upstream_health_check_duration_seconds";
pub const UPSTREAM_DRAINED: &str = "headland_upstream_drained";
pub const CONNECT_ERRORS: &str = "headland_upstream_connect_errors_total";
pub const RETRIES: &str = "headland_upstream_retries_total";
pub const REGION_FALLBACKS: &str = "headland_region_fallback_total";
pub const RATELIMIT_REJECTED: &str = "headland_ratelimit_rejected_total";
pub const EJECTIONS: &str = "headland_upstream_ejections_total";
pub const UPSTREAM_RESOLUTIONS: &str = "headland_upstream_resolutions_total";
pub const CONFIG_RELOADS: &str = "headland_config_reloads_total";
pub const CONFIG_GENERATION: &str = "headland_config_generation";
pub const CLUSTER_FOLLOWING: &str = "headland_cluster_following";
pub const BUILD_INFO: &str = "headland_build_info";
pub const WEBHOOK_DELIVERIES: &str = "headland_webhook_deliveries_total";
pub const WEBHOOK_SEQUENCE: &str = "headland_webhook_sequence";
pub const WEBHOOK_DELIVERED_SEQUENCE: &str = "headland_webhook_delivered_sequence";
pub const ACCESS_LOG_DROPPED: &str = "headland_access_log_dropped_total";
pub const CERTIFICATE_EXPIRY: &str = "headland_tls_certificate_expiry_timestamp_seconds";
pub const ACME_ORDERS: &str = "headland_acme_orders_total";
pub const REGION_UP: &str = "headland_region_up";
pub const DNS_QUERIES: &str = "headland_dns_queries_total";
pub const DNS_GEO_ANSWERS: &str = "headland_dns_geo_answers_total";
pub const DNS_RATE_LIMITED: &str = "headland_dns_rate_limited_total";
pub const HTTP_LIMIT_REJECTIONS: &str = "headland_http_limit_rejections_total";
pub const HTTP_CONNECTIONS: &str = "headland_http_connections";
pub const HTTP_BODIES_BUFFERED: &str = "headland_http_request_bodies_buffered_total";
pub const STREAM_CONNECTIONS: &str = "headland_stream_connections_total";
pub const STREAM_BYTES: &str = "headland_stream_bytes_total";
pub const STREAM_ACTIVE: &str = "headland_stream_connections_active";
pub const ACCESS_DENIED: &str = "headland_access_denied_total";
pub const FORWARD_AUTH_ERRORS: &str = "headland_forward_auth_errors_total";

/// The `limit` label of `headland_http_limit_rejections_total`: every client-side limit,
/// exported from the start so that a rate alert sees the first rejection.
pub const LIMITS: &[&str] = &[
    "header_timeout",
    "malformed_header",
    "uri_length",
    "header_size",
    "header_count",
    "body_timeout",
    "send_timeout",
    "connections",
    "connections_per_ip",
];

/// Label value for requests that matched no route or no upstream.
pub const NONE: &str = "";

/// Request latency buckets, in seconds: 1 ms to 60 s.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Health-check latency buckets, in seconds: a local app answers in well under a
/// millisecond, a check times out after `timeout` (2 s by default).
const CHECK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric Headland exports, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_in_flight: IntGaugeVec,
    pub upstream_up: IntGaugeVec,
    pub health_checks: IntCounterVec,
    pub health_check_duration: HistogramVec,
    pub upstream_drained: IntGaugeVec,
    pub connect_errors: IntCounterVec,
    pub retries: IntCounterVec,
    pub region_fallbacks: IntCounterVec,
    pub ejections: IntCounterVec,
    /// Resolutions of upstream host names, by `server` (`NAME:PORT`) and `result`.
    pub upstream_resolutions: IntCounterVec,
    pub ratelimit_rejected: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub cluster_following: IntGauge,
    pub webhook_deliveries: IntCounterVec,
    pub webhook_sequence: IntGauge,
    pub webhook_delivered_sequence: IntGauge,
    pub access_log_dropped: IntCounter,
    pub certificate_expiry: IntGaugeVec,
    pub acme_orders: IntCounterVec,
    pub region_up: IntGaugeVec,
    pub dns_queries: IntCounterVec,
    pub dns_geo_answers: IntCounterVec,
    pub dns_rate_limited: IntCounterVec,
    pub limit_rejections: IntCounterVec,
    /// By route and rule: `address` (403), `basic_auth` (401), `forward_auth` (the auth
    /// service's refusal, passed through).
    pub access_denied: IntCounterVec,
    /// By route and reason: `unreachable` (502), `timeout` (504).
    pub forward_auth_errors: IntCounterVec,
    pub connections: IntGauge,
    pub bodies_buffered: IntCounterVec,
    pub streams: StreamMetrics,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let http_requests = counter(
            HTTP_REQUESTS,
            "HTTP requests answered, by route, upstream and status code.",
            &["route", "upstream", "code"],
        )?;
        let http_in_flight = gauge(
            HTTP_IN_FLIGHT,
            "HTTP requests being handled, by route.",
            &["route"],
        )?;
        let upstream_up = gauge(UPSTREAM_UP, "1 if the upstream server is healthy (up or not yet checked), 0 if down or ejected; draining does not change it (see headland_upstream_drained).", &["upstream", "server"])?;
        let health_checks = counter(
            HEALTH_CHECKS,
            "Active health checks, by result (ok or fail).",
            &["upstream", "server", "result"],
        )?;
        let upstream_drained = gauge(
            UPSTREAM_DRAINED,
            "1 if an operator drained the server (no new requests; see POST /upstreams/POOL/SERVER/drain), else 0.",
            &["upstream", "server"],
        )?;
        let connect_errors = counter(
            CONNECT_ERRORS,
            "Failed connection attempts to an upstream server.",
            &["upstream", "server"],
        )?;
        let retries = counter(
            RETRIES,
            "Requests sent again to another server of the pool.",
            &["upstream"],
        )?;
        let region_fallbacks = counter(
            REGION_FALLBACKS,
            "Requests a route sent to another region's edge because its own pool could not answer.",
            &["route", "region"],
        )?;
        let ejections = counter(
            EJECTIONS,
            "Servers taken out of rotation by passive health (consecutive failures).",
            &["upstream", "server"],
        )?;
        let upstream_resolutions = counter(
            UPSTREAM_RESOLUTIONS,
            "Resolutions of upstream servers named by host name, by server (NAME:PORT) and result (ok, fail); a failure keeps the last addresses.",
            &["server", "result"],
        )?;
        let ratelimit_rejected = counter(
            RATELIMIT_REJECTED,
            "Requests answered 429 by a rate limit, by route.",
            &["route"],
        )?;
        let config_reloads = counter(
            CONFIG_RELOADS,
            "Configuration reloads, by result (ok or error).",
            &["result"],
        )?;
        let webhook_deliveries = counter(WEBHOOK_DELIVERIES, "Webhook events, by result (delivered, failed after retries, dropped when the queue was full).", &["result"])?;
        let certificate_expiry = gauge(
            CERTIFICATE_EXPIRY,
            "When the certificate serving a name expires (Unix time), for file and ACME certificates.",
            &["name"],
        )?;
        let acme_orders = counter(
            ACME_ORDERS,
            "ACME orders, by result (issued or failed).",
            &["result"],
        )?;
        let region_up = gauge(
            REGION_UP,
            "1 if this node may give the region out in DNS answers (healthy, or no health URL; in a cluster, as the shared view says), 0 if not.",
            &["region"],
        )?;
        let dns_queries = counter(
            DNS_QUERIES,
            "DNS queries answered, by zone (empty outside our zones), query type and response code.",
            &["zone", "qtype", "rcode"],
        )?;
        let dns_geo_answers = counter(
            DNS_GEO_ANSWERS,
            "Answers for geo names, by name and the region given out (\"all\" when every region was down).",
            &["name", "region"],
        )?;
        let dns_rate_limited = counter(
            DNS_RATE_LIMITED,
            "UDP responses held back by DNS response rate limiting, by action: slip (sent truncated, TC=1) or drop (not sent). Their queries also count in headland_dns_queries_total.",
            &["action"],
        )?;
        let limit_rejections = counter(
            HTTP_LIMIT_REJECTIONS,
            "Requests or connections refused by a client-side limit (408, 414, 431, 400, or a close), by limit.",
            &["limit"],
        )?;
        let access_denied = counter(
            ACCESS_DENIED,
            "Requests refused by a route's access rules before reaching the upstream, by route and rule (address, basic_auth, forward_auth).",
            &["route", "rule"],
        )?;
        let forward_auth_errors = counter(
            FORWARD_AUTH_ERRORS,
            "Requests refused because the forward-auth service could not answer (unreachable: 502, timeout: 504), by route and reason.",
            &["route", "reason"],
        )?;
        let bodies_buffered = counter(
            HTTP_BODIES_BUFFERED,
            "Request bodies read whole before the upstream was contacted, by where they were kept (memory or file).",
            &["storage"],
        )?;
        let connections = IntGauge::new(
            HTTP_CONNECTIONS,
            "Client connections open on the HTTP and HTTPS listeners.",
        )?;
        registry.register(Box::new(connections.clone()))?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                HTTP_DURATION,
                "Time from request start to the end of the response, by route and upstream.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "upstream"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let health_check_duration = HistogramVec::new(
            HistogramOpts::new(
                HEALTH_CHECK_DURATION,
                "Time an active health check took to pass (connect, request, answer), by upstream and server; failed checks are counted in headland_upstream_health_checks_total only.",
            )
            .buckets(CHECK_BUCKETS.to_vec()),
            &["upstream", "server"],
        )?;
        registry.register(Box::new(health_check_duration.clone()))?;
        let webhook_sequence = IntGauge::new(
            WEBHOOK_SEQUENCE,
            "Sequence number of the last webhook event this node produced (the body's \"sequence\").",
        )?;
        registry.register(Box::new(webhook_sequence.clone()))?;
        let webhook_delivered_sequence = IntGauge::new(
            WEBHOOK_DELIVERED_SEQUENCE,
            "Highest sequence number delivered to a webhook receiver; behind headland_webhook_sequence while deliveries wait or retry.",
        )?;
        registry.register(Box::new(webhook_delivered_sequence.clone()))?;
        let config_generation = IntGauge::new(
            CONFIG_GENERATION,
            "Generation of the configuration in use; starts at 1.",
        )?;
        registry.register(Box::new(config_generation.clone()))?;
        let cluster_following = IntGauge::new(
            CLUSTER_FOLLOWING,
            "1 while this node follows the cluster's etcd (shared health and certificates), 0 while its own probes decide; absent without [cluster].",
        )?;
        let access_log_dropped = IntCounter::new(
            ACCESS_LOG_DROPPED,
            "Access-log lines dropped because the writer fell behind.",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                BUILD_INFO,
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // Export zeroes up front so that alerts on `increase()` see the first failure.
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        for result in ["issued", "failed"] {
            acme_orders.with_label_values(&[result]);
        }
        for result in ["delivered", "failed", "dropped"] {
            webhook_deliveries.with_label_values(&[result]);
        }
        for action in ["slip", "drop"] {
            dns_rate_limited.with_label_values(&[action]);
        }
        for limit in LIMITS {
            limit_rejections.with_label_values(&[limit]);
        }
        for storage in ["memory", "file"] {
            bodies_buffered.with_label_values(&[storage]);
        }
        let streams = StreamMetrics::register(&registry)?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            upstream_up,
            health_checks,
            health_check_duration,
            upstream_drained,
            connect_errors,
            retries,
            region_fallbacks,
            ejections,
            upstream_resolutions,
            ratelimit_rejected,
            config_reloads,
            config_generation,
            cluster_following,
            webhook_deliveries,
            webhook_sequence,
            webhook_delivered_sequence,
            access_log_dropped,
            certificate_expiry,
            acme_orders,
            region_up,
            dns_queries,
            dns_geo_answers,
            dns_rate_limited,
            limit_rejections,
            access_denied,
            forward_auth_errors,
            connections,
            bodies_buffered,
            streams,
        })
    }

    /// Exports `headland_cluster_following`: only nodes with `[cluster]` have it, so an
    /// alert on it never fires for a node that is alone by design.
    pub fn register_cluster(&self) {
        if let Err(error) = self
            .registry
            .register(Box::new(self.cluster_following.clone()))
        {
            tracing::warn!(%error, "cannot export the cluster metric");
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        out
    }
}

/// `[[streams]]` connections: how they ended, the bytes they carried, how many are open.
pub struct StreamMetrics {
    pub connections: IntCounterVec,
    pub bytes: IntCounterVec,
    pub active: IntGaugeVec,
}

// === impl StreamMetrics ===

impl StreamMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let connections = IntCounterVec::new(
            Opts::new(
                STREAM_CONNECTIONS,
                "Stream connections ended, by stream (empty when none matched) and result: closed, idle_timeout, error (a reset), no_server (every server down or refused), no_stream (no stream for the address or SNI), bad_client_hello.",
            ),
            &["stream", "result"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                STREAM_BYTES,
                "Bytes carried by streams, by stream and direction: received (from clients) or sent (to clients).",
            ),
            &["stream", "direction"],
        )?;
        let active = IntGaugeVec::new(
            Opts::new(STREAM_ACTIVE, "Stream connections open now, by stream."),
            &["stream"],
        )?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(active.clone()))?;
        Ok(Self {
            connections,
            bytes,
            active,
        })
    }
}
