# shellcheck shell=bash
# scripts/testenv.d/pki.sh: the test PKI in $TE/pki (kept across `down`).
#
#   ca.{crt,key}            EC P-256 root; signs serving.crt; the CA of every kubeconfig and the
#                           --root-ca-file of kube-controller-manager (kube-root-ca.crt)
#   serving.{crt,key}       127.0.0.1/localhost/kubernetes.default.svc...: kube-apiserver's,
#                           kube-controller-manager's and kube-scheduler's serving certificate
#   sa.{key,pub}            RSA-2048 ServiceAccount token signing key
#   signing-ca.{crt,key}    EC P-256 CA of kube-controller-manager's CSR signers; kube-apiserver
#                           trusts it for client certificates (--client-ca-file)
#   admin-token, tokens.csv the admin's bearer token (user sealcred-admin, system:masters)

# new_ec_ca DIR NAME CN
new_ec_ca() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$1/$2.key" -out "$1/$2.crt" -days 3650 -subj "/CN=$3" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

ensure_pki() {
	local p="$TE/pki"
	mkdir -p "$p"
	if ! [ -s "$p/ca.crt" ] || ! [ -s "$p/serving.crt" ] || ! [ -s "$p/sa.key" ] || ! [ -s "$p/sa.pub" ]; then
		log "generating test PKI in $p"
		new_ec_ca "$p" ca sealcred-testenv-ca
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout "$p/serving.key" -out "$p/serving.csr" -subj "/CN=kube-apiserver" 2>/dev/null
		printf '%s\n' \
			"subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
			"basicConstraints=critical,CA:FALSE" \
			"keyUsage=critical,digitalSignature,keyEncipherment" \
			"extendedKeyUsage=serverAuth" >"$p/serving.ext"
		openssl x509 -req -in "$p/serving.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" \
			-CAserial "$p/ca.srl" -CAcreateserial -days 3650 -extfile "$p/serving.ext" \
			-out "$p/serving.crt" 2>/dev/null
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$p/sa.key" 2>/dev/null
		openssl pkey -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
	fi
	if ! [ -s "$p/signing-ca.crt" ] || ! [ -s "$p/signing-ca.key" ]; then
		new_ec_ca "$p" signing-ca sealcred-testenv-cluster-signing
	fi
	if ! [ -s "$p/admin-token" ]; then
		openssl rand -hex 32 >"$p/admin-token"
	fi
	printf '%s,sealcred-admin,sealcred-admin,"system:masters"\n' "$(cat "$p/admin-token")" >"$p/tokens.csv"
	chmod 600 "$p"/*.key "$p/admin-token" "$p/tokens.csv"
}
