# What a region's gateways are told, as the MARQUEE_* environment the gateway reads: the
# settings (`environment`) and the secrets (`secrets`: variable name -> Secrets Manager
# reference, which ECS resolves into the variable when a task starts). Provider-free, so
# `terraform test` checks it here, and `cargo xtask terraform-check` starts the real gateway
# with what it renders (sample values in place of the secrets) to prove the gateway accepts it.
#
# The gateway's own rules for a shared store hold here already, so a plan fails before a
# deployment would: the signing keys come from the deployment's one secret (never a key per
# process), a store password goes with a user name, a TLS contact point with a CA, and
# neither development tokens nor `testing` are ever set. `serve` never seeds a shared store,
# so no demo catalog is configured: the catalog is loaded with `gateway seed`/`import`.

terraform {
  required_version = ">= 1.11"
}

variable "region" {
  description = "The region's name: the gateways' `region` and their ScyllaDB data center."
  type        = string
}

variable "listen_port" {
  description = "The port the gateways listen on inside their task."
  type        = number
  default     = 8080
}

variable "trusted_proxies" {
  description = "Networks whose X-Forwarded-For names the client (the load balancer's)."
  type        = list(string)
}

variable "store" {
  description = "The ScyllaDB keyspace: contact points (host:port), keyspace, replication per data center, user name, and whether TLS is on (its CA then comes from secrets.store_tls_ca)."
  type = object({
    contact_points = list(string)
    keyspace       = optional(string, "marquee")
    replication    = map(number)
    username       = string
    tls            = bool
  })

  validation {
    condition     = length(var.store.contact_points) > 0
    error_message = "Give the region's ScyllaDB contact points."
  }
  validation {
    condition     = var.store.tls || alltrue([for p in var.store.contact_points : !endswith(p, ":9142")])
    error_message = "A contact point on 9142 is ScyllaDB's TLS port: set store.tls (and secrets.store_tls_ca)."
  }
  validation {
    condition     = alltrue([for dc in keys(var.store.replication) : can(regex("^[a-z][a-z0-9-]*$", dc))])
    error_message = "Data center names are lowercase letters, digits and dashes."
  }
}

variable "redis" {
  description = "The region's Redis Cluster: seeds (host:port), TLS (verified against public CAs, as ElastiCache's certificates are), and the AUTH user (\"default\" for an ElastiCache AUTH token)."
  type = object({
    seeds    = list(string)
    tls      = optional(bool, true)
    username = optional(string, "default")
  })
}

variable "manifest_file" {
  description = "The partner manifest's path inside the gateway's image (it ships with the release), or null for none."
  type        = string
  default     = null
}

variable "secrets" {
  description = "Secrets Manager references (ARN, with `:json-key::` for a key of a JSON secret) in the gateway's own AWS region: the signing keys' PEM text, the store's password and CA, the Redis AUTH token, and the origin header's current and previous values."
  type = object({
    signing_keys           = string
    store_password         = string
    store_tls_ca           = optional(string)
    redis_password         = string
    origin_secret          = string
    origin_secret_previous = optional(string)
  })

  validation {
    condition     = alltrue([for ref in compact(values(var.secrets)) : startswith(ref, "arn:")])
    error_message = "Secrets are Secrets Manager references (arn:...), never values."
  }
}

variable "extra" {
  description = "More MARQUEE_* settings for the gateways (they override this module's)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.extra) : startswith(name, "MARQUEE_")])
    error_message = "Extra settings are MARQUEE_* variables."
  }
  validation {
    condition     = length(setintersection(keys(var.extra), ["MARQUEE_AUTH__DEV_TOKENS", "MARQUEE_TESTING", "MARQUEE_AUTH__SIGNING_KEY_FILES", "MARQUEE_STORE__BACKEND"])) == 0
    error_message = "Production gateways never take development tokens or `testing`, and sign with the deployment's keys only."
  }
}

locals {
  # The gateway reads lists as JSON arrays and maps as TOML inline tables (figment's
  # environment syntax; a JSON object is refused).
  replication = "{${join(", ", [for dc, rf in var.store.replication : "${dc}=${rf}"])}}"
  environment = merge(
    {
      MARQUEE_REGION                = var.region
      MARQUEE_LISTEN                = "0.0.0.0:${var.listen_port}"
      MARQUEE_LOG__FORMAT           = "json"
      MARQUEE_HTTP__TRUSTED_PROXIES = jsonencode(var.trusted_proxies)
      MARQUEE_STORE__BACKEND        = "scylla"
      MARQUEE_STORE__CONTACT_POINTS = jsonencode(var.store.contact_points)
      MARQUEE_STORE__KEYSPACE       = var.store.keyspace
      MARQUEE_STORE__LOCAL_DC       = var.region
      MARQUEE_STORE__REPLICATION    = local.replication
      MARQUEE_STORE__USERNAME       = var.store.username
      MARQUEE_REDIS__SEEDS          = jsonencode(var.redis.seeds)
      MARQUEE_REDIS__TLS            = tostring(var.redis.tls)
      MARQUEE_REDIS__USERNAME       = var.redis.username
    },
    var.manifest_file == null ? {} : { MARQUEE_PERSISTED_QUERIES__MANIFEST_FILE = var.manifest_file },
    var.extra,
  )
  secrets = merge(
    {
      MARQUEE_AUTH__SIGNING_KEYS  = var.secrets.signing_keys
      MARQUEE_STORE__PASSWORD     = var.secrets.store_password
      MARQUEE_REDIS__PASSWORD     = var.secrets.redis_password
      MARQUEE_HTTP__ORIGIN_SECRET = var.secrets.origin_secret
    },
    var.store.tls ? { MARQUEE_STORE__TLS_CA = var.secrets.store_tls_ca } : {},
    var.secrets.origin_secret_previous == null ? {} : { MARQUEE_HTTP__ORIGIN_SECRET_PREVIOUS = var.secrets.origin_secret_previous },
  )
}

output "environment" {
  description = "The gateways' MARQUEE_* settings."
  value       = local.environment

  precondition {
    condition     = !var.store.tls || var.secrets.store_tls_ca != null
    error_message = "store.tls is on: give secrets.store_tls_ca, the CA that signs the nodes' certificates."
  }
}

output "secrets" {
  description = "The gateways' MARQUEE_* secrets: variable name -> Secrets Manager reference."
  value       = local.secrets
}
