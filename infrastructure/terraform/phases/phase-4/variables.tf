variable "region" {
  description = "AWS region (the seed's default is sa-east-1)."
  type        = string
  default     = "sa-east-1"
}

variable "tags" {
  description = "Tags on every resource (provider default_tags)."
  type        = map(string)
  default = {
    Project     = "poc-chargeback"
    Environment = "dev"
    Component   = "consolidation-updater"
  }
}

variable "function_name" {
  description = "Name of the Lambda function."
  type        = string
  default     = "poc-chargeback-dev-consolidation-updater"
}

variable "zip_path" {
  description = "consolidation-updater.zip, built by ./build.sh at the repository root."
  type        = string
  default     = "../../../../consolidation-updater.zip"
}

variable "architecture" {
  description = "arm64 (./build.sh's default) or x86_64 (./build.sh --arch x86_64); must match the zip."
  type        = string
  default     = "arm64"
}

variable "memory_size" {
  description = "Memory in MB."
  type        = number
  default     = 256
}

variable "timeout" {
  description = "Timeout in seconds, at most 840 (14 minutes) for a Kafka event source."
  type        = number
  default     = 840
}

variable "reserved_concurrency" {
  description = "Reserved concurrent executions (-1: none)."
  type        = number
  default     = 10
}

variable "live_version" {
  description = "Pin the `live` alias to this published version (rollback); null follows each apply's new version."
  type        = string
  default     = null
}

variable "table_name" {
  description = "The existing chargebacks table."
  type        = string
  default     = "poc-chargeback-chargebacks-dev"
}

variable "date_index_name" {
  description = "The table's partition_date + created_at index."
  type        = string
  default     = "partition_date-index"
}

variable "write_mode" {
  description = "WRITE_MODE: batch-statement or update-item."
  type        = string
  default     = "batch-statement"
}

variable "max_write_rate" {
  description = "MAX_WRITE_RATE: a ceiling on writes per second per invocation, to leave the table room for its other writers (null: none; the table's throttling alone paces the writes). Per invocation: busy Kafka partitions add up."
  type        = number
  default     = null
}

variable "log_level" {
  description = "LOG_LEVEL: DEBUG, INFO, WARN or ERROR."
  type        = string
  default     = "INFO"
}

variable "run_ledger_enabled" {
  description = "The run ledger table (LEDGER_TABLE_NAME): a completed run delivered again costs one read instead of a pass over its day. false: no ledger."
  type        = bool
  default     = true
}

variable "ledger_ttl_days" {
  description = "LEDGER_TTL_DAYS: days a ledger item lives (1-3650); keep it above the topic's retention."
  type        = number
  default     = 35
}

variable "ledger_deletion_protection" {
  description = "Deletion protection of the ledger table; set false and apply before run_ledger_enabled = false or a destroy."
  type        = bool
  default     = true
}

variable "vpc_id" {
  description = "The existing VPC of the MSK cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Existing private subnets for the function (two or more AZs)."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Existing security groups for the function (outbound 443)."
  type        = list(string)
}

variable "msk_security_group_ids" {
  description = "Security groups of the MSK cluster (allowed to reach the interface endpoints)."
  type        = list(string)
  default     = []
}

variable "private_route_table_ids" {
  description = "Route tables of the private subnets, for the DynamoDB and S3 gateway endpoints."
  type        = list(string)
  default     = []
}

variable "use_nat_gateway" {
  description = "true if the private subnets already reach AWS services through a NAT gateway (no endpoints are created)."
  type        = bool
  default     = false
}

variable "msk_cluster_arn" {
  description = "ARN of the existing MSK cluster (IAM access control on)."
  type        = string
}

variable "topic" {
  description = "Kafka topic of the consolidation events."
  type        = string
  default     = "chargeback-consolidation-events"
}

variable "consumer_group_id" {
  description = "Consumer group of the mapping (null: the function name)."
  type        = string
  default     = null
}

variable "starting_position" {
  description = "TRIM_HORIZON or LATEST, for a consumer group without committed offsets."
  type        = string
  default     = "TRIM_HORIZON"
}

variable "minimum_pollers" {
  description = "Provisioned mode: minimum event pollers."
  type        = number
  default     = 1
}

variable "maximum_pollers" {
  description = "Provisioned mode: maximum event pollers."
  type        = number
  default     = 2
}

variable "alarm_topic_arn" {
  description = "SNS topic for the paging alarms (null: no action)."
  type        = string
  default     = null
}

variable "ticket_topic_arn" {
  description = "SNS topic for the alarms that can wait (null: alarm_topic_arn)."
  type        = string
  default     = null
}
