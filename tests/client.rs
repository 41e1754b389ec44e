//! bsmount's API client against the emulator (and two deliberately broken servers).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bsmount::api::{ApiError, BaseSpaceApi, Credentials, HttpClient, ListKind, RetryPolicy, Token};
use bsmount::emulator::source::{synthetic, SyntheticSpec};
use bsmount::emulator::{EmulatorOptions, NetProfile};
use common::Emu;

fn spec(s: &str) -> bsmount::emulator::Account {
    synthetic(&s.parse::<SyntheticSpec>().unwrap())
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        deadline: Duration::from_secs(20),
        request_timeout: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

fn client(server: &str, token: &str, policy: RetryPolicy) -> HttpClient {
    HttpClient::new(
        Credentials {
            api_server: server.to_string(),
            token: Token::new(token),
            source: "test".into(),
        },
        policy,
    )
    .unwrap()
}

#[test]
fn lists_every_page_of_a_large_run_concurrently() {
    let e = Emu::start(
        spec("projects=1,samples=1,runs=1,run_files=2500,run_file_size=1K"),
        EmulatorOptions::default(),
    );
    let c = client(&e.base, &e.token, fast_policy());
    e.rt.block_on(async {
        let runs = c.list_entities(ListKind::Runs).await.unwrap().items;
        let rid = runs[0].entity.id.clone();
        let before = e_stats_api(&e).await;
        let files = c.list_files(ListKind::RunFiles(rid)).await.unwrap().items;
        assert_eq!(files.len(), 2500);
        let mut ids: Vec<&str> = files.iter().map(|f| f.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 2500);
        // 1000 per page: 3 requests, not 250.
        assert_eq!(e_stats_api(&e).await - before, 3);
    });
}

async fn e_stats_api(e: &Emu) -> u64 {
    let v: serde_json::Value = serde_json::from_str(
        &reqwest::get(e.url("_emulator/stats"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    v["api_requests"].as_u64().unwrap()
}

#[test]
fn pages_short_of_the_limit_are_completed() {
    // A server that never returns more than 7 items, whatever Limit says.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(async {
        let app = axum::Router::new().fallback(|q: axum::extract::RawQuery| async move {
            let q = q.0.unwrap_or_default();
            let off: usize = q.split('&').find_map(|kv| kv.strip_prefix("Offset=")).unwrap().parse().unwrap();
            let items: Vec<_> = (off..(off + 7).min(30)).map(|i| serde_json::json!({"Id": (1000 + i).to_string(), "Name": format!("p{i}")})).collect();
            serde_json::json!({"Response": {"Items": items, "DisplayedCount": items.len(), "TotalCount": 30, "Offset": off, "Limit": 7}, "ResponseStatus": {}, "Notifications": []}).to_string()
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        a
    });
    let c = client(&format!("http://{addr}"), "t", fast_policy());
    let items = rt.block_on(c.list_entities(ListKind::Projects)).unwrap().items;
    let mut ids: Vec<String> = items.iter().map(|v| v.entity.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);
}

#[test]
fn retries_through_injected_faults() {
    let e = Emu::with_net(
        spec("projects=2,samples=3,sample_files=2,sample_file_size=2M"),
        NetProfile {
            fail_rate: 0.3,
            throttle_rate: 0.1,
            reset_rate: 0.3,
            seed: 11,
            ..Default::default()
        },
    );
    let c = client(&e.base, &e.token, fast_policy());
    let m = e.manifest();
    e.rt.block_on(async {
        for _ in 0..5 {
            assert_eq!(c.list_entities(ListKind::Projects).await.unwrap().items.len(), 2);
        }
        for f in m.iter().take(4) {
            let id = f["id"].as_str().unwrap();
            let meta = c.content_meta(id).await.unwrap();
            let size = f["size"].as_u64().unwrap();
            let body = c.get_range(&meta.href_content, 0, size).await.unwrap();
            assert_eq!(format!("{:x}", md5::Md5::digest(&body)), f["md5"].as_str().unwrap());
        }
    });
    assert!(
        c.stats.retries.load(Ordering::Relaxed) > 0,
        "faults were injected, so something was retried"
    );
}

use md5::Digest;

#[test]
fn gives_up_after_the_attempt_bound() {
    let e = Emu::with_net(
        spec("projects=1"),
        NetProfile {
            fail_rate: 1.0,
            ..Default::default()
        },
    );
    let c = client(
        &e.base,
        &e.token,
        RetryPolicy {
            max_attempts: 4,
            ..fast_policy()
        },
    );
    let err = e.rt.block_on(c.list_entities(ListKind::Projects)).unwrap_err();
    assert!(matches!(err, ApiError::Server { attempts: 4, .. }), "{err:?}");
    assert_eq!(e.stats()["api_requests"].as_u64(), Some(4));
}

#[test]
fn a_server_that_never_answers_fails_in_bounded_time() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Accepts connections and never replies.
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        a
    });
    let policy = RetryPolicy {
        request_timeout: Duration::from_millis(300),
        deadline: Duration::from_secs(2),
        ..fast_policy()
    };
    let c = client(&format!("http://{addr}"), "t", policy);
    let t = Instant::now();
    let err = rt.block_on(c.list_entities(ListKind::Projects)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(4), "took {:?}", t.elapsed());
    assert!(
        matches!(err, ApiError::Transport { .. } | ApiError::Deadline { .. }),
        "{err:?}"
    );
    // Nothing listening at all: also bounded.
    let closed = {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let c = client(
        &format!("http://{closed}"),
        "t",
        RetryPolicy {
            deadline: Duration::from_secs(1),
            ..fast_policy()
        },
    );
    let t = Instant::now();
    assert!(rt.block_on(c.list_entities(ListKind::Projects)).is_err());
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn client_errors_are_typed_not_retried_and_never_show_the_token() {
    let e = Emu::start(
        spec("projects=1"),
        EmulatorOptions {
            token: Some("TOPSECRET-TOKEN".into()),
            ..Default::default()
        },
    );
    let bad = client(&e.base, "WRONG-TOKEN-VALUE", fast_policy());
    let err = e.rt.block_on(bad.list_entities(ListKind::Projects)).unwrap_err();
    assert!(matches!(err, ApiError::Unauthorized { .. }), "{err:?}");
    assert_eq!(e.stats()["api_requests"].as_u64(), Some(1), "401 is not retried");
    assert!(err.to_string().contains("bsmount auth"), "{err}");
    let good = client(&e.base, "TOPSECRET-TOKEN", fast_policy());
    let err = e.rt.block_on(good.content_meta("11111111111")).unwrap_err();
    assert!(
        matches!(&err, ApiError::Forbidden { code: Some(c), .. } if c == "BASESPACE.COMMON.INSUFFICIENT_RESOURCE_PERMISSIONS"),
        "{err:?}"
    );
    for msg in [err.to_string(), format!("{err:?}"), format!("{good:?}")] {
        assert!(!msg.contains("TOPSECRET"), "token leaked: {msg}");
    }
}

#[test]
fn ranged_reads_are_exact_and_expired_urls_are_reported() {
    let e = Emu::start(
        spec("projects=1,samples=1,sample_files=1,sample_file_size=3M"),
        EmulatorOptions::default(),
    );
    let c = client(&e.base, &e.token, fast_policy());
    let f = &e.manifest()[0];
    let data = e.content(f["id"].as_str().unwrap());
    e.rt.block_on(async {
        let meta = c.content_meta(f["id"].as_str().unwrap()).await.unwrap();
        for (start, len) in [
            (0u64, 1u64),
            (data.len() as u64 - 1, 1),
            (12345, 1 << 20),
            (0, data.len() as u64),
        ] {
            let b = c.get_range(&meta.href_content, start, len).await.unwrap();
            assert_eq!(&b[..], &data[start as usize..(start + len) as usize]);
        }
    });
    let e0 = Emu::start(
        spec("projects=1,samples=1,sample_files=1,sample_file_size=1K"),
        EmulatorOptions {
            url_ttl: Duration::ZERO,
            ..Default::default()
        },
    );
    let c0 = client(&e0.base, &e0.token, fast_policy());
    let id = e0.manifest()[0]["id"].as_str().unwrap().to_string();
    let err = e0.rt.block_on(async {
        let meta = c0.content_meta(&id).await.unwrap();
        c0.get_range(&meta.href_content, 0, 10).await.unwrap_err()
    });
    assert!(matches!(err, ApiError::UrlExpired), "{err:?}");
}
