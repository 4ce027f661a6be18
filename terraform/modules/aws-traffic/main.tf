# Where Marquee's traffic goes on AWS: the CDN in front of every region and the DNS that picks a
# region for it. It is the traffic stack's alone (environments/aws/traffic, a state of its
# own): draining a region changes these records and nothing of any region's stack, so a
# failover never needs the failing region's APIs or state. Which regions serve, and how a
# region's share is split, is the traffic policy's decision (modules/traffic-policy), the
# module that drives the rig's PowerDNS too.
#
#   api.<domain>                 CloudFront (cache policy below; a viewer-request function
#                                normalises the cache key as the rig's Varnish edge does)
#   origin.<domain>              latency records, one per serving region, each an alias of the
#                                region's weighted set: CloudFront's primary origin
#   <region>.w.origin.<domain>   the weighted set of a serving region: its own load balancer
#                                with its share (100, or 50 -> 10 while drained in steps) and
#                                the other serving regions' with the rest
#   secondary.origin.<domain>    latency records, each an alias of the load balancer of its
#                                region's clients' next region: the origin group's secondary,
#                                which GETs fail over to
#
# Every region keeps its health check, drained or not (SREs watch a drained region recover,
# and the policy returns traffic only to a region whose check passes). Not applied by
# Marquee's CI (the AWS provider cannot be downloaded there): `terraform fmt -check` and
# checkov, and the policy it follows is tested with `terraform test`.

locals {
  by_name   = { for r in var.regions : r.name => r }
  names     = [for r in var.regions : r.name]
  primary   = "origin.${var.domain_name}"
  secondary = "secondary.origin.${var.domain_name}"
  weighted_name = {
    for name in local.names : name => "${name}.w.origin.${var.domain_name}"
  }
  # One record per (serving region, region answering for it) with a weight above 0. Built
  # from the policy's `traffic_percent` too, whose preconditions (never drain every region,
  # never return traffic to a failing one) must then hold before any record changes.
  weighted_records = merge([
    for name, answers in var.policy.weighted_answers : {
      for answer in answers : "${name}/${answer.region}" => {
        set    = name
        target = answer.region
        weight = answer.weight
      } if answer.weight > 0 && var.policy.traffic_percent[name] > 0
    }
  ]...)
  # Each serving region's clients' next region, or the region itself when it serves alone.
  next_region   = var.policy.secondary_answers
  origin_header = "X-Marquee-Origin"
}

# --- Route 53: health checks (every region, always) -------------------------------------

# A region is healthy while its load balancer answers /readyz with a gateway in rotation (the
# load balancer lets /readyz through without the origin secret: health checkers cannot add
# one). Route 53 calls an endpoint healthy when more than 18% of its checkers see it healthy.
resource "aws_route53_health_check" "region" {
  for_each          = local.by_name
  fqdn              = each.value.load_balancer_dns_name
  port              = 443
  type              = "HTTPS"
  resource_path     = "/readyz"
  failure_threshold = 2
  request_interval  = 10
  measure_latency   = true
  tags              = merge(var.tags, { Name = "marquee-${each.key}", "marquee:region" = each.key })
}

resource "aws_cloudwatch_metric_alarm" "region_health" {
  for_each            = local.by_name
  alarm_name          = "marquee-${each.key}-health-check"
  alarm_description   = "Route 53's health check of ${each.key} fails: its clients are being sent elsewhere (or nowhere, if every region fails)."
  namespace           = "AWS/Route53"
  metric_name         = "HealthCheckStatus"
  dimensions          = { HealthCheckId = aws_route53_health_check.region[each.key].id }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
  tags                = var.tags
}

# --- Route 53: records (serving regions only) ------------------------------------------

resource "aws_route53_record" "weighted" {
  for_each        = local.weighted_records
  zone_id         = var.hosted_zone_id
  name            = local.weighted_name[each.value.set]
  type            = "A"
  set_identifier  = "${each.value.set}-to-${each.value.target}"
  health_check_id = aws_route53_health_check.region[each.value.target].id

  weighted_routing_policy {
    weight = each.value.weight
  }

  alias {
    name                   = local.by_name[each.value.target].load_balancer_dns_name
    zone_id                = local.by_name[each.value.target].load_balancer_zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "primary" {
  for_each       = toset([for name in var.policy.serving_regions : name if var.policy.traffic_percent[name] > 0])
  zone_id        = var.hosted_zone_id
  name           = local.primary
  type           = "A"
  set_identifier = each.key

  latency_routing_policy {
    region = local.by_name[each.key].aws_region
  }

  # The weighted set is healthy while any of its records is: a region whose load balancer
  # fails hands its share to the others', and its latency record is skipped when none is.
  alias {
    name                   = local.weighted_name[each.key]
    zone_id                = var.hosted_zone_id
    evaluate_target_health = true
  }

  depends_on = [aws_route53_record.weighted]
}

resource "aws_route53_record" "secondary" {
  for_each        = toset([for name in var.policy.serving_regions : name if var.policy.traffic_percent[name] > 0])
  zone_id         = var.hosted_zone_id
  name            = local.secondary
  type            = "A"
  set_identifier  = each.key
  health_check_id = aws_route53_health_check.region[local.next_region[each.key]].id

  latency_routing_policy {
    region = local.by_name[each.key].aws_region
  }

  alias {
    name                   = local.by_name[local.next_region[each.key]].load_balancer_dns_name
    zone_id                = local.by_name[local.next_region[each.key]].load_balancer_zone_id
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

# What the origin gets beyond the cache key: the content type of POST bodies and W3C trace
# context. (CloudFront adds the client's address to X-Forwarded-For by itself.)
resource "aws_cloudfront_origin_request_policy" "graphql" {
  name    = "marquee-graphql"
  comment = "Marquee: the content type of POSTs, trace context"

  cookies_config {
    cookie_behavior = "none"
  }
  headers_config {
    header_behavior = "whitelist"
    headers {
      items = ["Content-Type", "traceparent", "tracestate"]
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

  # "primary": the nearest serving region (latency, then its weighted set); "secondary": the
  # next region of the nearest one's clients.
  dynamic "origin" {
    for_each = { primary = local.primary, secondary = local.secondary }
    content {
      origin_id           = origin.key
      domain_name         = origin.value
      connection_timeout  = var.origin_timeouts.connect_timeout
      connection_attempts = var.origin_timeouts.attempts

      custom_header {
        name  = local.origin_header
        value = var.origin_secret
      }

      custom_origin_config {
        http_port                = 80
        https_port               = 443
        origin_protocol_policy   = "https-only"
        origin_ssl_protocols     = ["TLSv1.2"]
        origin_read_timeout      = var.origin_timeouts.read_timeout
        origin_keepalive_timeout = 30
      }
    }
  }

  # Reads fail over: when the primary cannot be reached or answers 5xx, CloudFront sends the
  # same GET to the secondary. CloudFront fails over GET, HEAD and OPTIONS only, and refuses
  # an origin group on a behavior that allows POST, hence a read-only path of its own.
  origin_group {
    origin_id = "regions"

    failover_criteria {
      status_codes = [500, 502, 503, 504]
    }

    member {
      origin_id = "primary"
    }
    member {
      origin_id = "secondary"
    }
  }

  # GraphQL reads by GET only (`/graphql/read`: persisted queries, cacheable reads).
  ordered_cache_behavior {
    path_pattern               = "/graphql/read"
    target_origin_id           = "regions"
    viewer_protocol_policy     = "https-only"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
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

  # Everything else, POST included: the primary only (a POST is never retried elsewhere: it
  # may be a write).
  default_cache_behavior {
    target_origin_id           = "primary"
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

  depends_on = [aws_route53_record.primary, aws_route53_record.secondary]
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
