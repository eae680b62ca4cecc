//! A private moto server for one test ([`PrivateMoto`]): KMS, STS and IAM on
//! 127.0.0.1, optionally over HTTPS with a fresh test CA, optionally
//! enforcing IAM (SigV4 signatures checked, policies and role trust applied).
//!
//! The shared test environment's moto (scripts/testenv) accepts any
//! credentials; a test that must prove *which* credentials signed a request
//! (a `credential_process`, a role assumed through STS) or that needs TLS
//! starts one of these. The server is `tests/moto/private_moto.py` run by
//! the test environment's venv; it exits when dropped (its stdin closes), so
//! a test that panics leaves no server behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// How to start a [`PrivateMoto`].
#[derive(Debug, Default, Clone, Copy)]
pub struct MotoOptions {
    /// Serve HTTPS with a certificate for 127.0.0.1 from a fresh test CA.
    pub tls: bool,
    /// Enforce IAM after the setup (users `sealer`, `base`, role `sealer-role`).
    pub iam: bool,
}

/// An IAM user's access key, created by the setup.
#[derive(Debug, Clone)]
pub struct AccessKey {
    /// The access key id.
    pub id: String,
    /// The secret access key (a test value).
    pub secret: String,
}

/// A running private moto server.
#[derive(Debug)]
pub struct PrivateMoto {
    child: Child,
    stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
    info: serde_json::Value,
}

impl PrivateMoto {
    /// Starts a server (about 2 s: Python, moto and the setup) and waits until
    /// it is ready. Needs the test environment's venv (`TestEnv::get()` first).
    pub fn start(root: &Path, opts: MotoOptions) -> PrivateMoto {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log");
        let mut cmd = Command::new(root.join(".venv/bin/python"));
        cmd.arg(root.join("tests/moto/private_moto.py"));
        if opts.tls {
            cmd.arg("--tls").arg(dir.path());
        }
        if opts.iam {
            cmd.arg("--iam");
        }
        let mut child = cmd
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start tests/moto/private_moto.py");
        let stdin = child.stdin.take();
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let info: serde_json::Value = match read {
            Ok(n) if n > 0 => serde_json::from_str(&line).expect("private moto's JSON line"),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default();
                panic!("private moto did not start:\n{log}");
            }
        };
        PrivateMoto {
            child,
            stdin,
            dir,
            info,
        }
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        self.info["endpoint"].as_str().expect("endpoint")
    }

    /// The PEM file of the test CA (for `SSL_CERT_FILE`), when serving TLS.
    pub fn ca(&self) -> Option<PathBuf> {
        self.info["ca"].as_str().map(PathBuf::from)
    }

    /// The ARN of the KMS key the setup created.
    pub fn key_arn(&self) -> &str {
        self.info["key_arn"].as_str().expect("key_arn")
    }

    /// The ARN of role `sealer-role` (IAM setup only).
    pub fn role_arn(&self) -> &str {
        self.info["role_arn"]
            .as_str()
            .expect("role_arn (start with iam)")
    }

    /// The access key of IAM user `sealer` (kms:*) or `base` (only
    /// sts:AssumeRole on `sealer-role`); IAM setup only.
    pub fn access_key(&self, user: &str) -> AccessKey {
        let k = &self.info[user];
        AccessKey {
            id: k["access_key_id"].as_str().expect("access key id").into(),
            secret: k["secret_access_key"].as_str().expect("secret").into(),
        }
    }

    /// A scratch directory that lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// moto's model data (`/moto-api/data.json`): what it recorded, e.g.
    /// `["sts"]["AssumedRole"]`. Plain HTTP servers only.
    pub fn model_data(&self) -> serde_json::Value {
        let port = self.info["port"].as_u64().expect("port");
        assert!(self.ca().is_none(), "model_data reads plain HTTP only");
        let mut s = TcpStream::connect(("127.0.0.1", port as u16)).expect("connect to moto");
        write!(
            s,
            "GET /moto-api/data.json HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        )
        .expect("request");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("response");
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).expect("moto model data JSON")
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        drop(self.stdin.take()); // the server exits on EOF
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            if !matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}
