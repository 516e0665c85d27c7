# The alarms of docs/operations.md ("Alarms"), with the same names,
# statistics, periods and thresholds. The function writes every counter on
# every invocation (zeros included), so missing data means no invocation and
# is not breaching.

resource "aws_cloudwatch_metric_alarm" "errors" {
  alarm_name          = "${var.function_name}-errors"
  alarm_description   = "An invocation failed as a whole (a payload that is not a Kafka event, a crash, a timeout, a bad setting); Lambda retries the whole batch."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.page_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "dead_lettered" {
  alarm_name          = "${var.function_name}-dead-lettered"
  alarm_description   = "A message was set aside in the dead-letter queue and will not be applied until someone acts (consolidation-updater redrive)."
  namespace           = var.metrics_namespace
  metric_name         = "MessagesDeadLettered"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.page_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "hand_backs_persist" {
  alarm_name          = "${var.function_name}-hand-backs-persist"
  alarm_description   = "Messages handed back to Lambda in each of 3 consecutive 5-minute periods: a stuck partition (a poison without DLQ_URL, a setup problem, stamping stalled: no write admitted by DynamoDB for 60 s). After maximum_retry_attempts the batch goes to the on-failure bucket."
  namespace           = var.metrics_namespace
  metric_name         = "MessagesRetried"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.page_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  alarm_name          = "${var.function_name}-dlq-not-empty"
  alarm_description   = "The dead-letter queue holds messages; stays in alarm until it is redriven or cleared."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.page_actions
  tags                = var.tags
}

# OffsetLag is a function-level metric (AWS/Lambda, dimension FunctionName):
# the lag, in records, between the topic's last record and the last one the
# function's consumer group processed, measured at the topic level.
resource "aws_cloudwatch_metric_alarm" "offset_lag" {
  alarm_name          = "${var.function_name}-offset-lag"
  alarm_description   = "Events have waited in Kafka for 30 minutes: the mapping is not polling, or the function cannot keep up."
  namespace           = "AWS/Lambda"
  metric_name         = "OffsetLag"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 6
  datapoints_to_alarm = 6
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.offset_lag_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.page_actions
  tags                = var.tags
}

# Throttling is how the function finds the table's write rate (README.md,
# "Pacing"): some refused writes are expected and cost nothing but a retry,
# so their count pages nobody. This watches their share of the writes, and
# opens a ticket only when more writes are refused than admitted for 15
# minutes: the pacing cannot settle, or the table's capacity is far below
# what the day needs. A run that stops making progress is handed back and
# pages through hand_backs_persist. IF: a period with invocations but no
# write (a redelivery that finds everything stamped) is a share of 0, not a
# division by zero.
resource "aws_cloudwatch_metric_alarm" "throttled" {
  alarm_name          = "${var.function_name}-throttled"
  alarm_description   = "More than half of the writes refused by DynamoDB for capacity (ThrottledWrites / (ChargebacksUpdated + ThrottledWrites)) in each of 3 consecutive 5-minute periods: the pacing cannot settle on a rate, or the table's capacity is far below the day's needs. Work goes on, slowly (a ticket, not a page); throttled_by_reason in the logs says which limit."
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.throttled_share_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.ticket_actions
  tags                = var.tags

  metric_query {
    id          = "share"
    expression  = "IF(written + throttled > 0, throttled / (written + throttled), 0)"
    label       = "Share of writes refused for capacity"
    return_data = true
  }

  metric_query {
    id = "throttled"

    metric {
      namespace   = var.metrics_namespace
      metric_name = "ThrottledWrites"
      dimensions  = { FunctionName = aws_lambda_function.this.function_name }
      stat        = "Sum"
      period      = 300
    }
  }

  metric_query {
    id = "written"

    metric {
      namespace   = var.metrics_namespace
      metric_name = "ChargebacksUpdated"
      dimensions  = { FunctionName = aws_lambda_function.this.function_name }
      stat        = "Sum"
      period      = 300
    }
  }
}
