//! The rig's generated configuration: what HAProxy, Varnish, PowerDNS and Prometheus are told,
//! derived from the region files. Each function returns a file's text; `rig up` writes them
//! under `target/rig/`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::regions::Region;

/// The region's health URL path, answered by its load balancer: 200 while at least one of its
/// gateways is in rotation.
pub(crate) const REGION_HEALTH: &str = "/readyz/region";

/// The body HAProxy answers with when no gateway of the region is up: GraphQL-shaped, like
/// every other error of the API, and never cached.
pub(crate) fn haproxy_503() -> String {
    let body = r#"{"errors":[{"message":"no gateway of this region is available; retry shortly","extensions":{"code":"ORIGIN_UNAVAILABLE"}}]}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\
         Retry-After: 5\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The region's load balancer: round robin over its gateways, each checked on `/readyz`
/// every 500 ms and out of rotation after two failures, so a gateway draining after SIGTERM
/// (503 on `/readyz` for `http.drain_delay_ms`) gets no new requests before it closes. A
/// request whose connection to a gateway failed is sent to another.
/// The header the edge proves itself with (the gateways' `http.origin_header` default).
pub(crate) const ORIGIN_HEADER: &str = "x-marquee-origin";

pub(crate) fn haproxy(region: &Region, error_file: &Path, origin_secret: &str) -> String {
    let mut servers = String::new();
    for (i, gateway) in region.gateways.iter().enumerate() {
        let _ = writeln!(servers, "    server gateway-{} {gateway} check", i + 1);
    }
    format!(
        "# {name}: the regional load balancer (written by `cargo xtask rig up` from {file})
global
    maxconn 8000

defaults
    mode http
    timeout connect 2s
    timeout client 75s
    timeout server 15s
    timeout http-keep-alive 60s
    timeout check 1s
    # A request whose connection a gateway refused (it stopped) goes to another at once:
    # redispatched on its retry, without HAProxy's pause before retrying the same server.
    retries 1
    retry-on conn-failure empty-response
    option redispatch 1
    option forwardfor
    errorfile 503 {error_file}

frontend api
    bind {lb}
    # The region's own health, for the edge's probe and geo-DNS: 200 while a gateway is in
    # rotation. (A gateway's /readyz speaks for that gateway only, and a draining one says 503.)
    monitor-uri {region_health}
    monitor fail if {{ nbsrv(gateways) lt 1 }}
    # Only what came through the region's edge reaches a gateway: the edge adds the origin
    # secret (an ALB listener rule does this in production). Anyone else gets a 403.
    http-request return status 403 content-type application/json string '{forbidden}' unless {{ path {region_health} }} || {{ req.hdr({origin_header}) -m str {origin_secret} }}
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host {name}
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
{servers}",
        name = region.name,
        file = region.file.display(),
        error_file = error_file.display(),
        lb = region.load_balancer,
        region_health = REGION_HEALTH,
        origin_header = ORIGIN_HEADER,
        forbidden = FORBIDDEN_BODY,
    )
}

/// What the load balancer answers a request that did not come through the edge.
const FORBIDDEN_BODY: &str = r#"{"errors":[{"message":"Requests reach this API through its CDN.","extensions":{"code":"FORBIDDEN"}}]}"#;

/// `backend.vcl` for `regions/rig/edge.vcl`: the region's load balancer, probed on its
/// health URL (503 when no gateway is in rotation) so the edge knows when to serve stale
/// copies.
pub(crate) fn varnish_backend(region: &Region, others: &[&Region], origin_secret: &str) -> String {
    let mut vcl = format!(
        "# {name}: the CDN edge's origins (written by `cargo xtask rig up` from {file})\n\n",
        name = region.name,
        file = region.file.display(),
    );
    vcl.push_str(&load_balancer_backend("origin", region));
    let mut director = String::from("sub vcl_init {\n    new others = directors.fallback();\n");
    for (i, other) in others.iter().enumerate() {
        let _ = writeln!(
            vcl,
            "# {}'s load balancer: the reads {} cannot answer go there.",
            other.name, region.name
        );
        vcl.push_str(&load_balancer_backend(&format!("next_{i}"), other));
        let _ = writeln!(director, "    others.add_backend(next_{i});");
    }
    director.push_str("}\n");
    let _ = write!(
        vcl,
        "{director}
# Proves to the load balancers that a request came through this edge.
sub origin_secret {{
    set bereq.http.{ORIGIN_HEADER} = \"{origin_secret}\";
}}
"
    );
    vcl
}

/// A Varnish backend `name` for `region`'s load balancer, probed on the region's health URL.
fn load_balancer_backend(name: &str, region: &Region) -> String {
    format!(
        "backend {name} {{
    .host = \"{host}\";
    .port = \"{port}\";
    .connect_timeout = 1s;
    .first_byte_timeout = 15s;
    .probe = {{
        .url = \"{REGION_HEALTH}\";
        .interval = 500ms;
        .timeout = 1s;
        .window = 3;
        .threshold = 2;
    }}
}}

",
        host = region.load_balancer.ip(),
        port = region.load_balancer.port(),
    )
}

/// Alertmanager: every alert to one receiver that notifies nobody, grouped by alert and
/// region (what a pager route would group by).
pub(crate) fn alertmanager() -> String {
    "# the rig's Alertmanager (written by `cargo xtask rig up`)
route:
  receiver: rig
  group_by: [alertname, region]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: rig
"
    .to_owned()
}

/// Jaeger (v2, built on the OpenTelemetry Collector): OTLP/HTTP in at `otlp`, traces kept in
/// memory, the UI and its API at `query`; nothing else listens.
pub(crate) fn jaeger(otlp: SocketAddr, query: SocketAddr, query_grpc: SocketAddr) -> String {
    format!(
        "# the rig's Jaeger (written by `cargo xtask rig up`)
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      memory:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memory
    http:
      endpoint: {query}
    grpc:
      endpoint: {query_grpc}
receivers:
  otlp:
    protocols:
      http:
        endpoint: {otlp}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory
"
    )
}

/// `regions.json`: what `terraform/environments/local` reads to render the geo-DNS zone
/// through the traffic policy (the module production's Route 53 records come from): each
/// region's edge, client subnets and the other names the rig's DNS answers for it, with the
/// zone's name, TTL and the regions' health URL.
pub(crate) fn traffic_inputs(
    zone: &str,
    regions: &[Region],
    ttl: u32,
    nodes: &std::collections::BTreeMap<String, IpAddr>,
) -> serde_json::Value {
    let edge_port = regions.first().map_or(80, |r| r.edge.port());
    let regions: Vec<serde_json::Value> = regions
        .iter()
        .map(|region| {
            // The names its gateways find their Redis Cluster (on loopback) and their data
            // center's node by.
            let mut hosts: Vec<serde_json::Value> = region
                .redis_names
                .iter()
                .map(|name| serde_json::json!({ "name": name, "address": "127.0.0.1" }))
                .collect();
            if let Some(node) = nodes.get(&region.data_center) {
                hosts.push(serde_json::json!({ "name": region.contact_name, "address": node.to_string() }));
            }
            serde_json::json!({
                "name": region.name,
                "edge": region.edge.ip().to_string(),
                "client_subnets": region.client_subnets,
                "hosts": hosts,
            })
        })
        .collect();
    serde_json::json!({
        "zone": zone,
        "ttl": ttl,
        "edge_port": edge_port,
        "health_path": REGION_HEALTH,
        "regions": regions,
    })
}

/// PowerDNS's `named.conf` (the bind backend's zone list).
pub(crate) fn named_conf(zone: &str, zone_file: &Path) -> String {
    format!("zone \"{zone}\" {{\n    type master;\n    file \"{}\";\n}};\n", zone_file.display())
}

/// PowerDNS's settings: the bind backend with LUA records, health checks every second, and
/// log level 6 (info) so `geo-DNS.log` holds each "Lua record monitoring declaring ... UP/DOWN":
/// Debian's PowerDNS (4.7) has no `minimumFailures`, so one failed check moves a region's
/// clients, and the log is where to see which check it was.
pub(crate) fn pdns_conf(dns: SocketAddr, dir: &Path, named_conf: &Path) -> String {
    format!(
        "# the rig's geo-DNS (written by `cargo xtask rig up`)
launch=bind
bind-config={named}
enable-lua-records=yes
lua-health-checks-interval=1
local-address={ip}
local-port={port}
socket-dir={dir}
daemon=no
guardian=no
write-pid=no
disable-syslog=yes
loglevel=6
",
        named = named_conf.display(),
        ip = dns.ip(),
        port = dns.port(),
        dir = dir.display(),
    )
}

/// Prometheus: every gateway's `/metrics` every 5 s, each target labelled with its region
/// (the gateways label their own series with `region`; `up` gets it from here), and Marquee's
/// alerting rules (`rules`, regions/monitoring/rules.yml) evaluated every 5 s, sent to the
/// Alertmanager at `alertmanager`.
pub(crate) fn prometheus(regions: &[Region], rules: &Path, alertmanager: SocketAddr) -> String {
    let mut text = format!(
        "# the rig's monitoring (written by `cargo xtask rig up` from regions/*.toml)
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - '{}'
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['{alertmanager}']
scrape_configs:
  - job_name: gateway
    honor_labels: true
    static_configs:
",
        rules.display()
    );
    for region in regions {
        let targets: Vec<String> = region.gateways.iter().map(|g| format!("'{g}'")).collect();
        let _ = writeln!(text, "      - targets: [{}]", targets.join(", "));
        let _ = writeln!(text, "        labels: {{region: '{}'}}", region.name);
    }
    text
}
