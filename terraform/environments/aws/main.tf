# Marquee on AWS, two regions, wired from the modules: each region's gateways, load balancer,
# Redis Cluster and ScyllaDB data center (modules/aws-region), and CloudFront with Route 53
# in front of them (modules/aws-edge), whose records the traffic policy decides.
#
# An example to copy, not applied by Marquee's CI (the AWS provider cannot be downloaded
# there; CI checks it with `terraform fmt -check` and checkov). The runbook is the README's
# "Failing over a region": an SRE drains a region with
#
#   terraform apply -var 'drained_regions=["eu-west"]'
#
# The region names are the region files' (regions/us-east.toml, regions/eu-west.toml): the
# gateways' `region`, their ScyllaDB data center, and the keyspace's replication.

terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 7.0"
    }
  }

  # State shared by the SREs who apply it, locked while an apply runs.
  backend "s3" {
    key          = "marquee/production.tfstate"
    use_lockfile = true
    encrypt      = true
  }
}

provider "aws" {
  alias  = "us_east"
  region = "us-east-1"
}

provider "aws" {
  alias  = "eu_west"
  region = "eu-west-1"
}

# CloudFront's certificate and web ACL live in us-east-1.
provider "aws" {
  alias  = "global"
  region = "us-east-1"
}

variable "drained_regions" {
  description = "Regions taken out of traffic (README, \"Failing over a region\"). Draining every region is refused."
  type        = set(string)
  default     = []
}

variable "domain_name" {
  description = "The API's name."
  type        = string
}

variable "hosted_zone_id" {
  description = "The Route 53 zone of domain_name."
  type        = string
}

variable "gateway_image" {
  description = "The gateway's container image, the same in every region."
  type        = string
}

variable "regions" {
  description = "Per region (keyed by the region file's name): its network, certificate, key, log bucket and ScyllaDB data center."
  type = map(object({
    vpc_id                = string
    public_subnet_ids     = list(string)
    private_subnet_ids    = list(string)
    certificate_arn       = string
    kms_key_arn           = string
    access_logs_bucket    = string
    scylla_contact_points = list(string)
    # Secrets Manager ARNs: the ScyllaDB password, the signing keys, the partner manifest.
    gateway_secrets = map(string)
  }))
}

variable "edge" {
  description = "CloudFront's certificate (us-east-1), web ACL and log bucket."
  type = object({
    certificate_arn = string
    web_acl_arn     = string
    logs_bucket     = string
  })
}

locals {
  # Every region replicates the keyspace to every data center (regions/*.toml, [store]).
  replication = jsonencode({ "us-east" = 3, "eu-west" = 3 })
  environment = {
    MARQUEE_STORE__KEYSPACE    = "marquee"
    MARQUEE_STORE__REPLICATION = local.replication
  }
}

module "us_east" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.us_east }

  region             = "us-east"
  vpc_id             = var.regions["us-east"].vpc_id
  public_subnet_ids  = var.regions["us-east"].public_subnet_ids
  private_subnet_ids = var.regions["us-east"].private_subnet_ids
  certificate_arn    = var.regions["us-east"].certificate_arn
  kms_key_arn        = var.regions["us-east"].kms_key_arn
  access_logs_bucket = var.regions["us-east"].access_logs_bucket
  scylla             = { contact_points = var.regions["us-east"].scylla_contact_points }
  gateway = {
    image       = var.gateway_image
    environment = local.environment
    secrets     = var.regions["us-east"].gateway_secrets
    # One surviving region takes everything: ~4,300 req/s at peak.
    max_count = 16
  }
}

module "eu_west" {
  source    = "../../modules/aws-region"
  providers = { aws = aws.eu_west }

  region             = "eu-west"
  vpc_id             = var.regions["eu-west"].vpc_id
  public_subnet_ids  = var.regions["eu-west"].public_subnet_ids
  private_subnet_ids = var.regions["eu-west"].private_subnet_ids
  certificate_arn    = var.regions["eu-west"].certificate_arn
  kms_key_arn        = var.regions["eu-west"].kms_key_arn
  access_logs_bucket = var.regions["eu-west"].access_logs_bucket
  scylla             = { contact_points = var.regions["eu-west"].scylla_contact_points }
  gateway = {
    image       = var.gateway_image
    environment = local.environment
    secrets     = var.regions["eu-west"].gateway_secrets
    max_count   = 16
  }
}

module "edge" {
  source    = "../../modules/aws-edge"
  providers = { aws = aws.global }

  domain_name     = var.domain_name
  hosted_zone_id  = var.hosted_zone_id
  certificate_arn = var.edge.certificate_arn
  web_acl_arn     = var.edge.web_acl_arn
  logs_bucket     = var.edge.logs_bucket
  drained_regions = var.drained_regions
  regions = [
    for region in [module.us_east, module.eu_west] : {
      name                   = region.region
      aws_region             = region.aws_region
      load_balancer_dns_name = region.load_balancer_dns_name
      load_balancer_zone_id  = region.load_balancer_zone_id
    }
  ]
}

output "serving_regions" {
  description = "The regions receiving traffic."
  value       = module.edge.serving_regions
}

output "regions" {
  description = "Each region's endpoints, for its region file and dashboards."
  value = {
    for region in [module.us_east, module.eu_west] : region.region => {
      load_balancer   = region.load_balancer_dns_name
      redis_seeds     = region.redis_configuration_endpoint
      contact_points  = region.scylla_contact_points
      gateway_service = region.gateway_service
    }
  }
}
