# The execution role: what the function itself calls, plus what the MSK event
# source mapping does with the same role (it has no role of its own). One
# statement per purpose; the test infrastructure/tests/test_phase4.py checks
# the exact set of (action, resource) pairs against AWS's documentation.

data "aws_iam_policy_document" "assume_role" {
  statement {
    sid     = "LambdaAssumesTheRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "function" {
  name               = "${var.function_name}-execution"
  description        = "Execution role of ${var.function_name} and of its MSK event source mapping"
  assume_role_policy = data.aws_iam_policy_document.assume_role.json
  tags               = var.tags
}

data "aws_iam_policy_document" "function" {
  #checkov:skip=CKV_AWS_111:Only the ENI statement writes on "*": Lambda creates the function's and the pollers' network interfaces, whose IDs cannot be known in advance (AWS's AWSLambdaVPCAccessExecutionRole and AWSLambdaMSKExecutionRole grant them on "*" for that reason). Every other write is scoped to one ARN.
  #checkov:skip=CKV_AWS_356:"*" appears only where AWS offers no resource-level permission (ec2 Describe*, xray PutTraceSegments/PutTelemetryRecords) or where the resource is created by Lambda at run time (the network interfaces).

  # --- The function: DynamoDB (README.md, Table contract) -------------------
  # DescribeTable at cold start; UpdateItem (WRITE_MODE=update-item) or
  # PartiQL UPDATE through BatchExecuteStatement (batch-statement, which needs
  # dynamodb:PartiQLUpdate on the table); Scan only when the index is missing.
  statement {
    sid       = "ChargebacksTable"
    actions   = ["dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:UpdateItem", "dynamodb:PartiQLUpdate"]
    resources = [local.table_arn]
  }

  # The day's keys are read from the date index (Query with IndexName is
  # authorized on the index ARN, table/NAME/index/INDEX).
  statement {
    sid       = "ChargebacksDateIndex"
    actions   = ["dynamodb:Query"]
    resources = [local.index_arn]
  }

  # --- The function: its run ledger (ledger.tf) -----------------------------
  # The item-level actions of the ledger's contract: Query (the day's
  # partition, strongly consistent), UpdateItem (a run's start and its
  # completion), GetItem and PutItem (one run's item). On the ledger table
  # alone: it has no index, and the chargebacks statements above stay as
  # they are. One statement per ledger table, so none when
  # run_ledger_enabled is false.
  dynamic "statement" {
    for_each = aws_dynamodb_table.ledger[*].arn

    content {
      sid       = "RunLedgerTable"
      actions   = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"]
      resources = [statement.value]
    }
  }

  # --- The function: dead letters and failure summaries ---------------------
  # GetQueueAttributes: the queue's MaximumMessageSize is read at cold start
  # (README.md, "Dead-letter body").
  statement {
    sid       = "DeadLetterQueue"
    actions   = ["sqs:SendMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.dlq.arn]
  }

  statement {
    sid       = "FailureTopic"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.failures.arn]
  }

  # SendMessage / Publish to a queue or topic encrypted with a customer
  # managed key need kms:GenerateDataKey and kms:Decrypt on that key; so does
  # the mapping's PutObject to the SSE-KMS on-failure bucket (GenerateDataKey).
  # The run ledger table is encrypted with the same key: DynamoDB decrypts
  # its table key with kms:Decrypt on behalf of the principal reading or
  # writing the table (AWS KMS Developer Guide, "How Amazon DynamoDB uses AWS
  # KMS"), which this statement already allows.
  statement {
    sid       = "DataKey"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.data.arn]
  }

  # --- The function: its own logs and traces --------------------------------
  statement {
    sid       = "FunctionLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.function.arn}:*"]
  }

  # X-Ray has no resource-level permissions for these two actions, so "*".
  statement {
    sid       = "XRayWrite"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }

  # --- Network interfaces (the function in the VPC, and the MSK pollers) ----
  # Describe* have no resource-level permissions; "*" is required.
  statement {
    sid = "NetworkInterfacesDescribe"
    actions = [
      "ec2:DescribeNetworkInterfaces",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeSubnets",
      "ec2:DescribeVpcs",
    ]
    resources = ["*"]
  }

  # Lambda creates and deletes these interfaces itself; their IDs are not
  # known in advance, hence "*" (as in AWSLambdaVPCAccessExecutionRole and
  # AWSLambdaMSKExecutionRole).
  statement {
    sid = "NetworkInterfacesManage"
    actions = [
      "ec2:CreateNetworkInterface",
      "ec2:DeleteNetworkInterface",
      "ec2:AssignPrivateIpAddresses",
      "ec2:UnassignPrivateIpAddresses",
    ]
    resources = ["*"]
  }

  # --- The MSK event source mapping ------------------------------------------
  # Finding the cluster's brokers (AWSLambdaMSKExecutionRole; DescribeClusterV2
  # rather than DescribeCluster, which Lambda plans to drop from that policy).
  statement {
    sid       = "MskClusterDescribe"
    actions   = ["kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers"]
    resources = [var.msk_cluster_arn]
  }

  # IAM access control on the cluster (Lambda Developer Guide, MSK cluster
  # authentication, "IAM role-based authentication"): the same six actions,
  # each on the resource type it applies to.
  statement {
    sid       = "MskConnect"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeClusterDynamicConfiguration"]
    resources = [var.msk_cluster_arn]
  }

  statement {
    sid       = "MskReadTopic"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
    resources = [local.msk_topic_arn]
  }

  statement {
    sid       = "MskConsumerGroup"
    actions   = ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"]
    resources = [local.msk_group_arn]
  }

  # The on-failure destination (Lambda Developer Guide, "Capturing discarded
  # batches": s3:PutObject and s3:ListBucket; kms:GenerateDataKey above).
  statement {
    sid       = "OnFailureBucketWrite"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.failures.arn}/*"]
  }

  statement {
    sid       = "OnFailureBucketList"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.failures.arn]
  }
}

resource "aws_iam_role_policy" "function" {
  name   = "${var.function_name}-execution"
  role   = aws_iam_role.function.id
  policy = data.aws_iam_policy_document.function.json
}
