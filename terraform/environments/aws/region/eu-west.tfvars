# Region eu-west (values to fill in; ARNs from the shared stack's outputs for eu-west-1).
account_id = "123456789012"
region     = "eu-west"
aws_region = "eu-west-1"
network = {
  vpc_id             = "vpc-0123456789000002"
  public_subnet_ids  = ["subnet-000000000000020a", "subnet-000000000000020b", "subnet-000000000000020c"]
  private_subnet_ids = ["subnet-000000000000021a", "subnet-000000000000021b", "subnet-000000000000021c"]
}
certificate_arn    = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000002"
kms_key_arn        = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000002"
access_logs_bucket = "example-marquee-logs-eu-west-1"
alarm_topic_arn    = "arn:aws:sns:eu-west-1:123456789012:marquee-alarms"
gateway_image      = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/marquee-gateway:1.0.0"
gateway = {
  # One surviving region takes everything: ~4,300 req/s at peak.
  max_count     = 16
  manifest_file = "/etc/marquee/partner-manifest.json"
}
secrets = {
  signing_keys = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/signing-keys-AbCdEf"
  store        = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/store-GhIjKl"
  redis_auth   = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/redis-auth-MnOpQr"
  origin       = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/origin-StUvWx"
}
scylla = {
  # A ScyllaDB Cloud data center named after the region; 9142 is its TLS port.
  contact_points = ["node-0.eu-west-1.example.clusters.scylla.cloud:9142", "node-1.eu-west-1.example.clusters.scylla.cloud:9142"]
  replication    = { "us-east" = 3, "eu-west" = 3 }
  username       = "marquee"
  tls            = true
}
