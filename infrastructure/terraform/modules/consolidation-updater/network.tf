# How the function (private subnets, no public IP) and the event source
# mapping's pollers (in the MSK cluster's subnets) reach AWS services.
#
# use_nat_gateway = true: nothing here is created; the private route tables
# must already send 0.0.0.0/0 to a NAT gateway of yours.
#
# use_nat_gateway = false (default):
# - gateway endpoints (free) on the private route tables: DynamoDB for the
#   table, S3 for the mapping's on-failure destination (Lambda Developer
#   Guide: "You must deploy a VPC endpoint for your on-failure destination
#   service inside your Amazon MSK cluster VPC");
# - interface endpoints: SQS and SNS for the function; Lambda and STS for the
#   pollers, which assume the execution role through STS and invoke the
#   function through Lambda (Lambda Developer Guide, MSK network
#   configuration: PrivateLink endpoints for Lambda and STS, or a NAT);
# - a security group for the interface endpoints: HTTPS in from the
#   function's and the MSK cluster's security groups only.
#
# CloudWatch Logs needs no endpoint: Lambda delivers the function's stdout
# itself (the EMF metrics ride in it). Trace segments go over UDP to the
# X-Ray daemon Lambda runs beside the function (AWS_XRAY_DAEMON_ADDRESS); see
# docs/deployment.md for what AWS documents about X-Ray with MSK sources.

# endpoint_clients is a set so that a group shared by the function and the
# cluster gets one rule (a second identical rule is refused by EC2). Its
# elements are for_each keys, which Terraform must know at plan time: pass
# the IDs of existing groups (as phase-4 does), not those of groups created
# in the same apply, or the plan stops with "Invalid for_each argument".
locals {
  create_endpoints   = !var.use_nat_gateway
  gateway_services   = local.create_endpoints ? toset(var.gateway_endpoint_services) : toset([])
  interface_services = local.create_endpoints ? toset(var.interface_endpoint_services) : toset([])
  endpoint_clients   = local.create_endpoints ? toset(concat(var.security_group_ids, var.msk_security_group_ids)) : toset([])
}

resource "aws_vpc_endpoint" "gateway" {
  for_each = local.gateway_services

  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.private_route_table_ids

  tags = merge(var.tags, { Name = "${var.function_name}-${each.key}" })

  lifecycle {
    precondition {
      condition     = length(var.private_route_table_ids) > 0
      error_message = "private_route_table_ids is required for the gateway endpoints (or set use_nat_gateway = true)."
    }
  }
}

resource "aws_security_group" "endpoints" {
  count = local.create_endpoints && length(local.interface_services) > 0 ? 1 : 0

  name        = "${var.function_name}-endpoints"
  description = "Interface endpoints of ${var.function_name}: HTTPS from the function and the MSK pollers"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  for_each = length(aws_security_group.endpoints) > 0 ? local.endpoint_clients : toset([])

  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = each.key
}

resource "aws_vpc_endpoint" "interface" {
  for_each = local.interface_services

  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = coalesce(var.endpoint_subnet_ids, var.subnet_ids)
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true

  tags = merge(var.tags, { Name = "${var.function_name}-${each.key}" })
}
