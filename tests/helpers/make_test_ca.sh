#!/bin/sh
# Makes a throw-away certificate authority and certificates for the TLS tests, in directory $1
# (docs/security.md shows the same commands for a real deployment). P-256 keys: fast to make.
#   ca.pem ca.key              the test CA
#   server.pem server.key      signed by it, for 127.0.0.1, ::1 and localhost
#   client.pem client.key      signed by it, for mutual TLS
#   other_ca.pem               another CA, which signed nothing of the above
#   other_client.pem .key      a client certificate signed by the other CA
set -eu
dir=$1
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {  # name subject
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 2 -out "$1.pem" 2>/dev/null
}
leaf() {  # name ca subject extensions serial
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -set_serial "$5" -days 2 -extfile "$1.ext" \
    -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca "rx test CA"
ca other_ca "rx other test CA"
leaf server ca localhost "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
basicConstraints=CA:FALSE
extendedKeyUsage=serverAuth" 1
leaf client ca "rx test client" "basicConstraints=CA:FALSE
extendedKeyUsage=clientAuth" 2
leaf other_client other_ca "rx other test client" "basicConstraints=CA:FALSE
extendedKeyUsage=clientAuth" 3
