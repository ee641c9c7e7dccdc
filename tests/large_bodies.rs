//! Bodies are streamed, never buffered whole (DESIGN §4): 100 MiB each way
//! through the real binary, with the gateway's peak RSS far below the body
//! size. Each side pauses for a while mid-transfer, so a gateway without
//! backpressure would soak up the body in memory and fail the bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails loudly")]

mod support;

use std::time::Duration;

use support::{
    Echo, FakeUpstream, GatewayProcess, MIB, client_builder, pattern_body, pattern_spot_check, public_route,
};

const SIZE: u64 = 100 * MIB;

/// Peak RSS allowed for the gateway process, in KiB. A debug build with two
/// workers starts at about 16 MiB and peaks near 19 MiB moving 100 MiB (each
/// test prints its numbers); buffering the download whole measured 118 MiB.
const PEAK_RSS_LIMIT_KIB: u64 = 48 * 1024;

/// Pinned, so the bound does not depend on the machine's core count.
const SERVER: &str = "worker_threads = 2";

fn client() -> reqwest::Client {
    client_builder().timeout(Duration::from_secs(90)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_100_mib_streams_through_the_binary() {
    // The upstream waits before reading the body: the gateway must hold the
    // client back instead of reading ahead.
    let up = FakeUpstream::new("sink").slow("/upload", Duration::from_secs(1)).start().await;
    let gw = GatewayProcess::start(SERVER, &public_route("app", &up.url())).await;
    let idle = gw.peak_rss_kib();

    let resp = client()
        .post(gw.url("/upload/big.bin"))
        .header("content-length", SIZE)
        .body(pattern_body(SIZE))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Echo = resp.json().await.unwrap();
    assert_eq!(echo.body_bytes, SIZE);
    assert!(echo.pattern_ok, "body corrupted on the way");

    let peak = gw.peak_rss_kib();
    eprintln!("upload 100 MiB: gateway VmHWM idle {idle} KiB, peak {peak} KiB");
    assert!(peak < PEAK_RSS_LIMIT_KIB, "gateway peak RSS {peak} KiB (idle {idle} KiB) for a {SIZE}-byte upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_100_mib_streams_through_the_binary() {
    let up = FakeUpstream::new("files").download("/big.bin", SIZE).start().await;
    let gw = GatewayProcess::start(SERVER, &public_route("app", &up.url())).await;
    let idle = gw.peak_rss_kib();

    let mut resp = client().get(gw.url("/big.bin")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(SIZE));
    let mut received = 0u64;
    let mut paused = false;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        assert!(pattern_spot_check(received, &chunk), "corrupt chunk at offset {received}");
        received += chunk.len() as u64;
        if !paused && received >= MIB {
            // A slow reader: the upstream could send the rest meanwhile, and
            // the gateway must not take it.
            paused = true;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    assert_eq!(received, SIZE);

    let peak = gw.peak_rss_kib();
    eprintln!("download 100 MiB: gateway VmHWM idle {idle} KiB, peak {peak} KiB");
    assert!(peak < PEAK_RSS_LIMIT_KIB, "gateway peak RSS {peak} KiB (idle {idle} KiB) for a {SIZE}-byte download");
}
