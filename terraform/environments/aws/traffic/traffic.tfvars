# The traffic stack's values (to fill in). `regions` are the region stacks' `traffic_region`
# outputs: the traffic stack never reads their state.
account_id     = "123456789012"
domain_name    = "api.example.com"
hosted_zone_id = "Z0000000000000000000"
state = {
  bucket = "example-marquee-terraform-state"
  key    = "marquee/traffic.tfstate"
  region = "us-west-2"
}
regions = [
  {
    name                   = "us-east"
    aws_region             = "us-east-1"
    load_balancer_dns_name = "marquee-us-east-0123456789.us-east-1.elb.amazonaws.com"
    load_balancer_zone_id  = "Z35SXDOTRQ7X7K"
    weight                 = 2
  },
  {
    name                   = "eu-west"
    aws_region             = "eu-west-1"
    load_balancer_dns_name = "marquee-eu-west-0123456789.eu-west-1.elb.amazonaws.com"
    load_balancer_zone_id  = "Z32O12XQLNTSW2"
  },
]
edge = {
  certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000003"
  web_acl_arn     = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/marquee/00000000-0000-0000-0000-000000000004"
  logs_bucket     = "example-marquee-logs.s3.amazonaws.com"
  alarm_topic_arn = "arn:aws:sns:us-east-1:123456789012:marquee-alarms"
}
origin_secret = {
  arn        = "arn:aws:secretsmanager:us-east-1:123456789012:secret:marquee/origin-StUvWx"
  aws_region = "us-east-1"
}
