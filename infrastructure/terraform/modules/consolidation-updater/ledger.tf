# The run ledger: the function's own table, one item (under 1 KB) per
# (day, execution) run, named to the function by LEDGER_TABLE_NAME (unset:
# no ledger). Per consolidation message the function makes one strongly
# consistent Query of the day's partition, an UpdateItem when a fan-out
# starts (in_progress, deliveries + 1) and one when the run completes
# (completed, with its counts). A message whose run the ledger already
# records as completed costs that Query and nothing else: no read of the
# date index, no write to the chargebacks table. `consolidation-updater
# status` reads the same items (one Query per day).
#
# Items carry expires_at (epoch seconds, LEDGER_TTL_DAYS after they are
# written) and DynamoDB's TTL deletes them, at no charge. The table is
# encrypted with the module's `data` key (kms.tf); DynamoDB decrypts the
# table key on behalf of whoever reads or writes the table, and the
# execution role's DataKey statement (iam.tf) already allows kms:Decrypt on
# that key.
#
# run_ledger_enabled = false removes the table, the role's statement for it
# and the two variables. Deletion protection (ledger_deletion_protection)
# refuses that removal, and a replacement of the table (a new name), until
# an apply has turned it off (docs/deployment.md, "The run ledger").

resource "aws_dynamodb_table" "ledger" {
  count = var.run_ledger_enabled ? 1 : 0

  name         = local.ledger_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "partition_date"
  range_key    = "execution_sequence"

  # Only the key attributes are declared: the provider's documentation warns
  # that declaring others can make plans loop.
  attribute {
    name = "partition_date"
    type = "S"
  }

  attribute {
    name = "execution_sequence"
    type = "N"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.data.arn
  }

  deletion_protection_enabled = var.ledger_deletion_protection

  tags = var.tags
}
