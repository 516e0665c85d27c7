# Phase 4 of the chargeback platform: the consolidation updater, deployed into
# the VPC and next to the MSK cluster and DynamoDB table of the earlier phases
# (passed in as variables).

module "consolidation_updater" {
  source = "../../modules/consolidation-updater"

  function_name = var.function_name
  zip_path      = var.zip_path
  architecture  = var.architecture
  memory_size   = var.memory_size
  timeout       = var.timeout

  reserved_concurrency = var.reserved_concurrency
  live_version         = var.live_version

  table_name      = var.table_name
  date_index_name = var.date_index_name
  write_mode      = var.write_mode
  max_write_rate  = var.max_write_rate
  log_level       = var.log_level

  run_ledger_enabled         = var.run_ledger_enabled
  ledger_ttl_days            = var.ledger_ttl_days
  ledger_deletion_protection = var.ledger_deletion_protection

  vpc_id                  = var.vpc_id
  subnet_ids              = var.subnet_ids
  security_group_ids      = var.security_group_ids
  msk_security_group_ids  = var.msk_security_group_ids
  private_route_table_ids = var.private_route_table_ids
  use_nat_gateway         = var.use_nat_gateway

  msk_cluster_arn   = var.msk_cluster_arn
  topic             = var.topic
  consumer_group_id = var.consumer_group_id
  starting_position = var.starting_position
  minimum_pollers   = var.minimum_pollers
  maximum_pollers   = var.maximum_pollers

  alarm_topic_arn  = var.alarm_topic_arn
  ticket_topic_arn = var.ticket_topic_arn
}
