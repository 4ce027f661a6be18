terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # One major version: a state is never written by providers 5 and 6 in turn.
      version = "~> 6.0"
    }
  }
}
