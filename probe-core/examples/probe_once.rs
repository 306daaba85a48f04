//! Probes a few loopback addresses once and prints the outcomes as JSON lines.
//!
//! `cargo run -p probe-core --example probe_once`
//!
//! Starts its own listeners on 127.0.0.1 (one that accepts, one that answers `+PONG`) and closes a
//! third so that its port refuses, so it never sends traffic anywhere else.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use probe_core::{
    Check, Expect, Prober, ProberOptions, Target, TcpCheck, effective_concurrency,
    raise_nofile_limit,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit = raise_nofile_limit()?;
    let prober = Prober::new(ProberOptions {
        timeout: Duration::from_millis(500),
        concurrency: effective_concurrency(64, &limit),
    });

    // An accepting listener; a `+PONG` responder; a port with nothing listening.
    let accepting = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let accepting_addr = accepting.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = accepting.accept().await {
            drop(stream);
        }
    });
    let pong = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let pong_addr = pong.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = pong.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                    let _ = stream.write_all(b"+PONG\r\n").await;
                }
            });
        }
    });
    let refused_addr = {
        let reserve = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        reserve.local_addr()?
        // Dropped here: nothing listens on the port any more.
    };

    let plain = Arc::new(Check::tcp());
    let ping = Arc::new(Check::Tcp(TcpCheck::send_expect(
        Some("PING\r\n".into()),
        Some(Expect::parse("+PONG")?),
    )?));
    let master = Arc::new(Check::Tcp(TcpCheck::send_expect(
        Some("INFO replication\r\n".into()),
        Some(Expect::parse("/role:master/")?),
    )?));
    let item = |name: &str, addr: SocketAddr, check: &Arc<Check>| {
        let target = Target::new("demo", name, addr.ip(), addr.port());
        (target, Arc::clone(check))
    };
    let items = vec![
        item("accepting", accepting_addr, &plain),
        item("pong", pong_addr, &ping),
        item("not-master", pong_addr, &master),
        item("refused", refused_addr, &plain),
        item(
            "static",
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            &Arc::new(Check::Static),
        ),
    ];

    for ((target, check), outcome) in items.iter().zip(prober.probe_all(&items).await) {
        let line = serde_json::json!({
            "target": target,
            "check": check.kind(),
            "outcome": outcome,
        });
        println!("{line}");
    }
    Ok(())
}
