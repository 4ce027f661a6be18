# Marquee's traffic on AWS, a stack and state of its own: Route 53's records and health checks
# and the CloudFront distribution, over every region's load balancer (the region stacks'
# `traffic_region` outputs, copied into `regions`). Draining a region is an apply of this stack
# alone; it reads no region's state and calls no region's API (CloudFront and Route 53 are
# global services; their control planes are in us-east-1):
#
#   terraform init -backend-config=traffic.s3.tfbackend
#   terraform apply -refresh=false -var-file=traffic.tfvars -var 'drained_regions=["eu-west"]'
#   # or in steps: -var 'traffic_percent={"eu-west"=50}', then 10, then 0
#
# Traffic returns to a region (an undrain, a larger share) only while Route 53's checkers see
# it healthy: `route53-health.py` asks them (the AWS CLI) at plan time, and the traffic policy
# refuses otherwise, naming the region. The previous shares come from this stack's own state
# (`first_apply = true` on the very first apply, when there is none).

terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
    external = {
      source  = "hashicorp/external"
      version = "~> 2.3"
    }
  }

  # Partial: bucket, key, region and use_lockfile come from -backend-config
  # (traffic.s3.tfbackend); `state` below must name the same object.
  backend "s3" {}
}

variable "account_id" {
  description = "The AWS account Marquee runs in: the apply refuses any other account's credentials."
  type        = string
}

variable "state" {
  description = "Where this stack's own state is (the same as traffic.s3.tfbackend): the previous apply's shares are read from it."
  type = object({
    bucket = string
    key    = string
    region = string
  })
}

variable "first_apply" {
  description = "This stack has no state yet: nothing was applied before. Set only on the very first apply: it turns the check on returning traffic off."
  type        = bool
  default     = false
}

variable "drained_regions" {
  description = "Regions taken out of traffic (docs/failover.md). Draining every region is refused."
  type        = set(string)
  default     = []
}

variable "traffic_percent" {
  description = "The share of its own clients a region keeps (default 100): 50, then 10, then 0 to drain it in steps."
  type        = map(number)
  default     = {}
}

variable "regions" {
  description = "Every region, drained or not: the region stacks' `traffic_region` outputs, with the weight each has among the others."
  type = list(object({
    name                   = string
    aws_region             = string
    load_balancer_dns_name = string
    load_balancer_zone_id  = string
    weight                 = optional(number, 1)
  }))
}

variable "domain_name" {
  description = "The API's name."
  type        = string
}

variable "hosted_zone_id" {
  description = "The Route 53 zone of domain_name."
  type        = string
}

variable "edge" {
  description = "CloudFront's certificate (us-east-1), web ACL, log bucket, and the SNS topic (us-east-1) of the health-check alarms."
  type = object({
    certificate_arn = string
    web_acl_arn     = string
    logs_bucket     = string
    alarm_topic_arn = string
  })
}

variable "origin_secret" {
  description = "The origin secret's replica this stack reads (its ARN and AWS region). Point it at a surviving region's replica when its home region is down."
  type = object({
    arn        = string
    aws_region = string
  })
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

provider "aws" {
  region              = "us-east-1"
  allowed_account_ids = [var.account_id]
  default_tags {
    tags = var.tags
  }
}

provider "aws" {
  alias               = "secret"
  region              = var.origin_secret.aws_region
  allowed_account_ids = [var.account_id]
}

data "aws_secretsmanager_secret_version" "origin" {
  provider  = aws.secret
  secret_id = var.origin_secret.arn
}

data "terraform_remote_state" "previous" {
  count   = var.first_apply ? 0 : 1
  backend = "s3"
  config  = var.state
  defaults = {
    traffic_percent = null
  }
}

# What Route 53's health checkers see now, region by region ("true"/"false").
data "external" "health" {
  program = ["python3", "${path.module}/route53-health.py"]
  query = {
    health_checks = jsonencode(module.traffic.health_checks)
  }
}

module "policy" {
  source = "../../../modules/traffic-policy"

  regions = [for r in var.regions : {
    name           = r.name
    edge           = r.load_balancer_dns_name
    client_subnets = []
    weight         = r.weight
  }]
  drained_regions   = var.drained_regions
  traffic_percent   = var.traffic_percent
  previous_percent  = var.first_apply ? null : data.terraform_remote_state.previous[0].outputs.traffic_percent
  region_health     = { for name, healthy in data.external.health.result : name => healthy == "true" }
  health_check_path = "/readyz"
  health_check_port = 443
}

module "traffic" {
  source = "../../../modules/aws-traffic"

  domain_name     = var.domain_name
  hosted_zone_id  = var.hosted_zone_id
  certificate_arn = var.edge.certificate_arn
  web_acl_arn     = var.edge.web_acl_arn
  logs_bucket     = var.edge.logs_bucket
  alarm_topic_arn = var.edge.alarm_topic_arn
  origin_secret   = jsondecode(data.aws_secretsmanager_secret_version.origin.secret_string).current
  regions         = [for r in var.regions : { name = r.name, aws_region = r.aws_region, load_balancer_dns_name = r.load_balancer_dns_name, load_balancer_zone_id = r.load_balancer_zone_id }]
  policy = {
    traffic_percent   = module.policy.traffic_percent
    serving_regions   = module.policy.serving_regions
    weighted_answers  = module.policy.weighted_answers
    secondary_answers = module.policy.secondary_answers
  }
  tags = var.tags
}

output "traffic_percent" {
  description = "Each region's share of its own clients as applied (the next apply's previous shares)."
  value       = module.policy.traffic_percent
}

output "serving_regions" {
  description = "The regions receiving traffic."
  value       = module.policy.serving_regions
}

output "health_checks" {
  description = "Each region's Route 53 health check (drained or not)."
  value       = module.traffic.health_checks
}

output "distribution_id" {
  description = "The CloudFront distribution."
  value       = module.traffic.distribution_id
}
