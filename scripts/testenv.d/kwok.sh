# shellcheck shell=bash
# scripts/testenv.d/kwok.sh: KWOK, the kubelet of NODES simulated Nodes (kwok-node-0...).
#
# The Nodes are ordinary Node objects annotated kwok.x-k8s.io/node=fake (what KWOK manages),
# without taints, so Pods schedule there without tolerations; KWOK plays its default stages
# (build.sh): the Nodes become Ready and keep their Leases renewed, Pods bound to them by
# kube-scheduler become Running and Ready, and Pods being deleted are deleted (no containers,
# no images, no kubelet).

KWOK_NODE_PREFIX=kwok-node-

kwok_ensure() { { [ -x "$KWOK_BIN" ] && [ -s "$KWOK_STAGES" ]; } || build_kwok; }

check_nodes_setting() {
	[[ "$NODES" =~ ^[1-9][0-9]{0,2}$ ]] || die "SEALCRED_TESTENV_NODES must be a number of nodes from 1 to 999, not '$NODES'"
}

# node_json NAME: a Node for ~200 Pods (the Pods of a test request little or nothing)
node_json() {
	local r='{"cpu":"64","memory":"256Gi","pods":"256","ephemeral-storage":"1Ti"}'
	cat <<EOF
{"apiVersion":"v1","kind":"Node",
 "metadata":{"name":"$1",
  "annotations":{"kwok.x-k8s.io/node":"fake","node.alpha.kubernetes.io/ttl":"0"},
  "labels":{"type":"kwok","kubernetes.io/hostname":"$1","kubernetes.io/os":"linux","kubernetes.io/arch":"amd64"}},
 "spec":{},
 "status":{"allocatable":$r,"capacity":$r}}
EOF
}

# ensure_nodes: creates the Nodes that are missing (kept while etcd lives)
ensure_nodes() {
	local i code
	for ((i = 0; i < NODES; i++)); do
		code="$(api_code POST /api/v1/nodes "$(node_json "$KWOK_NODE_PREFIX$i")")"
		case "$code" in 201 | 409) ;; *) die "creating Node $KWOK_NODE_PREFIX$i: HTTP $code" ;; esac
	done
}

kwok_launch() {
	local port="${1:-$(free_port)}"
	mkdir -p "$TE/kwok"
	echo "$port" >"$TE/kwok/port"
	ensure_nodes
	# KWOK_WORKDIR: KWOK also loads ~/.kwok/kwok.yaml when it exists; not here
	KWOK_WORKDIR="$TE/kwok" start_daemon kwok "$KWOK_BIN" \
		--kubeconfig="$KUBECONFIG_FILE" \
		--config="$KWOK_STAGES" \
		--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
		--node-lease-duration-seconds=40 \
		--cidr="$POD_CIDR" \
		--server-address="127.0.0.1:$port"
}

# nodes_ready: kwok-node-0 ... kwok-node-(NODES-1) all have the condition Ready=True
nodes_ready() {
	APIPATH='/api/v1/nodes?labelSelector=type%3Dkwok' apiserver_curl 2>/dev/null | py -c '
import json, sys
want = {sys.argv[1] + str(i) for i in range(int(sys.argv[2]))}
ready = {
    n["metadata"]["name"]
    for n in json.load(sys.stdin).get("items", [])
    if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
}
sys.exit(0 if want <= ready else 1)' "$KWOK_NODE_PREFIX" "$NODES" 2>/dev/null
}

kwok_probe() {
	[ "$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port_of kwok)/healthz" 2>/dev/null)" = 200 ] &&
		nodes_ready
}

kwok_diagnose() {
	echo "---- nodes ----"
	APIPATH=/api/v1/nodes apiserver_curl | py -c '
import json, sys
for n in json.load(sys.stdin).get("items", []):
    c = {x["type"]: x["status"] for x in n.get("status", {}).get("conditions", [])}
    print(n["metadata"]["name"], "Ready=" + c.get("Ready", "?"))'
}

kwok_describe() { echo "$NODES nodes Ready (${KWOK_NODE_PREFIX}0..$((NODES - 1))), http://127.0.0.1:$(port_of kwok)/healthz"; }
