# ---------------------------------------------------------------------------
# The function
# ---------------------------------------------------------------------------

variable "function_name" {
  description = "Name of the Lambda function (the seed's is poc-chargeback-dev-consolidation-updater)."
  type        = string

  # Lambda allows 64 characters, but the execution role is named
  # FUNCTION-execution and IAM role names stop at 64 (IAM User Guide, "IAM
  # and AWS STS quotas"), which leaves 54 for the function.
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,54}$", var.function_name))
    error_message = "function_name must be 1-54 letters, digits, hyphens or underscores (the IAM role FUNCTION-execution must fit in 64 characters)."
  }
}

variable "zip_path" {
  description = "Path of consolidation-updater.zip (the output of ./build.sh at the repository root): it holds the `bootstrap` executable."
  type        = string
}

variable "architecture" {
  description = "Instruction set of the bootstrap in the zip: arm64 (Graviton, ./build.sh's default) or x86_64 (./build.sh --arch x86_64)."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64, matching the zip."
  }
}

variable "memory_size" {
  description = "Memory in MB. 256 MB gives about 256/1769 of a vCPU, enough for the measured 22.9 us of client CPU per record (see docs/deployment.md)."
  type        = number
  default     = 256

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "memory_size must be between 128 and 10240 MB."
  }
}

variable "timeout" {
  description = "Function timeout in seconds. At most 14 minutes (840 s), the limit AWS documents for functions invoked by a Kafka event source mapping."
  type        = number
  default     = 840

  validation {
    condition     = var.timeout >= 30 && var.timeout <= 840
    error_message = "timeout must be between 30 and 840 seconds (14 minutes)."
  }
}

variable "reserved_concurrency" {
  description = "Reserved concurrent executions for the function (-1: no reservation). The mapping invokes at most one batch per Kafka partition at a time."
  type        = number
  default     = 10

  validation {
    condition     = var.reserved_concurrency == -1 || var.reserved_concurrency >= 1
    error_message = "reserved_concurrency must be -1 (unreserved) or at least 1 (0 would stop the function)."
  }
}

variable "live_version" {
  description = "Version the `live` alias points at. null: the version this apply published. Set it to an older version number to roll back (see docs/deployment.md)."
  type        = string
  default     = null

  validation {
    condition     = var.live_version == null || can(regex("^[0-9]+$", coalesce(var.live_version, "0")))
    error_message = "live_version must be a published version number such as \"7\"."
  }
}

# ---------------------------------------------------------------------------
# What the function reads (the Configuration table of README.md). AWS_REGION
# is not among them: Lambda sets it and refuses it as a user variable.
# ---------------------------------------------------------------------------

variable "table_name" {
  description = "DYNAMODB_TABLE_NAME: the existing chargebacks table."
  type        = string
  default     = "poc-chargeback-chargebacks-dev"
}

variable "date_index_name" {
  description = "CHARGEBACK_DATE_INDEX: the table's global secondary index on partition_date + created_at."
  type        = string
  default     = "partition_date-index"
}

variable "max_concurrency" {
  description = "MAX_CONCURRENCY: DynamoDB requests in flight per invocation (1-4096); the brake for latency and server errors. Throttling does not lower it: the write rate answers throttling (max_write_rate)."
  type        = number
  default     = 64

  validation {
    condition     = var.max_concurrency >= 1 && var.max_concurrency <= 4096
    error_message = "max_concurrency must be between 1 and 4096."
  }
}

variable "max_write_rate" {
  description = "MAX_WRITE_RATE: a ceiling on writes (records) per second per invocation, 1-1000000; below it the function still paces itself to the table's throttling. null: unset, no ceiling. Per invocation: N Kafka partitions processed at once write up to N times this (docs/deployment.md, \"Write rate\")."
  type        = number
  default     = null

  # A conditional, not ||: Terraform evaluates both sides of || (1.11 still
  # does), and comparing null with a number is an error.
  validation {
    condition     = var.max_write_rate == null ? true : var.max_write_rate >= 1 && var.max_write_rate <= 1000000 && floor(var.max_write_rate) == var.max_write_rate
    error_message = "max_write_rate must be null (no ceiling) or a whole number of writes per second from 1 to 1000000."
  }
}

variable "write_mode" {
  description = "WRITE_MODE: batch-statement (PartiQL BatchExecuteStatement, 25 updates a request) or update-item."
  type        = string
  default     = "batch-statement"

  validation {
    condition     = contains(["batch-statement", "update-item"], var.write_mode)
    error_message = "write_mode must be batch-statement or update-item."
  }
}

variable "metrics_namespace" {
  description = "METRICS_NAMESPACE: CloudWatch namespace of the function's EMF metrics (and of the alarms on them)."
  type        = string
  default     = "POC-Chargeback/ConsolidationUpdater"

  validation {
    condition     = length(var.metrics_namespace) >= 1 && length(var.metrics_namespace) <= 255 && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be 1-255 characters and must not start with AWS/."
  }
}

variable "log_level" {
  description = "LOG_LEVEL, and the Lambda application log level that filters the JSON lines: DEBUG, INFO, WARN or ERROR."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARN", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARN or ERROR."
  }
}

variable "deadline_safety_margin_ms" {
  description = "DEADLINE_SAFETY_MARGIN_MS: new work stops this long before the invocation's deadline (1000-600000, and less than the timeout)."
  type        = number
  default     = 10000

  validation {
    condition     = var.deadline_safety_margin_ms >= 1000 && var.deadline_safety_margin_ms <= 600000
    error_message = "deadline_safety_margin_ms must be between 1000 and 600000."
  }
}

variable "progress_log_interval_seconds" {
  description = "PROGRESS_LOG_INTERVAL_SECONDS: a fan-out logs its progress this often (1-900)."
  type        = number
  default     = 10

  validation {
    condition     = var.progress_log_interval_seconds >= 1 && var.progress_log_interval_seconds <= 900
    error_message = "progress_log_interval_seconds must be between 1 and 900."
  }
}

# ---------------------------------------------------------------------------
# The run ledger (ledger.tf)
# ---------------------------------------------------------------------------

variable "run_ledger_enabled" {
  description = "Create the run ledger table and set LEDGER_TABLE_NAME and LEDGER_TTL_DAYS. false: no table, no IAM statement for it, neither variable set (the function runs without a ledger). Turning it off removes the table: set ledger_deletion_protection = false and apply first."
  type        = bool
  default     = true
}

variable "ledger_ttl_days" {
  description = "LEDGER_TTL_DAYS: a ledger item expires (DynamoDB TTL on expires_at) this many days after it is written, 1-3650. Keep it above the topic's retention (7 days by default): a replayed event whose item has expired costs a full pass over its day again."
  type        = number
  default     = 35

  validation {
    condition     = var.ledger_ttl_days >= 1 && var.ledger_ttl_days <= 3650 && floor(var.ledger_ttl_days) == var.ledger_ttl_days
    error_message = "ledger_ttl_days must be a whole number of days from 1 to 3650."
  }
}

variable "ledger_table_name" {
  description = "Name of the run ledger table (null: FUNCTION-run-ledger). Changing it replaces the table, and the new one starts empty."
  type        = string
  default     = null

  validation {
    condition     = var.ledger_table_name == null || can(regex("^[A-Za-z0-9_.-]{3,255}$", coalesce(var.ledger_table_name, "xxx")))
    error_message = "ledger_table_name must be 3-255 letters, digits, underscores, hyphens or dots (DynamoDB's table name rules)."
  }
}

variable "ledger_deletion_protection" {
  description = "Deletion protection of the run ledger table: DynamoDB refuses to delete it (terraform destroy, run_ledger_enabled = false, a new name) until an apply sets this to false."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the function's log group, in days (one of the values CloudWatch Logs accepts)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 365, ... 3653)."
  }
}

# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------

variable "vpc_id" {
  description = "The VPC of the function and of the MSK cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the function's network interfaces (and for the interface endpoints unless endpoint_subnet_ids is set)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1
    error_message = "subnet_ids needs at least one subnet (two or more in different AZs for availability)."
  }
}

variable "security_group_ids" {
  description = "Security groups of the function. They must allow outbound 443 (to the endpoints or the NAT) and nothing inbound."
  type        = list(string)

  validation {
    condition     = length(var.security_group_ids) >= 1
    error_message = "security_group_ids needs at least one security group."
  }
}

variable "msk_security_group_ids" {
  description = "Security groups of the MSK cluster. The event source mapping's pollers run in the cluster's subnets with these groups, and reach the Lambda, STS and on-failure-destination endpoints from them."
  type        = list(string)
  default     = []
}

variable "private_route_table_ids" {
  description = "Route tables of the private subnets (the function's and the MSK cluster's) that get the DynamoDB and S3 gateway endpoints."
  type        = list(string)
  default     = []
}

variable "use_nat_gateway" {
  description = "true: the private subnets already route to AWS services through a NAT gateway of yours, and no endpoint is created. false: the module creates the gateway and interface endpoints below."
  type        = bool
  default     = false
}

variable "gateway_endpoint_services" {
  description = "Gateway endpoints created when use_nat_gateway is false: DynamoDB (the table) and S3 (the mapping's on-failure destination). Remove one the VPC already has."
  type        = list(string)
  default     = ["dynamodb", "s3"]

  validation {
    condition     = alltrue([for s in var.gateway_endpoint_services : contains(["dynamodb", "s3"], s)])
    error_message = "gateway_endpoint_services may contain only dynamodb and s3."
  }
}

variable "interface_endpoint_services" {
  description = "Interface endpoints created when use_nat_gateway is false: SQS (dead letters) and SNS (failure summaries) for the function; Lambda and STS for the MSK event source mapping's pollers, which AWS documents as needed in private subnets. Remove one the VPC already has (two endpoints with private DNS for one service conflict)."
  type        = list(string)
  default     = ["sqs", "sns", "lambda", "sts"]
}

variable "endpoint_subnet_ids" {
  description = "Subnets of the interface endpoints, one per AZ (null: subnet_ids). Each endpoint is billed per AZ-hour."
  type        = list(string)
  default     = null
}

# ---------------------------------------------------------------------------
# The MSK event source mapping
# ---------------------------------------------------------------------------

variable "msk_cluster_arn" {
  description = "ARN of the existing MSK cluster (arn:aws:kafka:REGION:ACCOUNT:cluster/NAME/UUID), with IAM access control on."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kafka:[a-z0-9-]+:[0-9]{12}:cluster/[^/]+/[^/]+$", var.msk_cluster_arn))
    error_message = "msk_cluster_arn must look like arn:aws:kafka:REGION:ACCOUNT:cluster/NAME/UUID."
  }
}

variable "topic" {
  description = "The Kafka topic the Glue job publishes to."
  type        = string
  default     = "chargeback-consolidation-events"
}

variable "consumer_group_id" {
  description = "Explicit Kafka consumer group of the mapping (null: the function name). Changing it replaces the mapping and starts a new group at starting_position."
  type        = string
  default     = null
}

variable "starting_position" {
  description = "Where a consumer group without committed offsets starts: TRIM_HORIZON (default: nothing published before the mapping became ready is skipped; the stamping is idempotent so a replay is safe) or LATEST."
  type        = string
  default     = "TRIM_HORIZON"

  validation {
    condition     = contains(["TRIM_HORIZON", "LATEST"], var.starting_position)
    error_message = "starting_position must be TRIM_HORIZON or LATEST."
  }
}

variable "esm_enabled" {
  description = "Whether the event source mapping polls."
  type        = bool
  default     = true
}

variable "minimum_pollers" {
  description = "Provisioned mode: minimum event pollers (1-200). Provisioned mode is what enables partial batch responses and the retry controls for Kafka; each poller is billed (see docs/deployment.md)."
  type        = number
  default     = 1

  validation {
    condition     = var.minimum_pollers >= 1 && var.minimum_pollers <= 200
    error_message = "minimum_pollers must be between 1 and 200."
  }
}

variable "maximum_pollers" {
  description = "Provisioned mode: maximum event pollers (1-2000, at least minimum_pollers)."
  type        = number
  default     = 2

  validation {
    condition     = var.maximum_pollers >= 1 && var.maximum_pollers <= 2000
    error_message = "maximum_pollers must be between 1 and 2000."
  }
}

variable "maximum_retry_attempts" {
  description = "Retries of a record the function hands back (batchItemFailures) or of a failed batch before it goes to the S3 on-failure destination (0-10000; -1 is infinite, which Lambda caps at 10 when an on-failure destination is set)."
  type        = number
  default     = 10

  validation {
    condition     = var.maximum_retry_attempts >= 0 && var.maximum_retry_attempts <= 10000
    error_message = "maximum_retry_attempts must be explicit: between 0 and 10000."
  }
}

variable "maximum_record_age_in_seconds" {
  description = "Records older than this go to the S3 on-failure destination instead of the function (60-604800). The default is 7 days, MSK's default topic retention."
  type        = number
  default     = 604800

  validation {
    condition     = var.maximum_record_age_in_seconds >= 60 && var.maximum_record_age_in_seconds <= 604800
    error_message = "maximum_record_age_in_seconds must be explicit: between 60 and 604800."
  }
}

# ---------------------------------------------------------------------------
# Failure records
# ---------------------------------------------------------------------------

variable "dlq_name" {
  description = "Name of the SQS dead-letter queue for poison messages (null: FUNCTION-dlq)."
  type        = string
  default     = null
}

variable "failure_topic_name" {
  description = "Name of the SNS topic for the failure summaries (null: FUNCTION-failures)."
  type        = string
  default     = null
}

variable "failure_bucket_name" {
  description = "Name of the S3 bucket the mapping writes discarded batches to (null: FUNCTION-failures-ACCOUNT, with FUNCTION lower-cased, underscores as hyphens, cut to 41 characters so the name fits S3's 63)."
  type        = string
  default     = null
}

variable "failure_record_retention_days" {
  description = "Days an on-failure record stays in the bucket (older versions expire 30 days after being replaced)."
  type        = number
  default     = 90

  validation {
    condition     = var.failure_record_retention_days >= 14
    error_message = "failure_record_retention_days must be at least 14, so a record outlives the dead-letter queue's retention."
  }
}

# ---------------------------------------------------------------------------
# Alarms
# ---------------------------------------------------------------------------

variable "alarm_topic_arn" {
  description = "SNS topic the paging alarms notify (docs/operations.md, Alarms). null: alarms are created without actions."
  type        = string
  default     = null
}

variable "ticket_topic_arn" {
  description = "SNS topic of the alarms that can wait (the share of throttled writes). null: alarm_topic_arn."
  type        = string
  default     = null
}

variable "offset_lag_threshold" {
  description = "Consumer lag alarm: OffsetLag Maximum above this in each of 6 consecutive 5-minute periods. 0 suits this topic's traffic (docs/operations.md); raise it if the topic gets busier."
  type        = number
  default     = 0
}

variable "throttled_share_threshold" {
  description = "Throttling alarm (a ticket): the share of writes DynamoDB refused for capacity, ThrottledWrites / (ChargebacksUpdated + ThrottledWrites), above this in each of 3 consecutive 5-minute periods (docs/operations.md, Alarms)."
  type        = number
  default     = 0.5

  validation {
    condition     = var.throttled_share_threshold > 0 && var.throttled_share_threshold < 1
    error_message = "throttled_share_threshold is a share of writes: greater than 0 and less than 1."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes them (the root's provider default_tags apply as well)."
  type        = map(string)
  default     = {}
}
