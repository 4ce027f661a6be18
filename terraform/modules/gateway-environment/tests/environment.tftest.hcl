# The environment a region's gateways are given: the settings in the syntax the gateway reads,
# every secret by reference, and the refusals that mirror the gateway's own.

variables {
  region          = "eu-west"
  trusted_proxies = ["10.20.0.0/16"]
  store = {
    contact_points = ["node-0.eu-west.example:9142", "node-1.eu-west.example:9142"]
    replication    = { "us-east" = 3, "eu-west" = 3 }
    username       = "marquee"
    tls            = true
  }
  redis = {
    seeds = ["clustercfg.marquee-eu-west.abc123.euw1.cache.amazonaws.com:6379"]
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

run "a_region_s_gateways" {
  command = plan

  assert {
    condition     = output.environment["MARQUEE_STORE__REPLICATION"] == "{eu-west=3, us-east=3}"
    error_message = "Replication is a TOML inline table (the gateway refuses JSON objects): ${output.environment["MARQUEE_STORE__REPLICATION"]}"
  }
  assert {
    condition     = output.environment["MARQUEE_STORE__LOCAL_DC"] == "eu-west" && output.environment["MARQUEE_REGION"] == "eu-west"
    error_message = "The region is its data center: ${jsonencode(output.environment)}"
  }
  assert {
    condition     = output.environment["MARQUEE_STORE__CONTACT_POINTS"] == "[\"node-0.eu-west.example:9142\",\"node-1.eu-west.example:9142\"]"
    error_message = "Lists are JSON arrays: ${output.environment["MARQUEE_STORE__CONTACT_POINTS"]}"
  }
  assert {
    condition     = output.environment["MARQUEE_STORE__USERNAME"] == "marquee" && output.secrets["MARQUEE_STORE__PASSWORD"] != null
    error_message = "The password goes with a user name: ${jsonencode(output.environment)}"
  }
  assert {
    condition     = output.secrets["MARQUEE_STORE__TLS_CA"] == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/scylla-GhIjKl:ca::"
    error_message = "TLS contact points come with the CA: ${jsonencode(output.secrets)}"
  }
  assert {
    condition     = output.secrets["MARQUEE_AUTH__SIGNING_KEYS"] == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/signing-keys-AbCdEf"
    error_message = "Every gateway signs with the deployment's keys: ${jsonencode(output.secrets)}"
  }
  assert {
    condition     = output.environment["MARQUEE_REDIS__TLS"] == "true" && contains(keys(output.secrets), "MARQUEE_REDIS__PASSWORD")
    error_message = "Redis is reached over TLS with AUTH: ${jsonencode(output.environment)}"
  }
  assert {
    condition     = alltrue([for name in ["MARQUEE_AUTH__DEV_TOKENS", "MARQUEE_TESTING", "MARQUEE_DEMO__MOVIES", "MARQUEE_AUTH__SIGNING_KEY_FILES"] : !contains(keys(output.environment), name)])
    error_message = "No development tokens, no test flag, no demo catalog, no key files on a read-only root: ${jsonencode(output.environment)}"
  }
  assert {
    condition     = alltrue([for name, value in output.environment : !startswith(value, "arn:aws:secretsmanager")])
    error_message = "No secret reference is passed as a plain setting: ${jsonencode(output.environment)}"
  }
}

run "tls_contact_points_without_tls_are_refused" {
  command = plan

  variables {
    store = {
      contact_points = ["node-0.eu-west.example:9142"]
      replication    = { "eu-west" = 3 }
      username       = "marquee"
      tls            = false
    }
  }

  expect_failures = [var.store]
}

run "tls_without_a_ca_is_refused" {
  command = plan

  variables {
    secrets = {
      signing_keys   = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/signing-keys-AbCdEf"
      store_password = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/scylla-GhIjKl:password::"
      redis_password = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/redis-MnOpQr"
      origin_secret  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/origin-StUvWx:current::"
    }
  }

  expect_failures = [output.environment]
}

run "development_tokens_are_refused" {
  command = plan

  variables {
    extra = { MARQUEE_AUTH__DEV_TOKENS = "true" }
  }

  expect_failures = [var.extra]
}

run "a_secret_value_is_refused" {
  command = plan

  variables {
    secrets = {
      signing_keys   = "-----BEGIN PRIVATE KEY-----"
      store_password = "hunter2"
      redis_password = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/redis-MnOpQr"
      origin_secret  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:marquee/origin-StUvWx:current::"
    }
  }

  expect_failures = [var.secrets]
}
