terraform {
  # 1.5: `check` blocks and the `import` block syntax the README mentions,
  # and strcontains (1.5) and startswith (1.3) in the module's own
  # validations and preconditions.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Every resource, argument, block and referenced attribute used here
      # was checked against the schema of provider 6.62.0 (as generated into
      # its CDK Terrain bindings: names, block or attribute, required
      # arguments); the module as it was before the run ledger also passed
      # `terraform validate` and a plan of phase-4 with provider 5.100.0
      # (with `region` read as the 5.x `name`). The ledger (ledger.tf) was
      # checked against the 6.62.0 schema only. Release by release:
      # - aws_dynamodb_table: hash_key and range_key are table-level
      #   arguments of 6.62.0, which has no table-level key_schema (the
      #   provider deprecated the global_secondary_index hash_key/range_key
      #   in favour of a nested key_schema; the ledger has no index); ttl,
      #   point_in_time_recovery, server_side_encryption.kms_key_arn and
      #   deletion_protection_enabled are in the same schema.
      # - aws_lambda_function.logging_config: added in 5.32.0 (January 11, 2024,
      #   #35050, "advanced logging controls").
      # - aws_lambda_event_source_mapping.provisioned_poller_config: added by
      #   #40303 (".changelog/40303.txt": "Add `provisioned_poller_config`
      #   argument ... for MSK"), reviewed late November 2024; 5.100.0 has it
      #   (validated here), and 6.0.0 followed it.
      # - destination_config.on_failure.destination_arn accepts any ARN
      #   (verify.ValidARN), so an S3 bucket ARN for a Kafka source is a matter
      #   for the Lambda API, not the provider; maximum_retry_attempts and
      #   maximum_record_age_in_seconds are validated only by range
      #   (-1..10000 and -1 or 60..604800), whatever the source type.
      # - data.aws_region.current.region: added in 6.0, where `name` became
      #   deprecated (Version 6 Upgrade Guide, "Data Source aws_region"); this
      #   is what needs 6.x rather than 5.x.
      version = "~> 6.0"
    }
  }
}
