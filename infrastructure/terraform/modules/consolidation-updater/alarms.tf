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
  alarm_description   = "Messages handed back to Lambda in each of 3 consecutive 5-minute periods: a stuck partition (a poison without DLQ_URL, a setup problem, a day too big to finish). After maximum_retry_attempts the batch goes to the on-failure bucket."
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

resource "aws_cloudwatch_metric_alarm" "throttled" {
  alarm_name          = "${var.function_name}-throttled"
  alarm_description   = "DynamoDB throttling absorbed by retries and a lower concurrency in each of 3 consecutive 5-minute periods: the day takes longer (a ticket, not a page)."
  namespace           = var.metrics_namespace
  metric_name         = "ThrottledRequests"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.throttled_requests_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.ticket_actions
  tags                = var.tags
}
