# What every region shares, in a stack and state of its own, applied once and rarely: the
# secrets every region's gateways read (each replicated to every region, so a region reads its
# own replica and never another region's API) and the gateway's image repository (replicated,
# so each region pulls from its own registry and a release goes region by region).
#
# The secrets' values are never Terraform's: an operator puts them with the AWS CLI
# (docs/failover.md, "Secrets"), so they are in no state file.
#
#   terraform init -backend-config=shared.s3.tfbackend
#   terraform apply -var-file=shared.tfvars

terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # Partial: bucket, key, region and use_lockfile come from -backend-config (shared.s3.tfbackend).
  backend "s3" {}
}

variable "account_id" {
  description = "The AWS account Marquee runs in: every apply refuses any other account's credentials."
  type        = string
}

variable "home_aws_region" {
  description = "Where the secrets' primaries and the image repository live (e.g. us-east-1)."
  type        = string
}

variable "replica_aws_regions" {
  description = "Every other AWS region a Marquee region runs in: each gets a replica of every secret and of the image repository."
  type        = list(string)
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}

provider "aws" {
  region              = var.home_aws_region
  allowed_account_ids = [var.account_id]
  default_tags {
    tags = var.tags
  }
}

locals {
  secrets = {
    # The gateways' Ed25519 signing keys, PEM text, first signs (MARQUEE_AUTH__SIGNING_KEYS).
    signing_keys = "The gateways' signing keys: PEM PRIVATE KEY blocks, the first signs (gateway keygen)."
    # JSON: {"password": "...", "ca": "-----BEGIN CERTIFICATE-----..."} (ca with TLS only).
    store = "The gateways' ScyllaDB password, and the CA of the nodes' certificates (JSON: password, ca)."
    # The ElastiCache AUTH token: 16-128 characters, letters, digits and ! & # $ ^ < > - only
    # (`openssl rand -hex 32`), no trailing newline.
    redis_auth = "The regional Redis Clusters' AUTH token."
    # JSON: {"current": "<hex>", "previous": "<hex> or empty"}, both keys always present: what
    # CloudFront adds to every request (`openssl rand -hex 32`).
    origin = "The origin header CloudFront proves itself with (JSON: current, previous)."
  }
}

resource "aws_secretsmanager_secret" "gateway" {
  #checkov:skip=CKV2_AWS_57:Rotation is the runbook's (docs/failover.md, Secrets): each of these needs a coordinated, ordered change across regions that a rotation Lambda does not know.
  #checkov:skip=CKV_AWS_149:Encrypted with the account's Secrets Manager key in each region; a customer-managed key per region is an option, not a need.
  for_each                = local.secrets
  name                    = "marquee/${replace(each.key, "_", "-")}"
  description             = each.value
  recovery_window_in_days = 30

  dynamic "replica" {
    for_each = toset(var.replica_aws_regions)
    content {
      region = replica.value
    }
  }
}

resource "aws_ecr_repository" "gateway" {
  name                 = "marquee-gateway"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
  }
}

data "aws_caller_identity" "current" {}

# Every image pushed to the home registry is copied to every other region's.
resource "aws_ecr_replication_configuration" "gateway" {
  replication_configuration {
    rule {
      dynamic "destination" {
        for_each = toset(var.replica_aws_regions)
        content {
          region      = destination.value
          registry_id = data.aws_caller_identity.current.account_id
        }
      }

      repository_filter {
        filter      = aws_ecr_repository.gateway.name
        filter_type = "PREFIX_MATCH"
      }
    }
  }
}

output "secret_arns" {
  description = "Each secret's ARN in each AWS region (a replica's ARN is the primary's with its region): what each region stack's `secrets` takes."
  value = {
    for aws_region in concat([var.home_aws_region], var.replica_aws_regions) : aws_region => {
      for key, secret in aws_secretsmanager_secret.gateway : key => replace(secret.arn, ":${var.home_aws_region}:", ":${aws_region}:")
    }
  }
}

output "image_repositories" {
  description = "The gateway's image repository in each AWS region: each region stack's image comes from its own."
  value = {
    for aws_region in concat([var.home_aws_region], var.replica_aws_regions) : aws_region => replace(aws_ecr_repository.gateway.repository_url, ".${var.home_aws_region}.", ".${aws_region}.")
  }
}
