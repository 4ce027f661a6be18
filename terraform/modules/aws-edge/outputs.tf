output "serving_regions" {
  description = "The regions with an origin record, heaviest first."
  value       = module.policy.serving_regions
}

output "distribution_id" {
  description = "The CloudFront distribution (for invalidations and dashboards)."
  value       = aws_cloudfront_distribution.api.id
}

output "health_checks" {
  description = "Each serving region's Route 53 health check."
  value       = { for name, check in aws_route53_health_check.region : name => check.id }
}
