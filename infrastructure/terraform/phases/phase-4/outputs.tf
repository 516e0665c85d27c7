output "function_name" {
  description = "Name of the Lambda function."
  value       = module.consolidation_updater.function_name
}

output "published_version" {
  description = "Version this apply published."
  value       = module.consolidation_updater.published_version
}

output "live_version" {
  description = "Version the `live` alias points at."
  value       = module.consolidation_updater.live_version
}

output "event_source_mapping_uuid" {
  description = "UUID of the MSK event source mapping."
  value       = module.consolidation_updater.event_source_mapping_uuid
}

output "dlq_url" {
  description = "Dead-letter queue URL (for consolidation-updater redrive)."
  value       = module.consolidation_updater.dlq_url
}

output "failure_topic_arn" {
  description = "Failure topic ARN."
  value       = module.consolidation_updater.failure_topic_arn
}

output "failure_bucket" {
  description = "Bucket of the event source mapping's discarded batches."
  value       = module.consolidation_updater.failure_bucket
}

output "log_group_name" {
  description = "The function's log group."
  value       = module.consolidation_updater.log_group_name
}

output "ledger_table_name" {
  description = "The run ledger table (consolidation-updater status reads it); null without the ledger."
  value       = module.consolidation_updater.ledger_table_name
}
