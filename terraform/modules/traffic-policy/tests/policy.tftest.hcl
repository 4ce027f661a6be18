# The traffic policy's decisions: normal operation, one region drained, one unhealthy, and
# the refusal to drain every region.

variables {
  regions = [
    { name = "us-east", edge = "127.0.1.1", client_subnets = ["127.10.0.0/16"], weight = 2 },
    { name = "eu-west", edge = "127.0.2.1", client_subnets = ["127.20.0.0/16"] },
    { name = "ap-south", edge = "127.0.3.1", client_subnets = ["127.30.0.0/16"] },
  ]
  health_check_port = 18080
}

run "normal" {
  command = plan

  assert {
    condition     = output.serving_regions == ["us-east", "ap-south", "eu-west"]
    error_message = "Every region serves, heaviest first: ${jsonencode(output.serving_regions)}"
  }
  assert {
    condition     = output.routes["eu-west"] == ["eu-west", "us-east", "ap-south"]
    error_message = "EU clients go to eu-west, then the heaviest other region: ${jsonencode(output.routes)}"
  }
  assert {
    condition     = output.dns_answers["us-east"][0] == "127.0.1.1" && output.dns_answers["eu-west"][0] == "127.0.2.1"
    error_message = "Each region's clients are answered with their own edge first: ${jsonencode(output.dns_answers)}"
  }
  assert {
    condition     = output.effective_routes == { "us-east" = "us-east", "eu-west" = "eu-west", "ap-south" = "ap-south" }
    error_message = "Healthy regions keep their clients: ${jsonencode(output.effective_routes)}"
  }
  assert {
    condition     = output.health_checks["eu-west"] == "http://127.0.2.1:18080/readyz/region"
    error_message = "Health checks target the edge's region health URL: ${jsonencode(output.health_checks)}"
  }
}

run "one_drained" {
  command = plan

  variables {
    drained_regions = ["eu-west"]
  }

  assert {
    condition     = output.serving_regions == ["us-east", "ap-south"]
    error_message = "A drained region serves nobody: ${jsonencode(output.serving_regions)}"
  }
  assert {
    condition     = output.routes["eu-west"] == ["us-east", "ap-south"]
    error_message = "EU clients move to the heaviest serving region: ${jsonencode(output.routes)}"
  }
  assert {
    condition     = !contains(keys(output.health_checks), "eu-west")
    error_message = "A drained region is not health-checked into DNS: ${jsonencode(output.health_checks)}"
  }
  assert {
    condition     = alltrue([for client, route in output.routes : !contains(route, "eu-west")])
    error_message = "Nobody is sent to a drained region: ${jsonencode(output.routes)}"
  }
}

run "one_unhealthy" {
  command = plan

  variables {
    unhealthy_regions = ["us-east"]
  }

  assert {
    condition     = output.effective_routes["us-east"] == "ap-south" || output.effective_routes["us-east"] == "eu-west"
    error_message = "US clients go to a healthy region while us-east fails its check: ${jsonencode(output.effective_routes)}"
  }
  assert {
    condition     = output.effective_routes["eu-west"] == "eu-west"
    error_message = "Other regions keep their clients: ${jsonencode(output.effective_routes)}"
  }
  assert {
    condition     = output.routes["us-east"][0] == "us-east"
    error_message = "An unhealthy region is not drained: it takes its clients back when its check passes: ${jsonencode(output.routes)}"
  }
}

run "all_drained_is_refused" {
  command = plan

  variables {
    drained_regions = ["us-east", "eu-west", "ap-south"]
  }

  expect_failures = [var.drained_regions]
}

run "an_unknown_region_cannot_be_drained" {
  command = plan

  variables {
    drained_regions = ["us-west"]
  }

  expect_failures = [var.drained_regions]
}
