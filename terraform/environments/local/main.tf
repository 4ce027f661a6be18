# The local rig's traffic, driven by the same traffic-policy module as production: the regions
# come from `target/rig/regions.json` (written by `cargo xtask rig up` from regions/*.toml),
# the policy decides each region's clients' preference order, and applying re-renders the
# rig's geo-DNS zone and reloads PowerDNS. Drain a region the way an SRE does in production:
#
#   cargo xtask terraform -chdir=terraform/environments/local apply -auto-approve \
#     -var 'drained_regions=["eu-west"]'
#
# Traffic returns to a region only while its health check passes: `cargo xtask terraform`
# probes each region's health URL through its edge before a plan or apply and passes what it
# saw as `region_health` (plain `terraform` passes nothing, and an undrain is then refused as
# of unknown health). The previous apply's shares come from this environment's own state.
#
# Provider-free (Terraform's built-in `terraform_data` with a `local-exec` provisioner), so it
# applies offline. State lives with the rig, under target/rig/.

terraform {
  required_version = ">= 1.11"

  backend "local" {
    path = "../../../target/rig/terraform.tfstate"
  }
}

variable "drained_regions" {
  description = "Regions taken out of geo-DNS: their clients go to the other regions. Draining every region is refused."
  type        = set(string)
  default     = []
}

variable "traffic_percent" {
  description = "The share of its own clients a region keeps (default 100); see the traffic-policy module. The rig's DNS has no weighted answers: a region above 0 keeps all of its clients, at 0 it is drained."
  type        = map(number)
  default     = {}
}

variable "region_health" {
  description = "Whether each region's health URL answers now (`cargo xtask terraform` probes and passes it). Missing: unknown, which refuses returning traffic to the region."
  type        = map(bool)
  default     = {}
}

variable "first_apply" {
  description = "This is the environment's first apply (no state yet): nothing was applied before, so no share counts as returned."
  type        = bool
  default     = false
}

variable "rig_dir" {
  description = "The rig's directory (default: the workspace's target/rig)."
  type        = string
  default     = null
}

locals {
  rig_dir = coalesce(var.rig_dir, abspath("${path.root}/../../../target/rig"))
  rig     = jsondecode(file("${local.rig_dir}/regions.json"))
  zone    = local.rig.zone
}

# The shares this environment applied last, from its own state (a data source is read once,
# at plan, so the apply that rewrites the state sees the same value). A first apply has no
# state to read: `cargo xtask rig up` says so with `first_apply`.
data "terraform_remote_state" "previous" {
  count   = var.first_apply ? 0 : 1
  backend = "local"
  config = {
    path = "${local.rig_dir}/terraform.tfstate"
  }
  defaults = {
    traffic_percent = null
  }
}

locals {
  previous_percent = var.first_apply ? null : data.terraform_remote_state.previous[0].outputs.traffic_percent
}

module "policy" {
  source = "../../modules/traffic-policy"

  regions = [for r in local.rig.regions : {
    name           = r.name
    edge           = r.edge
    client_subnets = r.client_subnets
  }]
  drained_regions   = var.drained_regions
  traffic_percent   = var.traffic_percent
  previous_percent  = local.previous_percent
  region_health     = var.region_health
  health_check_port = local.rig.edge_port
  health_check_path = local.rig.health_path
}

locals {
  zone_text = templatefile("${path.module}/zone.tftpl", {
    zone  = local.zone
    ttl   = local.rig.ttl
    edges = { for r in local.rig.regions : r.name => r.edge }
    # The other names the rig's DNS answers (Redis seeds, keyspace contact points), relative,
    # each with its address.
    hosts = { for h in flatten([for r in local.rig.regions : r.hosts]) : trimsuffix(h.name, ".${local.zone}") => h.address }
    # Clients of no region's subnets are answered as the first serving region's.
    default_answers = module.policy.dns_answers[module.policy.serving_regions[0]]
    by_subnet = [for r in local.rig.regions : {
      region  = r.name
      subnets = r.client_subnets
      answers = module.policy.dns_answers[r.name]
    }]
    health_url = "http://api.${local.zone}:${local.rig.edge_port}${local.rig.health_path}"
  })
}

locals {
  # The API's record, the one the policy decides.
  api = one([for line in split("\n", local.zone_text) : line if startswith(line, "api ")])
}

# The zone PowerDNS serves: written, then reloaded, whenever its text changes.
resource "terraform_data" "geo_dns" {
  input            = local.zone_text
  triggers_replace = sha256(local.zone_text)

  provisioner "local-exec" {
    command = "${abspath(path.module)}/publish-zone.sh"
    environment = {
      ZONE      = local.zone
      ZONE_FILE = "${local.rig_dir}/dns/${local.zone}.zone"
      ZONE_TEXT = local.zone_text
      DNS_DIR   = "${local.rig_dir}/dns"
    }
  }
}

output "traffic_percent" {
  description = "Each region's share of its own clients as applied (read back as the previous shares by the next apply)."
  value       = module.policy.traffic_percent
}

output "serving_regions" {
  description = "The regions that receive traffic."
  value       = module.policy.serving_regions
}

output "routes" {
  description = "For each region's clients, the regions in the order geo-DNS offers them."
  value       = module.policy.routes
}

output "zone_file" {
  description = "The zone file PowerDNS serves."
  value       = "${local.rig_dir}/dns/${local.zone}.zone"
}
