#!/usr/bin/env bash
# Builds the Lambda deployment package: consolidation-updater.zip, holding one
# file, `bootstrap` (the release binary, stripped, without the embedded engine),
# for the provided.al2023 runtime.
#
#   ./build.sh                      # arm64 (Graviton), the default
#   ./build.sh --arch x86_64        # x86-64
#   ./build.sh --output FILE.zip    # somewhere else than ./consolidation-updater.zip
#
# With cargo-lambda on the PATH (PyPI: `pip install cargo-lambda ziglang`) it
# builds through `cargo lambda build`, which links with zig against an older
# glibc. Without it, plain cargo builds the native architecture; another
# architecture then needs its standard library (`rustup target add
# aarch64-unknown-linux-gnu`) and a cross linker (Debian: gcc-aarch64-linux-gnu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Lambda's provided.al2023 runtime ships glibc 2.34: a bootstrap that needs a
# newer symbol version does not start there.
readonly RUNTIME_GLIBC="2.34"
readonly BINARY="consolidation-updater"
readonly PROFILE="deploy"

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }
fail() { echo "build.sh: $*" >&2; exit 1; }

arch="arm64"
output="consolidation-updater.zip"
while (($#)); do
  case "$1" in
    --arch) arch="${2:-}"; shift 2 || fail "--arch needs a value" ;;
    --arch=*) arch="${1#*=}"; shift ;;
    --output) output="${2:-}"; shift 2 || fail "--output needs a value" ;;
    --output=*) output="${1#*=}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; fail "unknown argument: $1" ;;
  esac
done

case "$arch" in
  arm64 | aarch64) arch="arm64"; triple="aarch64-unknown-linux-gnu"; lambda_flag="--arm64" ;;
  x86_64 | x86-64 | amd64) arch="x86_64"; triple="x86_64-unknown-linux-gnu"; lambda_flag="--x86-64" ;;
  *) fail "--arch must be arm64 or x86_64, not '$arch'" ;;
esac
[[ "$output" == *.zip ]] || fail "--output must name a .zip file, not '$output'"

host_triple=$(rustc -vV | sed -n 's/^host: //p')
cargo_args=(--profile "$PROFILE" --no-default-features --locked --bin "$BINARY")

if cargo lambda --version >/dev/null 2>&1; then
  echo "build.sh: cargo lambda build for $arch ($triple)"
  cargo lambda build "${cargo_args[@]}" "$lambda_flag"
  bootstrap="target/lambda/$BINARY/bootstrap"
elif [[ "$triple" == "$host_triple" ]]; then
  echo "build.sh: cargo build for $arch, the native architecture (cargo-lambda not found)"
  cargo build "${cargo_args[@]}"
  bootstrap="target/$PROFILE/$BINARY"
else
  rustup target list --installed 2>/dev/null | grep -qx "$triple" ||
    fail "building for $arch on $host_triple needs cargo-lambda (pip install cargo-lambda ziglang), or the $triple standard library (rustup target add $triple) and a cross linker"
  linker="${triple%%-unknown-*}-linux-gnu-gcc"
  command -v "$linker" >/dev/null || fail "no cross linker '$linker' on the PATH (Debian: apt-get install gcc-${triple%%-unknown-*}-linux-gnu), or install cargo-lambda"
  echo "build.sh: cargo build for $arch ($triple) with $linker"
  linker_var="CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$triple")_LINKER"
  env "$linker_var=$linker" cargo build "${cargo_args[@]}" --target "$triple"
  bootstrap="target/$triple/$PROFILE/$BINARY"
fi
[[ -x "$bootstrap" ]] || fail "the build left no executable at $bootstrap"

# The newest glibc symbol version the binary asks for, when objdump can tell.
if command -v objdump >/dev/null; then
  needed=$(objdump -T "$bootstrap" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1 || true)
  if [[ -n "$needed" ]]; then
    if [[ "$(printf '%s\n%s\n' "$needed" "$RUNTIME_GLIBC" | sort -V | tail -n 1)" != "$RUNTIME_GLIBC" ]]; then
      echo "build.sh: WARNING: bootstrap needs glibc $needed; provided.al2023 has $RUNTIME_GLIBC. Build with cargo-lambda instead." >&2
    else
      echo "build.sh: bootstrap needs glibc $needed or newer (provided.al2023 has $RUNTIME_GLIBC)"
    fi
  fi
fi

# The archive holds `bootstrap` alone, mode 0755, with a fixed timestamp: the
# same binary gives the same zip, so Terraform's source_code_hash only moves
# when the code does.
mkdir -p "$(dirname "$output")"
rm -f "$output"
if command -v python3 >/dev/null; then
  python3 - "$bootstrap" "$output" <<'PY'
import sys, zipfile
source, target = sys.argv[1], sys.argv[2]
entry = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
entry.external_attr = (0o100755 << 16)
entry.create_system = 3  # Unix, so the mode above is honoured
entry.compress_type = zipfile.ZIP_DEFLATED
with open(source, "rb") as binary, zipfile.ZipFile(target, "w") as archive:
    archive.writestr(entry, binary.read(), compresslevel=9)
PY
elif command -v zip >/dev/null; then
  staging=$(mktemp -d)
  trap 'rm -rf "$staging"' EXIT
  cp "$bootstrap" "$staging/bootstrap"
  chmod 0755 "$staging/bootstrap"
  touch -t 198001010000 "$staging/bootstrap"
  (cd "$staging" && zip -q -X -9 bootstrap.zip bootstrap)
  mv "$staging/bootstrap.zip" "$output"
else
  fail "neither python3 nor zip is installed to write the archive"
fi

binary_size=$(wc -c <"$bootstrap")
zip_size=$(wc -c <"$output")
echo "build.sh: $output ($arch): $zip_size bytes ($((zip_size / 1024)) KiB), bootstrap $binary_size bytes unpacked"
