output "region" {
  description = "The Marquee region's name."
  value       = var.region
}

output "aws_region" {
  description = "The AWS region it runs in (for Route 53 latency records)."
  value       = data.aws_region.current.region
}

output "load_balancer_dns_name" {
  description = "The load balancer's name: CloudFront's origin in this region, behind Route 53."
  value       = aws_lb.region.dns_name
}

output "load_balancer_zone_id" {
  description = "The load balancer's hosted zone, for Route 53 alias records."
  value       = aws_lb.region.zone_id
}

output "redis_configuration_endpoint" {
  description = "The Redis Cluster's configuration endpoint (`[redis] seeds`)."
  value       = "${aws_elasticache_replication_group.cache.configuration_endpoint_address}:6379"
}

output "scylla_contact_points" {
  description = "The data center's contact points (`[store] contact_points`)."
  value       = local.scylla_contact_points
}

output "gateway_service" {
  description = "The gateways' ECS cluster and service, for deploys and dashboards."
  value       = { cluster = aws_ecs_cluster.region.name, service = aws_ecs_service.gateway.name }
}

output "account_id" {
  description = "The AWS account the region runs in."
  value       = data.aws_caller_identity.current.account_id
}
