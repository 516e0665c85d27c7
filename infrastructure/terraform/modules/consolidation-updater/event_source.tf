# The MSK event source mapping.
#
# Authentication: IAM. No source_access_configuration is given: with IAM
# access control on the cluster and no secret, Lambda uses SASL/IAM with the
# execution role (Lambda Developer Guide, MSK cluster authentication, "How
# Lambda chooses a bootstrap broker"); the role's kafka-cluster permissions
# are in iam.tf.
#
# Error handling (Lambda Developer Guide, "Configuring error handling controls
# for Kafka event sources"): partial batch responses, MaximumRetryAttempts and
# MaximumRecordAgeInSeconds apply to Kafka mappings in provisioned mode, hence
# provisioned_poller_config. A record the function keeps handing back (its
# batchItemFailures), or a batch whose invocation keeps failing, is retried up
# to maximum_retry_attempts times or until it is maximum_record_age_in_seconds
# old; then Lambda writes the failure metadata and the whole invocation
# payload to the S3 on-failure bucket, commits past it and moves on. How to
# recover it: docs/deployment.md, "When the retries run out".

resource "aws_lambda_event_source_mapping" "msk" {
  event_source_arn = var.msk_cluster_arn
  function_name    = aws_lambda_alias.live.arn
  topics           = [var.topic]
  enabled          = var.esm_enabled

  # TRIM_HORIZON by default: a new consumer group must not skip consolidation
  # events published while the mapping was being created (LATEST would). The
  # stamping is idempotent and monotonic, so replaying the retained events is
  # safe; its cost is one read of each replayed day (docs/deployment.md).
  starting_position = var.starting_position

  # The seed's contract: up to 100 messages per invocation.
  batch_size = 100

  amazon_managed_kafka_event_source_config {
    consumer_group_id = local.consumer_group_id
  }

  function_response_types = ["ReportBatchItemFailures"]

  provisioned_poller_config {
    minimum_pollers = var.minimum_pollers
    maximum_pollers = max(var.maximum_pollers, var.minimum_pollers)
  }

  maximum_retry_attempts        = var.maximum_retry_attempts
  maximum_record_age_in_seconds = var.maximum_record_age_in_seconds

  destination_config {
    on_failure {
      destination_arn = aws_s3_bucket.failures.arn
    }
  }

  tags = var.tags

  # Lambda checks the role's permissions (Kafka, ENIs, the destination) when
  # it creates the mapping, and the bucket must be ready to receive records.
  depends_on = [
    aws_iam_role_policy.function,
    aws_s3_bucket_policy.failures,
    aws_s3_bucket_server_side_encryption_configuration.failures,
  ]
}
