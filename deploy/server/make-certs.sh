#!/usr/bin/env bash
# A private CA, a broker certificate, and per-device client certificates, with openssl.
#
#   bash make-certs.sh OUT BROKER_HOSTNAME [DEVICE_ID ...]
#
# OUT/ca.crt        give to every node (broker.json "ca_file") to verify the broker
# OUT/ca.key        keep offline (mode 0600)
# OUT/broker.crt, OUT/broker.key          for mosquitto (production.conf)
# OUT/devices/ID.crt, OUT/devices/ID.key  client certificates (CN = device id), for
#                                          require_certificate true / use_identity_as_username
set -euo pipefail
OUT="$1"; HOST="$2"; shift 2
mkdir -p "$OUT/devices"
umask 077
if [ ! -f "$OUT/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=BlockFL Edge CA" -keyout "$OUT/ca.key" -out "$OUT/ca.crt" 2>/dev/null
fi
issue() {  # name, subject CN, extension file
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" -CAcreateserial -days 825 -sha256 -extfile "$3" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr"
}
ext="$(mktemp)"
trap 'rm -f "$ext"' EXIT
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n' "$HOST" > "$ext"
issue "$OUT/broker" "$HOST" "$ext"
printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n' > "$ext"
for device in "$@"; do
    issue "$OUT/devices/$device" "$device" "$ext"
done
chmod 0644 "$OUT/ca.crt" "$OUT/broker.crt" "$OUT"/devices/*.crt 2>/dev/null || true
echo "make-certs: CA, broker ($HOST) and $# device certificate(s) in $OUT"
