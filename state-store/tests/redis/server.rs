//! A `redis-server` process per test, on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use state_store::RedisOptions;

/// A `redis-server` child process, killed on drop.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    dir: tempfile::TempDir,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server, or returns `None` when Redis tests are skipped.
    pub(crate) async fn start(extra: &[&str]) -> Option<RedisServer> {
        Self::start_with(extra, None).await
    }

    pub(crate) async fn start_with(extra: &[&str], password: Option<&str>) -> Option<RedisServer> {
        if !on_path("redis-server") {
            if std::env::var("EPCHECK_SKIP_REDIS_TESTS").as_deref() == Ok("1") {
                eprintln!("skipping: redis-server is not on PATH and EPCHECK_SKIP_REDIS_TESTS=1");
                return None;
            }
            panic!(
                "redis-server is not on PATH: install it with `apt-get install -y redis-server` \
                 (or set EPCHECK_SKIP_REDIS_TESTS=1 to skip the Redis tests)"
            );
        }
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(pw) = password {
            args.extend(["--requirepass".into(), pw.into()]);
        }
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            args,
            dir: tempfile::tempdir().unwrap(),
            password: password.map(str::to_owned),
        };
        server.spawn().await;
        Some(server)
    }

    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn options(&self) -> RedisOptions {
        RedisOptions {
            password: self.password.clone().map(SecretString::from),
            ..RedisOptions::new(self.address())
        }
    }

    async fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let tls = self.args.iter().any(|a| a == "--tls-port");
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", if tls { "0" } else { &port }])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(
                self.args
                    .iter()
                    .map(|a| if a == "PORT" { &port } else { a }),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(command.spawn().expect("spawning redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.address())
            .await
            .is_err()
        {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "redis-server on port {} did not start ({exited:?}):\n{log}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (like a crash); its data is gone.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: its sockets stay open but nothing
    /// answers, like a host behind a network partition.
    pub(crate) fn freeze(&self, frozen: bool) {
        let pid = self
            .child
            .as_ref()
            .expect("server running")
            .id()
            .to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Starts the server again on the same port with the same arguments.
    pub(crate) async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(pw) = &self.password {
            command.args(["--no-auth-warning", "-a", pw]);
        }
        let out = command.args(args).output().expect("running redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
        .unwrap_or(false)
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
