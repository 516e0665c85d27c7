"""Offline checks of the phase-4 Terraform (module + example root).

Every .tf file under infrastructure/terraform is parsed with python-hcl2, and
the tests compare what is declared with what AWS documents: the execution
role's exact (action, resource) pairs, the MSK event source mapping, the
function, the dead-letter queue, the log group, the run ledger table and the
alarms of docs/operations.md. Nothing here needs the network, the AWS provider or
credentials. Run: pytest infrastructure/tests (scripts/check-infra.sh does).
"""

from __future__ import annotations

import json
import operator
import re
from collections import Counter
from pathlib import Path

import hcl2
import pytest

REPO = Path(__file__).resolve().parents[2]
TF_ROOT = REPO / "infrastructure" / "terraform"
MODULE_DIR = TF_ROOT / "modules" / "consolidation-updater"
PHASE4_DIR = TF_ROOT / "phases" / "phase-4"


# ---------------------------------------------------------------------------
# Parsing helpers
# ---------------------------------------------------------------------------


def unquote(value):
    """python-hcl2 8 keeps the quotes of string literals: '"x"' -> 'x'."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def ref(value):
    """A value as written: a bare expression '${a.b}' -> 'a.b'; a quoted
    template keeps its interpolations: '"${a.b}/*"' -> '${a.b}/*'."""
    value = unquote(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{(.*)\}", value, re.S)
        if m and "${" not in m.group(1):
            return m.group(1).strip()
    return value


def parse_dir(directory: Path) -> dict:
    """Merges the blocks of every .tf file of one directory (one module)."""
    merged: dict[str, list] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as f:
            doc = hcl2.load(f)
        for key, blocks in doc.items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def labelled(module: dict, kind: str) -> dict:
    """{(type, name): body} for resource/data; {name: body} for variable/output/module."""
    out = {}
    for block in module.get(kind, []):
        for first, rest in block.items():
            if kind in ("resource", "data"):
                for second, body in rest.items():
                    out[(unquote(first), unquote(second))] = body
            else:
                out[unquote(first)] = rest
    return out


def locals_of(module: dict) -> dict:
    out = {}
    for block in module.get("locals", []):
        for k, v in block.items():
            if not k.startswith("__"):
                out[k] = v
    return out


def one(block_list):
    """Nested blocks come as a list of dicts; most appear exactly once."""
    assert isinstance(block_list, list) and len(block_list) == 1, block_list
    return block_list[0]


def default_of(variables: dict, name: str):
    value = variables[name]["default"]
    if isinstance(value, list):
        return [unquote(v) for v in value]
    return unquote(value)


MODULE = parse_dir(MODULE_DIR)
ROOT = parse_dir(PHASE4_DIR)
RESOURCES = labelled(MODULE, "resource")
DATA = labelled(MODULE, "data")
VARIABLES = labelled(MODULE, "variable")
LOCALS = locals_of(MODULE)


def resource(rtype: str, name: str) -> dict:
    assert (rtype, name) in RESOURCES, f"missing resource {rtype}.{name}"
    return RESOURCES[(rtype, name)]


def resources_of(rtype: str) -> dict:
    return {name: body for (t, name), body in RESOURCES.items() if t == rtype}


# A tiny evaluator for the validation conditions of numeric variables, so the
# tests check what Terraform would accept rather than how the text looks.
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq, "!=": operator.ne}


def accepts(variable: str, value) -> bool:
    """Comparisons with numbers joined by && and ||; an optional
    variable's `var.X == null ? true : ...` guard (None is the null); and
    `floor(var.X) == var.X`, a whole number."""
    conditions = [ref(v["condition"]) for v in VARIABLES[variable].get("validation", [])]
    assert conditions, f"variable {variable} has no validation"
    for condition in conditions:
        guard = re.fullmatch(rf"var\.{variable} == null \? true : (.+)", condition, re.S)
        if guard:
            if value is None:
                continue
            condition = guard.group(1)
        assert value is not None, f"{variable} has no null guard, so null is refused"
        for disjunction in condition.split("&&"):
            alternatives = disjunction.split("||")
            ok = False
            for alt in alternatives:
                if re.fullmatch(rf"\s*floor\(var\.{variable}\) == var\.{variable}\s*", alt):
                    ok = ok or float(value).is_integer()
                    continue
                m = re.fullmatch(rf"\s*var\.{variable}\s*(<=|>=|<|>|==|!=)\s*(-?\d+(?:\.\d+)?)\s*", alt)
                assert m, f"cannot evaluate {alt!r} of {variable}"
                ok = ok or _OPS[m.group(1)](value, float(m.group(2)))
            if not ok:
                return False
    return True


# ---------------------------------------------------------------------------
# Files and provider pin
# ---------------------------------------------------------------------------


def test_every_tf_file_parses():
    files = sorted(TF_ROOT.rglob("*.tf"))
    assert len(files) >= 12, files
    for path in files:
        with path.open() as f:
            assert isinstance(hcl2.load(f), dict), path


@pytest.mark.parametrize("module", [MODULE, ROOT], ids=["module", "phase-4"])
def test_aws_provider_is_pinned_with_a_pessimistic_constraint(module):
    terraform = [b for b in module["terraform"] if "required_providers" in b]
    assert len(terraform) == 1
    block = terraform[0]
    assert unquote(block["required_version"]).startswith(">= 1.")
    aws = one(block["required_providers"])["aws"]
    assert unquote(aws["source"]) == "hashicorp/aws"
    version = unquote(aws["version"])
    # ~> 6.0: any 6.x (each has logging_config and provisioned_poller_config), never 7.
    assert re.fullmatch(r"~> 6\.\d+", version), version


def test_phase4_root_calls_the_module_with_the_build_output():
    modules = labelled(ROOT, "module")
    call = modules["consolidation_updater"]
    source = unquote(call["source"])
    assert (PHASE4_DIR / source).resolve() == MODULE_DIR.resolve()
    variables = labelled(ROOT, "variable")
    zip_default = unquote(variables["zip_path"]["default"])
    # ./build.sh writes consolidation-updater.zip at the repository root.
    assert (PHASE4_DIR / zip_default).resolve() == REPO / "consolidation-updater.zip"
    for required in ("vpc_id", "subnet_ids", "security_group_ids", "msk_cluster_arn"):
        assert "default" not in variables[required], required
        assert ref(call[required]) == f"var.{required}"
    assert unquote(variables["region"]["default"]) == "sa-east-1"
    assert (PHASE4_DIR / "terraform.tfvars.example").is_file()


# ---------------------------------------------------------------------------
# The execution role: exactly the documented (action, resource) pairs
# ---------------------------------------------------------------------------

# Written from AWS's documentation, group by group. Resources are the
# Terraform references the policy must use (their values are checked below).
# A dynamic statement's `statement.value` stands for each element of its
# for_each, and is written as that expression.
LEDGER_ARNS = "aws_dynamodb_table.ledger[*].arn"
EXPECTED_IAM = {
    # The function's DynamoDB calls (README.md, "Table contract"): DescribeTable
    # at cold start, UpdateItem or PartiQL UPDATE, Scan when the index is
    # missing. PartiQL UPDATE needs dynamodb:PartiQLUpdate on the table
    # (DynamoDB Developer Guide, "IAM security policies with PartiQL for
    # DynamoDB", docs.aws.amazon.com/amazondynamodb/latest/developerguide/ql-iam.html).
    ("dynamodb:DescribeTable", "local.table_arn"),
    ("dynamodb:Scan", "local.table_arn"),
    ("dynamodb:UpdateItem", "local.table_arn"),
    ("dynamodb:PartiQLUpdate", "local.table_arn"),
    # Query with IndexName is authorized on table/NAME/index/INDEX.
    ("dynamodb:Query", "local.index_arn"),
    # The run ledger (ledger.tf): the four item-level actions of its contract,
    # on the ledger table's ARN and nothing else (it has no index). The
    # statement is a dynamic block over aws_dynamodb_table.ledger[*].arn: one
    # statement per ledger table, none when run_ledger_enabled is false.
    ("dynamodb:GetItem", LEDGER_ARNS),
    ("dynamodb:Query", LEDGER_ARNS),
    ("dynamodb:PutItem", LEDGER_ARNS),
    ("dynamodb:UpdateItem", LEDGER_ARNS),
    # Dead letters (SendMessage) and the queue's size limit read at cold start
    # (GetQueueAttributes, README.md "Dead-letter body").
    ("sqs:SendMessage", "aws_sqs_queue.dlq.arn"),
    ("sqs:GetQueueAttributes", "aws_sqs_queue.dlq.arn"),
    ("sns:Publish", "aws_sns_topic.failures.arn"),
    # Customer managed key of the queue, the topic, the bucket and the ledger
    # table: SQS and SNS need kms:GenerateDataKey + kms:Decrypt, an S3
    # destination kms:GenerateDataKey (Lambda Developer Guide, "Capturing
    # discarded batches for Amazon MSK and self-managed Apache Kafka event
    # sources", docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure.html); a
    # DynamoDB table kms:Decrypt of its table key, which DynamoDB calls on
    # behalf of the principal accessing the table (AWS KMS Developer Guide,
    # "How Amazon DynamoDB uses AWS KMS", Decrypt).
    ("kms:GenerateDataKey", "aws_kms_key.data.arn"),
    ("kms:Decrypt", "aws_kms_key.data.arn"),
    # Logs: logs:CreateLogStream + logs:PutLogEvents (AWSLambdaVPCAccessExecutionRole
    # and AWSLambdaMSKExecutionRole; logs:CreateLogGroup is not needed, the
    # log group is created by Terraform).
    ("logs:CreateLogStream", "${aws_cloudwatch_log_group.function.arn}:*"),
    ("logs:PutLogEvents", "${aws_cloudwatch_log_group.function.arn}:*"),
    # Active tracing: the trace upload actions of AWSXRayDaemonWriteAccess
    # (Lambda Developer Guide, "Visualize Lambda function invocations using
    # AWS X-Ray"); X-Ray has no resource-level permission for them.
    ("xray:PutTraceSegments", "*"),
    ("xray:PutTelemetryRecords", "*"),
    # Network interfaces: the union of AWSLambdaMSKExecutionRole v2
    # (docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSLambdaMSKExecutionRole.html:
    # CreateNetworkInterface, DescribeNetworkInterfaces, DescribeVpcs,
    # DeleteNetworkInterface, DescribeSubnets, DescribeSecurityGroups) and
    # AWSLambdaVPCAccessExecutionRole v3 (.../AWSLambdaVPCAccessExecutionRole.html:
    # adds AssignPrivateIpAddresses, UnassignPrivateIpAddresses). Both grant
    # them on "*".
    ("ec2:CreateNetworkInterface", "*"),
    ("ec2:DeleteNetworkInterface", "*"),
    ("ec2:DescribeNetworkInterfaces", "*"),
    ("ec2:DescribeSubnets", "*"),
    ("ec2:DescribeVpcs", "*"),
    ("ec2:DescribeSecurityGroups", "*"),
    ("ec2:AssignPrivateIpAddresses", "*"),
    ("ec2:UnassignPrivateIpAddresses", "*"),
    # The mapping finds the brokers: kafka:DescribeClusterV2 and
    # kafka:GetBootstrapBrokers (AWSLambdaMSKExecutionRole; Lambda Developer
    # Guide, "Configuring Lambda permissions for Amazon MSK event source
    # mappings": DescribeClusterV2 rather than DescribeCluster), scoped to the
    # cluster.
    ("kafka:DescribeClusterV2", "var.msk_cluster_arn"),
    ("kafka:GetBootstrapBrokers", "var.msk_cluster_arn"),
    # IAM access control (Lambda Developer Guide, "Configuring Amazon MSK
    # cluster authentication methods", IAM role-based authentication: Connect,
    # DescribeGroup, AlterGroup, DescribeTopic, ReadData,
    # DescribeClusterDynamicConfiguration on the cluster, topic and group
    # ARNs), each on its resource type (Amazon MSK Developer Guide,
    # "Semantics of IAM authorization policy actions and resources").
    ("kafka-cluster:Connect", "var.msk_cluster_arn"),
    ("kafka-cluster:DescribeClusterDynamicConfiguration", "var.msk_cluster_arn"),
    ("kafka-cluster:DescribeTopic", "local.msk_topic_arn"),
    ("kafka-cluster:ReadData", "local.msk_topic_arn"),
    ("kafka-cluster:DescribeGroup", "local.msk_group_arn"),
    ("kafka-cluster:AlterGroup", "local.msk_group_arn"),
    # The S3 on-failure destination: s3:PutObject and s3:ListBucket
    # (kafka-on-failure.html, "For an S3 destination").
    ("s3:PutObject", "${aws_s3_bucket.failures.arn}/*"),
    ("s3:ListBucket", "aws_s3_bucket.failures.arn"),
}

# Where AWS requires "*" (no resource-level permission, or resources Lambda
# creates at run time).
STAR_ALLOWED = {a for a, r in EXPECTED_IAM if r == "*"}


def policy_statements(document: dict) -> list[dict]:
    """The document's statements, static and dynamic. A dynamic statement
    keeps its for_each (None for a static one), and its `statement.value`
    resources are written as that for_each expression."""
    blocks = [(st, None) for st in document.get("statement", [])]
    for dynamic in document.get("dynamic", []):
        for label, body in dynamic.items():
            if label.startswith("__"):
                continue
            assert unquote(label) == "statement", f"a dynamic block other than statement: {label}"
            blocks.append((one(body["content"]), ref(body["for_each"])))
    statements = []
    for st, for_each in blocks:
        assert "not_actions" not in st and "not_resources" not in st, st
        resources = [ref(r) for r in st.get("resources", [])]
        if for_each is not None:
            resources = [for_each if r == "statement.value" else r for r in resources]
        statements.append(
            {
                "sid": unquote(st.get("sid")),
                "effect": unquote(st.get("effect", '"Allow"')),
                "actions": [unquote(a) for a in st.get("actions", [])],
                "resources": resources,
                "conditions": st.get("condition", []),
                "for_each": for_each,
            }
        )
    return statements


def allow_pairs(document: dict) -> Counter:
    pairs = Counter()
    for st in policy_statements(document):
        assert st["effect"] == "Allow", st
        for action in st["actions"]:
            for res in st["resources"]:
                pairs[(action, res)] += 1
    return pairs


def test_execution_role_grants_exactly_the_documented_pairs():
    pairs = allow_pairs(DATA[("aws_iam_policy_document", "function")])
    duplicated = {p: n for p, n in pairs.items() if n > 1}
    assert not duplicated, f"granted twice: {duplicated}"
    granted = set(pairs)
    assert granted - EXPECTED_IAM == set(), f"not documented as needed: {sorted(granted - EXPECTED_IAM)}"
    assert EXPECTED_IAM - granted == set(), f"documented but missing: {sorted(EXPECTED_IAM - granted)}"


def test_execution_role_has_no_wildcard_action_and_star_only_where_required():
    statements = policy_statements(DATA[("aws_iam_policy_document", "function")])
    sids = [st["sid"] for st in statements]
    assert all(sids) and len(sids) == len(set(sids)), f"one sid per purpose, no duplicate: {sids}"
    for st in statements:
        for action in st["actions"]:
            assert "*" not in action, f"wildcard action {action} in {st['sid']}"
        if "*" in st["resources"]:
            assert set(st["actions"]) <= STAR_ALLOWED, st
            assert st["resources"] == ["*"], st


def test_the_role_carries_only_this_policy():
    role_policies = resources_of("aws_iam_role_policy")
    assert list(role_policies) == ["function"]
    assert ref(role_policies["function"]["policy"]) == "data.aws_iam_policy_document.function.json"
    assert ref(role_policies["function"]["role"]) == "aws_iam_role.function.id"
    # No AWS managed policy (AWSLambdaMSKExecutionRole grants kafka/ec2/logs on "*").
    assert resources_of("aws_iam_role_policy_attachment") == {}
    assert "managed_policy_arns" not in resource("aws_iam_role", "function")
    trust = policy_statements(DATA[("aws_iam_policy_document", "assume_role")])
    assert [(st["actions"]) for st in trust] == [["sts:AssumeRole"]]
    principals = one(DATA[("aws_iam_policy_document", "assume_role")]["statement"])["principals"]
    assert [unquote(i) for i in one(principals)["identifiers"]] == ["lambda.amazonaws.com"]


def test_resource_arns_have_the_documented_shapes():
    # table/NAME and table/NAME/index/INDEX (DynamoDB resource types).
    assert ref(LOCALS["table_arn"]) == (
        "arn:${local.partition}:dynamodb:${local.region}:${local.account_id}:table/${var.table_name}"
    )
    assert ref(LOCALS["index_arn"]) == "${local.table_arn}/index/${var.date_index_name}"
    # cluster/NAME/UUID -> topic/NAME/UUID/TOPIC and group/NAME/UUID/GROUP.
    assert ref(LOCALS["msk_topic_arn"]) == '${replace(var.msk_cluster_arn, ":cluster/", ":topic/")}/${var.topic}'
    assert ref(LOCALS["msk_group_arn"]) == (
        '${replace(var.msk_cluster_arn, ":cluster/", ":group/")}/${local.consumer_group_id}'
    )
    assert ref(LOCALS["consumer_group_id"]) == "coalesce(var.consumer_group_id, var.function_name)"
    cluster = "arn:aws:kafka:sa-east-1:123456789012:cluster/poc/0123-abcd-1"
    assert cluster.replace(":cluster/", ":topic/") + "/t" == "arn:aws:kafka:sa-east-1:123456789012:topic/poc/0123-abcd-1/t"
    pattern = ref(VARIABLES["msk_cluster_arn"]["validation"][0]["condition"])
    assert "cluster/[^/]+/[^/]+$" in pattern


def test_the_iam_comparison_catches_an_extra_or_a_missing_grant():
    # The checker itself must be able to fail: an extra wildcard grant and a
    # missing action both show up.
    extra = hcl2.loads(
        """
        data "aws_iam_policy_document" "x" {
          statement {
            sid       = "Extra"
            actions   = ["dynamodb:DeleteItem"]
            resources = ["*"]
          }
        }
        """
    )
    doc = labelled(extra, "data")[("aws_iam_policy_document", "x")]
    assert set(allow_pairs(doc)) - EXPECTED_IAM == {("dynamodb:DeleteItem", "*")}
    assert ("dynamodb:DeleteItem", "*") not in STAR_ALLOWED


# ---------------------------------------------------------------------------
# The MSK event source mapping
# ---------------------------------------------------------------------------

ESM = resource("aws_lambda_event_source_mapping", "msk")


def test_mapping_reads_the_topic_with_an_explicit_consumer_group():
    assert ref(ESM["event_source_arn"]) == "var.msk_cluster_arn"
    assert [ref(t) for t in ESM["topics"]] == ["var.topic"]
    assert default_of(VARIABLES, "topic") == "chargeback-consolidation-events"
    kafka_config = one(ESM["amazon_managed_kafka_event_source_config"])
    assert ref(kafka_config["consumer_group_id"]) == "local.consumer_group_id"
    assert ESM["batch_size"] == 100
    assert default_of(VARIABLES, "starting_position") in ("TRIM_HORIZON", "LATEST")
    # IAM authentication: no secret, so no source_access_configuration.
    assert "source_access_configuration" not in ESM
    assert "self_managed_event_source" not in ESM


def test_mapping_invokes_the_alias_not_latest():
    assert ref(ESM["function_name"]) == "aws_lambda_alias.live.arn"
    alias = resource("aws_lambda_alias", "live")
    assert unquote(alias["name"]) == "live"
    assert ref(alias["function_version"]) == "coalesce(var.live_version, aws_lambda_function.this.version)"


def test_mapping_reports_partial_batches_in_provisioned_mode():
    assert [unquote(t) for t in ESM["function_response_types"]] == ["ReportBatchItemFailures"]
    pollers = one(ESM["provisioned_poller_config"])
    assert ref(pollers["minimum_pollers"]) == "var.minimum_pollers"
    assert "maximum_pollers" in pollers
    assert accepts("minimum_pollers", default_of(VARIABLES, "minimum_pollers"))
    assert not accepts("minimum_pollers", 0)


def test_mapping_retry_and_age_are_explicit_and_finite():
    assert ref(ESM["maximum_retry_attempts"]) == "var.maximum_retry_attempts"
    assert ref(ESM["maximum_record_age_in_seconds"]) == "var.maximum_record_age_in_seconds"
    retries = default_of(VARIABLES, "maximum_retry_attempts")
    age = default_of(VARIABLES, "maximum_record_age_in_seconds")
    assert 0 <= retries <= 10000 and accepts("maximum_retry_attempts", retries)
    assert 60 <= age <= 604800 and accepts("maximum_record_age_in_seconds", age)
    # -1 (infinite) is refused: a stuck record must end in the on-failure bucket.
    assert not accepts("maximum_retry_attempts", -1)
    assert not accepts("maximum_record_age_in_seconds", -1)


def test_on_failure_destination_is_the_s3_bucket_not_the_dead_letter_queue():
    destination = ref(one(one(ESM["destination_config"])["on_failure"])["destination_arn"])
    assert destination == "aws_s3_bucket.failures.arn"
    assert "sqs" not in destination and "sns" not in destination
    env, _ = function_environment(resource("aws_lambda_function", "this"))
    assert ref(env["DLQ_URL"]) == "aws_sqs_queue.dlq.url"


# Name limits the provider enforces at plan time: S3 bucket names are 3-63
# lowercase letters, digits, hyphens and dots, starting and ending with a
# letter or digit (Amazon S3 User Guide, "General purpose bucket naming
# rules"); IAM role names are at most 64 characters (IAM User Guide, "IAM and
# AWS STS quotas"). An account ID has 12 digits.
S3_BUCKET_NAME_MAX = 63
IAM_ROLE_NAME_MAX = 64
ACCOUNT_ID = "123456789012"


def function_name_max_length() -> int:
    condition = VARIABLES["function_name"]["validation"][0]["condition"]
    m = re.search(r"\{1,(\d+)\}\$", condition)
    assert m, condition
    return int(m.group(1))


def test_derived_names_fit_the_aws_limits():
    longest = function_name_max_length()
    # The execution role is FUNCTION-execution.
    assert ref(resource("aws_iam_role", "function")["name"]) == "${var.function_name}-execution"
    assert longest + len("-execution") <= IAM_ROLE_NAME_MAX
    # The bucket: the function name cut to N, then a suffix and the account.
    expr = LOCALS["failure_bucket_name"]
    m = re.fullmatch(
        r'\$\{coalesce\(var\.failure_bucket_name, "\$\{substr\(lower\(replace\(var\.function_name, "_", "-"\)\), 0, (\d+)\)\}'
        r'(-[a-z-]+-)\$\{local\.account_id\}"\)\}',
        expr,
    )
    assert m, expr
    cut, suffix = int(m.group(1)), m.group(2)
    assert cut + len(suffix) + len(ACCOUNT_ID) <= S3_BUCKET_NAME_MAX
    # The seed's function name is not cut, and its bucket name passes the
    # module's own precondition (the S3 naming rules).
    seed = unquote(labelled(ROOT, "variable")["function_name"]["default"])
    assert len(seed) <= cut
    name = seed.lower().replace("_", "-")[:cut] + suffix + ACCOUNT_ID
    assert len(name) <= S3_BUCKET_NAME_MAX, name
    precondition = one(one(resource("aws_s3_bucket", "failures")["lifecycle"])["precondition"])["condition"]
    pattern = re.search(r'regex\("(.+?)", local\.failure_bucket_name\)', precondition).group(1)
    assert re.fullmatch(pattern, name), (pattern, name)
    # The check itself can fail: the first default, FUNCTION-esm-failures-ACCOUNT,
    # was 66 characters for the seed's function.
    assert not re.fullmatch(pattern, f"{seed}-esm-failures-{ACCOUNT_ID}")


def test_on_failure_bucket_is_private_encrypted_versioned_and_expires():
    pab = resource("aws_s3_bucket_public_access_block", "failures")
    for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert pab[flag] is True, flag
    versioning = one(resource("aws_s3_bucket_versioning", "failures")["versioning_configuration"])
    assert unquote(versioning["status"]) == "Enabled"
    sse = one(one(resource("aws_s3_bucket_server_side_encryption_configuration", "failures")["rule"])[
        "apply_server_side_encryption_by_default"
    ])
    assert unquote(sse["sse_algorithm"]) == "aws:kms"
    assert ref(sse["kms_master_key_id"]) == "aws_kms_key.data.arn"
    rule = one(resource("aws_s3_bucket_lifecycle_configuration", "failures")["rule"])
    assert ref(one(rule["expiration"])["days"]) == "var.failure_record_retention_days"
    ownership = one(resource("aws_s3_bucket_ownership_controls", "failures")["rule"])
    assert unquote(ownership["object_ownership"]) == "BucketOwnerEnforced"
    deny = policy_statements(DATA[("aws_iam_policy_document", "failures_bucket")])
    assert [(st["effect"], st["actions"]) for st in deny] == [("Deny", ["s3:*"])]
    condition = one(deny[0]["conditions"])
    assert unquote(condition["variable"]) == "aws:SecureTransport"
    assert [unquote(v) for v in condition["values"]] == ["false"]


# ---------------------------------------------------------------------------
# The function
# ---------------------------------------------------------------------------

FUNCTION = resource("aws_lambda_function", "this")


def test_function_runtime_architecture_and_package():
    assert unquote(FUNCTION["runtime"]) == "provided.al2023"
    assert unquote(FUNCTION["handler"]) == "bootstrap"
    assert [ref(a) for a in FUNCTION["architectures"]] == ["var.architecture"]
    assert default_of(VARIABLES, "architecture") == "arm64"
    assert ref(FUNCTION["source_code_hash"]) == "filebase64sha256(var.zip_path)"
    assert ref(FUNCTION["filename"]) == "var.zip_path"
    assert FUNCTION["publish"] is True


def test_function_timeout_is_at_most_14_minutes_and_memory_256():
    assert ref(FUNCTION["timeout"]) == "var.timeout"
    assert default_of(VARIABLES, "timeout") <= 840
    assert accepts("timeout", 840)
    assert not accepts("timeout", 841)
    assert not accepts("timeout", 900)
    assert ref(FUNCTION["memory_size"]) == "var.memory_size"
    assert default_of(VARIABLES, "memory_size") == 256
    assert ref(FUNCTION["reserved_concurrent_executions"]) == "var.reserved_concurrency"


def readme_configuration_variables() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z0-9_]+)` \|", section, re.M)


def env_names(variables: dict) -> set[str]:
    return {k for k in variables if not k.startswith("__")}


def split_top_level(text: str) -> list[str]:
    """The comma-separated items of an HCL call, list or object body, not
    split inside parentheses, braces, brackets or quotes."""
    items, depth, quoted, start = [], 0, False, 0
    for i, c in enumerate(text):
        if c == '"' and (i == 0 or text[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and c in "({[":
            depth += 1
        elif not quoted and c in ")}]":
            depth -= 1
        elif not quoted and depth == 0 and c == ",":
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item.strip() for item in items if item.strip()]


def function_environment(function: dict) -> tuple[dict, dict]:
    """A function's environment variables as (always, optional): always =
    {NAME: expression} set on every apply; optional = {NAME: (condition,
    expression)}, set only when the condition holds. Two guards are
    understood: a module variable that is not null
    (`var.X == null ? {} : { NAME = tostring(var.X) }`, condition
    `var.X != null`) and a boolean module variable
    (`var.X ? { NAME = ..., ... } : {}`, condition `var.X`)."""
    variables = one(function["environment"])["variables"]
    if isinstance(variables, dict):
        return {k: v for k, v in variables.items() if not k.startswith("__")}, {}
    m = re.fullmatch(r"merge\((.*)\)", ref(variables), re.S)
    assert m, f"the environment is a map or a merge() of maps: {variables}"
    always, optional = {}, {}
    for arg in split_top_level(m.group(1)):
        null_guard = re.fullmatch(r"var\.(\w+) == null \? \{\} : \{(.+)\}", arg, re.S)
        flag_guard = re.fullmatch(r"var\.(\w+) \? \{(.+)\} : \{\}", arg, re.S)
        if null_guard or flag_guard:
            variable, body = (null_guard or flag_guard).groups()
            condition = f"var.{variable} != null" if null_guard else f"var.{variable}"
            for item in split_top_level(body):
                name, value = (part.strip() for part in item.split("=", 1))
                if null_guard:
                    assert value == f"tostring(var.{variable})", arg
                assert name not in always and name not in optional, name
                optional[name] = (condition, value)
            continue
        assert arg.startswith("{") and arg.endswith("}"), f"neither a map nor a guarded one: {arg}"
        for item in split_top_level(arg[1:-1]):
            name, value = (part.strip() for part in item.split("=", 1))
            assert name not in always, name
            always[name] = value
    return always, optional


# The run ledger's variables (README.md's Configuration table has both).
LEDGER_ENV = {"LEDGER_TABLE_NAME", "LEDGER_TTL_DAYS"}


def test_function_environment_follows_the_readme_without_aws_region():
    always, optional = function_environment(FUNCTION)
    env = set(always) | set(optional)
    assert "AWS_REGION" not in env  # Lambda reserves it
    documented = set(readme_configuration_variables())
    assert {"DYNAMODB_TABLE_NAME", "DLQ_URL", "WRITE_MODE", "MAX_WRITE_RATE"} <= documented, documented
    # Every variable set is one the function reads...
    assert LEDGER_ENV <= documented, documented
    assert env - documented == set(), env - documented
    # ...and every documented one is set, except the region (Lambda's) and the
    # CLI-only LOG_FORMAT.
    assert documented - env == {"AWS_REGION", "LOG_FORMAT"}, documented - env


def test_max_write_rate_is_set_only_when_given_and_validated_like_the_function():
    # Unset means no ceiling; the function reads an absent variable as unset,
    # so a null module variable leaves MAX_WRITE_RATE out altogether.
    always, optional = function_environment(FUNCTION)
    assert optional["MAX_WRITE_RATE"] == ("var.max_write_rate != null", "tostring(var.max_write_rate)")
    assert set(optional) == {"MAX_WRITE_RATE"} | LEDGER_ENV
    assert "MAX_WRITE_RATE" not in always
    assert VARIABLES["max_write_rate"]["default"] is None
    assert unquote(VARIABLES["max_write_rate"]["type"]) == "number"
    # The function accepts a whole number from 1 to 1,000,000 (README.md,
    # Configuration); the module refuses the rest at plan time.
    for ok in (None, 1, 25, 1000, 1000000):
        assert accepts("max_write_rate", ok), ok
    for bad in (0, -1, 1000001, 1.5):
        assert not accepts("max_write_rate", bad), bad
    # The phase-4 root passes it through, unset by default.
    call = labelled(ROOT, "module")["consolidation_updater"]
    assert ref(call["max_write_rate"]) == "var.max_write_rate"
    assert labelled(ROOT, "variable")["max_write_rate"]["default"] is None


def test_the_environment_check_catches_aws_region_and_an_unguarded_optional():
    bad = hcl2.loads(
        """
        resource "aws_lambda_function" "f" {
          environment {
            variables = {
              AWS_REGION = "sa-east-1"
            }
          }
        }
        """
    )
    env = env_names(one(labelled(bad, "resource")[("aws_lambda_function", "f")]["environment"])["variables"])
    assert "AWS_REGION" in env
    # A MAX_WRITE_RATE written into the map would be set (to "" or a number)
    # on every apply: the parser reports it as always set, and the test above
    # then fails.
    unguarded = hcl2.loads(
        """
        resource "aws_lambda_function" "f" {
          environment {
            variables = merge(
              { WRITE_MODE = var.write_mode, MAX_WRITE_RATE = tostring(var.max_write_rate) },
              var.other == null ? {} : { OTHER = tostring(var.other) },
            )
          }
        }
        """
    )
    always, optional = function_environment(labelled(unguarded, "resource")[("aws_lambda_function", "f")])
    assert "MAX_WRITE_RATE" in always and optional == {"OTHER": ("var.other != null", "tostring(var.other)")}
    # Ledger variables written outside the run_ledger_enabled guard would be
    # set (to a table that does not exist) with the ledger off: reported as
    # always set, which the ledger's test refuses.
    ledger_unguarded = hcl2.loads(
        """
        resource "aws_lambda_function" "f" {
          environment {
            variables = merge(
              { LEDGER_TTL_DAYS = tostring(var.ledger_ttl_days) },
              var.run_ledger_enabled ? { LEDGER_TABLE_NAME = aws_dynamodb_table.ledger[0].name } : {},
            )
          }
        }
        """
    )
    always, optional = function_environment(labelled(ledger_unguarded, "resource")[("aws_lambda_function", "f")])
    assert "LEDGER_TTL_DAYS" in always
    assert optional == {"LEDGER_TABLE_NAME": ("var.run_ledger_enabled", "aws_dynamodb_table.ledger[0].name")}


def test_function_network_tracing_and_logs():
    vpc = one(FUNCTION["vpc_config"])
    assert ref(vpc["subnet_ids"]) == "var.subnet_ids"
    assert ref(vpc["security_group_ids"]) == "var.security_group_ids"
    assert unquote(one(FUNCTION["tracing_config"])["mode"]) == "Active"
    logging = one(FUNCTION["logging_config"])
    assert unquote(logging["log_format"]) == "JSON"
    assert ref(logging["log_group"]) == "aws_cloudwatch_log_group.function.name"


def test_log_group_is_kms_encrypted_with_retention():
    group = resource("aws_cloudwatch_log_group", "function")
    assert ref(group["name"]) == "local.log_group_name"
    assert ref(LOCALS["log_group_name"]) == "/aws/lambda/${var.function_name}"
    assert ref(group["kms_key_id"]) == "aws_kms_key.logs.arn"
    assert ref(group["retention_in_days"]) == "var.log_retention_days"
    assert default_of(VARIABLES, "log_retention_days") >= 1
    # The key lets CloudWatch Logs use it, for this log group only.
    statements = policy_statements(DATA[("aws_iam_policy_document", "logs_key")])
    logs = [st for st in statements if any("kms:GenerateDataKey" in a for a in st["actions"])]
    assert len(logs) == 1
    key_doc = DATA[("aws_iam_policy_document", "logs_key")]
    logs_block = [s for s in key_doc["statement"] if unquote(s["sid"]) == logs[0]["sid"]][0]
    principal = one(logs_block["principals"])
    assert [unquote(i) for i in principal["identifiers"]] == ["logs.${local.region}.amazonaws.com"]
    condition = one(logs_block["condition"])
    assert unquote(condition["variable"]) == "kms:EncryptionContext:aws:logs:arn"
    assert resource("aws_kms_key", "logs")["enable_key_rotation"] is True


# ---------------------------------------------------------------------------
# Dead-letter queue and failure topic
# ---------------------------------------------------------------------------


def test_dead_letter_queue_keeps_14_days_with_a_customer_key():
    queue = resource("aws_sqs_queue", "dlq")
    assert queue["message_retention_seconds"] == 14 * 24 * 3600 == 1209600
    assert ref(queue["kms_master_key_id"]) == "aws_kms_key.data.arn"
    assert resource("aws_kms_key", "data")["enable_key_rotation"] is True


def test_failure_topic_is_kms_encrypted():
    topic = resource("aws_sns_topic", "failures")
    assert ref(topic["kms_master_key_id"]) == "aws_kms_key.data.arn"
    env, _ = function_environment(FUNCTION)
    assert ref(env["FAILURE_TOPIC_ARN"]) == "aws_sns_topic.failures.arn"


# ---------------------------------------------------------------------------
# The run ledger
# ---------------------------------------------------------------------------

LEDGER = resource("aws_dynamodb_table", "ledger")
FUNCTION_POLICY = DATA[("aws_iam_policy_document", "function")]
# The ledger's contract: a strongly consistent Query of the day's partition,
# an UpdateItem when a run starts and one when it completes, GetItem and
# PutItem of one run's item. Nothing that deletes, scans or reaches an index.
LEDGER_ACTIONS = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"]


def ledger_grant_problems(statements: list[dict]) -> list[str]:
    """What is wrong with the role's grants on the ledger table: it must be
    exactly one statement, over the ledger table's ARNs (one per table, none
    without it), with exactly LEDGER_ACTIONS, on nothing else; and no other
    statement may reach the ledger."""
    problems = []
    ledger = [st for st in statements if any("ledger" in r for r in st["resources"])]
    if len(ledger) != 1:
        return [f"expected one statement on the ledger, got {len(ledger)}"]
    st = ledger[0]
    if st["for_each"] != LEDGER_ARNS:
        problems.append(f"not one statement per ledger table: for_each = {st['for_each']}")
    if st["resources"] != [LEDGER_ARNS]:
        problems.append(f"resources other than the ledger table's ARN: {st['resources']}")
    if sorted(st["actions"]) != sorted(LEDGER_ACTIONS) or len(st["actions"]) != len(LEDGER_ACTIONS):
        problems.append(f"actions other than the ledger's four: {st['actions']}")
    if st["conditions"]:
        problems.append("the ledger statement has conditions")
    return problems


def test_ledger_table_keys_and_on_demand_billing():
    # Created only with the ledger, which is on by default.
    assert ref(LEDGER["count"]) == "var.run_ledger_enabled ? 1 : 0"
    assert default_of(VARIABLES, "run_ledger_enabled") is True
    assert unquote(VARIABLES["run_ledger_enabled"]["type"]) == "bool"
    # Partition key partition_date (S), sort key execution_sequence (N); only
    # the key attributes are declared.
    assert unquote(LEDGER["hash_key"]) == "partition_date"
    assert unquote(LEDGER["range_key"]) == "execution_sequence"
    attributes = [(unquote(a["name"]), unquote(a["type"])) for a in LEDGER["attribute"]]
    assert sorted(attributes) == [("execution_sequence", "N"), ("partition_date", "S")]
    # On demand: no capacity to set, and no index to authorize or pay for.
    assert unquote(LEDGER["billing_mode"]) == "PAY_PER_REQUEST"
    for absent in ("read_capacity", "write_capacity", "global_secondary_index", "local_secondary_index"):
        assert absent not in LEDGER, absent
    assert ref(LEDGER["tags"]) == "var.tags"


def test_ledger_expires_items_keeps_point_in_time_recovery_and_uses_the_data_key():
    ttl = one(LEDGER["ttl"])
    assert unquote(ttl["attribute_name"]) == "expires_at"
    assert ttl["enabled"] is True
    assert one(LEDGER["point_in_time_recovery"])["enabled"] is True
    sse = one(LEDGER["server_side_encryption"])
    assert sse["enabled"] is True
    # The module's customer managed key, as for the queue, topic and bucket...
    assert ref(sse["kms_key_arn"]) == "aws_kms_key.data.arn"
    assert resource("aws_kms_key", "data")["enable_key_rotation"] is True
    # ...which the role may decrypt with: DynamoDB decrypts the table key on
    # behalf of the principal reading or writing the table.
    assert ("kms:Decrypt", ref(sse["kms_key_arn"])) in allow_pairs(FUNCTION_POLICY)
    # Deletion protection, on unless turned off.
    assert ref(LEDGER["deletion_protection_enabled"]) == "var.ledger_deletion_protection"
    assert default_of(VARIABLES, "ledger_deletion_protection") is True


def test_ledger_ttl_days_defaults_to_35_and_outlives_the_retained_records():
    assert default_of(VARIABLES, "ledger_ttl_days") == 35
    for ok in (1, 7, 35, 3650):
        assert accepts("ledger_ttl_days", ok), ok
    for bad in (0, -1, 3651, 1.5):
        assert not accepts("ledger_ttl_days", bad), bad
    # A record the mapping may still deliver (at most
    # maximum_record_age_in_seconds old) finds its run's ledger item: the
    # default TTL is longer than that age.
    ttl_seconds = default_of(VARIABLES, "ledger_ttl_days") * 86400
    assert ttl_seconds > default_of(VARIABLES, "maximum_record_age_in_seconds")


def test_ledger_table_name_derives_from_the_function_and_fits_dynamodb():
    assert ref(LEDGER["name"]) == "local.ledger_table_name"
    assert LOCALS["ledger_table_name"] == '${coalesce(var.ledger_table_name, "${var.function_name}-run-ledger")}'
    assert VARIABLES["ledger_table_name"]["default"] is None
    # DynamoDB table names: 3-255 of A-Z a-z 0-9 _ - . (the variable's own
    # validation uses the same rule). The longest function name fits.
    condition = VARIABLES["ledger_table_name"]["validation"][0]["condition"]
    pattern = re.search(r'regex\("(.+?)", ', condition).group(1)
    assert pattern == "^[A-Za-z0-9_.-]{3,255}$"
    assert re.fullmatch(pattern, "f" * function_name_max_length() + "-run-ledger")
    seed = unquote(labelled(ROOT, "variable")["function_name"]["default"])
    assert re.fullmatch(pattern, f"{seed}-run-ledger")
    for bad in ("ab", "run ledger", "x" * 256):
        assert not re.fullmatch(pattern, bad), bad


def test_ledger_statement_grants_exactly_four_actions_on_the_ledger_table_alone():
    statements = policy_statements(FUNCTION_POLICY)
    assert ledger_grant_problems(statements) == []
    # Its for_each walks the table's count: aws_dynamodb_table.ledger[*] is
    # empty when run_ledger_enabled is false, so is the statement list.
    assert LEDGER_ARNS.startswith("aws_dynamodb_table.ledger[*].")
    ledger = next(st for st in statements if st["for_each"] == LEDGER_ARNS)
    assert ledger["sid"] == "RunLedgerTable"
    # No index ARN, no wildcard, and no other statement names the ledger.
    assert not any("/index" in r or r == "*" for r in ledger["resources"])
    granted_on_ledger = {(a, r) for (a, r) in allow_pairs(FUNCTION_POLICY) if "ledger" in r}
    assert granted_on_ledger == {(a, LEDGER_ARNS) for a in LEDGER_ACTIONS}


def test_the_ledger_grant_check_catches_an_extra_action_an_index_or_an_unconditional_statement():
    def problems_of(text: str) -> list[str]:
        doc = labelled(hcl2.loads(text), "data")[("aws_iam_policy_document", "x")]
        return ledger_grant_problems(policy_statements(doc))

    extra_action = """
        data "aws_iam_policy_document" "x" {
          dynamic "statement" {
            for_each = aws_dynamodb_table.ledger[*].arn
            content {
              sid       = "RunLedgerTable"
              actions   = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"]
              resources = [statement.value]
            }
          }
        }
        """
    with_index = """
        data "aws_iam_policy_document" "x" {
          dynamic "statement" {
            for_each = aws_dynamodb_table.ledger[*].arn
            content {
              sid       = "RunLedgerTable"
              actions   = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"]
              resources = [statement.value, "${statement.value}/index/*"]
            }
          }
        }
        """
    always_there = """
        data "aws_iam_policy_document" "x" {
          statement {
            sid       = "RunLedgerTable"
            actions   = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"]
            resources = [aws_dynamodb_table.ledger[0].arn]
          }
        }
        """
    assert any("actions" in p for p in problems_of(extra_action))
    assert any("resources" in p for p in problems_of(with_index))
    assert any("for_each" in p for p in problems_of(always_there))


def test_chargebacks_statements_are_unchanged_by_the_ledger():
    by_sid = {st["sid"]: st for st in policy_statements(FUNCTION_POLICY)}
    table = by_sid["ChargebacksTable"]
    assert table["actions"] == ["dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:UpdateItem", "dynamodb:PartiQLUpdate"]
    assert table["resources"] == ["local.table_arn"]
    assert table["for_each"] is None and not table["conditions"]
    index = by_sid["ChargebacksDateIndex"]
    assert index["actions"] == ["dynamodb:Query"]
    assert index["resources"] == ["local.index_arn"]
    assert index["for_each"] is None and not index["conditions"]
    # Nothing else reaches the chargebacks table or its index.
    others = [
        sid
        for sid, st in by_sid.items()
        if sid not in ("ChargebacksTable", "ChargebacksDateIndex")
        and any(r in ("local.table_arn", "local.index_arn") for r in st["resources"])
    ]
    assert others == []


def test_ledger_variables_are_set_only_with_the_ledger():
    always, optional = function_environment(FUNCTION)
    assert not LEDGER_ENV & set(always), LEDGER_ENV & set(always)
    assert optional["LEDGER_TABLE_NAME"] == ("var.run_ledger_enabled", "aws_dynamodb_table.ledger[0].name")
    assert optional["LEDGER_TTL_DAYS"] == ("var.run_ledger_enabled", "tostring(var.ledger_ttl_days)")
    # The guard is the table's own count condition, so ledger[0] exists
    # whenever the name is read.
    assert ref(LEDGER["count"]) == f"{optional['LEDGER_TABLE_NAME'][0]} ? 1 : 0"


def test_ledger_outputs_and_the_phase4_pass_through():
    outputs = labelled(MODULE, "output")
    assert ref(outputs["ledger_table_name"]["value"]) == "one(aws_dynamodb_table.ledger[*].name)"
    assert ref(outputs["ledger_table_arn"]["value"]) == "one(aws_dynamodb_table.ledger[*].arn)"
    call = labelled(ROOT, "module")["consolidation_updater"]
    root_variables = labelled(ROOT, "variable")
    example = (PHASE4_DIR / "terraform.tfvars.example").read_text()
    readme = (PHASE4_DIR / "README.md").read_text()
    for name in ("run_ledger_enabled", "ledger_ttl_days", "ledger_deletion_protection"):
        assert ref(call[name]) == f"var.{name}", name
        assert default_of(root_variables, name) == default_of(VARIABLES, name), name
        assert re.search(rf"^{name}\s*=", example, re.M), name
        assert f"`{name}`" in readme, name
    root_output = labelled(ROOT, "output")["ledger_table_name"]
    assert ref(root_output["value"]) == "module.consolidation_updater.ledger_table_name"


# ---------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------


def test_endpoints_cover_the_services_unless_a_nat_is_used():
    assert default_of(VARIABLES, "use_nat_gateway") is False
    assert set(default_of(VARIABLES, "gateway_endpoint_services")) == {"dynamodb", "s3"}
    # SQS/SNS for the function; Lambda and STS for the MSK pollers.
    assert set(default_of(VARIABLES, "interface_endpoint_services")) >= {"sqs", "sns", "lambda", "sts"}
    assert ref(LOCALS["create_endpoints"]) == "!var.use_nat_gateway"
    gateway = resource("aws_vpc_endpoint", "gateway")
    interface = resource("aws_vpc_endpoint", "interface")
    assert unquote(gateway["vpc_endpoint_type"]) == "Gateway"
    assert unquote(interface["vpc_endpoint_type"]) == "Interface"
    assert "create_endpoints" in ref(LOCALS["gateway_services"])
    assert "create_endpoints" in ref(LOCALS["interface_services"])
    assert ref(gateway["for_each"]) == "local.gateway_services"
    assert ref(interface["for_each"]) == "local.interface_services"
    assert [ref(s) for s in interface["security_group_ids"]] == ["aws_security_group.endpoints[0].id"]
    rule = resource("aws_vpc_security_group_ingress_rule", "endpoints_https")
    assert (rule["from_port"], rule["to_port"], unquote(rule["ip_protocol"])) == (443, 443, "tcp")
    assert ref(rule["referenced_security_group_id"]) == "each.key"
    assert "var.security_group_ids" in ref(LOCALS["endpoint_clients"])


# ---------------------------------------------------------------------------
# Alarms: the ones docs/operations.md documents, with its settings
# ---------------------------------------------------------------------------


def operations_alarms() -> dict:
    """The put-metric-alarm commands of docs/operations.md, by name suffix."""
    text = (REPO / "docs" / "operations.md").read_text()
    alarms = {}
    for command in re.findall(r"aws cloudwatch put-metric-alarm (.*?)(?:\n\n|\n```)", text, re.S):
        flat = command.replace("\\\n", " ")
        opts = dict(re.findall(r"--([a-z-]+) (\S+)", flat))
        name = opts["alarm-name"].strip('"').replace("$FN-", "")
        alarms[name] = opts
    return alarms


def operations_metric_files() -> dict:
    """The files the runbook writes with `cat > NAME <<EOF` for a metric-math
    alarm's --metrics file://NAME, parsed as JSON ($NS and $FN kept as
    written)."""
    text = (REPO / "docs" / "operations.md").read_text()
    return {
        name: json.loads(body)
        for name, body in re.findall(r"^cat > (\S+) <<EOF\n(.*?)\nEOF$", text, re.S | re.M)
    }


NAMESPACE_OF = {'"$NS"': "var.metrics_namespace", "AWS/Lambda": "AWS/Lambda", "AWS/SQS": "AWS/SQS"}


def threshold_of(alarm: dict) -> float:
    threshold = alarm["threshold"]
    if isinstance(threshold, str):
        threshold = default_of(VARIABLES, ref(threshold).removeprefix("var."))
    return float(threshold)


def assert_metric_math_matches(name: str, alarm: dict, queries: list) -> None:
    """A metric-math alarm against the runbook's MetricDataQuery list."""
    # PutMetricAlarm takes either a metric or a Metrics array, never both.
    for single in ("namespace", "metric_name", "statistic", "period", "dimensions"):
        assert single not in alarm, (name, single)
    declared = {unquote(q["id"]): q for q in alarm["metric_query"]}
    assert set(declared) == {q["Id"] for q in queries}, name
    returned = [q["Id"] for q in queries if q.get("ReturnData")]
    assert len(returned) == 1, f"{name}: exactly one query is the alarm's value: {returned}"
    for query in queries:
        mine = declared[query["Id"]]
        assert bool(mine.get("return_data", False)) == bool(query.get("ReturnData")), (name, query["Id"])
        if "Expression" in query:
            assert unquote(mine["expression"]) == query["Expression"], (name, query["Id"])
            continue
        stat = query["MetricStat"]
        metric = one(mine["metric"])
        namespace = stat["Metric"]["Namespace"]
        assert ref(metric["namespace"]) == NAMESPACE_OF.get(f'"{namespace}"', namespace), (name, query["Id"])
        assert unquote(metric["metric_name"]) == stat["Metric"]["MetricName"], (name, query["Id"])
        assert unquote(metric["stat"]) == stat["Stat"], (name, query["Id"])
        assert metric["period"] == stat["Period"], (name, query["Id"])
        dimensions = [(d["Name"], d["Value"]) for d in stat["Metric"]["Dimensions"]]
        assert dimensions == [("FunctionName", "$FN")], (name, query["Id"])
        assert ref(metric["dimensions"]["FunctionName"]) == "aws_lambda_function.this.function_name"
        assert list(env_names(metric["dimensions"])) == ["FunctionName"], (name, query["Id"])


def test_alarms_match_the_runbook():
    documented = operations_alarms()
    assert {"dead-lettered", "hand-backs-persist", "errors", "dlq-not-empty", "offset-lag", "throttled"} <= set(
        documented
    )
    files = operations_metric_files()
    declared = {}
    for body in resources_of("aws_cloudwatch_metric_alarm").values():
        name = ref(body["alarm_name"])
        assert name.startswith("${var.function_name}-"), name
        declared[name.removeprefix("${var.function_name}-")] = body
    assert set(declared) == set(documented), (set(declared), set(documented))
    for name, opts in documented.items():
        alarm = declared[name]
        if "metrics" in opts:
            file = opts["metrics"].removeprefix("file://")
            assert file in files, f"{name}: the runbook does not write {file}"
            assert_metric_math_matches(name, alarm, files[file])
        else:
            namespace = unquote(alarm["namespace"]) if alarm["namespace"].startswith('"') else ref(alarm["namespace"])
            assert namespace == NAMESPACE_OF[opts["namespace"]], name
            assert unquote(alarm["metric_name"]) == opts["metric-name"], name
            assert unquote(alarm["statistic"]) == opts["statistic"], name
            assert alarm["period"] == int(opts["period"]), name
            dimension = opts["dimensions"].split(",")[0].removeprefix("Name=")
            assert list(env_names(alarm["dimensions"])) == [dimension], name
        assert alarm["evaluation_periods"] == int(opts["evaluation-periods"]), name
        if "datapoints-to-alarm" in opts:
            assert alarm["datapoints_to_alarm"] == int(opts["datapoints-to-alarm"]), name
        assert unquote(alarm["comparison_operator"]) == opts["comparison-operator"], name
        assert unquote(alarm["treat_missing_data"]) == opts["treat-missing-data"], name
        assert threshold_of(alarm) == float(opts["threshold"]), name


def test_alarm_dimensions_and_actions():
    alarms = resources_of("aws_cloudwatch_metric_alarm")
    assert ref(alarms["dlq_not_empty"]["dimensions"]["QueueName"]) == "aws_sqs_queue.dlq.name"
    for name in ("errors", "dead_lettered", "hand_backs_persist", "offset_lag"):
        assert ref(alarms[name]["dimensions"]["FunctionName"]) == "aws_lambda_function.this.function_name"
        assert ref(alarms[name]["alarm_actions"]) == "local.page_actions"
    assert ref(alarms["throttled"]["alarm_actions"]) == "local.ticket_actions"
    assert ref(alarms["offset_lag"]["threshold"]) == "var.offset_lag_threshold"
    assert ref(alarms["dead_lettered"]["namespace"]) == "var.metrics_namespace"
    assert ref(LOCALS["page_actions"]) == "var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn]"
    assert ref(LOCALS["ticket_actions"]) == "var.ticket_topic_arn == null ? local.page_actions : [var.ticket_topic_arn]"


def test_throttling_opens_a_ticket_on_the_share_of_refused_writes_and_stalls_page():
    # Throttling is how the writes find the table's rate: its count pages
    # nobody. The ticket watches the share of writes refused for capacity,
    # sustained for 15 minutes; a run that stops making progress is handed
    # back, and persisting hand-backs page.
    throttled = resource("aws_cloudwatch_metric_alarm", "throttled")
    queries = {unquote(q["id"]): q for q in throttled["metric_query"]}
    metrics = {i: unquote(one(q["metric"])["metric_name"]) for i, q in queries.items() if "metric" in q}
    assert sorted(metrics.values()) == ["ChargebacksUpdated", "ThrottledWrites"]
    share = [q for q in queries.values() if q.get("return_data") is True]
    assert len(share) == 1
    expression = unquote(share[0]["expression"]).replace(" ", "")
    refused = next(i for i, m in metrics.items() if m == "ThrottledWrites")
    written = next(i for i, m in metrics.items() if m == "ChargebacksUpdated")
    assert f"{refused}/({written}+{refused})" in expression, expression
    # No data for ThrottledWrites on a version that predates it, or no
    # invocation at all: not breaching.
    assert unquote(throttled["treat_missing_data"]) == "notBreaching"
    assert (throttled["evaluation_periods"], throttled["datapoints_to_alarm"]) == (3, 3)
    assert ref(throttled["threshold"]) == "var.throttled_share_threshold"
    assert default_of(VARIABLES, "throttled_share_threshold") == 0.5
    assert accepts("throttled_share_threshold", 0.5)
    assert not accepts("throttled_share_threshold", 0) and not accepts("throttled_share_threshold", 1)
    assert "throttled_requests_threshold" not in VARIABLES
    hand_backs = resource("aws_cloudwatch_metric_alarm", "hand_backs_persist")
    assert ref(hand_backs["alarm_actions"]) == "local.page_actions"
    assert unquote(hand_backs["metric_name"]) == "MessagesRetried"
    assert "stall" in unquote(hand_backs["alarm_description"])


# ---------------------------------------------------------------------------
# checkov: skips are inline and justified
# ---------------------------------------------------------------------------


def test_every_checkov_skip_is_inline_with_a_reason():
    skips = []
    for path in TF_ROOT.rglob("*.tf"):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                m = re.fullmatch(r"\s*#checkov:skip=(CKV2?_[A-Z0-9_]+):(.{20,})", line)
                assert m, f"{path.name}: skip without an id and a reason: {line.strip()}"
                skips.append(m.group(1))
    assert skips, "expected the documented skips"
    # No global skip list: a config file would hide checks from the reader.
    for config in (".checkov.yaml", ".checkov.yml"):
        for directory in (REPO, TF_ROOT):
            path = directory / config
            if path.exists():
                assert "skip-check" not in path.read_text(), path
