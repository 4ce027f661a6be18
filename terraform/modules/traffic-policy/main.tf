# The traffic policy: from the regions, their weights, the share of its own clients each region
# keeps (100 normally; 50, then 10, then 0 while it is drained in steps) and what DNS health
# checks say now, which regions receive traffic, in what order each region's clients are sent
# to them, and how a region's share is split between it and the others. Provider-free on
# purpose: the same module drives Route 53 in production and PowerDNS on the local rig, and
# `terraform test` runs it anywhere.
#
# Two rules no caller can get around:
# - draining every region is refused (nobody would be served);
# - traffic goes back to a region (an undrain, or a larger share) only while its health check
#   passes: returning clients to a region that cannot serve them is refused, with the region
#   named. Taking traffic away is always allowed, healthy or not.

terraform {
  required_version = ">= 1.11"
}

variable "regions" {
  description = "Every region: its name, the address geo-DNS gives its clients (its CDN edge or load balancer), the client subnets that are its own, and its weight among the others when they take over its clients."
  type = list(object({
    name           = string
    edge           = string
    client_subnets = list(string)
    weight         = optional(number, 1)
  }))

  validation {
    condition     = length(var.regions) > 0 && length(distinct([for r in var.regions : r.name])) == length(var.regions)
    error_message = "Give at least one region, each name once."
  }
  validation {
    condition     = alltrue([for r in var.regions : r.weight > 0])
    error_message = "Weights are positive: drain a region with drained_regions or traffic_percent, not a zero weight."
  }
}

variable "drained_regions" {
  description = "Regions taken out of DNS at once (the same as a traffic_percent of 0): their clients go to the other regions. Draining every region is refused."
  type        = set(string)
  default     = []

  validation {
    condition     = alltrue([for name in var.drained_regions : contains([for r in var.regions : r.name], name)])
    error_message = "drained_regions names a region that is not in regions."
  }
}

variable "traffic_percent" {
  description = "The share of its own clients a region keeps, in percent (default 100). A drain in steps lowers it 100 -> 50 -> 10 -> 0; the rest of its clients go to the other serving regions, by weight. 0 takes the region out of DNS as drained_regions does."
  type        = map(number)
  default     = {}

  validation {
    condition     = alltrue([for name, percent in var.traffic_percent : contains([for r in var.regions : r.name], name)])
    error_message = "traffic_percent names a region that is not in regions."
  }
  validation {
    condition     = alltrue([for percent in values(var.traffic_percent) : percent >= 0 && percent <= 100 && floor(percent) == percent])
    error_message = "traffic_percent values are whole percentages from 0 to 100."
  }
}

variable "previous_percent" {
  description = "Each region's share as last applied (the stack's own previous output `traffic_percent`); null on a first apply. A share above it is a return of traffic, which needs a healthy region."
  type        = map(number)
  default     = null
}

variable "region_health" {
  description = "Whether each region's DNS health check passes now (true), fails (false); a region missing here is unknown, which counts as failing for a return of traffic."
  type        = map(bool)
  default     = {}
}

variable "health_check_path" {
  description = "The region's health URL path, answered by its load balancer through its edge: 200 while a gateway is in rotation."
  type        = string
  default     = "/readyz/region"
}

variable "health_check_port" {
  description = "The port the edges' health URLs are served on."
  type        = number
  default     = 443
}

locals {
  names   = [for r in var.regions : r.name]
  by_name = { for r in var.regions : r.name => r }
  percent = {
    for r in var.regions : r.name => contains(var.drained_regions, r.name) ? 0 : lookup(var.traffic_percent, r.name, 100)
  }
  # Serving regions, heaviest first (ties by name), as the other regions' fallbacks.
  serving = [
    for key in sort([for r in var.regions : format("%09d/%s", 1000000000 - floor(r.weight * 1000), r.name) if local.percent[r.name] > 0]) :
    split("/", key)[1]
  ]
  # Each region's clients: their own region first while it serves, then the others.
  routes = {
    for r in var.regions : r.name => concat(
      contains(local.serving, r.name) ? [r.name] : [],
      [for name in local.serving : name if name != r.name],
    )
  }
  # Where each region's clients go now: the first region of their route that is healthy, or
  # the first of their route if none is (DNS keeps answering rather than answering nothing).
  effective = {
    for client, route in local.routes : client => length(route) == 0 ? null : coalescelist(
      [for name in route : name if lookup(var.region_health, name, true)],
      route,
    )[0]
  }
  # The share each serving region hands to the others, split by their weights (whole
  # percentages; the heaviest takes the rounding).
  spill = {
    for name in local.serving : name => [for other in local.serving : other if other != name]
  }
  spill_weight = {
    for name, others in local.spill : name => sum(concat([0], [for o in others : local.by_name[o].weight]))
  }
  weighted = {
    for name in local.serving : name => concat(
      [{ region = name, weight = local.percent[name] }],
      [
        for i, other in local.spill[name] : {
          region = other
          weight = (
            i == 0
            ? (100 - local.percent[name]) - sum(concat([0], [for o in slice(local.spill[name], 1, length(local.spill[name])) : floor((100 - local.percent[name]) * local.by_name[o].weight / local.spill_weight[name])]))
            : floor((100 - local.percent[name]) * local.by_name[other].weight / local.spill_weight[name])
          )
        } if local.percent[name] < 100
      ],
    )
  }
  # Regions whose share grows with this apply, and those of them whose check does not pass.
  returning = var.previous_percent == null ? [] : [
    for name in local.names : name if local.percent[name] > lookup(var.previous_percent, name, 0)
  ]
  refused_returns = [for name in local.returning : name if !lookup(var.region_health, name, false)]
}

output "traffic_percent" {
  description = "Each region's share of its own clients (0: drained). Feed it back as previous_percent on the next apply."
  value       = local.percent

  precondition {
    condition     = length(local.serving) > 0
    error_message = "Refusing to drain every region: nobody would be served. Undrain one first."
  }
  precondition {
    condition     = length(local.refused_returns) == 0
    error_message = "Refusing to return traffic to ${join(", ", local.refused_returns)}: its health check does not pass now (unknown counts as failing). Fix the region or wait until its check passes; taking traffic away is always allowed."
  }
}

output "serving_regions" {
  description = "The regions that receive traffic, heaviest first."
  value       = local.serving
}

output "routes" {
  description = "For each region's clients, the regions in the order DNS offers them."
  value       = local.routes
}

output "weighted_answers" {
  description = "For each serving region, how DNS answers the clients it is nearest to: itself with its share, and the rest of the share spread over the other serving regions (weights in percent, summing to 100)."
  value       = local.weighted
}

output "secondary_answers" {
  description = "For each serving region, the region its clients' reads fail over to (the next of their route; itself when it serves alone): the CDN's secondary origin."
  value = {
    for name in local.serving : name => length(local.routes[name]) > 1 ? local.routes[name][1] : local.routes[name][0]
  }
}

output "dns_answers" {
  description = "For each region's clients, the edge addresses in the order DNS offers them (the first healthy one is answered)."
  value       = { for client, route in local.routes : client => [for name in route : local.by_name[name].edge] }
}

output "effective_routes" {
  description = "Where each region's clients are sent given region_health (regions missing there count as healthy)."
  value       = local.effective
}

output "health_checks" {
  description = "The health check of every region, drained or not: a drained region stays checked, so SREs see when it can take traffic back."
  value       = { for name in local.names : name => "http://${local.by_name[name].edge}:${var.health_check_port}${var.health_check_path}" }
}

output "client_subnets" {
  description = "Each region's client subnets, for the DNS records that tell regions apart."
  value       = { for r in var.regions : r.name => r.client_subnets }
}
