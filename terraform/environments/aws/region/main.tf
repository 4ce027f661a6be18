# One Marquee region on AWS, a stack and state of its own: apply it once per region, each with
# its own backend file and variables, e.g.
#
#   terraform init -reconfigure -backend-config=us-east.s3.tfbackend
#   terraform apply -var-file=us-east.tfvars
#
# A region's apply never touches another region or the traffic (Route 53 and CloudFront are
# the traffic stack's), so a release goes region by region (each region names its own image)
# and a region on fire is drained without its API or its state. After the first apply, copy
# the outputs `traffic_region` into the traffic stack's `regions`.

terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # Partial: bucket, key (one per region), region and use_lockfile come from -backend-config.
  backend "s3" {}
}

variable "account_id" {
  description = "The AWS account Marquee runs in: the apply refuses any other account's credentials."
  type        = string
}

variable "region" {
  description = "The Marquee region (its region file's name and its ScyllaDB data center), e.g. us-east."
  type        = string
}

variable "aws_region" {
  description = "The AWS region it runs in, e.g. us-east-1."
  type        = string
}

variable "network" {
  description = "The region's VPC and subnets (public for the load balancer, private for the rest; one per availability zone)."
  type = object({
    vpc_id             = string
    public_subnet_ids  = list(string)
    private_subnet_ids = list(string)
  })
}

variable "certificate_arn" {
  description = "ACM certificate for origin.<api domain> and *.origin.<api domain>, in this AWS region."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the region's logs, Redis and ScyllaDB volumes."
  type        = string
}

variable "access_logs_bucket" {
  description = "S3 bucket of the load balancer's access logs."
  type        = string
}

variable "alarm_topic_arn" {
  description = "SNS topic of the region's alarms (in this AWS region)."
  type        = string
}

variable "gateway_image" {
  description = "The gateway's image in this region's registry (the shared stack's `image_repositories`), with its tag: a release is applied region by region."
  type        = string
}

variable "gateway" {
  description = "The gateways' size and count (modules/aws-region `gateway`, without the image)."
  type        = any
  default     = {}
}

variable "secrets" {
  description = "This AWS region's replicas of the shared secrets (the shared stack's `secret_arns[aws_region]`)."
  type = object({
    signing_keys = string
    store        = string
    redis_auth   = string
    origin       = string
  })
}

variable "scylla" {
  description = "The region's ScyllaDB data center (modules/aws-region `scylla`)."
  type        = any
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

provider "aws" {
  region              = var.aws_region
  allowed_account_ids = [var.account_id]
  default_tags {
    tags = var.tags
  }
}

module "region" {
  source = "../../../modules/aws-region"

  region             = var.region
  vpc_id             = var.network.vpc_id
  public_subnet_ids  = var.network.public_subnet_ids
  private_subnet_ids = var.network.private_subnet_ids
  certificate_arn    = var.certificate_arn
  kms_key_arn        = var.kms_key_arn
  access_logs_bucket = var.access_logs_bucket
  alarm_topic_arn    = var.alarm_topic_arn
  secrets            = var.secrets
  scylla             = var.scylla
  gateway            = merge(var.gateway, { image = var.gateway_image })
  tags               = var.tags
}

output "traffic_region" {
  description = "This region as the traffic stack's `regions` lists it."
  value = {
    name                   = var.region
    aws_region             = module.region.aws_region
    load_balancer_dns_name = module.region.load_balancer_dns_name
    load_balancer_zone_id  = module.region.load_balancer_zone_id
  }
}

output "endpoints" {
  description = "The region's endpoints, for its region file and dashboards."
  value = {
    redis_seeds     = module.region.redis_configuration_endpoint
    contact_points  = module.region.scylla_contact_points
    gateway_service = module.region.gateway_service
  }
}
