//! User tokens from an OpenID Connect provider (`serve --oidc-issuer URL`): the
//! provider's discovery document (`<issuer>/.well-known/openid-configuration`) names its
//! key set (`jwks_uri`), both fetched over https and kept in the [`TokenVerifier`].
//!
//! Identity providers rotate their signing keys: a new key is published, then tokens are
//! signed with it, then the old key is withdrawn. So the key set is fetched again
//!
//! - when it is due: after the response's `Cache-Control: max-age`, bounded by the
//!   refresh interval above and the least interval below (the refresh interval without
//!   one);
//! - when a token names a key (`kid`) the set does not hold, at most once per least
//!   interval, whatever the number of such tokens, so that a flood of tokens with made-up
//!   `kid`s cannot make the host hammer the provider; tokens arriving while a fetch is
//!   under way wait for that one fetch.
//!
//! A fetch that fails keeps the keys already held (and is logged); the next is tried
//! after the least interval. A key the provider no longer publishes verifies nothing from
//! the fetch that drops it on. A host that could not fetch any key yet refuses every user
//! token, saying so, and serves service keys as ever.

use crate::auth::{KeyRing, TokenRules, TokenVerifier};
use jsonwebtoken::jwk::Jwk;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest discovery document or key set read.
const MAX_DOCUMENT: usize = 1 << 20;

/// How often, and how seldom, the key set is fetched.
#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    /// The longest a key set is kept before it is fetched again.
    pub max_age: Duration,
    /// The least time between two fetches, on an unknown `kid` or after a failure.
    pub min_interval: Duration,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            max_age: Duration::from_secs(3600),
            min_interval: Duration::from_secs(30),
        }
    }
}

/// An OpenID Connect provider whose keys verify user tokens.
pub struct Provider {
    issuer: String,
    client: reqwest::Client,
    refresh: Refresh,
    verifier: Arc<TokenVerifier>,
    /// When the last fetch was tried and when the next is due; held across a fetch, so
    /// that fetches never overlap and a token waiting for one waits for that one.
    fetched: tokio::sync::Mutex<Fetched>,
    fetches: std::sync::atomic::AtomicU64,
    /// Wakes the task that keeps the keys current when a fetch moved when the next is due.
    due_moved: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Fetched {
    tried: Option<Instant>,
    due: Option<Instant>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.issuer)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// A provider at `issuer` (an https URL, exactly as its tokens' `iss` names it), its
    /// tokens checked by `rules` (whose issuer is set to it). `roots`: certificates
    /// trusted besides the web's roots (a private CA). Fetches nothing yet: see
    /// [`Provider::start`].
    pub fn new(
        issuer: &str,
        rules: TokenRules,
        refresh: Refresh,
        roots: Vec<reqwest::Certificate>,
    ) -> Result<Arc<Provider>, String> {
        let url = reqwest::Url::parse(issuer)
            .map_err(|e| format!("--oidc-issuer `{issuer}`: not a URL ({e})"))?;
        if url.scheme() != "https" || url.host().is_none() {
            return Err(format!(
                "--oidc-issuer `{issuer}`: an issuer is an https URL (OpenID Connect Discovery 3)"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "--oidc-issuer `{issuer}`: an issuer has no query or fragment"
            ));
        }
        if refresh.min_interval.is_zero() || refresh.max_age < refresh.min_interval {
            return Err(
                "the key set's refresh interval is at least its least interval, which is not 0"
                    .into(),
            );
        }
        let mut client = reqwest::Client::builder()
            .https_only(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(3));
        for root in roots {
            client = client.add_root_certificate(root);
        }
        let client = client.build().map_err(|e| format!("--oidc-issuer: {e}"))?;
        let verifier = Arc::new(TokenVerifier::without_keys(TokenRules {
            issuer: issuer.to_string(),
            ..rules
        })?);
        Ok(Arc::new(Provider {
            issuer: issuer.to_string(),
            client,
            refresh,
            verifier,
            fetched: tokio::sync::Mutex::new(Fetched::default()),
            fetches: std::sync::atomic::AtomicU64::new(0),
            due_moved: tokio::sync::Notify::new(),
        }))
    }

    /// The verifier its keys are kept in.
    pub fn verifier(&self) -> &Arc<TokenVerifier> {
        &self.verifier
    }

    /// Key sets fetched (or tried) so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetches the keys once now (a failure is returned, and the host may start anyway:
    /// the keys are tried again in the background), then keeps them current for as long
    /// as the task returned runs.
    pub async fn start(self: &Arc<Self>) -> (Result<usize, String>, tokio::task::JoinHandle<()>) {
        let first = {
            let mut fetched = self.fetched.lock().await;
            self.fetch(&mut fetched).await
        };
        let me = Arc::clone(self);
        let task = tokio::spawn(async move {
            loop {
                let due = me.fetched.lock().await.due;
                let wait = due.map_or(me.refresh.min_interval, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = me.due_moved.notified() => continue,
                }
                let mut fetched = me.fetched.lock().await;
                if fetched.due.is_none_or(|d| d <= Instant::now()) {
                    let _ = me.fetch(&mut fetched).await;
                }
            }
        });
        (first, task)
    }

    /// Called for a token naming `kid`, which the key set does not hold: fetches the set
    /// again unless one was fetched within the least interval (or is being fetched, then
    /// waits for it). Whether `kid` is held afterwards.
    pub async fn unknown_key(&self, kid: &str) -> bool {
        let mut fetched = self.fetched.lock().await;
        if self.verifier.knows(kid) {
            return true;
        }
        if fetched
            .tried
            .is_some_and(|t| t.elapsed() < self.refresh.min_interval)
        {
            return false;
        }
        tracing::info!(
            kid,
            "a token names a key not held: fetching the key set again"
        );
        let _ = self.fetch(&mut fetched).await;
        self.verifier.knows(kid)
    }

    /// Fetches the discovery document and the key set, and uses the keys from now on.
    /// How many keys there are, or why none were taken (the keys held are kept).
    async fn fetch(&self, fetched: &mut Fetched) -> Result<usize, String> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        fetched.tried = Some(now);
        let answer = self.keys().await;
        self.due_moved.notify_one();
        match answer {
            Ok((keys, max_age)) => {
                let n = keys.len();
                let kids = {
                    let mut k: Vec<&String> = keys.keys().collect();
                    k.sort();
                    k.into_iter().cloned().collect::<Vec<_>>().join(", ")
                };
                self.verifier.replace_keys(keys);
                let keep = max_age
                    .unwrap_or(self.refresh.max_age)
                    .clamp(self.refresh.min_interval, self.refresh.max_age);
                fetched.due = Some(now + keep);
                tracing::info!(
                    issuer = %self.issuer,
                    "the identity provider's key set: {n} keys ({kids}), fetched again in {} s",
                    keep.as_secs()
                );
                Ok(n)
            }
            Err(e) => {
                fetched.due = Some(now + self.refresh.min_interval);
                tracing::warn!(
                    issuer = %self.issuer,
                    "the identity provider's keys could not be fetched ({e}); keeping the {} held, trying again in {} s",
                    self.verifier.kids().len(),
                    self.refresh.min_interval.as_secs()
                );
                Err(e)
            }
        }
    }

    /// The provider's keys and how long they may be kept, if it says.
    async fn keys(&self) -> Result<(KeyRing, Option<Duration>), String> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let (document, _) = self.get(&discovery).await?;
        let document: serde_json::Value =
            serde_json::from_slice(&document).map_err(|e| format!("{discovery}: not JSON: {e}"))?;
        // The document is the issuer's own, or it is not trusted (Discovery 4.3).
        if document.get("issuer").and_then(serde_json::Value::as_str) != Some(&self.issuer) {
            return Err(format!(
                "{discovery}: its `issuer` is not `{}`, as it must be exactly",
                self.issuer
            ));
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("{discovery}: no `jwks_uri`"))?;
        let (set, max_age) = self.get(jwks_uri).await?;
        let set: serde_json::Value =
            serde_json::from_slice(&set).map_err(|e| format!("{jwks_uri}: not JSON: {e}"))?;
        let keys = set
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| format!("{jwks_uri}: not a key set (no `keys`)"))?;
        let keys = signing_keys(keys, jwks_uri);
        if keys.is_empty() {
            return Err(format!(
                "{jwks_uri}: no key this host can verify tokens with"
            ));
        }
        Ok((keys, max_age))
    }

    /// The body of an https GET (at most [`MAX_DOCUMENT`] bytes) and its `max-age`.
    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
        let mut response = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("{url}: {}", chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("{url}: answered {}", response.status()));
        }
        let max_age = response
            .headers()
            .get_all("cache-control")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{url}: {}", chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!("{url}: longer than {MAX_DOCUMENT} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// An error and its causes, one after another: reqwest's own message names only the
/// outermost ("error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The keys of a provider's set that sign tokens this host verifies. A provider's set
/// commonly holds others too (encryption keys, `use: enc`; algorithms not verified
/// here): those are left out, and logged, rather than refusing the whole set.
fn signing_keys(keys: &[serde_json::Value], from: &str) -> KeyRing {
    let mut ring = KeyRing::new();
    for (i, key) in keys.iter().enumerate() {
        let kid = key
            .get("kid")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| format!("#{i}"), str::to_string);
        if key.get("use").and_then(serde_json::Value::as_str) == Some("enc") {
            continue;
        }
        let one = serde_json::from_value::<Jwk>(key.clone())
            .map_err(|e| e.to_string())
            .and_then(|jwk| crate::auth::key_ring(std::slice::from_ref(&jwk)));
        match one {
            Ok(one) => {
                for (kid, key) in one {
                    match ring.entry(kid) {
                        std::collections::hash_map::Entry::Occupied(e) => tracing::warn!(
                            "{from}: two keys are named `{}`; the first is used",
                            e.key()
                        ),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(key);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("{from}: key `{kid}` is left out: {e}"),
        }
    }
    ring
}
