terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Same constraint as the module; see its versions.tf for why 6.x knows
      # every attribute used (logging_config since 5.32.0,
      # provisioned_poller_config since #40303).
      version = "~> 6.0"
    }
  }

  # State: configure a backend for real use, for example
  #   backend "s3" {}
  # with `terraform init -backend-config=backend.hcl`. Without one, state is
  # a local file in this directory.
}

provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}
