vcl 4.1;
# A region's CDN edge (Varnish on the rig; CloudFront or any CDN honouring Cache-Control in
# production), in front of the region's load balancer. What it does, and why:
#
# - It caches GET /graphql by the gateway's Cache-Control: `s-maxage`/`max-age` set the TTL,
#   `stale-while-revalidate` the window in which a stale copy is answered while a fresh one is
#   fetched in the background, `stale-if-error` how long a stale copy stands in for an origin
#   that fails or has no healthy gateway. Everything else (POST, /readyz, /metrics) passes.
# - The cache key is the one the README gives CDN operators: the path with only the parameters
#   that change a response (`query`, `id`, `documentId`, `operationName`, `variables`, and
#   `extensions` cut down to its `persistedQuery` member), sorted; then the response's `Vary`
#   (`Accept`, normalised to the media type the gateway would choose, and `Authorization`).
# - A request with `Authorization` is looked up like any other (its token is part of the key
#   through `Vary`), but its response is stored only when the gateway marked it `public`:
#   anything caller-specific is `private, no-store` and is never kept, let alone served to
#   another caller.
# - A conditional GET (`If-None-Match`) for a cached response is answered 304 by the edge.
# - Reads fail over: a GraphQL GET (`/graphql` or `/graphql/read`) the region's load balancer
#   cannot answer (no healthy gateway, a refused or failed connection, a 5xx) is sent to the
#   next region's load balancer (`others`, backend.vcl) instead of failing; and while the
#   region's origin is down, GETs go there directly. Anything else (a POST may be a write, and
#   the region's health URL must speak for the region) is never sent elsewhere: with no
#   healthy origin it fails at once with a GraphQL-shaped 503 and `Retry-After`.
# - Purging by surrogate key (Varnish's xkey module, Debian's `varnish-modules`): a public
#   response names the movies whose rating it shows in `xkey`, and a gateway that applies a
#   rating change sends `PURGE` with those movies in `xkey-purge`; every copy naming one is
#   dropped, so the next request fetches the new rating. Only the region's gateways may purge
#   (`purgers`). `xkey` and `Surrogate-Key` stay at the edge.
#
# `backend.vcl` (written by `cargo xtask rig up` from the region files) defines `origin`: the
# region's load balancer, probed on its health URL (200 while a gateway is in rotation);
# `others`, a fallback director over the other regions' load balancers (in the order the
# region's clients are sent to them); and `origin_secret`, which adds the secret the load
# balancers require to every fetch.

import directors;
import std;
import xkey;

# Who may purge: the region's gateways, which reach the edge from 127.0.0.1 on the rig (its
# clients send from 127.10.0.0/16 and 127.20.0.0/16: a client purging at will would empty the
# cache for everyone).
acl purgers {
    "127.0.0.1";
}

include "backend.vcl";

sub vcl_recv {
    set req.backend_hint = origin;
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "Name the surrogate keys to purge in xkey-purge"));
        }
        return (synth(200, "Purged " + xkey.purge(req.http.xkey-purge)));
    }
    if (req.restarts == 0) {
        unset req.http.X-Marquee-Revalidate;
        unset req.http.X-Marquee-Stale;
        unset req.http.X-Marquee-Key;
        unset req.http.X-Marquee-Elsewhere;
    }
    if (req.method != "GET" && req.method != "HEAD") {
        if (!std.healthy(origin)) {
            # Never sent to another region (it may be a write): refused at once.
            return (synth(503, "ORIGIN_UNAVAILABLE"));
        }
        return (pass);
    }
    if (req.url !~ "^/graphql(/read)?\?") {
        return (pass);
    }
    if (!std.healthy(origin)) {
        # The region cannot answer: reads go to the next region (unless a stale copy here
        # may stand in, see vcl_hit).
        set req.http.X-Marquee-Elsewhere = "1";
    }
    # One variant per media type the gateway answers with (its negotiation, in the same order).
    if (req.http.Accept ~ "(?i)application/graphql-response\+json") {
        set req.http.Accept = "application/graphql-response+json";
    } elsif (!req.http.Accept || req.http.Accept ~ "(?i)(application/json|\*/\*|application/\*)") {
        set req.http.Accept = "application/json";
    }
    # The key: unknown parameters dropped, `extensions` reduced to `{"persistedQuery":{…}}`
    # (URL-encoded, as browsers and curl send it) or dropped when it has no such member, then
    # the parameters sorted.
    set req.http.X-Marquee-Key = regsuball(req.url,
        "(?<=[?&])(?!(?:query|id|documentId|operationName|variables|extensions)=)[^&]*&?", "");
    set req.http.X-Marquee-Key = regsub(req.http.X-Marquee-Key,
        "(?i)([?&]extensions=)[^&]*?(%22persistedQuery%22%3A%7B[^&]*?%7D)[^&]*", "\1%7B\2%7D");
    set req.http.X-Marquee-Key = regsuball(req.http.X-Marquee-Key,
        "(?i)(?<=[?&])extensions=(?!%7B%22persistedQuery%22)[^&]*&?", "");
    set req.http.X-Marquee-Key = std.querysort(regsub(req.http.X-Marquee-Key, "[?&]+$", ""));
    if (req.http.X-Marquee-Stale) {
        # The origin failed: any copy within its stale-if-error will do (req.grace survives
        # a restart, and only caps the object's own grace).
        set req.grace = 3650d;
    } elsif (req.http.X-Marquee-Revalidate) {
        # Past stale-while-revalidate with a healthy origin: only a fresh copy will do.
        set req.grace = 0s;
    }
    return (hash);
}

sub vcl_hash {
    hash_data(req.http.X-Marquee-Key);
    return (lookup);
}

sub vcl_hit {
    if (obj.ttl >= 0s) {
        return (deliver);
    }
    # Stale. With no healthy gateway, or after the origin just failed, it stands in
    # (stale-if-error, the object's grace).
    if (req.http.X-Marquee-Stale || !std.healthy(origin)) {
        return (deliver);
    }
    # Within stale-while-revalidate: answered now, refreshed in the background.
    if (obj.ttl + std.duration(obj.http.X-Marquee-Swr, 0s) > 0s) {
        return (deliver);
    }
    set req.http.X-Marquee-Revalidate = "1";
    return (restart);
}

sub vcl_backend_fetch {
    # Proves to the load balancer that the request came through this edge (`origin_secret`,
    # from backend.vcl): it refuses anything else, and the gateways believe X-Forwarded-For
    # only with it.
    call origin_secret;
    if (bereq.http.X-Marquee-Elsewhere || bereq.retries > 0) {
        set bereq.backend = others.backend();
    }
}

sub vcl_backend_response {
    if (beresp.status >= 500 && bereq.retries == 0 && !bereq.http.X-Marquee-Elsewhere
            && bereq.method ~ "^(GET|HEAD)$" && bereq.url ~ "^/graphql(/read)?\?") {
        # The region failed a read: the next region answers it.
        return (retry);
    }
    if (bereq.retries > 0 || bereq.http.X-Marquee-Elsewhere) {
        set beresp.http.X-Marquee-Edge-Fallback = "1";
    }
    if (bereq.http.Authorization && beresp.http.Cache-Control !~ "(?i)(^|[ ,])public([ ,]|$)") {
        # A caller's own answer: never stored.
        set beresp.uncacheable = true;
        set beresp.ttl = 0s;
        return (deliver);
    }
    if (beresp.status >= 500 && (bereq.is_bgfetch || bereq.http.X-Marquee-Revalidate)) {
        # A failed refresh keeps the stale copy (and the client is answered with it, see
        # vcl_synth): stale-if-error.
        return (abandon);
    }
    if (beresp.status >= 500 && beresp.http.X-Marquee-Edge-Fallback) {
        # The next region failed the read too: the GraphQL-shaped 503 below.
        return (error(503, "Service Unavailable"));
    }
    # Varnish took stale-while-revalidate as the grace; keep it for vcl_hit, and make the
    # grace stale-if-error, the longest a stale copy may stand in.
    set beresp.http.X-Marquee-Swr = regsub(beresp.grace, "\..*$", "") + "s";
    if (beresp.http.Cache-Control ~ "(?i)stale-if-error=[0-9]+") {
        set beresp.grace = std.duration(
            regsub(beresp.http.Cache-Control, "(?i)^.*stale-if-error=([0-9]+).*$", "\1s"), beresp.grace);
    }
}

sub vcl_backend_error {
    if (bereq.retries == 0 && !bereq.http.X-Marquee-Elsewhere && bereq.method ~ "^(GET|HEAD)$"
            && bereq.url ~ "^/graphql(/read)?\?") {
        # The region's load balancer could not be reached for a read: the next region.
        return (retry);
    }
    set beresp.http.Content-Type = "application/json";
    set beresp.http.Cache-Control = "no-store";
    set beresp.http.Retry-After = "5";
    set beresp.body = {"{"errors":[{"message":"no gateway of this region is available; retry shortly","extensions":{"code":"ORIGIN_UNAVAILABLE" } }] }"};
    return (deliver);
}

sub vcl_synth {
    if (resp.status == 503 && req.http.X-Marquee-Revalidate && !req.http.X-Marquee-Stale) {
        # The refresh was abandoned (the origin failed): answer with the stale copy.
        set req.http.X-Marquee-Stale = "1";
        return (restart);
    }
    if (resp.reason == "ORIGIN_UNAVAILABLE") {
        set resp.http.Content-Type = "application/json";
        set resp.http.Cache-Control = "no-store";
        set resp.http.Retry-After = "5";
        synthetic({"{"errors":[{"message":"no gateway of this region is available; retry shortly","extensions":{"code":"ORIGIN_UNAVAILABLE" } }] }"});
        return (deliver);
    }
}

sub vcl_deliver {
    if (resp.status >= 500 && req.http.X-Marquee-Revalidate && !req.http.X-Marquee-Stale) {
        # The origin could not be reached for a request a stale copy could answer: answer
        # with it.
        set req.http.X-Marquee-Stale = "1";
        return (restart);
    }
    unset resp.http.X-Marquee-Swr;
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
    if (obj.uncacheable) {
        set resp.http.X-Cache = "PASS";
    } elsif (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
