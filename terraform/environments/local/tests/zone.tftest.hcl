# The zone the rig's PowerDNS is given, from the regions `cargo xtask rig up` writes (a copy
# in tests/rig/): each region's clients are sent to their own edge first, a drained region's
# clients to the others, and a drained region's edge is offered to nobody.

variables {
  rig_dir     = "tests/rig"
  first_apply = true
}

run "every_region_serving" {
  command = plan

  assert {
    condition     = strcontains(local.api, "if netmask({'127.20.0.0/16'}) then order = {{'127.0.2.1'},{'127.0.1.1'}} end")
    error_message = "EU clients get eu-west's edge, then us-east's: ${local.api}"
  }
  assert {
    condition     = strcontains(local.api, "if netmask({'127.10.0.0/16','127.11.0.0/16'}) then order = {{'127.0.1.1'},{'127.0.2.1'}} end")
    error_message = "US clients (both subnets) get us-east's edge, then eu-west's: ${local.api}"
  }
  assert {
    condition     = strcontains(local.api, "return ifurlup('http://api.marquee.test:18080/readyz/region', order)")
    error_message = "The first edge whose region health URL answers is given: ${local.api}"
  }
  assert {
    condition     = strcontains(terraform_data.geo_dns.input, "\nredis-1.us-east IN A 127.0.0.1\n") && strcontains(terraform_data.geo_dns.input, "\ncql.eu-west IN A 10.112.1.1\n")
    error_message = "The gateways' Redis seeds and contact points are answered: ${terraform_data.geo_dns.input}"
  }
}

run "eu_west_drained" {
  command = plan

  variables {
    drained_regions = ["eu-west"]
  }

  assert {
    condition     = strcontains(local.api, "if netmask({'127.20.0.0/16'}) then order = {{'127.0.1.1'}} end")
    error_message = "EU clients go to us-east: ${local.api}"
  }
  assert {
    condition     = !strcontains(local.api, "127.0.2.1")
    error_message = "Nobody is given the drained region's edge: ${local.api}"
  }
  assert {
    condition     = output.serving_regions == ["us-east"]
    error_message = "Only us-east serves: ${jsonencode(output.serving_regions)}"
  }
}

# The state of an apply that drained eu-west (tests/drained/terraform.tfstate) is what the
# policy is given as the previous shares: returning traffic to eu-west then needs its health
# (refusals are the traffic-policy module's tests; the rig test applies one for real).
run "the_previous_shares_come_from_the_state" {
  command = plan

  variables {
    rig_dir         = "tests/drained"
    first_apply     = false
    drained_regions = ["eu-west"]
  }

  assert {
    condition     = jsonencode(local.previous_percent) == jsonencode({ "eu-west" = 0, "us-east" = 100 })
    error_message = "The previous apply's shares are read from the state: ${jsonencode(local.previous_percent)}"
  }
}

run "undrain_of_a_healthy_region" {
  command = plan

  variables {
    rig_dir       = "tests/drained"
    first_apply   = false
    region_health = { "us-east" = true, "eu-west" = true }
  }

  assert {
    condition     = output.serving_regions == ["eu-west", "us-east"] && strcontains(local.api, "if netmask({'127.20.0.0/16'}) then order = {{'127.0.2.1'},{'127.0.1.1'}} end")
    error_message = "EU clients are back on eu-west: ${local.api}"
  }
}

run "draining_more_needs_no_health" {
  command = plan

  variables {
    rig_dir         = "tests/drained"
    first_apply     = false
    drained_regions = ["eu-west"]
  }

  assert {
    condition     = output.serving_regions == ["us-east"]
    error_message = "Keeping eu-west drained needs no health check: ${jsonencode(output.serving_regions)}"
  }
}
