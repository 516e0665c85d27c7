terraform {
  # 1.5: `check` blocks and the `import` block syntax the README mentions; the
  # module itself needs nothing newer than lifecycle preconditions (1.2).
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Every attribute used here exists in all 6.x releases (checked against
      # the provider's CHANGELOG):
      # - aws_lambda_function.logging_config: added in 5.32.0 (January 11, 2024,
      #   #35050, "advanced logging controls").
      # - aws_lambda_event_source_mapping.provisioned_poller_config: added by
      #   #40303 (".changelog/40303.txt": "Add `provisioned_poller_config`
      #   argument ... for MSK"), reviewed late November 2024, so in a 5.7x/5.8x
      #   release; the exact 5.x version was not pinned down, 6.0 has it.
      # - destination_config.on_failure.destination_arn accepts any ARN
      #   (verify.ValidARN), so an S3 bucket ARN for a Kafka source is a matter
      #   for the Lambda API, not the provider; maximum_retry_attempts and
      #   maximum_record_age_in_seconds are validated only by range
      #   (-1..10000 and -1 or 60..604800), whatever the source type.
      # - data.aws_region.current.region (the `name` attribute is deprecated
      #   since 6.0).
      version = "~> 6.0"
    }
  }
}
