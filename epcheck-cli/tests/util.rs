//! Running the built `epcheck` binary in a scratch directory.
#![allow(missing_docs, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch working directory plus the binary.
pub struct Epcheck {
    pub dir: tempfile::TempDir,
}

impl Epcheck {
    pub fn new() -> Self {
        Epcheck {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file into the scratch directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// A command for the binary, run in the scratch directory with a clean config environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_epcheck"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("EPCHECK_CONFIG")
            .env_remove("EPCHECK_REDIS_PASSWORD")
            .env_remove("EPCHECK_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    /// [`run`](Self::run) without blocking the test's runtime (which serves the targets and
    /// the stand-in ApiServer meanwhile).
    pub async fn run_async(&self, args: &[&str]) -> Run {
        Run::from(
            tokio::process::Command::from(self.cmd(args))
                .output()
                .await
                .unwrap(),
        )
    }
}

/// The result of one run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// stdout and stderr together, for assertions on messages.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The seed config text.
pub fn seed() -> &'static str {
    fixtures::configs::SEED_CONFIG
}

pub fn seed_path() -> PathBuf {
    fixtures::configs::seed_config_path()
}

#[allow(dead_code)]
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A config with the keys in `top` and one service `web` (namespace `default`) whose backends
/// are `ips` on health-check port `port`, serving port 8080.
pub fn web_config(top: &str, port: u16, ips: &[String]) -> String {
    let mut iplist = String::new();
    for (i, ip) in ips.iter().enumerate() {
        iplist.push_str(&format!(
            "      - name: node-{:02}\n        ip: {ip}\n",
            i + 1
        ));
    }
    format!(
        "{top}
service_info:
  web:
    namespace: default
    name: web
service_healthcheck_list:
  web:
    port: {port}
    iplist:
{iplist}endpoint_template:
  kind: Endpoints
  apiVersion: v1
  metadata:
    name: web
    namespace: default
  subsets:
    - ports:
        - port: 8080
          protocol: TCP
"
    )
}
