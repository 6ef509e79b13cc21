#!/usr/bin/env bash
# Provisions one machine against Agentry (seed 003) with curl and openssl
# alone: the steps of docs/provisioning.md, operator side then machine side.
#
#   AGENTRY_URL      the plain API            (default http://127.0.0.1:8080)
#   AGENTRY_TLS_URL  the mTLS listener        (default https://localhost:8443)
#   AGENTRY_API_KEY  an operator or admin key (required)
#
# It prints what it does and ends with the instance's state as the operator
# sees it. Exit status 0 means every step answered as documented and both
# hashes of the downloaded bundle matched.
set -euo pipefail

url="${AGENTRY_URL:-http://127.0.0.1:8080}"
tls_url="${AGENTRY_TLS_URL:-https://localhost:8443}"
key="${AGENTRY_API_KEY:?set AGENTRY_API_KEY to an operator or admin key}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# The value of a top-level string field of a one-line JSON document.
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
sha256() { printf 'sha256:%s' "$(openssl dgst -sha256 -r "$1" | cut -d' ' -f1)"; }
step() { printf '\n== %s\n' "$*" >&2; }

# ---------------------------------------------------------------- operator
step "operator: fetch the CA that signs the mTLS listener and machines"
curl -fsS "$url/internal/bootstrap/ca.pem" -o ca.pem

step "operator: build and encrypt the artifact bundle"
mkdir -p bundle && printf 'echo hello from the bundle\n' > bundle/run.sh
tar -czf bundle.tar.gz bundle
decryption_key="$(openssl rand -hex 32)"
iv="$(openssl rand -hex 16)"
openssl enc -aes-256-ctr -K "$decryption_key" -iv "$iv" -in bundle.tar.gz -out bundle.enc
plain_hash="$(sha256 bundle.tar.gz)"

step "operator: create the instance (the bootstrap token is shown once)"
created="$(curl -fsS "$url/v1/provisioning/instances" \
  -H "authorization: Bearer $key" -H 'content-type: application/json' \
  -d "{\"name\":\"example-machine\",
       \"agent_config\":{\"bundle_cipher\":\"aes-256-ctr\",\"bundle_iv_hex\":\"$iv\"},
       \"agent_secrets\":{\"EXAMPLE_API_KEY\":\"example-secret\"},
       \"skill_lockfile\":{\"skills\":{}},
       \"decryption_key_hex\":\"$decryption_key\"}")"
instance_id="$(field instance_id <<<"$created")"
bootstrap_token="$(field bootstrap_token <<<"$created")"
echo "instance $instance_id" >&2

step "operator: upload the encrypted bundle"
curl -fsS -X PUT "$url/v1/provisioning/instances/$instance_id/artifact" \
  -H "authorization: Bearer $key" -H 'content-type: application/octet-stream' \
  -H "x-bundle-plain-hash: $plain_hash" --data-binary @bundle.enc >/dev/null

# ----------------------------------------------------------------- machine
# From here on the machine knows only: the CA, the instance id and the
# bootstrap token (cloud-init puts them there).
mtls=(--cacert ca.pem)

step "machine: early diagnostic, before it has a certificate"
curl -fsS "${mtls[@]}" "$tls_url/internal/bootstrap/early-diagnostic" \
  -H 'content-type: application/json' \
  -d "{\"bootstrap_token\":\"$bootstrap_token\",\"instance_id\":\"$instance_id\",\"label\":\"phase-0\",\"message\":\"booted\"}" >/dev/null

step "machine: key and CSR, then /cert"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout machine.key -subj "/CN=example-machine" -out machine.csr 2>/dev/null
csr_json="$(awk '{printf "%s\\n", $0}' machine.csr)"
issued="$(curl -fsS "${mtls[@]}" "$tls_url/internal/bootstrap/cert" \
  -H 'content-type: application/json' \
  -d "{\"bootstrap_token\":\"$bootstrap_token\",\"csr_pem\":\"$csr_json\"}")"
printf '%b' "$(field cert_pem <<<"$issued")" > machine.crt
session_id="$(field session_id <<<"$issued")"
mtls+=(--cert machine.crt --key machine.key)

step "machine: /secrets over mTLS"
secrets="$(curl -fsS "${mtls[@]}" "$tls_url/internal/bootstrap/secrets" \
  -H 'content-type: application/json' -d "{\"session_id\":\"$session_id\"}")"
callback_jwt="$(field callback_jwt <<<"$secrets")"
download_token="$(field artifact_download_token <<<"$secrets")"
key_hex="$(field decryption_key_hex <<<"$secrets")"
cipher_hash="$(field artifact_cipher_hash <<<"$secrets")"
expected_plain="$(field bundle_plain_hash <<<"$secrets")"

callback() {
  curl -fsS "${mtls[@]}" "$tls_url/internal/bootstrap/callback" \
    -H "authorization: Bearer $callback_jwt" -H 'content-type: application/json' \
    -d "{\"seq\":$1,\"stage\":\"$2\",\"message\":\"$3\"}" >/dev/null
}

callback 1 installing "downloading the bundle"
step "machine: download the bundle and check both hashes"
curl -fsS "${mtls[@]}" "$tls_url/internal/bootstrap/artifacts/$instance_id" \
  -H "x-download-token: $download_token" -o downloaded.enc
[ "$(sha256 downloaded.enc)" = "$cipher_hash" ] || { echo "cipher hash mismatch" >&2; exit 1; }
openssl enc -d -aes-256-ctr -K "$key_hex" -iv "$iv" -in downloaded.enc -out downloaded.tar.gz
[ "$(sha256 downloaded.tar.gz)" = "$expected_plain" ] || { echo "plain hash mismatch" >&2; exit 1; }
echo "both hashes match" >&2

callback 2 configuring "unpacking"
tar -xzf downloaded.tar.gz
callback 3 securing "locking down"
curl -fsS "${mtls[@]}" "$tls_url/internal/bootstrap/diagnostic" \
  -H "authorization: Bearer $callback_jwt" -H 'content-type: application/json' \
  -d '{"label":"files","level":"info","message":"bundle unpacked"}' >/dev/null
callback 4 ready "provisioned"

# ---------------------------------------------------------------- operator
step "operator: the instance's state and logs"
curl -fsS "$url/v1/provisioning/instances/$instance_id" -H "authorization: Bearer $key"
echo
curl -fsS "$url/v1/provisioning/instances/$instance_id/logs" -H "authorization: Bearer $key"
echo
