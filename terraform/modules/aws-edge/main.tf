# What is global about Marquee on AWS: the CDN in front of every region, and the DNS that
# picks a region for it.
#
#   api.<domain>     CloudFront (cache policy below; a viewer-request function normalises
#                    the cache key as the rig's Varnish edge does, regions/rig/edge.vcl)
#   origin.<domain>  Route 53 latency records, one per serving region, each an alias of the
#                    region's load balancer, healthy while the load balancer has a gateway
#                    in rotation and its /readyz answers; CloudFront resolves it from each
#                    edge location, so an edge is served by the nearest healthy region.
#
# Which regions get a record is the traffic policy's decision (modules/traffic-policy), the
# same module that drives the rig's PowerDNS: `drained_regions` takes a region out and
# refuses to take them all. Not applied by Marquee's CI (the AWS provider cannot be
# downloaded there): `terraform fmt -check` and checkov only.

module "policy" {
  source = "../traffic-policy"

  regions = [for r in var.regions : {
    name           = r.name
    edge           = r.load_balancer_dns_name
    client_subnets = []
    weight         = r.weight
  }]
  drained_regions   = var.drained_regions
  health_check_path = "/readyz"
  health_check_port = 443
}

locals {
  by_name     = { for r in var.regions : r.name => r }
  serving     = toset(module.policy.serving_regions)
  origin_name = "origin.${var.domain_name}"
}

# --- Route 53: the origin, by latency, with health checks -----------------------------

# Any gateway of the region answering /readyz through its load balancer. Route 53 also
# evaluates the alias target (the load balancer has a healthy target), so a region with no
# gateway in rotation, or whose load balancer is unreachable, is skipped.
resource "aws_route53_health_check" "region" {
  for_each          = local.serving
  fqdn              = local.by_name[each.key].load_balancer_dns_name
  port              = 443
  type              = "HTTPS"
  resource_path     = "/readyz"
  failure_threshold = 2
  request_interval  = 10
  measure_latency   = true
  tags              = merge(var.tags, { Name = "marquee-${each.key}", "marquee:region" = each.key })
}

resource "aws_route53_record" "origin" {
  for_each        = local.serving
  zone_id         = var.hosted_zone_id
  name            = local.origin_name
  type            = "A"
  set_identifier  = each.key
  health_check_id = aws_route53_health_check.region[each.key].id

  latency_routing_policy {
    region = local.by_name[each.key].aws_region
  }

  alias {
    name                   = local.by_name[each.key].load_balancer_dns_name
    zone_id                = local.by_name[each.key].load_balancer_zone_id
    evaluate_target_health = true
  }
}

# --- CloudFront -------------------------------------------------------------------------

# The cache key: only what changes a GraphQL response. Query string: `query`, `id`,
# `documentId`, `operationName`, `variables`, `extensions` (the function cuts `extensions` down to
# `persistedQuery` and sorts the parameters). Headers: `Accept` (normalised by the function
# to the media type the gateway's negotiation picks) and `Authorization`. CloudFront forwards
# `Authorization` to the origin only when it is part of the cache key, and the gateways need
# it, so it is: a signed-in caller's answers are `private, no-store` and never stored, a
# public answer fetched with a token is stored under that token only, and partners' persisted
# GETs, which carry none, share one entry. TTLs come from the gateway's Cache-Control
# (`s-maxage`, `stale-while-revalidate`, `stale-if-error`): nothing is cached without one.
resource "aws_cloudfront_cache_policy" "graphql" {
  name        = "marquee-graphql"
  comment     = "Marquee: GraphQL GETs, keyed on the operation, its variables, Accept and Authorization; TTLs from the origin"
  min_ttl     = 0
  default_ttl = 0
  max_ttl     = 86400

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = true
    enable_accept_encoding_brotli = true

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "whitelist"
      headers {
        items = ["Accept", "Authorization"]
      }
    }
    query_strings_config {
      query_string_behavior = "whitelist"
      query_strings {
        items = ["query", "id", "documentId", "operationName", "variables", "extensions"]
      }
    }
  }
}

# What the origin gets beyond the cache key: the content type of POST bodies. (CloudFront
# adds the client's address to X-Forwarded-For by itself.)
resource "aws_cloudfront_origin_request_policy" "graphql" {
  name    = "marquee-graphql"
  comment = "Marquee: the content type of POSTs"

  cookies_config {
    cookie_behavior = "none"
  }
  headers_config {
    header_behavior = "whitelist"
    headers {
      items = ["Content-Type"]
    }
  }
  query_strings_config {
    query_string_behavior = "none"
  }
}

# Headers every answer gets at the edge; Cache-Control, Vary and ETag stay the gateway's.
resource "aws_cloudfront_response_headers_policy" "api" {
  name    = "marquee-api"
  comment = "Marquee: transport security for every answer"

  security_headers_config {
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      preload                    = true
      override                   = true
    }
    content_type_options {
      override = true
    }
    frame_options {
      frame_option = "DENY"
      override     = true
    }
    referrer_policy {
      referrer_policy = "no-referrer"
      override        = true
    }
  }
}

resource "aws_cloudfront_function" "cache_key" {
  name    = "marquee-cache-key"
  runtime = "cloudfront-js-2.0"
  comment = "Marquee: the cache key of a GraphQL GET, as the rig's edge computes it"
  publish = true
  code    = file("${path.module}/cache-key.js")
}

resource "aws_cloudfront_distribution" "api" {
  #checkov:skip=CKV_AWS_310:One origin, itself a latency record over every healthy region: Route 53 fails over between regions, not CloudFront origin groups (which cannot retry POSTs).
  #checkov:skip=CKV_AWS_374:A public API for clients everywhere: no country is refused.
  #checkov:skip=CKV_AWS_305:An API: `/` is no document, and GraphQL is served on /graphql.
  #checkov:skip=CKV2_AWS_47:The web ACL is an input (web_acl_arn); its rule groups are chosen by the operator.
  enabled         = true
  is_ipv6_enabled = true
  comment         = "Marquee API"
  aliases         = [var.domain_name]
  price_class     = var.price_class
  web_acl_id      = var.web_acl_arn
  http_version    = "http2and3"
  tags            = var.tags

  origin {
    origin_id   = "regions"
    domain_name = local.origin_name

    custom_origin_config {
      http_port                = 80
      https_port               = 443
      origin_protocol_policy   = "https-only"
      origin_ssl_protocols     = ["TLSv1.2"]
      origin_read_timeout      = 30
      origin_keepalive_timeout = 60
    }
  }

  default_cache_behavior {
    target_origin_id           = "regions"
    viewer_protocol_policy     = "https-only"
    allowed_methods            = ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]
    cached_methods             = ["GET", "HEAD"]
    cache_policy_id            = aws_cloudfront_cache_policy.graphql.id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.graphql.id
    compress                   = true
    response_headers_policy_id = aws_cloudfront_response_headers_policy.api.id

    function_association {
      event_type   = "viewer-request"
      function_arn = aws_cloudfront_function.cache_key.arn
    }
  }

  logging_config {
    bucket          = var.logs_bucket
    include_cookies = false
    prefix          = "cloudfront/"
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    acm_certificate_arn      = var.certificate_arn
    ssl_support_method       = "sni-only"
    minimum_protocol_version = "TLSv1.2_2021"
  }
}

resource "aws_route53_record" "api" {
  for_each = toset(["A", "AAAA"])
  zone_id  = var.hosted_zone_id
  name     = var.domain_name
  type     = each.value

  alias {
    name                   = aws_cloudfront_distribution.api.domain_name
    zone_id                = aws_cloudfront_distribution.api.hosted_zone_id
    evaluate_target_health = false
  }
}
