# The environment of an example region's gateways, rendered for `cargo xtask terraform-check`,
# which starts the real gateway with it (sample values in place of the secrets) and checks it
# is accepted. State stays under target/.

terraform {
  required_version = ">= 1.11"

  backend "local" {
    path = "../../../../target/terraform/gateway-environment.tfstate"
  }
}

module "gateway" {
  source = "../"

  region          = "eu-west"
  trusted_proxies = ["10.20.0.0/16"]
  store = {
    contact_points = ["127.0.0.1:9142"]
    replication    = { "us-east" = 3, "eu-west" = 3 }
    username       = "marquee"
    tls            = true
  }
  redis = {
    seeds = ["127.0.0.1:6379"]
  }
  manifest_file = "/etc/marquee/partner-manifest.json"
  secrets = {
    signing_keys           = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/signing-keys-AbCdEf"
    store_password         = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/scylla-GhIjKl:password::"
    store_tls_ca           = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/scylla-GhIjKl:ca::"
    redis_password         = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/redis-MnOpQr"
    origin_secret          = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/origin-StUvWx:current::"
    origin_secret_previous = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/origin-StUvWx:previous::"
  }
}

output "environment" {
  description = "The gateways' settings."
  value       = module.gateway.environment
}

output "secrets" {
  description = "The gateways' secrets, by reference."
  value       = module.gateway.secrets
}
