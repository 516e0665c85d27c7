# Where failures go.
#
# - The dead-letter queue (DLQ_URL): the function parks poison messages there
#   with their payload (README.md, Failures); `consolidation-updater redrive`
#   replays them.
# - The failure topic (FAILURE_TOPIC_ARN): one summary per invocation that
#   dead-lettered or handed back messages. S3 also notifies it when the event
#   source mapping writes a discarded batch to the bucket.
# - The on-failure bucket: when the mapping's retries or record age run out,
#   Lambda writes the batch's metadata and the whole invocation payload there
#   (an SQS or SNS on-failure destination would get offsets only). It is
#   deliberately not the function's own dead-letter queue: that queue holds
#   the function's poison-message bodies, a different format, and replaying
#   an on-failure record needs the whole Lambda event.

# ---------------------------------------------------------------------------
# Dead-letter queue
# ---------------------------------------------------------------------------

resource "aws_sqs_queue" "dlq" {
  name                              = local.dlq_name
  message_retention_seconds         = 1209600 # 14 days, the SQS maximum
  kms_master_key_id                 = aws_kms_key.data.arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = var.tags
}

data "aws_iam_policy_document" "dlq" {
  statement {
    sid       = "DenyWithoutTls"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.dlq.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "dlq" {
  queue_url = aws_sqs_queue.dlq.id
  policy    = data.aws_iam_policy_document.dlq.json
}

# ---------------------------------------------------------------------------
# Failure topic
# ---------------------------------------------------------------------------

resource "aws_sns_topic" "failures" {
  name              = local.failure_topic_name
  kms_master_key_id = aws_kms_key.data.arn
  tags              = var.tags
}

data "aws_iam_policy_document" "failures_topic" {
  statement {
    sid       = "AccountOwnsTheTopic"
    actions   = ["sns:Publish", "sns:Subscribe", "sns:GetTopicAttributes", "sns:SetTopicAttributes", "sns:ListSubscriptionsByTopic"]
    resources = [aws_sns_topic.failures.arn]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "OnFailureBucketNotifies"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.failures.arn]

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
      values   = [aws_s3_bucket.failures.arn]
    }
  }

  statement {
    sid       = "DenyWithoutTls"
    effect    = "Deny"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.failures.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sns_topic_policy" "failures" {
  arn    = aws_sns_topic.failures.arn
  policy = data.aws_iam_policy_document.failures_topic.json
}

# ---------------------------------------------------------------------------
# The event source mapping's on-failure bucket
# ---------------------------------------------------------------------------

resource "aws_s3_bucket" "failures" {
  #checkov:skip=CKV_AWS_18:Server access logging needs a separate log bucket this module does not own; writes here are rare and come from one role (CloudTrail data events cover audit if required).
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles the bucket for records that are replays of Kafka messages still in the topic and in the function's logs; not worth a second region here.
  bucket = local.failure_bucket_name
  tags   = var.tags

  lifecycle {
    # The naming rules of the Amazon S3 User Guide ("General purpose bucket
    # naming rules"), checked at plan time for a failure_bucket_name given
    # explicitly or a function name that starts or ends with a hyphen.
    precondition {
      condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", local.failure_bucket_name)) && !strcontains(local.failure_bucket_name, "..")
      error_message = "The on-failure bucket name must be 3-63 lowercase letters, digits, hyphens or dots, starting and ending with a letter or digit: set failure_bucket_name."
    }
  }
}

resource "aws_s3_bucket_ownership_controls" "failures" {
  bucket = aws_s3_bucket.failures.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "failures" {
  bucket                  = aws_s3_bucket.failures.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "failures" {
  bucket = aws_s3_bucket.failures.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "failures" {
  bucket = aws_s3_bucket.failures.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.data.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "failures" {
  bucket = aws_s3_bucket.failures.id

  rule {
    id     = "expire-on-failure-records"
    status = "Enabled"

    filter {}

    expiration {
      days = var.failure_record_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.failures]
}

data "aws_iam_policy_document" "failures_bucket" {
  statement {
    sid       = "DenyWithoutTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.failures.arn, "${aws_s3_bucket.failures.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "failures" {
  bucket = aws_s3_bucket.failures.id
  policy = data.aws_iam_policy_document.failures_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.failures]
}

# A discarded batch is something an operator must act on: S3 tells the
# failure topic as soon as the mapping writes one.
resource "aws_s3_bucket_notification" "failures" {
  bucket = aws_s3_bucket.failures.id

  topic {
    topic_arn = aws_sns_topic.failures.arn
    events    = ["s3:ObjectCreated:*"]
  }

  depends_on = [aws_sns_topic_policy.failures]
}
