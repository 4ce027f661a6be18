output "distribution_id" {
  description = "The CloudFront distribution (for invalidations and dashboards)."
  value       = aws_cloudfront_distribution.api.id
}

output "health_checks" {
  description = "Each region's Route 53 health check, drained or not."
  value       = { for name, check in aws_route53_health_check.region : name => check.id }
}

output "origin_names" {
  description = "The names CloudFront reaches the regions by: the primary (latency, then weighted), the secondary (each region's clients' next region), and each serving region's weighted set."
  value = {
    primary   = local.primary
    secondary = local.secondary
    weighted  = { for name in var.policy.serving_regions : name => local.weighted_name[name] }
  }
}
