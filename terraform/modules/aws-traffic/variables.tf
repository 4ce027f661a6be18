variable "domain_name" {
  description = "The API's name, e.g. api.example.com. CloudFront answers it; its origins are names under origin.<domain_name>, Route 53 records over the regions' load balancers."
  type        = string
}

variable "hosted_zone_id" {
  description = "The Route 53 hosted zone the API's names are in."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate for domain_name, in us-east-1 (CloudFront's)."
  type        = string
}

variable "regions" {
  description = "Every region, drained or not: its Marquee name, the AWS region it runs in, and its load balancer (the region stack's outputs)."
  type = list(object({
    name                   = string
    aws_region             = string
    load_balancer_dns_name = string
    load_balancer_zone_id  = string
  }))
}

variable "policy" {
  description = "The traffic policy's decisions (modules/traffic-policy outputs): each region's share (`traffic_percent`, the output that carries the policy's refusals), the serving regions, each serving region's weighted answers, and where its reads fail over to."
  type = object({
    traffic_percent   = map(number)
    serving_regions   = list(string)
    weighted_answers  = map(list(object({ region = string, weight = number })))
    secondary_answers = map(string)
  })
}

variable "origin_secret" {
  description = "The header value CloudFront adds to every request it forwards (X-Marquee-Origin), which the regions' load balancers require."
  type        = string
  sensitive   = true
}

variable "alarm_topic_arn" {
  description = "SNS topic in us-east-1 the health-check alarms notify (Route 53's metrics are published there only)."
  type        = string
}

variable "web_acl_arn" {
  description = "The WAF web ACL (scope CLOUDFRONT) in front of every region: rate rules per client address, managed rule groups."
  type        = string
}

variable "logs_bucket" {
  description = "S3 bucket (its bucket domain name) CloudFront writes its standard logs to."
  type        = string
}

variable "price_class" {
  description = "CloudFront's price class: where its edge locations are."
  type        = string
  default     = "PriceClass_All"
}

variable "origin_timeouts" {
  description = "How long CloudFront waits on an origin: to connect (seconds, 1-10), how many times it tries (1-3), and for a response (seconds). A blackholed region fails over after connect_timeout x attempts, not CloudFront's default 30 s."
  type = object({
    connect_timeout = optional(number, 2)
    attempts        = optional(number, 2)
    read_timeout    = optional(number, 15)
  })
  default = {}

  validation {
    condition     = var.origin_timeouts.connect_timeout >= 1 && var.origin_timeouts.connect_timeout <= 10 && var.origin_timeouts.attempts >= 1 && var.origin_timeouts.attempts <= 3
    error_message = "connect_timeout is 1-10 s and attempts 1-3 (CloudFront's limits)."
  }
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
