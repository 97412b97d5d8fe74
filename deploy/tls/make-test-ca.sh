#!/bin/sh
# Makes a throw-away certificate authority for trying TLS locally and in
# tests, never for production (use your organisation's CA there):
#
#   ca.pem / ca.key          the CA (10 years, self-signed)
#   server.pem / server.key  a server certificate for localhost and 127.0.0.1
#                            (Mosquitto's 8883 listener, vaka's HTTPS)
#   client.pem / client.key  a client certificate (CN=vaka-gateway), for a
#                            broker with `require_certificate true`
#
# Usage: deploy/tls/make-test-ca.sh [DIR]   (default: ./test-ca)
# Needs openssl. Keys are EC P-256, written with mode 600.
set -eu

dir=${1:-test-ca}
mkdir -p "$dir"
cd "$dir"
umask 077

days=3650
subj_ca="/O=vaka test CA/CN=vaka test CA"

openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "$subj_ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem

# $1 name, $2 subject, $3 extensions file
issue() {
    openssl ecparam -name prime256v1 -genkey -noout -out "$1.key"
    openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -sha256 -days "$days" -extfile "$3" -out "$1.pem"
    rm -f "$1.csr" "$3"
}

cat > server.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
issue server "/O=vaka test/CN=localhost" server.ext

cat > client.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EXT
issue client "/O=vaka test/CN=vaka-gateway" client.ext

rm -f ca.srl
# Certificates are public; keys stay 600 (chown them to the broker's user).
chmod 644 ca.pem server.pem client.pem
echo "test CA in $dir: ca.pem, server.pem/.key, client.pem/.key"
