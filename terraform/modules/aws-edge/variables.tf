variable "domain_name" {
  description = "The API's name, e.g. api.example.com. CloudFront answers it; its origin is origin.<domain_name>, a latency record over the regions' load balancers."
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
  description = "Every region: its Marquee name, the AWS region it runs in, its load balancer (modules/aws-region outputs) and its weight among the others."
  type = list(object({
    name                   = string
    aws_region             = string
    load_balancer_dns_name = string
    load_balancer_zone_id  = string
    weight                 = optional(number, 1)
  }))
}

variable "drained_regions" {
  description = "Regions taken out of traffic: their latency records are removed, so every client is served by the others. Draining every region is refused."
  type        = set(string)
  default     = []
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

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
