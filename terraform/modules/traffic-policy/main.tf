# The traffic policy: from the regions, their weights and the regions an operator drains,
# which regions receive traffic, and in what order each region's clients are sent to them.
# Provider-free on purpose: the same module drives Route 53 in production and PowerDNS on the
# local rig, and `terraform test` runs it anywhere.

terraform {
  required_version = ">= 1.9"
}

variable "regions" {
  description = "Every region: its name, the address geo-DNS gives its clients (its CDN edge), the client subnets that are its own, and its weight among the others when they take over its clients."
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
    error_message = "Weights are positive: drain a region with drained_regions, not a zero weight."
  }
}

variable "drained_regions" {
  description = "Regions taken out of DNS: their clients go to the other regions. Draining every region is refused."
  type        = set(string)
  default     = []

  validation {
    condition     = alltrue([for name in var.drained_regions : contains([for r in var.regions : r.name], name)])
    error_message = "drained_regions names a region that is not in regions."
  }
  validation {
    condition     = length(setsubtract([for r in var.regions : r.name], var.drained_regions)) > 0
    error_message = "Refusing to drain every region: nobody would be served. Undrain one first."
  }
}

variable "unhealthy_regions" {
  description = "Regions whose health check fails now (in production DNS learns this by itself; given here, the outputs say where clients go meanwhile)."
  type        = set(string)
  default     = []
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
  # Serving regions, heaviest first (ties by name), as the other regions' fallbacks.
  serving = [
    for key in sort([for r in var.regions : format("%09d/%s", 1000000000 - floor(r.weight * 1000), r.name) if !contains(var.drained_regions, r.name)]) :
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
    for client, route in local.routes : client => coalescelist(
      [for name in route : name if !contains(var.unhealthy_regions, name)],
      route,
    )[0]
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

output "dns_answers" {
  description = "For each region's clients, the edge addresses in the order DNS offers them (the first healthy one is answered)."
  value       = { for client, route in local.routes : client => [for name in route : local.by_name[name].edge] }
}

output "effective_routes" {
  description = "Where each region's clients are sent given unhealthy_regions."
  value       = local.effective
}

output "health_checks" {
  description = "The health check of every serving region: its edge's health URL."
  value       = { for name in local.serving : name => "http://${local.by_name[name].edge}:${var.health_check_port}${var.health_check_path}" }
}

output "client_subnets" {
  description = "Each region's client subnets, for the DNS records that tell regions apart."
  value       = { for r in var.regions : r.name => r.client_subnets }
}
