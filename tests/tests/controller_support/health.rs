//! The two GitOps health readings of an object: kstatus (sigs.k8s.io/cli-utils,
//! what Flux uses; tools/kstatus) and the Argo CD Lua check (deploy/argocd/health.lua,
//! in a real Lua 5.1).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use kube::api::Api;
use sealcred_shared::crd::SealedStorageCred;

/// The kstatus tool: `SEALCRED_KSTATUS`, else built (once, cached) by tools/kstatus/build.
fn kstatus_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SEALCRED_KSTATUS") {
            return PathBuf::from(p);
        }
        let out = Command::new(sealcred_tests::repo_root().join("tools/kstatus/build"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running tools/kstatus/build");
        assert!(out.status.success(), "tools/kstatus/build failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// kstatus of `obj`: (status, message), e.g. ("Current", "Resource is Ready").
pub fn kstatus(obj: &serde_json::Value) -> (String, String) {
    let mut child = Command::new(kstatus_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting kstatus");
    let mut line = serde_json::to_vec(obj).unwrap();
    line.push(b'\n');
    child.stdin.take().unwrap().write_all(&line).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kstatus failed on {obj}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (s, m) = text.trim_end().split_once('\t').expect("STATUS\\tMESSAGE");
    (s.to_string(), m.to_string())
}

fn script() -> String {
    std::fs::read_to_string(sealcred_tests::repo_root().join("deploy/argocd/health.lua")).unwrap()
}

/// Runs the Argo CD health check on `obj` (as Argo CD does: the object as the
/// global `obj`); returns (status, message).
pub fn argocd_health(obj: &serde_json::Value) -> (String, String) {
    use mlua::LuaSerdeExt;
    let lua = mlua::Lua::new();
    lua.globals()
        .set("obj", lua.to_value(obj).unwrap())
        .unwrap();
    let hs: mlua::Table = lua.load(script()).eval().unwrap();
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

/// The live object, as JSON.
pub async fn live(client: &kube::Client, ns: &str, name: &str) -> serde_json::Value {
    let o = Api::<SealedStorageCred>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    serde_json::to_value(o).unwrap()
}

/// The object's condition `type_` as (status, reason, message), if any.
pub fn condition(obj: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
}
