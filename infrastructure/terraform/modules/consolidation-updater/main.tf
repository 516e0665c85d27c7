# The consolidation updater: a Lambda function (custom runtime, the Rust
# `bootstrap` of consolidation-updater.zip) fed by an MSK event source mapping,
# stamping chargeback records in an existing DynamoDB table.
#
# Files: kms.tf (keys), failures.tf (dead-letter queue, failure topic, the
# mapping's on-failure bucket), ledger.tf (the run ledger table), iam.tf
# (execution role), function.tf (log group, function, alias), event_source.tf
# (the MSK mapping), network.tf (VPC endpoints), alarms.tf.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region

  # The table and its date index (the index ARN is table/NAME/index/INDEX).
  table_arn = "arn:${local.partition}:dynamodb:${local.region}:${local.account_id}:table/${var.table_name}"
  index_arn = "${local.table_arn}/index/${var.date_index_name}"

  # MSK resource ARNs for IAM access control: the cluster ARN is
  # arn:...:cluster/NAME/UUID; its topics are arn:...:topic/NAME/UUID/TOPIC and
  # its consumer groups arn:...:group/NAME/UUID/GROUP (Amazon MSK Developer
  # Guide, "Semantics of IAM authorization policy actions and resources").
  consumer_group_id = coalesce(var.consumer_group_id, var.function_name)
  msk_topic_arn     = "${replace(var.msk_cluster_arn, ":cluster/", ":topic/")}/${var.topic}"
  msk_group_arn     = "${replace(var.msk_cluster_arn, ":cluster/", ":group/")}/${local.consumer_group_id}"

  log_group_name     = "/aws/lambda/${var.function_name}"
  dlq_name           = coalesce(var.dlq_name, "${var.function_name}-dlq")
  failure_topic_name = coalesce(var.failure_topic_name, "${var.function_name}-failures")

  # DynamoDB table names are 3-255 letters, digits, underscores, hyphens and
  # dots; a function name (at most 54 of those) plus "-run-ledger" fits.
  ledger_table_name = coalesce(var.ledger_table_name, "${var.function_name}-run-ledger")

  # S3 bucket names are 3-63 lowercase letters, digits, hyphens and dots
  # (Amazon S3 User Guide, "General purpose bucket naming rules"); the
  # provider refuses a longer one at plan time. "-failures-" and the 12-digit
  # account take 22 characters, so the function name (lower-cased,
  # underscores as hyphens) is cut to 41: the seed's 40-character name fits
  # whole. The account keeps the global name unique.
  failure_bucket_name = coalesce(var.failure_bucket_name, "${substr(lower(replace(var.function_name, "_", "-")), 0, 41)}-failures-${local.account_id}")

  page_actions   = var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn]
  ticket_actions = var.ticket_topic_arn == null ? local.page_actions : [var.ticket_topic_arn]
}
