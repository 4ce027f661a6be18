# Region us-east (values to fill in; ARNs from the shared stack's outputs for us-east-1).
account_id = "123456789012"
region     = "us-east"
aws_region = "us-east-1"
network = {
  vpc_id             = "vpc-0123456789000001"
  public_subnet_ids  = ["subnet-000000000000010a", "subnet-000000000000010b", "subnet-000000000000010c"]
  private_subnet_ids = ["subnet-000000000000011a", "subnet-000000000000011b", "subnet-000000000000011c"]
}
certificate_arn    = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000001"
kms_key_arn        = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000001"
access_logs_bucket = "example-marquee-logs-us-east-1"
alarm_topic_arn    = "arn:aws:sns:us-east-1:123456789012:marquee-alarms"
gateway_image      = "123456789012.dkr.ecr.us-east-1.amazonaws.com/marquee-gateway:1.0.0"
gateway = {
  # One surviving region takes everything: ~4,300 req/s at peak.
  max_count     = 16
  manifest_file = "/etc/marquee/partner-manifest.json"
}
secrets = {
  signing_keys = "arn:aws:secretsmanager:us-east-1:123456789012:secret:marquee/signing-keys-AbCdEf"
  store        = "arn:aws:secretsmanager:us-east-1:123456789012:secret:marquee/store-GhIjKl"
  redis_auth   = "arn:aws:secretsmanager:us-east-1:123456789012:secret:marquee/redis-auth-MnOpQr"
  origin       = "arn:aws:secretsmanager:us-east-1:123456789012:secret:marquee/origin-StUvWx"
}
scylla = {
  # A ScyllaDB Cloud data center named after the region; 9142 is its TLS port.
  contact_points = ["node-0.us-east-1.example.clusters.scylla.cloud:9142", "node-1.us-east-1.example.clusters.scylla.cloud:9142"]
  replication    = { "us-east" = 3, "eu-west" = 3 }
  username       = "marquee"
  tls            = true
}
