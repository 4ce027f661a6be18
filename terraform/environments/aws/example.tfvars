# The values an operator fills in (placeholders). `terraform init -backend-config=bucket=...`
# names the state bucket.
domain_name    = "api.example.com"
hosted_zone_id = "Z0000000000000000000"
gateway_image  = "123456789012.dkr.ecr.us-east-1.amazonaws.com/marquee-gateway:1.0.0"

regions = {
  "us-east" = {
    vpc_id                = "vpc-0123456789abcdef0"
    public_subnet_ids     = ["subnet-0000000000000000a", "subnet-0000000000000000b", "subnet-0000000000000000c"]
    private_subnet_ids    = ["subnet-0000000000000001a", "subnet-0000000000000001b", "subnet-0000000000000001c"]
    certificate_arn       = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000001"
    kms_key_arn           = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000001"
    access_logs_bucket    = "example-marquee-logs-us-east-1"
    scylla_contact_points = ["node-0.us-east-1.example.clusters.scylla.cloud:9142"]
    gateway_secrets = {
      MARQUEE_STORE__PASSWORD = "arn:aws:secretsmanager:us-east-1:123456789012:secret:marquee/scylla-AbCdEf"
    }
  }
  "eu-west" = {
    vpc_id                = "vpc-0123456789abcdef1"
    public_subnet_ids     = ["subnet-0000000000000002a", "subnet-0000000000000002b", "subnet-0000000000000002c"]
    private_subnet_ids    = ["subnet-0000000000000003a", "subnet-0000000000000003b", "subnet-0000000000000003c"]
    certificate_arn       = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000002"
    kms_key_arn           = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000002"
    access_logs_bucket    = "example-marquee-logs-eu-west-1"
    scylla_contact_points = ["node-0.eu-west-1.example.clusters.scylla.cloud:9142"]
    gateway_secrets = {
      MARQUEE_STORE__PASSWORD = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/scylla-GhIjKl"
    }
  }
}

edge = {
  certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000003"
  web_acl_arn     = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/marquee/00000000-0000-0000-0000-000000000004"
  logs_bucket     = "example-marquee-logs.s3.amazonaws.com"
}
