#!/usr/bin/env bash
# Builds the Bitnami sealed-secrets controller and kubeseal (the benchmark peers) from the
# Go module proxy, with the machine's Go. No peer source is kept in this repository.
#   tools/peers/build-sealed-secrets.sh        prints the directory holding both binaries
# Builds only when a binary is missing. Output: $SEALCRED_CACHE_DIR/peers/sealed-secrets-$VERSION/
set -euo pipefail
VERSION="${SEALED_SECRETS_VERSION:-v0.36.6}"
CACHE="${SEALCRED_CACHE_DIR:-$HOME/.cache/sealcred}"
export GOMODCACHE="${SEALCRED_GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${SEALCRED_GOCACHE:-$CACHE/go/build}"
export GOFLAGS=-mod=mod GO111MODULE=on CGO_ENABLED=0
DIR="$CACHE/peers/sealed-secrets-$VERSION"
MOD=github.com/bitnami-labs/sealed-secrets
mkdir -p "$DIR"
for cmd in controller kubeseal; do
  [[ -x "$DIR/$cmd" ]] && continue
  command -v go >/dev/null || { echo "go not found: needed to build sealed-secrets $cmd" >&2; exit 1; }
  echo "building sealed-secrets $cmd $VERSION (go install, once)..." >&2
  tmp="$(mktemp -d "$DIR/.build.XXXXXX")"
  start=$SECONDS
  # Upstream's release flags: -trimpath, version stamped into main.VERSION.
  if ! GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X main.VERSION=$VERSION" \
        "$MOD/cmd/$cmd@$VERSION" >"$DIR/build-$cmd.log" 2>&1; then
    tail -20 "$DIR/build-$cmd.log" >&2; rm -rf "$tmp"; exit 1
  fi
  mv "$tmp/$cmd" "$DIR/$cmd"; rm -rf "$tmp"
  echo "built $cmd in $((SECONDS - start)) s" | tee -a "$DIR/build-$cmd.log" >&2
done
# The CRD, from the module cache (go install just downloaded the module).
crd="$DIR/sealedsecret-crd.yaml"
if [[ ! -s "$crd" ]]; then
  src="$(go mod download -json "$MOD@$VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')"
  cp "$src/helm/sealed-secrets/crds/bitnami.com_sealedsecrets.yaml" "$crd.tmp" && mv "$crd.tmp" "$crd"
fi
echo "$DIR"
