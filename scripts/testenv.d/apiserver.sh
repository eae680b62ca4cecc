# shellcheck shell=bash
# scripts/testenv.d/apiserver.sh: etcd and kube-apiserver, and the admin's API helpers.

# ---------------------------------------------------------------------------
# etcd: always a fresh data directory (the API server's storage lives as long as etcd)

etcd_ensure() { [ -x "$ETCD_BIN" ] || build_go_binary "$ETCD_BIN" etcd .; }

etcd_launch() {
	local cport pport
	{ read -r cport && read -r pport; } < <(free_ports 2)
	rm -rf "$TE/etcd/data"
	mkdir -p "$TE/etcd"
	echo "$cport" >"$TE/etcd/port"
	start_daemon etcd "$ETCD_BIN" --name=sealcred-testenv --data-dir="$TE/etcd/data" \
		--listen-client-urls="http://127.0.0.1:$cport" --advertise-client-urls="http://127.0.0.1:$cport" \
		--listen-peer-urls="http://127.0.0.1:$pport" --initial-advertise-peer-urls="http://127.0.0.1:$pport" \
		--initial-cluster="sealcred-testenv=http://127.0.0.1:$pport" \
		--heartbeat-interval=10 --election-timeout=100 --unsafe-no-fsync --log-level=warn
}

etcd_url() { echo "http://127.0.0.1:$(port_of etcd)"; }

etcd_probe() { [[ "$(curl -sf --max-time 2 "$(etcd_url)/health" 2>/dev/null || true)" == *'"health":"true"'* ]]; }

etcd_describe() { etcd_url; }

# ---------------------------------------------------------------------------
# kube-apiserver

apiserver_ensure() { [ -x "$APISERVER_BIN" ] || build_k8s "$APISERVER_BIN" kube-apiserver; }

# apiserver_curl [CURL ARGS...]: a request to $APIPATH as the admin
apiserver_curl() {
	curl -sS --max-time 10 --cacert "$TE/pki/ca.crt" -H "Authorization: Bearer $(cat "$TE/pki/admin-token")" \
		"$@" "https://127.0.0.1:$(port_of apiserver)${APIPATH}"
}

# api_code METHOD PATH [JSON]: the HTTP status of an admin request; the body goes to $RESP
# (or nowhere)
api_code() {
	local method="$1" path="$2" body=()
	[ "$#" -lt 3 ] || body=(-H "Content-Type: ${CONTENT_TYPE:-application/json}" --data-binary "$3")
	APIPATH="$path" apiserver_curl -o "${RESP:-/dev/null}" -w '%{http_code}' -X "$method" "${body[@]}" 2>/dev/null || true
}

# apiserver_launch [PORT]: start on PORT (else a free one), against the running etcd; also
# (re)writes the admin kubeconfig the other components use
apiserver_launch() {
	local port="${1:-$(free_port)}"
	mkdir -p "$TE/apiserver/certs"
	echo "$port" >"$TE/apiserver/port"
	write_kubeconfig "$KUBECONFIG_FILE" "$port" sealcred-admin "$(cat "$TE/pki/admin-token")"
	start_daemon apiserver "$APISERVER_BIN" \
		--etcd-servers="$(etcd_url)" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$port" \
		--cert-dir="$TE/apiserver/certs" \
		--tls-cert-file="$TE/pki/serving.crt" --tls-private-key-file="$TE/pki/serving.key" \
		--client-ca-file="$TE/pki/signing-ca.crt" \
		--service-cluster-ip-range="$SERVICE_CIDR" \
		--authorization-mode=RBAC \
		--token-auth-file="$TE/pki/tokens.csv" \
		--service-account-issuer="$SA_ISSUER" \
		--service-account-key-file="$TE/pki/sa.pub" \
		--service-account-signing-key-file="$TE/pki/sa.key" \
		--disable-admission-plugins=ServiceAccount \
		--enable-priority-and-fairness=false \
		--shutdown-watch-termination-grace-period=2s \
		--profiling=false
}

apiserver_probe() { [ "$(api_code GET /readyz)" = 200 ]; }

apiserver_diagnose() {
	echo "---- /readyz?verbose ----"
	APIPATH='/readyz?verbose' apiserver_curl 2>&1 | grep -v '\[+\]'
}

apiserver_describe() { echo "https://127.0.0.1:$(port_of apiserver)"; }
