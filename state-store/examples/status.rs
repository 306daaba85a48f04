//! Prints what a store holds, the way `epcheck status` reads it.
//!
//! `cargo run -p state-store --example status` fills a memory store with a little history and
//! prints it; with the `redis` feature, `-- ADDRESS [PREFIX]` reads a Redis store instead
//! (`EPCHECK_REDIS_PASSWORD` for the password).

use std::sync::Arc;

use state_store::{
    AppliedRecord, Health, MemoryStore, SCHEMA_VERSION, StateStore, TargetRecord, TransitionEvent,
    now_ms,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut message = format!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let store = open().await?;
    println!("store: {}", store.kind());
    let now = now_ms();
    for service in store.services().await? {
        println!("{service}");
        for t in store.load_targets(&service).await? {
            let error = t.last_error.as_deref().unwrap_or("-");
            let since = now.saturating_sub(t.since) / 1000;
            println!(
                "  {:<10} {:<16} {:<7} {since:>5} s  {error}",
                t.name, t.ip, t.state
            );
        }
        if let Some(a) = store.load_applied(&service).await? {
            println!("  applied ready={:?} not_ready={:?}", a.ready, a.not_ready);
        }
    }
    println!("recent transitions:");
    for e in store.recent_events(None, 10).await? {
        println!(
            "  {} {}/{} {} -> {}",
            e.at, e.service, e.target, e.from, e.to
        );
    }
    Ok(())
}

#[cfg(feature = "redis")]
async fn open() -> Result<Arc<dyn StateStore>, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(address) = args.next() else {
        return demo().await;
    };
    let options = state_store::RedisOptions {
        password: std::env::var("EPCHECK_REDIS_PASSWORD").ok().map(Into::into),
        key_prefix: args
            .next()
            .unwrap_or_else(|| state_store::DEFAULT_KEY_PREFIX.into()),
        ..state_store::RedisOptions::new(address)
    };
    Ok(Arc::new(state_store::RedisStore::connect(options).await?))
}

#[cfg(not(feature = "redis"))]
async fn open() -> Result<Arc<dyn StateStore>, Box<dyn std::error::Error>> {
    demo().await
}

/// A memory store with two targets, one of which went down.
async fn demo() -> Result<Arc<dyn StateStore>, Box<dyn std::error::Error>> {
    let store = MemoryStore::new();
    let mut up = TargetRecord::new("redis", "node-01", "198.51.100.10".parse()?, 38080);
    up.state = Health::Up;
    let mut down = TargetRecord::new("redis", "node-02", "198.51.100.11".parse()?, 38080);
    down.state = Health::Down;
    down.last_error = Some("connection refused".into());
    store.save_targets("redis", &[up, down.clone()]).await?;
    store
        .save_applied(
            "redis",
            &AppliedRecord {
                schema: SCHEMA_VERSION,
                ready: vec!["198.51.100.10".into()],
                not_ready: vec!["198.51.100.11".into()],
                resource_version: Some("812".into()),
                applied_at: now_ms(),
            },
        )
        .await?;
    store
        .append_event(&TransitionEvent {
            schema: SCHEMA_VERSION,
            service: "redis".into(),
            target: down.name.clone(),
            ip: down.ip,
            from: Health::Up,
            to: Health::Down,
            at: now_ms(),
            error: down.last_error.clone(),
        })
        .await?;
    Ok(Arc::new(store))
}
