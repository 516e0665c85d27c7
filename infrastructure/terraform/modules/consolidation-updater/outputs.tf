output "function_name" {
  description = "Name of the Lambda function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "ARN of the Lambda function (unqualified)."
  value       = aws_lambda_function.this.arn
}

output "published_version" {
  description = "Version this apply published."
  value       = aws_lambda_function.this.version
}

output "live_alias_arn" {
  description = "ARN of the `live` alias the event source mapping invokes."
  value       = aws_lambda_alias.live.arn
}

output "live_version" {
  description = "Version the `live` alias points at."
  value       = aws_lambda_alias.live.function_version
}

output "event_source_mapping_uuid" {
  description = "UUID of the MSK event source mapping (aws lambda get-event-source-mapping --uuid ...)."
  value       = aws_lambda_event_source_mapping.msk.uuid
}

output "consumer_group_id" {
  description = "Kafka consumer group of the mapping."
  value       = local.consumer_group_id
}

output "execution_role_arn" {
  description = "ARN of the execution role."
  value       = aws_iam_role.function.arn
}

output "log_group_name" {
  description = "The function's log group."
  value       = aws_cloudwatch_log_group.function.name
}

output "dlq_url" {
  description = "URL of the dead-letter queue (DLQ_URL; consolidation-updater redrive --queue-url ...)."
  value       = aws_sqs_queue.dlq.url
}

output "failure_topic_arn" {
  description = "ARN of the failure topic (FAILURE_TOPIC_ARN)."
  value       = aws_sns_topic.failures.arn
}

output "failure_bucket" {
  description = "Bucket the event source mapping writes discarded batches to."
  value       = aws_s3_bucket.failures.bucket
}

output "data_key_arn" {
  description = "KMS key of the queue, the topic, the bucket and the run ledger table."
  value       = aws_kms_key.data.arn
}

output "ledger_table_name" {
  description = "The run ledger table (LEDGER_TABLE_NAME; what consolidation-updater status reads). null when run_ledger_enabled is false."
  value       = one(aws_dynamodb_table.ledger[*].name)
}

output "ledger_table_arn" {
  description = "ARN of the run ledger table (for an operator's IAM policy: dynamodb:Query on it, kms:Decrypt on data_key_arn). null when run_ledger_enabled is false."
  value       = one(aws_dynamodb_table.ledger[*].arn)
}
