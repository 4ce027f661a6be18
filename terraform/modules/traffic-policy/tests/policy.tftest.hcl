# The traffic policy's decisions: normal operation, one region drained (its health check kept),
# a drain in steps (100 -> 50 -> 10 -> 0), one region unhealthy, the refusal to drain every
# region, and the refusal to return traffic to a region whose health check does not pass.

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
  assert {
    condition     = output.traffic_percent == { "us-east" = 100, "eu-west" = 100, "ap-south" = 100 }
    error_message = "Every region keeps all of its clients: ${jsonencode(output.traffic_percent)}"
  }
  assert {
    condition     = output.weighted_answers["eu-west"] == [{ region = "eu-west", weight = 100 }]
    error_message = "A region at 100% answers with itself alone: ${jsonencode(output.weighted_answers)}"
  }
  assert {
    condition     = output.secondary_answers == { "us-east" = "ap-south", "ap-south" = "us-east", "eu-west" = "us-east" }
    error_message = "Each region's reads fail over to its clients' next region: ${jsonencode(output.secondary_answers)}"
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
    condition     = output.health_checks["eu-west"] == "http://127.0.2.1:18080/readyz/region"
    error_message = "A drained region keeps its health check, so SREs see when it can come back: ${jsonencode(output.health_checks)}"
  }
  assert {
    condition     = !contains(keys(output.weighted_answers), "eu-west") && output.traffic_percent["eu-west"] == 0
    error_message = "A drained region has no records: ${jsonencode(output.weighted_answers)}"
  }
  assert {
    condition     = alltrue([for client, route in output.routes : !contains(route, "eu-west")])
    error_message = "Nobody is sent to a drained region: ${jsonencode(output.routes)}"
  }
  assert {
    condition     = alltrue([for name, answers in output.weighted_answers : !contains([for a in answers : a.region], "eu-west")])
    error_message = "No weighted answer names a drained region: ${jsonencode(output.weighted_answers)}"
  }
  assert {
    condition     = output.secondary_answers == { "us-east" = "ap-south", "ap-south" = "us-east" }
    error_message = "Reads fail over between serving regions only: ${jsonencode(output.secondary_answers)}"
  }
}

run "one_region_left_fails_over_to_itself" {
  command = plan

  variables {
    drained_regions = ["eu-west", "ap-south"]
  }

  assert {
    condition     = output.secondary_answers == { "us-east" = "us-east" }
    error_message = "The last serving region is its own secondary: ${jsonencode(output.secondary_answers)}"
  }
}

run "drain_in_steps_50" {
  command = plan

  variables {
    traffic_percent = { "eu-west" = 50 }
  }

  assert {
    condition = output.weighted_answers["eu-west"] == [
      { region = "eu-west", weight = 50 },
      { region = "us-east", weight = 34 },
      { region = "ap-south", weight = 16 },
    ]
    error_message = "Half of eu-west's clients stay, the rest go to the others by weight (2:1): ${jsonencode(output.weighted_answers["eu-west"])}"
  }
  assert {
    condition     = output.weighted_answers["us-east"] == [{ region = "us-east", weight = 100 }]
    error_message = "Other regions keep their own clients: ${jsonencode(output.weighted_answers)}"
  }
  assert {
    condition     = contains(output.serving_regions, "eu-west")
    error_message = "A region at 50% still serves: ${jsonencode(output.serving_regions)}"
  }
}

run "drain_in_steps_10" {
  command = plan

  variables {
    traffic_percent  = { "eu-west" = 10 }
    previous_percent = { "us-east" = 100, "eu-west" = 50, "ap-south" = 100 }
    # Taking traffic away needs no health: an unhealthy region is drained all the same.
    region_health = { "eu-west" = false }
  }

  assert {
    condition     = output.weighted_answers["eu-west"] == [{ region = "eu-west", weight = 10 }, { region = "us-east", weight = 60 }, { region = "ap-south", weight = 30 }]
    error_message = "A tenth of eu-west's clients stay: ${jsonencode(output.weighted_answers["eu-west"])}"
  }
  assert {
    condition     = sum([for a in output.weighted_answers["eu-west"] : a.weight]) == 100
    error_message = "Weights add up to 100: ${jsonencode(output.weighted_answers["eu-west"])}"
  }
}

run "drain_in_steps_0_is_a_drain" {
  command = plan

  variables {
    traffic_percent  = { "eu-west" = 0 }
    previous_percent = { "us-east" = 100, "eu-west" = 10, "ap-south" = 100 }
  }

  assert {
    condition     = output.serving_regions == ["us-east", "ap-south"] && !contains(keys(output.weighted_answers), "eu-west")
    error_message = "At 0% eu-west has no records, as when drained: ${jsonencode(output.weighted_answers)}"
  }
  assert {
    condition     = contains(keys(output.health_checks), "eu-west")
    error_message = "Its health check stays: ${jsonencode(output.health_checks)}"
  }
}

run "one_unhealthy" {
  command = plan

  variables {
    region_health = { "us-east" = false }
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

  expect_failures = [output.traffic_percent]
}

run "all_at_zero_is_refused" {
  command = plan

  variables {
    traffic_percent = { "us-east" = 0, "eu-west" = 0, "ap-south" = 0 }
  }

  expect_failures = [output.traffic_percent]
}

run "an_unknown_region_cannot_be_drained" {
  command = plan

  variables {
    drained_regions = ["us-west"]
  }

  expect_failures = [var.drained_regions]
}

run "a_share_is_a_whole_percentage" {
  command = plan

  variables {
    traffic_percent = { "eu-west" = 150 }
  }

  expect_failures = [var.traffic_percent]
}

run "undrain_of_a_failing_region_is_refused" {
  command = plan

  variables {
    previous_percent = { "us-east" = 100, "eu-west" = 0, "ap-south" = 100 }
    region_health    = { "us-east" = true, "eu-west" = false, "ap-south" = true }
  }

  expect_failures = [output.traffic_percent]
}

run "undrain_of_a_region_of_unknown_health_is_refused" {
  command = plan

  variables {
    previous_percent = { "us-east" = 100, "eu-west" = 0, "ap-south" = 100 }
    region_health    = { "us-east" = true, "ap-south" = true }
  }

  expect_failures = [output.traffic_percent]
}

run "a_larger_share_for_a_failing_region_is_refused" {
  command = plan

  variables {
    traffic_percent  = { "eu-west" = 50 }
    previous_percent = { "us-east" = 100, "eu-west" = 10, "ap-south" = 100 }
    region_health    = { "eu-west" = false }
  }

  expect_failures = [output.traffic_percent]
}

run "undrain_of_a_healthy_region" {
  command = plan

  variables {
    previous_percent = { "us-east" = 100, "eu-west" = 0, "ap-south" = 100 }
    region_health    = { "us-east" = true, "eu-west" = true, "ap-south" = true }
  }

  assert {
    condition     = output.serving_regions == ["us-east", "ap-south", "eu-west"] && output.routes["eu-west"][0] == "eu-west"
    error_message = "A healthy region takes its clients back: ${jsonencode(output.routes)}"
  }
}

run "a_failing_region_that_keeps_its_share_is_no_return" {
  command = plan

  variables {
    previous_percent = { "us-east" = 100, "eu-west" = 100, "ap-south" = 100 }
    region_health    = { "eu-west" = false }
  }

  assert {
    condition     = output.traffic_percent["eu-west"] == 100
    error_message = "An apply that changes nothing for a failing region goes through (DNS health checks handle it): ${jsonencode(output.traffic_percent)}"
  }
}
