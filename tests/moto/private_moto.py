"""A private moto server for one test: KMS, STS and IAM on 127.0.0.1.

Started by tests/src/moto.rs (`PrivateMoto`), never by hand. Unlike the shared
test environment's moto (scripts/testenv), this one can

  --tls DIR   serve HTTPS with a certificate for 127.0.0.1 signed by a fresh
              test CA (DIR/ca.pem, for SSL_CERT_FILE);
  --iam       enforce IAM: every request after the setup must be signed
              (SigV4, checked) by a known access key whose policies allow the
              action. The setup creates
                user `sealer`  (kms:*),
                user `base`    (only sts:AssumeRole on role `sealer-role`),
                role `sealer-role` (kms:*; trusts only user `base`: moto
                                    checks the trust policy on AssumeRole),
              and prints their access keys.

It always creates one symmetric KMS key. It binds port 0, prints one JSON line
on stdout (port, key ARN, CA path, keys), serves on a thread, and exits when
its stdin closes (the test process died or dropped it): no orphaned servers.
"""

import argparse
import datetime
import ipaddress
import json
import os
import sys
import threading

from werkzeug.serving import make_server

from moto import settings
from moto.core.responses import ActionAuthenticatorMixin
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

REGION = "us-east-1"
ACCOUNT = "123456789012"


def make_pki(directory):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealcred test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {n: os.path.join(directory, n + ".pem") for n in ("ca", "cert", "key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


def allow(actions, resource="*"):
    return json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resource}]}
    )


def setup(endpoint, verify, iam):
    import boto3

    def client(service):
        return boto3.client(
            service, region_name=REGION, endpoint_url=endpoint, verify=verify,
            aws_access_key_id="setup", aws_secret_access_key="setup",
        )

    out = {"key_arn": client("kms").create_key(Description="sealcred private moto key")[
        "KeyMetadata"]["Arn"]}
    if not iam:
        return out
    iam_c = client("iam")
    role_arn = iam_c.create_role(
        RoleName="sealer-role",
        AssumeRolePolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/base"}}]}
        ),
    )["Role"]["Arn"]
    iam_c.put_role_policy(RoleName="sealer-role", PolicyName="kms", PolicyDocument=allow("kms:*"))
    for user, policy in (("sealer", allow("kms:*")), ("base", allow("sts:AssumeRole", role_arn))):
        iam_c.create_user(UserName=user)
        iam_c.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=policy)
        k = iam_c.create_access_key(UserName=user)["AccessKey"]
        out[user] = {"access_key_id": k["AccessKeyId"], "secret_access_key": k["SecretAccessKey"]}
    out["role_arn"] = role_arn
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tls", metavar="DIR")
    ap.add_argument("--iam", action="store_true")
    args = ap.parse_args()

    ssl_context, ca = None, None
    if args.tls:
        paths = make_pki(args.tls)
        ssl_context, ca = (paths["cert"], paths["key"]), paths["ca"]
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler,
        ssl_context=ssl_context,
    )
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    endpoint = f"{'https' if ca else 'http'}://127.0.0.1:{port}"
    info = setup(endpoint, ca or True, args.iam)
    if args.iam:
        # From now on every request is authenticated and authorized.
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        ActionAuthenticatorMixin.request_count = 0
    info.update({"port": port, "endpoint": endpoint, "ca": ca})
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
