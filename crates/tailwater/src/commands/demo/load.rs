//! The demo's clients: a gentle stream of requests to each GPU runner,
//! through its agent's proxy, as a platform's queue would send them. Each
//! waits until the runner's `/healthz` says ready, sends one request at a
//! time with an id of its own (`req-a100-1-0007`: the runner, then a
//! number), and waits `interval` between them.
//!
//! What the requests ask makes the demo's story: on `gpu-a100-1` every
//! seventh asks with a prompt too long for the text encoder (a traceback and
//! a 500: `req-a100-1-0007`, `…-0014`); on `gpu-a100-2` the ninth asks for a
//! batch larger than the GPU holds, once (its worker is OOM-killed, and the
//! runner comes back as a new boot).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;

use super::worker::{every, Generate, MAX_BATCH, MAX_PROMPT_TOKENS};

/// What the client of one runner asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every seventh request has a prompt that is too long.
    LongPromptEvery7th,
    /// The ninth request asks for too large a batch, once.
    LargeBatchAt9th,
}

const PROMPTS: [&str; 4] = [
    "a lighthouse on a cliff at dusk, oil painting",
    "an astronaut riding a horse, photorealistic, 35mm",
    "a bowl of ramen, studio lighting, top-down",
    "a fox in the snow, watercolor",
];

impl Plan {
    /// The body of request `n` (from 1); `large_batch_sent`: whether this
    /// client already sent its one large batch.
    pub fn ask(self, n: u64, large_batch_sent: bool) -> Generate {
        let prompt = PROMPTS[(n % PROMPTS.len() as u64) as usize];
        match self {
            Plan::LongPromptEvery7th if every(n, 7) => Generate {
                prompt: std::iter::repeat_n(prompt, 2 + MAX_PROMPT_TOKENS / 6)
                    .collect::<Vec<_>>()
                    .join(", "),
                steps: 4,
                batch: 1,
            },
            Plan::LargeBatchAt9th if n == 9 && !large_batch_sent => Generate {
                prompt: prompt.into(),
                steps: 4,
                batch: 2 * MAX_BATCH,
            },
            _ => Generate {
                prompt: prompt.into(),
                steps: 4,
                batch: 1,
            },
        }
    }
}

/// The id of request `n` to the runner whose short name is `short`
/// (`a100-1`).
pub fn request_id(short: &str, n: u64) -> String {
    format!("req-{short}-{n:04}")
}

/// Sends requests to the runner's proxy (where its agent now says it
/// listens) until the task is aborted.
pub async fn drive(
    mut proxy: watch::Receiver<Option<SocketAddr>>,
    short: &'static str,
    plan: Plan,
    interval: Duration,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a plain HTTP client builds");
    let mut large_batch_sent = false;
    for n in 1u64.. {
        let base = wait_until_ready(&client, &mut proxy).await;
        let ask = plan.ask(n, large_batch_sent);
        large_batch_sent |= ask.batch > MAX_BATCH;
        // Any answer, or none (a worker killed mid-request): on to the next.
        let sent = client
            .post(format!("{base}/generate"))
            .header("x-request-id", request_id(short, n))
            .json(&ask)
            .send()
            .await;
        if let Ok(response) = sent {
            let _ = response.bytes().await;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Until the runner has a proxy and its `/healthz` (the agent's proxy
/// asking the worker's health check) answers 2xx; the proxy's URL.
async fn wait_until_ready(
    client: &reqwest::Client,
    proxy: &mut watch::Receiver<Option<SocketAddr>>,
) -> String {
    loop {
        let address = *proxy.borrow_and_update();
        if let Some(address) = address {
            let base = format!("http://{address}");
            let answer = client.get(format!("{base}/healthz")).send().await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                return base;
            }
        }
        // A new agent's address, or a moment (the demo stopping drops the
        // sender: then only the moment).
        let pause = Duration::from_millis(200);
        if let Ok(Err(_)) = tokio::time::timeout(pause, proxy.changed()).await {
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_story_is_in_the_requests() {
        let long = Plan::LongPromptEvery7th;
        assert!(long.ask(7, false).prompt.split_whitespace().count() > MAX_PROMPT_TOKENS);
        assert!(long.ask(14, false).prompt.split_whitespace().count() > MAX_PROMPT_TOKENS);
        assert!(long.ask(6, false).prompt.split_whitespace().count() <= MAX_PROMPT_TOKENS);
        let large = Plan::LargeBatchAt9th;
        assert!(large.ask(9, false).batch > MAX_BATCH);
        assert_eq!(large.ask(9, true).batch, 1, "once");
        assert_eq!(large.ask(8, false).batch, 1);
        assert_eq!(request_id("a100-1", 7), "req-a100-1-0007");
    }
}
