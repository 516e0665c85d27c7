# Two customer managed keys:
# - `data` encrypts what the function and the event source mapping write: the
#   dead-letter queue, the failure topic, the on-failure bucket and the run
#   ledger table. The execution role gets kms:GenerateDataKey and kms:Decrypt
#   on it (iam.tf). For the ledger, DynamoDB creates grants on the key when
#   the table is created, on behalf of whoever applies (the account statement
#   below lets their IAM policy allow kms:CreateGrant, kms:DescribeKey and the
#   encryption actions DynamoDB documents).
# - `logs` encrypts the function's log group; only CloudWatch Logs uses it.

resource "aws_kms_key" "data" {
  description             = "${var.function_name}: dead-letter queue, failure topic, on-failure bucket and run ledger"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.data_key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.function_name}-data"
  target_key_id = aws_kms_key.data.key_id
}

data "aws_iam_policy_document" "data_key" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; the account statement is the default key policy that lets IAM policies grant use of the key.
  #checkov:skip=CKV_AWS_111:Same: a key policy's Resource "*" is this key, and the write actions go to the key's own account.
  #checkov:skip=CKV_AWS_356:Same: Resource "*" in a key policy cannot name another resource than the key it is attached to.
  statement {
    sid       = "AccountAdministersAndDelegatesToIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # S3 publishes "object created" notices of the on-failure bucket to the
  # encrypted failure topic, so it must be able to use the topic's key
  # (Amazon SNS Developer Guide, encrypted topics and AWS service publishers).
  statement {
    sid       = "S3NotifiesTheEncryptedFailureTopic"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:s3:::${local.failure_bucket_name}"]
    }
  }
}

resource "aws_kms_key" "logs" {
  description             = "${var.function_name}: CloudWatch Logs log group"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.logs_key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${var.function_name}-logs"
  target_key_id = aws_kms_key.logs.key_id
}

data "aws_iam_policy_document" "logs_key" {
  #checkov:skip=CKV_AWS_109:A key policy's Resource "*" means this key only; the account statement is the default key policy.
  #checkov:skip=CKV_AWS_111:Same: a key policy's Resource "*" is this key; CloudWatch Logs' use is bound to this log group by the encryption context.
  #checkov:skip=CKV_AWS_356:Same: Resource "*" in a key policy cannot name another resource than the key it is attached to.
  statement {
    sid       = "AccountAdministersAndDelegatesToIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts and decrypts the log group's data with the key,
  # for this log group only (CloudWatch Logs User Guide, "Encrypt log data in
  # CloudWatch Logs using AWS KMS": the key policy statement for the regional
  # logs service principal, scoped by kms:EncryptionContext:aws:logs:arn).
  statement {
    sid = "CloudWatchLogsUsesTheKeyForThisLogGroup"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}"]
    }
  }
}
