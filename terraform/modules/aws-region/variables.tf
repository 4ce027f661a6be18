variable "region" {
  description = "The Marquee region's name, as in its region file (`region`) and its ScyllaDB data center (`[store] local_dc`), e.g. \"us-east\"."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.region))
    error_message = "A region name is lowercase letters, digits and dashes."
  }
}

variable "vpc_id" {
  description = "The region's VPC."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the load balancer, one per availability zone (at least two)."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "The load balancer needs subnets in at least two availability zones."
  }
}

variable "private_subnet_ids" {
  description = "Subnets of the gateways, the Redis Cluster and the ScyllaDB nodes, one per availability zone."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "Spread the region over at least two availability zones."
  }
}

variable "certificate_arn" {
  description = "ACM certificate of the names CloudFront connects to the load balancer by (origin.<api domain> and *.origin.<api domain>), in this AWS region."
  type        = string
}

variable "alarm_topic_arn" {
  description = "SNS topic (in this AWS region) the region's CloudWatch alarms notify."
  type        = string
}

variable "access_logs_bucket" {
  description = "S3 bucket the load balancer writes its access logs to."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key encrypting the gateways' logs, the Redis Cluster at rest and the ScyllaDB volumes."
  type        = string
}

variable "gateway" {
  description = "The gateways: container image (in this AWS region's registry: a release goes region by region), size, and how many. `environment` adds MARQUEE_* settings (e.g. the identity provider's JWKS URL) to what this module sets; `manifest_file` is the partner manifest's path inside the image."
  type = object({
    image         = string
    cpu           = optional(number, 1024)
    memory        = optional(number, 2048)
    min_count     = optional(number, 2)
    max_count     = optional(number, 12)
    desired_count = optional(number, 3)
    # Requests per gateway per second the autoscaler aims at (a gateway served ~4,500 req/s
    # of the nested query on 2 cores in bench/results; this leaves headroom for a failover).
    target_requests_per_second = optional(number, 600)
    environment                = optional(map(string), {})
    manifest_file              = optional(string)
  })

  validation {
    condition     = var.gateway.min_count >= 2 && var.gateway.max_count >= var.gateway.min_count
    error_message = "Run at least two gateways per region, and max_count >= min_count."
  }
}

variable "drain_delay_seconds" {
  description = "How long the load balancer keeps a stopping gateway's open requests before cutting them (its deregistration delay). The gateway drains on SIGTERM for `http.drain_delay_ms` and finishes requests for `http.shutdown_grace_ms`."
  type        = number
  default     = 15
}

variable "secrets" {
  description = "Secrets Manager secrets in this AWS region (replicas of the deployment's, see environments/aws/shared): `signing_keys` (the gateways' PEM keys), `store` (JSON: `password`, and `ca` when TLS is on), `redis_auth` (the Redis AUTH token) and `origin` (JSON: `current` and `previous`, the header CloudFront proves itself with). ARNs without a JSON key."
  type = object({
    signing_keys = string
    store        = string
    redis_auth   = string
    origin       = string
  })

  validation {
    condition     = alltrue([for arn in values(var.secrets) : length(split(":", arn)) == 7 && startswith(arn, "arn:aws:secretsmanager:")])
    error_message = "Give each secret's ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME), without a JSON key."
  }
}

variable "redis" {
  description = "The region's ElastiCache Redis Cluster (cluster mode enabled)."
  type = object({
    node_type          = optional(string, "cache.r7g.large")
    shards             = optional(number, 3)
    replicas_per_shard = optional(number, 1)
    engine_version     = optional(string, "7.1")
  })
  default = {}

  validation {
    condition     = var.redis.shards >= 1 && var.redis.replicas_per_shard >= 1
    error_message = "At least one shard, and a replica per shard so a master's loss fails over."
  }
}

variable "scylla" {
  description = "The region's ScyllaDB data center: either `contact_points` of a ScyllaDB Cloud data center (named after the region; port 9142 is its TLS port, and the CA is then the `ca` key of secrets.store), or `nodes` run here on ScyllaDB's AMI. `replication` is the keyspace's factor per data center (every region's), `username` the gateways' CQL user."
  type = object({
    replication    = map(number)
    username       = optional(string, "marquee")
    keyspace       = optional(string, "marquee")
    tls            = optional(bool, true)
    contact_points = optional(list(string), [])
    nodes = optional(object({
      count         = optional(number, 3)
      ami           = string
      instance_type = optional(string, "i4i.xlarge")
      # Contact points of the other regions' data centers: the cluster's seeds beyond this one.
      remote_seeds = optional(list(string), [])
      # The other regions' networks, for node-to-node traffic (VPC peering or transit gateway).
      peer_cidrs = optional(list(string), [])
    }))
    cluster_name = optional(string, "marquee")
  })

  validation {
    condition     = (length(var.scylla.contact_points) > 0) != (var.scylla.nodes != null)
    error_message = "Give either scylla.contact_points (ScyllaDB Cloud) or scylla.nodes, not both."
  }
  validation {
    condition     = var.scylla.nodes == null || !var.scylla.tls
    error_message = "The nodes this module runs speak CQL without TLS inside the VPC: set scylla.tls = false with scylla.nodes."
  }
  validation {
    condition     = contains(keys(var.scylla.replication), var.region)
    error_message = "scylla.replication must name this region's data center."
  }
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
