//! SIGHUP reload of the binary (DESIGN §7): a valid new config replaces the
//! old one without dropping connections; an invalid one is reported and the
//! old one keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use support::{Echo, FakeUpstream, GatewayProcess, OneConnection, admin_metrics, metric};

fn route(id: &str, prefix: &str, upstream: &str) -> String {
    format!("[[routes]]\nid = \"{id}\"\npath_prefix = \"{prefix}\"\nupstream = \"{upstream}\"\npublic = true\n")
}

async fn get(conn: &mut OneConnection, path: &str) -> (u16, Option<Echo>) {
    let (status, body) = conn.get(path).await;
    (status.as_u16(), serde_json::from_slice(&body).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_in_a_valid_config_and_keeps_the_old_one_on_errors() {
    let old = FakeUpstream::new("old").start().await;
    let new = FakeUpstream::new("new").start().await;
    let mut gw = GatewayProcess::start("", &route("old", "/old/", &old.url())).await;
    let admin = gw.admin_addr.unwrap();
    // One keep-alive connection for the whole test: reloads must not drop it.
    let mut conn = OneConnection::open(gw.addr).await;

    let (status, echo) = get(&mut conn, "/old/a").await;
    assert_eq!(status, 200);
    assert_eq!(echo.unwrap().upstream, "old");

    // A valid config: the old route goes, a new one to another upstream comes.
    gw.rewrite_config("", &route("new", "/new/", &new.url()));
    gw.signal("HUP");
    gw.wait_for_log("configuration reloaded").await;
    let (status, echo) = get(&mut conn, "/new/b").await;
    assert_eq!(status, 200);
    let echo = echo.unwrap();
    assert_eq!(echo.upstream, "new");
    assert_eq!(echo.uri, "/new/b");
    let (status, _) = get(&mut conn, "/old/a").await;
    assert_eq!(status, 404, "the removed route still answers");

    // Invalid TOML keys: refused, the previous config keeps serving.
    gw.rewrite_config("", &format!("{}unknown_key = 1\n", route("broken", "/broken/", &old.url())));
    gw.signal("HUP");
    let refused = gw.wait_for_log("reload refused").await;
    assert!(refused.contains("unknown_key"), "{refused}");
    let (status, echo) = get(&mut conn, "/new/c").await;
    assert_eq!(status, 200);
    assert_eq!(echo.unwrap().upstream, "new");

    // Valid as a file, but not as a reload (TLS cannot be switched on live):
    // refused too, still serving.
    gw.rewrite_config(
        "tls = { cert = \"/nonexistent/gateway.crt\", key = \"/nonexistent/gateway.key\" }",
        &route("tls", "/", &old.url()),
    );
    gw.signal("HUP");
    let refused = gw.wait_for_nth_log("reload refused", 2).await;
    assert!(refused.contains("server.tls"), "{refused}");
    let (status, echo) = get(&mut conn, "/new/d").await;
    assert_eq!(status, 200);
    assert_eq!(echo.unwrap().upstream, "new");

    let metrics = admin_metrics(admin).await;
    assert_eq!(metric(&metrics, r#"porteiro_config_reloads_total{result="ok"}"#), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, r#"porteiro_config_reloads_total{result="error"}"#), Some(2.0), "{metrics}");
    // The connection above was the only one.
    assert_eq!(metric(&metrics, "porteiro_connections_total"), Some(1.0), "{metrics}");
    assert!(gw.running());
}
