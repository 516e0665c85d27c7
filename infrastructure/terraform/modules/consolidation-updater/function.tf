resource "aws_cloudwatch_log_group" "function" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
  tags              = var.tags
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:A function-level dead-letter queue applies to asynchronous invocations only; the MSK mapping invokes synchronously. Poison messages go to DLQ_URL (the function's own queue) and exhausted batches to the mapping's S3 on-failure destination.
  #checkov:skip=CKV_AWS_173:The environment holds names and ARNs only, no secret; Lambda encrypts it at rest with its AWS managed key. A customer managed key here would add a decrypt dependency at every cold start for no confidentiality gain.
  #checkov:skip=CKV_AWS_272:No code-signing profile exists for this project; the zip is built by ./build.sh in CI and pinned by source_code_hash.
  function_name = var.function_name
  description   = "Stamps chargeback records with their consolidation (MSK topic ${var.topic} -> DynamoDB ${var.table_name})"
  role          = aws_iam_role.function.arn

  filename         = var.zip_path
  source_code_hash = filebase64sha256(var.zip_path)
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]

  memory_size                    = var.memory_size
  timeout                        = var.timeout
  reserved_concurrent_executions = var.reserved_concurrency

  # Every apply that changes code or configuration publishes a version; the
  # `live` alias below is what the event source mapping invokes.
  publish = true

  # README.md, Configuration. AWS_REGION is deliberately absent: Lambda sets
  # it and rejects it as a user-defined variable. LOG_FORMAT is CLI-only.
  # MAX_WRITE_RATE is set only when max_write_rate is: absent, the function
  # puts no ceiling on its write rate and only the table's throttling paces it.
  # LEDGER_TABLE_NAME and LEDGER_TTL_DAYS are set only with the run ledger
  # (ledger.tf): absent, the function keeps no ledger.
  environment {
    variables = merge(
      {
        DYNAMODB_TABLE_NAME           = var.table_name
        CHARGEBACK_DATE_INDEX         = var.date_index_name
        DLQ_URL                       = aws_sqs_queue.dlq.url
        FAILURE_TOPIC_ARN             = aws_sns_topic.failures.arn
        MAX_CONCURRENCY               = tostring(var.max_concurrency)
        WRITE_MODE                    = var.write_mode
        METRICS_NAMESPACE             = var.metrics_namespace
        LOG_LEVEL                     = var.log_level
        DEADLINE_SAFETY_MARGIN_MS     = tostring(var.deadline_safety_margin_ms)
        PROGRESS_LOG_INTERVAL_SECONDS = tostring(var.progress_log_interval_seconds)
        XRAY_TRACING                  = "on"
      },
      var.max_write_rate == null ? {} : { MAX_WRITE_RATE = tostring(var.max_write_rate) },
      var.run_ledger_enabled ? {
        LEDGER_TABLE_NAME = aws_dynamodb_table.ledger[0].name
        LEDGER_TTL_DAYS   = tostring(var.ledger_ttl_days)
      } : {},
    )
  }

  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = var.security_group_ids
  }

  tracing_config {
    mode = "Active"
  }

  # Every stdout line of the function is already one JSON object with a
  # `level` field, which Lambda's JSON log format uses for level filtering;
  # START/END/REPORT become JSON platform records in the same group.
  logging_config {
    log_format            = "JSON"
    log_group             = aws_cloudwatch_log_group.function.name
    application_log_level = var.log_level
    system_log_level      = "INFO"
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.deadline_safety_margin_ms < var.timeout * 1000
      error_message = "deadline_safety_margin_ms must be shorter than the timeout, or no work would ever start."
    }
  }

  depends_on = [aws_iam_role_policy.function]
}

# The event source mapping invokes this alias, never $LATEST: a rollback is
# repointing it at an earlier published version (docs/deployment.md).
resource "aws_lambda_alias" "live" {
  name             = "live"
  description      = "What the MSK event source mapping invokes"
  function_name    = aws_lambda_function.this.function_name
  function_version = coalesce(var.live_version, aws_lambda_function.this.version)
}
